//! The training loop: data, model and optimizer from a [`TrainConfig`], one checkpoint per
//! epoch (and every few minutes inside long ones), the best model kept, a report at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use strix_data::{ImageSet, LoadPlan, Part, Transform, View};
use strix_vision::DecodeLimits;

use crate::checkpoint::{self, TrainState, write_atomic};
use crate::config::{DeviceChoice, Mode, Monitor, OptimizerKind, Schedule, TrainConfig};
use crate::metrics::{EpochMetrics, Evaluation, Tally};
use crate::{Arch, Classifier, ModelShape, TrainError, Weights, report};

/// Hears how training goes; the CLI draws bars from it. Called from the training thread.
pub trait Observer {
    /// An epoch (0-based) starts, `done` of its `batches` already done (when resuming).
    fn epoch_start(&self, epoch: usize, epochs: usize, batches: usize, done: usize);
    /// A batch of `images` was trained on; running mean loss and accuracy of the epoch
    /// (NaN where there is none, as in detection).
    fn batch(&self, images: usize, loss: f64, accuracy: f64);
    fn epoch_end(&self, metrics: &EpochMetrics);
    /// A slower phase outside the epochs ("evaluating test images", ...).
    fn phase(&self, what: &str);
    /// A detection epoch ended (detection runs call this instead of `epoch_end`).
    fn detect_epoch_end(&self, metrics: &crate::detect::DetectEpoch) {
        let _ = metrics;
    }
}

/// Observes nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn epoch_start(&self, _: usize, _: usize, _: usize, _: usize) {}
    fn batch(&self, _: usize, _: f64, _: f64) {}
    fn epoch_end(&self, _: &EpochMetrics) {}
    fn phase(&self, _: &str) {}
}

/// What a finished run hands back (also written to `final.json`).
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub run_dir: PathBuf,
    pub history: Vec<EpochMetrics>,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
    pub val: Evaluation,
    pub test: Option<Evaluation>,
    pub skipped: Vec<(String, String)>,
}

/// `model.json` beside `best.bpk`: how to rebuild and feed the trained model.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedModel {
    pub shape: ModelShape,
    pub classes: Vec<String>,
    pub normalize: strix_data::Normalize,
    pub val_crop: f32,
}

pub const CONFIG_FILE: &str = "config.toml";
pub const CHECKPOINT_FILE: &str = "last.ckpt";
pub const BEST_FILE: &str = "best.bpk";
pub const MODEL_FILE: &str = "model.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LOG_FILE: &str = "train.log";
pub const FINAL_FILE: &str = "final.json";
pub const REPORT_FILE: &str = "report.html";
/// The training data's fingerprint ([`strix_data::manifest`]): digest and counts, and the
/// manifest lines (`<sha256>  <part>/<path>`, sorted) beside it.
pub const DATASET_FILE: &str = "dataset.json";
pub const DATASET_MANIFEST_FILE: &str = "dataset.sha256";

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

struct Job {
    cfg: TrainConfig,
    dir: PathBuf,
    shape: ModelShape,
    classes: Vec<String>,
    train: Arc<ImageSet>,
    val: Arc<ImageSet>,
    test: Option<Arc<ImageSet>>,
    train_tf: Arc<Transform>,
    eval_tf: Arc<Transform>,
    device: Device,
    log: std::fs::File,
}

impl Job {
    fn log(&mut self, line: &str) {
        tracing::info!("{line}");
        let _ = writeln!(self.log, "[{}] {line}", unix_secs());
    }
}

pub(crate) fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A run's data and everything derived from it, opened from its config; nothing is written.
struct Data {
    shape: ModelShape,
    classes: Vec<String>,
    train: ImageSet,
    val: ImageSet,
    test: Option<Arc<ImageSet>>,
    train_tf: Transform,
    eval_tf: Transform,
}

fn open_data(cfg: &TrainConfig) -> Result<Data, TrainError> {
    cfg.validate()?;
    let full = ImageSet::open(&cfg.data, Part::Train, cfg.classes.as_deref())?;
    let full = match cfg.max_images {
        Some(n) => full.sample(n, cfg.seed),
        None => full,
    };
    let classes = full.classes.clone();
    let greyscale = full.is_greyscale();
    let (train, val) = match &cfg.val_data {
        Some(v) => {
            let val = ImageSet::open(v, Part::Train, Some(&classes))?;
            (full, val)
        }
        None => {
            let parts = strix_data::split::stratified(&full.labels(), &[cfg.val_fraction], cfg.seed);
            (full.subset(&parts[1]), full.subset(&parts[0]))
        }
    };
    if train.is_empty() || val.is_empty() {
        return Err(TrainError::Config(format!(
            "{} training and {} validation images: too few to train",
            train.len(),
            val.len()
        )));
    }
    let test = match (&cfg.test_data, cfg.test) {
        (_, false) => None,
        (Some(t), true) => Some(Arc::new(ImageSet::open(t, Part::Test, Some(&classes))?)),
        (None, true) if ImageSet::has_test_part(&cfg.data) => {
            Some(Arc::new(ImageSet::open(&cfg.data, Part::Test, Some(&classes))?))
        }
        (None, true) => None,
    };
    let channels = cfg.channels.unwrap_or(if cfg.model == Arch::SmallCnn && greyscale { 1 } else { 3 });
    let size = cfg.image_size.unwrap_or(cfg.model.default_size());
    let shape = ModelShape { arch: cfg.model, classes: classes.len(), channels, image_size: size };
    let normalize = cfg.model.normalize();
    let train_tf = Transform { size, channels, normalize: normalize.clone(), view: View::Train(cfg.augment()) };
    let eval_tf = Transform { size, channels, normalize, view: View::Eval { crop: cfg.val_crop } };
    Ok(Data { shape, classes, train, val, test, train_tf, eval_tf })
}

/// Up to `n` validation images of a run, spread over the validation set and preprocessed as
/// for evaluation: `[count, channels, size, size]` floats and `count`. The export gate feeds
/// these to the exported model.
pub fn validation_images(run_dir: &Path, n: usize) -> Result<(Vec<f32>, usize), TrainError> {
    let data = open_data(&saved_config(run_dir)?)?;
    let len = data.val.len();
    let count = n.min(len).max(1);
    let plan = LoadPlan {
        set: Arc::new(data.val),
        order: (0..count).map(|i| i * len / count).collect(),
        batch_size: count,
        transform: Arc::new(data.eval_tf),
        seed: 0,
        epoch: 0,
        prefetch: 1,
        limits: DecodeLimits::default(),
    };
    let mut images = Vec::new();
    let mut got = 0;
    for batch in plan.start(0) {
        got += batch.labels.len();
        images.extend(batch.images);
    }
    if got == 0 {
        return Err(TrainError::Config(format!("{}: no readable validation images", run_dir.display())));
    }
    Ok((images, got))
}

/// Open the data and fix every derived setting; all errors come here, before any training.
fn prepare(cfg: TrainConfig, dir: PathBuf) -> Result<Job, TrainError> {
    let Data { shape, classes, train, val, test, train_tf, eval_tf } = open_data(&cfg)?;
    let device = device(cfg.device)?;
    let log = checkpoint::open_log(&dir)?;
    Ok(Job {
        cfg,
        dir,
        shape,
        classes,
        train: Arc::new(train),
        val: Arc::new(val),
        test,
        train_tf: Arc::new(train_tf),
        eval_tf: Arc::new(eval_tf),
        device,
        log,
    })
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

/// Freeze what the mode says is frozen.
fn apply_mode(model: Classifier, mode: Mode) -> Classifier {
    match mode {
        Mode::LinearProbe => {
            let mut m = model.freeze();
            m.head = m.head.unfreeze();
            m.dropout = m.dropout.unfreeze();
            m
        }
        _ => model,
    }
}

fn load_model(shape: &ModelShape, bytes: Vec<u8>, device: &Device, path: &Path) -> Result<Classifier, TrainError> {
    checkpoint::load_module(Classifier::new(shape, None, device)?, bytes, path)
}

/// Load a trained model from a run folder (`model.json` + `best.bpk`).
pub fn load_trained(run_dir: &Path, device: &Device) -> Result<(Classifier, SavedModel), TrainError> {
    let (saved, bytes, best) = checkpoint::read_best::<SavedModel>(run_dir)?;
    Ok((load_model(&saved.shape, bytes, device, &best)?, saved))
}

/// Run `model` over `set` in evaluation mode.
pub fn evaluate(
    model: &Classifier,
    set: &Arc<ImageSet>,
    transform: &Arc<Transform>,
    batch_size: usize,
    device: &Device,
    keep_worst: usize,
) -> Evaluation {
    let model = model.valid();
    let plan = LoadPlan {
        set: set.clone(),
        order: (0..set.len()).collect(),
        batch_size,
        transform: transform.clone(),
        seed: 0,
        epoch: 0,
        prefetch: 2,
        limits: DecodeLimits::default(),
    };
    let (c, s) = (transform.channels, transform.size);
    let mut tally = Tally::new(set.classes.clone(), keep_worst);
    for batch in plan.start(0) {
        for (i, reason) in batch.failed {
            tally.unreadable(set.name(i), reason);
        }
        if batch.labels.is_empty() {
            continue;
        }
        let n = batch.labels.len();
        let logits = model.logits(batch.images, n, c, s, device);
        let k = logits.len() / n;
        for (j, row) in logits.chunks(k).enumerate() {
            tally.add(batch.items[j], batch.labels[j], row);
        }
    }
    tally.finish()
}

/// Start a new run.
pub fn train(cfg: TrainConfig, observer: &dyn Observer) -> Result<Outcome, TrainError> {
    let dir =
        cfg.run_dir.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}", cfg.model, unix_secs())));
    if dir.join(CHECKPOINT_FILE).exists() {
        return Err(TrainError::Config(format!(
            "{} already holds a run; continue it with `strix train --resume {0}` or pick another run_dir",
            dir.display()
        )));
    }
    let mut cfg = cfg;
    cfg.run_dir = Some(dir.clone());
    let mut job = prepare(cfg, dir)?;
    write_atomic(&job.dir.join(CONFIG_FILE), job.cfg.to_toml()?.as_bytes())?;
    observer.phase("hashing the dataset (for the run's lineage)");
    let mut parts = vec![("train", &*job.train), ("val", &*job.val)];
    if let Some(t) = &job.test {
        parts.push(("test", t));
    }
    let manifest = strix_data::manifest::dataset_manifest(&parts)?;
    write_atomic(&job.dir.join(DATASET_MANIFEST_FILE), manifest.manifest.as_bytes())?;
    write_atomic(&job.dir.join(DATASET_FILE), crate::error::json(&manifest, "the dataset manifest")?.as_bytes())?;
    let pretrained = match &job.cfg.pretrained {
        Some(p) if job.cfg.mode() != Mode::Scratch => Some(Weights::open(p)?),
        _ => None,
    };
    job.device.seed(job.cfg.seed);
    let mut model = Classifier::new(&job.shape, pretrained.as_ref(), &job.device.clone().autodiff())?;
    if pretrained.as_ref().is_some_and(|w| w.folded) {
        observer.phase("measuring the backbone's batch-norm statistics on training images");
        model = restat_backbone(model, &job)?;
    }
    let model = apply_mode(model, job.cfg.mode());
    let line = format!(
        "run {}: {} ({:?}) on {} train / {} val images, {} classes, {} epochs",
        job.dir.display(),
        job.cfg.model,
        job.cfg.mode(),
        job.train.len(),
        job.val.len(),
        job.classes.len(),
        job.cfg.epochs
    );
    job.log(&line);
    let optim = build_optimizer(&job.cfg);
    run(job, TrainState::default(), model, optim, observer)
}

/// Images a folded backbone's batch-norm statistics are measured on.
pub(crate) const CALIBRATION_IMAGES: usize = 32;

/// A backbone from folded weights, its batch norms measured on up to [`CALIBRATION_IMAGES`]
/// training images as the first epoch's augmentation makes them.
fn restat_backbone(model: Classifier, job: &Job) -> Result<Classifier, TrainError> {
    let mut order = job.train.shuffled(job.cfg.seed, u64::MAX);
    order.truncate(CALIBRATION_IMAGES);
    let plan = LoadPlan {
        set: job.train.clone(),
        batch_size: order.len(),
        order,
        transform: job.train_tf.clone(),
        seed: job.cfg.seed,
        epoch: 0,
        prefetch: 0,
        limits: DecodeLimits::default(),
    };
    let batch = plan.make(0);
    let (c, s) = (job.shape.channels, job.shape.image_size);
    model.restat(batch.images, batch.labels.len(), c, s, &job.device.clone().autodiff())
}

/// The resolved config a run folder was started with.
pub fn saved_config(run_dir: &Path) -> Result<TrainConfig, TrainError> {
    let cfg_path = run_dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(TrainError::io(&cfg_path))?;
    TrainConfig::from_toml(&text, &cfg_path)
}

/// Continue the run in `run_dir` from its last checkpoint.
pub fn resume(run_dir: &Path, observer: &dyn Observer) -> Result<Outcome, TrainError> {
    let mut cfg = saved_config(run_dir)?;
    cfg.run_dir = Some(run_dir.to_path_buf());
    let mut job = prepare(cfg, run_dir.to_path_buf())?;
    let (state, model_b, optim, ckpt) = checkpoint::load_run::<TrainState>(run_dir, build_optimizer(&job.cfg))?;
    let model = load_model(&job.shape, model_b, &job.device.clone().autodiff(), &ckpt)?;
    let model = apply_mode(model, job.cfg.mode());
    job.log(&format!("resumed at epoch {} batch {}", state.epoch + 1, state.batch_in_epoch));
    run(job, state, model, optim, observer)
}

fn run(
    mut job: Job,
    mut state: TrainState,
    mut model: Classifier,
    mut optim: ModuleOptimizer,
    observer: &dyn Observer,
) -> Result<Outcome, TrainError> {
    let cfg = job.cfg.clone();
    let ad = job.device.clone().autodiff();
    let smoothing = (cfg.label_smoothing > 0.0).then_some(cfg.label_smoothing);
    let loss_fn = CrossEntropyLossConfig::new().with_smoothing(smoothing).init(&ad);
    let steps_per_epoch = job.train.len().div_ceil(cfg.batch_size) as u64;
    let total_steps = steps_per_epoch * cfg.epochs as u64;
    let (c, s) = (job.shape.channels, job.shape.image_size);
    let mut last_save = Instant::now();
    while state.epoch < cfg.epochs && !state.stopped_early {
        let epoch = state.epoch;
        let plan = LoadPlan {
            set: job.train.clone(),
            order: job.train.shuffled(cfg.seed, epoch as u64),
            batch_size: cfg.batch_size,
            transform: job.train_tf.clone(),
            seed: cfg.seed,
            epoch: epoch as u64,
            prefetch: cfg.prefetch,
            limits: DecodeLimits::default(),
        };
        observer.epoch_start(epoch, cfg.epochs, plan.batches(), state.batch_in_epoch);
        let started = Instant::now();
        let before = state.seconds_in_epoch;
        let mut lr = lr_at(&cfg, state.global_step, steps_per_epoch, total_steps);
        for batch in plan.start(state.batch_in_epoch) {
            for (i, reason) in batch.failed {
                let name = job.train.name(i);
                job.log(&format!("skipped unreadable training image {name}: {reason}"));
                if !state.skipped.iter().any(|(n, _)| *n == name) {
                    state.skipped.push((name, reason));
                }
            }
            let n = batch.labels.len();
            if n > 0 {
                lr = lr_at(&cfg, state.global_step, steps_per_epoch, total_steps);
                // Dropout draws from the device generator: seeding it per step makes a resumed
                // run draw what the uninterrupted one would have.
                ad.seed(cfg.seed ^ state.global_step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let x = Tensor::<4>::from_data(TensorData::new(batch.images, [n, c, s, s]), &ad);
                let labels: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
                let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &ad);
                let logits = model.forward(x);
                let loss = loss_fn.forward(logits.clone(), y);
                let read = |what: &str, e: &dyn std::fmt::Debug| {
                    TrainError::Invalid(format!("cannot read the {what} back from the device: {e:?}"))
                };
                let loss_value = loss.clone().into_data().try_to_vec::<f32>().map_err(|e| read("loss", &e))?;
                let loss_value = loss_value.first().copied();
                let host = logits.into_data().try_to_vec::<f32>().map_err(|e| read("logits", &e))?;
                let k = host.len() / n;
                let correct = host
                    .chunks(k.max(1))
                    .zip(&batch.labels)
                    .filter(|(row, l)| {
                        row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|m| m.0) == Some(**l)
                    })
                    .count();
                let loss_value = f64::from(loss_value.unwrap_or(f32::NAN));
                if !loss_value.is_finite() {
                    return Err(TrainError::Invalid(format!(
                        "loss became {loss_value} at epoch {} step {}: lower the learning rate (lr = {})",
                        epoch + 1,
                        state.global_step,
                        cfg.lr
                    )));
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(lr, model, grads);
                state.loss_sum += loss_value * n as f64;
                state.correct += correct as u64;
                state.seen += n as u64;
                state.global_step += 1;
                observer.batch(n, state.loss_sum / state.seen as f64, state.correct as f64 / state.seen as f64);
            }
            state.batch_in_epoch += 1;
            if cfg.checkpoint_minutes > 0.0 && last_save.elapsed().as_secs_f64() >= cfg.checkpoint_minutes * 60.0 {
                state.seconds_in_epoch = before + started.elapsed().as_secs_f64();
                checkpoint::save_run(&job.dir, &state, &model, &optim)?;
                last_save = Instant::now();
            }
        }
        let seconds = before + started.elapsed().as_secs_f64();
        let val = evaluate(&model, &job.val, &job.eval_tf, cfg.batch_size, &job.device, 0);
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            train_loss: state.loss_sum / state.seen.max(1) as f64,
            train_accuracy: state.correct as f64 / state.seen.max(1) as f64,
            val_loss: val.loss,
            val_accuracy: val.accuracy,
            val_top5: val.top5,
            lr,
            seconds,
            images_per_second: state.seen as f64 / seconds.max(1e-9),
        };
        observer.epoch_end(&metrics);
        let line = crate::error::json_line(&metrics, "the epoch's metrics")?;
        let mpath = job.dir.join(METRICS_FILE);
        // Rewritten whole from the history, so a resumed run never holds a duplicate line.
        let mut all = String::new();
        for m in &state.history {
            all.push_str(&crate::error::json_line(m, "the epoch's metrics")?);
            all.push('\n');
        }
        all.push_str(&line);
        all.push('\n');
        write_atomic(&mpath, all.as_bytes())?;
        job.log(&metrics.to_string());
        let score = match cfg.monitor {
            Monitor::ValAccuracy => metrics.val_accuracy,
            Monitor::ValLoss => -metrics.val_loss,
        };
        state.history.push(metrics);
        if state.best.is_none_or(|b| score > b) {
            state.best = Some(score);
            state.best_epoch = Some(epoch + 1);
            state.stale_epochs = 0;
            save_best(&job, &model)?;
        } else {
            state.stale_epochs += 1;
            if cfg.early_stopping.is_some_and(|p| state.stale_epochs >= p) {
                state.stopped_early = true;
                job.log(&format!("early stop: no improvement for {} epochs", state.stale_epochs));
            }
        }
        state.epoch += 1;
        state.batch_in_epoch = 0;
        state.loss_sum = 0.0;
        state.correct = 0;
        state.seen = 0;
        state.seconds_in_epoch = 0.0;
        checkpoint::save_run(&job.dir, &state, &model, &optim)?;
        last_save = Instant::now();
    }
    finish(job, state, observer)
}

fn save_best(job: &Job, model: &Classifier) -> Result<(), TrainError> {
    write_atomic(&job.dir.join(BEST_FILE), &checkpoint::module_bytes(&model.valid())?)?;
    let saved = SavedModel {
        shape: job.shape.clone(),
        classes: job.classes.clone(),
        normalize: job.eval_tf.normalize.clone(),
        val_crop: job.cfg.val_crop,
    };
    write_atomic(&job.dir.join(MODEL_FILE), crate::error::json(&saved, "the model description")?.as_bytes())
}

/// Best model over validation (and test) images; `final.json` and the report.
fn finish(mut job: Job, state: TrainState, observer: &dyn Observer) -> Result<Outcome, TrainError> {
    let (best, _) = load_trained(&job.dir, &job.device)?;
    observer.phase("evaluating the best model on the validation images");
    let bs = job.cfg.batch_size;
    let val = evaluate(&best, &job.val, &job.eval_tf, bs, &job.device, 16);
    let test = match job.test.clone() {
        Some(t) => {
            observer.phase("evaluating the best model on the test images");
            Some(evaluate(&best, &t, &job.eval_tf, bs, &job.device, 0))
        }
        None => None,
    };
    let outcome = Outcome {
        run_dir: job.dir.clone(),
        history: state.history.clone(),
        best_epoch: state.best_epoch,
        stopped_early: state.stopped_early,
        val,
        test,
        skipped: state.skipped.clone(),
    };
    write_atomic(&job.dir.join(FINAL_FILE), crate::error::json(&outcome, "the run's outcome")?.as_bytes())?;
    observer.phase("writing report.html");
    report::write(&job.dir, &job.cfg, &outcome, &job.val)?;
    let line = format!(
        "done: best epoch {:?}, val accuracy {:.4}{}",
        outcome.best_epoch,
        outcome.val.accuracy,
        outcome.test.as_ref().map(|t| format!(", test accuracy {:.4}", t.accuracy)).unwrap_or_default()
    );
    job.log(&line);
    Ok(outcome)
}
