//! Detection batches: each image decoded, augmented with its boxes (training) and normalised
//! into `[n, 3, h, w]` floats, in parallel on a background thread.

use std::sync::Arc;

use image::RgbImage;
use rayon::prelude::*;
use strix_data::box_augment::BoxAugment;
use strix_data::detection::DetectionSet;
use strix_data::{Loader, Normalize, Rng};
use strix_vision::DecodeLimits;

use super::assign::Target;

/// One batch: pixels, per image its objects (input pixels, `x1 y1 x2 y2`).
#[derive(Debug, Default)]
pub struct DetBatch {
    pub images: Vec<f32>,
    pub targets: Vec<Vec<Target>>,
    pub items: Vec<usize>,
    /// `(index, reason)` of images that could not be decoded.
    pub failed: Vec<(usize, String)>,
}

/// An RGB canvas as normalised planar floats appended to `out`.
pub fn planar(img: &RgbImage, normalize: &Normalize, out: &mut Vec<f32>) {
    let plane = (img.width() * img.height()) as usize;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[start + c * plane + i] = (f32::from(px.0[c]) - normalize.mean[c]) / normalize.std[c];
        }
    }
}

/// One image's pixels and objects, or why it could not be read.
type Made = Result<(Vec<f32>, Vec<Target>), String>;

/// What to load for one epoch of training.
#[derive(Clone)]
pub struct DetPlan {
    pub set: Arc<DetectionSet>,
    pub order: Vec<usize>,
    pub batch_size: usize,
    pub augment: BoxAugment,
    pub normalize: Normalize,
    pub seed: u64,
    pub epoch: u64,
    pub limits: DecodeLimits,
}

impl DetPlan {
    pub fn batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size.max(1))
    }

    /// Batch `b`; every image's augmentation drawn from `(seed, epoch, item)`, so a resumed
    /// run sees the same pixels.
    pub fn make(&self, b: usize) -> DetBatch {
        let bs = self.batch_size.max(1);
        let idx = &self.order[b * bs..((b + 1) * bs).min(self.order.len())];
        let made: Vec<(usize, Made)> = idx
            .par_iter()
            .map(|&i| {
                let item = &self.set.images[i];
                let r = strix_vision::decode_file(&item.path, &self.limits).map_err(|e| e.to_string()).map(|img| {
                    let mut rng = Rng::derive(self.seed, &[self.epoch, i as u64]);
                    let placed = self.augment.apply(&img, &item.boxes, &mut rng);
                    let mut px = Vec::new();
                    planar(&placed.image, &self.normalize, &mut px);
                    let targets = placed
                        .boxes
                        .iter()
                        .filter(|b| !b.iscrowd)
                        .map(|b| Target {
                            bbox: [b.bbox[0], b.bbox[1], b.bbox[0] + b.bbox[2], b.bbox[1] + b.bbox[3]],
                            class: b.class,
                        })
                        .collect();
                    (px, targets)
                });
                (i, r)
            })
            .collect();
        let mut batch = DetBatch::default();
        for (i, r) in made {
            match r {
                Ok((px, t)) => {
                    batch.images.extend(px);
                    batch.targets.push(t);
                    batch.items.push(i);
                }
                Err(e) => batch.failed.push((i, e)),
            }
        }
        batch
    }

    pub fn start(self, first: usize, prefetch: usize) -> Loader<DetBatch> {
        let batches = self.batches();
        Loader::spawn(first, batches, prefetch, move |b| self.make(b))
    }
}
