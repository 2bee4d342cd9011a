//! Detector training as a [`TrainTask`]: detection data with box augmentation, the
//! NanoDet-Plus losses and per-epoch COCO evaluation; the run lifecycle does the rest.

use std::path::Path;
use std::sync::Arc;

use burn::prelude::*;
use strix_core::Task;
use strix_data::box_augment::BoxAugment;
use strix_data::detection::{DetectionSet, open_detection};
use strix_data::{Normalize, Rng};
use strix_vision::DecodeLimits;

use super::assign::{Prior, Target, priors};
use super::batch::DetPlan;
use super::epoch::DetectEpoch;
use super::eval::{DetEvaluation, EVAL_SCORE_THRESHOLD, SavedDetector, deploy_nms, evaluate};
use super::loss::detection_loss;
use super::model::{Detector, DetectorShape, STRIDES};
use crate::config::{ResizeMode, TrainConfig};
use crate::lifecycle::{
    Batch, Batches, CALIBRATION_IMAGES, EpochFacts, Evaluated, Outcome, Run, Step, Sums, TrainTask,
};
use crate::summary::{ClassLine, Objective, RunSummary, Scores};
use crate::{Arch, TrainError, Weights, checkpoint};

/// A detection run's data and the detector it calls for.
pub struct Detect {
    saved: SavedDetector,
    train: Arc<DetectionSet>,
    val: Arc<DetectionSet>,
    priors: Vec<Prior>,
}

/// A detection run's `final.json`.
pub type DetectOutcome = Outcome<DetectEpoch, DetEvaluation>;

/// The detection set of a config, split, and the detector it calls for.
fn open_data(cfg: &TrainConfig) -> Result<Detect, TrainError> {
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
    let priors = priors(&saved.shape.grids(), &STRIDES);
    Ok(Detect { saved, train: Arc::new(train), val: Arc::new(val), priors })
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
    let data = open_data(&crate::files::saved_config(run_dir)?)?;
    let val = Arc::try_unwrap(data.val).unwrap_or_else(|a| (*a).clone());
    Ok((data.saved, val))
}

/// The best detector of a run folder (`model.json` + `best.bpk`).
pub fn load_trained(run_dir: &Path, device: &Device) -> Result<(Detector, SavedDetector), TrainError> {
    let (saved, bytes, best) = checkpoint::read_best::<SavedDetector>(run_dir)?;
    Ok((checkpoint::load_module(Detector::new(&saved.shape, None, device)?, bytes, &best)?, saved))
}

/// Up to [`CALIBRATION_IMAGES`] training images as the first epoch's augmentation makes them.
fn calibration_batch(data: &Detect, cfg: &TrainConfig, device: &Device) -> Result<Tensor<4>, TrainError> {
    let (w, h) = data.saved.shape.input;
    let mut order: Vec<usize> = (0..data.train.images.len()).collect();
    Rng::derive(cfg.seed, &[u64::MAX]).shuffle(&mut order);
    order.truncate(CALIBRATION_IMAGES);
    let plan = DetPlan {
        set: data.train.clone(),
        batch_size: order.len(),
        order,
        augment: augment(cfg, data.saved.shape.input),
        normalize: data.saved.shape.arch.normalize(),
        seed: cfg.seed,
        epoch: 0,
        limits: DecodeLimits::default(),
    };
    let batch = plan.make(0);
    let n = batch.targets.len();
    if n == 0 {
        return Err(TrainError::Invalid("no training image could be decoded to calibrate the backbone".into()));
    }
    Ok(Tensor::from_data(TensorData::new(batch.images, [n, 3, h, w]), device))
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

/// A detection batch: letterboxed images and each one's boxes.
pub struct DetInput {
    images: Vec<f32>,
    targets: Vec<Vec<Target>>,
}

impl TrainTask for Detect {
    const TASK: Task = Task::Detect;
    /// `--task detect --data` alone is enough for a useful detector.
    const DEFAULT_PRETRAINED: Option<&'static str> = Some("efficientnet_lite0");
    type Model = Detector;
    type Input = DetInput;
    type Epoch = DetectEpoch;
    type Eval = DetEvaluation;
    type Saved = SavedDetector;

    /// A detector needs a backbone with strides 8-32, smaller batches of larger images and the
    /// AdamW settings of NanoDet-Plus.
    fn defaults() -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("model".into(), Arch::EfficientnetLite0.name().into());
        t.insert("image_size".into(), toml::Value::Integer(320));
        t.insert("batch_size".into(), toml::Value::Integer(16));
        t.insert("epochs".into(), toml::Value::Integer(30));
        t.insert("weight_decay".into(), toml::Value::Float(0.05));
        t.insert("warmup_epochs".into(), toml::Value::Float(1.0));
        t.insert("early_stopping".into(), toml::Value::Integer(10));
        t
    }

    /// Fixes the backbone and the input side the detector was built with into the config.
    fn open(cfg: &mut TrainConfig) -> Result<Self, TrainError> {
        let data = open_data(cfg)?;
        cfg.model = data.saved.shape.arch;
        cfg.image_size = Some(data.saved.shape.input.0);
        Ok(data)
    }

    fn run_name(_: &TrainConfig) -> String {
        "detect".into()
    }

    fn describe(&self, cfg: &TrainConfig, dir: &Path) -> String {
        format!(
            "run {}: detector on {} ({:?}), {}x{} input, {} train / {} val images, {} classes, {} epochs",
            dir.display(),
            cfg.model,
            cfg.mode(),
            self.saved.shape.input.0,
            self.saved.shape.input.1,
            self.train.images.len(),
            self.val.images.len(),
            self.saved.classes.len(),
            cfg.epochs
        )
    }

    fn manifest(&self) -> Result<strix_data::manifest::DatasetManifest, TrainError> {
        Ok(strix_data::manifest::detection_manifest(&[("train", &self.train), ("val", &self.val)])?)
    }

    fn problems(&self) -> Vec<String> {
        self.train.problems.iter().chain(&self.val.problems).cloned().collect()
    }

    fn train_images(&self) -> usize {
        self.train.images.len()
    }

    fn new_model(&self, run: &Run<'_>, pretrained: Option<&Weights>) -> Result<Detector, TrainError> {
        let (cfg, device, observer) = (run.cfg, run.device, run.observer);
        let mut model = Detector::new(&self.saved.shape, pretrained, device)?;
        if pretrained.is_some_and(|w| w.folded) {
            observer.phase("measuring the backbone's batch-norm statistics on training images");
            model.backbone = model.backbone.restat(calibration_batch(self, cfg, device)?);
        }
        Ok(model)
    }

    fn empty_model(&self, device: &Device) -> Result<Detector, TrainError> {
        Detector::new(&self.saved.shape, None, device)
    }

    fn saved(&self) -> &SavedDetector {
        &self.saved
    }

    fn batches(&self, cfg: &TrainConfig, epoch: usize, first: usize) -> Batches<DetInput> {
        let mut order: Vec<usize> = (0..self.train.images.len()).collect();
        Rng::derive(cfg.seed, &[epoch as u64]).shuffle(&mut order);
        let normalize: Normalize = self.saved.shape.arch.normalize();
        let plan = DetPlan {
            set: self.train.clone(),
            order,
            batch_size: cfg.batch_size,
            augment: augment(cfg, self.saved.shape.input),
            normalize,
            seed: cfg.seed,
            epoch: epoch as u64,
            limits: DecodeLimits::default(),
        };
        let count = plan.batches();
        let set = self.train.clone();
        let batches = plan.start(first, cfg.prefetch).map(move |b| Batch {
            images: b.targets.len(),
            failed: b.failed.into_iter().map(|(i, r)| (set.images[i].path.display().to_string(), r)).collect(),
            input: DetInput { images: b.images, targets: b.targets },
        });
        (count, Box::new(batches))
    }

    fn step(&self, model: &Detector, input: DetInput, device: &Device) -> Result<Step, TrainError> {
        let (w, h) = self.saved.shape.input;
        let n = input.targets.len();
        let x = Tensor::<4>::from_data(TensorData::new(input.images, [n, 3, h, w]), device);
        let (loss, t) = detection_loss(model.forward(x), &self.saved.shape, &self.priors, &input.targets)?;
        Ok(Step { loss, sums: vec![("qfl", t.qfl), ("dfl", t.dfl), ("giou", t.giou)] })
    }

    /// Loss terms are means over a batch's boxes, so the epoch's are means over batches.
    fn running(sums: &Sums) -> (f64, Option<f64>) {
        let total = sums.get("qfl") + sums.get("dfl") + sums.get("giou");
        (total / sums.batches.max(1) as f64, None)
    }

    fn end_epoch(&self, model: &Detector, run: &Run<'_>, end: EpochFacts<'_>) -> Result<DetectEpoch, TrainError> {
        let (cfg, device) = (run.cfg, run.device);
        let val = evaluate(model, &self.saved, &self.val, cfg.batch_size, device)?;
        let s = end.sums;
        let b = s.batches.max(1) as f64;
        Ok(DetectEpoch {
            epoch: end.epoch + 1,
            loss: Self::running(s).0,
            qfl: s.get("qfl") / b,
            dfl: s.get("dfl") / b,
            giou: s.get("giou") / b,
            map: val.map,
            map50: val.map50,
            per_class: val.per_class.iter().map(|c| (c.name.clone(), c.ap.max(0.0), c.ap50.max(0.0))).collect(),
            lr: end.lr,
            seconds: end.seconds,
            images_per_second: s.images as f64 / end.seconds.max(1e-9),
        })
    }

    /// mAP, ties broken by mAP@.5 (early epochs often score 0 at the strict thresholds).
    fn objective(_: &TrainConfig) -> Objective {
        Objective { metric: "map".into(), maximize: true, tie_break: Some("map50".into()) }
    }

    fn evaluate_best(&self, best: &Detector, run: &Run<'_>) -> Result<Evaluated<DetEvaluation>, TrainError> {
        let (cfg, device, observer) = (run.cfg, run.device, run.observer);
        observer.phase("evaluating the best model on the validation images");
        let val = evaluate(best, &self.saved, &self.val, cfg.batch_size, device)?;
        let per_class = val
            .per_class
            .iter()
            .map(|c| ClassLine {
                name: c.name.clone(),
                figures: vec![("AP".into(), c.ap.max(0.0)), ("AP@.5".into(), c.ap50.max(0.0))],
            })
            .collect();
        Ok(Evaluated {
            scores: (Scores::Detect { images: val.images as u64, map: val.map, map50: val.map50 }, None),
            unreadable: val.unreadable.len(),
            per_class,
            notes: vec![format!(
                "scored with detections above {EVAL_SCORE_THRESHOLD}: `strix eval detect --score-threshold \
                 {EVAL_SCORE_THRESHOLD}` on the export gives these numbers"
            )],
            val,
            test: None,
        })
    }

    fn report(&self, cfg: &TrainConfig, outcome: &DetectOutcome, summary: &RunSummary) -> Result<(), TrainError> {
        super::report::write(&outcome.run_dir, cfg, &self.saved, outcome, summary, &self.val)
    }
}
