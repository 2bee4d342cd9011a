//! Semantic segmentation: a probability map (one channel: foreground) or class scores per
//! pixel, brought back to the image's size.

use serde::{Deserialize, Serialize};
use strix_core::SegMask;

use crate::outputs::floats;
use crate::{Geometry, Layout, Outputs, VisionError};

/// What the model's mask values are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Probabilities already.
    #[default]
    None,
    /// Logits of independent probabilities.
    Sigmoid,
    /// Logits over classes (argmax decides; values are not needed as probabilities).
    Softmax,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskDecoder {
    #[serde(default)]
    pub output: Option<String>,
    /// `[N, H, W, C]` or `[N, C, H, W]`.
    #[serde(default = "nhwc")]
    pub layout: Layout,
    #[serde(default)]
    pub activation: Activation,
    /// Foreground above this probability (one-channel masks).
    #[serde(default = "half")]
    pub threshold: f32,
}

fn nhwc() -> Layout {
    Layout::Nhwc
}

fn half() -> f32 {
    0.5
}

impl MaskDecoder {
    /// One mask per image at the image's size. Labels name the classes (for one channel:
    /// the foreground; the background is added as class 0).
    pub fn decode(
        &self,
        outputs: &Outputs,
        geometries: &[Geometry],
        input: (u32, u32),
        labels: &[String],
    ) -> Result<Vec<SegMask>, VisionError> {
        let (name, t) = outputs.get(self.output.as_deref())?;
        let s = t.shape();
        if s.len() != 4 || s[0] != geometries.len() {
            return Err(VisionError::OutputShape {
                name: name.to_string(),
                shape: s.to_vec(),
                expected: format!("a mask output must be 4-D with {} image(s)", geometries.len()),
            });
        }
        let nhwc = self.layout == Layout::Nhwc;
        let (c, h, w) = if nhwc { (s[3], s[1], s[2]) } else { (s[1], s[2], s[3]) };
        if c == 0 || c > 255 {
            return Err(VisionError::OutputShape {
                name: name.to_string(),
                shape: s.to_vec(),
                expected: "1 to 255 channels".into(),
            });
        }
        if c > 1 && !labels.is_empty() && labels.len() != c {
            return Err(VisionError::OutputShape {
                name: name.to_string(),
                shape: s.to_vec(),
                expected: format!("the spec lists {} classes", labels.len()),
            });
        }
        let data = floats(t, name)?;
        let plane = h * w;
        Ok(geometries
            .iter()
            .enumerate()
            .map(|(b, g)| {
                let at = |ch: usize, y: usize, x: usize| -> f32 {
                    let v = if nhwc {
                        data[b * plane * c + (y * w + x) * c + ch]
                    } else {
                        data[(b * c + ch) * plane + y * w + x]
                    };
                    if self.activation == Activation::Sigmoid { 1.0 / (1.0 + (-v).exp()) } else { v }
                };
                let sampler = Sampler::new(g, input, (w, h));
                let (sw, sh) = (g.source_width as usize, g.source_height as usize);
                if c == 1 {
                    let mut probability = vec![0u8; sw * sh];
                    let mut labels_px = vec![0u8; sw * sh];
                    for y in 0..sh {
                        for x in 0..sw {
                            let p = sampler.sample(x, y, |yy, xx| at(0, yy, xx)).unwrap_or(0.0);
                            probability[y * sw + x] = (p.clamp(0.0, 1.0) * 255.0).round() as u8;
                            labels_px[y * sw + x] = u8::from(p > self.threshold);
                        }
                    }
                    let fg = labels.first().cloned().unwrap_or_else(|| "foreground".into());
                    SegMask {
                        width: sw as u32,
                        height: sh as u32,
                        classes: vec!["background".into(), fg],
                        labels: labels_px,
                        probability: Some(probability),
                    }
                } else {
                    let mut labels_px = vec![0u8; sw * sh];
                    for y in 0..sh {
                        for x in 0..sw {
                            let best = (0..c)
                                .map(|ch| {
                                    (
                                        ch,
                                        sampler.sample(x, y, |yy, xx| at(ch, yy, xx)).unwrap_or(if ch == 0 {
                                            1.0
                                        } else {
                                            0.0
                                        }),
                                    )
                                })
                                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                                .map_or(0, |(ch, _)| ch);
                            labels_px[y * sw + x] = best as u8;
                        }
                    }
                    let classes =
                        (0..c).map(|i| labels.get(i).cloned().unwrap_or_else(|| format!("class {i}"))).collect();
                    SegMask { width: sw as u32, height: sh as u32, classes, labels: labels_px, probability: None }
                }
            })
            .collect())
    }
}

/// Bilinear sampling of a mask at the position an image pixel had in the model input.
struct Sampler {
    /// Image pixel centre -> mask coordinate, per axis: `m = (s + 0.5) * a + b`.
    ax: f32,
    bx: f32,
    ay: f32,
    by: f32,
    w: usize,
    h: usize,
}

impl Sampler {
    fn new(g: &Geometry, input: (u32, u32), mask: (usize, usize)) -> Self {
        // source = input * scale + offset  =>  input = (source - offset) / scale;
        // mask cells span input / mask pixels each, centres at half-pixel positions.
        let kx = mask.0 as f32 / input.0 as f32;
        let ky = mask.1 as f32 / input.1 as f32;
        Sampler {
            ax: kx / g.scale[0],
            bx: -g.offset[0] / g.scale[0] * kx - 0.5,
            ay: ky / g.scale[1],
            by: -g.offset[1] / g.scale[1] * ky - 0.5,
            w: mask.0,
            h: mask.1,
        }
    }

    /// `None` when the pixel was outside what the model saw (cropped or padded away).
    fn sample(&self, x: usize, y: usize, at: impl Fn(usize, usize) -> f32) -> Option<f32> {
        let mx = (x as f32 + 0.5) * self.ax + self.bx;
        let my = (y as f32 + 0.5) * self.ay + self.by;
        if mx < -0.5 || my < -0.5 || mx > self.w as f32 - 0.5 || my > self.h as f32 - 0.5 {
            return None;
        }
        let (mx, my) = (mx.clamp(0.0, (self.w - 1) as f32), my.clamp(0.0, (self.h - 1) as f32));
        let (x0, y0) = (mx.floor() as usize, my.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.w - 1), (y0 + 1).min(self.h - 1));
        let (fx, fy) = (mx - x0 as f32, my - y0 as f32);
        let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx;
        let bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx;
        Some(top + (bottom - top) * fy)
    }
}

/// A mask as an indexed-colour PNG: pixel values are class indices (what evaluation tools
/// read) and the palette shows them in colour (background black).
pub fn mask_png(mask: &SegMask) -> Result<Vec<u8>, VisionError> {
    let mut palette = vec![0u8; 3];
    for c in 1..mask.classes.len().max(2) {
        palette.extend_from_slice(&crate::draw::PALETTE[c % crate::draw::PALETTE.len()]);
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, mask.width, mask.height);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_palette(palette);
    let err = |e: png::EncodingError| VisionError::Encode { format: "PNG", source: e.into() };
    let mut writer = encoder.write_header().map_err(err)?;
    writer.write_image_data(&mask.labels).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}

/// A label mask PNG as `(width, height, labels)`: palette indices of an indexed PNG, or the
/// values of an 8-bit grey one (as VOC, ADE20K and Cityscapes label maps are stored).
pub fn read_label_png(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), VisionError> {
    let corrupt = |e: crate::error::Cause| VisionError::Corrupt { format: "PNG", source: e };
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(|e| corrupt(e.into()))?;
    let info = reader.info();
    let (w, h, color, depth) = (info.width, info.height, info.color_type, info.bit_depth);
    if depth != png::BitDepth::Eight || !matches!(color, png::ColorType::Indexed | png::ColorType::Grayscale) {
        return Err(corrupt(
            format!("a label mask must be an 8-bit indexed or grey PNG, not {color:?} {depth:?}").into(),
        ));
    }
    let mut buf = vec![0u8; reader.output_buffer_size().ok_or_else(|| corrupt("image too large".into()))?];
    let frame = reader.next_frame(&mut buf).map_err(|e| corrupt(e.into()))?;
    let line = frame.line_size;
    let labels = buf.chunks(line).take(h as usize).flat_map(|row| row[..w as usize].to_vec()).collect();
    Ok((w, h, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strix_core::Tensor;

    fn stretch(sw: u32, sh: u32, iw: u32, ih: u32) -> Geometry {
        Geometry {
            source_width: sw,
            source_height: sh,
            scale: [sw as f32 / iw as f32, sh as f32 / ih as f32],
            offset: [0.0, 0.0],
        }
    }

    #[test]
    fn one_channel_mask_is_resized_back_and_thresholded() {
        // 2x2 mask: left column person.
        let t = Tensor::from_f32(vec![1, 2, 2, 1], vec![1.0, 0.0, 1.0, 0.0]).unwrap();
        let names = vec!["m".to_string()];
        let d = MaskDecoder { output: None, layout: Layout::Nhwc, activation: Activation::None, threshold: 0.5 };
        let masks = d
            .decode(&Outputs::new(&names, std::slice::from_ref(&t)), &[stretch(4, 2, 2, 2)], (2, 2), &["person".into()])
            .unwrap();
        let m = &masks[0];
        assert_eq!((m.width, m.height), (4, 2));
        assert_eq!(m.labels, vec![1, 1, 0, 0, 1, 1, 0, 0]);
        assert_eq!(m.classes, vec!["background", "person"]);
        assert_eq!(m.coverage(), vec![0.5, 0.5]);
    }

    #[test]
    fn mask_pngs_keep_class_indices() {
        let m = SegMask {
            width: 3,
            height: 2,
            classes: vec!["bg".into(), "a".into(), "b".into()],
            labels: vec![0, 1, 2, 2, 1, 0],
            probability: None,
        };
        let png = mask_png(&m).unwrap();
        assert_eq!(read_label_png(&png).unwrap(), (3, 2, vec![0, 1, 2, 2, 1, 0]));
        // The same file opens as a colour picture.
        let rgb = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(rgb.get_pixel(0, 0).0, [0, 0, 0]);
        assert_ne!(rgb.get_pixel(1, 0).0, [0, 0, 0]);
    }

    #[test]
    fn many_classes_take_the_argmax() {
        // NCHW, 3 classes on a 1x2 mask: pixel 0 -> class 2, pixel 1 -> class 1.
        let t = Tensor::from_f32(vec![1, 3, 1, 2], vec![0.0, 0.0, 0.1, 0.9, 0.8, 0.05]).unwrap();
        let names = vec!["m".to_string()];
        let d = MaskDecoder { output: None, layout: Layout::Nchw, activation: Activation::Softmax, threshold: 0.5 };
        let masks =
            d.decode(&Outputs::new(&names, std::slice::from_ref(&t)), &[stretch(2, 1, 2, 1)], (2, 1), &[]).unwrap();
        assert_eq!(masks[0].labels, vec![2, 1]);
    }
}
