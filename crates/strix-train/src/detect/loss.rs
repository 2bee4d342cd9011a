//! The detector's loss (GFL as NanoDet-Plus weighs it): quality focal loss on every cell's class
//! scores, and on the assigned cells distribution focal loss on the distance bins plus GIoU on
//! the decoded boxes, both weighted by the cell's (detached) best score.

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, sigmoid, softmax};
use serde::{Deserialize, Serialize};

use super::assign::{self, Prior, Target};
use super::model::DetectorShape;
use crate::TrainError;

pub const QFL_WEIGHT: f64 = 1.0;
pub const DFL_WEIGHT: f64 = 0.25;
pub const GIOU_WEIGHT: f64 = 2.0;

/// The terms of one batch's loss (already weighted), and how many cells were assigned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossTerms {
    pub qfl: f64,
    pub dfl: f64,
    pub giou: f64,
    pub positives: usize,
}

impl LossTerms {
    pub fn total(&self) -> f64 {
        self.qfl + self.dfl + self.giou
    }
}

/// Per-level outputs `[n, K, h, w]` as one `[n, cells, K]` tensor, levels finest first.
pub fn flatten_levels(levels: Vec<Tensor<4>>) -> Tensor<3> {
    let flat: Vec<Tensor<3>> = levels
        .into_iter()
        .map(|t| {
            let [n, k, h, w] = t.dims();
            t.reshape([n, k, h * w]).swap_dims(1, 2)
        })
        .collect();
    Tensor::cat(flat, 1)
}

/// Each side's expected distance, in strides, from softmaxed bins: `[m, 4 * bins]` -> `[m, 4]`.
fn expected_distance(reg: Tensor<2>, bins: usize) -> Tensor<2> {
    let m = reg.dims()[0];
    let device = reg.device();
    let p = softmax(reg.reshape([m * 4, bins]), 1);
    let idx: Vec<f32> = (0..bins).map(|i| i as f32).collect();
    let idx = Tensor::<2>::from_data(TensorData::new(idx, [bins, 1]), &device);
    p.matmul(idx).reshape([m, 4])
}

/// Host copy of the predictions the assigner reads: per image and cell, class probabilities
/// and the decoded box.
fn host_predictions(
    flat: &Tensor<3>,
    shape: &DetectorShape,
    priors: &[Prior],
) -> Result<(Vec<f32>, Vec<[f32; 4]>), TrainError> {
    let [n, cells, k] = flat.dims();
    let c = shape.classes;
    let bins = shape.bins();
    let raw = flat
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| TrainError::Invalid(format!("cannot read the detector's outputs back: {e:?}")))?;
    let mut scores = Vec::with_capacity(n * cells * c);
    let mut boxes = Vec::with_capacity(n * cells);
    for (i, row) in raw.chunks_exact(k).enumerate() {
        scores.extend(row[..c].iter().map(|&x| 1.0 / (1.0 + (-x).exp())));
        let p = &priors[i % cells];
        let d = super::distances(&row[c..], bins);
        boxes.push([p.cx - d[0] * p.stride, p.cy - d[1] * p.stride, p.cx + d[2] * p.stride, p.cy + d[3] * p.stride]);
    }
    Ok((scores, boxes))
}

/// GIoU of matching rows of two `[m, 4]` box tensors (`x1, y1, x2, y2`).
fn giou(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    let col = |t: &Tensor<2>, i: usize| t.clone().narrow(1, i, 1).flatten::<1>(0, 1);
    let (ax1, ay1, ax2, ay2) = (col(&a, 0), col(&a, 1), col(&a, 2), col(&a, 3));
    let (bx1, by1, bx2, by2) = (col(&b, 0), col(&b, 1), col(&b, 2), col(&b, 3));
    let area_a = (ax2.clone() - ax1.clone()).clamp_min(0.0) * (ay2.clone() - ay1.clone()).clamp_min(0.0);
    let area_b = (bx2.clone() - bx1.clone()) * (by2.clone() - by1.clone());
    let iw = (ax2.clone().min_pair(bx2.clone()) - ax1.clone().max_pair(bx1.clone())).clamp_min(0.0);
    let ih = (ay2.clone().min_pair(by2.clone()) - ay1.clone().max_pair(by1.clone())).clamp_min(0.0);
    let inter = iw * ih;
    let union = area_a + area_b - inter.clone() + 1e-6;
    let ew = ax2.max_pair(bx2) - ax1.min_pair(bx1);
    let eh = ay2.max_pair(by2) - ay1.min_pair(by1);
    let enclose = ew * eh + 1e-6;
    inter / union.clone() - (enclose.clone() - union) / enclose
}

/// The loss of a batch: `levels` straight from [`super::Detector::forward`], `targets` per
/// image in input pixels.
pub fn detection_loss(
    levels: Vec<Tensor<4>>,
    shape: &DetectorShape,
    priors: &[Prior],
    targets: &[Vec<Target>],
) -> Result<(Tensor<1>, LossTerms), TrainError> {
    let flat = flatten_levels(levels);
    let [n, cells, k] = flat.dims();
    let (c, bins) = (shape.classes, shape.bins());
    let device = flat.device();
    let (scores, boxes) = host_predictions(&flat, shape, priors)?;
    // Assignment and every target, on the host.
    let mut cls_target = vec![0f32; n * cells * c];
    let (mut pos, mut centres, mut strides, mut tboxes, mut corners, mut weights) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (b, objects) in targets.iter().enumerate() {
        let at = b * cells;
        let assigned = assign::assign(priors, &scores[at * c..(at + cells) * c], c, &boxes[at..at + cells], objects);
        for a in assigned {
            let (p, t) = (&priors[a.prior], &objects[a.target]);
            let i = at + a.prior;
            cls_target[i * c + t.class] = assign::iou(&boxes[i], &t.bbox);
            pos.push(i as i64);
            centres.extend([p.cx, p.cy, p.cx, p.cy]);
            strides.push(p.stride);
            tboxes.extend(t.bbox);
            let ltrb = [p.cx - t.bbox[0], p.cy - t.bbox[1], t.bbox[2] - p.cx, t.bbox[3] - p.cy];
            for d in ltrb {
                let d = (d / p.stride).clamp(0.0, shape.reg_max as f32 - 0.01);
                let left = d.floor() as usize;
                let mut row = vec![0f32; bins];
                row[left] = left as f32 + 1.0 - d;
                row[left + 1] = d - left as f32;
                corners.extend(row);
            }
            weights.push(scores[i * c..(i + 1) * c].iter().copied().fold(0.0, f32::max));
        }
    }
    let m = pos.len();
    let logits = flat.reshape([n * cells, k]);
    let cls = logits.clone().narrow(1, 0, c);
    let t = Tensor::<2>::from_data(TensorData::new(cls_target, [n * cells, c]), &device);
    // Quality focal loss: BCE against the IoU-valued target, scaled by |sigmoid - target|^2.
    let bce = cls.clone().clamp_min(0.0) - cls.clone() * t.clone() + cls.clone().abs().neg().exp().log1p();
    let modulation = (sigmoid(cls) - t).powf_scalar(2.0);
    let qfl = (bce * modulation).sum() / (m.max(1) as f64) * QFL_WEIGHT;
    let mut terms = LossTerms { positives: m, ..LossTerms::default() };
    terms.qfl = read_scalar(&qfl)?;
    if m == 0 {
        return Ok((qfl, terms));
    }
    let idx = Tensor::<1, Int>::from_data(TensorData::new(pos, [m]), &device);
    let reg = logits.select(0, idx).narrow(1, c, 4 * bins);
    let weight_sum = f64::from(weights.iter().sum::<f32>()).max(1.0);
    let w = Tensor::<1>::from_data(TensorData::new(weights, [m]), &device);
    // Distribution focal loss: cross-entropy towards the two bins around the true distance.
    let logp = log_softmax(reg.clone().reshape([m * 4, bins]), 1);
    let corners = Tensor::<2>::from_data(TensorData::new(corners, [m * 4, bins]), &device);
    let dfl_side = (logp * corners).sum_dim(1).neg().reshape([m, 4]).sum_dim(1).flatten::<1>(0, 1) / 4.0;
    let dfl = (dfl_side * w.clone()).sum() / weight_sum * DFL_WEIGHT;
    // GIoU of the decoded boxes.
    let strides = Tensor::<2>::from_data(TensorData::new(strides, [m, 1]), &device);
    let dist = expected_distance(reg, bins) * strides;
    let sign = Tensor::<2>::from_data(TensorData::new([-1f32, -1., 1., 1.].repeat(m), [m, 4]), &device);
    let centres = Tensor::<2>::from_data(TensorData::new(centres, [m, 4]), &device);
    let pred = centres + dist * sign;
    let tboxes = Tensor::<2>::from_data(TensorData::new(tboxes, [m, 4]), &device);
    let giou_loss = ((giou(pred, tboxes).neg() + 1.0) * w).sum() / weight_sum * GIOU_WEIGHT;
    terms.dfl = read_scalar(&dfl)?;
    terms.giou = read_scalar(&giou_loss)?;
    Ok((qfl + dfl + giou_loss, terms))
}

fn read_scalar(t: &Tensor<1>) -> Result<f64, TrainError> {
    let v = t
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| TrainError::Invalid(format!("cannot read a loss back from the device: {e:?}")))?;
    Ok(f64::from(v.first().copied().unwrap_or(f32::NAN)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn giou_is_one_for_the_same_box_and_negative_apart() {
        let device = Device::flex();
        let a = Tensor::<2>::from_data(TensorData::new(vec![0f32, 0., 10., 10., 0., 0., 10., 10.], [2, 4]), &device);
        let b = Tensor::<2>::from_data(TensorData::new(vec![0f32, 0., 10., 10., 20., 0., 30., 10.], [2, 4]), &device);
        let g = giou(a, b).into_data().try_to_vec::<f32>().unwrap();
        assert!((g[0] - 1.0).abs() < 1e-5, "{g:?}");
        // Disjoint, enclosed by 30 x 10 of which 200 is union: 0 - 100 / 300.
        assert!((g[1] + 1.0 / 3.0).abs() < 1e-4, "{g:?}");
    }
}
