use std::path::{Path, PathBuf};

/// Everything that can go wrong in the registry; each message names the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reason}")]
    InvalidName { reason: String },
    #[error("invalid model reference {text:?}: {reason}")]
    InvalidRef { text: String, reason: String },
    #[error("registry store {url}: {reason}")]
    StoreUrl { url: String, reason: String },
    #[error("registry database {url}: {reason}")]
    Db { url: String, reason: String },
    #[error("no model called {name:?} in the registry{known}")]
    UnknownModel { name: String, known: String },
    #[error("{name} has no version {version} (versions: {known})")]
    UnknownVersion { name: String, version: u64, known: String },
    #[error("{name} has no alias {alias:?} (aliases: {known})")]
    UnknownAlias { name: String, alias: String, known: String },
    #[error("{}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    #[error("{what} in the registry store is damaged: expected sha256 {expected}, found {actual}")]
    Corrupt { what: String, expected: String, actual: String },
    #[error("{path} changed while it was being uploaded; nothing was registered", path = path.display())]
    Changed { path: PathBuf },
    #[error("registry database {url} has schema version {found}, newer than this strix knows ({known}); upgrade strix")]
    SchemaTooNew { url: String, found: i64, known: i64 },
    #[error("{0}")]
    Invalid(String),
}

impl RegistryError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
        move |e| RegistryError::Io { path: path.to_path_buf(), reason: e.to_string() }
    }
}
