use std::path::{Path, PathBuf};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the registry; each message names the thing at fault, and
/// the error that caused it is its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reason}")]
    InvalidName { reason: String },
    #[error("invalid model reference {text:?}: {reason}")]
    InvalidRef { text: String, reason: String },
    #[error("registry store {url}")]
    StoreUrl {
        url: String,
        #[source]
        source: Cause,
    },
    #[error("registry database {url}")]
    Db {
        url: String,
        #[source]
        source: Cause,
    },
    #[error("no model called {name:?} in the registry{known}")]
    UnknownModel { name: String, known: String },
    #[error("{name} has no version {version} (versions: {known})")]
    UnknownVersion { name: String, version: u64, known: String },
    #[error("{name} has no alias {alias:?} (aliases: {known})")]
    UnknownAlias { name: String, alias: String, known: String },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} in the registry store is damaged: expected sha256 {expected}, found {actual}")]
    Corrupt { what: String, expected: String, actual: String },
    #[error("{path} changed while it was being uploaded; nothing was registered", path = path.display())]
    Changed { path: PathBuf },
    #[error("registry database {url} has schema version {found}, newer than this strix knows ({known}); upgrade strix")]
    SchemaTooNew { url: String, found: i64, known: i64 },
    /// A lineage record that could not be written or read back as JSON.
    #[error("{what}")]
    Record {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A conditional registration found another version registered since it read the latest.
    #[error(
        "{name} changed while this was being written: version {found} is the latest now, not {expected}; read it again and retry"
    )]
    Conflict { name: String, expected: u64, found: u64 },
    #[error("{0}")]
    Invalid(String),
}

impl RegistryError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
        move |source| RegistryError::Io { path: path.to_path_buf(), source }
    }
}

/// Why the store or the database failed. Their errors can quote URLs, and a database URL
/// holds its password, so the text shown is on one line with credentials masked
/// ([`strix_core::redact`]); the error itself is kept for [`Cause::original`].
///
/// `source()` stops here on purpose: object_store and sqlx already print their causes inside
/// their own message, and walking on would print them again, unmasked.
#[derive(Debug)]
pub struct Cause {
    text: String,
    original: Option<BoxError>,
}

impl Cause {
    pub(crate) fn new(e: impl Into<BoxError>) -> Cause {
        let original = e.into();
        Cause { text: one_line(&original.to_string()), original: Some(original) }
    }

    /// `e`, introduced by what was being done (`migration`, `cannot create the folder`).
    pub(crate) fn during(doing: &str, e: impl Into<BoxError>) -> Cause {
        let cause = Cause::new(e);
        Cause { text: format!("{doing}: {}", cause.text), ..cause }
    }

    /// A cause that is Strix's own finding, not another library's error.
    pub(crate) fn msg(text: impl Into<String>) -> Cause {
        Cause { text: one_line(&text.into()), original: None }
    }

    /// The error as the store or the database gave it (`None` for Strix's own findings).
    pub fn original(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.original.as_deref()
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Cause {}

fn one_line(text: &str) -> String {
    strix_core::redact(&text.replace('\n', " "))
}
