//! Batches decoded and transformed in parallel on a background thread, at most `prefetch`
//! batches ahead: memory stays flat whatever the size of the dataset.

use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;
use strix_vision::DecodeLimits;

use crate::augment::Transform;
use crate::imageset::ImageSet;
use crate::rng::Rng;

/// One batch, images as `[n, channels, size, size]` floats.
#[derive(Debug)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    /// Dataset indices of the images in this batch.
    pub items: Vec<usize>,
    /// Items that could not be decoded: `(index, reason)`; left out of the batch.
    pub failed: Vec<(usize, String)>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// What to load: items of `set` in `order`, chunked by `batch_size`, each sample transformed
/// with a generator derived from `(seed, epoch, item)`, so a batch is the same whichever
/// thread made it and whether or not the run was resumed.
#[derive(Clone)]
pub struct LoadPlan {
    pub set: Arc<ImageSet>,
    pub order: Vec<usize>,
    pub batch_size: usize,
    pub transform: Arc<Transform>,
    pub seed: u64,
    pub epoch: u64,
    pub prefetch: usize,
    pub limits: DecodeLimits,
}

/// An iterator over batches, fed by a background thread.
pub struct Loader<T = Batch> {
    rx: crossbeam_channel::Receiver<T>,
    worker: Option<JoinHandle<()>>,
    pub batches: usize,
}

impl<T: Send + 'static> Loader<T> {
    /// Batches `first..batches`, each made by `make(b)` on a background thread at most
    /// `prefetch` ahead of the consumer.
    pub fn spawn(
        first: usize,
        batches: usize,
        prefetch: usize,
        make: impl Fn(usize) -> T + Send + 'static,
    ) -> Loader<T> {
        let (tx, rx) = crossbeam_channel::bounded(prefetch.max(1));
        let worker = std::thread::Builder::new()
            .name("strix-loader".into())
            .spawn(move || {
                for b in first..batches {
                    if tx.send(make(b)).is_err() {
                        return; // the consumer stopped early
                    }
                }
            })
            .ok();
        Loader { rx, worker, batches }
    }
}

impl LoadPlan {
    pub fn batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size.max(1))
    }

    /// Build batch `b` here and now.
    pub fn make(&self, b: usize) -> Batch {
        let bs = self.batch_size.max(1);
        let idx = &self.order[b * bs..((b + 1) * bs).min(self.order.len())];
        let len = self.transform.len();
        let decoded: Vec<(usize, Result<Vec<f32>, String>)> = idx
            .par_iter()
            .map(|&i| {
                let r = self.set.load(i, &self.limits).map(|img| {
                    let mut out = vec![0f32; len];
                    let mut rng = Rng::derive(self.seed, &[self.epoch, i as u64]);
                    self.transform.apply(&img, &mut rng, &mut out);
                    out
                });
                (i, r)
            })
            .collect();
        let mut batch = Batch {
            images: Vec::with_capacity(len * idx.len()),
            labels: Vec::with_capacity(idx.len()),
            items: Vec::with_capacity(idx.len()),
            failed: Vec::new(),
        };
        for (i, r) in decoded {
            match r {
                Ok(px) => {
                    batch.images.extend_from_slice(&px);
                    batch.labels.push(self.set.items[i].label);
                    batch.items.push(i);
                }
                Err(e) => batch.failed.push((i, e)),
            }
        }
        batch
    }

    /// Start loading from batch `first` (to resume inside an epoch).
    pub fn start(self, first: usize) -> Loader {
        let (batches, prefetch) = (self.batches(), self.prefetch);
        Loader::spawn(first, batches, prefetch, move |b| self.make(b))
    }
}

impl<T> Iterator for Loader<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<T> Drop for Loader<T> {
    fn drop(&mut self) {
        // Unblock the worker (its send fails once the receiver is gone), then wait for it.
        let (_, dead) = crossbeam_channel::bounded(0);
        self.rx = dead;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::{Augment, Normalize, View};
    use crate::imageset::Part;

    fn set(dir: &std::path::Path) -> ImageSet {
        for (c, n) in [("a", 5), ("b", 4)] {
            std::fs::create_dir_all(dir.join(c)).unwrap();
            for i in 0..n {
                image::RgbImage::from_pixel(8, 6, image::Rgb([i * 20, 0, 0]))
                    .save(dir.join(format!("{c}/{i}.png")))
                    .unwrap();
            }
        }
        std::fs::write(dir.join("b/broken.png"), b"not a png").unwrap();
        ImageSet::open(dir, Part::Train, None).unwrap()
    }

    #[test]
    fn batches_in_order_skip_broken_and_resume_identically() {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(set(d.path()));
        let plan = LoadPlan {
            order: s.shuffled(1, 0),
            set: s,
            batch_size: 4,
            transform: Arc::new(Transform {
                size: 4,
                channels: 3,
                normalize: Normalize { mean: [0.0; 3], std: [1.0; 3] },
                view: View::Train(Augment::default()),
            }),
            seed: 1,
            epoch: 0,
            prefetch: 1,
            limits: DecodeLimits::default(),
        };
        let all: Vec<Batch> = plan.clone().start(0).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all.iter().map(Batch::len).sum::<usize>(), 9);
        assert_eq!(all.iter().map(|b| b.failed.len()).sum::<usize>(), 1);
        let items: Vec<usize> = all.iter().flat_map(|b| b.items.clone()).collect();
        let expect: Vec<usize> =
            plan.order.iter().copied().filter(|&i| !plan.set.name(i).ends_with("broken.png")).collect();
        assert_eq!(items, expect);
        let tail: Vec<Batch> = plan.clone().start(1).collect();
        assert_eq!(tail[0].images, all[1].images);
        // Dropping a loader part-way stops its worker.
        let mut l = plan.start(0);
        assert!(l.next().is_some());
        drop(l);
    }
}
