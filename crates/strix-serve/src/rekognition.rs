//! Rekognition's wire protocol: `POST /` with `X-Amz-Target: RekognitionService.<Action>`, so
//! existing Rekognition clients can point at a Strix server.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, header};
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
        let headers =
            [(header::CONTENT_TYPE.as_str(), "application/x-amz-json-1.1".to_string()), (MODEL_VERSION, version)];
        Ok((headers, answer.to_string()).into_response())
    }
    .await;
    let name = served.unwrap_or_default();
    state.finish(&name, started, result)
}
