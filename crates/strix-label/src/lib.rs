//! Labelling projects: where a vision project's labels are made, kept and handed to training.
//!
//! - [`Project`]: a folder with `project.toml` (task, classes, the images folder) and
//!   `labels.db`, an SQLite [`Store`] whose saves are atomic, durable and versioned (a save
//!   names the version it was made on; a stale one is refused, never silently lost).
//! - [`web::router`]: the browser labelling app and the JSON API it uses (`/api/...`).
//! - [`Suggester`]: a model's answers shown as suggestions, and the uncertainty that orders
//!   "next image" for active learning.
//! - Clusters (`strix cluster PROJECT` writes them, [`Store::put_clusters`]): "next by
//!   cluster", and a whole cluster labelled at once as unverified labels to review.
//! - [`export`]: COCO, YOLO, class folders and CSV out; COCO, YOLO and class folders in.
//! - [`training_snapshot`]: the labels as of now, exported where training reads them, one
//!   folder per state of the labels.
//! - [`Capture`]: a sample of what a served or streamed model sees, added as new images with
//!   the model's answers, capped, never slowing the caller.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strix_label::LabelError> {
//! use strix_label::{LabelTask, Project, ProjectConfig};
//! let config = ProjectConfig { task: LabelTask::Detect, classes: vec!["bottle".into()], images: "photos".into() };
//! let project = Project::create("trash-project".as_ref(), config).await?;
//! let report = project.scan().await?;
//! println!("{} images added, {} left out", report.added, report.problems.len());
//! # Ok(()) }
//! ```

mod capture;
mod clusters;
mod error;
pub mod export;
mod labels;
mod project;
mod snapshot;
mod store;
mod suggest;
pub mod web;

use std::path::Path;

pub use capture::{Capture, CapturePolicy, CaptureSettings, CaptureStats};
pub use clusters::{ClusterLabelled, ClusterMember, ClusterSummary, Clustering, Placement};
pub use error::LabelError;
pub use labels::{DETECT_THRESHOLD, LabelBox, LabelTask, Labels, Scored, ScoredBox, Suggestion};
pub use project::{Project, ProjectConfig, ScanReport};
pub use snapshot::{Snapshot, SnapshotError, training_snapshot};
pub use store::{Annotation, Author, Filter, ImageRow, NewImage, NextQuery, Order, Root, Saved, Stats, Store};
pub use suggest::{PipelineSuggester, Suggester, suggest_all};

/// Write a file whole or not at all (written aside, synced, then renamed over).
pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), LabelError> {
    strix_core::fs::write_atomic(path, bytes).map_err(LabelError::io(path))
}
