//! How a run reports its progress, and how whoever watches it stops it.

use serde::{Deserialize, Serialize};

/// Named numbers of one epoch (`train_loss`, `val_accuracy`, `val_map`, ...), in a stable
/// order. What the observer, early stopping and a tuner read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics(pub Vec<(String, f64)>);

impl Metrics {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    pub(crate) fn push(&mut self, name: &str, value: f64) {
        self.0.push((name.to_string(), value));
    }

    /// A record's numeric fields by their serialised names, but `epoch` (its number).
    pub fn of_record<T: Serialize>(record: &T) -> Metrics {
        let mut out = Metrics::default();
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(record) {
            for (name, v) in fields {
                if let Some(v) = v.as_f64().filter(|_| name != "epoch") {
                    out.push(&name, v);
                }
            }
        }
        out
    }
}

/// An epoch that ended, as its observer sees it.
#[derive(Debug)]
pub struct EpochEnd<'a> {
    /// 1-based.
    pub epoch: usize,
    pub epochs: usize,
    pub metrics: &'a Metrics,
    /// The one-line summary `train.log` keeps.
    pub line: &'a str,
}

/// What an observer wants after an epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// End the run now (the best model so far is kept and evaluated), for this reason.
    Stop(String),
}

/// Hears how training goes; the CLI draws bars from it, a tuner stops trials with it. Called
/// from the training thread.
pub trait Observer {
    /// An epoch (0-based) starts, `done` of its `batches` already done (when resuming).
    fn epoch_start(&self, epoch: usize, epochs: usize, batches: usize, done: usize);
    /// A batch of `images` was trained on; the epoch's running mean loss and, where the task
    /// has one, its running training accuracy.
    fn batch(&self, images: usize, loss: f64, accuracy: Option<f64>);
    /// An epoch ended with these named metrics; the answer may end the run.
    fn epoch_end(&self, end: &EpochEnd<'_>) -> Control;
    /// A slower phase outside the epochs ("evaluating test images", ...).
    fn phase(&self, what: &str);
    /// Whether the run should stop at once without finishing (a worker shutting down, a job
    /// cancelled): asked after every batch; the run saves its checkpoint and ends with
    /// [`crate::TrainError::Interrupted`].
    fn interrupted(&self) -> bool {
        false
    }
    /// The run folder's checkpoint was just written (a job copies the folder elsewhere).
    fn checkpoint_saved(&self) {}
}

/// Observes nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn epoch_start(&self, _: usize, _: usize, _: usize, _: usize) {}
    fn batch(&self, _: usize, _: f64, _: Option<f64>) {}
    fn epoch_end(&self, _: &EpochEnd<'_>) -> Control {
        Control::Continue
    }
    fn phase(&self, _: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_numbers_are_its_metrics_by_name() {
        #[derive(Serialize)]
        struct Line {
            epoch: usize,
            loss: f64,
            map50: f64,
            per_class: Vec<(String, f64)>,
        }
        let m = Metrics::of_record(&Line { epoch: 3, loss: 0.5, map50: 0.25, per_class: vec![("a".into(), 1.0)] });
        assert_eq!(m, Metrics(vec![("loss".into(), 0.5), ("map50".into(), 0.25)]));
        assert_eq!((m.get("map50"), m.get("epoch")), (Some(0.25), None));
    }
}
