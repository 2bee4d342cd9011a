//! Optional API keys on every route but `/ping` and `/health`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ApiError;
use crate::app::ServeState;

/// API keys, compared in constant time on their digests (so neither content nor length
/// leaks); the answer never says whether the key was missing or wrong.
pub async fn require_key(State(state): State<Arc<ServeState>>, request: Request, next: Next) -> Response {
    if state.api_keys.is_empty() {
        return next.run(request).await;
    }
    let headers = request.headers();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .unwrap_or("");
    let digest: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
    let mut ok = subtle::Choice::from(0);
    for key in &state.api_keys {
        ok |= key.ct_eq(&digest);
    }
    if bool::from(ok) && !given.is_empty() {
        next.run(request).await
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, "UnrecognizedClientException", "missing or invalid API key")
            .into_response()
    }
}
