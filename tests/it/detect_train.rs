//! `strix train --task detect`: a detector trained on Fashion-MNIST items pasted onto the
//! fixture photos learns, exports through the gate, and `strix eval detect` of the export
//! gives the trainer's mAP.

use crate::detect_data::build_scenes;
use crate::fixtures_or_skip;
use crate::support::{run, strix};

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
        .args(["eval", "detect", "--json", "--gt"])
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
}
