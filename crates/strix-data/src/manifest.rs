//! A dataset's fingerprint for lineage: every file it reads with its sha256, in the format of
//! `sha256sum` (`<hex>  <role>/<relative path>`), sorted by path; the manifest's digest is the
//! sha256 of those lines. The same files give the same digest on any machine.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use strix_core::digest::sha256_hex;

use crate::{DataError, ImageSet};

/// Summary of a manifest, as a training run records it (`dataset.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetManifest {
    /// sha256 of the manifest text.
    pub sha256: String,
    pub files: u64,
    pub bytes: u64,
    /// `(role, folder)` of each part, e.g. `("data", "/data/trash")`.
    pub roots: Vec<(String, String)>,
    /// The manifest itself: `<sha256>  <role>/<path>` lines (kept in its own file, not JSON).
    #[serde(skip)]
    pub manifest: String,
}

/// Hash the files of each `(role, set)`; roles name the parts (`data`, `val_data`, ...).
pub fn dataset_manifest(parts: &[(&str, &ImageSet)]) -> Result<DatasetManifest, DataError> {
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    let mut roots = Vec::new();
    // A file read by two parts (IDX files hold both sides of a split) is listed once, under
    // the first part.
    let mut seen = std::collections::HashSet::new();
    for (role, set) in parts {
        let base = if set.origin.is_file() { set.origin.parent().unwrap_or(Path::new(".")) } else { &set.origin };
        roots.push((role.to_string(), base.display().to_string()));
        for file in set.source_files().into_iter().filter(|f| seen.insert(f.clone())) {
            let rel = file.strip_prefix(base).unwrap_or(&file);
            let rel: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            entries.push((format!("{role}/{}", rel.join("/")), file));
        }
    }
    hash_entries(entries, roots)
}

/// The manifest of a detection dataset's parts: every image, and the annotation files (COCO
/// JSON or YOLO label files) that describe them.
pub fn detection_manifest(parts: &[(&str, &crate::detection::DetectionSet)]) -> Result<DatasetManifest, DataError> {
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    let mut roots = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (role, set) in parts {
        let base = common_dir(set.images.iter().map(|i| i.path.as_path()));
        roots.push((role.to_string(), base.display().to_string()));
        let files = set.images.iter().map(|i| i.path.clone()).chain(set.sources.iter().cloned());
        for file in files.filter(|f| seen.insert(f.clone())) {
            let rel = file.strip_prefix(&base).unwrap_or(&file);
            let rel: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            entries.push((format!("{role}/{}", rel.join("/")), file));
        }
    }
    hash_entries(entries, roots)
}

/// The deepest folder holding every path (for names relative to it).
fn common_dir<'a>(paths: impl Iterator<Item = &'a Path>) -> PathBuf {
    let mut common: Option<PathBuf> = None;
    for p in paths {
        let dir = p.parent().unwrap_or(Path::new(""));
        common = Some(match common {
            None => dir.to_path_buf(),
            Some(c) => c.components().zip(dir.components()).take_while(|(a, b)| a == b).map(|(a, _)| a).collect(),
        });
    }
    common.unwrap_or_default()
}

/// Hash every entry (in parallel) into the sorted manifest and its digest.
fn hash_entries(
    mut entries: Vec<(String, PathBuf)>,
    roots: Vec<(String, String)>,
) -> Result<DatasetManifest, DataError> {
    entries.sort();
    let hashed: Vec<(String, u64)> = entries
        .par_iter()
        .map(|(_, path)| strix_core::digest::sha256_file(path).map_err(DataError::io(path)))
        .collect::<Result<_, _>>()?;
    let mut manifest = String::new();
    for ((name, _), (sha, _)) in entries.iter().zip(&hashed) {
        manifest.push_str(&format!("{sha}  {name}\n"));
    }
    Ok(DatasetManifest {
        sha256: sha256_hex(manifest.as_bytes()),
        files: entries.len() as u64,
        bytes: hashed.iter().map(|(_, n)| n).sum(),
        roots,
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Part;

    fn folder(root: &Path, files: &[(&str, &[u8])]) {
        for (name, bytes) in files {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }

    #[test]
    fn digest_follows_content_and_labels_not_location() {
        let png = |v: u8| {
            let mut out = Vec::new();
            image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([v])))
                .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
                .unwrap();
            out
        };
        let (a, b) = (png(10), png(200));
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        folder(one.path(), &[("cat/1.png", &a), ("dog/2.png", &b)]);
        folder(two.path(), &[("cat/1.png", &a), ("dog/2.png", &b)]);
        let m = |dir: &Path| {
            let set = ImageSet::open(dir, Part::Train, None).unwrap();
            dataset_manifest(&[("data", &set)]).unwrap()
        };
        let (m1, m2) = (m(one.path()), m(two.path()));
        assert_eq!(m1.sha256, m2.sha256, "same files elsewhere, same digest");
        assert_eq!(m1.files, 2);
        assert!(m1.manifest.ends_with("  data/dog/2.png\n"), "{}", m1.manifest);
        // The manifest is sha256sum's format: its digest is checkable with standard tools.
        assert_eq!(m1.sha256, sha256_hex(m1.manifest.as_bytes()));
        // A relabelled image (moved to another class folder) changes the digest.
        std::fs::create_dir_all(two.path().join("cat")).unwrap();
        std::fs::rename(two.path().join("dog/2.png"), two.path().join("cat/2.png")).unwrap();
        std::fs::write(two.path().join("dog/3.png"), &a).unwrap();
        assert_ne!(m(two.path()).sha256, m1.sha256);
    }
}
