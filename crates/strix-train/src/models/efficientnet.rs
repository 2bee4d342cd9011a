//! EfficientNet-Lite0: EfficientNet-B0 without squeeze-excite, with ReLU6 and TensorFlow "SAME"
//! padding, under the parameter names of the `efficientnet_lite0` PyTorch weights
//! (`_conv_stem`, `_blocks.N._depthwise_conv`, ...).

use burn::nn::BatchNorm;
use burn::prelude::*;

use crate::TrainError;
use crate::kernels::batch_norm;
use crate::layers::{Conv, ConvSpec, Padding, restat};
use crate::weights::{Init, Weights};

/// The TF implementation's batch-norm epsilon.
pub const BN_EPS: f64 = 1e-3;
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

/// One MBConv block of [`STAGES`], as built.
struct BlockPlan {
    name: String,
    c_in: usize,
    mid: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
}

impl BlockPlan {
    fn expands(&self) -> bool {
        self.mid != self.c_in
    }
}

fn plan() -> Vec<BlockPlan> {
    let mut blocks = Vec::new();
    let mut c_in = STEM;
    for &(expand, kernel, stride, c_out, repeats) in &STAGES {
        for r in 0..repeats {
            let name = format!("_blocks.{}", blocks.len());
            blocks.push(BlockPlan {
                name,
                c_in,
                mid: c_in * expand,
                c_out,
                kernel,
                stride: if r == 0 { stride } else { 1 },
            });
            c_in = c_out;
        }
    }
    blocks
}

impl Weights {
    /// A `.safetensors` state dict, or an `.onnx` inference export of EfficientNet-Lite0 (the
    /// zoo's `efficientnet_lite0`, batch norm folded, read by this module's layer names).
    pub fn open(path: &std::path::Path) -> Result<Weights, TrainError> {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) {
            let (layers, fc) = export_layers();
            return Weights::open_folded_onnx(path, &layers, fc, BN_EPS);
        }
        Weights::open_safetensors(path)
    }
}

/// The `(convolution, batch norm)` names of every convolution in forward order (stem; per
/// block expand, depthwise, project; head), the order of an inference export's `Conv` nodes,
/// and the classifier's name.
pub fn export_layers() -> (Vec<(String, String)>, &'static str) {
    let mut layers = vec![("_conv_stem".to_string(), "_bn0".to_string())];
    for b in plan() {
        if b.expands() {
            layers.push((format!("{}._expand_conv", b.name), format!("{}._bn0", b.name)));
        }
        layers.push((format!("{}._depthwise_conv", b.name), format!("{}._bn1", b.name)));
        layers.push((format!("{}._project_conv", b.name), format!("{}._bn2", b.name)));
    }
    layers.push(("_conv_head".to_string(), "_bn1".to_string()));
    (layers, "_fc")
}

fn same(c_in: usize, c_out: usize, kernel: usize, stride: usize, groups: usize) -> ConvSpec {
    ConvSpec { c_in, c_out, kernel, stride, groups, padding: Padding::TfSame, bias: false }
}

fn relu6(x: Tensor<4>) -> Tensor<4> {
    crate::kernels::relu6(x)
}

/// One MBConv block (the detector taps the features between blocks).
pub fn block_forward(b: &MbConv, x: Tensor<4>) -> Tensor<4> {
    let input = x.clone();
    let mut y = x;
    if let (Some(c), Some(bn)) = (&b.expand, &b.bn0) {
        y = relu6(batch_norm(bn, c.forward(y)));
    }
    y = relu6(batch_norm(&b.bn1, b.depthwise.forward(y)));
    y = batch_norm(&b.bn2, b.project.forward(y));
    if b.residual { y + input } else { y }
}

impl EfficientNetLite {
    pub fn new(init: &Init<'_>, channels: usize) -> Result<EfficientNetLite, TrainError> {
        let mut blocks = Vec::new();
        for b in plan() {
            let (expand_conv, bn0) = if b.expands() {
                (
                    Some(same(b.c_in, b.mid, 1, 1, 1).build(init, &format!("{}._expand_conv", b.name))?),
                    Some(init.batch_norm(&format!("{}._bn0", b.name), b.mid, BN_EPS)?),
                )
            } else {
                (None, None)
            };
            blocks.push(MbConv {
                expand: expand_conv,
                bn0,
                depthwise: same(b.mid, b.mid, b.kernel, b.stride, b.mid)
                    .build(init, &format!("{}._depthwise_conv", b.name))?,
                bn1: init.batch_norm(&format!("{}._bn1", b.name), b.mid, BN_EPS)?,
                project: same(b.mid, b.c_out, 1, 1, 1).build(init, &format!("{}._project_conv", b.name))?,
                bn2: init.batch_norm(&format!("{}._bn2", b.name), b.c_out, BN_EPS)?,
                residual: b.stride == 1 && b.c_in == b.c_out,
            });
        }
        let c_in = STAGES[STAGES.len() - 1].3;
        Ok(EfficientNetLite {
            stem: same(channels, STEM, 3, 2, 1).build(init, "_conv_stem")?,
            bn0: init.batch_norm("_bn0", STEM, BN_EPS)?,
            blocks,
            head: same(c_in, HEAD, 1, 1, 1).build(init, "_conv_head")?,
            bn1: init.batch_norm("_bn1", HEAD, BN_EPS)?,
        })
    }

    /// Every batch norm re-centred on the statistics its input has on the images `x`
    /// ([`restat`]), layer by layer in forward order. What the network computes in evaluation
    /// is unchanged; in training (batch statistics) it starts from that same function, which
    /// is what weights with folded batch norms need.
    pub fn restat(mut self, x: Tensor<4>) -> EfficientNetLite {
        let mut x = relu6(restat(&mut self.bn0, self.stem.forward(x))).detach();
        for b in &mut self.blocks {
            let input = x.clone();
            let mut y = x;
            if let (Some(c), Some(bn)) = (&b.expand, &mut b.bn0) {
                y = relu6(restat(bn, c.forward(y)));
            }
            y = relu6(restat(&mut b.bn1, b.depthwise.forward(y)));
            y = restat(&mut b.bn2, b.project.forward(y));
            x = if b.residual { y + input } else { y }.detach();
        }
        restat(&mut self.bn1, self.head.forward(x));
        self
    }

    /// # Shapes
    /// `[n, 3, h, w]` -> `[n, 1280]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = relu6(batch_norm(&self.bn0, self.stem.forward(x)));
        for b in &self.blocks {
            x = block_forward(b, x);
        }
        let x = relu6(batch_norm(&self.bn1, self.head.forward(x)));
        super::global_avg_pool(x)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// After `restat`, evaluation computes what it did before, and training's batch
    /// statistics on the same images compute (nearly) the same thing.
    #[test]
    fn restat_keeps_the_evaluation_function_and_matches_training() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let net = EfficientNetLite::new(&Init::random(&device), 3).unwrap();
        let x = Tensor::<4>::random([4, 3, 64, 64], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let host = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
        let inner = || x.clone().detach().to_device(&device.clone().inner());
        let before = host(net.valid().forward(inner()));
        let net = net.restat(x.clone());
        let after = host(net.valid().forward(inner()));
        let train = host(net.forward(x.clone()));
        let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        let scale = before.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(diff(&before, &after) <= 1e-4 * scale.max(1.0), "evaluation changed by {}", diff(&before, &after));
        assert!(
            diff(&train, &after) <= 1e-2 * scale.max(1.0),
            "training differs by {} (scale {scale})",
            diff(&train, &after)
        );
    }
}
