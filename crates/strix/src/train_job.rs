//! `strix train --queue`: a training run as a job on the queue. The submitter copies the
//! training data (and any pretrained weights) into the registry's store under
//! `jobs/<id>/snapshot/`; a worker fetches it, trains with its epoch lines in the job's log,
//! copies the run folder to `jobs/<id>/run/` after every checkpoint (so another worker resumes
//! a killed run from there), exports it and registers the export when asked. The submitter,
//! with `--wait`, follows the log and fetches the run folder back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strix_batch::Place;
use strix_core::Progress as _;
use strix_jobs::{Handler, JobId, Queue, QueueSettings, Status, Submission, Task, TaskContext, TaskFailure};
use strix_train::files::{CHECKPOINT_FILE, SUMMARY_FILE};
use strix_train::observe::{Control, EpochEnd, Observer};
use strix_train::{RunSummary, TrainConfig, TrainError};

use crate::context::AppContext;

/// The task kind of a training run.
pub const KIND: &str = "train";
/// Where a job's files live under the registry's store.
const JOBS: &str = "jobs";
const SNAPSHOT: &str = "snapshot";
const RUN: &str = "run";
/// The log line a training job writes after each epoch for programs that follow it (a tuning
/// job's pruner): this prefix, then [`EpochNumbers`] as JSON.
const METRICS_LINE: &str = "epoch-metrics ";

/// An epoch's numbers in the job's log.
#[derive(Debug, Serialize, Deserialize)]
struct EpochNumbers {
    epoch: usize,
    epochs: usize,
    metrics: strix_train::observe::Metrics,
}

/// The largest file a job copies (a checkpoint of a big model, a video frame folder's file).
const MAX_FILE: u64 = 8 << 30;

/// A training job's spec: the run's config with its paths inside the snapshot, and what to do
/// with the result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainJob {
    /// The resolved config; `data`, `val_data`, `test_data` and `pretrained` are paths
    /// relative to the snapshot (`data/...`), `run_dir` is unset.
    pub config: TrainConfig,
    /// The registry store the submitter used; a worker with another refuses the job.
    pub store: String,
    /// The job's folder in the store (`jobs/<id>`), where its run goes.
    pub folder: String,
    /// The folder whose `snapshot/` holds the data: the job's own, or a tuning job's that
    /// its trials share.
    pub snapshot: String,
    /// Register the export as the next version of this name.
    pub register: Option<String>,
    /// Files and bytes in the snapshot.
    pub files: u64,
    pub bytes: u64,
}

impl TrainJob {
    /// Refuses a spec whose folders are not job folders or whose paths leave the snapshot:
    /// whoever can queue a job must not make a worker read or write elsewhere.
    fn check(&mut self) -> Result<(), String> {
        for folder in [&self.folder, &self.snapshot] {
            let id = folder.strip_prefix(&format!("{JOBS}/")).unwrap_or_default();
            if id.parse::<JobId>().is_err() {
                return Err(format!("{folder:?} is not a job folder (jobs/<job id>)"));
            }
        }
        for (name, path) in snapshot_paths(&mut self.config) {
            let inside = path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside || path.as_os_str().is_empty() {
                return Err(format!("{name} {} is not a path inside the snapshot", path.display()));
            }
        }
        Ok(())
    }
}

/// The job's folder in the store.
fn job_place(store: &str, options: &[(String, String)], folder: &str) -> Result<Place> {
    let url = format!("{}/{folder}", store.trim_end_matches('/'));
    Ok(Place::open(&url, options, true)?)
}

/// Every file under `dir` (following links), as `/`-separated paths relative to it, sorted.
fn files_under(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let path = entry.with_context(|| d.display().to_string())?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                let rel = path.strip_prefix(dir).unwrap_or(&path);
                let parts: Vec<String> =
                    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The config's paths the snapshot holds: (name in the snapshot, the path).
fn snapshot_paths(cfg: &mut TrainConfig) -> Vec<(&'static str, &mut PathBuf)> {
    let mut out = vec![("data", &mut cfg.data)];
    for (name, p) in
        [("val_data", &mut cfg.val_data), ("test_data", &mut cfg.test_data), ("pretrained", &mut cfg.pretrained)]
    {
        if let Some(p) = p.as_mut() {
            out.push((name, p));
        }
    }
    out
}

/// Copy the config's data and weights into the job's snapshot; the config with its paths
/// rewritten to the snapshot's, and the files and bytes copied. A folder is copied whole; a
/// file (a CSV of paths) with the folder it is in, since its paths are relative to that.
pub async fn upload_snapshot(place: &Place, mut cfg: TrainConfig, ctx: &AppContext) -> Result<(TrainConfig, u64, u64)> {
    let (mut files, mut bytes) = (0u64, 0u64);
    let bars = ctx.bars();
    for (name, path) in snapshot_paths(&mut cfg) {
        let pretrained = name == "pretrained";
        let (root, inside) = match (path.is_dir(), pretrained) {
            (true, _) => (path.clone(), None),
            (false, true) => {
                (path.parent().unwrap_or(Path::new(".")).to_path_buf(), path.file_name().map(PathBuf::from))
            }
            (false, false) => {
                let file =
                    path.file_name().map(PathBuf::from).with_context(|| format!("{}: no file name", path.display()))?;
                (path.parent().unwrap_or(Path::new(".")).to_path_buf(), Some(file))
            }
        };
        if !path.exists() {
            bail!("{name} {}: no such file or folder", path.display());
        }
        let list = match (&inside, pretrained) {
            (Some(file), true) => vec![file.display().to_string()],
            _ => files_under(&root)?,
        };
        bars.start(
            &format!("copying {name} ({} files) to the job", list.len()),
            Some(list.len() as u64),
            strix_core::ProgressUnit::Items,
        );
        for rel in &list {
            let local = root.join(rel);
            let content = std::fs::read(&local).with_context(|| local.display().to_string())?;
            bytes += content.len() as u64;
            place.put(&format!("{SNAPSHOT}/{name}/{rel}"), content).await?;
            files += 1;
            bars.advance(1);
        }
        bars.finish();
        let mut relative = PathBuf::from(name);
        if let Some(file) = inside {
            relative.push(file);
        }
        *path = relative;
    }
    Ok((cfg, files, bytes))
}

/// `strix train ... --queue`: the snapshot copied and the job queued; its id.
pub async fn submit(
    ctx: &AppContext,
    queue: &Queue,
    cfg: TrainConfig,
    register: Option<String>,
) -> Result<(JobId, Value)> {
    if let Some(name) = &register {
        crate::registry::check_target(name, &[])?;
    }
    let settings = ctx.catalog().settings();
    let store = settings.registry.store.clone();
    // The job's folder is complete before a worker can see the job.
    let id = JobId::new();
    let folder = format!("{JOBS}/{id}");
    let place = job_place(&store, &settings.registry.s3, &folder)?;
    let (config, files, bytes) = upload_snapshot(&place, cfg, ctx).await?;
    let spec = TrainJob { config, store, snapshot: folder.clone(), folder, register, files, bytes };
    let spec = serde_json::to_value(&spec).context("the job's spec")?;
    let job = queue
        .submit_as(
            id,
            Submission {
                kind: KIND.into(),
                spec: spec.clone(),
                tasks: vec![spec],
                submitted_by: crate::settings::who(),
            },
        )
        .await?;
    Ok((job.id, job.spec))
}

/// Copy every file under `prefix` of the job's folder into `dest` (their paths under the
/// prefix kept), skipping those already there with the same size; how many were copied.
async fn download(place: &Place, prefix: &str, dest: &Path) -> Result<usize> {
    let mut copied = 0;
    for key in place.list().await?.into_iter().filter(|k| k.starts_with(prefix)) {
        let local = safe_join(dest, &key[prefix.len()..])?;
        let bytes = place.get(&key, MAX_FILE).await?;
        if std::fs::metadata(&local).is_ok_and(|m| m.len() == bytes.len() as u64) {
            continue;
        }
        strix_core::fs::write_atomic(&local, &bytes).with_context(|| local.display().to_string())?;
        copied += 1;
    }
    Ok(copied)
}

/// The job's run folder copied into `dir` whole: fetched beside it, then renamed.
async fn fetch_run(place: &Place, dir: &Path) -> Result<()> {
    let staging = dir.with_file_name(format!(".{}.fetching", dir.file_name().unwrap_or_default().to_string_lossy()));
    download(place, &format!("{RUN}/"), &staging).await?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    std::fs::rename(&staging, dir).with_context(|| format!("the run folder {}", dir.display()))
}

/// `root/key`, refusing a key that would leave `root` (a store written by someone else).
fn safe_join(root: &Path, key: &str) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    for part in key.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\\') {
            bail!("{key:?} is not a plain relative path");
        }
        path.push(part);
    }
    Ok(path)
}

/// Copies a run folder to the job's `run/`, each file only when it changed since its last copy.
struct RunCopier {
    place: Place,
    dir: PathBuf,
    copied: Mutex<HashMap<String, (u64, std::time::SystemTime)>>,
}

impl RunCopier {
    async fn push(&self) -> Result<usize> {
        let mut n = 0;
        for rel in files_under(&self.dir)? {
            // Temporaries of atomic writes in flight are not the run's files.
            if rel.rsplit('/').next().is_some_and(|f| f.starts_with('.')) {
                continue;
            }
            let local = self.dir.join(&rel);
            let Ok(meta) = std::fs::metadata(&local) else { continue };
            let stamp = (meta.len(), meta.modified().unwrap_or(std::time::UNIX_EPOCH));
            if self.copied.lock().unwrap_or_else(|p| p.into_inner()).get(&rel) == Some(&stamp) {
                continue;
            }
            let bytes = std::fs::read(&local).with_context(|| local.display().to_string())?;
            self.place.put(&format!("{RUN}/{rel}"), bytes).await?;
            self.copied.lock().unwrap_or_else(|p| p.into_inner()).insert(rel, stamp);
            n += 1;
        }
        Ok(n)
    }
}

/// Feeds a training run's progress and lines to its task, copies each checkpoint to the store,
/// and stops the run when the task is told to.
struct JobObserver<'a> {
    task: &'a TaskContext,
    copier: &'a RunCopier,
    runtime: &'a tokio::runtime::Handle,
    /// Batches done and in all, over every epoch.
    done: AtomicU64,
    total: AtomicU64,
}

impl Observer for JobObserver<'_> {
    fn epoch_start(&self, epoch: usize, epochs: usize, batches: usize, done: usize) {
        self.total.store((epochs * batches) as u64, Ordering::Relaxed);
        self.done.store((epoch * batches + done) as u64, Ordering::Relaxed);
        self.task.progress(self.done.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed));
    }

    fn batch(&self, _: usize, _: f64, _: Option<f64>) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.task.progress(done, self.total.load(Ordering::Relaxed));
    }

    fn epoch_end(&self, end: &EpochEnd<'_>) -> Control {
        self.task.log(end.line);
        let numbers = EpochNumbers { epoch: end.epoch, epochs: end.epochs, metrics: end.metrics.clone() };
        if let Ok(line) = serde_json::to_string(&numbers) {
            self.task.log(format!("{METRICS_LINE}{line}"));
        }
        Control::Continue
    }

    fn phase(&self, what: &str) {
        self.task.log(format!("{what}..."));
    }

    fn interrupted(&self) -> bool {
        self.task.stopped()
    }

    fn checkpoint_saved(&self) {
        // A copy that fails now is made at the next checkpoint or the end (where it must work).
        if let Err(e) = self.runtime.block_on(self.copier.push()) {
            self.task.log(format!("could not copy the checkpoint to the store yet: {e:#}"));
        }
    }
}

/// Runs training tasks in a worker: each in `work/<job id>`, on `threads` threads.
pub struct TrainHandler {
    ctx: AppContext,
    work: PathBuf,
    threads: usize,
    runtime: tokio::runtime::Handle,
}

impl TrainHandler {
    pub fn new(settings: strix_catalog::Settings, threads: usize, runtime: tokio::runtime::Handle) -> Self {
        let work = settings.cache_dir.join("jobs");
        TrainHandler { ctx: AppContext::new(settings, true), work, threads, runtime }
    }

    /// The job's run, from its snapshot, continued from a killed attempt's checkpoint when the
    /// store holds one; the run folder.
    fn train(&self, job: &TrainJob, id: &JobId, task: &TaskContext, place: &Place) -> Result<PathBuf, TaskFailure> {
        let run_dir = self.work.join(id.as_str()).join(RUN);
        let fail = |e: anyhow::Error| TaskFailure::Failed(format!("{e:#}"));
        // One copy of a snapshot per worker, shared by the trials of a tuning job.
        let snapshot = self.work.join("snapshots").join(job.snapshot.replace('/', "_"));
        let snapshot_place =
            job_place(&job.store, &self.ctx.catalog().settings().registry.s3, &job.snapshot).map_err(fail)?;
        let fetched =
            self.runtime.block_on(download(&snapshot_place, &format!("{SNAPSHOT}/"), &snapshot)).map_err(fail)?;
        task.log(format!("snapshot: {} files ({} bytes), {fetched} fetched", job.files, job.bytes));
        if !run_dir.join(CHECKPOINT_FILE).exists() {
            let n = self.runtime.block_on(download(place, &format!("{RUN}/"), &run_dir)).map_err(fail)?;
            if n > 0 {
                task.log(format!("fetched the run folder a previous attempt left in the store ({n} files)"));
            }
        }
        if run_dir.join(CHECKPOINT_FILE).exists() && !run_dir.join(SUMMARY_FILE).exists() {
            task.log("continuing the run a previous attempt left, from its last checkpoint");
        }
        let mut cfg = job.config.clone();
        for (_, path) in snapshot_paths(&mut cfg) {
            *path = snapshot.join(&*path);
        }
        cfg.run_dir = Some(run_dir.clone());
        cfg.threads = Some(self.threads);
        let copier = RunCopier { place: place.clone(), dir: run_dir.clone(), copied: Mutex::default() };
        let observer = JobObserver {
            task,
            copier: &copier,
            runtime: &self.runtime,
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .build()
            .map_err(|e| TaskFailure::Failed(format!("threads: {e}")))?;
        let trained = pool.install(|| {
            if run_dir.join(SUMMARY_FILE).exists() {
                RunSummary::read(&run_dir)
            } else if run_dir.join(CHECKPOINT_FILE).exists() {
                strix_train::train::resume(&run_dir, &observer)
            } else {
                strix_train::train::train(cfg, &observer)
            }
        });
        match trained {
            Ok(summary) => task.log(summary.headline()),
            Err(TrainError::Interrupted { .. }) => {
                let _ = self.runtime.block_on(copier.push());
                return Err(TaskFailure::Interrupted);
            }
            Err(e) => return Err(TaskFailure::Failed(strix_core::error_chain(&e))),
        }
        let exported = crate::export::export(
            &self.ctx,
            &run_dir,
            &strix_export::ExportOptions { engines: self.ctx.export_engines(), ..Default::default() },
        )
        .map_err(fail)?;
        task.log(format!("exported to ONNX; gate passed: {}", exported.gate));
        self.runtime.block_on(copier.push()).map_err(fail)?;
        Ok(run_dir)
    }
}

impl Handler for TrainHandler {
    fn kinds(&self) -> Vec<String> {
        vec![KIND.to_string()]
    }

    fn run(&self, task: &Task, ctx: &TaskContext) -> Result<Value, TaskFailure> {
        let mut job: TrainJob = serde_json::from_value(task.spec.clone())
            .map_err(|e| TaskFailure::Failed(format!("not a training job's spec: {e}")))?;
        job.check().map_err(|e| TaskFailure::Failed(format!("not a training job's spec: {e}")))?;
        let settings = self.ctx.catalog().settings();
        if job.store != settings.registry.store {
            return Err(TaskFailure::Failed(format!(
                "the job's data is in the registry store {}, but this worker's registry store is {}: \
                 give the workers the submitter's registry_store",
                strix_core::redact(&job.store),
                strix_core::redact(&settings.registry.store)
            )));
        }
        let place = job_place(&job.store, &settings.registry.s3, &job.folder)
            .map_err(|e| TaskFailure::Failed(format!("{e:#}")))?;
        let run_dir = self.train(&job, &task.job, ctx, &place)?;
        let summary = RunSummary::read(&run_dir).map_err(|e| TaskFailure::Failed(strix_core::error_chain(&e)))?;
        let registered = match &job.register {
            Some(name) => {
                let source = place.name(RUN);
                let record = crate::registry::register_run(&self.ctx, &run_dir, name, Some(source), None)
                    .map_err(|e| TaskFailure::Failed(format!("registering {name}: {e:#}")))?;
                ctx.log(format!("registered {}:{}", record.name, record.version));
                Some(format!("{}:{}", record.name, record.version))
            }
            None => None,
        };
        Ok(json!({ "run": place.name(RUN), "headline": summary.headline(), "registered": registered }))
    }

    fn job_finished(
        &self,
        job: &strix_jobs::JobState,
        tasks: &[strix_jobs::TaskState],
    ) -> Result<Option<Value>, String> {
        // The one task's result is the job's.
        Ok(tasks
            .iter()
            .find(|t| t.status == Status::Succeeded)
            .and_then(|t| t.result.clone())
            .or_else(|| job.error.as_ref().map(|e| json!({ "error": e }))))
    }
}

/// `strix train --queue ... [--wait]`: queue the run; with `wait`, follow its log, fetch the
/// run folder into `run_dir` and say how it ended.
pub fn run(
    ctx: &AppContext,
    settings: &QueueSettings,
    cfg: TrainConfig,
    local_run: Option<PathBuf>,
    register: Option<String>,
    wait: bool,
) -> Result<std::process::ExitCode> {
    let model = format!("{:?}", cfg.model).to_lowercase();
    let rt = crate::queue::runtime()?;
    rt.block_on(async {
        let queue = crate::queue::connect(settings).await?;
        let (id, spec) = submit(ctx, &queue, cfg, register).await?;
        if !wait {
            println!("{id}");
            if !ctx.quiet {
                eprintln!("train: queued as job {id}; follow it with `strix jobs logs {id} --follow`");
            }
            return Ok(std::process::ExitCode::SUCCESS);
        }
        if !ctx.quiet {
            eprintln!("train: queued as job {id}; its log follows");
        }
        let local = local_run.unwrap_or_else(|| {
            let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            PathBuf::from("runs").join(format!("{model}-{secs}"))
        });
        let job = follow(ctx, &queue, &id, &spec, &local).await?;
        if job.status == Status::Succeeded {
            println!("run: {}", local.display());
            if let Some(r) = job.result.as_ref().and_then(|r| r.get("registered")).and_then(Value::as_str) {
                println!("registered {r}");
            }
        }
        Ok(crate::queue::outcome(ctx, &job))
    })
}

/// Follow a queued run's log until it ends; when it succeeded, fetch its folder into `local`.
/// `spec` is what [`submit`] returned with the job's id.
pub async fn follow(
    ctx: &AppContext,
    queue: &Queue,
    id: &JobId,
    spec: &Value,
    local: &Path,
) -> Result<strix_jobs::JobState> {
    let quiet = ctx.quiet;
    queue
        .logs(id, true, |line| {
            if !quiet && !line.starts_with(METRICS_LINE) {
                eprintln!("{line}");
            }
        })
        .await?;
    let job = queue.wait(id, |_| {}).await?;
    if job.status == Status::Succeeded {
        let s = ctx.catalog().settings();
        let folder = spec.get("folder").and_then(Value::as_str).unwrap_or_default();
        let place = job_place(&s.registry.store, &s.registry.s3, folder)?;
        fetch_run(&place, local).await?;
    }
    Ok(job)
}

/// Trains a tuning job's trials as training jobs on the queue, from one snapshot of the data
/// they share; follows each job's epochs for the pruner, cancels the jobs it stops, and fetches
/// each run folder into the trial's.
pub struct QueueTrainer<'a> {
    ctx: &'a AppContext,
    queue: Queue,
    runtime: &'a tokio::runtime::Runtime,
    /// The snapshot's folder and the base config's paths inside it.
    snapshot: String,
    paths: TrainConfig,
    files: u64,
    bytes: u64,
}

impl<'a> QueueTrainer<'a> {
    /// Copies `base`'s data to the store under `jobs/<tuning job id>/`.
    pub fn new(
        ctx: &'a AppContext,
        runtime: &'a tokio::runtime::Runtime,
        settings: &QueueSettings,
        job_id: &str,
        base: TrainConfig,
    ) -> Result<Self> {
        let queue = runtime.block_on(crate::queue::connect(settings))?;
        let s = ctx.catalog().settings();
        let snapshot = format!("{JOBS}/{job_id}");
        let place = job_place(&s.registry.store, &s.registry.s3, &snapshot)?;
        let (paths, files, bytes) = runtime.block_on(upload_snapshot(&place, base, ctx))?;
        Ok(QueueTrainer { ctx, queue, runtime, snapshot, paths, files, bytes })
    }

    async fn train_job(&self, mut cfg: TrainConfig, observer: &(dyn Observer + Sync)) -> Result<RunSummary> {
        let run_dir = cfg.run_dir.take().context("a trial without a run folder")?;
        cfg.threads = None;
        let mut paths = self.paths.clone();
        for ((_, to), (_, from)) in snapshot_paths(&mut cfg).into_iter().zip(snapshot_paths(&mut paths)) {
            *to = from.clone();
        }
        let s = self.ctx.catalog().settings();
        let id = JobId::new();
        let folder = format!("{JOBS}/{id}");
        let spec = TrainJob {
            config: cfg,
            store: s.registry.store.clone(),
            folder: folder.clone(),
            snapshot: self.snapshot.clone(),
            register: None,
            files: self.files,
            bytes: self.bytes,
        };
        let spec = serde_json::to_value(&spec)?;
        let submission = Submission {
            kind: KIND.into(),
            spec: spec.clone(),
            tasks: vec![spec],
            submitted_by: crate::settings::who(),
        };
        self.queue.submit_as(id.clone(), submission).await?;
        let stopped = self.follow(&id, observer).await?;
        let job = self.queue.wait(&id, |_| {}).await?;
        fetch_run(&job_place(&s.registry.store, &s.registry.s3, &folder)?, &run_dir).await?;
        match job.status {
            Status::Succeeded => Ok(RunSummary::read(&run_dir)?),
            _ if stopped => bail!("job {id} was cancelled: the pruner stopped its trial"),
            status => bail!("job {id} {status}: {}", job.error.unwrap_or_default()),
        }
    }

    /// Feeds the job's epochs to `observer` until the job ends; cancels the job when the
    /// observer stops it. Whether it did.
    async fn follow(&self, id: &JobId, observer: &(dyn Observer + Sync)) -> Result<bool> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (queue, job) = (self.queue.clone(), id.clone());
        let reader = tokio::spawn(async move {
            queue
                .logs(&job, true, |line| {
                    if let Some(json) = line.strip_prefix(METRICS_LINE) {
                        let _ = tx.send(json.to_string());
                    }
                })
                .await
        });
        let mut stopped = false;
        while let Some(json) = rx.recv().await {
            let Ok(n) = serde_json::from_str::<EpochNumbers>(&json) else { continue };
            let end = EpochEnd { epoch: n.epoch, epochs: n.epochs, metrics: &n.metrics, line: "" };
            if !stopped && matches!(observer.epoch_end(&end), Control::Stop(_)) {
                self.queue.cancel(id).await?;
                stopped = true;
            }
        }
        reader.await.context("the log reader")??;
        Ok(stopped)
    }
}

impl strix_tune::Trainer for QueueTrainer<'_> {
    fn train(&self, cfg: TrainConfig, observer: &(dyn Observer + Sync)) -> Result<RunSummary, strix_tune::TuneError> {
        self.runtime
            .block_on(self.train_job(cfg, observer))
            .map_err(|e| strix_tune::TuneError::Elsewhere(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(folder: &str, data: &str) -> TrainJob {
        let text = format!("data = {data:?}\npretrained = \"pretrained/w.onnx\"\n");
        let config = TrainConfig::from_toml(&text, Path::new("t.toml")).unwrap();
        let (store, register, files, bytes) = ("/s".to_string(), None, 1, 1);
        TrainJob { config, store, folder: folder.into(), snapshot: folder.into(), register, files, bytes }
    }

    #[test]
    fn a_spec_reaching_outside_its_folders_is_refused() {
        assert!(job("jobs/jmxcjbtow-6b4d64", "data").check().is_ok());
        for (folder, data) in [
            ("jobs/../../etc", "data"),
            ("elsewhere/jmxcjbtow-6b4d64", "data"),
            ("jobs/jmxcjbtow-6b4d64", "/etc"),
            ("jobs/jmxcjbtow-6b4d64", "data/../../secrets"),
            ("jobs/jmxcjbtow-6b4d64", ""),
        ] {
            assert!(job(folder, data).check().is_err(), "{folder} {data}");
        }
        assert!(safe_join(Path::new("/w"), "a/../b").is_err() && safe_join(Path::new("/w"), "a/b").is_ok());
    }
}
