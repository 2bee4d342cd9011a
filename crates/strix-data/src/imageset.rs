//! Labelled images for classification: an image folder (one sub-folder per class), a CSV of
//! `path,label` rows, or IDX files (MNIST / Fashion-MNIST).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::DynamicImage;
use strix_vision::{DecodeLimits, decode_bytes, is_image_path, read_file};

use crate::DataError;
use crate::idx::{self, FASHION_MNIST, IdxImages};
use crate::rng::Rng;

/// Where one image's pixels come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// The i-th image of the set's IDX file.
    Idx(usize),
}

#[derive(Clone, Debug)]
pub struct Item {
    pub source: Source,
    pub label: usize,
}

/// Which part of a dataset that ships its own split (IDX `train`/`t10k`, folders `train/` and
/// `test/`) to open. Sources without one ignore it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Train,
    Test,
}

/// A classification dataset: class names and `(image, label)` items. Images are decoded on
/// demand, so opening a folder of a million photos costs a directory walk, not their pixels.
#[derive(Clone, Debug)]
pub struct ImageSet {
    pub classes: Vec<String>,
    pub items: Vec<Item>,
    /// What was opened, for messages and reports.
    pub origin: PathBuf,
    pixels: Option<Arc<IdxImages>>,
}

/// `train/` and `test/` folders side by side.
fn split_folders(path: &Path) -> bool {
    path.join("train").is_dir() && path.join("test").is_dir()
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(DataError::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
        .collect();
    v.sort();
    Ok(v)
}

impl ImageSet {
    /// Open `path`, recognising its format: a directory holding IDX files, a directory with
    /// `train/` and `test/` folders (picked by `part`), a directory of class folders, or a
    /// `.csv` file. `classes`, when given, fixes the class list and its order; labels outside
    /// it are errors.
    pub fn open(path: &Path, part: Part, classes: Option<&[String]>) -> Result<ImageSet, DataError> {
        if path.is_file() {
            return match path.extension().and_then(|e| e.to_str()) {
                Some("csv") => Self::csv(path, classes),
                _ => Err(DataError::format(
                    path,
                    "not a dataset: expected a folder of class folders, a .csv, or IDX files",
                )),
            };
        }
        if !path.is_dir() {
            return Err(DataError::Io { path: path.into(), source: std::io::ErrorKind::NotFound.into() });
        }
        let prefix = match part {
            Part::Train => "train",
            Part::Test => "t10k",
        };
        if let Some((images, labels)) = idx::find_pair(path, prefix) {
            return Self::idx(path, &images, &labels, classes);
        }
        if split_folders(path) {
            let sub = match part {
                Part::Train => "train",
                Part::Test => "test",
            };
            return Self::folder(&path.join(sub), classes);
        }
        if part == Part::Test && idx::find_pair(path, "train").is_some() {
            return Err(DataError::format(path, "has IDX training files but no t10k-* test files"));
        }
        Self::folder(path, classes)
    }

    /// Whether `path` ships its own test part (IDX `t10k-*` files, or `train/` and `test/`
    /// folders), which [`ImageSet::open`] with [`Part::Test`] reads.
    pub fn has_test_part(path: &Path) -> bool {
        idx::find_pair(path, "t10k").is_some() || split_folders(path)
    }

    /// The files this set reads: every image file, the CSV that lists them, or the IDX files
    /// (both parts), sorted and without repeats. What a dataset manifest hashes.
    pub fn source_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .items
            .iter()
            .filter_map(|item| match &item.source {
                Source::File(p) => Some(p.clone()),
                Source::Idx(_) => None,
            })
            .collect();
        if self.origin.is_file() {
            files.push(self.origin.clone());
        }
        if self.pixels.is_some() {
            for prefix in ["train", "t10k"] {
                if let Some((images, labels)) = idx::find_pair(&self.origin, prefix) {
                    files.extend([images, labels]);
                }
            }
        }
        files.sort();
        files.dedup();
        files
    }

    /// Whether the images are greyscale by nature (IDX files) rather than photos.
    pub fn is_greyscale(&self) -> bool {
        self.pixels.is_some()
    }

    /// One sub-folder per class, named after it; files with image extensions inside.
    pub fn folder(dir: &Path, classes: Option<&[String]>) -> Result<ImageSet, DataError> {
        let dirs: Vec<PathBuf> = sorted_entries(dir)?.into_iter().filter(|p| p.is_dir()).collect();
        let found: Vec<String> = dirs.iter().filter_map(|d| d.file_name()?.to_str().map(String::from)).collect();
        if found.is_empty() {
            return Err(DataError::format(dir, "no class folders (expected DIR/<class>/<image>)"));
        }
        let classes: Vec<String> = match classes {
            Some(list) => {
                if let Some(extra) = found.iter().find(|f| !list.contains(f)) {
                    return Err(DataError::format(
                        dir.join(extra),
                        format!("folder is not one of the {} configured classes", list.len()),
                    ));
                }
                list.to_vec()
            }
            None => found,
        };
        let mut items = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let cdir = dir.join(class);
            let files: Vec<PathBuf> = if cdir.is_dir() {
                sorted_entries(&cdir)?.into_iter().filter(|p| is_image_path(p)).collect()
            } else {
                vec![]
            };
            if files.is_empty() {
                return Err(DataError::EmptyClass { class: class.clone(), path: cdir });
            }
            items.extend(files.into_iter().map(|f| Item { source: Source::File(f), label }));
        }
        Ok(ImageSet { classes, items, origin: dir.into(), pixels: None })
    }

    /// Rows of `path,label` (a header row naming the columns is skipped); relative paths are
    /// relative to the CSV's folder.
    pub fn csv(path: &Path, classes: Option<&[String]>) -> Result<ImageSet, DataError> {
        let base = path.parent().unwrap_or(Path::new("."));
        let text = std::fs::read_to_string(path).map_err(DataError::io(path))?;
        let mut rows = Vec::new();
        // Line by line, so every error can name its line (the csv reader skips blank ones).
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let Some(rec) = csv::ReaderBuilder::new().has_headers(false).from_reader(raw.as_bytes()).records().next()
            else {
                continue;
            };
            let rec = rec.map_err(|e| DataError::Line { path: path.into(), line, reason: e.to_string() })?;
            let fields: Vec<&str> = rec.iter().map(str::trim).collect();
            if fields.iter().all(|f| f.is_empty()) {
                continue;
            }
            if line == 1 && fields.len() == 2 && fields[1].eq_ignore_ascii_case("label") {
                continue;
            }
            if fields.len() != 2 || fields[0].is_empty() || fields[1].is_empty() {
                return Err(DataError::Line {
                    path: path.into(),
                    line,
                    reason: format!("expected `path,label`, found {} field(s)", fields.len()),
                });
            }
            rows.push((line, base.join(fields[0]), fields[1].to_string()));
        }
        let classes: Vec<String> = match classes {
            Some(list) => list.to_vec(),
            None => {
                let mut c: Vec<String> = rows.iter().map(|r| r.2.clone()).collect();
                c.sort();
                c.dedup();
                c
            }
        };
        let mut items = Vec::with_capacity(rows.len());
        for (line, file, label) in rows {
            let Some(l) = classes.iter().position(|c| *c == label) else {
                return Err(DataError::Line {
                    path: path.into(),
                    line,
                    reason: format!("label '{label}' is not in the class list ({})", classes.join(", ")),
                });
            };
            items.push(Item { source: Source::File(file), label: l });
        }
        let set = ImageSet { classes, items, origin: path.into(), pixels: None };
        set.check_no_empty_class()?;
        Ok(set)
    }

    fn idx(dir: &Path, images: &Path, labels: &Path, classes: Option<&[String]>) -> Result<ImageSet, DataError> {
        let pixels = idx::read_images(images)?;
        let labels_v = idx::read_labels(labels)?;
        if labels_v.len() != pixels.count {
            return Err(DataError::format(
                labels,
                format!("{} labels for {} images in {}", labels_v.len(), pixels.count, images.display()),
            ));
        }
        let n_classes = labels_v.iter().copied().max().map_or(0, |m| m as usize + 1);
        let classes: Vec<String> = match classes {
            Some(list) => list.to_vec(),
            None if n_classes <= 10 && dir.to_string_lossy().to_lowercase().contains("fashion") => {
                FASHION_MNIST.iter().map(|s| s.to_string()).collect()
            }
            None => (0..n_classes.max(10)).map(|i| i.to_string()).collect(),
        };
        if let Some((i, &l)) = labels_v.iter().enumerate().find(|(_, l)| **l as usize >= classes.len()) {
            return Err(DataError::format(
                labels,
                format!("label {l} of image {i} is outside the {} classes", classes.len()),
            ));
        }
        let items =
            labels_v.iter().enumerate().map(|(i, &l)| Item { source: Source::Idx(i), label: l as usize }).collect();
        let set = ImageSet { classes, items, origin: dir.into(), pixels: Some(Arc::new(pixels)) };
        set.check_no_empty_class()?;
        Ok(set)
    }

    fn check_no_empty_class(&self) -> Result<(), DataError> {
        let counts = self.class_counts();
        match counts.iter().position(|&c| c == 0) {
            Some(i) => Err(DataError::EmptyClass { class: self.classes[i].clone(), path: self.origin.clone() }),
            None => Ok(()),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for it in &self.items {
            c[it.label] += 1;
        }
        c
    }

    /// A readable name for item `i` (its path, or `origin#i` for IDX images).
    pub fn name(&self, i: usize) -> String {
        match &self.items[i].source {
            Source::File(p) => p.display().to_string(),
            Source::Idx(k) => format!("{}#{k}", self.origin.display()),
        }
    }

    /// Decode item `i`. IDX images come back greyscale, files as RGB.
    pub fn load(&self, i: usize, limits: &DecodeLimits) -> Result<DynamicImage, String> {
        self.decode(i, self.bytes(i, limits)?, limits)
    }

    /// The raw bytes of item `i` (file contents, size-checked; or IDX pixels): what
    /// [`ImageSet::decode`] takes, and what identifies it for duplicate search.
    pub fn bytes(&self, i: usize, limits: &DecodeLimits) -> Result<Vec<u8>, String> {
        match &self.items[i].source {
            Source::File(p) => read_file(p, limits).map_err(|e| e.to_string()),
            Source::Idx(k) => Ok(self.pixels.as_ref().ok_or("IDX pixels missing")?.image(*k).to_vec()),
        }
    }

    /// Decode the bytes [`ImageSet::bytes`] gave for item `i`.
    pub fn decode(&self, i: usize, bytes: Vec<u8>, limits: &DecodeLimits) -> Result<DynamicImage, String> {
        match &self.items[i].source {
            Source::File(_) => decode_bytes(&bytes, limits).map(DynamicImage::ImageRgb8).map_err(|e| e.to_string()),
            Source::Idx(_) => {
                let px = self.pixels.as_ref().ok_or("IDX pixels missing")?;
                image::GrayImage::from_raw(px.cols as u32, px.rows as u32, bytes)
                    .map(DynamicImage::ImageLuma8)
                    .ok_or_else(|| "bad IDX image size".to_string())
            }
        }
    }

    /// The same set restricted to `indices` (in that order).
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        ImageSet {
            classes: self.classes.clone(),
            items: indices.iter().map(|&i| self.items[i].clone()).collect(),
            origin: self.origin.clone(),
            pixels: self.pixels.clone(),
        }
    }

    /// At most `n` items, keeping class proportions (stratified, seeded).
    pub fn sample(&self, n: usize, seed: u64) -> ImageSet {
        if n >= self.len() {
            return self.clone();
        }
        let frac = n as f64 / self.len() as f64;
        let split = crate::split::stratified(&self.labels(), &[frac], seed);
        let mut keep = split[0].clone();
        keep.sort();
        self.subset(&keep)
    }

    pub fn labels(&self) -> Vec<usize> {
        self.items.iter().map(|i| i.label).collect()
    }

    /// A seeded permutation of `0..len`.
    pub fn shuffled(&self, seed: u64, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        Rng::derive(seed, &[0x5348_5546, epoch]).shuffle(&mut order);
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(4, 3, image::Rgb([9, 8, 7])).save(path).unwrap();
    }

    #[test]
    fn folder_classes_sorted_and_empty_class_named() {
        let d = tempfile::tempdir().unwrap();
        png(&d.path().join("recycling/a.png"));
        png(&d.path().join("compost/b.png"));
        png(&d.path().join("compost/c.PNG"));
        std::fs::write(d.path().join("compost/notes.txt"), "x").unwrap();
        let s = ImageSet::open(d.path(), Part::Train, None).unwrap();
        assert_eq!(s.classes, vec!["compost", "recycling"]);
        assert_eq!(s.class_counts(), vec![2, 1]);
        assert_eq!(s.load(0, &DecodeLimits::default()).unwrap().width(), 4);

        std::fs::create_dir_all(d.path().join("landfill")).unwrap();
        let e = ImageSet::open(d.path(), Part::Train, None).unwrap_err();
        assert!(matches!(&e, DataError::EmptyClass { class, .. } if class == "landfill"), "{e}");
        let only: Vec<String> = vec!["compost".into()];
        let e = ImageSet::folder(d.path(), Some(&only)).unwrap_err().to_string();
        assert!(e.contains("landfill") && e.contains("not one of the 1 configured classes"), "{e}");
    }

    #[test]
    fn csv_header_relative_paths_and_unknown_label_line() {
        let d = tempfile::tempdir().unwrap();
        png(&d.path().join("img/a.png"));
        let csv = d.path().join("labels.csv");
        std::fs::write(&csv, "path,label\nimg/a.png,compost\n\nimg/a.png,landfill\n").unwrap();
        let s = ImageSet::open(&csv, Part::Train, None).unwrap();
        assert_eq!(s.classes, vec!["compost", "landfill"]);
        assert_eq!(s.items[0].source, Source::File(d.path().join("img/a.png")));

        let classes: Vec<String> = vec!["compost".into(), "recycling".into()];
        let e = ImageSet::csv(&csv, Some(&classes)).unwrap_err().to_string();
        assert!(e.ends_with("labels.csv:4: label 'landfill' is not in the class list (compost, recycling)"), "{e}");
        std::fs::write(&csv, "img/a.png,compost,extra\n").unwrap();
        assert!(ImageSet::csv(&csv, None).unwrap_err().to_string().contains(":1: expected `path,label`"));
        std::fs::write(&csv, "img/a.png,compost\n").unwrap();
        let e = ImageSet::csv(&csv, Some(&classes)).unwrap_err();
        assert!(matches!(&e, DataError::EmptyClass { class, .. } if class == "recycling"), "{e}");
    }

    #[test]
    fn sample_keeps_proportions() {
        let s = ImageSet {
            classes: vec!["a".into(), "b".into()],
            items: (0..100).map(|i| Item { source: Source::Idx(i), label: usize::from(i >= 80) }).collect(),
            origin: "x".into(),
            pixels: None,
        };
        let t = s.sample(50, 1);
        assert_eq!(t.class_counts(), vec![40, 10]);
        assert_eq!(s.shuffled(1, 0), s.shuffled(1, 0));
        assert_ne!(s.shuffled(1, 0), s.shuffled(1, 1));
    }
}
