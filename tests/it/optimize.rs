//! `strix models optimize --int8`: real models quantised on fixture photos and video frames,
//! gated against the float model, registered with lineage, run on both engines; and the
//! refusal of a calibration set that cannot work.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::registry::ok_json;
use crate::support::{backends, detections, run, share_iou, strix};

/// Frames `offset`, `offset + every`, ... of the fixture video, as JPEGs in `out`.
fn frames(fx: &Path, every: u32, offset: u32, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(fx.join("video/vtest.avi"))
        .args(["-vf", &format!("select=eq(mod(n\\,{every})\\,{offset})"), "-vsync", "vfr"])
        .arg(out.join("frame%03d.jpg"))
        .status()
        .expect("ffmpeg (scripts/setup installs it)");
    assert!(status.success());
}

/// Calibration: the photos at even positions and every 40th frame; held out: the photos at odd
/// positions and the frames halfway between. No held-out image is a calibration image.
fn image_sets(fx: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let mut photos: Vec<PathBuf> = std::fs::read_dir(fx.join("images")).unwrap().map(|e| e.unwrap().path()).collect();
    photos.sort();
    let (cal, held) = (dir.join("calibration"), dir.join("held-out"));
    for (set, parity, offset) in [(&cal, 0, 0), (&held, 1, 20)] {
        frames(fx, 40, offset, set);
        for p in photos.iter().skip(parity).step_by(2) {
            std::fs::copy(p, set.join(p.file_name().unwrap())).unwrap();
        }
    }
    (cal, held)
}

fn optimize(fx: &Path, tmp: &Path, home: &Path, model: &str, args: &[&str]) -> Command {
    let mut cmd = strix(fx, tmp);
    cmd.env("STRIX_HOME", home).args(["models", "optimize", model, "--int8"]).args(args);
    cmd
}

/// `model` quantised on `sets` (calibration, held out) as `name`, on the fastest engine here;
/// the new version's record.
fn optimized(fx: &Path, tmp: &Path, home: &Path, model: &str, name: &str, sets: (&Path, &Path)) -> Value {
    let backend = backends().last().unwrap().as_str();
    ok_json(
        optimize(fx, tmp, home, model, &["--name", name, "--json", "--backend", backend])
            .arg("--calibration")
            .arg(sets.0)
            .arg("--holdout")
            .arg(sets.1),
    )
}

/// The ONNX operators of a model file, by `strix models inspect --json`.
fn operators(fx: &Path, tmp: &Path, onnx: &Path) -> Value {
    let info = ok_json(strix(fx, tmp).args(["models", "inspect", "--json"]).arg(onnx));
    info["ops"].clone()
}

#[test]
fn efficientnet_int8_passes_its_gate_registers_with_lineage_and_runs_on_every_engine() {
    let fx = crate::fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let (cal, held) = image_sets(&fx, tmp.path());
    let record = optimized(&fx, tmp.path(), &home, "efficientnet_lite0", "trash-int8", (&cal, &held));
    assert_eq!(record["version"], 1, "{record}");
    let lineage = &record["lineage"];
    assert_eq!(lineage["parent"]["model"], "efficientnet_lite0", "{lineage}");
    let float = fx.join("models/classify/efficientnet_lite0.onnx");
    assert_eq!(lineage["parent"]["sha256"], strix_core::digest::sha256_file(&float).unwrap().0);
    let count = |dir: &Path| std::fs::read_dir(dir).unwrap().count() as u64;
    assert_eq!(lineage["dataset"]["calibration"]["images"].as_u64(), Some(count(&cal)), "{lineage}");
    assert_eq!(lineage["dataset"]["held_out"]["images"].as_u64(), Some(count(&held)), "{lineage}");
    let gate = &lineage["gate"];
    assert_eq!((gate["task"].as_str(), gate["held_out"].as_u64()), (Some("classify"), Some(count(&held))), "{gate}");
    assert!(gate["agreement"].as_f64().unwrap() >= 0.97 && gate["passed"] == true, "{gate}");
    for speed in ["float_images_per_s", "int8_images_per_s"] {
        assert!(gate[speed].as_f64().is_some_and(|v| v.is_finite() && v > 0.0), "{speed}: {gate}");
    }
    assert_eq!(lineage["config"]["quantization"]["method"]["method"], "percentile", "{lineage}");
    let files: Vec<&str> =
        record["artifacts"].as_array().unwrap().iter().map(|a| a["file"].as_str().unwrap()).collect();
    assert!(files.contains(&"model.int8.onnx") && files.contains(&"quantization.json"), "{files:?}");

    // The registered file is a QDQ graph with int8 weights: about a quarter of the float size.
    let out = tmp.path().join("download");
    let (o, _, err) = run(strix(&fx, tmp.path())
        .env("STRIX_HOME", &home)
        .args(["models", "download", "trash-int8:1", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{err}");
    let int8 = out.join("model.int8.onnx");
    let ops = operators(&fx, tmp.path(), &int8);
    assert!(ops.to_string().contains("QuantizeLinear") && ops.to_string().contains("DequantizeLinear"), "{ops}");
    let (small, big) = (std::fs::metadata(&int8).unwrap().len(), std::fs::metadata(&float).unwrap().len());
    assert!(small * 3 < big, "int8 {small} bytes vs float {big}");

    // It runs wherever a model runs, by its registry name, and answers as the float model.
    for backend in backends() {
        let answer = ok_json(
            strix(&fx, tmp.path())
                .env("STRIX_HOME", &home)
                .args(["predict", "--model", "trash-int8:1", "--json", "--backend", backend.as_str()])
                .arg(fx.join("images/coffee.png")),
        );
        assert_eq!(answer["Labels"][0]["Name"], "espresso", "{backend}: {answer}");
    }

    // The gate's agreement is what the two models answer on the held-out images where the float
    // model's top two are not a near tie, counted here.
    let backend = backends().last().unwrap().as_str();
    let top1 = |model: &str| -> Vec<(String, String, f64)> {
        let (o, stdout, err) = run(strix(&fx, tmp.path())
            .env("STRIX_HOME", &home)
            // One image at a time on every thread, as the gate runs them (batching and
            // thread counts move the last digits, enough to flip a near tie).
            .args(["predict", "--model", model, "--json", "--backend", backend, "--batch", "1", "--workers", "1"])
            .arg(&held));
        assert!(o.status.success(), "{err}");
        let mut answers: Vec<(String, String, f64)> = stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|a| {
                let confidence = |i: usize| a["Labels"][i]["Confidence"].as_f64().unwrap() / 100.0;
                let name = a["Labels"][0]["Name"].as_str().unwrap().to_string();
                (a["Image"].as_str().unwrap().to_string(), name, confidence(0) - confidence(1))
            })
            .collect();
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        answers
    };
    let (float_top1, int8_top1) = (top1("efficientnet_lite0"), top1("trash-int8:1"));
    assert_eq!((float_top1.len() as u64, int8_top1.len() as u64), (count(&held), count(&held)));
    let decisive: Vec<_> =
        float_top1.iter().zip(&int8_top1).filter(|(f, _)| f.2 >= f64::from(strix_optimize::gate::NEAR_TIE)).collect();
    let agreeing = decisive.iter().filter(|(f, q)| f.1 == q.1).count();
    let counted = agreeing as f64 / decisive.len() as f64;
    let reported = gate["agreement"].as_f64().unwrap();
    assert!((counted - reported).abs() < 1e-9, "the gate says {reported}, predict agrees on {counted}: {gate}");
    assert_eq!(gate["near_ties"].as_u64(), Some((float_top1.len() - decisive.len()) as u64), "{gate}");
    // The whole distribution moved a little: not at all would mean the float model was compared
    // with itself, much would show in the agreement.
    let kl = gate["mean_kl"].as_f64().unwrap_or(-1.0);
    assert!(kl > 1e-6 && kl < 0.1, "mean KL divergence {kl}: {gate}");
    assert_eq!(lineage["metrics"]["mean_kl"].as_f64(), Some(kl), "{lineage}");
}

#[test]
fn a_calibration_set_that_cannot_work_is_refused_with_the_figures_and_nothing_registered() {
    let fx = crate::fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let (_, held) = image_sets(&fx, tmp.path());
    let blank = tmp.path().join("blank");
    std::fs::create_dir(&blank).unwrap();
    image::RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128])).save(blank.join("grey.png")).unwrap();
    let (o, _, err) = run(optimize(&fx, tmp.path(), &home, "efficientnet_lite0", &["--name", "blank-int8"])
        .arg("--calibration")
        .arg(&blank)
        .arg("--holdout")
        .arg(&held));
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("refused and nothing was registered") && err.contains("top-1 agreement"), "{err}");
    assert!(err.contains("differs: ") && err.contains("(at least 97.0% needed)"), "{err}");
    let (o, _, _) = run(strix(&fx, tmp.path()).env("STRIX_HOME", &home).args(["models", "show", "blank-int8"]));
    assert!(!o.status.success(), "a refused model was registered");

    // One image cannot be split into calibration and held-out images: said before any work.
    let (o, _, err) =
        run(optimize(&fx, tmp.path(), &home, "efficientnet_lite0", &["--name", "x"]).arg("--calibration").arg(&blank));
    assert!(!o.status.success() && err.contains("too few to hold out") && err.contains("--holdout"), "{err}");
}

#[test]
fn nanodet_int8_finds_the_float_models_boxes_and_detects_on_every_engine() {
    let fx = crate::fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let (cal, held) = image_sets(&fx, tmp.path());
    let record = optimized(&fx, tmp.path(), &home, "nanodet_m_416", "street-int8", (&cal, &held));
    let gate = &record["lineage"]["gate"];
    assert_eq!(gate["task"], "detect", "{gate}");
    assert!(gate["measure"].as_str().unwrap().starts_with("box agreement"), "{gate}");
    assert!(gate["agreement"].as_f64().unwrap() >= 0.97, "{gate}");
    // Every confident box of the float model is found by the int8 one, same class, same place.
    for backend in backends() {
        let answer = |model: &str| {
            let answer = ok_json(
                strix(&fx, tmp.path())
                    .env("STRIX_HOME", &home)
                    .args(["predict", "--model", model, "--json", "--backend", backend.as_str()])
                    .arg(fx.join("images/messi5.jpg")),
            );
            detections(&answer)
        };
        let (float, int8) = (answer("nanodet_m_416"), answer("street-int8"));
        let confident: Vec<_> = float.iter().filter(|d| d.1 >= 50.0).collect();
        assert!(confident.iter().any(|d| d.0 == "person"), "{backend}: {float:?}");
        for (class, confidence, place) in confident {
            let found = int8.iter().any(|d| &d.0 == class && share_iou(d.2, *place) >= 0.8);
            assert!(found, "{backend}: float {class} {confidence:.0}% at {place:?} not found by int8: {int8:?}");
        }
    }
}

/// `n` small PNGs `{prefix}{i}.png` in `dir`, each of its own colour (`prefix` one letter).
fn tiny_images(dir: &Path, prefix: &str, n: u8) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        image::RgbImage::from_pixel(8, 8, image::Rgb([i, prefix.as_bytes()[0], 7]))
            .save(dir.join(format!("{prefix}{i}.png")))
            .unwrap();
    }
    dir.to_path_buf()
}

/// Issue 31 item 12: the gate passed on one held-out image and took `--holdout` equal to
/// `--calibration`. Both are refused from the image lists alone: the model named does not
/// exist, so an answer about images shows the refusal comes before any model work.
#[test]
fn too_few_held_out_images_or_calibration_images_among_them_are_refused_before_any_work() {
    let fx = crate::fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let cal = tiny_images(&tmp.path().join("cal"), "c", 30);
    let held = tiny_images(&tmp.path().join("held"), "h", 25);
    let few = tiny_images(&tmp.path().join("few"), "f", 5);
    let error = |calibration: &Path, holdout: Option<&Path>| -> String {
        let mut cmd = optimize(&fx, tmp.path(), &home, "no-such-model-issue31", &["--name", "x"]);
        cmd.arg("--calibration").arg(calibration);
        if let Some(h) = holdout {
            cmd.arg("--holdout").arg(h);
        }
        let (o, _, err) = run(&mut cmd);
        assert!(!o.status.success(), "accepted: {err}");
        err
    };
    let refused = |calibration: &Path, holdout: Option<&Path>| -> String {
        let err = error(calibration, holdout);
        assert!(!err.contains("no-such-model-issue31"), "the model was looked up before the images: {err}");
        err
    };
    // Good sets get as far as the model.
    let err = error(&cal, Some(&held));
    assert!(err.contains("no-such-model-issue31"), "{err}");
    let err = refused(&cal, Some(&cal.join(".")));
    assert!(err.contains("is the --calibration folder"), "{err}");
    let err = refused(&cal, Some(&few));
    assert!(err.contains("has 5 images") && err.contains("at least 20 held-out images"), "{err}");
    let err = refused(&cal, None);
    assert!(err.contains("too few to hold out") && err.contains("at least 80"), "{err}");
    // A calibration image copied into the held-out folder under another name.
    std::fs::copy(cal.join("c7.png"), held.join("h24.png")).unwrap();
    let err = refused(&cal, Some(&held));
    assert!(err.contains("the same bytes") && err.contains("h24.png") && err.contains("c7.png"), "{err}");
    // The held-out folder inside the calibration one: its files are calibration files too.
    let inner = tiny_images(&cal.join("inner"), "i", 20);
    let err = refused(&cal, Some(&inner));
    assert!(err.contains("the same file") && err.contains("i0.png"), "{err}");
}
