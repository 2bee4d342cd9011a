use std::path::PathBuf;

use thiserror::Error;

/// What went wrong finding, reading or fetching a model. Where another library's error caused
/// it, that error is the `source()` and is not repeated in the message.
#[derive(Debug, Error)]
pub enum ZooError {
    #[error("{path}: cannot read model spec")]
    SpecRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// TOML's own message, flattened to one line (its snippet spans several): the spec's
    /// author reads it, and no caller needs the parser's error value.
    #[error("{origin}: {message}")]
    SpecParse { origin: String, message: String },

    #[error("{origin}: invalid model spec: {message}")]
    SpecInvalid { origin: String, message: String },

    #[error("unknown model `{name}`; known models: {available} (or give a spec .toml / .onnx path)")]
    UnknownModel { name: String, available: String },

    #[error(
        "{onnx}: no model spec beside it; write {expected} (task, input, preprocessing, decoder; see `strix models show efficientnet_lite0 --toml`)"
    )]
    NoSpecBeside { onnx: PathBuf, expected: PathBuf },

    #[error("{file}: not found in {searched}{hint}")]
    ArtifactMissing { file: String, searched: String, hint: String },

    #[error(
        "{path}: sha256 is {actual}, the spec says {expected}; the file is corrupt or not the one the spec describes"
    )]
    ChecksumMismatch { path: PathBuf, expected: String, actual: String },

    #[error("{url}: download refused: the spec gives no sha256 to check it against")]
    NoChecksum { url: String },

    #[error("{url}: download failed")]
    Download {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    #[error("{url}: downloaded file has sha256 {actual}, expected {expected}; it was discarded")]
    DownloadCorrupt { url: String, expected: String, actual: String },

    #[error("{path}: leads outside the model folder {folder} (a link?); refusing to read it")]
    OutsideFolder { path: PathBuf, folder: PathBuf },

    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ZooError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ZooError::Io { path: path.into(), source }
    }
}
