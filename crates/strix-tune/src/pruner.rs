//! Pruners: whether a running trial should stop early, from the values it and the others have
//! reported so far. Lower values are better.
//!
//! A pruner is a small trait; adding one means implementing [`Pruner::should_stop`].

use serde::{Deserialize, Serialize};

use crate::TuneError;
use crate::trial::{Trial, TrialState};

/// Decides, after trial `trial` reported `value` at `step`, whether it should stop.
pub trait Pruner: Send + Sync {
    /// `trials` holds every trial of the study, the current one included with this report
    /// already recorded.
    fn should_stop(&self, trial: u64, step: u64, value: f64, trials: &[Trial]) -> bool;
}

/// Never stops a trial.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPruner;

impl Pruner for NoPruner {
    fn should_stop(&self, _: u64, _: u64, _: f64, _: &[Trial]) -> bool {
        false
    }
}

/// Asynchronous successive halving's settings (Optuna's `SuccessiveHalvingPruner`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AshaConfig {
    /// The step of the first rung.
    pub min_resource: u64,
    /// Rung `k` sits at step `min_resource * reduction_factor^(min_early_stopping_rate + k)`,
    /// and a trial passes it only within the best 1/`reduction_factor` there.
    pub reduction_factor: u64,
    pub min_early_stopping_rate: u32,
}

impl Default for AshaConfig {
    /// The ASHA paper's values (Optuna defaults to `min_resource = "auto"` and a factor of 4).
    fn default() -> Self {
        AshaConfig { min_resource: 1, reduction_factor: 3, min_early_stopping_rate: 0 }
    }
}

/// Asynchronous successive halving as Optuna's `SuccessiveHalvingPruner` does it: when a trial
/// first reports at or past a rung's step, its value there joins the values every trial
/// recorded at that rung, and the trial goes on only if it ranks within the best
/// `len / reduction_factor` of them (the best one while fewer than `reduction_factor` have).
///
/// A trial's value at a rung is the value of its first report at or past the rung's step,
/// worked out from the reports themselves instead of stored: the same as Optuna's whenever a
/// report crosses at most one rung (steps reported one by one).
#[derive(Debug, Clone)]
pub struct AshaPruner {
    config: AshaConfig,
}

impl AshaPruner {
    pub fn new(config: AshaConfig) -> Result<Self, TuneError> {
        let fail = |reason: String| Err(TuneError::InvalidSetting { what: "ASHA pruner", reason });
        if config.min_resource < 1 {
            return fail("min_resource must be at least 1".to_string());
        }
        if config.reduction_factor < 2 {
            return fail(format!("reduction_factor must be at least 2, got {}", config.reduction_factor));
        }
        Ok(AshaPruner { config })
    }

    /// The step of rung `k`, `None` past u64.
    fn rung_step(&self, k: u32) -> Option<u64> {
        let c = &self.config;
        c.reduction_factor.checked_pow(c.min_early_stopping_rate.checked_add(k)?)?.checked_mul(c.min_resource)
    }
}

/// The value of the first report at or past `step`.
fn value_at_rung(t: &Trial, step: u64) -> Option<f64> {
    t.intermediate.range(step..).next().map(|(_, v)| *v)
}

impl Pruner for AshaPruner {
    fn should_stop(&self, trial: u64, step: u64, value: f64, trials: &[Trial]) -> bool {
        // Rungs already passed at an earlier report are not checked again.
        let previous = trials.iter().find(|t| t.id == trial).and_then(|t| t.intermediate.range(..step).next_back());
        let previous_step = previous.map(|(s, _)| *s);
        for k in 0.. {
            let Some(rung) = self.rung_step(k) else { return false };
            if rung > step {
                return false;
            }
            if previous_step.is_some_and(|p| p >= rung) {
                continue;
            }
            if value.is_nan() {
                return true;
            }
            let mut competing: Vec<f64> =
                trials.iter().filter(|t| t.id != trial).filter_map(|t| value_at_rung(t, rung)).collect();
            competing.push(value);
            competing.sort_by(f64::total_cmp);
            // Within the best len / rf; the best alone while fewer than rf have reported.
            let keep = (competing.len() as u64 / self.config.reduction_factor).max(1);
            if value > competing[keep as usize - 1] {
                return true;
            }
        }
        false
    }
}

/// The median pruner's settings (Optuna's `MedianPruner` defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MedianConfig {
    /// No pruning until this many trials have completed.
    pub n_startup_trials: usize,
    /// No pruning before this step.
    pub n_warmup_steps: u64,
    /// Check every this many steps after the warm-up.
    pub interval_steps: u64,
    /// No pruning at a step fewer than this many completed trials reported.
    pub n_min_trials: usize,
}

impl Default for MedianConfig {
    fn default() -> Self {
        MedianConfig { n_startup_trials: 5, n_warmup_steps: 0, interval_steps: 1, n_min_trials: 1 }
    }
}

/// Stops a trial whose best value so far is worse than the median of the completed trials'
/// values at the same step, as Optuna's `MedianPruner` does.
#[derive(Debug, Clone)]
pub struct MedianPruner {
    config: MedianConfig,
}

impl MedianPruner {
    pub fn new(config: MedianConfig) -> Result<Self, TuneError> {
        let fail = |reason: &str| Err(TuneError::InvalidSetting { what: "median pruner", reason: reason.to_string() });
        if config.interval_steps < 1 {
            return fail("interval_steps must be at least 1");
        }
        if config.n_min_trials < 1 {
            return fail("n_min_trials must be at least 1");
        }
        Ok(MedianPruner { config })
    }
}

/// numpy's default (linear) percentile of sorted, non-empty values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    if i + 1 < sorted.len() { sorted[i] + frac * (sorted[i + 1] - sorted[i]) } else { sorted[i] }
}

impl Pruner for MedianPruner {
    fn should_stop(&self, trial: u64, step: u64, value: f64, trials: &[Trial]) -> bool {
        let c = &self.config;
        let completed: Vec<&Trial> = trials.iter().filter(|t| t.state == TrialState::Complete).collect();
        if completed.is_empty() || completed.len() < c.n_startup_trials || step < c.n_warmup_steps {
            return false;
        }
        let current = trials.iter().find(|t| t.id == trial);
        // Check only at the first report of each interval.
        let interval_start = (step - c.n_warmup_steps) / c.interval_steps * c.interval_steps + c.n_warmup_steps;
        let before = current.and_then(|t| t.intermediate.range(..step).next_back()).map(|(s, _)| *s);
        if before.is_some_and(|s| s >= interval_start) {
            return false;
        }
        let best = current
            .map(|t| t.intermediate.values().copied().filter(|v| !v.is_nan()).fold(value, f64::min))
            .unwrap_or(value);
        if best.is_nan() {
            return true;
        }
        let mut at_step: Vec<f64> =
            completed.iter().filter_map(|t| t.intermediate.get(&step).copied()).filter(|v| !v.is_nan()).collect();
        if at_step.len() < c.n_min_trials || at_step.is_empty() {
            return false;
        }
        at_step.sort_by(f64::total_cmp);
        best > percentile(&at_step, 50.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Params;
    use std::collections::BTreeMap;

    const STEPS: u64 = 27;

    /// A loss curve decaying from 1 to `fin` over the steps, with a little per-trial noise.
    fn curve(fin: f64, step: u64, id: u64) -> f64 {
        let t = step as f64 / STEPS as f64;
        fin + (1.0 - fin) * (-4.0 * t).exp() + 0.002 * ((step + 3 * id) as f64).sin()
    }

    /// Runs 30 trials one after another, every third one bad (ends near 0.8, the others between
    /// 0.1 and 0.3, the best, trial 16, at 0.05), reporting each step and stopping when the
    /// pruner says so. Returns (finals of the trials, which were pruned).
    fn run(pruner: &dyn Pruner) -> (Vec<f64>, Vec<bool>) {
        let mut trials: Vec<Trial> = Vec::new();
        let mut finals = Vec::new();
        let mut pruned = Vec::new();
        for id in 0..30u64 {
            let good_final = if id == 16 { 0.05 } else { 0.1 + 0.2 * ((id * 7) % 10) as f64 / 10.0 };
            let fin = if id % 3 == 2 { 0.8 + 0.01 * (id % 5) as f64 } else { good_final };
            finals.push(fin);
            trials.push(Trial {
                id,
                params: Params::new(),
                intermediate: BTreeMap::new(),
                value: None,
                state: TrialState::Running,
            });
            let mut stopped = false;
            for step in 1..=STEPS {
                let v = curve(fin, step, id);
                trials[id as usize].intermediate.insert(step, v);
                if pruner.should_stop(id, step, v, &trials) {
                    stopped = true;
                    break;
                }
            }
            let t = &mut trials[id as usize];
            t.state = if stopped { TrialState::Pruned } else { TrialState::Complete };
            t.value = t.intermediate.values().next_back().copied();
            pruned.push(stopped);
        }
        (finals, pruned)
    }

    fn check_prunes_bad_and_keeps_best(name: &str, pruner: &dyn Pruner, startup: usize) {
        let (finals, pruned) = run(pruner);
        let n_pruned = pruned.iter().filter(|p| **p).count();
        let best = (0..finals.len()).min_by(|&a, &b| finals[a].total_cmp(&finals[b])).unwrap();
        let bad_pruned = (startup..finals.len()).filter(|&i| i % 3 == 2 && pruned[i]).count();
        let bad_after_startup = (startup..finals.len()).filter(|&i| i % 3 == 2).count();
        println!("{name}: pruned {n_pruned} of 30, bad pruned {bad_pruned} of {bad_after_startup} after start-up");
        assert!(n_pruned >= 10, "{name}: pruned only {n_pruned}: {pruned:?}");
        assert_eq!(bad_pruned, bad_after_startup, "{name}: a bad trial ran to the end: {pruned:?}");
        assert_eq!(best, 16);
        assert!(!pruned[best], "{name}: the best trial (#{best}) was pruned");
    }

    #[test]
    fn asha_prunes_the_bad_third_and_never_the_best() {
        check_prunes_bad_and_keeps_best("asha", &AshaPruner::new(AshaConfig::default()).unwrap(), 1);
    }

    #[test]
    fn median_prunes_the_bad_third_and_never_the_best() {
        check_prunes_bad_and_keeps_best("median", &MedianPruner::new(MedianConfig::default()).unwrap(), 5);
    }

    fn reported(id: u64, values: &[(u64, f64)], state: TrialState) -> Trial {
        Trial { id, params: Params::new(), intermediate: values.iter().copied().collect(), value: None, state }
    }

    #[test]
    fn asha_checks_each_rung_once_against_the_top_third_there() {
        let asha = AshaPruner::new(AshaConfig::default()).unwrap();
        // Rung steps 1, 3, 9: step 2 is no rung.
        let others: Vec<Trial> = (0..5).map(|i| reported(i, &[(1, i as f64)], TrialState::Complete)).collect();
        let mut trials = others.clone();
        trials.push(reported(9, &[(1, 1.5)], TrialState::Running));
        // Six values at rung 1: only the best 6 / 3 = 2 (0 and 1) go on; 1.5 does not.
        assert!(asha.should_stop(9, 1, 1.5, &trials));
        trials[5] = reported(9, &[(1, 0.5)], TrialState::Running);
        assert!(!asha.should_stop(9, 1, 0.5, &trials));
        // Step 2 crosses no rung, whatever the value.
        trials[5] = reported(9, &[(1, 0.5), (2, 100.0)], TrialState::Running);
        assert!(!asha.should_stop(9, 2, 100.0, &trials));
        // A first report at step 3 crosses rungs 1 and 3 (alone at rung 3: it goes on).
        let mut late = others;
        late.push(reported(9, &[(3, 0.5)], TrialState::Running));
        assert!(!asha.should_stop(9, 3, 0.5, &late));
        // The first trial of a study always goes on; NaN never does.
        let first = [reported(0, &[(1, 7.0)], TrialState::Running)];
        assert!(!asha.should_stop(0, 1, 7.0, &first));
        assert!(asha.should_stop(0, 1, f64::NAN, &first));
        assert!(AshaPruner::new(AshaConfig { reduction_factor: 1, ..AshaConfig::default() }).is_err());
    }

    #[test]
    fn median_waits_for_start_up_and_compares_the_best_value_so_far() {
        let median = MedianPruner::new(MedianConfig::default()).unwrap();
        let mut trials: Vec<Trial> =
            (0..4).map(|i| reported(i, &[(1, i as f64), (2, i as f64)], TrialState::Complete)).collect();
        trials.push(reported(9, &[(1, 10.0)], TrialState::Running));
        // Four completed trials: still in start-up.
        assert!(!median.should_stop(9, 1, 10.0, &trials));
        trials.insert(4, reported(4, &[(1, 4.0), (2, 4.0)], TrialState::Complete));
        // Median of 0..=4 at step 1 is 2.
        assert!(median.should_stop(9, 1, 10.0, &trials));
        // Best so far 1.5 (step 1) is below the median 2 at step 2 even though step 2 says 10.
        trials[5] = reported(9, &[(1, 1.5), (2, 10.0)], TrialState::Running);
        assert!(!median.should_stop(9, 2, 10.0, &trials));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
    }
}
