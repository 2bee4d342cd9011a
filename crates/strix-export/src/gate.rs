//! The export gate: the exported file, run by every ONNX engine Strix serves with, must give
//! burn's logits on real images.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use strix_runtime::{Backend, RuntimeOptions, Tensor};

use crate::ExportError;

/// Largest |logit difference| an export may show against burn.
pub const TOLERANCE: f32 = 1e-4;

/// How one engine's logits compare with burn's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateCheck {
    pub backend: Backend,
    /// Engine name and version.
    pub engine: String,
    pub max_abs_diff: f32,
    /// Where the largest difference is: image index in the batch and logit (class) index.
    pub worst_image: usize,
    pub worst_class: usize,
    /// Images whose top-1 class equals burn's.
    pub top1_agree: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub images: usize,
    pub tolerance: f32,
    /// Largest |logit| burn gave: f32 rounding grows with it, so it is part of any diagnosis.
    pub logit_scale: f32,
    pub checks: Vec<GateCheck>,
}

impl GateReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.max_abs_diff <= self.tolerance)
    }

    /// The first engine over the tolerance.
    pub fn failure(&self) -> Option<&GateCheck> {
        self.checks.iter().find(|c| c.max_abs_diff.is_nan() || c.max_abs_diff > self.tolerance)
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
                "{} ({}): max |diff| {:.1e} on {} images, top-1 agrees on {}/{}",
                c.backend, c.engine, c.max_abs_diff, self.images, c.top1_agree, self.images
            )?;
        }
        Ok(())
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |m| m.0)
}

/// Compare `reference` (burn's `[n, classes]` logits for `images`, `[n, c, s, s]`) with each
/// backend's run of the ONNX file at `onnx`.
pub fn check(
    onnx: &Path,
    images: &[f32],
    input_shape: [usize; 4],
    reference: &[f32],
    backends: &[Backend],
    tolerance: f32,
) -> Result<GateReport, ExportError> {
    let n = input_shape[0];
    let classes = reference.len() / n.max(1);
    let mut checks = Vec::new();
    for &backend in backends {
        let runtime = strix_runtime::open(backend, &RuntimeOptions::default())?;
        let session = runtime.load(onnx)?;
        let x = Tensor::from_f32(input_shape.to_vec(), images.to_vec())?;
        let outputs = session.run(&[x])?;
        let got = outputs.first().ok_or_else(|| ExportError::Gate(format!("{backend} gave no output")))?;
        let values = got.to_f32_vec();
        if values.len() != reference.len() {
            return Err(ExportError::Gate(format!(
                "{backend} gave {} logits ({:?}), burn {} ({n} x {classes})",
                values.len(),
                got.shape(),
                reference.len()
            )));
        }
        let (mut max, mut at) = (0.0f32, 0);
        for (i, (a, b)) in values.iter().zip(reference).enumerate() {
            let d = (a - b).abs();
            // NaN counts as the worst possible difference.
            if d.is_nan() || d > max {
                max = if d.is_nan() { f32::INFINITY } else { d };
                at = i;
            }
        }
        let top1_agree = values
            .chunks(classes.max(1))
            .zip(reference.chunks(classes.max(1)))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count();
        checks.push(GateCheck {
            backend,
            engine: runtime.version(),
            max_abs_diff: max,
            worst_image: at / classes.max(1),
            worst_class: at % classes.max(1),
            top1_agree,
        });
    }
    let logit_scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    Ok(GateReport { images: n, tolerance, logit_scale, checks })
}
