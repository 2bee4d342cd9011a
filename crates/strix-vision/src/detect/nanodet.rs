//! NanoDet / GFL heads: per-stride class scores and, per box side, a distribution over
//! `reg_max + 1` distance bins.

use serde::{Deserialize, Serialize};
use strix_core::{BBox, Detection};

use super::{Candidate, Nms, finish};
use crate::outputs::floats;
use crate::{Geometry, Outputs, VisionError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NanoDet {
    /// Feature strides, finest first; one score and one box output per stride.
    #[serde(default = "default_strides")]
    pub strides: Vec<u32>,
    /// Highest distance bin (bins 0..=reg_max, in units of the stride).
    #[serde(default = "default_reg_max")]
    pub reg_max: usize,
    /// Class-score outputs `[N, cells, classes]` (sigmoid applied), one per stride.
    pub score_outputs: Vec<String>,
    /// Distance-distribution outputs `[N, cells, 4 * (reg_max + 1)]`, one per stride.
    pub box_outputs: Vec<String>,
    #[serde(default)]
    pub nms: Nms,
}

fn default_strides() -> Vec<u32> {
    vec![8, 16, 32]
}

fn default_reg_max() -> usize {
    7
}

impl NanoDet {
    pub fn check(&self) -> Result<(), String> {
        if self.strides.is_empty()
            || self.strides.len() != self.score_outputs.len()
            || self.strides.len() != self.box_outputs.len()
        {
            return Err(format!(
                "nanodet needs one score and one box output per stride: {} strides, {} score outputs, {} box outputs",
                self.strides.len(),
                self.score_outputs.len(),
                self.box_outputs.len()
            ));
        }
        if self.strides.contains(&0) {
            return Err("nanodet strides must be positive".into());
        }
        Ok(())
    }

    /// # Shapes
    /// Per stride `s`: scores `[N, (W/s)*(H/s), C]`, boxes `[N, (W/s)*(H/s), 4*(reg_max+1)]`,
    /// cells in row-major order.
    pub fn decode(
        &self,
        outputs: &Outputs,
        geometries: &[Geometry],
        input: (u32, u32),
        labels: &[String],
    ) -> Result<Vec<Vec<Detection>>, VisionError> {
        let bins = self.reg_max + 1;
        let mut per_image: Vec<Vec<Candidate>> = vec![Vec::new(); geometries.len()];
        for ((&stride, score_name), box_name) in self.strides.iter().zip(&self.score_outputs).zip(&self.box_outputs) {
            let (nw, nh) = ((input.0 / stride) as usize, (input.1 / stride) as usize);
            let cells = nw * nh;
            let scores_t = outputs.named(score_name)?;
            let boxes_t = outputs.named(box_name)?;
            let bad = |name: &str, t: strix_core::TensorView<'_>, expected: String| VisionError::OutputShape {
                name: name.to_string(),
                shape: t.shape().to_vec(),
                expected,
            };
            let (ss, bs) = (scores_t.shape(), boxes_t.shape());
            if ss.len() != 3 || ss[0] != geometries.len() || ss[1] != cells {
                return Err(bad(
                    score_name,
                    scores_t,
                    format!("expected [{}, {cells}, classes] for stride {stride}", geometries.len()),
                ));
            }
            if bs.len() != 3 || bs[0] != geometries.len() || bs[1] != cells || bs[2] != 4 * bins {
                return Err(bad(
                    box_name,
                    boxes_t,
                    format!("expected [{}, {cells}, {}] for stride {stride}", geometries.len(), 4 * bins),
                ));
            }
            let classes = ss[2];
            let (scores, dists) = (floats(scores_t, score_name)?, floats(boxes_t, box_name)?);
            for (b, candidates) in per_image.iter_mut().enumerate() {
                for cell in 0..cells {
                    let row = &scores[(b * cells + cell) * classes..(b * cells + cell + 1) * classes];
                    let mut bbox = None;
                    for (class_id, &score) in row.iter().enumerate() {
                        if score <= self.nms.score_threshold {
                            continue;
                        }
                        let bbox = *bbox.get_or_insert_with(|| {
                            let d = &dists[(b * cells + cell) * 4 * bins..(b * cells + cell + 1) * 4 * bins];
                            cell_box(cell, nw, stride as f32, d, bins)
                        });
                        candidates.push(Candidate { bbox, score, class_id });
                    }
                }
            }
        }
        Ok(per_image.into_iter().zip(geometries).map(|(c, g)| finish(c, &self.nms, g, labels)).collect())
    }
}

/// The box of one cell: each side's distance is the expectation of its softmaxed bins.
fn cell_box(cell: usize, nw: usize, stride: f32, dist: &[f32], bins: usize) -> BBox {
    let cx = ((cell % nw) as f32 + 0.5) * stride;
    let cy = ((cell / nw) as f32 + 0.5) * stride;
    let d = distances(dist, bins).map(|v| v * stride);
    BBox::new(cx - d[0], cy - d[1], cx + d[2], cy + d[3])
}

/// The expected distance of each box side in strides (softmax over its `bins` logits, then
/// the mean bin): `4 * bins` logits -> `[left, top, right, bottom]`. Training decodes its
/// predictions with this too.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peaked_distribution_gives_its_bin() {
        // All mass on bin 2 for every side, stride 8: a box 16 px out from the centre of cell 0.
        let mut dist = vec![-100.0f32; 4 * 8];
        for side in 0..4 {
            dist[side * 8 + 2] = 100.0;
        }
        let b = cell_box(0, 4, 8.0, &dist, 8);
        assert_eq!(b, BBox::new(4.0 - 16.0, 4.0 - 16.0, 4.0 + 16.0, 4.0 + 16.0));
    }
}
