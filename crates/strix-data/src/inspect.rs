//! `strix data inspect`: what is in a dataset before anyone trains on it.

use std::collections::HashMap;

use image::{DynamicImage, Rgb, RgbImage, imageops};
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};
use strix_core::{Progress, ProgressUnit};
use strix_vision::DecodeLimits;
use strix_vision::draw;

use crate::imageset::ImageSet;

#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    pub min: u32,
    pub median: u32,
    pub max: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub origin: String,
    pub images: usize,
    /// `(class, count)` in class order.
    pub classes: Vec<(String, usize)>,
    pub width: Option<Spread>,
    pub height: Option<Spread>,
    /// `(image, reason)` for every image that failed to decode.
    pub unreadable: Vec<(String, String)>,
    /// Groups of byte-identical images (two or more each).
    pub duplicates: Vec<Vec<String>>,
    /// Classes with fewer than a fifth of the median class count (or under 5 images).
    pub near_empty: Vec<String>,
}

pub(crate) fn spread(mut v: Vec<u32>) -> Option<Spread> {
    v.sort_unstable();
    Some(Spread { min: *v.first()?, median: v[v.len() / 2], max: *v.last()? })
}

/// Decode every image (in parallel), hash it, and summarise.
pub fn inspect(set: &ImageSet, limits: &DecodeLimits, progress: &dyn Progress) -> Inspection {
    progress.start("inspecting", Some(set.len() as u64), ProgressUnit::Items);
    // Per image: its size (or why it failed to decode) and the hash of its bytes.
    type Facts = (Result<(u32, u32), String>, Option<[u8; 32]>);
    let facts: Vec<Facts> = (0..set.len())
        .into_par_iter()
        .map(|i| {
            // One read per file: hashed, then decoded.
            let facts = match set.bytes(i, limits) {
                Ok(bytes) => {
                    let hash = Some(Sha256::digest(&bytes).into());
                    (set.decode(i, bytes, limits).map(|im| (im.width(), im.height())), hash)
                }
                Err(e) => (Err(e), None),
            };
            progress.advance(1);
            facts
        })
        .collect();
    progress.finish();
    let mut widths = Vec::new();
    let mut heights = Vec::new();
    let mut unreadable = Vec::new();
    let mut by_hash: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
    for (i, (dims, hash)) in facts.into_iter().enumerate() {
        match dims {
            Ok((w, h)) => {
                widths.push(w);
                heights.push(h);
            }
            Err(e) => unreadable.push((set.name(i), e)),
        }
        if let Some(h) = hash {
            by_hash.entry(h).or_default().push(i);
        }
    }
    let mut duplicates: Vec<Vec<String>> = by_hash
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort_unstable();
            g.into_iter().map(|i| set.name(i)).collect()
        })
        .collect();
    duplicates.sort();
    let counts = set.class_counts();
    let mut sorted = counts.clone();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    let near_empty =
        set.classes.iter().zip(&counts).filter(|&(_, &c)| c < 5 || c * 5 < median).map(|(n, _)| n.clone()).collect();
    Inspection {
        origin: set.origin.display().to_string(),
        images: set.len(),
        classes: set.classes.iter().cloned().zip(counts).collect(),
        width: spread(widths),
        height: spread(heights),
        unreadable,
        duplicates,
        near_empty,
    }
}

/// A grid with one row per class: its name, then up to `per_class` random samples as
/// `cell` x `cell` thumbnails.
pub fn contact_sheet(set: &ImageSet, per_class: usize, cell: u32, seed: u64, limits: &DecodeLimits) -> RgbImage {
    let mut order = set.shuffled(seed, 0);
    order.sort_by_key(|&i| set.items[i].label); // stable: random within each class
    sheet(
        &set.classes,
        per_class,
        cell,
        |_| Rgb([0, 0, 0]),
        |c| {
            let picks: Vec<usize> =
                order.iter().copied().filter(|&i| set.items[i].label == c).take(per_class).collect();
            picks.par_iter().map(|&i| set.load(i, limits).ok().map(|im| thumbnail(&im, cell))).collect()
        },
    )
}

/// One row per class: its name in `ink(class)`, then the thumbnails `row(class)` gives
/// (`None`: unreadable), centred in `cell` x `cell` squares.
pub fn sheet(
    classes: &[String],
    per_class: usize,
    cell: u32,
    ink: impl Fn(usize) -> Rgb<u8>,
    row: impl Fn(usize) -> Vec<Option<RgbImage>>,
) -> RgbImage {
    let label_w = 8 * classes.iter().map(|c| c.chars().count()).max().unwrap_or(4).min(24) as u32 + 12;
    let pad = 4;
    let width = label_w + per_class as u32 * (cell + pad) + pad;
    let height = classes.len() as u32 * (cell + pad) + pad;
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (c, name) in classes.iter().enumerate() {
        let y = pad + c as u32 * (cell + pad);
        let short: String = name.chars().take(24).collect();
        draw::text(&mut sheet, 4, (y + cell / 2) as i32 - 4, &short, ink(c), 1);
        for (k, t) in row(c).into_iter().take(per_class).enumerate() {
            let x = label_w + k as u32 * (cell + pad);
            match t {
                Some(t) => {
                    let (ox, oy) = ((cell - t.width()) / 2, (cell - t.height()) / 2);
                    imageops::overlay(&mut sheet, &t, i64::from(x + ox), i64::from(y + oy));
                }
                None => {
                    draw::text(&mut sheet, x as i32 + 2, (y + cell / 2) as i32 - 4, "unreadable", Rgb([200, 0, 0]), 1)
                }
            }
        }
    }
    sheet
}

/// Fit inside `cell` x `cell`, keeping the aspect ratio.
pub fn thumbnail(img: &DynamicImage, cell: u32) -> RgbImage {
    let rgb = img.to_rgb8();
    let scale = cell as f32 / rgb.width().max(rgb.height()) as f32;
    let (w, h) =
        (((rgb.width() as f32 * scale).round() as u32).max(1), ((rgb.height() as f32 * scale).round() as u32).max(1));
    let filter = if scale > 1.0 { imageops::FilterType::Nearest } else { imageops::FilterType::Triangle };
    imageops::resize(&rgb, w.min(cell), h.min(cell), filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageset::Part;
    use strix_core::NoProgress;

    #[test]
    fn counts_sizes_broken_duplicates_and_sheet() {
        let d = tempfile::tempdir().unwrap();
        for c in ["compost", "landfill", "recycling"] {
            std::fs::create_dir_all(d.path().join(c)).unwrap();
        }
        for i in 0..6 {
            RgbImage::from_pixel(10 + i, 20, Rgb([i as u8 * 30, 0, 0]))
                .save(d.path().join(format!("compost/{i}.png")))
                .unwrap();
        }
        for i in 0..5 {
            RgbImage::from_pixel(30, 30, Rgb([0, i as u8 * 30, 0]))
                .save(d.path().join(format!("recycling/{i}.png")))
                .unwrap();
        }
        std::fs::copy(d.path().join("compost/0.png"), d.path().join("landfill/copy.png")).unwrap();
        std::fs::write(d.path().join("landfill/bad.jpg"), b"\xff\xd8 truncated").unwrap();
        let set = ImageSet::open(d.path(), Part::Train, None).unwrap();
        let r = inspect(&set, &DecodeLimits::default(), &NoProgress);
        assert_eq!(r.images, 13);
        assert_eq!(r.classes[1], ("landfill".to_string(), 2));
        assert_eq!(r.unreadable.len(), 1);
        assert!(r.unreadable[0].0.ends_with("bad.jpg"));
        assert_eq!(r.duplicates.len(), 1);
        assert!(r.duplicates[0][1].ends_with("copy.png"));
        assert_eq!(r.near_empty, vec!["landfill"]);
        let w = r.width.unwrap();
        assert_eq!((w.min, w.max), (10, 30));
        let sheet = contact_sheet(&set, 4, 32, 1, &DecodeLimits::default());
        assert_eq!(sheet.height(), 4 + 3 * 36);
    }
}
