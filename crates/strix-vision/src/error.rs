use thiserror::Error;

/// What went wrong with one image or one preprocessing set-up. Messages name the problem;
/// the caller adds which file or request it was.
#[derive(Debug, Error)]
pub enum VisionError {
    #[error("file not found")]
    NotFound,
    #[error("is a directory, not an image file")]
    NotAFile,
    #[error("cannot read: {0}")]
    Io(String),
    #[error("empty file (0 bytes)")]
    Empty,
    #[error("file is {bytes} bytes, over the {limit}-byte limit")]
    FileTooLarge { bytes: u64, limit: u64 },
    #[error("not an image: unrecognised format (starts with bytes {head})")]
    UnknownFormat { head: String },
    #[error("corrupt or truncated {format}: {detail}")]
    Corrupt { format: &'static str, detail: String },
    #[error(
        "image is {width}x{height} ({:.1} Mpx), over the {:.1} Mpx limit",
        *width as f64 * *height as f64 / 1e6,
        *limit as f64 / 1e6
    )]
    TooManyPixels { width: u64, height: u64, limit: u64 },
    #[error("invalid preprocessing: {0}")]
    Config(String),
    #[error("model has no output `{name}` (outputs: {available})")]
    MissingOutput { name: String, available: String },
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("model output `{name}` has shape {shape:?}; {expected}")]
    OutputShape { name: String, shape: Vec<usize>, expected: String },
}

impl VisionError {
    pub(crate) fn from_io(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => VisionError::NotFound,
            std::io::ErrorKind::IsADirectory => VisionError::NotAFile,
            _ => VisionError::Io(e.to_string()),
        }
    }
}
