//! ONNX export: every architecture passes the gate on real images; a corrupted export does not.

use std::path::{Path, PathBuf};

use prost::Message;
use serde_json::Value;
use strix_export::{ExportError, ExportOptions};
use strix_train::Device;
use strix_vision::{DecodeLimits, Preprocessor, decode_file};
use tract_onnx::pb::ModelProto;

use crate::fixtures_or_skip;
use crate::support::{run, strix};
use crate::train::{fashion, train_cmd};

/// A short real training run (so the run folder is what users get), exported at its end.
fn trained(fx: &Path, tmp: &Path, name: &str, args: &[&str]) -> PathBuf {
    let run_dir = tmp.join(name);
    let (out, stdout, stderr) =
        run(train_cmd(fx, tmp, &run_dir).arg("--data").arg(fashion(fx)).args(["--test", "false"]).args(args));
    assert!(out.status.success(), "{name}: {stderr}");
    assert!(stdout.contains("gate passed"), "{name}: {stdout}");
    run_dir
}

fn gate_json(run_dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("export/gate.json")).unwrap()).unwrap()
}

/// Acceptance: the gate passes for each architecture on real validation images, on tract and
/// ONNX Runtime, and the exported spec serves the model through `strix predict`.
#[test]
fn every_architecture_exports_through_the_gate() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let effnet = fx.join("models/classify/efficientnet_lite0.safetensors");
    // Enough steps at a modest rate that batch-norm running statistics settle: an untrained
    // deep net in eval mode gives logits in the thousands, where f32 rounding alone passes 1e-4.
    let resnet = |arch: &'static str| {
        let mut a = vec!["--model", arch, "--max-images", "160", "--image-size", "32", "--mode", "scratch"];
        a.extend(["--batch-size", "8", "--epochs", "3", "--lr", "0.001"]);
        a
    };
    let runs = [
        ("small-cnn", vec!["--model", "small-cnn", "--max-images", "300", "--epochs", "1", "--lr", "0.01"]),
        ("resnet18", resnet("resnet18")),
        ("resnet34", resnet("resnet34")),
        ("resnet50", resnet("resnet50")),
        (
            "effnet",
            vec![
                "--model",
                "efficientnet-lite0",
                "--max-images",
                "160",
                "--image-size",
                "64",
                "--pretrained",
                effnet.to_str().unwrap(),
                "--mode",
                "fine-tune",
                "--batch-size",
                "8",
                "--epochs",
                "1",
                "--lr",
                "0.001",
            ],
        ),
    ];
    for (name, args) in &runs {
        let run_dir = trained(&fx, tmp.path(), name, args);
        let gate = gate_json(&run_dir);
        let checks = gate["checks"].as_array().unwrap();
        let backends: Vec<&str> = checks.iter().map(|c| c["backend"].as_str().unwrap()).collect();
        assert_eq!(backends, ["tract", "ort"], "{name}");
        for c in checks {
            let diff = c["max_abs_diff"].as_f64().unwrap();
            let ratio = c["max_ratio"].as_f64().unwrap();
            eprintln!(
                "{name}: {} max |diff| {diff:e} ({ratio:.2} of allowed) on {} images",
                c["backend"], gate["images"]
            );
            // |diff| <= atol + rtol * |logit| everywhere, so never more than atol + rtol * scale.
            let bound =
                gate["atol"].as_f64().unwrap() + gate["rtol"].as_f64().unwrap() * gate["logit_scale"].as_f64().unwrap();
            assert!(ratio <= 1.0 && diff <= bound, "{name}: {c}");
            assert_eq!(c["top1_agree"], gate["images"], "{name}");
        }
        assert!(gate["images"].as_u64().unwrap() >= 12, "{name}: {gate}");
    }

    // The exported grey small CNN answers through `strix predict` with its spec, as burn does
    // on the input that spec's preprocessing makes.
    let run_dir = tmp.path().join("small-cnn");
    let onnx = run_dir.join("export/model.onnx");
    let img = tmp.path().join("shirt.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 3) % 256) as u8])).save(&img).unwrap();
    let (out, stdout, stderr) = run(strix(&fx, tmp.path()).args(["predict", "--json", "--model"]).arg(&onnx).arg(&img));
    assert!(out.status.success(), "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    let spec = strix_zoo::locate(onnx.to_str().unwrap(), &crate::support::empty_home()).unwrap().spec;
    let pre = Preprocessor::new(spec.input.as_ref().unwrap(), spec.preprocess.as_ref().unwrap()).unwrap();
    let mut x = vec![0f32; pre.sample_len()];
    pre.run(&decode_file(&img, &DecodeLimits::default()).unwrap(), &mut x);
    let (model, _) = strix_train::classify::load_trained(&run_dir, &Device::flex()).unwrap();
    let logits = model.logits(x, 1, 1, 28, &Device::flex());
    let probs = strix_vision::classify::softmax(&logits);
    let labels = answer["Labels"].as_array().unwrap();
    // predict's default top-k (5) of the 10 Fashion-MNIST classes, most likely first.
    assert_eq!(labels.len(), 5, "{answer}");
    assert_eq!(
        labels[0]["ClassId"].as_u64().unwrap() as usize,
        probs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0,
        "{answer}"
    );
    for label in labels {
        let class = label["ClassId"].as_u64().unwrap() as usize;
        let want = 100.0 * probs[class];
        let got = label["Confidence"].as_f64().unwrap() as f32;
        assert!((got - want).abs() < 1e-3, "class {class}: predict {got}%, burn {want}%");
    }

    // A fine-tuned run registers with its parent weights in the lineage.
    let (out, stdout, stderr) = run(strix(&fx, tmp.path())
        .env("STRIX_HOME", tmp.path().join("home"))
        .args(["models", "register"])
        .arg(tmp.path().join("effnet"))
        .args(["--name", "effnet", "--json"]));
    assert!(out.status.success(), "{stderr}");
    let record: Value = serde_json::from_str(&stdout).unwrap();
    let parent = &record["lineage"]["parent"];
    assert_eq!(parent["path"], effnet.display().to_string(), "{parent}");
    assert_eq!(parent["sha256"], strix_zoo::sha256_file(&effnet).unwrap(), "{parent}");
    assert_eq!(record["lineage"]["config"]["mode"], "fine-tune", "{record}");
}

fn corrupt(onnx: &Path, out: &Path, tensor: &str) {
    let mut model = ModelProto::decode(std::fs::read(onnx).unwrap().as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let t = graph.initializer.iter_mut().find(|t| t.name == tensor).unwrap();
    // Read the `[in, out]` weight as if it were PyTorch's `[out, in]`: the classic layout slip.
    let (rows, cols) = (t.dims[0] as usize, t.dims[1] as usize);
    let v: Vec<f32> = t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let mut w = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            w[c * rows + r] = v[r * cols + c];
        }
    }
    t.raw_data = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(out, model.encode_to_vec()).unwrap();
}

/// Acceptance: a deliberately corrupted export (wrong weight layout) is caught by the gate, and
/// `strix export` to a fresh folder leaves nothing behind when the gate refuses.
#[test]
fn the_gate_catches_a_corrupted_export() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = trained(&fx, tmp.path(), "cnn", &["--model", "small-cnn", "--max-images", "200", "--epochs", "1"]);
    let good = run_dir.join("export/model.onnx");
    let bad = tmp.path().join("bad.onnx");
    corrupt(&good, &bad, "fc.weight");

    let device = Device::flex();
    let (model, saved) = strix_train::classify::load_trained(&run_dir, &device).unwrap();
    let engines = strix_export::gate::Engines { options: crate::support::runtime_options(), ..Default::default() };
    let options = ExportOptions { engines, ..Default::default() };
    strix_export::gate_file(&good, &run_dir, &model, &saved.shape, &device, &options).unwrap();
    // Without ONNX Runtime's library the gate runs what it can and names what it skipped;
    // an engine the user named must run.
    if cfg!(feature = "ort") {
        let bare = ExportOptions::default();
        let report = strix_export::gate_file(&good, &run_dir, &model, &saved.shape, &device, &bare).unwrap();
        let ran: Vec<String> = report.checks.iter().map(|c| c.backend.to_string()).collect();
        assert_eq!(ran, ["tract"]);
        assert_eq!(report.skipped.len(), 1, "{report}");
        assert!(report.to_string().contains("ort not checked (ONNX Runtime library not found"), "{report}");
        let mut named = ExportOptions::default();
        named.engines.skip_unavailable = false;
        let err = strix_export::gate_file(&good, &run_dir, &model, &saved.shape, &device, &named).unwrap_err();
        assert!(err.to_string().contains("ORT_DYLIB_PATH"), "{err}");
    }
    let err = strix_export::gate_file(&bad, &run_dir, &model, &saved.shape, &device, &options).unwrap_err();
    match &err {
        ExportError::GateFailed { max_abs_diff, .. } => assert!(*max_abs_diff > 1e-3, "{err}"),
        other => panic!("expected a gate failure, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("differ from burn's") && msg.contains("not kept"), "{msg}");

    // A refused export leaves nothing in its output folder (a negative tolerance always refuses).
    let out_dir = tmp.path().join("refused");
    let tolerance = strix_export::gate::Tolerance { atol: -1.0, rtol: 0.0 };
    let strict = ExportOptions { out_dir: Some(out_dir.clone()), tolerance, ..Default::default() };
    let err = strix_export::export_run(&run_dir, &strict).unwrap_err();
    assert!(matches!(err, ExportError::GateFailed { .. }), "{err}");
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
}
