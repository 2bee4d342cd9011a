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

#[derive(Clone, Debug)]
pub struct DetectionSet {
    pub classes: Vec<String>,
    pub images: Vec<DetImage>,
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
/// categories ordered by id.
pub fn read_coco(json: &Path, image_dir: &Path) -> Result<DetectionSet, DataError> {
    let text = std::fs::read_to_string(json).map_err(DataError::io(json))?;
    let mut coco: Coco = serde_json::from_str(&text).map_err(|e| DataError::Line {
        path: json.into(),
        line: e.line(),
        reason: e.to_string(),
    })?;
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
    Ok(DetectionSet { classes: coco.categories.into_iter().map(|c| c.name).collect(), images })
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
    let img_dir = dir.join("images");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&img_dir)
        .map_err(DataError::io(&img_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut images = Vec::with_capacity(files.len());
    for path in files {
        let (width, height) =
            image::image_dimensions(&path).map_err(|e| DataError::format(&path, format!("unreadable image: {e}")))?;
        let stem = path.file_stem().unwrap_or_default();
        let label = dir.join("labels").join(stem).with_extension("txt");
        let mut boxes = Vec::new();
        if label.is_file() {
            let text = std::fs::read_to_string(&label).map_err(DataError::io(&label))?;
            for (n, line) in text.lines().enumerate() {
                let bad = |reason: String| DataError::Line { path: label.clone(), line: n + 1, reason };
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.is_empty() {
                    continue;
                }
                if f.len() != 5 {
                    return Err(bad(format!("expected `class cx cy w h`, found {} fields", f.len())));
                }
                let class: usize = f[0].parse().map_err(|_| bad(format!("class '{}' is not an integer", f[0])))?;
                if class >= classes.len() {
                    return Err(bad(format!(
                        "class {class} is outside the {} classes in {}",
                        classes.len(),
                        names.display()
                    )));
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
        }
        images.push(DetImage { path, width, height, boxes });
    }
    Ok(DetectionSet { classes, images })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
