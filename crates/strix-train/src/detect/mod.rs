//! Detector training (`task = "detect"`): a NanoDet-Plus-style anchor-free detector on an
//! EfficientNet-Lite0 backbone, trained with quality focal, distribution focal and GIoU losses
//! and a dynamic label assigner, evaluated every epoch with COCO mAP. Same run folder, config,
//! checkpoints, resume and early stopping as classifier runs.

pub mod assign;
mod batch;
pub mod eval;
pub mod loss;
pub mod model;
mod run;

pub use eval::{DetEvaluation, SavedDetector, evaluate};
pub use model::{Detector, DetectorShape};
pub use run::{DetectEpoch, DetectOutcome, load_trained, resume, train, validation_set};

/// The expected distance of each box side, in strides, from its bins' logits (softmax, then
/// the mean bin): `4 * bins` logits -> `[left, top, right, bottom]`.
pub fn distances(logits: &[f32], bins: usize) -> [f32; 4] {
    let mut d = [0f32; 4];
    for (side, out) in d.iter_mut().enumerate() {
        let l = &logits[side * bins..(side + 1) * bins];
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let (mut sum, mut weighted) = (0f32, 0f32);
        for (i, &v) in l.iter().enumerate() {
            let e = (v - max).exp();
            sum += e;
            weighted += e * i as f32;
        }
        *out = weighted / sum;
    }
    d
}
