//! A small CNN for small images (MNIST-sized): two conv-BN-ReLU-pool stages and a hidden layer.

use burn::nn::{BatchNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::TrainError;
use crate::kernels::batch_norm;
use crate::layers::{Conv, ConvSpec, max_pool};
use crate::weights::Init;

pub const WIDTHS: [usize; 2] = [32, 64];
pub const HIDDEN: usize = 128;

#[derive(Module, Debug)]
pub struct SmallCnn {
    pub conv1: Conv,
    pub bn1: BatchNorm,
    pub conv2: Conv,
    pub bn2: BatchNorm,
    pub fc: Linear,
}

impl SmallCnn {
    /// For `channels` x `size` x `size` inputs (`size` divisible by 4).
    pub fn new(init: &Init<'_>, channels: usize, size: usize) -> Result<SmallCnn, TrainError> {
        if !size.is_multiple_of(4) || size == 0 {
            return Err(TrainError::Config(format!("small-cnn needs an image_size divisible by 4, got {size}")));
        }
        let [a, b] = WIDTHS;
        Ok(SmallCnn {
            conv1: ConvSpec::torch(channels, a, 3, 1).build(init, "conv1")?,
            bn1: init.batch_norm("bn1", a, 1e-5)?,
            conv2: ConvSpec::torch(a, b, 3, 1).build(init, "conv2")?,
            bn2: init.batch_norm("bn2", b, 1e-5)?,
            fc: init.linear("fc", b * (size / 4) * (size / 4), HIDDEN)?,
        })
    }

    /// # Shapes
    /// `[n, c, s, s]` -> `[n, 128]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = max_pool(relu(batch_norm(&self.bn1, self.conv1.forward(x))), 2, 2, 0);
        let x = max_pool(relu(batch_norm(&self.bn2, self.conv2.forward(x))), 2, 2, 0);
        relu(self.fc.forward(x.flatten::<2>(1, 3)))
    }
}
