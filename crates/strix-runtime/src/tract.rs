//! The tract backend: pure Rust, the default everywhere.

use std::path::Path;
use std::sync::{Arc, Mutex};

use strix_core::{DType, Dim, Tensor, TensorData, TensorInfo};
use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::{
    self as tp, DatumType, Framework, InferenceFact, InferenceModelExt, IntoTValue, TDim, TVec, TypedFact, TypedModel,
    TypedRunnableModel,
};
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_core::runtime::RunOptions;
use tract_onnx::tract_hir::infer::Factoid;

use crate::{Backend, Runtime, RuntimeError, RuntimeOptions, Session, check_inputs};

pub(crate) struct TractRuntime {
    threads: usize,
    executors: Arc<Executors>,
}

/// Thread pools by size, made on first use and shared by the runtime's sessions; each run
/// picks one through tract's per-thread executor scope, so the thread count is per call.
#[derive(Default)]
struct Executors(Mutex<Vec<(usize, Executor)>>);

impl Executors {
    fn get(&self, threads: usize) -> Executor {
        if threads <= 1 {
            return Executor::SingleThread;
        }
        let mut pools = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, e)) = pools.iter().find(|(n, _)| *n == threads) {
            return e.clone();
        }
        let e = Executor::multithread_with_name(threads, "strix-tract");
        pools.push((threads, e.clone()));
        e
    }
}

impl TractRuntime {
    pub(crate) fn new(options: &RuntimeOptions) -> Self {
        TractRuntime { threads: options.thread_count(), executors: Arc::default() }
    }
}

impl Runtime for TractRuntime {
    fn backend(&self) -> Backend {
        Backend::Tract
    }

    fn version(&self) -> String {
        "tract-onnx 0.23.9".to_string()
    }

    fn load(&self, model: &Path) -> Result<Box<dyn Session>, RuntimeError> {
        if !model.is_file() {
            return Err(RuntimeError::ModelMissing { path: model.to_path_buf() });
        }
        let inference = tract_onnx::onnx().model_for_path(model).map_err(load_error(model))?;
        self.session(model, inference)
    }

    fn load_with_outputs(&self, model: &Path, tensors: &[String]) -> Result<Box<dyn Session>, RuntimeError> {
        let bytes = crate::outputs::file_with_outputs(model, tensors, Backend::Tract)?;
        let inference = tract_onnx::onnx().model_for_read(&mut bytes.as_slice()).map_err(load_error(model))?;
        self.session(model, inference)
    }
}

fn load_error(model: &Path) -> impl Fn(tp::TractError) -> RuntimeError + Copy + '_ {
    move |e| RuntimeError::Load { path: model.to_path_buf(), backend: Backend::Tract, source: e.into() }
}

impl TractRuntime {
    /// A session of a parsed graph (`model` names it in errors).
    fn session(&self, model: &Path, mut inference: tp::InferenceModel) -> Result<Box<dyn Session>, RuntimeError> {
        let load_err = load_error(model);
        name_unknown_input_dims(&mut inference).map_err(load_err)?;
        let symbolic = inference.clone().into_typed().and_then(|typed| {
            let inputs = describe(&typed, true, typed_fact)?;
            let outputs = describe(&typed, false, typed_fact)?;
            Ok((optimise(typed)?, inputs, outputs))
        });
        match symbolic {
            Ok((plan, inputs, outputs)) => Ok(Box::new(TractSession {
                plans: Plans::Symbolic(plan),
                inputs,
                outputs,
                threads: self.threads,
                executors: self.executors.clone(),
            })),
            Err(e) => {
                // Some exporters (PaddleOCR's, for one) write graphs that tract can only type once
                // every dimension is known: plan per concrete input shape instead.
                tracing::debug!(model = %model.display(), "tract cannot type the graph symbolically ({e}); planning per input shape");
                let inputs = describe(&inference, true, inference_fact).map_err(load_err)?;
                let outputs = describe(&inference, false, inference_fact).map_err(load_err)?;
                Ok(Box::new(TractSession {
                    plans: Plans::PerShape { model: Box::new(inference), cache: Mutex::new(Vec::new()) },
                    inputs,
                    outputs,
                    threads: self.threads,
                    executors: self.executors.clone(),
                }))
            }
        }
    }
}

/// Optimise and plan a graph. The plan gets no executor of its own: each run picks one for
/// its thread count (see `Executors`).
fn optimise(typed: TypedModel) -> tp::TractResult<Arc<TypedRunnableModel>> {
    typed.into_optimized()?.into_runnable_with_options(&RunOptions::default())
}

/// ONNX files may leave input dimensions unnamed (`?`, `-1`); tract needs a symbol for each so it
/// can type the graph without a concrete shape.
fn name_unknown_input_dims(model: &mut tp::InferenceModel) -> tp::TractResult<()> {
    for ix in 0..model.input_outlets()?.len() {
        let fact = model.input_fact(ix)?.clone();
        let Some(rank) = fact.shape.rank().concretize() else {
            continue;
        };
        let dims: Vec<_> = fact.shape.dims().cloned().collect();
        if dims.iter().all(|d| d.concretize().is_some()) {
            continue;
        }
        let shape: TVec<TDim> = dims
            .into_iter()
            .enumerate()
            .map(|(axis, d)| d.concretize().unwrap_or_else(|| model.symbols.sym(&format!("in{ix}_d{axis}")).into()))
            .collect();
        debug_assert_eq!(shape.len() as i64, rank);
        let dt = fact.datum_type.concretize().unwrap_or(DatumType::F32);
        model.set_input_fact(ix, InferenceFact::dt_shape(dt, shape))?;
    }
    Ok(())
}

/// Name, type and shape of a graph's inputs (or outputs); `fact` reads one outlet's fact.
fn describe<F, O>(
    model: &tp::Graph<F, O>,
    inputs: bool,
    fact: impl Fn(&F) -> (DType, Vec<Dim>),
) -> tp::TractResult<Vec<TensorInfo>>
where
    F: tp::Fact + Clone + 'static,
    O: std::fmt::Debug + std::fmt::Display + AsRef<dyn tp::Op> + AsMut<dyn tp::Op> + Clone + 'static,
{
    let outlets = if inputs { model.input_outlets()? } else { model.output_outlets()? };
    outlets
        .iter()
        .map(|&outlet| {
            let (dtype, shape) = fact(model.outlet_fact(outlet)?);
            let name =
                model.outlet_label(outlet).map(str::to_string).unwrap_or_else(|| model.node(outlet.node).name.clone());
            Ok(TensorInfo { name, dtype, shape })
        })
        .collect()
}

fn dim(d: &TDim) -> Dim {
    match d.to_usize() {
        Ok(n) => Dim::Fixed(n),
        Err(_) => Dim::Symbolic(d.to_string()),
    }
}

fn typed_fact(fact: &TypedFact) -> (DType, Vec<Dim>) {
    (dtype_of(fact.datum_type), fact.shape.iter().map(dim).collect())
}

fn inference_fact(fact: &InferenceFact) -> (DType, Vec<Dim>) {
    let shape =
        fact.shape.dims().map(|d| d.concretize().map_or_else(|| Dim::Symbolic("?".to_string()), |d| dim(&d))).collect();
    (fact.datum_type.concretize().map_or(DType::Other, dtype_of), shape)
}

fn dtype_of(dt: DatumType) -> DType {
    match dt {
        DatumType::F32 => DType::F32,
        DatumType::F16 => DType::F16,
        DatumType::F64 => DType::F64,
        DatumType::I64 => DType::I64,
        DatumType::I32 => DType::I32,
        DatumType::I8 => DType::I8,
        DatumType::U8 => DType::U8,
        DatumType::Bool => DType::Bool,
        _ => DType::Other,
    }
}

/// A plan for one combination of input shapes.
type ShapePlan = (Vec<Vec<usize>>, Arc<TypedRunnableModel>);

/// Plans kept for one model: one symbolic plan, or one per input shape seen (bounded).
enum Plans {
    Symbolic(Arc<TypedRunnableModel>),
    PerShape { model: Box<tp::InferenceModel>, cache: Mutex<Vec<ShapePlan>> },
}

/// Plans per shape kept at most; OCR crops come in many widths and each plan holds its weights.
const SHAPE_PLANS: usize = 8;

impl Plans {
    fn for_inputs(&self, inputs: &[Tensor]) -> tp::TractResult<Arc<TypedRunnableModel>> {
        let (model, cache) = match self {
            Plans::Symbolic(plan) => return Ok(plan.clone()),
            Plans::PerShape { model, cache } => (model, cache),
        };
        let key: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        {
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(pos) = cache.iter().position(|(k, _)| *k == key) {
                let hit = cache.remove(pos);
                let plan = hit.1.clone();
                cache.push(hit);
                return Ok(plan);
            }
        }
        let mut fixed = (**model).clone();
        for (ix, t) in inputs.iter().enumerate() {
            let dt = fixed.input_fact(ix)?.datum_type.concretize().unwrap_or(DatumType::F32);
            fixed.set_input_fact(ix, InferenceFact::dt_shape(dt, t.shape()))?;
        }
        let plan = optimise(fixed.into_typed()?)?;
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= SHAPE_PLANS {
            cache.remove(0);
        }
        cache.push((key, plan.clone()));
        Ok(plan)
    }
}

struct TractSession {
    plans: Plans,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    threads: usize,
    executors: Arc<Executors>,
}

impl TractSession {
    fn run_err(e: tp::TractError) -> RuntimeError {
        RuntimeError::Run { backend: Backend::Tract, source: e.into() }
    }
}

impl Session for TractSession {
    fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    fn default_threads(&self) -> usize {
        self.threads
    }

    fn run_with_threads(&self, inputs: &[Tensor], threads: usize) -> Result<Vec<Tensor>, RuntimeError> {
        check_inputs(&self.inputs, inputs)?;
        let values: TVec<tp::TValue> = inputs
            .iter()
            .map(|t| to_tract(t).map(IntoTValue::into_tvalue))
            .collect::<Result<_, _>>()
            .map_err(Self::run_err)?;
        let plan = self.plans.for_inputs(inputs).map_err(Self::run_err)?;
        let executor = self.executors.get(threads);
        let outputs = multithread_tract_scope(executor, || plan.run(values)).map_err(Self::run_err)?;
        outputs.iter().zip(&self.outputs).map(|(value, info)| from_tract(value, &info.name)).collect()
    }
}

fn to_tract(t: &Tensor) -> tp::TractResult<tp::Tensor> {
    match t.data() {
        TensorData::F32(v) => tp::Tensor::from_shape(t.shape(), v),
        TensorData::I32(v) => tp::Tensor::from_shape(t.shape(), v),
        TensorData::I64(v) => tp::Tensor::from_shape(t.shape(), v),
        TensorData::U8(v) => tp::Tensor::from_shape(t.shape(), v),
    }
}

fn from_tract(t: &tp::Tensor, name: &str) -> Result<Tensor, RuntimeError> {
    let shape = t.shape().to_vec();
    let err = |e: tp::TractError| TractSession::run_err(e);
    let data = match t.datum_type() {
        DatumType::I32 => TensorData::I32(plain::<i32>(t).map_err(err)?),
        DatumType::I64 => TensorData::I64(plain::<i64>(t).map_err(err)?),
        DatumType::U8 => TensorData::U8(plain::<u8>(t).map_err(err)?),
        DatumType::F32 => TensorData::F32(plain::<f32>(t).map_err(err)?),
        DatumType::F16 | DatumType::F64 | DatumType::Bool | DatumType::I8 | DatumType::I16 => {
            let cast = t.cast_to::<f32>().map_err(err)?;
            TensorData::F32(plain::<f32>(&cast).map_err(err)?)
        }
        other => {
            return Err(RuntimeError::OutputDType { name: name.to_string(), dtype: format!("{other:?}") });
        }
    };
    Tensor::new(shape, data).map_err(|e| RuntimeError::Run { backend: Backend::Tract, source: e.into() })
}

fn plain<T: tp::Datum + Copy>(t: &tp::Tensor) -> tp::TractResult<Vec<T>> {
    Ok(t.to_plain_array_view::<T>()?.iter().copied().collect())
}
