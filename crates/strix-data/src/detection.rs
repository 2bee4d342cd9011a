//! Detection datasets: COCO instances JSON and YOLO txt labels, read into one form (boxes in
//! pixels, `[x, y, w, h]`) for the detection training and evaluation that build on them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::DataError;

#[derive(Clone, Debug, PartialEq)]
pub struct DetBox {
    pub class: usize,
    /// `[x, y, w, h]` in pixels from the top-left corner.
    pub bbox: [f32; 4],
    pub iscrowd: bool,
}

#[derive(Clone, Debug)]
pub struct DetImage {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub boxes: Vec<DetBox>,
}

#[derive(Clone, Debug, Default)]
pub struct DetectionSet {
    pub classes: Vec<String>,
    pub images: Vec<DetImage>,
    /// What was wrong and how it was handled (`file[:line]: what, what was done`): images that
    /// are missing or do not decode (left out), boxes clipped to the image or dropped.
    pub problems: Vec<String>,
    /// The annotation files read (COCO JSON, `data.yaml`, YOLO label files), for lineage.
    pub sources: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct Coco {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnn>,
    categories: Vec<CocoCat>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Deserialize)]
struct CocoAnn {
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: [f32; 4],
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Deserialize)]
struct CocoCat {
    id: u64,
    name: String,
}

/// A COCO `instances_*.json`; image files are looked up in `image_dir`. Classes are the
/// categories ordered by id. Refused, before any image file is looked at: an image or category
/// id given twice, a category name given twice, one `file_name` for two images, and a
/// `file_name` that is empty, absolute or climbs out with `..` (sub-folders such as
/// `val2017/x.jpg` are fine).
pub fn read_coco(json: &Path, image_dir: &Path) -> Result<DetectionSet, DataError> {
    let text = std::fs::read_to_string(json).map_err(DataError::io(json))?;
    parse_coco(&text, json, image_dir)
}

/// [`read_coco`] on the file's text; `json` names it in errors.
pub fn parse_coco(text: &str, json: &Path, image_dir: &Path) -> Result<DetectionSet, DataError> {
    let mut coco: Coco = serde_json::from_str(text).map_err(|e| DataError::Line {
        path: json.into(),
        line: e.line(),
        reason: e.to_string(),
    })?;
    check_coco(&coco, json, image_dir)?;
    coco.categories.sort_by_key(|c| c.id);
    let cat: HashMap<u64, usize> = coco.categories.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
    let img: HashMap<u64, usize> = coco.images.iter().enumerate().map(|(i, im)| (im.id, i)).collect();
    let mut images: Vec<DetImage> = coco
        .images
        .iter()
        .map(|im| DetImage { path: image_dir.join(&im.file_name), width: im.width, height: im.height, boxes: vec![] })
        .collect();
    for a in &coco.annotations {
        let bad = |r: String| DataError::format(json, format!("annotation {}: {r}", a.id));
        let &i = img.get(&a.image_id).ok_or_else(|| bad(format!("unknown image_id {}", a.image_id)))?;
        let &c = cat.get(&a.category_id).ok_or_else(|| bad(format!("unknown category_id {}", a.category_id)))?;
        if a.bbox[2] < 0.0 || a.bbox[3] < 0.0 || a.bbox.iter().any(|v| !v.is_finite()) {
            return Err(bad(format!("bad bbox {:?}", a.bbox)));
        }
        images[i].boxes.push(DetBox { class: c, bbox: a.bbox, iscrowd: a.iscrowd != 0 });
    }
    Ok(DetectionSet {
        classes: coco.categories.into_iter().map(|c| c.name).collect(),
        images,
        problems: Vec::new(),
        sources: vec![json.to_path_buf()],
    })
}

/// What a COCO file may not say, since it would be read as something else: an image or category
/// id given twice (boxes would go to the other image, the last name would win), a category name
/// given twice (two classes no one can tell apart), one `file_name` for two images (one's labels
/// would replace the other's), and a `file_name` reaching outside `image_dir`.
fn check_coco(coco: &Coco, json: &Path, image_dir: &Path) -> Result<(), DataError> {
    let bad = |reason: String| DataError::format(json, reason);
    let (mut ids, mut files) = (HashMap::new(), HashMap::new());
    for im in &coco.images {
        if let Some(why) = leaves_folder(&im.file_name) {
            return Err(bad(format!(
                "image {}: file_name {:?} {why}; images are read only from inside the images folder {}",
                im.id,
                im.file_name,
                image_dir.display()
            )));
        }
        if let Some(first) = ids.insert(im.id, &im.file_name) {
            return Err(bad(format!("image id {} is given twice ({first:?} and {:?})", im.id, im.file_name)));
        }
        if let Some(first) = files.insert(&im.file_name, im.id) {
            return Err(bad(format!("file_name {:?} is given twice (image ids {first} and {})", im.file_name, im.id)));
        }
    }
    let (mut ids, mut names) = (HashMap::new(), HashMap::new());
    for c in &coco.categories {
        if let Some(first) = ids.insert(c.id, &c.name) {
            return Err(bad(format!("category id {} is given twice ({first:?} and {:?})", c.id, c.name)));
        }
        if let Some(first) = names.insert(&c.name, c.id) {
            return Err(bad(format!("category {:?} is given twice (ids {first} and {})", c.name, c.id)));
        }
    }
    Ok(())
}

/// Why a dataset's relative file name would reach outside its folder, if it would.
fn leaves_folder(file: &str) -> Option<&'static str> {
    use std::path::Component;
    let path = Path::new(file);
    if file.is_empty() {
        Some("is empty")
    } else if path.components().any(|c| matches!(c, Component::RootDir | Component::Prefix(_))) {
        Some("is absolute")
    } else if path.components().any(|c| c == Component::ParentDir) {
        Some("climbs out with `..`")
    } else {
        None
    }
}

/// The YOLO label file of `image` in `label_dir`: `<stem>.txt`, the stem keeping any dots
/// before the extension (`a.v1.png` -> `a.v1.txt`, as Ultralytics pairs them). Reading, writing
/// and importing all pair through this one function.
pub fn yolo_label_file(label_dir: &Path, image: &Path) -> PathBuf {
    let mut name = image.file_stem().unwrap_or_default().to_os_string();
    name.push(".txt");
    label_dir.join(name)
}

/// A YOLO dataset: `dir/images/*` with `dir/labels/<stem>.txt` holding `class cx cy w h` rows
/// (normalised to 0..1), and class names one per line in `dir/classes.txt` (or `obj.names`).
/// An image without a label file has no objects.
pub fn read_yolo(dir: &Path) -> Result<DetectionSet, DataError> {
    let names =
        ["classes.txt", "obj.names"].iter().map(|n| dir.join(n)).find(|p| p.is_file()).ok_or_else(|| {
            DataError::format(dir, "no classes.txt (or obj.names) with the class names, one per line")
        })?;
    let classes: Vec<String> = std::fs::read_to_string(&names)
        .map_err(DataError::io(&names))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    read_yolo_images(&dir.join("images"), &dir.join("labels"), classes)
}

/// The images of `img_dir` (sorted by name) with the labels of `label_dir/<stem>.txt`. Images
/// that do not decode are left out and listed in `problems`; a malformed label line, or a class
/// id outside `classes`, is an error naming the file and line.
pub fn read_yolo_images(img_dir: &Path, label_dir: &Path, classes: Vec<String>) -> Result<DetectionSet, DataError> {
    let files = yolo_image_files(img_dir)?;
    let mut set = DetectionSet { classes, ..DetectionSet::default() };
    for path in files {
        let (width, height) = match image::image_dimensions(&path) {
            Ok(d) => d,
            Err(e) => {
                set.problems.push(format!("{}: unreadable image ({e}); left out", path.display()));
                continue;
            }
        };
        let label = yolo_label_file(label_dir, &path);
        let boxes = if label.is_file() {
            let boxes = read_yolo_label(&label, width, height, set.classes.len())?;
            set.sources.push(label);
            boxes
        } else {
            Vec::new()
        };
        set.images.push(DetImage { path, width, height, boxes });
    }
    Ok(set)
}

/// The images [`read_yolo_images`] reads from `img_dir`: image files directly in it, sorted.
pub fn yolo_image_files(img_dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(img_dir)
        .map_err(DataError::io(img_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && strix_vision::is_image_path(p))
        .collect();
    files.sort();
    Ok(files)
}

/// One YOLO label file's rows as boxes in pixels.
fn read_yolo_label(label: &Path, width: u32, height: u32, classes: usize) -> Result<Vec<DetBox>, DataError> {
    let text = std::fs::read_to_string(label).map_err(DataError::io(label))?;
    parse_yolo_label(&text, label, width, height, classes)
}

/// The rows of a YOLO label file (`text`, named `label` in errors) of a `width x height` image
/// as boxes in pixels.
pub fn parse_yolo_label(
    text: &str,
    label: &Path,
    width: u32,
    height: u32,
    classes: usize,
) -> Result<Vec<DetBox>, DataError> {
    let mut boxes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |reason: String| DataError::Line { path: label.into(), line: n + 1, reason };
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() != 5 {
            return Err(bad(format!("expected `class cx cy w h`, found {} fields", f.len())));
        }
        let class: usize = f[0].parse().map_err(|_| bad(format!("class '{}' is not an integer", f[0])))?;
        if class >= classes {
            return Err(bad(format!("class {class} is outside the {classes} classes of the dataset")));
        }
        let mut v = [0f32; 4];
        for k in 0..4 {
            v[k] = f[k + 1].parse().map_err(|_| bad(format!("'{}' is not a number", f[k + 1])))?;
            if !(0.0..=1.0).contains(&v[k]) {
                return Err(bad(format!("{} is outside 0..1 (YOLO coordinates are normalised)", v[k])));
            }
        }
        let (w, h) = (v[2] * width as f32, v[3] * height as f32);
        let bbox = [v[0] * width as f32 - w / 2.0, v[1] * height as f32 - h / 2.0, w, h];
        boxes.push(DetBox { class, bbox, iscrowd: false });
    }
    Ok(boxes)
}

/// Ultralytics' `data.yaml`: where the splits are and the class names.
#[derive(Deserialize)]
struct DataYaml {
    #[serde(default)]
    path: Option<PathBuf>,
    train: PathBuf,
    #[serde(default)]
    val: Option<PathBuf>,
    #[serde(default)]
    nc: Option<usize>,
    names: Names,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Names {
    List(Vec<String>),
    Map(std::collections::BTreeMap<usize, String>),
}

/// The train and (when named) validation parts of an Ultralytics dataset: `data.yaml` with
/// `path`, `train`, `val` (image folders) and `names`; labels of `.../images/<x>/a.jpg` in
/// `.../labels/<x>/a.txt`.
pub fn read_data_yaml(yaml: &Path) -> Result<(DetectionSet, Option<DetectionSet>), DataError> {
    let text = std::fs::read_to_string(yaml).map_err(DataError::io(yaml))?;
    let layout = parse_data_yaml(&text, yaml)?;
    let part = |img_dir: &Path| read_yolo_images(img_dir, &labels_for(img_dir), layout.classes.clone());
    let mut train = part(&layout.train)?;
    train.sources.push(yaml.to_path_buf());
    let val = layout.val.as_deref().map(part).transpose()?;
    Ok((train, val))
}

/// What a `data.yaml` says: the class names and the image folders of its parts.
#[derive(Debug)]
pub struct YoloLayout {
    pub classes: Vec<String>,
    pub train: PathBuf,
    pub val: Option<PathBuf>,
}

/// A `data.yaml`'s text (`yaml` names the file in errors and anchors its relative folders),
/// checked: classes numbered without gaps, `nc` agreeing with `names`.
pub fn parse_data_yaml(text: &str, yaml: &Path) -> Result<YoloLayout, DataError> {
    let doc: DataYaml = serde_yaml_ng::from_str(text).map_err(|e| DataError::Line {
        path: yaml.into(),
        line: e.location().map_or(0, |l| l.line()),
        reason: e.to_string(),
    })?;
    let classes = match doc.names {
        Names::List(v) => v,
        Names::Map(m) => {
            if m.keys().copied().ne(0..m.len()) {
                return Err(DataError::format(yaml, "`names` must number the classes 0, 1, 2, ... without gaps"));
            }
            m.into_values().collect()
        }
    };
    if let Some(nc) = doc.nc
        && nc != classes.len()
    {
        return Err(DataError::format(yaml, format!("nc is {nc} but `names` lists {} classes", classes.len())));
    }
    let base = yaml.parent().unwrap_or(Path::new("."));
    let root = doc.path.map_or_else(|| base.to_path_buf(), |p| base.join(p));
    Ok(YoloLayout { classes, train: root.join(&doc.train), val: doc.val.map(|v| root.join(v)) })
}

/// Ultralytics' rule: the last `images` component of the path becomes `labels`.
fn labels_for(img_dir: &Path) -> PathBuf {
    let parts: Vec<_> = img_dir.components().collect();
    match parts.iter().rposition(|c| c.as_os_str() == "images") {
        Some(i) => {
            parts.iter().enumerate().map(|(j, c)| if j == i { "labels".as_ref() } else { c.as_os_str() }).collect()
        }
        None => img_dir.join("labels"),
    }
}

/// Whether `dir` is laid out as a detection dataset [`open_detection`] reads.
pub fn is_detection_dir(dir: &Path) -> bool {
    dir.join("annotations").join("instances_train.json").is_file()
        || dir.join("data.yaml").is_file()
        || (dir.join("labels").is_dir() && dir.join("images").is_dir())
}

/// A detection dataset folder in any layout Strix reads, as `(train, validation if it has one)`:
/// COCO's own (`annotations/instances_{train,val}.json`, `images/{train,val}/`), Ultralytics'
/// (`data.yaml`), or a flat YOLO folder (`images/`, `labels/`, `classes.txt`).
pub fn open_detection(dir: &Path) -> Result<(DetectionSet, Option<DetectionSet>), DataError> {
    let coco = dir.join("annotations").join("instances_train.json");
    let (train, val) = if coco.is_file() {
        let train = read_coco(&coco, &dir.join("images").join("train"))?;
        let val_json = dir.join("annotations").join("instances_val.json");
        let val = val_json.is_file().then(|| read_coco(&val_json, &dir.join("images").join("val"))).transpose()?;
        if let Some(v) = &val
            && v.classes != train.classes
        {
            return Err(DataError::format(
                &val_json,
                format!("its categories {:?} differ from training's {:?}", v.classes, train.classes),
            ));
        }
        (train, val)
    } else if dir.join("data.yaml").is_file() {
        read_data_yaml(&dir.join("data.yaml"))?
    } else if dir.join("labels").is_dir() {
        (read_yolo(dir)?, None)
    } else {
        return Err(DataError::format(
            dir,
            "not a detection dataset: expected COCO (annotations/instances_train.json + images/train/), \
             YOLO (data.yaml + images/ + labels/) or images/ + labels/ + classes.txt",
        ));
    };
    Ok((sanitize(train), val.map(sanitize)))
}

/// Boxes clipped to their image, empty ones dropped, images whose file is missing left out;
/// each change listed in `problems`.
pub fn sanitize(mut set: DetectionSet) -> DetectionSet {
    let mut problems = std::mem::take(&mut set.problems);
    set.images.retain(|im| {
        let ok = im.path.is_file();
        if !ok {
            problems.push(format!("{}: missing image file; left out", im.path.display()));
        }
        ok
    });
    for im in &mut set.images {
        let (w, h) = (im.width as f32, im.height as f32);
        im.boxes.retain_mut(|b| {
            let [x, y, bw, bh] = b.bbox;
            let (x1, y1, x2, y2) = (x.clamp(0.0, w), y.clamp(0.0, h), (x + bw).clamp(0.0, w), (y + bh).clamp(0.0, h));
            if x2 - x1 < 1e-3 || y2 - y1 < 1e-3 {
                problems.push(format!(
                    "{}: {} box {:?} has no area inside the image; dropped",
                    im.path.display(),
                    set.classes.get(b.class).map_or("?", String::as_str),
                    b.bbox
                ));
                return false;
            }
            let clipped = [x1, y1, x2 - x1, y2 - y1];
            // Rounding in normalised YOLO rows overshoots edges by a few 1e-5 px: clipped
            // quietly; a real overshoot is reported.
            if clipped.iter().zip(b.bbox).any(|(c, o)| (c - o).abs() > 0.01) {
                problems.push(format!(
                    "{}: box {:?} reaches outside the {}x{} image; clipped",
                    im.path.display(),
                    b.bbox,
                    im.width,
                    im.height
                ));
            }
            b.bbox = clipped;
            true
        });
    }
    set.problems = problems;
    set
}

/// Write a file whole or not at all (written aside, then renamed).
fn write_whole(path: &Path, text: &str) -> Result<(), DataError> {
    strix_core::fs::write_atomic(path, text.as_bytes()).map_err(DataError::io(path))
}

/// `set` as a COCO instances JSON at `json`: categories 1..=n in class order, images numbered
/// from 1 with their paths relative to `image_dir`, boxes `[x, y, w, h]` in pixels.
pub fn write_coco(set: &DetectionSet, json: &Path, image_dir: &Path) -> Result<(), DataError> {
    let mut images = Vec::new();
    let mut annotations = Vec::new();
    for (i, im) in set.images.iter().enumerate() {
        let name = im.path.strip_prefix(image_dir).map_err(|_| {
            DataError::format(&im.path, format!("is not inside the image folder {}", image_dir.display()))
        })?;
        images.push(serde_json::json!({"id": i + 1, "file_name": name.to_string_lossy(), "width": im.width, "height": im.height}));
        for b in &im.boxes {
            annotations.push(serde_json::json!({
                "id": annotations.len() + 1,
                "image_id": i + 1,
                "category_id": b.class + 1,
                "bbox": b.bbox,
                "area": b.bbox[2] * b.bbox[3],
                "iscrowd": u8::from(b.iscrowd),
            }));
        }
    }
    let categories: Vec<_> =
        set.classes.iter().enumerate().map(|(i, name)| serde_json::json!({"id": i + 1, "name": name})).collect();
    let doc = serde_json::json!({"images": images, "annotations": annotations, "categories": categories});
    write_whole(json, &doc.to_string())
}

/// `set`'s labels in YOLO form under `dir` (as [`read_yolo`] reads them): `classes.txt` and
/// `labels/<stem>.txt` with `class cx cy w h` normalised rows, one file per image (empty for
/// negatives). The images themselves must be in `dir/images`.
pub fn write_yolo_labels(set: &DetectionSet, dir: &Path) -> Result<(), DataError> {
    write_whole(&dir.join("classes.txt"), &(set.classes.join("\n") + "\n"))?;
    for im in &set.images {
        let (w, h) = (im.width.max(1) as f32, im.height.max(1) as f32);
        let rows: String = im
            .boxes
            .iter()
            .map(|b| {
                let [x, y, bw, bh] = b.bbox;
                format!("{} {:.6} {:.6} {:.6} {:.6}\n", b.class, (x + bw / 2.0) / w, (y + bh / 2.0) / h, bw / w, bh / h)
            })
            .collect();
        write_whole(&yolo_label_file(&dir.join("labels"), &im.path), &rows)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_and_yolo_writes_read_back_as_the_same_boxes() {
        let d = tempfile::tempdir().unwrap();
        let images = d.path().join("images");
        std::fs::create_dir_all(&images).unwrap();
        let mut set = DetectionSet { classes: vec!["can".into(), "bottle".into()], ..DetectionSet::default() };
        for (name, w, h, boxes) in [
            ("a.png", 200, 100, vec![(1, [80.0, 30.0, 40.0, 40.0]), (0, [0.0, 0.0, 12.5, 7.25])]),
            ("b.png", 64, 48, vec![]),
        ] {
            let path = images.join(name);
            image::RgbImage::new(w, h).save(&path).unwrap();
            let boxes = boxes.into_iter().map(|(class, bbox)| DetBox { class, bbox, iscrowd: false }).collect();
            set.images.push(DetImage { path, width: w, height: h, boxes });
        }
        write_coco(&set, &d.path().join("annotations/instances.json"), &images).unwrap();
        write_yolo_labels(&set, d.path()).unwrap();
        let coco = read_coco(&d.path().join("annotations/instances.json"), &images).unwrap();
        let yolo = read_yolo(d.path()).unwrap();
        for read in [&coco, &yolo] {
            assert_eq!(read.classes, set.classes);
            assert_eq!(read.images.len(), 2);
            for (got, want) in read.images.iter().zip(&set.images) {
                assert_eq!((&got.path, got.width, got.height), (&want.path, want.width, want.height));
                assert_eq!(got.boxes.len(), want.boxes.len());
                for (g, w) in got.boxes.iter().zip(&want.boxes) {
                    assert_eq!(g.class, w.class);
                    assert!(g.bbox.iter().zip(w.bbox).all(|(a, b)| (a - b).abs() < 1e-3), "{g:?} {w:?}");
                }
            }
        }
    }

    #[test]
    fn yolo_boxes_in_pixels_and_errors_name_the_line() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("images")).unwrap();
        std::fs::create_dir_all(d.path().join("labels")).unwrap();
        image::RgbImage::new(200, 100).save(d.path().join("images/a.png")).unwrap();
        image::RgbImage::new(10, 10).save(d.path().join("images/b.png")).unwrap();
        std::fs::write(d.path().join("classes.txt"), "can\nbottle\n").unwrap();
        std::fs::write(d.path().join("labels/a.txt"), "1 0.5 0.5 0.2 0.4\n\n").unwrap();
        let s = read_yolo(d.path()).unwrap();
        assert_eq!(s.classes, vec!["can", "bottle"]);
        assert_eq!(s.images[0].boxes, vec![DetBox { class: 1, bbox: [80.0, 30.0, 40.0, 40.0], iscrowd: false }]);
        assert!(s.images[1].boxes.is_empty());
        std::fs::write(d.path().join("labels/a.txt"), "0 0.5 0.5 0.2 0.4\n2 0.5 0.5 0.2 0.4\n").unwrap();
        let e = read_yolo(d.path()).unwrap_err().to_string();
        assert!(e.contains("a.txt:2: class 2 is outside the 2 classes"), "{e}");
        std::fs::write(d.path().join("labels/a.txt"), "0 1.5 0.5 0.2 0.4\n").unwrap();
        assert!(read_yolo(d.path()).unwrap_err().to_string().contains("a.txt:1: 1.5 is outside 0..1"));
    }

    #[test]
    fn coco_categories_by_id_and_bad_references() {
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("instances.json");
        let coco = r#"{"images":[{"id":7,"file_name":"x.jpg","width":64,"height":48}],
            "annotations":[{"id":1,"image_id":7,"category_id":3,"bbox":[1,2,3,4],"iscrowd":1}],
            "categories":[{"id":3,"name":"cup"},{"id":1,"name":"can"}]}"#;
        std::fs::write(&j, coco).unwrap();
        let s = read_coco(&j, d.path()).unwrap();
        assert_eq!(s.classes, vec!["can", "cup"]);
        assert_eq!(s.images[0].boxes[0], DetBox { class: 1, bbox: [1.0, 2.0, 3.0, 4.0], iscrowd: true });
        std::fs::write(&j, coco.replace("\"image_id\":7", "\"image_id\":8")).unwrap();
        assert!(read_coco(&j, d.path()).unwrap_err().to_string().contains("annotation 1: unknown image_id 8"));
        std::fs::write(&j, "{\"images\": [\n oops").unwrap();
        assert!(read_coco(&j, d.path()).unwrap_err().to_string().contains("instances.json:2:"));
    }

    /// Regression: `a.v1.png`'s labels were written to and read from `a.txt` (the stem cut at
    /// its first dot), so it and `a.png` in one folder shared, and overwrote, one label file.
    #[test]
    fn yolo_label_files_keep_the_dots_of_the_stem() {
        let d = tempfile::tempdir().unwrap();
        let images = d.path().join("images");
        std::fs::create_dir_all(&images).unwrap();
        let mut set = DetectionSet { classes: vec!["can".into(), "bottle".into()], ..DetectionSet::default() };
        for (name, class) in [("a.png", 0), ("a.v1.png", 1)] {
            let path = images.join(name);
            image::RgbImage::new(40, 20).save(&path).unwrap();
            let boxes = vec![DetBox { class, bbox: [4.0, 2.0, 10.0, 8.0], iscrowd: false }];
            set.images.push(DetImage { path, width: 40, height: 20, boxes });
        }
        assert_eq!(
            yolo_label_file(&d.path().join("labels"), &images.join("a.v1.png")),
            d.path().join("labels/a.v1.txt")
        );
        write_yolo_labels(&set, d.path()).unwrap();
        assert!(d.path().join("labels/a.v1.txt").is_file());
        let read = read_yolo(d.path()).unwrap();
        let got: Vec<_> = read
            .images
            .iter()
            .map(|im| (im.path.clone(), im.boxes.iter().map(|b| b.class).collect::<Vec<_>>()))
            .collect();
        assert_eq!(got, [(images.join("a.png"), vec![0]), (images.join("a.v1.png"), vec![1])]);
        assert_eq!(read.sources, [d.path().join("labels/a.txt"), d.path().join("labels/a.v1.txt")]);
    }

    /// Regression: duplicate ids and file names, and file names outside the image folder, were
    /// refused only by `label import` (which parsed the JSON a second time), not by training.
    #[test]
    fn coco_duplicates_and_file_names_outside_the_image_folder_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("instances.json");
        let read = |images: &str, categories: &str| {
            std::fs::write(&j, format!(r#"{{"images":[{images}],"categories":[{categories}]}}"#)).unwrap();
            read_coco(&j, d.path()).map(|_| ()).map_err(|e| e.to_string())
        };
        let im = |id: u64, file: &str| format!(r#"{{"id":{id},"file_name":{file:?},"width":8,"height":8}}"#);
        let cat = |id: u64, name: &str| format!(r#"{{"id":{id},"name":{name:?}}}"#);
        let one_cat = cat(1, "can");
        // Sub-folders, as COCO's own `val2017/x.jpg`, are fine.
        read(&[im(1, "val2017/x.jpg"), im(2, "y.jpg")].join(","), &one_cat).unwrap();
        for (images, categories, want) in [
            (
                vec![im(7, "a.png"), im(7, "b.png")],
                one_cat.clone(),
                r#"image id 7 is given twice ("a.png" and "b.png")"#,
            ),
            (
                vec![im(1, "a.png"), im(2, "a.png")],
                one_cat.clone(),
                r#"file_name "a.png" is given twice (image ids 1 and 2)"#,
            ),
            (
                vec![im(1, "a.png")],
                [cat(3, "can"), cat(3, "cup")].join(","),
                r#"category id 3 is given twice ("can" and "cup")"#,
            ),
            (
                vec![im(1, "a.png")],
                [cat(1, "can"), cat(2, "can")].join(","),
                r#"category "can" is given twice (ids 1 and 2)"#,
            ),
            (vec![im(1, "/etc/x.png")], one_cat.clone(), r#"image 1: file_name "/etc/x.png" is absolute"#),
            (
                vec![im(1, "sub/../../x.png")],
                one_cat.clone(),
                r#"image 1: file_name "sub/../../x.png" climbs out with `..`"#,
            ),
            (vec![im(1, "")], one_cat.clone(), r#"image 1: file_name "" is empty"#),
        ] {
            let e = read(&images.join(","), &categories).unwrap_err();
            assert!(e.starts_with(&format!("{}: ", j.display())) && e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn ultralytics_layout_reads_with_clipping_and_problems_listed() {
        let d = tempfile::tempdir().unwrap();
        for part in ["train", "val"] {
            std::fs::create_dir_all(d.path().join("images").join(part)).unwrap();
            std::fs::create_dir_all(d.path().join("labels").join(part)).unwrap();
        }
        image::RgbImage::new(100, 50).save(d.path().join("images/train/a.png")).unwrap();
        image::RgbImage::new(100, 50).save(d.path().join("images/train/negative.png")).unwrap();
        std::fs::write(d.path().join("images/train/broken.png"), b"not a png").unwrap();
        image::RgbImage::new(40, 40).save(d.path().join("images/val/v.png")).unwrap();
        // A box reaching past the right edge (clipped) and one of zero width (dropped).
        std::fs::write(d.path().join("labels/train/a.txt"), "1 0.95 0.5 0.2 0.4\n0 0.5 0.5 0 0.4\n").unwrap();
        std::fs::write(d.path().join("labels/val/v.txt"), "0 0.5 0.5 0.5 0.5\n").unwrap();
        let yaml = "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: can\n  1: bottle\n";
        std::fs::write(d.path().join("data.yaml"), yaml).unwrap();
        let (train, val) = open_detection(d.path()).unwrap();
        assert_eq!(train.classes, vec!["can", "bottle"]);
        assert_eq!(train.images.len(), 2, "the broken image is left out");
        assert_eq!(train.images[0].boxes.len(), 1);
        let b = train.images[0].boxes[0].bbox;
        assert!((b[0] - 85.0).abs() < 1e-3 && (b[2] - 15.0).abs() < 1e-3, "{b:?}");
        assert!(train.images[1].boxes.is_empty(), "an image without labels is a negative");
        let problems = train.problems.join("\n");
        for want in ["broken.png: unreadable image", "clipped", "no area inside the image; dropped"] {
            assert!(problems.contains(want), "{want} in {problems}");
        }
        assert_eq!(val.unwrap().images[0].boxes[0].bbox, [10.0, 10.0, 20.0, 20.0]);
        std::fs::write(d.path().join("data.yaml"), "train: images/train\nnames: [a\n").unwrap();
        let e = open_detection(d.path()).unwrap_err().to_string();
        assert!(e.contains("data.yaml:"), "{e}");
    }
}
