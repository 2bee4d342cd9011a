//! The registry's side of the catalog (cargo feature `registry`): `NAME:3`, `NAME@alias` and
//! a bare registry name, downloaded into the cache; what a [`crate::Follower`] polls.

use std::future::Future;

use strix_core::{ModelVersion, Progress};
use strix_registry::{ModelRef, Registry, RegistryError, VersionRecord};
use strix_zoo::{SPEC_FILE, ZooError};

use crate::{Catalog, CatalogError, Located};

impl Catalog {
    /// Whether a registry has been set up (so plain names may be looked up in it): one is
    /// named in the settings, or the default SQLite file exists. Keeps `predict` from creating
    /// an empty registry as a side effect.
    pub fn registry_exists(&self) -> bool {
        self.settings.registry_named || self.settings.registry.sqlite_path().is_some_and(|p| p.is_file())
    }

    /// The registry, opened now.
    pub fn registry(&self) -> Result<RegistrySession, CatalogError> {
        RegistrySession::open(&self.settings.registry)
    }

    /// `NAME:V` or `NAME@ALIAS` from the registry.
    pub(crate) fn locate_version(&self, text: &str, progress: &dyn Progress) -> Result<Located, CatalogError> {
        let session = self.registry()?;
        let record = session.run(session.registry.get(&ModelRef::parse(text)?))?;
        self.fetch(&session, &record, progress)
    }

    /// A bare name the zoo does not know (`zoo`, its answer): the registry's newest version of
    /// it, else the zoo's message (which lists what there is).
    pub(crate) fn locate_newest(
        &self,
        text: &str,
        zoo: ZooError,
        progress: &dyn Progress,
    ) -> Result<Located, CatalogError> {
        let reference = ModelRef::parse(text)?;
        let session = self.registry()?;
        match session.run(session.registry.get(&reference)) {
            Ok(record) => self.fetch(&session, &record, progress),
            Err(_) => Err(zoo.into()),
        }
    }

    /// The registry version `text` names right now, without downloading anything: `None` for
    /// models outside the registry. What a [`crate::Follower`] polls.
    pub fn pointer(&self, text: &str) -> Result<Option<(String, u64)>, CatalogError> {
        if !follows_registry(text) {
            return Ok(None);
        }
        // A bare name is the zoo's or the import store's before it is the registry's.
        if !ModelRef::is_explicit(text) && (!self.registry_exists() || self.locate_local(text).is_ok()) {
            return Ok(None);
        }
        let session = self.registry()?;
        match session.run(session.registry.get(&ModelRef::parse(text)?)) {
            Ok(record) => Ok(Some((record.name, record.version))),
            Err(RegistryError::UnknownModel { .. }) if !ModelRef::is_explicit(text) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Where a registry version's files are cached: `CACHE/registry/NAME/VERSION`.
    pub fn version_dir(&self, name: &str, version: u64) -> std::path::PathBuf {
        self.settings.cache_dir.join("registry").join(name).join(version.to_string())
    }

    /// Download a version into the cache ([`Catalog::version_dir`], checked by digest) and
    /// locate its spec there.
    fn fetch(
        &self,
        session: &RegistrySession,
        record: &VersionRecord,
        progress: &dyn Progress,
    ) -> Result<Located, CatalogError> {
        let dir = self.version_dir(&record.name, record.version);
        session.run(session.registry.download(record, &dir, progress))?;
        let spec = dir.join(SPEC_FILE);
        if !spec.is_file() {
            return Err(CatalogError::NoSpec {
                version: format!("{}:{}", record.name, record.version),
                file: SPEC_FILE,
            });
        }
        let mut located = self.locate_local(&spec.display().to_string())?;
        located.origin = format!("registry:{}:{}", record.name, record.version);
        let sha256 = located.spec.weights.sha256.clone().unwrap_or_default();
        let version = ModelVersion { name: record.name.clone(), version: record.version, sha256 };
        Ok(Located { spec: located, version: Some(version) })
    }
}

/// Whether `text` may name a registry model whose version can change under it: an alias, or a
/// bare name (the newest version). `NAME:3`, files and zoo names never move.
pub fn follows_registry(text: &str) -> bool {
    let is_path = text.ends_with(".toml") || text.ends_with(".onnx") || text.contains('/');
    !is_path && ModelRef::parse(text).is_ok_and(|r| !matches!(r.selector, strix_registry::Selector::Version(_)))
}

/// A registry and the runtime its async API runs on, for callers that are not async.
pub struct RegistrySession {
    rt: tokio::runtime::Runtime,
    pub registry: Registry,
}

impl std::fmt::Debug for RegistrySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySession").field("store", &self.registry.describe().0).finish()
    }
}

impl RegistrySession {
    pub fn open(config: &strix_registry::RegistryConfig) -> Result<RegistrySession, CatalogError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(CatalogError::Runtime)?;
        let registry = rt.block_on(Registry::open(config))?;
        Ok(RegistrySession { rt, registry })
    }

    /// Run one of the registry's calls to completion.
    pub fn run<T>(&self, f: impl Future<Output = Result<T, RegistryError>>) -> Result<T, RegistryError> {
        self.rt.block_on(f)
    }

    /// Run any future on the session's runtime (calls of crates built on the registry).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

impl Drop for RegistrySession {
    fn drop(&mut self) {
        self.rt.block_on(self.registry.close());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;

    #[test]
    fn only_aliases_and_bare_names_can_move() {
        for moving in ["trash@production", "trash"] {
            assert!(follows_registry(moving), "{moving}");
        }
        for fixed in ["trash:3", "mine.onnx", "mine.toml", "models/trash", "bad name", "x@"] {
            assert!(!follows_registry(fixed), "{fixed}");
        }
    }

    #[test]
    fn a_missing_registry_is_not_created_by_a_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(Settings::isolated(dir.path()));
        assert!(!catalog.registry_exists());
        // A zoo name resolves without a registry; an unknown bare name names what there is.
        assert_eq!(catalog.pointer("efficientnet_lite0").unwrap(), None);
        let e = catalog.locate("no_such_model", &strix_core::NoProgress).unwrap_err().to_string();
        assert!(e.contains("efficientnet_lite0"), "{e}");
        assert!(!dir.path().join("home/registry").exists());
    }
}
