//! One epoch of a detection run, as `metrics.jsonl` keeps it.

use serde::{Deserialize, Serialize};

/// One line of a detection run's `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectEpoch {
    /// 1-based.
    pub epoch: usize,
    /// Training loss (weighted sum) and its terms, means over the epoch's batches.
    pub loss: f64,
    pub qfl: f64,
    pub dfl: f64,
    pub giou: f64,
    /// Validation COCO mAP@[.5:.95] and mAP@.5.
    pub map: f64,
    pub map50: f64,
    /// `(class, AP@[.5:.95], AP@.5)`.
    pub per_class: Vec<(String, f64, f64)>,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

impl std::fmt::Display for DetectEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {:>3}: loss {:.4} (qfl {:.4} dfl {:.4} giou {:.4}) | val mAP {:.4} mAP@.5 {:.4} | {:.1} s, {:.1} img/s",
            self.epoch,
            self.loss,
            self.qfl,
            self.dfl,
            self.giou,
            self.map,
            self.map50,
            self.seconds,
            self.images_per_second
        )
    }
}
