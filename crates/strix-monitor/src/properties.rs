//! What an image looks like, in numbers a drift test can compare: brightness, contrast,
//! sharpness, colourfulness and size.

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Longest side the pixel properties are measured at: the same scale for every image (a
/// sharpness means little across sizes) and a bounded cost per answer.
pub const MEASURE_SIDE: u32 = 512;

/// One image's properties.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageProperties {
    /// Mean luma (BT.601), 0-255.
    pub brightness: f64,
    /// Standard deviation of luma (RMS contrast).
    pub contrast: f64,
    /// Variance of the luma's Laplacian (OpenCV's `Laplacian(gray).var()`).
    pub sharpness: f64,
    /// Hasler and Süsstrunk's colourfulness (0 for grey).
    pub colourfulness: f64,
    pub width: f64,
    pub height: f64,
    pub aspect_ratio: f64,
}

/// The numeric properties by name, in a fixed order: what baselines and windows hold.
pub const NAMES: [&str; 7] =
    ["brightness", "contrast", "sharpness", "colourfulness", "width", "height", "aspect_ratio"];

impl ImageProperties {
    /// Measure `img` (its pixel properties on it fitted in [`MEASURE_SIDE`]).
    pub fn of(img: &RgbImage) -> ImageProperties {
        let (w, h) = img.dimensions();
        let small;
        let img = if w.max(h) > MEASURE_SIDE {
            let k = f64::from(MEASURE_SIDE) / f64::from(w.max(h));
            let (sw, sh) = (((f64::from(w) * k).round() as u32).max(1), ((f64::from(h) * k).round() as u32).max(1));
            small = image::imageops::resize(img, sw, sh, image::imageops::FilterType::Triangle);
            &small
        } else {
            img
        };
        let luma = luma(img);
        let (mean, sd) = mean_sd(luma.iter().copied());
        ImageProperties {
            brightness: mean,
            contrast: sd,
            sharpness: laplacian_variance(&luma, img.width() as usize, img.height() as usize),
            colourfulness: colourfulness(img),
            width: f64::from(w),
            height: f64::from(h),
            aspect_ratio: f64::from(w) / f64::from(h.max(1)),
        }
    }

    /// The values in [`NAMES`]' order.
    pub fn values(&self) -> [f64; 7] {
        [self.brightness, self.contrast, self.sharpness, self.colourfulness, self.width, self.height, self.aspect_ratio]
    }
}

fn luma(img: &RgbImage) -> Vec<f64> {
    img.pixels().map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])).collect()
}

fn mean_sd(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let (mut n, mut sum) = (0usize, 0.0);
    for v in values.clone() {
        n += 1;
        sum += v;
    }
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = sum / n as f64;
    let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
    (mean, var.sqrt())
}

/// Variance of the 4-neighbour Laplacian, with OpenCV's default border (reflect 101: the row
/// beyond the edge is the one inside it).
fn laplacian_variance(luma: &[f64], w: usize, h: usize) -> f64 {
    let reflect = |i: isize, n: usize| -> usize {
        if n == 1 {
            0
        } else if i < 0 {
            (-i) as usize
        } else if i as usize >= n {
            2 * (n - 1) - i as usize
        } else {
            i as usize
        }
    };
    let at = |x: isize, y: isize| luma[reflect(y, h) * w + reflect(x, w)];
    let lap = (0..h as isize)
        .flat_map(|y| (0..w as isize).map(move |x| (x, y)))
        .map(|(x, y)| at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y));
    mean_sd(lap).1.powi(2)
}

/// Hasler and Süsstrunk (2003): rg = R - G, yb = (R + G) / 2 - B; sd(rg, yb) + 0.3 mean(rg, yb).
fn colourfulness(img: &RgbImage) -> f64 {
    let rg = img.pixels().map(|p| f64::from(p[0]) - f64::from(p[1]));
    let yb = img.pixels().map(|p| 0.5 * (f64::from(p[0]) + f64::from(p[1])) - f64::from(p[2]));
    let ((m1, s1), (m2, s2)) = (mean_sd(rg), mean_sd(yb));
    (s1 * s1 + s2 * s2).sqrt() + 0.3 * (m1 * m1 + m2 * m2).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_is_flat_and_colourless() {
        let grey = RgbImage::from_pixel(20, 10, image::Rgb([100, 100, 100]));
        let p = ImageProperties::of(&grey);
        assert!((p.brightness - 100.0).abs() < 1e-9);
        assert_eq!((p.contrast, p.sharpness, p.colourfulness), (0.0, 0.0, 0.0));
        assert_eq!((p.width, p.height, p.aspect_ratio), (20.0, 10.0, 2.0));
    }

    #[test]
    fn a_checkerboard_is_sharp_and_darkening_lowers_brightness_and_contrast() {
        let board = RgbImage::from_fn(16, 16, |x, y| {
            if (x + y) % 2 == 0 { image::Rgb([200, 200, 200]) } else { image::Rgb([40, 40, 40]) }
        });
        let dark = RgbImage::from_fn(16, 16, |x, y| image::Rgb(board.get_pixel(x, y).0.map(|v| v / 2)));
        let (a, b) = (ImageProperties::of(&board), ImageProperties::of(&dark));
        assert!(a.sharpness > 1000.0 && b.sharpness < a.sharpness);
        assert!(b.brightness < a.brightness && b.contrast < a.contrast);
        let red = ImageProperties::of(&RgbImage::from_pixel(4, 4, image::Rgb([255, 0, 0])));
        assert!((red.colourfulness - 0.3 * (255.0f64.powi(2) + 127.5f64.powi(2)).sqrt()).abs() < 1e-9);
    }
}
