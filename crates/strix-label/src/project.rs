//! A labelling project: a folder holding `project.toml` (task, classes, where the images are),
//! `labels.db` (the [`Store`]) and the images brought into it (`imported/`, `captured/`).

use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use strix_vision::DecodeLimits;

use crate::LabelError;
use crate::labels::LabelTask;
use crate::store::{Annotation, ImageRow, Root, Store};

/// `project.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub task: LabelTask,
    pub classes: Vec<String>,
    /// The folder of images to label (absolute).
    pub images: PathBuf,
}

impl ProjectConfig {
    /// Refuse empty, repeated or unprintable class names, and more than a UI can offer.
    pub fn check_classes(classes: &[String]) -> Result<(), LabelError> {
        if classes.is_empty() {
            return Err(LabelError::invalid("a project needs at least one class (--classes a,b,c)"));
        }
        for (i, c) in classes.iter().enumerate() {
            if c.trim().is_empty() || c.trim() != c || c.chars().any(char::is_control) || c.len() > 100 {
                return Err(LabelError::invalid(format!(
                    "class {c:?}: names are 1-100 printable characters without leading or trailing spaces"
                )));
            }
            if c.contains('/') || c.contains('\\') || c == "." || c == ".." {
                return Err(LabelError::invalid(format!(
                    "class {c:?}: a class name is a folder name in exports, so no slashes"
                )));
            }
            if classes[..i].contains(c) {
                return Err(LabelError::invalid(format!("class {c:?} is given twice")));
            }
        }
        Ok(())
    }
}

/// What a scan of the images folder found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanReport {
    pub added: usize,
    /// `(file, reason)` of the files left out this time.
    pub problems: Vec<(String, String)>,
}

/// An open project.
#[derive(Clone, Debug)]
pub struct Project {
    pub dir: PathBuf,
    pub config: ProjectConfig,
    pub store: Store,
    pub limits: DecodeLimits,
}

const CONFIG: &str = "project.toml";
const DB: &str = "labels.db";

impl Project {
    /// Whether `dir` holds a project.
    pub fn is_project(dir: &Path) -> bool {
        dir.join(CONFIG).is_file()
    }

    /// Make a project in `dir` (created if needed) for the images of `images`.
    pub async fn create(dir: &Path, config: ProjectConfig) -> Result<Project, LabelError> {
        if Self::is_project(dir) {
            return Err(LabelError::invalid(format!("{} is a project already", dir.display())));
        }
        ProjectConfig::check_classes(&config.classes)?;
        let images = config.images.canonicalize().map_err(LabelError::io(&config.images))?;
        if !images.is_dir() {
            return Err(LabelError::invalid(format!("{} is not a folder of images", images.display())));
        }
        std::fs::create_dir_all(dir).map_err(LabelError::io(dir))?;
        let config = ProjectConfig { images, ..config };
        let text = toml::to_string(&config).map_err(|e| LabelError::invalid(e.to_string()))?;
        crate::write_whole(&dir.join(CONFIG), text.as_bytes())?;
        Self::open(dir).await
    }

    /// Open the project in `dir`.
    pub async fn open(dir: &Path) -> Result<Project, LabelError> {
        let path = dir.join(CONFIG);
        if !path.is_file() {
            return Err(LabelError::NotAProject { path: dir.to_path_buf() });
        }
        let text = std::fs::read_to_string(&path).map_err(LabelError::io(&path))?;
        let config: ProjectConfig =
            toml::from_str(&text).map_err(|e| LabelError::Format { path: path.clone(), reason: e.to_string() })?;
        ProjectConfig::check_classes(&config.classes)
            .map_err(|e| LabelError::Format { path, reason: e.to_string() })?;
        let store = Store::open(&dir.join(DB)).await?;
        Ok(Project { dir: dir.to_path_buf(), config, store, limits: DecodeLimits::default() })
    }

    /// Add classes not in the project yet (an import that brings new ones), keeping the order.
    pub fn add_classes(&mut self, more: &[String]) -> Result<(), LabelError> {
        let mut classes = self.config.classes.clone();
        for c in more {
            if !classes.contains(c) {
                classes.push(c.clone());
            }
        }
        if classes == self.config.classes {
            return Ok(());
        }
        ProjectConfig::check_classes(&classes)?;
        self.config.classes = classes;
        let text = toml::to_string(&self.config).map_err(|e| LabelError::invalid(e.to_string()))?;
        crate::write_whole(&self.dir.join(CONFIG), text.as_bytes())
    }

    /// The folder a root stands for.
    pub fn root_dir(&self, root: Root) -> PathBuf {
        match root {
            Root::Images => self.config.images.clone(),
            Root::Imported => self.dir.join("imported"),
            Root::Captured => self.dir.join("captured"),
        }
    }

    /// The file of an image. Its path comes from the database, never from a request, and was
    /// checked to stay inside its root when it was added.
    pub fn image_path(&self, image: &ImageRow) -> PathBuf {
        self.root_dir(image.root).join(&image.file)
    }

    /// Every image with its current labels and its file, by id.
    pub async fn files(&self) -> Result<Vec<(ImageRow, Option<Annotation>, PathBuf)>, LabelError> {
        const PAGE: i64 = 500;
        let mut out = Vec::new();
        for offset in (0..).step_by(PAGE as usize) {
            let page = self.store.images(offset, PAGE).await?;
            let full = page.len() as i64 == PAGE;
            out.extend(page.into_iter().map(|(row, a)| {
                let path = self.image_path(&row);
                (row, a, path)
            }));
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// The bytes of `image`'s file, checked again as the scan checked it (see [`read_served`]).
    pub(crate) async fn read_image(&self, image: &ImageRow) -> Result<Vec<u8>, Unservable> {
        let root = self.root_dir(image.root);
        let (file, max_bytes) = (image.file.clone(), self.limits.max_bytes);
        tokio::task::spawn_blocking(move || read_served(&root, &file, max_bytes))
            .await
            .unwrap_or_else(|e| Err(Unservable::Unreadable(std::io::Error::other(e.to_string()))))
    }

    /// Add the images of the images folder not seen before. Each is decoded once (in
    /// parallel): one that does not is listed with its reason and left out.
    pub async fn scan(&self) -> Result<ScanReport, LabelError> {
        self.scan_root(Root::Images, "folder").await
    }

    /// [`Project::scan`] for any root.
    pub async fn scan_root(&self, root: Root, source: &str) -> Result<ScanReport, LabelError> {
        let dir = self.root_dir(root);
        if !dir.is_dir() {
            return Ok(ScanReport::default());
        }
        let known = self.store.known_files(root).await?;
        let found: Vec<String> = image_files(&dir)?.into_iter().filter(|f| !known.contains(f)).collect();
        let limits = self.limits;
        let checked: Vec<(String, Probed)> = tokio::task::spawn_blocking(move || {
            found
                .into_par_iter()
                .map(|f| {
                    let r = probe(&dir.join(&f), &limits);
                    (f, r)
                })
                .collect()
        })
        .await
        .map_err(|e| LabelError::invalid(format!("scan: {e}")))?;
        let mut report = ScanReport::default();
        for (file, result) in checked {
            match result {
                Ok((size, bytes)) => {
                    self.store.add_image(root, &file, size, bytes, source).await?;
                    report.added += 1;
                }
                Err(reason) => {
                    self.store.add_problem(root, &file, &reason).await?;
                    report.problems.push((file, reason));
                }
            }
        }
        Ok(report)
    }
}

/// An image's `(width, height)` and byte count, or why it cannot be had.
pub(crate) type Probed = Result<((u32, u32), u64), String>;

/// Decode `path` whole (a truncated file must not pass); its size and byte count.
pub(crate) fn probe(path: &Path, limits: &DecodeLimits) -> Probed {
    let bytes = strix_vision::read_file(path, limits).map_err(|e| e.to_string())?;
    probe_bytes(&bytes, limits)
}

/// [`probe`] for a file read already.
pub(crate) fn probe_bytes(bytes: &[u8], limits: &DecodeLimits) -> Probed {
    let img = strix_vision::decode_bytes(bytes, limits).map_err(|e| e.to_string())?;
    Ok(((img.width(), img.height()), bytes.len() as u64))
}

/// Why an image's file is not served.
#[derive(Debug)]
pub(crate) enum Unservable {
    /// It cannot be read now (deleted, no permission).
    Unreadable(std::io::Error),
    /// It is no longer what the scan accepted; says what it is now.
    Changed(String),
}

impl std::fmt::Display for Unservable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unservable::Unreadable(e) => write!(f, "cannot be read: {e}"),
            Unservable::Changed(why) => write!(f, "is refused: it {why} (it was not like this when it was added)"),
        }
    }
}

/// The bytes of `root/file`, checked again as the scan checked them: the file may have been
/// replaced since it was added (by a link to `/etc/passwd`, say), and the path alone proves
/// nothing. It must be a regular file, not a link, inside `root` and at most `max_bytes`; what
/// can be is checked on the opened handle, so a swap between a check and the open is caught.
pub(crate) fn read_served(root: &std::path::Path, file: &str, max_bytes: u64) -> Result<Vec<u8>, Unservable> {
    use std::io::Read;
    let changed = Unservable::Changed;
    let path = root.join(file);
    let before = std::fs::symlink_metadata(&path).map_err(Unservable::Unreadable)?;
    if before.file_type().is_symlink() {
        return Err(changed("is now a symbolic link".into()));
    }
    if !before.is_file() {
        return Err(changed("is no longer a regular file".into()));
    }
    let handle = open_no_follow(&path).map_err(|e| match e.raw_os_error() {
        #[cfg(unix)]
        Some(libc::ELOOP) => changed("is now a symbolic link".into()),
        _ => Unservable::Unreadable(e),
    })?;
    let meta = handle.metadata().map_err(Unservable::Unreadable)?;
    if !meta.is_file() || !same_file(&before, &meta) {
        return Err(changed("was replaced while it was being opened".into()));
    }
    if meta.len() > max_bytes {
        return Err(changed(format!("is {} bytes, over the {max_bytes}-byte limit", meta.len())));
    }
    // Where the opened file really is: a folder on the way may have become a link.
    let root = root.canonicalize().map_err(Unservable::Unreadable)?;
    let real = opened_path(&handle, &path).map_err(Unservable::Unreadable)?;
    if !real.starts_with(&root) {
        // The server's own folders are none of the client's business.
        return Err(changed("is now outside its folder".into()));
    }
    let mut bytes = Vec::new();
    // One byte more than the limit: a file that grew since the check is refused, not read whole.
    handle.take(max_bytes + 1).read_to_end(&mut bytes).map_err(Unservable::Unreadable)?;
    if bytes.len() as u64 > max_bytes {
        return Err(changed(format!("grew over the {max_bytes}-byte limit")));
    }
    Ok(bytes)
}

/// `path` opened for reading, refusing a link in its last step, and without waiting on a FIFO
/// swapped in (which would hold a blocking thread for good): what it is, is checked next.
fn open_no_follow(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW | libc::O_NONBLOCK);
    options.open(path)
}

/// Whether two metadata are of the same file (device and inode).
#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

/// The real path of an opened file: on Linux the one the kernel holds for the handle (a path
/// changed after the open does not fool it), elsewhere `path` resolved now.
fn opened_path(handle: &std::fs::File, path: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", handle.as_raw_fd())) {
            return Ok(real);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = handle;
    path.canonicalize()
}

/// Image files under `dir` (sub-folders too, 8 deep), as `/`-separated relative paths, sorted.
/// Links are not followed, so nothing outside `dir` is reached through one.
pub(crate) fn image_files(dir: &Path) -> Result<Vec<String>, LabelError> {
    fn walk(base: &Path, dir: &Path, depth: usize, out: &mut Vec<String>) -> Result<(), LabelError> {
        for entry in std::fs::read_dir(dir).map_err(LabelError::io(dir))? {
            let entry = entry.map_err(LabelError::io(dir))?;
            let kind = entry.file_type().map_err(LabelError::io(&entry.path()))?;
            let path = entry.path();
            if kind.is_dir() && depth < 8 {
                walk(base, &path, depth + 1, out)?;
            } else if kind.is_file()
                && strix_vision::is_image_path(&path)
                && let Some(rel) = relative(base, &path)
            {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, 0, &mut out)?;
    out.sort();
    Ok(out)
}

/// `path` relative to `base` as `/`-joined UTF-8 parts; `None` for anything else.
fn relative(base: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(base).ok()?;
    let parts: Option<Vec<&str>> =
        rel.components().map(|c| if let Component::Normal(p) = c { p.to_str() } else { None }).collect();
    parts.map(|p| p.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_must_be_usable_as_folders() {
        let bad =
            |c: &[&str]| ProjectConfig::check_classes(&c.iter().map(|s| s.to_string()).collect::<Vec<_>>()).is_err();
        assert!(bad(&[]));
        assert!(bad(&["a", "a"]));
        assert!(bad(&["a/b"]));
        assert!(bad(&[" a"]));
        assert!(bad(&[".."]));
        assert!(!bad(&["compost", "recycling", "landfill"]));
    }

    #[tokio::test]
    async fn scan_adds_images_once_and_lists_the_ones_that_do_not_decode() {
        let d = tempfile::tempdir().unwrap();
        let images = d.path().join("images");
        std::fs::create_dir_all(images.join("sub")).unwrap();
        image::RgbImage::new(8, 6).save(images.join("a.png")).unwrap();
        image::RgbImage::new(4, 4).save(images.join("sub/b.png")).unwrap();
        std::fs::write(images.join("broken.jpg"), b"not a jpeg").unwrap();
        let config = ProjectConfig { task: LabelTask::Classify, classes: vec!["x".into()], images: images.clone() };
        let project = Project::create(&d.path().join("p"), config).await.unwrap();
        let first = project.scan().await.unwrap();
        assert_eq!(first.added, 2);
        assert_eq!(first.problems.len(), 1);
        assert_eq!(first.problems[0].0, "broken.jpg");
        assert_eq!(project.scan().await.unwrap(), ScanReport::default());
        let rows = project.store.images(0, 10).await.unwrap();
        assert_eq!(
            rows.iter().map(|(r, _)| (r.file.as_str(), r.width)).collect::<Vec<_>>(),
            [("a.png", 8), ("sub/b.png", 4)]
        );
        assert_eq!(project.store.problems().await.unwrap().len(), 1);
    }
}
