//! The detector: EfficientNet-Lite0 features at strides 8, 16 and 32, a light PAN neck and a
//! NanoDet-style head per level whose one output carries the class logits and, per box side, a
//! distribution over `reg_max + 1` distance bins (GFL).

use burn::module::Param;
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use serde::{Deserialize, Serialize};

use crate::kernels::batch_norm;
use crate::layers::{Conv, ConvSpec, Padding};
use crate::models::efficientnet::{self, EfficientNetLite};
use crate::weights::{Init, Weights};
use crate::{Arch, TrainError};

/// The strides of the three levels, finest first.
pub const STRIDES: [usize; 3] = [8, 16, 32];
/// Backbone blocks whose outputs feed the neck (the ends of EfficientNet stages 2, 4 and 6)
/// and their channels.
pub const TAPS: [usize; 3] = [4, 10, 15];
pub const TAP_CHANNELS: [usize; 3] = [40, 112, 320];
/// Channels of the neck and head.
pub const WIDTH: usize = 96;
/// The initial class bias: a prior of 1% on every cell (focal-loss practice), so early
/// training is not swamped by the negatives.
pub const PRIOR_BIAS: f32 = -4.595;
const BN_EPS: f64 = 1e-5;

/// What a detector is: enough to rebuild it before loading a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorShape {
    pub arch: Arch,
    pub classes: usize,
    /// Input `(width, height)`, multiples of 32.
    pub input: (usize, usize),
    /// Highest distance bin: a box side reaches at most `reg_max` strides from its cell.
    pub reg_max: usize,
}

impl DetectorShape {
    pub fn bins(&self) -> usize {
        self.reg_max + 1
    }

    /// Output channels of a level: class logits, then 4 x bins distance logits.
    pub fn outputs(&self) -> usize {
        self.classes + 4 * self.bins()
    }

    /// `(columns, rows)` of each level's grid.
    pub fn grids(&self) -> [(usize, usize); 3] {
        STRIDES.map(|s| (self.input.0 / s, self.input.1 / s))
    }

    pub fn check(&self) -> Result<(), TrainError> {
        if self.arch != Arch::EfficientnetLite0 {
            return Err(TrainError::Config(format!(
                "detectors are built on efficientnet-lite0; {} is a classifier-only backbone here",
                self.arch
            )));
        }
        let (w, h) = self.input;
        if w == 0 || h == 0 || w % 32 != 0 || h % 32 != 0 {
            return Err(TrainError::Config(format!(
                "detector input {w}x{h}: both sides must be positive multiples of 32 (the coarsest stride)"
            )));
        }
        if self.classes == 0 || !(1..=32).contains(&self.reg_max) {
            return Err(TrainError::Config(format!(
                "detector needs at least one class and reg_max in 1..=32 (got {} classes, reg_max {})",
                self.classes, self.reg_max
            )));
        }
        Ok(())
    }
}

/// Convolution, batch norm and (optionally) ReLU6.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv,
    pub bn: BatchNorm,
    #[module(skip)]
    pub relu: bool,
}

impl ConvBn {
    fn new(init: &Init<'_>, spec: ConvSpec, relu: bool) -> Result<ConvBn, TrainError> {
        Ok(ConvBn { conv: spec.build(init, "")?, bn: init.batch_norm("", spec.c_out, BN_EPS)?, relu })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = batch_norm(&self.bn, self.conv.forward(x));
        if self.relu { relu6(y) } else { y }
    }
}

/// Two depthwise-separable blocks, then the 1x1 output convolution (with bias).
#[derive(Module, Debug)]
pub struct HeadLevel {
    pub blocks: Vec<ConvBn>,
    pub out: Conv,
}

#[derive(Module, Debug)]
pub struct Detector {
    pub backbone: EfficientNetLite,
    /// 1x1 convolutions (with bias) taking each tap to the neck's width.
    pub lateral: Vec<Conv>,
    pub head: Vec<HeadLevel>,
}

pub fn relu6(x: Tensor<4>) -> Tensor<4> {
    crate::kernels::relu6(x)
}

fn spec(c_in: usize, c_out: usize, kernel: usize, groups: usize, bias: bool) -> ConvSpec {
    ConvSpec { c_in, c_out, kernel, stride: 1, groups, padding: Padding::Symmetric(kernel / 2), bias }
}

/// Nearest-neighbour 2x upsampling, written as reshapes so that ONNX needs no `Resize`.
///
/// # Shapes
/// `[n, c, h, w]` -> `[n, c, 2h, 2w]`
pub fn upsample2(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n * c * h, 1, w, 1]).expand([n * c * h, 2, w, 2]).reshape([n, c, 2 * h, 2 * w])
}

/// 2x2 mean (bilinear halving with `align_corners = false` is exactly this).
pub fn downsample2(x: Tensor<4>) -> Tensor<4> {
    avg_pool2d(
        x,
        AvgPoolOptions {
            kernel_size: [2, 2],
            stride: [2, 2],
            padding: [(0, 0); 2],
            count_include_pad: true,
            ceil_mode: false,
        },
    )
}

impl Detector {
    /// A detector of `shape`, the backbone from `pretrained` when given (ImageNet
    /// EfficientNet-Lite0 weights under their PyTorch names), the rest random from the
    /// device's generator (seed it first).
    pub fn new(shape: &DetectorShape, pretrained: Option<&Weights>, device: &Device) -> Result<Detector, TrainError> {
        shape.check()?;
        let init = Init { weights: pretrained, device: device.clone() };
        let backbone = EfficientNetLite::new(&init, 3)?;
        let fresh = init.fresh();
        let lateral =
            TAP_CHANNELS.iter().map(|&c| spec(c, WIDTH, 1, 1, true).build(&fresh, "")).collect::<Result<_, _>>()?;
        let mut head = Vec::new();
        for _ in STRIDES {
            let blocks = vec![
                ConvBn::new(&fresh, spec(WIDTH, WIDTH, 3, WIDTH, false), true)?,
                ConvBn::new(&fresh, spec(WIDTH, WIDTH, 1, 1, false), true)?,
                ConvBn::new(&fresh, spec(WIDTH, WIDTH, 3, WIDTH, false), true)?,
                ConvBn::new(&fresh, spec(WIDTH, WIDTH, 1, 1, false), true)?,
            ];
            head.push(HeadLevel { blocks, out: output_conv(shape, device) });
        }
        Ok(Detector { backbone, lateral, head })
    }

    /// The backbone's outputs at the three taps.
    fn taps(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let b = &self.backbone;
        let mut x = relu6(batch_norm(&b.bn0, b.stem.forward(x)));
        let mut taps = Vec::with_capacity(3);
        for (i, block) in b.blocks.iter().enumerate().take(TAPS[2] + 1) {
            x = efficientnet::block_forward(block, x);
            if TAPS.contains(&i) {
                taps.push(x.clone());
            }
        }
        taps
    }

    /// Raw per-level outputs, finest first.
    ///
    /// # Shapes
    /// `[n, 3, h, w]` -> per level `[n, classes + 4 * bins, h / s, w / s]`
    pub fn forward(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let taps = self.taps(x);
        let l: Vec<Tensor<4>> = taps.into_iter().zip(&self.lateral).map(|(t, c)| c.forward(t)).collect();
        // Top-down, then bottom-up (PAN).
        let p5 = l[2].clone();
        let p4 = l[1].clone() + upsample2(p5.clone());
        let p3 = l[0].clone() + upsample2(p4.clone());
        let n4 = p4 + downsample2(p3.clone());
        let n5 = p5 + downsample2(n4.clone());
        [p3, n4, n5]
            .into_iter()
            .zip(&self.head)
            .map(|(f, h)| h.out.forward(h.blocks.iter().fold(f, |y, b| b.forward(y))))
            .collect()
    }
}

/// The output convolution: small random weights (std 0.01), class biases at the prior,
/// distance biases at zero (a flat distribution).
fn output_conv(shape: &DetectorShape, device: &Device) -> Conv {
    let outputs = shape.outputs();
    let weight = Tensor::random([outputs, WIDTH, 1, 1], burn::tensor::Distribution::Normal(0.0, 0.01), device);
    let mut bias = vec![0f32; outputs];
    bias[..shape.classes].fill(PRIOR_BIAS);
    Conv {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(Tensor::from_data(TensorData::new(bias, [outputs]), device))),
        stride: 1,
        groups: 1,
        padding: Padding::Symmetric(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_have_the_grid_of_their_stride() {
        let device = Device::flex();
        device.seed(1);
        let shape = DetectorShape { arch: Arch::EfficientnetLite0, classes: 3, input: (96, 64), reg_max: 7 };
        let det = Detector::new(&shape, None, &device).unwrap();
        let out = det.forward(Tensor::zeros([2, 3, 64, 96], &device));
        let dims: Vec<[usize; 4]> = out.iter().map(|t| t.dims()).collect();
        assert_eq!(dims, vec![[2, 35, 8, 12], [2, 35, 4, 6], [2, 35, 2, 3]]);
        let err = DetectorShape { input: (100, 64), ..shape }.check().unwrap_err().to_string();
        assert!(err.contains("multiples of 32"), "{err}");
    }

    #[test]
    fn upsampling_repeats_each_pixel_in_a_2x2_square() {
        let device = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(vec![1f32, 2., 3., 4., 5., 6.], [1, 1, 2, 3]), &device);
        let up = upsample2(x.clone()).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(up[..6], [1., 1., 2., 2., 3., 3.]);
        assert_eq!(up[6..12], [1., 1., 2., 2., 3., 3.]);
        assert_eq!(up[12..18], [4., 4., 5., 5., 6., 6.]);
        let down = downsample2(upsample2(x)).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(down, vec![1., 2., 3., 4., 5., 6.]);
    }
}
