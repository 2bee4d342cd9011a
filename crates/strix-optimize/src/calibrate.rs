//! Activation ranges from calibration images: the float model, with every tensor of the plan
//! added as an output, runs once per image and each tensor's range is gathered.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use strix_core::{Progress, ProgressUnit, Tensor};
use strix_runtime::{Runtime, Session};
use tract_onnx::pb::ModelProto;

use crate::OptimizeError;
use crate::graph::{self, Plan, Range};

/// How an activation's range is taken from what the calibration images produced.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Method {
    /// The smallest and largest value seen.
    MinMax,
    /// The values that leave out `(100 - percentile) %` of the values at each end: rare
    /// outliers no longer stretch the scale every other value is rounded to.
    Percentile { percentile: f64 },
}

impl Method {
    pub fn describe(&self) -> String {
        match self {
            Method::MinMax => "min-max".into(),
            Method::Percentile { percentile } => format!("percentile {percentile}"),
        }
    }
}

/// Where a tensor's values come from in a calibration run.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// The model's (single) input.
    Input,
    /// That output of the calibration model.
    Output(usize),
}

/// Bins of the histogram a percentile is read from.
const BINS: usize = 2048;

/// The range of every tensor of `plan` over `inputs` (one model input tensor per image).
pub fn ranges(
    runtime: &dyn Runtime,
    model: &ModelProto,
    plan: &Plan,
    inputs: &[Tensor],
    method: Method,
    work: &Path,
    progress: &dyn Progress,
) -> Result<HashMap<String, Range>, OptimizeError> {
    if inputs.is_empty() {
        return Err(OptimizeError::Calibration("no calibration images".into()));
    }
    let file = work.join("calibration.onnx");
    std::fs::write(&file, graph::with_outputs(model, &plan.tensors).encode_to_vec())
        .map_err(OptimizeError::io(&file))?;
    let session = runtime.load(&file)?;
    let at: Vec<Source> = plan
        .tensors
        .iter()
        .map(|name| {
            if session.inputs().iter().any(|i| &i.name == name) {
                return Ok(Source::Input);
            }
            session.outputs().iter().position(|o| &o.name == name).map(Source::Output).ok_or_else(|| {
                OptimizeError::Calibration(format!("the engine did not report tensor {name} of the calibration model"))
            })
        })
        .collect::<Result<_, _>>()?;
    let passes = if matches!(method, Method::Percentile { .. }) { 2 } else { 1 };
    progress.start("calibrating", Some((inputs.len() * passes) as u64), ProgressUnit::Items);
    let result = gather(&*session, plan, &at, inputs, method, progress);
    progress.finish();
    result
}

fn gather(
    session: &dyn Session,
    plan: &Plan,
    at: &[Source],
    inputs: &[Tensor],
    method: Method,
    progress: &dyn Progress,
) -> Result<HashMap<String, Range>, OptimizeError> {
    let mut minmax = vec![Range { lo: f32::INFINITY, hi: f32::NEG_INFINITY }; at.len()];
    each_run(session, plan, at, inputs, progress, |k, values| {
        let r = &mut minmax[k];
        // Infinities are padding (TensorFlow pads max pools with -inf): they quantise to the
        // range's end, which keeps them below (above) every real value, and must not set it.
        for &v in values.iter().filter(|v| v.is_finite()) {
            r.lo = r.lo.min(v);
            r.hi = r.hi.max(v);
        }
    })?;
    let ranges = match method {
        Method::MinMax => minmax,
        Method::Percentile { percentile } => {
            let mut hists: Vec<Histogram> = minmax.iter().map(|r| Histogram::new(*r)).collect();
            each_run(session, plan, at, inputs, progress, |k, values| hists[k].add(values))?;
            hists.iter().map(|h| h.percentile_range(percentile)).collect()
        }
    };
    if let Some(k) = ranges.iter().position(|r| !(r.lo.is_finite() && r.hi.is_finite())) {
        return Err(OptimizeError::Calibration(format!(
            "tensor {} held no finite value on any calibration image",
            plan.tensors[k]
        )));
    }
    Ok(plan.tensors.iter().cloned().zip(ranges).collect())
}

/// Run every input and hand each plan tensor's values to `see(index in plan, values)`.
fn each_run(
    session: &dyn Session,
    plan: &Plan,
    at: &[Source],
    inputs: &[Tensor],
    progress: &dyn Progress,
    mut see: impl FnMut(usize, &[f32]),
) -> Result<(), OptimizeError> {
    for input in inputs {
        let outputs = session.run(std::slice::from_ref(input))?;
        for (k, &source) in at.iter().enumerate() {
            let tensor = match source {
                Source::Input => input,
                Source::Output(i) => &outputs[i],
            };
            let values = tensor.as_f32().map_err(|_| {
                OptimizeError::Calibration(format!("tensor {} is not float; it cannot be quantised", plan.tensors[k]))
            })?;
            see(k, values);
        }
        progress.advance(1);
    }
    Ok(())
}

/// Counts of values in equal bins over a tensor's min-max range.
struct Histogram {
    range: Range,
    counts: Vec<u64>,
}

impl Histogram {
    fn new(range: Range) -> Histogram {
        Histogram { range, counts: vec![0; BINS] }
    }

    fn width(&self) -> f32 {
        (self.range.hi - self.range.lo) / BINS as f32
    }

    fn add(&mut self, values: &[f32]) {
        let width = self.width();
        if width <= 0.0 {
            self.counts[0] += values.iter().filter(|v| v.is_finite()).count() as u64;
            return;
        }
        for &v in values.iter().filter(|v| v.is_finite()) {
            let bin = (((v - self.range.lo) / width) as usize).min(BINS - 1);
            self.counts[bin] += 1;
        }
    }

    /// The range that leaves out `(100 - percentile) %` of the values at each end, to bin
    /// precision (the bin's outer edge is kept, so the range never cuts inside a bin).
    fn percentile_range(&self, percentile: f64) -> Range {
        let total: u64 = self.counts.iter().sum();
        let tail = (total as f64 * (100.0 - percentile) / 100.0).floor() as u64;
        let width = self.width();
        let edge = |from_top: bool| {
            let mut seen = 0;
            for k in 0..BINS {
                let bin = if from_top { BINS - 1 - k } else { k };
                seen += self.counts[bin];
                if seen > tail {
                    return bin;
                }
            }
            if from_top { 0 } else { BINS - 1 }
        };
        let lo_bin = edge(false);
        let hi_bin = edge(true);
        Range { lo: self.range.lo + lo_bin as f32 * width, hi: self.range.lo + (hi_bin + 1) as f32 * width }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percentile_leaves_out_rare_outliers_and_min_max_keeps_them() {
        let mut values: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        values.push(50.0);
        let mut h = Histogram::new(Range { lo: 0.0, hi: 50.0 });
        h.add(&values);
        let r = h.percentile_range(99.9);
        // Everything but the outlier lies in [0, 1): the range ends within a bin of 1.
        assert!(r.hi >= 0.99 && r.hi < 1.0 + 2.0 * 50.0 / BINS as f32, "{r:?}");
        assert_eq!(r.lo, 0.0);
        assert_eq!(h.percentile_range(100.0).hi, 50.0);
    }

    #[test]
    fn a_constant_tensor_gets_one_bin_and_a_usable_scale() {
        let mut h = Histogram::new(Range { lo: 0.0, hi: 0.0 });
        h.add(&[0.0; 100]);
        let r = h.percentile_range(99.99);
        let (scale, zero_point) = r.uint8_params();
        assert!(scale > 0.0 && zero_point == 0, "{scale} {zero_point}");
    }
}
