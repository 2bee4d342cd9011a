//! Single-person pose: MoveNet-style `[N, 1, K, 3]` outputs of (y, x, score) per keypoint,
//! as fractions of the model input.

use serde::{Deserialize, Serialize};
use strix_core::{BBox, Keypoint, Pose};

use crate::outputs::floats;
use crate::{Geometry, Outputs, VisionError};

/// The 17 COCO keypoints, in COCO order.
pub const COCO_KEYPOINTS: [&str; 17] = [
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
];

/// Bones between COCO keypoints (indices into [`COCO_KEYPOINTS`]), for drawing a skeleton.
pub const COCO_SKELETON: [(usize, usize); 19] = [
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveNet {
    #[serde(default)]
    pub output: Option<String>,
    /// Keypoints scoring below this are left out of the person's box (and of drawings).
    #[serde(default = "default_threshold")]
    pub keypoint_threshold: f32,
}

fn default_threshold() -> f32 {
    0.2
}

impl MoveNet {
    /// Keypoint names come from the spec's labels, else COCO's 17.
    ///
    /// # Shapes
    /// `[N, 1, K, 3]` with (y, x, score) per keypoint, y and x in 0..1 of the model input.
    pub fn decode(
        &self,
        outputs: &Outputs,
        geometries: &[Geometry],
        input: (u32, u32),
        labels: &[String],
    ) -> Result<Vec<Vec<Pose>>, VisionError> {
        let (name, t) = outputs.get(self.output.as_deref())?;
        let s = t.shape();
        if s.len() != 4 || s[0] != geometries.len() || s[1] != 1 || s[3] != 3 {
            return Err(VisionError::OutputShape {
                name: name.to_string(),
                shape: s.to_vec(),
                expected: format!("expected [{}, 1, keypoints, 3] (y, x, score)", geometries.len()),
            });
        }
        let k = s[2];
        if !labels.is_empty() && labels.len() != k {
            return Err(VisionError::OutputShape {
                name: name.to_string(),
                shape: s.to_vec(),
                expected: format!("the spec names {} keypoints", labels.len()),
            });
        }
        if labels.is_empty() && k != COCO_KEYPOINTS.len() {
            return Err(VisionError::OutputShape {
                name: name.to_string(),
                shape: s.to_vec(),
                expected: "17 COCO keypoints, or labels naming each keypoint".into(),
            });
        }
        let data = floats(t, name)?;
        Ok(geometries
            .iter()
            .enumerate()
            .map(|(b, g)| {
                let keypoints: Vec<Keypoint> = (0..k)
                    .map(|i| {
                        let v = &data[(b * k + i) * 3..(b * k + i + 1) * 3];
                        let (x, y) = g.to_source(v[1] * input.0 as f32, v[0] * input.1 as f32);
                        let name = labels.get(i).cloned().unwrap_or_else(|| COCO_KEYPOINTS[i].to_string());
                        Keypoint { name, x, y, score: v[2] }
                    })
                    .collect();
                vec![person(keypoints, self.keypoint_threshold)]
            })
            .collect())
    }
}

fn person(keypoints: Vec<Keypoint>, threshold: f32) -> Pose {
    let score = keypoints.iter().map(|k| k.score).sum::<f32>() / keypoints.len().max(1) as f32;
    let confident: Vec<&Keypoint> = keypoints.iter().filter(|k| k.score >= threshold).collect();
    let pts: Vec<&Keypoint> = if confident.is_empty() { keypoints.iter().collect() } else { confident };
    let bbox = BBox::new(
        pts.iter().map(|k| k.x).fold(f32::INFINITY, f32::min),
        pts.iter().map(|k| k.y).fold(f32::INFINITY, f32::min),
        pts.iter().map(|k| k.x).fold(f32::NEG_INFINITY, f32::max),
        pts.iter().map(|k| k.y).fold(f32::NEG_INFINITY, f32::max),
    );
    Pose { score, bbox, keypoints }
}
