//! Rekognition's wire protocol: `POST /` with `X-Amz-Target: RekognitionService.<Action>`, so
//! existing Rekognition clients can point at a Strix server.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use strix_pipeline::rekognition::Response as Answer;
use strix_zoo::Task;

use crate::ApiError;
use crate::inference::{JsonImage, base64_image, checked_body, infer, internal};
use crate::state::{DecodeSlot, MODEL_VERSION, ServeState};

/// The Rekognition actions `POST /` answers, by `X-Amz-Target`, and the tasks that can serve
/// each.
const ACTIONS: &[(&str, &[Task])] = &[
    ("RekognitionService.DetectLabels", &[Task::Detect, Task::Classify]),
    ("RekognitionService.DetectText", &[Task::Text]),
    ("RekognitionService.DetectFaces", &[Task::Faces]),
];

/// A Rekognition request: `{"Image": {"Bytes": ...}, "MaxLabels", "MinConfidence"}`; other
/// fields Rekognition knows (`Features`, `Attributes`, `Filters`) are accepted and ignored.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RekognitionRequest {
    image: JsonImage,
    #[serde(default)]
    max_labels: Option<usize>,
    #[serde(default)]
    min_confidence: Option<f64>,
}

/// `POST /` with `X-Amz-Target: RekognitionService.DetectLabels | DetectText | DetectFaces`, so
/// Rekognition clients can point at this server; the first served model of a fitting task
/// answers.
pub async fn answer(
    State(state): State<Arc<ServeState>>,
    Extension(slot): Extension<DecodeSlot>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    if crate::collections::ACTIONS.contains(&target) {
        let (result, served) = match crate::collections::handle(&state, target, body, slot).await {
            Ok((answer, served)) => (amz_json(answer.to_string(), None), served),
            Err(e) => (aws_failure(e), None),
        };
        return state.finish(&served.unwrap_or_default(), started, Ok(result));
    }
    let mut served = None;
    let result = async {
        let Some((_, tasks)) = ACTIONS.iter().find(|(a, _)| *a == target) else {
            let known: Vec<&str> = ACTIONS.iter().map(|(a, _)| *a).collect();
            return Err(ApiError::bad_request(format!(
                "X-Amz-Target {target:?} is not an action this server answers ({})",
                known.join(", ")
            )));
        };
        let model =
            tasks.iter().find_map(|t| state.models.iter().find(|m| m.pipeline().task() == *t)).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{target}: no model of a fitting task ({}) is served",
                    tasks.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" or ")
                ))
            })?;
        served = Some(model.name.clone());
        let body = checked_body(&state, body)?;
        let request: RekognitionRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!("malformed request: {e}; expected {{\"Image\": {{\"Bytes\": BASE64}}}}"))
        })?;
        let bytes = base64_image(&request.image.bytes)?;
        let (prediction, version) = infer(&state, model, bytes, slot).await?;
        let mut answer = serde_json::to_value(Answer::from_prediction(&prediction, &version))
            .map_err(|e| internal(&state, &model.name, &e.to_string()))?;
        if let Some(labels) = answer.get_mut("Labels").and_then(|l| l.as_array_mut()) {
            let min = request.min_confidence.unwrap_or(55.0);
            labels.retain(|l| l["Confidence"].as_f64().is_some_and(|c| c >= min));
            labels.truncate(request.max_labels.unwrap_or(usize::MAX));
        }
        Ok(amz_json(answer.to_string(), Some(version)))
    }
    .await;
    let name = served.unwrap_or_default();
    state.finish(&name, started, Ok(result.unwrap_or_else(aws_failure)))
}

fn amz_json(body: String, version: Option<String>) -> Response {
    let mut response = ([(header::CONTENT_TYPE, "application/x-amz-json-1.1")], body).into_response();
    if let Some(v) = version.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(MODEL_VERSION, v);
    }
    response
}

/// Rekognition clients (botocore) read an error's name from `__type` and its text from
/// `message`: both go beside Strix's own `error` object.
fn aws_failure(e: ApiError) -> Response {
    let (status, code, message) = (e.status, e.code, e.message.clone());
    let mut response = e.into_response();
    let body = serde_json::json!({"__type": code, "message": message, "error": {"code": code, "message": message}});
    *response.body_mut() = axum::body::Body::from(body.to_string());
    debug_assert_eq!(response.status(), status);
    response
}
