//! The convolution our architectures share: plain symmetric padding (PyTorch) or TensorFlow's
//! "SAME" padding, whose extra row and column go at the bottom and right and depend on the input
//! size, so it is worked out at each call.

use burn::module::{Param, RunningState};
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;

use crate::TrainError;
use crate::weights::Init;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// The same on every side.
    Symmetric(usize),
    /// TensorFlow "SAME": output size `ceil(in / stride)`.
    TfSame,
}

#[derive(Module, Debug)]
pub struct Conv {
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub stride: usize,
    #[module(skip)]
    pub groups: usize,
    #[module(skip)]
    pub padding: Padding,
}

/// How to build one conv: `(in, out, kernel, stride, groups)`, its padding and bias.
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub padding: Padding,
    pub bias: bool,
}

impl ConvSpec {
    /// A `k x k` conv with PyTorch's `k / 2` padding and no bias (a batch norm follows).
    pub fn torch(c_in: usize, c_out: usize, kernel: usize, stride: usize) -> ConvSpec {
        ConvSpec { c_in, c_out, kernel, stride, groups: 1, padding: Padding::Symmetric(kernel / 2), bias: false }
    }

    pub fn build(self, init: &Init<'_>, name: &str) -> Result<Conv, TrainError> {
        let shape = [self.c_out, self.c_in / self.groups, self.kernel, self.kernel];
        Ok(Conv {
            weight: init.conv_weight(name, shape)?,
            bias: if self.bias { Some(init.conv_bias(name, self.c_out)?) } else { None },
            stride: self.stride,
            groups: self.groups,
            padding: self.padding,
        })
    }
}

/// `(begin, end)` padding along an axis of length `n` for TF "SAME".
pub fn tf_same(n: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = n.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(n);
    (total / 2, total - total / 2)
}

impl Conv {
    /// # Shapes
    /// `[n, c_in, h, w]` -> `[n, c_out, h', w']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let k = self.weight.dims()[2];
        let padding = match self.padding {
            Padding::Symmetric(p) => [(p, p), (p, p)],
            Padding::TfSame => [tf_same(h, k, self.stride), tf_same(w, k, self.stride)],
        };
        let options = ConvOptions { stride: [self.stride; 2], padding, dilation: [1, 1], groups: self.groups };
        let [c_out, per_group, _, _] = self.weight.dims();
        if self.groups > 1 && per_group == 1 && c_out == self.groups && self.bias.is_none() {
            return crate::kernels::depthwise_conv2d(x, self.weight.val(), options);
        }
        crate::kernels::conv2d(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()), options)
    }
}

/// Square max pooling with symmetric padding.
///
/// # Shapes
/// `[n, c, h, w]` -> `[n, c, (h + 2 pad - kernel) / stride + 1, ...]`
pub fn max_pool(x: Tensor<4>, kernel: usize, stride: usize, pad: usize) -> Tensor<4> {
    crate::kernels::max_pool2d(x, crate::kernels::Window { kernel, stride, pad })
}

/// Re-express `bn` around the statistics of its input `y` (per channel, over batch and
/// space): the running mean and variance become `y`'s, and scale and shift change so that the
/// evaluation-mode map `a * y + c` stays exactly what it was. Returns that map of `y`.
///
/// Why: an inference export folds each batch norm into its convolution, which loses the
/// statistics; training normalises by batch statistics, so without them the first step would
/// throw away what the pretrained network computes.
///
/// # Shapes
/// `y`: `[n, c, h, w]` -> `[n, c, h, w]`
pub fn restat(bn: &mut BatchNorm, y: Tensor<4>) -> Tensor<4> {
    let [n, ch, h, w] = y.dims();
    let device = y.device();
    let host = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap_or_default();
    let (gamma, beta) = (host(bn.gamma.val()), host(bn.beta.val()));
    let (mean, var) = (host(bn.running_mean.value()), host(bn.running_var.value()));
    let eps = bn.epsilon;
    let values = y.clone().detach().into_data().try_to_vec::<f32>().unwrap_or_default();
    let (mean_y, var_y) = crate::kernels::channel_stats(&values, n, ch, h * w);
    let (mut new_gamma, mut new_beta) = (vec![0f32; ch], vec![0f32; ch]);
    let (mut scale, mut shift) = (vec![0f32; ch], vec![0f32; ch]);
    for c in 0..ch {
        let (m, v) = (f64::from(mean_y[c]), f64::from(var_y[c]));
        let a = f64::from(gamma[c]) / (f64::from(var[c]) + eps).sqrt();
        let b = f64::from(beta[c]) - a * f64::from(mean[c]);
        (scale[c], shift[c]) = (a as f32, b as f32);
        (new_gamma[c], new_beta[c]) = ((a * (v + eps).sqrt()) as f32, (b + a * m) as f32);
    }
    let vector = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [ch]), &device);
    bn.gamma = Param::from_tensor(vector(new_gamma));
    bn.beta = Param::from_tensor(vector(new_beta));
    bn.running_mean = RunningState::new(vector(mean_y));
    bn.running_var = RunningState::new(vector(var_y));
    y * vector(scale).reshape([1, ch, 1, 1]) + vector(shift).reshape([1, ch, 1, 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_puts_the_odd_pixel_at_the_end() {
        assert_eq!(tf_same(224, 3, 2), (0, 1));
        assert_eq!(tf_same(224, 5, 2), (1, 2));
        assert_eq!(tf_same(112, 3, 1), (1, 1));
        assert_eq!(tf_same(7, 5, 1), (2, 2));
        assert_eq!(tf_same(225, 3, 2), (1, 1));
    }
}
