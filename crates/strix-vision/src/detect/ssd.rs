//! SSD-style exports: decoded boxes `[N, boxes, 4]` beside per-class scores
//! `[N, boxes, classes]`.

use serde::{Deserialize, Serialize};
use strix_core::Detection;

use super::{BoxFormat, Candidate, Nms, finish};
use crate::outputs::floats;
use crate::{Geometry, Outputs, VisionError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssd {
    pub boxes_output: String,
    pub scores_output: String,
    #[serde(default = "xyxy")]
    pub box_format: BoxFormat,
    /// Boxes are fractions of the input size (the usual SSD export) rather than input pixels.
    #[serde(default = "yes")]
    pub normalized: bool,
    /// Score column 0 is a background class: skipped, and label i is column i + 1.
    #[serde(default)]
    pub background_class: bool,
    #[serde(default)]
    pub nms: Nms,
}

fn xyxy() -> BoxFormat {
    BoxFormat::Xyxy
}

fn yes() -> bool {
    true
}

impl Ssd {
    /// # Shapes
    /// boxes `[N, B, 4]`, scores `[N, B, C]` (C includes the background column if any).
    pub fn decode(
        &self,
        outputs: &Outputs,
        geometries: &[Geometry],
        input: (u32, u32),
        labels: &[String],
    ) -> Result<Vec<Vec<Detection>>, VisionError> {
        let bt = outputs.named(&self.boxes_output)?;
        let st = outputs.named(&self.scores_output)?;
        let (bs, ss) = (bt.shape(), st.shape());
        let n = geometries.len();
        if bs.len() != 3 || bs[0] != n || bs[2] != 4 {
            return Err(VisionError::OutputShape {
                name: self.boxes_output.clone(),
                shape: bs.to_vec(),
                expected: format!("expected [{n}, boxes, 4]"),
            });
        }
        let skip = usize::from(self.background_class);
        if ss.len() != 3 || ss[0] != n || ss[1] != bs[1] || ss[2] <= skip {
            return Err(VisionError::OutputShape {
                name: self.scores_output.clone(),
                shape: ss.to_vec(),
                expected: format!("expected [{n}, {}, classes]", bs[1]),
            });
        }
        let (boxes, classes) = (bs[1], ss[2]);
        let (bd, sd) = (floats(bt, &self.boxes_output)?, floats(st, &self.scores_output)?);
        let (sx, sy) = if self.normalized { (input.0 as f32, input.1 as f32) } else { (1.0, 1.0) };
        let scale = |v: &[f32]| match self.box_format {
            BoxFormat::Yxyx => [v[0] * sy, v[1] * sx, v[2] * sy, v[3] * sx],
            _ => [v[0] * sx, v[1] * sy, v[2] * sx, v[3] * sy],
        };
        let mut out = Vec::with_capacity(n);
        for (b, geometry) in geometries.iter().enumerate() {
            let mut candidates = Vec::new();
            for i in 0..boxes {
                let row = &sd[(b * boxes + i) * classes..(b * boxes + i + 1) * classes];
                let bbox = self.box_format.to_bbox(scale(&bd[(b * boxes + i) * 4..(b * boxes + i + 1) * 4]));
                for (c, &score) in row.iter().enumerate().skip(skip) {
                    if score > self.nms.score_threshold {
                        candidates.push(Candidate { bbox, score, class_id: c - skip });
                    }
                }
            }
            out.push(finish(candidates, &self.nms, geometry, labels));
        }
        Ok(out)
    }
}
