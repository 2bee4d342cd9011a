//! `strix stream` and `strix serve` following a registry alias refuse what must not replace
//! their model: a version of another task, and a version whose files load but whose test
//! inference fails. Frames and requests go on being answered by the version they had. (A
//! version that does not load is in `follow.rs`.)

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::fixtures_or_skip;
use crate::follow::stop;
use crate::registry::{Registry, model_files, ok_json};
use crate::support::{KillOnDrop, collect, run, said_at, wait_until};

/// A local registry holding `seg` version 1 (the selfie segmenter) with `production` on it.
struct Seg {
    fx: PathBuf,
    tmp: tempfile::TempDir,
    reg: Registry,
}

impl Seg {
    fn new(fx: &Path) -> Seg {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::local(tmp.path());
        let s = Seg { fx: fx.to_path_buf(), reg, tmp };
        let onnx =
            model_files(fx, &s.cache(), &s.tmp.path().join("user"), "selfie_256", "segment/selfie_256.onnx", "seg");
        let v1 = ok_json(
            s.strix()
                .args(["models", "register"])
                .arg(&onnx)
                .args(["--name", "seg", "--json"])
                .args(["--alias", "production"]),
        );
        assert_eq!(v1["version"], 1, "{v1}");
        s
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

    /// The next version: the EfficientNet classifier, registered as `seg` through the CLI (its
    /// checks pass: it is a good classifier, only not a segmenter).
    fn register_classifier(&self) -> u64 {
        let dir = self.tmp.path().join("classifier");
        let onnx =
            model_files(&self.fx, &self.cache(), &dir, "efficientnet_lite0", "classify/efficientnet_lite0.onnx", "seg");
        let record = ok_json(self.strix().args(["models", "register"]).arg(&onnx).args(["--name", "seg", "--json"]));
        assert_eq!(record["task"], "classify", "{record}");
        record["version"].as_u64().unwrap()
    }

    /// The next version: a segmenter whose spec fits the classifier's graph (its input, its
    /// one output), so it loads, but the mask decoder cannot read 1000 logits: the first
    /// inference fails. Registered through the library, as `models register` test-loads.
    fn register_failing_inference(&self) -> u64 {
        let dir = self.tmp.path().join("misfit");
        let (out, _, stderr) = run(self.strix().args(["models", "download", "seg:1", "--out"]).arg(&dir));
        assert!(out.status.success(), "{stderr}");
        let onnx = std::fs::read(self.fx.join("models/classify/efficientnet_lite0.onnx")).unwrap();
        std::fs::write(dir.join("seg.onnx"), &onnx).unwrap();
        let mut spec: toml::Table = std::fs::read_to_string(dir.join("model.toml")).unwrap().parse().unwrap();
        let weights = spec["weights"].as_table_mut().unwrap();
        weights.insert("sha256".into(), strix_core::digest::sha256_hex(&onnx).into());
        weights.insert("size".into(), (onnx.len() as i64).into());
        let input = spec["input"].as_table_mut().unwrap();
        input.insert("name".into(), "input".into());
        input.insert("layout".into(), "nchw".into());
        input.insert("width".into(), 224.into());
        input.insert("height".into(), 224.into());
        spec["decoder"].as_table_mut().unwrap().insert("layout".into(), "nchw".into());
        std::fs::write(dir.join("model.toml"), toml::to_string(&spec).unwrap()).unwrap();
        self.register_through_library(&dir, "segment")
    }

    fn register_through_library(&self, dir: &Path, task: &str) -> u64 {
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
                task: task.into(),
                files: ["seg.onnx", "model.toml"]
                    .iter()
                    .map(|f| strix_registry::NewFile { file: f.to_string(), path: dir.join(f) })
                    .collect(),
                lineage: Default::default(),
                created_by: "test".into(),
                strix_version: "test".into(),
            };
            let record = registry.register(new, &strix_core::NoProgress).await.unwrap();
            registry.close().await;
            record.version
        })
    }
}

#[test]
fn stream_following_an_alias_refuses_another_task_and_a_failing_test_inference() {
    let fx = fixtures_or_skip!();
    let seg = Seg::new(&fx);
    let classifier = seg.register_classifier();
    let misfit = seg.register_failing_inference();
    let mut child = KillOnDrop(
        seg.strix()
            .arg("stream")
            .arg(fx.join("video/vtest_10s_h264.mp4"))
            .args(["--model", "seg@production", "--backend", "tract", "--realtime", "--loop", "--frame-events"])
            .args(["--events", "-", "--follow-interval", "1", "--duration", "600s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let events = collect(child.0.stdout.take().unwrap());
    let log = collect(child.0.stderr.take().unwrap());
    let versions = || -> Vec<String> {
        let events = events.lock().unwrap();
        let frames =
            events.iter().filter_map(|(_, l)| serde_json::from_str::<Value>(l).ok()).filter(|e| e["type"] == "frame");
        frames.map(|e| e["model_version"].as_str().unwrap_or("none").to_string()).collect()
    };
    let said = |needle: &str| said_at(&log, needle).is_some();
    wait_until("frames answered by seg:1", Duration::from_secs(120), || versions().len() >= 5);

    for (version, why) in [
        (classifier, "it is a classify model; the one it would replace does segment"),
        (misfit, "loaded but a test inference failed"),
    ] {
        seg.alias(version);
        let refused = format!("refused seg:{version}");
        wait_until(&refused, Duration::from_secs(120), || said(&refused));
        let line = log.lock().unwrap().iter().find(|(_, l)| l.contains(&refused)).map(|(_, l)| l.clone()).unwrap();
        assert!(line.contains(why), "refused for another reason than {why:?}: {line}");
        // Frames go on, answered by the version the stream had.
        let before = versions().len();
        wait_until("frames after the refusal", Duration::from_secs(120), || versions().len() >= before + 5);
    }
    stop(&mut child.0);
    let all = versions();
    let others: Vec<&String> = all.iter().filter(|v| *v != "seg:1").collect();
    assert!(others.is_empty(), "{} of {} frames answered by another version: {others:?}", others.len(), all.len());
    let log = log.lock().unwrap();
    assert!(!log.iter().any(|(_, l)| l.contains("panicked")), "a panic in the log");
}

/// `strix serve` following the same alias refuses the same two versions; every request is
/// answered, by seg:1, throughout.
#[test]
fn serve_following_an_alias_refuses_another_task_and_a_failing_test_inference() {
    let fx = fixtures_or_skip!();
    let seg = Seg::new(&fx);
    let classifier = seg.register_classifier();
    let misfit = seg.register_failing_inference();
    let port = crate::support::free_port();
    let mut child = KillOnDrop(
        seg.strix()
            .args(["serve", "--model", "seg=seg@production", "--backend", "tract", "--port", &port.to_string()])
            .args(["--follow-interval", "1", "-v"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = collect(child.0.stderr.take().unwrap());
    crate::support::wait_for_port(port);
    let image = std::fs::read(fx.join("images/messi5.jpg")).unwrap();
    let answers: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let ask = || {
        let reply =
            crate::serve::request(port, "POST", "/v1/models/seg/predict", &[("Content-Type", "image/jpeg")], &image);
        let version = reply.header("x-strix-model-version").unwrap_or_default();
        answers.lock().unwrap().push((reply.status, version));
    };
    let said = |needle: &str| said_at(&log, needle).is_some();
    ask();
    for (version, why) in [
        (classifier, "it is a classify model; the one it would replace does segment"),
        (misfit, "loaded but a test inference failed"),
    ] {
        seg.alias(version);
        let refused = format!("refused seg:{version}");
        wait_until(&refused, Duration::from_secs(120), || {
            ask();
            said(&refused)
        });
        let line = log.lock().unwrap().iter().find(|(_, l)| l.contains(&refused)).map(|(_, l)| l.clone()).unwrap();
        assert!(line.contains(why), "refused for another reason than {why:?}: {line}");
        for _ in 0..3 {
            ask();
        }
    }
    stop(&mut child.0);
    let answers = answers.lock().unwrap();
    let wrong: Vec<&(u16, String)> = answers.iter().filter(|a| *a != &(200, "seg:1".to_string())).collect();
    assert!(wrong.is_empty(), "{} of {} answers not 200 from seg:1: {wrong:?}", wrong.len(), answers.len());
    assert!(!log.lock().unwrap().iter().any(|(_, l)| l.contains("panicked")), "a panic in the log");
}
