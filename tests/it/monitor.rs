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
    let dark = tmp.path().join("dark");
    std::fs::create_dir_all(&dark).unwrap();
    for entry in std::fs::read_dir(&odd).unwrap() {
        let path = entry.unwrap().path();
        let mut img = image::open(&path).unwrap().to_rgb8();
        img.pixels_mut().for_each(|p| p.0 = p.0.map(|v| (f32::from(v) * 0.8).round() as u8));
        img.save(dark.join(path.file_name().unwrap()).with_extension("png")).unwrap();
    }
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
    let (o, _, err) = run(cli(&fx, tmp.path())
        .args(["monitor", "baseline", "--model", "efficientnet_lite0", "--embedding", "none", "--data"])
        .arg(&even)
        .arg("--out")
        .arg(&base));
    assert!(o.status.success(), "{err}");
    let (o, _, err) = run_on(&base, &["--since", "yesterday-ish"]);
    assert!(o.status.code() == Some(1) && err.contains("--since"), "{err}");
    let (o, _, err) = run_on(&base, &["--since", "2999-01-01T00:00:00Z"]);
    assert!(o.status.code() == Some(1) && err.contains("no images to check since"), "{err}");
}
