//! The typed description of a training job. Saved, resolved, in every run folder, so a run
//! can be repeated or resumed from it alone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strix_core::Task;
use strix_data::Augment;

use crate::{Arch, TrainError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Body frozen (batch-norm statistics too); only the new head learns. Without pretrained
    /// weights the body is random: the baseline that shows what pretraining buys.
    LinearProbe,
    /// Pretrained weights, everything learns.
    FineTune,
    /// Random init, everything learns.
    Scratch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// SGD with (PyTorch-style, undampened) momentum and L2 weight decay.
    Sgd,
    /// Adam with decoupled weight decay.
    Adamw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    Constant,
    /// Linear warmup, then cosine decay to zero at the last step.
    Cosine,
    /// Multiply by `step_gamma` every `step_epochs` epochs.
    Step,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Monitor {
    ValAccuracy,
    ValLoss,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    #[default]
    Letterbox,
    Stretch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    Wgpu,
}

fn d_val() -> f64 {
    0.1
}
fn d_arch() -> Arch {
    Arch::SmallCnn
}
fn d_lr() -> f64 {
    1e-3
}
fn d_momentum() -> f64 {
    0.9
}
fn d_wd() -> f64 {
    1e-4
}
fn d_epochs() -> usize {
    10
}
fn d_batch() -> usize {
    64
}
fn d_seed() -> u64 {
    42
}
fn d_step_epochs() -> usize {
    10
}
fn d_gamma() -> f64 {
    0.1
}
fn d_crop_min() -> f32 {
    0.35
}
fn d_true() -> bool {
    true
}
fn d_jitter() -> f32 {
    0.2
}
fn d_val_crop() -> f32 {
    0.875
}
fn d_prefetch() -> usize {
    4
}
fn d_ckpt() -> f64 {
    5.0
}
fn d_optimizer() -> OptimizerKind {
    OptimizerKind::Adamw
}
fn d_schedule() -> Schedule {
    Schedule::Cosine
}
fn d_monitor() -> Monitor {
    Monitor::ValAccuracy
}
fn d_device() -> DeviceChoice {
    DeviceChoice::Cpu
}
fn d_task() -> Task {
    Task::Classify
}
fn d_reg_max() -> usize {
    7
}
fn d_box_scale() -> [f32; 2] {
    [0.6, 1.4]
}
fn d_translate() -> f32 {
    0.1
}

/// Every knob of `strix train`. Each is also a command-line flag of the same name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `classify` or `detect` (boxes: a COCO or YOLO dataset in `data`).
    #[serde(default = "d_task")]
    pub task: Task,
    /// Training images: a folder of class folders, a `path,label` CSV, or a folder of IDX
    /// files; for detection a COCO (`annotations/instances_train.json`) or YOLO (`data.yaml`)
    /// dataset folder.
    pub data: PathBuf,
    /// Validation images; without it, `val_fraction` of `data` is held out (stratified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_data: Option<PathBuf>,
    /// Test images, evaluated once with the best model at the end. Without it, a dataset that
    /// ships its own test part (IDX `t10k-*`, a `test/` folder) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_data: Option<PathBuf>,
    /// The class list, in order; labels outside it are errors. Default: from the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    #[serde(default = "d_val")]
    pub val_fraction: f64,
    /// Train on a stratified sample of at most this many images of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_images: Option<usize>,

    #[serde(default = "d_arch")]
    pub model: Arch,
    /// Pretrained weights (safetensors, PyTorch parameter names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// Default: `fine-tune` with pretrained weights, `scratch` without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Input side in pixels. Default: the architecture's (28 for small-cnn, 224 otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// 1 (greyscale) or 3. Default: 1 for small-cnn on IDX data, 3 otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,

    #[serde(default = "d_optimizer")]
    pub optimizer: OptimizerKind,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_momentum")]
    pub momentum: f64,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    #[serde(default = "d_schedule")]
    pub schedule: Schedule,
    #[serde(default)]
    pub warmup_epochs: f64,
    #[serde(default = "d_step_epochs")]
    pub step_epochs: usize,
    #[serde(default = "d_gamma")]
    pub step_gamma: f64,
    #[serde(default)]
    pub label_smoothing: f32,
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Stop after this many epochs without improvement of `monitor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<usize>,
    #[serde(default = "d_monitor")]
    pub monitor: Monitor,
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// CPU threads. Default: all cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(default = "d_device")]
    pub device: DeviceChoice,

    /// Augmentation: random resized crop down to this fraction of the image area (1 = off).
    #[serde(default = "d_crop_min")]
    pub crop_scale_min: f32,
    #[serde(default = "d_true")]
    pub hflip: bool,
    #[serde(default = "d_jitter")]
    pub color_jitter: f32,
    /// Evaluation view: centre crop of this fraction of the shorter side.
    #[serde(default = "d_val_crop")]
    pub val_crop: f32,
    /// Batches decoded ahead of the training step.
    #[serde(default = "d_prefetch")]
    pub prefetch: usize,
    /// Evaluate the test images (see `test_data`) with the best model at the end.
    #[serde(default = "d_true")]
    pub test: bool,
    /// Also checkpoint inside an epoch every this many minutes (epoch ends always are).
    #[serde(default = "d_ckpt")]
    pub checkpoint_minutes: f64,
    /// Detection: highest distance bin of the box regression (a side reaches `reg_max` strides).
    #[serde(default = "d_reg_max")]
    pub reg_max: usize,
    /// Detection augmentation: the image is scaled by a random factor in this range relative
    /// to fitting the input (above 1 crops), ...
    #[serde(default = "d_box_scale")]
    pub box_scale: [f32; 2],
    /// ... and shifted by up to this share of the input size.
    #[serde(default = "d_translate")]
    pub translate: f32,
    /// Detection: how images meet the input, in training, evaluation and the export's spec:
    /// `letterbox` (keep the aspect ratio, pad with grey) or `stretch`.
    #[serde(default)]
    pub resize: ResizeMode,
    /// The run folder. Default: `runs/<model>-<unix time>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
}

impl TrainConfig {
    /// Parse TOML, naming the offending line and field.
    pub fn from_toml(text: &str, origin: &Path) -> Result<TrainConfig, TrainError> {
        let cfg: TrainConfig = toml::from_str(text)
            .map_err(|e| TrainError::Config(format!("{}: {}", origin.display(), e.to_string().trim())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> Result<String, TrainError> {
        toml::to_string_pretty(self)
            .map_err(|e| TrainError::Serialize { what: "the run's config", source: Box::new(e) })
    }

    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or(if self.pretrained.is_some() { Mode::FineTune } else { Mode::Scratch })
    }

    pub fn augment(&self) -> Augment {
        Augment {
            crop_scale: [self.crop_scale_min.clamp(0.01, 1.0), 1.0],
            crop_ratio: if self.crop_scale_min >= 1.0 { [1.0, 1.0] } else { [0.75, 1.333] },
            hflip: self.hflip,
            color_jitter: self.color_jitter,
        }
    }

    /// Checks that need no files: ranges and combinations.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.epochs == 0 || self.batch_size == 0 {
            return bad("epochs and batch_size must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be positive, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(format!("val_fraction must be in [0, 1), got {}", self.val_fraction));
        }
        if self.val_fraction == 0.0 && self.val_data.is_none() {
            return bad("no validation data: set val_data or a val_fraction above 0".into());
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!("label_smoothing must be in [0, 1), got {}", self.label_smoothing));
        }
        // A linear probe without weights is allowed: random features are the baseline that
        // shows what pretraining buys.
        if self.mode == Some(Mode::FineTune) && self.pretrained.is_none() {
            return bad(format!("mode {:?} needs pretrained weights (set `pretrained`)", self.mode()).to_lowercase());
        }
        let box_ok = self.box_scale[0] > 0.0 && self.box_scale[0] <= self.box_scale[1];
        if !(box_ok && (0.0..0.5).contains(&self.translate)) {
            return bad(format!(
                "box_scale must be [low, high] with 0 < low <= high, translate in [0, 0.5); got {:?} and {}",
                self.box_scale, self.translate
            ));
        }
        if let Some(c) = self.channels
            && c != 1
            && c != 3
        {
            return bad(format!("channels must be 1 or 3, got {c}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_typos_are_named() {
        let c = TrainConfig::from_toml("data = \"d\"\nmodel = \"resnet18\"\nlr = 0.1\n", Path::new("t.toml")).unwrap();
        assert_eq!((c.model, c.epochs, c.mode()), (Arch::Resnet18, 10, Mode::Scratch));
        assert_eq!(TrainConfig::from_toml(&c.to_toml().unwrap(), Path::new("x")).unwrap(), c);
        let e =
            TrainConfig::from_toml("data = \"d\"\nlearning_rate = 0.1\n", Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.contains("t.toml") && e.contains("learning_rate") && e.contains("line 2"), "{e}");
        let e = TrainConfig::from_toml("data = \"d\"\nmodel = \"vgg\"\n", Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.contains("vgg"), "{e}");
        let e = TrainConfig::from_toml("data = \"d\"\nmode = \"fine-tune\"\n", Path::new("t.toml")).unwrap_err();
        assert!(e.to_string().contains("needs pretrained"), "{e}");
    }
}
