//! Datasets for training and evaluation.
//!
//! - [`ImageSet`]: labelled images for classification from an image folder (one sub-folder per
//!   class), a `path,label` CSV, or MNIST-style IDX files; decoded lazily.
//! - [`split::stratified`]: seeded train/val/test splits that keep class proportions.
//! - [`Transform`] and [`Augment`]: random resized crop, flip, colour jitter and normalisation,
//!   deterministic under a seed.
//! - [`LoadPlan`] / [`Loader`]: parallel decoding with a bounded prefetch queue.
//! - [`detection`]: COCO and YOLO-txt readers.
//! - [`manifest`]: a dataset's fingerprint (sorted file list + content hashes) for lineage.
//! - [`inspect`]: class counts, sizes, unreadable files, duplicates, a contact sheet.
//!
//! ```no_run
//! use strix_data::{ImageSet, Part};
//! let set = ImageSet::open("data/trash".as_ref(), Part::Train, None)?;
//! let parts = strix_data::split::stratified(&set.labels(), &[0.2], 42);
//! println!("{} classes, {} val images", set.classes.len(), parts[0].len());
//! # Ok::<(), strix_data::DataError>(())
//! ```

mod augment;
pub mod box_augment;
pub mod detection;
mod error;
pub mod idx;
mod imageset;
pub mod inspect;
pub mod inspect_detect;
mod loader;
pub mod manifest;
mod rng;
pub mod split;
pub mod synth;

pub use augment::{Augment, Normalize, Transform, View, eval_crop_fraction};
pub use error::DataError;
pub use imageset::{ImageSet, Item, Part, Source};
pub use loader::{Batch, LoadPlan, Loader};
pub use rng::Rng;
