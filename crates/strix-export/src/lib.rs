//! ONNX export of the classifiers Strix trains with burn, and the gate every export passes.
//!
//! Burn has no ONNX exporter, so each architecture's forward pass is written out as ONNX nodes
//! here ([`arch`]), with the protobuf types of `tract-onnx`. Batch norms are kept as
//! `BatchNormalization` nodes (inference mode), the batch dimension is symbolic (`N`).
//!
//! An export is only kept when it passes the gate ([`gate::check`]): real validation images of
//! the run go through burn, tract and ONNX Runtime, and the logits must agree within
//! [`gate::ATOL`] + [`gate::RTOL`] x |logit|.
//!
//! ```no_run
//! let exported = strix_export::export_run("runs/trash".as_ref(), &strix_export::ExportOptions::default())?;
//! println!("{} ({})", exported.onnx.display(), exported.gate);
//! # Ok::<(), strix_export::ExportError>(())
//! ```

pub mod arch;
mod detect;
pub mod gate;
pub mod graph;
pub mod knn;
mod spec;

use std::path::{Path, PathBuf};

use prost::Message;
use strix_runtime::Backend;
use strix_train::Device;
use thiserror::Error;

pub use gate::{GateCheck, GateReport};
pub use spec::{embed_spec, model_spec, name_from_dir};

#[derive(Debug, Error)]
pub enum ExportError {
    #[error(transparent)]
    Train(#[from] strix_train::TrainError),
    #[error(transparent)]
    Runtime(#[from] strix_runtime::RuntimeError),
    #[error(transparent)]
    Core(#[from] strix_core::CoreError),
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("export gate: {0}")]
    Gate(String),
    #[error(
        "export gate failed: {backend} logits differ from burn's by {max_abs_diff:.3e} (image {image}, logit {class}), \
         {ratio:.2} times the tolerance |diff| <= {atol:.0e} + {rtol:.0e} x |logit| (burn's logits reach {scale:.3e}); \
         top-1 flips on {flips} images; the export was not kept"
    )]
    GateFailed {
        backend: Backend,
        max_abs_diff: f32,
        ratio: f32,
        image: usize,
        class: usize,
        atol: f32,
        rtol: f32,
        flips: usize,
        scale: f32,
        report: GateReport,
    },
    #[error("model spec: {0}")]
    Spec(String),
}

impl ExportError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
        move |e| ExportError::Io { path: path.to_path_buf(), reason: e.to_string() }
    }
}

/// Files of an export inside its folder.
pub const ONNX_FILE: &str = "model.onnx";
pub use strix_zoo::SPEC_FILE;
pub const GATE_FILE: &str = "gate.json";
/// The embed spec beside a classifier's export: its second output as an embedding.
pub const EMBED_SPEC_FILE: &str = "embed.toml";
/// Where `strix export RUN_DIR` writes by default: `RUN_DIR/export`.
pub const EXPORT_DIR: &str = "export";

#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Output folder; `RUN_DIR/export` when `None`.
    pub out_dir: Option<PathBuf>,
    /// Validation images the gate runs.
    pub gate_images: usize,
    pub tolerance: gate::Tolerance,
    /// Engines the gate runs besides burn.
    pub engines: gate::Engines,
    /// Name written into the spec; the run folder's name when `None`.
    pub name: Option<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            out_dir: None,
            gate_images: 16,
            tolerance: gate::Tolerance::default(),
            engines: gate::Engines::default(),
            name: None,
        }
    }
}

/// A gated export on disk.
#[derive(Clone, Debug)]
pub struct Exported {
    pub dir: PathBuf,
    pub onnx: PathBuf,
    pub spec: PathBuf,
    pub gate: GateReport,
}

/// Export the best model of a finished run to ONNX, with its spec, after the gate passed.
/// On a gate failure nothing is left in the output folder.
pub fn export_run(run_dir: &Path, options: &ExportOptions) -> Result<Exported, ExportError> {
    // A finished run's summary names its task and figures; a run still in progress has its
    // config's task and its best model so far, exported bare.
    let summary = strix_train::RunSummary::read_if_finished(run_dir)?;
    let task = match &summary {
        Some(s) => s.task,
        None => strix_train::files::saved_config(run_dir)?.task,
    };
    if task == strix_zoo::Task::Detect {
        return detect::export_detector(run_dir, summary.as_ref(), options);
    }
    let device = Device::flex();
    let (model, saved) = strix_train::classify::load_trained(run_dir, &device)?;
    let name = match &options.name {
        Some(n) => n.clone(),
        None => spec::name_from_dir(run_dir),
    };
    let mut metadata = vec![
        ("strix.arch".to_string(), saved.shape.arch.to_string()),
        ("strix.classes".to_string(), saved.classes.join("\n")),
    ];
    metadata.extend(run_metadata(summary.as_ref()));
    let proto = arch::classifier(&model, &saved.shape, &metadata);
    let bytes = proto.encode_to_vec();

    let dir = options.out_dir.clone().unwrap_or_else(|| run_dir.join(EXPORT_DIR));
    let (onnx, report) =
        write_gated(&dir, &bytes, |staging| gate_file(staging, run_dir, &model, &saved.shape, &device, options))?;
    let spec = model_spec(&name, &saved, &onnx)?;
    let embed = embed_spec(&spec)?;
    let exported = write_files(run_dir, dir, onnx, spec, report)?;
    let text = format!("# The embedding of {}'s export\n{}", run_dir.display(), embed.to_toml());
    write_atomic(&exported.dir.join(EMBED_SPEC_FILE), text.as_bytes())?;
    Ok(exported)
}

/// A finished run's figures as ONNX metadata (`strix.val`, `strix.test`).
pub(crate) fn run_metadata(summary: Option<&strix_train::RunSummary>) -> Vec<(String, String)> {
    let Some(summary) = summary else { return Vec::new() };
    let mut out = vec![("strix.val".to_string(), summary.val.to_string())];
    if let Some(t) = &summary.test {
        out.push(("strix.test".to_string(), t.to_string()));
    }
    out
}

/// Write `bytes` as the export's ONNX file if `gate` passes on it (it is gated as written,
/// under a temporary name, and takes its real name only then).
fn write_gated<R>(
    dir: &Path,
    bytes: &[u8],
    gate: impl FnOnce(&Path) -> Result<R, ExportError>,
) -> Result<(PathBuf, R), ExportError> {
    std::fs::create_dir_all(dir).map_err(ExportError::io(dir))?;
    let onnx = dir.join(ONNX_FILE);
    let staging = dir.join(format!(".{ONNX_FILE}.{}.tmp", std::process::id()));
    std::fs::write(&staging, bytes).map_err(ExportError::io(&staging))?;
    let report = match gate(&staging) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
    };
    std::fs::rename(&staging, &onnx).map_err(ExportError::io(&onnx))?;
    Ok((onnx, report))
}

/// The spec and the gate report beside a gated ONNX file.
fn write_files(
    run_dir: &Path,
    dir: PathBuf,
    onnx: PathBuf,
    spec: strix_zoo::ModelSpec,
    report: GateReport,
) -> Result<Exported, ExportError> {
    let spec_path = dir.join(SPEC_FILE);
    let text =
        format!("# Exported by strix {} from {}\n{}", env!("CARGO_PKG_VERSION"), run_dir.display(), spec.to_toml());
    write_atomic(&spec_path, text.as_bytes())?;
    let gate_path = dir.join(GATE_FILE);
    let json = serde_json::to_string_pretty(&report).map_err(|e| ExportError::Gate(format!("gate report: {e}")))?;
    write_atomic(&gate_path, json.as_bytes())?;
    Ok(Exported { dir, onnx, spec: spec_path, gate: report })
}

/// Run the gate on an ONNX file that claims to be `model`.
pub fn gate_file(
    onnx: &Path,
    run_dir: &Path,
    model: &strix_train::Classifier,
    shape: &strix_train::ModelShape,
    device: &Device,
    options: &ExportOptions,
) -> Result<GateReport, ExportError> {
    let (images, n) = strix_train::classify::validation_images(run_dir, options.gate_images)?;
    let (c, s) = (shape.channels, shape.image_size);
    let (logits, features) = model.logits_and_features(images.clone(), n, c, s, device);
    // The logits value for value; the embedding by direction, which is all a similarity reads
    // (its features reach 6 and more, where rounding alone passes the logits' tolerance).
    let report = gate::gate_outputs(
        onnx,
        &images,
        [n, c, s, s],
        gate::Expected { reference: &logits, top1: Some(shape.classes), every_output: false },
        &options.engines,
        options.tolerance,
        &mut |backend, outputs| gate::same_direction(backend, outputs.get(1), &features, n),
    )?;
    passed(report)
}

/// The report when every engine passed, else the failure naming the worst value.
fn passed(report: GateReport) -> Result<GateReport, ExportError> {
    match report.failure() {
        None => Ok(report),
        Some(f) => Err(ExportError::GateFailed {
            backend: f.backend,
            max_abs_diff: f.max_abs_diff,
            ratio: f.max_ratio,
            image: f.worst_image,
            class: f.worst_class,
            atol: report.atol,
            rtol: report.rtol,
            flips: f.top1_flips,
            scale: report.logit_scale,
            report: report.clone(),
        }),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    strix_train::checkpoint::write_atomic(path, bytes)?;
    Ok(())
}
