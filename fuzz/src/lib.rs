//! What the fuzz targets share: where the fixtures are, and one HTTP request through an
//! in-process router with the rule every server target checks (a refusal, never a 500).

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;

/// The shared fixtures: `STRIX_FIXTURES`, else `../shared/fixtures` beside the project.
pub fn fixtures() -> PathBuf {
    std::env::var_os("STRIX_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
}

/// A runtime for the server targets: one worker, as the requests go one at a time.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a tokio runtime")
}

/// `request` answered by `app`, its body read whole. A server error on a request the client
/// made up is a bug: bad input is the client's (4xx), and the server must keep serving.
pub fn answer(rt: &tokio::runtime::Runtime, app: &Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let what = format!("{} {}", request.method(), request.uri());
    let response = rt.block_on(app.clone().oneshot(request)).expect("the router answers");
    let status = response.status();
    let body = rt
        .block_on(http_body_util::BodyExt::collect(response.into_body()))
        .expect("the answer's body reads")
        .to_bytes()
        .to_vec();
    assert!(
        status != StatusCode::INTERNAL_SERVER_ERROR,
        "{what}: 500 on a client's bytes: {}",
        String::from_utf8_lossy(&body)
    );
    (status, body)
}

/// Splits a fuzz input: its first byte picks a variant among `n`, the rest is the payload.
pub fn pick(data: &[u8], n: u8) -> Option<(u8, &[u8])> {
    data.split_first().map(|(&b, rest)| (b % n, rest))
}
