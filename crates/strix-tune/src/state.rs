//! A tuning job's state: what it searches, how, the study, and what each trial's run did;
//! saved as `tuning.json` in its folder, read back to resume or to report.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use strix_core::Task;

use crate::TuneError;
use crate::space::SearchSpace;
use crate::study::Study;
use crate::training::{TuneSettings, check_space};
use crate::trial::{Trial, TrialState};

/// The job's state inside its folder.
pub const STATE_FILE: &str = "tuning.json";

/// A tuning job: what it searches, how, and how far it got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuning {
    /// The id that goes into the best model's lineage.
    pub job_id: String,
    pub task: Task,
    pub settings: TuneSettings,
    /// The training settings every trial starts from (its parameters are written over them).
    pub base: toml::Table,
    pub study: Study,
    /// What each trial's run did, by trial id.
    #[serde(default)]
    pub runs: BTreeMap<u64, TrialRun>,
}

/// One trial's training run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialRun {
    /// The run folder's name inside the tuning folder.
    pub dir: String,
    pub seconds: f64,
    pub epochs: usize,
    /// Why the trial failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it stopped before its last epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// The run folder of trial `id`, inside the tuning folder.
pub fn trial_dir_name(id: u64) -> String {
    format!("trial-{id:03}")
}

impl Tuning {
    /// A new job; the settings and every parameter of `space` are checked first.
    pub fn new(
        job_id: String,
        task: Task,
        settings: TuneSettings,
        base: toml::Table,
        space: SearchSpace,
    ) -> Result<Tuning, TuneError> {
        settings.validate()?;
        check_space(&base, &space)?;
        // The sampler is built once here so that a grid too small for the trials is said now.
        settings.sampler()?;
        Ok(Tuning { job_id, task, settings, base, study: Study::new(space), runs: BTreeMap::new() })
    }

    pub fn load(folder: &Path) -> Result<Tuning, TuneError> {
        let path = folder.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(TuneError::io(&path))?;
        serde_json::from_str(&text).map_err(|e| TuneError::InvalidState { path, reason: e.to_string() })
    }

    pub fn save(&self, folder: &Path) -> Result<(), TuneError> {
        let path = folder.join(STATE_FILE);
        let text = serde_json::to_string_pretty(self).map_err(TuneError::Json)?;
        strix_core::fs::write_atomic(&path, text.as_bytes()).map_err(TuneError::io(&path))
    }

    /// A study value as the objective reads (the study minimises).
    pub fn objective(&self, trial: &Trial) -> Option<f64> {
        trial.value.map(|v| self.settings.from_study(v))
    }

    /// The best complete trial and its objective.
    pub fn best(&self) -> Option<(&Trial, f64)> {
        let best = self.study.best_trial()?;
        Some((best, self.objective(best)?))
    }

    /// How many trials ended in each state: complete, pruned, failed.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |s: TrialState| self.study.trials().iter().filter(|t| t.state == s).count();
        (n(TrialState::Complete), n(TrialState::Pruned), n(TrialState::Failed))
    }
}
