//! `strix serve`: models from the zoo or the registry behind an HTTP API.
//!
//! - Routes: SageMaker's container contract (`GET /ping`, `POST /invocations` with
//!   `X-Amzn-SageMaker-Target-Model`), `GET /health/live|ready`, `GET /v1/models`, and
//!   `POST /v1/models/{name}/predict` for every task, answering the JSON `strix predict --json`
//!   prints (Rekognition-like shapes).
//! - Bodies: raw image bytes (`image/jpeg|png|webp|...`) or `{"Image": {"Bytes": BASE64}}`.
//! - Dynamic batching per model with a bounded queue: a full queue answers 503 with
//!   `Retry-After` at once; a request not answered in time gets 504.
//! - `POST /` with `X-Amz-Target: RekognitionService.DetectLabels | DetectText | DetectFaces`
//!   takes Rekognition's request and answers in its shape.
//! - Vector indexes (`strix index`) named at start are searched at
//!   `POST /v1/indexes/{name}/search`; Rekognition's face collection actions (CreateCollection,
//!   IndexFaces, SearchFacesByImage, ...) keep faces in registry indexes, shared by replicas.
//! - `GET /metrics`: Prometheus text (requests by model and status, latency and batch-size
//!   histograms, queue depth). Optional API keys guard everything but `/ping` and `/health`.
//! - Models named by registry alias (`trash@production`) follow it ([`ServeState::follow`]):
//!   a new version is loaded, tested and swapped in without failing a request;
//!   `POST /v1/models/{name}/reload` checks at once. Every answer names the version that gave
//!   it: `X-Strix-Model-Version` and `LabelModelVersion` (`NAME:VERSION`).
//! - The Open Inference Protocol (KServe v2, what Triton and Seldon speak): `/v2/health/*`,
//!   `/v2/models/{name}[/ready]`, `POST /v2/models/{name}/infer` with raw tensors in and out
//!   (JSON, or the binary tensor extension tritonclient uses), batched like the image routes.
//! - Errors are `{"error": {"code", "message"}}` with a 4xx status for bad input; internal
//!   errors are logged with a request id and not leaked.
//!
//! - Hostile clients are bounded: decodes in flight (each can hold a full-size image) take a
//!   slot before the body is read, and none free answers 503; connections have header, body and
//!   idle timeouts, a cap, and a drain deadline at shutdown (`strix-http`).
//!
//! [`app`] builds the router, so tests drive it in-process; [`serve`] runs it until a shutdown
//! signal, then drains what is in flight.

// Layers, each importing only those below it: routes -> handlers (kserve, rekognition,
// follow, auth) -> inference -> state.
mod auth;
mod batcher;
mod collections;
mod config;
mod error;
mod follow;
mod inference;
mod kserve;
mod metrics;
mod rekognition;
mod routes;
mod state;

use std::future::Future;
use std::sync::Arc;

pub use config::{Batching, Limits, ModelConfig, ServeConfig};
pub use error::{ApiError, ServeError};
pub use routes::app;
pub use state::{Indexes, ServeState, ServedModel};

/// Serve `state` on `listener` until `shutdown` resolves; requests in flight finish first,
/// within the drain deadline of `connections`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServeState>,
    connections: strix_http::ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let drain_state = state.clone();
    let shutdown = async move {
        shutdown.await;
        drain_state.set_ready(false);
        tracing::info!("shutting down: draining requests in flight");
    };
    let drain = std::time::Duration::from_millis(connections.drain_timeout_ms);
    let served = strix_http::serve_router(listener, app(state.clone()), connections, shutdown).await;
    // Requests whose clients left are still in the batch workers: let those inferences end
    // before the process does, or the engine is torn down under them.
    let deadline = tokio::time::Instant::now() + drain;
    while !state.settled() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    served.map_err(ServeError::Io)
}
