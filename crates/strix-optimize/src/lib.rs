//! Model optimisation: static post-training int8 quantisation of an ONNX model, and the gate
//! the quantised model must pass before anyone runs it.
//!
//! [`quantize`] reads a float model, runs it over calibration images to learn the range of
//! every activation it quantises ([`calibrate`]), writes a QDQ graph ([`graph`]: uint8
//! activations, int8 per-channel convolution weights, int32 biases) and checks it on held-out
//! images against the float model ([`gate`]): a classifier's top-1 answers must agree, a
//! detector's boxes must match. The engine's speed on both models is measured on the same
//! images, so the report says what the quantisation bought.
//!
//! ```no_run
//! # fn demo(model: strix_zoo::ResolvedModel, runtime: &dyn strix_runtime::Runtime) -> Result<(), strix_optimize::OptimizeError> {
//! let images = strix_optimize::Images { calibration: vec!["calib/a.jpg".into()], held_out: vec!["held/b.jpg".into()], ..Default::default() };
//! let q = strix_optimize::quantize(&model, runtime, &images, &strix_optimize::Settings::default(), "model.int8.onnx".as_ref(), &strix_core::NoProgress)?;
//! println!("{}", q.gate.summary());
//! # Ok(()) }
//! ```

pub mod calibrate;
mod error;
pub mod gate;
pub mod graph;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use prost::Message;
use strix_core::{Progress, ProgressUnit, Tensor};
use strix_pipeline::{Pipeline, Prepared};
use strix_runtime::Runtime;
use strix_vision::{DecodeLimits, RgbImage};
use strix_zoo::ResolvedModel;
use tract_onnx::pb::ModelProto;

pub use calibrate::Method;
pub use error::OptimizeError;
pub use gate::GateReport;
pub use graph::Rewrite;

/// How to quantise and what the result must reach.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Settings {
    pub method: Method,
    /// Least share (0..=1) of held-out images on which the int8 model must agree with the float
    /// one: the same top-1 class, or (detectors) the same boxes.
    pub min_agreement: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { method: Method::Percentile { percentile: 99.999 }, min_agreement: 0.97 }
    }
}

/// The images a quantisation reads.
#[derive(Clone, Debug, Default)]
pub struct Images {
    /// Images whose activations set the ranges.
    pub calibration: Vec<PathBuf>,
    /// Images the gate compares the two models on (none of the calibration ones).
    pub held_out: Vec<PathBuf>,
    pub limits: DecodeLimits,
}

/// Fewest held-out images the gate decides on. On fewer, one image swings the agreement by
/// more than 5 points and a pass says little: one image of one agreeing is "100%".
pub const MIN_HELD_OUT: usize = 20;

impl Images {
    /// Refuse sets the gate cannot judge by, before any work: fewer than [`MIN_HELD_OUT`]
    /// held-out images, or a held-out image that is also a calibration image (the same file,
    /// or the same bytes under another name), which would check the int8 model on what it was
    /// calibrated on.
    pub fn check(&self) -> Result<(), OptimizeError> {
        if self.held_out.len() < MIN_HELD_OUT {
            return Err(OptimizeError::HeldOut(format!(
                "{} given, at least {MIN_HELD_OUT} needed for the gate's agreement to mean something",
                self.held_out.len()
            )));
        }
        if let Some((held, calibration, how)) = overlap(&self.calibration, &self.held_out)? {
            return Err(OptimizeError::HeldOut(format!(
                "{} is also calibration image {} ({how}): the int8 model must be checked on images it \
                 was not calibrated on",
                held.display(),
                calibration.display()
            )));
        }
        Ok(())
    }
}

/// The first held-out image that is also a calibration image, that calibration image, and how
/// they are the same.
fn overlap<'a>(
    calibration: &'a [PathBuf],
    held_out: &'a [PathBuf],
) -> Result<Option<(&'a Path, &'a Path, &'static str)>, OptimizeError> {
    // The same file: canonical paths resolve links, `.` and `..`.
    let canonical = |p: &Path| p.canonicalize().map_err(OptimizeError::io(p));
    let mut by_path = HashMap::new();
    for c in calibration {
        by_path.insert(canonical(c)?, c.as_path());
    }
    for h in held_out {
        if let Some(c) = by_path.get(&canonical(h)?) {
            return Ok(Some((h.as_path(), *c, "the same file")));
        }
    }
    // The same bytes (a copy): only files of a size found in both sets are read and hashed.
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(OptimizeError::io(p));
    let mut by_size: HashMap<u64, Vec<&Path>> = HashMap::new();
    for c in calibration {
        by_size.entry(size(c)?).or_default().push(c);
    }
    let mut digests: HashMap<&Path, String> = HashMap::new();
    let mut digest = |p: &'a Path| -> Result<String, OptimizeError> {
        if let Some(d) = digests.get(p) {
            return Ok(d.clone());
        }
        let (d, _) = strix_core::digest::sha256_file(p).map_err(OptimizeError::io(p))?;
        digests.insert(p, d.clone());
        Ok(d)
    };
    for h in held_out {
        let Some(same_size) = by_size.get(&size(h)?) else { continue };
        let wanted = digest(h)?;
        for &c in same_size {
            if digest(c)? == wanted {
                return Ok(Some((h.as_path(), c, "the same bytes")));
            }
        }
    }
    Ok(None)
}

/// A quantised model written to disk, with what was done and how it compares.
#[derive(Clone, Debug)]
pub struct Quantized {
    pub onnx: PathBuf,
    pub rewrite: Rewrite,
    pub gate: GateReport,
}

/// Quantise `model` (its main network) into `out`, calibrated on `images.calibration`, and
/// gate it on `images.held_out`. When the gate fails, `out` is removed and the error carries
/// the report.
pub fn quantize(
    model: &ResolvedModel,
    runtime: &dyn Runtime,
    images: &Images,
    settings: &Settings,
    out: &Path,
    progress: &dyn Progress,
) -> Result<Quantized, OptimizeError> {
    if !(0.0..=1.0).contains(&settings.min_agreement) {
        return Err(OptimizeError::Calibration(format!(
            "the least agreement must be between 0 and 1, not {}",
            settings.min_agreement
        )));
    }
    images.check()?;
    let bytes = std::fs::read(&model.weights).map_err(OptimizeError::io(&model.weights))?;
    let float = ModelProto::decode(bytes.as_slice())
        .map_err(|source| OptimizeError::Parse { path: model.weights.clone(), source })?;
    let float = graph::fold_pads(&float);
    let plan = graph::plan(&float)?;
    let float_pipeline = Pipeline::load(model.clone(), runtime)?;
    if float_pipeline.is_cascade() {
        return Err(OptimizeError::Unsupported("models of several networks (cascades) are not quantised".into()));
    }
    let calibration =
        prepare_all(&float_pipeline, &images.calibration, &images.limits, "reading calibration images", progress)?;
    let inputs: Vec<Tensor> =
        calibration.iter().map(|p| float_pipeline.input_tensor(std::slice::from_ref(p))).collect::<Result<_, _>>()?;
    let work = tempfile::tempdir().map_err(OptimizeError::io(std::env::temp_dir()))?;
    let ranges = calibrate::ranges(runtime, &float, &plan, &inputs, settings.method, work.path(), progress)?;
    drop(inputs);
    let (quantized, rewrite) = graph::quantize(&float, &plan, &ranges)?;
    write_atomic(out, &quantized.encode_to_vec())?;
    let result = check(model, runtime, &float_pipeline, images, settings, out, progress);
    match result {
        Ok(gate) if gate.passed => Ok(Quantized { onnx: out.to_path_buf(), rewrite, gate }),
        Ok(gate) => {
            let _ = std::fs::remove_file(out);
            Err(OptimizeError::GateFailed(Box::new(gate)))
        }
        Err(e) => {
            let _ = std::fs::remove_file(out);
            Err(e)
        }
    }
}

/// Load the written int8 model beside the float one and run the gate.
fn check(
    model: &ResolvedModel,
    runtime: &dyn Runtime,
    float: &Pipeline,
    images: &Images,
    settings: &Settings,
    out: &Path,
    progress: &dyn Progress,
) -> Result<GateReport, OptimizeError> {
    let (low, threshold) = gate::low_threshold(model);
    let float_low = Pipeline::load(low.clone(), runtime)?;
    let int8 = Pipeline::load(ResolvedModel { weights: out.to_path_buf(), ..low }, runtime)?;
    let held_out = prepare_all(float, &images.held_out, &images.limits, "reading held-out images", progress)?;
    let names: Vec<String> = images.held_out.iter().map(|p| p.display().to_string()).collect();
    let mut report = gate::compare(&float_low, &int8, &held_out, &names, threshold, settings.min_agreement, progress)?;
    let (float_speed, int8_speed) = speeds(float, &int8, &held_out)?;
    report.float_images_per_s = float_speed;
    report.int8_images_per_s = int8_speed;
    Ok(report)
}

/// Decode and preprocess `files` for `pipeline`; an unreadable file is an error naming it.
fn prepare_all(
    pipeline: &Pipeline,
    files: &[PathBuf],
    limits: &DecodeLimits,
    what: &str,
    progress: &dyn Progress,
) -> Result<Vec<Prepared>, OptimizeError> {
    progress.start(what, Some(files.len() as u64), ProgressUnit::Items);
    let result = files
        .iter()
        .map(|file| {
            let img: RgbImage = strix_vision::decode_file(file, limits)
                .map_err(|e| OptimizeError::Calibration(format!("{}: {e}", file.display())))?;
            progress.advance(1);
            pipeline.prepare(&img).ok_or_else(|| OptimizeError::Unsupported("a cascade takes whole images".into()))
        })
        .collect();
    progress.finish();
    result
}

/// Rounds of the speed measurement; the median round is reported.
const SPEED_ROUNDS: usize = 3;

/// Images per second of the two models' networks on the held-out inputs (inference only, one
/// image per run, the engine's default threads), rounds interleaved so both see the same
/// machine.
fn speeds(float: &Pipeline, int8: &Pipeline, held_out: &[Prepared]) -> Result<(f64, f64), OptimizeError> {
    let inputs: Vec<Tensor> =
        held_out.iter().map(|p| float.input_tensor(std::slice::from_ref(p))).collect::<Result<_, _>>()?;
    let time = |p: &Pipeline| -> Result<f64, OptimizeError> {
        let start = Instant::now();
        for input in &inputs {
            p.session().run(std::slice::from_ref(input))?;
        }
        Ok(inputs.len() as f64 / start.elapsed().as_secs_f64().max(1e-9))
    };
    // One untimed pass each: first runs pay for allocation and kernel selection.
    time(float)?;
    time(int8)?;
    let (mut f, mut q) = (Vec::new(), Vec::new());
    for _ in 0..SPEED_ROUNDS {
        f.push(time(float)?);
        q.push(time(int8)?);
    }
    Ok((median(&mut f), median(&mut q)))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `path` is the whole model or absent.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OptimizeError> {
    strix_core::fs::write_atomic(path, bytes).map_err(OptimizeError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` distinct small files named `prefix{i}.png` in `dir`.
    fn files(dir: &Path, prefix: &str, n: usize) -> Vec<PathBuf> {
        std::fs::create_dir_all(dir).unwrap();
        (0..n)
            .map(|i| {
                let p = dir.join(format!("{prefix}{i}.png"));
                std::fs::write(&p, format!("{prefix} {i}")).unwrap();
                p
            })
            .collect()
    }

    fn refusal(images: &Images) -> String {
        match images.check() {
            Err(e @ OptimizeError::HeldOut(_)) => e.to_string(),
            other => panic!("not refused for its held-out images: {other:?}"),
        }
    }

    /// Issue 31 item 12: the gate passed on one held-out image, and on held-out images that
    /// were the calibration images.
    #[test]
    fn held_out_images_are_enough_and_none_is_a_calibration_image() {
        let d = tempfile::tempdir().unwrap();
        let calibration = files(&d.path().join("cal"), "c", 30);
        let held_out = files(&d.path().join("held"), "h", MIN_HELD_OUT);
        let images =
            |held_out: Vec<PathBuf>| Images { calibration: calibration.clone(), held_out, ..Default::default() };
        images(held_out.clone()).check().unwrap();

        let few = refusal(&images(held_out[..1].to_vec()));
        assert!(few.contains("1 given") && few.contains(&format!("at least {MIN_HELD_OUT}")), "{few}");
        assert!(refusal(&images(calibration[..MIN_HELD_OUT].to_vec())).contains("the same file"));
        // The same file by another path.
        let mut by_dots = held_out.clone();
        by_dots[3] = d.path().join("held/../cal/c7.png");
        let same = refusal(&images(by_dots));
        assert!(same.contains("the same file") && same.contains("c7.png"), "{same}");
        // A copy under another name.
        std::fs::copy(&calibration[5], &held_out[9]).unwrap();
        let copy = refusal(&images(held_out));
        assert!(copy.contains("the same bytes") && copy.contains("h9.png") && copy.contains("c5.png"), "{copy}");
    }
}
