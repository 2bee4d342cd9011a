//! The one front door for models. Whatever a user types after `--model` (a zoo name, a spec
//! `.toml`, an `.onnx` with its spec beside it, an imported name, a registry `NAME:3` or
//! `NAME@production`, or a bare registry name for its newest version) means the same thing in
//! predict, eval, export, serve, stream and models: [`Catalog::resolve`] decides it.
//!
//! - [`Settings`]: where things are, merged once by the binary from its layers.
//! - [`Engine`]: loads a resolved model on a backend and makes one test inference, so a model
//!   that loads but cannot answer is refused before it serves.
//! - `Follower` (feature `registry`): a thread that notices when a registry alias moves and hands the new version
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
#[cfg(feature = "registry")]
mod follow;
#[cfg(feature = "registry")]
mod registry;
mod settings;

use std::path::Path;

use strix_core::{ModelVersion, Progress, Task};
use strix_zoo::{LocatedSpec, ResolvedModel, Resolver, ZooError};

pub use engine::Engine;
pub use error::CatalogError;
#[cfg(feature = "registry")]
pub use follow::{FollowEvent, Follower, Install};
#[cfg(feature = "registry")]
pub use registry::{RegistrySession, follows_registry};
pub use settings::{Defaults, Layer, Settings};
pub use strix_core::error_chain;

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

    /// A zoo name, an imported name, or a spec file: no registry involved.
    pub fn locate_local(&self, text: &str) -> Result<LocatedSpec, ZooError> {
        strix_zoo::locate(text, &self.settings.home)
    }

    /// Find `text`'s spec, downloading a registry version's files into the cache. `NAME:3` and
    /// `NAME@alias` come from the registry; spec files, zoo names and imported names from the
    /// zoo; a bare name the zoo does not know is the registry's newest version of that name.
    pub fn locate(&self, text: &str, progress: &dyn Progress) -> Result<Located, CatalogError> {
        let is_path = text.ends_with(".toml") || text.ends_with(".onnx") || Path::new(text).is_file();
        // `NAME:V` or `NAME@ALIAS`: a version only the registry can answer.
        if !is_path && text.contains(['@', ':']) {
            return self.locate_version(text, progress);
        }
        match self.locate_local(text) {
            Err(zoo @ ZooError::UnknownModel { .. }) if !is_path && self.registry_exists() => {
                self.locate_newest(text, zoo, progress)
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
}

/// The default registry's database under `home`: `strix_registry::RegistryConfig::local`'s
/// file, named here for the build without that crate (a test of the whole build compares them).
#[cfg(any(test, not(feature = "registry")))]
fn default_registry_db(home: &Path) -> std::path::PathBuf {
    home.join("registry").join("registry.db")
}

/// Without the registry (the demo build): registry references are refused by name, and so is
/// a bare name the zoo lacks when a registry it may be in exists.
#[cfg(not(feature = "registry"))]
impl Catalog {
    /// A registry this build cannot read: one the settings name, or the default one.
    fn registry_exists(&self) -> bool {
        self.settings.registry_named || default_registry_db(&self.settings.home).is_file()
    }

    fn locate_version(&self, text: &str, _progress: &dyn Progress) -> Result<Located, CatalogError> {
        Err(CatalogError::NoRegistry { text: text.to_string() })
    }

    /// A name neither the zoo nor the imports know (`zoo`, their answer), with a registry
    /// beside: it may be there.
    fn locate_newest(&self, _text: &str, zoo: ZooError, _progress: &dyn Progress) -> Result<Located, CatalogError> {
        Err(CatalogError::MaybeInRegistry { zoo })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zoo_name_resolves_and_a_wrong_task_is_refused_before_any_download() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(Settings::isolated(dir.path()));
        let e = catalog.locate("no_such_model", &strix_core::NoProgress).unwrap_err().to_string();
        assert!(e.contains("efficientnet_lite0"), "{e}");
        let e = catalog.resolve_for_task(
            Some("efficientnet_lite0"),
            Some(Task::Detect),
            Task::Classify,
            &strix_core::NoProgress,
        );
        assert!(e.unwrap_err().to_string().contains("is a classify model, not detect"));
    }

    #[cfg(feature = "registry")]
    #[test]
    fn the_demo_build_looks_for_the_default_registry_where_it_is() {
        let home = Path::new("/srv/strix");
        let local = strix_registry::RegistryConfig::local(home);
        assert_eq!(local.sqlite_path(), Some(default_registry_db(home)));
    }

    #[cfg(not(feature = "registry"))]
    #[test]
    fn without_the_registry_a_version_reference_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(Settings::isolated(dir.path()));
        for text in ["trash@production", "trash:3"] {
            let e = catalog.locate(text, &strix_core::NoProgress).unwrap_err().to_string();
            assert!(e.contains(text) && e.contains("without the model registry"), "{e}");
        }
        // A bare name the zoo lacks: the zoo's answer, until there is a registry it may be in.
        let e = catalog.locate("trash", &strix_core::NoProgress).unwrap_err().to_string();
        assert!(e.contains("trash") && !e.contains("registry"), "{e}");
        std::fs::create_dir_all(dir.path().join("home/registry")).unwrap();
        std::fs::write(dir.path().join("home/registry/registry.db"), b"").unwrap();
        let e = catalog.locate("trash", &strix_core::NoProgress).unwrap_err().to_string();
        assert!(
            e.contains("unknown model `trash`; known models: ") && e.contains("may be in the model registry"),
            "{e}"
        );
        assert!(catalog.locate("efficientnet_lite0", &strix_core::NoProgress).is_ok());
    }
}
