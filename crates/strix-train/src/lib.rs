//! Training with burn: classifier architectures (a small CNN, ResNet-18/34/50,
//! EfficientNet-Lite0 with its pretrained ImageNet weights), detectors, one run lifecycle
//! with checkpoints and resume for every task, metrics, and the HTML report of a run.
//!
//! ```no_run
//! use strix_train::{TrainConfig, observe::Quiet};
//! let cfg = TrainConfig::from_toml("data = \"data/trash\"\nepochs = 3\n", "train.toml".as_ref())?;
//! let summary = strix_train::train::train(cfg, &Quiet)?;
//! println!("{}", summary.headline());
//! # Ok::<(), strix_train::TrainError>(())
//! ```

pub mod checkpoint;
pub mod classify;
pub mod config;
pub mod detect;
mod error;
pub mod files;
pub mod kernels;
pub mod layers;
pub mod lifecycle;
pub mod metrics;
pub mod models;
pub mod observe;
mod plot;
mod report;
pub mod summary;
pub mod train;
pub mod weights;

pub use burn::prelude::Device;
pub use config::TrainConfig;
pub use error::TrainError;
pub use models::{Arch, Classifier, ModelShape};
pub use summary::{RunSummary, Scores};
pub use weights::Weights;
