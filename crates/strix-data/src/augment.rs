//! Turning a decoded image into a normalised CHW tensor: random resized crop, flip and colour
//! jitter for training; a centre crop for evaluation. Deterministic for a given generator.

use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Training-time augmentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Random resized crop: the crop covers this range of the image's area (1.0 = no crop).
    pub crop_scale: [f32; 2],
    /// Random aspect ratio range of that crop.
    pub crop_ratio: [f32; 2],
    /// Mirror left-right with probability 0.5 (turn off for digits and text).
    pub hflip: bool,
    /// Brightness, contrast and saturation each scaled by a factor in `[1-j, 1+j]`.
    pub color_jitter: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Augment { crop_scale: [0.35, 1.0], crop_ratio: [0.75, 1.333], hflip: true, color_jitter: 0.2 }
    }
}

impl Augment {
    /// No augmentation at all: train on the evaluation view.
    pub fn none() -> Augment {
        Augment { crop_scale: [1.0, 1.0], crop_ratio: [1.0, 1.0], hflip: false, color_jitter: 0.0 }
    }
}

/// Per-channel `(x - mean) / std` on 0..255 pixel values; what the model was trained with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Clone, Debug)]
pub enum View {
    Train(Augment),
    /// Centre crop of this fraction of the shorter side, resized to the input.
    Eval {
        crop: f32,
    },
}

/// The fraction of the shorter side an evaluation view keeps, for a configured `crop`.
pub fn eval_crop_fraction(crop: f32) -> f32 {
    crop.clamp(0.05, 1.0)
}

/// The whole path from a decoded image to the model's input tensor.
#[derive(Clone, Debug)]
pub struct Transform {
    pub size: usize,
    /// 1 (greyscale) or 3 (RGB).
    pub channels: usize,
    pub normalize: Normalize,
    pub view: View,
}

impl Transform {
    /// Floats per image: `channels * size * size`.
    pub fn len(&self) -> usize {
        self.channels * self.size * self.size
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the CHW tensor of `img` into `out` (`self.len()` floats).
    pub fn apply(&self, img: &DynamicImage, rng: &mut Rng, out: &mut [f32]) {
        let (w, h) = (img.width() as f32, img.height() as f32);
        let (x, y, cw, ch, flip, jitter) = match &self.view {
            View::Eval { crop } => {
                let side = w.min(h) * eval_crop_fraction(*crop);
                ((w - side) / 2.0, (h - side) / 2.0, side, side, false, None)
            }
            View::Train(a) => {
                let (cw, ch) = random_crop_size(a, w, h, rng);
                let x = rng.uniform(0.0, (w - cw).max(0.0) + f32::EPSILON).min(w - cw);
                let y = rng.uniform(0.0, (h - ch).max(0.0) + f32::EPSILON).min(h - ch);
                let flip = a.hflip && rng.unit() < 0.5;
                let j = a.color_jitter;
                let jitter = (j > 0.0).then(|| {
                    [rng.uniform(1.0 - j, 1.0 + j), rng.uniform(1.0 - j, 1.0 + j), rng.uniform(1.0 - j, 1.0 + j)]
                });
                (x, y, cw, ch, flip, jitter)
            }
        };
        let (x, y) = (x.round() as u32, y.round() as u32);
        let (cw, ch) = ((cw.round() as u32).max(1), (ch.round() as u32).max(1));
        let s = self.size as u32;
        let plane = self.size * self.size;
        if self.channels == 1 {
            let g = crop_resize_gray(&img.to_luma8(), x, y, cw, ch, s);
            let g = if flip { imageops::flip_horizontal(&g) } else { g };
            let (b, c) = jitter.map_or((1.0, 1.0), |j| (j[0], j[1]));
            let mean = g.as_raw().iter().map(|&v| f32::from(v)).sum::<f32>() / plane as f32;
            for (o, &v) in out[..plane].iter_mut().zip(g.as_raw()) {
                let v = ((f32::from(v) - mean) * c + mean) * b;
                *o = (v.clamp(0.0, 255.0) - self.normalize.mean[0]) / self.normalize.std[0];
            }
            return;
        }
        let rgb = match img {
            DynamicImage::ImageRgb8(i) => crop_resize_rgb(i, x, y, cw, ch, s),
            other => crop_resize_rgb(&other.to_rgb8(), x, y, cw, ch, s),
        };
        let rgb = if flip { imageops::flip_horizontal(&rgb) } else { rgb };
        let px = rgb.as_raw();
        let (b, c, sat) = jitter.map_or((1.0, 1.0, 1.0), |j| (j[0], j[1], j[2]));
        let mean = if c != 1.0 { px.chunks_exact(3).map(luma).sum::<f32>() / plane as f32 } else { 0.0 };
        for (i, p) in px.chunks_exact(3).enumerate() {
            let l = luma(p);
            for k in 0..3 {
                let mut v = f32::from(p[k]);
                if sat != 1.0 {
                    v = l + (v - l) * sat;
                }
                if c != 1.0 {
                    v = mean + (v - mean) * c;
                }
                v = (v * b).clamp(0.0, 255.0);
                out[k * plane + i] = (v - self.normalize.mean[k]) / self.normalize.std[k];
            }
        }
    }
}

fn luma(p: &[u8]) -> f32 {
    0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
}

fn random_crop_size(a: &Augment, w: f32, h: f32, rng: &mut Rng) -> (f32, f32) {
    let area = w * h;
    // As torchvision: try a few draws, then fall back to the whole image.
    for _ in 0..10 {
        let target = area * rng.uniform(a.crop_scale[0], a.crop_scale[1].max(a.crop_scale[0]));
        let (lo, hi) = (a.crop_ratio[0].ln(), a.crop_ratio[1].max(a.crop_ratio[0]).ln());
        let ratio = rng.uniform(lo, hi + f32::EPSILON).exp();
        let cw = (target * ratio).sqrt();
        let ch = (target / ratio).sqrt();
        if cw <= w && ch <= h {
            return (cw, ch);
        }
    }
    (w, h)
}

fn crop_resize_rgb(img: &RgbImage, x: u32, y: u32, w: u32, h: u32, s: u32) -> RgbImage {
    let view = imageops::crop_imm(img, x, y, w, h);
    if w == s && h == s {
        return view.to_image();
    }
    imageops::resize(&*view, s, s, FilterType::Triangle)
}

fn crop_resize_gray(img: &GrayImage, x: u32, y: u32, w: u32, h: u32, s: u32) -> GrayImage {
    let view = imageops::crop_imm(img, x, y, w, h);
    if w == s && h == s {
        return view.to_image();
    }
    imageops::resize(&*view, s, s, FilterType::Triangle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 100])))
    }

    fn t(view: View, channels: usize) -> Transform {
        Transform { size: 16, channels, normalize: Normalize { mean: [0.0; 3], std: [1.0; 3] }, view }
    }

    #[test]
    fn eval_view_is_a_centre_crop_and_normalises() {
        let mut out = vec![0f32; 3 * 256];
        let tr =
            Transform { normalize: Normalize { mean: [100.0; 3], std: [2.0; 3] }, ..t(View::Eval { crop: 1.0 }, 3) };
        tr.apply(&gradient(), &mut Rng::new(0), &mut out);
        // Blue is 100 everywhere: normalised to 0.
        assert!(out[512..].iter().all(|v| v.abs() < 1e-6));
        // Red rises left to right within the centre square.
        assert!(out[0] < out[15]);
    }

    #[test]
    fn train_view_deterministic_per_seed_and_varies() {
        let tr = t(View::Train(Augment::default()), 3);
        let run = |seed| {
            let mut out = vec![0f32; tr.len()];
            tr.apply(&gradient(), &mut Rng::new(seed), &mut out);
            out
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
        let none = t(View::Train(Augment::none()), 3);
        let ev = t(View::Eval { crop: 1.0 }, 3);
        let (mut a, mut b) = (vec![0f32; 768], vec![0f32; 768]);
        none.apply(&gradient(), &mut Rng::new(1), &mut a);
        ev.apply(&gradient(), &mut Rng::new(2), &mut b);
        let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(d < 30.0, "no-augment training view differs from eval by {d}");
    }

    #[test]
    fn grey_input_for_one_channel_models_and_same_size_is_untouched() {
        let g = DynamicImage::ImageLuma8(GrayImage::from_fn(16, 16, |x, _| image::Luma([x as u8])));
        let mut out = vec![0f32; 256];
        t(View::Eval { crop: 1.0 }, 1).apply(&g, &mut Rng::new(0), &mut out);
        assert_eq!(&out[..16], &(0..16).map(|v| v as f32).collect::<Vec<_>>()[..]);
    }
}
