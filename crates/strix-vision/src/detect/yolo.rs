//! YOLO-family exports: one output of candidate rows (or columns, as Ultralytics v8+ writes
//! them) holding a box, an optional objectness and per-class scores; or post-NMS rows of
//! box, score and class id.

use serde::{Deserialize, Serialize};
use strix_core::Detection;

use super::{BoxFormat, Candidate, Nms, finish};
use crate::outputs::floats;
use crate::{Geometry, Outputs, VisionError};

/// Whether candidates run along dimension 1 (`[N, boxes, values]`) or 2 (`[N, values, boxes]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowLayout {
    /// Work it out from the number of values per candidate (needs labels or a distinct size).
    #[default]
    Auto,
    /// `[N, boxes, values]` (YOLOv5/v7 exports).
    Rows,
    /// `[N, values, boxes]` (Ultralytics YOLOv8/v11 exports).
    Columns,
}

/// What follows the box (and objectness) in a candidate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreFormat {
    /// One score per class.
    #[default]
    PerClass,
    /// A score and a class id (exports with NMS inside: `[x1, y1, x2, y2, score, class]`).
    ScoreAndClass,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Yolo {
    /// Output to read; the first when absent.
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub box_format: BoxFormat,
    /// Boxes are fractions of the input size rather than input pixels.
    #[serde(default)]
    pub normalized: bool,
    /// A candidate has an objectness score after the box; class score = objectness x class.
    #[serde(default)]
    pub objectness: bool,
    #[serde(default)]
    pub layout: RowLayout,
    #[serde(default)]
    pub scores: ScoreFormat,
    #[serde(default)]
    pub nms: Nms,
}

impl Yolo {
    /// # Shapes
    /// `[N, boxes, values]` or `[N, values, boxes]`, `values` = 4 + objectness + classes
    /// (or 6 for score-and-class rows).
    pub fn decode(
        &self,
        outputs: &Outputs,
        geometries: &[Geometry],
        input: (u32, u32),
        labels: &[String],
    ) -> Result<Vec<Vec<Detection>>, VisionError> {
        let (name, t) = outputs.get(self.output.as_deref())?;
        let shape = t.shape();
        let obj = usize::from(self.objectness);
        let expected_values = match self.scores {
            ScoreFormat::ScoreAndClass => Some(6),
            ScoreFormat::PerClass => (!labels.is_empty()).then(|| 4 + obj + labels.len()),
        };
        let bad =
            |expected: String| VisionError::OutputShape { name: name.to_string(), shape: shape.to_vec(), expected };
        if shape.len() != 3 || shape[0] != geometries.len() {
            return Err(bad(format!("a YOLO output must be [{}, boxes, values]", geometries.len())));
        }
        let columns = match self.layout {
            RowLayout::Rows => false,
            RowLayout::Columns => true,
            RowLayout::Auto => match expected_values {
                Some(v) if shape[2] == v => false,
                Some(v) if shape[1] == v => true,
                Some(v) => return Err(bad(format!("{v} values per candidate (4 box + {obj} objectness + classes)"))),
                // No labels to count: values are the short side of the output.
                None => shape[1] < shape[2],
            },
        };
        let (boxes, values) = if columns { (shape[2], shape[1]) } else { (shape[1], shape[2]) };
        if let Some(v) = expected_values
            && v != values
        {
            return Err(bad(format!("{v} values per candidate")));
        }
        if values < 5 + obj {
            return Err(bad("at least 4 box values and one score per candidate".into()));
        }
        let data = floats(t, name)?;
        let (sx, sy) = if self.normalized { (input.0 as f32, input.1 as f32) } else { (1.0, 1.0) };
        let mut out = Vec::with_capacity(geometries.len());
        for (b, geometry) in geometries.iter().enumerate() {
            let base = b * boxes * values;
            let at =
                |i: usize, v: usize| if columns { data[base + v * boxes + i] } else { data[base + i * values + v] };
            let mut candidates = Vec::new();
            for i in 0..boxes {
                let mut bbox = None;
                let mut push = |class_id: usize, score: f32| {
                    let bbox = *bbox.get_or_insert_with(|| {
                        let v = [at(i, 0) * sx, at(i, 1) * sy, at(i, 2) * sx, at(i, 3) * sy];
                        self.box_format.to_bbox(v)
                    });
                    candidates.push(Candidate { bbox, score, class_id });
                };
                match self.scores {
                    ScoreFormat::ScoreAndClass => {
                        let score = at(i, 4);
                        if score > self.nms.score_threshold {
                            push(at(i, 5).round().max(0.0) as usize, score);
                        }
                    }
                    ScoreFormat::PerClass => {
                        let objectness = if self.objectness { at(i, 4) } else { 1.0 };
                        if objectness <= self.nms.score_threshold {
                            continue;
                        }
                        for class_id in 0..values - 4 - obj {
                            let score = objectness * at(i, 4 + obj + class_id);
                            if score > self.nms.score_threshold {
                                push(class_id, score);
                            }
                        }
                    }
                }
            }
            out.push(finish(candidates, &self.nms, geometry, labels));
        }
        Ok(out)
    }
}
