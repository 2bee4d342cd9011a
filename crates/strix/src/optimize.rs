//! `strix models optimize MODEL --int8 --calibration DIR --name NAME`: quantise, gate, register.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::json;
use strix_export::SPEC_FILE;
use strix_registry::{Lineage, NewFile};

use crate::cli::{CalibrationMethod, OptimizeArgs};
use crate::context::AppContext;
use crate::registry::Registration;

/// The int8 model's file inside its version.
const INT8_FILE: &str = "model.int8.onnx";
/// The quantisation's settings and gate figures, kept beside the model.
const REPORT_FILE: &str = "quantization.json";
/// Without --holdout, every this-many-th calibration image is held out for the gate.
const HOLD_OUT_EVERY: usize = 4;

pub fn run(ctx: &AppContext, args: &OptimizeArgs) -> Result<ExitCode> {
    crate::registry::check_target(&args.name, &args.aliases)?;
    let settings = settings(args)?;
    let images = images(args)?;
    let bars = ctx.bars();
    let model = ctx.catalog().resolve(&args.model, &bars)?;
    let parent = model.version.as_ref().map_or_else(|| model.spec.name.clone(), ToString::to_string);
    let engine = ctx.engine(&args.runtime);
    let runtime = engine.runtime()?;
    let staging = tempfile::tempdir().context("temporary folder")?;
    let out = staging.path().join(INT8_FILE);
    if !ctx.quiet {
        eprintln!(
            "quantising {parent} to int8 on {}: {} calibration images ({}), {} held out",
            engine.backend,
            images.calibration.len(),
            settings.method.describe(),
            images.held_out.len()
        );
    }
    let quantized = match strix_optimize::quantize(&model, runtime.as_ref(), &images, &settings, &out, &bars) {
        Err(strix_optimize::OptimizeError::GateFailed(report)) => {
            for d in &report.disagreements {
                eprintln!("  differs: {}: float {}, int8 {}", d.image, d.float, d.int8);
            }
            bail!(
                "the int8 model is refused and nothing was registered: {}\n  (calibrate on images like the ones \
                 the model will see, more of them, or try --calibrate minmax)",
                report.summary()
            );
        }
        other => other?,
    };
    if !ctx.quiet {
        eprintln!("gate passed: {}", quantized.gate.summary());
    }
    let (spec_path, report_path) = write_companions(&model, &quantized, &settings, staging.path())?;
    let lineage = lineage(&model, &parent, &images, &settings, &quantized)?;
    let extra = vec![NewFile { file: REPORT_FILE.into(), path: report_path }];
    let files = Registration { onnx: &quantized.onnx, spec: &spec_path, lineage, extra };
    let record = crate::registry::register_files(ctx, &args.name, files, &args.aliases, &args.runtime)?;
    crate::registry::print_registered(ctx, &record, args.json)
}

fn settings(args: &OptimizeArgs) -> Result<strix_optimize::Settings> {
    if !(0.0..=100.0).contains(&args.min_agreement) {
        bail!("--min-agreement is a percentage: 0 to 100, not {}", args.min_agreement);
    }
    let method = match args.calibrate {
        CalibrationMethod::Minmax => strix_optimize::Method::MinMax,
        CalibrationMethod::Percentile => {
            if !(args.percentile > 50.0 && args.percentile <= 100.0) {
                bail!("--percentile keeps that share of values: more than 50 and at most 100, not {}", args.percentile);
            }
            strix_optimize::Method::Percentile { percentile: args.percentile }
        }
    };
    Ok(strix_optimize::Settings { method, min_agreement: args.min_agreement / 100.0 })
}

/// The calibration and held-out image lists, refused here, before the model is even resolved,
/// when they cannot work: a folder with no images, fewer held-out images than the gate needs
/// ([`strix_optimize::MIN_HELD_OUT`]), or held-out images that are calibration images.
fn images(args: &OptimizeArgs) -> Result<strix_optimize::Images> {
    let list = |dir: &Path, flag: &str| -> Result<Vec<PathBuf>> {
        if !dir.is_dir() {
            bail!("{flag} {}: no such folder", dir.display());
        }
        let (files, problems) = crate::inputs::expand(&[dir.to_path_buf()]);
        if let Some((path, why)) = problems.first() {
            bail!("{flag} {}: {why}", path.display());
        }
        Ok(files)
    };
    let min = strix_optimize::MIN_HELD_OUT;
    let mut calibration = list(&args.calibration, "--calibration")?;
    let held_out = match &args.holdout {
        Some(dir) => {
            if same_folder(dir, &args.calibration) {
                bail!(
                    "--holdout {} is the --calibration folder: the gate must check the int8 model on images it \
                     was not calibrated on; give a folder of other images (at least {min}), or leave --holdout \
                     out to hold out every {HOLD_OUT_EVERY}th calibration image",
                    dir.display()
                );
            }
            let held_out = list(dir, "--holdout")?;
            if held_out.len() < min {
                bail!(
                    "--holdout {} has {} images: the gate needs at least {min} held-out images for its agreement \
                     to mean something",
                    dir.display(),
                    held_out.len()
                );
            }
            held_out
        }
        None => {
            if calibration.len() / HOLD_OUT_EVERY < min {
                bail!(
                    "--calibration {} has {} images: too few to hold out every {HOLD_OUT_EVERY}th for the gate, \
                     which needs at least {min} held-out images; add images (at least {}) or pass --holdout DIR \
                     with at least {min} others",
                    args.calibration.display(),
                    calibration.len(),
                    min * HOLD_OUT_EVERY
                );
            }
            let (held, kept): (Vec<_>, Vec<_>) =
                calibration.drain(..).enumerate().partition(|(i, _)| i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1);
            calibration = kept.into_iter().map(|(_, p)| p).collect();
            held.into_iter().map(|(_, p)| p).collect()
        }
    };
    let images = strix_optimize::Images { calibration, held_out, limits: Default::default() };
    // Files in both sets (a link, a sub-folder, a copy under another name): refused by the
    // library as well, but here it is said before the model is resolved.
    images.check().with_context(|| {
        let held = args.holdout.as_deref().unwrap_or(&args.calibration);
        format!("--holdout {} against --calibration {}", held.display(), args.calibration.display())
    })?;
    Ok(images)
}

/// Whether two paths name one folder (links and `..` resolved).
fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The int8 model's spec (the float one's, weights renamed, labels inside) and the report.
fn write_companions(
    model: &strix_zoo::ResolvedModel,
    quantized: &strix_optimize::Quantized,
    settings: &strix_optimize::Settings,
    dir: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let (mut spec, _) = strix_zoo::store::package(model)?;
    spec.weights.file = INT8_FILE.into();
    spec.weights.sha256 = None;
    spec.weights.size = None;
    let spec_path = dir.join(SPEC_FILE);
    std::fs::write(&spec_path, spec.to_toml()).with_context(|| spec_path.display().to_string())?;
    let report_path = dir.join(REPORT_FILE);
    let report = json!({ "settings": settings, "rewrite": quantized.rewrite, "gate": quantized.gate });
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| report_path.display().to_string())?;
    Ok((spec_path, report_path))
}

/// Parent, calibration set, settings and gate figures.
fn lineage(
    model: &strix_zoo::ResolvedModel,
    parent: &str,
    images: &strix_optimize::Images,
    settings: &strix_optimize::Settings,
    quantized: &strix_optimize::Quantized,
) -> Result<Lineage> {
    let (sha256, _) = strix_core::digest::sha256_file(&model.weights)
        .with_context(|| format!("{}: cannot read", model.weights.display()))?;
    Ok(Lineage {
        source: format!("int8 quantisation of {parent}"),
        parent: Some(json!({ "model": parent, "sha256": sha256 })),
        dataset: Some(json!({
            "calibration": set_digest(&images.calibration)?,
            "held_out": set_digest(&images.held_out)?,
        })),
        config: Some(json!({ "quantization": settings, "rewrite": quantized.rewrite })),
        gate: Some(serde_json::to_value(&quantized.gate)?),
        metrics: Some({
            let mut metrics = json!({ "agreement": quantized.gate.agreement, "speedup": quantized.gate.speedup() });
            if let Some(kl) = quantized.gate.mean_kl {
                metrics["mean_kl"] = json!(kl);
            }
            metrics
        }),
        tuning: None,
    })
}

/// Count and digest of an image set: sha256 over the sorted content digests, so the same
/// images give the same digest wherever they are.
fn set_digest(files: &[PathBuf]) -> Result<serde_json::Value> {
    let mut digests = files
        .iter()
        .map(|f| Ok(strix_core::digest::sha256_file(f).with_context(|| f.display().to_string())?.0))
        .collect::<Result<Vec<String>>>()?;
    digests.sort();
    Ok(json!({ "images": files.len(), "sha256": strix_core::digest::sha256_hex(digests.join("\n").as_bytes()) }))
}
