//! From a decoded RGB image to the tensor a model expects, as its spec describes.

use image::RgbImage;
use serde::{Deserialize, Serialize};
use strix_core::{DType, Tensor, TensorData};

use crate::VisionError;
use crate::resize::{RgbView, resize_rows};

/// Memory order of the model input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[N, C, H, W]` (PyTorch, PaddlePaddle exports).
    Nchw,
    /// `[N, H, W, C]` (TensorFlow, TF.js, MediaPipe exports).
    Nhwc,
}

/// Element type fed to the model; integer inputs get rounded pixel values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    #[default]
    F32,
    I32,
    U8,
}

impl InputType {
    pub fn dtype(self) -> DType {
        match self {
            InputType::F32 => DType::F32,
            InputType::I32 => DType::I32,
            InputType::U8 => DType::U8,
        }
    }
}

/// The model input an image is turned into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input name in the ONNX graph; the first input when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub layout: Layout,
    #[serde(default)]
    pub dtype: InputType,
    pub width: u32,
    pub height: u32,
}

/// How the image is brought to the input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Resize {
    /// Resize to the input size, ignoring the aspect ratio.
    // Braced (not unit) variants, so serde refuses unknown keys beside `mode` for them too.
    Stretch {},
    /// Resize so the shorter side is `shorter_side`, then cut the centre (ImageNet evaluation).
    ShorterSideCrop { shorter_side: u32 },
    /// Pad with black to a centred square (`pad = (side - size) / 2`, rounded down), then resize.
    PadSquare {},
    /// Keep the aspect ratio, fit inside the input and pad the rest with `fill` (YOLO style).
    Letterbox {
        #[serde(default = "default_fill")]
        fill: u8,
    },
}

fn default_fill() -> u8 {
    114
}

/// Channel order of the model input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
    /// One channel: the luma of the RGB pixel (Rec. 709 weights, as `image`'s greyscale
    /// conversion, which training uses); `mean[0]` and `std[0]` normalise it.
    Gray,
}

/// Rec. 709 luma weights (what `image::DynamicImage::to_luma8` uses).
const LUMA: [f32; 3] = [0.2126, 0.7152, 0.0722];

/// Preprocessing of a model spec. Values are `(pixel - mean) / std` with pixels in 0..=255 and
/// `mean`/`std` given in the model's channel order (so BGR models list B first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    pub resize: Resize,
    #[serde(default)]
    pub channels: ChannelOrder,
    #[serde(default = "zeros")]
    pub mean: [f32; 3],
    #[serde(default = "ones")]
    pub std: [f32; 3],
}

fn zeros() -> [f32; 3] {
    [0.0; 3]
}

fn ones() -> [f32; 3] {
    [1.0; 3]
}

/// Where a model-input pixel came from: `source = input * scale + offset`, per axis, in pixel
/// units of the original image (after EXIF orientation). Decoders use it to map boxes and
/// keypoints back onto the original.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    pub source_width: u32,
    pub source_height: u32,
    pub scale: [f32; 2],
    pub offset: [f32; 2],
}

impl Geometry {
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        (x * self.scale[0] + self.offset[0], y * self.scale[1] + self.offset[1])
    }
}

/// Turns images into model input according to an [`InputSpec`] and a [`Preprocess`].
#[derive(Clone, Debug)]
pub struct Preprocessor {
    input: InputSpec,
    resize: Resize,
    /// Source channel (0 = R) for each model channel.
    order: [usize; 3],
    /// Model channels: 3, or 1 for greyscale.
    channels: usize,
    scale: [f32; 3],
    bias: [f32; 3],
}

impl Preprocessor {
    pub fn new(input: &InputSpec, pre: &Preprocess) -> Result<Self, VisionError> {
        if input.width == 0 || input.height == 0 {
            return Err(VisionError::Config(format!("input size {}x{} is empty", input.width, input.height)));
        }
        if let Some(c) = pre.std.iter().position(|s| *s == 0.0 || !s.is_finite()) {
            return Err(VisionError::Config(format!("std[{c}] must be a non-zero number, got {}", pre.std[c])));
        }
        if let Resize::ShorterSideCrop { shorter_side } = pre.resize
            && shorter_side < input.width.max(input.height)
        {
            return Err(VisionError::Config(format!(
                "shorter_side {shorter_side} is smaller than the {}x{} crop",
                input.width, input.height
            )));
        }
        if matches!(pre.resize, Resize::PadSquare {}) && input.width != input.height {
            return Err(VisionError::Config(format!(
                "pad-square needs a square input, not {}x{}",
                input.width, input.height
            )));
        }
        let order = match pre.channels {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
            ChannelOrder::Gray => [0, 0, 0],
        };
        let channels = if pre.channels == ChannelOrder::Gray { 1 } else { 3 };
        let scale = [1.0 / pre.std[0], 1.0 / pre.std[1], 1.0 / pre.std[2]];
        let bias = [-pre.mean[0] * scale[0], -pre.mean[1] * scale[1], -pre.mean[2] * scale[2]];
        Ok(Preprocessor { input: input.clone(), resize: pre.resize, order, channels, scale, bias })
    }

    pub fn input(&self) -> &InputSpec {
        &self.input
    }

    /// Values per image: width x height x channels (3, or 1 for greyscale).
    pub fn sample_len(&self) -> usize {
        self.input.width as usize * self.input.height as usize * self.channels
    }

    /// Tensor shape for `batch` images.
    pub fn shape(&self, batch: usize) -> Vec<usize> {
        let (w, h) = (self.input.width as usize, self.input.height as usize);
        match self.input.layout {
            Layout::Nchw => vec![batch, self.channels, h, w],
            Layout::Nhwc => vec![batch, h, w, self.channels],
        }
    }

    /// Write one image's input values into `out` (length [`Self::sample_len`]) as f32, in the
    /// model's layout; integer inputs are converted by [`Self::into_tensor`].
    pub fn run(&self, img: &RgbImage, out: &mut [f32]) -> Geometry {
        assert_eq!(out.len(), self.sample_len(), "output slice must hold one sample");
        let (iw, ih) = (self.input.width as usize, self.input.height as usize);
        let (sw, sh) = (img.width() as usize, img.height() as usize);
        let view = RgbView { data: img.as_raw(), width: sw, height: sh };
        let plane = iw * ih;
        let (order, scale, bias) = (self.order, self.scale, self.bias);
        let nchw = self.input.layout == Layout::Nchw;
        // Store `row` (interleaved RGB, `row.len() / 3` pixels) at pixel (x, y) of the input,
        // normalised, in the model's channel order and layout.
        let grey = self.channels == 1;
        let mut put = |x: usize, y: usize, row: &[f32]| {
            let n = row.len() / 3;
            if grey {
                // One plane: NCHW and NHWC are the same layout.
                let start = y * iw + x;
                for (d, px) in out[start..start + n].iter_mut().zip(row.chunks_exact(3)) {
                    *d = (px[0] * LUMA[0] + px[1] * LUMA[1] + px[2] * LUMA[2]) * scale[0] + bias[0];
                }
            } else if nchw {
                for c in 0..3 {
                    let start = c * plane + y * iw + x;
                    let (k, o, s, b) = (order[c], &mut out[start..start + n], scale[c], bias[c]);
                    for (d, px) in o.iter_mut().zip(row.chunks_exact(3)) {
                        *d = px[k] * s + b;
                    }
                }
            } else {
                let start = (y * iw + x) * 3;
                for (d, px) in out[start..start + n * 3].chunks_exact_mut(3).zip(row.chunks_exact(3)) {
                    for c in 0..3 {
                        d[c] = px[order[c]] * scale[c] + bias[c];
                    }
                }
            }
        };
        let geometry = |scale: [f64; 2], offset: [f64; 2]| Geometry {
            source_width: sw as u32,
            source_height: sh as u32,
            scale: [scale[0] as f32, scale[1] as f32],
            offset: [offset[0] as f32, offset[1] as f32],
        };
        match self.resize {
            Resize::Stretch {} => {
                resize_rows(view, iw, ih, 0, 0, iw, ih, |y, row| put(0, y, row));
                geometry([sw as f64 / iw as f64, sh as f64 / ih as f64], [0.0, 0.0])
            }
            Resize::ShorterSideCrop { shorter_side } => {
                let s = shorter_side as f64 / sw.min(sh) as f64;
                // Python's round() (half to even), as the reference pipeline computes it.
                let rw = ((sw as f64 * s).round_ties_even() as usize).max(iw);
                let rh = ((sh as f64 * s).round_ties_even() as usize).max(ih);
                let (x0, y0) = ((rw - iw) / 2, (rh - ih) / 2);
                resize_rows(view, rw, rh, x0, y0, iw, ih, |y, row| put(0, y, row));
                let (kx, ky) = (sw as f64 / rw as f64, sh as f64 / rh as f64);
                geometry([kx, ky], [x0 as f64 * kx, y0 as f64 * ky])
            }
            Resize::PadSquare {} => {
                let side = sw.max(sh);
                let (top, left) = ((side - sh) / 2, (side - sw) / 2);
                let mut canvas = vec![0u8; side * side * 3];
                for (y, row) in img.as_raw().chunks_exact(sw * 3).enumerate() {
                    let start = ((y + top) * side + left) * 3;
                    canvas[start..start + sw * 3].copy_from_slice(row);
                }
                let padded = RgbView { data: &canvas, width: side, height: side };
                resize_rows(padded, iw, ih, 0, 0, iw, ih, |y, row| put(0, y, row));
                let k = side as f64 / iw as f64;
                geometry([k, k], [-(left as f64), -(top as f64)])
            }
            Resize::Letterbox { fill } => {
                let k = (iw as f64 / sw as f64).min(ih as f64 / sh as f64);
                let nw = ((sw as f64 * k).round() as usize).clamp(1, iw);
                let nh = ((sh as f64 * k).round() as usize).clamp(1, ih);
                let (px, py) = ((iw - nw) / 2, (ih - nh) / 2);
                let fill_row = vec![f32::from(fill); iw * 3];
                for y in 0..ih {
                    if y < py || y >= py + nh {
                        put(0, y, &fill_row);
                    } else {
                        put(0, y, &fill_row[..px * 3]);
                        put(px + nw, y, &fill_row[..(iw - px - nw) * 3]);
                    }
                }
                resize_rows(view, nw, nh, 0, 0, nw, nh, |y, row| put(px, y + py, row));
                let (kx, ky) = (sw as f64 / nw as f64, sh as f64 / nh as f64);
                geometry([kx, ky], [-(px as f64) * kx, -(py as f64) * ky])
            }
        }
    }

    /// The smallest share of a `width` x `height` image's size that [`Self::run`] can take
    /// without enlarging it anywhere: a smaller version of the image (decoded with DCT scaling)
    /// down to this share still only shrinks on its way into the model.
    pub fn min_source_scale(&self, width: u32, height: u32) -> f64 {
        let (iw, ih) = (f64::from(self.input.width), f64::from(self.input.height));
        let (sw, sh) = (f64::from(width.max(1)), f64::from(height.max(1)));
        let needed = match self.resize {
            Resize::Stretch {} => (iw / sw).max(ih / sh),
            Resize::ShorterSideCrop { shorter_side } => f64::from(shorter_side) / sw.min(sh),
            Resize::PadSquare {} => iw.max(ih) / sw.max(sh),
            Resize::Letterbox { .. } => (iw / sw).min(ih / sh),
        };
        needed.min(1.0)
    }

    /// Wrap `batch` samples written by [`Self::run`] into the model's input tensor, rounding
    /// to integers (half to even) for integer inputs.
    pub fn into_tensor(&self, data: Vec<f32>, batch: usize) -> Tensor {
        let shape = self.shape(batch);
        let data = match self.input.dtype {
            InputType::F32 => TensorData::F32(data),
            InputType::I32 => TensorData::I32(data.iter().map(|v| v.round_ties_even() as i32).collect()),
            InputType::U8 => TensorData::U8(data.iter().map(|v| v.round_ties_even().clamp(0.0, 255.0) as u8).collect()),
        };
        // `shape` comes from the same spec that sized `data`; a mismatch is a caller bug.
        Tensor::new(shape, data).expect("batch buffer sized by sample_len")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(layout: Layout, w: u32, h: u32) -> InputSpec {
        InputSpec { name: None, layout, dtype: InputType::F32, width: w, height: h }
    }

    fn pre(resize: Resize) -> Preprocess {
        Preprocess { resize, channels: ChannelOrder::Rgb, mean: [0.0; 3], std: [1.0; 3] }
    }

    #[test]
    fn spec_parses_from_toml_and_rejects_unknown_fields() {
        let p: Preprocess = toml::from_str(
            "resize = { mode = \"shorter-side-crop\", shorter_side = 256 }\nmean = [127.0, 127.0, 127.0]\nstd = [128.0, 128.0, 128.0]",
        )
        .unwrap();
        assert_eq!(p.resize, Resize::ShorterSideCrop { shorter_side: 256 });
        assert_eq!(p.channels, ChannelOrder::Rgb);
        let err = toml::from_str::<Preprocess>("resize = { mode = \"stretch\" }\nmeans = [0.0, 0.0, 0.0]").unwrap_err();
        assert!(err.to_string().contains("unknown field `means`"), "{err}");
        let err = toml::from_str::<Preprocess>("resize = { mode = \"stretch\", size = 3 }").unwrap_err();
        assert!(err.to_string().contains("size"), "{err}");
    }

    #[test]
    fn layout_channel_order_and_normalisation() {
        let img = RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30]));
        let mut p = pre(Resize::Stretch {});
        p.channels = ChannelOrder::Bgr;
        p.mean = [30.0, 20.0, 10.0];
        p.std = [2.0, 2.0, 2.0];
        let nchw = Preprocessor::new(&spec(Layout::Nchw, 3, 2), &p).unwrap();
        let mut out = vec![f32::NAN; nchw.sample_len()];
        nchw.run(&img, &mut out);
        assert!(out.iter().all(|v| *v == 0.0), "{out:?}");

        p.mean = [0.0; 3];
        let nhwc = Preprocessor::new(&spec(Layout::Nhwc, 3, 2), &p).unwrap();
        let mut out = vec![f32::NAN; nhwc.sample_len()];
        nhwc.run(&img, &mut out);
        assert_eq!(&out[..6], &[15.0, 10.0, 5.0, 15.0, 10.0, 5.0]);
    }

    #[test]
    fn shorter_side_crop_takes_the_centre() {
        // 8x4 image whose columns encode x; shorter side 4 -> no scaling, centre crop 4x4 = x 2..6.
        let img = RgbImage::from_fn(8, 4, |x, _| image::Rgb([x as u8 * 10, 0, 0]));
        let p =
            Preprocessor::new(&spec(Layout::Nhwc, 4, 4), &pre(Resize::ShorterSideCrop { shorter_side: 4 })).unwrap();
        let mut out = vec![0.0; p.sample_len()];
        let g = p.run(&img, &mut out);
        let first_row: Vec<f32> = out[..12].chunks(3).map(|px| px[0]).collect();
        assert_eq!(first_row, vec![20.0, 30.0, 40.0, 50.0]);
        assert_eq!(g.to_source(0.0, 0.0), (2.0, 0.0));
    }

    #[test]
    fn pad_square_is_black_centred_and_maps_back() {
        let img = RgbImage::from_pixel(4, 2, image::Rgb([255, 255, 255]));
        let p = Preprocessor::new(&spec(Layout::Nhwc, 4, 4), &pre(Resize::PadSquare {})).unwrap();
        let mut out = vec![0.0; p.sample_len()];
        let g = p.run(&img, &mut out);
        let col0: Vec<f32> = (0..4).map(|y| out[y * 12]).collect();
        assert_eq!(col0, vec![0.0, 255.0, 255.0, 0.0]);
        assert_eq!(g.to_source(0.0, 1.0), (0.0, 0.0));
    }

    #[test]
    fn letterbox_pads_with_fill() {
        let img = RgbImage::from_pixel(4, 2, image::Rgb([0, 0, 0]));
        let p = Preprocessor::new(&spec(Layout::Nhwc, 4, 4), &pre(Resize::Letterbox { fill: 114 })).unwrap();
        let mut out = vec![0.0; p.sample_len()];
        let g = p.run(&img, &mut out);
        let col0: Vec<f32> = (0..4).map(|y| out[y * 12]).collect();
        assert_eq!(col0, vec![114.0, 0.0, 0.0, 114.0]);
        assert_eq!(g.to_source(2.0, 1.0), (2.0, 0.0));
    }

    #[test]
    fn grey_models_get_one_luma_plane() {
        let mut img = RgbImage::from_pixel(2, 1, image::Rgb([100, 100, 100]));
        img.put_pixel(1, 0, image::Rgb([255, 0, 0]));
        let mut p = pre(Resize::Stretch {});
        p.channels = ChannelOrder::Gray;
        p.mean = [127.5, 0.0, 0.0];
        p.std = [127.5, 1.0, 1.0];
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let pp = Preprocessor::new(&spec(layout, 2, 1), &p).unwrap();
            assert_eq!(pp.sample_len(), 2);
            let mut out = vec![0.0; pp.sample_len()];
            pp.run(&img, &mut out);
            assert!((out[0] - (100.0 - 127.5) / 127.5).abs() < 1e-5, "{out:?}");
            assert!((out[1] - (255.0 * 0.2126 - 127.5) / 127.5).abs() < 1e-5, "{out:?}");
        }
        let pp = Preprocessor::new(&spec(Layout::Nchw, 2, 1), &p).unwrap();
        assert_eq!(pp.shape(4), vec![4, 1, 1, 2]);
    }

    #[test]
    fn integer_inputs_are_rounded_half_to_even() {
        let mut s = spec(Layout::Nhwc, 1, 1);
        s.dtype = InputType::I32;
        let p = Preprocessor::new(&s, &pre(Resize::Stretch {})).unwrap();
        let t = p.into_tensor(vec![0.5, 1.5, 2.6], 1);
        assert_eq!(t.data(), &TensorData::I32(vec![0, 2, 3]));
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut p = pre(Resize::ShorterSideCrop { shorter_side: 200 });
        assert!(Preprocessor::new(&spec(Layout::Nchw, 224, 224), &p).is_err());
        p.resize = Resize::Stretch {};
        p.std = [1.0, 0.0, 1.0];
        let err = Preprocessor::new(&spec(Layout::Nchw, 224, 224), &p).unwrap_err();
        assert!(err.to_string().contains("std[1]"), "{err}");
        assert!(Preprocessor::new(&spec(Layout::Nchw, 4, 2), &pre(Resize::PadSquare {})).is_err());
    }
}
