//! Reading text with PaddleOCR-style models (PP-OCR): a DB text detector, an optional
//! 0/180-degree line classifier, and a CTC line recogniser, run as RapidOCR runs them.

mod crop;
mod db;
mod geometry;

use image::RgbImage;
use serde::{Deserialize, Serialize};
use strix_core::{Tensor, TextLine};

use crate::outputs::floats;
use crate::resize::{RgbView, resize_rows};
use crate::{Networks, VisionError};
use db::{DbParams, text_boxes};
use geometry::Pt;

/// How the detector's input size follows the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitType {
    /// Scale up so the shorter side is at least `limit_side_len` (RapidOCR's default).
    #[default]
    Min,
    /// Scale down so the longer side is at most `limit_side_len`.
    Max,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpOcr {
    /// Network names: the spec's `weights` is `main`; the others are `[networks.*]` keys.
    #[serde(default = "main")]
    pub det: String,
    #[serde(default = "rec")]
    pub rec: String,
    /// The 0/180-degree line classifier, if the model has one.
    #[serde(default)]
    pub cls: Option<String>,
    #[serde(default = "limit")]
    pub limit_side_len: u32,
    #[serde(default)]
    pub limit_type: LimitType,
    /// The detector's input never has a longer side than this (RapidOCR's `max_side_len`):
    /// scaling a 20000x1 image's short side up to `limit_side_len` would ask for 130 GB.
    #[serde(default = "max_side")]
    pub max_side_len: u32,
    /// Text-probability threshold of the detector map.
    #[serde(default = "det_threshold")]
    pub det_threshold: f32,
    /// Boxes whose mean probability is lower are dropped.
    #[serde(default = "box_threshold")]
    pub box_threshold: f32,
    /// How far boxes grow around the detected text core.
    #[serde(default = "unclip")]
    pub unclip_ratio: f32,
    #[serde(default = "yes")]
    pub dilate: bool,
    #[serde(default = "max_candidates")]
    pub max_candidates: usize,
    /// Recogniser input height.
    #[serde(default = "rec_height")]
    pub rec_height: u32,
    /// Narrowest recogniser input; lines are padded up to it.
    #[serde(default = "rec_width")]
    pub rec_min_width: u32,
    /// Widest recogniser input; longer lines are squeezed into it (a line as long as a whole
    /// extreme-aspect image would otherwise make a gigabyte tensor).
    #[serde(default = "rec_max_width")]
    pub rec_max_width: u32,
    /// Lines read with a lower mean character probability are dropped.
    #[serde(default = "text_score")]
    pub text_score: f32,
    /// A line is turned over when the classifier says "180" with more than this.
    #[serde(default = "cls_threshold")]
    pub cls_threshold: f32,
    #[serde(default = "cls_width")]
    pub cls_width: u32,
    /// The character list ends with a space the labels file leaves out.
    #[serde(default = "yes")]
    pub space_char: bool,
}

fn main() -> String {
    "main".into()
}
fn rec() -> String {
    "rec".into()
}
fn limit() -> u32 {
    736
}
fn max_side() -> u32 {
    2000
}
fn rec_max_width() -> u32 {
    3200
}
fn det_threshold() -> f32 {
    0.3
}
fn box_threshold() -> f32 {
    0.5
}
fn unclip() -> f32 {
    1.6
}
fn yes() -> bool {
    true
}
fn max_candidates() -> usize {
    1000
}
fn rec_height() -> u32 {
    48
}
fn rec_width() -> u32 {
    320
}
fn text_score() -> f32 {
    0.5
}
fn cls_threshold() -> f32 {
    0.9
}
fn cls_width() -> u32 {
    192
}

impl PpOcr {
    pub fn check(&self) -> Result<(), String> {
        if self.limit_side_len < 32 || self.rec_height == 0 || self.cls_width == 0 {
            return Err("ppocr needs limit_side_len >= 32 and non-zero recogniser and classifier sizes".into());
        }
        if self.max_side_len < self.limit_side_len.max(32) || self.max_side_len > 8192 {
            return Err("ppocr needs limit_side_len <= max_side_len <= 8192".into());
        }
        if self.rec_max_width < self.rec_min_width || self.rec_max_width > 16384 {
            return Err("ppocr needs rec_min_width <= rec_max_width <= 16384".into());
        }
        Ok(())
    }

    /// Text lines of an image, top to bottom. `charset` is the recogniser's dictionary (one
    /// entry per class after the CTC blank).
    pub fn read(&self, img: &RgbImage, nets: &dyn Networks, charset: &[String]) -> Result<Vec<TextLine>, VisionError> {
        let boxes = self.detect(img, nets)?;
        if boxes.is_empty() {
            return Ok(Vec::new());
        }
        let mut crops: Vec<RgbImage> = boxes.iter().map(|b| crop::straighten(img, b)).collect();
        if let Some(cls) = &self.cls {
            self.orient(&mut crops, cls, nets)?;
        }
        let read = self.recognise(&crops, nets, charset)?;
        Ok(boxes
            .into_iter()
            .zip(read)
            .filter(|(_, (text, score))| *score >= self.text_score && !text.is_empty())
            .map(|(quad, (text, score))| TextLine { quad: quad.map(|p| [p[0] as f32, p[1] as f32]), text, score })
            .collect())
    }

    /// Text boxes in image pixels, sorted into reading order.
    fn detect(&self, img: &RgbImage, nets: &dyn Networks) -> Result<Vec<[Pt; 4]>, VisionError> {
        let (w, h) = (img.width() as f64, img.height() as f64);
        let (rw, rh) = self.det_size(img.width(), img.height());
        let planes = bgr_planes(img, rw, rh, rw);
        let input = Tensor::from_f32(vec![1, 3, rh as usize, rw as usize], planes).expect("sized from rw and rh");
        let outs = nets.run(&self.det, input)?;
        let map =
            outs.first().ok_or_else(|| VisionError::MissingOutput { name: "det".into(), available: String::new() })?;
        let s = map.shape();
        if s.len() != 4 || s[1] != 1 {
            return Err(VisionError::OutputShape {
                name: "det".into(),
                shape: s.to_vec(),
                expected: "a [1, 1, H, W] text-probability map".into(),
            });
        }
        let params = DbParams {
            threshold: self.det_threshold,
            box_threshold: self.box_threshold,
            unclip_ratio: self.unclip_ratio,
            dilate: self.dilate,
            max_candidates: self.max_candidates,
            min_size: 3.0,
        };
        let found = text_boxes(floats(map, "det")?, s[3], s[2], &params, (img.width(), img.height()));
        let mut boxes: Vec<[Pt; 4]> = found
            .into_iter()
            .map(|(b, _)| clockwise(b).map(|p| [p[0].clamp(0.0, w - 1.0), p[1].clamp(0.0, h - 1.0)]))
            .filter(|b| {
                let d = |a: Pt, c: Pt| ((a[0] - c[0]).powi(2) + (a[1] - c[1]).powi(2)).sqrt() as i64;
                d(b[0], b[1]) > 3 && d(b[0], b[3]) > 3
            })
            .collect();
        reading_order(&mut boxes);
        Ok(boxes)
    }

    /// The detector's input size for a `w` x `h` image: RapidOCR's sizing (scale by the
    /// limit, truncate, round to a multiple of 32 half to even, as Python), with the longer
    /// side capped at `max_side_len` so extreme aspect ratios stay small.
    fn det_size(&self, w: u32, h: u32) -> (u32, u32) {
        let (w, h) = (f64::from(w.max(1)), f64::from(h.max(1)));
        let limit = f64::from(self.limit_side_len);
        let mut ratio = match self.limit_type {
            LimitType::Min if w.min(h) < limit => limit / w.min(h),
            LimitType::Max if w.max(h) > limit => limit / w.max(h),
            _ => 1.0,
        };
        let cap = f64::from(self.max_side_len);
        if w.max(h) * ratio > cap {
            ratio = cap / w.max(h);
        }
        let to32 = |v: f64| (((v * ratio).trunc() / 32.0).round_ties_even() * 32.0).clamp(32.0, cap) as u32;
        (to32(w), to32(h))
    }

    /// Turn over the lines the classifier finds upside down.
    fn orient(&self, crops: &mut [RgbImage], cls: &str, nets: &dyn Networks) -> Result<(), VisionError> {
        let (h, w) = (self.rec_height, self.cls_width);
        for batch in by_aspect(crops).chunks(BATCH) {
            let mut data = Vec::with_capacity(batch.len() * (3 * h * w) as usize);
            for &i in batch {
                data.extend(line_input(&crops[i], h, w));
            }
            let input = Tensor::from_f32(vec![batch.len(), 3, h as usize, w as usize], data).expect("sized per crop");
            let outs = nets.run(cls, input)?;
            let t = outs
                .first()
                .ok_or_else(|| VisionError::MissingOutput { name: cls.into(), available: String::new() })?;
            let probs = floats(t, cls)?;
            if probs.len() != batch.len() * 2 {
                return Err(VisionError::OutputShape {
                    name: cls.into(),
                    shape: t.shape().to_vec(),
                    expected: format!("[{}, 2] orientation probabilities", batch.len()),
                });
            }
            for (k, &i) in batch.iter().enumerate() {
                if probs[k * 2 + 1] > probs[k * 2] && probs[k * 2 + 1] > self.cls_threshold {
                    image::imageops::rotate180_in_place(&mut crops[i]);
                }
            }
        }
        Ok(())
    }

    /// Text and mean character probability of each crop. As RapidOCR does it: lines sorted by
    /// aspect ratio, six per run, each run as wide as its widest line (at least
    /// `rec_min_width`), shorter lines right-padded.
    fn recognise(
        &self,
        crops: &[RgbImage],
        nets: &dyn Networks,
        charset: &[String],
    ) -> Result<Vec<(String, f32)>, VisionError> {
        let h = self.rec_height;
        let mut results = vec![(String::new(), 0f32); crops.len()];
        for batch in by_aspect(crops).chunks(BATCH) {
            let widest = batch.iter().map(|&i| aspect(&crops[i])).fold(self.rec_min_width as f64 / h as f64, f64::max);
            let w = ((h as f64 * widest) as u32).clamp(1, self.rec_max_width);
            let mut data = Vec::with_capacity(batch.len() * (3 * h * w) as usize);
            for &i in batch {
                data.extend(line_input(&crops[i], h, w));
            }
            let input = Tensor::from_f32(vec![batch.len(), 3, h as usize, w as usize], data).expect("sized per line");
            let outs = nets.run(&self.rec, input)?;
            let probs = outs
                .first()
                .ok_or_else(|| VisionError::MissingOutput { name: self.rec.clone(), available: String::new() })?;
            let s = probs.shape();
            if s.len() != 3 || s[0] != batch.len() {
                return Err(VisionError::OutputShape {
                    name: self.rec.clone(),
                    shape: s.to_vec(),
                    expected: format!("[{}, steps, classes] CTC probabilities", batch.len()),
                });
            }
            let values = floats(probs, &self.rec)?;
            let (steps, classes) = (s[1], s[2]);
            let expected = charset.len() + 1 + usize::from(self.space_char);
            if classes != expected {
                return Err(VisionError::OutputShape {
                    name: self.rec.clone(),
                    shape: s.to_vec(),
                    expected: format!(
                        "{expected} classes: blank + {} characters{}",
                        charset.len(),
                        if self.space_char { " + space" } else { "" }
                    ),
                });
            }
            for (k, &i) in batch.iter().enumerate() {
                results[i] = ctc_greedy(&values[k * steps * classes..(k + 1) * steps * classes], classes, charset);
            }
        }
        Ok(results)
    }
}

/// Lines per classifier or recogniser run.
const BATCH: usize = 6;

fn aspect(crop: &RgbImage) -> f64 {
    crop.width() as f64 / crop.height().max(1) as f64
}

/// Crop indices from the narrowest to the widest (for the aspect ratio).
fn by_aspect(crops: &[RgbImage]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..crops.len()).collect();
    order.sort_by(|&a, &b| aspect(&crops[a]).total_cmp(&aspect(&crops[b])));
    order
}

/// A line crop as network input `[3, h, w]`: height `h` keeping the aspect (at most `w`
/// wide), right-padded with zeros.
fn line_input(crop: &RgbImage, h: u32, w: u32) -> Vec<f32> {
    let natural = (h as f64 * aspect(crop)).ceil() as u32;
    bgr_planes(crop, natural.clamp(1, w), h, w)
}

/// `img` resized to `rw` x `h` as OpenCV resizes 8-bit images (bilinear, rounded to whole
/// levels), BGR planes normalised to `(x / 255 - 0.5) / 0.5`, each row right-padded with zeros
/// to `w`.
fn bgr_planes(img: &RgbImage, rw: u32, h: u32, w: u32) -> Vec<f32> {
    let (rw, h, w) = (rw as usize, h as usize, w as usize);
    let view = RgbView { data: img.as_raw(), width: img.width() as usize, height: img.height() as usize };
    let mut out = vec![0f32; 3 * h * w];
    resize_rows(view, rw, h, 0, 0, rw, h, |y, row| {
        for (x, px) in row.chunks_exact(3).enumerate() {
            for (plane, c) in [2usize, 1, 0].into_iter().enumerate() {
                out[(plane * h + y) * w + x] = px[c].round() / 127.5 - 1.0;
            }
        }
    });
    out
}

/// Greedy CTC: the best class per step, repeats merged, blanks (class 0) dropped; the score is
/// the mean probability of the characters kept. Class `n + 1` past the charset is a space.
fn ctc_greedy(probs: &[f32], classes: usize, charset: &[String]) -> (String, f32) {
    let mut text = String::new();
    let (mut sum, mut n) = (0f32, 0usize);
    let mut previous = usize::MAX;
    for step in probs.chunks_exact(classes) {
        let (best, p) =
            step.iter().enumerate().fold((0, f32::NEG_INFINITY), |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc });
        if best != 0 && best != previous {
            match charset.get(best - 1) {
                Some(ch) => text.push_str(ch),
                None => text.push(' '),
            }
            sum += p;
            n += 1;
        }
        previous = best;
    }
    (text, if n == 0 { 0.0 } else { sum / n as f32 })
}

/// PP-OCR's `order_points_clockwise`: the two leftmost corners top then bottom, likewise the
/// two rightmost, returned as top-left, top-right, bottom-right, bottom-left.
fn clockwise(mut b: [Pt; 4]) -> [Pt; 4] {
    b.sort_by(|p, q| p[0].total_cmp(&q[0]));
    let (mut left, mut right) = ([b[0], b[1]], [b[2], b[3]]);
    left.sort_by(|p, q| p[1].total_cmp(&q[1]));
    right.sort_by(|p, q| p[1].total_cmp(&q[1]));
    [left[0], right[0], right[1], left[1]]
}

/// Top to bottom, and left to right within a line (boxes whose tops are within 10 px).
fn reading_order(boxes: &mut [[Pt; 4]]) {
    boxes.sort_by(|a, b| a[0][1].total_cmp(&b[0][1]).then(a[0][0].total_cmp(&b[0][0])));
    for i in 0..boxes.len().saturating_sub(1) {
        for j in (0..=i).rev() {
            if (boxes[j + 1][0][1] - boxes[j][0][1]).abs() < 10.0 && boxes[j + 1][0][0] < boxes[j][0][0] {
                boxes.swap(j, j + 1);
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        let charset: Vec<String> = ["a", "b"].map(String::from).to_vec();
        // classes: blank, a, b, space; steps: a a blank a b space
        let steps = [
            [0.1, 0.8, 0.05, 0.05],
            [0.1, 0.8, 0.05, 0.05],
            [0.9, 0.05, 0.0, 0.05],
            [0.1, 0.6, 0.2, 0.1],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let probs: Vec<f32> = steps.iter().flatten().copied().collect();
        let (text, score) = ctc_greedy(&probs, 4, &charset);
        assert_eq!(text, "aab ");
        assert!((score - (0.8 + 0.6 + 1.0 + 1.0) / 4.0).abs() < 1e-6);
    }

    #[test]
    fn lines_are_put_in_reading_order() {
        let b = |x: f64, y: f64| [[x, y], [x + 5.0, y], [x + 5.0, y + 5.0], [x, y + 5.0]];
        let mut boxes = vec![b(50.0, 12.0), b(0.0, 40.0), b(0.0, 15.0)];
        reading_order(&mut boxes);
        assert_eq!(
            boxes.iter().map(|q| (q[0][0], q[0][1])).collect::<Vec<_>>(),
            vec![(0.0, 15.0), (50.0, 12.0), (0.0, 40.0)]
        );
    }

    #[test]
    fn extreme_aspect_ratios_keep_the_detector_input_small() {
        let ocr: PpOcr = toml::from_str("").unwrap();
        // 20000x1 once asked for a 14.7M x 736 input (130 GB); 2000 rounds to 62 x 32 (half to even).
        assert_eq!(ocr.det_size(20_000, 1), (1984, 32));
        assert_eq!(ocr.det_size(1, 20_000), (32, 1984));
        assert_eq!(ocr.det_size(3000, 1), (1984, 32));
        assert_eq!(ocr.det_size(1, 1), (736, 736));
        assert_eq!(ocr.det_size(u32::MAX, 7), (1984, 32));
        // Ordinary pages are sized as RapidOCR sizes them.
        assert_eq!(ocr.det_size(640, 480), (992, 736));
        assert_eq!(ocr.det_size(1000, 800), (992, 800));
    }

    #[test]
    fn line_input_keeps_the_aspect_and_pads() {
        let crop = RgbImage::from_pixel(20, 10, image::Rgb([255, 0, 0]));
        let v = line_input(&crop, 4, 16);
        assert_eq!(v.len(), 3 * 4 * 16);
        // Blue plane first (0 -> -1.0); the red plane (255 -> 1.0) is the last of three.
        assert_eq!(&v[..9], &[-1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 0.0]);
        let red = &v[2 * 4 * 16..];
        assert_eq!(&red[..9], &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
    }
}
