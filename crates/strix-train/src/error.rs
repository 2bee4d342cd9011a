use std::path::PathBuf;

/// What stopped a training job or a model load, with what a user needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Weights { path: PathBuf, reason: String },
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] strix_data::DataError),
    #[error("{path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
    /// The observer asked the run to stop without finishing; its checkpoint is saved, and
    /// `resume` continues it.
    #[error("interrupted at epoch {epoch}; {} holds its checkpoint", run_dir.display())]
    Interrupted { epoch: usize, run_dir: PathBuf },
    #[error("cannot write {what}")]
    Serialize {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// `value` as pretty JSON, or why not (never an empty file).
pub(crate) fn json<T: serde::Serialize>(value: &T, what: &'static str) -> Result<String, TrainError> {
    serde_json::to_string_pretty(value).map_err(|e| TrainError::Serialize { what, source: Box::new(e) })
}

/// `value` as one JSON line.
pub(crate) fn json_line<T: serde::Serialize>(value: &T, what: &'static str) -> Result<String, TrainError> {
    serde_json::to_string(value).map_err(|e| TrainError::Serialize { what, source: Box::new(e) })
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
        let path = path.into();
        move |source| TrainError::Io { path, source }
    }
}
