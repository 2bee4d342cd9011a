use strix_core::Task;

/// Why a model could not be found, fetched or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Zoo(#[from] strix_zoo::ZooError),

    #[cfg(feature = "registry")]
    #[error(transparent)]
    Registry(#[from] strix_registry::RegistryError),

    #[cfg(not(feature = "registry"))]
    #[error(
        "{text} names a registry version, and this strix was built without the model registry \
         (./scripts/demo builds predict alone); build everything with `cargo build --release -p strix`"
    )]
    NoRegistry { text: String },

    /// The zoo's answer (its known models) and where else the name may be.
    #[cfg(not(feature = "registry"))]
    #[error(
        "{zoo}; it may be in the model registry, and this strix was built without it (./scripts/demo \
         builds predict alone); build everything with `cargo build --release -p strix`"
    )]
    MaybeInRegistry { zoo: strix_zoo::ZooError },

    #[error("{name} is a {actual} model, not {wanted}")]
    WrongTask { name: String, actual: Task, wanted: Task },

    #[error("{version} has no {file}; it cannot be run by name")]
    NoSpec { version: String, file: &'static str },

    #[cfg(feature = "registry")]
    #[error("cannot start the registry's runtime")]
    Runtime(#[source] std::io::Error),

    #[error(transparent)]
    Engine(#[from] strix_runtime::RuntimeError),

    #[error("cannot load {name} with {backend}")]
    Load {
        name: String,
        backend: strix_runtime::Backend,
        #[source]
        source: strix_pipeline::PipelineError,
    },

    #[error("{name} loaded but a test inference failed")]
    Probe {
        name: String,
        #[source]
        source: strix_pipeline::PipelineError,
    },

    #[error("settings file {path}: {reason}")]
    Settings { path: std::path::PathBuf, reason: String },
}
