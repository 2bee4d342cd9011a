//! An image or tensor request's way to its answer: the body read and checked, decoded and
//! preprocessed off the async threads, queued on the model's batcher and awaited within the
//! model's timeout. Handlers call this; it calls only the state below it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use serde::Deserialize;
use strix_pipeline::rekognition;
use strix_pipeline::{Input, Prediction};
use strix_vision::{DecodeLimits, VisionError};
use tokio::sync::oneshot;

use crate::ApiError;
use crate::batcher::{Job, Refused};
use crate::error::chain;
use crate::state::{DecodeSlot, Loaded, ServeState, ServedModel};

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
pub(crate) fn image_bytes(headers: &HeaderMap, body: Bytes) -> Result<Bytes, ApiError> {
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
    ApiError::new(status, rekognition::error_code(&e), chain(&e))
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
    let monitor = state.monitor_of(&model.name);
    let tapped = (state.tap.is_some() || monitor.is_some()).then(|| bytes.clone());
    let prepared = prepare(state, &model.name, &loaded, bytes).await;
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
    if let Some(bytes) = tapped {
        if let Some(tap) = &state.tap {
            tap.encoded(&bytes, &version, &answer);
        }
        if let Some(m) = monitor {
            m.encoded(&bytes, &answer.answer, answer.width, answer.height);
        }
    }
    Ok((answer, version))
}

/// Decode and preprocess off the async threads, in parallel across requests, outside the
/// model's batch (which then only infers). Each decode is counted by the share of each side
/// decoded, so `--fast-decode` can be seen at work in `/metrics`.
async fn prepare(state: &ServeState, name: &str, loaded: &Loaded, bytes: Bytes) -> Result<Input, ApiError> {
    let limits = DecodeLimits { max_pixels: state.limits.max_pixels, max_bytes: state.limits.max_body_bytes as u64 };
    let pipeline = loaded.pipeline.clone();
    let fast = state.fast_decode;
    let (input, denominator) = tokio::task::spawn_blocking(move || {
        if fast {
            let reduced = strix_vision::decode_bytes_reduced(&bytes, &limits, &|w, h| pipeline.min_source_scale(w, h))?;
            let denominator = reduced.full_width / reduced.image.width().max(1);
            return Ok::<_, VisionError>((pipeline.input_reduced(reduced), denominator));
        }
        let image = strix_vision::decode_bytes(&bytes, &limits)?;
        Ok((pipeline.input(&Arc::new(image)), 1))
    })
    .await
    .map_err(|e| internal(state, "decode task", &e.to_string()))?
    .map_err(vision_error)?;
    state.metrics.decode(name, denominator);
    Ok(input)
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
        Ok(Ok(Err(e))) => Err(internal(state, name, &chain(&e))),
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
