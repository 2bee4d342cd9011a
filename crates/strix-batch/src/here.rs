//! A planned batch run in this process, or handed to the job queue.

use std::sync::atomic::{AtomicU64, Ordering};

use strix_core::{Progress, ProgressUnit};
use strix_jobs::{JobState, Queue, Status, Submission};
use strix_pipeline::Pipeline;

use crate::handler::BatchJob;
use crate::{BatchError, BatchSpec, Manifest, Place, Plan, ShardNotDone, run_shard};

/// Seconds since 1970, as the manifest and the job states keep times.
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Run the shards `plan` still needs here, one after another, then write the manifest: the
/// same [`run_shard`] the workers run. A shard that fails is named in the manifest and the
/// others go on; a process killed midway leaves whole shard files, which the next run skips.
/// `pipeline` may be `None` only when every shard is complete already.
pub async fn run_here(
    spec: &BatchSpec,
    plan: &Plan,
    pipeline: Option<&Pipeline>,
    input: &Place,
    output: &Place,
    progress: &dyn Progress,
) -> Result<Manifest, BatchError> {
    let started = now();
    plan.prepare(spec, output).await?;
    let shards = plan.to_run();
    let pipeline = match (pipeline, shards.is_empty()) {
        (Some(p), _) => Some(p),
        (None, true) => None,
        (None, false) => return Err(BatchError::Invalid("shards to run and no model loaded".into())),
    };
    let todo: usize = shards.iter().map(|s| s.images.len()).sum();
    progress.start("batch", Some(todo as u64), ProgressUnit::Items);
    let mut outcomes = plan.done.clone();
    let mut not_done = Vec::new();
    for shard in &shards {
        let advanced = AtomicU64::new(0);
        let step = |done: u64, _total: u64| {
            let last = advanced.swap(done, Ordering::Relaxed);
            progress.advance(done.saturating_sub(last));
        };
        let Some(pipeline) = pipeline else { break };
        match run_shard(shard, pipeline, input, output, &step, &|| false).await {
            Ok(Some(outcome)) => outcomes.push(outcome),
            Ok(None) => {}
            Err(e) => not_done.push(ShardNotDone {
                index: shard.index,
                file: shard.file(),
                error: strix_core::error_chain(&e),
            }),
        }
    }
    progress.finish();
    let status = if not_done.is_empty() { Status::Succeeded } else { Status::Failed };
    let manifest = Manifest::gather(spec, None, status, &outcomes, not_done, started, now());
    manifest.write(output).await?;
    Ok(manifest)
}

/// Queue the shards `plan` still needs as one job; workers run them.
pub async fn submit(
    queue: &Queue,
    spec: &BatchSpec,
    plan: &Plan,
    output: &Place,
    submitted_by: &str,
) -> Result<JobState, BatchError> {
    plan.prepare(spec, output).await?;
    let shards = plan.to_run();
    let tasks =
        shards.iter().map(serde_json::to_value).collect::<Result<Vec<_>, _>>().map_err(BatchError::json("a shard"))?;
    let job = BatchJob {
        batch: spec.clone(),
        shards: shards.iter().map(|s| s.index).collect(),
        skipped: plan.done.iter().map(|d| d.index).collect(),
    };
    let submission = Submission {
        kind: crate::KIND.to_string(),
        spec: serde_json::to_value(&job).map_err(BatchError::json("the batch job"))?,
        tasks,
        submitted_by: submitted_by.to_string(),
    };
    Ok(queue.submit(submission).await?)
}
