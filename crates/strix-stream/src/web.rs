//! The live views over HTTP: a page with the streams and their numbers, the project stream
//! (annotated frames) and the device stream (frames as they came) as MJPEG, and the numbers as
//! JSON.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;

use crate::error::StreamError;
use crate::sinks::Event;
use crate::stats::{Meter, SourceStats};

const BOUNDARY: &str = "strixframe";
/// Events kept for the page.
const RECENT_EVENTS: usize = 20;

/// The latest encoded frames of one source; a frame is only encoded while someone watches.
pub struct Views {
    pub project: watch::Sender<Option<Bytes>>,
    pub device: watch::Sender<Option<Bytes>>,
}

impl Views {
    fn new() -> Self {
        Views { project: watch::Sender::new(None), device: watch::Sender::new(None) }
    }

    /// Whether anyone watches the project / device stream.
    pub fn watched(&self) -> (bool, bool) {
        (self.project.receiver_count() > 0, self.device.receiver_count() > 0)
    }
}

/// Extra numbers for the page, read at each refresh (the drift monitor's status).
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What the run shares with the page: frames, numbers, recent events.
pub struct Board {
    pub model: String,
    pub views: Vec<Views>,
    pub meters: Vec<Mutex<Meter>>,
    recent: Mutex<VecDeque<Event>>,
    closing: watch::Sender<bool>,
    /// The registry version answering now (`NAME:VERSION`), when there is one.
    version: Mutex<Option<String>>,
    monitor: Option<StatusFn>,
}

#[derive(Serialize)]
struct StatsBody<'a> {
    model: &'a str,
    model_version: Option<String>,
    sources: Vec<SourceStats>,
    recent_events: Vec<Event>,
    /// The drift monitor's status, when one watches the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    monitor: Option<serde_json::Value>,
}

impl Board {
    pub fn new(model: String, meters: Vec<Meter>) -> Self {
        Board {
            model,
            views: meters.iter().map(|_| Views::new()).collect(),
            meters: meters.into_iter().map(Mutex::new).collect(),
            recent: Mutex::new(VecDeque::new()),
            closing: watch::Sender::new(false),
            version: Mutex::new(None),
            monitor: None,
        }
    }

    /// The page shows what `status` gives in its drift section.
    pub fn with_monitor(mut self, status: Option<StatusFn>) -> Self {
        self.monitor = status;
        self
    }

    pub fn version(&self) -> Option<String> {
        self.version.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_version(&self, version: Option<String>) {
        *self.version.lock().unwrap_or_else(|e| e.into_inner()) = version;
    }

    pub fn meter(&self, i: usize) -> std::sync::MutexGuard<'_, Meter> {
        self.meters[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn remember(&self, events: &[Event]) {
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            if r.len() == RECENT_EVENTS {
                r.pop_front();
            }
            r.push_back(e.clone());
        }
    }

    fn stats_json(&self) -> String {
        let body = StatsBody {
            model: &self.model,
            model_version: self.version(),
            sources: (0..self.meters.len()).map(|i| self.meter(i).snapshot()).collect(),
            recent_events: self.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().cloned().collect(),
            monitor: self.monitor.as_ref().map(|f| f()),
        };
        serde_json::to_string(&body).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
    }
}

/// Where and how the page is served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebOptions {
    /// `HOST:PORT` to listen on (port 0 picks a free one).
    pub addr: String,
    /// When set, every request needs it: `?token=` once (a cookie keeps it), the cookie, or
    /// `Authorization: Bearer`.
    pub token: Option<String>,
    /// Host names answered besides loopback names and IP literals (DNS rebinding guard).
    pub allowed_hosts: Vec<String>,
}

/// The HTTP server of a run, on its own thread.
pub struct WebServer {
    pub addr: SocketAddr,
    board: Arc<Board>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    /// Listen on `options.addr` (port 0 picks a free one: see [`WebServer::addr`]).
    pub fn start(options: &WebOptions, board: Arc<Board>) -> Result<WebServer, StreamError> {
        let addr = &options.addr;
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| StreamError::output(&format!("--http {addr}"), format!("cannot listen: {e}")))?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        if !local.ip().is_loopback() {
            match options.token {
                Some(_) => tracing::warn!("the live page listens on {local}, beyond this machine; a token guards it"),
                None => tracing::warn!(
                    "the live page listens on {local}, beyond this machine, with no token: anyone who can reach \
                     it sees the cameras; set --http-token (or STRIX_HTTP_TOKEN)"
                ),
            }
        }
        let tokens = options.token.as_deref().map(|t| strix_http::Token::new(None, t)).into_iter().collect();
        let gate = strix_http::Gate::new(&options.allowed_hosts)
            .map_err(|e| StreamError::output("--http-allow-host", e))?
            .with_tokens(tokens, local.port());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let app = strix_http::guarded(router(board.clone()), gate);
        let mut closing = board.closing.subscribe();
        // Live streams end themselves when the run closes; a client that does not read is cut.
        let limits = strix_http::ConnLimits { drain_timeout_ms: 1000, ..Default::default() };
        let thread = std::thread::Builder::new().name("strix-web".into()).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let shutdown = async move {
                    let _ = closing.wait_for(|c| *c).await;
                };
                if let Err(e) = strix_http::serve_router(listener, app, limits, shutdown).await {
                    tracing::warn!(error = %e, "the stream page's server stopped");
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
        Ok(WebServer { addr: local, board, thread: Some(thread) })
    }

    pub fn stop(mut self) {
        self.board.closing.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn router(board: Arc<Board>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/stats", get(stats))
        .route("/stream/project", get(|s: State<Arc<Board>>| mjpeg(s, 0, true)))
        .route("/stream/device", get(|s: State<Arc<Board>>| mjpeg(s, 0, false)))
        .route("/stream/{index}/{kind}", get(indexed))
        .with_state(board)
}

async fn page(State(board): State<Arc<Board>>) -> Html<String> {
    let sections: String = (0..board.meters.len())
        .map(|i| {
            let name = escape_html(&board.meter(i).stats.source);
            format!(
                "<section class=\"source\" data-index=\"{i}\"><h2>{name}</h2>\
                 <img src=\"/stream/{i}/project\" alt=\"project stream of {name}\">\
                 <a href=\"#\">show the device stream</a><table></table></section>\n"
            )
        })
        .collect();
    Html(include_str!("page.html").replace("<!--SOURCES-->", &sections))
}

/// Source names are user input (file names, URLs): escaped before they go into the page.
use strix_core::html::escape as escape_html;

async fn stats(State(board): State<Arc<Board>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], board.stats_json())
        .into_response()
}

async fn indexed(state: State<Arc<Board>>, Path((index, kind)): Path<(usize, String)>) -> Response {
    let project = match kind.as_str() {
        "project" => true,
        "device" => false,
        _ => return (StatusCode::NOT_FOUND, "streams are /stream/N/project and /stream/N/device\n").into_response(),
    };
    mjpeg(state, index, project).await
}

async fn mjpeg(State(board): State<Arc<Board>>, index: usize, project: bool) -> Response {
    let Some(views) = board.views.get(index) else {
        let msg = format!("no source {index}: this run has {}\n", board.views.len());
        return (StatusCode::NOT_FOUND, msg).into_response();
    };
    let mut rx = if project { views.project.subscribe() } else { views.device.subscribe() };
    // The newest frame goes out at once, then each new one.
    rx.mark_changed();
    let closing = board.closing.subscribe();
    let parts = futures_util::stream::unfold((rx, closing), |(mut rx, mut closing)| async move {
        loop {
            tokio::select! {
                changed = rx.changed() => changed.ok()?,
                _ = closing.wait_for(|c| *c) => return None,
            }
            let frame = rx.borrow_and_update().clone();
            if let Some(jpeg) = frame {
                let head =
                    format!("--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len());
                let mut part = Vec::with_capacity(head.len() + jpeg.len() + 2);
                part.extend_from_slice(head.as_bytes());
                part.extend_from_slice(&jpeg);
                part.extend_from_slice(b"\r\n");
                return Some((Ok::<Bytes, Infallible>(Bytes::from(part)), (rx, closing)));
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, format!("multipart/x-mixed-replace; boundary={BOUNDARY}"))
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(parts))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_are_escaped_in_the_page() {
        assert_eq!(escape_html("<img src=x onerror='a&b'>\""), "&lt;img src=x onerror=&#39;a&amp;b&#39;&gt;&quot;");
    }
}
