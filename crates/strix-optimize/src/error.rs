use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum OptimizeError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not an ONNX model", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    /// The model cannot be quantised as it is (opset, nothing to quantise, odd weights).
    #[error("cannot quantise: {0}")]
    Unsupported(String),
    /// A weight the rewrite cannot read.
    #[error("cannot quantise")]
    Weight(#[from] strix_runtime::initializer::InitializerError),
    /// The calibration or held-out images cannot do their job.
    #[error("calibration: {0}")]
    Calibration(String),
    /// The held-out images cannot judge the int8 model: too few, or some are calibration images.
    #[error("held-out images: {0}")]
    HeldOut(String),
    /// The int8 model was made but does not agree well enough with the float one.
    #[error("the int8 model is refused: {}", .0.summary())]
    GateFailed(Box<crate::GateReport>),
    #[error(transparent)]
    Runtime(#[from] strix_runtime::RuntimeError),
    #[error(transparent)]
    Pipeline(#[from] strix_pipeline::PipelineError),
}

impl OptimizeError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> OptimizeError {
        let path = path.into();
        move |source| OptimizeError::Io { path, source }
    }
}
