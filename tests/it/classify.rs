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
