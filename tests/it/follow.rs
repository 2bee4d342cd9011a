//! Deployments that follow a registry alias: `strix serve` and `strix stream` named
//! `seg@production` notice when the alias moves, swap the new version in without failing a
//! request, and refuse a version whose file does not load while the old one keeps answering.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures_or_skip;
use crate::registry::{Registry, model_files, ok_json};
use crate::serve::request;
use crate::support::{collect, run, said_at, wait_until};

/// A registry holding `seg` versions 1 and 2 (the selfie segmenter), `production` on 1.
struct Deployment {
    fx: PathBuf,
    tmp: tempfile::TempDir,
    reg: Registry,
}

impl Deployment {
    fn new(fx: &Path) -> Deployment {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::local(tmp.path());
        let d = Deployment { fx: fx.to_path_buf(), reg, tmp };
        let onnx =
            model_files(fx, &d.cache(), &d.tmp.path().join("user"), "selfie_256", "segment/selfie_256.onnx", "seg");
        for alias in [&["--alias", "production"][..], &[]] {
            ok_json(d.strix().args(["models", "register"]).arg(&onnx).args(["--name", "seg", "--json"]).args(alias));
        }
        d
    }

    fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    fn strix(&self) -> std::process::Command {
        self.reg.cmd(&self.fx, &self.cache())
    }

    fn alias(&self, version: u64) {
        let (out, _, stderr) = run(self.strix().args(["models", "alias", "seg", &version.to_string(), "production"]));
        assert!(out.status.success(), "{stderr}");
    }

    /// Version 3: version 1's spec with a weights file that is not ONNX. Registered through the
    /// library, as `models register` (which test-loads) would refuse it.
    fn register_broken(&self) {
        let dir = self.tmp.path().join("v3");
        let (out, _, stderr) = run(self.strix().args(["models", "download", "seg:1", "--out"]).arg(&dir));
        assert!(out.status.success(), "{stderr}");
        let garbage = b"this is not an ONNX model".repeat(100);
        std::fs::write(dir.join("seg.onnx"), &garbage).unwrap();
        let mut spec: toml::Table = std::fs::read_to_string(dir.join("model.toml")).unwrap().parse().unwrap();
        let weights = spec["weights"].as_table_mut().unwrap();
        weights.insert("sha256".into(), strix_core::digest::sha256_hex(&garbage).into());
        weights.insert("size".into(), (garbage.len() as i64).into());
        std::fs::write(dir.join("model.toml"), toml::to_string(&spec).unwrap()).unwrap();
        let store = self.tmp.path().join("registry");
        let config = strix_registry::RegistryConfig {
            store: store.display().to_string(),
            db: format!("sqlite://{}?mode=rwc", store.join("registry.db").display()),
            s3: Vec::new(),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let registry = strix_registry::Registry::open(&config).await.unwrap();
            let new = strix_registry::NewVersion {
                name: "seg".into(),
                task: "segment".into(),
                files: ["seg.onnx", "model.toml"]
                    .iter()
                    .map(|f| strix_registry::NewFile { file: f.to_string(), path: dir.join(f) })
                    .collect(),
                lineage: Default::default(),
                created_by: "test".into(),
                strix_version: "test".into(),
            };
            let record = registry.register(new, &strix_core::NoProgress).await.unwrap();
            assert_eq!(record.version, 3);
            registry.close().await;
        });
    }
}

pub(crate) fn stop(child: &mut Child) {
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One answer a client got: when its request started, its status and the version header.
type Answer = (Instant, u16, String);

#[test]
fn serve_follows_an_alias_without_failing_a_request_and_refuses_a_broken_version() {
    let fx = fixtures_or_skip!();
    let d = Deployment::new(&fx);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let interval = 2.0;
    let mut child = d
        .strix()
        .args(["serve", "--model", "seg=seg@production", "--backend", "tract", "--port", &port.to_string()])
        .args(["--follow-interval", &interval.to_string(), "-v"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect(child.stderr.take().unwrap());
    crate::support::wait_for_port(port);

    // Eight clients post the same photo without pause until told to stop.
    let image = std::fs::read(fx.join("images/messi5.jpg")).unwrap();
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (image, answers, done) = (image.clone(), answers.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let reply =
                        request(port, "POST", "/v1/models/seg/predict", &[("Content-Type", "image/jpeg")], &image);
                    let version = reply.header("x-strix-model-version").unwrap_or_default();
                    if reply.status == 200 {
                        assert_eq!(reply.json()["SegmentationModelVersion"], version.as_str(), "{}", reply.body);
                    }
                    answers.lock().unwrap().push((started, reply.status, version));
                }
            })
        })
        .collect();
    let answered_by = |version: &str| answers.lock().unwrap().iter().filter(|a| a.2 == version).count();
    wait_until("answers from seg:1", Duration::from_secs(60), || answered_by("seg:1") >= 8);

    // The alias moves: once the server says it swapped, every request started after is
    // answered by version 2 (the order of events, not a clock, so a loaded machine cannot fail it).
    d.alias(2);
    let moved = Instant::now();
    wait_until("the swap in the log", Duration::from_secs(60), || {
        said_at(&log, "now serving seg:2 (was seg:1)").is_some()
    });
    let swapped = said_at(&log, "now serving seg:2").unwrap();
    eprintln!("alias moved; swapped {:.2} s later", swapped.duration_since(moved).as_secs_f64());
    // Enough requests started after the swap that the check below is not vacuous.
    let after_swap = || answers.lock().unwrap().iter().filter(|a| a.0 > swapped).count();
    wait_until("answers to requests started after the swap", Duration::from_secs(60), || after_swap() >= 16);
    let late: Vec<Answer> =
        answers.lock().unwrap().iter().filter(|a| a.0 > swapped && a.2 != "seg:2").cloned().collect();
    assert!(late.is_empty(), "requests started after the swap not answered by seg:2: {late:?}");

    // A version whose file is not ONNX is refused; version 2 keeps answering.
    d.register_broken();
    d.alias(3);
    let refused_at = Instant::now();
    let said = |needle: &str| said_at(&log, needle).is_some();
    wait_until("the refusal in the log", Duration::from_secs(30), || said("refused seg:3"));
    let after = answered_by("seg:2");
    wait_until("answers after the refusal", Duration::from_secs(30), || answered_by("seg:2") >= after + 16);
    let metrics = request(port, "GET", "/metrics", &[], b"");
    assert!(
        metrics.body.contains("strix_model_reloads_total{model=\"seg\",outcome=\"refused\"} 1"),
        "{}",
        metrics.body
    );
    assert!(
        metrics.body.contains("strix_model_reloads_total{model=\"seg\",outcome=\"swapped\"} 1"),
        "{}",
        metrics.body
    );

    // Reload retries the refused version at once (and refuses it again), then follows a move.
    let reload = request(port, "POST", "/v1/models/seg/reload", &[], b"");
    assert_eq!(reload.status, 409, "{}", reload.body);
    assert_eq!(
        (reload.json()["outcome"].as_str(), reload.json()["version"].as_str()),
        (Some("refused"), Some("seg:2"))
    );
    d.alias(1);
    let reload = request(port, "POST", "/v1/models/seg/reload", &[], b"");
    assert_eq!(reload.status, 200, "{}", reload.body);
    assert_eq!(reload.json()["version"], "seg:1", "{}", reload.body);
    let listed = request(port, "GET", "/v1/models", &[], b"").json();
    assert_eq!(listed["models"][0]["version"], "seg:1");
    assert_eq!(listed["models"][0]["follows"], true);

    done.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    stop(&mut child);
    let answers = answers.lock().unwrap();
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.1 != 200).collect();
    eprintln!("{} answers, {} not 200; refusal took {:?}", answers.len(), failed.len(), refused_at.elapsed());
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(!answers.iter().any(|a| a.2 == "seg:3"), "the broken version answered");
}

#[test]
fn stream_follows_an_alias_and_refuses_a_broken_version() {
    let fx = fixtures_or_skip!();
    let d = Deployment::new(&fx);
    let mut child = d
        .strix()
        .arg("stream")
        .arg(fx.join("video/vtest_10s_h264.mp4"))
        .args(["--model", "seg@production", "--backend", "tract", "--realtime", "--loop", "--frame-events"])
        .args(["--events", "-", "--follow-interval", "2", "--duration", "240s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let events = collect(child.stdout.take().unwrap());
    let log = collect(child.stderr.take().unwrap());
    let versions = || -> Vec<(Instant, String)> {
        events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(t, l)| serde_json::from_str::<Value>(l).ok().map(|e| (*t, e)))
            .map(|(t, e)| (t, e["model_version"].as_str().unwrap_or("none").to_string()))
            .collect()
    };
    let seen = |v: &str| versions().iter().filter(|(_, x)| x == v).count();
    wait_until("frames answered by seg:1", Duration::from_secs(120), || seen("seg:1") >= 5);
    d.alias(2);
    let moved = Instant::now();
    // Waited for by the events themselves (the swap in the log, then frames), not by a clock.
    wait_until("the swap in the log", Duration::from_secs(60), || {
        said_at(&log, "now answering with seg:2 (was seg:1)").is_some()
    });
    wait_until("frames answered by seg:2", Duration::from_secs(30), || seen("seg:2") >= 5);
    let first_v2 = versions().iter().find(|(_, v)| v == "seg:2").map(|(t, _)| *t).unwrap();
    eprintln!("alias moved; first frame event from seg:2 {:.2} s later", first_v2.duration_since(moved).as_secs_f64());
    d.register_broken();
    d.alias(3);
    let said = |needle: &str| said_at(&log, needle).is_some();
    wait_until("the refusal in the log", Duration::from_secs(30), || said("refused seg:3"));
    let after = seen("seg:2");
    wait_until("frames after the refusal", Duration::from_secs(30), || seen("seg:2") >= after + 5);
    stop(&mut child);
    let all = versions();
    assert!(all.iter().all(|(_, v)| v == "seg:1" || v == "seg:2"), "unexpected versions");
    // Once version 2 answered, version 1 did not answer again (frames taken before finish first).
    let first_v2 = all.iter().position(|(_, v)| v == "seg:2").unwrap();
    let late_v1 = all[first_v2..].iter().filter(|(_, v)| v == "seg:1").count();
    assert!(late_v1 <= 4, "{late_v1} frames from seg:1 after seg:2 answered");
    let log = log.lock().unwrap();
    assert!(!log.iter().any(|(_, l)| l.contains("panicked")), "a panic in the log");
}
