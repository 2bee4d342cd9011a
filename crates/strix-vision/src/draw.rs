//! Drawing answers onto images for people to look at: boxes with labels and scores,
//! keypoints and skeletons, translucent masks, text boxes.

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_circle_mut, draw_filled_rect_mut, draw_hollow_rect_mut, draw_line_segment_mut};
use imageproc::rect::Rect;
use strix_core::{BBox, Detection, Face, Pose, SegMask, TextLine};

use crate::Class;

/// Distinct, readable colours, picked by class id.
pub(crate) const PALETTE: [[u8; 3]; 12] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
    [0, 128, 128],
    [170, 110, 40],
    [255, 225, 25],
];

/// The colour of class `i` (distinct for the first classes; shared by every drawing).
pub fn colour(i: usize) -> Rgb<u8> {
    Rgb(PALETTE[i % PALETTE.len()])
}

/// Stroke width and text scale that read well at the image's size.
fn scale(img: &RgbImage) -> (u32, u32) {
    let side = img.width().min(img.height());
    ((side / 250).max(2), (side / 400).clamp(1, 4))
}

/// A hollow box, `thickness` pixels wide (growing outwards).
pub fn rect(img: &mut RgbImage, b: &BBox, c: Rgb<u8>, thickness: u32) {
    for t in 0..thickness as i32 {
        let (x, y) = (b.x1.round() as i32 - t, b.y1.round() as i32 - t);
        let (w, h) = ((b.width().round() as i32 + 2 * t).max(1), (b.height().round() as i32 + 2 * t).max(1));
        draw_hollow_rect_mut(img, Rect::at(x, y).of_size(w as u32, h as u32), c);
    }
}

fn line(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), c: Rgb<u8>, thickness: u32) {
    let r = thickness as f32 / 2.0;
    let steps = thickness.max(1) as i32;
    for i in 0..steps {
        let o = -r + i as f32 + 0.5;
        // Offset along the normal, so thick lines stay straight at any angle.
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-6);
        let (nx, ny) = (-dy / len * o, dx / len * o);
        draw_line_segment_mut(img, (a.0 + nx, a.1 + ny), (b.0 + nx, b.1 + ny), c);
    }
}

/// White text on a coloured tag whose bottom-left is at (x, y) (kept inside the image).
pub fn tag(img: &mut RgbImage, x: f32, y: f32, label: &str, c: Rgb<u8>) {
    let (_, s) = scale(img);
    let glyph = 8 * s as i32;
    let w = glyph * label.chars().count() as i32 + 4;
    let h = glyph + 4;
    let x0 = (x.round() as i32).clamp(0, (img.width() as i32 - w).max(0));
    let y0 = (y.round() as i32 - h).clamp(0, (img.height() as i32 - h).max(0));
    draw_filled_rect_mut(img, Rect::at(x0, y0).of_size(w as u32, h as u32), c);
    text(img, x0 + 2, y0 + 2, label, Rgb([255, 255, 255]), s);
}

/// `label` in the 8x8 bitmap font scaled by `s`, top-left at (x, y); clipped at the edges.
pub fn text(img: &mut RgbImage, x: i32, y: i32, label: &str, c: Rgb<u8>, s: u32) {
    let glyph = 8 * s as i32;
    for (i, ch) in label.chars().enumerate() {
        let Some(bitmap) = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')) else { continue };
        for (row, bits) in bitmap.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let px = x + i as i32 * glyph + col * s as i32;
                    let py = y + row as i32 * s as i32;
                    draw_filled_rect_mut(img, Rect::at(px, py).of_size(s, s), c);
                }
            }
        }
    }
}

/// Class names and scores in a column at the top left.
pub fn labels(img: &mut RgbImage, classes: &[Class]) {
    let (_, s) = scale(img);
    for (i, c) in classes.iter().enumerate() {
        let y = (i as f32 + 1.0) * (8.0 * s as f32 + 6.0);
        tag(img, 0.0, y, &format!("{} {:.1}%", c.label, c.score * 100.0), colour(i));
    }
}

pub fn detections(img: &mut RgbImage, dets: &[Detection]) {
    let (t, _) = scale(img);
    for d in dets {
        let c = colour(d.class_id);
        rect(img, &d.bbox, c, t);
        tag(img, d.bbox.x1, d.bbox.y1, &format!("{} {:.0}%", d.label, d.score * 100.0), c);
    }
}

/// Keypoints above `threshold`, joined by `skeleton` (pairs of keypoint indices).
pub fn poses(img: &mut RgbImage, people: &[Pose], skeleton: &[(usize, usize)], threshold: f32) {
    let (t, _) = scale(img);
    for (p_i, p) in people.iter().enumerate() {
        for &(a, b) in skeleton {
            let (Some(ka), Some(kb)) = (p.keypoints.get(a), p.keypoints.get(b)) else { continue };
            if ka.score >= threshold && kb.score >= threshold {
                line(img, (ka.x, ka.y), (kb.x, kb.y), colour(p_i + 2), t);
            }
        }
        for k in p.keypoints.iter().filter(|k| k.score >= threshold) {
            draw_filled_circle_mut(img, (k.x.round() as i32, k.y.round() as i32), (t + 2) as i32, colour(p_i));
        }
    }
}

/// Colour each class (not the background) over the image at 50% opacity, weighted by the
/// foreground probability where the mask has one.
pub fn mask(img: &mut RgbImage, m: &SegMask) {
    if (m.width, m.height) != img.dimensions() {
        return;
    }
    for (i, px) in img.pixels_mut().enumerate() {
        let class = m.labels[i] as usize;
        let alpha = match &m.probability {
            Some(p) => p[i] as f32 / 255.0 * 0.5,
            None if class == 0 => 0.0,
            None => 0.5,
        };
        if alpha <= 0.0 {
            continue;
        }
        let c = colour(if m.probability.is_some() { 1 } else { class });
        for ch in 0..3 {
            px[ch] = (px[ch] as f32 * (1.0 - alpha) + c[ch] as f32 * alpha).round() as u8;
        }
    }
}

pub fn faces(img: &mut RgbImage, faces: &[Face]) {
    let (t, _) = scale(img);
    for f in faces {
        let c = colour(1);
        rect(img, &f.bbox, c, t);
        for k in &f.landmarks {
            draw_filled_circle_mut(img, (k.x.round() as i32, k.y.round() as i32), (t + 1) as i32, colour(3));
        }
        tag(img, f.bbox.x1, f.bbox.y1, &format!("face {:.0}%", f.score * 100.0), c);
    }
}

pub fn text_lines(img: &mut RgbImage, lines: &[TextLine]) {
    let (t, _) = scale(img);
    for (i, l) in lines.iter().enumerate() {
        let c = colour(i);
        for k in 0..4 {
            let (a, b) = (l.quad[k], l.quad[(k + 1) % 4]);
            line(img, (a[0], a[1]), (b[0], b[1]), c, t.min(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detection_is_drawn_inside_the_image() {
        let mut img = RgbImage::new(100, 80);
        let d = Detection { bbox: BBox::new(10.0, 20.0, 60.0, 70.0), score: 0.9, class_id: 0, label: "person".into() };
        detections(&mut img, &[d]);
        assert_eq!(img.get_pixel(10, 45).0, PALETTE[0], "left edge drawn");
        assert_eq!(img.get_pixel(35, 45).0, [0, 0, 0], "inside untouched");
        // Text near the image's top-right corner is pushed inside rather than cut off: the
        // whole tag (5 glyphs of 8 px + 4 px padding = 44 x 12) stands in the image.
        let mut img = RgbImage::new(100, 80);
        tag(&mut img, 90.0, 2.0, "label", Rgb([1, 2, 3]));
        let tagged: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 == [1, 2, 3] || p.0 == [255, 255, 255])
            .map(|(x, y, _)| (x, y))
            .collect();
        let (xs, ys): (Vec<u32>, Vec<u32>) = tagged.iter().copied().unzip();
        assert_eq!((xs.iter().min(), xs.iter().max()), (Some(&56), Some(&99)), "pushed left to end at the edge");
        assert_eq!((ys.iter().min(), ys.iter().max()), (Some(&0), Some(&11)), "pushed down to start at the top");
        assert!(tagged.iter().any(|&(x, y)| img.get_pixel(x, y).0 == [255, 255, 255]), "the text is drawn");
    }

    #[test]
    fn masks_blend_only_the_foreground() {
        let mut img = RgbImage::from_pixel(2, 1, Rgb([100, 100, 100]));
        let m = SegMask {
            width: 2,
            height: 1,
            classes: vec!["bg".into(), "x".into(), "y".into()],
            labels: vec![0, 2],
            probability: None,
        };
        mask(&mut img, &m);
        assert_eq!(img.get_pixel(0, 0).0, [100, 100, 100]);
        assert_ne!(img.get_pixel(1, 0).0, [100, 100, 100]);
    }
}
