//! The Strix model registry: every trained or imported model becomes a numbered version of a
//! name, with its files (ONNX, spec, report) and its lineage (metrics, dataset digest, training
//! config, parent weights, export gate), like an MLflow registered model.
//!
//! - Files go to an object store under their content digest (`blobs/sha256/<hex>`): a local
//!   folder by default; `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`
//!   picks a cloud store.
//! - Metadata goes to SQL: SQLite by default, PostgreSQL by URL; one schema, migrated on open.
//! - A registration uploads every blob first, then one transaction makes the version visible,
//!   so a crash in between leaves no half version; [`Registry::gc`] removes the orphans.
//! - Names are `NAME`, `NAME:3` or `NAME@production` ([`ModelRef`]); aliases point at versions
//!   and move freely (no fixed stages).
//!
//! ```no_run
//! # async fn demo() -> Result<(), strix_registry::RegistryError> {
//! use strix_registry::{ModelRef, Registry, RegistryConfig};
//! let registry = Registry::open(&RegistryConfig::local("/var/lib/strix".as_ref())).await?;
//! let record = registry.get(&ModelRef::parse("trash@production")?).await?;
//! println!("{} version {}", record.name, record.version);
//! # Ok(()) }
//! ```

mod blobs;
mod error;
mod meta;
mod record;
mod reference;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use strix_core::Progress;

pub use blobs::{hash_file, open_store};
pub use error::{Cause, RegistryError};
pub use meta::redact;
pub use record::{ArtifactRecord, Lineage, ModelSummary, VersionRecord};
pub use reference::{ModelRef, Selector, check_alias, check_name};

use blobs::Blobs;
use meta::{Meta, NewRow};

/// Where the registry keeps files and metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    /// A folder path, `file:///PATH`, `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX` or
    /// `az://CONTAINER/PREFIX`.
    pub store: String,
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`.
    pub db: String,
    /// Settings of an S3 store by object_store's names (`aws_access_key_id`, `aws_endpoint`,
    /// `aws_region`...): the binary passes the `AWS_*` variables here, lower-cased. A GCS or
    /// Azure store reads its own keys from the same list (`google_*`, `azure_*`).
    pub s3: Vec<(String, String)>,
}

impl RegistryConfig {
    /// The embedded default: a folder under `home` holding the blobs and an SQLite file.
    pub fn local(home: &Path) -> RegistryConfig {
        let dir = home.join("registry");
        RegistryConfig { store: dir.display().to_string(), db: sqlite_url(&dir.join("registry.db")), s3: Vec::new() }
    }

    /// The SQLite file, when the metadata lives in one.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self.db.strip_prefix("sqlite://")?;
        let path = rest.split('?').next().unwrap_or(rest);
        Some(PathBuf::from(path.replace("%3F", "?").replace("%23", "#").replace("%25", "%")))
    }
}

/// `sqlite://PATH?mode=rwc` (created if missing), with the characters sqlx decodes escaped.
pub fn sqlite_url(path: &Path) -> String {
    let p = path.display().to_string().replace('%', "%25").replace('?', "%3F").replace('#', "%23");
    format!("sqlite://{p}?mode=rwc")
}

/// A file to register: its name inside the version and where it is now.
#[derive(Clone, Debug)]
pub struct NewFile {
    pub file: String,
    pub path: PathBuf,
}

/// A version to register.
#[derive(Clone, Debug)]
pub struct NewVersion {
    pub name: String,
    pub task: String,
    pub files: Vec<NewFile>,
    pub lineage: Lineage,
    pub created_by: String,
    pub strix_version: String,
}

/// What [`Registry::gc`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub bytes_removed: u64,
    /// Unreferenced blobs younger than the grace period: maybe a registration in progress.
    pub blobs_kept_young: usize,
    /// Unfinished uploads of a local store (left by a killed registration).
    pub uploads_removed: usize,
}

#[derive(Debug)]
pub struct Registry {
    blobs: Blobs,
    meta: Meta,
}

impl Registry {
    /// Open (and on first use create) the store and the database.
    pub async fn open(config: &RegistryConfig) -> Result<Registry, RegistryError> {
        if let Some(path) = config.sqlite_path()
            && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(RegistryError::io(dir))?;
        }
        let blobs = Blobs::open(&config.store, &config.s3).await?;
        let meta = Meta::open(&config.db).await?;
        Ok(Registry { blobs, meta })
    }

    /// Store URL and database URL (without passwords), for messages.
    pub fn describe(&self) -> (String, String) {
        (self.blobs.url.clone(), self.meta.url.clone())
    }

    /// Upload the files (each under its digest; ones a version already holds are not sent
    /// again), then record the version in one transaction. Returns the new version.
    pub async fn register(&self, new: NewVersion, progress: &dyn Progress) -> Result<VersionRecord, RegistryError> {
        self.register_with(new, Vec::new(), None, progress).await
    }

    /// [`Self::register`] for a version that also holds blobs already in the store (`kept`,
    /// artifacts of an earlier version, not sent again), registered only if `after` is still
    /// the name's latest version (0: it has none); otherwise [`RegistryError::Conflict`] and
    /// nothing is registered. A writer that reads the latest, changes it and registers it this
    /// way never loses another's update (an index's vectors).
    pub async fn register_next(
        &self,
        new: NewVersion,
        kept: Vec<ArtifactRecord>,
        after: u64,
        progress: &dyn Progress,
    ) -> Result<VersionRecord, RegistryError> {
        self.register_with(new, kept, Some(after), progress).await
    }

    async fn register_with(
        &self,
        new: NewVersion,
        kept: Vec<ArtifactRecord>,
        after: Option<u64>,
        progress: &dyn Progress,
    ) -> Result<VersionRecord, RegistryError> {
        check_name(&new.name)?;
        for a in &kept {
            a.check().map_err(|e| RegistryError::Invalid(format!("{}: {e}", new.name)))?;
            if self.blobs.head(&a.sha256).await?.is_none_or(|b| b.size != a.size) {
                return Err(RegistryError::Corrupt {
                    what: format!("{} {}", new.name, a.file),
                    expected: a.sha256.clone(),
                    actual: "nothing (the blob is missing)".into(),
                });
            }
        }
        let mut seen: std::collections::HashSet<&str> = kept.iter().map(|a| a.file.as_str()).collect();
        if seen.len() != kept.len() {
            return Err(RegistryError::Invalid(format!("{}: kept artifacts with the same name", new.name)));
        }
        for f in &new.files {
            if !record::is_plain_file_name(&f.file) || !seen.insert(f.file.as_str()) {
                return Err(RegistryError::Invalid(format!(
                    "artifact name {:?} is not a plain, unique file name",
                    f.file
                )));
            }
            if !f.path.is_file() {
                let source = std::io::Error::new(std::io::ErrorKind::NotFound, "file not found");
                return Err(RegistryError::Io { path: f.path.clone(), source });
            }
        }
        let mut artifacts = kept;
        let mut reused = Vec::new();
        for f in &new.files {
            let (sha256, size) = hash_file(&f.path).await?;
            // A blob that a version refers to is safe from gc; anything else is sent again,
            // which also refreshes its age so a concurrent gc leaves it alone.
            let present = self.meta.is_referenced(&sha256).await?
                && self.blobs.head(&sha256).await?.is_some_and(|b| b.size == size);
            if present {
                reused.push((f, sha256.clone(), size));
            } else {
                self.blobs.put_file(&f.path, &sha256, size, &f.file, progress).await?;
            }
            artifacts.push(ArtifactRecord { file: f.file.clone(), sha256, size });
        }
        let version = self
            .meta
            .insert(NewRow {
                after,
                name: &new.name,
                task: &new.task,
                created_at: unix_now(),
                created_by: &new.created_by,
                strix_version: &new.strix_version,
                lineage: &new.lineage,
                artifacts: &artifacts,
            })
            .await?;
        // A reused blob could have lost its last other reference, and been collected, between
        // the check above and the commit; put it back so the new version is whole.
        for (f, sha256, size) in reused {
            if self.blobs.head(&sha256).await?.is_none() {
                self.blobs.put_file(&f.path, &sha256, size, &f.file, progress).await?;
            }
        }
        self.meta.get(&new.name, version).await
    }

    /// The version a reference means.
    pub async fn get(&self, reference: &ModelRef) -> Result<VersionRecord, RegistryError> {
        let version = self.meta.resolve(&reference.name, &reference.selector).await?;
        self.meta.get(&reference.name, version).await
    }

    /// Every registered name, with counts and aliases.
    pub async fn list(&self) -> Result<Vec<ModelSummary>, RegistryError> {
        self.meta.models().await
    }

    /// Every version of a name, oldest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<VersionRecord>, RegistryError> {
        check_name(name)?;
        let numbers = self.meta.version_numbers(name).await?;
        if numbers.is_empty() {
            self.meta.resolve(name, &Selector::Latest).await?;
        }
        let mut out = Vec::new();
        for v in numbers {
            out.push(self.meta.get(name, v).await?);
        }
        Ok(out)
    }

    /// Point `alias` at `version` of `name`.
    pub async fn set_alias(&self, name: &str, version: u64, alias: &str) -> Result<(), RegistryError> {
        check_name(name)?;
        check_alias(alias)?;
        self.meta.resolve(name, &Selector::Version(version)).await?;
        self.meta.set_alias(name, alias, version, unix_now()).await
    }

    /// Remove an alias.
    pub async fn remove_alias(&self, name: &str, alias: &str) -> Result<(), RegistryError> {
        check_name(name)?;
        check_alias(alias)?;
        if self.meta.remove_alias(name, alias).await? {
            return Ok(());
        }
        self.meta.resolve(name, &Selector::Alias(alias.to_string())).await.map(|_| ())
    }

    /// Delete one version (`NAME:V`, `NAME@ALIAS`) or, with `Selector::Latest` and `all`, every
    /// version of a name. Returns the versions deleted. Their blobs stay until [`Self::gc`].
    pub async fn delete(&self, reference: &ModelRef, all: bool) -> Result<Vec<u64>, RegistryError> {
        let versions = match (&reference.selector, all) {
            (Selector::Latest, true) => {
                self.meta.resolve(&reference.name, &Selector::Latest).await?;
                self.meta.version_numbers(&reference.name).await?
            }
            (Selector::Latest, false) => {
                return Err(RegistryError::Invalid(format!(
                    "say which version of {name} to delete ({name}:VERSION or {name}@ALIAS), or every version with --all",
                    name = reference.name
                )));
            }
            (selector, _) => vec![self.meta.resolve(&reference.name, selector).await?],
        };
        self.meta.delete(&reference.name, &versions).await?;
        Ok(versions)
    }

    /// One artifact's bytes, checked against its digest.
    pub async fn read(&self, record: &VersionRecord, artifact: &ArtifactRecord) -> Result<Vec<u8>, RegistryError> {
        artifact.check().map_err(|e| RegistryError::Invalid(format!("{}:{}: {e}", record.name, record.version)))?;
        let label = format!("{}:{} {}", record.name, record.version, artifact.file);
        self.blobs.get_bytes(&artifact.sha256, artifact.size, &label).await
    }

    /// Download a version's files into `dir` (each checked against its digest; files already
    /// there with the right digest are kept). Returns the paths, in artifact order.
    pub async fn download(
        &self,
        record: &VersionRecord,
        dir: &Path,
        progress: &dyn Progress,
    ) -> Result<Vec<PathBuf>, RegistryError> {
        let mut paths = Vec::new();
        for a in &record.artifacts {
            a.check().map_err(|e| RegistryError::Invalid(format!("{}:{}: {e}", record.name, record.version)))?;
            let dest = dir.join(&a.file);
            let fresh = match dest.is_file() {
                true => hash_file(&dest).await.is_ok_and(|(sha, _)| sha == a.sha256),
                false => false,
            };
            if !fresh {
                let label = format!("{}:{} {}", record.name, record.version, a.file);
                self.blobs.get_file(&a.sha256, a.size, &dest, &label, progress).await?;
            }
            paths.push(dest);
        }
        Ok(paths)
    }

    /// Delete blobs no version refers to, once older than `grace` (younger ones may belong
    /// to a registration still uploading), and stale unfinished local uploads.
    pub async fn gc(&self, grace: Duration) -> Result<GcReport, RegistryError> {
        let referenced = self.meta.referenced().await?;
        let mut report = GcReport::default();
        let now = SystemTime::now();
        for blob in self.blobs.list().await? {
            if referenced.contains(&blob.sha256) {
                continue;
            }
            if now.duration_since(blob.modified).unwrap_or_default() < grace {
                report.blobs_kept_young += 1;
                continue;
            }
            // A registration may have committed since the list was read.
            if self.meta.is_referenced(&blob.sha256).await? {
                continue;
            }
            self.blobs.delete(&blob.sha256).await?;
            report.blobs_removed += 1;
            report.bytes_removed += blob.size;
        }
        report.uploads_removed = self.blobs.remove_stale_uploads(grace)?;
        Ok(report)
    }

    /// Blobs in the store: `(sha256, size)`.
    #[cfg(test)]
    async fn blobs(&self) -> Result<Vec<(String, u64)>, RegistryError> {
        Ok(self.blobs.list().await?.into_iter().map(|b| (b.sha256, b.size)).collect())
    }

    /// Check that every version's blobs are in the store with the recorded size; the
    /// problems found, one line each (empty when the registry is consistent).
    pub async fn check(&self) -> Result<Vec<String>, RegistryError> {
        let mut problems = Vec::new();
        for model in self.list().await? {
            for record in self.versions(&model.name).await? {
                for a in &record.artifacts {
                    match self.blobs.head(&a.sha256).await? {
                        Some(b) if b.size == a.size => {}
                        Some(b) => problems.push(format!(
                            "{}:{} {}: blob has {} bytes, recorded {}",
                            record.name, record.version, a.file, b.size, a.size
                        )),
                        None => problems.push(format!(
                            "{}:{} {}: blob {} is missing",
                            record.name, record.version, a.file, a.sha256
                        )),
                    }
                }
            }
        }
        Ok(problems)
    }

    pub async fn close(&self) {
        self.meta.close().await;
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> NewFile {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        NewFile { file: name.to_string(), path }
    }

    fn new_version(name: &str, files: Vec<NewFile>) -> NewVersion {
        NewVersion {
            name: name.into(),
            task: "classify".into(),
            files,
            lineage: Lineage { source: "test".into(), ..Default::default() },
            created_by: "test".into(),
            strix_version: "0".into(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn versions_aliases_delete_and_gc_on_the_embedded_default() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::open(&RegistryConfig::local(tmp.path())).await.unwrap();
        let a = write(&tmp.path().join("a"), "model.onnx", b"weights v1");
        let v1 = reg.register(new_version("trash", vec![a.clone()]), &strix_core::NoProgress).await.unwrap();
        let b = write(&tmp.path().join("b"), "model.onnx", b"weights v2");
        let v2 = reg.register(new_version("trash", vec![b]), &strix_core::NoProgress).await.unwrap();
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_ne!(v1.artifacts[0].sha256, v2.artifacts[0].sha256);

        reg.set_alias("trash", 1, "production").await.unwrap();
        let prod = reg.get(&ModelRef::parse("trash@production").unwrap()).await.unwrap();
        assert_eq!((prod.version, prod.aliases.clone()), (1, vec!["production".to_string()]));
        assert_eq!(reg.get(&ModelRef::parse("trash").unwrap()).await.unwrap().version, 2);

        let out = tmp.path().join("out");
        reg.download(&prod, &out, &strix_core::NoProgress).await.unwrap();
        assert_eq!(std::fs::read(out.join("model.onnx")).unwrap(), b"weights v1");

        // Deleting v1 drops its alias; its blob goes at the next gc, v2's stays.
        assert_eq!(reg.delete(&ModelRef::parse("trash:1").unwrap(), false).await.unwrap(), vec![1]);
        assert!(matches!(
            reg.get(&ModelRef::parse("trash@production").unwrap()).await,
            Err(RegistryError::UnknownAlias { .. })
        ));
        let young = reg.gc(Duration::from_secs(3600)).await.unwrap();
        assert_eq!((young.blobs_removed, young.blobs_kept_young), (0, 1));
        let gc = reg.gc(Duration::ZERO).await.unwrap();
        assert_eq!((gc.blobs_removed, gc.bytes_removed), (1, 10));
        assert_eq!(reg.blobs().await.unwrap().len(), 1);
        assert!(reg.check().await.unwrap().is_empty());
        // Numbers are not reused.
        let v3 = reg.register(new_version("trash", vec![a]), &strix_core::NoProgress).await.unwrap();
        assert_eq!(v3.version, 3);

        // A damaged blob is caught on download, and nothing is left at the target.
        let blob = tmp.path().join("registry/blobs/sha256").join(&v3.artifacts[0].sha256);
        std::fs::write(&blob, b"weights v9").unwrap();
        let bad = tmp.path().join("bad");
        let err = reg.download(&v3, &bad, &strix_core::NoProgress).await.unwrap_err();
        assert!(matches!(err, RegistryError::Corrupt { .. }), "{err}");
        assert!(!bad.join("model.onnx").exists());
        // A lost blob is what `check` reports.
        std::fs::remove_file(&blob).unwrap();
        let problems = reg.check().await.unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("trash:3 model.onnx") && problems[0].contains("missing"), "{problems:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn conditional_registration_keeps_blobs_and_refuses_a_stale_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::open(&RegistryConfig::local(tmp.path())).await.unwrap();
        let none = &strix_core::NoProgress;
        let seg = write(&tmp.path().join("a"), "seg-1.bin", b"vectors one");
        let v1 = reg.register_next(new_version("faces", vec![seg]), Vec::new(), 0, none).await.unwrap();
        // Two writers both read version 1; the second to register is refused.
        let seg2 = write(&tmp.path().join("b"), "seg-2.bin", b"vectors two");
        let v2 =
            reg.register_next(new_version("faces", vec![seg2.clone()]), v1.artifacts.clone(), 1, none).await.unwrap();
        assert_eq!(v2.version, 2);
        assert_eq!(v2.artifacts.iter().map(|a| a.file.as_str()).collect::<Vec<_>>(), ["seg-1.bin", "seg-2.bin"]);
        let err = reg.register_next(new_version("faces", vec![seg2]), v1.artifacts.clone(), 1, none).await.unwrap_err();
        assert!(matches!(err, RegistryError::Conflict { expected: 1, found: 2, .. }), "{err}");
        assert_eq!(reg.versions("faces").await.unwrap().len(), 2);
        assert_eq!(reg.read(&v2, &v2.artifacts[0]).await.unwrap(), b"vectors one");
        // A kept blob that is not in the store is refused before anything is written.
        let mut ghost = v1.artifacts[0].clone();
        ghost.sha256 = "0".repeat(64);
        let err = reg.register_next(new_version("faces", Vec::new()), vec![ghost], 2, none).await.unwrap_err();
        assert!(matches!(err, RegistryError::Corrupt { .. }), "{err}");
        assert_eq!(reg.get(&ModelRef::parse("faces").unwrap()).await.unwrap().version, 2);
    }

    #[test]
    fn sqlite_paths_survive_the_url() {
        let path = Path::new("/tmp/a b/50%?#/registry.db");
        let config = RegistryConfig { store: "x".into(), db: sqlite_url(path), s3: Vec::new() };
        assert_eq!(config.sqlite_path().as_deref(), Some(path));
    }
}
