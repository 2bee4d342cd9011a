//! The one run lifecycle every task trains through: a fresh start or a resume, the epoch loop
//! with its schedule, per-step seeding, checkpoints, best model and early stopping on a named
//! objective, and the finish (best model evaluated, `final.json`, `summary.json`, report).
//! A task says only what is its own, through [`TrainTask`] (burn's `TrainStep`/`ValidStep`
//! split: a step gives a loss, an epoch's validation gives named metrics).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strix_core::Task;

use crate::checkpoint;
use crate::config::{DeviceChoice, Mode, OptimizerKind, Schedule};
use crate::files::{
    BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, DATASET_FILE, DATASET_MANIFEST_FILE, FINAL_FILE, METRICS_FILE, MODEL_FILE,
    open_log, saved_config, unix_secs, write_atomic,
};
use crate::observe::{Control, EpochEnd, Metrics, Observer};
use crate::summary::{ClassLine, Objective, RunSummary, Scores, Stopped};
use crate::{TrainConfig, TrainError, Weights};

/// Images a folded backbone's batch-norm statistics are measured on.
pub(crate) const CALIBRATION_IMAGES: usize = 32;

/// A batch as a task's loader made it.
pub struct Batch<I> {
    pub input: I,
    /// Images in `input` (0 when none of the batch could be decoded).
    pub images: usize,
    /// `(image, reason)` of the batch's images that could not be decoded.
    pub failed: Vec<(String, String)>,
}

/// One optimisation step's forward pass: the loss to differentiate and the sums it adds to the
/// epoch's running figures (`("loss", ...)`, `("correct", ...)`, `("qfl", ...)`).
pub struct Step {
    pub loss: Tensor<1>,
    pub sums: Vec<(&'static str, f64)>,
}

/// Running sums of the epoch in progress, by the names a task's [`Step`]s give.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sums {
    pub values: Vec<(String, f64)>,
    pub batches: u64,
    pub images: u64,
}

impl Sums {
    pub fn get(&self, name: &str) -> f64 {
        self.values.iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| *v)
    }

    fn add(&mut self, step: &[(&'static str, f64)], images: usize) {
        for &(name, v) in step {
            match self.values.iter_mut().find(|(n, _)| n == name) {
                Some((_, sum)) => *sum += v,
                None => self.values.push((name.to_string(), v)),
            }
        }
        self.batches += 1;
        self.images += images as u64;
    }
}

/// The task's full evaluations of the best model, and what it made of them.
pub struct Evaluated<V> {
    pub val: V,
    pub test: Option<V>,
    pub scores: (Scores, Option<Scores>),
    pub per_class: Vec<ClassLine>,
    /// Validation and test images that could not be decoded.
    pub unreadable: usize,
    /// For [`RunSummary::notes`].
    pub notes: Vec<String>,
}

/// What a task is made of. Classification and detection implement it; a new task is a new
/// module implementing it plus one line in [`crate::train`]'s registration.
pub trait TrainTask: Sized {
    const TASK: Task;
    /// The zoo model whose weights a run starts from when it names none and does not train
    /// from scratch.
    const DEFAULT_PRETRAINED: Option<&'static str> = None;
    type Model: Module;
    /// A loader's batch, before it goes to the device.
    type Input: Send + 'static;
    /// One line of `metrics.jsonl`.
    type Epoch: Clone + std::fmt::Display + Serialize + DeserializeOwned;
    /// A full evaluation of the best model (`final.json`'s `val` and `test`).
    type Eval: Serialize;
    /// `model.json` beside `best.bpk`: how to rebuild and feed the model.
    type Saved: Serialize;

    /// Settings whose default differs for this task, as a layer under the config file and the
    /// flags.
    fn defaults() -> toml::Table {
        toml::Table::new()
    }
    /// The run's data opened and every derived setting fixed into `cfg` (what `config.toml`
    /// records); every data error comes here, before any training.
    fn open(cfg: &mut TrainConfig) -> Result<Self, TrainError>;
    /// The run folder's name stem when the config names none.
    fn run_name(cfg: &TrainConfig) -> String;
    /// The line `train.log` starts the run with.
    fn describe(&self, cfg: &TrainConfig, dir: &Path) -> String;
    /// `dataset.json`'s digest of every image and label.
    fn manifest(&self) -> Result<strix_data::manifest::DatasetManifest, TrainError>;
    /// Dataset problems found and how they were handled.
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }
    fn train_images(&self) -> usize;
    /// The model training starts from (from `pretrained` when given), on `device`.
    fn new_model(&self, run: &Run<'_>, pretrained: Option<&Weights>) -> Result<Self::Model, TrainError>;
    /// A model of the run's shape, for loading saved weights into.
    fn empty_model(&self, device: &Device) -> Result<Self::Model, TrainError>;
    /// The model as training updates it (parts frozen by the mode).
    fn for_training(&self, model: Self::Model, cfg: &TrainConfig) -> Self::Model {
        let _ = cfg;
        model
    }
    fn saved(&self) -> &Self::Saved;
    /// The epoch's batches from `first` on, shuffled by `cfg.seed` and `epoch`; and how many
    /// there are in all.
    fn batches(&self, cfg: &TrainConfig, epoch: usize, first: usize) -> Batches<Self::Input>;
    /// Forward pass and loss (burn's `TrainStep`).
    fn step(&self, model: &Self::Model, input: Self::Input, device: &Device) -> Result<Step, TrainError>;
    /// The epoch's running (loss, training accuracy) from its sums, for the observer.
    fn running(sums: &Sums) -> (f64, Option<f64>);
    /// The epoch's record: training figures from `sums`, validation of `model` (burn's
    /// `ValidStep`), learning rate and time.
    fn end_epoch(&self, model: &Self::Model, run: &Run<'_>, end: EpochFacts<'_>) -> Result<Self::Epoch, TrainError>;
    /// An epoch record's named metrics: its numeric fields by their `metrics.jsonl` names
    /// (`val_accuracy`, `map50`, ...), but the epoch's number.
    fn metrics(epoch: &Self::Epoch) -> Metrics {
        Metrics::of_record(epoch)
    }
    /// The metric the best model is kept by.
    fn objective(cfg: &TrainConfig) -> Objective;
    /// The best model over the validation (and test) images.
    fn evaluate_best(&self, best: &Self::Model, run: &Run<'_>) -> Result<Evaluated<Self::Eval>, TrainError>;
    /// `report.html` and its pictures.
    fn report(
        &self,
        cfg: &TrainConfig,
        outcome: &Outcome<Self::Epoch, Self::Eval>,
        summary: &RunSummary,
    ) -> Result<(), TrainError>;
}

/// What a task's model-facing calls share: the run's config, the device to compute on (an
/// autodiff one where gradients are wanted) and the observer.
pub struct Run<'a> {
    pub cfg: &'a TrainConfig,
    pub device: &'a Device,
    pub observer: &'a dyn Observer,
}

/// A task's batches of an epoch: how many in all, and those from the first asked for on.
pub type Batches<I> = (usize, Box<dyn Iterator<Item = Batch<I>>>);

/// What an epoch's end knows besides the model.
pub struct EpochFacts<'a> {
    /// 0-based.
    pub epoch: usize,
    pub sums: &'a Sums,
    pub lr: f64,
    pub seconds: f64,
}

/// Everything a finished run measured (`final.json`).
#[derive(Debug, Serialize)]
pub struct Outcome<E, V> {
    pub run_dir: PathBuf,
    pub history: Vec<E>,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
    pub stopped: Stopped,
    /// The best model on the validation images (and the test images, where there are some).
    pub val: V,
    pub test: Option<V>,
    /// Training images that could not be decoded.
    pub skipped: Vec<(String, String)>,
    /// What was wrong in the dataset and how it was handled.
    pub problems: Vec<String>,
}

/// Where a run stands (inside `last.ckpt`): with the model and optimizer, enough to continue
/// exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "E: Serialize + DeserializeOwned")]
struct RunState<E> {
    task: Task,
    /// The epoch in progress (0-based) and how many of its batches are done.
    epoch: usize,
    batch_in_epoch: usize,
    global_step: u64,
    sums: Sums,
    seconds_in_epoch: f64,
    history: Vec<E>,
    best: Option<f64>,
    best_epoch: Option<usize>,
    stale_epochs: usize,
    stopped: Option<Stopped>,
    skipped: Vec<(String, String)>,
}

impl<E> RunState<E> {
    fn new(task: Task) -> Self {
        RunState {
            task,
            epoch: 0,
            batch_in_epoch: 0,
            global_step: 0,
            sums: Sums::default(),
            seconds_in_epoch: 0.0,
            history: Vec::new(),
            best: None,
            best_epoch: None,
            stale_epochs: 0,
            stopped: None,
            skipped: Vec::new(),
        }
    }
}

/// The device to compute on; GPU backends only in builds with their feature.
pub fn device(choice: DeviceChoice) -> Result<Device, TrainError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda => Ok(Device::cuda(0)),
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[allow(unreachable_patterns)]
        other => Err(TrainError::Config(format!(
            "this build has no {other:?} backend; rebuild strix with `--features {}`",
            format!("{other:?}").to_lowercase()
        ))),
    }
}

pub(crate) fn build_optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    match cfg.optimizer {
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_momentum(cfg.momentum).with_dampening(0.0)))
            .with_weight_decay((cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay as f32)))
            .init(),
        OptimizerKind::Adamw => AdamWConfig::new().with_weight_decay(cfg.weight_decay as f32).with_epsilon(1e-8).init(),
    }
}

/// Learning rate at `step` (0-based) of `total`.
pub fn lr_at(cfg: &TrainConfig, step: u64, steps_per_epoch: u64, total: u64) -> f64 {
    let warmup = (cfg.warmup_epochs * steps_per_epoch as f64) as u64;
    if step < warmup {
        return cfg.lr * (step + 1) as f64 / warmup as f64;
    }
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Cosine => {
            let t = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
            cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
        Schedule::Step => {
            let epoch = step / steps_per_epoch.max(1);
            cfg.lr * cfg.step_gamma.powi((epoch / cfg.step_epochs.max(1) as u64) as i32)
        }
    }
}

/// A run in progress: its task and data, config, folder, device and log.
struct Job<T> {
    task: T,
    cfg: TrainConfig,
    dir: PathBuf,
    device: Device,
    log: std::fs::File,
}

impl<T: TrainTask> Job<T> {
    /// The task's `open` validates the config before it reads any data.
    fn open(mut cfg: TrainConfig, dir: PathBuf) -> Result<Self, TrainError> {
        cfg.run_dir = Some(dir.clone());
        let task = T::open(&mut cfg)?;
        let device = device(cfg.device)?;
        let log = open_log(&dir)?;
        Ok(Job { task, cfg, dir, device, log })
    }

    fn log(&mut self, line: &str) {
        tracing::info!("{line}");
        let _ = writeln!(self.log, "[{}] {line}", unix_secs());
    }

    fn load(&self, bytes: Vec<u8>, device: &Device, path: &Path) -> Result<T::Model, TrainError> {
        checkpoint::load_module(self.task.empty_model(device)?, bytes, path)
    }
}

/// Start a new run of task `T`.
pub fn start<T: TrainTask>(cfg: TrainConfig, observer: &dyn Observer) -> Result<RunSummary, TrainError> {
    let dir = crate::files::run_dir(&cfg, &T::run_name(&cfg));
    if dir.join(CHECKPOINT_FILE).exists() {
        return Err(TrainError::Config(format!(
            "{} already holds a run; continue it with `strix train --resume {0}` or pick another run_dir",
            dir.display()
        )));
    }
    let mut job = Job::<T>::open(cfg, dir)?;
    write_atomic(&job.dir.join(CONFIG_FILE), job.cfg.to_toml()?.as_bytes())?;
    observer.phase("hashing the dataset (for the run's lineage)");
    let manifest = job.task.manifest()?;
    write_atomic(&job.dir.join(DATASET_MANIFEST_FILE), manifest.manifest.as_bytes())?;
    write_atomic(&job.dir.join(DATASET_FILE), crate::error::json(&manifest, "the dataset manifest")?.as_bytes())?;
    for p in job.task.problems() {
        job.log(&format!("data: {p}"));
    }
    let pretrained = match &job.cfg.pretrained {
        Some(p) if job.cfg.mode() != Mode::Scratch => Some(Weights::open(p)?),
        _ => None,
    };
    job.device.seed(job.cfg.seed);
    let ad = job.device.clone().autodiff();
    let model = job.task.new_model(&Run { cfg: &job.cfg, device: &ad, observer }, pretrained.as_ref())?;
    let model = job.task.for_training(model, &job.cfg);
    let line = job.task.describe(&job.cfg, &job.dir);
    job.log(&line);
    let optim = build_optimizer(&job.cfg);
    run(job, RunState::new(T::TASK), model, optim, observer)
}

/// Continue the run in `run_dir` from its last checkpoint.
pub fn resume<T: TrainTask>(run_dir: &Path, observer: &dyn Observer) -> Result<RunSummary, TrainError> {
    let mut job = Job::<T>::open(saved_config(run_dir)?, run_dir.to_path_buf())?;
    let (state, model_b, optim, ckpt) = checkpoint::load_run::<RunState<T::Epoch>>(run_dir, build_optimizer(&job.cfg))?;
    if state.task != T::TASK {
        return Err(TrainError::Checkpoint {
            path: ckpt,
            reason: format!("a {} run's checkpoint, but the config says {}", state.task.as_str(), T::TASK.as_str()),
        });
    }
    let model = job.load(model_b, &job.device.clone().autodiff(), &ckpt)?;
    let model = job.task.for_training(model, &job.cfg);
    job.log(&format!("resumed at epoch {} batch {}", state.epoch + 1, state.batch_in_epoch));
    run(job, state, model, optim, observer)
}

/// The epochs from where `state` stands to the end (or an early stop).
fn run<T: TrainTask>(
    mut job: Job<T>,
    mut state: RunState<T::Epoch>,
    mut model: T::Model,
    mut optim: ModuleOptimizer,
    observer: &dyn Observer,
) -> Result<RunSummary, TrainError> {
    let cfg = job.cfg.clone();
    let ad = job.device.clone().autodiff();
    let steps_per_epoch = job.task.train_images().div_ceil(cfg.batch_size) as u64;
    let total_steps = steps_per_epoch * cfg.epochs as u64;
    let mut last_save = Instant::now();
    while state.epoch < cfg.epochs && state.stopped.is_none() {
        let epoch = state.epoch;
        let (count, batches) = job.task.batches(&cfg, epoch, state.batch_in_epoch);
        observer.epoch_start(epoch, cfg.epochs, count, state.batch_in_epoch);
        let started = Instant::now();
        let before = state.seconds_in_epoch;
        let mut lr = lr_at(&cfg, state.global_step, steps_per_epoch, total_steps);
        for batch in batches {
            for (name, reason) in batch.failed {
                job.log(&format!("skipped unreadable training image {name}: {reason}"));
                if !state.skipped.iter().any(|(n, _)| *n == name) {
                    state.skipped.push((name, reason));
                }
            }
            if batch.images > 0 {
                lr = lr_at(&cfg, state.global_step, steps_per_epoch, total_steps);
                // Dropout draws from the device generator: seeding it per step makes a resumed
                // run draw what the uninterrupted one would have.
                ad.seed(cfg.seed ^ state.global_step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let step = job.task.step(&model, batch.input, &ad)?;
                check_finite(&step.sums, epoch, state.global_step, cfg.lr)?;
                let grads = GradientsParams::from_grads(step.loss.backward(), &model);
                model = optim.step(lr, model, grads);
                state.sums.add(&step.sums, batch.images);
                state.global_step += 1;
                let (loss, accuracy) = T::running(&state.sums);
                observer.batch(batch.images, loss, accuracy);
            }
            state.batch_in_epoch += 1;
            let interrupted = observer.interrupted();
            let due =
                cfg.checkpoint_minutes > 0.0 && last_save.elapsed().as_secs_f64() >= cfg.checkpoint_minutes * 60.0;
            if interrupted || due {
                state.seconds_in_epoch = before + started.elapsed().as_secs_f64();
                checkpoint::save_run(&job.dir, &state, &model, &optim)?;
                observer.checkpoint_saved();
                last_save = Instant::now();
            }
            if interrupted {
                job.log(&format!("interrupted at epoch {} batch {}", epoch + 1, state.batch_in_epoch));
                return Err(TrainError::Interrupted { epoch: epoch + 1, run_dir: job.dir.clone() });
            }
        }
        let seconds = before + started.elapsed().as_secs_f64();
        observer.phase("evaluating on the validation images");
        let facts = EpochFacts { epoch, sums: &state.sums, lr, seconds };
        let record = job.task.end_epoch(&model, &Run { cfg: &cfg, device: &job.device, observer }, facts)?;
        end_epoch(&mut job, &mut state, record, &model, observer)?;
        checkpoint::save_run(&job.dir, &state, &model, &optim)?;
        observer.checkpoint_saved();
        last_save = Instant::now();
    }
    finish(job, state, observer)
}

/// A step whose loss is not a number ends the run with what to change.
fn check_finite(sums: &[(&'static str, f64)], epoch: usize, step: u64, lr: f64) -> Result<(), TrainError> {
    if sums.iter().all(|(_, v)| v.is_finite()) {
        return Ok(());
    }
    let terms: Vec<String> = sums.iter().map(|(n, v)| format!("{n} {v}")).collect();
    Err(TrainError::Invalid(format!(
        "loss became non-finite ({}) at epoch {} step {step}: lower the learning rate (lr = {lr})",
        terms.join(", "),
        epoch + 1
    )))
}

/// The objective's score of an epoch (higher is better), or why it has none.
fn score(objective: &Objective, metrics: &Metrics) -> Result<f64, TrainError> {
    let get = |name: &str| {
        metrics.get(name).ok_or_else(|| {
            TrainError::Config(format!(
                "the objective names {name}, which this task does not measure (it has {})",
                metrics.names().collect::<Vec<_>>().join(", ")
            ))
        })
    };
    let sign = if objective.maximize { 1.0 } else { -1.0 };
    let tie = match &objective.tie_break {
        Some(t) => 1e-3 * get(t)?,
        None => 0.0,
    };
    Ok(sign * (get(&objective.metric)? + tie))
}

/// Metrics written and observed, the best model kept, stopping decided; the state moves to
/// the next epoch.
fn end_epoch<T: TrainTask>(
    job: &mut Job<T>,
    state: &mut RunState<T::Epoch>,
    record: T::Epoch,
    model: &T::Model,
    observer: &dyn Observer,
) -> Result<(), TrainError> {
    // Rewritten whole from the history, so a resumed run never holds a duplicate line.
    let mut all = String::new();
    for m in state.history.iter().chain([&record]) {
        all.push_str(&crate::error::json_line(m, "the epoch's metrics")?);
        all.push('\n');
    }
    write_atomic(&job.dir.join(METRICS_FILE), all.as_bytes())?;
    let line = record.to_string();
    job.log(&line);
    let metrics = T::metrics(&record);
    let epoch = state.epoch + 1;
    let control = observer.epoch_end(&EpochEnd { epoch, epochs: job.cfg.epochs, metrics: &metrics, line: &line });
    let score = score(&T::objective(&job.cfg), &metrics)?;
    state.history.push(record);
    if state.best.is_none_or(|b| score > b) {
        state.best = Some(score);
        state.best_epoch = Some(epoch);
        state.stale_epochs = 0;
        write_atomic(&job.dir.join(BEST_FILE), &checkpoint::module_bytes(&model.valid())?)?;
        let saved = crate::error::json(job.task.saved(), "the model description")?;
        write_atomic(&job.dir.join(MODEL_FILE), saved.as_bytes())?;
    } else {
        state.stale_epochs += 1;
        if let Some(patience) = job.cfg.early_stopping.filter(|&p| state.stale_epochs >= p) {
            state.stopped = Some(Stopped::EarlyStopping { patience });
            job.log(&format!("early stop: no improvement for {} epochs", state.stale_epochs));
        }
    }
    if let Control::Stop(reason) = control {
        job.log(&format!("stopped by its observer: {reason}"));
        state.stopped = Some(Stopped::Observer { reason });
    }
    state.epoch += 1;
    state.batch_in_epoch = 0;
    state.sums = Sums::default();
    state.seconds_in_epoch = 0.0;
    Ok(())
}

/// The best model evaluated; `final.json`, `summary.json` and the report.
fn finish<T: TrainTask>(
    mut job: Job<T>,
    state: RunState<T::Epoch>,
    observer: &dyn Observer,
) -> Result<RunSummary, TrainError> {
    let (bytes, path) = checkpoint::read_best_bytes(&job.dir)?;
    let best = job.load(bytes, &job.device, &path)?;
    let evaluated = job.task.evaluate_best(&best, &Run { cfg: &job.cfg, device: &job.device, observer })?;
    let stopped = state.stopped.clone().unwrap_or(Stopped::Completed);
    let outcome = Outcome {
        run_dir: job.dir.clone(),
        history: state.history,
        best_epoch: state.best_epoch,
        stopped_early: matches!(stopped, Stopped::EarlyStopping { .. }),
        stopped: stopped.clone(),
        val: evaluated.val,
        test: evaluated.test,
        skipped: state.skipped,
        problems: job.task.problems(),
    };
    let objective = T::objective(&job.cfg);
    let best_value =
        state.best_epoch.and_then(|e| outcome.history.get(e - 1)).and_then(|r| T::metrics(r).get(&objective.metric));
    let summary = RunSummary {
        task: T::TASK,
        run_dir: job.dir.clone(),
        epochs_run: outcome.history.len(),
        best_epoch: outcome.best_epoch,
        objective,
        best_value,
        stopped,
        val: evaluated.scores.0,
        test: evaluated.scores.1,
        per_class: evaluated.per_class,
        unreadable: outcome.skipped.len() + evaluated.unreadable,
        problems: outcome.problems.clone(),
        notes: evaluated.notes,
    };
    write_atomic(&job.dir.join(FINAL_FILE), crate::error::json(&outcome, "the run's outcome")?.as_bytes())?;
    summary.write()?;
    observer.phase("writing report.html");
    job.task.report(&job.cfg, &outcome, &summary)?;
    job.log(&format!("done: {}", summary.headline()));
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_objective_scores_by_name_in_its_direction() {
        let m = Metrics(vec![("val_loss".into(), 0.5), ("map".into(), 0.2), ("map50".into(), 0.6)]);
        let loss = Objective { metric: "val_loss".into(), maximize: false, tie_break: None };
        assert_eq!(score(&loss, &m).unwrap(), -0.5);
        let map = Objective { metric: "map".into(), maximize: true, tie_break: Some("map50".into()) };
        assert!((score(&map, &m).unwrap() - 0.2006).abs() < 1e-12);
        let e = score(&Objective { metric: "val_f1".into(), maximize: true, tie_break: None }, &m).unwrap_err();
        assert!(e.to_string().contains("val_f1") && e.to_string().contains("map50"), "{e}");
    }

    #[test]
    fn step_sums_add_up_by_name_and_a_nan_is_refused() {
        let mut s = Sums::default();
        s.add(&[("loss", 2.0), ("correct", 1.0)], 4);
        s.add(&[("loss", 1.0), ("correct", 3.0)], 4);
        assert_eq!((s.get("loss"), s.get("correct"), s.batches, s.images), (3.0, 4.0, 2, 8));
        assert_eq!(s.get("absent"), 0.0);
        let e = check_finite(&[("qfl", 0.1), ("dfl", f64::NAN)], 0, 7, 0.5).unwrap_err().to_string();
        assert!(e.contains("dfl NaN") && e.contains("step 7") && e.contains("lr = 0.5"), "{e}");
    }
}
