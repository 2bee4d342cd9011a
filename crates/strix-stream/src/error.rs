use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A source that cannot be opened or read (the text says which and why).
    #[error("{source_name}: {message}")]
    Source { source_name: String, message: String },
    #[error("{0}: no such file or folder")]
    Missing(PathBuf),
    #[error("cannot run {program} (is FFmpeg installed? `apt install ffmpeg`): {error}")]
    Spawn { program: String, error: std::io::Error },
    #[error("invalid stream settings: {0}")]
    Config(String),
    #[error("{what}: {message}")]
    Output { what: String, message: String },
    #[error(transparent)]
    Pipeline(#[from] strix_pipeline::PipelineError),
    #[error(transparent)]
    Vision(#[from] strix_vision::VisionError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl StreamError {
    /// Messages pass through [`strix_core::redact`]: they quote URLs (FFmpeg, sinks).
    pub(crate) fn source(name: &str, message: impl Into<String>) -> Self {
        StreamError::Source { source_name: strix_core::redact(name), message: strix_core::redact(&message.into()) }
    }

    pub(crate) fn output(what: &str, message: impl std::fmt::Display) -> Self {
        StreamError::Output { what: strix_core::redact(what), message: strix_core::redact(&message.to_string()) }
    }
}
