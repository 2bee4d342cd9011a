//! One `Runtime` trait, two ONNX backends.
//!
//! - [`Backend::Tract`]: `tract-onnx`, pure Rust, builds anywhere; the default.
//! - [`Backend::Ort`] (cargo feature `ort`): ONNX Runtime through the `ort` crate, loaded at run
//!   time from the shared library [`RuntimeOptions::ort_library`] names (the binary takes it
//!   from `--ort-lib` / `ORT_DYLIB_PATH`).
//!
//! ```no_run
//! use strix_runtime::{open, Backend, RuntimeOptions};
//! use strix_core::Tensor;
//! let runtime = open(Backend::Tract, &RuntimeOptions::default())?;
//! let session = runtime.load("model.onnx".as_ref())?;
//! println!("{}", session.inputs()[0].describe());
//! let x = Tensor::from_f32(vec![1, 3, 224, 224], vec![0.0; 3 * 224 * 224])?;
//! let outputs = session.run(&[x])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
pub mod initializer;
mod inspect;
#[cfg(feature = "ort")]
mod onnxruntime;
pub mod outputs;
mod tract;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
pub use strix_core::{DType, Dim, Tensor, TensorInfo, TensorView};

pub use error::RuntimeError;
pub use inspect::{OnnxInfo, inspect};

/// Which ONNX engine runs a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// tract-onnx: pure Rust, no system library needed.
    #[default]
    Tract,
    /// ONNX Runtime, loaded from libonnxruntime at run time (cargo feature `ort`).
    Ort,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Tract, Backend::Ort];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Tract => "tract",
            Backend::Ort => "ort",
        }
    }

    /// Whether this build of Strix contains the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::Tract => true,
            Backend::Ort => cfg!(feature = "ort"),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tract" => Ok(Backend::Tract),
            "ort" | "onnxruntime" => Ok(Backend::Ort),
            _ => Err(RuntimeError::UnknownBackend(s.to_string())),
        }
    }
}

/// Where an engine runs a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU (every backend).
    #[default]
    Cpu,
    /// An NVIDIA GPU by its CUDA ordinal: ONNX Runtime's CUDA execution provider (the
    /// `onnxruntime-gpu` library), which runs on the CPU what it has no kernel for.
    Cuda(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(0) => f.write_str("cuda"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = RuntimeError;
    /// `cpu`, `cuda` (GPU 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        match lower.split_once(':') {
            None if lower == "cpu" => Ok(Device::Cpu),
            None if lower == "cuda" => Ok(Device::Cuda(0)),
            Some(("cuda", n)) => n.parse().map(Device::Cuda).map_err(|_| RuntimeError::UnknownDevice(s.to_string())),
            _ => Err(RuntimeError::UnknownDevice(s.to_string())),
        }
    }
}

/// Settings shared by every session a runtime loads.
#[derive(Clone, Debug, Default)]
pub struct RuntimeOptions {
    /// Threads for one inference; `None` uses every core. On a GPU, the threads of the
    /// operators it runs on the CPU.
    pub threads: Option<usize>,
    /// Where models run; a GPU only with [`Backend::Ort`].
    pub device: Device,
    /// Path of libonnxruntime for the `ort` backend (the binary's settings fill it from
    /// `--ort-lib` / `ORT_DYLIB_PATH`); `None`: the `ort` backend cannot open.
    pub ort_library: Option<PathBuf>,
}

impl RuntimeOptions {
    /// Threads per inference these options give: the setting, else every core.
    pub fn thread_count(&self) -> usize {
        self.threads.filter(|&n| n > 0).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

/// An ONNX engine that turns model files into runnable sessions.
pub trait Runtime: Send + Sync {
    fn backend(&self) -> Backend;
    /// Engine name and version, e.g. `onnxruntime 1.31.1`.
    fn version(&self) -> String;
    /// Parse, check and optimise a model file, ready to run.
    fn load(&self, model: &Path) -> Result<Box<dyn Session>, RuntimeError>;
    /// [`Runtime::load`] with tensors inside the graph (each some node's output) read out as
    /// outputs after its own: a classifier's pooled features for an embedding.
    fn load_with_outputs(&self, model: &Path, tensors: &[String]) -> Result<Box<dyn Session>, RuntimeError>;
}

/// A loaded model. Runs take `&self`: several threads may run one session at once (each run
/// gets its own state), which is how throughput-minded callers use every core on models that
/// take one image at a time.
pub trait Session: Send + Sync {
    fn inputs(&self) -> &[TensorInfo];
    fn outputs(&self) -> &[TensorInfo];
    /// Threads one inference uses unless the caller says otherwise (the runtime's setting).
    fn default_threads(&self) -> usize;
    /// Run one inference on `threads` threads. `inputs` follow the order of
    /// [`Session::inputs`]; outputs follow [`Session::outputs`].
    ///
    /// # Shapes
    /// Each input must have the declared rank and equal every fixed dimension; symbolic
    /// dimensions (a batch `N`, an image size) take any value the model accepts.
    fn run_with_threads(&self, inputs: &[Tensor], threads: usize) -> Result<Vec<Tensor>, RuntimeError>;
    /// [`Session::run_with_threads`], lending the outputs to `visit` where the engine holds
    /// them rather than copying them out (ONNX Runtime's buffers): for a caller that reads
    /// what it needs of a large output (a detector's anchors, every frame) and keeps none of it.
    /// `visit` is called once when the run succeeds and never when it fails; the run's session
    /// stays taken while it runs.
    fn run_borrowed(
        &self,
        inputs: &[Tensor],
        threads: usize,
        visit: &mut dyn FnMut(&[TensorView<'_>]),
    ) -> Result<(), RuntimeError> {
        let outputs = self.run_with_threads(inputs, threads)?;
        visit(&outputs.iter().map(Tensor::view).collect::<Vec<_>>());
        Ok(())
    }
    /// Get ready for `concurrency` runs at once on `threads` threads each, so the first
    /// runs do not pay for it (ONNX Runtime builds a session per concurrent run).
    fn warm_up(&self, threads: usize, concurrency: usize) -> Result<(), RuntimeError> {
        let _ = (threads, concurrency);
        Ok(())
    }
    /// Run one inference on the default number of threads.
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        self.run_with_threads(inputs, self.default_threads())
    }
}

/// Open the runtime for `backend`.
pub fn open(backend: Backend, options: &RuntimeOptions) -> Result<Box<dyn Runtime>, RuntimeError> {
    match backend {
        Backend::Tract if options.device != Device::Cpu => {
            Err(RuntimeError::DeviceUnsupported { backend, device: options.device })
        }
        Backend::Tract => Ok(Box::new(tract::TractRuntime::new(options))),
        #[cfg(feature = "ort")]
        Backend::Ort => Ok(Box::new(onnxruntime::OrtRuntime::new(options)?)),
        #[cfg(not(feature = "ort"))]
        Backend::Ort => Err(RuntimeError::NotCompiled(backend)),
    }
}

/// Check inputs against the session's declared inputs before handing them to an engine, so a
/// wrong shape is a clear error rather than an engine-specific message (or a crash).
pub(crate) fn check_inputs(declared: &[TensorInfo], inputs: &[Tensor]) -> Result<(), RuntimeError> {
    if declared.len() != inputs.len() {
        return Err(RuntimeError::InputCount { expected: declared.len(), actual: inputs.len() });
    }
    for (info, tensor) in declared.iter().zip(inputs) {
        if info.dtype != tensor.dtype() {
            return Err(RuntimeError::InputDType {
                name: info.name.clone(),
                expected: info.dtype,
                actual: tensor.dtype(),
            });
        }
        if !info.accepts(tensor.shape()) {
            return Err(RuntimeError::InputShape {
                name: info.name.clone(),
                expected: info.shape.iter().map(Dim::to_string).collect::<Vec<_>>().join(","),
                actual: tensor.shape().to_vec(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_tract_cannot_read_keeps_tracts_error_as_the_cause() {
        let dir = std::env::temp_dir().join(format!("strix-runtime-cause-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("garbage.onnx");
        std::fs::write(&path, b"\xff\xff not protobuf").unwrap();
        let err = crate::tract::TractRuntime::new(&RuntimeOptions::default()).load(&path).map(|_| ()).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(err.to_string(), format!("{}: cannot load model with tract", path.display()));
        let cause = std::error::Error::source(&err).expect("tract's error kept");
        assert!(!cause.to_string().is_empty() && !err.to_string().contains(&cause.to_string()), "{err:?}");
    }

    #[test]
    fn backend_names_round_trip() {
        for b in Backend::ALL {
            assert_eq!(b.as_str().parse::<Backend>().unwrap(), b);
        }
        assert_eq!("onnxruntime".parse::<Backend>().unwrap(), Backend::Ort);
        assert!("tensorrt".parse::<Backend>().is_err());
    }

    #[test]
    fn device_names_round_trip_and_tract_refuses_a_gpu() {
        for d in [Device::Cpu, Device::Cuda(0), Device::Cuda(3)] {
            assert_eq!(d.to_string().parse::<Device>().unwrap(), d);
        }
        assert_eq!("CUDA:1".parse::<Device>().unwrap(), Device::Cuda(1));
        for bad in ["gpu", "cuda:", "cuda:x", "cpu:0", ""] {
            assert!(matches!(bad.parse::<Device>(), Err(RuntimeError::UnknownDevice(_))), "{bad}");
        }
        let on_gpu = RuntimeOptions { device: Device::Cuda(0), ..RuntimeOptions::default() };
        assert!(matches!(open(Backend::Tract, &on_gpu), Err(RuntimeError::DeviceUnsupported { .. })));
        assert!(open(Backend::Tract, &RuntimeOptions::default()).is_ok());
    }

    #[test]
    fn inputs_are_checked_by_name_dtype_and_shape() {
        let declared =
            vec![TensorInfo { name: "input".into(), dtype: DType::F32, shape: vec![Dim::Fixed(1), Dim::Fixed(3)] }];
        let ok = Tensor::from_f32(vec![1, 3], vec![0.0; 3]).unwrap();
        check_inputs(&declared, std::slice::from_ref(&ok)).unwrap();

        let wrong = Tensor::from_f32(vec![2, 3], vec![0.0; 6]).unwrap();
        let msg = check_inputs(&declared, &[wrong]).unwrap_err().to_string();
        assert!(msg.contains("input") && msg.contains("[2, 3]") && msg.contains("1,3"), "{msg}");

        let ints = Tensor::new(vec![1, 3], strix_core::TensorData::I32(vec![0; 3])).unwrap();
        assert!(matches!(check_inputs(&declared, &[ints]), Err(RuntimeError::InputDType { .. })));
        assert!(matches!(check_inputs(&declared, &[]), Err(RuntimeError::InputCount { .. })));
    }
}
