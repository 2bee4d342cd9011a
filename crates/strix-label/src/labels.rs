//! What a person says about an image (a class, or boxes) and what a model suggests, with the
//! checks a save must pass before anything is written.

use serde::{Deserialize, Serialize};
use strix_core::Answer;
use strix_pipeline::Prediction;

use crate::LabelError;

/// What a project labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelTask {
    /// One class per image.
    Classify,
    /// Boxes with a class each.
    Detect,
}

impl std::fmt::Display for LabelTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LabelTask::Classify => "classify",
            LabelTask::Detect => "detect",
        })
    }
}

impl std::str::FromStr for LabelTask {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "classify" => Ok(LabelTask::Classify),
            "detect" => Ok(LabelTask::Detect),
            other => Err(format!("unknown labelling task {other:?}: use classify or detect")),
        }
    }
}

impl From<LabelTask> for strix_core::Task {
    fn from(task: LabelTask) -> strix_core::Task {
        match task {
            LabelTask::Classify => strix_core::Task::Classify,
            LabelTask::Detect => strix_core::Task::Detect,
        }
    }
}

/// A box in pixels of its image, from the top-left corner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelBox {
    pub class: String,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// One image's labels: its class (classification) or its boxes (detection). A detection image
/// saved with no boxes is a labelled negative.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boxes: Vec<LabelBox>,
}

/// Boxes may overshoot their image by this much (pixels) from rounding in a client; they are
/// clipped. Anything further out is refused.
const EDGE_SLACK: f32 = 1.0;

impl Labels {
    /// Refuse labels that do not fit the project: the wrong kind for its task, a class it does
    /// not have, a box that is empty, not finite or outside the `width` x `height` image.
    /// Boxes within [`EDGE_SLACK`] of the edges are clipped to it.
    pub fn checked(
        mut self,
        task: LabelTask,
        classes: &[String],
        width: u32,
        height: u32,
    ) -> Result<Labels, LabelError> {
        let known = |c: &str| {
            if classes.iter().any(|k| k == c) {
                Ok(())
            } else {
                Err(LabelError::invalid(format!("unknown class {c:?}: this project's classes are {classes:?}")))
            }
        };
        match task {
            LabelTask::Classify => {
                if !self.boxes.is_empty() {
                    return Err(LabelError::invalid("a classification project takes a class, not boxes"));
                }
                // An image without a class would count as labelled and be left out of exports.
                let Some(c) = &self.class else {
                    return Err(LabelError::invalid("a classification save needs a class"));
                };
                known(c)?;
            }
            LabelTask::Detect => {
                if self.class.is_some() {
                    return Err(LabelError::invalid("a detection project takes boxes, not an image class"));
                }
                const MAX_BOXES: usize = 2000;
                if self.boxes.len() > MAX_BOXES {
                    return Err(LabelError::invalid(format!(
                        "{} boxes: at most {MAX_BOXES} per image",
                        self.boxes.len()
                    )));
                }
                let (w, h) = (width as f32, height as f32);
                for (i, b) in self.boxes.iter_mut().enumerate() {
                    known(&b.class)?;
                    let values = [b.x, b.y, b.w, b.h];
                    let bad = |why: &str| LabelError::invalid(format!("box {i} {values:?}: {why}"));
                    if values.iter().any(|v| !v.is_finite()) {
                        return Err(bad("not a finite number"));
                    }
                    if b.w <= 0.0 || b.h <= 0.0 {
                        return Err(bad("width and height must be above 0"));
                    }
                    if b.x < -EDGE_SLACK
                        || b.y < -EDGE_SLACK
                        || b.x + b.w > w + EDGE_SLACK
                        || b.y + b.h > h + EDGE_SLACK
                    {
                        return Err(bad(&format!("reaches outside the {width}x{height} image")));
                    }
                    let (x1, y1) = (b.x.max(0.0), b.y.max(0.0));
                    let (x2, y2) = ((b.x + b.w).min(w), (b.y + b.h).min(h));
                    if x2 - x1 < 0.5 || y2 - y1 < 0.5 {
                        return Err(bad("smaller than half a pixel inside the image"));
                    }
                    (b.x, b.y, b.w, b.h) = (x1, y1, x2 - x1, y2 - y1);
                }
            }
        }
        Ok(self)
    }

    /// The classes these labels use, once per box or image.
    pub fn classes(&self) -> impl Iterator<Item = &str> {
        self.class.as_deref().into_iter().chain(self.boxes.iter().map(|b| b.class.as_str()))
    }
}

/// A class a model gave, with its confidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub class: String,
    pub score: f32,
}

/// A box a model found, with its confidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredBox {
    pub class: String,
    pub score: f32,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// What a model says about an image, kept beside it as a suggestion, and how unsure it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suggestion {
    /// The model that made it (a zoo name, `NAME:VERSION`, a file).
    pub model: String,
    /// Classes best first (classification).
    #[serde(default)]
    pub classes: Vec<Scored>,
    /// Boxes best first (detection).
    #[serde(default)]
    pub boxes: Vec<ScoredBox>,
    /// 0 (sure) ..= 1 (unsure): `1 - margin` between the two best classes, or for boxes how
    /// close the score nearest the threshold is to it.
    pub uncertainty: f32,
    /// Entropy of the class distribution in nats (classification only).
    #[serde(default)]
    pub entropy: Option<f32>,
}

/// Detector scores are judged against this: a box at 0.5 is as unsure as a box can be.
pub const DETECT_THRESHOLD: f32 = 0.5;

impl Suggestion {
    /// A prediction as a suggestion; `None` for tasks a project cannot label (pose, masks...).
    pub fn from_prediction(model: &str, p: &Prediction) -> Option<Suggestion> {
        match &p.answer {
            Answer::Labels { classes } => {
                let classes: Vec<Scored> =
                    classes.iter().map(|c| Scored { class: c.label.clone(), score: c.score.clamp(0.0, 1.0) }).collect();
                let (uncertainty, entropy) = class_uncertainty(&classes);
                Some(Suggestion { model: model.into(), classes, boxes: vec![], uncertainty, entropy: Some(entropy) })
            }
            Answer::Objects { objects } => {
                let boxes: Vec<ScoredBox> = objects
                    .iter()
                    .map(|o| ScoredBox {
                        class: o.label.clone(),
                        score: o.score,
                        x: o.bbox.x1,
                        y: o.bbox.y1,
                        w: o.bbox.x2 - o.bbox.x1,
                        h: o.bbox.y2 - o.bbox.y1,
                    })
                    .collect();
                let uncertainty = box_uncertainty(boxes.iter().map(|b| b.score));
                Some(Suggestion { model: model.into(), classes: vec![], boxes, uncertainty, entropy: None })
            }
            _ => None,
        }
    }
}

/// `(1 - margin, entropy)` of ranked class scores; the mass the ranking leaves out counts as
/// one more outcome in the entropy.
fn class_uncertainty(classes: &[Scored]) -> (f32, f32) {
    let first = classes.first().map_or(0.0, |c| c.score);
    let second = classes.get(1).map_or(0.0, |c| c.score);
    let rest = (1.0 - classes.iter().map(|c| c.score).sum::<f32>()).max(0.0);
    let entropy = classes.iter().map(|c| c.score).chain([rest]).filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum();
    ((1.0 - (first - second)).clamp(0.0, 1.0), entropy)
}

/// 1 when some box scores exactly [`DETECT_THRESHOLD`], falling to 0 at scores 0 and 1; 0 for
/// no boxes.
fn box_uncertainty(scores: impl Iterator<Item = f32>) -> f32 {
    let t = DETECT_THRESHOLD;
    scores.map(|s| 1.0 - (s - t).abs() / t.max(1.0 - t)).fold(0.0, f32::max).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<String> {
        vec!["can".into(), "bottle".into()]
    }

    fn one_box(x: f32, y: f32, w: f32, h: f32) -> Labels {
        Labels { class: None, boxes: vec![LabelBox { class: "can".into(), x, y, w, h }] }
    }

    #[test]
    fn labels_outside_the_project_are_refused_with_the_reason() {
        let err = |l: Labels, task| l.checked(task, &classes(), 100, 50).unwrap_err().to_string();
        let wrong = Labels { class: Some("cup".into()), boxes: vec![] };
        assert!(err(wrong, LabelTask::Classify).contains("unknown class \"cup\""));
        assert!(err(one_box(0.0, 0.0, 10.0, 10.0), LabelTask::Classify).contains("not boxes"));
        assert!(err(Labels::default(), LabelTask::Classify).contains("needs a class"));
        assert!(err(one_box(90.0, 0.0, 20.0, 10.0), LabelTask::Detect).contains("outside the 100x50 image"));
        assert!(err(one_box(10.0, 10.0, 0.0, 5.0), LabelTask::Detect).contains("above 0"));
        assert!(err(one_box(f32::NAN, 10.0, 1.0, 5.0), LabelTask::Detect).contains("finite"));
    }

    #[test]
    fn boxes_a_rounding_error_past_the_edge_are_clipped() {
        let ok = one_box(-0.4, 10.0, 100.6, 40.5).checked(LabelTask::Detect, &classes(), 100, 50).unwrap();
        assert_eq!(ok.boxes[0], LabelBox { class: "can".into(), x: 0.0, y: 10.0, w: 100.0, h: 40.0 });
    }

    #[test]
    fn labels_json_refuses_unknown_fields() {
        assert!(serde_json::from_str::<Labels>(r#"{"class":"can","colour":"red"}"#).is_err());
        let l: Labels = serde_json::from_str(r#"{"boxes":[{"class":"can","x":1,"y":2,"w":3,"h":4}]}"#).unwrap();
        assert_eq!(l.boxes.len(), 1);
    }

    #[test]
    fn uncertainty_is_high_for_close_calls() {
        let s = |a, b| vec![Scored { class: "a".into(), score: a }, Scored { class: "b".into(), score: b }];
        let (sure, e_sure) = class_uncertainty(&s(0.98, 0.01));
        let (unsure, e_unsure) = class_uncertainty(&s(0.5, 0.49));
        assert!(sure < 0.05 && unsure > 0.95, "{sure} {unsure}");
        assert!(e_unsure > e_sure);
        assert!((e_unsure - (-(0.5f32 * 0.5f32.ln()) - 0.49 * 0.49f32.ln() - 0.01 * 0.01f32.ln())).abs() < 1e-5);
        assert_eq!(box_uncertainty([0.5].into_iter()), 1.0);
        assert!(box_uncertainty([0.95, 0.05].into_iter()) < 0.15);
        assert_eq!(box_uncertainty(std::iter::empty()), 0.0);
    }
}
