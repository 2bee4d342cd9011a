//! The one front door for models. Whatever a user types after `--model` (a zoo name, a spec
//! `.toml`, an `.onnx` with its spec beside it, an imported name, a registry `NAME:3` or
//! `NAME@production`, or a bare registry name for its newest version) means the same thing in
//! predict, eval, export, serve, stream and models: [`Catalog::resolve`] decides it.
//!
//! - [`Settings`]: where things are, merged once by the binary from its layers.
//! - [`Engine`]: loads a resolved model on a backend and makes one test inference, so a model
//!   that loads but cannot answer is refused before it serves.
//! - [`Follower`]: a thread that notices when a registry alias moves and hands the new version
//!   to whoever serves it (serve and stream swap it in).
//!
//! ```no_run
//! use strix_catalog::{Catalog, Settings};
//! let catalog = Catalog::open(Settings::isolated("/tmp/strix".as_ref()));
//! let model = catalog.resolve("trash@production", &strix_core::NoProgress)?;
//! println!("{} is {:?}", model.spec.name, model.version.map(|v| v.to_string()));
//! # Ok::<(), strix_catalog::CatalogError>(())
//! ```

mod engine;
mod error;
mod follow;
mod settings;

use std::future::Future;
use std::path::Path;

use strix_core::{ModelVersion, Progress, Task};
use strix_registry::{ModelRef, Registry, RegistryError, VersionRecord};
use strix_zoo::{LocatedSpec, ResolvedModel, Resolver, ZooError};

pub use engine::Engine;
pub use error::CatalogError;
pub use follow::{FollowEvent, Follower, Install, error_chain};
pub use settings::{Defaults, Layer, Settings};

use strix_zoo::SPEC_FILE;

/// Models by name, from the zoo, files, the import store and the registry.
#[derive(Clone, Debug)]
pub struct Catalog {
    settings: Settings,
    resolver: Resolver,
}

/// A located spec and, for a registry model, its version.
#[derive(Clone, Debug)]
pub struct Located {
    pub spec: LocatedSpec,
    pub version: Option<ModelVersion>,
}

impl Catalog {
    pub fn open(settings: Settings) -> Catalog {
        Catalog { resolver: settings.resolver(), settings }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Where model files are looked for and downloaded to.
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Strix's data folder (imported models live under it).
    pub fn home(&self) -> &Path {
        &self.settings.home
    }

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

    /// A zoo name, an imported name, or a spec file: no registry involved.
    pub fn locate_local(&self, text: &str) -> Result<LocatedSpec, ZooError> {
        strix_zoo::locate(text, &self.settings.home)
    }

    /// Find `text`'s spec, downloading a registry version's files into the cache. `NAME:3` and
    /// `NAME@alias` come from the registry; spec files, zoo names and imported names from the
    /// zoo; a bare name the zoo does not know is the registry's newest version of that name.
    pub fn locate(&self, text: &str, progress: &dyn Progress) -> Result<Located, CatalogError> {
        let is_path = text.ends_with(".toml") || text.ends_with(".onnx") || Path::new(text).is_file();
        if !is_path && ModelRef::is_explicit(text) {
            let session = self.registry()?;
            let record = session.run(session.registry.get(&ModelRef::parse(text)?))?;
            return self.fetch(&session, &record, progress);
        }
        match self.locate_local(text) {
            Err(ZooError::UnknownModel { .. }) if !is_path && self.registry_exists() => {
                let reference = ModelRef::parse(text)?;
                let session = self.registry()?;
                match session.run(session.registry.get(&reference)) {
                    Ok(record) => self.fetch(&session, &record, progress),
                    // Neither knows it: the zoo's message lists what there is.
                    Err(_) => Ok(Located { spec: self.locate_local(text)?, version: None }),
                }
            }
            other => Ok(Located { spec: other?, version: None }),
        }
    }

    /// `text`'s model with every file on disk and checked.
    pub fn resolve(&self, text: &str, progress: &dyn Progress) -> Result<ResolvedModel, CatalogError> {
        let located = self.locate(text, progress)?;
        self.files(located, progress)
    }

    /// A located model's files, fetched and checked.
    fn files(&self, located: Located, progress: &dyn Progress) -> Result<ResolvedModel, CatalogError> {
        let mut model = self.resolver.resolve(&located.spec, progress)?;
        model.version = located.version;
        Ok(model)
    }

    /// The model of `--model` / `--task`: the named model (which must do the task, when both
    /// are given), else the task's default model, else `fallback`'s.
    pub fn resolve_for_task(
        &self,
        model: Option<&str>,
        task: Option<Task>,
        fallback: Task,
        progress: &dyn Progress,
    ) -> Result<ResolvedModel, CatalogError> {
        let name = model.unwrap_or_else(|| strix_zoo::builtin::default_for(task.unwrap_or(fallback)));
        let located = self.locate(name, progress)?;
        let spec = &located.spec.spec;
        if let Some(wanted) = task
            && spec.task != wanted
        {
            // Said before any file is fetched.
            return Err(CatalogError::WrongTask { name: spec.name.clone(), actual: spec.task, wanted });
        }
        self.files(located, progress)
    }

    /// The registry version `text` names right now, without downloading anything: `None` for
    /// models outside the registry. What a [`Follower`] polls.
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
        let e = catalog.resolve_for_task(
            Some("efficientnet_lite0"),
            Some(Task::Detect),
            Task::Classify,
            &strix_core::NoProgress,
        );
        assert!(e.unwrap_err().to_string().contains("is a classify model, not detect"));
    }
}
