//! MTCNN (Zhang et al. 2016), as the widely used `mtcnn` Python package runs it: P-Net over an
//! image pyramid, then R-Net and O-Net on square crops, with the package's 1-based box
//! arithmetic kept so results match it.
//!
//! The Keras-exported nets take images with width and height swapped (`[N, W, H, 3]`),
//! values `(x - 127.5) / 128`.

use image::RgbImage;
use serde::{Deserialize, Serialize};
use strix_core::{BBox, Face, Keypoint, Tensor};

use crate::outputs::floats;
use crate::resize::resize_area;
use crate::{Networks, VisionError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mtcnn {
    /// Network names: the spec's `weights` is `main`, others are its `[networks.*]` keys.
    #[serde(default = "main")]
    pub pnet: String,
    #[serde(default = "rnet")]
    pub rnet: String,
    #[serde(default = "onet")]
    pub onet: String,
    /// Smallest face looked for, in pixels.
    #[serde(default = "min_face")]
    pub min_face_size: f32,
    /// Ratio between pyramid levels.
    #[serde(default = "factor")]
    pub scale_factor: f32,
    /// Face-probability thresholds of the three stages.
    #[serde(default = "thresholds")]
    pub thresholds: [f32; 3],
}

fn main() -> String {
    "main".into()
}
fn rnet() -> String {
    "rnet".into()
}
fn onet() -> String {
    "onet".into()
}
fn min_face() -> f32 {
    20.0
}
fn factor() -> f32 {
    0.709
}
fn thresholds() -> [f32; 3] {
    [0.6, 0.7, 0.7]
}

/// Landmark order of the nets, named from the subject's side (the package's `left_eye` is on
/// the viewer's left, so the subject's right).
const LANDMARKS: [&str; 5] = ["eyeRight", "eyeLeft", "nose", "mouthRight", "mouthLeft"];

#[derive(Clone, Copy, Debug)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

#[derive(Clone, Copy, PartialEq)]
enum Overlap {
    Union,
    Min,
}

impl Mtcnn {
    pub fn check(&self) -> Result<(), String> {
        if !(self.scale_factor > 0.0 && self.scale_factor < 1.0) || self.min_face_size < 1.0 {
            return Err("mtcnn needs 0 < scale_factor < 1 and min_face_size >= 1".into());
        }
        Ok(())
    }

    pub fn detect(&self, img: &RgbImage, nets: &dyn Networks) -> Result<Vec<Face>, VisionError> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let pixels: Vec<f32> = img.as_raw().iter().map(|&v| f32::from(v)).collect();
        let boxes = self.stage1(&pixels, w, h, nets)?;
        let boxes = self.stage2(&pixels, w, h, boxes, nets)?;
        self.stage3(&pixels, w, h, boxes, nets)
    }

    fn stage1(&self, px: &[f32], w: usize, h: usize, nets: &dyn Networks) -> Result<Vec<Cand>, VisionError> {
        let m = 12.0 / self.min_face_size;
        let mut min_layer = w.min(h) as f32 * m;
        let mut scales = Vec::new();
        while min_layer >= 12.0 {
            scales.push(m * self.scale_factor.powi(scales.len() as i32));
            min_layer *= self.scale_factor;
        }
        let mut total = Vec::new();
        for scale in scales {
            let (ws, hs) = ((w as f32 * scale).ceil() as usize, (h as f32 * scale).ceil() as usize);
            if ws == 0 || hs == 0 {
                continue;
            }
            let scaled = resize_area(px, w, h, ws, hs);
            let outs = nets.run(&self.pnet, swapped_input(&scaled, ws, hs, 1))?;
            let (reg, prob) = (by_last_dim(&outs, 4, "pnet")?, by_last_dim(&outs, 2, "pnet")?);
            let s = prob.shape();
            let (gw, gh) = (s[1], s[2]);
            let (reg, prob) = (floats(reg, "pnet")?, floats(prob, "pnet")?);
            let mut level = Vec::new();
            // Output index 1 runs along the image's x (the nets see width and height swapped).
            for gx in 0..gw {
                for gy in 0..gh {
                    let i = gx * gh + gy;
                    let score = prob[i * 2 + 1];
                    if score < self.thresholds[0] {
                        continue;
                    }
                    let fix = |v: f32| (v / scale).trunc();
                    let b = [
                        fix(2.0 * gx as f32 + 1.0),
                        fix(2.0 * gy as f32 + 1.0),
                        fix(2.0 * gx as f32 + 12.0),
                        fix(2.0 * gy as f32 + 12.0),
                    ];
                    let r = &reg[i * 4..i * 4 + 4];
                    level.push(Cand { b, score, reg: [r[0], r[1], r[2], r[3]] });
                }
            }
            total.extend(nms(level, 0.5, Overlap::Union));
        }
        let total = nms(total, 0.7, Overlap::Union);
        Ok(total
            .into_iter()
            .map(|c| {
                let (rw, rh) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
                let b =
                    [c.b[0] + c.reg[0] * rw, c.b[1] + c.reg[1] * rh, c.b[2] + c.reg[2] * rw, c.b[3] + c.reg[3] * rh];
                Cand { b: square(b).map(f32::trunc), score: c.score, reg: [0.0; 4] }
            })
            .collect())
    }

    fn stage2(
        &self,
        px: &[f32],
        w: usize,
        h: usize,
        boxes: Vec<Cand>,
        nets: &dyn Networks,
    ) -> Result<Vec<Cand>, VisionError> {
        if boxes.is_empty() {
            return Ok(boxes);
        }
        let input = crops(px, w, h, &boxes, 24);
        let outs = nets.run(&self.rnet, input)?;
        let (reg, prob) =
            (floats(by_last_dim(&outs, 4, "rnet")?, "rnet")?, floats(by_last_dim(&outs, 2, "rnet")?, "rnet")?);
        let passed: Vec<Cand> = boxes
            .iter()
            .enumerate()
            .filter(|(i, _)| prob[i * 2 + 1] > self.thresholds[1])
            .map(|(i, c)| Cand {
                b: c.b,
                score: prob[i * 2 + 1],
                reg: [reg[i * 4], reg[i * 4 + 1], reg[i * 4 + 2], reg[i * 4 + 3]],
            })
            .collect();
        Ok(nms(passed, 0.7, Overlap::Union).into_iter().map(|c| Cand { b: square(regress(c.b, c.reg)), ..c }).collect())
    }

    fn stage3(
        &self,
        px: &[f32],
        w: usize,
        h: usize,
        boxes: Vec<Cand>,
        nets: &dyn Networks,
    ) -> Result<Vec<Face>, VisionError> {
        if boxes.is_empty() {
            return Ok(Vec::new());
        }
        let boxes: Vec<Cand> = boxes.into_iter().map(|c| Cand { b: c.b.map(f32::trunc), ..c }).collect();
        let input = crops(px, w, h, &boxes, 48);
        let outs = nets.run(&self.onet, input)?;
        let reg = floats(by_last_dim(&outs, 4, "onet")?, "onet")?;
        let marks = floats(by_last_dim(&outs, 10, "onet")?, "onet")?;
        let prob = floats(by_last_dim(&outs, 2, "onet")?, "onet")?;
        let mut found = Vec::new();
        for (i, c) in boxes.iter().enumerate() {
            let score = prob[i * 2 + 1];
            if score <= self.thresholds[2] {
                continue;
            }
            let (bw, bh) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
            let m = &marks[i * 10..i * 10 + 10];
            let points: Vec<(f32, f32)> =
                (0..5).map(|k| (bw * m[k] + c.b[0] - 1.0, bh * m[k + 5] + c.b[1] - 1.0)).collect();
            let r = [reg[i * 4], reg[i * 4 + 1], reg[i * 4 + 2], reg[i * 4 + 3]];
            found.push((Cand { b: regress(c.b, r), score, reg: [0.0; 4] }, points));
        }
        let kept = nms_indexed(found.iter().map(|(c, _)| *c).collect(), 0.7, Overlap::Min);
        Ok(kept
            .into_iter()
            .map(|i| {
                let (c, points) = &found[i];
                let (x, y) = (c.b[0].trunc().max(0.0), c.b[1].trunc().max(0.0));
                Face {
                    bbox: BBox::new(x, y, c.b[2], c.b[3]).clip(w as f32, h as f32),
                    score: c.score,
                    landmarks: points
                        .iter()
                        .zip(LANDMARKS)
                        .map(|(&(x, y), name)| Keypoint { name: name.to_string(), x, y, score: 1.0 })
                        .collect(),
                    description: None,
                }
            })
            .collect())
    }
}

/// Pixels (HWC) to the nets' `[N, W, H, 3]` layout, normalised.
fn swapped_input(px: &[f32], w: usize, h: usize, n: usize) -> Tensor {
    let mut data = vec![0f32; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                data[(x * h + y) * 3 + c] = (px[(y * w + x) * 3 + c] - 127.5) * 0.0078125;
            }
        }
    }
    Tensor::from_f32(vec![n, w, h, 3], data).expect("sized from w and h")
}

/// Square crops of `size` x `size` for each box, zero outside the image, stacked for a net.
fn crops(px: &[f32], w: usize, h: usize, boxes: &[Cand], size: usize) -> Tensor {
    let mut data = Vec::with_capacity(boxes.len() * size * size * 3);
    for c in boxes {
        // The package's 1-based, inclusive box: pixels x1-1 ..= x2-1.
        let (x1, y1, x2, y2) = (c.b[0] as i64, c.b[1] as i64, c.b[2] as i64, c.b[3] as i64);
        let (cw, ch) = ((x2 - x1 + 1).max(1) as usize, (y2 - y1 + 1).max(1) as usize);
        let mut crop = vec![0f32; cw * ch * 3];
        for cy in 0..ch {
            let sy = y1 - 1 + cy as i64;
            if sy < 0 || sy >= h as i64 {
                continue;
            }
            for cx in 0..cw {
                let sx = x1 - 1 + cx as i64;
                if sx < 0 || sx >= w as i64 {
                    continue;
                }
                let s = (sy as usize * w + sx as usize) * 3;
                crop[(cy * cw + cx) * 3..(cy * cw + cx) * 3 + 3].copy_from_slice(&px[s..s + 3]);
            }
        }
        let resized = resize_area(&crop, cw, ch, size, size);
        let t = swapped_input(&resized, size, size, 1);
        data.extend_from_slice(t.as_f32().expect("f32 tensor"));
    }
    Tensor::from_f32(vec![boxes.len(), size, size, 3], data).expect("sized from the boxes")
}

/// The output whose last dimension is `last` (nets list box, landmark and probability outputs
/// in an exporter-dependent order).
fn by_last_dim<'a>(outs: &'a [Tensor], last: usize, net: &str) -> Result<&'a Tensor, VisionError> {
    outs.iter().find(|t| t.shape().last() == Some(&last)).ok_or_else(|| VisionError::OutputShape {
        name: net.to_string(),
        shape: outs.first().map(|t| t.shape().to_vec()).unwrap_or_default(),
        expected: format!("an output whose last dimension is {last}"),
    })
}

/// Square box around the same centre, side = the longer side.
fn square(b: [f32; 4]) -> [f32; 4] {
    let (bw, bh) = (b[2] - b[0], b[3] - b[1]);
    let side = bw.max(bh);
    let (x1, y1) = (b[0] + bw * 0.5 - side * 0.5, b[1] + bh * 0.5 - side * 0.5);
    [x1, y1, x1 + side, y1 + side]
}

/// Apply a net's box regression (offsets in units of the 1-based box size).
fn regress(b: [f32; 4], r: [f32; 4]) -> [f32; 4] {
    let (bw, bh) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
    [b[0] + r[0] * bw, b[1] + r[1] * bh, b[2] + r[2] * bw, b[3] + r[3] * bh]
}

fn nms(cands: Vec<Cand>, threshold: f32, overlap: Overlap) -> Vec<Cand> {
    nms_indexed(cands.clone(), threshold, overlap).into_iter().map(|i| cands[i]).collect()
}

/// The package's NMS: areas and overlaps with +1 pixel sizes; keeps indices, best first.
fn nms_indexed(cands: Vec<Cand>, threshold: f32, overlap: Overlap) -> Vec<usize> {
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut order: Vec<usize> = (0..cands.len()).collect();
    order.sort_by(|&a, &b| cands[b].score.total_cmp(&cands[a].score));
    let mut keep = Vec::new();
    while let Some((&i, rest)) = order.split_first() {
        keep.push(i);
        let bi = &cands[i].b;
        order = rest
            .iter()
            .copied()
            .filter(|&j| {
                let bj = &cands[j].b;
                let iw = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + 1.0).max(0.0);
                let ih = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + 1.0).max(0.0);
                let inter = iw * ih;
                let o = match overlap {
                    Overlap::Union => inter / (area(bi) + area(bj) - inter),
                    Overlap::Min => inter / area(bi).min(area(bj)),
                };
                o <= threshold
            })
            .collect();
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_keeps_the_centre() {
        assert_eq!(square([0.0, 0.0, 10.0, 20.0]), [-5.0, 0.0, 15.0, 20.0]);
    }

    #[test]
    fn min_overlap_suppresses_a_box_inside_another() {
        let c = |b: [f32; 4], score| Cand { b, score, reg: [0.0; 4] };
        let cands = vec![c([0.0, 0.0, 99.0, 99.0], 0.9), c([10.0, 10.0, 29.0, 29.0], 0.8)];
        assert_eq!(nms_indexed(cands.clone(), 0.7, Overlap::Union), vec![0, 1]);
        assert_eq!(nms_indexed(cands, 0.7, Overlap::Min), vec![0]);
    }

    #[test]
    fn nets_see_width_and_height_swapped() {
        // 2 wide, 1 high: element (x=1, y=0) sits at index 1 of dimension 1.
        let t = swapped_input(&[127.5, 127.5, 127.5, 255.0, 255.0, 255.0], 2, 1, 1);
        assert_eq!(t.shape(), &[1, 2, 1, 3]);
        assert_eq!(&t.as_f32().unwrap()[3..], &[0.99609375; 3]);
    }
}
