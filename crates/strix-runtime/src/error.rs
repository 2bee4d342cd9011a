use std::path::PathBuf;

use strix_core::DType;
use thiserror::Error;

use crate::{Backend, Device};

/// The engine's own error (tract's, ONNX Runtime's), kept as the `source()` of ours.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong loading or running a model. The engine's error, where there is one, is the
/// `source()`, and is not repeated in the message.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("unknown backend `{0}` (choose tract or ort)")]
    UnknownBackend(String),

    #[error("unknown device `{0}` (choose cpu, cuda or cuda:N)")]
    UnknownDevice(String),

    #[error(
        "the {backend} backend runs on the CPU only, not on {device}; use --backend ort (ONNX Runtime with its CUDA library, PyPI's `onnxruntime-gpu`)"
    )]
    DeviceUnsupported { backend: Backend, device: Device },

    #[error(
        "ONNX Runtime cannot run on {device} (a GPU needs the CUDA build of the library, \
         onnxruntime/capi/libonnxruntime.so.* from PyPI's `onnxruntime-gpu`, with its CUDA and cuDNN libraries)"
    )]
    OrtDevice {
        device: Device,
        #[source]
        source: Cause,
    },

    #[error("the {0} backend is not in this build of strix; rebuild with `cargo build --features ort`")]
    NotCompiled(Backend),

    #[error(
        "ONNX Runtime library not found: set ORT_DYLIB_PATH to a libonnxruntime.so \
         (PyPI's `onnxruntime` wheel ships one in onnxruntime/capi/; ./scripts/setup installs it)"
    )]
    OrtLibraryUnset,

    #[error("cannot load ONNX Runtime from {path}")]
    OrtLibrary {
        path: PathBuf,
        #[source]
        source: Cause,
    },

    #[error("{path}: model file not found")]
    ModelMissing { path: PathBuf },

    #[error("{path}: cannot load model with {backend}")]
    Load {
        path: PathBuf,
        backend: Backend,
        #[source]
        source: Cause,
    },

    #[error("model takes {expected} input(s), {actual} given")]
    InputCount { expected: usize, actual: usize },

    #[error("input `{name}` must be {expected}, got {actual}")]
    InputDType { name: String, expected: DType, actual: DType },

    #[error("input `{name}` must have shape [{expected}], got {actual:?}")]
    InputShape { name: String, expected: String, actual: Vec<usize> },

    #[error("output `{name}` has type {dtype}, which strix does not read")]
    OutputDType { name: String, dtype: String },

    #[error("inference failed in {backend}")]
    Run {
        backend: Backend,
        #[source]
        source: Cause,
    },
}
