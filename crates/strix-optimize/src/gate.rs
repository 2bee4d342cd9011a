//! The quantisation gate: the int8 model against the float one on held-out images. A
//! classifier must give the same top-1 class; a detector the same boxes: each box one model
//! reports (at its score threshold) must be found by the other (same class, IoU at least
//! [`BOX_IOU`], one to one) at half that threshold, so a box whose score merely moves across
//! the threshold (0.31 in float, 0.29 in int8) is not a disagreement, while a box lost or
//! invented is.

use strix_core::{Answer, Detection, Progress, ProgressUnit, Task};
use strix_pipeline::{Pipeline, Prediction, Prepared};

use crate::OptimizeError;

/// IoU at which an int8 box counts as the float model's box.
pub const BOX_IOU: f32 = 0.5;
/// An image where the float model's two best classes are closer than this (in probability) is
/// a near tie: rounding alone can swap them, so top-1 agreement there measures rounding, not
/// damage. Classifiers' agreement counts only the other images (issue 36).
pub const NEAR_TIE: f32 = 0.05;
/// Disagreements named in the report.
const NAMED: usize = 20;

/// What the gate measured.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GateReport {
    pub task: String,
    /// What `agreement` counts, in words.
    pub measure: String,
    pub held_out: usize,
    /// Share (0..=1) of held-out answers the two models agree on.
    pub agreement: f64,
    pub min_agreement: f64,
    pub passed: bool,
    /// Held-out images whose answers differ (the first few).
    pub disagreements: Vec<Disagreement>,
    /// Classifiers: held-out images where the float model's top two were a near tie, left out
    /// of the agreement.
    pub near_ties: usize,
    /// Classifiers: the mean over held-out images (near ties included) of the KL divergence
    /// of the int8 model's class probabilities from the float model's, in nats: how far the
    /// whole distribution moved, where agreement sees only the top class.
    #[serde(default)]
    pub mean_kl: Option<f64>,
    /// The float and int8 networks' images per second on the held-out inputs, this engine.
    pub float_images_per_s: f64,
    pub int8_images_per_s: f64,
}

/// One held-out image on which the two models differ.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Disagreement {
    pub image: String,
    pub float: String,
    pub int8: String,
}

impl GateReport {
    /// How many times the float model's speed the int8 model runs at.
    pub fn speedup(&self) -> f64 {
        self.int8_images_per_s / self.float_images_per_s.max(1e-9)
    }

    /// One line: agreement, threshold, speed.
    pub fn summary(&self) -> String {
        let mut notes = String::new();
        if self.near_ties > 0 {
            notes += &format!(", {} near ties of the float model (top two within {NEAR_TIE}) left out", self.near_ties);
        }
        if let Some(kl) = self.mean_kl {
            notes += &format!(", mean KL divergence {kl:.4} nats");
        }
        format!(
            "{}: {:.1}% on {} held-out images (at least {:.1}% needed){}; {:.1} images/s int8 vs {:.1} float ({:.2}x)",
            self.measure,
            self.agreement * 100.0,
            self.held_out,
            self.min_agreement * 100.0,
            notes,
            self.int8_images_per_s,
            self.float_images_per_s,
            self.speedup()
        )
    }
}

/// Compare `int8` with `float` on the prepared held-out images (`names` name them).
///
/// Detectors' pipelines must be loaded at half their score threshold (see [`low_threshold`]);
/// `threshold` is the one they answer at.
pub fn compare(
    float: &Pipeline,
    int8: &Pipeline,
    held_out: &[Prepared],
    names: &[String],
    threshold: f32,
    min_agreement: f64,
    progress: &dyn Progress,
) -> Result<GateReport, OptimizeError> {
    let task = float.task();
    let measure = match task {
        Task::Classify => format!("top-1 agreement where the float model's top two differ by {NEAR_TIE} or more"),
        Task::Detect => format!("box agreement (same class, IoU >= {BOX_IOU}, found at half the score threshold)"),
        other => {
            return Err(OptimizeError::Unsupported(format!(
                "the quantisation gate compares classifiers and detectors; this is a {other} model"
            )));
        }
    };
    progress.start("checking the int8 model", Some(held_out.len() as u64), ProgressUnit::Items);
    let mut tally = Tally { threshold, ..Default::default() };
    for (p, name) in held_out.iter().zip(names) {
        let a = one(float, p)?;
        let b = one(int8, p)?;
        tally.add(name, &a.answer, &b.answer);
        progress.advance(1);
    }
    progress.finish();
    let agreement = tally.agreement();
    // Held-out images that are all near ties prove nothing.
    let measured = tally.total > 0 || task != Task::Classify;
    Ok(GateReport {
        task: task.to_string(),
        measure,
        held_out: held_out.len(),
        agreement,
        min_agreement,
        passed: measured && agreement >= min_agreement,
        disagreements: tally.disagreements,
        near_ties: tally.near_ties,
        mean_kl: (tally.kl_images > 0).then(|| tally.kl_sum / tally.kl_images as f64),
        float_images_per_s: 0.0,
        int8_images_per_s: 0.0,
    })
}

/// The pipeline's answer on one image: every class of a classifier (the KL divergence needs
/// the whole distribution), every box of a detector.
fn one(pipeline: &Pipeline, p: &Prepared) -> Result<Prediction, OptimizeError> {
    let mut answers = pipeline.predict_prepared(vec![p.clone()], usize::MAX, None)?;
    answers.pop().ok_or_else(|| OptimizeError::Calibration("the model gave no answer".into()))
}

/// `model` as the gate runs a detector: at half its score threshold, so boxes just under the
/// threshold can be found; the threshold it answers at. Other models are returned as they are.
pub fn low_threshold(model: &strix_zoo::ResolvedModel) -> (strix_zoo::ResolvedModel, f32) {
    let mut low = model.clone();
    let threshold = match low.spec.decoder.nms_mut() {
        Some(nms) => {
            let t = nms.score_threshold;
            nms.score_threshold = t / 2.0;
            t
        }
        None => 0.0,
    };
    (low, threshold)
}

/// Running counts of what agreed.
#[derive(Debug, Default)]
struct Tally {
    /// A detector's score threshold: boxes at or above it must be found by the other model.
    threshold: f32,
    agreed: usize,
    total: usize,
    near_ties: usize,
    kl_sum: f64,
    kl_images: usize,
    disagreements: Vec<Disagreement>,
}

impl Tally {
    fn add(&mut self, image: &str, float: &Answer, int8: &Answer) {
        let (agreed, total, differ) = match (float, int8) {
            (Answer::Labels { classes: a }, Answer::Labels { classes: b }) => {
                self.kl_sum += kl_divergence(a, b);
                self.kl_images += 1;
                if a.len() >= 2 && a[0].score - a[1].score < NEAR_TIE {
                    self.near_ties += 1;
                    return;
                }
                let same = a.first().map(|c| c.class_id) == b.first().map(|c| c.class_id);
                (same as usize, 1, (!same).then(|| (top(a), top(b))))
            }
            (Answer::Objects { objects: a }, Answer::Objects { objects: b }) => {
                let (na, fa) = found_boxes(a, b, self.threshold);
                let (nb, fb) = found_boxes(b, a, self.threshold);
                let differ = (fa != na || fb != nb)
                    .then(|| (format!("{na} boxes, {fa} found by int8"), format!("{nb} boxes, {fb} found by float")));
                (fa + fb, na + nb, differ)
            }
            _ => (0, 1, Some(("one kind of answer".into(), "another".into()))),
        };
        self.agreed += agreed;
        self.total += total;
        if let Some((float, int8)) = differ
            && self.disagreements.len() < NAMED
        {
            self.disagreements.push(Disagreement { image: image.to_string(), float, int8 });
        }
    }

    fn agreement(&self) -> f64 {
        if self.total == 0 { 1.0 } else { self.agreed as f64 / self.total as f64 }
    }
}

/// KL(p || q) in nats of two answers over the same classes (`p` the float model's), each
/// class matched by id; a class `q` leaves out, or gives 0, counts at 1e-12 so one confident
/// mistake costs much but not infinitely.
fn kl_divergence(p: &[strix_core::Class], q: &[strix_core::Class]) -> f64 {
    let q: std::collections::HashMap<usize, f32> = q.iter().map(|c| (c.class_id, c.score)).collect();
    p.iter()
        .filter(|c| c.score > 0.0)
        .map(|c| {
            let (pi, qi) = (f64::from(c.score), f64::from(q.get(&c.class_id).copied().unwrap_or(0.0)).max(1e-12));
            pi * (pi / qi).ln()
        })
        .sum()
}

fn top(classes: &[strix_core::Class]) -> String {
    classes.first().map(|c| format!("{} {:.2}", c.label, c.score)).unwrap_or_else(|| "nothing".into())
}

/// How many boxes of `reference` reach `threshold`, and how many of those `other` found: a box
/// of the same class with IoU >= [`BOX_IOU`], each used once, best scores first (as COCO
/// matching goes). `other` holds every box down to half the threshold.
fn found_boxes(reference: &[Detection], other: &[Detection], threshold: f32) -> (usize, usize) {
    let mut used = vec![false; other.len()];
    let mut order: Vec<&Detection> = reference.iter().filter(|d| d.score >= threshold).collect();
    order.sort_by(|x, y| y.score.total_cmp(&x.score));
    let mut found = 0;
    for d in &order {
        let best = other
            .iter()
            .enumerate()
            .filter(|(k, t)| !used[*k] && t.class_id == d.class_id)
            .map(|(k, t)| (k, t.bbox.iou(&d.bbox)))
            .filter(|(_, iou)| *iou >= BOX_IOU)
            .max_by(|x, y| x.1.total_cmp(&y.1));
        if let Some((k, _)) = best {
            used[k] = true;
            found += 1;
        }
    }
    (order.len(), found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strix_core::{BBox, Class};

    fn class(id: usize, score: f32) -> Class {
        Class { class_id: id, label: format!("c{id}"), score }
    }

    fn det(id: usize, x: f32, score: f32) -> Detection {
        Detection { bbox: BBox::new(x, 0.0, x + 10.0, 10.0), score, class_id: id, label: format!("c{id}") }
    }

    /// Issue 36 item 3: the KL divergence of the int8 distribution from the float one, matched
    /// by class id whatever the order; scipy.stats.entropy([.7,.2,.1], [.5,.3,.2]) = 0.0851.
    #[test]
    fn mean_kl_divergence_compares_whole_distributions_by_class() {
        let mut t = Tally::default();
        let labels = |v| Answer::Labels { classes: v };
        let float = labels(vec![class(0, 0.7), class(1, 0.2), class(2, 0.1)]);
        t.add("a", &float, &labels(vec![class(0, 0.5), class(1, 0.3), class(2, 0.2)]));
        assert!((t.kl_sum - 0.085_122_8).abs() < 1e-5, "{}", t.kl_sum);
        // The same distribution listed in another order diverges by nothing; near ties count.
        t.add("b", &float, &labels(vec![class(2, 0.1), class(0, 0.7), class(1, 0.2)]));
        t.add("tie", &labels(vec![class(0, 0.5), class(1, 0.5)]), &labels(vec![class(0, 0.5), class(1, 0.5)]));
        assert_eq!((t.kl_images, t.near_ties), (3, 1));
        assert!((t.kl_sum / 3.0 - 0.085_122_8 / 3.0).abs() < 1e-5);
    }

    #[test]
    fn top1_agreement_counts_decisive_images_and_leaves_near_ties_out() {
        let mut t = Tally::default();
        let labels = |v| Answer::Labels { classes: v };
        t.add("a", &labels(vec![class(1, 0.9), class(2, 0.05)]), &labels(vec![class(1, 0.8), class(2, 0.1)]));
        // Within 0.05: left out whichever way int8 answers.
        t.add("b", &labels(vec![class(3, 0.30), class(4, 0.26)]), &labels(vec![class(4, 0.31), class(3, 0.3)]));
        t.add("b2", &labels(vec![class(3, 0.30), class(4, 0.29)]), &labels(vec![class(3, 0.31), class(4, 0.3)]));
        t.add("c", &labels(vec![class(5, 0.6), class(6, 0.2)]), &labels(vec![class(6, 0.5), class(5, 0.4)]));
        assert_eq!((t.agreed, t.total, t.near_ties), (1, 2, 2));
        assert_eq!(t.agreement(), 0.5);
        assert_eq!(t.disagreements.iter().map(|d| d.image.as_str()).collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn boxes_match_one_to_one_by_class_and_overlap_down_to_half_the_threshold() {
        let float = vec![det(0, 0.0, 0.9), det(0, 100.0, 0.8), det(1, 200.0, 0.7), det(3, 300.0, 0.31)];
        // Same first box, the second moved off (IoU 0), the third of another class, the fourth
        // just under the threshold (still found), one extra on top of the first.
        let int8 =
            vec![det(0, 1.0, 0.9), det(0, 150.0, 0.8), det(2, 200.0, 0.7), det(3, 300.0, 0.29), det(0, 0.5, 0.6)];
        assert_eq!(found_boxes(&float, &int8, 0.3), (4, 2));
        assert_eq!(found_boxes(&int8, &float, 0.3), (4, 1));
        // Below half the threshold nothing is looked at.
        assert_eq!(found_boxes(&float, &int8, 0.95), (0, 0));
        let mut t = Tally { threshold: 0.3, ..Default::default() };
        t.add("x", &Answer::Objects { objects: float.clone() }, &Answer::Objects { objects: float.clone() });
        assert_eq!(t.agreement(), 1.0);
        t.add("y", &Answer::Objects { objects: float }, &Answer::Objects { objects: int8 });
        assert_eq!(t.agreement(), (8.0 + 3.0) / (8.0 + 8.0));
        assert_eq!(t.disagreements.len(), 1);
    }
}
