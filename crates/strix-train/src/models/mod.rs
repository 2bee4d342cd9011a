//! The architectures Strix trains, one definition each for training and evaluation.

pub mod efficientnet;
pub mod resnet;
pub mod small_cnn;

use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use strix_data::Normalize;

use crate::TrainError;
use crate::weights::{Init, Weights};

pub use efficientnet::EfficientNetLite;
pub use resnet::ResNet;
pub use small_cnn::SmallCnn;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    SmallCnn,
    Resnet18,
    Resnet34,
    Resnet50,
    EfficientnetLite0,
}

impl Arch {
    pub const ALL: [Arch; 5] =
        [Arch::SmallCnn, Arch::Resnet18, Arch::Resnet34, Arch::Resnet50, Arch::EfficientnetLite0];

    pub fn name(self) -> &'static str {
        match self {
            Arch::SmallCnn => "small-cnn",
            Arch::Resnet18 => "resnet18",
            Arch::Resnet34 => "resnet34",
            Arch::Resnet50 => "resnet50",
            Arch::EfficientnetLite0 => "efficientnet-lite0",
        }
    }

    /// Input side the architecture was designed for.
    pub fn default_size(self) -> usize {
        match self {
            Arch::SmallCnn => 28,
            _ => 224,
        }
    }

    /// Input normalisation on 0..255 pixels: what the pretrained weights expect.
    pub fn normalize(self) -> Normalize {
        match self {
            Arch::SmallCnn => Normalize { mean: [127.5; 3], std: [127.5; 3] },
            Arch::EfficientnetLite0 => Normalize { mean: [127.0; 3], std: [128.0; 3] },
            _ => Normalize { mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375] },
        }
    }

    /// Name of the classifier layer in pretrained weights.
    pub fn head_name(self) -> &'static str {
        match self {
            Arch::SmallCnn => "head",
            Arch::EfficientnetLite0 => "_fc",
            _ => "fc",
        }
    }

    fn dropout(self) -> f64 {
        match self {
            Arch::SmallCnn => 0.25,
            Arch::EfficientnetLite0 => 0.2,
            _ => 0.0,
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The feature extractor of a classifier.
#[derive(Module, Debug)]
pub enum Backbone {
    SmallCnn(SmallCnn),
    ResNet(ResNet),
    EfficientNet(EfficientNetLite),
}

impl Backbone {
    /// # Shapes
    /// `[n, c, h, w]` -> `[n, features]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Backbone::SmallCnn(m) => m.forward(x),
            Backbone::ResNet(m) => m.forward(x),
            Backbone::EfficientNet(m) => m.forward(x),
        }
    }
}

/// What a classifier is: enough to rebuild it before loading a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelShape {
    pub arch: Arch,
    pub classes: usize,
    pub channels: usize,
    pub image_size: usize,
}

/// Backbone, dropout and a linear head.
#[derive(Module, Debug)]
pub struct Classifier {
    pub backbone: Backbone,
    pub dropout: Dropout,
    pub head: Linear,
}

impl Classifier {
    /// Build `shape`, taking parameters from `pretrained` when given (its head too when it has
    /// exactly `shape.classes` outputs; a new random head otherwise). Random parts come from
    /// the device's generator: seed it first.
    pub fn new(shape: &ModelShape, pretrained: Option<&Weights>, device: &Device) -> Result<Classifier, TrainError> {
        let init = Init { weights: pretrained, device: device.clone() };
        let backbone = match shape.arch {
            Arch::SmallCnn => Backbone::SmallCnn(SmallCnn::new(&init, shape.channels, shape.image_size)?),
            Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50 => {
                let depth = match shape.arch {
                    Arch::Resnet18 => 18,
                    Arch::Resnet34 => 34,
                    _ => 50,
                };
                Backbone::ResNet(ResNet::new(&init, depth, shape.channels)?)
            }
            Arch::EfficientnetLite0 => Backbone::EfficientNet(EfficientNetLite::new(&init, shape.channels)?),
        };
        let features = Self::features_of(shape.arch);
        let head_name = shape.arch.head_name();
        let head_matches = pretrained
            .and_then(|w| w.shape(&format!("{head_name}.weight")))
            .is_some_and(|s| s == [shape.classes, features]);
        let head_init = if head_matches { init } else { init.fresh() };
        Ok(Classifier {
            backbone,
            dropout: DropoutConfig::new(shape.arch.dropout()).init(),
            head: head_init.linear(head_name, features, shape.classes)?,
        })
    }

    pub fn features_of(arch: Arch) -> usize {
        match arch {
            Arch::SmallCnn => small_cnn::HIDDEN,
            Arch::Resnet18 | Arch::Resnet34 => 512,
            Arch::Resnet50 => 2048,
            Arch::EfficientnetLite0 => efficientnet::HEAD,
        }
    }

    /// # Shapes
    /// `[n, c, h, w]` -> logits `[n, classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.dropout.forward(self.backbone.forward(x)))
    }
}

/// Mean over the spatial axes.
///
/// # Shapes
/// `[n, c, h, w]` -> `[n, c]`
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    x.mean_dim(3).mean_dim(2).flatten::<2>(1, 3)
}

impl Classifier {
    /// The backbone's batch norms re-measured on a batch of preprocessed images
    /// ([`EfficientNetLite::restat`]): what folded weights need before training.
    ///
    /// # Shapes
    /// `images`: `n * channels * size * size` floats (NCHW)
    pub fn restat(
        mut self,
        images: Vec<f32>,
        n: usize,
        channels: usize,
        size: usize,
        device: &Device,
    ) -> Result<Classifier, TrainError> {
        self.backbone = match self.backbone {
            Backbone::EfficientNet(b) if n > 0 => {
                let x = Tensor::<4>::from_data(TensorData::new(images, [n, channels, size, size]), device);
                Backbone::EfficientNet(b.restat(x))
            }
            _ => {
                return Err(TrainError::Config(
                    "folded weights (an inference ONNX) are read for efficientnet-lite0 only, and need a decodable training image".into(),
                ));
            }
        };
        Ok(self)
    }

    /// Logits for a batch of preprocessed images, without autodiff or training behaviour.
    ///
    /// # Shapes
    /// `images`: `n * channels * size * size` floats (NCHW) -> `n * classes` floats
    pub fn logits(&self, images: Vec<f32>, n: usize, channels: usize, size: usize, device: &Device) -> Vec<f32> {
        self.logits_and_features(images, n, channels, size, device).0
    }

    /// Logits and the pooled features the head reads (the embedding an export's second output
    /// gives), for a batch of preprocessed images.
    ///
    /// # Shapes
    /// `images`: `n * channels * size * size` floats -> (`n * classes`, `n * features`) floats
    pub fn logits_and_features(
        &self,
        images: Vec<f32>,
        n: usize,
        channels: usize,
        size: usize,
        device: &Device,
    ) -> (Vec<f32>, Vec<f32>) {
        let x = Tensor::<4>::from_data(TensorData::new(images, [n, channels, size, size]), &device.clone().inner());
        let model = self.valid();
        let features = model.backbone.forward(x);
        let logits = model.head.forward(features.clone());
        let host = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap_or_default();
        (host(logits), host(features))
    }
}
