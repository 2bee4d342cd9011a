//! Labels out of a project in the layouts `strix train` reads, and into one from them.
//!
//! | format | detection | classification |
//! |---|---|---|
//! | `coco` | `annotations/instances_train.json` + `images/train/` | - |
//! | `yolo` | `images/`, `labels/*.txt`, `classes.txt` | - |
//! | `folder` | - | `<class>/<image>` |
//! | `csv` | `boxes.csv` (`file,width,height,class,x,y,w,h`) + `images/` | `labels.csv` (`path,label`) + `images/` |
//!
//! Only labelled images are written; a detection image saved with no boxes is a negative.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strix_data::detection::{DetBox, DetImage, DetectionSet, yolo_label_file};

use crate::labels::{LabelBox, LabelTask, Labels};
use crate::store::{ImageRow, Root};
use crate::{LabelError, Project};

/// A dataset layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Coco,
    Yolo,
    Folder,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "coco" => Ok(Format::Coco),
            "yolo" => Ok(Format::Yolo),
            "folder" => Ok(Format::Folder),
            "csv" => Ok(Format::Csv),
            other => Err(format!("unknown format {other:?}: use coco, yolo, folder or csv")),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Coco => "coco",
            Format::Yolo => "yolo",
            Format::Folder => "folder",
            Format::Csv => "csv",
        })
    }
}

impl Format {
    /// Refuse a format that does not carry `task`'s labels.
    pub fn check(self, task: LabelTask) -> Result<(), LabelError> {
        match (self, task) {
            (Format::Coco | Format::Yolo, LabelTask::Classify) => Err(LabelError::invalid(format!(
                "{self} holds boxes; a classification project exports as folder or csv"
            ))),
            (Format::Folder, LabelTask::Detect) => Err(LabelError::invalid(
                "folder holds one class per image; a detection project exports as coco, yolo or csv",
            )),
            _ => Ok(()),
        }
    }

    /// The format `strix train` reads best for `task`.
    pub fn for_training(task: LabelTask) -> Format {
        match task {
            LabelTask::Classify => Format::Folder,
            LabelTask::Detect => Format::Coco,
        }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExportReport {
    pub images: usize,
    pub boxes: usize,
    pub out: PathBuf,
}

/// Write the project's labelled images and labels to `out` in `format`. `out` must not exist
/// or be empty; the export is made beside it and renamed into place, so a failed one leaves
/// nothing half-written there.
pub async fn export(project: &Project, format: Format, out: &Path) -> Result<ExportReport, LabelError> {
    format.check(project.config.task)?;
    if out.exists() && std::fs::read_dir(out).map_err(LabelError::io(out))?.next().is_some() {
        return Err(LabelError::invalid(format!(
            "{} exists and is not empty; export into a new folder",
            out.display()
        )));
    }
    let labelled = project.store.labelled().await?;
    let items: Vec<(PathBuf, String, ImageRow, Labels)> = {
        let names = export_names(&labelled.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>());
        labelled
            .into_iter()
            .zip(names)
            .map(|((img, a), name)| (project.image_path(&img), name, img, a.labels))
            .collect()
    };
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
    let staging = out.with_file_name(format!(".{name}.partial{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = write_format(project, format, &staging, &items);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if out.exists() {
        std::fs::remove_dir(out).map_err(LabelError::io(out))?;
    }
    std::fs::rename(&staging, out).map_err(LabelError::io(out))?;
    Ok(ExportReport { images: items.len(), boxes: items.iter().map(|i| i.3.boxes.len()).sum(), out: out.to_path_buf() })
}

fn write_format(
    project: &Project,
    format: Format,
    dir: &Path,
    items: &[(PathBuf, String, ImageRow, Labels)],
) -> Result<(), LabelError> {
    let classes = &project.config.classes;
    match format {
        Format::Coco | Format::Yolo => {
            let images = if format == Format::Coco { dir.join("images").join("train") } else { dir.join("images") };
            let set = detection_set(classes, items, &images);
            for (src, name, ..) in items {
                place(src, &images.join(name))?;
            }
            if format == Format::Coco {
                strix_data::detection::write_coco(
                    &set,
                    &dir.join("annotations").join("instances_train.json"),
                    &images,
                )?;
            } else {
                strix_data::detection::write_yolo_labels(&set, dir)?;
            }
        }
        Format::Folder => {
            for (src, name, _, labels) in items {
                if let Some(class) = &labels.class {
                    place(src, &dir.join(class).join(name))?;
                }
            }
            std::fs::create_dir_all(dir).map_err(LabelError::io(dir))?;
        }
        Format::Csv => {
            let mut text = String::new();
            let task = project.config.task;
            text.push_str(if task == LabelTask::Classify {
                "path,label\n"
            } else {
                "file,width,height,class,x,y,w,h\n"
            });
            for (src, name, img, labels) in items {
                place(src, &dir.join("images").join(name))?;
                let file = csv_field(&format!("images/{name}"));
                match task {
                    LabelTask::Classify => {
                        if let Some(c) = &labels.class {
                            text.push_str(&format!("{file},{}\n", csv_field(c)));
                        }
                    }
                    LabelTask::Detect if labels.boxes.is_empty() => {
                        text.push_str(&format!("{file},{},{},,,,,\n", img.width, img.height));
                    }
                    LabelTask::Detect => {
                        for b in &labels.boxes {
                            text.push_str(&format!(
                                "{file},{},{},{},{},{},{},{}\n",
                                img.width,
                                img.height,
                                csv_field(&b.class),
                                b.x,
                                b.y,
                                b.w,
                                b.h
                            ));
                        }
                    }
                }
            }
            let csv = if task == LabelTask::Classify { "labels.csv" } else { "boxes.csv" };
            crate::write_whole(&dir.join(csv), text.as_bytes())?;
        }
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

fn detection_set(classes: &[String], items: &[(PathBuf, String, ImageRow, Labels)], images: &Path) -> DetectionSet {
    let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let images = items
        .iter()
        .map(|(_, name, img, labels)| DetImage {
            path: images.join(name),
            width: img.width,
            height: img.height,
            boxes: labels
                .boxes
                .iter()
                .filter_map(|b| {
                    Some(DetBox { class: *index.get(b.class.as_str())?, bbox: [b.x, b.y, b.w, b.h], iscrowd: false })
                })
                .collect(),
        })
        .collect();
    DetectionSet { classes: classes.to_vec(), images, ..DetectionSet::default() }
}

/// Flat, unique file names for exported images: the path with `/` as `__`, captured and
/// imported ones prefixed by their root; the id goes in front of any that would still clash
/// (YOLO pairs images and labels by stem, so stems must be unique too).
fn export_names(images: &[ImageRow]) -> Vec<String> {
    let flat = |img: &ImageRow| match img.root {
        Root::Images => img.file.replace('/', "__"),
        other => format!("{}__{}", other.as_str(), img.file.replace('/', "__")),
    };
    let stem = |name: &str| Path::new(name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut stems: HashMap<String, usize> = HashMap::new();
    for img in images {
        *stems.entry(stem(&flat(img))).or_default() += 1;
    }
    images
        .iter()
        .map(|img| {
            let name = flat(img);
            if stems[&stem(&name)] > 1 { format!("{}__{name}", img.id) } else { name }
        })
        .collect()
}

/// `src` at `dst`: a hard link when the file system allows, else a copy.
fn place(src: &Path, dst: &Path) -> Result<(), LabelError> {
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).map_err(LabelError::io(dir))?;
    }
    if std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    std::fs::copy(src, dst).map(|_| ()).map_err(LabelError::io(src))
}

/// What an import brought in.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ImportReport {
    pub images: usize,
    pub boxes: usize,
    /// Of those, images that had other labels (now saved over as a new version).
    pub relabelled: usize,
    /// Of those, images that had these very labels already (nothing saved).
    pub unchanged: usize,
    /// Classes the project did not have before.
    pub new_classes: Vec<String>,
    /// Images the import gave no labels for (YOLO: no label file) that were left as they are.
    pub left_alone: usize,
    /// Label files no image goes with (YOLO: `x.txt` and no image `x.*`): ignored.
    pub orphans: Vec<String>,
    /// `(file, reason)` of what was left out.
    pub problems: Vec<(String, String)>,
}

/// A dataset read for import: its classes and each image's file and labels. Every file lies
/// inside the images folder it was read from (links resolved), and none is named twice.
#[derive(Clone, Debug, Default)]
pub struct Incoming {
    pub classes: Vec<String>,
    pub images: Vec<(PathBuf, Labels)>,
    /// Images the dataset holds but gives no labels for (YOLO: no `<stem>.txt`). YOLO reads that
    /// as "no objects"; [`import`] does so only when told to ([`Unlabelled::Negative`]).
    pub unlabelled: Vec<PathBuf>,
    /// Label files that go with no image, by file name.
    pub orphans: Vec<String>,
    pub problems: Vec<(String, String)>,
}

/// What [`import`] does with the [`Incoming::unlabelled`] images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unlabelled {
    /// Saved as labelled negatives (no boxes), over any labels they have: the YOLO reading of a
    /// missing label file, right for a new project or an import meant to replace the labels.
    Negative,
    /// Left as they are, labels and all: importing some images' labels into a project must not
    /// erase the others'.
    LeaveAlone,
}

/// Read `format` for import: COCO (`annotations` is the JSON, `images` its image folder),
/// YOLO (`annotations` the labels folder, with `classes.txt` in it or beside it), or class
/// folders (`images` holds `<class>/<image>`). Nothing outside `images` is read: a file name
/// that is absolute, climbs out with `..`, or is a link resolving outside is an error, as are
/// duplicate COCO ids and files named twice.
pub fn read(format: Format, annotations: Option<&Path>, images: &Path) -> Result<Incoming, LabelError> {
    let need = || LabelError::invalid(format!("{format} import needs --annotations"));
    let root = images.canonicalize().map_err(LabelError::io(images))?;
    let incoming = match format {
        Format::Coco => {
            let json = annotations.ok_or_else(need)?;
            // The reader refuses duplicate ids and file names outside `images` before `sanitize`
            // looks at any image file.
            let set = strix_data::detection::read_coco(json, images)?;
            detection_incoming(&strix_data::detection::sanitize(set), |_| true)
        }
        Format::Yolo => read_yolo(annotations.ok_or_else(need)?, images, &root)?,
        Format::Folder => {
            let set = strix_data::ImageSet::folder(images, None)?;
            let images = set
                .items
                .iter()
                .filter_map(|item| match &item.source {
                    strix_data::Source::File(path) => {
                        Some((path.clone(), Labels { class: Some(set.classes[item.label].clone()), boxes: vec![] }))
                    }
                    strix_data::Source::Idx(_) => None,
                })
                .collect();
            Incoming { classes: set.classes, images, ..Incoming::default() }
        }
        Format::Csv => return Err(LabelError::invalid("csv import is not offered: import coco, yolo or folder")),
    };
    confine(incoming, &root)
}

/// A detection set as [`Incoming`]; images for which `labelled` is false go to `unlabelled`.
fn detection_incoming(set: &DetectionSet, labelled: impl Fn(&DetImage) -> bool) -> Incoming {
    let mut incoming = Incoming { classes: set.classes.clone(), ..Incoming::default() };
    for im in &set.images {
        if !labelled(im) {
            incoming.unlabelled.push(im.path.clone());
            continue;
        }
        let boxes = im
            .boxes
            .iter()
            .map(|b| LabelBox {
                class: set.classes[b.class].clone(),
                x: b.bbox[0],
                y: b.bbox[1],
                w: b.bbox[2],
                h: b.bbox[3],
            })
            .collect();
        incoming.images.push((im.path.clone(), Labels { class: None, boxes }));
    }
    incoming.problems = set.problems.iter().map(|p| (String::new(), p.clone())).collect();
    incoming
}

/// A YOLO labels folder and its images: images without a label file are `unlabelled`, label
/// files without an image are `orphans`.
fn read_yolo(labels: &Path, images: &Path, root: &Path) -> Result<Incoming, LabelError> {
    let names = [labels.join("classes.txt"), labels.parent().unwrap_or(labels).join("classes.txt")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| LabelError::invalid(format!("no classes.txt in or beside {}", labels.display())))?;
    let classes = yolo_classes(&names)?;
    // Reading the set opens every image's header, so links out of the folder are refused first.
    let files = strix_data::detection::yolo_image_files(images)?;
    let mut confined = Confined::new(root);
    for file in &files {
        // One that cannot be resolved is left out, and said, when the set is confined below.
        let _ = confined.resolve(file)?;
    }
    let set = strix_data::detection::sanitize(strix_data::detection::read_yolo_images(images, labels, classes)?);
    let read: HashSet<&PathBuf> = set.sources.iter().collect();
    let mut incoming = detection_incoming(&set, |im| read.contains(&yolo_label_file(labels, &im.path)));
    let wanted: HashSet<PathBuf> = files.iter().map(|f| yolo_label_file(labels, f)).collect();
    for entry in std::fs::read_dir(labels).map_err(LabelError::io(labels))? {
        let path = entry.map_err(LabelError::io(labels))?.path();
        let is_txt = path.extension().is_some_and(|e| e == "txt");
        if is_txt && path != names && path.is_file() && !wanted.contains(&path) {
            incoming.orphans.push(path.file_name().unwrap_or_default().to_string_lossy().into_owned());
        }
    }
    incoming.orphans.sort();
    Ok(incoming)
}

/// YOLO class names, one a line (line N is class N-1). A UTF-8 byte-order mark, which Windows
/// editors write, is dropped rather than made part of the first name; a blank line would shift
/// the ids of every class after it, so one before the last name is an error.
fn yolo_classes(path: &Path) -> Result<Vec<String>, LabelError> {
    let meta = std::fs::metadata(path).map_err(LabelError::io(path))?;
    if meta.len() > 1 << 20 {
        return Err(LabelError::Format {
            path: path.into(),
            reason: format!("{} bytes is no list of names", meta.len()),
        });
    }
    let text = std::fs::read_to_string(path).map_err(LabelError::io(path))?;
    let lines: Vec<&str> = text.strip_prefix('\u{feff}').unwrap_or(&text).lines().map(str::trim).collect();
    let end = lines.iter().rposition(|l| !l.is_empty()).map_or(0, |i| i + 1);
    if let Some(blank) = lines[..end].iter().position(|l| l.is_empty()) {
        return Err(LabelError::Format {
            path: path.into(),
            reason: format!(
                "line {} is blank: line N names class N-1, so a blank line would shift every class after it; remove it",
                blank + 1
            ),
        });
    }
    Ok(lines[..end].iter().map(|l| l.to_string()).collect())
}

/// Resolves files (links followed) and checks each lies inside `root` and was not met before.
struct Confined<'a> {
    root: &'a Path,
    seen: HashMap<PathBuf, PathBuf>,
}

impl<'a> Confined<'a> {
    fn new(root: &'a Path) -> Self {
        Confined { root, seen: HashMap::new() }
    }

    /// `path` resolved; `Ok(Err(reason))` when it cannot be resolved (it is not there).
    fn resolve(&mut self, path: &Path) -> Result<Result<PathBuf, String>, LabelError> {
        let full = match path.canonicalize() {
            Ok(full) => full,
            Err(e) => return Ok(Err(format!("cannot be read ({e})"))),
        };
        if !full.starts_with(self.root) {
            return Err(LabelError::invalid(format!(
                "{path:?} leads outside the images folder {:?} (through a link); an import reads only files inside it",
                self.root
            )));
        }
        if let Some(first) = self.seen.insert(full.clone(), path.to_path_buf()) {
            return Err(LabelError::invalid(format!(
                "{first:?} and {path:?} are one file named twice; each image may be named once"
            )));
        }
        Ok(Ok(full))
    }
}

/// `incoming` with every file resolved inside `root` (the rule the images folder's scan keeps
/// by following no links): an import must not copy, serve or export a file from elsewhere.
fn confine(mut incoming: Incoming, root: &Path) -> Result<Incoming, LabelError> {
    let mut confined = Confined::new(root);
    let mut images = Vec::with_capacity(incoming.images.len());
    for (path, labels) in std::mem::take(&mut incoming.images) {
        match confined.resolve(&path)? {
            Ok(full) => images.push((full, labels)),
            Err(reason) => incoming.problems.push((path.display().to_string(), format!("{reason}; left out"))),
        }
    }
    let mut unlabelled = Vec::with_capacity(incoming.unlabelled.len());
    for path in std::mem::take(&mut incoming.unlabelled) {
        match confined.resolve(&path)? {
            Ok(full) => unlabelled.push(full),
            Err(reason) => incoming.problems.push((path.display().to_string(), format!("{reason}; left out"))),
        }
    }
    Ok(Incoming { images, unlabelled, ..incoming })
}

/// Bring `incoming` into `project`: its classes added, each image found in the project's
/// images folder or copied into `imported/`, decoded once (those that fail are listed and
/// left out), and its labels saved as the image's next version. What happens to the images
/// it gives no labels for is `unlabelled`'s to say.
pub async fn import(
    project: &mut Project,
    incoming: Incoming,
    unlabelled: Unlabelled,
) -> Result<ImportReport, LabelError> {
    let before: HashSet<String> = project.config.classes.iter().cloned().collect();
    project.add_classes(&incoming.classes)?;
    let mut report = ImportReport {
        new_classes: project.config.classes.iter().filter(|c| !before.contains(*c)).cloned().collect(),
        orphans: incoming.orphans,
        problems: incoming.problems,
        ..ImportReport::default()
    };
    let negatives = match unlabelled {
        Unlabelled::Negative => incoming.unlabelled,
        Unlabelled::LeaveAlone => {
            report.left_alone = incoming.unlabelled.len();
            Vec::new()
        }
    };
    for (path, labels) in incoming.images.into_iter().chain(negatives.into_iter().map(|p| (p, Labels::default()))) {
        match import_one(project, &path, labels).await? {
            Outcome::Saved { boxes, before, after } => {
                report.images += 1;
                report.boxes += boxes;
                report.relabelled += usize::from(before > 0 && after != before);
                report.unchanged += usize::from(after == before);
            }
            Outcome::LeftOut(reason) => {
                report.problems.push((path.display().to_string(), format!("{reason}; left out")))
            }
        }
    }
    Ok(report)
}

enum Outcome {
    /// The image's version before and after (the same when its labels were these already).
    Saved {
        boxes: usize,
        before: i64,
        after: i64,
    },
    LeftOut(String),
}

/// One image in: read once from where it is (its size checked before a byte is read) and
/// decoded, its labels checked, and only then found in the project's images folder or written
/// to `imported/`, and its labels saved as its next version.
async fn import_one(project: &Project, path: &Path, labels: Labels) -> Result<Outcome, LabelError> {
    let (src, limits) = (path.to_path_buf(), project.limits);
    let read = tokio::task::spawn_blocking(move || inspect(&src, &limits))
        .await
        .map_err(|e| LabelError::invalid(format!("import: {e}")))?;
    let (size, data, digest) = match read {
        Ok(v) => v,
        Err(reason) => return Ok(Outcome::LeftOut(reason)),
    };
    let labels = match labels.checked(project.config.task, &project.config.classes, size.0, size.1) {
        Ok(l) => l,
        Err(e) => return Ok(Outcome::LeftOut(e.to_string())),
    };
    let (root, file) = match locate(&project.config.images, path) {
        Some(rel) => (Root::Images, rel),
        None => {
            let name = imported_name(path, &digest);
            let dst = project.root_dir(Root::Imported).join(&name);
            // The bytes checked, not the path again: a folder on the way swapped for a link
            // since the check would otherwise bring in a file from outside.
            if !dst.is_file() {
                crate::write_whole(&dst, &data)?;
            }
            (Root::Imported, name)
        }
    };
    let bytes = data.len() as u64;
    drop(data);
    let id = project.store.add_image(root, &file, size, bytes, "import").await?;
    let current = project.store.annotation(id).await?.map_or(0, |a| a.version);
    let after = project.store.save(id, current, &labels, false, "import").await?;
    Ok(Outcome::Saved { boxes: labels.boxes.len(), before: current, after })
}

/// An image read and decoded for import: `(width, height)`, its bytes, their hex SHA-256.
type Inspected = ((u32, u32), Vec<u8>, String);

/// [`Inspected`] of the image at `path`, or why not.
fn inspect(path: &Path, limits: &strix_vision::DecodeLimits) -> Result<Inspected, String> {
    use sha2::Digest;
    let bytes = strix_vision::read_file(path, limits).map_err(|e| e.to_string())?;
    let (size, _) = crate::project::probe_bytes(&bytes, limits)?;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    Ok((size, bytes, digest))
}

/// `path` relative to `root` when it lies inside it (both resolved), `/`-separated.
fn locate(root: &Path, path: &Path) -> Option<String> {
    let full = path.canonicalize().ok()?;
    let rel = full.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let rel = parts?.join("/");
    crate::store::is_safe_relative(&rel).then_some(rel)
}

/// The name of `path` inside `imported/`: its content's digest before its own name, so the
/// same image imported twice is one image, and two different `a.jpg` are two.
fn imported_name(path: &Path, digest: &str) -> String {
    let name =
        path.file_name().map(|n| n.to_string_lossy().replace(['/', '\\'], "_")).unwrap_or_else(|| "image".into());
    format!("{}_{name}", &digest[..12])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LabelTask, ProjectConfig};

    /// `dir` with a small PNG for each name.
    fn photos(dir: &Path, names: &[&str]) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        for name in names {
            image::RgbImage::new(40, 30).save(dir.join(name)).unwrap();
        }
        dir.to_path_buf()
    }

    /// A detection project `dir/p` with the one class `cat`, labelling `images`.
    async fn cat_project(dir: &Path, images: &Path) -> Project {
        let config =
            ProjectConfig { task: LabelTask::Detect, classes: vec!["cat".into()], images: images.to_path_buf() };
        Project::create(&dir.join("p"), config).await.unwrap()
    }

    /// A COCO JSON at `dir/instances.json` with `(id, file_name)` images, `(id, name)`
    /// categories, and one box on the first image in the first category.
    fn coco(dir: &Path, images: &[(u64, &str)], categories: &[(u64, &str)]) -> PathBuf {
        let images: Vec<_> = images
            .iter()
            .map(|(id, f)| serde_json::json!({ "id": id, "file_name": f, "width": 40, "height": 30 }))
            .collect();
        let categories: Vec<_> = categories.iter().map(|(id, n)| serde_json::json!({ "id": id, "name": n })).collect();
        let first = (images[0]["id"].clone(), categories[0]["id"].clone());
        let annotations =
            [serde_json::json!({ "id": 1, "image_id": first.0, "category_id": first.1, "bbox": [1, 2, 10, 8] })];
        let doc = serde_json::json!({ "images": images, "annotations": annotations, "categories": categories });
        let path = dir.join("instances.json");
        std::fs::write(&path, doc.to_string()).unwrap();
        path
    }

    fn read_err(format: Format, annotations: &Path, images: &Path) -> String {
        read(format, Some(annotations), images).map(|_| ()).unwrap_err().to_string()
    }

    /// Regression (issue 31, item 4): an absolute or `..` file_name was linked into the project.
    #[test]
    fn coco_file_names_outside_the_images_folder_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let images = photos(&d.path().join("images"), &["a.png"]);
        let outside = photos(&d.path().join("elsewhere"), &["secret.png"]).join("secret.png");
        for name in [outside.to_str().unwrap(), "../elsewhere/secret.png", "sub/../../elsewhere/secret.png"] {
            let json = coco(d.path(), &[(1, "a.png"), (2, name)], &[(1, "cat")]);
            let err = read_err(Format::Coco, &json, &images);
            assert!(err.contains(&format!("{name:?}")) && err.contains("images folder"), "{name}: {err}");
        }
    }

    /// Regression (issue 31, item 4): the same rule for links inside the folder leading out.
    #[test]
    fn links_out_of_the_images_folder_are_refused_in_every_format() {
        let d = tempfile::tempdir().unwrap();
        let images = photos(&d.path().join("images"), &["a.png"]);
        let outside = photos(&d.path().join("elsewhere"), &["secret.png"]).join("secret.png");
        std::os::unix::fs::symlink(&outside, images.join("link.png")).unwrap();
        let json = coco(d.path(), &[(1, "a.png"), (2, "link.png")], &[(1, "cat")]);
        let labels = d.path().join("labels");
        std::fs::create_dir_all(&labels).unwrap();
        std::fs::write(labels.join("classes.txt"), "cat\n").unwrap();
        for (format, annotations) in [(Format::Coco, &json), (Format::Yolo, &labels)] {
            let err = read_err(format, annotations, &images);
            assert!(err.contains("link.png") && err.contains("leads outside the images folder"), "{format}: {err}");
        }
        let classes = d.path().join("classes");
        std::fs::create_dir_all(classes.join("cat")).unwrap();
        std::os::unix::fs::symlink(&outside, classes.join("cat").join("link.png")).unwrap();
        let err = read(Format::Folder, None, &classes).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("link.png") && err.contains("leads outside the images folder"), "{err}");
        // A link that stays inside is the file it names.
        std::fs::remove_file(images.join("link.png")).unwrap();
        std::os::unix::fs::symlink(images.join("a.png"), images.join("link.png")).unwrap();
        let json = coco(d.path(), &[(1, "link.png")], &[(1, "cat")]);
        let incoming = read(Format::Coco, Some(&json), &images).unwrap();
        assert_eq!(incoming.images[0].0, images.canonicalize().unwrap().join("a.png"));
    }

    /// Regression (issue 31, item 5): two images with one id put one's box on the other.
    #[test]
    fn coco_duplicate_image_ids_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let images = photos(&d.path().join("images"), &["a.png", "b.png"]);
        let json = coco(d.path(), &[(7, "a.png"), (7, "b.png")], &[(1, "cat")]);
        let err = read_err(Format::Coco, &json, &images);
        assert!(err.contains("image id 7 is given twice") && err.contains("\"b.png\""), "{err}");
    }

    /// Regression (issue 31, item 5): with two categories of one id the last name won.
    #[test]
    fn coco_duplicate_category_ids_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let images = photos(&d.path().join("images"), &["a.png"]);
        let json = coco(d.path(), &[(1, "a.png")], &[(3, "cat"), (3, "dog")]);
        let err = read_err(Format::Coco, &json, &images);
        assert!(err.contains("category id 3 is given twice (\"cat\" and \"dog\")"), "{err}");
    }

    /// Regression (issue 31, item 5): two entries for one file, the second replacing the first.
    #[test]
    fn coco_one_file_named_by_two_images_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let images = photos(&d.path().join("images"), &["a.png"]);
        let json = coco(d.path(), &[(1, "a.png"), (2, "a.png")], &[(1, "cat")]);
        let err = read_err(Format::Coco, &json, &images);
        assert!(err.contains("file_name \"a.png\" is given twice (image ids 1 and 2)"), "{err}");
        let json = coco(d.path(), &[(1, "a.png"), (2, "./a.png")], &[(1, "cat")]);
        let err = read_err(Format::Coco, &json, &images);
        assert!(err.contains("one file named twice"), "{err}");
    }

    /// A YOLO labels folder with `classes.txt` and `(stem, rows)` label files.
    fn yolo_labels(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("classes.txt"), "cat\ndog\n").unwrap();
        for (stem, rows) in files {
            std::fs::write(dir.join(format!("{stem}.txt")), rows).unwrap();
        }
        dir.to_path_buf()
    }

    /// Regression (issue 31, item 6): images without a label file were saved as empty over
    /// their labels, and label files with no image were ignored without a word.
    #[tokio::test]
    async fn yolo_import_leaves_images_without_a_label_file_alone_unless_told() {
        let d = tempfile::tempdir().unwrap();
        let images = photos(&d.path().join("images"), &["a.png", "b.png"]);
        let mut project = cat_project(d.path(), &images).await;
        let all = yolo_labels(&d.path().join("l1"), &[("a", "0 0.5 0.5 0.2 0.2\n"), ("b", "1 0.5 0.5 0.4 0.4\n")]);
        let first = import(&mut project, read(Format::Yolo, Some(&all), &images).unwrap(), Unlabelled::LeaveAlone);
        assert_eq!(first.await.unwrap().images, 2);
        let some = yolo_labels(&d.path().join("l2"), &[("a", "0 0.5 0.5 0.3 0.3\n"), ("zebra", "0 0.5 0.5 0.1 0.1\n")]);
        let incoming = read(Format::Yolo, Some(&some), &images).unwrap();
        assert_eq!(incoming.orphans, ["zebra.txt"]);
        let report = import(&mut project, incoming, Unlabelled::LeaveAlone).await.unwrap();
        assert_eq!((report.images, report.relabelled, report.left_alone), (1, 1, 1));
        assert_eq!(report.orphans, ["zebra.txt"]);
        assert_eq!(saved(&project).await, [row("a.png", 2, &["cat"]), row("b.png", 1, &["dog"])]);
        // Asked to, a missing label file means "no objects", as YOLO has it.
        let report = import(&mut project, read(Format::Yolo, Some(&some), &images).unwrap(), Unlabelled::Negative);
        assert_eq!(report.await.unwrap().left_alone, 0);
        assert_eq!(saved(&project).await[1], row("b.png", 2, &[]));
    }

    type Row = (String, i64, Vec<String>);

    fn row(file: &str, version: i64, classes: &[&str]) -> Row {
        (file.into(), version, classes.iter().map(|c| c.to_string()).collect())
    }

    /// Each image's file, version and box classes.
    async fn saved(project: &Project) -> Vec<Row> {
        let rows = project.store.images(0, 10).await.unwrap();
        rows.into_iter()
            .map(|(r, a)| {
                let a = a.unwrap();
                (r.file, a.version, a.labels.boxes.iter().map(|b| b.class.clone()).collect())
            })
            .collect()
    }

    /// Regression: `a.v1.png` was paired with `a.txt`, so its own `a.v1.txt` was listed as an
    /// orphan and the image imported as unlabelled (or with `a.png`'s boxes).
    #[test]
    fn yolo_import_pairs_a_dotted_stem_with_its_own_label_file() {
        let d = tempfile::tempdir().unwrap();
        let images = photos(&d.path().join("images"), &["a.png", "a.v1.png"]);
        let labels =
            yolo_labels(&d.path().join("labels"), &[("a", "0 0.5 0.5 0.2 0.2\n"), ("a.v1", "1 0.5 0.5 0.4 0.4\n")]);
        let incoming = read(Format::Yolo, Some(&labels), &images).unwrap();
        assert!(incoming.orphans.is_empty(), "{:?}", incoming.orphans);
        assert!(incoming.unlabelled.is_empty(), "{:?}", incoming.unlabelled);
        let mut got: Vec<(std::ffi::OsString, Vec<String>)> = incoming
            .images
            .iter()
            .map(|(path, l)| (path.file_name().unwrap().to_owned(), l.boxes.iter().map(|b| b.class.clone()).collect()))
            .collect();
        got.sort();
        assert_eq!(got, [("a.png".into(), vec!["cat".into()]), ("a.v1.png".into(), vec!["dog".into()])]);
    }

    /// Regression (issue 31, item 13): a byte-order mark became part of the first class name.
    #[test]
    fn yolo_classes_lose_a_byte_order_mark_and_keep_trailing_blank_lines() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("classes.txt");
        std::fs::write(&path, "\u{feff}cat\r\ndog\r\n\r\n\n").unwrap();
        assert_eq!(yolo_classes(&path).unwrap(), ["cat", "dog"]);
    }

    /// Regression (issue 31, item 13): a blank line shifted the ids of every class after it.
    #[test]
    fn a_blank_line_among_yolo_classes_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("classes.txt");
        std::fs::write(&path, "cat\n\ndog\n").unwrap();
        let err = yolo_classes(&path).unwrap_err().to_string();
        assert!(err.contains("line 2 is blank"), "{err}");
    }

    /// Regression (issue 31, item 4): an image was copied into `imported/` (and read whole)
    /// before its size was checked; one left out must leave nothing behind.
    #[tokio::test]
    async fn an_image_over_the_size_limit_is_left_out_before_it_is_copied() {
        let d = tempfile::tempdir().unwrap();
        let own = photos(&d.path().join("own"), &["x.png"]);
        let other = photos(&d.path().join("other"), &["big.png"]);
        let mut project = cat_project(d.path(), &own).await;
        project.limits.max_bytes = 20;
        let json = coco(&other, &[(1, "big.png")], &[(1, "cat")]);
        let incoming = read(Format::Coco, Some(&json), &other).unwrap();
        let report = import(&mut project, incoming, Unlabelled::LeaveAlone).await.unwrap();
        assert_eq!(report.images, 0);
        assert!(report.problems[0].1.contains("over the 20-byte limit"), "{:?}", report.problems);
        assert!(!project.root_dir(Root::Imported).join("big.png").exists());
        assert_eq!(std::fs::read_dir(project.root_dir(Root::Imported)).map_or(0, |d| d.count()), 0);
    }

    /// Review of issue 31, item 4: an image from outside the project's folder was linked in by
    /// its path after the check, so a folder swapped for a link in between brought in another
    /// file. The bytes that were checked are written instead: the source keeps one link.
    #[cfg(unix)]
    #[tokio::test]
    async fn an_imported_image_is_the_bytes_that_were_checked_not_a_link_to_its_path() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let own = photos(&d.path().join("own"), &["x.png"]);
        let other = photos(&d.path().join("other"), &["a.png"]);
        let mut project = cat_project(d.path(), &own).await;
        let json = coco(&other, &[(1, "a.png")], &[(1, "cat")]);
        let incoming = read(Format::Coco, Some(&json), &other).unwrap();
        assert_eq!(import(&mut project, incoming, Unlabelled::LeaveAlone).await.unwrap().images, 1);
        let placed: Vec<_> =
            std::fs::read_dir(project.root_dir(Root::Imported)).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(placed.len(), 1);
        assert_eq!(std::fs::read(&placed[0]).unwrap(), std::fs::read(other.join("a.png")).unwrap());
        assert_eq!(std::fs::metadata(other.join("a.png")).unwrap().nlink(), 1);
    }
}
