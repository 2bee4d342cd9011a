//! Routes: SageMaker's container contract (`/ping`, `/invocations`), health, the model list
//! and `/v1/models/{name}/predict`, with the KServe, Rekognition and reload handlers merged in.
//! The top layer: routes -> handlers -> inference -> state, never back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use strix_pipeline::rekognition::Response as Answer;

use crate::ApiError;
use crate::inference::{checked_body, image_bytes, infer};
use crate::state::{DecodeSlot, MODEL_VERSION, ServeState};

/// The header SageMaker multi-model endpoints use to pick a model.
const TARGET_MODEL: &str = "x-amzn-sagemaker-target-model";

/// The HTTP application; tests drive it in-process.
pub fn app(state: Arc<ServeState>) -> Router {
    let limit = state.limits.max_body_bytes;
    // Image routes take a decode slot before their body is read.
    let images = Router::new()
        .route("/", post(crate::rekognition::answer))
        .route("/v1/models/{name}/predict", post(predict))
        .route("/invocations", post(invocations))
        .route("/v1/indexes/{name}/search", post(crate::collections::search_route))
        .merge(crate::kserve::infer_routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), take_decode_slot));
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}/reload", post(crate::follow::reload))
        .route("/v1/models/{name}/monitor", get(monitor))
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
    request.extensions_mut().insert(DecodeSlot::new(permit));
    next.run(request).await
}

async fn metrics(State(state): State<Arc<ServeState>>) -> Response {
    let depths = state.models.iter().map(|m| (m.name.clone(), m.depth()));
    let dropped = state.tap.as_ref().map(|t| t.dropped()).unwrap_or_default();
    for m in &state.monitors {
        state.metrics.monitor(&m.status());
    }
    let text = state.metrics.render(depths, &dropped);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// A monitored model's drift: its window, its latest test of every feature, violations so far.
async fn monitor(State(state): State<Arc<ServeState>>, Path(name): Path<String>) -> Response {
    match state.monitor_of(&name) {
        Some(m) => axum::Json(m.status()).into_response(),
        None if state.models.iter().any(|m| m.name == name) => ApiError::new(
            StatusCode::NOT_FOUND,
            "NotMonitored",
            format!("model {name} is not monitored: start serve with --monitor"),
        )
        .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "ModelNotFound", format!("no model {name}")).into_response(),
    }
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
                // By the workers' own counts (shared by the versions of a followed model).
                "per_worker": m.stats.per_worker(),
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
