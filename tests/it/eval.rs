//! `strix eval` against pycocotools on generated data, and on real model output.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::fixtures_or_skip;
use crate::support::{python, run, strix};

/// Run `coco_reference.py` (ground truth, noisy predictions, pycocotools' numbers) into `dir`.
fn reference(python: &Path, dir: &Path, seed: u32, kind: &str) -> Value {
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/it/coco_reference.py"))
        .arg(dir)
        .arg(seed.to_string())
        .arg(kind)
        .output()
        .unwrap();
    assert!(out.status.success(), "coco_reference.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap()
}

#[test]
fn coco_metrics_equal_pycocotools() {
    let fx = fixtures_or_skip!();
    let Some(python) = python() else { return };
    let cache = tempfile::tempdir().unwrap();
    for (kind, command, seeds) in [("bbox", "detect", [1, 2, 3]), ("keypoints", "pose", [4, 5, 6])] {
        for seed in seeds {
            let dir = tempfile::tempdir().unwrap();
            let want = reference(&python, dir.path(), seed, kind);
            let (out, stdout, stderr) = run(strix(&fx, cache.path())
                .args(["eval", command, "--json", "--gt"])
                .arg(dir.path().join("gt.json"))
                .arg("--predictions")
                .arg(dir.path().join("dt.json")));
            assert!(out.status.success(), "{kind} {seed}: {stderr}");
            let got: Value = serde_json::from_str(&stdout).unwrap();
            let (g, w) = (got["stats_in_order"].as_array().unwrap(), want["stats"].as_array().unwrap());
            assert_eq!(g.len(), w.len());
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                assert!((a - b).abs() <= 1e-4, "{kind} seed {seed} stat {i}: ours {a}, pycocotools {b}");
            }
            // A missing or extra class row must fail here, not shorten the comparison below.
            let (g, w) = (got["per_class"].as_array().unwrap(), want["per_class"].as_array().unwrap());
            assert_eq!(g.len(), w.len(), "{kind} seed {seed}: per-class rows, ours vs pycocotools");
            for (a, b) in g.iter().zip(w) {
                assert_eq!(a["category_id"], b["category_id"]);
                for key in ["ap", "ap50"] {
                    let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
                    assert!((x - y).abs() <= 1e-4, "{kind} seed {seed} class {}: {key} {x} vs {y}", a["category_id"]);
                }
            }
        }
    }
}

/// `strix eval TASK --model MODEL` of the fixture images against `gt` (COCO JSON): its `--json`
/// report and the predictions it saved.
fn eval_against(fx: &Path, cache: &Path, work: &Path, (task, model): (&str, &str), gt: &Value) -> (Value, Value) {
    let gt_path = work.join("gt.json");
    std::fs::write(&gt_path, gt.to_string()).unwrap();
    let saved = work.join("results.json");
    let (out, stdout, stderr) = run(strix(fx, cache)
        .args(["eval", task, "--json", "--model", model, "--gt"])
        .arg(&gt_path)
        .arg("--images")
        .arg(fx)
        .arg("--save-predictions")
        .arg(&saved));
    assert!(out.status.success(), "{stderr}");
    let got: Value = serde_json::from_str(&stdout).unwrap();
    (got, serde_json::from_str(&std::fs::read_to_string(saved).unwrap()).unwrap())
}

#[test]
fn detection_eval_runs_a_model_over_the_ground_truth_images() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // Ground truth: NanoDet's own reference detections (IoU with them is the test of the
    // plumbing: image lookup, class mapping by name, box conversion).
    let exp = crate::tasks::expected(&fx);
    let results = &exp["models"]["models/detect/nanodet_m_416.onnx"]["results"];
    let mut images = vec![];
    let mut annotations = vec![];
    let labels = std::fs::read_to_string(fx.join("models/detect/coco80_labels.txt")).unwrap();
    let names: Vec<&str> = labels.lines().collect();
    for (id, image) in ["images/messi5.jpg", "video/vtest_frame000.png"].iter().enumerate() {
        images.push(json!({"id": id + 1, "file_name": image}));
        for d in results[image]["detections"].as_array().unwrap() {
            let b: Vec<f64> = d["box_xyxy_image"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let (w, h) = (b[2] - b[0], b[3] - b[1]);
            annotations.push(json!({"id": annotations.len() + 1, "image_id": id + 1, "category_id": d["class_id"].as_u64().unwrap() + 1,
                "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0}));
        }
    }
    let categories: Vec<Value> = names.iter().enumerate().map(|(i, n)| json!({"id": i + 1, "name": n})).collect();
    let gt = json!({"images": images, "annotations": annotations, "categories": categories});
    let (got, saved) = eval_against(&fx, cache.path(), work.path(), ("detect", "nanodet_m_416"), &gt);
    assert!(got["stats"]["AP50"].as_f64().unwrap() > 0.99, "{got}");
    assert_eq!(saved.as_array().unwrap().len(), annotations.len());
}

#[test]
fn classification_and_segmentation_eval() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    for (class, image) in
        [("espresso", "coffee.png"), ("baboon", "baboon.jpg"), ("orange", "orange.jpg"), ("Granny Smith", "apple.jpg")]
    {
        std::fs::create_dir_all(data.path().join(class)).unwrap();
        std::os::unix::fs::symlink(fx.join("images").join(image), data.path().join(class).join(image)).unwrap();
    }
    // chelsea is a tiger cat to this model (tabby second): a top-5 hit, a top-1 miss.
    std::fs::create_dir_all(data.path().join("tabby, tabby cat")).unwrap();
    std::os::unix::fs::symlink(fx.join("images/chelsea.png"), data.path().join("tabby, tabby cat/chelsea.png"))
        .unwrap();
    let (out, stdout, stderr) = run(strix(&fx, cache.path())
        .args(["eval", "classify", "--json", "--model", "efficientnet_lite0", "--data"])
        .arg(data.path()));
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["images"], 5);
    assert!((v["top1_accuracy"].as_f64().unwrap() - 0.8).abs() < 1e-9, "{v}");
    assert!((v["top5_accuracy"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{v}");
    assert_eq!(v["classes"].as_array().unwrap().last().unwrap(), "(other)");

    // The same from saved predictions and a labels CSV.
    let (out, lines, stderr) = run(strix(&fx, cache.path()).args(["predict", "--json"]).arg(data.path()));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(lines.lines().count(), 5, "{lines}");
    let preds = data.path().join("predictions.jsonl");
    std::fs::write(&preds, lines).unwrap();
    let csv = data.path().join("labels.csv");
    std::fs::write(&csv, "image,label\ncoffee.png,espresso\nchelsea.png,\"tabby\"\n").unwrap();
    let (out, stdout, stderr) = run(strix(&fx, cache.path())
        .args(["eval", "classify", "--json", "--gt"])
        .arg(&csv)
        .arg("--predictions")
        .arg(&preds));
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["images"], 2);

    // Segmentation: the model's own masks against themselves and against a half-cleared copy.
    let masks = tempfile::tempdir().unwrap();
    let (out, _, stderr) = run(strix(&fx, cache.path())
        .args(["predict", "--task", "segment", "-q", "--save-masks"])
        .arg(masks.path())
        .arg(fx.join("images/astronaut.png")));
    assert!(out.status.success(), "{stderr}");
    let (out, stdout, stderr) = run(strix(&fx, cache.path())
        .args(["eval", "segment", "--json", "--classes", "2", "--gt"])
        .arg(masks.path())
        .arg("--predictions")
        .arg(masks.path()));
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["mean_iou"], 1.0);
    let gt_dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(masks.path().join("astronaut.mask.png")).unwrap();
    let (w, h, mut labels) = strix_vision::segment::read_label_png(&bytes).unwrap();
    let person = labels.iter().filter(|&&l| l == 1).count();
    let cleared = labels[..labels.len() / 2].iter().filter(|&&l| l == 1).count();
    labels[..(w * h / 2) as usize].fill(0);
    let mut gt_png = Vec::new();
    let mut enc = png::Encoder::new(&mut gt_png, w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.write_header().unwrap().write_image_data(&labels).unwrap();
    std::fs::write(gt_dir.path().join("astronaut.png"), gt_png).unwrap();
    let (out, stdout, stderr) = run(strix(&fx, cache.path())
        .args(["eval", "segment", "--json", "--classes", "2", "--gt"])
        .arg(gt_dir.path())
        .arg("--predictions")
        .arg(masks.path()));
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let want = (person - cleared) as f64 / person as f64;
    assert!((v["iou"][1].as_f64().unwrap() - want).abs() < 1e-9, "{v} vs {want}");
}

#[test]
fn pose_eval_runs_a_model_over_the_ground_truth_images() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // Ground truth: MoveNet's own reference keypoints, so a high OKS is the test of the
    // plumbing: image lookup, the person category, keypoints as COCO's x, y, v triples.
    let exp = crate::tasks::expected(&fx);
    let results = exp["models"]["models/pose/movenet_lightning_192.onnx"]["results"].as_object().unwrap();
    let mut images = vec![];
    let mut annotations = vec![];
    for (id, (image, r)) in results.iter().enumerate() {
        images.push(json!({"id": id + 1, "file_name": image}));
        let points: Vec<(f64, f64)> = r["keypoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["x_px"].as_f64().unwrap(), k["y_px"].as_f64().unwrap()))
            .collect();
        let keypoints: Vec<f64> = points.iter().flat_map(|&(x, y)| [x, y, 2.0]).collect();
        let (x0, x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (y0, y1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        annotations
            .push(json!({"id": id + 1, "image_id": id + 1, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": (x1 - x0) * (y1 - y0), "iscrowd": 0, "keypoints": keypoints, "num_keypoints": points.len()}));
    }
    let categories = json!([{"id": 1, "name": "person"}]);
    let gt = json!({"images": images, "annotations": annotations, "categories": categories});
    let (got, saved) = eval_against(&fx, cache.path(), work.path(), ("pose", "movenet_lightning_192"), &gt);
    assert!(got["stats"]["AP50"].as_f64().unwrap() > 0.99, "{got}");
    assert!(got["stats"]["AP"].as_f64().unwrap() > 0.9, "{got}");
    let saved = saved.as_array().unwrap();
    assert_eq!(saved.len(), annotations.len(), "one person per image");
    assert!(saved.iter().all(|r| r["keypoints"].as_array().unwrap().len() == 17 * 3 && r.get("bbox").is_none()));
}
