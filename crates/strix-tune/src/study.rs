//! A study: the search space and every trial, with ask / report / tell.
//!
//! The study is plain data (it serialises to JSON and back as it is, to save and resume a
//! search); the sampler and pruner are passed in where they act, so a resumed study can go on
//! with any of them. Lower objective values are better: to maximise, report the negative.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::TuneError;
use crate::pruner::Pruner;
use crate::sampler::Sampler;
use crate::space::{Params, SearchSpace};
use crate::trial::{Trial, TrialState};

/// How a trial ended, told to [`Study::tell`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Finished with this objective value (a non-finite one marks the trial failed, as Optuna
    /// does).
    Complete(f64),
    /// Stopped early, usually because [`Study::report`] said so.
    Pruned,
    Failed,
}

/// The space and the trials; see the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StudyData")]
pub struct Study {
    space: SearchSpace,
    trials: Vec<Trial>,
}

/// What a saved study holds, checked on the way into a [`Study`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StudyData {
    space: SearchSpace,
    trials: Vec<Trial>,
}

impl TryFrom<StudyData> for Study {
    type Error = TuneError;

    fn try_from(data: StudyData) -> Result<Self, TuneError> {
        let bad = |reason: String| Err(TuneError::InvalidStudy(reason));
        for (i, t) in data.trials.iter().enumerate() {
            if t.id != i as u64 {
                return bad(format!("trial at position {i} has id {}; ids must count from 0", t.id));
            }
            if t.intermediate.values().any(|v| !v.is_finite()) {
                return bad(format!("trial {i} has a non-finite intermediate value"));
            }
            if t.state == TrialState::Complete && !t.value.is_some_and(f64::is_finite) {
                return bad(format!("trial {i} is complete without a finite value"));
            }
        }
        Ok(Study { space: data.space, trials: data.trials })
    }
}

impl Study {
    pub fn new(space: SearchSpace) -> Self {
        Study { space, trials: Vec::new() }
    }

    pub fn space(&self) -> &SearchSpace {
        &self.space
    }

    pub fn trials(&self) -> &[Trial] {
        &self.trials
    }

    pub fn trial(&self, id: u64) -> Option<&Trial> {
        self.trials.get(usize::try_from(id).ok()?)
    }

    /// Starts a trial with the parameters `sampler` suggests; returns its id and parameters.
    pub fn ask(&mut self, sampler: &mut dyn Sampler) -> Result<(u64, Params), TuneError> {
        let params = sampler.suggest(&self.space, &self.trials)?;
        if !self.space.contains(&params) {
            return Err(TuneError::InvalidSuggestion(format!("{params:?}")));
        }
        let id = self.trials.len() as u64;
        self.trials.push(Trial {
            id,
            params: params.clone(),
            intermediate: BTreeMap::new(),
            value: None,
            state: TrialState::Running,
        });
        Ok((id, params))
    }

    fn running_mut(&mut self, id: u64) -> Result<&mut Trial, TuneError> {
        let trial = usize::try_from(id).ok().and_then(|i| self.trials.get_mut(i)).ok_or(TuneError::UnknownTrial(id))?;
        if trial.state != TrialState::Running {
            return Err(TuneError::TrialFinished { trial: id, state: trial.state });
        }
        Ok(trial)
    }

    /// Records trial `id`'s `value` at `step` (steps must increase, values be finite) and
    /// returns whether `pruner` says the trial should stop; stopping is then the caller's
    /// [`tell`](Self::tell) with [`Outcome::Pruned`].
    pub fn report(&mut self, id: u64, step: u64, value: f64, pruner: &dyn Pruner) -> Result<bool, TuneError> {
        let trial = self.running_mut(id)?;
        if !value.is_finite() {
            return Err(TuneError::NonFinite { trial: id, step, value });
        }
        if let Some((&last, _)) = trial.intermediate.last_key_value()
            && step <= last
        {
            return Err(TuneError::StepNotIncreasing { trial: id, step, last });
        }
        trial.intermediate.insert(step, value);
        Ok(pruner.should_stop(id, step, value, &self.trials))
    }

    /// Ends trial `id`; returns the state it ended in.
    pub fn tell(&mut self, id: u64, outcome: Outcome) -> Result<TrialState, TuneError> {
        let trial = self.running_mut(id)?;
        let (state, value) = match outcome {
            Outcome::Complete(v) if v.is_finite() => (TrialState::Complete, Some(v)),
            Outcome::Complete(_) | Outcome::Failed => (TrialState::Failed, None),
            Outcome::Pruned => (TrialState::Pruned, trial.intermediate.values().next_back().copied()),
        };
        trial.state = state;
        trial.value = value;
        Ok(state)
    }

    /// The complete trial with the lowest value (the earliest of equals).
    pub fn best_trial(&self) -> Option<&Trial> {
        self.trials
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .filter_map(|t| Some((t, t.value?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(t, _)| t)
    }

    /// Runs `n_trials` trials of `objective` without pruning; a non-finite value fails a trial.
    pub fn optimize(
        &mut self,
        sampler: &mut dyn Sampler,
        n_trials: usize,
        mut objective: impl FnMut(&Params) -> f64,
    ) -> Result<(), TuneError> {
        for _ in 0..n_trials {
            let (id, params) = self.ask(sampler)?;
            self.tell(id, Outcome::Complete(objective(&params)))?;
        }
        Ok(())
    }

    /// The study as JSON, to resume with [`Study::from_json`].
    pub fn to_json(&self) -> Result<String, TuneError> {
        serde_json::to_string_pretty(self).map_err(TuneError::Json)
    }

    /// A study saved by [`Study::to_json`]. Trials that were running when it was saved stay
    /// running: tell them, or report on, when their work resumes.
    pub fn from_json(text: &str) -> Result<Self, TuneError> {
        serde_json::from_str(text).map_err(TuneError::Json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pruner::{AshaConfig, AshaPruner, NoPruner};
    use crate::sampler::RandomSampler;
    use crate::space::Param;
    use crate::tpe::TpeSampler;
    use serde_json::Value;

    fn space() -> SearchSpace {
        SearchSpace::new(
            [
                ("lr".to_string(), Param::Float { low: 1e-5, high: 1e-1, log: true }),
                ("layers".to_string(), Param::Int { low: 1, high: 4, log: false }),
                ("opt".to_string(), Param::Categorical { choices: vec![Value::from("adam"), Value::from(0.5)] }),
            ]
            .into(),
        )
        .unwrap()
    }

    fn objective(p: &Params) -> f64 {
        let lr = p["lr"].as_f64().unwrap();
        (lr.log10() + 3.0).powi(2) + p["layers"].as_i64().unwrap() as f64 * 0.1
    }

    #[test]
    fn ask_report_tell_and_the_best_trial() {
        let mut study = Study::new(space());
        let mut sampler = RandomSampler::new(4);
        let asha = AshaPruner::new(AshaConfig::default()).unwrap();
        let (a, _) = study.ask(&mut sampler).unwrap();
        assert!(!study.report(a, 1, 0.5, &asha).unwrap());
        assert_eq!(study.tell(a, Outcome::Complete(0.5)).unwrap(), TrialState::Complete);
        let (b, _) = study.ask(&mut sampler).unwrap();
        // Worse than the only other value at rung 1: ASHA stops it.
        assert!(study.report(b, 1, 0.9, &asha).unwrap());
        assert_eq!(study.tell(b, Outcome::Pruned).unwrap(), TrialState::Pruned);
        assert_eq!(study.trial(b).unwrap().value, Some(0.9));
        let (c, _) = study.ask(&mut sampler).unwrap();
        assert_eq!(study.tell(c, Outcome::Complete(f64::NAN)).unwrap(), TrialState::Failed);
        let (d, _) = study.ask(&mut sampler).unwrap();
        study.tell(d, Outcome::Complete(0.2)).unwrap();
        assert_eq!(study.best_trial().unwrap().id, d);

        // Misuse is refused with what went wrong.
        let (e, _) = study.ask(&mut sampler).unwrap();
        study.report(e, 3, 1.0, &NoPruner).unwrap();
        assert!(matches!(study.report(e, 3, 1.0, &NoPruner), Err(TuneError::StepNotIncreasing { last: 3, .. })));
        assert!(matches!(study.report(e, 4, f64::INFINITY, &NoPruner), Err(TuneError::NonFinite { .. })));
        assert!(matches!(study.tell(a, Outcome::Failed), Err(TuneError::TrialFinished { .. })));
        assert!(matches!(study.tell(99, Outcome::Failed), Err(TuneError::UnknownTrial(99))));
    }

    #[test]
    fn a_study_saved_as_json_reads_back_equal_and_resumes_as_if_never_stopped() {
        let mut study = Study::new(space());
        let mut tpe = TpeSampler::with_seed(5);
        study.optimize(&mut tpe, 14, objective).unwrap();
        let (id, _) = study.ask(&mut tpe).unwrap();
        study.report(id, 1, 0.25, &NoPruner).unwrap();
        study.report(id, 2, 0.125, &NoPruner).unwrap();
        let json = study.to_json().unwrap();
        let back = Study::from_json(&json).unwrap();
        assert_eq!(back, study);
        assert_eq!(back.to_json().unwrap(), json);

        // Resumed with a fresh sampler of the same seed, the next suggestion is the one the
        // uninterrupted study gets.
        let mut resumed = back;
        resumed.tell(id, Outcome::Complete(0.1)).unwrap();
        study.tell(id, Outcome::Complete(0.1)).unwrap();
        let next = resumed.ask(&mut TpeSampler::with_seed(5)).unwrap();
        assert_eq!(next, study.ask(&mut tpe).unwrap());
    }

    #[test]
    fn damaged_study_files_are_refused() {
        let mut study = Study::new(space());
        study.optimize(&mut RandomSampler::new(0), 2, objective).unwrap();
        let mut value: Value = serde_json::from_str(&study.to_json().unwrap()).unwrap();
        value["trials"][1]["id"] = Value::from(7);
        let err = Study::from_json(&value.to_string()).unwrap_err();
        let cause = std::error::Error::source(&err).map(|e| e.to_string()).unwrap_or_default();
        assert!(cause.contains("ids must count from 0"), "{err}: {cause}");
        value["trials"][1]["id"] = Value::from(1);
        value["trials"][1]["params"]["lr"] = serde_json::json!({"int": 3});
        // Parameters outside the space are kept (the space may have changed); the samplers
        // skip such trials.
        assert!(Study::from_json(&value.to_string()).is_ok());
        value["extra"] = Value::from(1);
        assert!(Study::from_json(&value.to_string()).is_err());
    }
}
