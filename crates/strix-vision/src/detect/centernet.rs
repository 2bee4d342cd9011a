//! CenterNet-style heat maps: one channel per class whose local maxima are object centres,
//! with box size (and optionally a sub-cell centre offset) regressed at each cell.

use serde::{Deserialize, Serialize};
use strix_core::{BBox, Detection};

use super::{Candidate, Nms, finish, sigmoid};
use crate::outputs::floats;
use crate::{Geometry, Layout, Outputs, VisionError};

/// Units of the regressed box size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeUnits {
    /// Heat-map cells (multiplied by the stride), as the CenterNet paper's heads.
    #[default]
    Grid,
    /// Model-input pixels.
    Pixels,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterNet {
    /// Class heat map `[N, C, H, W]` (or `[N, H, W, C]` with `layout = "nhwc"`).
    pub heatmap_output: String,
    /// Box width and height at each cell, `[N, 2, H, W]`.
    pub size_output: String,
    /// Centre offset within the cell, `[N, 2, H, W]`; without it centres sit mid-cell.
    #[serde(default)]
    pub offset_output: Option<String>,
    #[serde(default = "nchw")]
    pub layout: Layout,
    /// The heat map holds logits: apply a sigmoid.
    #[serde(default)]
    pub heatmap_logits: bool,
    #[serde(default)]
    pub size_units: SizeUnits,
    /// Peaks kept per image before NMS, best first.
    #[serde(default = "top_k")]
    pub top_k: usize,
    #[serde(default)]
    pub nms: Nms,
}

fn nchw() -> Layout {
    Layout::Nchw
}

fn top_k() -> usize {
    100
}

/// A `[N, C, H, W]` or `[N, H, W, C]` tensor read as (image, channel, y, x).
struct Planes<'a> {
    data: &'a [f32],
    c: usize,
    h: usize,
    w: usize,
    nhwc: bool,
}

impl Planes<'_> {
    fn at(&self, b: usize, c: usize, y: usize, x: usize) -> f32 {
        if self.nhwc {
            self.data[((b * self.h + y) * self.w + x) * self.c + c]
        } else {
            self.data[((b * self.c + c) * self.h + y) * self.w + x]
        }
    }
}

impl CenterNet {
    pub fn decode(
        &self,
        outputs: &Outputs,
        geometries: &[Geometry],
        input: (u32, u32),
        labels: &[String],
    ) -> Result<Vec<Vec<Detection>>, VisionError> {
        let nhwc = self.layout == Layout::Nhwc;
        let planes = |name: &str, channels: Option<usize>| -> Result<Planes<'_>, VisionError> {
            let t = outputs.named(name)?;
            let s = t.shape();
            let (c, h, w) =
                if s.len() == 4 { if nhwc { (s[3], s[1], s[2]) } else { (s[1], s[2], s[3]) } } else { (0, 0, 0) };
            if s.len() != 4 || s[0] != geometries.len() || channels.is_some_and(|want| want != c) {
                let dims = if nhwc { "[N, H, W, C]" } else { "[N, C, H, W]" };
                return Err(VisionError::OutputShape {
                    name: name.to_string(),
                    shape: s.to_vec(),
                    expected: format!(
                        "expected {dims} with N = {}{}",
                        geometries.len(),
                        channels.map(|c| format!(", C = {c}")).unwrap_or_default()
                    ),
                });
            }
            Ok(Planes { data: floats(t, name)?, c, h, w, nhwc })
        };
        let heat = planes(&self.heatmap_output, None)?;
        let size = planes(&self.size_output, Some(2))?;
        let offset = self.offset_output.as_deref().map(|o| planes(o, Some(2))).transpose()?;
        for p in std::iter::once(&size).chain(offset.as_ref()) {
            if (p.h, p.w) != (heat.h, heat.w) {
                return Err(VisionError::OutputShape {
                    name: self.size_output.clone(),
                    shape: vec![p.h, p.w],
                    expected: format!("the heat map's {}x{} cells", heat.h, heat.w),
                });
            }
        }
        let (stride_x, stride_y) = (input.0 as f32 / heat.w as f32, input.1 as f32 / heat.h as f32);
        let value = |b, c, y, x| {
            let v = heat.at(b, c, y, x);
            if self.heatmap_logits { sigmoid(v) } else { v }
        };
        let mut out = Vec::with_capacity(geometries.len());
        for (b, geometry) in geometries.iter().enumerate() {
            let mut peaks = Vec::new();
            for c in 0..heat.c {
                for y in 0..heat.h {
                    for x in 0..heat.w {
                        let v = value(b, c, y, x);
                        if v <= self.nms.score_threshold {
                            continue;
                        }
                        // A peak is the maximum of its 3x3 neighbourhood (CenterNet's max-pool NMS).
                        let is_peak = (y.saturating_sub(1)..(y + 2).min(heat.h))
                            .all(|yy| (x.saturating_sub(1)..(x + 2).min(heat.w)).all(|xx| value(b, c, yy, xx) <= v));
                        if is_peak {
                            peaks.push((v, c, y, x));
                        }
                    }
                }
            }
            peaks.sort_by(|a, b| b.0.total_cmp(&a.0));
            peaks.truncate(self.top_k);
            let candidates = peaks
                .into_iter()
                .map(|(score, class_id, y, x)| {
                    let (ox, oy) = offset.as_ref().map_or((0.5, 0.5), |o| (o.at(b, 0, y, x), o.at(b, 1, y, x)));
                    let (cx, cy) = ((x as f32 + ox) * stride_x, (y as f32 + oy) * stride_y);
                    let (w, h) = (size.at(b, 0, y, x), size.at(b, 1, y, x));
                    let (w, h) = match self.size_units {
                        SizeUnits::Grid => (w * stride_x, h * stride_y),
                        SizeUnits::Pixels => (w, h),
                    };
                    Candidate { bbox: BBox::from_center(cx, cy, w, h), score, class_id }
                })
                .collect();
            out.push(finish(candidates, &self.nms, geometry, labels));
        }
        Ok(out)
    }
}
