//! Where Strix keeps and finds things, decided once: the binary gathers layers (flags, the
//! environment, a settings file) and [`Settings::from_layers`] merges them over the defaults.
//! Libraries take the result; none of them reads the environment.

use std::path::{Path, PathBuf};

use serde::Deserialize;
#[cfg(feature = "registry")]
use strix_registry::RegistryConfig;

use crate::CatalogError;

/// One source of settings; `None` leaves the choice to the layers below.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Strix's data folder: imported models, the default registry.
    pub home: Option<PathBuf>,
    /// Downloaded model files.
    pub cache_dir: Option<PathBuf>,
    /// Folders holding model files by their spec-relative path.
    pub model_path: Option<Vec<PathBuf>>,
    /// A model hub's base URL; empty: none.
    pub hub: Option<String>,
    /// Never download.
    pub offline: Option<bool>,
    /// The registry's file store: a folder, `file:///PATH` or `s3://BUCKET/PREFIX`.
    pub registry_store: Option<String>,
    /// The registry's database: `sqlite://PATH` or `postgres://...`.
    pub registry_db: Option<String>,
    /// libonnxruntime for `--backend ort`.
    pub ort_library: Option<PathBuf>,
    /// The job queue: `nats://HOST:4222` (several, comma-separated, for a cluster).
    pub queue: Option<String>,
}

impl Layer {
    /// A settings file (TOML, the fields above).
    pub fn from_toml(text: &str, path: &Path) -> Result<Layer, CatalogError> {
        toml::from_str(text).map_err(|e| CatalogError::Settings { path: path.to_path_buf(), reason: e.to_string() })
    }

    /// `self` where it says something, else `lower`. Empty strings and paths count as unset,
    /// so `STRIX_HUB_URL=` clears nothing by accident.
    pub fn over(self, lower: Layer) -> Layer {
        fn pick<T>(a: Option<T>, b: Option<T>, empty: impl Fn(&T) -> bool) -> Option<T> {
            a.filter(|v| !empty(v)).or(b)
        }
        let path = |p: &PathBuf| p.as_os_str().is_empty();
        let text = |s: &String| s.is_empty();
        Layer {
            home: pick(self.home, lower.home, path),
            cache_dir: pick(self.cache_dir, lower.cache_dir, path),
            model_path: pick(self.model_path, lower.model_path, |_| false),
            hub: pick(self.hub, lower.hub, text),
            offline: self.offline.or(lower.offline),
            registry_store: pick(self.registry_store, lower.registry_store, text),
            registry_db: pick(self.registry_db, lower.registry_db, text),
            ort_library: pick(self.ort_library, lower.ort_library, path),
            queue: pick(self.queue, lower.queue, text),
        }
    }
}

/// The platform's folders, the bottom layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// Used when no layer names a home.
    pub home: PathBuf,
    /// Used when no layer names a cache.
    pub cache_dir: PathBuf,
}

/// Everything resolved: what [`crate::Catalog::open`] takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub home: PathBuf,
    pub cache_dir: PathBuf,
    pub model_path: Vec<PathBuf>,
    pub hub: Option<String>,
    pub offline: bool,
    #[cfg(feature = "registry")]
    pub registry: RegistryConfig,
    /// The registry's store or database was named by a layer (not just the default under
    /// `home`): plain names may be looked up in it even before its database file exists.
    pub registry_named: bool,
    pub ort_library: Option<PathBuf>,
    /// The job queue's URL, when one is set.
    pub queue: Option<String>,
}

impl Settings {
    /// Merge `layers` (highest priority first) over `defaults`. `s3` holds the object store's
    /// S3 settings (the binary passes the `AWS_*` variables).
    pub fn from_layers(layers: Vec<Layer>, defaults: Defaults, s3: Vec<(String, String)>) -> Settings {
        let merged = layers.into_iter().fold(Layer::default(), |high, low| high.over(low));
        let home = merged.home.unwrap_or(defaults.home);
        #[cfg(not(feature = "registry"))]
        let _ = s3;
        #[cfg(feature = "registry")]
        let registry = registry_config(merged.registry_store.clone(), merged.registry_db.clone(), &home, s3);
        Settings {
            cache_dir: merged.cache_dir.unwrap_or(defaults.cache_dir),
            model_path: merged.model_path.unwrap_or_default(),
            hub: merged.hub,
            offline: merged.offline.unwrap_or(false),
            registry_named: merged.registry_db.is_some() || merged.registry_store.is_some(),
            #[cfg(feature = "registry")]
            registry,
            ort_library: merged.ort_library,
            queue: merged.queue,
            home,
        }
    }

    /// Settings that touch nothing outside `dir` (tests, scripts): home and cache inside it.
    pub fn isolated(dir: &Path) -> Settings {
        let defaults = Defaults { home: dir.join("home"), cache_dir: dir.join("cache") };
        Settings::from_layers(Vec::new(), defaults, Vec::new())
    }

    /// Where model files are looked for.
    pub fn resolver(&self) -> strix_zoo::Resolver {
        strix_zoo::Resolver {
            cache_dir: self.cache_dir.clone(),
            search_path: self.model_path.clone(),
            hub: self.hub.clone(),
            offline: self.offline,
        }
    }
}

/// The registry's store and database: the layers' (a local store keeps its SQLite file inside
/// it), else a SQLite registry under `home`.
#[cfg(feature = "registry")]
fn registry_config(
    store: Option<String>,
    db: Option<String>,
    home: &Path,
    s3: Vec<(String, String)>,
) -> RegistryConfig {
    let local = RegistryConfig::local(home);
    let store = store.unwrap_or(local.store);
    let db = match db {
        Some(db) => db,
        None if !store.contains("://") || store.starts_with("file://") => {
            strix_registry::sqlite_url(&Path::new(store.strip_prefix("file://").unwrap_or(&store)).join("registry.db"))
        }
        None => local.db,
    };
    RegistryConfig { store, db, s3 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults { home: "/d/home".into(), cache_dir: "/d/cache".into() }
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
        let flags = Layer { hub: Some("http://flag".into()), ..Default::default() };
        let env = Layer { hub: Some("http://env".into()), cache_dir: Some("/env/cache".into()), ..Default::default() };
        let file = Layer::from_toml(
            "cache_dir = \"/file/cache\"\nhome = \"/file/home\"\noffline = true\n",
            Path::new("settings.toml"),
        )
        .unwrap();
        let s = Settings::from_layers(vec![flags, env, file], defaults(), Vec::new());
        assert_eq!(s.hub.as_deref(), Some("http://flag"));
        assert_eq!(s.cache_dir, PathBuf::from("/env/cache"));
        assert_eq!(s.home, PathBuf::from("/file/home"));
        assert!(s.offline);
        #[cfg(feature = "registry")]
        {
            assert_eq!(s.registry.store, "/file/home/registry");
            assert!(s.registry.db.starts_with("sqlite:///file/home/registry/registry.db"), "{}", s.registry.db);
        }
        assert!(!s.registry_named);
        let bare = Settings::from_layers(Vec::new(), defaults(), Vec::new());
        assert_eq!((bare.home, bare.cache_dir, bare.offline), ("/d/home".into(), "/d/cache".into(), false));
    }

    #[cfg(feature = "registry")]
    #[test]
    fn empty_values_do_not_hide_lower_layers_and_stores_keep_their_database() {
        let env = Layer { hub: Some(String::new()), registry_store: Some("/srv/reg".into()), ..Default::default() };
        let file = Layer { hub: Some("http://file".into()), ..Default::default() };
        let s = Settings::from_layers(vec![env, file], defaults(), Vec::new());
        assert_eq!(s.hub.as_deref(), Some("http://file"));
        assert!(s.registry.db.starts_with("sqlite:///srv/reg/registry.db"));
        assert!(s.registry_named);
        let s3 = Layer { registry_store: Some("s3://b/p".into()), ..Default::default() };
        let s = Settings::from_layers(vec![s3], defaults(), Vec::new());
        assert!(s.registry.db.starts_with("sqlite:///d/home/registry/registry.db"));
    }

    #[test]
    fn a_settings_file_with_an_unknown_key_is_refused_with_its_name() {
        let e = Layer::from_toml("cache = \"/x\"\n", Path::new("/etc/strix.toml")).unwrap_err().to_string();
        assert!(e.contains("/etc/strix.toml") && e.contains("cache"), "{e}");
    }
}
