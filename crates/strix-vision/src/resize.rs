//! Bilinear resampling with half-pixel centres, no antialiasing and edge clamping: the resize
//! that the reference outputs were made with (`src = (dst + 0.5) * in/out - 0.5`, clamped to
//! `[0, in-1]`; TF2 `resize(bilinear, antialias=False)`, cv2 `INTER_LINEAR` up to its rounding).
//!
//! Written by hand because no crate offers exactly this: `image` and `fast_image_resize` widen
//! the filter when downscaling (antialiasing), which moves results away from the reference.
//! Only the pixels of the requested window are computed, so resize-then-crop costs the crop.

/// For each output coordinate along one axis: the two source indices and the weight of the second.
struct Axis {
    i0: Vec<usize>,
    i1: Vec<usize>,
    w: Vec<f32>,
}

impl Axis {
    /// Sampling table for outputs `start..start+count` of a resize from `n_in` to `n_out`.
    fn new(n_in: usize, n_out: usize, start: usize, count: usize) -> Axis {
        let ratio = n_in as f64 / n_out as f64;
        let last = (n_in - 1) as f64;
        let mut axis =
            Axis { i0: Vec::with_capacity(count), i1: Vec::with_capacity(count), w: Vec::with_capacity(count) };
        for dst in start..start + count {
            let src = ((dst as f64 + 0.5) * ratio - 0.5).clamp(0.0, last);
            let i0 = src.floor() as usize;
            axis.i0.push(i0);
            axis.i1.push((i0 + 1).min(n_in - 1));
            axis.w.push((src - i0 as f64) as f32);
        }
        axis
    }
}

/// An RGB8 image borrowed as rows of packed pixels.
#[derive(Clone, Copy)]
pub(crate) struct RgbView<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
}

/// Resize `src` to `out_w` x `out_h` and hand each row of the window
/// `[x0, x0+win_w) x [y0, y0+win_h)` of the result to `emit(y, row)`, with `y` relative to the
/// window and `row` holding `win_w` interleaved RGB values in 0..=255 as f32.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resize_rows(
    src: RgbView<'_>,
    out_w: usize,
    out_h: usize,
    x0: usize,
    y0: usize,
    win_w: usize,
    win_h: usize,
    mut emit: impl FnMut(usize, &[f32]),
) {
    debug_assert!(src.data.len() >= src.width * src.height * 3);
    debug_assert!(x0 + win_w <= out_w && y0 + win_h <= out_h);
    let xs = Axis::new(src.width, out_w, x0, win_w);
    let ys = Axis::new(src.height, out_h, y0, win_h);
    // Byte offsets of the two source pixels of every output column.
    let offsets: Vec<(usize, usize)> = xs.i0.iter().zip(&xs.i1).map(|(&a, &b)| (a * 3, b * 3)).collect();
    let stride = src.width * 3;
    let horizontal = |row: usize, out: &mut [f32]| {
        let line = &src.data[row * stride..(row + 1) * stride];
        for ((px, &(a, b)), &w) in out.chunks_exact_mut(3).zip(&offsets).zip(&xs.w) {
            let (p, q) = (&line[a..a + 3], &line[b..b + 3]);
            for c in 0..3 {
                let (p, q) = (f32::from(p[c]), f32::from(q[c]));
                px[c] = p + (q - p) * w;
            }
        }
    };
    // Two horizontally resampled source rows, reused while consecutive output rows share them.
    let mut rows = [vec![0f32; win_w * 3], vec![0f32; win_w * 3]];
    let mut cached: [Option<usize>; 2] = [None, None];
    let mut blended = vec![0f32; win_w * 3];
    for y in 0..win_h {
        let (r0, r1, wy) = (ys.i0[y], ys.i1[y], ys.w[y]);
        if cached[0] != Some(r0) {
            // When upscaling, this line's top row is often the last line's bottom row.
            if cached[1] == Some(r0) {
                rows.swap(0, 1);
                cached.swap(0, 1);
            } else {
                horizontal(r0, &mut rows[0]);
                cached[0] = Some(r0);
            }
        }
        if cached[1] != Some(r1) {
            horizontal(r1, &mut rows[1]);
            cached[1] = Some(r1);
        }
        for ((o, &t), &b) in blended.iter_mut().zip(&rows[0]).zip(&rows[1]) {
            *o = t + (b - t) * wy;
        }
        emit(y, &blended);
    }
}

/// Per-output taps `(source index, weight)` along one axis for an area-averaging resize
/// (OpenCV's INTER_AREA when shrinking); when enlarging, bilinear with half-pixel centres.
fn area_taps(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|d| {
            if scale <= 1.0 {
                let s = ((d as f64 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f64);
                let i0 = s.floor() as usize;
                let w = (s - i0 as f64) as f32;
                let i1 = (i0 + 1).min(n_in - 1);
                return vec![(i0, 1.0 - w), (i1, w)];
            }
            let (start, end) = (d as f64 * scale, (d as f64 + 1.0) * scale);
            let mut taps = Vec::new();
            let mut i = start.floor() as usize;
            while (i as f64) < end && i < n_in {
                let cover = (end.min(i as f64 + 1.0) - start.max(i as f64)) / scale;
                if cover > 0.0 {
                    taps.push((i, cover as f32));
                }
                i += 1;
            }
            taps
        })
        .collect()
}

/// Area-average resize of an interleaved 3-channel f32 image (`w` x `h`) to `ow` x `oh`.
pub(crate) fn resize_area(src: &[f32], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    let xs = area_taps(w, ow);
    let ys = area_taps(h, oh);
    let mut rows = vec![0f32; h * ow * 3];
    for y in 0..h {
        let line = &src[y * w * 3..(y + 1) * w * 3];
        for (x, taps) in xs.iter().enumerate() {
            let mut acc = [0f32; 3];
            for &(i, wt) in taps {
                for c in 0..3 {
                    acc[c] += line[i * 3 + c] * wt;
                }
            }
            rows[(y * ow + x) * 3..(y * ow + x) * 3 + 3].copy_from_slice(&acc);
        }
    }
    let mut out = vec![0f32; oh * ow * 3];
    for (y, taps) in ys.iter().enumerate() {
        let dst = &mut out[y * ow * 3..(y + 1) * ow * 3];
        for &(i, wt) in taps {
            for (d, s) in dst.iter_mut().zip(&rows[i * ow * 3..(i + 1) * ow * 3]) {
                *d += s * wt;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference definition, straight from the fixture tools (float64, whole image).
    fn naive(src: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f64> {
        let axis = |n_in: usize, n_out: usize, d: usize| {
            let s = ((d as f64 + 0.5) * (n_in as f64 / n_out as f64) - 0.5).clamp(0.0, (n_in - 1) as f64);
            let i0 = s.floor() as usize;
            (i0, (i0 + 1).min(n_in - 1), s - i0 as f64)
        };
        let px = |x: usize, y: usize, c: usize| src[(y * w + x) * 3 + c] as f64;
        let mut out = Vec::with_capacity(ow * oh * 3);
        for y in 0..oh {
            let (y0, y1, wy) = axis(h, oh, y);
            for x in 0..ow {
                let (x0, x1, wx) = axis(w, ow, x);
                for c in 0..3 {
                    let top = px(x0, y0, c) * (1.0 - wx) + px(x1, y0, c) * wx;
                    let bot = px(x0, y1, c) * (1.0 - wx) + px(x1, y1, c) * wx;
                    out.push(top * (1.0 - wy) + bot * wy);
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn window(
        src: &[u8],
        w: usize,
        h: usize,
        ow: usize,
        oh: usize,
        x0: usize,
        y0: usize,
        ww: usize,
        wh: usize,
    ) -> Vec<f32> {
        let mut out = vec![f32::NAN; ww * wh * 3];
        resize_rows(RgbView { data: src, width: w, height: h }, ow, oh, x0, y0, ww, wh, |y, row| {
            out[y * ww * 3..(y + 1) * ww * 3].copy_from_slice(row);
        });
        out
    }

    #[test]
    fn area_resize_averages_blocks() {
        // 4x2 -> 2x1: each output is the mean of a 2x2 block.
        let src: Vec<f32> = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0].iter().flat_map(|&v| [v, v, v]).collect();
        let out = resize_area(&src, 4, 2, 2, 1);
        assert_eq!(out, vec![25.0, 25.0, 25.0, 45.0, 45.0, 45.0]);
        // 3 -> 2 along x: weights 2/3 + 1/3.
        let src: Vec<f32> = [0.0, 3.0, 6.0].iter().flat_map(|&v| [v, v, v]).collect();
        let out = resize_area(&src, 3, 1, 2, 1);
        assert!((out[0] - 1.0).abs() < 1e-5 && (out[3] - 5.0).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn upscale_matches_tf_half_pixel_example() {
        // 2x1 -> 4x1: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
        let src = [0u8, 0, 0, 100, 100, 100];
        let out = window(&src, 2, 1, 4, 1, 0, 0, 4, 1);
        let red: Vec<f32> = out.chunks(3).map(|p| p[0]).collect();
        assert_eq!(red, vec![0.0, 25.0, 75.0, 100.0]);
    }

    proptest! {
        #[test]
        fn window_equals_naive_full_resize(
            w in 1usize..40, h in 1usize..40, ow in 1usize..50, oh in 1usize..50,
            seed in any::<u64>(), fx in 0.0f64..1.0, fy in 0.0f64..1.0,
        ) {
            let mut state = seed;
            let src: Vec<u8> = (0..w * h * 3).map(|_| { state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (state >> 56) as u8 }).collect();
            let full = naive(&src, w, h, ow, oh);
            let x0 = (fx * ow as f64) as usize % ow;
            let y0 = (fy * oh as f64) as usize % oh;
            let (ww, wh) = (ow - x0, oh - y0);
            let got = window(&src, w, h, ow, oh, x0, y0, ww, wh);
            for y in 0..wh {
                for x in 0..ww {
                    for c in 0..3 {
                        let want = full[((y + y0) * ow + x + x0) * 3 + c];
                        let have = got[(y * ww + x) * 3 + c] as f64;
                        prop_assert!((want - have).abs() < 1e-3, "({x},{y},{c}) want {want} have {have}");
                    }
                }
            }
        }
    }
}
