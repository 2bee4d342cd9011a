//! Tuning `strix train`: the settings of a tuning job, the default search space of each task,
//! and a trial's training config (the base settings with the trial's parameters written over
//! them; every parameter is a training setting of the same name).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use strix_core::Task;
use strix_train::TrainConfig;

use crate::TuneError;
use crate::pruner::{AshaConfig, AshaPruner, MedianConfig, MedianPruner, NoPruner, Pruner};
use crate::sampler::{GridSampler, RandomSampler, Sampler};
use crate::space::{Param, ParamValue, Params, SearchSpace};
use crate::tpe::TpeSampler;

/// How the next trial's parameters are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Optuna's `TPESampler` defaults (10 random start-up trials, 24 candidates).
    Tpe,
    Random,
    /// Every combination, [`GRID_POINTS`] values per numeric parameter.
    Grid,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Tpe => "tpe",
            Strategy::Random => "random",
            Strategy::Grid => "grid",
        }
    }
}

impl EarlyStopping {
    pub fn name(self) -> &'static str {
        match self {
            EarlyStopping::Asha => "asha",
            EarlyStopping::Median => "median",
            EarlyStopping::Off => "off",
        }
    }
}

/// Values per numeric parameter of a grid search.
pub const GRID_POINTS: usize = 3;

/// What stops unpromising trials early, from the objective after each epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EarlyStopping {
    /// Asynchronous successive halving: rungs at epochs 1, 3, 9, ...; the best third goes on.
    Asha,
    /// Stop a trial whose best so far is worse than the median of finished trials at that epoch.
    Median,
    Off,
}

/// A tuning job's settings; saved with the study, so a resumed job goes on the same way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneSettings {
    /// The epoch metric the trials are judged by (`val_accuracy`, `val_loss`, `map`, ...).
    pub objective: String,
    pub maximize: bool,
    /// Trials in all, failed and stopped ones included.
    pub trials: usize,
    /// Trials trained at the same time.
    pub parallel: usize,
    /// CPU threads shared by the parallel trials.
    pub threads: usize,
    pub strategy: Strategy,
    pub early_stopping: EarlyStopping,
    /// Seeds the sampler; the trials keep the base config's training seed.
    pub seed: u64,
}

impl TuneSettings {
    /// The objective a task is tuned for unless told otherwise, and whether higher is better.
    pub fn default_objective(task: Task) -> (&'static str, bool) {
        match task {
            Task::Detect => ("map", true),
            _ => ("val_accuracy", true),
        }
    }

    /// Whether higher values of a metric are better, from its name: losses lower, the rest higher.
    pub fn maximizes(metric: &str) -> bool {
        !(metric.contains("loss") || ["qfl", "dfl", "giou", "seconds"].contains(&metric))
    }

    pub fn validate(&self) -> Result<(), TuneError> {
        let bad = |what, reason: String| Err(TuneError::InvalidSetting { what, reason });
        if self.trials == 0 {
            return bad("trials", "must be at least 1".into());
        }
        if self.parallel == 0 || self.parallel > self.trials {
            return bad(
                "parallel",
                format!("must be from 1 to the number of trials ({}), got {}", self.trials, self.parallel),
            );
        }
        if self.objective.is_empty() {
            return bad("objective", "names no metric".into());
        }
        Ok(())
    }

    pub fn sampler(&self) -> Result<Box<dyn Sampler>, TuneError> {
        Ok(match self.strategy {
            Strategy::Tpe => Box::new(TpeSampler::with_seed(self.seed)),
            Strategy::Random => Box::new(RandomSampler::new(self.seed)),
            Strategy::Grid => Box::new(GridSampler::new(GRID_POINTS)?),
        })
    }

    pub fn pruner(&self) -> Result<Box<dyn Pruner>, TuneError> {
        Ok(match self.early_stopping {
            EarlyStopping::Asha => Box::new(AshaPruner::new(AshaConfig::default())?),
            EarlyStopping::Median => Box::new(MedianPruner::new(MedianConfig::default())?),
            EarlyStopping::Off => Box::new(NoPruner),
        })
    }

    /// The study's value of an objective reading (the study minimises).
    pub fn to_study(&self, value: f64) -> f64 {
        if self.maximize { -value } else { value }
    }

    /// An objective reading from the study's value.
    pub fn from_study(&self, value: f64) -> f64 {
        self.to_study(value)
    }
}

fn float(low: f64, high: f64, log: bool) -> Param {
    Param::Float { low, high, log }
}

fn choices(values: &[Value]) -> Param {
    Param::Categorical { choices: values.to_vec() }
}

/// What `strix tune` searches unless given `--space`: the optimiser's learning rate and weight
/// decay (log-uniform), the batch size, and the augmentation switches of the task. The
/// architecture and the epochs stay the base config's: they set a trial's cost, and the epochs
/// are what early stopping cuts.
pub fn default_space(task: Task) -> Result<SearchSpace, TuneError> {
    let params = match task {
        Task::Detect => vec![
            ("lr", float(1e-4, 1e-2, true)),
            ("weight_decay", float(1e-6, 1e-2, true)),
            ("batch_size", choices(&[8.into(), 16.into(), 32.into()])),
            ("hflip", choices(&[true.into(), false.into()])),
            ("translate", float(0.0, 0.2, false)),
        ],
        _ => vec![
            ("lr", float(1e-4, 3e-2, true)),
            ("weight_decay", float(1e-6, 1e-2, true)),
            ("batch_size", choices(&[16.into(), 32.into(), 64.into(), 128.into()])),
            ("hflip", choices(&[true.into(), false.into()])),
            ("color_jitter", float(0.0, 0.4, false)),
            ("crop_scale_min", float(0.3, 1.0, false)),
            ("label_smoothing", float(0.0, 0.2, false)),
        ],
    };
    SearchSpace::new(params.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A parameter's value as the training config's TOML has it.
fn toml_value(name: &str, value: &ParamValue) -> Result<toml::Value, TuneError> {
    let bad = || TuneError::InvalidParam {
        param: name.to_string(),
        reason: format!("{value:?} is not a setting's value (a string, number or boolean)"),
    };
    match value {
        ParamValue::Float(v) => Ok(toml::Value::Float(*v)),
        ParamValue::Int(v) => Ok(toml::Value::Integer(*v)),
        ParamValue::Choice(Value::Bool(b)) => Ok(toml::Value::Boolean(*b)),
        ParamValue::Choice(Value::String(s)) => Ok(toml::Value::String(s.clone())),
        ParamValue::Choice(Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(toml::Value::Integer(i)),
            None => n.as_f64().map(toml::Value::Float).ok_or_else(bad),
        },
        ParamValue::Choice(_) => Err(bad()),
    }
}

/// `base` with `params` written over it and the run folder set: one trial's config. A
/// parameter that is no training setting, or a value the setting refuses, is named.
pub fn trial_config(base: &toml::Table, params: &Params, run_dir: &std::path::Path) -> Result<TrainConfig, TuneError> {
    let mut table = base.clone();
    for (name, value) in params {
        table.insert(name.clone(), toml_value(name, value)?);
    }
    table.insert("run_dir".into(), toml::Value::String(run_dir.display().to_string()));
    let text = toml::to_string(&table).map_err(|e| TuneError::InvalidSpace(format!("the trial's config: {e}")))?;
    TrainConfig::from_toml(&text, std::path::Path::new("the trial's settings")).map_err(|e| {
        let names: Vec<&str> = params.keys().map(String::as_str).collect();
        TuneError::Train { what: format!("parameters {}", names.join(", ")), source: Box::new(e) }
    })
}

/// Checks that every parameter of `space` is a training setting that takes the values of
/// its domain (its ends or each choice), before any trial is trained.
pub fn check_space(base: &toml::Table, space: &SearchSpace) -> Result<(), TuneError> {
    let tmp = std::path::Path::new("check");
    for (name, param) in space.params() {
        let values: Vec<ParamValue> = match param {
            Param::Float { low, high, .. } => vec![ParamValue::Float(*low), ParamValue::Float(*high)],
            Param::Int { low, high, .. } => vec![ParamValue::Int(*low), ParamValue::Int(*high)],
            Param::Categorical { choices } => choices.iter().cloned().map(ParamValue::Choice).collect(),
        };
        if ["data", "val_data", "test_data", "pretrained", "run_dir", "task", "threads", "device"]
            .contains(&name.as_str())
        {
            return Err(TuneError::InvalidParam {
                param: name.clone(),
                reason: "is set by the tuning job itself, not searched".into(),
            });
        }
        for value in values {
            let params = Params::from([(name.clone(), value.clone())]);
            trial_config(base, &params, tmp).map_err(|e| match e {
                TuneError::InvalidParam { .. } => e,
                e => TuneError::InvalidParam {
                    param: name.clone(),
                    reason: format!("{value:?} is not a value `strix train` takes: {}", crate::error_chain(&e)),
                },
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> toml::Table {
        toml::from_str("data = \"d\"\nmodel = \"small-cnn\"\nepochs = 3\n").unwrap()
    }

    #[test]
    fn a_trials_parameters_are_the_training_settings_of_the_same_name() {
        let params = Params::from([
            ("lr".to_string(), ParamValue::Float(0.02)),
            ("batch_size".to_string(), ParamValue::Choice(32.into())),
            ("hflip".to_string(), ParamValue::Choice(false.into())),
            ("optimizer".to_string(), ParamValue::Choice("sgd".into())),
            ("epochs".to_string(), ParamValue::Int(2)),
        ]);
        let cfg = trial_config(&base(), &params, std::path::Path::new("out/trial-003")).unwrap();
        assert_eq!((cfg.lr, cfg.batch_size, cfg.hflip, cfg.epochs), (0.02, 32, false, 2));
        assert_eq!(cfg.optimizer, strix_train::config::OptimizerKind::Sgd);
        assert_eq!(cfg.run_dir.as_deref(), Some(std::path::Path::new("out/trial-003")));
    }

    #[test]
    fn every_tasks_default_space_is_valid_and_a_bad_space_is_named_before_training() {
        for task in strix_train::train::TASKS {
            check_space(&base(), &default_space(task).unwrap()).unwrap();
        }
        let typo: SearchSpace = toml::from_str("[learning_rate]\ntype = \"float\"\nlow = 0.001\nhigh = 0.1\n").unwrap();
        let e = crate::error_chain(&check_space(&base(), &typo).unwrap_err());
        assert!(e.contains("learning_rate") && e.contains("unknown field"), "{e}");
        let bad: SearchSpace = toml::from_str("[optimizer]\ntype = \"categorical\"\nchoices = [\"adam\"]\n").unwrap();
        let e = crate::error_chain(&check_space(&base(), &bad).unwrap_err());
        assert!(e.contains("optimizer") && e.contains("adam"), "{e}");
        let fixed: SearchSpace = toml::from_str("[data]\ntype = \"categorical\"\nchoices = [\"a\", \"b\"]\n").unwrap();
        assert!(crate::error_chain(&check_space(&base(), &fixed).unwrap_err()).contains("set by the tuning job"));
    }

    #[test]
    fn settings_are_checked_and_the_direction_follows_the_metric() {
        let s = TuneSettings {
            objective: "val_loss".into(),
            maximize: TuneSettings::maximizes("val_loss"),
            trials: 4,
            parallel: 2,
            threads: 2,
            strategy: Strategy::Tpe,
            early_stopping: EarlyStopping::Asha,
            seed: 0,
        };
        assert!(s.validate().is_ok() && !s.maximize && TuneSettings::maximizes("val_accuracy"));
        assert_eq!((s.to_study(0.5), s.from_study(0.5)), (0.5, 0.5));
        let many = TuneSettings { parallel: 5, ..s.clone() };
        assert!(many.validate().unwrap_err().to_string().contains("parallel"));
        let up = TuneSettings { maximize: true, ..s };
        assert_eq!((up.to_study(0.9), up.from_study(-0.9)), (-0.9, 0.9));
    }
}
