use std::path::PathBuf;

/// What went wrong reading a dataset, with the file (and line) a user must look at.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}:{line}: {reason}")]
    Line { path: PathBuf, line: usize, reason: String },
    #[error("class '{class}' has no images ({path})")]
    EmptyClass { class: String, path: PathBuf },
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
        let path = path.into();
        move |source| DataError::Io { path, source }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> DataError {
        DataError::Format { path: path.into(), reason: reason.into() }
    }
}
