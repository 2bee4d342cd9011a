//! What the routes share: the served models (each version behind its batcher), the limits and
//! the metrics. The bottom layer: it imports no handler, so every route module can import it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use strix_pipeline::Pipeline;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::batcher::{BatchStats, Batcher};
use crate::metrics::Metrics;
use crate::{ApiError, Batching, Limits};

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
    pub(crate) stats: Arc<BatchStats>,
    /// Requests of this model being decoded and preprocessed now.
    pub(crate) preparing: AtomicUsize,
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
    pub(crate) limits: Limits,
    ready: AtomicBool,
    pub(crate) next_request: AtomicU64,
    pub(crate) metrics: Metrics,
    /// SHA-256 of each accepted API key; empty: no key needed.
    pub(crate) api_keys: Vec<strix_http::Secret>,
    /// One permit per request being read and decoded (see [`Limits::max_decoding`]).
    pub(crate) decode_slots: Arc<Semaphore>,
    /// Requests waiting for a decode slot (their bodies not read yet).
    pub(crate) decode_waiting: AtomicUsize,
    /// How many may wait (the largest model queue), and for how long (the longest timeout).
    pub(crate) decode_line: (usize, Duration),
    /// Sees each answered image (`--capture`).
    pub(crate) tap: Option<Arc<dyn strix_pipeline::Tap>>,
    /// Decode JPEGs no larger than the model needs (`--fast-decode`).
    pub(crate) fast_decode: bool,
    /// The host names answered (DNS rebinding) and the headers every answer carries.
    pub(crate) gate: strix_http::Gate,
    /// Vector indexes and face collections (`--index`, Rekognition's collection actions).
    pub(crate) indexes: Option<Indexes>,
    /// Drift monitors, each of one served model's answers (`--monitor`).
    pub(crate) monitors: Vec<Arc<strix_monitor::LiveMonitor>>,
}

/// Indexes the server searches and Rekognition's face collections: they live in the registry,
/// so every replica sees every change; each is reloaded when its latest version moves.
pub struct Indexes {
    config: strix_registry::RegistryConfig,
    registry: tokio::sync::OnceCell<strix_registry::Registry>,
    /// Names answered at `/v1/indexes/{name}/search`.
    pub(crate) served: Vec<String>,
    /// The vectors each served model gives, by route name: what an index must hold to be
    /// searched with that model's answers.
    pub(crate) models: Vec<(String, strix_index::EmbeddingModel)>,
    loaded: tokio::sync::Mutex<std::collections::HashMap<String, Arc<strix_index::Index>>>,
}

impl std::fmt::Debug for Indexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexes").field("served", &self.served).finish()
    }
}

impl Indexes {
    /// `served` index names and the vectors of each served model (`(route, identity)`).
    pub fn new(
        config: strix_registry::RegistryConfig,
        served: Vec<String>,
        models: Vec<(String, strix_index::EmbeddingModel)>,
    ) -> Indexes {
        Indexes { config, registry: tokio::sync::OnceCell::new(), served, models, loaded: Default::default() }
    }

    pub(crate) async fn registry(&self) -> Result<&strix_registry::Registry, ApiError> {
        self.registry
            .get_or_try_init(|| strix_registry::Registry::open(&self.config))
            .await
            .map_err(|e| unavailable(&strix_core::error_chain(&e)))
    }

    /// The latest version of index `name`, loaded once per version.
    pub(crate) async fn latest(&self, name: &str) -> Result<Arc<strix_index::Index>, ApiError> {
        let registry = self.registry().await?;
        let reference = strix_registry::ModelRef::parse(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let record = registry.get(&reference).await.map_err(|e| match e {
            strix_registry::RegistryError::UnknownModel { .. } => not_found(name),
            e => unavailable(&strix_core::error_chain(&e)),
        })?;
        if record.task != strix_index::TASK {
            return Err(not_found(name));
        }
        if let Some(index) = self.loaded.lock().await.get(name).filter(|i| i.version == record.version) {
            return Ok(index.clone());
        }
        // Loaded without the lock held, so one big index loading stalls no other; two requests
        // may load the same version at once, and the later simply replaces the earlier.
        let index = Arc::new(strix_index::open_version(registry, record).await.map_err(index_error)?);
        let mut loaded = self.loaded.lock().await;
        if loaded.get(name).is_none_or(|i| i.version < index.version) {
            loaded.insert(name.to_string(), index.clone());
        }
        Ok(index)
    }

    /// Drop a deleted index from memory.
    pub(crate) async fn forget(&self, name: &str) {
        self.loaded.lock().await.remove(name);
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", format!("no index or collection called {name:?}"))
}

fn unavailable(detail: &str) -> ApiError {
    tracing::error!("registry: {detail}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "the registry cannot be reached; retry shortly",
    )
}

/// An index library error as an answer: what the client sent wrong is a 4xx.
pub(crate) fn index_error(e: strix_index::IndexError) -> ApiError {
    use strix_index::IndexError as E;
    let message = strix_core::error_chain(&e);
    match e {
        E::Exists { .. } => ApiError::new(StatusCode::BAD_REQUEST, "ResourceAlreadyExistsException", message),
        E::NotAnIndex { .. } => ApiError::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message),
        E::Registry { source: strix_registry::RegistryError::UnknownModel { .. }, .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
        }
        E::OtherModel { .. } | E::Dimensions { .. } | E::BadVector { .. } | E::UnknownEntry { .. } => {
            ApiError::bad_request(message)
        }
        E::Busy { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ThrottlingException", message),
        E::Registry { .. } => unavailable(&message),
        E::Io { .. } | E::Graph { .. } | E::Damaged { .. } | E::Invalid { .. } => {
            tracing::error!("{message}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", message)
        }
    }
}

impl ServeState {
    pub fn new(models: Vec<ServedModel>, limits: Limits) -> ServeState {
        let histograms: Vec<_> =
            models.iter().map(|m| (m.name.clone(), m.stats.histogram.clone(), m.stats.worker_images.clone())).collect();
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
            indexes: None,
            monitors: Vec::new(),
        }
    }

    /// Show the answers of the served model `monitor.model()` names to `monitor`.
    pub fn with_monitor(mut self, monitor: Arc<strix_monitor::LiveMonitor>) -> ServeState {
        self.monitors.push(monitor);
        self
    }

    pub(crate) fn monitor_of(&self, model: &str) -> Option<&Arc<strix_monitor::LiveMonitor>> {
        self.monitors.iter().find(|m| m.model() == model)
    }

    /// Search these indexes and keep face collections in the registry they name.
    pub fn with_indexes(mut self, indexes: Indexes) -> ServeState {
        self.indexes = Some(indexes);
        self
    }

    pub(crate) fn indexes(&self) -> Result<&Indexes, ApiError> {
        self.indexes.as_ref().ok_or_else(|| {
            ApiError::bad_request("this server keeps no indexes or collections: start it with a registry (--index NAME, or a faces model that describes faces)")
        })
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

/// A request's decode slot: freed once its image is prepared (or, for a cascade, which needs
/// the whole image, once answered), so full-size images in memory stay within the slots.
#[derive(Clone)]
pub(crate) struct DecodeSlot(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

impl DecodeSlot {
    pub(crate) fn new(permit: OwnedSemaphorePermit) -> DecodeSlot {
        DecodeSlot(Arc::new(std::sync::Mutex::new(Some(permit))))
    }

    pub(crate) fn release(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
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
