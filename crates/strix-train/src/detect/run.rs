//! The detection training loop: the classifier loop's run folder, checkpoints and resume, with
//! detection data, loss and per-epoch COCO evaluation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use strix_data::box_augment::BoxAugment;
use strix_data::detection::{DetectionSet, open_detection};
use strix_data::{Normalize, Rng};
use strix_vision::DecodeLimits;

use super::assign::{Prior, priors};
use super::batch::DetPlan;
use super::eval::{DetEvaluation, SavedDetector, deploy_nms, evaluate};
use super::loss::{LossTerms, detection_loss};
use super::model::{Detector, DetectorShape, STRIDES};
use crate::checkpoint::{self, write_atomic};
use crate::config::{Mode, ResizeMode, TrainConfig};
use crate::train::{
    BEST_FILE, CALIBRATION_IMAGES, CHECKPOINT_FILE, CONFIG_FILE, DATASET_FILE, DATASET_MANIFEST_FILE, FINAL_FILE,
    METRICS_FILE, MODEL_FILE, Observer, build_optimizer, device, lr_at, unix_secs,
};
use crate::{Arch, TrainError, Weights};

/// One line of a detection run's `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectEpoch {
    /// 1-based.
    pub epoch: usize,
    /// Training loss (weighted sum) and its terms, means over the epoch's batches.
    pub loss: f64,
    pub qfl: f64,
    pub dfl: f64,
    pub giou: f64,
    /// Validation COCO mAP@[.5:.95] and mAP@.5.
    pub map: f64,
    pub map50: f64,
    /// `(class, AP@[.5:.95], AP@.5)`.
    pub per_class: Vec<(String, f64, f64)>,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

impl std::fmt::Display for DetectEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {:>3}: loss {:.4} (qfl {:.4} dfl {:.4} giou {:.4}) | val mAP {:.4} mAP@.5 {:.4} | {:.1} s, {:.1} img/s",
            self.epoch,
            self.loss,
            self.qfl,
            self.dfl,
            self.giou,
            self.map,
            self.map50,
            self.seconds,
            self.images_per_second
        )
    }
}

/// Where a detection run stands (inside `last.ckpt`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DetectState {
    epoch: usize,
    batch_in_epoch: usize,
    global_step: u64,
    /// Sums over the epoch in progress: terms weighted by batches.
    sums: LossSums,
    seconds_in_epoch: f64,
    history: Vec<DetectEpoch>,
    best: Option<f64>,
    best_epoch: Option<usize>,
    stale_epochs: usize,
    stopped_early: bool,
    skipped: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct LossSums {
    qfl: f64,
    dfl: f64,
    giou: f64,
    batches: u64,
    images: u64,
}

/// What a finished detection run hands back (also `final.json`).
#[derive(Debug, Serialize)]
pub struct DetectOutcome {
    pub run_dir: PathBuf,
    pub history: Vec<DetectEpoch>,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
    /// The best model on the validation set.
    pub val: DetEvaluation,
    /// Training images that could not be decoded.
    pub skipped: Vec<(String, String)>,
    /// What was wrong in the dataset and how it was handled.
    pub problems: Vec<String>,
}

struct Data {
    saved: SavedDetector,
    train: Arc<DetectionSet>,
    val: Arc<DetectionSet>,
}

/// The detection set of a config, split, and the detector it calls for.
fn open_data(cfg: &TrainConfig) -> Result<Data, TrainError> {
    cfg.validate()?;
    let (train, val) = open_detection(&cfg.data)?;
    let (train, val) = match (val, &cfg.val_data) {
        (_, Some(v)) => {
            let (v, _) = open_detection(v)?;
            (train, v)
        }
        (Some(v), None) => (train, v),
        (None, None) => hold_out(train, cfg.val_fraction, cfg.seed),
    };
    if train.images.is_empty() || val.images.is_empty() {
        return Err(TrainError::Config(format!(
            "{} training and {} validation images: too few to train a detector",
            train.images.len(),
            val.images.len()
        )));
    }
    if val.classes != train.classes {
        return Err(TrainError::Config(format!(
            "validation classes {:?} differ from training's {:?}",
            val.classes, train.classes
        )));
    }
    let side = cfg.image_size.unwrap_or(320);
    let shape = DetectorShape {
        arch: if cfg.model == Arch::SmallCnn { Arch::EfficientnetLite0 } else { cfg.model },
        classes: train.classes.len(),
        input: (side, side),
        reg_max: cfg.reg_max,
    };
    shape.check()?;
    let n = shape.arch.normalize();
    let saved = SavedDetector {
        shape,
        classes: train.classes.clone(),
        preprocess: SavedDetector::preprocess(cfg.resize, FILL, n.mean, n.std),
        nms: deploy_nms(),
    };
    Ok(Data { saved, train: Arc::new(train), val: Arc::new(val) })
}

/// The canvas colour where no image lands (YOLO's grey), in training and in the export.
const FILL: u8 = 114;

/// Hold out `fraction` of the images (at least one), chosen by `seed`.
fn hold_out(mut set: DetectionSet, fraction: f64, seed: u64) -> (DetectionSet, DetectionSet) {
    let mut order: Vec<usize> = (0..set.images.len()).collect();
    Rng::new(seed).shuffle(&mut order);
    let n_val =
        ((set.images.len() as f64 * fraction).round() as usize).clamp(1, set.images.len().saturating_sub(1).max(1));
    let mut is_val = vec![false; set.images.len()];
    for &i in &order[..n_val.min(order.len())] {
        is_val[i] = true;
    }
    let images = std::mem::take(&mut set.images);
    let (val, train): (Vec<_>, Vec<_>) = images.into_iter().zip(is_val).partition(|(_, v)| *v);
    let val = DetectionSet {
        classes: set.classes.clone(),
        images: val.into_iter().map(|(i, _)| i).collect(),
        ..DetectionSet::default()
    };
    set.images = train.into_iter().map(|(i, _)| i).collect();
    (set, val)
}

/// The validation images of a detection run, as its training saw them.
pub fn validation_set(run_dir: &Path) -> Result<(SavedDetector, DetectionSet), TrainError> {
    let data = open_data(&crate::train::saved_config(run_dir)?)?;
    let val = Arc::try_unwrap(data.val).unwrap_or_else(|a| (*a).clone());
    Ok((data.saved, val))
}

struct Job {
    cfg: TrainConfig,
    dir: PathBuf,
    data: Data,
    device: Device,
    log: std::fs::File,
}

impl Job {
    fn log(&mut self, line: &str) {
        use std::io::Write;
        tracing::info!("{line}");
        let _ = writeln!(self.log, "[{}] {line}", unix_secs());
    }
}

fn prepare(cfg: TrainConfig, dir: PathBuf) -> Result<Job, TrainError> {
    let data = open_data(&cfg)?;
    let device = device(cfg.device)?;
    let log = checkpoint::open_log(&dir)?;
    Ok(Job { cfg, dir, data, device, log })
}

fn load_model(shape: &DetectorShape, bytes: Vec<u8>, device: &Device, path: &Path) -> Result<Detector, TrainError> {
    checkpoint::load_module(Detector::new(shape, None, device)?, bytes, path)
}

/// The best detector of a run folder (`model.json` + `best.bpk`).
pub fn load_trained(run_dir: &Path, device: &Device) -> Result<(Detector, SavedDetector), TrainError> {
    let (saved, bytes, best) = checkpoint::read_best::<SavedDetector>(run_dir)?;
    Ok((load_model(&saved.shape, bytes, device, &best)?, saved))
}

/// Start a new detection run.
pub fn train(mut cfg: TrainConfig, observer: &dyn Observer) -> Result<DetectOutcome, TrainError> {
    let dir = cfg.run_dir.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("detect-{}", unix_secs())));
    if dir.join(CHECKPOINT_FILE).exists() {
        return Err(TrainError::Config(format!(
            "{} already holds a run; continue it with `strix train --resume {0}` or pick another run_dir",
            dir.display()
        )));
    }
    cfg.run_dir = Some(dir.clone());
    let mut job = prepare(cfg, dir)?;
    job.cfg.model = job.data.saved.shape.arch;
    job.cfg.image_size = Some(job.data.saved.shape.input.0);
    write_atomic(&job.dir.join(CONFIG_FILE), job.cfg.to_toml()?.as_bytes())?;
    observer.phase("hashing the dataset (for the run's lineage)");
    write_lineage(&job)?;
    for p in job.data.train.problems.iter().chain(&job.data.val.problems).cloned().collect::<Vec<_>>() {
        job.log(&format!("data: {p}"));
    }
    let pretrained = match &job.cfg.pretrained {
        Some(p) if job.cfg.mode() != Mode::Scratch => Some(Weights::open(p)?),
        _ => None,
    };
    job.device.seed(job.cfg.seed);
    let mut model = Detector::new(&job.data.saved.shape, pretrained.as_ref(), &job.device.clone().autodiff())?;
    if pretrained.as_ref().is_some_and(|w| w.folded) {
        observer.phase("measuring the backbone's batch-norm statistics on training images");
        model.backbone = model.backbone.restat(calibration_batch(&job)?);
    }
    let line = format!(
        "run {}: detector on {} ({:?}), {}x{} input, {} train / {} val images, {} classes, {} epochs",
        job.dir.display(),
        job.cfg.model,
        job.cfg.mode(),
        job.data.saved.shape.input.0,
        job.data.saved.shape.input.1,
        job.data.train.images.len(),
        job.data.val.images.len(),
        job.data.saved.classes.len(),
        job.cfg.epochs
    );
    job.log(&line);
    let optim = build_optimizer(&job.cfg);
    run(job, DetectState::default(), model, optim, observer)
}

/// Up to [`CALIBRATION_IMAGES`] training images as the first epoch's augmentation makes them.
fn calibration_batch(job: &Job) -> Result<Tensor<4>, TrainError> {
    let (w, h) = job.data.saved.shape.input;
    let mut order: Vec<usize> = (0..job.data.train.images.len()).collect();
    Rng::derive(job.cfg.seed, &[u64::MAX]).shuffle(&mut order);
    order.truncate(CALIBRATION_IMAGES);
    let plan = DetPlan {
        set: job.data.train.clone(),
        batch_size: order.len(),
        order,
        augment: augment(&job.cfg, job.data.saved.shape.input),
        normalize: job.data.saved.shape.arch.normalize(),
        seed: job.cfg.seed,
        epoch: 0,
        limits: DecodeLimits::default(),
    };
    let batch = plan.make(0);
    let n = batch.targets.len();
    if n == 0 {
        return Err(TrainError::Invalid("no training image could be decoded to calibrate the backbone".into()));
    }
    Ok(Tensor::from_data(TensorData::new(batch.images, [n, 3, h, w]), &job.device.clone().autodiff()))
}

/// `dataset.json` and `dataset.sha256`: the digest of every image and label of the run.
fn write_lineage(job: &Job) -> Result<(), TrainError> {
    let manifest = strix_data::manifest::detection_manifest(&[("train", &job.data.train), ("val", &job.data.val)])?;
    write_atomic(&job.dir.join(DATASET_MANIFEST_FILE), manifest.manifest.as_bytes())?;
    write_atomic(&job.dir.join(DATASET_FILE), crate::error::json(&manifest, "the dataset manifest")?.as_bytes())
}

/// Continue a detection run from its last checkpoint.
pub fn resume(run_dir: &Path, observer: &dyn Observer) -> Result<DetectOutcome, TrainError> {
    let mut cfg = crate::train::saved_config(run_dir)?;
    cfg.run_dir = Some(run_dir.to_path_buf());
    let mut job = prepare(cfg, run_dir.to_path_buf())?;
    let (state, model_b, optim, ckpt) = checkpoint::load_run::<DetectState>(run_dir, build_optimizer(&job.cfg))?;
    let model = load_model(&job.data.saved.shape, model_b, &job.device.clone().autodiff(), &ckpt)?;
    job.log(&format!("resumed at epoch {} batch {}", state.epoch + 1, state.batch_in_epoch));
    run(job, state, model, optim, observer)
}

/// Training augmentation: scale, shift, mirror and colour jitter around the letterboxed fit.
fn augment(cfg: &TrainConfig, input: (usize, usize)) -> BoxAugment {
    BoxAugment {
        size: (input.0 as u32, input.1 as u32),
        scale: (cfg.box_scale[0], cfg.box_scale[1]),
        translate: cfg.translate,
        flip: if cfg.hflip { 0.5 } else { 0.0 },
        jitter: cfg.color_jitter,
        min_visible: 0.25,
        fill: [FILL; 3],
        stretch: cfg.resize == ResizeMode::Stretch,
    }
}

/// One optimisation step on a batch; the loss terms.
fn step(
    model: Detector,
    optim: &mut ModuleOptimizer,
    lr: f64,
    x: Tensor<4>,
    job: &Job,
    priors: &[Prior],
    targets: &[Vec<super::assign::Target>],
) -> Result<(Detector, LossTerms), TrainError> {
    let (loss, terms) = detection_loss(model.forward(x), &job.data.saved.shape, priors, targets)?;
    if !terms.total().is_finite() {
        return Err(TrainError::Invalid(format!(
            "loss became {} (qfl {}, dfl {}, giou {}): lower the learning rate (lr = {})",
            terms.total(),
            terms.qfl,
            terms.dfl,
            terms.giou,
            job.cfg.lr
        )));
    }
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    Ok((optim.step(lr, model, grads), terms))
}

fn run(
    mut job: Job,
    mut state: DetectState,
    mut model: Detector,
    mut optim: ModuleOptimizer,
    observer: &dyn Observer,
) -> Result<DetectOutcome, TrainError> {
    let cfg = job.cfg.clone();
    let ad = job.device.clone().autodiff();
    let shape = job.data.saved.shape.clone();
    let (w, h) = shape.input;
    let priors = priors(&shape.grids(), &STRIDES);
    let normalize: Normalize = shape.arch.normalize();
    let steps_per_epoch = job.data.train.images.len().div_ceil(cfg.batch_size) as u64;
    let total_steps = steps_per_epoch * cfg.epochs as u64;
    let mut last_save = Instant::now();
    while state.epoch < cfg.epochs && !state.stopped_early {
        let epoch = state.epoch;
        let mut order: Vec<usize> = (0..job.data.train.images.len()).collect();
        Rng::derive(cfg.seed, &[epoch as u64]).shuffle(&mut order);
        let plan = DetPlan {
            set: job.data.train.clone(),
            order,
            batch_size: cfg.batch_size,
            augment: augment(&cfg, shape.input),
            normalize: normalize.clone(),
            seed: cfg.seed,
            epoch: epoch as u64,
            limits: DecodeLimits::default(),
        };
        observer.epoch_start(epoch, cfg.epochs, plan.batches(), state.batch_in_epoch);
        let started = Instant::now();
        let before = state.seconds_in_epoch;
        let mut lr = lr_at(&cfg, state.global_step, steps_per_epoch, total_steps);
        for batch in plan.start(state.batch_in_epoch, cfg.prefetch) {
            for (i, reason) in batch.failed {
                let name = job.data.train.images[i].path.display().to_string();
                job.log(&format!("skipped unreadable training image {name}: {reason}"));
                if !state.skipped.iter().any(|(n, _)| *n == name) {
                    state.skipped.push((name, reason));
                }
            }
            let n = batch.targets.len();
            if n > 0 {
                lr = lr_at(&cfg, state.global_step, steps_per_epoch, total_steps);
                ad.seed(cfg.seed ^ state.global_step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let x = Tensor::<4>::from_data(TensorData::new(batch.images, [n, 3, h, w]), &ad);
                let (next, terms) = step(model, &mut optim, lr, x, &job, &priors, &batch.targets)?;
                model = next;
                let s = &mut state.sums;
                (s.qfl, s.dfl, s.giou) = (s.qfl + terms.qfl, s.dfl + terms.dfl, s.giou + terms.giou);
                s.batches += 1;
                s.images += n as u64;
                state.global_step += 1;
                observer.batch(n, (s.qfl + s.dfl + s.giou) / s.batches as f64, f64::NAN);
            }
            state.batch_in_epoch += 1;
            if cfg.checkpoint_minutes > 0.0 && last_save.elapsed().as_secs_f64() >= cfg.checkpoint_minutes * 60.0 {
                state.seconds_in_epoch = before + started.elapsed().as_secs_f64();
                checkpoint::save_run(&job.dir, &state, &model, &optim)?;
                last_save = Instant::now();
            }
        }
        let seconds = before + started.elapsed().as_secs_f64();
        observer.phase("evaluating on the validation images");
        let val = evaluate(&model, &job.data.saved, &job.data.val, cfg.batch_size, &job.device)?;
        let metrics = epoch_metrics(&state, epoch, &val, lr, seconds);
        observer.detect_epoch_end(&metrics);
        end_epoch(&mut job, &mut state, metrics, &model)?;
        checkpoint::save_run(&job.dir, &state, &model, &optim)?;
        last_save = Instant::now();
    }
    finish(job, state, observer)
}

fn epoch_metrics(state: &DetectState, epoch: usize, val: &DetEvaluation, lr: f64, seconds: f64) -> DetectEpoch {
    let s = &state.sums;
    let b = s.batches.max(1) as f64;
    DetectEpoch {
        epoch: epoch + 1,
        loss: (s.qfl + s.dfl + s.giou) / b,
        qfl: s.qfl / b,
        dfl: s.dfl / b,
        giou: s.giou / b,
        map: val.map,
        map50: val.map50,
        per_class: val.per_class.iter().map(|c| (c.name.clone(), c.ap.max(0.0), c.ap50.max(0.0))).collect(),
        lr,
        seconds,
        images_per_second: s.images as f64 / seconds.max(1e-9),
    }
}

/// Metrics written, the best model kept, early stopping decided; the state moves to the next
/// epoch.
fn end_epoch(job: &mut Job, state: &mut DetectState, metrics: DetectEpoch, model: &Detector) -> Result<(), TrainError> {
    let mut all = String::new();
    for m in state.history.iter().chain([&metrics]) {
        all.push_str(&crate::error::json_line(m, "the epoch's metrics")?);
        all.push('\n');
    }
    write_atomic(&job.dir.join(METRICS_FILE), all.as_bytes())?;
    job.log(&metrics.to_string());
    // mAP, ties broken by mAP@.5 (early epochs often score 0 at the strict thresholds).
    let score = metrics.map + 1e-3 * metrics.map50;
    let epoch = metrics.epoch;
    state.history.push(metrics);
    if state.best.is_none_or(|b| score > b) {
        state.best = Some(score);
        state.best_epoch = Some(epoch);
        state.stale_epochs = 0;
        write_atomic(&job.dir.join(BEST_FILE), &checkpoint::module_bytes(&model.valid())?)?;
        write_atomic(
            &job.dir.join(MODEL_FILE),
            crate::error::json(&job.data.saved, "the model description")?.as_bytes(),
        )?;
    } else {
        state.stale_epochs += 1;
        if job.cfg.early_stopping.is_some_and(|p| state.stale_epochs >= p) {
            state.stopped_early = true;
            job.log(&format!("early stop: no improvement for {} epochs", state.stale_epochs));
        }
    }
    state.epoch += 1;
    state.batch_in_epoch = 0;
    state.sums = LossSums::default();
    state.seconds_in_epoch = 0.0;
    Ok(())
}

fn finish(mut job: Job, state: DetectState, observer: &dyn Observer) -> Result<DetectOutcome, TrainError> {
    let (best, _) = load_trained(&job.dir, &job.device)?;
    observer.phase("evaluating the best model on the validation images");
    let val = evaluate(&best, &job.data.saved, &job.data.val, job.cfg.batch_size, &job.device)?;
    let problems = job.data.train.problems.iter().chain(&job.data.val.problems).cloned().collect();
    let outcome = DetectOutcome {
        run_dir: job.dir.clone(),
        history: state.history,
        best_epoch: state.best_epoch,
        stopped_early: state.stopped_early,
        val,
        skipped: state.skipped,
        problems,
    };
    write_atomic(&job.dir.join(FINAL_FILE), crate::error::json(&outcome, "the run's outcome")?.as_bytes())?;
    observer.phase("writing report.html");
    super::report::write(&job.dir, &job.cfg, &job.data.saved, &outcome, &job.data.val)?;
    let line = format!(
        "done: best epoch {:?}, val mAP {:.4}, mAP@.5 {:.4}",
        outcome.best_epoch, outcome.val.map, outcome.val.map50
    );
    job.log(&line);
    Ok(outcome)
}
