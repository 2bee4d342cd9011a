//! Pose: MoveNet-style `[N, 1, K, 3]` outputs of (y, x, score) per keypoint for one person
//! ([`MoveNet`]), and MoveNet MultiPose's `[N, P, 3K + 5]` person slots, each K keypoints then
//! its box ([`MoveNetMulti`]); all as fractions of the model input.

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
                let keypoints = keypoints(&data[b * k * 3..(b + 1) * k * 3], g, input, labels);
                vec![person(keypoints, self.keypoint_threshold)]
            })
            .collect())
    }
}

/// `(y, x)` in 0..1 of the model input as a point of the picture. A point in the letterbox
/// padding is outside the picture: kept on its edge, as detectors clip boxes (a 20000x1 image
/// once put a knee 9000 widths to the left).
fn on_picture(g: &Geometry, input: (u32, u32), y: f32, x: f32) -> (f32, f32) {
    let (x, y) = g.to_source(x * input.0 as f32, y * input.1 as f32);
    (x.clamp(0.0, g.source_width as f32), y.clamp(0.0, g.source_height as f32))
}

/// Rows of `(y, x, score)` as keypoints of the picture, named by `labels`, else COCO's 17.
fn keypoints(rows: &[f32], g: &Geometry, input: (u32, u32), labels: &[String]) -> Vec<Keypoint> {
    rows.chunks_exact(3)
        .enumerate()
        .map(|(i, v)| {
            let (x, y) = on_picture(g, input, v[0], v[1]);
            let name = labels.get(i).cloned().unwrap_or_else(|| COCO_KEYPOINTS[i].to_string());
            Keypoint { name, x, y, score: v[2] }
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveNetMulti {
    #[serde(default)]
    pub output: Option<String>,
    /// Person slots whose box scores below this are left out. MoveNet MultiPose scores a
    /// pedestrian 25-40 pixels tall at its 256-pixel input about 0.2-0.27; an empty slot near 0.
    #[serde(default = "default_person_threshold")]
    pub person_threshold: f32,
    /// Keypoints scoring below this are left out of drawings.
    #[serde(default = "default_threshold")]
    pub keypoint_threshold: f32,
}

fn default_person_threshold() -> f32 {
    0.15
}

impl MoveNetMulti {
    /// People by score, highest first; each its keypoints (named by the spec's labels, else
    /// COCO's 17) and the model's own box of the person.
    ///
    /// # Shapes
    /// `[N, P, 3K + 5]`: per slot K (y, x, score), then (ymin, xmin, ymax, xmax, score), all
    /// y and x in 0..1 of the model input.
    pub fn decode(
        &self,
        outputs: &Outputs,
        geometries: &[Geometry],
        input: (u32, u32),
        labels: &[String],
    ) -> Result<Vec<Vec<Pose>>, VisionError> {
        let (name, t) = outputs.get(self.output.as_deref())?;
        let s = t.shape();
        let k = if labels.is_empty() { COCO_KEYPOINTS.len() } else { labels.len() };
        if s.len() != 3 || s[0] != geometries.len() || s[2] != 3 * k + 5 {
            return Err(VisionError::OutputShape {
                name: name.to_string(),
                shape: s.to_vec(),
                expected: format!("expected [{}, people, {}] ({k} keypoints, then a box)", geometries.len(), 3 * k + 5),
            });
        }
        let (slots, width) = (s[1], s[2]);
        let data = floats(t, name)?;
        Ok(geometries
            .iter()
            .enumerate()
            .map(|(b, g)| {
                let mut people: Vec<Pose> = (0..slots)
                    .map(|p| &data[(b * slots + p) * width..(b * slots + p + 1) * width])
                    .filter(|v| v[3 * k + 4] >= self.person_threshold)
                    .map(|v| {
                        let (rows, b) = v.split_at(3 * k);
                        let (x1, y1) = on_picture(g, input, b[0], b[1]);
                        let (x2, y2) = on_picture(g, input, b[2], b[3]);
                        Pose {
                            score: b[4],
                            bbox: BBox::new(x1, y1, x2, y2),
                            keypoints: keypoints(rows, g, input, labels),
                        }
                    })
                    .collect();
                people.sort_by(|a, b| b.score.total_cmp(&a.score));
                people
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

#[cfg(test)]
mod tests {
    use super::*;
    use strix_core::Tensor;

    #[test]
    fn multipose_keeps_slots_above_the_threshold_by_score_with_their_boxes() {
        // A 200x100 picture letterboxed into 4x4: scale 50, 25 input pixels of padding on top.
        let g = Geometry { source_width: 200, source_height: 100, scale: [50.0, 50.0], offset: [0.0, -50.0] };
        let slot = |score: f32, y: f32, x: f32| {
            let mut v: Vec<f32> = (0..17).flat_map(|_| [y, x, 0.7]).collect();
            v.extend([y - 0.1, x - 0.1, y + 0.1, x + 0.1, score]);
            v
        };
        let data: Vec<f32> = [slot(0.2, 0.5, 0.25), slot(0.01, 0.5, 0.5), slot(0.6, 0.5, 0.75)].concat();
        let t = Tensor::from_f32(vec![1, 3, 56], data).unwrap();
        let names = vec!["out".to_string()];
        let m = MoveNetMulti { output: None, person_threshold: 0.15, keypoint_threshold: 0.2 };
        let people = m.decode(&Outputs::new(&names, std::slice::from_ref(&t)), &[g], (4, 4), &[]).unwrap().remove(0);
        assert_eq!(people.len(), 2);
        assert_eq!((people[0].score, people[1].score), (0.6, 0.2));
        // x 0.75 of the 4-pixel input is 3 input pixels: 150 picture pixels; y 0.5 is the centre.
        assert_eq!((people[0].keypoints[0].x, people[0].keypoints[0].y), (150.0, 50.0));
        assert_eq!(people[0].keypoints[16].name, "right_ankle");
        let b = &people[0].bbox;
        assert!((b.x1 - 130.0).abs() < 1e-3 && (b.x2 - 170.0).abs() < 1e-3, "{b:?}");
        assert!((b.y1 - 30.0).abs() < 1e-3 && (b.y2 - 70.0).abs() < 1e-3, "{b:?}");
        let wrong = Tensor::from_f32(vec![1, 1, 51], vec![0.0; 51]).unwrap();
        assert!(m.decode(&Outputs::new(&names, std::slice::from_ref(&wrong)), &[g], (4, 4), &[]).is_err());
    }

    #[test]
    fn keypoints_in_the_letterbox_padding_stay_on_the_picture() {
        // A 100x1 picture letterboxed into a 4x4 input: rows past the first are padding.
        let g = Geometry { source_width: 100, source_height: 1, scale: [25.0, 25.0], offset: [0.0, -49.5] };
        let mut data = Vec::new();
        for i in 0..17 {
            // (y, x, score): half the points far in the padding above and below the picture.
            let y = if i % 2 == 0 { 0.0 } else { 1.0 };
            data.extend([y, i as f32 / 17.0, 0.9]);
        }
        let t = Tensor::from_f32(vec![1, 1, 17, 3], data).unwrap();
        let names = vec!["kp".to_string()];
        let m = MoveNet { output: None, keypoint_threshold: 0.2 };
        let poses = m.decode(&Outputs::new(&names, std::slice::from_ref(&t)), &[g], (4, 4), &[]).unwrap();
        let p = &poses[0][0];
        for k in &p.keypoints {
            assert!((0.0..=100.0).contains(&k.x) && (0.0..=1.0).contains(&k.y), "{k:?}");
        }
        assert!(p.bbox.x1 >= 0.0 && p.bbox.y1 >= 0.0 && p.bbox.x2 <= 100.0 && p.bbox.y2 <= 1.0, "{:?}", p.bbox);
        // Inside the picture a point is where the model put it.
        assert_eq!(p.keypoints[4].x, 4.0 / 17.0 * 4.0 * 25.0);
    }
}
