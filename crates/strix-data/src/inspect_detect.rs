//! `strix data inspect` on a detection dataset: images and boxes per class, box sizes,
//! negatives, what was wrong in the labels, and a contact sheet with the boxes drawn.

use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;
use strix_vision::DecodeLimits;
use strix_vision::draw;

use crate::detection::DetectionSet;
use crate::inspect::{Spread, spread};

/// Boxes smaller than this (the shorter side, in pixels) are hard for a detector whose finest
/// stride is 8.
pub const SMALL_BOX: f32 = 8.0;

#[derive(Clone, Debug, Serialize)]
pub struct ClassBoxes {
    pub class: String,
    /// Images with at least one box of the class, and its boxes.
    pub images: usize,
    pub boxes: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct DetInspection {
    /// `(part, images)`: `train`, and `val` when the dataset has one.
    pub parts: Vec<(String, usize)>,
    pub classes: Vec<ClassBoxes>,
    /// Images without any box (negatives, kept for training).
    pub negatives: usize,
    /// Box width and height in pixels, and side relative to the image's longer side (percent).
    pub box_width: Option<Spread>,
    pub box_height: Option<Spread>,
    pub box_percent: Option<Spread>,
    /// Boxes whose shorter side is under [`SMALL_BOX`] pixels.
    pub small_boxes: usize,
    /// Image sizes.
    pub width: Option<Spread>,
    pub height: Option<Spread>,
    /// What reading the labels found and did (clipped, dropped, left out), one line each.
    pub problems: Vec<String>,
}

/// Count and measure the boxes of each `(part, set)`.
pub fn inspect_detection(parts: &[(&str, &DetectionSet)]) -> DetInspection {
    let classes = parts.first().map(|p| p.1.classes.clone()).unwrap_or_default();
    let mut per_class: Vec<ClassBoxes> =
        classes.iter().map(|c| ClassBoxes { class: c.clone(), images: 0, boxes: 0 }).collect();
    let (mut bw, mut bh, mut bp, mut iw, mut ih) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut negatives, mut small) = (0, 0);
    let mut problems = Vec::new();
    for (_, set) in parts {
        problems.extend(set.problems.iter().cloned());
        for im in &set.images {
            iw.push(im.width);
            ih.push(im.height);
            if im.boxes.is_empty() {
                negatives += 1;
            }
            let mut seen = vec![false; per_class.len()];
            for b in &im.boxes {
                if let Some(c) = per_class.get_mut(b.class) {
                    c.boxes += 1;
                    if !seen[b.class] {
                        seen[b.class] = true;
                        c.images += 1;
                    }
                }
                let [_, _, w, h] = b.bbox;
                bw.push(w.round() as u32);
                bh.push(h.round() as u32);
                bp.push((100.0 * w.max(h) / im.width.max(im.height).max(1) as f32).round() as u32);
                if w.min(h) < SMALL_BOX {
                    small += 1;
                }
            }
        }
    }
    DetInspection {
        parts: parts.iter().map(|(n, s)| (n.to_string(), s.images.len())).collect(),
        classes: per_class,
        negatives,
        box_width: spread(bw),
        box_height: spread(bh),
        box_percent: spread(bp),
        small_boxes: small,
        width: spread(iw),
        height: spread(ih),
        problems,
    }
}

/// One row per class: its name, then up to `per_class` images holding it as `cell` x `cell`
/// thumbnails with every box drawn in its class's colour.
pub fn detection_sheet(set: &DetectionSet, per_class: usize, cell: u32, limits: &DecodeLimits) -> RgbImage {
    crate::inspect::sheet(&set.classes, per_class, cell, draw::colour, |c| {
        let picks: Vec<usize> = (0..set.images.len())
            .filter(|&i| set.images[i].boxes.iter().any(|b| b.class == c))
            .take(per_class)
            .collect();
        picks.par_iter().map(|&i| boxed_thumbnail(set, i, cell, limits)).collect()
    })
}

/// Image `i` fitted inside `cell` x `cell` with its boxes drawn.
pub fn boxed_thumbnail(set: &DetectionSet, i: usize, cell: u32, limits: &DecodeLimits) -> Option<RgbImage> {
    let im = &set.images[i];
    let img = strix_vision::decode_file(&im.path, limits).ok()?;
    let mut t = crate::inspect::thumbnail(&image::DynamicImage::ImageRgb8(img.clone()), cell);
    let k = t.width() as f32 / img.width().max(1) as f32;
    for b in &im.boxes {
        let [x, y, w, h] = b.bbox.map(|v| v * k);
        draw::rect(&mut t, &strix_core::BBox::new(x, y, x + w, y + h), draw::colour(b.class), 1);
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detection::{DetBox, DetImage};
    use image::Rgb;

    #[test]
    fn counts_boxes_per_class_and_draws_them() {
        let d = tempfile::tempdir().unwrap();
        let mut set = DetectionSet { classes: vec!["can".into(), "bottle".into()], ..DetectionSet::default() };
        for (i, boxes) in [
            vec![(0, [10.0, 10.0, 40.0, 20.0]), (0, [60.0, 5.0, 4.0, 30.0])],
            vec![],
            vec![(1, [0.0, 0.0, 100.0, 50.0])],
        ]
        .into_iter()
        .enumerate()
        {
            let path = d.path().join(format!("{i}.png"));
            RgbImage::from_pixel(100, 50, Rgb([255, 255, 255])).save(&path).unwrap();
            let boxes = boxes.into_iter().map(|(class, bbox)| DetBox { class, bbox, iscrowd: false }).collect();
            set.images.push(DetImage { path, width: 100, height: 50, boxes });
        }
        set.problems.push("x.txt:3: clipped".into());
        let r = inspect_detection(&[("train", &set)]);
        assert_eq!((r.classes[0].images, r.classes[0].boxes, r.classes[1].boxes), (1, 2, 1));
        assert_eq!((r.negatives, r.small_boxes, r.problems.len()), (1, 1, 1));
        assert_eq!(r.box_width.unwrap().max, 100);
        let sheet = detection_sheet(&set, 2, 50, &DecodeLimits::default());
        assert_eq!(sheet.height(), 4 + 2 * 54);
        // The can's box edge is drawn in the can's colour on a white image.
        assert!(sheet.pixels().any(|p| *p == draw::colour(0)));
    }
}
