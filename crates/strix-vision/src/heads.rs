//! Every decoder behind one of two traits: [`Decode`] for models that answer from one
//! preprocessed batch, [`Cascade`] for those that run their own networks on the whole image.
//! A spec names its decoder (`strix_zoo::DecoderSpec`) and hands out the trait object; the
//! pipeline only ever sees the traits. Adding a decoder: implement one trait here, add one
//! variant to the spec.

use serde::{Deserialize, Serialize};
use strix_core::{Answer, Task};

use crate::classify::Classifier;
use crate::detect::{CenterNet, NanoDet, Ssd, Yolo};
use crate::face::{BlazeFace, Mtcnn};
use crate::ocr::PpOcr;
use crate::pose::{MoveNet, MoveNetMulti};
use crate::segment::MaskDecoder;
use crate::{Geometry, Networks, Outputs, RgbImage, VisionError};

/// Turns one batch's outputs into one answer per image.
pub trait Decode: Send + Sync + std::fmt::Debug {
    fn task(&self) -> Task;
    /// Output names the decoder reads (the first output needs no name).
    fn outputs(&self) -> Vec<&str>;
    /// Checks of the decoder's own parameters.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    /// One answer per image; `geometries` map model pixels back to each image's, `input` is the
    /// model's input size.
    fn decode(
        &self,
        outputs: &Outputs,
        geometries: &[Geometry],
        input: (u32, u32),
        labels: &[String],
        top_k: usize,
    ) -> Result<Vec<Answer>, VisionError>;
}

/// Runs its own networks (by name) on a whole image.
pub trait Cascade: Send + Sync + std::fmt::Debug {
    fn task(&self) -> Task;
    /// The networks it runs.
    fn networks(&self) -> Vec<&str>;
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    /// Whether it reads the spec's labels (a recogniser's characters) and cannot run without.
    fn needs_labels(&self) -> bool {
        false
    }
    fn run(&self, img: &RgbImage, nets: &dyn Networks, labels: &[String]) -> Result<Answer, VisionError>;
}

/// Top-k classes from a `[N, classes]` output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyHead {
    /// Apply softmax: the model outputs logits (false when it outputs probabilities).
    #[serde(default = "yes")]
    pub softmax: bool,
    /// Output to read; the first when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

fn yes() -> bool {
    true
}

fn each<T>(v: Vec<T>, f: impl Fn(T) -> Answer) -> Vec<Answer> {
    v.into_iter().map(f).collect()
}

fn names<'a>(lists: &[&'a Vec<String>]) -> Vec<&'a str> {
    lists.iter().flat_map(|l| l.iter().map(String::as_str)).collect()
}

impl Decode for ClassifyHead {
    fn task(&self) -> Task {
        Task::Classify
    }
    fn outputs(&self) -> Vec<&str> {
        self.output.iter().map(String::as_str).collect()
    }
    fn decode(
        &self,
        outputs: &Outputs,
        _: &[Geometry],
        _: (u32, u32),
        labels: &[String],
        top_k: usize,
    ) -> Result<Vec<Answer>, VisionError> {
        let (name, t) = outputs.get(self.output.as_deref())?;
        let classifier = Classifier { softmax: self.softmax, labels: labels.to_vec() };
        Ok(each(classifier.decode(t, name, top_k)?, |classes| Answer::Labels { classes }))
    }
}

/// An embedding per image: a `[N, D]` output (or `[N, D, 1, 1]`), each row scaled to unit
/// length.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedHead {
    /// Output to read; the first when absent. It may name a tensor inside the graph (a
    /// classifier's pooled features before its last layer): the runtime reads it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// `v` scaled to unit length (an all-zero vector stays zero: similar to nothing).
pub fn l2_normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm > 0.0 && norm.is_finite() { v.iter().map(|x| (f64::from(*x) / norm) as f32).collect() } else { v.to_vec() }
}

impl Decode for EmbedHead {
    fn task(&self) -> Task {
        Task::Embed
    }
    fn outputs(&self) -> Vec<&str> {
        self.output.iter().map(String::as_str).collect()
    }
    fn decode(
        &self,
        outputs: &Outputs,
        _: &[Geometry],
        _: (u32, u32),
        _: &[String],
        _: usize,
    ) -> Result<Vec<Answer>, VisionError> {
        let (name, t) = outputs.get(self.output.as_deref())?;
        let expected = "an embedding output must be [N, D] (or [N, D, 1, 1])";
        let (values, width) = crate::classify::rows(t, name, expected)?;
        if width == 0 {
            let shape = t.shape().to_vec();
            return Err(VisionError::OutputShape { name: name.to_string(), shape, expected: expected.into() });
        }
        Ok(values.chunks_exact(width).map(|row| Answer::Embedding { vector: l2_normalised(row) }).collect())
    }
}

/// A [`Decode`] whose answers are one `$variant { $field }` per image from the type's own
/// `decode(outputs, geometries, input, labels)`.
macro_rules! decoder {
    ($ty:ty, $task:ident, $variant:ident { $field:ident }, |$d:ident| $outputs:expr $(, check = $check:path)?) => {
        impl Decode for $ty {
            fn task(&self) -> Task {
                Task::$task
            }
            fn outputs(&self) -> Vec<&str> {
                let $d = self;
                $outputs
            }
            $(fn check(&self) -> Result<(), String> {
                $check(self)
            })?
            fn decode(&self, outputs: &Outputs, g: &[Geometry], input: (u32, u32), labels: &[String], _: usize) -> Result<Vec<Answer>, VisionError> {
                Ok(each(<$ty>::decode(self, outputs, g, input, labels)?, |$field| Answer::$variant { $field }))
            }
        }
    };
}

decoder!(NanoDet, Detect, Objects { objects }, |d| names(&[&d.score_outputs, &d.box_outputs]), check = NanoDet::check);
decoder!(Yolo, Detect, Objects { objects }, |d| d.output.iter().map(String::as_str).collect());
decoder!(Ssd, Detect, Objects { objects }, |d| vec![d.boxes_output.as_str(), d.scores_output.as_str()]);
decoder!(CenterNet, Detect, Objects { objects }, |d| [
    Some(d.heatmap_output.as_str()),
    Some(d.size_output.as_str()),
    d.offset_output.as_deref()
]
.into_iter()
.flatten()
.collect());
decoder!(MoveNet, Pose, People { people }, |d| d.output.iter().map(String::as_str).collect());
decoder!(MoveNetMulti, Pose, People { people }, |d| d.output.iter().map(String::as_str).collect());
decoder!(MaskDecoder, Segment, Mask { mask }, |d| d.output.iter().map(String::as_str).collect());

impl Decode for BlazeFace {
    fn task(&self) -> Task {
        Task::Faces
    }
    fn outputs(&self) -> Vec<&str> {
        names(&[&self.score_outputs, &self.box_outputs])
    }
    fn check(&self) -> Result<(), String> {
        BlazeFace::check(self)
    }
    fn decode(
        &self,
        outputs: &Outputs,
        g: &[Geometry],
        input: (u32, u32),
        _: &[String],
        _: usize,
    ) -> Result<Vec<Answer>, VisionError> {
        Ok(each(BlazeFace::decode(self, outputs, g, input)?, |faces| Answer::Faces { faces }))
    }
}

impl Cascade for Mtcnn {
    fn task(&self) -> Task {
        Task::Faces
    }
    fn networks(&self) -> Vec<&str> {
        vec![self.pnet.as_str(), self.rnet.as_str(), self.onet.as_str()]
    }
    fn check(&self) -> Result<(), String> {
        Mtcnn::check(self)
    }
    fn run(&self, img: &RgbImage, nets: &dyn Networks, _: &[String]) -> Result<Answer, VisionError> {
        Ok(Answer::Faces { faces: self.detect(img, nets)? })
    }
}

impl Cascade for PpOcr {
    fn task(&self) -> Task {
        Task::Text
    }
    fn networks(&self) -> Vec<&str> {
        [Some(self.det.as_str()), Some(self.rec.as_str()), self.cls.as_deref()].into_iter().flatten().collect()
    }
    fn check(&self) -> Result<(), String> {
        PpOcr::check(self)
    }
    fn needs_labels(&self) -> bool {
        true
    }
    fn run(&self, img: &RgbImage, nets: &dyn Networks, labels: &[String]) -> Result<Answer, VisionError> {
        Ok(Answer::Text { lines: self.read(img, nets, labels)? })
    }
}
