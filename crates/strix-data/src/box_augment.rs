//! Augmentation for detection: the image is scaled, placed (translated, cropped by the output
//! frame) and maybe mirrored into a fixed-size canvas, and every box goes through the same
//! mapping, so boxes follow the pixels exactly. Boxes left with too little of their area inside
//! the canvas are dropped; the rest are clipped to it. Colour jitter changes pixels, never
//! geometry.
//!
//! The mapping is one affine transform: a source pixel centre `(x, y)` lands at
//! `(s * x + tx, s * y + ty)` (then `W - u` when mirrored), and output pixels are sampled
//! bilinearly from the inverse, with half-pixel centres, so a box edge at `x` moves to
//! `s * x + tx` exactly.

use image::{Rgb, RgbImage};

use crate::Rng;
use crate::detection::DetBox;

/// How much to vary each image (all ranges inclusive).
#[derive(Clone, Debug, PartialEq)]
pub struct BoxAugment {
    /// Output size (width, height).
    pub size: (u32, u32),
    /// Scale relative to fitting the image inside the canvas (1 = letterboxed fit).
    pub scale: (f32, f32),
    /// Largest shift of the placed image, as a fraction of the canvas size.
    pub translate: f32,
    /// Chance of mirroring left-right.
    pub flip: f32,
    /// Largest relative change of brightness, contrast and saturation.
    pub jitter: f32,
    /// A box keeps at least this share of its area inside the canvas, or is dropped.
    pub min_visible: f32,
    /// Canvas colour where no image lands.
    pub fill: [u8; 3],
    /// Fit by stretching each axis to the canvas (the aspect ratio changes) instead of
    /// letterboxing.
    pub stretch: bool,
}

impl BoxAugment {
    /// No change beyond the letterboxed fit into `size` (the evaluation view).
    pub fn fit(size: (u32, u32)) -> BoxAugment {
        BoxAugment {
            size,
            scale: (1.0, 1.0),
            translate: 0.0,
            flip: 0.0,
            jitter: 0.0,
            min_visible: 0.0,
            fill: [114; 3],
            stretch: false,
        }
    }
}

/// Where the image went: `output = (sx * x + tx, sy * y + ty)`, then mirrored when `flip`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    /// `[sx, sy]`: equal unless stretched.
    pub scale: [f32; 2],
    pub tx: f32,
    pub ty: f32,
    pub flip: bool,
    pub width: u32,
}

impl Placement {
    /// An image x coordinate (a box edge) in the canvas.
    pub fn x(&self, x: f32) -> f32 {
        let u = self.scale[0] * x + self.tx;
        if self.flip { self.width as f32 - u } else { u }
    }

    pub fn y(&self, y: f32) -> f32 {
        self.scale[1] * y + self.ty
    }

    /// A box (`[x, y, w, h]`) in the canvas, before clipping.
    pub fn bbox(&self, b: [f32; 4]) -> [f32; 4] {
        let (x1, x2) = (self.x(b[0]), self.x(b[0] + b[2]));
        let (x1, x2) = (x1.min(x2), x1.max(x2));
        [x1, self.y(b[1]), x2 - x1, self.scale[1] * b[3]]
    }
}

/// An augmented image, its boxes and how it was placed.
#[derive(Clone, Debug)]
pub struct Placed {
    pub image: RgbImage,
    pub boxes: Vec<DetBox>,
    pub placement: Placement,
}

impl BoxAugment {
    /// Draw this image's transform from `rng`, and apply it to pixels and boxes.
    pub fn apply(&self, img: &RgbImage, boxes: &[DetBox], rng: &mut Rng) -> Placed {
        let (w, h) = (self.size.0 as f32, self.size.1 as f32);
        let (iw, ih) = (img.width().max(1) as f32, img.height().max(1) as f32);
        let fit = if self.stretch { [w / iw, h / ih] } else { [(w / iw).min(h / ih); 2] };
        let k = rng.uniform(self.scale.0, self.scale.1);
        let scale = [fit[0] * k, fit[1] * k];
        // Centred, then shifted.
        let tx = (w - scale[0] * iw) / 2.0 + rng.uniform(-self.translate, self.translate) * w;
        let ty = (h - scale[1] * ih) / 2.0 + rng.uniform(-self.translate, self.translate) * h;
        let flip = rng.unit() < self.flip;
        let placement = Placement { scale, tx, ty, flip, width: self.size.0 };
        let mut image = warp(img, &placement, self.size, self.fill);
        if self.jitter > 0.0 {
            let j = |rng: &mut Rng| 1.0 + rng.uniform(-self.jitter, self.jitter);
            let (b, c, s) = (j(rng), j(rng), j(rng));
            jitter(&mut image, b, c, s);
        }
        let boxes = boxes.iter().filter_map(|b| self.place_box(b, &placement)).collect();
        Placed { image, boxes, placement }
    }

    /// A box in the canvas, clipped; `None` when too little of it is left.
    fn place_box(&self, b: &DetBox, p: &Placement) -> Option<DetBox> {
        let [x, y, bw, bh] = p.bbox(b.bbox);
        let (w, h) = (self.size.0 as f32, self.size.1 as f32);
        let (x1, y1) = (x.clamp(0.0, w), y.clamp(0.0, h));
        let (x2, y2) = ((x + bw).clamp(0.0, w), (y + bh).clamp(0.0, h));
        let (cw, ch) = (x2 - x1, y2 - y1);
        let area = bw * bh;
        if cw <= 0.0 || ch <= 0.0 || area <= 0.0 || cw * ch < self.min_visible * area {
            return None;
        }
        Some(DetBox { class: b.class, bbox: [x1, y1, cw, ch], iscrowd: b.iscrowd })
    }
}

/// The canvas: each output pixel centre mapped back into the image and sampled bilinearly
/// (edges clamped inside the image; outside it, `fill`).
fn warp(img: &RgbImage, p: &Placement, (w, h): (u32, u32), fill: [u8; 3]) -> RgbImage {
    let (iw, ih) = (img.width() as f32, img.height() as f32);
    let mut out = RgbImage::from_pixel(w, h, Rgb(fill));
    for v in 0..h {
        let sy = (v as f32 + 0.5 - p.ty) / p.scale[1];
        if sy < 0.0 || sy >= ih {
            continue;
        }
        for u in 0..w {
            let cu = u as f32 + 0.5;
            let cu = if p.flip { w as f32 - cu } else { cu };
            let sx = (cu - p.tx) / p.scale[0];
            if sx < 0.0 || sx >= iw {
                continue;
            }
            out.put_pixel(u, v, Rgb(bilinear(img, sx - 0.5, sy - 0.5)));
        }
    }
    out
}

fn bilinear(img: &RgbImage, x: f32, y: f32) -> [u8; 3] {
    let (mx, my) = (img.width() as i64 - 1, img.height() as i64 - 1);
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |xi: i64, yi: i64| img.get_pixel(xi.clamp(0, mx) as u32, yi.clamp(0, my) as u32).0;
    let (x0, y0) = (x0 as i64, y0 as i64);
    let (a, b, c, d) = (at(x0, y0), at(x0 + 1, y0), at(x0, y0 + 1), at(x0 + 1, y0 + 1));
    let mut out = [0u8; 3];
    for k in 0..3 {
        let top = f32::from(a[k]) * (1.0 - fx) + f32::from(b[k]) * fx;
        let bottom = f32::from(c[k]) * (1.0 - fx) + f32::from(d[k]) * fx;
        out[k] = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// Brightness, contrast (around the mean grey) and saturation (around each pixel's grey).
fn jitter(img: &mut RgbImage, brightness: f32, contrast: f32, saturation: f32) {
    let grey = |p: &[u8; 3]| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
    let n = (img.width() * img.height()).max(1) as f32;
    let mean = img.pixels().map(|p| grey(&p.0)).sum::<f32>() / n;
    for p in img.pixels_mut() {
        let g = grey(&p.0);
        for k in 0..3 {
            let v = f32::from(p.0[k]);
            let v = g + (v - g) * saturation;
            let v = mean + (v - mean) * contrast;
            p.0[k] = (v * brightness).round().clamp(0.0, 255.0) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rectangles of distinct colours on grey, with their exact boxes.
    fn scene(rng: &mut Rng) -> (RgbImage, Vec<DetBox>, Vec<[u8; 3]>) {
        let (w, h) = (40 + rng.below(160) as u32, 40 + rng.below(160) as u32);
        let mut img = RgbImage::from_pixel(w, h, Rgb([128, 128, 128]));
        let colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255]];
        let mut boxes = Vec::new();
        for (class, colour) in colours.iter().enumerate() {
            let (bw, bh) = (8 + rng.below(w as usize / 3) as u32, 8 + rng.below(h as usize / 3) as u32);
            let (x, y) = (rng.below((w - bw) as usize) as u32, rng.below((h - bh) as usize) as u32);
            for yy in y..y + bh {
                for xx in x..x + bw {
                    img.put_pixel(xx, yy, Rgb(*colour));
                }
            }
            boxes.push(DetBox { class, bbox: [x as f32, y as f32, bw as f32, bh as f32], iscrowd: false });
        }
        (img, boxes, colours.to_vec())
    }

    /// Boxes follow the pixels: well inside each placed box the canvas has the rectangle's
    /// colour, and just outside its edges (where the canvas is) it has not. Rectangles may
    /// overlap, so a later one may cover an earlier one's inside: only the last one drawn
    /// (blue) is checked for colour inside.
    #[test]
    fn boxes_follow_the_pixels_under_random_scale_stretch_shift_crop_and_flip() {
        let base = BoxAugment { scale: (0.5, 1.6), translate: 0.3, flip: 0.5, ..BoxAugment::fit((96, 80)) };
        let mut checked = 0;
        for seed in 0..300 {
            // Every other image stretched to the canvas instead of letterboxed.
            let aug = BoxAugment { stretch: seed % 2 == 1, ..base.clone() };
            let mut rng = Rng::new(seed);
            let (img, boxes, colours) = scene(&mut rng);
            let placed = aug.apply(&img, &boxes, &mut rng);
            let p = placed.placement;
            for b in &placed.boxes {
                let [x, y, w, h] = b.bbox;
                assert!(x >= 0.0 && y >= 0.0 && x + w <= 96.0 + 1e-3 && y + h <= 80.0 + 1e-3, "{b:?}");
                // The unclipped box, from the mapping, matches the clipped one where inside.
                let full = p.bbox(boxes[b.class].bbox);
                assert!((full[0].max(0.0) - x).abs() < 1e-3 && (full[1].max(0.0) - y).abs() < 1e-3, "{full:?} {b:?}");
                if b.class != 2 || w < 6.0 || h < 6.0 {
                    continue;
                }
                let at = |u: f32, v: f32| placed.image.get_pixel(u as u32, v as u32).0;
                // Two pixels in from every edge: the colour.
                for (u, v) in [(x + 2.0, y + 2.0), (x + w - 2.5, y + h - 2.5), (x + w / 2.0, y + h / 2.0)] {
                    assert_eq!(at(u, v), colours[2], "seed {seed}: inside {b:?} at ({u}, {v})");
                }
                // Two pixels out from an edge that lies inside the canvas: not the colour.
                if x >= 3.0 && full[0] >= 0.0 {
                    assert_ne!(at(x - 2.0, y + h / 2.0), colours[2], "seed {seed}: left of {b:?}");
                }
                if y + h + 3.0 <= 80.0 && full[1] + full[3] <= 80.0 {
                    assert_ne!(at(x + w / 2.0, y + h + 2.0), colours[2], "seed {seed}: below {b:?}");
                }
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} boxes checked");
    }

    #[test]
    fn boxes_pushed_out_of_the_canvas_are_dropped_and_the_rest_clipped() {
        let b = |x: f32, w: f32| DetBox { class: 0, bbox: [x, 10.0, w, 10.0], iscrowd: false };
        let aug = BoxAugment { min_visible: 0.5, ..BoxAugment::fit((100, 100)) };
        let p = Placement { scale: [1.0; 2], tx: -50.0, ty: 0.0, flip: false, width: 100 };
        // Wholly outside, mostly outside, half inside (kept, clipped), inside.
        assert_eq!(aug.place_box(&b(0.0, 20.0), &p), None);
        assert_eq!(aug.place_box(&b(35.0, 20.0), &p), None);
        assert_eq!(aug.place_box(&b(40.0, 20.0), &Placement { tx: -45.0, ..p }).unwrap().bbox, [0.0, 10.0, 15.0, 10.0]);
        assert_eq!(aug.place_box(&b(60.0, 20.0), &p).unwrap().bbox, [10.0, 10.0, 20.0, 10.0]);
        // Mirrored: x -> W - x, edges swap.
        let m = Placement { flip: true, tx: 0.0, ..p };
        assert_eq!(m.bbox([10.0, 0.0, 20.0, 5.0]), [70.0, 0.0, 20.0, 5.0]);
    }

    #[test]
    fn the_fit_view_letterboxes_without_moving_boxes_off_their_pixels() {
        let mut rng = Rng::new(7);
        let (img, boxes, _) = scene(&mut rng);
        let placed = BoxAugment::fit((64, 64)).apply(&img, &boxes, &mut rng);
        assert_eq!(placed.boxes.len(), boxes.len());
        let s = placed.placement.scale;
        let want = 64.0 / img.width().max(img.height()) as f32;
        assert!((s[0] - want).abs() < 1e-6 && s[0] == s[1], "{s:?}");
        assert!(!placed.placement.flip);
        // Stretched: each axis fills the canvas.
        let stretched = BoxAugment { stretch: true, ..BoxAugment::fit((64, 32)) }.apply(&img, &boxes, &mut rng);
        let [sx, sy] = stretched.placement.scale;
        assert!((sx - 64.0 / img.width() as f32).abs() < 1e-6 && (sy - 32.0 / img.height() as f32).abs() < 1e-6);
    }

    #[test]
    fn colour_jitter_changes_pixels_not_geometry() {
        let mut rng = Rng::new(3);
        let (img, boxes, _) = scene(&mut rng);
        let plain = BoxAugment::fit((80, 80));
        let jittered = BoxAugment { jitter: 0.4, ..plain.clone() };
        let (a, b) = (plain.apply(&img, &boxes, &mut Rng::new(9)), jittered.apply(&img, &boxes, &mut Rng::new(9)));
        assert_eq!(a.boxes, b.boxes);
        assert_ne!(a.image, b.image);
    }
}
