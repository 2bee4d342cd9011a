//! Batch transform (SageMaker's Batch Transform on your own machines): every image under a
//! folder or bucket prefix through one model, into JSON Lines.
//!
//! - The images are listed once, sorted, and cut into shards of `shard_size`; shard `i` writes
//!   `part-{i:05}.jsonl` under the output, one line per image, each exactly what
//!   `strix predict --json` prints for it (an answer, or an error naming the problem).
//! - A shard's file is written whole or not at all (a temporary name, then a rename; one PUT on
//!   S3), so a shard run twice (redelivered after a worker died) replaces its own output and
//!   every image appears exactly once.
//! - Running a batch again skips the shards whose file is already complete.
//! - The model is pinned when the batch is planned: the version it resolved to and its SHA-256,
//!   so every worker runs the same one and refuses another.
//! - When every shard is done, `_manifest.json` records inputs, outputs, failures with their
//!   reasons, the model and timings.
//!
//! Shards run here ([`run_here`]) or as tasks on the job queue ([`submit`], and
//! [`BatchHandler`] in workers), through the same [`run_shard`].

mod handler;
mod here;
mod manifest;
mod place;
mod plan;
mod shard;

pub use handler::{BatchHandler, BatchJob, KIND};
pub use here::{run_here, submit};
pub use manifest::{Failure, Manifest, ShardNotDone, ShardRecord};
pub use place::Place;
pub use plan::{Plan, plan, read_outcome};
pub use shard::{ShardOutcome, run_shard};

use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a batch runs: the same for every shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// A folder, `file://`, `s3://`, `gs://` or `az://` prefix of images.
    pub input: String,
    /// Where the shards and the manifest go (same kinds of place).
    pub output: String,
    pub model: PinnedModel,
    pub shard_size: usize,
    /// Classes kept per image (classifiers).
    pub top_k: usize,
    /// Images with more pixels than this are refused (their line says so).
    pub max_pixels: u64,
}

/// The model every shard must run: what it resolved to when the batch was planned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedModel {
    /// What a worker resolves: `NAME:VERSION` for a registered model, else the name or path given.
    pub reference: String,
    /// SHA-256 of its main network file.
    pub sha256: String,
}

/// One task: shard `index` of a batch, with its images (keys under the input).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSpec {
    pub batch: BatchSpec,
    pub index: u32,
    pub images: Vec<String>,
}

impl ShardSpec {
    /// The shard's output file, under the batch's output.
    pub fn file(&self) -> String {
        shard_file(self.index)
    }
}

/// Shard `index`'s output file name.
pub fn shard_file(index: u32) -> String {
    format!("part-{index:05}.jsonl")
}

/// The manifest's name under the output.
pub const MANIFEST_FILE: &str = "_manifest.json";

/// The batch's spec, written under the output before any shard: a rerun with another model or
/// other options runs every shard again instead of keeping answers it would not give.
pub const SPEC_FILE: &str = "_batch.json";

/// Shard and manifest files are read back whole; none is ever this large.
pub const MAX_OWN_FILE: u64 = 1 << 30;

/// The index of a shard file's name (`part-00012.jsonl`), if it is one.
fn shard_of_file(key: &str) -> Option<u32> {
    key.strip_prefix("part-")?.strip_suffix(".jsonl").filter(|n| n.len() >= 5)?.parse().ok()
}

impl BatchError {
    fn json(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> BatchError {
        let what = what.into();
        move |source| BatchError::Json { what, source }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{place}: {what}")]
    Place {
        place: String,
        what: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("model {reference}")]
    Model {
        reference: String,
        #[source]
        source: BoxError,
    },
    #[error("model {reference} is not the one the batch was planned with (sha256 {found}, planned {planned})")]
    ModelChanged { reference: String, found: String, planned: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the job queue")]
    Jobs(#[from] strix_jobs::JobError),
}
