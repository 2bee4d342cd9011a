//! Semantic segmentation: a pixel confusion matrix, per-class IoU, mean IoU, pixel accuracy.

use serde::Serialize;

use crate::MetricsError;

#[derive(Clone, Debug, Serialize)]
pub struct Segmentation {
    pub classes: usize,
    /// `confusion[truth][predicted]` in pixels.
    pub confusion: Vec<Vec<u64>>,
    /// Truth label left out of the counts (e.g. 255 for "void" borders).
    pub ignore_label: Option<u8>,
}

impl Segmentation {
    pub fn new(classes: usize, ignore_label: Option<u8>) -> Self {
        Segmentation { classes, confusion: vec![vec![0; classes]; classes], ignore_label }
    }

    /// Add one image's truth and predicted label maps (same size, row-major).
    pub fn add(&mut self, truth: &[u8], predicted: &[u8]) -> Result<(), MetricsError> {
        if truth.len() != predicted.len() {
            return Err(MetricsError::Invalid {
                what: "masks".into(),
                reason: format!("truth has {} pixels, prediction {}", truth.len(), predicted.len()),
            });
        }
        for (&t, &p) in truth.iter().zip(predicted) {
            if Some(t) == self.ignore_label {
                continue;
            }
            let (t, p) = (t as usize, p as usize);
            if t >= self.classes || p >= self.classes {
                return Err(MetricsError::Invalid {
                    what: "masks".into(),
                    reason: format!("label {} is outside the {} classes", t.max(p), self.classes),
                });
            }
            self.confusion[t][p] += 1;
        }
        Ok(())
    }

    /// IoU per class; `None` for a class absent from both truth and prediction.
    pub fn iou(&self) -> Vec<Option<f64>> {
        (0..self.classes)
            .map(|c| {
                let tp = self.confusion[c][c];
                let fn_: u64 = self.confusion[c].iter().sum::<u64>() - tp;
                let fp: u64 = (0..self.classes).map(|t| self.confusion[t][c]).sum::<u64>() - tp;
                let union = tp + fp + fn_;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// Mean over the classes present.
    pub fn mean_iou(&self) -> f64 {
        let present: Vec<f64> = self.iou().into_iter().flatten().collect();
        if present.is_empty() { 0.0 } else { present.iter().sum::<f64>() / present.len() as f64 }
    }

    pub fn pixel_accuracy(&self) -> f64 {
        let total: u64 = self.confusion.iter().flatten().sum();
        let right: u64 = (0..self.classes).map(|c| self.confusion[c][c]).sum();
        right as f64 / total.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_per_class_and_mean() {
        let mut s = Segmentation::new(3, Some(255));
        s.add(&[0, 0, 1, 1, 255], &[0, 1, 1, 1, 2]).unwrap();
        let iou = s.iou();
        assert_eq!(iou[0], Some(0.5));
        assert_eq!(iou[1], Some(2.0 / 3.0));
        assert_eq!(iou[2], None, "absent class, and the void pixel is not counted");
        assert!((s.mean_iou() - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(s.pixel_accuracy(), 0.75);
        assert!(s.add(&[0], &[0, 1]).is_err());
        assert!(s.add(&[3], &[0]).is_err());
    }
}
