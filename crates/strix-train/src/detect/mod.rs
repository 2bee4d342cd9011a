//! Detector training (`task = "detect"`): a NanoDet-Plus-style anchor-free detector on an
//! EfficientNet-Lite0 backbone, trained with quality focal, distribution focal and GIoU losses
//! and a dynamic label assigner, evaluated every epoch with COCO mAP. Same run folder, config,
//! checkpoints, resume and early stopping as classifier runs.

pub mod assign;
mod batch;
mod epoch;
pub mod eval;
pub mod loss;
pub mod model;
mod report;
mod run;

pub use epoch::DetectEpoch;
pub use eval::{DetEvaluation, SavedDetector, evaluate};
pub use model::{Detector, DetectorShape};
pub use run::{Detect, DetectOutcome, load_trained, validation_set};

pub use strix_vision::detect::distances;
