//! The Open Inference Protocol (KServe v2 REST), the contract Triton, KServe and Seldon share:
//! health, model metadata and readiness, and `infer` with raw tensors in and out (the model's
//! main network, no pre- or post-processing), queued and batched with the image routes'
//! requests. Tensors come as JSON (`data`, flat or nested, row-major) or, as tritonclient sends
//! them by default, in the binary tensor extension (`Inference-Header-Content-Length`).
//! Errors are the protocol's `{"error": "..."}`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use strix_core::{DType, Dim, Tensor, TensorData, TensorInfo};
use tokio::sync::oneshot;

use crate::app::{Loaded, ServedModel, checked_body, queue_and_wait, queue_full};
use crate::batcher::Job;
use crate::{ApiError, ServeState};

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

/// Metadata and inference routes.
pub(crate) fn routes() -> Router<Arc<ServeState>> {
    Router::new()
        .route("/v2", get(server))
        .route("/v2/models/{name}", get(metadata))
        .route("/v2/models/{name}/versions/{version}", get(metadata))
        .route("/v2/models/{name}/ready", get(ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(ready))
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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let name = t.name.as_str();
    let result = async {
        let (model, loaded) = find(&state, name, t.version.as_deref())?;
        let body = checked_body(&state, body)?;
        let (request, binary) = split_body(&headers, &body)?;
        let inputs = read_inputs(&request, binary, loaded.pipeline.session().inputs())?;
        let wanted = wanted_outputs(&request, loaded.pipeline.session().outputs())?;
        if model.depth() >= model.batching.queue {
            return Err(queue_full(model).into());
        }
        let (reply, answer) = oneshot::channel();
        let outputs = queue_and_wait(&state, model, &loaded, Job::Raw { inputs, reply }, answer).await?;
        let infos = loaded.pipeline.session().outputs();
        let label = loaded.version_label(&model.name);
        let head =
            Head { id: request.id.as_deref(), name: &model.name, version: &version_number(&loaded), label: &label };
        Ok(respond(&head, infos, outputs, &wanted))
    }
    .await;
    state.finish(name, started, result.or_else(|e: V2Error| Ok::<_, ApiError>(e.into_response())))
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
    let fits = shape.len() == info.shape.len()
        && shape.first().is_some_and(|&n| n > 0)
        && shape.iter().zip(&info.shape).all(|(&n, d)| d.fixed().is_none_or(|f| f == n));
    if !fits {
        let model: Vec<String> = info.shape.iter().map(Dim::to_string).collect();
        return Err(bad(format!(
            "input {name:?}: shape {:?} does not fit the model's [{}]",
            input.shape,
            model.join(", ")
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
            let mut flat = Vec::new();
            flatten(data, &mut flat);
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

/// Nested arrays, row-major, into one list.
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

fn from_json(dtype: DType, values: &[&Value]) -> Result<TensorData, String> {
    let int = |v: &Value| v.as_i64().ok_or_else(|| format!("{v} is not a whole number"));
    Ok(match dtype {
        DType::F32 => TensorData::F32(
            values
                .iter()
                .map(|v| v.as_f64().map(|x| x as f32).ok_or_else(|| format!("{v} is not a number")))
                .collect::<Result<_, _>>()?,
        ),
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

fn to_bytes(data: &TensorData) -> Vec<u8> {
    match data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::U8(v) => v.clone(),
    }
}

fn to_json(data: &TensorData) -> Value {
    match data {
        TensorData::F32(v) => json!(v),
        TensorData::I64(v) => json!(v),
        TensorData::I32(v) => json!(v),
        TensorData::U8(v) => json!(v),
    }
}

/// Which outputs to send and whether each goes in binary: the requested ones (each may ask
/// for binary), else all, in binary when the request's `binary_data_output` says so.
fn wanted_outputs(request: &InferRequest, infos: &[TensorInfo]) -> Result<Vec<(usize, bool)>, V2Error> {
    let all_binary = request.parameters.get("binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    match &request.outputs {
        None => Ok((0..infos.len()).map(|i| (i, all_binary)).collect()),
        Some(outputs) => outputs
            .iter()
            .map(|o| {
                let at = infos.iter().position(|i| i.name == o.name).ok_or_else(|| {
                    let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
                    bad(format!("unknown output {:?}; the model gives {}", o.name, names.join(", ")))
                })?;
                Ok((at, o.parameters.get("binary_data").and_then(Value::as_bool).unwrap_or(all_binary)))
            })
            .collect(),
    }
}

/// Who answered a request: its id, the model, the protocol's version and Strix's label.
struct Head<'a> {
    id: Option<&'a str>,
    name: &'a str,
    version: &'a str,
    label: &'a str,
}

/// The answer: JSON, or JSON followed by the binary outputs.
fn respond(head: &Head, infos: &[TensorInfo], outputs: Vec<Tensor>, wanted: &[(usize, bool)]) -> Response {
    let mut binary = Vec::new();
    let described: Vec<Value> = wanted
        .iter()
        .filter_map(|&(i, as_binary)| {
            let (info, tensor) = (infos.get(i)?, outputs.get(i)?);
            let mut out = json!({"name": info.name, "datatype": datatype(tensor.dtype()), "shape": tensor.shape()});
            if as_binary {
                let bytes = to_bytes(tensor.data());
                out["parameters"] = json!({"binary_data_size": bytes.len()});
                binary.extend(bytes);
            } else {
                out["data"] = to_json(tensor.data());
            }
            Some(out)
        })
        .collect();
    let mut doc = json!({"model_name": head.name, "model_version": head.version, "outputs": described});
    if let Some(id) = head.id {
        doc["id"] = json!(id);
    }
    let text = doc.to_string();
    let mut response = if binary.is_empty() {
        ([(header::CONTENT_TYPE, "application/json")], text).into_response()
    } else {
        let length = text.len();
        let mut body = text.into_bytes();
        body.extend(binary);
        let mut r = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
        r.headers_mut().insert(HEADER_LENGTH, HeaderValue::from(length));
        r
    };
    if let Ok(v) = HeaderValue::from_str(head.label) {
        response.headers_mut().insert(crate::app::MODEL_VERSION, v);
    }
    response
}
