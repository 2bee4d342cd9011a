//! Face description: each face a detector found is cut out as the Human library cuts it for
//! HSE FaceRes (box enlarged about its centre, squared, black outside the image, bilinear to the
//! network's size) and run through a description network giving a descriptor, an age
//! distribution and P(male).

use serde::{Deserialize, Serialize};
use strix_core::{Face, FaceDescription, Tensor};

use crate::heads::l2_normalised;
use crate::outputs::floats;
use crate::resize::{RgbView, resize_rows};
use crate::{Networks, RgbImage, VisionError};

/// A face description network run on every face a model finds (`[describe]` in a spec).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaceDescriber {
    /// The spec's network that describes a face crop.
    #[serde(default = "describe")]
    pub network: String,
    /// The network's square input side; it takes NHWC RGB 0..255.
    pub size: u32,
    /// The detector's box is enlarged by this about its centre before the crop.
    #[serde(default = "enlarge")]
    pub enlarge: f32,
    /// The descriptor's length (the output of this width is the descriptor).
    pub dimensions: usize,
    /// Width of the age output (a distribution over ages 0..age_bins), if the network has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_bins: Option<usize>,
    /// Whether the network has a one-wide P(male) output.
    #[serde(default)]
    pub gender: bool,
    /// Cosine similarities that a face match's Similarity (0-100) maps from: `[at_0, at_80]`,
    /// calibrated on faces of the same and of different people, linear between and clamped.
    pub similarity: [f32; 2],
}

fn describe() -> String {
    "describe".into()
}

fn enlarge() -> f32 {
    1.4
}

impl FaceDescriber {
    pub fn check(&self) -> Result<(), String> {
        if !(16..=1024).contains(&self.size) {
            return Err(format!("describe.size must be 16 to 1024, got {}", self.size));
        }
        if !(self.enlarge.is_finite() && (1.0..=4.0).contains(&self.enlarge)) {
            return Err(format!("describe.enlarge must be 1 to 4, got {}", self.enlarge));
        }
        let widths = [Some(self.dimensions), self.age_bins, self.gender.then_some(1)];
        let widths: Vec<usize> = widths.into_iter().flatten().collect();
        if self.dimensions < 2 || widths.iter().enumerate().any(|(i, w)| widths[..i].contains(w)) {
            return Err("describe: dimensions, age_bins and the gender output (1) must be distinct widths, dimensions at least 2".into());
        }
        let [zero, eighty] = self.similarity;
        if !(zero.is_finite() && eighty.is_finite() && -1.0 <= zero && zero < eighty && eighty <= 1.0) {
            return Err(format!(
                "describe.similarity must be two cosines, increasing, in -1..=1, got {:?}",
                self.similarity
            ));
        }
        Ok(())
    }

    /// Rekognition's Similarity (0-100) of two unit descriptors.
    pub fn similarity(&self, a: &[f32], b: &[f32]) -> f32 {
        self.similarity_of_cosine(cosine(a, b))
    }

    /// The Similarity a cosine maps to.
    pub fn similarity_of_cosine(&self, cosine: f32) -> f32 {
        let [zero, eighty] = self.similarity;
        (80.0 * (cosine - zero) / (eighty - zero)).clamp(0.0, 100.0)
    }

    /// The cosine a Similarity threshold means (the inverse of [`Self::similarity_of_cosine`]).
    pub fn cosine_of_similarity(&self, similarity: f32) -> f32 {
        let [zero, eighty] = self.similarity;
        zero + similarity.clamp(0.0, 100.0) / 80.0 * (eighty - zero)
    }

    /// Describe every face of `img` (one batch through the network).
    pub fn describe(&self, img: &RgbImage, faces: &mut [Face], nets: &dyn Networks) -> Result<(), VisionError> {
        if faces.is_empty() {
            return Ok(());
        }
        let side = self.size as usize;
        let mut data = Vec::with_capacity(faces.len() * side * side * 3);
        for face in faces.iter() {
            let b = &face.bbox;
            data.extend(crop(img, self.square([b.x1, b.y1, b.x2, b.y2]), side));
        }
        let input = Tensor::from_f32(vec![faces.len(), side, side, 3], data)
            .map_err(|e| VisionError::Config(format!("face crops: {e}")))?;
        let outs = nets.run(&self.network, input)?;
        let n = faces.len();
        let descriptors = self.output(&outs, self.dimensions, n)?;
        let ages = self.age_bins.map(|w| self.output(&outs, w, n)).transpose()?;
        let male = if self.gender { Some(self.output(&outs, 1, n)?) } else { None };
        for (i, face) in faces.iter_mut().enumerate() {
            let row = |v: &[f32], w: usize| v[i * w..(i + 1) * w].to_vec();
            let dist = ages.as_ref().zip(self.age_bins).map(|(a, w)| row(a, w));
            face.description = Some(FaceDescription {
                embedding: l2_normalised(&row(&descriptors, self.dimensions)),
                age: dist.as_deref().map(expected_age),
                age_range: dist.as_deref().map(|p| [quantile(p, 0.25), quantile(p, 0.75)]),
                male: male.as_ref().map(|m| m[i]),
            });
        }
        Ok(())
    }

    /// Human's crop box: enlarged about the centre, squared to the longer side, corners
    /// rounded (half up, as JavaScript's `Math.round`).
    fn square(&self, [x1, y1, x2, y2]: [f32; 4]) -> [i64; 4] {
        let (cx, cy) = (x1 + (x2 - x1) / 2.0, y1 + (y2 - y1) / 2.0);
        let half = (x2 - x1).abs().max((y2 - y1).abs()) * self.enlarge / 2.0;
        let r = |v: f32| (f64::from(v) + 0.5).floor() as i64;
        [r(cx - half), r(cy - half), r(cx + half), r(cy + half)]
    }

    /// The output `width` wide, as `n` rows.
    fn output(&self, outs: &[Tensor], width: usize, n: usize) -> Result<Vec<f32>, VisionError> {
        let t = outs.iter().find(|t| t.shape().last() == Some(&width) && t.len() == n * width).ok_or_else(|| {
            VisionError::MissingOutput {
                name: format!("{} x {width} from network `{}`", n, self.network),
                available: outs.iter().map(|t| format!("{:?}", t.shape())).collect::<Vec<_>>().join(", "),
            }
        })?;
        Ok(floats(t, &self.network)?.to_vec())
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()
}

/// The square `b` (black outside the image) resized to `side` x `side`, HWC RGB 0..255.
fn crop(img: &RgbImage, [x1, y1, x2, y2]: [i64; 4], side: usize) -> Vec<f32> {
    let (w, h) = (x2 - x1, y2 - y1);
    if w <= 0 || h <= 0 {
        return vec![0.0; side * side * 3];
    }
    let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
    let mut cut = vec![0u8; (w * h * 3) as usize];
    let (sx1, sy1, sx2, sy2) = (x1.max(0), y1.max(0), x2.min(iw), y2.min(ih));
    for sy in sy1..sy2 {
        if sx1 >= sx2 {
            break;
        }
        let src = ((sy * iw + sx1) * 3) as usize..((sy * iw + sx2) * 3) as usize;
        let at = (((sy - y1) * w + (sx1 - x1)) * 3) as usize;
        cut[at..at + src.len()].copy_from_slice(&img.as_raw()[src]);
    }
    let mut out = vec![0f32; side * side * 3];
    let view = RgbView { data: &cut, width: w as usize, height: h as usize };
    resize_rows(view, side, side, 0, 0, side, side, |y, row| {
        out[y * side * 3..(y + 1) * side * 3].copy_from_slice(row)
    });
    out
}

/// Human's reading of an age distribution: the most likely age, moved towards its more likely
/// neighbour by ten times that neighbour's probability.
fn expected_age(p: &[f32]) -> f32 {
    let i = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
    let before = if i > 0 { p[i - 1] } else { 0.0 };
    let after = p.get(i + 1).copied().unwrap_or(0.0);
    if before > after { i as f32 - 10.0 * before } else { i as f32 + 10.0 * after }
}

/// The age at which the distribution's cumulative probability reaches `q`.
fn quantile(p: &[f32], q: f32) -> u32 {
    let total: f32 = p.iter().sum();
    let mut sum = 0.0;
    for (age, v) in p.iter().enumerate() {
        sum += v;
        if sum >= q * total {
            return age as u32;
        }
    }
    p.len().saturating_sub(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describer() -> FaceDescriber {
        FaceDescriber {
            network: describe(),
            size: 224,
            enlarge: 1.4,
            dimensions: 1024,
            age_bins: Some(100),
            gender: true,
            similarity: [0.35, 0.75],
        }
    }

    #[test]
    fn the_crop_box_is_humans() {
        // tools/face_crops.py human_box([10, 20, 50, 40]): centre (30, 30), half 28.
        assert_eq!(describer().square([10.0, 20.0, 50.0, 40.0]), [2, 2, 58, 58]);
    }

    #[test]
    fn crops_are_black_outside_the_image() {
        let img = RgbImage::from_pixel(4, 4, image::Rgb([200, 100, 50]));
        let out = crop(&img, [-4, -4, 4, 4], 8);
        assert_eq!(&out[..3], &[0.0, 0.0, 0.0]);
        let last = out.len() - 3;
        assert_eq!(&out[last..], &[200.0, 100.0, 50.0]);
    }

    #[test]
    fn similarity_maps_both_ways_and_checks_refuse_nonsense() {
        let d = describer();
        assert_eq!(d.similarity_of_cosine(0.75), 80.0);
        assert_eq!(d.similarity_of_cosine(0.2), 0.0);
        assert_eq!(d.similarity_of_cosine(0.99), 100.0);
        assert!((d.cosine_of_similarity(80.0) - 0.75).abs() < 1e-6);
        assert!(d.check().is_ok());
        assert!(FaceDescriber { similarity: [0.8, 0.5], ..d.clone() }.check().is_err());
        assert!(FaceDescriber { age_bins: Some(1024), ..d }.check().is_err());
    }

    #[test]
    fn age_readings() {
        let mut p = vec![0.0f32; 100];
        p[29] = 0.5;
        p[30] = 0.3;
        p[28] = 0.2;
        assert!((expected_age(&p) - 32.0).abs() < 1e-5);
        assert_eq!((quantile(&p, 0.1), quantile(&p, 0.9)), (28, 30));
    }
}
