//! Training kernels for burn's CPU backend (Flex) where its generic paths are slow, added
//! through burn's backend extension (no fork): each op has a Flex forward and, for
//! `Autodiff<Flex>`, a handwritten backward. Other devices take burn's own composed ops.
//!
//! Why these: a profile of a detector epoch (EfficientNet-Lite0 + NanoDet head) had burn's
//! depthwise-convolution backward (a `conv_transpose` for the input and, for the weights, one
//! convolution, slice and slice-assign per channel) and ReLU6's backward (two mask fills over
//! the gradient) among the top costs; a small-CNN epoch spent a fifth of its time in burn-flex's
//! generic 3-D max pool. Here each is one pass over the data, planes in parallel.

mod conv;
mod gemm;
mod pool;
use conv::Geometry;
use gemm::Mat;
pub use pool::Window;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::ops::ConvOptions;
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// A kernel of this module, forward or backward: what [`calls`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Depthwise,
    DepthwiseGrad,
    Conv,
    ConvGrad,
    BatchNorm,
    BatchNormGrad,
    Relu6,
    Relu6Grad,
    MaxPool,
    MaxPoolGrad,
}

thread_local! {
    static CALLS: std::cell::Cell<[u64; 10]> = const { std::cell::Cell::new([0; 10]) };
}

fn count(k: Kernel) {
    CALLS.with(|c| {
        let mut v = c.get();
        v[k as usize] += 1;
        c.set(v);
    });
}

/// How often `kernel` ran on this thread. The wrappers fall back to burn's ops off Flex or
/// for shapes the kernels do not take; comparing them with burn then compares burn with
/// itself, so the tests (and a profile) check this count moved.
pub fn calls(kernel: Kernel) -> u64 {
    CALLS.with(|c| c.get()[kernel as usize])
}

#[backend_extension(Flex, Autodiff)]
pub trait TrainKernels: Backend {
    /// Depthwise 2-D convolution (one filter per channel, no bias).
    fn depthwise_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self>;
    /// Dense 2-D convolution (one group, no dilation, no bias).
    fn conv2d_dense(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self>;
    /// `min(max(x, 0), 6)`.
    fn relu6(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Max pooling over each plane of an NCHW tensor.
    fn max_pool2d(x: FloatTensor<Self>, window: Window) -> FloatTensor<Self>;
    /// Batch norm with batch statistics (NCHW, per channel over batch and space): the output,
    /// the batch mean and the biased variance.
    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl TrainKernels for Flex {
    fn depthwise_conv2d(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        Flex::conv2d(x, weight, None, options)
    }

    fn conv2d_dense(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        match Geometry::new(&x.layout().shape().to_vec(), &weight.layout().shape().to_vec(), &options) {
            Some(g) => conv_forward(&x, &weight, &g),
            None => Flex::conv2d(x, weight, None, options),
        }
    }

    fn relu6(x: FlexTensor) -> FlexTensor {
        Flex::float_clamp(x, 0.0.into(), 6.0.into())
    }

    fn max_pool2d(x: FlexTensor, window: Window) -> FlexTensor {
        max_pool_forward(&x, window, false).0
    }

    fn batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        batch_norm_forward(&x, &gamma, &beta, epsilon)
    }
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = (FlexTensor, FlexTensor, FlexTensor, FlexTensor, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        count(Kernel::BatchNormGrad);
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, gamma, mean, var, epsilon) = ops.state;
        let (dx, dgamma, dbeta) = batch_norm_backward(&x, &gamma, &mean, &var, epsilon, &grad);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, dgamma);
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, dbeta);
        }
    }
}

#[derive(Debug)]
struct DepthwiseBackward;

impl Backward<Flex, 2> for DepthwiseBackward {
    type State = (FlexTensor, FlexTensor, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        count(Kernel::DepthwiseGrad);
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, w, options) = ops.state;
        let (dx, dw) = depthwise_backward(&x, &w, &grad, &options);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, dw);
        }
    }
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 2> for ConvBackward {
    type State = (FlexTensor, FlexTensor, Geometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        count(Kernel::ConvGrad);
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, w, g) = ops.state;
        let dy = values(&grad);
        // The first layer's input needs no gradient.
        if let Some(node) = node_w {
            let dw = conv_weight_grad(&values(&x), &dy, &g);
            grads.register::<Flex>(node.id, tensor(dw, w.layout().shape().to_vec()));
        }
        if let Some(node) = node_x {
            let dx = conv_input_grad(&values(&w), &dy, &g);
            grads.register::<Flex>(node.id, tensor(dx, x.layout().shape().to_vec()));
        }
    }
}

#[derive(Debug)]
struct Relu6Backward;

impl Backward<Flex, 1> for Relu6Backward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        count(Kernel::Relu6Grad);
        let [node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            grads.register::<Flex>(node.id, relu6_backward(&ops.state, &grad));
        }
    }
}

#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    /// The argmax offsets and the input's shape.
    type State = (std::sync::Arc<Vec<u32>>, Vec<usize>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        count(Kernel::MaxPoolGrad);
        let [node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (indices, shape) = ops.state;
        if let Some(node) = node {
            let (h, w) = (shape[2], shape[3]);
            let out_plane = grad.layout().shape()[2..].iter().product();
            let dx = pool::backward(&values(&grad), &indices, out_plane, h, w);
            grads.register::<Flex>(node.id, tensor(dx, shape));
        }
    }
}

impl<C: CheckpointStrategy> TrainKernels for Autodiff<Flex, C> {
    fn depthwise_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        let ((x, x_node), (w, w_node)) = (x.into_parts(), weight.into_parts());
        match DepthwiseBackward.prepare::<C>([x_node, w_node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = Flex::conv2d(x.clone(), w.clone(), None, options.clone());
                prep.finish((x, w, options), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::conv2d(x, w, None, options)),
        }
    }

    fn conv2d_dense(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        let Some(g) = Geometry::new(&x.shape().to_vec(), &weight.shape().to_vec(), &options) else {
            return <Self as ModuleOps<Self>>::conv2d(x, weight, None, options);
        };
        let ((x, x_node), (w, w_node)) = (x.into_parts(), weight.into_parts());
        match ConvBackward.prepare::<C>([x_node, w_node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = conv_forward(&x, &w, &g);
                prep.finish((x, w, g), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(conv_forward(&x, &w, &g)),
        }
    }

    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let ((x, x_node), (gamma, g_node), (beta, b_node)) = (x.into_parts(), gamma.into_parts(), beta.into_parts());
        let (out, mean, var) = batch_norm_forward(&x, &gamma, &beta, epsilon);
        let stats = (<FloatTensor<Self>>::new(mean.clone()), <FloatTensor<Self>>::new(var.clone()));
        let out = match BatchNormBackward.prepare::<C>([x_node, g_node, b_node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, gamma, mean, var, epsilon), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        (out, stats.0, stats.1)
    }

    fn relu6(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, node) = x.into_parts();
        let y = <Flex as TrainKernels>::relu6(x);
        match Relu6Backward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn max_pool2d(x: FloatTensor<Self>, window: Window) -> FloatTensor<Self> {
        let (x, node) = x.into_parts();
        match MaxPoolBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, indices) = max_pool_forward(&x, window, true);
                prep.finish((std::sync::Arc::new(indices), x.layout().shape().to_vec()), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(max_pool_forward(&x, window, false).0),
        }
    }
}

/// One image's patch matrix (see [`conv::im2col`]): its pixels themselves for a pointwise
/// convolution.
fn patches<'a>(x: &'a [f32], g: &Geometry) -> std::borrow::Cow<'a, [f32]> {
    if g.is_pointwise() { std::borrow::Cow::Borrowed(x) } else { std::borrow::Cow::Owned(conv::im2col(x, g)) }
}

/// Whether a batch of `n` spreads its images over the threads, one product each (else each
/// product is spread over them).
fn by_image(n: usize) -> bool {
    n >= rayon::current_num_threads()
}

/// `f(out_i, in_i, parallel)` for each image's chunk of `out` and `input`: images in parallel,
/// or one after another with `parallel` products ([`by_image`]).
fn each_image(out: &mut [f32], input: &[f32], n: usize, f: impl Fn(&mut [f32], &[f32], bool) + Sync) {
    let (o, i) = (out.len() / n.max(1), input.len() / n.max(1));
    if o == 0 || i == 0 {
        return;
    }
    if by_image(n) {
        out.par_chunks_mut(o).zip(input.par_chunks(i)).for_each(|(out, input)| f(out, input, false));
    } else {
        out.chunks_mut(o).zip(input.chunks(i)).for_each(|(out, input)| f(out, input, true));
    }
}

/// A dense convolution, one matrix product per image: `weight [co, c * kh * kw]` times the
/// image's patches, `[n, co, oh, ow]`.
fn conv_forward(x: &FlexTensor, weight: &FlexTensor, g: &Geometry) -> FlexTensor {
    let (x, w) = (values(x), values(weight));
    let (k, p) = (g.patch(), g.positions());
    let co = w.len() / k;
    let mut out = vec![0f32; g.n * co * p];
    each_image(&mut out, &x, g.n, |y, x, parallel| {
        gemm::matmul(y, Mat::rows(&w, co, k), Mat::rows(&patches(x, g), k, p), false, parallel);
    });
    tensor(out, vec![g.n, co, g.oh, g.ow])
}

/// dW = the sum over images of dY * patches^T, `[co, c * kh * kw]`. The patches are built again
/// rather than kept from the forward pass: every conv's would be held until backward, several
/// times the activations.
fn conv_weight_grad(x: &[f32], dy: &[f32], g: &Geometry) -> Vec<f32> {
    let (k, p, plane) = (g.patch(), g.positions(), g.c * g.h * g.w);
    let co = dy.len() / (g.n * p).max(1);
    let add = |dw: &mut Vec<f32>, i: usize, parallel: bool| {
        let cols = patches(&x[i * plane..(i + 1) * plane], g);
        let dy = Mat::rows(&dy[i * co * p..(i + 1) * co * p], co, p);
        gemm::matmul(dw, dy, Mat::transposed(&cols, p, k), true, parallel);
    };
    let zero = || vec![0f32; co * k];
    if by_image(g.n) {
        // Fixed runs of images, each summed in order, then the runs in order: the same rounding
        // every time (rayon's `fold` splits where work stealing lands), which a resumed
        // training relies on to compute what the uninterrupted one does.
        let per = g.n.div_ceil(rayon::current_num_threads());
        let runs: Vec<Vec<f32>> = (0..g.n.div_ceil(per))
            .into_par_iter()
            .map(|run| {
                let mut dw = zero();
                (run * per..((run + 1) * per).min(g.n)).for_each(|i| add(&mut dw, i, false));
                dw
            })
            .collect();
        runs.into_iter()
            .reduce(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            })
            .unwrap_or_else(zero)
    } else {
        let mut dw = zero();
        (0..g.n).for_each(|i| add(&mut dw, i, true));
        dw
    }
}

/// dX = col2im(W^T * dY), image by image, `[n, c, h, w]`.
fn conv_input_grad(w: &[f32], dy: &[f32], g: &Geometry) -> Vec<f32> {
    let (k, p) = (g.patch(), g.positions());
    let co = w.len() / k;
    let mut dx = vec![0f32; g.n * g.c * g.h * g.w];
    each_image(&mut dx, dy, g.n, |dx, dy, parallel| {
        let (wt, dy) = (Mat::transposed(w, k, co), Mat::rows(dy, co, p));
        if g.is_pointwise() {
            gemm::matmul(dx, wt, dy, false, parallel);
        } else {
            let mut cols = vec![0f32; k * p];
            gemm::matmul(&mut cols, wt, dy, false, parallel);
            conv::col2im(&cols, g, dx);
        }
    });
    dx
}

/// Max pooling of an NCHW tensor: the output and, when asked, the argmax offsets.
fn max_pool_forward(x: &FlexTensor, window: Window, keep_indices: bool) -> (FlexTensor, Vec<u32>) {
    let s = x.layout().shape().to_vec();
    let (h, w) = (s[2], s[3]);
    let (out, (oh, ow), indices) = pool::forward(&values(x), h, w, window, keep_indices);
    (tensor(out, vec![s[0], s[1], oh, ow]), indices)
}

/// The tensor's values, contiguous.
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().map(<[f32]>::to_vec).unwrap_or_default()),
    }
}

fn tensor(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

/// Gradients of a depthwise convolution for its input and its weight, in one pass over each
/// `(image, channel)` plane: every output gradient is scattered back to the input pixels it
/// read and multiplied with them for the filter.
///
/// # Shapes
/// `x` `[n, c, h, w]`, `weight` `[c, 1, kh, kw]`, `grad` `[n, c, oh, ow]`
fn depthwise_backward(
    x: &FlexTensor,
    weight: &FlexTensor,
    grad: &FlexTensor,
    options: &ConvOptions<2>,
) -> (FlexTensor, FlexTensor) {
    let xs = x.layout().shape().to_vec();
    let ws = weight.layout().shape().to_vec();
    let gs = grad.layout().shape().to_vec();
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (kh, kw) = (ws[2], ws[3]);
    let (oh, ow) = (gs[2], gs[3]);
    let (sh, sw) = (options.stride[0], options.stride[1]);
    let (pt, pl) = (options.padding[0].0, options.padding[1].0);
    let (xv, wv, gv) = (values(x), values(weight), values(grad));
    let mut dx = vec![0f32; n * c * h * w];
    let partial: Vec<Vec<f32>> = dx
        .par_chunks_mut(h * w)
        .enumerate()
        .map(|(plane, dx)| {
            let ch = plane % c;
            let x = &xv[plane * h * w..(plane + 1) * h * w];
            let g = &gv[plane * oh * ow..(plane + 1) * oh * ow];
            let filter = &wv[ch * kh * kw..(ch + 1) * kh * kw];
            let mut dw = vec![0f32; kh * kw];
            for i in 0..kh {
                for j in 0..kw {
                    // Output columns whose input column `o * sw + j - pl` lies inside the image.
                    let valid = conv::inside(j, pl, sw, w, ow);
                    let f = filter[i * kw + j];
                    let mut acc = 0f32;
                    for r in 0..oh {
                        let Some(ih) = (r * sh + i).checked_sub(pt).filter(|&v| v < h) else { continue };
                        let (grow, xrow) = (&g[r * ow..(r + 1) * ow], &x[ih * w..(ih + 1) * w]);
                        let drow = &mut dx[ih * w..(ih + 1) * w];
                        for (o, &gv) in grow.iter().enumerate().take(valid.end).skip(valid.start) {
                            let iw = o * sw + j - pl;
                            drow[iw] += gv * f;
                            acc += gv * xrow[iw];
                        }
                    }
                    dw[i * kw + j] = acc;
                }
            }
            dw
        })
        .collect();
    let mut dw = vec![0f32; c * kh * kw];
    for (plane, p) in partial.iter().enumerate() {
        let ch = plane % c;
        for (d, v) in dw[ch * kh * kw..(ch + 1) * kh * kw].iter_mut().zip(p) {
            *d += v;
        }
    }
    (tensor(dx, xs), tensor(dw, ws))
}

/// Per channel `(mean, biased variance)` of `x`, summed in f64 per `(image, channel)` plane.
pub(crate) fn channel_stats(x: &[f32], n: usize, c: usize, plane: usize) -> (Vec<f32>, Vec<f32>) {
    let sums: Vec<(f64, f64)> = x
        .par_chunks(plane.max(1))
        .map(|p| p.iter().fold((0f64, 0f64), |(s, q), &v| (s + f64::from(v), q + f64::from(v) * f64::from(v))))
        .collect();
    let count = (n * plane).max(1) as f64;
    let (mut mean, mut var) = (vec![0f32; c], vec![0f32; c]);
    for ch in 0..c {
        let (s, q) = (0..n).map(|i| sums[i * c + ch]).fold((0f64, 0f64), |a, b| (a.0 + b.0, a.1 + b.1));
        let m = s / count;
        mean[ch] = m as f32;
        var[ch] = (q / count - m * m).max(0.0) as f32;
    }
    (mean, var)
}

fn dims4(t: &FlexTensor) -> (usize, usize, usize) {
    let s = t.layout().shape().to_vec();
    let plane: usize = s[2..].iter().product();
    (s[0], s[1], plane)
}

/// Training batch norm in one pass for the statistics and one for the output, NCHW with no
/// transposes (burn's composed version swaps axes twice and sweeps the data several times).
fn batch_norm_forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let shape = x.layout().shape().to_vec();
    let (n, c, plane) = dims4(x);
    let (xv, gv, bv) = (values(x), values(gamma), values(beta));
    let (mean, var) = channel_stats(&xv, n, c, plane);
    let mut out = vec![0f32; xv.len()];
    out.par_chunks_mut(plane.max(1)).zip(xv.par_chunks(plane.max(1))).enumerate().for_each(|(p, (o, x))| {
        let ch = p % c;
        let a = gv[ch] / (f64::from(var[ch]) + epsilon).sqrt() as f32;
        let b = bv[ch] - a * mean[ch];
        for (o, x) in o.iter_mut().zip(x) {
            *o = a * x + b;
        }
    });
    (tensor(out, shape), tensor(mean, vec![c]), tensor(var, vec![c]))
}

/// Gradients of training batch norm for input, scale and shift: one pass for the two
/// per-channel sums, one for the input gradient.
fn batch_norm_backward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    mean: &FlexTensor,
    var: &FlexTensor,
    epsilon: f64,
    grad: &FlexTensor,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let shape = x.layout().shape().to_vec();
    let (n, c, plane) = dims4(x);
    let (xv, gav, mv, vv, dv) = (values(x), values(gamma), values(mean), values(var), values(grad));
    let inv: Vec<f32> = vv.iter().map(|&v| (1.0 / (f64::from(v) + epsilon).sqrt()) as f32).collect();
    // Per plane: sum of the gradient and of the gradient times the normalised input.
    let sums: Vec<(f64, f64)> = xv
        .par_chunks(plane.max(1))
        .zip(dv.par_chunks(plane.max(1)))
        .enumerate()
        .map(|(p, (x, d))| {
            let ch = p % c;
            let (m, s) = (mv[ch], inv[ch]);
            x.iter().zip(d).fold((0f64, 0f64), |(a, b), (&x, &d)| (a + f64::from(d), b + f64::from(d * (x - m) * s)))
        })
        .collect();
    let (mut dbeta, mut dgamma) = (vec![0f32; c], vec![0f32; c]);
    for ch in 0..c {
        let (a, b) = (0..n).map(|i| sums[i * c + ch]).fold((0f64, 0f64), |a, b| (a.0 + b.0, a.1 + b.1));
        (dbeta[ch], dgamma[ch]) = (a as f32, b as f32);
    }
    let count = (n * plane).max(1) as f32;
    let mut dx = vec![0f32; xv.len()];
    dx.par_chunks_mut(plane.max(1))
        .zip(xv.par_chunks(plane.max(1)).zip(dv.par_chunks(plane.max(1))))
        .enumerate()
        .for_each(|(p, (o, (x, d)))| {
            let ch = p % c;
            let (m, s) = (mv[ch], inv[ch]);
            let (mean_d, mean_dxhat) = (dbeta[ch] / count, dgamma[ch] / count);
            let k = gav[ch] * s;
            for ((o, &x), &d) in o.iter_mut().zip(x).zip(d) {
                *o = k * (d - mean_d - (x - m) * s * mean_dxhat);
            }
        });
    (tensor(dx, shape), tensor(dgamma, vec![c]), tensor(dbeta, vec![c]))
}

/// ReLU6's gradient from its output: it passes where the output is strictly inside (0, 6).
fn relu6_backward(y: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let (yv, gv) = (values(y), values(grad));
    let mut out = vec![0f32; gv.len()];
    out.par_chunks_mut(1 << 14).zip(gv.par_chunks(1 << 14)).zip(yv.par_chunks(1 << 14)).for_each(|((o, g), y)| {
        for ((o, g), y) in o.iter_mut().zip(g).zip(y) {
            *o = if *y > 0.0 && *y < 6.0 { *g } else { 0.0 };
        }
    });
    tensor(out, y.layout().shape().to_vec())
}

/// Whether `t` takes these kernels: f32 on the Flex device (with or without autodiff).
fn on_flex(t: &Tensor<4>) -> bool {
    matches!(t.device().inner().as_dispatch(), DispatchDevice::Flex(_)) && t.dtype() == DType::F32
}

/// Depthwise convolution (`groups` = channels, no bias, no dilation).
///
/// # Shapes
/// `x` `[n, c, h, w]`, `weight` `[c, 1, kh, kw]` -> `[n, c, oh, ow]`
pub fn depthwise_conv2d(x: Tensor<4>, weight: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
    if !on_flex(&x) || options.dilation != [1, 1] {
        return burn::tensor::module::conv2d(x, weight, None, options);
    }
    count(Kernel::Depthwise);
    Tensor::from_dispatch(<Dispatch as TrainKernels>::depthwise_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        options,
    ))
}

/// A convolution as burn's `conv2d`: dense ones (one group, no dilation) on Flex through
/// [`TrainKernels::conv2d_dense`], the bias added after; anything else through burn.
///
/// # Shapes
/// `x` `[n, c, h, w]`, `weight` `[co, c / groups, kh, kw]`, `bias` `[co]` -> `[n, co, oh, ow]`
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>, options: ConvOptions<2>) -> Tensor<4> {
    if !on_flex(&x) || Geometry::new(&x.dims(), &weight.dims(), &options).is_none() {
        return burn::tensor::module::conv2d(x, weight, bias, options);
    }
    let co = weight.dims()[0];
    count(Kernel::Conv);
    let y: Tensor<4> = Tensor::from_dispatch(<Dispatch as TrainKernels>::conv2d_dense(
        x.into_dispatch(),
        weight.into_dispatch(),
        options,
    ));
    match bias {
        Some(b) => y + b.reshape([1, co, 1, 1]),
        None => y,
    }
}

/// Batch norm as `bn.forward`: with batch statistics (updating the running ones as burn does)
/// when training on Flex, burn's own module otherwise.
///
/// # Shapes
/// `[n, c, h, w]` -> `[n, c, h, w]`
pub fn batch_norm(bn: &burn::nn::BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if !(on_flex(&x) && x.device().is_autodiff() && bn.training.is_enabled()) {
        return bn.forward(x);
    }
    count(Kernel::BatchNorm);
    let (out, mean, var) = <Dispatch as TrainKernels>::batch_norm_train(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
    );
    let (mean, var) = (Tensor::<1>::from_dispatch(mean), Tensor::<1>::from_dispatch(var));
    let device = mean.device();
    let m = bn.momentum;
    let running_mean =
        bn.running_mean.value_sync().to_device(&device).mul_scalar(1.0 - m).add(mean.detach().mul_scalar(m));
    let running_var =
        bn.running_var.value_sync().to_device(&device).mul_scalar(1.0 - m).add(var.detach().mul_scalar(m));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    Tensor::from_dispatch(out)
}

/// Max pooling (square window, symmetric padding, no dilation, floor output size) as burn's
/// `max_pool2d`.
///
/// # Shapes
/// `[n, c, h, w]` -> `[n, c, (h + 2 pad - kernel) / stride + 1, ...]`
pub fn max_pool2d(x: Tensor<4>, window: Window) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    // Planes over 4 Gi values cannot hold their argmax in u32; windows that do not fit are
    // burn's to report.
    if !on_flex(&x) || window.output(h).is_none() || window.output(w).is_none() || h * w > u32::MAX as usize {
        return burn::tensor::module::max_pool2d(x, window.options());
    }
    count(Kernel::MaxPool);
    Tensor::from_dispatch(<Dispatch as TrainKernels>::max_pool2d(x.into_dispatch(), window))
}

/// `min(max(x, 0), 6)`.
pub fn relu6(x: Tensor<4>) -> Tensor<4> {
    if !on_flex(&x) {
        return x.clamp(0.0, 6.0);
    }
    count(Kernel::Relu6);
    Tensor::from_dispatch(<Dispatch as TrainKernels>::relu6(x.into_dispatch()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn random(shape: [usize; 4], device: &Device, seed: u64) -> Tensor<4> {
        device.seed(seed);
        Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, 2.0), device)
    }

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// `f()`, checking that each of `kernels` ran in it (forward and backward): a wrapper that
    /// fell back to burn would compare burn with burn.
    fn ran<R>(kernels: &[Kernel], f: impl FnOnce() -> R) -> R {
        let before: Vec<u64> = kernels.iter().map(|&k| calls(k)).collect();
        let out = f();
        for (&k, b) in kernels.iter().zip(before) {
            assert!(calls(k) > b, "{k:?} did not run: the wrapper fell back to burn");
        }
        out
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// Against burn's composed ops on the same values: outputs and both gradients, for
    /// symmetric and TF-"SAME" (uneven) padding, strides 1 and 2, kernels 3 and 5.
    #[test]
    fn depthwise_gradients_equal_burns() {
        let device = Device::flex().autodiff();
        for (k, stride, padding, size) in [
            (3, 1, [(1, 1), (1, 1)], 9),
            (3, 2, [(0, 1), (0, 1)], 10),
            (5, 2, [(1, 2), (1, 2)], 11),
            (5, 1, [(2, 2), (2, 2)], 7),
        ] {
            let options = ConvOptions { stride: [stride; 2], padding, dilation: [1, 1], groups: 6 };
            let x0 = random([2, 6, size, size + 1], &device, 1);
            let w0 = random([6, 1, k, k], &device, 2);
            let out_shape = burn::tensor::module::conv2d(x0.clone(), w0.clone(), None, options.clone()).dims();
            let upstream = random(out_shape, &device, 3).detach();
            let run = |fast: bool| {
                let (x, w) = (x0.clone().detach().require_grad(), w0.clone().detach().require_grad());
                let y = if fast {
                    depthwise_conv2d(x.clone(), w.clone(), options.clone())
                } else {
                    burn::tensor::module::conv2d(x.clone(), w.clone(), None, options.clone())
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                (host(y), host(x.grad(&grads).unwrap()), host(w.grad(&grads).unwrap()))
            };
            let (fast, slow) = (ran(&[Kernel::Depthwise, Kernel::DepthwiseGrad], || run(true)), run(false));
            let scale = slow.2.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert!(max_diff(&fast.0, &slow.0) < 1e-5, "forward, k {k} stride {stride}");
            assert!(max_diff(&fast.1, &slow.1) < 1e-5, "input gradient, k {k} stride {stride}");
            assert!(max_diff(&fast.2, &slow.2) < 1e-5 * scale, "weight gradient, k {k} stride {stride}");
        }
    }

    /// Output, the three gradients and the running statistics after the step, against
    /// burn's `BatchNorm` module on the same values.
    #[test]
    fn batch_norm_equals_burns_module() {
        let device = Device::flex().autodiff();
        let x0 = random([3, 5, 6, 7], &device, 6) + 1.5;
        let upstream = random([3, 5, 6, 7], &device, 7).detach();
        // Drawn once: other tests share the device's generator, so both runs take these values.
        let gamma0: Tensor<1> = random([1, 1, 1, 5], &device, 9).reshape([5]).detach();
        let beta0: Tensor<1> = random([1, 1, 1, 5], &device, 10).reshape([5]).detach();
        let run = |fast: bool| {
            let mut bn = burn::nn::BatchNormConfig::new(5).with_epsilon(1e-3).init(&device);
            bn.gamma = burn::module::Param::from_tensor(gamma0.clone());
            bn.beta = burn::module::Param::from_tensor(beta0.clone());
            let x = x0.clone().detach().require_grad();
            let y = if fast { batch_norm(&bn, x.clone()) } else { bn.forward(x.clone()) };
            let grads = (y.clone() * upstream.clone()).sum().backward();
            let g = |p: &burn::module::Param<Tensor<1>>| host(p.val().grad(&grads).unwrap());
            (
                [host(y), host(x.grad(&grads).unwrap()), g(&bn.gamma), g(&bn.beta)],
                [host(bn.running_mean.value()), host(bn.running_var.value())],
            )
        };
        let (fast, slow) = (ran(&[Kernel::BatchNorm, Kernel::BatchNormGrad], || run(true)), run(false));
        for (what, (a, b)) in
            ["output", "input gradient", "gamma gradient", "beta gradient"].iter().zip(fast.0.iter().zip(&slow.0))
        {
            let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert!(max_diff(a, b) < 1e-5 * scale, "{what}: {}", max_diff(a, b));
        }
        assert!(
            max_diff(&fast.1[0], &slow.1[0]) < 1e-5 && max_diff(&fast.1[1], &slow.1[1]) < 1e-4,
            "running statistics"
        );
    }

    /// Output and both gradients against burn's `conv2d`: 3x3 with stride 1 and 2, TF-"SAME"
    /// (uneven) padding, the ResNet stem's 7x7/2, pointwise with and without stride, a bias;
    /// and a first layer, whose input needs no gradient. On 1 thread the images go one per
    /// thread, on 4 (more than the batch) each product is spread over the threads.
    #[test]
    fn conv_equals_burns() {
        for threads in [1, 4] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(conv_cases_equal_burns);
        }
    }

    fn conv_cases_equal_burns() {
        let device = Device::flex().autodiff();
        for (c, k, stride, padding, size, bias) in [
            (3, 3, 1, [(1, 1), (1, 1)], 9, false),
            (4, 3, 2, [(0, 1), (0, 1)], 10, true),
            (3, 7, 2, [(3, 3), (3, 3)], 11, false),
            (5, 1, 1, [(0, 0), (0, 0)], 6, false),
            (5, 1, 2, [(0, 0), (0, 0)], 7, false),
            (2, 3, 1, [(2, 0), (1, 2)], 5, false),
        ] {
            let options = ConvOptions { stride: [stride; 2], padding, dilation: [1, 1], groups: 1 };
            let x0 = random([2, c, size, size + 1], &device, 21);
            let w0 = random([6, c, k, k], &device, 22);
            let b0 = bias.then(|| random([1, 1, 1, 6], &device, 23).reshape([6]));
            let out_shape = burn::tensor::module::conv2d(x0.clone(), w0.clone(), b0.clone(), options.clone()).dims();
            let upstream = random(out_shape, &device, 24).detach();
            for input_grad in [true, false] {
                let run = |fast: bool| {
                    let x = if input_grad { x0.clone().detach().require_grad() } else { x0.clone().detach() };
                    let w = w0.clone().detach().require_grad();
                    let b = b0.clone().map(|b| b.detach().require_grad());
                    let y = if fast {
                        conv2d(x.clone(), w.clone(), b.clone(), options.clone())
                    } else {
                        burn::tensor::module::conv2d(x.clone(), w.clone(), b.clone(), options.clone())
                    };
                    let grads = (y.clone() * upstream.clone()).sum().backward();
                    let dx = x.grad(&grads).map(host);
                    let db = b.and_then(|b| b.grad(&grads)).map(host);
                    (y.dims(), host(y), dx, host(w.grad(&grads).unwrap()), db)
                };
                let (fast, slow) = (ran(&[Kernel::Conv, Kernel::ConvGrad], || run(true)), run(false));
                let case = format!("c {c} k {k} stride {stride} {padding:?}, input gradient {input_grad}");
                let close = |a: &[f32], b: &[f32], what: &str| {
                    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
                    assert!(max_diff(a, b) < 1e-5 * scale, "{what}, {case}: {}", max_diff(a, b));
                };
                assert_eq!(fast.0, slow.0, "shape, {case}");
                close(&fast.1, &slow.1, "forward");
                assert_eq!(fast.2.is_some(), input_grad, "input gradient only when asked, {case}");
                if let (Some(a), Some(b)) = (&fast.2, &slow.2) {
                    close(a, b, "input gradient");
                }
                close(&fast.3, &slow.3, "weight gradient");
                assert_eq!(fast.4.is_some(), bias);
                if let (Some(a), Some(b)) = (&fast.4, &slow.4) {
                    close(a, b, "bias gradient");
                }
            }
        }
    }

    /// Output and input gradient against burn's `max_pool2d`, for the small CNN's 2x2/2,
    /// ResNet's padded 3x3/2 and an overlapping 3x3/1, on odd sizes; ties (from ReLU zeros)
    /// must go to the same element.
    #[test]
    fn max_pool_equals_burns() {
        let device = Device::flex().autodiff();
        for (kernel, stride, pad) in [(2, 2, 0), (3, 2, 1), (3, 1, 0), (2, 1, 1)] {
            let x0 = burn::tensor::activation::relu(random([2, 3, 9, 10], &device, 11));
            let window = Window { kernel, stride, pad };
            let options = window.options();
            let out_shape = burn::tensor::module::max_pool2d(x0.clone(), options.clone()).dims();
            let upstream = random(out_shape, &device, 12).detach();
            let run = |fast: bool| {
                let x = x0.clone().detach().require_grad();
                let y = if fast {
                    max_pool2d(x.clone(), window)
                } else {
                    burn::tensor::module::max_pool2d(x.clone(), options.clone())
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                (y.dims(), host(y), host(x.grad(&grads).unwrap()))
            };
            let (fast, slow) = (ran(&[Kernel::MaxPool, Kernel::MaxPoolGrad], || run(true)), run(false));
            assert_eq!(fast.0, slow.0, "shape, {window:?}");
            assert_eq!(fast.1, slow.1, "output, {window:?}");
            assert!(max_diff(&fast.2, &slow.2) < 1e-6, "input gradient, {window:?}");
        }
    }

    #[test]
    fn max_pool_without_autodiff_and_nan() {
        let device = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(vec![1.0, f32::NAN, 3.0, 2.0, 5.0, 4.0], [1, 1, 2, 3]), &device);
        let y = host(max_pool2d(x, Window { kernel: 2, stride: 1, pad: 0 }));
        assert!(y[0].is_nan() && y[1].is_nan(), "NaN wins its windows: {y:?}");
        assert_eq!(Window { kernel: 3, stride: 2, pad: 0 }.output(2), None);
    }

    #[test]
    fn relu6_gradient_equals_clamps() {
        let device = Device::flex().autodiff();
        let x0 = random([2, 3, 8, 8], &device, 4) * 3.0;
        let upstream = random([2, 3, 8, 8], &device, 5).detach();
        let run = |fast: bool| {
            let x = x0.clone().detach().require_grad();
            let y = if fast { relu6(x.clone()) } else { x.clone().clamp(0.0, 6.0) };
            let grads = (y.clone() * upstream.clone()).sum().backward();
            (host(y), host(x.grad(&grads).unwrap()))
        };
        let (fast, slow) = (ran(&[Kernel::Relu6, Kernel::Relu6Grad], || run(true)), run(false));
        assert_eq!(fast.0, slow.0);
        assert!(max_diff(&fast.1, &slow.1) < 1e-6);
        assert!(fast.0.contains(&6.0) && fast.0.contains(&0.0), "both bounds are hit");
    }
}
