//! Training with burn: classifier architectures (a small CNN, ResNet-18/34/50,
//! EfficientNet-Lite0 with its pretrained ImageNet weights), the training loop with
//! checkpoints and resume, metrics, and the HTML report of a run.
//!
//! ```no_run
//! use strix_train::{TrainConfig, train::{train, Quiet}};
//! let cfg = TrainConfig::from_toml("data = \"data/trash\"\nepochs = 3\n", "train.toml".as_ref())?;
//! let outcome = train(cfg, &Quiet)?;
//! println!("val accuracy {:.3}", outcome.val.accuracy);
//! # Ok::<(), strix_train::TrainError>(())
//! ```

pub mod checkpoint;
pub mod config;
pub mod detect;
mod error;
pub mod kernels;
pub mod layers;
pub mod metrics;
pub mod models;
mod plot;
mod report;
pub mod train;
pub mod weights;

pub use burn::prelude::Device;
pub use config::TrainConfig;
pub use error::TrainError;
pub use models::{Arch, Classifier, ModelShape};
pub use weights::Weights;
