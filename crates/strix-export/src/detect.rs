//! Export of a trained detector: the ONNX graph the `nanodet` decoder reads, a spec whose
//! preprocessing is the one training evaluated with, and a gate on raw outputs and on the
//! decoded detections.

use std::path::Path;

use prost::Message;
use rayon::prelude::*;
use strix_core::Detection;
use strix_train::Device;
use strix_train::detect::SavedDetector;
use strix_train::detect::eval::run_batch;
use strix_vision::{DecodeLimits, Geometry, Outputs, Preprocessor};
use strix_zoo::{Artifact, DecoderSpec, LabelsSpec, ModelSpec, Task, check_name};

use crate::{ExportError, ExportOptions, Exported, GateReport, arch, gate, passed, spec, write_files, write_gated};

/// A decoded box may move this far (input pixels) between burn and an engine.
const BOX_TOLERANCE: f32 = 0.05;

pub fn export_detector(
    run_dir: &Path,
    summary: Option<&strix_train::RunSummary>,
    options: &ExportOptions,
) -> Result<Exported, ExportError> {
    let device = Device::flex();
    let (model, saved) = strix_train::detect::load_trained(run_dir, &device)?;
    let name = options.name.clone().unwrap_or_else(|| spec::name_from_dir(run_dir));
    let mut metadata = vec![
        ("strix.arch".to_string(), saved.shape.arch.to_string()),
        ("strix.task".to_string(), "detect".to_string()),
        ("strix.classes".to_string(), saved.classes.join("\n")),
    ];
    metadata.extend(crate::run_metadata(summary));
    let bytes = arch::detector(&model, &saved.shape, &metadata).encode_to_vec();
    let dir = options.out_dir.clone().unwrap_or_else(|| run_dir.join(crate::EXPORT_DIR));
    let (onnx, report) = write_gated(&dir, &bytes, |staging| gate_detector(staging, run_dir, &model, &saved, options))?;
    let spec = detector_spec(&name, &saved, &onnx)?;
    write_files(run_dir, dir, onnx, spec, report)
}

/// Validation images of the run, preprocessed as the spec says, spread over the set.
fn gate_images(run_dir: &Path, saved: &SavedDetector, count: usize) -> Result<(Vec<f32>, Vec<Geometry>), ExportError> {
    let (_, val) = strix_train::detect::validation_set(run_dir)?;
    let pre =
        Preprocessor::new(&saved.input_spec(), &saved.preprocess).map_err(|e| ExportError::Spec(e.to_string()))?;
    let len = val.images.len();
    let n = count.min(len).max(1);
    let picked: Vec<(Vec<f32>, Geometry)> = (0..n)
        .into_par_iter()
        .filter_map(|i| {
            let img = strix_vision::decode_file(&val.images[i * len / n].path, &DecodeLimits::default()).ok()?;
            let mut px = vec![0f32; pre.sample_len()];
            let g = pre.run(&img, &mut px);
            Some((px, g))
        })
        .collect();
    if picked.is_empty() {
        return Err(ExportError::Gate(format!("{}: no readable validation images", run_dir.display())));
    }
    let (px, geometries): (Vec<Vec<f32>>, Vec<Geometry>) = picked.into_iter().unzip();
    Ok((px.concat(), geometries))
}

fn gate_detector(
    onnx: &Path,
    run_dir: &Path,
    model: &strix_train::detect::Detector,
    saved: &SavedDetector,
    options: &ExportOptions,
) -> Result<GateReport, ExportError> {
    let (images, geometries) = gate_images(run_dir, saved, options.gate_images)?;
    let n = geometries.len();
    let (w, h) = saved.shape.input;
    let (names, reference) = run_batch(model, saved, images.clone(), n, &Device::flex())?;
    // Evaluation's low threshold: the gate compares many more boxes than deployment keeps.
    let decoder = saved.eval_decoder();
    let decode = |tensors: &[strix_core::Tensor]| {
        decoder
            .decode(&Outputs::new(&names, tensors), &geometries, (w as u32, h as u32), &saved.classes)
            .map_err(|e| ExportError::Gate(format!("decoding: {e}")))
    };
    let want = decode(&reference)?;
    let flat: Vec<f32> = reference.iter().flat_map(strix_core::Tensor::to_f32_vec).collect();
    let report = gate::check_outputs(
        onnx,
        &images,
        [n, 3, h, w],
        &flat,
        None,
        &options.engines,
        options.tolerance,
        &mut |backend, outputs| same_detections(&backend.to_string(), &want, &decode(outputs)?),
    )?;
    // Detections were compared (by `inspect`) only on engines whose values passed.
    let detections_equal = report.passed().then_some(true);
    passed(GateReport { detections_equal, ..report })
}

/// Burn's detections and an engine's must be the same boxes, classes and scores.
fn same_detections(engine: &str, want: &[Vec<Detection>], got: &[Vec<Detection>]) -> Result<(), ExportError> {
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        if w.len() != g.len() {
            return Err(ExportError::Gate(format!(
                "{engine} finds {} objects on gate image {i}, burn {}; the export was not kept",
                g.len(),
                w.len()
            )));
        }
        for (a, b) in w.iter().zip(g) {
            let moved = [a.bbox.x1 - b.bbox.x1, a.bbox.y1 - b.bbox.y1, a.bbox.x2 - b.bbox.x2, a.bbox.y2 - b.bbox.y2]
                .iter()
                .fold(0f32, |m, d| m.max(d.abs()));
            if a.class_id != b.class_id || moved > BOX_TOLERANCE || (a.score - b.score).abs() > 1e-3 {
                return Err(ExportError::Gate(format!(
                    "{engine} decodes {} {:.3} at {:?} on gate image {i} where burn has {} {:.3} at {:?}",
                    b.label, b.score, b.bbox, a.label, a.score, a.bbox
                )));
            }
        }
    }
    Ok(())
}

/// The spec of an exported detector: the run's evaluation preprocessing and filtering, the
/// class names, the `nanodet` decoder over the export's outputs.
fn detector_spec(name: &str, saved: &SavedDetector, onnx: &Path) -> Result<ModelSpec, ExportError> {
    check_name(name).map_err(ExportError::Spec)?;
    let (sha256, size_bytes) = strix_core::digest::sha256_file(onnx)
        .map_err(|e| ExportError::Io { path: onnx.to_path_buf(), reason: e.to_string() })?;
    let spec = ModelSpec {
        name: name.to_string(),
        task: Task::Detect,
        summary: format!(
            "{} detector ({}x{}) trained by strix on {} classes",
            saved.shape.arch,
            saved.shape.input.0,
            saved.shape.input.1,
            saved.classes.len()
        ),
        license: None,
        source: Some(format!("strix {} export", env!("CARGO_PKG_VERSION"))),
        weights: Artifact { file: crate::ONNX_FILE.into(), sha256: Some(sha256), url: None, size: Some(size_bytes) },
        networks: Default::default(),
        labels: Some(LabelsSpec { file: None, sha256: None, url: None, names: saved.classes.clone() }),
        input: Some(saved.input_spec()),
        preprocess: Some(saved.preprocess.clone()),
        decoder: DecoderSpec::Nanodet(saved.decoder()),
        describe: None,
    };
    ModelSpec::from_toml(&spec.to_toml(), name).map_err(|e| ExportError::Spec(e.to_string()))
}
