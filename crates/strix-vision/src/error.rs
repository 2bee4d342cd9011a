use thiserror::Error;

/// The error another library (a decoder, an engine) gave, or Strix's own finding in words.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong with one image or one preprocessing set-up. Messages name the problem;
/// the caller adds which file or request it was. The underlying error is the `source()`,
/// not repeated in the message.
#[derive(Debug, Error)]
pub enum VisionError {
    #[error("file not found")]
    NotFound,
    #[error("is a directory, not an image file")]
    NotAFile,
    #[error("cannot read")]
    Io(#[source] std::io::Error),
    #[error("empty file (0 bytes)")]
    Empty,
    #[error("file is {bytes} bytes, over the {limit}-byte limit")]
    FileTooLarge { bytes: u64, limit: u64 },
    #[error("not an image: unrecognised format (starts with bytes {head})")]
    UnknownFormat { head: String },
    #[error("corrupt or truncated {format}")]
    Corrupt {
        format: &'static str,
        #[source]
        source: Cause,
    },
    #[error("cannot encode {format}")]
    Encode {
        format: &'static str,
        #[source]
        source: Cause,
    },
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
    #[error("inference failed")]
    Inference(#[source] Cause),
    #[error("model output `{name}` has shape {shape:?}; {expected}")]
    OutputShape { name: String, shape: Vec<usize>, expected: String },
}

impl VisionError {
    pub(crate) fn from_io(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => VisionError::NotFound,
            std::io::ErrorKind::IsADirectory => VisionError::NotAFile,
            _ => VisionError::Io(e),
        }
    }
}
