//! The data movement of a dense (one group, no dilation) convolution as one matrix product per
//! image over NCHW data: `im2col` lays each image's patches out as a `[c * kh * kw, oh * ow]`
//! matrix (so `weight [co, c * kh * kw]` times it is the output plane by plane, no transpose
//! after) and `col2im` adds such a matrix back onto the input's pixels (the input gradient).
//! One product over the whole batch (`[c * kh * kw, n * oh * ow]`, the weight packed once) was
//! tried: no faster on a ResNet-18 step (1.98 against 2.02 s, interleaved), as the two
//! transposes it needs cost what the packing saved.
//! burn-flex goes through NHWC copies, a 3-D index per element and, for the gradients, a
//! transposed convolution and a swapped-axes one: about 40% of a small-CNN epoch in `perf`.

use std::ops::Range;

use burn::tensor::ops::ConvOptions;

/// One dense convolution's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub stride: [usize; 2],
    /// Rows above and columns left; those below and right only shorten the output.
    pub pad: [usize; 2],
}

impl Geometry {
    /// From the input `[n, c, h, w]` and weight `[co, c, kh, kw]` shapes, `None` unless the
    /// convolution is dense, undilated and its window fits the padded input.
    pub fn new(x: &[usize], weight: &[usize], options: &ConvOptions<2>) -> Option<Geometry> {
        let ([n, c, h, w], [_, wc, kh, kw]) = (<[usize; 4]>::try_from(x).ok()?, <[usize; 4]>::try_from(weight).ok()?);
        if options.groups != 1 || options.dilation != [1, 1] || wc != c || options.stride.contains(&0) {
            return None;
        }
        let out = |input: usize, k: usize, (begin, end): (usize, usize), s: usize| {
            (input + begin + end).checked_sub(k).map(|span| span / s + 1).filter(|_| k > 0)
        };
        let oh = out(h, kh, options.padding[0], options.stride[0])?;
        let ow = out(w, kw, options.padding[1], options.stride[1])?;
        Some(Geometry {
            n,
            c,
            h,
            w,
            kh,
            kw,
            oh,
            ow,
            stride: options.stride,
            pad: [options.padding[0].0, options.padding[1].0],
        })
    }

    /// Rows of the patch matrix: `c * kh * kw`.
    pub fn patch(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions per image: `oh * ow`.
    pub fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// Whether the patch matrix is the image itself (1x1, stride 1, no padding).
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == [1, 1]
            && self.pad == [0, 0]
            && (self.oh, self.ow) == (self.h, self.w)
    }

    /// Patch row `row` as its input channel and window offset `(ch, i, j)`.
    fn tap(&self, row: usize) -> (usize, usize, usize) {
        (row / (self.kh * self.kw), row / self.kw % self.kh, row % self.kw)
    }

    /// For patch row `(ch, i, j)` and output row `r`: the input row read, the output columns
    /// inside the image and the input column of the first; `None` when all of it is padding.
    fn run(&self, i: usize, j: usize, r: usize) -> Option<(usize, Range<usize>, usize)> {
        let row = (r * self.stride[0] + i).checked_sub(self.pad[0]).filter(|&v| v < self.h)?;
        let cols = inside(j, self.pad[1], self.stride[1], self.w, self.ow);
        let first = (cols.start * self.stride[1] + j).checked_sub(self.pad[1])?;
        (!cols.is_empty()).then_some((row, cols, first))
    }
}

/// The outputs `o < outputs` whose input `o * stride + offset - pad` lies in `[0, input)`.
pub fn inside(offset: usize, pad: usize, stride: usize, input: usize, outputs: usize) -> Range<usize> {
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    let hi = if input + pad > offset { ((input + pad - offset - 1) / stride + 1).min(outputs) } else { 0 };
    lo..hi.max(lo)
}

/// One image's patch matrix `[c * kh * kw, oh * ow]` from its `[c, h, w]` pixels; padding
/// reads as zero.
pub fn im2col(x: &[f32], g: &Geometry) -> Vec<f32> {
    let (plane, s) = (g.h * g.w, g.positions());
    let mut cols = vec![0f32; g.patch() * s];
    for (row, dst) in cols.chunks_mut(s).enumerate() {
        let (ch, i, j) = g.tap(row);
        let x = &x[ch * plane..(ch + 1) * plane];
        for (r, dst) in dst.chunks_mut(g.ow).enumerate() {
            let Some((ih, cols, first)) = g.run(i, j, r) else { continue };
            let src = &x[ih * g.w..(ih + 1) * g.w];
            if g.stride[1] == 1 {
                dst[cols.clone()].copy_from_slice(&src[first..first + cols.len()]);
            } else {
                for (d, s) in dst[cols].iter_mut().zip(src[first..].iter().step_by(g.stride[1])) {
                    *d = *s;
                }
            }
        }
    }
    cols
}

/// The inverse scatter of [`im2col`]: every entry of one image's patch matrix added onto the
/// pixel of `x` (`[c, h, w]`) it came from.
pub fn col2im(cols: &[f32], g: &Geometry, x: &mut [f32]) {
    let (plane, s) = (g.h * g.w, g.positions());
    for (row, src) in cols.chunks(s).enumerate() {
        let (ch, i, j) = g.tap(row);
        let x = &mut x[ch * plane..(ch + 1) * plane];
        for (r, src) in src.chunks(g.ow).enumerate() {
            let Some((ih, cols, first)) = g.run(i, j, r) else { continue };
            let dst = &mut x[ih * g.w..(ih + 1) * g.w];
            if g.stride[1] == 1 {
                // A plain slice add, which vectorises; `step_by` does not.
                let dst = &mut dst[first..first + cols.len()];
                dst.iter_mut().zip(&src[cols]).for_each(|(d, s)| *d += *s);
            } else {
                for (d, s) in dst[first..].iter_mut().step_by(g.stride[1]).zip(&src[cols]) {
                    *d += *s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(h: usize, w: usize, k: usize, stride: usize, pad: (usize, usize)) -> Geometry {
        let options = ConvOptions { stride: [stride; 2], padding: [pad; 2], dilation: [1, 1], groups: 1 };
        Geometry::new(&[2, 3, h, w], &[4, 3, k, k], &options).unwrap_or_else(|| panic!("fits"))
    }

    /// `col2im` is `im2col`'s adjoint: <im2col(x), y> = <x, col2im(y)> for any x, y.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for (h, w, k, stride, pad) in
            [(7, 9, 3, 1, (1, 1)), (8, 7, 3, 2, (0, 1)), (9, 9, 7, 2, (3, 3)), (5, 6, 1, 2, (0, 0))]
        {
            let g = geometry(h, w, k, stride, pad);
            let x: Vec<f32> = (0..g.c * h * w).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
            let y: Vec<f32> = (0..g.patch() * g.positions()).map(|i| ((i * 104_729) % 11) as f32 - 5.0).collect();
            let lhs: f64 = im2col(&x, &g).iter().zip(&y).map(|(a, b)| f64::from(a * b)).sum();
            let mut back = vec![0f32; x.len()];
            col2im(&y, &g, &mut back);
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| f64::from(a * b)).sum();
            assert_eq!(lhs, rhs, "{g:?}");
        }
    }

    #[test]
    fn geometry_refuses_what_it_does_not_do() {
        let options = |groups, dilation| ConvOptions { stride: [1, 1], padding: [(1, 1); 2], dilation, groups };
        assert!(Geometry::new(&[1, 4, 5, 5], &[4, 2, 3, 3], &options(2, [1, 1])).is_none(), "groups");
        assert!(Geometry::new(&[1, 4, 5, 5], &[4, 4, 3, 3], &options(1, [2, 2])).is_none(), "dilation");
        assert!(Geometry::new(&[1, 4, 1, 1], &[4, 4, 5, 5], &options(1, [1, 1])).is_none(), "window larger than input");
        assert_eq!(geometry(28, 28, 3, 1, (1, 1)).positions(), 28 * 28);
        assert_eq!(inside(0, 1, 1, 4, 4), 1..4);
        assert_eq!(inside(2, 1, 1, 4, 4), 0..3);
    }
}
