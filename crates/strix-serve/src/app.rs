//! Routes: SageMaker's container contract (`/ping`, `/invocations`), health, the model list
//! and `/v1/models/{name}/predict`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use strix_pipeline::rekognition::{self, Response as Answer};
use strix_pipeline::{Input, Pipeline, Prediction};
use strix_vision::{DecodeLimits, VisionError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::batcher::{BatchStats, Batcher, Job, Refused};
use crate::metrics::Metrics;
use crate::{ApiError, Batching, Limits};

/// The header SageMaker multi-model endpoints use to pick a model.
const TARGET_MODEL: &str = "x-amzn-sagemaker-target-model";

/// Which version answered: `NAME:VERSION` for a registry model, else the route's name.
pub(crate) const MODEL_VERSION: &str = "x-strix-model-version";

/// One version of a served model: its pipeline behind its batcher. A request holds the
/// version it started with until answered, so a swap never cuts one short.
pub(crate) struct Loaded {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) batcher: Batcher,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("model", &self.pipeline.model().spec.name).finish()
    }
}

impl Loaded {
    /// `NAME:VERSION` for a registry model, else `fallback` (the route's name).
    pub(crate) fn version_label(&self, fallback: &str) -> String {
        self.pipeline.model().version.as_ref().map_or_else(|| fallback.to_string(), ToString::to_string)
    }
}

/// A served model: the version answering now, swapped whole when a new one is installed.
pub struct ServedModel {
    pub name: String,
    /// What was asked for (`trash@production`), for `/v1/models`.
    pub reference: String,
    pub batching: Batching,
    top_k: usize,
    current: std::sync::RwLock<Arc<Loaded>>,
    stats: Arc<BatchStats>,
    /// Requests of this model being decoded and preprocessed now.
    preparing: AtomicUsize,
    /// Polls the registry when the reference is an alias ([`ServeState::follow`]).
    pub(crate) follower: std::sync::OnceLock<strix_catalog::Follower>,
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedModel").field("name", &self.name).field("reference", &self.reference).finish()
    }
}

impl ServedModel {
    /// Start the model's batcher. `top_k`: classes kept per answer.
    pub fn new(name: &str, reference: &str, pipeline: Pipeline, batching: Batching, top_k: usize) -> ServedModel {
        let stats = Arc::new(BatchStats::new(batching.max_batch));
        let pipeline = Arc::new(pipeline);
        let batcher = Batcher::start(name, pipeline.clone(), batching, top_k, stats.clone());
        ServedModel {
            name: name.to_string(),
            reference: reference.to_string(),
            batching,
            top_k,
            current: std::sync::RwLock::new(Arc::new(Loaded { pipeline, batcher })),
            stats,
            preparing: AtomicUsize::new(0),
            follower: std::sync::OnceLock::new(),
        }
    }

    /// The version answering now.
    pub(crate) fn current(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The pipeline answering now.
    pub fn pipeline(&self) -> Arc<Pipeline> {
        self.current().pipeline.clone()
    }

    /// Put `pipeline` in place of the version answering now. Requests already holding the old
    /// version finish on it; its workers end once its queue drains.
    pub fn swap(&self, pipeline: Pipeline) {
        let pipeline = Arc::new(pipeline);
        let batcher = Batcher::start(&self.name, pipeline.clone(), self.batching, self.top_k, self.stats.clone());
        let new = Arc::new(Loaded { pipeline, batcher });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = new;
    }

    /// Requests waiting: in the batch queue, and being decoded on their way to it.
    pub(crate) fn depth(&self) -> usize {
        self.current().batcher.depth() + self.preparing.load(Ordering::SeqCst)
    }

    /// Nothing waiting, decoding or being inferred.
    fn settled(&self) -> bool {
        self.preparing.load(Ordering::SeqCst) == 0 && self.current().batcher.settled()
    }
}

/// Everything the routes share.
#[derive(Debug)]
pub struct ServeState {
    pub(crate) models: Vec<ServedModel>,
    limits: Limits,
    ready: AtomicBool,
    next_request: AtomicU64,
    pub(crate) metrics: Metrics,
    /// SHA-256 of each accepted API key; empty: no key needed.
    pub(crate) api_keys: Vec<strix_http::Secret>,
    /// One permit per request being read and decoded (see [`Limits::max_decoding`]).
    decode_slots: Arc<Semaphore>,
    /// Requests waiting for a decode slot (their bodies not read yet).
    decode_waiting: AtomicUsize,
    /// How many may wait (the largest model queue), and for how long (the longest timeout).
    decode_line: (usize, Duration),
    /// Sees each answered image (`--capture`).
    tap: Option<Arc<dyn strix_pipeline::Tap>>,
    /// Decode JPEGs no larger than the model needs (`--fast-decode`).
    fast_decode: bool,
    /// The host names answered (DNS rebinding) and the headers every answer carries.
    gate: strix_http::Gate,
}

impl ServeState {
    pub fn new(models: Vec<ServedModel>, limits: Limits) -> ServeState {
        let histograms: Vec<_> = models.iter().map(|m| (m.name.clone(), m.stats.histogram.clone())).collect();
        let line = models.iter().map(|m| m.batching.queue).max().unwrap_or(1);
        let wait = models.iter().map(|m| m.batching.timeout_ms).max().unwrap_or(1);
        ServeState {
            decode_waiting: AtomicUsize::new(0),
            decode_line: (line, Duration::from_millis(wait)),
            metrics: Metrics::new(&histograms),
            models,
            ready: AtomicBool::new(true),
            next_request: AtomicU64::new(1),
            api_keys: Vec::new(),
            decode_slots: Arc::new(Semaphore::new(limits.decode_slots())),
            limits,
            tap: None,
            fast_decode: false,
            gate: strix_http::Gate::default(),
        }
    }

    /// Answer only these host names (besides loopback names and IP literals).
    pub fn with_gate(mut self, gate: strix_http::Gate) -> ServeState {
        self.gate = gate;
        self
    }

    /// Show every answered image and its answer to `tap` (which must not block).
    pub fn with_tap(mut self, tap: Arc<dyn strix_pipeline::Tap>) -> ServeState {
        self.tap = Some(tap);
        self
    }

    /// Decode each JPEG at 1/2, 1/4 or 1/8 of its size when the model's input is that much
    /// smaller (libjpeg-turbo's DCT scaling): less decoding work, slightly different pixels.
    pub fn with_fast_decode(mut self, on: bool) -> ServeState {
        self.fast_decode = on;
        self
    }

    /// Require one of these keys (`Authorization: Bearer KEY` or `X-Api-Key: KEY`) on every
    /// route but `/ping` and `/health/*`.
    pub fn with_api_keys(mut self, keys: &[String]) -> ServeState {
        self.api_keys = keys.iter().map(|k| strix_http::Secret::new(k)).collect();
        self
    }

    /// Stop answering ready (while draining at shutdown).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// No model has work waiting or running (what shutdown waits for after the last
    /// connection closed).
    pub fn settled(&self) -> bool {
        self.models.iter().all(ServedModel::settled)
    }

    /// Ready: not draining, and every model has a live batch worker (a model whose workers
    /// died would answer every request with 503 while a load balancer kept sending them).
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.models.iter().all(|m| m.current().batcher.alive() > 0)
    }

    pub(crate) fn model(&self, name: &str) -> Result<&ServedModel, ApiError> {
        self.models.iter().find(|m| m.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                format!("no model called {name:?} is served (models: {})", known.join(", ")),
            )
        })
    }
}

/// The HTTP application; tests drive it in-process.
pub fn app(state: Arc<ServeState>) -> Router {
    let limit = state.limits.max_body_bytes;
    // Image routes take a decode slot before their body is read.
    let images = Router::new()
        .route("/", post(crate::rekognition::answer))
        .route("/v1/models/{name}/predict", post(predict))
        .route("/invocations", post(invocations))
        .merge(crate::kserve::infer_routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), take_decode_slot));
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}/reload", post(crate::follow::reload))
        .merge(crate::kserve::routes())
        .merge(images)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NotFound", "no such route") })
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::auth::require_key));
    let gate = state.gate.clone();
    let router = Router::new()
        .route("/ping", get(ping))
        .route("/health/live", get(|| async { axum::Json(json!({"status": "live"})) }))
        .route("/health/ready", get(ready))
        .merge(crate::kserve::health())
        .merge(guarded)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state);
    strix_http::guarded(router, gate)
}

/// A request's decode slot: freed once its image is prepared (or, for a cascade, which needs
/// the whole image, once answered), so full-size images in memory stay within the slots.
#[derive(Clone)]
pub(crate) struct DecodeSlot(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

impl DecodeSlot {
    pub(crate) fn release(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Counts a request waiting for a decode slot until dropped.
struct InLine<'a>(&'a AtomicUsize);

impl<'a> InLine<'a> {
    fn join(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        InLine(count)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Wait for a decode slot before the body is read; shed with 503 when as many requests wait
/// as a model's queue holds, or when no slot frees in time.
async fn take_decode_slot(
    State(state): State<Arc<ServeState>>,
    mut request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let started = Instant::now();
    let (line, wait) = state.decode_line;
    let permit = match state.decode_slots.clone().try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) => {
            // In the line until this scope ends, even if the client goes away while waiting.
            let _waiting = InLine::join(&state.decode_waiting);
            if state.decode_waiting.load(Ordering::SeqCst) > line {
                None
            } else {
                tokio::time::timeout(wait, state.decode_slots.clone().acquire_owned()).await.ok().and_then(Result::ok)
            }
        }
    };
    let Some(permit) = permit else {
        let e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ThrottlingException",
            format!(
                "busy: {} requests being read and decoded and {line} waiting; retry shortly",
                state.limits.decode_slots()
            ),
        );
        return state.finish("", started, Err(e));
    };
    request.extensions_mut().insert(DecodeSlot(Arc::new(std::sync::Mutex::new(Some(permit)))));
    next.run(request).await
}

async fn metrics(State(state): State<Arc<ServeState>>) -> Response {
    let depths = state.models.iter().map(|m| (m.name.clone(), m.depth()));
    let text = state.metrics.render(depths);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn ping(State(state): State<Arc<ServeState>>) -> StatusCode {
    if state.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

async fn ready(State(state): State<Arc<ServeState>>) -> Response {
    if state.is_ready() {
        axum::Json(json!({"status": "ready", "models": state.models.len()})).into_response()
    } else {
        let why = "not ready: shutting down, or a model's batch workers stopped (see the log)";
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", why).into_response()
    }
}

async fn list_models(State(state): State<Arc<ServeState>>) -> axum::Json<serde_json::Value> {
    let models: Vec<serde_json::Value> = state
        .models
        .iter()
        .map(|m| {
            let current = m.current();
            let spec = &current.pipeline.model().spec;
            json!({
                "name": m.name,
                "model": m.reference,
                "version": current.pipeline.model().version.as_ref().map(ToString::to_string),
                "follows": m.follower.get().is_some(),
                "spec": spec.name,
                "task": spec.task.to_string(),
                "backend": current.pipeline.backend_version(),
                "input": spec.input.as_ref().map(|i| json!({"width": i.width, "height": i.height})),
                "labels": current.pipeline.model().labels.len(),
                "batching": m.batching,
                "max_batch": current.batcher.max_batch,
                "workers": current.batcher.workers,
                "threads": current.batcher.threads,
                "queue_depth": m.depth(),
                "batches": m.stats.histogram().into_iter().map(|(n, c)| json!({"size": n, "count": c})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let decoding = json!({
        "slots": state.limits.decode_slots(),
        "waiting": state.decode_waiting.load(Ordering::SeqCst),
    });
    axum::Json(json!({ "models": models, "decoding": decoding }))
}

async fn predict(
    State(state): State<Arc<ServeState>>,
    Path(name): Path<String>,
    Extension(slot): Extension<DecodeSlot>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer_image(&state, &name, &headers, body, slot, Instant::now()).await
}

/// The image routes' work: `name`'s answer for the body, as `strix predict --json` gives it,
/// counted in the metrics.
async fn answer_image(
    state: &ServeState,
    name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    slot: DecodeSlot,
    started: Instant,
) -> Response {
    let result = async {
        let model = state.model(name)?;
        let bytes = image_bytes(headers, checked_body(state, body)?)?;
        let (prediction, version) = infer(state, model, bytes, slot).await?;
        let answer = axum::Json(Answer::from_prediction(&prediction, &version));
        Ok(([(MODEL_VERSION, version)], answer).into_response())
    }
    .await;
    state.finish(name, started, result)
}

/// SageMaker's inference route: the target-model header picks the model, else the first.
async fn invocations(
    State(state): State<Arc<ServeState>>,
    Extension(slot): Extension<DecodeSlot>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let name = match headers.get(TARGET_MODEL).map(|v| v.to_str()) {
        Some(Ok(v)) => v.to_string(),
        Some(Err(_)) => {
            let e = ApiError::bad_request("X-Amzn-SageMaker-Target-Model is not text");
            return state.finish("", started, Err(e));
        }
        None => state.models.first().map(|m| m.name.clone()).unwrap_or_default(),
    };
    answer_image(&state, &name, &headers, body, slot, started).await
}

impl ServeState {
    /// The response, counted in the metrics.
    pub(crate) fn finish(&self, name: &str, started: Instant, result: Result<Response, ApiError>) -> Response {
        let response = result.unwrap_or_else(IntoResponse::into_response);
        let known = self.models.iter().any(|m| m.name == name).then_some(name);
        self.metrics.request(known, response.status().as_u16(), started.elapsed());
        response
    }
}

/// `{"Image": {"Bytes": "<base64>"}}`, as Rekognition takes it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonRequest {
    image: JsonImage,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct JsonImage {
    pub(crate) bytes: String,
}

/// The image bytes of a request, by its content type.
fn image_bytes(headers: &HeaderMap, body: Bytes) -> Result<Bytes, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    match content_type.as_str() {
        "image/jpeg"
        | "image/png"
        | "image/webp"
        | "image/gif"
        | "image/bmp"
        | "image/tiff"
        | "application/octet-stream"
        | "application/x-image" => Ok(body),
        "application/json" => {
            let request: JsonRequest = serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request(format!("malformed JSON: {e}; expected {{\"Image\": {{\"Bytes\": BASE64}}}}"))
            })?;
            base64_image(&request.image.bytes)
        }
        "" => Err(unsupported("no Content-Type")),
        other => Err(unsupported(&format!("Content-Type {other}"))),
    }
}

pub(crate) fn base64_image(text: &str) -> Result<Bytes, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map(Bytes::from)
        .map_err(|e| ApiError::bad_request(format!("Image.Bytes is not valid base64: {e}")))
}

fn unsupported(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaTypeException",
        format!(
            "{what}: send image/jpeg, image/png, image/webp (raw bytes) or application/json {{\"Image\": {{\"Bytes\": BASE64}}}}"
        ),
    )
}

fn vision_error(e: VisionError) -> ApiError {
    let status = match e {
        VisionError::TooManyPixels { .. } | VisionError::FileTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    let e = strix_pipeline::PipelineError::Vision(e);
    ApiError::new(status, rekognition::error_code(&e), e.to_string())
}

/// The body, or the JSON error for one over the limit.
pub(crate) fn checked_body(state: &ServeState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if strix_http::is_body_timeout(&r) {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, "RequestTimeout", r.body_text());
        }
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "ImageTooLargeException"
        } else {
            "InvalidParameterException"
        };
        ApiError::new(status, code, format!("{} (limit {} bytes)", r.body_text(), state.limits.max_body_bytes))
    })
}

/// Decode an image and get its prediction through the model's batcher, with the label of the
/// version that answered (one version does both: the request holds it throughout).
pub(crate) async fn infer(
    state: &ServeState,
    model: &ServedModel,
    bytes: Bytes,
    slot: DecodeSlot,
) -> Result<(Prediction, String), ApiError> {
    // Shed before decoding: under overload the rejected requests must cost next to nothing.
    if model.depth() >= model.batching.queue {
        return Err(queue_full(model));
    }
    let loaded = model.current();
    model.preparing.fetch_add(1, Ordering::SeqCst);
    // A second handle on the same buffer (no copy), for the tap once the answer is in.
    let tapped = state.tap.as_ref().map(|_| bytes.clone());
    let prepared = prepare(state, &loaded, bytes).await;
    model.preparing.fetch_sub(1, Ordering::SeqCst);
    let input = prepared?;
    // A prepared tensor is small; a cascade's whole image stays in memory until answered.
    if matches!(input, Input::Prepared(_)) {
        slot.release();
    }
    let (reply, answer) = oneshot::channel();
    let answer = queue_and_wait(state, model, &loaded, Job::Answer { input, reply }, answer).await;
    drop(slot);
    let answer = answer?;
    let version = loaded.version_label(&model.name);
    if let (Some(tap), Some(bytes)) = (&state.tap, tapped) {
        tap.encoded(&bytes, &version, &answer);
    }
    Ok((answer, version))
}

/// Decode and preprocess off the async threads, in parallel across requests, outside the
/// model's batch (which then only infers).
async fn prepare(state: &ServeState, loaded: &Loaded, bytes: Bytes) -> Result<Input, ApiError> {
    let limits = DecodeLimits { max_pixels: state.limits.max_pixels, max_bytes: state.limits.max_body_bytes as u64 };
    let pipeline = loaded.pipeline.clone();
    let fast = state.fast_decode;
    tokio::task::spawn_blocking(move || {
        if fast {
            let reduced = strix_vision::decode_bytes_reduced(&bytes, &limits, &|w, h| pipeline.min_source_scale(w, h))?;
            return Ok::<_, VisionError>(pipeline.input_reduced(reduced));
        }
        let image = strix_vision::decode_bytes(&bytes, &limits)?;
        Ok(pipeline.input(&Arc::new(image)))
    })
    .await
    .map_err(|e| internal(state, "decode task", &e.to_string()))?
    .map_err(vision_error)
}

pub(crate) fn queue_full(model: &ServedModel) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ThrottlingException",
        format!("{}: queue full ({} waiting); retry shortly", model.name, model.batching.queue),
    )
}

/// Hand a job to a version's batcher and wait for its answer.
pub(crate) async fn queue_and_wait<T>(
    state: &ServeState,
    model: &ServedModel,
    loaded: &Loaded,
    job: Job,
    answer: oneshot::Receiver<Result<T, strix_pipeline::PipelineError>>,
) -> Result<T, ApiError> {
    let name = &model.name;
    loaded.batcher.submit(job).map_err(|refused| match refused {
        Refused::Full => queue_full(model),
        Refused::Closed => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "shutting down"),
    })?;
    let timeout = Duration::from_millis(model.batching.timeout_ms);
    match tokio::time::timeout(timeout, answer).await {
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "TimeoutException",
            format!("{name}: no answer within {} ms", model.batching.timeout_ms),
        )),
        Ok(Err(_)) => Err(internal(state, name, "the batcher dropped the request")),
        Ok(Ok(Err(e))) => Err(internal(state, name, &e.to_string())),
        Ok(Ok(Ok(p))) => Ok(p),
    }
}

/// A 500 whose details go to the log under a request id, not to the client.
pub(crate) fn internal(state: &ServeState, what: &str, detail: &str) -> ApiError {
    let id = state.next_request.fetch_add(1, Ordering::Relaxed);
    tracing::error!(request_id = id, "{what}: {detail}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        format!("internal error (request id {id}; details in the server log)"),
    )
}
