//! Classifier training (`task = "classify"`): image folders, cross-entropy with label
//! smoothing, accuracy and top-5 every epoch; the [`TrainTask`] the run lifecycle drives.

use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use strix_core::Task;
use strix_data::{ImageSet, LoadPlan, Part, Transform, View};
use strix_vision::DecodeLimits;

use crate::config::{Mode, Monitor, TrainConfig};
use crate::lifecycle::{
    Batch, Batches, CALIBRATION_IMAGES, EpochFacts, Evaluated, Outcome, Run, Step, Sums, TrainTask,
};
use crate::metrics::{EpochMetrics, Evaluation, Tally};
use crate::summary::{Objective, RunSummary};
use crate::{Arch, Classifier, ModelShape, TrainError, Weights, checkpoint, report};

/// `model.json` beside `best.bpk`: how to rebuild and feed the trained model.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedModel {
    pub shape: ModelShape,
    pub classes: Vec<String>,
    pub normalize: strix_data::Normalize,
    pub val_crop: f32,
}

/// A classifier run's `final.json`.
pub type ClassifyOutcome = Outcome<EpochMetrics, Evaluation>;

/// A run's data and everything derived from it, opened from its config; nothing is written.
pub struct Classify {
    shape: ModelShape,
    train: Arc<ImageSet>,
    val: Arc<ImageSet>,
    test: Option<Arc<ImageSet>>,
    train_tf: Arc<Transform>,
    eval_tf: Arc<Transform>,
    saved: SavedModel,
    loss: CrossEntropyLoss,
}

/// Where a classification run's images come from.
#[derive(Clone, Copy, Debug)]
pub struct PartsSpec<'a> {
    pub data: &'a Path,
    pub val_data: Option<&'a Path>,
    pub test_data: Option<&'a Path>,
    pub classes: Option<&'a [String]>,
    pub val_fraction: f64,
    pub max_images: Option<usize>,
    pub seed: u64,
    /// Open a test part (the given one, else the data's own).
    pub test: bool,
}

/// A classification run's training, validation and test images.
pub struct DataParts {
    pub train: ImageSet,
    pub val: ImageSet,
    pub test: Option<ImageSet>,
}

impl DataParts {
    /// The data (sampled down to `max_images`), split stratified into training and validation
    /// unless validation images are given; the test part when asked for and there is one.
    pub fn open(spec: &PartsSpec<'_>) -> Result<DataParts, TrainError> {
        let full = ImageSet::open(spec.data, Part::Train, spec.classes)?;
        let full = match spec.max_images {
            Some(n) => full.sample(n, spec.seed),
            None => full,
        };
        let classes = full.classes.clone();
        let (train, val) = match spec.val_data {
            Some(v) => {
                let val = ImageSet::open(v, Part::Train, Some(&classes))?;
                (full, val)
            }
            None => {
                let parts = strix_data::split::stratified(&full.labels(), &[spec.val_fraction], spec.seed);
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
        let test = match (spec.test_data, spec.test) {
            (_, false) => None,
            (Some(t), true) => Some(ImageSet::open(t, Part::Test, Some(&classes))?),
            (None, true) if ImageSet::has_test_part(spec.data) => {
                Some(ImageSet::open(spec.data, Part::Test, Some(&classes))?)
            }
            (None, true) => None,
        };
        Ok(DataParts { train, val, test })
    }
}

impl Classify {
    fn from_config(cfg: &TrainConfig) -> Result<Classify, TrainError> {
        cfg.validate()?;
        let DataParts { train, val, test } = DataParts::open(&PartsSpec {
            data: &cfg.data,
            val_data: cfg.val_data.as_deref(),
            test_data: cfg.test_data.as_deref(),
            classes: cfg.classes.as_deref(),
            val_fraction: cfg.val_fraction,
            max_images: cfg.max_images,
            seed: cfg.seed,
            test: cfg.test,
        })?;
        let (classes, greyscale) = (train.classes.clone(), train.is_greyscale());
        let test = test.map(Arc::new);
        let channels = cfg.channels.unwrap_or(if cfg.model == Arch::SmallCnn && greyscale { 1 } else { 3 });
        let size = cfg.image_size.unwrap_or(cfg.model.default_size());
        let shape = ModelShape { arch: cfg.model, classes: classes.len(), channels, image_size: size };
        let normalize = cfg.model.normalize();
        let train_tf = Transform { size, channels, normalize: normalize.clone(), view: View::Train(cfg.augment()) };
        let eval_tf =
            Transform { size, channels, normalize: normalize.clone(), view: View::Eval { crop: cfg.val_crop } };
        let saved = SavedModel { shape: shape.clone(), classes, normalize, val_crop: cfg.val_crop };
        let smoothing = (cfg.label_smoothing > 0.0).then_some(cfg.label_smoothing);
        let loss = CrossEntropyLossConfig::new().with_smoothing(smoothing).init(&Device::flex());
        Ok(Classify {
            shape,
            train: Arc::new(train),
            val: Arc::new(val),
            test,
            train_tf: Arc::new(train_tf),
            eval_tf: Arc::new(eval_tf),
            saved,
            loss,
        })
    }

    /// A folded backbone's batch norms measured on up to [`CALIBRATION_IMAGES`] training
    /// images as the first epoch's augmentation makes them.
    fn restat_backbone(&self, model: Classifier, cfg: &TrainConfig, device: &Device) -> Result<Classifier, TrainError> {
        let mut order = self.train.shuffled(cfg.seed, u64::MAX);
        order.truncate(CALIBRATION_IMAGES);
        let plan = LoadPlan {
            set: self.train.clone(),
            batch_size: order.len(),
            order,
            transform: self.train_tf.clone(),
            seed: cfg.seed,
            epoch: 0,
            prefetch: 0,
            limits: DecodeLimits::default(),
        };
        let batch = plan.make(0);
        let (c, s) = (self.shape.channels, self.shape.image_size);
        model.restat(batch.images, batch.labels.len(), c, s, device)
    }
}

/// A classifier batch: preprocessed images and their labels.
pub struct ClassBatch {
    images: Vec<f32>,
    labels: Vec<usize>,
}

impl TrainTask for Classify {
    const TASK: Task = Task::Classify;
    type Model = Classifier;
    type Input = ClassBatch;
    type Epoch = EpochMetrics;
    type Eval = Evaluation;
    type Saved = SavedModel;

    fn open(cfg: &mut TrainConfig) -> Result<Self, TrainError> {
        Classify::from_config(cfg)
    }

    fn run_name(cfg: &TrainConfig) -> String {
        cfg.model.to_string()
    }

    fn describe(&self, cfg: &TrainConfig, dir: &Path) -> String {
        format!(
            "run {}: {} ({:?}) on {} train / {} val images, {} classes, {} epochs",
            dir.display(),
            cfg.model,
            cfg.mode(),
            self.train.len(),
            self.val.len(),
            self.saved.classes.len(),
            cfg.epochs
        )
    }

    fn manifest(&self) -> Result<strix_data::manifest::DatasetManifest, TrainError> {
        let mut parts = vec![("train", &*self.train), ("val", &*self.val)];
        if let Some(t) = &self.test {
            parts.push(("test", t));
        }
        Ok(strix_data::manifest::dataset_manifest(&parts)?)
    }

    fn train_images(&self) -> usize {
        self.train.len()
    }

    fn new_model(&self, run: &Run<'_>, pretrained: Option<&Weights>) -> Result<Classifier, TrainError> {
        let (cfg, device, observer) = (run.cfg, run.device, run.observer);
        let model = Classifier::new(&self.shape, pretrained, device)?;
        if pretrained.is_some_and(|w| w.folded) {
            observer.phase("measuring the backbone's batch-norm statistics on training images");
            return self.restat_backbone(model, cfg, device);
        }
        Ok(model)
    }

    fn empty_model(&self, device: &Device) -> Result<Classifier, TrainError> {
        Classifier::new(&self.shape, None, device)
    }

    /// A linear probe trains the head (and its dropout) only.
    fn for_training(&self, model: Classifier, cfg: &TrainConfig) -> Classifier {
        match cfg.mode() {
            Mode::LinearProbe => {
                let mut m = model.freeze();
                m.head = m.head.unfreeze();
                m.dropout = m.dropout.unfreeze();
                m
            }
            _ => model,
        }
    }

    fn saved(&self) -> &SavedModel {
        &self.saved
    }

    fn batches(&self, cfg: &TrainConfig, epoch: usize, first: usize) -> Batches<ClassBatch> {
        let plan = LoadPlan {
            set: self.train.clone(),
            order: self.train.shuffled(cfg.seed, epoch as u64),
            batch_size: cfg.batch_size,
            transform: self.train_tf.clone(),
            seed: cfg.seed,
            epoch: epoch as u64,
            prefetch: cfg.prefetch,
            limits: DecodeLimits::default(),
        };
        let count = plan.batches();
        let set = self.train.clone();
        let batches = plan.start(first).map(move |b| Batch {
            images: b.labels.len(),
            failed: b.failed.into_iter().map(|(i, reason)| (set.name(i), reason)).collect(),
            input: ClassBatch { images: b.images, labels: b.labels },
        });
        (count, Box::new(batches))
    }

    fn step(&self, model: &Classifier, input: ClassBatch, device: &Device) -> Result<Step, TrainError> {
        let n = input.labels.len();
        let (c, s) = (self.shape.channels, self.shape.image_size);
        let x = Tensor::<4>::from_data(TensorData::new(input.images, [n, c, s, s]), device);
        let labels: Vec<i64> = input.labels.iter().map(|&l| l as i64).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device);
        let logits = model.forward(x);
        let loss = self.loss.forward(logits.clone(), y);
        let read = |what: &str, e: &dyn std::fmt::Debug| {
            TrainError::Invalid(format!("cannot read the {what} back from the device: {e:?}"))
        };
        let value = loss.clone().into_data().try_to_vec::<f32>().map_err(|e| read("loss", &e))?;
        let value = f64::from(value.first().copied().unwrap_or(f32::NAN));
        let host = logits.into_data().try_to_vec::<f32>().map_err(|e| read("logits", &e))?;
        let k = (host.len() / n).max(1);
        let correct = host
            .chunks(k)
            .zip(&input.labels)
            .filter(|(row, l)| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|m| m.0) == Some(**l))
            .count();
        Ok(Step { loss, sums: vec![("loss", value * n as f64), ("correct", correct as f64)] })
    }

    fn running(sums: &Sums) -> (f64, Option<f64>) {
        let seen = sums.images.max(1) as f64;
        (sums.get("loss") / seen, Some(sums.get("correct") / seen))
    }

    fn end_epoch(&self, model: &Classifier, run: &Run<'_>, end: EpochFacts<'_>) -> Result<EpochMetrics, TrainError> {
        let (cfg, device) = (run.cfg, run.device);
        let val = evaluate(model, &self.val, &self.eval_tf, cfg.batch_size, device, 0);
        let (train_loss, train_accuracy) = Self::running(end.sums);
        Ok(EpochMetrics {
            epoch: end.epoch + 1,
            train_loss,
            train_accuracy: train_accuracy.unwrap_or(0.0),
            val_loss: val.loss,
            val_accuracy: val.accuracy,
            val_top5: val.top5,
            lr: end.lr,
            seconds: end.seconds,
            images_per_second: end.sums.images as f64 / end.seconds.max(1e-9),
        })
    }

    fn objective(cfg: &TrainConfig) -> Objective {
        match cfg.monitor {
            Monitor::ValAccuracy => Objective { metric: "val_accuracy".into(), maximize: true, tie_break: None },
            Monitor::ValLoss => Objective { metric: "val_loss".into(), maximize: false, tie_break: None },
        }
    }

    fn evaluate_best(&self, best: &Classifier, run: &Run<'_>) -> Result<Evaluated<Evaluation>, TrainError> {
        let (cfg, device, observer) = (run.cfg, run.device, run.observer);
        observer.phase("evaluating the best model on the validation images");
        let val = evaluate(best, &self.val, &self.eval_tf, cfg.batch_size, device, 16);
        let test = match &self.test {
            Some(t) => {
                observer.phase("evaluating the best model on the test images");
                Some(evaluate(best, t, &self.eval_tf, cfg.batch_size, device, 0))
            }
            None => None,
        };
        let per_class = val.class_lines();
        Ok(Evaluated {
            scores: (val.scores(), test.as_ref().map(Evaluation::scores)),
            unreadable: val.unreadable.len() + test.as_ref().map_or(0, |t| t.unreadable.len()),
            per_class,
            notes: Vec::new(),
            val,
            test,
        })
    }

    fn report(&self, cfg: &TrainConfig, outcome: &ClassifyOutcome, summary: &RunSummary) -> Result<(), TrainError> {
        report::write(&outcome.run_dir, cfg, outcome, summary, &self.val)
    }
}

/// Up to `n` validation images of a run, spread over the validation set and preprocessed as
/// for evaluation: `[count, channels, size, size]` floats and `count`. The export gate feeds
/// these to the exported model.
pub fn validation_images(run_dir: &Path, n: usize) -> Result<(Vec<f32>, usize), TrainError> {
    let data = Classify::from_config(&crate::files::saved_config(run_dir)?)?;
    let len = data.val.len();
    let count = n.min(len).max(1);
    let plan = LoadPlan {
        set: data.val.clone(),
        order: (0..count).map(|i| i * len / count).collect(),
        batch_size: count,
        transform: data.eval_tf.clone(),
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

/// Load a trained model from a run folder (`model.json` + `best.bpk`).
pub fn load_trained(run_dir: &Path, device: &Device) -> Result<(Classifier, SavedModel), TrainError> {
    let (saved, bytes, best) = checkpoint::read_best::<SavedModel>(run_dir)?;
    let model = checkpoint::load_module(Classifier::new(&saved.shape, None, device)?, bytes, &best)?;
    Ok((model, saved))
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
