//! Both runtimes against onnxruntime's reference tensors: this isolates the engines from
//! the preprocessing.

use strix_core::{Dim, Tensor, TensorData};
use strix_runtime::{Backend, RuntimeError, RuntimeOptions, open};

use crate::fixtures_or_skip;
use crate::support::{backends, max_abs_diff, read_npy};

#[test]
fn efficientnet_reference_input_gives_reference_logits_on_every_backend() {
    let fx = fixtures_or_skip!();
    let (shape, input) = read_npy(&fx.join("reference/efficientnet_lite0__chelsea__input.npy"));
    let (_, logits) = read_npy(&fx.join("reference/efficientnet_lite0__chelsea__logits.npy"));
    for backend in backends() {
        let runtime = open(backend, &RuntimeOptions { threads: Some(2), ..crate::support::runtime_options() }).unwrap();
        let session = runtime.load(&fx.join("models/classify/efficientnet_lite0.onnx")).unwrap();
        assert_eq!(session.inputs()[0].name, "input");
        assert_eq!(session.inputs()[0].shape, vec![Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(224), Dim::Fixed(224)]);
        assert_eq!(session.outputs()[0].name, "logits");
        let out = session.run(&[Tensor::from_f32(shape.clone(), input.clone()).unwrap()]).unwrap();
        assert_eq!(out[0].shape(), &[1, 1000]);
        let diff = max_abs_diff(out[0].as_f32().unwrap(), &logits);
        assert!(diff < 1e-4, "{backend}: max |logit - reference| = {diff}");
    }
}

#[test]
fn symbolic_dims_are_described_and_run_with_any_size() {
    // MTCNN's P-Net takes [N, W, H, 3] with every spatial size open.
    let fx = fixtures_or_skip!();
    let (shape, input) = read_npy(&fx.join("reference/mtcnn_pnet__astronaut__input.npy"));
    let (_, boxes) = read_npy(&fx.join("reference/mtcnn_pnet__astronaut__conv2d_4.npy"));
    for backend in backends() {
        let runtime = open(backend, &crate::support::runtime_options()).unwrap();
        let session = runtime.load(&fx.join("models/face/mtcnn_pnet.onnx")).unwrap();
        let dims = &session.inputs()[0].shape;
        assert!(matches!(dims[0], Dim::Symbolic(_)) && dims[3] == Dim::Fixed(3), "{backend}: {dims:?}");
        let input = [Tensor::from_f32(shape.clone(), input.clone()).unwrap()];
        let out = session.run(&input).unwrap();
        let diff = max_abs_diff(out[0].as_f32().unwrap(), &boxes);
        assert!(diff < 1e-4, "{backend}: {diff}");
        // Lent in place: both outputs, in the declared order, with the same values.
        assert_eq!(out.len(), 2);
        let mut lent = Vec::new();
        session
            .run_borrowed(&input, session.default_threads(), &mut |views| {
                lent = views.iter().map(|v| v.to_tensor()).collect();
            })
            .unwrap();
        assert_eq!(lent.len(), out.len(), "{backend}");
        for (a, b) in lent.iter().zip(&out) {
            assert_eq!(a.shape(), b.shape(), "{backend}");
            assert!(max_abs_diff(a.as_f32().unwrap(), b.as_f32().unwrap()) < 1e-6, "{backend}");
        }
    }
}

#[test]
fn graphs_tract_cannot_type_symbolically_are_planned_per_shape() {
    // PP-OCRv4 detection only types in tract once H and W are known.
    let fx = fixtures_or_skip!();
    let (shape, input) = read_npy(&fx.join("reference/ppocrv4_det__imageTextN__input.npy"));
    let (_, prob) = read_npy(&fx.join("reference/ppocrv4_det__imageTextN__prob.npy"));
    let runtime = open(Backend::Tract, &crate::support::runtime_options()).unwrap();
    let session = runtime.load(&fx.join("models/ocr/ch_PP-OCRv4_det_infer.onnx")).unwrap();
    let tensor = Tensor::from_f32(shape, input).unwrap();
    for _ in 0..2 {
        // The second run reuses the cached plan.
        let out = session.run(std::slice::from_ref(&tensor)).unwrap();
        let diff = max_abs_diff(out[0].as_f32().unwrap(), &prob);
        assert!(diff < 1e-3, "{diff}");
    }
}

#[test]
fn integer_inputs_run() {
    // MoveNet takes int32 pixels.
    let fx = fixtures_or_skip!();
    let (shape, input) = read_npy(&fx.join("reference/movenet_lightning_192__astronaut__input.npy"));
    let (_, keypoints) = read_npy(&fx.join("reference/movenet_lightning_192__astronaut__output.npy"));
    let ints: Vec<i32> = input.iter().map(|&v| v as i32).collect();
    for backend in backends() {
        let session = open(backend, &crate::support::runtime_options())
            .unwrap()
            .load(&fx.join("models/pose/movenet_lightning_192.onnx"))
            .unwrap();
        let out = session.run(&[Tensor::new(shape.clone(), TensorData::I32(ints.clone())).unwrap()]).unwrap();
        let diff = max_abs_diff(out[0].as_f32().unwrap(), &keypoints);
        assert!(diff < 1e-4, "{backend}: {diff}");
    }
}

#[test]
fn wrong_inputs_and_files_are_clear_errors() {
    let fx = fixtures_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"this is not a protobuf").unwrap();
    for backend in backends() {
        let runtime = open(backend, &crate::support::runtime_options()).unwrap();
        let missing = runtime.load(&dir.path().join("nope.onnx")).err().expect("missing file must fail");
        assert!(matches!(missing, RuntimeError::ModelMissing { .. }), "{backend}: {missing}");
        let bad = runtime.load(&garbage).err().expect("garbage must fail");
        assert!(matches!(bad, RuntimeError::Load { .. }), "{backend}: {bad}");
        assert!(bad.to_string().contains("garbage.onnx"), "{backend}: {bad}");

        let session = runtime.load(&fx.join("models/classify/efficientnet_lite0.onnx")).unwrap();
        let wrong = Tensor::from_f32(vec![1, 3, 200, 200], vec![0.0; 3 * 200 * 200]).unwrap();
        let err = session.run(&[wrong]).unwrap_err().to_string();
        assert!(err.contains("input") && err.contains("1,3,224,224") && err.contains("200"), "{backend}: {err}");
    }
}

#[cfg(feature = "ort")]
#[test]
fn ort_without_library_says_how_to_get_it() {
    let err = open(
        Backend::Ort,
        &RuntimeOptions { ort_library: Some("/nonexistent/libonnxruntime.so".into()), ..Default::default() },
    )
    .err()
    .expect("must fail");
    assert!(err.to_string().contains("/nonexistent/libonnxruntime.so"), "{err}");
}
