//! EfficientNet-Lite0: EfficientNet-B0 without squeeze-excite, with ReLU6 and TensorFlow "SAME"
//! padding, under the parameter names of the `efficientnet_lite0` PyTorch weights
//! (`_conv_stem`, `_blocks.N._depthwise_conv`, ...).

use burn::nn::BatchNorm;
use burn::prelude::*;

use crate::TrainError;
use crate::layers::{Conv, ConvSpec, Padding};
use crate::weights::Init;

/// The TF implementation's batch-norm epsilon.
const BN_EPS: f64 = 1e-3;
pub const STEM: usize = 32;
pub const HEAD: usize = 1280;

/// Stages of B0 / Lite0: `(expand ratio, kernel, first stride, output channels, repeats)`.
pub const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
];

#[derive(Module, Debug)]
pub struct MbConv {
    pub expand: Option<Conv>,
    pub bn0: Option<BatchNorm>,
    pub depthwise: Conv,
    pub bn1: BatchNorm,
    pub project: Conv,
    pub bn2: BatchNorm,
    #[module(skip)]
    pub residual: bool,
}

#[derive(Module, Debug)]
pub struct EfficientNetLite {
    pub stem: Conv,
    pub bn0: BatchNorm,
    pub blocks: Vec<MbConv>,
    pub head: Conv,
    pub bn1: BatchNorm,
}

fn same(c_in: usize, c_out: usize, kernel: usize, stride: usize, groups: usize) -> ConvSpec {
    ConvSpec { c_in, c_out, kernel, stride, groups, padding: Padding::TfSame, bias: false }
}

fn relu6(x: Tensor<4>) -> Tensor<4> {
    x.clamp(0.0, 6.0)
}

/// One MBConv block (the detector taps the features between blocks).
pub fn block_forward(b: &MbConv, x: Tensor<4>) -> Tensor<4> {
    let input = x.clone();
    let mut y = x;
    if let (Some(c), Some(bn)) = (&b.expand, &b.bn0) {
        y = relu6(bn.forward(c.forward(y)));
    }
    y = relu6(b.bn1.forward(b.depthwise.forward(y)));
    y = b.bn2.forward(b.project.forward(y));
    if b.residual { y + input } else { y }
}

impl EfficientNetLite {
    pub fn new(init: &Init<'_>, channels: usize) -> Result<EfficientNetLite, TrainError> {
        let mut blocks = Vec::new();
        let mut c_in = STEM;
        for &(expand, kernel, stride, c_out, repeats) in &STAGES {
            for r in 0..repeats {
                let name = format!("_blocks.{}", blocks.len());
                let stride = if r == 0 { stride } else { 1 };
                let mid = c_in * expand;
                let (expand_conv, bn0) = if expand != 1 {
                    (
                        Some(same(c_in, mid, 1, 1, 1).build(init, &format!("{name}._expand_conv"))?),
                        Some(init.batch_norm(&format!("{name}._bn0"), mid, BN_EPS)?),
                    )
                } else {
                    (None, None)
                };
                blocks.push(MbConv {
                    expand: expand_conv,
                    bn0,
                    depthwise: same(mid, mid, kernel, stride, mid).build(init, &format!("{name}._depthwise_conv"))?,
                    bn1: init.batch_norm(&format!("{name}._bn1"), mid, BN_EPS)?,
                    project: same(mid, c_out, 1, 1, 1).build(init, &format!("{name}._project_conv"))?,
                    bn2: init.batch_norm(&format!("{name}._bn2"), c_out, BN_EPS)?,
                    residual: stride == 1 && c_in == c_out,
                });
                c_in = c_out;
            }
        }
        Ok(EfficientNetLite {
            stem: same(channels, STEM, 3, 2, 1).build(init, "_conv_stem")?,
            bn0: init.batch_norm("_bn0", STEM, BN_EPS)?,
            blocks,
            head: same(c_in, HEAD, 1, 1, 1).build(init, "_conv_head")?,
            bn1: init.batch_norm("_bn1", HEAD, BN_EPS)?,
        })
    }

    /// # Shapes
    /// `[n, 3, h, w]` -> `[n, 1280]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = relu6(self.bn0.forward(self.stem.forward(x)));
        for b in &self.blocks {
            x = block_forward(b, x);
        }
        let x = relu6(self.bn1.forward(self.head.forward(x)));
        super::global_avg_pool(x)
    }
}
