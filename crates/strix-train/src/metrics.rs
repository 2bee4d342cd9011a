//! Numbers of one epoch and of a full evaluation.

use serde::{Deserialize, Serialize};
use strix_metrics::classify::{ClassScores, Classification};

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_top5: f64,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// The one-line summary the CLI prints and `train.log` keeps.
impl std::fmt::Display for EpochMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {:>3}: train loss {:.4} acc {:.2}% | val loss {:.4} acc {:.2}% top-5 {:.2}% | {:.1} s, {:.0} img/s",
            self.epoch,
            self.train_loss,
            100.0 * self.train_accuracy,
            self.val_loss,
            100.0 * self.val_accuracy,
            100.0 * self.val_top5,
            self.seconds,
            self.images_per_second
        )
    }
}

/// A model's answers over a dataset.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    pub top5: f64,
    pub per_class: Vec<ClassScores>,
    pub confusion: Vec<Vec<u64>>,
    pub classes: Vec<String>,
    pub images: u64,
    /// The worst-classified images: `(dataset index, true class, predicted class, probability
    /// given to the true class)`, lowest first.
    pub worst: Vec<(usize, usize, usize, f32)>,
    /// Images that could not be read: `(name, reason)`.
    pub unreadable: Vec<(String, String)>,
}

impl Evaluation {
    /// The headline figures a run summary keeps.
    pub fn scores(&self) -> crate::summary::Scores {
        crate::summary::Scores::Classify {
            images: self.images,
            accuracy: self.accuracy,
            top5: self.top5,
            loss: self.loss,
        }
    }

    /// Each class's precision, recall, F1 and support, as a run summary lists them.
    pub fn class_lines(&self) -> Vec<crate::summary::ClassLine> {
        self.per_class
            .iter()
            .map(|c| crate::summary::ClassLine {
                name: c.name.clone(),
                figures: vec![
                    ("precision".into(), c.precision),
                    ("recall".into(), c.recall),
                    ("f1".into(), c.f1),
                    ("support".into(), c.support as f64),
                ],
            })
            .collect()
    }
}

/// Accumulates logits into an [`Evaluation`].
pub struct Tally {
    counts: Classification,
    loss_sum: f64,
    worst: Vec<(usize, usize, usize, f32)>,
    keep_worst: usize,
    unreadable: Vec<(String, String)>,
}

impl Tally {
    pub fn new(classes: Vec<String>, keep_worst: usize) -> Tally {
        Tally {
            counts: Classification::new(classes),
            loss_sum: 0.0,
            worst: Vec::new(),
            keep_worst,
            unreadable: Vec::new(),
        }
    }

    pub fn unreadable(&mut self, name: String, reason: String) {
        self.unreadable.push((name, reason));
    }

    /// One image's logits.
    pub fn add(&mut self, item: usize, truth: usize, logits: &[f32]) {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let denom: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
        let p_true = ((logits[truth] - max).exp() / denom).max(1e-12);
        self.loss_sum -= f64::from(p_true.ln());
        let mut ranked: Vec<usize> = (0..logits.len()).collect();
        ranked.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        // Truth is in range by construction (labels come from the same class list).
        let _ = self.counts.add(truth, &ranked);
        if ranked[0] != truth {
            self.worst.push((item, truth, ranked[0], p_true));
            if self.worst.len() > 4 * self.keep_worst.max(1) {
                self.trim();
            }
        }
    }

    fn trim(&mut self) {
        self.worst.sort_by(|a, b| a.3.total_cmp(&b.3));
        self.worst.truncate(self.keep_worst);
    }

    pub fn finish(mut self) -> Evaluation {
        self.trim();
        let n = self.counts.total;
        Evaluation {
            loss: self.loss_sum / n.max(1) as f64,
            accuracy: self.counts.top1_accuracy(),
            top5: self.counts.top5_accuracy(),
            per_class: self.counts.per_class(),
            confusion: self.counts.confusion.clone(),
            classes: self.counts.classes.clone(),
            images: n,
            worst: self.worst,
            unreadable: self.unreadable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_accuracy_and_worst() {
        let mut t = Tally::new(vec!["a".into(), "b".into()], 1);
        t.add(0, 0, &[2.0, 0.0]);
        t.add(1, 1, &[3.0, 0.0]);
        t.add(2, 1, &[1.0, 0.0]);
        let e = t.finish();
        assert_eq!(e.images, 3);
        assert!((e.accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(e.worst.len(), 1);
        assert_eq!(e.worst[0].0, 1);
        let ce = |l: [f64; 2], y: usize| -(l[y].exp() / (l[0].exp() + l[1].exp())).ln();
        let want = (ce([2.0, 0.0], 0) + ce([3.0, 0.0], 1) + ce([1.0, 0.0], 1)) / 3.0;
        assert!((e.loss - want).abs() < 1e-5, "{} vs {want}", e.loss);
        assert_eq!(e.confusion, vec![vec![1, 0], vec![2, 0]]);
    }
}
