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
use strix_data::detection::{DetBox, DetImage, DetectionSet};

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
    /// Of those, images that had labels already (now saved over as a new version).
    pub relabelled: usize,
    /// Classes the project did not have before.
    pub new_classes: Vec<String>,
    /// `(file, reason)` of what was left out.
    pub problems: Vec<(String, String)>,
}

/// A dataset read for import: its classes and each image's file and labels.
#[derive(Clone, Debug, Default)]
pub struct Incoming {
    pub classes: Vec<String>,
    pub images: Vec<(PathBuf, Labels)>,
    pub problems: Vec<(String, String)>,
}

/// Read `format` for import: COCO (`annotations` is the JSON, `images` its image folder),
/// YOLO (`annotations` the labels folder, with `classes.txt` in it or beside it), or class
/// folders (`images` holds `<class>/<image>`).
pub fn read(format: Format, annotations: Option<&Path>, images: &Path) -> Result<Incoming, LabelError> {
    let need = || LabelError::invalid(format!("{format} import needs --annotations"));
    match format {
        Format::Coco | Format::Yolo => {
            let set = if format == Format::Coco {
                strix_data::detection::read_coco(annotations.ok_or_else(need)?, images)?
            } else {
                let labels = annotations.ok_or_else(need)?;
                let names = [labels.join("classes.txt"), labels.parent().unwrap_or(labels).join("classes.txt")]
                    .into_iter()
                    .find(|p| p.is_file())
                    .ok_or_else(|| LabelError::invalid(format!("no classes.txt in or beside {}", labels.display())))?;
                let text = std::fs::read_to_string(&names).map_err(LabelError::io(&names))?;
                let classes = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
                strix_data::detection::read_yolo_images(images, labels, classes)?
            };
            let set = strix_data::detection::sanitize(set);
            let images = set
                .images
                .iter()
                .map(|im| {
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
                    (im.path.clone(), Labels { class: None, boxes })
                })
                .collect();
            let problems = set.problems.iter().map(|p| (String::new(), p.clone())).collect();
            Ok(Incoming { classes: set.classes, images, problems })
        }
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
            Ok(Incoming { classes: set.classes, images, problems: vec![] })
        }
        Format::Csv => Err(LabelError::invalid("csv import is not offered: import coco, yolo or folder")),
    }
}

/// Bring `incoming` into `project`: its classes added, each image found in the project's
/// images folder or copied into `imported/`, decoded once (those that fail are listed and
/// left out), and its labels saved as the image's next version.
pub async fn import(project: &mut Project, incoming: Incoming) -> Result<ImportReport, LabelError> {
    let before: HashSet<String> = project.config.classes.iter().cloned().collect();
    project.add_classes(&incoming.classes)?;
    let mut report = ImportReport {
        new_classes: project.config.classes.iter().filter(|c| !before.contains(*c)).cloned().collect(),
        problems: incoming.problems,
        ..ImportReport::default()
    };
    let images_root = project.config.images.clone();
    for (path, labels) in incoming.images {
        let shown = path.display().to_string();
        let (root, file) = match locate(&images_root, &path) {
            Some(rel) => (Root::Images, rel),
            None => {
                let name = match imported_name(&path) {
                    Ok(n) => n,
                    Err(e) => {
                        report.problems.push((shown, format!("{e}; left out")));
                        continue;
                    }
                };
                let dst = project.root_dir(Root::Imported).join(&name);
                if !dst.is_file() {
                    place(&path, &dst)?;
                }
                (Root::Imported, name)
            }
        };
        let full = project.root_dir(root).join(&file);
        let limits = project.limits;
        let probed = tokio::task::spawn_blocking(move || crate::project::probe(&full, &limits))
            .await
            .map_err(|e| LabelError::invalid(format!("import: {e}")))?;
        let (size, bytes) = match probed {
            Ok(v) => v,
            Err(reason) => {
                report.problems.push((shown, format!("{reason}; left out")));
                continue;
            }
        };
        let labels = match labels.checked(project.config.task, &project.config.classes, size.0, size.1) {
            Ok(l) => l,
            Err(e) => {
                report.problems.push((shown, format!("{e}; left out")));
                continue;
            }
        };
        let id = project.store.add_image(root, &file, size, bytes, "import").await?;
        let current = project.store.annotation(id).await?.map_or(0, |a| a.version);
        project.store.save(id, current, &labels, false, "import").await?;
        report.images += 1;
        report.boxes += labels.boxes.len();
        report.relabelled += usize::from(current > 0);
    }
    Ok(report)
}

/// `path` relative to `root` when it lies inside it (both resolved), `/`-separated.
fn locate(root: &Path, path: &Path) -> Option<String> {
    let full = path.canonicalize().ok()?;
    let rel = full.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let rel = parts?.join("/");
    crate::project::is_safe_relative(&rel).then_some(rel)
}

/// The name of `path` inside `imported/`: its content's digest before its own name, so the
/// same image imported twice is one image, and two different `a.jpg` are two.
fn imported_name(path: &Path) -> Result<String, LabelError> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(LabelError::io(path))?;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    let name =
        path.file_name().map(|n| n.to_string_lossy().replace(['/', '\\'], "_")).unwrap_or_else(|| "image".into());
    Ok(format!("{}_{name}", &digest[..12]))
}
