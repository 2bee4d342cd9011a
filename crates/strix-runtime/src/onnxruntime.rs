//! The ONNX Runtime backend (cargo feature `ort`): the fast path, loaded at run time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::session::{Session as OrtSession, SessionInputValue, builder::GraphOptimizationLevel};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};
use strix_core::{DType, Dim, Tensor, TensorData, TensorDataRef, TensorInfo, TensorView};

use crate::{Backend, Device, Runtime, RuntimeError, RuntimeOptions, Session, check_inputs};

/// ONNX Runtime allows one environment per process and the library, once loaded, stays: keep
/// both here and hand clones to every runtime opened later.
static GLOBAL: Mutex<Option<(PathBuf, Environment, String)>> = Mutex::new(None);

fn global_environment(path: &Path) -> Result<(Environment, String), RuntimeError> {
    let mut global = GLOBAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((loaded, env, version)) = global.as_ref() {
        if loaded != path {
            return Err(RuntimeError::OrtLibrary {
                path: path.to_path_buf(),
                source: format!("this process already loaded ONNX Runtime from {}", loaded.display()).into(),
            });
        }
        return Ok((env.clone(), version.clone()));
    }
    let lib_err = |e: crate::error::Cause| RuntimeError::OrtLibrary { path: path.to_path_buf(), source: e };
    let builder = ort::init_from(path).map_err(|e| lib_err(e.into()))?;
    let environment = builder.with_name("strix").build().map_err(|e| lib_err(e.into()))?;
    let version = ort::info()
        .split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|part| part.strip_prefix("git-branch=rel-"))
        .map_or_else(|| "onnxruntime".to_string(), |v| format!("onnxruntime {v}"));
    *global = Some((path.to_path_buf(), environment.clone(), version.clone()));
    Ok((environment, version))
}

pub(crate) struct OrtRuntime {
    environment: Environment,
    threads: usize,
    device: Device,
    version: String,
}

impl OrtRuntime {
    pub(crate) fn new(options: &RuntimeOptions) -> Result<Self, RuntimeError> {
        let path: PathBuf = match &options.ort_library {
            Some(p) if !p.as_os_str().is_empty() => p.clone(),
            _ => return Err(RuntimeError::OrtLibraryUnset),
        };
        if !path.is_file() {
            return Err(RuntimeError::OrtLibrary { path, source: "no such file".into() });
        }
        let (environment, version) = global_environment(&path)?;
        Ok(OrtRuntime { environment, threads: options.thread_count(), device: options.device, version })
    }
}

impl Runtime for OrtRuntime {
    fn backend(&self) -> Backend {
        Backend::Ort
    }

    /// `onnxruntime 1.31.1`, with `on cuda` when models run on a GPU.
    fn version(&self) -> String {
        match self.device {
            Device::Cpu => self.version.clone(),
            gpu => format!("{} on {gpu}", self.version),
        }
    }

    fn load(&self, model: &Path) -> Result<Box<dyn Session>, RuntimeError> {
        if !model.is_file() {
            return Err(RuntimeError::ModelMissing { path: model.to_path_buf() });
        }
        self.session(Source { path: model.to_path_buf(), bytes: None })
    }

    fn load_with_outputs(&self, model: &Path, tensors: &[String]) -> Result<Box<dyn Session>, RuntimeError> {
        let bytes = crate::outputs::file_with_outputs(model, tensors, Backend::Ort)?;
        self.session(Source { path: model.to_path_buf(), bytes: Some(Arc::from(bytes)) })
    }
}

/// Where a session's graph comes from: its file, or (a graph changed on load) bytes in memory,
/// kept to build more sessions; the path names it in errors either way.
#[derive(Clone)]
struct Source {
    path: PathBuf,
    bytes: Option<Arc<[u8]>>,
}

impl OrtRuntime {
    fn session(&self, model: Source) -> Result<Box<dyn Session>, RuntimeError> {
        let session = build_session(&self.environment, &model, self.threads, self.device)?;
        let inputs = session.inputs().iter().map(|o| describe(o.name(), o.dtype())).collect();
        let outputs = session.outputs().iter().map(|o| describe(o.name(), o.dtype())).collect();
        Ok(Box::new(OrtModel {
            environment: self.environment.clone(),
            source: model,
            threads: self.threads,
            device: self.device,
            idle: Mutex::new(vec![(self.threads, session)]),
            inputs,
            outputs,
        }))
    }
}

fn build_session(
    environment: &Environment,
    model: &Source,
    threads: usize,
    device: Device,
) -> Result<OrtSession, RuntimeError> {
    let load_err =
        |e: ort::Error| RuntimeError::Load { path: model.path.clone(), backend: Backend::Ort, source: e.into() };
    // The builder's errors carry the builder back; only the error is kept.
    let mut builder = OrtSession::builder(environment)
        .map_err(load_err)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| load_err(e.into()))?
        .with_intra_threads(threads)
        .map_err(|e| load_err(e.into()))?;
    if let Device::Cuda(id) = device {
        // Fail loudly: ONNX Runtime's default is to fall back to the CPU in silence, and a GPU
        // run that is a CPU run is what nobody asked for.
        let cuda = ort::ep::CUDA::default().with_device_id(id as i32).build().error_on_failure();
        builder = builder
            .with_execution_providers([cuda])
            .map_err(|e| RuntimeError::OrtDevice { device, source: ort::Error::<()>::from(e).into() })?;
    }
    match &model.bytes {
        Some(bytes) => builder.commit_from_memory(bytes).map_err(load_err),
        None => builder.commit_from_file(&model.path).map_err(load_err),
    }
}

fn describe(name: &str, ty: &ValueType) -> TensorInfo {
    match ty {
        ValueType::Tensor { ty, shape, dimension_symbols } => TensorInfo {
            name: name.to_string(),
            dtype: dtype_of(*ty),
            shape: shape
                .iter()
                .enumerate()
                .map(|(axis, &d)| {
                    if d >= 0 {
                        Dim::Fixed(d as usize)
                    } else {
                        match dimension_symbols.get(axis) {
                            Some(s) if !s.is_empty() => Dim::Symbolic(s.clone()),
                            _ => Dim::Symbolic("?".to_string()),
                        }
                    }
                })
                .collect(),
        },
        _ => TensorInfo { name: name.to_string(), dtype: DType::Other, shape: vec![] },
    }
}

fn dtype_of(t: TensorElementType) -> DType {
    match t {
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float16 => DType::F16,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Int8 => DType::I8,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Bool => DType::Bool,
        _ => DType::Other,
    }
}

struct OrtModel {
    environment: Environment,
    source: Source,
    threads: usize,
    device: Device,
    /// Sessions not running now, with their intra-op thread counts. `ort` runs take `&mut`
    /// (ONNX Runtime's run is not safe to share), so concurrent callers each take one; more
    /// are built on demand, once per level of concurrency and thread count.
    idle: Mutex<Vec<(usize, OrtSession)>>,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

/// Idle sessions kept at most; beyond this, sessions finishing a run are dropped.
const IDLE_SESSIONS: usize = 16;

fn run_err(e: impl Into<crate::error::Cause>) -> RuntimeError {
    RuntimeError::Run { backend: Backend::Ort, source: e.into() }
}

impl Session for OrtModel {
    fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    fn default_threads(&self) -> usize {
        self.threads
    }

    fn warm_up(&self, threads: usize, concurrency: usize) -> Result<(), RuntimeError> {
        let threads = threads.max(1);
        let have = self.idle.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|(n, _)| *n == threads).count();
        let mut missing = concurrency.min(IDLE_SESSIONS).saturating_sub(have);
        // Built side by side, a core each: a build is mostly graph optimisation on one core,
        // and it is what a stream's first frame and a server's first request wait for.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut first_error = None;
        while missing > 0 {
            let round = missing.min(cores);
            let built: Vec<Result<OrtSession, RuntimeError>> = std::thread::scope(|scope| {
                let builds: Vec<_> = (0..round)
                    .map(|_| scope.spawn(|| build_session(&self.environment, &self.source, threads, self.device)))
                    .collect();
                builds
                    .into_iter()
                    .map(|b| b.join().unwrap_or_else(|_| Err(run_err("building a session panicked"))))
                    .collect()
            });
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            for session in built {
                match session {
                    Ok(session) => idle.push((threads, session)),
                    Err(e) => first_error = first_error.or(Some(e)),
                }
            }
            missing -= round;
        }
        first_error.map_or(Ok(()), Err)
    }

    fn run_with_threads(&self, inputs: &[Tensor], threads: usize) -> Result<Vec<Tensor>, RuntimeError> {
        self.with_outputs(inputs, threads, |lent| lent.into_iter().map(Lent::into_tensor).collect())
    }

    fn run_borrowed(
        &self,
        inputs: &[Tensor],
        threads: usize,
        visit: &mut dyn FnMut(&[TensorView<'_>]),
    ) -> Result<(), RuntimeError> {
        self.with_outputs(inputs, threads, |lent| {
            let views = lent.iter().map(Lent::view).collect::<Result<Vec<_>, _>>()?;
            visit(&views);
            Ok(())
        })
    }
}

impl OrtModel {
    /// Run on an idle session (or a new one) and hand `read` the outputs, in the order of
    /// [`Session::outputs`], while ONNX Runtime still holds them.
    fn with_outputs<R>(
        &self,
        inputs: &[Tensor],
        threads: usize,
        read: impl FnOnce(Vec<Lent<'_>>) -> Result<R, RuntimeError>,
    ) -> Result<R, RuntimeError> {
        check_inputs(&self.inputs, inputs)?;
        let threads = threads.max(1);
        let taken = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.iter().position(|(n, _)| *n == threads).map(|i| idle.swap_remove(i).1)
        };
        let session = match taken {
            Some(s) => s,
            None => build_session(&self.environment, &self.source, threads, self.device)?,
        };
        let mut out = CheckedOut { model: self, threads, session: Some(session) };
        let session = out.session.as_mut().expect("checked out above");
        self.run_on(session, inputs, read)
    }

    fn run_on<R>(
        &self,
        session: &mut OrtSession,
        inputs: &[Tensor],
        read: impl FnOnce(Vec<Lent<'_>>) -> Result<R, RuntimeError>,
    ) -> Result<R, RuntimeError> {
        // Borrow the caller's buffers: no copy on the way in.
        let values: Vec<SessionInputValue<'_>> = inputs
            .iter()
            .map(|t| {
                let shape = t.shape().to_vec();
                Ok(match t.data() {
                    TensorData::F32(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
                    TensorData::I32(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
                    TensorData::I64(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
                    TensorData::U8(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
                })
            })
            .collect::<Result<_, ort::Error>>()
            .map_err(run_err)?;
        let outputs = session.run(values.as_slice()).map_err(run_err)?;
        let lent = self
            .outputs
            .iter()
            .map(|info| {
                let value = outputs
                    .get(&info.name)
                    .ok_or_else(|| run_err(format!("output `{}` missing from the result", info.name)))?;
                lend(value, &info.name)
            })
            .collect::<Result<Vec<_>, _>>()?;
        read(lent)
    }
}

/// A session taken from the idle ones, put back when dropped: also when `read` panics (a
/// decoder bug, which serve catches and answers), so that costs no rebuild.
struct CheckedOut<'m> {
    model: &'m OrtModel,
    threads: usize,
    session: Option<OrtSession>,
}

impl Drop for CheckedOut<'_> {
    fn drop(&mut self) {
        let mut idle = self.model.idle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(session) = self.session.take()
            && idle.len() < IDLE_SESSIONS
        {
            idle.push((self.threads, session));
        }
    }
}

/// An output as ONNX Runtime holds it: its values in place, or converted (float64 to f32).
enum Lent<'o> {
    InPlace(Vec<usize>, TensorDataRef<'o>),
    Converted(Tensor),
}

impl Lent<'_> {
    fn view(&self) -> Result<TensorView<'_>, RuntimeError> {
        match self {
            Lent::InPlace(shape, data) => TensorView::new(shape, *data).map_err(run_err),
            Lent::Converted(t) => Ok(t.view()),
        }
    }

    /// An owned copy (a converted output is already one).
    fn into_tensor(self) -> Result<Tensor, RuntimeError> {
        match self {
            Lent::InPlace(..) => self.view().map(|v| v.to_tensor()),
            Lent::Converted(t) => Ok(t),
        }
    }
}

fn lend<'o>(value: &'o DynValue, name: &str) -> Result<Lent<'o>, RuntimeError> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(RuntimeError::OutputDType { name: name.to_string(), dtype: "non-tensor".into() });
    };
    fn values<T: ort::value::PrimitiveTensorElementType + std::fmt::Debug>(
        value: &DynValue,
    ) -> Result<(Vec<usize>, &[T]), RuntimeError> {
        let (shape, data) = value.try_extract_tensor::<T>().map_err(run_err)?;
        Ok((shape.iter().map(|&d| d.max(0) as usize).collect(), data))
    }
    Ok(match ty {
        TensorElementType::Float32 => values::<f32>(value).map(|(s, d)| Lent::InPlace(s, TensorDataRef::F32(d)))?,
        TensorElementType::Int32 => values::<i32>(value).map(|(s, d)| Lent::InPlace(s, TensorDataRef::I32(d)))?,
        TensorElementType::Int64 => values::<i64>(value).map(|(s, d)| Lent::InPlace(s, TensorDataRef::I64(d)))?,
        TensorElementType::Uint8 => values::<u8>(value).map(|(s, d)| Lent::InPlace(s, TensorDataRef::U8(d)))?,
        TensorElementType::Float64 => {
            let (s, d) = values::<f64>(value)?;
            Lent::Converted(Tensor::new(s, TensorData::F32(d.iter().map(|&x| x as f32).collect())).map_err(run_err)?)
        }
        other => return Err(RuntimeError::OutputDType { name: name.to_string(), dtype: format!("{other:?}") }),
    })
}
