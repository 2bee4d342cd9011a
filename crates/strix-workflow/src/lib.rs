//! Pipelines: the steps from labels to a deployed version, read from a `PIPELINE.toml`
//! ([`spec`]), gated by a condition on the new model's figures ([`condition`]), each step
//! recorded under the digest of its inputs and settings ([`state`]) so that an unchanged rerun
//! runs nothing and a killed one resumes. The steps themselves (training, evaluation,
//! registration) are the binary's: this crate only decides what must run.

pub mod condition;
pub mod spec;
pub mod state;

use std::path::{Path, PathBuf};

pub use condition::{Clause, Condition, Verdict};
pub use spec::{EvaluateStep, PipelineSpec, RegisterStep, SnapshotStep};
pub use state::{State, StepRecord, StepStatus, key};

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("condition {text:?}: {reason}")]
    Condition { text: String, reason: String },
    #[error("{}: another `strix pipeline run` is using this state folder", path.display())]
    Busy { path: PathBuf },
}

impl WorkflowError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkflowError + '_ {
        move |source| WorkflowError::Io { path: path.to_path_buf(), source }
    }
}
