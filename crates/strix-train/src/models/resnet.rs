//! ResNet-18/34 (basic blocks) and ResNet-50 (bottlenecks) with torchvision's parameter names,
//! so torchvision weights exported to safetensors load as they are.

use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::TrainError;
use crate::kernels::batch_norm;
use crate::layers::{Conv, ConvSpec, max_pool};
use crate::weights::Init;

#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv,
    pub bn: BatchNorm,
}

#[derive(Module, Debug)]
pub struct Block {
    pub conv1: Conv,
    pub bn1: BatchNorm,
    pub conv2: Conv,
    pub bn2: BatchNorm,
    /// Bottleneck blocks only.
    pub conv3: Option<Conv>,
    pub bn3: Option<BatchNorm>,
    pub downsample: Option<Downsample>,
}

#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv,
    pub bn1: BatchNorm,
    pub layers: Vec<Vec<Block>>,
    #[module(skip)]
    pub out_features: usize,
}

/// Blocks per stage and whether they are bottlenecks.
pub fn layout(depth: usize) -> Option<([usize; 4], bool)> {
    match depth {
        18 => Some(([2, 2, 2, 2], false)),
        34 => Some(([3, 4, 6, 3], false)),
        50 => Some(([3, 4, 6, 3], true)),
        _ => None,
    }
}

impl Block {
    fn new(
        init: &Init<'_>,
        name: &str,
        c_in: usize,
        width: usize,
        stride: usize,
        bottleneck: bool,
    ) -> Result<Block, TrainError> {
        let expansion = if bottleneck { 4 } else { 1 };
        let c_out = width * expansion;
        let downsample = if stride != 1 || c_in != c_out {
            Some(Downsample {
                conv: ConvSpec::torch(c_in, c_out, 1, stride).build(init, &format!("{name}.downsample.0"))?,
                bn: init.batch_norm(&format!("{name}.downsample.1"), c_out, 1e-5)?,
            })
        } else {
            None
        };
        let bn = |i: usize, n: usize| init.batch_norm(&format!("{name}.bn{i}"), n, 1e-5);
        let conv = |i: usize, spec: ConvSpec| spec.build(init, &format!("{name}.conv{i}"));
        Ok(if bottleneck {
            Block {
                conv1: conv(1, ConvSpec::torch(c_in, width, 1, 1))?,
                bn1: bn(1, width)?,
                conv2: conv(2, ConvSpec::torch(width, width, 3, stride))?,
                bn2: bn(2, width)?,
                conv3: Some(conv(3, ConvSpec::torch(width, c_out, 1, 1))?),
                bn3: Some(bn(3, c_out)?),
                downsample,
            }
        } else {
            Block {
                conv1: conv(1, ConvSpec::torch(c_in, width, 3, stride))?,
                bn1: bn(1, width)?,
                conv2: conv(2, ConvSpec::torch(width, width, 3, 1))?,
                bn2: bn(2, width)?,
                conv3: None,
                bn3: None,
                downsample,
            }
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let skip = match &self.downsample {
            Some(d) => batch_norm(&d.bn, d.conv.forward(x.clone())),
            None => x.clone(),
        };
        let mut y = relu(batch_norm(&self.bn1, self.conv1.forward(x)));
        y = batch_norm(&self.bn2, self.conv2.forward(y));
        if let (Some(c), Some(b)) = (&self.conv3, &self.bn3) {
            y = batch_norm(b, c.forward(relu(y)));
        }
        relu(y + skip)
    }
}

impl ResNet {
    pub fn new(init: &Init<'_>, depth: usize, channels: usize) -> Result<ResNet, TrainError> {
        let (blocks, bottleneck) =
            layout(depth).ok_or_else(|| TrainError::Config(format!("no ResNet-{depth} (18, 34 or 50)")))?;
        let mut c_in = 64;
        let mut layers = Vec::new();
        for (stage, &n) in blocks.iter().enumerate() {
            let width = 64 << stage;
            let mut stage_blocks = Vec::new();
            for i in 0..n {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                let block = Block::new(init, &format!("layer{}.{i}", stage + 1), c_in, width, stride, bottleneck)?;
                c_in = width * if bottleneck { 4 } else { 1 };
                stage_blocks.push(block);
            }
            layers.push(stage_blocks);
        }
        Ok(ResNet {
            conv1: ConvSpec::torch(channels, 64, 7, 2).build(init, "conv1")?,
            bn1: init.batch_norm("bn1", 64, 1e-5)?,
            layers,
            out_features: c_in,
        })
    }

    /// # Shapes
    /// `[n, c, h, w]` -> `[n, 512]` (2048 for ResNet-50)
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = relu(batch_norm(&self.bn1, self.conv1.forward(x)));
        let mut x = max_pool(x, 3, 2, 1);
        for block in self.layers.iter().flatten() {
            x = block.forward(x);
        }
        super::global_avg_pool(x)
    }
}
