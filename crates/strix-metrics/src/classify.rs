//! Classification metrics: top-k accuracy and a confusion matrix with per-class precision,
//! recall and F1.

use serde::Serialize;

use crate::MetricsError;

/// Counts over a set of images: `confusion[truth][predicted]` (top-1) and top-k hits.
#[derive(Clone, Debug, Serialize)]
pub struct Classification {
    pub classes: Vec<String>,
    pub confusion: Vec<Vec<u64>>,
    pub total: u64,
    pub top1: u64,
    pub top5: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassScores {
    pub name: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

impl Classification {
    pub fn new(classes: Vec<String>) -> Self {
        let n = classes.len();
        Classification { classes, confusion: vec![vec![0; n]; n], total: 0, top1: 0, top5: 0 }
    }

    /// Add one image: its true class and the predicted classes, best first.
    pub fn add(&mut self, truth: usize, ranked: &[usize]) -> Result<(), MetricsError> {
        let n = self.classes.len();
        let bad = |what: &str, i: usize| MetricsError::Invalid {
            what: what.into(),
            reason: format!("class {i} is outside the {n} classes"),
        };
        if truth >= n {
            return Err(bad("truth", truth));
        }
        let Some(&best) = ranked.first() else {
            return Err(MetricsError::Invalid { what: "prediction".into(), reason: "no classes ranked".into() });
        };
        if best >= n {
            return Err(bad("prediction", best));
        }
        self.confusion[truth][best] += 1;
        self.total += 1;
        self.top1 += u64::from(best == truth);
        self.top5 += u64::from(ranked.iter().take(5).any(|&c| c == truth));
        Ok(())
    }

    pub fn top1_accuracy(&self) -> f64 {
        self.top1 as f64 / self.total.max(1) as f64
    }

    pub fn top5_accuracy(&self) -> f64 {
        self.top5 as f64 / self.total.max(1) as f64
    }

    /// Precision, recall and F1 of each class (0 where undefined).
    pub fn per_class(&self) -> Vec<ClassScores> {
        let n = self.classes.len();
        (0..n)
            .map(|c| {
                let tp = self.confusion[c][c] as f64;
                let predicted: u64 = (0..n).map(|t| self.confusion[t][c]).sum();
                let support: u64 = self.confusion[c].iter().sum();
                let precision = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
                let recall = if support > 0 { tp / support as f64 } else { 0.0 };
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassScores { name: self.classes[c].clone(), precision, recall, f1, support }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_scores() {
        let mut c = Classification::new(vec!["compost".into(), "recycling".into(), "landfill".into()]);
        c.add(0, &[0, 1]).unwrap();
        c.add(0, &[1, 0]).unwrap();
        c.add(1, &[1]).unwrap();
        c.add(2, &[0, 1, 2]).unwrap();
        assert_eq!(c.confusion, vec![vec![1, 1, 0], vec![0, 1, 0], vec![1, 0, 0]]);
        assert_eq!((c.top1, c.top5), (2, 4));
        let s = c.per_class();
        assert!((s[0].precision - 0.5).abs() < 1e-12 && (s[0].recall - 0.5).abs() < 1e-12);
        assert_eq!(s[2].f1, 0.0);
        assert!(c.add(3, &[0]).is_err());
    }
}
