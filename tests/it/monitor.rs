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

/// The stream page's drift section: a baseline of darkened half-size frames, then the video
/// itself live; once the monitor has tested a window, the page (rendered by headless Chromium)
/// lists brightness as drift, with the window and the baseline above it.
#[test]
fn the_stream_page_shows_the_monitors_verdicts() {
    use crate::stream::{chromium, http_get, start_live};
    let fx = fixtures_or_skip!();
    let Some(chromium) = chromium() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (even, _) = frames(&fx, tmp.path());
    let dark = darkened(&even, &tmp.path().join("dark"));
    let base = tmp.path().join("baseline");
    make_baseline(&fx, tmp.path(), &dark, &base, &["--embedding", "none"]);
    let base_arg = base.display().to_string();
    let extra = ["--loop", "--realtime", "--duration", "90s", "--task", "classify", "--model", "efficientnet_lite0"];
    let monitor = ["--monitor", "--baseline", &base_arg, "--monitor-window", "30", "--monitor-every", "30"];
    let (mut child, addr, stderr) = start_live(&fx, &tmp.path().join("cache"), &[&extra[..], &monitor[..]].concat());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, body) = http_get(&addr, "/stats");
        let stats: Value = serde_json::from_slice(&body).unwrap();
        if stats["monitor"]["tests"].as_u64().unwrap_or(0) >= 1 {
            assert!(stats["monitor"]["violations_by_feature"]["brightness"].as_u64() >= Some(1), "{stats}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no test in a minute: {stats}\n{}", stderr.lock().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let profile = tmp.path().join("chromium-profile");
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=3000", "--timeout=8000", "--dump-dom"])
        .arg(format!("http://{addr}/"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let drift = &dom[dom.find("id=\"drift\"").unwrap_or_else(|| panic!("no drift section: {dom}"))..];
    let drift = &drift[..drift.find("</section>").unwrap()];
    assert!(!drift.starts_with("id=\"drift\" hidden"), "the drift section is hidden: {drift}");
    assert!(drift.contains("answers watched") && drift.contains(&base_arg), "{drift}");
    let row = drift.split("<tr>").find(|r| r.contains("<td>brightness</td>")).unwrap_or_else(|| panic!("{drift}"));
    assert!(row.contains("DRIFT"), "{row}");
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(child.wait().unwrap().success(), "{}", stderr.lock().unwrap());
}

/// efficientnet_lite0 on tract, in this process.
fn efficientnet(fx: &Path, tmp: &Path) -> strix_pipeline::Pipeline {
    let resolver = strix_zoo::Resolver {
        cache_dir: tmp.join("cache"),
        search_path: vec![fx.join("models")],
        hub: None,
        offline: true,
    };
    let located = strix_zoo::locate("efficientnet_lite0", &crate::support::empty_home()).unwrap();
    let model = resolver.resolve(&located, &strix_core::NoProgress).unwrap();
    let runtime = strix_runtime::open(strix_runtime::Backend::Tract, &Default::default()).unwrap();
    strix_pipeline::Pipeline::load(model, runtime.as_ref()).unwrap()
}

/// Every image's observation: its properties and the model's answer.
fn observations(pipeline: &strix_pipeline::Pipeline, images: &[image::RgbImage]) -> Vec<strix_monitor::Observation> {
    images
        .iter()
        .map(|img| {
            let p = pipeline.predict_images(std::slice::from_ref(img), &Default::default()).unwrap().remove(0);
            strix_monitor::Observation::of_image(img).with_answer(&p.answer, p.width, p.height)
        })
        .collect()
}

/// `n` crops of the fixture photos, each a random photo, side and place (seeded).
fn photo_crops(fx: &Path, names: &[&str], n: usize, seed: u64) -> Vec<image::RgbImage> {
    let photos: Vec<image::RgbImage> =
        names.iter().map(|p| image::open(fx.join("images").join(p)).unwrap().to_rgb8()).collect();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move |below: u32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % u64::from(below.max(1))) as u32
    };
    (0..n)
        .map(|_| {
            let photo = &photos[next(photos.len() as u32) as usize];
            let (w, h) = photo.dimensions();
            let side = w.min(h) / 2 + next(w.min(h) / 2);
            image::imageops::crop_imm(photo, next(w - side + 1), next(h - side + 1), side, side).to_image()
        })
        .collect()
}

/// How many of `windows` raise a violation against `baseline`, with the features that did.
fn raised(baseline: &strix_monitor::Baseline, windows: &[Vec<strix_monitor::Observation>]) -> (usize, Vec<String>) {
    let mut features = Vec::new();
    let mut count = 0;
    for (i, w) in windows.iter().enumerate() {
        let drifted: Vec<String> = strix_monitor::check_window(baseline, w, i as u64)
            .into_iter()
            .filter(|c| c.drift)
            .map(|c| c.feature)
            .collect();
        count += usize::from(!drifted.is_empty());
        features.extend(drifted);
    }
    (count, features)
}

fn baseline_of(observations: &[strix_monitor::Observation]) -> strix_monitor::Baseline {
    let mut builder = strix_monitor::BaselineBuilder::new(2000, 1);
    for o in observations {
        builder.add(o).unwrap();
    }
    let (statistics, embeddings) = builder.finish("efficientnet_lite0", "classify", None);
    strix_monitor::Baseline { statistics, constraints: Default::default(), embeddings }
}

/// Acceptance, on real images: 20 windows drawn from the same distribution as the baseline
/// raise a violation at most once (7%), for crops of the fixture photos (independent windows)
/// and for the video's frames (windows of the odd frames against the even ones); a window
/// whose answers are all one class flags the class mix.
#[test]
fn same_distribution_windows_rarely_raise_and_a_one_class_window_does() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    // Photo crops: a baseline of 100, then 20 windows of 20 fresh crops each (windows drawn
    // from one shared pool would share its luck, and raise together).
    let model = efficientnet(&fx, tmp.path());
    let names =
        ["apple.jpg", "baboon.jpg", "butterfly.jpg", "chelsea.png", "coffee.png", "orange.jpg", "squirrel_cls.jpg"];
    let baseline = baseline_of(&observations(&model, &photo_crops(&fx, &names, 100, 7)));
    let windows: Vec<Vec<_>> = (0..20).map(|w| observations(&model, &photo_crops(&fx, &names, 20, 100 + w))).collect();
    let (photo_alarms, photo_features) = raised(&baseline, &windows);
    // A window of crops of the orange alone: the class mix moves.
    let oranges = observations(&model, &photo_crops(&fx, &["orange.jpg"], 30, 9));
    let checks = strix_monitor::check_window(&baseline, &oranges, 1);
    let class = checks.iter().find(|c| c.feature == "predicted_class").unwrap();
    assert!(class.drift, "a window of one class passed the class test: {class:?}");

    // The video's frames: a baseline of the even ones, 20 windows of 25 of the odd ones.
    let (even, odd) = frames(&fx, tmp.path());
    let load = |dir: &Path| -> Vec<image::RgbImage> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files.iter().map(|f| image::open(f).unwrap().to_rgb8()).collect()
    };
    let baseline = baseline_of(&observations(&model, &load(&even)));
    let odd = observations(&model, &load(&odd));
    let windows: Vec<Vec<_>> =
        (0..20).map(|w| (0..25).map(|i| odd[(w * 13 + i * 7) % odd.len()].clone()).collect()).collect();
    let (frame_alarms, frame_features) = raised(&baseline, &windows);
    eprintln!(
        "same-distribution windows raising a violation: photo crops {photo_alarms} of 20 {photo_features:?}, \
         video frames {frame_alarms} of 20 {frame_features:?}; a one-class window: class mix p {:?}",
        class.p_value
    );
    assert!(photo_alarms <= 1, "{photo_alarms} of 20 photo windows raised: {photo_features:?}");
    assert!(frame_alarms <= 1, "{frame_alarms} of 20 frame windows raised: {frame_features:?}");
}
