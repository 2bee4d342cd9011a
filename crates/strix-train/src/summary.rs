//! [`RunSummary`]: what a finished run achieved, typed, in `summary.json`. The registry's
//! lineage, `models show`, the report and the export read it rather than picking keys out of
//! `final.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strix_core::Task;

use crate::TrainError;
use crate::files::{SUMMARY_FILE, write_atomic};

/// The headline figures of one evaluation of the best model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "lowercase", deny_unknown_fields)]
pub enum Scores {
    Classify {
        images: u64,
        accuracy: f64,
        top5: f64,
        loss: f64,
    },
    /// COCO mAP@[.5:.95] (`map`) and mAP@.5 (`map50`).
    Detect {
        images: u64,
        map: f64,
        map50: f64,
    },
}

impl Scores {
    pub fn images(&self) -> u64 {
        match self {
            Scores::Classify { images, .. } | Scores::Detect { images, .. } => *images,
        }
    }

    /// The figures by name, for printing and for tables.
    pub fn named(&self) -> Vec<(&'static str, f64)> {
        match *self {
            Scores::Classify { accuracy, top5, loss, .. } => {
                vec![("accuracy", accuracy), ("top5", top5), ("loss", loss)]
            }
            Scores::Detect { map, map50, .. } => vec![("mAP@[.5:.95]", map), ("mAP@.5", map50)],
        }
    }
}

impl std::fmt::Display for Scores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scores::Classify { images, accuracy, top5, loss } => write!(
                f,
                "accuracy {:.2}%, top-5 {:.2}%, loss {loss:.4} ({images} images)",
                100.0 * accuracy,
                100.0 * top5
            ),
            Scores::Detect { images, map, map50 } => {
                write!(f, "mAP@[.5:.95] {map:.4}, mAP@.5 {map50:.4} ({images} images)")
            }
        }
    }
}

/// One class's figures on the validation set (precision/recall/F1 or AP/AP@.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassLine {
    pub name: String,
    pub figures: Vec<(String, f64)>,
}

/// Why the epochs ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum Stopped {
    /// Every configured epoch ran.
    Completed,
    /// No improvement of the objective for `patience` epochs.
    EarlyStopping { patience: usize },
    /// The observer asked (a tuner ending a trial, ...).
    Observer { reason: String },
}

/// The metric a run keeps its best model by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// A name from the epoch's [`crate::observe::Metrics`].
    pub metric: String,
    pub maximize: bool,
    /// Breaks ties (early epochs often score 0 at strict thresholds), same direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_break: Option<String>,
}

/// What a finished run achieved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSummary {
    pub task: Task,
    pub run_dir: PathBuf,
    pub epochs_run: usize,
    pub best_epoch: Option<usize>,
    pub objective: Objective,
    /// The objective's value at the best epoch.
    pub best_value: Option<f64>,
    pub stopped: Stopped,
    /// The best model on the validation (and test) images.
    pub val: Scores,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Scores>,
    pub per_class: Vec<ClassLine>,
    /// Images left out because they could not be decoded, everywhere in the run.
    pub unreadable: usize,
    /// Dataset problems found and how they were handled.
    pub problems: Vec<String>,
    /// What a reader needs to reproduce the figures (thresholds they were scored at, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl RunSummary {
    /// `run_dir/summary.json`.
    pub fn read(run_dir: &Path) -> Result<RunSummary, TrainError> {
        let path = run_dir.join(SUMMARY_FILE);
        let text = std::fs::read_to_string(&path).map_err(TrainError::io(&path))?;
        serde_json::from_str(&text)
            .map_err(|e| TrainError::Checkpoint { path, reason: format!("not a run summary: {e}") })
    }

    /// `run_dir/summary.json` when the run has finished; `None` while it has not.
    pub fn read_if_finished(run_dir: &Path) -> Result<Option<RunSummary>, TrainError> {
        match run_dir.join(SUMMARY_FILE).exists() {
            true => Ok(Some(RunSummary::read(run_dir)?)),
            false => Ok(None),
        }
    }

    /// `run_dir/summary.json`, written atomically.
    pub fn write(&self) -> Result<(), TrainError> {
        let text = crate::error::json(self, "the run's summary")?;
        write_atomic(&self.run_dir.join(SUMMARY_FILE), text.as_bytes())
    }

    /// Why the epochs ended before the last, when they did.
    pub fn stopped_note(&self) -> Option<String> {
        match &self.stopped {
            Stopped::Completed => None,
            Stopped::EarlyStopping { patience } => {
                Some(format!("stopped early: no better {} for {patience} epochs", self.objective.metric))
            }
            Stopped::Observer { reason } => Some(format!("stopped: {reason}")),
        }
    }

    /// `best epoch 3 of 5: val accuracy 91.20%, ...`: the line the CLI and the log print.
    pub fn headline(&self) -> String {
        let mut s = format!("best epoch {} of {}: val {}", self.best_epoch.unwrap_or(0), self.epochs_run, self.val);
        if let Some(t) = &self.test {
            s.push_str(&format!(", test {t}"));
        }
        if let Some(note) = self.stopped_note() {
            s.push_str(&format!(", {note}"));
        }
        if self.unreadable > 0 {
            s.push_str(&format!(", {} unreadable images skipped", self.unreadable));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_round_trips_and_names_its_task() {
        let s = RunSummary {
            task: Task::Detect,
            run_dir: "runs/d".into(),
            epochs_run: 4,
            best_epoch: Some(3),
            objective: Objective { metric: "map".into(), maximize: true, tie_break: Some("map50".into()) },
            best_value: Some(0.41),
            stopped: Stopped::EarlyStopping { patience: 1 },
            val: Scores::Detect { images: 12, map: 0.41, map50: 0.83 },
            test: None,
            per_class: vec![ClassLine { name: "can".into(), figures: vec![("AP".into(), 0.4)] }],
            unreadable: 0,
            problems: vec![],
            notes: vec![],
        };
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains(r#""val":{"task":"detect","images":12,"map":0.41,"map50":0.83}"#), "{text}");
        assert_eq!(serde_json::from_str::<RunSummary>(&text).unwrap(), s);
        let line = s.headline();
        assert!(line.contains("mAP@[.5:.95] 0.4100, mAP@.5 0.8300") && line.contains("stopped early"), "{line}");
        let typo = text.replace("\"epochs_run\"", "\"epochs_ran\"");
        assert!(serde_json::from_str::<RunSummary>(&typo).is_err());
    }
}
