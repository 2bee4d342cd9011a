//! `strix train --task detect`: a detector trained on Fashion-MNIST items pasted onto the
//! fixture photos learns, exports through the gate, and `strix eval detect` of the export
//! gives the trainer's mAP.

use std::path::Path;

use serde_json::Value;

use crate::detect_data::{CLASSES, build_scenes};
use crate::fixtures_or_skip;
use crate::support::{run, strix};

fn final_json(run_dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(run_dir.join("final.json")).unwrap()).unwrap()
}

#[test]
fn a_small_detector_learns_exports_and_evaluates_as_trained() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let scenes = build_scenes(&fx, tmp.path(), 64, 16, 128, 7);
    let run_dir = tmp.path().join("run");
    let pretrained = fx.join("models/classify/efficientnet_lite0.safetensors");
    let (out, stdout, stderr) = run(strix(&fx, &tmp.path().join("cache"))
        .args(["train", "--task", "detect", "--data"])
        .arg(&scenes.coco)
        .arg("--pretrained")
        .arg(&pretrained)
        .args(["--image-size", "128", "--epochs", "10", "--batch-size", "8", "--lr", "0.004", "--seed", "1"])
        .args(["--box-scale", "0.75,1.25", "--translate", "0.05"])
        .arg("--run-dir")
        .arg(&run_dir));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let fin: serde_json::Value = serde_json::from_slice(&std::fs::read(run_dir.join("final.json")).unwrap()).unwrap();
    let (map, map50) = (fin["val"]["map"].as_f64().unwrap(), fin["val"]["map50"].as_f64().unwrap());
    // Chance is near zero: random boxes on 16 images almost never overlap an object by half.
    assert!(map50 > 0.3, "mAP@.5 {map50} (mAP {map}) after 10 epochs:\n{stdout}\n{stderr}");
    eprintln!("detector after 10 epochs of 64 scenes at 128 px: val mAP {map:.4}, mAP@.5 {map50:.4}");
    let history = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 10);
    assert!(stdout.contains("gate passed") && stdout.contains("the same detections"), "{stdout}");
    // The export, through `strix eval detect`, scores what the trainer scored.
    let (out, eval, stderr) = run(strix(&fx, &tmp.path().join("cache"))
        .args(["eval", "detect", "--json", "--score-threshold", "0.05", "--gt"])
        .arg(scenes.coco.join("annotations/instances_val.json"))
        .arg("--images")
        .arg(scenes.coco.join("images/val"))
        .arg("--model")
        .arg(run_dir.join("export/model.toml")));
    assert!(out.status.success(), "{stderr}");
    let eval: serde_json::Value = serde_json::from_str(&eval).unwrap();
    let (emap, emap50) = (eval["stats"]["AP"].as_f64().unwrap(), eval["stats"]["AP50"].as_f64().unwrap());
    assert!(
        (emap - map).abs() < 2e-3 && (emap50 - map50).abs() < 2e-3,
        "export {emap}/{emap50}, trainer {map}/{map50}"
    );
    // The export is a detector like any other: predict finds the pasted classes.
    let (out, lines, stderr) = run(strix(&fx, &tmp.path().join("cache"))
        .args(["predict", "--json", "--model"])
        .arg(run_dir.join("export/model.toml"))
        .arg(scenes.coco.join("images/val")));
    assert!(out.status.success(), "{stderr}");
    assert!(CLASSES.iter().any(|c| lines.contains(&format!("\"{c}\""))), "{lines}");
    // The report carries its pictures.
    let report = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    for png in ["loss.png", "map.png", "pr.png", "samples.png"] {
        assert!(report.contains(png) && run_dir.join(png).is_file(), "{png}");
    }
    assert!(report.contains(&format!("mAP@[.5:.95] {map:.4}, mAP@.5 {map50:.4}")), "the report reads the summary");
    registered_detector_shows_its_map(&fx, tmp.path(), &run_dir, (map, map50));
    quality_of_captured_detections(&fx, tmp.path(), &scenes.coco, map);
}

/// `models register RUN` then `models show NAME:1` (and `--json`): the lineage carries the
/// run's typed summary, so a detector shows its mAP (it once recorded `accuracy: null`).
fn registered_detector_shows_its_map(fx: &Path, tmp: &Path, run_dir: &Path, (map, map50): (f64, f64)) {
    let store = tmp.join("registry");
    let registry = |cmd: &mut std::process::Command| {
        cmd.env("STRIX_HOME", tmp.join("home"))
            .env("STRIX_REGISTRY_STORE", &store)
            .env("STRIX_REGISTRY_DB", format!("sqlite://{}?mode=rwc", store.join("registry.db").display()));
    };
    let mut cmd = strix(fx, &tmp.join("cache"));
    registry(&mut cmd);
    let (out, _, stderr) = run(cmd.args(["models", "register"]).arg(run_dir).args(["--name", "det"]));
    assert!(out.status.success(), "{stderr}");
    let mut cmd = strix(fx, &tmp.join("cache"));
    registry(&mut cmd);
    let (out, json, stderr) = run(cmd.args(["models", "show", "det:1", "--json"]));
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(&json).unwrap();
    let m = &v["lineage"]["metrics"];
    assert_eq!(m["task"], "detect", "{m}");
    assert_eq!((m["val"]["map"].as_f64(), m["val"]["map50"].as_f64()), (Some(map), Some(map50)), "{m}");
    assert!(m["val"].get("accuracy").is_none(), "{m}");
    let mut cmd = strix(fx, &tmp.join("cache"));
    registry(&mut cmd);
    let (out, shown, stderr) = run(cmd.args(["models", "show", "det:1"]));
    assert!(out.status.success(), "{stderr}");
    let line = shown.lines().find(|l| l.trim_start().starts_with("metrics")).unwrap_or_default();
    assert!(line.contains(&format!("val mAP@[.5:.95] {map:.4}, mAP@.5 {map50:.4}")), "{shown}");
}

/// `strix monitor quality` on a detector: the validation scenes streamed through det:1 and
/// captured, then labelled with their truth, score the mAP it was registered with (exit 0);
/// labelled with every class swapped for the next, they make it drop (exit 3).
fn quality_of_captured_detections(fx: &Path, tmp: &Path, coco: &Path, map: f64) {
    let store = tmp.join("registry");
    let cli = || {
        let mut cmd = strix(fx, &tmp.join("cache"));
        cmd.env("STRIX_HOME", tmp.join("home"))
            .env("STRIX_REGISTRY_STORE", &store)
            .env("STRIX_REGISTRY_DB", format!("sqlite://{}?mode=rwc", store.join("registry.db").display()));
        cmd
    };
    let stub = tmp.join("stub");
    std::fs::create_dir_all(stub.join("labels")).unwrap();
    std::fs::create_dir_all(stub.join("images")).unwrap();
    std::fs::write(stub.join("labels/classes.txt"), CLASSES.join("\n")).unwrap();
    let project = tmp.join("captured");
    let (out, _, stderr) = run(cli()
        .args(["label", "import", "--format", "yolo", "--annotations"])
        .arg(stub.join("labels"))
        .arg("--images")
        .arg(stub.join("images"))
        .arg(&project));
    assert!(out.status.success(), "{stderr}");
    let val = coco.join("images/val");
    let (out, _, stderr) = run(cli()
        .arg("stream")
        .arg(&val)
        .args(["--model", "det:1", "--policy", "all", "--capture-every", "1", "--capture"])
        .arg(&project));
    assert!(out.status.success(), "{stderr}");
    // The truth of each validation scene, by its pixels.
    let gt: Value =
        serde_json::from_slice(&std::fs::read(coco.join("annotations/instances_val.json")).unwrap()).unwrap();
    let name_of =
        |id: &Value| gt["categories"].as_array().unwrap().iter().find(|c| c["id"] == *id).unwrap()["name"].clone();
    type Boxes = Vec<(String, [f32; 4])>;
    let scenes: Vec<(image::RgbImage, Boxes)> = gt["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|im| {
            let boxes = gt["annotations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["image_id"] == im["id"])
                .map(|a| {
                    let b: Vec<f32> =
                        a["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
                    (name_of(&a["category_id"]).as_str().unwrap().to_string(), [b[0], b[1], b[2], b[3]])
                })
                .collect();
            (image::open(val.join(im["file_name"].as_str().unwrap())).unwrap().to_rgb8(), boxes)
        })
        .collect();
    let label_all = |swap: bool| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let p = strix_label::Project::open(&project).await.unwrap();
            let rows = p.store.images(0, 100).await.unwrap();
            assert_eq!(rows.len(), scenes.len());
            for (row, a) in rows {
                let img = image::open(p.image_path(&row)).unwrap().to_rgb8();
                let distance = |s: &image::RgbImage| -> u64 {
                    s.as_raw().iter().zip(img.as_raw()).map(|(a, b)| u64::from(a.abs_diff(*b))).sum()
                };
                let (_, boxes) = scenes.iter().min_by_key(|(s, _)| distance(s)).unwrap();
                let boxes = boxes
                    .iter()
                    .map(|(class, [x, y, w, h])| {
                        let i = CLASSES.iter().position(|c| c == class).unwrap();
                        let class = if swap { CLASSES[(i + 1) % CLASSES.len()] } else { CLASSES[i] };
                        strix_label::LabelBox { class: class.to_string(), x: *x, y: *y, w: *w, h: *h }
                    })
                    .collect();
                let labels = strix_label::Labels { class: None, boxes };
                p.store.save(row.id, a.map_or(0, |a| a.version), &labels, true, "test").await.unwrap();
            }
            p.store.close().await;
        });
    };
    let quality = || {
        let (out, stdout, stderr) = run(cli()
            .args(["monitor", "quality", "--model", "det:1", "--json", "--project"])
            .arg(&project)
            .arg("--out")
            .arg(tmp.join("quality")));
        let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{stdout}\n{stderr}"));
        (out.status.code(), report)
    };
    label_all(false);
    let (code, report) = quality();
    let now = report["figures"][0]["current"].as_f64().unwrap();
    assert_eq!(report["figures"][0]["metric"], "map", "{report}");
    assert_eq!(code, Some(0), "{report}");
    assert!((now - map).abs() < 0.05, "captured mAP {now} against validation {map}: {report}");
    label_all(true);
    let (code, report) = quality();
    assert_eq!(code, Some(3), "{report}");
    let swapped = report["figures"][0]["current"].as_f64().unwrap();
    assert!(swapped < map - 0.05, "{report}");
    eprintln!(
        "monitor quality on det:1: captured scenes mAP {now:.4} (validation {map:.4}), classes swapped {swapped:.4}"
    );
}

/// kill -9 inside epoch 2, `--resume`: the run ends with the weights of an uninterrupted one.
#[test]
fn a_killed_detector_run_resumes_to_the_same_weights() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let scenes = build_scenes(&fx, tmp.path(), 32, 8, 96, 11);
    let args = |cmd: &mut std::process::Command| {
        cmd.args(["train", "--task", "detect", "--no-export", "--data"]).arg(&scenes.yolo);
        cmd.args(["--image-size", "96", "--epochs", "2", "--batch-size", "4", "--seed", "3", "--lr", "0.002"]);
        // Stretched, not letterboxed: training, evaluation and the export's spec alike.
        cmd.args(["--resize", "stretch"]);
    };
    let cache = tmp.path().join("cache");
    let whole = tmp.path().join("whole");
    let mut cmd = strix(&fx, &cache);
    args(&mut cmd);
    let (out, _, stderr) = run(cmd.arg("--run-dir").arg(&whole));
    assert!(out.status.success(), "{stderr}");

    let killed = tmp.path().join("killed");
    let mut cmd = strix(&fx, &cache);
    args(&mut cmd);
    cmd.arg("--run-dir").arg(&killed).args(["--checkpoint-minutes", "0.002"]);
    let child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    crate::train::kill_inside_epoch_2(child, &killed);
    let metrics = killed.join("metrics.jsonl");
    assert_eq!(std::fs::read_to_string(&metrics).unwrap().lines().count(), 1, "not killed inside epoch 2");

    let (out, _, stderr) = run(strix(&fx, &cache).args(["train", "--no-export", "--resume"]).arg(&killed));
    assert!(out.status.success(), "{stderr}");
    let log = std::fs::read_to_string(killed.join("train.log")).unwrap();
    let resumed = log.lines().find(|l| l.contains("resumed at epoch 2 batch")).expect("resumed inside epoch 2");
    assert!(!resumed.ends_with("batch 0"), "{resumed}");
    // Compared by what they compute on the validation images (see the classifier's resume
    // test for why not bit for bit).
    let device = strix_train::Device::flex();
    let outputs = |dir: &Path| {
        let (model, saved) = strix_train::detect::load_trained(dir, &device).unwrap();
        let (_, val) = strix_train::detect::validation_set(dir).unwrap();
        let pre = strix_vision::Preprocessor::new(&saved.input_spec(), &saved.preprocess).unwrap();
        let mut px = Vec::new();
        for im in &val.images {
            let img = strix_vision::decode_file(&im.path, &Default::default()).unwrap();
            let mut one = vec![0f32; pre.sample_len()];
            pre.run(&img, &mut one);
            px.extend(one);
        }
        let (_, t) = strix_train::detect::eval::run_batch(&model, &saved, px, val.images.len(), &device).unwrap();
        t.iter().flat_map(|t| t.to_f32_vec()).collect::<Vec<f32>>()
    };
    let diff = crate::support::max_abs_diff(&outputs(&whole), &outputs(&killed));
    eprintln!("detector resumed vs uninterrupted: max |output diff| {diff:e}");
    assert!(diff <= 1e-4, "resumed weights compute other outputs: {diff:e}");
    let maps = |f: &Value| -> Vec<f64> {
        f["history"].as_array().unwrap().iter().map(|m| m["map50"].as_f64().unwrap()).collect()
    };
    let (a, b) = (maps(&final_json(&whole)), maps(&final_json(&killed)));
    assert_eq!(a.len(), 2);
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 0.01), "{a:?} vs {b:?}");
    let (out, stdout, stderr) = run(strix(&fx, &cache).arg("export").arg(&killed));
    assert!(out.status.success() && stdout.contains("the same detections"), "{stdout}{stderr}");
    let spec = std::fs::read_to_string(killed.join("export/model.toml")).unwrap();
    assert!(spec.contains("mode = \"stretch\""), "{spec}");
}

/// Labels with problems: each handled as the issue says and listed, or refused naming the
/// file and line.
#[test]
fn bad_detection_labels_are_clipped_dropped_listed_or_refused_by_line() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let scenes = build_scenes(&fx, tmp.path(), 12, 4, 64, 5);
    let ann = scenes.coco.join("annotations/instances_train.json");
    let mut coco: Value = serde_json::from_slice(&std::fs::read(&ann).unwrap()).unwrap();
    let anns = coco["annotations"].as_array_mut().unwrap();
    anns.push(serde_json::json!({"id": 9001, "image_id": 1, "category_id": 1, "bbox": [50, 50, 30, 30], "area": 900, "iscrowd": 0}));
    anns.push(serde_json::json!({"id": 9002, "image_id": 2, "category_id": 2, "bbox": [10, 10, 0, 20], "area": 0, "iscrowd": 0}));
    coco["images"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"id": 77, "file_name": "gone.png", "width": 64, "height": 64}));
    std::fs::write(&ann, coco.to_string()).unwrap();
    let cache = tmp.path().join("cache");
    let (out, stdout, stderr) = run(strix(&fx, &cache)
        .args(["data", "inspect", "--sheet"])
        .arg(tmp.path().join("sheet.png"))
        .arg(&scenes.coco));
    assert!(out.status.success(), "{stderr}");
    for want in [
        "reaches outside the 64x64 image; clipped",
        "has no area inside the image; dropped",
        "gone.png: missing image file; left out",
    ] {
        assert!(stdout.contains(want), "{want} in\n{stdout}");
    }
    assert!(stdout.contains("images without boxes (negatives)") && tmp.path().join("sheet.png").is_file(), "{stdout}");
    // Training goes on and lists them in final.json.
    let run_dir = tmp.path().join("run");
    let (out, _, stderr) = run(strix(&fx, &cache)
        .args([
            "train",
            "--task",
            "detect",
            "--no-export",
            "--image-size",
            "64",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--data",
        ])
        .arg(&scenes.coco)
        .arg("--run-dir")
        .arg(&run_dir));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(final_json(&run_dir)["problems"].as_array().unwrap().len(), 3);
    // Refused, naming the file and line: unknown class ids, malformed label rows, JSON, YAML.
    let refused = |data: &Path| {
        let (out, _, stderr) =
            run(strix(&fx, &cache).args(["data", "inspect", "--sheet"]).arg(tmp.path().join("s.png")).arg(data));
        assert!(!out.status.success());
        stderr
    };
    let label = scenes.yolo.join("labels/train/train000.txt");
    std::fs::write(&label, "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n").unwrap();
    let e = refused(&scenes.yolo);
    assert!(e.contains("train000.txt:2: class 7 is outside the 3 classes"), "{e}");
    std::fs::write(&label, "0 0.5 0.5 0.2\n").unwrap();
    assert!(refused(&scenes.yolo).contains("train000.txt:1: expected `class cx cy w h`, found 4 fields"));
    std::fs::write(&label, "").unwrap();
    std::fs::write(scenes.yolo.join("data.yaml"), "train: images/train\nnames: [a, b\n").unwrap();
    let e = refused(&scenes.yolo);
    assert!(e.contains("data.yaml:"), "{e}");
    std::fs::write(&ann, "{\"images\": [\n  {\"id\": 1,,}]}").unwrap();
    let e = refused(&scenes.coco);
    assert!(e.contains("instances_train.json:2:"), "{e}");
}
