//! Bring your own model: detectors in other families' export formats, described by a spec
//! TOML alone, imported and inspected.
//!
//! The exports are NanoDet re-exported by `make_exports.py` (same weights, decoding appended
//! in ONNX), so their answers must match NanoDet's reference detections.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::fixtures_or_skip;
use crate::support::{backends, python, run, strix};
use crate::tasks::{check_detections, expected, objects, pipeline, predict};

const NANODET_INPUT: &str = r#"
[input]
layout = "nchw"
width = 416
height = 416

[preprocess]
resize = { mode = "stretch" }
channels = "bgr"
mean = [103.53, 116.28, 123.675]
std = [57.375, 57.12, 58.395]
"#;

/// Specs for the exports: (name, decoder section). Everything else is shared.
const DECODERS: &[(&str, &str)] = &[
    (
        "yolo_rows",
        r#"[decoder]
kind = "yolo"
output = "output"
box_format = "cxcywh"
objectness = true
layout = "rows"
nms = { score_threshold = 0.3, iou_threshold = 0.5 }
"#,
    ),
    (
        "yolo_columns",
        // Rows or columns worked out from 80 labels: 84 values per candidate.
        r#"[decoder]
kind = "yolo"
box_format = "cxcywh"
nms = { score_threshold = 0.3, iou_threshold = 0.5 }
"#,
    ),
    (
        "ssd",
        r#"[decoder]
kind = "ssd"
boxes_output = "boxes"
scores_output = "scores"
box_format = "xyxy"
normalized = true
background_class = true
nms = { score_threshold = 0.3, iou_threshold = 0.5 }
"#,
    ),
    (
        "centernet_s8",
        r#"[decoder]
kind = "centernet"
heatmap_output = "hm"
size_output = "wh"
offset_output = "reg"
layout = "nchw"
size_units = "grid"
nms = { score_threshold = 0.3, iou_threshold = 0.5 }
"#,
    ),
];

fn spec_text(name: &str, decoder: &str) -> String {
    format!(
        "name = \"{name}\"\ntask = \"detect\"\n\n[weights]\nfile = \"{name}.onnx\"\n\n[labels]\nfile = \"coco80_labels.txt\"\n{NANODET_INPUT}\n{decoder}"
    )
}

/// The exports and their specs, made once per test run in a folder that outlives the tests.
fn exports(fx: &Path) -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let python = python()?;
        let dir = tempfile::Builder::new().prefix("strix-exports").tempdir().unwrap().keep();
        let out = Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/it/make_exports.py"))
            .arg(fx.join("models/detect/nanodet_m_416.onnx"))
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "make_exports.py: {}", String::from_utf8_lossy(&out.stderr));
        // A copy: a link out of a spec folder is only followed for files whose sha256 it pins.
        std::fs::copy(fx.join("models/detect/coco80_labels.txt"), dir.join("coco80_labels.txt")).unwrap();
        for (name, decoder) in DECODERS {
            std::fs::write(dir.join(format!("{name}.toml")), spec_text(name, decoder)).unwrap();
        }
        Some(dir)
    })
    .clone()
}

#[test]
fn detectors_of_other_families_work_from_a_spec_alone() {
    let fx = fixtures_or_skip!();
    let Some(dir) = exports(&fx) else { return };
    let exp = expected(&fx);
    let results = &exp["models"]["models/detect/nanodet_m_416.onnx"]["results"];
    for backend in backends() {
        for name in ["yolo_rows", "yolo_columns", "ssd"] {
            let p = pipeline(&fx, &dir.join(format!("{name}.toml")).display().to_string(), backend);
            for image in ["images/messi5.jpg", "images/astronaut.png", "video/vtest_frame000.png", "images/chelsea.png"]
            {
                let ours = predict(&p, &fx, image);
                check_detections(
                    objects(&ours),
                    results[image]["detections"].as_array().unwrap(),
                    &format!("{name} {backend} {image}"),
                    0.35,
                );
            }
        }
        // The heat-map export has NanoDet's stride-8 head only; on the street frame every
        // reference detection comes from that head. Peak picking differs from NMS on weak
        // neighbours, so compare the confident ones.
        let p = pipeline(&fx, &dir.join("centernet_s8.toml").display().to_string(), backend);
        let ours = predict(&p, &fx, "video/vtest_frame000.png");
        let confident: Vec<Value> = results["video/vtest_frame000.png"]["detections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["score"].as_f64().unwrap() >= 0.5)
            .cloned()
            .collect();
        assert!(confident.len() >= 5);
        check_detections(objects(&ours), &confident, &format!("centernet {backend}"), 0.5);
    }
}

#[test]
fn import_checks_the_model_and_makes_it_a_name() {
    let fx = fixtures_or_skip!();
    let Some(dir) = exports(&fx) else { return };
    let cache = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let cmd = || {
        let mut c = strix(&fx, cache.path());
        c.env("STRIX_HOME", home.path());
        c
    };
    let (out, stdout, stderr) = run(cmd()
        .args(["models", "import"])
        .arg(dir.join("yolo_rows.onnx"))
        .arg("--spec")
        .arg(dir.join("yolo_rows.toml"))
        .args(["--name", "street_detector"]));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("imported street_detector"), "{stdout}");
    // Self-contained: the labels travel inside the stored spec.
    let stored = std::fs::read_to_string(home.path().join("models/street_detector/street_detector.toml")).unwrap();
    assert!(stored.contains("\"sports ball\""), "{stored}");

    let (out, stdout, stderr) =
        run(cmd().args(["predict", "--json", "--model", "street_detector"]).arg(fx.join("images/messi5.jpg")));
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["Labels"][0]["Name"], "person");
    assert_eq!(v["LabelModelVersion"], "street_detector");
    let (_, list, _) = run(cmd().args(["models", "list"]));
    assert!(list.lines().any(|l| l.starts_with("street_detector") && l.contains("(imported)")), "{list}");

    // Same name again needs --force; a zoo name is refused.
    let again = |name: &str| {
        run(cmd()
            .args(["models", "import"])
            .arg(dir.join("yolo_rows.onnx"))
            .arg("--spec")
            .arg(dir.join("yolo_rows.toml"))
            .args(["--name", name]))
    };
    let (out, _, stderr) = again("street_detector");
    assert!(!out.status.success() && stderr.contains("--force"), "{stderr}");
    let (out, _, stderr) = again("nanodet_m_416");
    assert!(!out.status.success() && stderr.contains("zoo model"), "{stderr}");
}

#[test]
fn import_names_the_mismatch() {
    let fx = fixtures_or_skip!();
    let Some(dir) = exports(&fx) else { return };
    let cache = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cases = [
        // 79 labels for an 80-class model: the candidate rows are one value too long.
        (
            spec_text("yolo_rows", DECODERS[0].1).replace(
                "[labels]\nfile = \"coco80_labels.txt\"",
                &format!("[labels]\nnames = [{}]", (0..79).map(|i| format!("\"c{i}\"")).collect::<Vec<_>>().join(", ")),
            ),
            "84 values per candidate",
        ),
        (
            spec_text("yolo_rows", DECODERS[0].1).replace("output = \"output\"", "output = \"detections\""),
            "\"detections\"",
        ),
        (spec_text("yolo_rows", DECODERS[0].1).replace("width = 416", "width = 320"), "320x416"),
    ];
    std::fs::copy(fx.join("models/detect/coco80_labels.txt"), work.path().join("coco80_labels.txt")).unwrap();
    for (spec, needle) in cases {
        let path = work.path().join("yolo_rows.toml");
        std::fs::write(&path, spec).unwrap();
        let (out, _, stderr) = run(strix(&fx, cache.path())
            .env("STRIX_HOME", home.path())
            .args(["models", "import"])
            .arg(dir.join("yolo_rows.onnx"))
            .arg("--spec")
            .arg(&path));
        assert!(!out.status.success(), "{needle}: import should fail");
        let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
        assert!(line.contains(needle), "expected {needle:?} in {stderr}");
        assert!(!home.path().join("models/yolo_rows").exists(), "nothing half-imported");
    }
}

#[test]
fn inspect_lists_inputs_outputs_and_ops() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    let (out, stdout, stderr) =
        run(strix(&fx, cache.path()).args(["models", "inspect"]).arg(fx.join("models/detect/nanodet_m_416.onnx")));
    assert!(out.status.success(), "{stderr}");
    for needle in ["input       input_1:0: f32[1,3,416,416]", "output      Identity_3:0", "ai.onnx 13", "Conv"] {
        assert!(stdout.contains(needle), "inspect lacks {needle:?}:\n{stdout}");
    }
    let (out, stdout, _) = run(strix(&fx, cache.path())
        .args(["models", "inspect", "--json"])
        .arg(fx.join("models/ocr/ch_PP-OCRv4_rec_infer.onnx")));
    assert!(out.status.success());
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["inputs"][0]["shape"][1], 3);
    assert!(v["parameters"].as_u64().unwrap() > 1_000_000);
    let (out, _, stderr) = run(strix(&fx, cache.path()).args(["models", "inspect"]).arg(fx.join("images/coffee.png")));
    assert!(!out.status.success() && stderr.contains("not a readable ONNX file"), "{stderr}");
}
