//! Every zoo classifier, on every backend, against onnxruntime + Pillow's answers in
//! expected.json (decode, preprocessing, inference and decoding together).

use std::path::Path;

use serde_json::Value;
use strix_core::NoProgress;
use strix_pipeline::{Answer, BatchOptions, Pipeline};
use strix_runtime::open;
use strix_vision::{DecodeLimits, decode_file};
use strix_zoo::{LocatedSpec, Resolver, Task, builtin};

use crate::fixtures_or_skip;
use crate::support::backends;

fn offline_resolver(fixtures: &Path, cache: &Path) -> Resolver {
    Resolver { cache_dir: cache.to_path_buf(), search_path: vec![fixtures.join("models")], hub: None, offline: true }
}

#[test]
fn zoo_classifiers_match_onnxruntime_top5_on_every_backend() {
    let fx = fixtures_or_skip!();
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(fx.join("expected.json")).unwrap()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let resolver = offline_resolver(&fx, cache.path());
    let mut checked = 0;
    for spec in builtin::all().unwrap().into_iter().filter(|s| s.task == Task::Classify) {
        let key = format!("models/{}", spec.weights.file);
        let results =
            expected["models"][&key]["results"].as_object().unwrap_or_else(|| panic!("no reference for {key}"));
        let located = LocatedSpec { spec: spec.clone(), base: None, origin: format!("zoo:{}", spec.name) };
        for backend in backends() {
            let model = resolver.resolve(&located, &NoProgress).unwrap();
            let runtime = open(backend, &crate::support::runtime_options()).unwrap();
            let pipeline = Pipeline::load(model, runtime.as_ref()).unwrap();
            let images: Vec<_> =
                results.keys().map(|k| decode_file(&fx.join(k), &DecodeLimits::default()).unwrap()).collect();
            let predictions =
                pipeline.predict_images(&images, &BatchOptions { top_k: 5, ..Default::default() }).unwrap();
            for ((image, reference), prediction) in results.iter().zip(&predictions) {
                let Answer::Labels { classes } = &prediction.answer else { panic!("not labels") };
                let top5 = reference["top5"].as_array().unwrap();
                let want: Vec<u64> = top5.iter().map(|t| t["class_id"].as_u64().unwrap()).collect();
                let got: Vec<u64> = classes.iter().map(|c| c.class_id as u64).collect();
                assert_eq!(got, want, "{} {backend} {image}: top-5 ids", spec.name);
                for (c, t) in classes.iter().zip(top5) {
                    let p = t["prob"].as_f64().unwrap() as f32;
                    assert!(
                        (c.score - p).abs() <= 0.01,
                        "{} {backend} {image}: class {} prob {} vs {p}",
                        spec.name,
                        c.class_id,
                        c.score
                    );
                    assert_eq!(c.label, t["label"].as_str().unwrap());
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 12, "only {checked} image checks ran");
}

#[test]
fn files_are_predicted_in_order_with_failures_in_place() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    let located = strix_zoo::locate("efficientnet_lite0", &crate::support::empty_home()).unwrap();
    let model = offline_resolver(&fx, cache.path()).resolve(&located, &NoProgress).unwrap();
    let runtime = open(strix_runtime::Backend::Tract, &crate::support::runtime_options()).unwrap();
    let pipeline = Pipeline::load(model, runtime.as_ref()).unwrap();
    let files = vec![
        fx.join("images/coffee.png"),
        fx.join("images/does-not-exist.jpg"),
        fx.join("images/baboon.jpg"),
        fx.join("MANIFEST.md"),
        fx.join("images/squirrel_cls.jpg"),
    ];
    let mut seen = Vec::new();
    // Two workers on the real engine, with failures between successes.
    let opts = BatchOptions { top_k: 1, workers: Some(2), ..Default::default() };
    pipeline.predict_files(&files, &opts, &NoProgress, |o| {
        let top = o.result.as_ref().ok().map(|p| match &p.answer {
            Answer::Labels { classes } => classes[0].class_id,
            other => panic!("not labels: {other:?}"),
        });
        seen.push((o.index, top));
    });
    assert_eq!(seen, vec![(0, Some(967)), (1, None), (2, Some(372)), (3, None), (4, Some(335))]);
}

/// The embedding model reads EfficientNet-Lite0's pooled features out of the same weights (an
/// inner tensor made an output on load): the classifier's last layer applied to them gives the
/// onnxruntime reference logits, on every backend. Through the zoo and the CLI the vector has
/// unit length, and a tensor the graph does not make is refused by name.
#[test]
fn efficientnet_embedding_is_the_pooled_features_the_reference_logits_come_from() {
    use prost::Message;
    let fx = fixtures_or_skip!();
    let (shape, input) = crate::support::read_npy(&fx.join("reference/efficientnet_lite0__chelsea__input.npy"));
    let (_, logits) = crate::support::read_npy(&fx.join("reference/efficientnet_lite0__chelsea__logits.npy"));
    let onnx = fx.join("models/classify/efficientnet_lite0.onnx");
    let model = tract_onnx::pb::ModelProto::decode(std::fs::read(&onnx).unwrap().as_slice()).unwrap();
    let graph = model.graph.unwrap();
    let init = |name: &str| {
        let t = graph.initializer.iter().find(|t| t.name == name).unwrap();
        strix_runtime::initializer::float_tensor(t).unwrap().data
    };
    let (w, b) = (init("fc_w"), init("fc_b"));
    for backend in backends() {
        let runtime = open(backend, &crate::support::runtime_options()).unwrap();
        let session = runtime.load_with_outputs(&onnx, &["flat".to_string()]).unwrap();
        let names: Vec<&str> = session.outputs().iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["logits", "flat"], "{backend}");
        let out = session.run(&[strix_core::Tensor::from_f32(shape.clone(), input.clone()).unwrap()]).unwrap();
        let flat = out[1].to_f32_vec();
        assert_eq!(flat.len(), 1280, "{backend}");
        let ours: Vec<f32> = (0..1000)
            .map(|j| b[j] + flat.iter().zip(&w[j * 1280..(j + 1) * 1280]).map(|(x, y)| x * y).sum::<f32>())
            .collect();
        let diff = crate::support::max_abs_diff(&ours, &logits);
        assert!(diff < 1e-3, "{backend}: pooled features x fc give logits {diff} off the reference");
        let e = runtime.load_with_outputs(&onnx, &["no_such_tensor".to_string()]).err().unwrap();
        let text = format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default());
        assert!(text.contains("no_such_tensor"), "{text}");
    }

    let cache = tempfile::tempdir().unwrap();
    let photo = fx.join("images/baboon.jpg");
    let mut cmd = crate::support::strix(&fx, cache.path());
    let (o, out, err) = crate::support::run(cmd.args(["predict", "--task", "embed", "--json"]).arg(&photo));
    assert!(o.status.success(), "{err}");
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    let vector: Vec<f64> = line["Embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!((vector.len(), line["Dimensions"].as_u64()), (1280, Some(1280)), "{out}");
    let norm = vector.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    assert_eq!(line["EmbeddingModelVersion"], "efficientnet_lite0_embed");
    let (o, text, err) =
        crate::support::run(crate::support::strix(&fx, cache.path()).args(["predict", "--task", "embed"]).arg(&photo));
    assert!(o.status.success() && text.contains("embedding of 1280 values, unit length"), "{text}{err}");
    let mut cmd = crate::support::strix(&fx, cache.path());
    let (o, _, err) = crate::support::run(cmd.args(["stream", "--task", "embed"]).arg(fx.join("images")));
    assert!(!o.status.success() && err.contains("embedding"), "{err}");
}
