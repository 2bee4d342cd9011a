//! Detection scenes with exact boxes, made from real pictures: small greyscale objects (e.g.
//! Fashion-MNIST items, white on black) scaled, tinted and pasted onto background photos.
//! The box of an object is the tight box of the pixels actually pasted, so a detector trained
//! on these learns the objects, not a square around them. Objects do not overlap.

use image::{Rgb, RgbImage};

use crate::Rng;
use crate::detection::DetBox;

/// One object to paste: a `size x size` greyscale mask (0 background, 255 object) and its class.
#[derive(Clone, Debug)]
pub struct Sprite {
    pub pixels: Vec<u8>,
    pub size: u32,
    pub class: usize,
}

/// How scenes are made.
#[derive(Clone, Debug)]
pub struct SceneSpec {
    /// Output image size.
    pub size: (u32, u32),
    /// Objects per image (inclusive range).
    pub objects: (usize, usize),
    /// Pasted object side, in output pixels.
    pub object_side: (u32, u32),
    /// Mask values above this are object pixels.
    pub threshold: u8,
}

impl Default for SceneSpec {
    fn default() -> Self {
        SceneSpec { size: (320, 320), objects: (1, 4), object_side: (48, 128), threshold: 40 }
    }
}

/// A background (resized to fill the frame) with objects pasted, and their boxes.
pub fn scene(background: &RgbImage, sprites: &[Sprite], spec: &SceneSpec, rng: &mut Rng) -> (RgbImage, Vec<DetBox>) {
    let (w, h) = spec.size;
    let mut img = image::imageops::resize(background, w, h, image::imageops::FilterType::Triangle);
    let mut boxes: Vec<DetBox> = Vec::new();
    let wanted = spec.objects.0 + rng.below(spec.objects.1 - spec.objects.0 + 1);
    let mut tries = 0;
    while boxes.len() < wanted && tries < 50 && !sprites.is_empty() {
        tries += 1;
        let sprite = &sprites[rng.below(sprites.len())];
        let side = spec.object_side.0 + rng.below((spec.object_side.1 - spec.object_side.0 + 1) as usize) as u32;
        let side = side.min(w).min(h);
        let (x0, y0) = (rng.below((w - side + 1) as usize) as u32, rng.below((h - side + 1) as usize) as u32);
        let tint = [64 + rng.below(192) as u8, 64 + rng.below(192) as u8, 64 + rng.below(192) as u8];
        let Some(bbox) =
            tight_box(sprite, side, spec.threshold).map(|[x, y, bw, bh]| [x + x0 as f32, y + y0 as f32, bw, bh])
        else {
            continue;
        };
        // No overlap with what is there, so every box sees its whole object.
        if boxes.iter().any(|b| overlaps(&b.bbox, &bbox)) {
            continue;
        }
        paste(&mut img, sprite, side, (x0, y0), tint, spec.threshold);
        boxes.push(DetBox { class: sprite.class, bbox, iscrowd: false });
    }
    (img, boxes)
}

/// The mask pixel under output pixel `(u, v)` of a sprite scaled to `side` (nearest).
fn mask_at(sprite: &Sprite, side: u32, u: u32, v: u32) -> u8 {
    let sx = (u * sprite.size / side).min(sprite.size - 1);
    let sy = (v * sprite.size / side).min(sprite.size - 1);
    sprite.pixels[(sy * sprite.size + sx) as usize]
}

/// The box of the pixels that will be pasted, relative to the sprite's corner.
fn tight_box(sprite: &Sprite, side: u32, threshold: u8) -> Option<[f32; 4]> {
    let (mut x1, mut y1, mut x2, mut y2) = (u32::MAX, u32::MAX, 0, 0);
    for v in 0..side {
        for u in 0..side {
            if mask_at(sprite, side, u, v) > threshold {
                (x1, y1, x2, y2) = (x1.min(u), y1.min(v), x2.max(u + 1), y2.max(v + 1));
            }
        }
    }
    (x2 > x1 && y2 > y1).then(|| [x1 as f32, y1 as f32, (x2 - x1) as f32, (y2 - y1) as f32])
}

fn paste(img: &mut RgbImage, sprite: &Sprite, side: u32, (x0, y0): (u32, u32), tint: [u8; 3], threshold: u8) {
    for v in 0..side {
        for u in 0..side {
            let m = mask_at(sprite, side, u, v);
            if m > threshold {
                let shade = f32::from(m) / 255.0;
                let px = tint.map(|c| (f32::from(c) * shade).round() as u8);
                img.put_pixel(x0 + u, y0 + v, Rgb(px));
            }
        }
    }
}

fn overlaps(a: &[f32; 4], b: &[f32; 4]) -> bool {
    a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring-shaped sprite: its tight box is smaller than the square it is pasted in.
    fn ring(class: usize) -> Sprite {
        let size = 28;
        let pixels = (0..size * size)
            .map(|i| {
                let (x, y) = ((i % size) as f32 - 13.5, (i / size) as f32 - 13.5);
                let r = (x * x + y * y).sqrt();
                if (6.0..10.0).contains(&r) { 255 } else { 0 }
            })
            .collect();
        Sprite { pixels, size: size as u32, class }
    }

    #[test]
    fn boxes_are_tight_around_the_pasted_pixels_and_do_not_overlap() {
        let background = RgbImage::from_pixel(50, 40, Rgb([0, 0, 0]));
        let sprites = [ring(0), ring(1)];
        let spec = SceneSpec { size: (200, 160), objects: (2, 4), object_side: (30, 60), threshold: 40 };
        let mut total = 0;
        for seed in 0..40 {
            let (img, boxes) = scene(&background, &sprites, &spec, &mut Rng::new(seed));
            assert!(!boxes.is_empty());
            for (i, b) in boxes.iter().enumerate() {
                let [x, y, w, h] = b.bbox.map(|v| v as u32);
                let lit = |u: u32, v: u32| img.get_pixel(u, v).0 != [0, 0, 0];
                // Every edge row and column of the box holds an object pixel...
                assert!((x..x + w).any(|u| lit(u, y)) && (x..x + w).any(|u| lit(u, y + h - 1)), "{b:?}");
                assert!((y..y + h).any(|v| lit(x, v)) && (y..y + h).any(|v| lit(x + w - 1, v)), "{b:?}");
                // ...and the ring's centre, inside the box, is background.
                assert!(!lit(x + w / 2, y + h / 2), "{b:?}");
                for other in &boxes[i + 1..] {
                    assert!(!overlaps(&b.bbox, &other.bbox));
                }
                total += 1;
            }
        }
        // Nothing lit outside the boxes.
        let (img, boxes) = scene(&background, &sprites, &spec, &mut Rng::new(99));
        for (u, v, p) in img.enumerate_pixels() {
            let inside = boxes.iter().any(|b| {
                (u as f32) >= b.bbox[0]
                    && (u as f32) < b.bbox[0] + b.bbox[2]
                    && (v as f32) >= b.bbox[1]
                    && (v as f32) < b.bbox[1] + b.bbox[3]
            });
            assert!(inside || p.0 == [0, 0, 0], "lit pixel ({u}, {v}) outside every box");
        }
        assert!(total > 80, "{total}");
    }
}
