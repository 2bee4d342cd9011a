//! Optional API keys on every route but `/ping` and `/health`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;
use crate::state::ServeState;

/// API keys, compared in constant time on their digests (so neither content nor length
/// leaks); the answer never says whether the key was missing or wrong.
pub async fn require_key(State(state): State<Arc<ServeState>>, request: Request, next: Next) -> Response {
    if state.api_keys.is_empty() {
        return next.run(request).await;
    }
    let headers = request.headers();
    let given =
        strix_http::bearer(headers).or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok())).unwrap_or("");
    if strix_http::Secret::any_matches(&state.api_keys, given.trim()) && !given.is_empty() {
        next.run(request).await
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, "UnrecognizedClientException", "missing or invalid API key")
            .into_response()
    }
}
