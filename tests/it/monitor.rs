//! `strix monitor`: a baseline from video frames, fresh frames of the same video pass,
//! darkened ones are flagged on brightness and contrast but not on the class mix; the report
//! and violations are written; bad baselines and times are refused by name.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::fixtures_or_skip;
use crate::support::{run, strix};

fn cli(fx: &Path, dir: &Path) -> Command {
    let mut cmd = strix(fx, &dir.join("cache"));
    cmd.env("STRIX_HOME", dir.join("home")).arg("--quiet");
    cmd
}

/// The video's frames at half size: even frames in one folder, odd in another.
fn frames(fx: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let all = dir.join("all");
    std::fs::create_dir_all(&all).unwrap();
    let o = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-i"])
        .arg(fx.join("video/vtest_10s_h264.mp4"))
        .args(["-vf", "scale=384:288", "-q:v", "3"])
        .arg(all.join("f%03d.jpg"))
        .output()
        .expect("ffmpeg");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (even, odd) = (dir.join("even"), dir.join("odd"));
    for d in [&even, &odd] {
        std::fs::create_dir_all(d).unwrap();
    }
    for i in 1..=100 {
        let name = format!("f{i:03}.jpg");
        let to = if i % 2 == 0 { &even } else { &odd };
        std::fs::rename(all.join(&name), to.join(&name)).unwrap();
    }
    (even, odd)
}

/// `from`'s frames at 80% brightness, as PNG (no second JPEG rounding) in `to`.
fn darkened(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let mut img = image::open(&path).unwrap().to_rgb8();
        img.pixels_mut().for_each(|p| p.0 = p.0.map(|v| (f32::from(v) * 0.8).round() as u8));
        img.save(to.join(path.file_name().unwrap()).with_extension("png")).unwrap();
    }
    to.to_path_buf()
}

/// `strix monitor baseline` of efficientnet_lite0 on `data` into `out`, with `extra` flags.
fn make_baseline(fx: &Path, tmp: &Path, data: &Path, out: &Path, extra: &[&str]) {
    let (o, _, err) = run(cli(fx, tmp)
        .args(["monitor", "baseline", "--model", "efficientnet_lite0", "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra));
    assert!(o.status.success(), "{err}");
}

fn checked(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("violations.json")).unwrap()).unwrap()
}

fn flagged(report: &Value) -> Vec<String> {
    report["violations"].as_array().unwrap().iter().map(|v| v["feature"].as_str().unwrap().to_string()).collect()
}

#[test]
fn darkened_frames_are_flagged_on_brightness_not_on_the_class_mix() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (even, odd) = frames(&fx, tmp.path());
    let base = tmp.path().join("baseline");
    let (o, out, err) = run(cli(&fx, tmp.path())
        .args(["monitor", "baseline", "--model", "efficientnet_lite0", "--json", "--data"])
        .arg(&even)
        .arg("--out")
        .arg(&base));
    assert!(o.status.success(), "{err}");
    let made: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(made["items"], 50, "{made}");
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(base.join("statistics.json")).unwrap()).unwrap();
    for f in ["brightness", "contrast", "sharpness", "colourfulness", "width", "confidence"] {
        assert_eq!(stats["numeric"][f]["sample"].as_array().map(Vec::len), Some(50), "{f}");
    }
    assert_eq!(std::fs::metadata(base.join("embeddings.f32")).unwrap().len(), 50 * 1280 * 4);

    // Frames of the same video: nothing to report, exit 0.
    let same = tmp.path().join("same");
    let (o, _, err) = run(cli(&fx, tmp.path())
        .args(["monitor", "run", "--baseline"])
        .arg(&base)
        .arg("--data")
        .arg(&odd)
        .arg("--out")
        .arg(&same));
    assert_eq!(o.status.code(), Some(0), "{err}");
    let report = checked(&same);
    assert!(flagged(&report).is_empty(), "{report}");
    assert_eq!(report["checks"].as_array().unwrap().len(), 11, "{report}");

    // The same frames at 80% brightness: brightness and contrast drift, the classes do not.
    let dark = darkened(&odd, &tmp.path().join("dark"));
    let out = tmp.path().join("out");
    let (o, _, err) = run(cli(&fx, tmp.path())
        .args(["monitor", "run", "--baseline"])
        .arg(&base)
        .arg("--data")
        .arg(&dark)
        .arg("--out")
        .arg(&out));
    assert_eq!(o.status.code(), Some(3), "{err}");
    let report = checked(&out);
    let features = flagged(&report);
    assert!(features.contains(&"brightness".to_string()) && features.contains(&"contrast".to_string()), "{report}");
    assert!(!features.contains(&"predicted_class".to_string()), "{report}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("violation"), "{html}");

    // Refused with the reason: a baseline that is not one, edited constraints that do not
    // parse, times that are neither a time nor an age, nothing new since.
    let run_on = |baseline: &Path, extra: &[&str]| {
        run(cli(&fx, tmp.path())
            .args(["monitor", "run", "--baseline"])
            .arg(baseline)
            .arg("--data")
            .arg(&odd)
            .args(extra))
    };
    let (o, _, err) = run_on(tmp.path(), &[]);
    assert!(o.status.code() == Some(1) && err.contains("statistics.json"), "{err}");
    std::fs::write(base.join("constraints.json"), r#"{"version": 1, "alpha": 0.05, "typo": 1}"#).unwrap();
    let (o, _, err) = run_on(&base, &[]);
    assert!(o.status.code() == Some(1) && err.contains("constraints.json") && err.contains("typo"), "{err}");
    std::fs::remove_file(base.join("constraints.json")).unwrap();
    make_baseline(&fx, tmp.path(), &even, &base, &["--embedding", "none"]);
    let (o, _, err) = run_on(&base, &["--since", "yesterday-ish"]);
    assert!(o.status.code() == Some(1) && err.contains("--since"), "{err}");
    let (o, _, err) = run_on(&base, &["--since", "2999-01-01T00:00:00Z"]);
    assert!(o.status.code() == Some(1) && err.contains("no images to check since"), "{err}");
}

/// `strix serve --monitor`: frames of the baseline's video raise nothing; once the traffic
/// switches to darkened frames, the next test flags brightness, seen in the monitor route,
/// `/metrics`, the JSON lines and an MQTT message on the machine's broker.
#[test]
fn serve_monitor_flags_a_switch_to_darkened_frames() {
    use crate::serve::request;
    use crate::support::{KillOnDrop, free_port, wait_for_port};
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (even, odd) = frames(&fx, tmp.path());
    let base = tmp.path().join("baseline");
    make_baseline(&fx, tmp.path(), &even, &base, &[]);
    let topic = format!("strix/test/monitor/{}", std::process::id());
    let sub = crate::stream::Subscriber::start(&topic);
    let events = tmp.path().join("drift.jsonl");
    let port = free_port();
    let _serve = KillOnDrop(
        cli(&fx, tmp.path())
            .args(["serve", "--model", "efficientnet_lite0", "--port", &port.to_string(), "--monitor", "--baseline"])
            .arg(&base)
            .args(["--monitor-window", "50", "--monitor-every", "50", "--monitor-events"])
            .arg(&events)
            .args(["--monitor-mqtt", &format!("mqtt://127.0.0.1:1883/{topic}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port);
    let status = || request(port, "GET", "/v1/models/efficientnet_lite0/monitor", &[], b"").json();
    let send_and_wait = |dir: &Path, tests: u64| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let r = request(
                port,
                "POST",
                "/v1/models/efficientnet_lite0/predict",
                &[("Content-Type", "image/png")],
                &std::fs::read(f).unwrap(),
            );
            assert_eq!(r.status, 200, "{}", r.body);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let s = status();
            if s["tests"].as_u64() == Some(tests) {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "the monitor never ran test {tests}: {s}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let s = send_and_wait(&odd, 1);
    assert_eq!(
        (s["answers"].as_u64(), s["violations_total"].as_u64(), s["dropped"].as_u64()),
        (Some(50), Some(0), Some(0)),
        "{s}"
    );

    let dark = darkened(&odd, &tmp.path().join("dark"));
    let s = send_and_wait(&dark, 2);
    assert!(s["violations_by_feature"]["brightness"].as_u64() == Some(1), "{s}");
    let metrics = request(port, "GET", "/metrics", &[], b"").body;
    assert!(
        metrics.contains("strix_monitor_drift{model=\"efficientnet_lite0\",feature=\"brightness\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("strix_monitor_tests{model=\"efficientnet_lite0\"} 2"), "{metrics}");
    let published = sub.wait_for(1);
    assert!(published.iter().any(|e| e["type"] == "drift" && e["feature"] == "brightness"), "{published:?}");
    let lines = std::fs::read_to_string(&events).unwrap();
    assert!(lines.lines().any(|l| l.contains("\"feature\":\"brightness\"")), "{lines}");
    let r = request(port, "GET", "/v1/models/nothing/monitor", &[], b"");
    assert_eq!(r.status, 404, "{}", r.body);
    let rebound = crate::gate::call(port, "GET", "/v1/models/efficientnet_lite0/monitor", "evil.example", "", "");
    assert_eq!(rebound.status, 421, "{}", rebound.body);
}

/// `strix stream --monitor`: a folder whose first 50 frames are the video's and next 50 the
/// same darkened: the first test (50 answers) raises nothing, the second flags brightness.
#[test]
fn stream_monitor_flags_the_darkened_half_of_a_run() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (even, odd) = frames(&fx, tmp.path());
    let dark = darkened(&odd, &tmp.path().join("dark"));
    let base = tmp.path().join("baseline");
    make_baseline(&fx, tmp.path(), &even, &base, &["--embedding", "none"]);
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    for (prefix, dir) in [("a", &odd), ("b", &dark)] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = format!("{prefix}_{}", path.file_name().unwrap().to_string_lossy());
            std::fs::copy(&path, mixed.join(name)).unwrap();
        }
    }
    let events = tmp.path().join("drift.jsonl");
    let (o, _, err) = run(strix(&fx, &tmp.path().join("cache"))
        .env("STRIX_HOME", tmp.path().join("home"))
        .arg("stream")
        .arg(&mixed)
        .args(["--task", "classify", "--model", "efficientnet_lite0", "--policy", "all", "--monitor", "--baseline"])
        .arg(&base)
        .args(["--monitor-window", "50", "--monitor-every", "50", "--monitor-events"])
        .arg(&events));
    assert!(o.status.success(), "{err}");
    assert!(err.contains("monitor: 100 answers, 2 tests"), "{err}");
    let drift: Vec<Value> =
        std::fs::read_to_string(&events).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(drift.iter().any(|e| e["feature"] == "brightness"), "{drift:?}");
    assert!(drift.iter().all(|e| e["answers"] == 100), "a violation before the switch: {drift:?}");
}
