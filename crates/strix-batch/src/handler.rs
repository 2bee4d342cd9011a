//! Batch shards as job-queue tasks: what a worker runs for kind `batch`, and the manifest
//! written when the last shard finishes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use strix_catalog::{Catalog, Engine};
use strix_jobs::{Handler, JobState, Status, Task, TaskContext, TaskFailure, TaskState};
use strix_pipeline::Pipeline;

use crate::{BatchError, BatchSpec, Manifest, PinnedModel, Place, ShardNotDone, ShardOutcome, ShardSpec, run_shard};

/// The task kind of a batch shard.
pub const KIND: &str = "batch";

/// What a batch job stores as its spec: the batch, and the shards a previous run completed.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchJob {
    pub batch: BatchSpec,
    pub skipped: Vec<ShardOutcome>,
}

/// Runs batch shards in a worker: each pinned model loaded once, stores opened per shard.
pub struct BatchHandler {
    catalog: Catalog,
    engine: Engine,
    /// Cloud store settings (`aws_endpoint`, ...), as the registry takes them.
    store_options: Vec<(String, String)>,
    runtime: tokio::runtime::Handle,
    pipelines: Mutex<HashMap<PinnedModel, Arc<Pipeline>>>,
}

fn failed(e: &BatchError) -> TaskFailure {
    TaskFailure::Failed(strix_core::error_chain(e))
}

impl BatchHandler {
    /// `runtime` runs the store's requests; the handler itself is called on blocking threads.
    pub fn new(
        catalog: Catalog,
        engine: Engine,
        store_options: Vec<(String, String)>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        BatchHandler { catalog, engine, store_options, runtime, pipelines: Mutex::default() }
    }

    /// The pinned model, loaded once; refused if the reference now resolves to other weights.
    pub fn pipeline(&self, pinned: &PinnedModel) -> Result<Arc<Pipeline>, BatchError> {
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|e| e.into_inner()).get(pinned) {
            return Ok(p.clone());
        }
        let model_err = |e: crate::BoxError| BatchError::Model { reference: pinned.reference.clone(), source: e };
        let model =
            self.catalog.resolve(&pinned.reference, &strix_core::NoProgress).map_err(|e| model_err(e.into()))?;
        let (found, _) = strix_core::digest::sha256_file(&model.weights).map_err(|e| model_err(e.into()))?;
        if found != pinned.sha256 {
            return Err(BatchError::ModelChanged {
                reference: pinned.reference.clone(),
                found,
                planned: pinned.sha256.clone(),
            });
        }
        let pipeline = Arc::new(self.engine.load(model).map_err(|e| model_err(e.into()))?);
        self.pipelines.lock().unwrap_or_else(|e| e.into_inner()).insert(pinned.clone(), pipeline.clone());
        Ok(pipeline)
    }

    /// The batch's input and output places.
    pub fn places(&self, batch: &BatchSpec) -> Result<(Place, Place), BatchError> {
        Ok((
            Place::open(&batch.input, &self.store_options, false)?,
            Place::open(&batch.output, &self.store_options, true)?,
        ))
    }

    /// Write the manifest of a finished batch job from its tasks' outcomes. Written whole, and
    /// the same file when two workers finishing the last two shards both write it.
    pub fn write_manifest(&self, job: &JobState, tasks: &[TaskState]) -> Result<Manifest, BatchError> {
        let spec: BatchJob = serde_json::from_value(job.spec.clone())
            .map_err(|e| BatchError::Invalid(format!("job {} is not a batch: {e}", job.id)))?;
        let mut outcomes = spec.skipped.clone();
        let mut not_done = Vec::new();
        for t in tasks {
            match (&t.status, &t.result) {
                (Status::Succeeded, Some(result)) => outcomes.push(
                    serde_json::from_value(result.clone())
                        .map_err(|e| BatchError::Invalid(format!("task {} of job {}: {e}", t.index, job.id)))?,
                ),
                (status, _) => {
                    let index = shard_index(&spec, t.index);
                    let error = t.error.clone().unwrap_or_else(|| status.to_string());
                    not_done.push(ShardNotDone { index, file: crate::shard_file(index), error });
                }
            }
        }
        let finished = job.finished_at.unwrap_or_else(crate::here::now);
        let manifest = Manifest::gather(
            &spec.batch,
            Some(job.id.to_string()),
            &job.status.to_string(),
            &outcomes,
            not_done,
            job.submitted_at,
            finished,
        );
        let (_, output) = self.places(&spec.batch)?;
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| BatchError::Invalid(e.to_string()))?;
        self.runtime.block_on(output.put(crate::MANIFEST_FILE, bytes))?;
        Ok(manifest)
    }
}

/// Task `task` of a job runs the `task`-th shard not skipped.
fn shard_index(job: &BatchJob, task: u32) -> u32 {
    let skipped: Vec<u32> = job.skipped.iter().map(|s| s.index).collect();
    (0u32..).filter(|i| !skipped.contains(i)).nth(task as usize).unwrap_or(task)
}

impl Handler for BatchHandler {
    fn kinds(&self) -> Vec<String> {
        vec![KIND.to_string()]
    }

    fn run(&self, task: &Task, ctx: &TaskContext) -> Result<Value, TaskFailure> {
        let shard: ShardSpec = serde_json::from_value(task.spec.clone())
            .map_err(|e| TaskFailure::Failed(format!("not a batch shard: {e}")))?;
        let pipeline = self.pipeline(&shard.batch.model).map_err(|e| failed(&e))?;
        let (input, output) = self.places(&shard.batch).map_err(|e| failed(&e))?;
        let outcome = self
            .runtime
            .block_on(run_shard(&shard, &pipeline, &input, &output, &|done, total| ctx.progress(done, total), &|| {
                ctx.stopped()
            }))
            .map_err(|e| failed(&e))?;
        let Some(outcome) = outcome else { return Err(TaskFailure::Interrupted) };
        ctx.log(format!(
            "shard {}: {} images, {} not answered, {:.1} s",
            shard.index,
            outcome.images,
            outcome.failures.len(),
            outcome.seconds
        ));
        serde_json::to_value(&outcome).map_err(|e| TaskFailure::Failed(e.to_string()))
    }

    fn job_finished(&self, job: &JobState, tasks: &[TaskState]) -> Result<Option<Value>, String> {
        let manifest = self.write_manifest(job, tasks).map_err(|e| strix_core::error_chain(&e))?;
        Ok(Some(serde_json::json!({
            "manifest": format!("{}/{}", manifest.output.trim_end_matches('/'), crate::MANIFEST_FILE),
            "images": manifest.images,
            "answered": manifest.answered,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_runs_the_shards_a_previous_run_left() {
        let outcome =
            |index| ShardOutcome { index, file: crate::shard_file(index), images: 1, failures: vec![], seconds: 0.0 };
        let batch = BatchSpec {
            input: "in".into(),
            output: "out".into(),
            model: PinnedModel { reference: "m".into(), sha256: String::new() },
            shard_size: 1,
            top_k: 1,
            max_pixels: 1,
        };
        let job = BatchJob { batch, skipped: vec![outcome(0), outcome(2)] };
        let shards: Vec<u32> = (0..3).map(|t| shard_index(&job, t)).collect();
        assert_eq!(shards, vec![1, 3, 4]);
    }
}
