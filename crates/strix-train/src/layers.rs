//! The convolution our architectures share: plain symmetric padding (PyTorch) or TensorFlow's
//! "SAME" padding, whose extra row and column go at the bottom and right and depend on the input
//! size, so it is worked out at each call.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};

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
        conv2d(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()), options)
    }
}

/// Square max pooling with symmetric padding.
///
/// # Shapes
/// `[n, c, h, w]` -> `[n, c, (h + 2 pad - kernel) / stride + 1, ...]`
pub fn max_pool(x: Tensor<4>, kernel: usize, stride: usize, pad: usize) -> Tensor<4> {
    let options = MaxPoolOptions {
        kernel_size: [kernel; 2],
        stride: [stride; 2],
        padding: [(pad, pad); 2],
        dilation: [1, 1],
        ceil_mode: false,
    };
    max_pool2d(x, options)
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
