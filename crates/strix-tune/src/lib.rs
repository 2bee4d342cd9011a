//! Hyperparameter search: a [`SearchSpace`] of named parameters, [samplers](sampler) that
//! suggest the next trial (random, grid, and [TPE](tpe) following Optuna's `TPESampler` defaults),
//! [pruners](pruner) that stop unpromising trials early (asynchronous successive halving,
//! median), and a [`Study`] that records the trials and saves to JSON to resume. [`tuning`]
//! runs a study whose trials are `strix train` runs, P at a time, stopped early from the
//! per-epoch metrics of the one training loop, with a `report.html` of the search.
//!
//! Lower objective values are better throughout; to maximise, report the negative.
//!
//! ```
//! use strix_tune::{Outcome, Study, SearchSpace, TpeSampler, AshaPruner, AshaConfig};
//!
//! let space: SearchSpace = serde_json::from_str(
//!     r#"{"lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": true},
//!         "depth": {"type": "int", "low": 1, "high": 8}}"#,
//! )?;
//! let mut study = Study::new(space);
//! let mut sampler = TpeSampler::with_seed(0);
//! let pruner = AshaPruner::new(AshaConfig::default())?;
//! for _ in 0..20 {
//!     let (id, params) = study.ask(&mut sampler)?;
//!     let lr = params["lr"].as_f64().unwrap_or(1e-3);
//!     let depth = params["depth"].as_i64().unwrap_or(1) as f64;
//!     let mut outcome = Outcome::Complete(0.0);
//!     for epoch in 1..=9 {
//!         // A stand-in for training: the loss falls with the epochs, least for a bad lr.
//!         let loss = (lr.log10() + 3.0).powi(2) + depth * 0.01 + 1.0 / epoch as f64;
//!         if study.report(id, epoch, loss, &pruner)? {
//!             outcome = Outcome::Pruned;
//!             break;
//!         }
//!         outcome = Outcome::Complete(loss);
//!     }
//!     study.tell(id, outcome)?;
//! }
//! let best = study.best_trial().expect("some trial completed");
//! assert!(best.value.is_some());
//! let saved = study.to_json()?;
//! assert_eq!(Study::from_json(&saved)?, study);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(test)]
mod optuna_tests;
mod parzen;
pub mod pruner;
mod report;
mod rng;
pub mod sampler;
pub mod space;
mod state;
pub mod study;
#[cfg(test)]
mod testfns;
pub mod tpe;
pub mod training;
pub mod trial;
mod truncnorm;
pub mod tuning;

use thiserror::Error;

pub use pruner::{AshaConfig, AshaPruner, MedianConfig, MedianPruner, NoPruner, Pruner};
pub use sampler::{GridSampler, RandomSampler, Sampler};
pub use space::{Param, ParamValue, Params, SearchSpace};
pub use study::{Outcome, Study};
pub use tpe::{TpeConfig, TpeSampler};
pub use training::{EarlyStopping, Strategy, TuneSettings};
pub use trial::{Trial, TrialState};
pub use tuning::{InProcess, Trainer, TrialRun, Tuning, TuningObserver};

#[derive(Debug, Error)]
pub enum TuneError {
    #[error("search space parameter {param:?}: {reason}")]
    InvalidParam { param: String, reason: String },
    #[error("search space: {0}")]
    InvalidSpace(String),
    #[error("{what}: {reason}")]
    InvalidSetting { what: &'static str, reason: String },
    #[error("the sampler suggested parameters outside the search space: {0}")]
    InvalidSuggestion(String),
    #[error("grid search is exhausted: all {points} points have been tried")]
    GridExhausted { points: u128 },
    #[error("trial {0} is not in this study")]
    UnknownTrial(u64),
    #[error("trial {trial} has already ended ({state:?})")]
    TrialFinished { trial: u64, state: TrialState },
    #[error("trial {trial}: step {step} reported after step {last}; steps must increase")]
    StepNotIncreasing { trial: u64, step: u64, last: u64 },
    #[error("trial {trial}: step {step} reported {value}; intermediate values must be finite")]
    NonFinite { trial: u64, step: u64, value: f64 },
    #[error("saved study: {0}")]
    InvalidStudy(String),
    #[error("study JSON")]
    Json(#[source] serde_json::Error),
    #[error("{what}")]
    Train {
        what: String,
        #[source]
        source: Box<strix_train::TrainError>,
    },
    #[error("{}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A trial trained elsewhere (a job queue) failed there.
    #[error("{0}")]
    Elsewhere(String),
    #[error("{path}: not a tuning folder's state ({reason})")]
    InvalidState { path: std::path::PathBuf, reason: String },
}

impl TuneError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TuneError + '_ {
        move |source| TuneError::Io { path: path.to_path_buf(), source }
    }
}

pub use strix_core::error_chain;
