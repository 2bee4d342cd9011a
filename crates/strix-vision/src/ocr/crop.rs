//! Cutting a (possibly rotated) text box out of an image, straightened.

use image::RgbImage;

use super::geometry::Pt;

/// The quad `[tl, tr, br, bl]` warped to an upright rectangle (PaddleOCR's
/// `get_rotate_crop_image`: OpenCV's bicubic warp with replicated edges), and a crop taller
/// than 1.5x its width turned a quarter counter-clockwise, as vertical text would be.
pub(crate) fn straighten(img: &RgbImage, quad: &[Pt; 4]) -> RgbImage {
    let dist = |a: Pt, b: Pt| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    let w = dist(quad[0], quad[1]).max(dist(quad[2], quad[3])) as u32;
    let h = dist(quad[0], quad[3]).max(dist(quad[1], quad[2])) as u32;
    let (w, h) = (w.max(1), h.max(1));
    let target = [[0.0, 0.0], [w as f64, 0.0], [w as f64, h as f64], [0.0, h as f64]];
    let hm = homography(&target, quad);
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let src = img.as_raw();
    let px = |x: i64, y: i64, c: usize| src[((y.clamp(0, ih - 1) * iw + x.clamp(0, iw - 1)) * 3) as usize + c] as f64;
    let out = RgbImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as f64, y as f64);
        let d = hm[6] * x + hm[7] * y + 1.0;
        let sx = (hm[0] * x + hm[1] * y + hm[2]) / d;
        let sy = (hm[3] * x + hm[4] * y + hm[5]) / d;
        let (x0, y0) = (sx.floor() as i64, sy.floor() as i64);
        let (wx, wy) = (cubic_weights(sx - x0 as f64), cubic_weights(sy - y0 as f64));
        let mut rgb = [0u8; 3];
        for (c, v) in rgb.iter_mut().enumerate() {
            let mut acc = 0.0;
            for (j, wyj) in wy.iter().enumerate() {
                for (i, wxi) in wx.iter().enumerate() {
                    acc += wyj * wxi * px(x0 - 1 + i as i64, y0 - 1 + j as i64, c);
                }
            }
            *v = acc.round().clamp(0.0, 255.0) as u8;
        }
        image::Rgb(rgb)
    });
    if h as f64 / w as f64 >= 1.5 { image::imageops::rotate270(&out) } else { out }
}

/// OpenCV's bicubic kernel (a = -0.75) for the 4 taps around a fractional offset `t`.
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// The projective map sending `from[i]` to `to[i]`, as `[a, b, c, d, e, f, g, h]` with
/// `x' = (a x + b y + c) / (g x + h y + 1)`, `y' = (d x + e y + f) / (g x + h y + 1)`.
pub(crate) fn homography(from: &[Pt; 4], to: &[Pt; 4]) -> [f64; 8] {
    let mut m = [[0f64; 9]; 8];
    for i in 0..4 {
        let ([x, y], [u, v]) = (from[i], to[i]);
        m[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
        m[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..8 {
        let pivot = (col..8).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs())).unwrap_or(col);
        m.swap(col, pivot);
        let p = m[col][col];
        if p.abs() < 1e-12 {
            continue;
        }
        for v in &mut m[col][col..] {
            *v /= p;
        }
        let pivot_row = m[col];
        for (row, r) in m.iter_mut().enumerate() {
            if row != col {
                let f = r[col];
                for (v, pv) in r[col..].iter_mut().zip(&pivot_row[col..]) {
                    *v -= f * pv;
                }
            }
        }
    }
    std::array::from_fn(|i| m[i][8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homography_maps_the_corners() {
        let from = [[0.0, 0.0], [10.0, 0.0], [10.0, 5.0], [0.0, 5.0]];
        let to = [[3.0, 4.0], [23.0, 6.0], [22.0, 16.0], [2.0, 14.0]];
        let h = homography(&from, &to);
        for (f, t) in from.iter().zip(&to) {
            let d = h[6] * f[0] + h[7] * f[1] + 1.0;
            let x = (h[0] * f[0] + h[1] * f[1] + h[2]) / d;
            let y = (h[3] * f[0] + h[4] * f[1] + h[5]) / d;
            assert!((x - t[0]).abs() < 1e-9 && (y - t[1]).abs() < 1e-9);
        }
    }

    #[test]
    fn cubic_weights_sum_to_one_and_interpolate() {
        let w = cubic_weights(0.0);
        assert_eq!(w, [0.0, 1.0, 0.0, 0.0]);
        let w = cubic_weights(0.3);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn an_upright_box_is_cut_out_as_is() {
        let img = RgbImage::from_fn(20, 10, |x, y| image::Rgb([x as u8 * 10, y as u8 * 10, 0]));
        let crop = straighten(&img, &[[5.0, 2.0], [15.0, 2.0], [15.0, 6.0], [5.0, 6.0]]);
        assert_eq!(crop.dimensions(), (10, 4));
        assert_eq!(crop.get_pixel(0, 0).0, [50, 20, 0]);
        assert_eq!(crop.get_pixel(9, 3).0, [140, 50, 0]);
    }
}
