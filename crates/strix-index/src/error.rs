use strix_registry::RegistryError;

/// Everything that can go wrong with an index; each message names the index or input at fault.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {name}")]
    Registry {
        name: String,
        #[source]
        source: RegistryError,
    },
    #[error("{name} is a {task} model in the registry, not an index")]
    NotAnIndex { name: String, task: String },
    #[error("index {name} already exists (version {version}); add to it, or remove it first")]
    Exists { name: String, version: u64 },
    #[error(
        "index {name} holds vectors of {expected}; these come from {found}: search and add with the index's own model (or create another index)"
    )]
    OtherModel { name: String, expected: String, found: String },
    #[error("index {name} holds {expected}-d vectors, not {found}-d")]
    Dimensions { name: String, expected: usize, found: usize },
    #[error("vector {at} is not usable: {reason}")]
    BadVector { at: usize, reason: String },
    #[error("index {name} has no entry {id}")]
    UnknownEntry { name: String, id: u64 },
    #[error("index {name}: {what} is damaged: {reason}")]
    Damaged { name: String, what: String, reason: String },
    #[error("index {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("index {name}: other writers changed it before each of {tries} tries; retry later")]
    Busy { name: String, tries: usize },
    #[error("index {name}: the graph")]
    Graph {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl IndexError {
    pub(crate) fn registry(name: &str) -> impl FnOnce(RegistryError) -> IndexError + '_ {
        move |source| IndexError::Registry { name: name.to_string(), source }
    }
}
