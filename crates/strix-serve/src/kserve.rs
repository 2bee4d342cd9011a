//! The Open Inference Protocol (KServe v2 REST), the contract Triton, KServe and Seldon share:
//! health, model metadata and readiness, and `infer` with raw tensors in and out (the model's
//! main network, no pre- or post-processing), queued and batched with the image routes'
//! requests. Tensors come as JSON (`data`, flat or nested, row-major) or, as tritonclient sends
//! them by default, in the binary tensor extension (`Inference-Header-Content-Length`).
//! Errors are the protocol's `{"error": "..."}`.
//!
//! What a request may ask for is bounded before any work: each output at most once, tensors
//! nested exactly as their shape (or flat), values within their type, every dimension at least
//! 1; and an answer at most `response_cap` bytes, checked before it is written.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use strix_core::{DType, Tensor, TensorData, TensorInfo};
use tokio::sync::oneshot;

use crate::ApiError;
use crate::batcher::{Job, RawRefused};
use crate::inference::{checked_body, queue_and_wait, queue_full};
use crate::state::{DecodeSlot, Loaded, MODEL_VERSION, ServeState, ServedModel};

/// The binary extension's header: how many leading bytes of the body are the JSON part.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// Health routes (no key needed, like `/health`).
pub(crate) fn health() -> Router<Arc<ServeState>> {
    Router::new().route("/v2/health/live", get(|| async { axum::Json(json!({"live": true})) })).route(
        "/v2/health/ready",
        get(|State(state): State<Arc<ServeState>>| async move {
            let ready = state.is_ready();
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, axum::Json(json!({"ready": ready})))
        }),
    )
}

/// Metadata routes.
pub(crate) fn routes() -> Router<Arc<ServeState>> {
    Router::new()
        .route("/v2", get(server))
        .route("/v2/models/{name}", get(metadata))
        .route("/v2/models/{name}/versions/{version}", get(metadata))
        .route("/v2/models/{name}/ready", get(ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(ready))
}

/// Inference routes: each takes a decode slot (see [`crate::routes`]) and holds it until its
/// tensors are read, since a JSON body of small numbers takes many times its size to parse.
pub(crate) fn infer_routes() -> Router<Arc<ServeState>> {
    Router::new()
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
}

/// A route's model, and its version when the path names one.
#[derive(Deserialize)]
struct Target {
    name: String,
    #[serde(default)]
    version: Option<String>,
}

/// A v2 error: `{"error": "..."}` with its status.
#[derive(Debug)]
struct V2Error(StatusCode, String);

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": self.1}))).into_response()
    }
}

impl From<ApiError> for V2Error {
    fn from(e: ApiError) -> V2Error {
        V2Error(e.status, e.message)
    }
}

fn bad(message: String) -> V2Error {
    V2Error(StatusCode::BAD_REQUEST, message)
}

/// The most bytes one answer may hold: 64 MiB, or four times its request's body where that is
/// more. Without duplicate outputs an answer is at most every output once, but a dynamic
/// network's outputs grow with its inputs (and JSON text is about four times the binary size),
/// so the answer is measured against this before it is written.
fn response_cap(request_bytes: usize) -> usize {
    (64usize << 20).max(request_bytes.saturating_mul(4))
}

/// The protocol's name for a tensor type.
fn datatype(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "FP32",
        DType::F16 => "FP16",
        DType::F64 => "FP64",
        DType::I64 => "INT64",
        DType::I32 => "INT32",
        DType::I8 => "INT8",
        DType::U8 => "UINT8",
        DType::Bool => "BOOL",
        DType::Other => "BYTES",
    }
}

/// A declared shape as the protocol writes it (`-1` for a dynamic dimension), never the graph's
/// internal dimension names: `[-1, 3, -1, -1]`.
fn declared(t: &TensorInfo) -> String {
    let dims: Vec<String> =
        t.shape.iter().map(|d| d.fixed().map_or_else(|| "-1".to_string(), |n| n.to_string())).collect();
    format!("[{}]", dims.join(", "))
}

fn describe(t: &TensorInfo) -> Value {
    let shape: Vec<i64> = t.shape.iter().map(|d| d.fixed().map_or(-1, |n| n as i64)).collect();
    json!({"name": t.name, "datatype": datatype(t.dtype), "shape": shape})
}

/// The served model called `name` at `version` (any version when `None`), and the version
/// answering now.
fn find<'a>(
    state: &'a ServeState,
    name: &str,
    version: Option<&str>,
) -> Result<(&'a ServedModel, Arc<Loaded>), V2Error> {
    let model = state.model(name).map_err(|e| V2Error(StatusCode::NOT_FOUND, e.message))?;
    let loaded = model.current();
    let current = version_number(&loaded);
    if let Some(v) = version.filter(|v| !v.is_empty() && *v != current) {
        return Err(V2Error(StatusCode::NOT_FOUND, format!("{name} has no version {v:?} served (serving {current})")));
    }
    Ok((model, loaded))
}

/// The version as the protocol names it: the registry version number, else "1".
fn version_number(loaded: &Loaded) -> String {
    loaded.pipeline.model().version.as_ref().map_or_else(|| "1".to_string(), |v| v.version.to_string())
}

async fn server() -> axum::Json<Value> {
    axum::Json(json!({"name": "strix", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}))
}

async fn metadata(State(state): State<Arc<ServeState>>, Path(t): Path<Target>) -> Response {
    match find(&state, &t.name, t.version.as_deref()) {
        Ok((model, loaded)) => {
            let session = loaded.pipeline.session();
            axum::Json(json!({
                "name": model.name,
                "versions": [version_number(&loaded)],
                "platform": "onnx",
                "inputs": session.inputs().iter().map(describe).collect::<Vec<_>>(),
                "outputs": session.outputs().iter().map(describe).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn ready(State(state): State<Arc<ServeState>>, Path(t): Path<Target>) -> Response {
    match find(&state, &t.name, t.version.as_deref()) {
        Ok((model, _)) => {
            // Ready covers every model's live workers, this one's included.
            let ready = state.is_ready();
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, axum::Json(json!({"name": model.name, "ready": ready}))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestOutput>>,
}

#[derive(Deserialize)]
struct RequestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RequestOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

async fn infer(
    State(state): State<Arc<ServeState>>,
    Path(t): Path<Target>,
    slot: Option<axum::Extension<DecodeSlot>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let name = t.name.as_str();
    let result = async {
        let (model, loaded) = find(&state, name, t.version.as_deref())?;
        check_content_type(&headers)?;
        let body = checked_body(&state, body)?;
        let (request, binary) = split_body(&headers, &body)?;
        let session = loaded.pipeline.session();
        let inputs = read_inputs(&request, binary, session.inputs())?;
        let wanted = wanted_outputs(&request, session.outputs())?;
        // The parsed body is done with: its memory and the slot go before the queue.
        let (id, cap) = (request.id.clone(), response_cap(body.len()));
        drop((request, body));
        if let Some(axum::Extension(slot)) = &slot {
            slot.release();
        }
        if model.depth() >= model.batching.queue {
            return Err(queue_full(model).into());
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let (reply, answer) = oneshot::channel();
        let outputs = queue_and_wait(&state, model, &loaded, Job::Raw { inputs, reply }, answer)
            .await?
            .map_err(|refused| cannot_run(&model.name, session.inputs(), &shapes, &refused))?;
        let infos = session.outputs();
        check_answer_size(infos, &outputs, &wanted, cap)?;
        let label = loaded.version_label(&model.name);
        let head = Head { id: id.as_deref(), name: &model.name, version: &version_number(&loaded), label: &label };
        respond(&head, infos, &outputs, &wanted)
    }
    .await;
    state.finish(name, started, result.or_else(|e: V2Error| Ok::<_, ApiError>(e.into_response())))
}

/// The body must be the protocol's JSON (binary tensors after it or not). A text or form body
/// is refused: a browser sends those to any site without asking it first. No Content-Type is
/// fine: tritonclient sends none.
fn check_content_type(headers: &HeaderMap) -> Result<(), V2Error> {
    let Some(kind) = strix_http::media_type(headers) else { return Ok(()) };
    match kind.as_str() {
        "application/json" | "application/octet-stream" => Ok(()),
        _ => Err(bad(format!(
            "Content-Type {kind:?} is not an inference request: send application/json (or \
             application/octet-stream with Inference-Header-Content-Length for binary tensors)"
        ))),
    }
}

/// The network could not run on inputs that match every declared dimension: a dynamic one is a
/// size its layers cannot take (PP-OCR's detector runs on 32 x 32 and 31 x 31 but not on
/// 16 x 16 or 33 x 47: the model does not declare which). The engine's words go to the log
/// (they name the graph's internal dimensions); the client gets its shapes and the model's.
/// A model whose only dynamic dimension is the batch has no size a client could get wrong, so
/// there its engine's failure is the server's (memory, the device): 500, for the logs and
/// retries.
fn cannot_run(model: &str, infos: &[TensorInfo], shapes: &[Vec<usize>], refused: &RawRefused) -> V2Error {
    if !infos.iter().any(|i| i.shape.iter().skip(1).any(|d| d.fixed().is_none())) {
        tracing::error!(model, detail = %refused.detail, "the network failed on a raw request");
        return V2Error(StatusCode::INTERNAL_SERVER_ERROR, "internal error: the network failed to run".into());
    }
    tracing::warn!(model, detail = %refused.detail, "the network refused a raw request's inputs");
    let given: Vec<String> = infos
        .iter()
        .zip(shapes)
        .map(|(info, shape)| format!("input {:?} of shape {shape:?} (the model takes {})", info.name, declared(info)))
        .collect();
    bad(format!(
        "the network cannot run on {}: a size given for a dynamic dimension (-1) is one its layers cannot take \
         (too small, or not a multiple of the network's stride)",
        given.join(", ")
    ))
}

/// The JSON part of a request and the binary part after it (empty without the extension).
fn split_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(InferRequest, &'a [u8]), V2Error> {
    let json_len = match headers.get(HEADER_LENGTH) {
        None => body.len(),
        Some(v) => {
            v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|&n| n <= body.len()).ok_or_else(
                || {
                    bad(format!(
                        "Inference-Header-Content-Length {v:?} is not a length within the body ({} bytes)",
                        body.len()
                    ))
                },
            )?
        }
    };
    let request: InferRequest = serde_json::from_slice(&body[..json_len]).map_err(|e| {
        bad(format!("malformed inference request: {e}; expected {{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}]}}"))
    })?;
    Ok((request, &body[json_len..]))
}

/// The request's tensors in the order the network takes them, each checked against the
/// network's input: name, datatype, shape and value count.
fn read_inputs(request: &InferRequest, mut binary: &[u8], infos: &[TensorInfo]) -> Result<Vec<Tensor>, V2Error> {
    let mut given: Vec<(&str, Tensor)> = Vec::new();
    for input in &request.inputs {
        let info = infos.iter().find(|i| i.name == input.name).ok_or_else(|| {
            let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
            bad(format!("unknown input {:?}; the model takes {}", input.name, names.join(", ")))
        })?;
        if given.iter().any(|(n, _)| *n == input.name) {
            return Err(bad(format!("input {:?} given twice", input.name)));
        }
        let tensor = read_input(input, info, &mut binary)?;
        given.push((input.name.as_str(), tensor));
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data were not claimed by any input's binary_data_size",
            binary.len()
        )));
    }
    infos
        .iter()
        .map(|info| {
            let at = given.iter().position(|(n, _)| *n == info.name);
            at.map(|i| given.swap_remove(i).1).ok_or_else(|| bad(format!("input {:?} is missing", info.name)))
        })
        .collect()
}

fn read_input(input: &RequestInput, info: &TensorInfo, binary: &mut &[u8]) -> Result<Tensor, V2Error> {
    let name = &input.name;
    let want = datatype(info.dtype);
    if input.datatype != want {
        return Err(bad(format!("input {name:?}: datatype {} but the model takes {want}", input.datatype)));
    }
    let shape: Vec<usize> = input
        .shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()
        .ok_or_else(|| bad(format!("input {name:?}: shape {:?} has a negative dimension", input.shape)))?;
    if !info.accepts(&shape) {
        return Err(bad(format!(
            "input {name:?}: shape {:?} does not fit the model's {}",
            input.shape,
            declared(info)
        )));
    }
    // A zero fits a dynamic dimension on paper, but no network runs on an empty tensor.
    if let Some(at) = shape.iter().position(|&n| n == 0) {
        return Err(bad(format!(
            "input {name:?}: shape {:?} is 0 at dimension {at}; every dimension must be at least 1 (the model takes {})",
            input.shape,
            declared(info)
        )));
    }
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).filter(|&n| n <= 1 << 28);
    let count = count.ok_or_else(|| bad(format!("input {name:?}: shape {:?} is too large", input.shape)))?;
    let data = match input.parameters.get("binary_data_size") {
        Some(size) => {
            let size = size.as_u64().map(|s| s as usize).filter(|&s| s <= binary.len()).ok_or_else(|| {
                bad(format!("input {name:?}: binary_data_size {size} but {} binary bytes are left", binary.len()))
            })?;
            let (bytes, rest) = binary.split_at(size);
            *binary = rest;
            from_bytes(info.dtype, bytes)
                .ok_or_else(|| bad(format!("input {name:?}: {size} bytes are not whole {want} values")))?
        }
        None => {
            let data = input.data.as_ref().ok_or_else(|| bad(format!("input {name:?} has no data")))?;
            let flat = json_values(data, &shape).map_err(|e| bad(format!("input {name:?}: {e}")))?;
            from_json(info.dtype, &flat).map_err(|e| bad(format!("input {name:?}: {e}")))?
        }
    };
    if data.len() != count {
        return Err(bad(format!(
            "input {name:?}: shape {:?} holds {count} values but {} were given",
            input.shape,
            data.len()
        )));
    }
    Tensor::new(shape, data).map_err(|e| bad(format!("input {name:?}: {e}")))
}

/// A tensor's `data`, row-major, as one list. The protocol allows it flat (one array of
/// values; the caller checks their count) or nested exactly as `shape`: one level per
/// dimension, each array as long as its dimension. Anything between (ragged rows, too deep or
/// too shallow) is refused, as it does not say which value sits where.
///
/// # Shapes
/// `shape` is the request's, already checked against the model's.
fn json_values<'a>(data: &'a Value, shape: &[usize]) -> Result<Vec<&'a Value>, String> {
    let Value::Array(items) = data else {
        return Err(format!("data must be an array of values, flat or nested as the shape {shape:?}"));
    };
    if !items.iter().any(Value::is_array) {
        return Ok(items.iter().collect());
    }
    let mut out = Vec::new();
    nested_values(data, shape, &mut Vec::with_capacity(shape.len()), &mut out).map_err(|(at, problem)| {
        let at: String = at.iter().map(|i| format!("[{i}]")).collect();
        format!("data{at} {problem}; nested data must follow the shape {shape:?} exactly, one array per dimension")
    })?;
    Ok(out)
}

/// The values under `value`, whose dimensions are `shape`, appended to `out`; or where the
/// nesting went wrong (the indices from the top) and how.
fn nested_values<'a>(
    value: &'a Value,
    shape: &[usize],
    at: &mut Vec<usize>,
    out: &mut Vec<&'a Value>,
) -> Result<(), (Vec<usize>, String)> {
    match (shape.split_first(), value) {
        (None, Value::Array(_)) => Err((at.clone(), "is an array where a value belongs".into())),
        (None, value) => {
            out.push(value);
            Ok(())
        }
        (Some((&n, rest)), Value::Array(items)) => {
            if items.len() != n {
                return Err((at.clone(), format!("has {} items where the shape has {n}", items.len())));
            }
            for (i, item) in items.iter().enumerate() {
                at.push(i);
                nested_values(item, rest, at, out)?;
                at.pop();
            }
            Ok(())
        }
        (Some((&n, _)), value) => Err((at.clone(), format!("is {} where an array of {n} belongs", kind(value)))),
    }
}

/// What a JSON value is, in a few words (the value itself may be megabytes).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON number as FP32: one too large for it would become infinity, so it is refused.
fn fp32(v: &Value) -> Result<f32, String> {
    let x = v.as_f64().ok_or_else(|| format!("{v} is not a number"))?;
    let narrowed = x as f32;
    if narrowed.is_finite() {
        Ok(narrowed)
    } else {
        Err(format!("{v} is outside the FP32 range (largest magnitude {:e})", f32::MAX))
    }
}

fn from_json(dtype: DType, values: &[&Value]) -> Result<TensorData, String> {
    let int = |v: &Value| v.as_i64().ok_or_else(|| format!("{v} is not a whole number"));
    Ok(match dtype {
        DType::F32 => TensorData::F32(values.iter().map(|v| fp32(v)).collect::<Result<_, _>>()?),
        DType::I64 => TensorData::I64(values.iter().map(|v| int(v)).collect::<Result<_, _>>()?),
        DType::I32 => TensorData::I32(
            values
                .iter()
                .map(|v| int(v).and_then(|x| i32::try_from(x).map_err(|_| format!("{x} is outside INT32"))))
                .collect::<Result<_, _>>()?,
        ),
        DType::U8 => TensorData::U8(
            values
                .iter()
                .map(|v| int(v).and_then(|x| u8::try_from(x).map_err(|_| format!("{x} is outside UINT8"))))
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("{} tensors are not supported", datatype(other))),
    })
}

fn from_bytes(dtype: DType, bytes: &[u8]) -> Option<TensorData> {
    fn chunks<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Option<Vec<T>> {
        if !bytes.len().is_multiple_of(N) {
            return None;
        }
        Some(bytes.chunks_exact(N).map(|c| f(c.try_into().unwrap_or([0; N]))).collect())
    }
    Some(match dtype {
        DType::F32 => TensorData::F32(chunks(bytes, f32::from_le_bytes)?),
        DType::I64 => TensorData::I64(chunks(bytes, i64::from_le_bytes)?),
        DType::I32 => TensorData::I32(chunks(bytes, i32::from_le_bytes)?),
        DType::U8 => TensorData::U8(bytes.to_vec()),
        _ => return None,
    })
}

/// The values' bytes, little-endian, appended to `out`.
fn append_bytes(data: &TensorData, out: &mut Vec<u8>) {
    match data {
        TensorData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::U8(v) => out.extend_from_slice(v),
    }
}

/// Bytes per value in binary, and at most in JSON: the longest number serde_json writes for
/// the type (ryu's f32 buffer is 16 bytes; `-9223372036854775808`) and a comma.
fn value_widths(data: &TensorData) -> (usize, usize) {
    match data {
        TensorData::F32(_) => (4, 17),
        TensorData::I64(_) => (8, 21),
        TensorData::I32(_) => (4, 12),
        TensorData::U8(_) => (1, 4),
    }
}

/// Which outputs to send and whether each goes in binary: the requested ones (each may ask
/// for binary), else all, in binary when the request's `binary_data_output` says so. Each
/// output may be asked for once: an output named again and again would be written again and
/// again (a 1 MB request once asked for a 422 MB answer).
fn wanted_outputs(request: &InferRequest, infos: &[TensorInfo]) -> Result<Vec<(usize, bool)>, V2Error> {
    let all_binary = request.parameters.get("binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    let Some(outputs) = &request.outputs else {
        return Ok((0..infos.len()).map(|i| (i, all_binary)).collect());
    };
    let names = || infos.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ");
    if outputs.len() > infos.len() {
        return Err(bad(format!(
            "{} outputs requested but the model gives {} ({}); ask for each at most once",
            outputs.len(),
            infos.len(),
            names()
        )));
    }
    let mut wanted: Vec<(usize, bool)> = Vec::with_capacity(outputs.len());
    for o in outputs {
        let at = infos
            .iter()
            .position(|i| i.name == o.name)
            .ok_or_else(|| bad(format!("unknown output {:?}; the model gives {}", o.name, names())))?;
        if wanted.iter().any(|&(i, _)| i == at) {
            return Err(bad(format!("output {:?} requested twice; ask for each output at most once", o.name)));
        }
        wanted.push((at, o.parameters.get("binary_data").and_then(Value::as_bool).unwrap_or(all_binary)));
    }
    Ok(wanted)
}

/// Refuse an answer larger than `cap` bytes before writing any of it: binary outputs are
/// counted exactly, JSON ones at their longest.
fn check_answer_size(
    infos: &[TensorInfo],
    outputs: &[Tensor],
    wanted: &[(usize, bool)],
    cap: usize,
) -> Result<(), V2Error> {
    // The JSON around the values: names, shapes, the model's name and version.
    const FRAME: usize = 256;
    let size = wanted.iter().fold(FRAME, |size, &(i, as_binary)| {
        let Some(tensor) = outputs.get(i) else { return size };
        let (binary, json) = value_widths(tensor.data());
        let name = infos.get(i).map_or(0, |info| info.name.len());
        let values = tensor.len().saturating_mul(if as_binary { binary } else { json });
        size.saturating_add(values).saturating_add(FRAME + name)
    });
    if size > cap {
        return Err(bad(format!(
            "the answer would take up to {} MiB, over the {} MiB one answer may hold; ask for fewer outputs, \
             binary outputs (binary_data_output) or fewer rows",
            size.div_ceil(1 << 20),
            cap >> 20
        )));
    }
    Ok(())
}

/// Who answered a request: its id, the model, the protocol's version and Strix's label.
struct Head<'a> {
    id: Option<&'a str>,
    name: &'a str,
    version: &'a str,
    label: &'a str,
}

/// The answer's JSON part, borrowing the outputs: the values are written straight from the
/// tensors, never copied into a `serde_json::Value` (32 bytes a number).
#[derive(Serialize)]
struct AnswerDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    model_name: &'a str,
    model_version: &'a str,
    outputs: Vec<OutputDoc<'a>>,
}

#[derive(Serialize)]
struct OutputDoc<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// A tensor's values as a flat JSON array.
struct JsonData<'a>(&'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TensorData::F32(v) => v.serialize(s),
            TensorData::I64(v) => v.serialize(s),
            TensorData::I32(v) => v.serialize(s),
            TensorData::U8(v) => v.serialize(s),
        }
    }
}

/// The answer: JSON, or JSON followed by the binary outputs.
fn respond(
    head: &Head,
    infos: &[TensorInfo],
    outputs: &[Tensor],
    wanted: &[(usize, bool)],
) -> Result<Response, V2Error> {
    let mut binary: Vec<&Tensor> = Vec::new();
    let described: Vec<OutputDoc> = wanted
        .iter()
        .filter_map(|&(i, as_binary)| {
            let (info, tensor) = (infos.get(i)?, outputs.get(i)?);
            let size = as_binary.then(|| BinarySize { binary_data_size: tensor.len() * value_widths(tensor.data()).0 });
            if as_binary {
                binary.push(tensor);
            }
            Some(OutputDoc {
                name: &info.name,
                datatype: datatype(tensor.dtype()),
                shape: tensor.shape(),
                parameters: size,
                data: (!as_binary).then_some(JsonData(tensor.data())),
            })
        })
        .collect();
    let doc = AnswerDoc { id: head.id, model_name: head.name, model_version: head.version, outputs: described };
    let binary_len: usize = binary.iter().map(|t| t.len() * value_widths(t.data()).0).sum();
    let mut body = Vec::new();
    serde_json::to_writer(&mut body, &doc)
        .map_err(|e| V2Error(StatusCode::INTERNAL_SERVER_ERROR, format!("the answer could not be written: {e}")))?;
    let json_len = body.len();
    let content_type = if binary.is_empty() { "application/json" } else { "application/octet-stream" };
    body.reserve_exact(binary_len);
    binary.iter().for_each(|t| append_bytes(t.data(), &mut body));
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if !binary.is_empty() {
        response.headers_mut().insert(HEADER_LENGTH, HeaderValue::from(json_len));
    }
    if let Ok(v) = HeaderValue::from_str(head.label) {
        response.headers_mut().insert(MODEL_VERSION, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use strix_core::Dim;

    use super::*;

    fn info(name: &str, shape: &[Option<usize>]) -> TensorInfo {
        let shape = shape
            .iter()
            .enumerate()
            .map(|(i, d)| d.map_or_else(|| Dim::Symbolic(format!("p2o_DynamicDimension_{i}")), Dim::Fixed))
            .collect();
        TensorInfo { name: name.into(), dtype: DType::F32, shape }
    }

    fn request(body: Value) -> InferRequest {
        let (request, _) = split_body(&HeaderMap::new(), body.to_string().as_bytes()).unwrap();
        request
    }

    /// The message of a request refused while reading its inputs.
    fn refusal(infos: &[TensorInfo], body: Value) -> String {
        match read_inputs(&request(body), &[], infos) {
            Ok(tensors) => panic!("accepted: {tensors:?}"),
            Err(V2Error(status, message)) => {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
                message
            }
        }
    }

    fn one_input(shape: Value, data: Value) -> Value {
        json!({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": data}]})
    }

    fn outputs() -> Vec<TensorInfo> {
        vec![info("boxes", &[None, Some(4)]), info("scores", &[None])]
    }

    /// Issue 31: a 1 MB request naming one output 20000 times got a 422 MB answer.
    #[test]
    fn an_output_asked_for_twice_or_more_outputs_than_the_model_has_are_refused() {
        let twice = request(json!({"inputs": [], "outputs": [{"name": "scores"}, {"name": "scores"}]}));
        let Err(V2Error(status, message)) = wanted_outputs(&twice, &outputs()) else { panic!("accepted") };
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.contains("output \"scores\" requested twice"), "{message}");
        let many: Vec<Value> = (0..20_000).map(|_| json!({"name": "boxes"})).collect();
        let Err(V2Error(status, message)) =
            wanted_outputs(&request(json!({"inputs": [], "outputs": many})), &outputs())
        else {
            panic!("accepted")
        };
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.starts_with("20000 outputs requested but the model gives 2 (boxes, scores)"), "{message}");
        // Each once, in any order, is fine; none named means all.
        let both = request(
            json!({"inputs": [], "outputs": [{"name": "scores"}, {"name": "boxes", "parameters": {"binary_data": true}}]}),
        );
        assert_eq!(wanted_outputs(&both, &outputs()).ok(), Some(vec![(1, false), (0, true)]));
        assert_eq!(
            wanted_outputs(&request(json!({"inputs": []})), &outputs()).ok(),
            Some(vec![(0, false), (1, false)])
        );
    }

    #[test]
    fn an_answer_over_the_cap_is_refused_before_it_is_written() {
        let boxes = Tensor::from_f32(vec![1000, 4], vec![0.5; 4000]).unwrap();
        let scores = Tensor::from_f32(vec![1000], vec![0.5; 1000]).unwrap();
        let tensors = [boxes, scores];
        let json = [(0, false), (1, false)];
        let binary = [(0, true), (1, true)];
        // 5000 values: at most 85 KB as JSON, 20 KB in binary.
        assert!(check_answer_size(&outputs(), &tensors, &json, 86_000).is_ok());
        assert!(check_answer_size(&outputs(), &tensors, &json, 60_000).is_err());
        assert!(check_answer_size(&outputs(), &tensors, &binary, 60_000).is_ok());
        let Err(V2Error(status, message)) = check_answer_size(&outputs(), &tensors, &json, 30_000) else {
            panic!("accepted")
        };
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.contains("binary outputs"), "{message}");
        assert_eq!(response_cap(20 << 20), 80 << 20);
        assert_eq!(response_cap(1 << 20), 64 << 20);
    }

    #[test]
    fn the_answer_holds_each_output_asked_for_once_json_and_binary() {
        let tensors = [
            Tensor::from_f32(vec![1, 4], vec![1.0, 2.5, -3.0, 4.0]).unwrap(),
            Tensor::from_f32(vec![1], vec![0.25]).unwrap(),
        ];
        let head = Head { id: Some("r-1"), name: "m", version: "1", label: "m:1" };
        let response = respond(&head, &outputs(), &tensors, &[(1, false), (0, true)]).unwrap();
        let length: usize = response.headers()[HEADER_LENGTH].to_str().unwrap().parse().unwrap();
        let body = body_of(response);
        let doc: Value = serde_json::from_slice(&body[..length]).unwrap();
        assert_eq!(doc["id"], "r-1");
        assert_eq!(doc["outputs"][0], json!({"name": "scores", "datatype": "FP32", "shape": [1], "data": [0.25]}));
        assert_eq!(doc["outputs"][1]["parameters"], json!({"binary_data_size": 16}));
        let floats: Vec<f32> =
            body[length..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(floats, [1.0, 2.5, -3.0, 4.0]);
    }

    fn body_of(response: Response) -> Bytes {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(axum::body::to_bytes(response.into_body(), usize::MAX)).unwrap()
    }

    /// Issue 31: nested data of the wrong depth or with ragged rows was flattened and accepted.
    #[test]
    fn nested_data_must_follow_the_shape_and_flat_data_is_fine() {
        let infos = [info("x", &[None, Some(2), Some(3)])];
        let shape = json!([1, 2, 3]);
        for data in [json!([1, 2, 3, 4, 5, 6]), json!([[[1, 2, 3], [4, 5, 6]]])] {
            let tensors = read_inputs(&request(one_input(shape.clone(), data.clone())), &[], &infos).unwrap();
            assert_eq!(tensors[0].as_f32().unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "{data}");
        }
        let cases = [
            (json!([[[1, 2, 3], [4, 5]], [6]]), "data has 2 items where the shape has 1"),
            (json!([[[1, 2, 3], [4, 5, 6, 7]]]), "data[0][1] has 4 items where the shape has 3"),
            (json!([[[1, 2], [3, 4], [5, 6]]]), "data[0] has 3 items where the shape has 2"),
            (json!([[1, 2, 3], [4, 5, 6]]), "data has 2 items where the shape has 1"),
            (json!([[[[1], [2], [3]], [[4], [5], [6]]]]), "data[0][0][0] is an array where a value belongs"),
            (json!([[1, 2, 3, 4, 5, 6]]), "data[0] has 6 items where the shape has 2"),
            (json!([[1, 2]]), "data[0][0] is a number where an array of 3 belongs"),
            (json!([1, 2, [3], 4, 5, 6]), "data has 6 items where the shape has 1"),
            (json!({"values": [1, 2, 3, 4, 5, 6]}), "data must be an array"),
        ];
        for (data, needle) in cases {
            let message = refusal(&infos, one_input(shape.clone(), data.clone()));
            assert!(message.starts_with("input \"x\": ") && message.contains(needle), "{data}: {message}");
        }
    }

    /// Issue 31: `1e39` became infinity, and the answer `null`s.
    #[test]
    fn numbers_outside_fp32_are_refused() {
        let infos = [info("x", &[Some(1), Some(2)])];
        for big in [json!(1e39), json!(-3.5e38), json!(f64::MAX)] {
            let message = refusal(&infos, one_input(json!([1, 2]), json!([0.5, big])));
            assert!(message.contains("is outside the FP32 range"), "{big}: {message}");
        }
        let tensors = read_inputs(&request(one_input(json!([1, 2]), json!([3.4e38, -1e-45]))), &[], &infos).unwrap();
        assert!(tensors[0].as_f32().unwrap().iter().all(|x| x.is_finite()));
        let message = refusal(&infos, one_input(json!([1, 2]), json!([0.5, "1"])));
        assert!(message.contains("\"1\" is not a number"), "{message}");
    }

    /// Issue 31: a zero dimension of a dynamic model got a 500 naming `p2o_DynamicDimension_0`.
    #[test]
    fn a_zero_dimension_is_refused_with_the_model_shape_and_no_internal_names() {
        let infos = [info("x", &[None, Some(3), None, None])];
        for shape in [json!([0, 3, 32, 32]), json!([1, 3, 0, 32])] {
            let message = refusal(&infos, one_input(shape.clone(), json!([])));
            assert!(message.contains("every dimension must be at least 1"), "{shape}: {message}");
            assert!(message.contains("the model takes [-1, 3, -1, -1]"), "{message}");
            assert!(!message.contains("p2o"), "{message}");
        }
        let message = refusal(&infos, one_input(json!([1, 4, 32, 32]), json!([])));
        assert!(message.contains("does not fit the model's [-1, 3, -1, -1]") && !message.contains("p2o"), "{message}");
        let refused = RawRefused { detail: "Evaluating p2o_DynamicDimension_1: kernel larger than input".into() };
        let V2Error(status, message) = cannot_run("ocr", &infos, &[vec![1, 3, 1, 1]], &refused);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.contains("input \"x\" of shape [1, 3, 1, 1] (the model takes [-1, 3, -1, -1])"), "{message}");
        assert!(!message.contains("p2o"), "{message}");
        // With only the batch dynamic, no size of the client's is at fault: the server's failure.
        let fixed = [info("x", &[None, Some(3), Some(32), Some(32)])];
        let V2Error(status, message) = cannot_run("net", &fixed, &[vec![1, 3, 32, 32]], &refused);
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!message.contains("p2o"), "{message}");
    }

    /// Issue 31: a `text/plain` body was read as an inference request.
    #[test]
    fn text_and_form_bodies_are_refused_and_json_or_none_is_read() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            check_content_type(&headers)
        };
        for refused in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let Err(V2Error(status, message)) = with(refused) else { panic!("{refused} accepted") };
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(message.contains("send application/json"), "{message}");
        }
        for accepted in ["application/json", "Application/JSON; charset=utf-8", "application/octet-stream"] {
            assert!(with(accepted).is_ok(), "{accepted}");
        }
        assert!(check_content_type(&HeaderMap::new()).is_ok(), "tritonclient sends no Content-Type");
    }
}
