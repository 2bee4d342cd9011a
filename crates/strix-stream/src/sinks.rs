//! Where events go: JSON lines (a file or stdout), webhooks, MQTT topics (QoS 1, like DeepLens
//! publishing inference results to AWS IoT topics).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event as MqttEvent, MqttOptions, Packet, QoS};
use serde::Serialize;

use crate::analytics::Happening;
use crate::error::StreamError;

/// One event: which source, which frame, when (seconds into the source), what.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub source: String,
    pub frame: u64,
    pub time_s: f64,
    /// `NAME:VERSION` of the registry model that answered (absent for other models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(flatten)]
    pub what: Happening,
}

/// How a sink did, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SinkReport {
    pub sink: String,
    pub sent: u64,
    /// Events that did not get through (errors, a full queue, no acknowledgement).
    pub failed: u64,
}

/// A destination for events; called from one thread.
pub trait EventSink: Send {
    /// Events, each as its JSON text.
    fn send(&mut self, events: &[String]);
    /// Deliver what is pending (waits a bounded time) and report.
    fn close(self: Box<Self>) -> SinkReport;
}

/// The sinks a command line names: JSON lines to a file (`-`: stdout), a webhook, an MQTT
/// topic; each checked as it opens.
pub fn open_sinks(
    events: Option<&str>,
    webhook: Option<&str>,
    mqtt: Option<&str>,
) -> Result<Vec<Box<dyn EventSink>>, StreamError> {
    let mut sinks: Vec<Box<dyn EventSink>> = Vec::new();
    if let Some(path) = events {
        sinks.push(Box::new(JsonLines::open(path)?));
    }
    if let Some(url) = webhook {
        sinks.push(Box::new(Webhook::open(url)?));
    }
    if let Some(url) = mqtt {
        sinks.push(Box::new(Mqtt::open(url, Duration::from_secs(5))?));
    }
    Ok(sinks)
}

/// JSON lines to a file or stdout.
pub struct JsonLines {
    name: String,
    out: Box<dyn Write + Send>,
    sent: u64,
    failed: u64,
}

impl JsonLines {
    /// `-` is stdout; anything else a file, created (or truncated).
    pub fn open(path: &str) -> Result<Self, StreamError> {
        let out: Box<dyn Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            let p = PathBuf::from(path);
            let f = std::fs::File::create(&p).map_err(|e| StreamError::output(path, format!("cannot create: {e}")))?;
            Box::new(std::io::BufWriter::new(f))
        };
        Ok(JsonLines { name: if path == "-" { "stdout".into() } else { path.to_string() }, out, sent: 0, failed: 0 })
    }
}

impl EventSink for JsonLines {
    fn send(&mut self, events: &[String]) {
        for line in events {
            match writeln!(self.out, "{line}") {
                Ok(()) => self.sent += 1,
                Err(_) => self.failed += 1,
            }
        }
        // Readers (tail -f, a pipe) see each frame's events as they happen.
        if self.out.flush().is_err() {
            self.failed += 1;
        }
    }

    fn close(mut self: Box<Self>) -> SinkReport {
        let _ = self.out.flush();
        SinkReport { sink: format!("jsonl {}", self.name), sent: self.sent, failed: self.failed }
    }
}

/// POSTs each event as JSON to a URL from a background thread, so a slow receiver does not
/// slow the video; when its queue is full, events are counted as failed, not queued.
pub struct Webhook {
    /// The URL without its password, for messages and the summary.
    shown: String,
    tx: Option<crossbeam_channel::Sender<String>>,
    worker: Option<JoinHandle<()>>,
    /// Events handed to the worker, and what became of them.
    queued: u64,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// Set when the drain deadline passes: the worker stops posting what is left.
    abandon: Arc<AtomicBool>,
    dropped: u64,
    drain: Duration,
}

impl Webhook {
    /// How long [`EventSink::close`] waits for queued events: a silent receiver holds each
    /// post for its whole timeout, so a full queue would otherwise take hours to drain.
    pub const DRAIN: Duration = Duration::from_secs(5);

    pub fn open(url: &str) -> Result<Self, StreamError> {
        Self::with_drain(url, Self::DRAIN)
    }

    pub fn with_drain(url: &str, drain: Duration) -> Result<Self, StreamError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(StreamError::output(url, "a webhook must be an http:// or https:// URL"));
        }
        let shown = strix_core::redact(url);
        let (tx, rx) = crossbeam_channel::bounded::<String>(1024);
        let (sent, failed, abandon) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let target = url.to_string();
        let worker = {
            let (sent, failed, abandon, shown) = (sent.clone(), failed.clone(), abandon.clone(), shown.clone());
            std::thread::Builder::new().name("strix-webhook".into()).spawn(move || {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
                for body in rx {
                    // One retry: a receiver restarting should not lose an event.
                    let ok = !abandon.load(Ordering::SeqCst)
                        && (0..2).any(|attempt| {
                            if attempt > 0 {
                                std::thread::sleep(Duration::from_millis(500));
                            }
                            agent.post(&target).header("Content-Type", "application/json").send(body.as_bytes()).is_ok()
                        });
                    if ok {
                        sent.fetch_add(1, Ordering::SeqCst);
                    } else if failed.fetch_add(1, Ordering::SeqCst) == 0 && !abandon.load(Ordering::SeqCst) {
                        tracing::warn!(url = %shown, "webhook: an event could not be delivered");
                    }
                }
            })?
        };
        Ok(Webhook { shown, tx: Some(tx), worker: Some(worker), queued: 0, sent, failed, abandon, dropped: 0, drain })
    }
}

impl EventSink for Webhook {
    fn send(&mut self, events: &[String]) {
        let Some(tx) = &self.tx else { return };
        for e in events {
            match tx.try_send(e.clone()) {
                Ok(()) => self.queued += 1,
                Err(_) => self.dropped += 1,
            }
        }
    }

    fn close(mut self: Box<Self>) -> SinkReport {
        drop(self.tx.take());
        let deadline = Instant::now() + self.drain;
        let worker = self.worker.take();
        while worker.as_ref().is_some_and(|w| !w.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let sent = self.sent.load(Ordering::SeqCst);
        let failed = match worker {
            Some(w) if w.is_finished() => {
                let _ = w.join();
                self.failed.load(Ordering::SeqCst)
            }
            // Past the deadline: what has not been delivered counts as failed; the worker
            // (left to finish its current post) sends nothing more.
            _ => {
                self.abandon.store(true, Ordering::SeqCst);
                tracing::warn!(url = %self.shown, undelivered = self.queued - sent, "webhook: gave up draining events at exit");
                self.queued - sent
            }
        };
        SinkReport { sink: format!("webhook {}", self.shown), sent, failed: failed + self.dropped }
    }
}

/// Publishes each event to an MQTT topic with QoS 1 (at least once: the broker acknowledges
/// each message; rumqttc resends unacknowledged ones after a reconnect).
pub struct Mqtt {
    display: String,
    topic: String,
    client: Client,
    published: u64,
    dropped: u64,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

/// Where MQTT events go.
#[derive(Debug, PartialEq)]
struct MqttTarget {
    host: String,
    port: u16,
    /// User and password.
    credentials: Option<(String, String)>,
    topic: String,
}

/// `mqtt://[user[:password]@]host[:port]/topic/levels`.
fn parse_mqtt_url(url: &str) -> Result<MqttTarget, String> {
    let rest = url.strip_prefix("mqtt://").ok_or("expected mqtt://host[:port]/topic (mqtts is not supported yet)")?;
    let (authority, topic) = rest.split_once('/').ok_or("no topic: expected mqtt://host[:port]/topic")?;
    if topic.is_empty() || topic.contains(['+', '#']) {
        return Err("the topic must be a plain topic name (no wildcards)".into());
    }
    let (creds, hostport) = match authority.rsplit_once('@') {
        Some((c, h)) => {
            let (u, p) = c.split_once(':').unwrap_or((c, ""));
            (Some((u.to_string(), p.to_string())), h)
        }
        None => (None, authority),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
        None => (hostport, 1883),
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok(MqttTarget { host: host.to_string(), port, credentials: creds, topic: topic.to_string() })
}

impl Mqtt {
    /// Connect (waiting up to `connect_timeout` for the broker's answer) so a wrong address is
    /// an error at start, not silence.
    pub fn open(url: &str, connect_timeout: Duration) -> Result<Self, StreamError> {
        let MqttTarget { host, port, credentials: creds, topic } =
            parse_mqtt_url(url).map_err(|e| StreamError::output(url, e))?;
        let display = match &creds {
            Some((u, _)) => format!("mqtt://{u}:***@{host}:{port}/{topic}"),
            None => format!("mqtt://{host}:{port}/{topic}"),
        };
        let mut options = MqttOptions::new(format!("strix-{}-{}", std::process::id(), now_nanos()), host, port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((u, p)) = creds {
            options.set_credentials(u, p);
        }
        let (client, mut connection) = Client::new(options, 1024);
        let deadline = Instant::now() + connect_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match connection.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(StreamError::output(&display, format!("cannot connect to the MQTT broker: {e}")));
                }
                Err(_) => return Err(StreamError::output(&display, "no answer from the MQTT broker")),
            }
            if Instant::now() >= deadline {
                return Err(StreamError::output(&display, "no answer from the MQTT broker"));
            }
        }
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (acked, stop, broker) = (acked.clone(), stop.clone(), display.clone());
            std::thread::Builder::new().name("strix-mqtt".into()).spawn(move || {
                let mut warned = false;
                while !stop.load(Ordering::SeqCst) {
                    match connection.recv_timeout(Duration::from_millis(100)) {
                        Ok(Ok(MqttEvent::Incoming(Packet::PubAck(_)))) => {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            if !warned {
                                tracing::warn!(%broker, error = %e, "MQTT connection lost; reconnecting");
                                warned = true;
                            }
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        Err(rumqttc::RecvTimeoutError::Timeout) => {}
                        Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })?
        };
        Ok(Mqtt { display, topic, client, published: 0, dropped: 0, acked, stop, worker: Some(worker) })
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

impl EventSink for Mqtt {
    fn send(&mut self, events: &[String]) {
        for e in events {
            match self.client.try_publish(self.topic.as_str(), QoS::AtLeastOnce, false, e.as_bytes()) {
                Ok(()) => self.published += 1,
                Err(_) => self.dropped += 1,
            }
        }
    }

    fn close(mut self: Box<Self>) -> SinkReport {
        // Wait (bounded) for the broker to acknowledge everything published.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.acked.load(Ordering::SeqCst) < self.published && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.client.disconnect();
        std::thread::sleep(Duration::from_millis(50));
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        let acked = self.acked.load(Ordering::SeqCst).min(self.published);
        SinkReport { sink: self.display.clone(), sent: acked, failed: self.published - acked + self.dropped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_close_has_a_deadline_with_a_silent_receiver() {
        // A receiver that accepts connections and never answers holds each post for 5 s.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = std::thread::spawn(move || {
            let mut conns = Vec::new();
            listener.set_nonblocking(true).unwrap();
            let end = Instant::now() + Duration::from_secs(4);
            while Instant::now() < end {
                if let Ok((c, _)) = listener.accept() {
                    conns.push(c);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let url = format!("http://hook:s3cret@127.0.0.1:{port}/events");
        let mut hook = Box::new(Webhook::with_drain(&url, Duration::from_millis(300)).unwrap());
        hook.send(&vec!["{}".to_string(); 50]);
        let start = Instant::now();
        let report = hook.close();
        assert!(start.elapsed() < Duration::from_secs(2), "close took {:?}", start.elapsed());
        assert_eq!((report.sent, report.failed), (0, 50));
        assert!(!report.sink.contains("s3cret"), "{}", report.sink);
        held.join().unwrap();
    }

    #[test]
    fn mqtt_urls() {
        let t = parse_mqtt_url("mqtt://127.0.0.1/strix/events").unwrap();
        let want = MqttTarget { host: "127.0.0.1".into(), port: 1883, credentials: None, topic: "strix/events".into() };
        assert_eq!(t, want);
        let t = parse_mqtt_url("mqtt://bob:pw@broker:8883/t").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("broker", 8883));
        assert_eq!(t.credentials, Some(("bob".into(), "pw".into())));
        assert!(parse_mqtt_url("mqtt://host").is_err());
        assert!(parse_mqtt_url("mqtt://host/a/#").is_err());
        assert!(parse_mqtt_url("mqtts://host/t").is_err());
        assert!(parse_mqtt_url("mqtt://host:x/t").is_err());
    }

    #[test]
    fn events_serialise_flat_with_their_type() {
        let e = Event {
            source: "cam".into(),
            frame: 3,
            time_s: 0.3,
            model_version: Some("trash:4".into()),
            what: Happening::Crossed { track_id: 1, class: "person".into(), line: "door".into(), direction: "forward" },
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "crossed");
        assert_eq!(v["frame"], 3);
        assert_eq!(v["model_version"], "trash:4");
        assert_eq!(v["line"], "door");
    }
}
