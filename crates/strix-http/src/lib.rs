//! HTTP/1 connection serving with the limits a port open to a network needs, shared by
//! `strix serve` and the stream page.
//!
//! `axum::serve` keeps a connection as long as the client likes: half-sent headers, a body
//! trickled a byte at a time and silent keep-alive connections all hold a socket and a task,
//! and a graceful shutdown waits for the slowest of them. [`serve_router`] adds:
//! - a header-read timeout (hyper's, from the connection's start or the request's first byte),
//! - a deadline on the whole request body ([`BodyTimeout`] is the error a handler then sees),
//! - an idle timeout: a connection with no request in flight and no bytes moving is closed,
//! - a cap on open connections (one over it is answered 503 and closed at once),
//! - a drain deadline at shutdown, after which the connections still open are cut.
//!
//! [`Secret`] checks API keys and page tokens in constant time for both; a [`Gate`] answers
//! only the host names a server was told about (DNS rebinding), asks for [`Token`]s when
//! given some, and sends headers that keep every answer out of other sites' frames.
//!
//! ```no_run
//! # async fn demo(listener: tokio::net::TcpListener, app: axum::Router) -> std::io::Result<()> {
//! strix_http::serve_router(listener, app, strix_http::ConnLimits::default(), std::future::pending()).await
//! # }
//! ```

mod body;
mod conn;
mod gate;
mod secret;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use body::{BodyTimeout, is_body_timeout};
pub use gate::{Caller, Gate, Token, guarded, security_headers};
pub use secret::{Secret, bearer};

/// The media type of a request's `Content-Type`, lower-cased, without its parameters
/// (`application/json; charset=utf-8` is `application/json`); `None` without the header, and
/// `Some("")` for one that is not text.
pub fn media_type(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get(axum::http::header::CONTENT_TYPE)?;
    let text = value.to_str().unwrap_or_default();
    Some(text.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

/// Connection limits; every duration in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnLimits {
    /// A request's headers must arrive within this.
    pub header_timeout_ms: u64,
    /// A request's whole body must arrive within this (from its headers).
    pub body_timeout_ms: u64,
    /// A connection with no request in flight and no bytes moving is closed after this.
    pub idle_timeout_ms: u64,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// At shutdown, how long requests in flight may take before their connections are cut.
    pub drain_timeout_ms: u64,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connections: 512,
            drain_timeout_ms: 30_000,
        }
    }
}

impl ConnLimits {
    /// A readable error for zero limits (which would refuse everything).
    pub fn validate(&self) -> Result<(), String> {
        let times = [self.header_timeout_ms, self.body_timeout_ms, self.idle_timeout_ms, self.drain_timeout_ms];
        if times.contains(&0) || self.max_connections == 0 {
            return Err("connection limits (timeouts and max_connections) must be at least 1".into());
        }
        Ok(())
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
}

/// Serve `router` on `listener` with `limits` until `shutdown` resolves, then stop accepting,
/// let requests in flight finish within the drain deadline and cut what is left.
pub async fn serve_router(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut open = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        open.spawn(conn::serve(stream, router.clone(), limits, stop_rx.clone(), permit));
                    }
                    Err(_) => conn::refuse(&stream),
                }
            }
            Some(_) = open.join_next(), if !open.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drain = ConnLimits::ms(limits.drain_timeout_ms);
    let drained = tokio::time::timeout(drain, async { while open.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = open.len(),
            "connections still open {} s after shutdown began; closing them",
            drain.as_secs_f64()
        );
        open.abort_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            header_timeout_ms: 300,
            body_timeout_ms: 400,
            idle_timeout_ms: 300,
            max_connections: 4,
            drain_timeout_ms: 300,
        }
    }

    /// A server with `/` (fast), `/slow` (5 s) and `/echo` (the body's length, or 408 for a
    /// body past its deadline); the address and a trigger for shutdown.
    async fn start(
        limits: ConnLimits,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let app = axum::Router::new()
            .route("/", get(|| async { "ok" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route(
                "/echo",
                post(|body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>| async move {
                    match body {
                        Ok(b) => (axum::http::StatusCode::OK, b.len().to_string()),
                        Err(e) if is_body_timeout(&e) => (axum::http::StatusCode::REQUEST_TIMEOUT, e.body_text()),
                        Err(e) => (e.status(), e.body_text()),
                    }
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve_router(listener, app, limits, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        (addr, tx, task)
    }

    /// Everything the server sends until it closes, and how long that took (at most `within`).
    async fn until_closed(c: &mut TcpStream, within: Duration) -> (String, Duration) {
        let start = Instant::now();
        let mut got = Vec::new();
        let read = tokio::time::timeout(within, c.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "still open after {within:?}; got {:?}", String::from_utf8_lossy(&got));
        (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
    }

    #[tokio::test]
    async fn half_sent_headers_are_cut_at_the_header_timeout() {
        let (addr, _stop, _task) = start(limits()).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let (_, took) = until_closed(&mut c, Duration::from_secs(3)).await;
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_trickled_body_gets_408_at_the_body_deadline() {
        let (addr, _stop, _task) = start(limits()).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n").await.unwrap();
        let trickle = async {
            // One byte every 100 ms: each frame in time, the whole body never.
            for _ in 0..30 {
                if c.write_all(b"a").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let start = Instant::now();
        trickle.await;
        let mut got = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut got)).await.unwrap().unwrap_or(0);
        let text = String::from_utf8_lossy(&got[..n]);
        assert!(text.starts_with("HTTP/1.1 408"), "{text:?} after {:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_silent_keep_alive_connection_is_closed_when_idle() {
        let (addr, _stop, _task) = start(limits()).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let (text, took) = until_closed(&mut c, Duration::from_secs(3)).await;
        assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("ok"), "{text:?}");
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn connections_over_the_cap_get_503_and_the_server_keeps_serving() {
        let (addr, _stop, _task) =
            start(ConnLimits { idle_timeout_ms: 5_000, header_timeout_ms: 5_000, ..limits() }).await;
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut over = TcpStream::connect(addr).await.unwrap();
        let (text, _) = until_closed(&mut over, Duration::from_secs(2)).await;
        assert!(text.starts_with("HTTP/1.1 503") && text.contains("too many connections"), "{text:?}");
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let (text, _) = until_closed(&mut c, Duration::from_secs(2)).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    }

    #[tokio::test]
    async fn shutdown_waits_no_longer_than_the_drain_deadline() {
        let (addr, stop, task) = start(limits()).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(3), task).await.unwrap().unwrap();
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    }

    #[test]
    fn media_types_lose_their_parameters_and_case() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(media_type(&h), None);
        h.insert(axum::http::header::CONTENT_TYPE, "Application/JSON ; charset=utf-8".parse().unwrap());
        assert_eq!(media_type(&h).as_deref(), Some("application/json"));
        h.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(media_type(&h).as_deref(), Some(""));
    }

    #[test]
    fn zero_limits_are_refused() {
        assert!(ConnLimits::default().validate().is_ok());
        assert!(ConnLimits { max_connections: 0, ..Default::default() }.validate().is_err());
        assert!(ConnLimits { body_timeout_ms: 0, ..Default::default() }.validate().is_err());
    }
}
