//! Request bodies `strix serve` reads, through its real router and a real model
//! (EfficientNet-Lite0 on tract): KServe v2 JSON and binary tensors, Rekognition's and
//! SageMaker's JSON, raw image bodies. No route parses multipart: SageMaker's is refused at its
//! content type (one variant keeps that refusal covered). Any 500 is a bug.
#![no_main]
use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use strix_catalog::{Catalog, Defaults, Engine, Layer, Settings};
use strix_runtime::{Backend, RuntimeOptions};
use strix_serve::{Batching, Limits, ServeState, ServedModel};

const MODEL: &str = "efficientnet_lite0";

static SERVER: LazyLock<(tokio::runtime::Runtime, axum::Router)> = LazyLock::new(|| {
    let home = std::env::temp_dir().join("strix-fuzz-serve");
    let layer = Layer {
        model_path: Some(vec![strix_fuzz::fixtures().join("models")]),
        offline: Some(true),
        ..Layer::default()
    };
    let defaults = Defaults { home: home.clone(), cache_dir: home.join("cache") };
    let catalog = Catalog::open(Settings::from_layers(vec![layer], defaults, Vec::new()));
    let model = catalog.resolve(MODEL, &strix_core::NoProgress).expect("the fixture model resolves");
    let engine = Engine::new(Backend::Tract, RuntimeOptions { threads: Some(1), ..RuntimeOptions::default() });
    let pipeline = engine.load(model).expect("the fixture model loads");
    let served = ServedModel::new(MODEL, MODEL, pipeline, Batching::default(), 5);
    let state = Arc::new(ServeState::new(vec![served], Limits::default()));
    let rt = strix_fuzz::runtime();
    let app = rt.block_on(async { strix_serve::app(state) });
    (rt, app)
});

/// Content types a client may send SageMaker's route; multipart is refused unread.
const TYPES: &[&str] =
    &["image/jpeg", "application/octet-stream", "application/json", "multipart/form-data; boundary=x"];

fuzz_target!(|data: &[u8]| {
    let (rt, app) = &*SERVER;
    let Some((route, rest)) = strix_fuzz::pick(data, 4) else { return };
    let infer = format!("/v2/models/{MODEL}/infer");
    let request = Request::post(match route {
        0 | 1 => infer.as_str(),
        2 => "/",
        _ => "/invocations",
    })
    .header("host", "127.0.0.1");
    let (request, body) = match route {
        // KServe v2: JSON, or JSON followed by binary tensors (its length in a header).
        0 => (request.header("content-type", "application/json"), rest),
        1 => {
            let Some((&n, rest)) = rest.split_first() else { return };
            (request.header("inference-header-content-length", (n as usize * 4).to_string()), rest)
        }
        // Rekognition DetectLabels.
        2 => (
            request
                .header("x-amz-target", "RekognitionService.DetectLabels")
                .header("content-type", "application/x-amz-json-1.1"),
            rest,
        ),
        // SageMaker: the body as each content type.
        _ => {
            let Some((&t, rest)) = rest.split_first() else { return };
            (request.header("content-type", TYPES[t as usize % TYPES.len()]), rest)
        }
    };
    let request = request.body(Body::from(body.to_vec())).expect("a request");
    strix_fuzz::answer(rt, app, request);
});
