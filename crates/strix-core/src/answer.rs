//! What models answer, in pixels of the original image (after EXIF orientation).

use serde::Serialize;

/// An axis-aligned box: corners `(x1, y1)` top-left and `(x2, y2)` bottom-right, in pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        BBox { x1, y1, x2, y2 }
    }

    pub fn from_center(cx: f32, cy: f32, w: f32, h: f32) -> Self {
        BBox { x1: cx - w / 2.0, y1: cy - h / 2.0, x2: cx + w / 2.0, y2: cy + h / 2.0 }
    }

    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// Intersection over union; 0 when either box is empty.
    pub fn iou(&self, other: &BBox) -> f32 {
        let w = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let h = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = w * h;
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// The box limited to a `width` x `height` image.
    pub fn clip(&self, width: f32, height: f32) -> BBox {
        BBox {
            x1: self.x1.clamp(0.0, width),
            y1: self.y1.clamp(0.0, height),
            x2: self.x2.clamp(0.0, width),
            y2: self.y2.clamp(0.0, height),
        }
    }

    /// Map both corners through `f` (e.g. from model-input to image pixels).
    pub fn map(&self, f: impl Fn(f32, f32) -> (f32, f32)) -> BBox {
        let (x1, y1) = f(self.x1, self.y1);
        let (x2, y2) = f(self.x2, self.y2);
        BBox { x1, y1, x2, y2 }
    }
}

/// One detected object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection {
    pub bbox: BBox,
    /// 0..=1
    pub score: f32,
    pub class_id: usize,
    pub label: String,
}

/// A named point with a confidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Keypoint {
    pub name: String,
    pub x: f32,
    pub y: f32,
    /// 0..=1; landmarks a model gives without a score have 1.
    pub score: f32,
}

/// One person's body keypoints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pose {
    /// Mean keypoint score.
    pub score: f32,
    /// Box around the keypoints scored above the model's threshold.
    pub bbox: BBox,
    pub keypoints: Vec<Keypoint>,
}

/// One face with its landmarks (named from the subject's point of view: `eyeRight` is the
/// subject's right eye, on the viewer's left).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Face {
    pub bbox: BBox,
    pub score: f32,
    pub landmarks: Vec<Keypoint>,
    /// What a face description network said of it (faceres), for models that run one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<FaceDescription>,
}

/// A face's descriptor, to compare with other faces (cosine), and the age and gender read from it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaceDescription {
    /// Unit length.
    pub embedding: Vec<f32>,
    /// Estimated age in years.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<f32>,
    /// The ages the model finds likely: the middle half of its age distribution (its quartiles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_range: Option<[u32; 2]>,
    /// Probability that the face is a man's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub male: Option<f32>,
}

/// A line of text: its corners (clockwise from top-left, possibly rotated) and what it says.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TextLine {
    pub quad: [[f32; 2]; 4],
    pub text: String,
    pub score: f32,
}

impl TextLine {
    pub fn bbox(&self) -> BBox {
        let xs = self.quad.map(|p| p[0]);
        let ys = self.quad.map(|p| p[1]);
        BBox {
            x1: xs.iter().copied().fold(f32::INFINITY, f32::min),
            y1: ys.iter().copied().fold(f32::INFINITY, f32::min),
            x2: xs.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            y2: ys.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        }
    }
}

/// A per-pixel class map at the image's size.
#[derive(Clone, Debug, PartialEq)]
pub struct SegMask {
    pub width: u32,
    pub height: u32,
    /// Class names; index 0 is the background of a foreground/background model.
    pub classes: Vec<String>,
    /// Class index per pixel, row-major.
    pub labels: Vec<u8>,
    /// Foreground probability per pixel (0..=255), for single-class models: soft edges for
    /// overlays.
    pub probability: Option<Vec<u8>>,
}

impl SegMask {
    /// Fraction of the pixels of each class.
    pub fn coverage(&self) -> Vec<f32> {
        let mut counts = vec![0usize; self.classes.len()];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        let n = self.labels.len().max(1) as f32;
        counts.into_iter().map(|c| c as f32 / n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_overlapping_boxes() {
        let a = BBox::new(0.0, 0.0, 10.0, 10.0);
        let b = BBox::new(5.0, 0.0, 15.0, 10.0);
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(a.iou(&BBox::new(20.0, 20.0, 30.0, 30.0)), 0.0);
        assert_eq!(BBox::default().iou(&BBox::default()), 0.0);
    }

    #[test]
    fn coverage_counts_each_class() {
        let m = SegMask {
            width: 2,
            height: 2,
            classes: vec!["background".into(), "person".into()],
            labels: vec![0, 1, 1, 1],
            probability: None,
        };
        assert_eq!(m.coverage(), vec![0.25, 0.75]);
    }
}

/// One class of a classification answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Class {
    pub class_id: usize,
    pub label: String,
    /// Probability in 0..=1.
    pub score: f32,
}

/// What a model says about one image, in pixels of that image.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Ranked classes, best first.
    Labels {
        classes: Vec<Class>,
    },
    /// Detected objects, best first.
    Objects {
        objects: Vec<Detection>,
    },
    /// People's body keypoints.
    People {
        people: Vec<Pose>,
    },
    /// A class per pixel.
    Mask {
        mask: SegMask,
    },
    Faces {
        faces: Vec<Face>,
    },
    /// Lines of text in reading order.
    Text {
        lines: Vec<TextLine>,
    },
    /// The image's embedding, L2-normalised (unit length; cosine similarity is a dot product).
    Embedding {
        vector: Vec<f32>,
    },
}
