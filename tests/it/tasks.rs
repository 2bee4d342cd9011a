//! Every zoo model of every task, on every backend, against the onnxruntime references in
//! expected.json and reference/*.npy.

use std::path::Path;

use serde_json::Value;
use strix_core::{BBox, Detection, Face};
use strix_pipeline::{Answer, BatchOptions, Pipeline, Prediction};
use strix_runtime::{Backend, open};
use strix_vision::{DecodeLimits, decode_file};
use strix_zoo::Resolver;

use crate::fixtures_or_skip;
use crate::support::{backends, read_npy};

pub fn expected(fx: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fx.join("expected.json")).unwrap()).unwrap()
}

/// A zoo (or spec-file) model loaded from the fixtures on `backend`.
pub fn pipeline(fx: &Path, model: &str, backend: Backend) -> Pipeline {
    let cache = std::env::temp_dir().join("strix-it-cache");
    let resolver = Resolver { cache_dir: cache, search_path: vec![fx.join("models")], hub: None, offline: true };
    let located = strix_zoo::locate(model, &crate::support::empty_home()).unwrap();
    let resolved = resolver.resolve(&located, &strix_core::NoProgress).unwrap();
    let runtime = open(backend, &crate::support::runtime_options()).unwrap();
    Pipeline::load(resolved, runtime.as_ref()).unwrap_or_else(|e| panic!("{model} on {backend}: {e}"))
}

pub fn predict(p: &Pipeline, fx: &Path, image: &str) -> Prediction {
    let img = decode_file(&fx.join(image), &DecodeLimits::default()).unwrap();
    p.predict_images(&[img], &BatchOptions::default()).unwrap().remove(0)
}

fn bbox(v: &Value) -> BBox {
    let f = |i: usize| v[i].as_f64().unwrap() as f32;
    BBox::new(f(0), f(1), f(2), f(3))
}

pub fn objects(p: &Prediction) -> &[Detection] {
    match &p.answer {
        Answer::Objects { objects } => objects,
        other => panic!("expected objects, got {other:?}"),
    }
}

fn faces(p: &Prediction) -> &[Face] {
    match &p.answer {
        Answer::Faces { faces } => faces,
        other => panic!("expected faces, got {other:?}"),
    }
}

/// Every reference detection matched by class with IoU >= 0.9 and score within 0.02, and no
/// detection of ours above `extra_above` that the reference lacks.
pub fn check_detections(ours: &[Detection], reference: &[Value], what: &str, extra_above: f32) {
    let matches = |d: &Detection, r: &Value| {
        d.class_id as u64 == r["class_id"].as_u64().unwrap() && d.bbox.iou(&bbox(&r["box_xyxy_image"])) >= 0.9
    };
    for r in reference {
        let found = ours.iter().find(|d| matches(d, r));
        let Some(d) = found else {
            panic!("{what}: reference {} {} not found in {ours:?}", r["label"], r["box_xyxy_image"])
        };
        let score = r["score"].as_f64().unwrap() as f32;
        assert!((d.score - score).abs() <= 0.02, "{what}: {} score {} vs reference {score}", d.label, d.score);
    }
    for d in ours.iter().filter(|d| d.score > extra_above) {
        assert!(reference.iter().any(|r| matches(d, r)), "{what}: extra detection {d:?}");
    }
}

#[test]
fn nanodet_finds_the_reference_detections() {
    let fx = fixtures_or_skip!();
    let exp = expected(&fx);
    let results = exp["models"]["models/detect/nanodet_m_416.onnx"]["results"].as_object().unwrap();
    for backend in backends() {
        let p = pipeline(&fx, "nanodet_m_416", backend);
        for (image, r) in results {
            let ours = predict(&p, &fx, image);
            check_detections(objects(&ours), r["detections"].as_array().unwrap(), &format!("{backend} {image}"), 0.35);
        }
    }
}

#[test]
fn movenet_keypoints_within_3_px() {
    let fx = fixtures_or_skip!();
    let exp = expected(&fx);
    let results = exp["models"]["models/pose/movenet_lightning_192.onnx"]["results"].as_object().unwrap();
    for backend in backends() {
        let p = pipeline(&fx, "movenet_lightning_192", backend);
        for (image, r) in results {
            let ours = predict(&p, &fx, image);
            let Answer::People { people } = &ours.answer else { panic!("not a pose answer") };
            let reference = r["keypoints"].as_array().unwrap();
            assert_eq!(people[0].keypoints.len(), 17);
            for (k, rk) in people[0].keypoints.iter().zip(reference) {
                assert_eq!(k.name, rk["name"].as_str().unwrap());
                let (x, y) = (rk["x_px"].as_f64().unwrap() as f32, rk["y_px"].as_f64().unwrap() as f32);
                let d = ((k.x - x).powi(2) + (k.y - y).powi(2)).sqrt();
                assert!(d <= 3.0, "{backend} {image} {}: ({}, {}) vs ({x}, {y})", k.name, k.x, k.y);
            }
        }
    }
}

/// MoveNet MultiPose against onnxruntime's reference (expected.json, people scoring above
/// 0.15): the same people in the same order, each score within 0.02, box corners within 4 px and
/// every keypoint within 3 px, on two photos and a frame of the street video.
#[test]
fn movenet_multipose_finds_the_reference_people_and_keypoints() {
    let fx = fixtures_or_skip!();
    let exp = expected(&fx);
    let results = exp["models"]["models/pose/movenet_multipose.onnx"]["results"].as_object().unwrap();
    assert!(results.len() >= 3);
    for backend in backends() {
        let p = pipeline(&fx, "movenet_multipose", backend);
        for (image, r) in results {
            let ours = predict(&p, &fx, image);
            let Answer::People { people } = &ours.answer else { panic!("not a pose answer") };
            let reference = r["people_score_gt_0.15"].as_array().unwrap();
            let what = format!("{backend} {image}");
            assert_eq!(people.len(), reference.len(), "{what}: {people:?}");
            for (person, rp) in people.iter().zip(reference) {
                assert!(
                    (person.score - rp["score"].as_f64().unwrap() as f32).abs() <= 0.02,
                    "{what}: {}",
                    person.score
                );
                let b = bbox(&rp["box_xyxy_px"]);
                let corners =
                    [(person.bbox.x1, b.x1), (person.bbox.y1, b.y1), (person.bbox.x2, b.x2), (person.bbox.y2, b.y2)];
                assert!(corners.iter().all(|(a, b)| (a - b).abs() <= 4.0), "{what}: {:?} vs {b:?}", person.bbox);
                for (k, rk) in person.keypoints.iter().zip(rp["keypoints"].as_array().unwrap()) {
                    assert_eq!(k.name, rk["name"].as_str().unwrap());
                    let (x, y) = (rk["x_px"].as_f64().unwrap() as f32, rk["y_px"].as_f64().unwrap() as f32);
                    let d = ((k.x - x).powi(2) + (k.y - y).powi(2)).sqrt();
                    assert!(d <= 3.0, "{what} {}: ({}, {}) vs ({x}, {y})", k.name, k.x, k.y);
                }
            }
        }
    }
}

#[test]
fn selfie_mask_matches_the_reference_mask() {
    let fx = fixtures_or_skip!();
    let exp = expected(&fx);
    let results = exp["models"]["models/segment/selfie_256.onnx"]["results"].as_object().unwrap();
    let (shape, reference) = read_npy(&fx.join("reference/selfie_256__astronaut__mask.npy"));
    assert_eq!(shape, vec![1, 256, 256, 1]);
    for backend in backends() {
        let p = pipeline(&fx, "selfie_256", backend);
        // Astronaut (512x512): each of our pixels against the reference cell it falls in.
        let ours = predict(&p, &fx, "images/astronaut.png");
        let Answer::Mask { mask } = &ours.answer else { panic!("not a mask") };
        assert_eq!((mask.width, mask.height), (512, 512));
        let (mut inter, mut union) = (0usize, 0usize);
        for y in 0..512 {
            for x in 0..512 {
                let a = mask.labels[y * 512 + x] == 1;
                let b = reference[(y / 2) * 256 + x / 2] > 0.5;
                inter += usize::from(a && b);
                union += usize::from(a || b);
            }
        }
        let iou = inter as f64 / union as f64;
        assert!(iou >= 0.98, "{backend}: mask IoU {iou}");
        for (image, r) in results {
            let ours = predict(&p, &fx, image);
            let Answer::Mask { mask } = &ours.answer else { panic!("not a mask") };
            let coverage = mask.coverage()[1] as f64;
            let want = r["fraction_gt_0.5"].as_f64().unwrap();
            assert!((coverage - want).abs() <= 0.01, "{backend} {image}: person coverage {coverage} vs {want}");
            // Where the person is, not only how much: the model's 256x256 output on our
            // preprocessing, pooled 16x16 as the reference pooled its own.
            let spec = &p.model().spec;
            let pre = strix_vision::Preprocessor::new(spec.input.as_ref().unwrap(), spec.preprocess.as_ref().unwrap())
                .unwrap();
            let mut x = vec![0f32; pre.sample_len()];
            pre.run(&decode_file(&fx.join(image), &DecodeLimits::default()).unwrap(), &mut x);
            let out = p.session().run(&[pre.into_tensor(x, 1)]).unwrap();
            let prob = out[0].to_f32_vec();
            assert_eq!(prob.len(), 256 * 256);
            let grid = r["grid16_mean"].as_array().unwrap();
            assert_eq!(grid.len(), 16);
            for (gy, row) in grid.iter().enumerate() {
                for (gx, want) in row.as_array().unwrap().iter().enumerate() {
                    let cell: f64 = (0..16)
                        .flat_map(|dy| (0..16).map(move |dx| (gy * 16 + dy) * 256 + gx * 16 + dx))
                        .map(|i| f64::from(prob[i]))
                        .sum();
                    let (got, want) = (cell / 256.0, want.as_f64().unwrap());
                    assert!((got - want).abs() <= 0.02, "{backend} {image}: cell ({gy}, {gx}) {got:.4} vs {want:.4}");
                }
            }
        }
    }
}

/// A reference face: its box, score and landmarks (named as ours are).
struct RefFace {
    bbox: BBox,
    score: f32,
    landmarks: Vec<(&'static str, f32, f32)>,
}

/// Every reference face is found (box IoU >= 0.85) with its score within 0.02 and every
/// landmark within 3 px; no extra faces.
fn check_faces(ours: &[Face], reference: &[RefFace], what: &str) {
    assert_eq!(ours.len(), reference.len(), "{what}: {ours:?}");
    for r in reference {
        let (best, iou) = ours
            .iter()
            .map(|f| (f, f.bbox.iou(&r.bbox)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or_else(|| panic!("{what}: no face"));
        assert!(iou >= 0.85, "{what}: reference face {:?} best IoU {iou} in {ours:?}", r.bbox);
        assert!((best.score - r.score).abs() <= 0.02, "{what}: score {} vs {}", best.score, r.score);
        assert_eq!(best.landmarks.len(), r.landmarks.len(), "{what}");
        for &(name, x, y) in &r.landmarks {
            let k = best.landmarks.iter().find(|k| k.name == name).unwrap_or_else(|| panic!("{what}: no {name}"));
            let d = ((k.x - x).powi(2) + (k.y - y).powi(2)).sqrt();
            assert!(d <= 3.0, "{what} {name}: ({}, {}) vs ({x}, {y})", k.x, k.y);
        }
    }
}

#[test]
fn blazeface_finds_the_reference_faces() {
    let fx = fixtures_or_skip!();
    let exp = expected(&fx);
    // BlazeFace's landmark order (the subject's right and left).
    const ORDER: [&str; 6] = ["eyeRight", "eyeLeft", "nose", "mouth", "earRight", "earLeft"];
    for model in ["blazeface_front_128", "blazeface_back_256"] {
        let results = exp["models"][format!("models/face/{model}.onnx")]["results"].as_object().unwrap();
        for backend in backends() {
            let p = pipeline(&fx, model, backend);
            for (image, r) in results {
                let reference: Vec<RefFace> = r["faces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| RefFace {
                        bbox: bbox(&f["box_xyxy_image"]),
                        score: f["score"].as_f64().unwrap() as f32,
                        landmarks: f["keypoints_xy_image"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .zip(ORDER)
                            .map(|(k, name)| (name, k[0].as_f64().unwrap() as f32, k[1].as_f64().unwrap() as f32))
                            .collect(),
                    })
                    .collect();
                let ours = predict(&p, &fx, image);
                check_faces(faces(&ours), &reference, &format!("{model} {backend} {image}"));
            }
        }
    }
}

#[test]
fn mtcnn_cascade_finds_the_reference_faces() {
    let fx = fixtures_or_skip!();
    let exp = expected(&fx);
    let results = exp["models"]["models/face/mtcnn_{pnet,rnet,onet}.onnx"]["results"].as_object().unwrap();
    // The package names landmarks from the viewer's side: its left_eye is the subject's right.
    const NAMES: [(&str, &str); 5] = [
        ("left_eye", "eyeRight"),
        ("right_eye", "eyeLeft"),
        ("nose", "nose"),
        ("mouth_left", "mouthRight"),
        ("mouth_right", "mouthLeft"),
    ];
    for backend in backends() {
        let p = pipeline(&fx, "mtcnn", backend);
        for (image, r) in results {
            let reference: Vec<RefFace> = r["faces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let b = &f["box_xywh"];
                    let v = |i: usize| b[i].as_f64().unwrap() as f32;
                    let k = |key: &str, i: usize| f["keypoints"][key][i].as_f64().unwrap() as f32;
                    RefFace {
                        bbox: BBox::new(v(0), v(1), v(0) + v(2), v(1) + v(3)),
                        score: f["confidence"].as_f64().unwrap() as f32,
                        landmarks: NAMES.iter().map(|&(theirs, ours)| (ours, k(theirs, 0), k(theirs, 1))).collect(),
                    }
                })
                .collect();
            let ours = predict(&p, &fx, image);
            check_faces(faces(&ours), &reference, &format!("mtcnn {backend} {image}"));
        }
    }
}

#[test]
fn ppocr_reads_the_reference_lines_exactly() {
    let fx = fixtures_or_skip!();
    let exp = expected(&fx);
    let results =
        &exp["models"]["models/ocr/ch_PP-OCRv4_{det,rec}_infer.onnx + ch_ppocr_mobile_v2.0_cls_infer.onnx"]["results"];
    for backend in backends() {
        let p = pipeline(&fx, "ppocrv4", backend);
        for image in ["images/imageTextN.png", "images/page.png"] {
            let ours = predict(&p, &fx, image);
            let Answer::Text { lines } = &ours.answer else { panic!("not text") };
            let reference: Vec<&str> =
                results[image]["lines"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap()).collect();
            let read: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
            assert_eq!(read, reference, "{backend} {image}");
        }
    }
}
