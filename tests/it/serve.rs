//! `strix serve`, driven in-process: every route and task against the fixture models (answers
//! equal `strix predict --json`), bad input as 4xx JSON while the server keeps serving, load
//! shedding with 503, dynamic batching, and draining at shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use strix_core::NoProgress;
use strix_pipeline::Pipeline;
use strix_runtime::Backend;
use strix_serve::{Batching, Limits, ServeState, ServedModel};
use strix_zoo::{Resolver, locate};

use crate::fixtures_or_skip;
use crate::support::{BatchLog, CountingRuntime, detections, png_declaring, run, share_iou, strix};
use crate::train::quick_export;

/// A server on a free loopback port, stopped (and drained) on drop.
pub(crate) struct Server {
    pub(crate) port: u16,
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<(), strix_serve::ServeError>>>,
}

impl Server {
    /// Serve `(route, model reference)` pairs loaded from the fixtures on tract.
    pub(crate) fn start(fx: &Path, models: &[(&str, &str)], batching: Batching, limits: Limits) -> Server {
        Self::start_with_keys(fx, models, batching, limits, &[])
    }

    fn start_with_keys(
        fx: &Path,
        models: &[(&str, &str)],
        batching: Batching,
        limits: Limits,
        keys: &[String],
    ) -> Server {
        let runtime = strix_runtime::open(Backend::Tract, &crate::support::runtime_options()).unwrap();
        Self::start_on(runtime, fx, models, batching, limits, |s| s.with_api_keys(keys))
    }

    /// Serve on `runtime`, the state set up further by `configure` (keys, fast decoding).
    pub(crate) fn start_on(
        runtime: Box<dyn strix_runtime::Runtime>,
        fx: &Path,
        models: &[(&str, &str)],
        batching: Batching,
        limits: Limits,
        configure: impl FnOnce(ServeState) -> ServeState,
    ) -> Server {
        let mut resolver = Resolver::new(std::env::temp_dir().join("strix-it-cache"));
        resolver.search_path = vec![fx.join("models")];
        resolver.offline = true;
        let served = models
            .iter()
            .map(|(route, reference)| {
                let located = locate(reference, &crate::support::empty_home()).unwrap();
                let model = resolver.resolve(&located, &NoProgress).unwrap();
                let pipeline = Pipeline::load(model, runtime.as_ref()).unwrap();
                ServedModel::new(route, reference, pipeline, batching, 5)
            })
            .collect();
        let state = Arc::new(configure(ServeState::new(served, limits)));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let conns = strix_http::ConnLimits::default();
        let done = rt.spawn(strix_serve::serve(listener, state, conns, async {
            let _ = stopped.await;
        }));
        Server { port, rt, stop: Some(stop), done: Some(done) }
    }

    pub(crate) fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        request(self.port, method, path, headers, body)
    }

    pub(crate) fn post_image(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        self.request("POST", path, &[("Content-Type", content_type)], body)
    }

    /// Stop accepting, let requests in flight finish, and wait for the server to end.
    pub(crate) fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            self.rt.block_on(done).unwrap().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: String,
    pub(crate) body: String,
}

impl Reply {
    /// A header's value (names are lower-cased).
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub(crate) fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code: {}", self.body)).to_string()
    }
}

/// A plain HTTP/1.1 exchange over one connection.
pub(crate) fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    read_reply(&mut send_request(port, method, path, headers, body))
}

/// A whole request sent; the connection, for the caller to read the reply from or hang up.
fn send_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and close before a huge body is all sent.
    let _ = stream.write_all(body);
    stream
}

/// The answer on `stream`, read to its end.
pub(crate) fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap();
    Reply { status, headers: head.to_ascii_lowercase(), body: body.to_string() }
}

/// Numbers equal to 1e-3 (relative), everything else exactly: the same model through the same
/// code, though batch and thread counts may differ from `strix predict`'s.
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-3 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

pub(crate) fn predict_json(fx: &Path, cache: &Path, model: &str, image: &Path) -> Value {
    let (out, stdout, stderr) = run(strix(fx, cache).args(["predict", "--json", "--model", model]).arg(image));
    assert!(out.status.success(), "{stderr}");
    let mut v: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("Image");
    v
}

const TASKS: &[(&str, &str)] = &[
    ("efficientnet_lite0", "apple.jpg"),
    ("nanodet_m_416", "messi5.jpg"),
    ("movenet_lightning_192", "messi5.jpg"),
    ("selfie_256", "messi5.jpg"),
    ("blazeface_front_128", "messi5.jpg"),
    ("ppocrv4", "imageTextN.png"),
];

/// Acceptance: every route, every task; answers equal `strix predict --json`.
#[test]
fn every_route_and_task_answers_as_predict_does() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let models: Vec<(&str, &str)> = TASKS.iter().map(|(m, _)| (*m, *m)).collect();
    let server = Server::start(&fx, &models, Batching::default(), Limits::default());

    assert_eq!(server.request("GET", "/ping", &[], b"").status, 200);
    assert_eq!(server.request("GET", "/health/live", &[], b"").json()["status"], "live");
    assert_eq!(server.request("GET", "/health/ready", &[], b"").json()["status"], "ready");
    let listed = server.request("GET", "/v1/models", &[], b"").json();
    let tasks: Vec<&str> = listed["models"].as_array().unwrap().iter().map(|m| m["task"].as_str().unwrap()).collect();
    assert_eq!(tasks, ["classify", "detect", "pose", "segment", "faces", "text"]);

    for (model, image) in TASKS {
        let path = fx.join("images").join(image);
        let bytes = std::fs::read(&path).unwrap();
        let content_type = if image.ends_with(".png") { "image/png" } else { "image/jpeg" };
        let want = predict_json(&fx, tmp.path(), model, &path);
        let got = server.post_image(&format!("/v1/models/{model}/predict"), content_type, &bytes);
        assert_eq!(got.status, 200, "{model}: {}", got.body);
        assert!(same(&got.json(), &want), "{model}:\n serve   {}\n predict {want}", got.body);

        // SageMaker's route with the target-model header, and a Rekognition-style JSON body.
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let body = serde_json::json!({"Image": {"Bytes": b64}}).to_string();
        let headers = [("Content-Type", "application/json"), ("X-Amzn-SageMaker-Target-Model", model)];
        let got = server.request("POST", "/invocations", &headers, body.as_bytes());
        assert_eq!(got.status, 200, "{model}: {}", got.body);
        assert!(same(&got.json(), &want), "{model} via /invocations: {}", got.body);
    }
    // Without a target model, /invocations answers with the first.
    let apple = std::fs::read(fx.join("images/apple.jpg")).unwrap();
    let got = server.post_image("/invocations", "image/jpeg", &apple);
    assert_eq!(got.json()["LabelModelVersion"], "efficientnet_lite0", "{}", got.body);

    // Rekognition's wire protocol: the action in X-Amz-Target, its request and answer shapes.
    let rekognition = |action: &str, image: &str, extra: &str| {
        let b64 =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(fx.join("images").join(image)).unwrap());
        let body = format!(r#"{{"Image": {{"Bytes": "{b64}"}}{extra}}}"#);
        let target = format!("RekognitionService.{action}");
        let headers = [("Content-Type", "application/x-amz-json-1.1"), ("X-Amz-Target", target.as_str())];
        server.request("POST", "/", &headers, body.as_bytes())
    };
    // DetectLabels goes to the detector (Rekognition's labels carry instances), MinConfidence
    // and MaxLabels apply.
    let detect = predict_json(&fx, tmp.path(), "nanodet_m_416", &fx.join("images/messi5.jpg"));
    let got = rekognition("DetectLabels", "messi5.jpg", r#", "MaxLabels": 1, "MinConfidence": 40"#);
    assert_eq!(got.status, 200, "{}", got.body);
    let labels = got.json()["Labels"].as_array().unwrap().clone();
    assert_eq!(labels.len(), 1, "{}", got.body);
    assert!(same(&labels[0], &detect["Labels"][0]), "{} vs {}", labels[0], detect["Labels"][0]);
    let text = predict_json(&fx, tmp.path(), "ppocrv4", &fx.join("images/imageTextN.png"));
    let got = rekognition("DetectText", "imageTextN.png", "");
    assert!(same(&got.json(), &text), "{}", got.body);
    let faces = predict_json(&fx, tmp.path(), "blazeface_front_128", &fx.join("images/messi5.jpg"));
    let got = rekognition("DetectFaces", "messi5.jpg", r#", "Attributes": ["DEFAULT"]"#);
    assert!(same(&got.json(), &faces), "{}", got.body);
    let got = rekognition("DetectModerationLabels", "messi5.jpg", "");
    assert_eq!((got.status, got.error_code().as_str()), (400, "InvalidParameterException"), "{}", got.body);

    // Prometheus: what was just served shows up.
    let metrics = server.request("GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    for want in [
        "strix_requests_total{model=\"efficientnet_lite0\",status=\"200\"} 3",
        "strix_requests_total{model=\"nanodet_m_416\",status=\"200\"} 3",
        "strix_request_duration_seconds_bucket{",
        "strix_batch_size_count{model=\"ppocrv4\"} 3",
        "strix_queue_depth{model=\"selfie_256\"} 0",
    ] {
        assert!(metrics.body.contains(want), "{want} missing from /metrics:\n{}", metrics.body);
    }
}

/// With API keys, every route but /ping and /health needs one; a wrong key and no key get the
/// same 401.
#[test]
fn api_keys_guard_everything_but_health() {
    let fx = fixtures_or_skip!();
    let keys = vec!["k-one".to_string(), "a-much-longer-second-key".to_string()];
    let server = Server::start_with_keys(&fx, &[("seg", "selfie_256")], Batching::default(), Limits::default(), &keys);
    let image = std::fs::read(fx.join("images/messi5.jpg")).unwrap();
    let post = |auth: &[(&str, &str)]| {
        let mut headers = vec![("Content-Type", "image/jpeg")];
        headers.extend_from_slice(auth);
        server.request("POST", "/v1/models/seg/predict", &headers, &image)
    };
    assert_eq!(server.request("GET", "/ping", &[], b"").status, 200);
    assert_eq!(server.request("GET", "/health/ready", &[], b"").status, 200);
    let none = post(&[]);
    let wrong = post(&[("Authorization", "Bearer k-two")]);
    let prefix = post(&[("X-Api-Key", "k-on")]);
    for r in [&none, &wrong, &prefix] {
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.body, none.body, "401 answers must not differ");
    }
    assert_eq!(server.request("GET", "/v1/models", &[], b"").status, 401);
    assert_eq!(server.request("GET", "/metrics", &[], b"").status, 401);
    assert_eq!(post(&[("Authorization", "Bearer k-one")]).status, 200);
    assert_eq!(post(&[("X-Api-Key", "a-much-longer-second-key")]).status, 200);
}

/// Acceptance: each kind of bad input is a 4xx JSON error, and the next good request works.
#[test]
fn bad_input_is_a_4xx_json_error_and_the_server_keeps_serving() {
    let fx = fixtures_or_skip!();
    let limits = Limits { max_body_bytes: 20 << 20, max_pixels: 100_000_000, max_decoding: 0 };
    let server = Server::start(&fx, &[("classify", "efficientnet_lite0")], Batching::default(), limits);
    let apple = std::fs::read(fx.join("images/apple.jpg")).unwrap();
    let route = "/v1/models/classify/predict";
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let huge_header = png_declaring(30_000, 30_000);
    let cases: Vec<(&str, Reply, u16, &str)> = vec![
        (
            "truncated JPEG",
            server.post_image(route, "image/jpeg", &apple[..apple.len() / 2]),
            400,
            "InvalidImageFormatException",
        ),
        ("not an image", server.post_image(route, "image/jpeg", b"hello, world"), 400, "InvalidImageFormatException"),
        ("empty body", server.post_image(route, "image/jpeg", b""), 400, "InvalidImageFormatException"),
        ("wrong content type", server.post_image(route, "text/plain", &apple), 415, "UnsupportedMediaTypeException"),
        ("no content type", server.request("POST", route, &[], &apple), 415, "UnsupportedMediaTypeException"),
        ("50 MB body", server.post_image(route, "image/jpeg", &vec![0u8; 50 << 20]), 413, "ImageTooLargeException"),
        ("30000x30000 header", server.post_image(route, "image/png", &huge_header), 413, "ImageTooLargeException"),
        (
            "malformed JSON",
            server.post_image(route, "application/json", b"{\"Image\": "),
            400,
            "InvalidParameterException",
        ),
        (
            "JSON of another shape",
            server.post_image(route, "application/json", b"{\"image\": \"abc\"}"),
            400,
            "InvalidParameterException",
        ),
        (
            "invalid base64",
            server.post_image(route, "application/json", br#"{"Image": {"Bytes": "not*base64!"}}"#),
            400,
            "InvalidParameterException",
        ),
        (
            "base64 of a non-image",
            server.post_image(
                route,
                "application/json",
                format!(r#"{{"Image": {{"Bytes": "{}"}}}}"#, b64(b"text")).as_bytes(),
            ),
            400,
            "InvalidImageFormatException",
        ),
        (
            "unknown model",
            server.post_image("/v1/models/nope/predict", "image/jpeg", &apple),
            404,
            "ResourceNotFoundException",
        ),
        ("unknown route", server.request("GET", "/v2/whatever", &[], b""), 404, "NotFound"),
    ];
    for (what, reply, status, code) in cases {
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        assert_eq!(reply.error_code(), code, "{what}: {}", reply.body);
        assert!(!reply.json()["error"]["message"].as_str().unwrap().is_empty(), "{what}");
        // The server is still there and right.
        let ok = server.post_image(route, "image/jpeg", &apple);
        assert_eq!(ok.status, 200, "after {what}: {}", ok.body);
    }
}

/// Far more clients than the queue holds: the excess gets 503 with Retry-After at once, nobody
/// gets anything else, and the server answers normally when the burst is over.
#[test]
fn overload_sheds_with_503_and_recovers() {
    let fx = fixtures_or_skip!();
    let batching = Batching { max_batch: 1, max_delay_ms: 0, queue: 2, timeout_ms: 60_000, workers: 1 };
    let server = Server::start(&fx, &[("detect", "nanodet_m_416")], batching, Limits::default());
    let image = std::fs::read(fx.join("images/messi5.jpg")).unwrap();
    let port = server.port;
    let clients: Vec<_> = (0..24)
        .map(|_| {
            let image = image.clone();
            std::thread::spawn(move || {
                request(port, "POST", "/v1/models/detect/predict", &[("Content-Type", "image/jpeg")], &image)
            })
        })
        .collect();
    let replies: Vec<Reply> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let shed: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    eprintln!("24 clients, queue 2: {ok} answered, {} shed", shed.len());
    assert_eq!(ok + shed.len(), replies.len(), "only 200 or 503 expected");
    assert!(ok >= 1 && !shed.is_empty(), "{ok} answered, {} shed", shed.len());
    for r in &shed {
        assert!(r.headers.contains("retry-after: 1"), "{}", r.headers);
        assert_eq!(r.error_code(), "ThrottlingException");
    }
    let after = server.post_image("/v1/models/detect/predict", "image/jpeg", &image);
    assert_eq!(after.status, 200, "{}", after.body);
}

/// A model with a free batch dimension (a trained export) gets real batches from concurrent
/// requests, each caller gets its own answer, and shutdown waits for requests in flight.
/// One worker, whose inferences are slowed down as a big model's would be, so a batch forms
/// from whatever has arrived however loaded the machine is. (How several workers share a
/// queue, and when they wait for company, is the batcher's unit tests'.)
#[test]
fn concurrent_requests_are_batched_and_shutdown_drains() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_export(&fx, tmp.path(), 1200);
    let batching = Batching { max_batch: 8, max_delay_ms: 300, queue: 64, timeout_ms: 60_000, workers: 1 };
    let log = BatchLog::default();
    let runtime = CountingRuntime {
        inner: strix_runtime::open(Backend::Tract, &crate::support::runtime_options()).unwrap(),
        log: log.clone(),
        slow: Duration::from_millis(200),
    };
    let mut server =
        Server::start_on(Box::new(runtime), &fx, &[("fm", spec.to_str().unwrap())], batching, Limits::default(), |s| s);
    // Only the requests' inferences count, not any made while loading.
    log.lock().unwrap().clear();
    let images: Vec<std::path::PathBuf> =
        ["apple.jpg", "orange.jpg", "messi5.jpg", "butterfly.jpg", "baboon.jpg", "squirrel_cls.jpg"]
            .iter()
            .map(|i| fx.join("images").join(i))
            .collect();
    let port = server.port;
    let clients: Vec<_> = images
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).unwrap();
            std::thread::spawn(move || {
                request(port, "POST", "/v1/models/fm/predict", &[("Content-Type", "image/jpeg")], &bytes)
            })
        })
        .collect();
    let replies: Vec<Reply> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    for (path, reply) in images.iter().zip(&replies) {
        assert_eq!(reply.status, 200, "{}", reply.body);
        let want = predict_json(&fx, tmp.path(), spec.to_str().unwrap(), path);
        let mut got = reply.json();
        got["LabelModelVersion"] = want["LabelModelVersion"].clone();
        assert!(same(&got, &want), "{}: serve {got} predict {want}", path.display());
    }
    // Counted at the session: the six images went through in fewer than six inferences, and
    // the server's own report agrees.
    let sizes: Vec<usize> = log.lock().unwrap().iter().map(Vec::len).collect();
    eprintln!("batch sizes run: {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), images.len(), "{sizes:?}");
    assert!(sizes.iter().any(|&n| n >= 2), "no batching happened: {sizes:?}");
    let listed = server.request("GET", "/v1/models", &[], b"").json();
    let mut reported: Vec<(usize, usize)> = listed["models"][0]["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["size"].as_u64().unwrap() as usize, b["count"].as_u64().unwrap() as usize))
        .collect();
    let mut counted: Vec<(usize, usize)> = Vec::new();
    for &n in &sizes {
        match counted.iter_mut().find(|(s, _)| *s == n) {
            Some(c) => c.1 += 1,
            None => counted.push((n, 1)),
        }
    }
    reported.sort_unstable();
    counted.sort_unstable();
    assert_eq!(reported, counted);

    // Raw tensors (the Open Inference Protocol) are batched too, and each request gets its own
    // rows back: concurrent answers equal the ones each got alone.
    let meta = server.request("GET", "/v2/models/fm", &[], b"").json();
    let input = &meta["inputs"][0];
    let dims: Vec<usize> =
        input["shape"].as_array().unwrap()[1..].iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let per_row: usize = dims.iter().product();
    let body = |seed: usize, rows: usize| {
        let data: Vec<f32> = (0..rows * per_row).map(|i| ((i * 31 + seed * 977) % 255) as f32 / 127.0 - 1.0).collect();
        let shape: Vec<usize> = std::iter::once(rows).chain(dims.iter().copied()).collect();
        let name = input["name"].as_str().unwrap();
        serde_json::json!({"inputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": data}]}).to_string()
    };
    let infer = |port: u16, body: String| {
        let reply =
            request(port, "POST", "/v2/models/fm/infer", &[("Content-Type", "application/json")], body.as_bytes());
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["outputs"][0].clone()
    };
    let requests: Vec<(usize, usize)> = vec![(1, 1), (2, 2), (3, 1), (4, 1)];
    let alone: Vec<Value> = requests.iter().map(|&(seed, rows)| infer(port, body(seed, rows))).collect();
    log.lock().unwrap().clear();
    let together: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            requests.iter().map(|&(seed, rows)| scope.spawn(move || infer(port, body(seed, rows)))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let sizes: Vec<usize> = log.lock().unwrap().iter().map(Vec::len).collect();
    eprintln!("raw batch sizes run: {sizes:?}");
    // Five rows in four requests: fewer than four inferences means requests shared one.
    assert_eq!(sizes.iter().sum::<usize>(), 5, "{sizes:?}");
    assert!(sizes.len() < requests.len(), "no raw batching: {sizes:?}");
    for ((a, t), (_, rows)) in alone.iter().zip(&together).zip(&requests) {
        assert_eq!(a["shape"], t["shape"]);
        assert_eq!(t["shape"][0], *rows as u64);
        let (a, t) = (a["data"].as_array().unwrap(), t["data"].as_array().unwrap());
        assert_eq!(a.len(), t.len());
        for (x, y) in a.iter().zip(t) {
            assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() <= 1e-5, "{x} vs {y}");
        }
    }

    // A request in flight when shutdown starts still gets its answer.
    let bytes = std::fs::read(&images[0]).unwrap();
    let in_flight = std::thread::spawn(move || {
        request(port, "POST", "/v1/models/fm/predict", &[("Content-Type", "image/jpeg")], &bytes)
    });
    std::thread::sleep(Duration::from_millis(100));
    server.shutdown();
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "still listening after shutdown");
}

/// An inference whose client hung up still runs to its end before shutdown returns: the
/// process must not exit, tearing the engine down, under a running inference.
#[test]
fn shutdown_waits_for_inferences_whose_clients_left() {
    let fx = fixtures_or_skip!();
    let log = BatchLog::default();
    let runtime = CountingRuntime {
        inner: strix_runtime::open(Backend::Tract, &crate::support::runtime_options()).unwrap(),
        log: log.clone(),
        slow: Duration::from_millis(400),
    };
    let batching = Batching { workers: 1, ..Batching::default() };
    let mut server =
        Server::start_on(Box::new(runtime), &fx, &[("cls", "efficientnet_lite0")], batching, Limits::default(), |s| s);
    log.lock().unwrap().clear();
    let bytes = std::fs::read(fx.join("images/apple.jpg")).unwrap();
    let leaver = send_request(server.port, "POST", "/v1/models/cls/predict", &[("Content-Type", "image/jpeg")], &bytes);
    let waiting = std::time::Instant::now();
    while log.lock().unwrap().is_empty() {
        assert!(waiting.elapsed() < Duration::from_secs(30), "the request never reached the model");
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = std::time::Instant::now();
    drop(leaver);
    server.shutdown();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "shutdown returned {took:?} into a 400 ms inference");
}

/// `--fast-decode`: JPEGs decode at a DCT-scaled size the model still only shrinks from; the
/// answers stay those of a whole decode (same classes, boxes in the full picture's frame).
#[test]
fn fast_decode_answers_as_a_whole_decode_does() {
    let fx = fixtures_or_skip!();
    let models = [("cls", "efficientnet_lite0"), ("det", "nanodet_m_416")];
    let start = |fast: bool| {
        let runtime = strix_runtime::open(Backend::Tract, &crate::support::runtime_options()).unwrap();
        Server::start_on(runtime, &fx, &models, Batching::default(), Limits::default(), move |s| {
            s.with_fast_decode(fast)
        })
    };
    let (whole, fast) = (start(false), start(true));
    // A camera-sized photo: messi5 enlarged four times (2192x1368), so NanoDet's 416 input
    // takes a half-size decode and EfficientNet's 256 a quarter-size one.
    let small = image::open(fx.join("images/messi5.jpg")).unwrap().into_rgb8();
    let big = image::imageops::resize(&small, 2192, 1368, image::imageops::FilterType::Triangle);
    let big = strix_vision::encode_jpeg(&big, 92.0).unwrap();
    let mut photos: Vec<(String, Vec<u8>)> = ["apple.jpg", "baboon.jpg", "orange.jpg", "squirrel_cls.jpg"]
        .iter()
        .map(|n| (n.to_string(), std::fs::read(fx.join("images").join(n)).unwrap()))
        .collect();
    photos.push(("messi5 x4".into(), big.clone()));
    for (name, bytes) in &photos {
        let a = whole.post_image("/v1/models/cls/predict", "image/jpeg", bytes).json();
        let b = fast.post_image("/v1/models/cls/predict", "image/jpeg", bytes).json();
        assert_eq!(a["Labels"][0]["Name"], b["Labels"][0]["Name"], "{name}: {a} vs {b}");
        let (pa, pb) = (a["Labels"][0]["Confidence"].as_f64().unwrap(), b["Labels"][0]["Confidence"].as_f64().unwrap());
        // A reduced decode is a smoother picture than a whole one resized without antialiasing:
        // measured, top-1 moved by at most 6.4 points (orange.jpg) and the top two stayed.
        assert!((pa - pb).abs() < 8.0, "{name}: {pa} vs {pb}");
        assert_eq!(a["Labels"][1]["Name"], b["Labels"][1]["Name"], "{name}: {a} vs {b}");
    }
    let a = whole.post_image("/v1/models/det/predict", "image/jpeg", &big).json();
    let b = fast.post_image("/v1/models/det/predict", "image/jpeg", &big).json();
    // Every box of the whole decode is found again, same class, same place, about as sure.
    let fast_boxes = detections(&b);
    let whole_boxes = detections(&a);
    assert!(whole_boxes.iter().any(|d| d.0 == "person" && d.1 > 80.0), "{a}");
    for (class, confidence, place) in &whole_boxes {
        let found =
            fast_boxes.iter().any(|d| &d.0 == class && share_iou(d.2, *place) > 0.9 && (d.1 - confidence).abs() < 5.0);
        assert!(found, "{class} {confidence:.0}% at {place:?} not found with --fast-decode: {b}");
    }
    // The reduced decodes really happened (else the comparison above was whole against whole),
    // and none without the flag.
    let counted = |s: &Server| s.request("GET", "/metrics", &[], b"").body;
    let fast_counts = counted(&fast);
    for line in [r#"strix_decodes_total{model="cls",scale="1/4"}"#, r#"strix_decodes_total{model="det",scale="1/2"}"#] {
        assert!(fast_counts.lines().any(|l| l.starts_with(line)), "{line} not counted:\n{fast_counts}");
    }
    let whole_counts = counted(&whole);
    let reduced = whole_counts.lines().filter(|l| l.starts_with("strix_decodes_total") && !l.contains(r#"scale="1""#));
    assert_eq!(reduced.count(), 0, "{whole_counts}");
}
