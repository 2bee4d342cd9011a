//! Object detection: decoders for common ONNX detector exports, and the shared
//! post-processing (score threshold, NMS, mapping back onto the image).

mod centernet;
mod nanodet;
mod ssd;
mod yolo;

use serde::{Deserialize, Serialize};
use strix_core::{BBox, Detection};

pub use centernet::CenterNet;
pub use nanodet::{NanoDet, distances};
pub use ssd::Ssd;
pub use yolo::{RowLayout, ScoreFormat, Yolo};

use crate::Geometry;
use crate::outputs::label;

/// Filtering shared by the detectors.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Nms {
    /// Candidates scoring at or below this are dropped before NMS.
    pub score_threshold: f32,
    /// A box overlapping a better one by more than this IoU is suppressed (1.0: no NMS).
    pub iou_threshold: f32,
    /// Detections kept per image, best first.
    pub max_detections: usize,
    /// Suppress across classes, not only within one.
    pub class_agnostic: bool,
}

impl Default for Nms {
    fn default() -> Self {
        Nms { score_threshold: 0.3, iou_threshold: 0.5, max_detections: 100, class_agnostic: false }
    }
}

/// How a box is written in a model output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxFormat {
    /// Centre x, centre y, width, height.
    #[default]
    Cxcywh,
    /// Left, top, right, bottom.
    Xyxy,
    /// Top, left, bottom, right (TensorFlow's order).
    Yxyx,
}

impl BoxFormat {
    pub(crate) fn to_bbox(self, v: [f32; 4]) -> BBox {
        match self {
            BoxFormat::Cxcywh => BBox::from_center(v[0], v[1], v[2], v[3]),
            BoxFormat::Xyxy => BBox::new(v[0], v[1], v[2], v[3]),
            BoxFormat::Yxyx => BBox::new(v[1], v[0], v[3], v[2]),
        }
    }
}

/// A box before NMS, in model-input pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Candidate {
    pub bbox: BBox,
    pub score: f32,
    pub class_id: usize,
}

/// Greedy NMS: best first, dropping boxes that overlap a kept one by more than the
/// threshold (within a class unless class-agnostic). Ties keep the earlier candidate first.
pub(crate) fn nms(mut candidates: Vec<Candidate>, nms: &Nms) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::new();
    for c in candidates {
        if kept.len() >= nms.max_detections {
            break;
        }
        let suppressed = nms.iou_threshold < 1.0
            && kept
                .iter()
                .any(|k| (nms.class_agnostic || k.class_id == c.class_id) && k.bbox.iou(&c.bbox) > nms.iou_threshold);
        if !suppressed {
            kept.push(c);
        }
    }
    kept
}

/// NMS, then onto the original image: mapped through the preprocessing geometry and clipped.
pub(crate) fn finish(candidates: Vec<Candidate>, cfg: &Nms, geometry: &Geometry, labels: &[String]) -> Vec<Detection> {
    let (w, h) = (geometry.source_width as f32, geometry.source_height as f32);
    nms(candidates, cfg)
        .into_iter()
        .map(|c| Detection {
            bbox: c.bbox.map(|x, y| geometry.to_source(x, y)).clip(w, h),
            score: c.score,
            class_id: c.class_id,
            label: label(labels, c.class_id),
        })
        .collect()
}

pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(x: f32, score: f32, class_id: usize) -> Candidate {
        Candidate { bbox: BBox::new(x, 0.0, x + 10.0, 10.0), score, class_id }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_per_class() {
        let cs = vec![cand(0.0, 0.5, 0), cand(1.0, 0.9, 0), cand(1.0, 0.8, 1), cand(30.0, 0.4, 0)];
        let kept = nms(cs.clone(), &Nms::default());
        let scores: Vec<f32> = kept.iter().map(|c| c.score).collect();
        assert_eq!(scores, vec![0.9, 0.8, 0.4]);
        let agnostic = nms(cs.clone(), &Nms { class_agnostic: true, ..Nms::default() });
        assert_eq!(agnostic.iter().map(|c| c.score).collect::<Vec<_>>(), vec![0.9, 0.4]);
        let capped = nms(cs.clone(), &Nms { max_detections: 1, ..Nms::default() });
        assert_eq!(capped.len(), 1);
        let off = nms(cs, &Nms { iou_threshold: 1.0, ..Nms::default() });
        assert_eq!(off.len(), 4);
    }

    #[test]
    fn box_formats() {
        assert_eq!(BoxFormat::Cxcywh.to_bbox([5.0, 5.0, 4.0, 2.0]), BBox::new(3.0, 4.0, 7.0, 6.0));
        assert_eq!(BoxFormat::Yxyx.to_bbox([1.0, 2.0, 3.0, 4.0]), BBox::new(2.0, 1.0, 4.0, 3.0));
    }
}
