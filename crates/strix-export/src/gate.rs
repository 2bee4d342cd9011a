//! The export gate: the exported file, run by every ONNX engine Strix serves with, must give
//! burn's logits on real images.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use strix_runtime::{Backend, RuntimeOptions, Tensor};

use crate::ExportError;

/// Absolute part of the gate's tolerance: `|engine - burn| <= ATOL + RTOL * |burn|` for every
/// logit (numpy's `allclose` rule). An absolute bound alone refuses deep nets whose logits are
/// large: ResNet-50's reach 60, where f32 rounding alone differs by 1.3e-4 (2e-6 relative).
pub const ATOL: f32 = 1e-4;
/// Relative part of the gate's tolerance (numpy's default).
pub const RTOL: f32 = 1e-5;

/// How one engine's logits compare with burn's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateCheck {
    pub backend: Backend,
    /// Engine name and version.
    pub engine: String,
    pub max_abs_diff: f32,
    /// Largest `|diff| / (atol + rtol * |burn|)`: the gate passes at 1 or less.
    #[serde(default)]
    pub max_ratio: f32,
    /// Where the largest ratio is: image index in the batch and logit (class) index.
    pub worst_image: usize,
    pub worst_class: usize,
    /// Images whose top-1 class equals burn's.
    pub top1_agree: usize,
    /// Images whose top-1 class differs although burn's margin between the two classes is wider
    /// than the tolerance allows (a flip between near-ties is rounding, not a wrong export).
    #[serde(default)]
    pub top1_flips: usize,
}

impl GateCheck {
    fn passed(&self) -> bool {
        self.max_ratio <= 1.0 && self.top1_flips == 0
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub images: usize,
    /// The tolerance: `|diff| <= atol + rtol * |burn|`.
    #[serde(alias = "tolerance")]
    pub atol: f32,
    #[serde(default)]
    pub rtol: f32,
    /// Largest |logit| burn gave: f32 rounding grows with it, so it is part of any diagnosis.
    pub logit_scale: f32,
    pub checks: Vec<GateCheck>,
    /// Engines of this build that could not be opened here (ONNX Runtime's library not set),
    /// with why: not checked, and said so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedEngine>,
    /// Detectors: every engine's outputs decode to burn's detections (same classes and
    /// scores, boxes within 0.05 px); top-1 is not compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detections_equal: Option<bool>,
}

/// An engine the gate could not run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkippedEngine {
    pub backend: Backend,
    pub reason: String,
}

impl GateReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(GateCheck::passed)
    }

    /// The first engine over the tolerance.
    pub fn failure(&self) -> Option<&GateCheck> {
        self.checks.iter().find(|c| !c.passed())
    }
}

impl fmt::Display for GateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.checks.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} ({}): max |diff| {:.1e} on {} images ({:.2} of the allowed {:.0e} + {:.0e} x |value|), ",
                c.backend, c.engine, c.max_abs_diff, self.images, c.max_ratio, self.atol, self.rtol,
            )?;
            match self.detections_equal {
                Some(true) => f.write_str("the same detections")?,
                Some(false) => f.write_str("different detections")?,
                None => write!(f, "top-1 agrees on {}/{}", c.top1_agree, self.images)?,
            }
        }
        for s in &self.skipped {
            write!(f, "; {} not checked ({})", s.backend, s.reason)?;
        }
        Ok(())
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |m| m.0)
}

/// `|diff| <= atol + rtol * |reference|`, per logit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub atol: f32,
    pub rtol: f32,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance { atol: ATOL, rtol: RTOL }
    }
}

impl Tolerance {
    fn allowed(&self, reference: f32) -> f32 {
        self.atol + self.rtol * reference.abs()
    }
}

/// Compare one engine's logits with burn's, row by row (`classes` logits an image).
fn compare(values: &[f32], reference: &[f32], classes: usize, tol: Tolerance) -> (f32, f32, usize, usize, usize) {
    let (mut max_abs, mut max_ratio, mut at) = (0.0f32, 0.0f32, 0);
    for (i, (a, b)) in values.iter().zip(reference).enumerate() {
        let d = (a - b).abs();
        // NaN counts as the worst possible difference.
        let (d, ratio) = if d.is_nan() { (f32::INFINITY, f32::INFINITY) } else { (d, d / tol.allowed(*b)) };
        max_abs = max_abs.max(d);
        // A negative tolerance refuses everything (the ratio is negative or infinite).
        let ratio = if tol.allowed(*b) <= 0.0 { f32::INFINITY } else { ratio };
        if ratio > max_ratio || (i == 0 && ratio.is_infinite()) {
            max_ratio = ratio;
            at = i;
        }
    }
    let (mut agree, mut flips) = (0, 0);
    for (got, want) in values.chunks(classes).zip(reference.chunks(classes)) {
        let (g, w) = (argmax(got), argmax(want));
        if g == w {
            agree += 1;
        } else if want[w] - want[g] > tol.allowed(want[w]) + tol.allowed(want[g]) {
            flips += 1;
        }
    }
    (max_abs, max_ratio, at, agree, flips)
}

/// Run every image: as one batch, or one at a time (concatenated) when the graph's batch
/// size is fixed at 1 (a zoo model's graph under a k-NN vote).
fn run_batch(
    session: &dyn strix_runtime::Session,
    images: &[f32],
    shape: [usize; 4],
) -> Result<Vec<Tensor>, ExportError> {
    let fixed_one =
        matches!(session.inputs().first().and_then(|i| i.shape.first()), Some(strix_runtime::Dim::Fixed(1)));
    if !fixed_one || shape[0] <= 1 {
        return Ok(session.run(&[Tensor::from_f32(shape.to_vec(), images.to_vec())?])?);
    }
    let per_image = images.len() / shape[0];
    let mut joined: Vec<(Vec<usize>, Vec<f32>)> = Vec::new();
    for image in images.chunks_exact(per_image) {
        let one = Tensor::from_f32(vec![1, shape[1], shape[2], shape[3]], image.to_vec())?;
        for (k, out) in session.run(&[one])?.into_iter().enumerate() {
            if joined.len() <= k {
                joined.push((out.shape().to_vec(), Vec::new()));
            }
            joined[k].1.extend(out.to_f32_vec());
        }
    }
    joined
        .into_iter()
        .map(|(mut dims, values)| {
            if let Some(d) = dims.first_mut() {
                *d = shape[0];
            }
            Ok(Tensor::from_f32(dims, values)?)
        })
        .collect()
}

/// Position `at` of the concatenated outputs as (image, index within that image's part of its
/// output); every output is `[n, ...]`.
fn locate(outputs: &[Tensor], mut at: usize, n: usize) -> (usize, usize) {
    for o in outputs {
        let len = o.len();
        if at < len {
            let per_image = (len / n.max(1)).max(1);
            return (at / per_image, at % per_image);
        }
        at -= len;
    }
    (0, 0)
}

/// Which engines the gate runs, and how they are opened.
#[derive(Clone, Debug)]
pub struct Engines {
    pub backends: Vec<Backend>,
    pub options: RuntimeOptions,
    /// An engine that cannot be opened here is skipped (and reported) rather than failing the
    /// export: right for the defaults, wrong when the user named the engines.
    pub skip_unavailable: bool,
}

impl Default for Engines {
    fn default() -> Self {
        Engines {
            backends: Backend::ALL.into_iter().filter(|b| b.is_compiled()).collect(),
            options: RuntimeOptions::default(),
            skip_unavailable: true,
        }
    }
}

/// Compare `reference` (burn's `[n, classes]` logits for `images`, `[n, c, s, s]`) with each
/// engine's run of the ONNX file at `onnx`.
pub fn check(
    onnx: &Path,
    images: &[f32],
    input_shape: [usize; 4],
    reference: &[f32],
    engines: &Engines,
    tolerance: Tolerance,
) -> Result<GateReport, ExportError> {
    let classes = (reference.len() / input_shape[0].max(1)).max(1);
    check_outputs(onnx, images, input_shape, reference, Some(classes), engines, tolerance, &mut |_, _| Ok(()))
}

/// Least cosine similarity between an engine's embedding of an image and burn's.
pub const EMBEDDING_COSINE: f32 = 0.99999;

/// Check an engine's embedding output (`[n, d]`) points where burn's `reference` does, image by
/// image (cosine at least [`EMBEDDING_COSINE`]).
pub fn same_direction(
    backend: Backend,
    output: Option<&Tensor>,
    reference: &[f32],
    n: usize,
) -> Result<(), ExportError> {
    let got = output.map(Tensor::to_f32_vec).unwrap_or_default();
    if got.len() != reference.len() || n == 0 {
        return Err(ExportError::Gate(format!(
            "{backend} gave {} embedding values, burn {} for {n} images",
            got.len(),
            reference.len()
        )));
    }
    let d = reference.len() / n;
    for (i, (a, b)) in got.chunks(d).zip(reference.chunks(d)).enumerate() {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let cosine = dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE);
        // Two zero vectors agree.
        let both_zero = norm(a) == 0.0 && norm(b) == 0.0;
        // NaN agrees with nothing.
        let agrees = cosine >= f64::from(EMBEDDING_COSINE);
        if !both_zero && !agrees {
            return Err(ExportError::Gate(format!(
                "{backend}'s embedding of image {i} is not burn's: cosine {cosine:.6}, below {EMBEDDING_COSINE}"
            )));
        }
    }
    Ok(())
}

/// Looks at one engine's outputs; an error fails the gate.
pub type Inspect<'a> = dyn FnMut(Backend, &[Tensor]) -> Result<(), ExportError> + 'a;

/// The general gate: `reference` is every output of burn's model, concatenated in the ONNX
/// outputs' order; each engine's outputs, concatenated the same way, must match it value for
/// value. With `top1: Some(classes)` (one `[n, classes]` output) the top-1 class of each image
/// is compared too. `inspect` sees each engine's outputs (a detector's gate decodes them).
#[allow(clippy::too_many_arguments)]
pub fn check_outputs(
    onnx: &Path,
    images: &[f32],
    input_shape: [usize; 4],
    reference: &[f32],
    top1: Option<usize>,
    engines: &Engines,
    tolerance: Tolerance,
    inspect: &mut Inspect<'_>,
) -> Result<GateReport, ExportError> {
    let expected = Expected { reference, top1, every_output: true };
    gate_outputs(onnx, images, input_shape, expected, engines, tolerance, inspect)
}

/// What the engines' outputs must be: `reference` (burn's, concatenated in the outputs'
/// order), with each image's top-1 of `top1` classes when given.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    pub reference: &'a [f32],
    pub top1: Option<usize>,
    /// Whether `reference` covers every output, else the leading ones (a classifier's logits
    /// before its embedding, which `inspect` checks).
    pub every_output: bool,
}

/// [`check_outputs`] with what is expected spelled out.
pub fn gate_outputs(
    onnx: &Path,
    images: &[f32],
    input_shape: [usize; 4],
    expected: Expected<'_>,
    engines: &Engines,
    tolerance: Tolerance,
    inspect: &mut Inspect<'_>,
) -> Result<GateReport, ExportError> {
    let Expected { reference, top1, every_output } = expected;
    let n = input_shape[0];
    let row = top1.unwrap_or(1).max(1);
    let (mut checks, mut skipped) = (Vec::new(), Vec::new());
    for &backend in &engines.backends {
        let runtime = match strix_runtime::open(backend, &engines.options) {
            Ok(runtime) => runtime,
            Err(e) if engines.skip_unavailable && backend != Backend::Tract => {
                skipped.push(SkippedEngine { backend, reason: e.to_string() });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let session = runtime.load(onnx)?;
        let outputs = run_batch(session.as_ref(), images, input_shape)?;
        if outputs.is_empty() {
            return Err(ExportError::Gate(format!("{backend} gave no output")));
        }
        // Every output, or the leading ones `reference` covers (later ones are `inspect`'s).
        let mut values: Vec<f32> = Vec::with_capacity(reference.len());
        for output in &outputs {
            if !every_output && values.len() >= reference.len() {
                break;
            }
            values.extend(output.to_f32_vec());
        }
        if values.len() != reference.len() {
            let shapes: Vec<&[usize]> = outputs.iter().map(|o| o.shape()).collect();
            return Err(ExportError::Gate(format!(
                "{backend} gave {} values ({shapes:?}), burn {} for {n} images",
                values.len(),
                reference.len()
            )));
        }
        let (max_abs_diff, max_ratio, at, agree, flips) = compare(&values, reference, row, tolerance);
        let (top1_agree, top1_flips) = if top1.is_some() { (agree, flips) } else { (n, 0) };
        let (worst_image, worst_class) = locate(&outputs, at, n);
        let check = GateCheck {
            backend,
            engine: runtime.version(),
            max_abs_diff,
            max_ratio,
            worst_image,
            worst_class,
            top1_agree,
            top1_flips,
        };
        // Values that differ are the failure to report; the rest is looked at only after.
        if check.passed() {
            inspect(backend, &outputs)?;
        }
        checks.push(check);
    }
    let logit_scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if checks.is_empty() {
        return Err(ExportError::Gate("no ONNX engine could be opened to check the export".into()));
    }
    Ok(GateReport {
        images: n,
        atol: tolerance.atol,
        rtol: tolerance.rtol,
        logit_scale,
        checks,
        skipped,
        detections_equal: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tolerance_scales_with_the_logits() {
        let tol = Tolerance::default();
        // ResNet-50's case: a 1.26e-4 difference on a logit of 61.8 is rounding.
        let (abs, ratio, _, agree, flips) = compare(&[61.8 + 1.26e-4, 1.0], &[61.8, 1.0], 2, tol);
        assert!(abs > ATOL && ratio < 1.0 && agree == 1 && flips == 0, "{abs} {ratio}");
        // The same difference on a small logit is not.
        let (_, ratio, at, _, _) = compare(&[0.1, 0.5 + 1.3e-4], &[0.1, 0.5], 2, tol);
        assert!(ratio > 1.0 && at == 1, "{ratio}");
        // A negative tolerance refuses everything.
        let (_, ratio, ..) = compare(&[1.0], &[1.0], 1, Tolerance { atol: -1.0, rtol: 0.0 });
        assert!(ratio > 1.0);
        // NaN is the worst difference.
        let (abs, ratio, ..) = compare(&[f32::NAN], &[1.0], 1, tol);
        assert!(abs.is_infinite() && ratio.is_infinite());
    }

    #[test]
    fn an_embedding_is_checked_by_direction() {
        let reference = [3.0, 4.0, 0.0, 1.0];
        let scaled = Tensor::from_f32(vec![2, 2], vec![6.0, 8.0, 0.0, 2.0]).unwrap();
        assert!(same_direction(Backend::Tract, Some(&scaled), &reference, 2).is_ok());
        let turned = Tensor::from_f32(vec![2, 2], vec![4.0, 3.0, 0.0, 1.0]).unwrap();
        let err = same_direction(Backend::Tract, Some(&turned), &reference, 2).unwrap_err().to_string();
        assert!(err.contains("image 0") && err.contains("cosine 0.96"), "{err}");
        assert!(same_direction(Backend::Tract, None, &reference, 2).is_err());
    }

    #[test]
    fn top1_flips_count_only_beyond_the_tolerance() {
        let tol = Tolerance::default();
        // A near-tie swapped by rounding: agreement lost, no flip.
        let (_, _, _, agree, flips) = compare(&[1.0, 1.00002], &[1.00002, 1.0], 2, tol);
        assert_eq!((agree, flips), (0, 0));
        // A clear winner lost: a flip.
        let (_, _, _, agree, flips) = compare(&[1.0, 2.0], &[2.0, 1.0], 2, tol);
        assert_eq!((agree, flips), (0, 1));
    }
}
