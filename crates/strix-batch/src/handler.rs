//! Batch shards as job-queue tasks: what a worker runs for kind `batch`, and the manifest
//! written when the last shard finishes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use strix_catalog::{Catalog, Engine};
use strix_jobs::{Handler, JobState, Status, Task, TaskContext, TaskFailure, TaskState};
use strix_pipeline::Pipeline;

use crate::{BatchError, BatchSpec, Manifest, PinnedModel, Place, ShardNotDone, ShardSpec, run_shard};

/// The task kind of a batch shard.
pub const KIND: &str = "batch";

/// What a batch job stores as its spec: the batch, the shard each task runs (task `i` runs
/// shard `shards[i]`), and the shards a previous run completed (their files are read back for
/// the manifest, so the job record stays small however many there are).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchJob {
    pub batch: BatchSpec,
    pub shards: Vec<u32>,
    pub skipped: Vec<u32>,
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

    /// Write the manifest of a finished batch job from its tasks' outcomes and the skipped
    /// shards' files. Two workers finishing the last two shards may both write it: the same
    /// file, since its times come from the tasks.
    pub fn write_manifest(&self, job: &JobState, tasks: &[TaskState]) -> Result<Manifest, BatchError> {
        let spec: BatchJob = serde_json::from_value(job.spec.clone())
            .map_err(BatchError::json(format!("job {} is not a batch", job.id)))?;
        let output = Place::open(&spec.batch.output, &self.store_options, true)?;
        let mut outcomes = Vec::new();
        for &index in &spec.skipped {
            let bytes = self.runtime.block_on(output.get(&crate::shard_file(index), crate::MAX_OWN_FILE))?;
            let (outcome, _) = crate::read_outcome(&bytes, index).ok_or_else(|| {
                BatchError::Invalid(format!("{} changed while the batch ran", crate::shard_file(index)))
            })?;
            outcomes.push(outcome);
        }
        let mut not_done = Vec::new();
        for t in tasks {
            let index = spec.shards.get(t.index as usize).copied().unwrap_or(t.index);
            match (&t.status, &t.result) {
                (Status::Succeeded, Some(result)) => outcomes.push(
                    serde_json::from_value(result.clone())
                        .map_err(BatchError::json(format!("task {} of job {}", t.index, job.id)))?,
                ),
                (status, _) => {
                    let error = t.error.clone().unwrap_or_else(|| status.to_string());
                    not_done.push(ShardNotDone { index, file: crate::shard_file(index), error });
                }
            }
        }
        let finished = tasks.iter().filter_map(|t| t.finished_at).fold(job.submitted_at, f64::max);
        let manifest = Manifest::gather(
            &spec.batch,
            Some(job.id.to_string()),
            job.status,
            &outcomes,
            not_done,
            job.submitted_at,
            finished,
        );
        self.runtime.block_on(manifest.write(&output))?;
        Ok(manifest)
    }
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
