//! MediaPipe BlazeFace: SSD anchors on two grids, a score logit and a box + landmarks
//! regressor per anchor, weighted NMS.

use serde::{Deserialize, Serialize};
use strix_core::{BBox, Face, Keypoint};

use crate::outputs::floats;
use crate::{Geometry, Outputs, VisionError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlazeFace {
    /// Score logits `[N, anchors, 1]`, one output per anchor grid, finest grid first.
    pub score_outputs: Vec<String>,
    /// Regressors `[N, anchors, 4 + 2 * landmarks]`, in the same order.
    pub box_outputs: Vec<String>,
    /// Stride of each grid in input pixels.
    pub strides: Vec<u32>,
    /// Anchors per cell on each grid.
    pub anchors_per_cell: Vec<usize>,
    /// Landmark names in output order (the subject's right and left).
    #[serde(default = "default_landmarks")]
    pub landmarks: Vec<String>,
    #[serde(default = "default_score")]
    pub score_threshold: f32,
    #[serde(default = "default_iou")]
    pub iou_threshold: f32,
    /// Blend overlapping detections, weighted by score (MediaPipe); else keep the best.
    #[serde(default = "yes")]
    pub weighted_nms: bool,
    #[serde(default = "default_max")]
    pub max_faces: usize,
}

fn default_landmarks() -> Vec<String> {
    ["eyeRight", "eyeLeft", "nose", "mouth", "earRight", "earLeft"].map(String::from).to_vec()
}

fn default_score() -> f32 {
    0.5
}

fn default_iou() -> f32 {
    0.3
}

fn yes() -> bool {
    true
}

fn default_max() -> usize {
    100
}

/// A candidate in model-input pixels: box, score, landmark points.
#[derive(Clone, Debug)]
struct Raw {
    bbox: BBox,
    score: f32,
    points: Vec<(f32, f32)>,
}

impl BlazeFace {
    pub fn check(&self) -> Result<(), String> {
        let n = self.strides.len();
        if n == 0 || self.score_outputs.len() != n || self.box_outputs.len() != n || self.anchors_per_cell.len() != n {
            return Err(
                "blazeface needs one score output, box output, stride and anchors_per_cell entry per grid".into()
            );
        }
        Ok(())
    }

    pub fn decode(
        &self,
        outputs: &Outputs,
        geometries: &[Geometry],
        input: (u32, u32),
    ) -> Result<Vec<Vec<Face>>, VisionError> {
        let regs = 4 + 2 * self.landmarks.len();
        let mut per_image: Vec<Vec<Raw>> = vec![Vec::new(); geometries.len()];
        for (k, (score_name, box_name)) in self.score_outputs.iter().zip(&self.box_outputs).enumerate() {
            let (nw, nh) = ((input.0 / self.strides[k]) as usize, (input.1 / self.strides[k]) as usize);
            let per_cell = self.anchors_per_cell[k];
            let anchors = nw * nh * per_cell;
            let st = outputs.named(score_name)?;
            let bt = outputs.named(box_name)?;
            let n = geometries.len();
            if st.shape() != [n, anchors, 1] {
                return Err(VisionError::OutputShape {
                    name: score_name.clone(),
                    shape: st.shape().to_vec(),
                    expected: format!("expected [{n}, {anchors}, 1]"),
                });
            }
            if bt.shape() != [n, anchors, regs] {
                return Err(VisionError::OutputShape {
                    name: box_name.clone(),
                    shape: bt.shape().to_vec(),
                    expected: format!("expected [{n}, {anchors}, {regs}]"),
                });
            }
            let (scores, boxes) = (floats(st, score_name)?, floats(bt, box_name)?);
            for (b, raws) in per_image.iter_mut().enumerate() {
                for a in 0..anchors {
                    // Logits are clipped as MediaPipe does, so exp() cannot overflow.
                    let score = 1.0 / (1.0 + (-scores[b * anchors + a].clamp(-100.0, 100.0)).exp());
                    if score <= self.score_threshold {
                        continue;
                    }
                    let cell = a / per_cell;
                    let ax = ((cell % nw) as f32 + 0.5) / nw as f32 * input.0 as f32;
                    let ay = ((cell / nw) as f32 + 0.5) / nh as f32 * input.1 as f32;
                    let r = &boxes[(b * anchors + a) * regs..(b * anchors + a + 1) * regs];
                    let bbox = BBox::from_center(r[0] + ax, r[1] + ay, r[2], r[3]);
                    let points = (0..self.landmarks.len()).map(|i| (r[4 + 2 * i] + ax, r[5 + 2 * i] + ay)).collect();
                    raws.push(Raw { bbox, score, points });
                }
            }
        }
        Ok(per_image
            .into_iter()
            .zip(geometries)
            .map(|(raws, g)| {
                let (w, h) = (g.source_width as f32, g.source_height as f32);
                self.suppress(raws)
                    .into_iter()
                    .map(|r| Face {
                        bbox: r.bbox.map(|x, y| g.to_source(x, y)).clip(w, h),
                        score: r.score,
                        landmarks: r
                            .points
                            .iter()
                            .zip(&self.landmarks)
                            .map(|(&(x, y), name)| {
                                let (x, y) = g.to_source(x, y);
                                Keypoint { name: name.clone(), x, y, score: 1.0 }
                            })
                            .collect(),
                        description: None,
                    })
                    .collect()
            })
            .collect())
    }

    /// Greedy or weighted NMS, best first.
    fn suppress(&self, mut raws: Vec<Raw>) -> Vec<Raw> {
        raws.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept = Vec::new();
        while !raws.is_empty() && kept.len() < self.max_faces {
            let best = raws.remove(0);
            let (mut cluster, rest): (Vec<Raw>, Vec<Raw>) =
                raws.into_iter().partition(|r| r.bbox.iou(&best.bbox) > self.iou_threshold);
            raws = rest;
            if !self.weighted_nms || cluster.is_empty() {
                kept.push(best);
                continue;
            }
            cluster.push(best.clone());
            let total: f32 = cluster.iter().map(|r| r.score).sum();
            let avg = |f: &dyn Fn(&Raw) -> f32| cluster.iter().map(|r| f(r) * r.score).sum::<f32>() / total;
            let bbox = BBox::new(avg(&|r| r.bbox.x1), avg(&|r| r.bbox.y1), avg(&|r| r.bbox.x2), avg(&|r| r.bbox.y2));
            let points = (0..best.points.len()).map(|i| (avg(&|r| r.points[i].0), avg(&|r| r.points[i].1))).collect();
            kept.push(Raw { bbox, score: best.score, points });
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(x: f32, score: f32) -> Raw {
        Raw { bbox: BBox::new(x, 0.0, x + 10.0, 10.0), score, points: vec![(x, 0.0)] }
    }

    fn cfg(weighted: bool) -> BlazeFace {
        BlazeFace {
            score_outputs: vec![],
            box_outputs: vec![],
            strides: vec![],
            anchors_per_cell: vec![],
            landmarks: vec!["p".into()],
            score_threshold: 0.5,
            iou_threshold: 0.3,
            weighted_nms: weighted,
            max_faces: 10,
        }
    }

    #[test]
    fn weighted_nms_blends_a_cluster_by_score() {
        let kept = cfg(true).suppress(vec![raw(0.0, 0.9), raw(2.0, 0.3), raw(50.0, 0.8)]);
        assert_eq!(kept.len(), 2);
        let x1 = (0.0 * 0.9 + 2.0 * 0.3) / 1.2;
        assert!((kept[0].bbox.x1 - x1).abs() < 1e-5 && (kept[0].points[0].0 - x1).abs() < 1e-5);
        assert_eq!(kept[0].score, 0.9);
        let greedy = cfg(false).suppress(vec![raw(0.0, 0.9), raw(2.0, 0.3), raw(50.0, 0.8)]);
        assert_eq!(greedy[0].bbox.x1, 0.0);
    }
}
