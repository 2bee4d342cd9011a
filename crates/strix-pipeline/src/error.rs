use strix_runtime::RuntimeError;
use strix_vision::VisionError;
use strix_zoo::ZooError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Zoo(#[from] ZooError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Vision(#[from] VisionError),
    #[error("{model}: the spec does not match the ONNX graph: {message}")]
    SpecMismatch { model: String, message: String },
    /// The inference of the batch this image was in failed.
    #[error("inference failed: {0}")]
    Batch(String),
    #[error("internal error: {0}")]
    Internal(String),
}
