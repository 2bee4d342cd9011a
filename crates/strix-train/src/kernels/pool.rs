//! Max pooling over NCHW planes with the argmax kept as a `u32` offset inside its plane, so
//! the backward pass is one scatter. burn-flex's own path is generic over 3-D windows and
//! recomputes the window bounds per output (a fifth of a small-CNN epoch in `perf`).

use rayon::prelude::*;

/// A square window: `kernel` x `kernel`, moved by `stride`, `pad` rows and columns of
/// nothing (never picked) on every side; floor for the output size, as burn and PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Window {
    /// The output extent for an input extent, `None` when the window does not fit once.
    pub fn output(&self, input: usize) -> Option<usize> {
        let padded = input + 2 * self.pad;
        (self.kernel > 0 && self.stride > 0 && padded >= self.kernel && self.pad < self.kernel)
            .then(|| (padded - self.kernel) / self.stride + 1)
    }

    /// The same window as burn's options (its fallback and the reference in tests).
    pub fn options(&self) -> burn::tensor::ops::MaxPoolOptions<2> {
        burn::tensor::ops::MaxPoolOptions {
            kernel_size: [self.kernel; 2],
            stride: [self.stride; 2],
            padding: [(self.pad, self.pad); 2],
            dilation: [1, 1],
            ceil_mode: false,
        }
    }

    /// The input range `[lo, hi)` that output position `o` reads (never empty while
    /// `pad < kernel`).
    fn span(&self, o: usize, input: usize) -> (usize, usize) {
        let start = o * self.stride;
        (start.saturating_sub(self.pad), (start + self.kernel - self.pad).min(input))
    }
}

/// Whether `v` takes over from the window's `best` so far: NaN wins its window (as in burn
/// and PyTorch); among equal values the first one stays.
#[inline]
fn beats(v: f32, best: f32) -> bool {
    v > best || (v.is_nan() && !best.is_nan())
}

/// The pooled planes, their size `(oh, ow)` and, when `keep_indices`, each maximum's offset
/// inside its input plane.
///
/// `x` holds whole `h` x `w` planes.
pub fn forward(
    x: &[f32],
    h: usize,
    w: usize,
    window: Window,
    keep_indices: bool,
) -> (Vec<f32>, (usize, usize), Vec<u32>) {
    let (Some(oh), Some(ow)) = (window.output(h), window.output(w)) else {
        return (Vec::new(), (0, 0), Vec::new());
    };
    let planes = x.len() / (h * w).max(1);
    let mut out = vec![0f32; planes * oh * ow];
    let mut idx = if keep_indices { vec![0u32; planes * oh * ow] } else { Vec::new() };
    let cols: Vec<(usize, usize)> = (0..ow).map(|q| window.span(q, w)).collect();
    let pool_plane = |p: usize, out: &mut [f32], mut idx: Option<&mut [u32]>| {
        let x = &x[p * h * w..(p + 1) * h * w];
        for r in 0..oh {
            let (r0, r1) = window.span(r, h);
            for (q, &(c0, c1)) in cols.iter().enumerate() {
                let (mut best, mut at) = (x[r0 * w + c0], r0 * w + c0);
                for i in r0..r1 {
                    for (j, &v) in x[i * w + c0..i * w + c1].iter().enumerate() {
                        if beats(v, best) {
                            (best, at) = (v, i * w + c0 + j);
                        }
                    }
                }
                out[r * ow + q] = best;
                if let Some(idx) = idx.as_deref_mut() {
                    idx[r * ow + q] = at as u32;
                }
            }
        }
    };
    let pairs = |p: usize, out: &mut [f32], idx: Option<&mut [u32]>| {
        pool_2x2(&x[p * h * w..(p + 1) * h * w], w, ow, out, idx);
    };
    // The common case, with no window bounds to work out: a third of the generic loop's time.
    let plane: &PlaneLoop = if window == (Window { kernel: 2, stride: 2, pad: 0 }) { &pairs } else { &pool_plane };
    let n = oh * ow;
    if keep_indices {
        out.par_chunks_mut(n).zip(idx.par_chunks_mut(n)).enumerate().for_each(|(p, (o, i))| plane(p, o, Some(i)));
    } else {
        out.par_chunks_mut(n).enumerate().for_each(|(p, o)| plane(p, o, None));
    }
    (out, (oh, ow), idx)
}

/// Pools plane `p` into its output (and argmax) slices.
type PlaneLoop<'a> = dyn Fn(usize, &mut [f32], Option<&mut [u32]>) + Sync + 'a;

/// One plane through a 2x2 window with stride 2 (`out` holds `oh` rows of `ow`).
fn pool_2x2(x: &[f32], w: usize, ow: usize, out: &mut [f32], mut idx: Option<&mut [u32]>) {
    for (r, o) in out.chunks_mut(ow).enumerate() {
        let top = 2 * r * w;
        let (a, b) = (&x[top..top + 2 * ow], &x[top + w..top + w + 2 * ow]);
        for (q, o) in o.iter_mut().enumerate() {
            let c = 2 * q;
            let (mut best, mut at) = (a[c], top + c);
            for (v, i) in [(a[c + 1], top + c + 1), (b[c], top + w + c), (b[c + 1], top + w + c + 1)] {
                if beats(v, best) {
                    (best, at) = (v, i);
                }
            }
            *o = best;
            if let Some(idx) = idx.as_deref_mut() {
                idx[r * ow + q] = at as u32;
            }
        }
    }
}

/// The input gradient: each output gradient added at its maximum's place. `grad` and
/// `indices` hold `out_plane` values per plane, the result `h` x `w`.
pub fn backward(grad: &[f32], indices: &[u32], out_plane: usize, h: usize, w: usize) -> Vec<f32> {
    let planes = grad.len().checked_div(out_plane).unwrap_or(0);
    let mut dx = vec![0f32; planes * h * w];
    if planes == 0 {
        return dx;
    }
    dx.par_chunks_mut(h * w).zip(grad.par_chunks(out_plane).zip(indices.par_chunks(out_plane))).for_each(
        |(dx, (g, i))| {
            for (&g, &i) in g.iter().zip(i) {
                dx[i as usize] += g;
            }
        },
    );
    dx
}
