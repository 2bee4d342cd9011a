//! Detection datasets built from real fixture data (issue 16's ground): Fashion-MNIST items
//! pasted onto the fixture photos with exact boxes, written in COCO's layout and in
//! Ultralytics' (`data.yaml`), which read back as the same training set.

use std::path::{Path, PathBuf};

use strix_data::Rng;
use strix_data::detection::{DetImage, DetectionSet, open_detection, write_coco, write_yolo_labels};
use strix_data::synth::{SceneSpec, Sprite, scene};

use crate::fixtures_or_skip;

pub const CLASSES: [&str; 3] = ["t-shirt", "trouser", "sneaker"];

/// Fashion-MNIST items of three classes (T-shirt/top, Trouser, Sneaker) as sprites.
fn sprites(fx: &Path) -> Vec<Sprite> {
    let (images, labels) = strix_data::idx::find_pair(&crate::train::fashion(fx), "t10k").unwrap();
    let images = strix_data::idx::read_images(&images).unwrap();
    let labels = strix_data::idx::read_labels(&labels).unwrap();
    let keep = [0u8, 1, 7];
    (0..images.count)
        .filter_map(|i| {
            let class = keep.iter().position(|l| *l == labels[i])?;
            Some(Sprite { pixels: images.image(i).to_vec(), size: images.cols as u32, class })
        })
        .take(300)
        .collect()
}

/// Where a built dataset is, in both layouts.
pub struct Scenes {
    pub coco: PathBuf,
    pub yolo: PathBuf,
}

/// `train` and `val` scenes of `size` x `size` pixels with 0-3 objects each, written as COCO
/// (`annotations/instances_{train,val}.json`, `images/{train,val}`) and as Ultralytics YOLO
/// (`data.yaml`, `images/{train,val}`, `labels/{train,val}`) under `dir`.
pub fn build_scenes(fx: &Path, dir: &Path, train: usize, val: usize, size: u32, seed: u64) -> Scenes {
    let sprites = sprites(fx);
    let backgrounds: Vec<image::RgbImage> = ["apple.jpg", "baboon.jpg", "butterfly.jpg", "messi5.jpg", "orange.jpg"]
        .iter()
        .map(|n| image::open(fx.join("images").join(n)).unwrap().to_rgb8())
        .collect();
    let spec = SceneSpec { size: (size, size), objects: (0, 3), object_side: (size / 6, size / 2), threshold: 40 };
    let mut rng = Rng::new(seed);
    let (coco, yolo) = (dir.join("coco"), dir.join("yolo"));
    for (part, count) in [("train", train), ("val", val)] {
        let images = coco.join("images").join(part);
        let yolo_images = yolo.join("images").join(part);
        std::fs::create_dir_all(&images).unwrap();
        std::fs::create_dir_all(&yolo_images).unwrap();
        let mut set =
            DetectionSet { classes: CLASSES.iter().map(|c| c.to_string()).collect(), ..DetectionSet::default() };
        for i in 0..count {
            let (img, boxes) = scene(&backgrounds[i % backgrounds.len()], &sprites, &spec, &mut rng);
            let path = images.join(format!("{part}{i:03}.png"));
            img.save(&path).unwrap();
            std::fs::copy(&path, yolo_images.join(format!("{part}{i:03}.png"))).unwrap();
            set.images.push(DetImage { path, width: size, height: size, boxes });
        }
        write_coco(&set, &coco.join(format!("annotations/instances_{part}.json")), &images).unwrap();
        // Ultralytics keeps labels beside images: `labels/<part>/<stem>.txt`.
        let tmp = yolo.join(format!(".{part}"));
        write_yolo_labels(&set, &tmp).unwrap();
        std::fs::create_dir_all(yolo.join("labels")).unwrap();
        std::fs::rename(tmp.join("labels"), yolo.join("labels").join(part)).unwrap();
        std::fs::remove_dir_all(&tmp).unwrap();
    }
    let names: String = CLASSES.iter().enumerate().map(|(i, c)| format!("  {i}: {c}\n")).collect();
    std::fs::write(yolo.join("data.yaml"), format!("path: .\ntrain: images/train\nval: images/val\nnames:\n{names}"))
        .unwrap();
    Scenes { coco, yolo }
}

fn assert_same(a: &DetectionSet, b: &DetectionSet) {
    assert_eq!(a.classes, b.classes);
    assert_eq!(a.images.len(), b.images.len());
    for (c, y) in a.images.iter().zip(&b.images) {
        assert_eq!(c.path.file_name(), y.path.file_name());
        assert_eq!((c.width, c.height), (y.width, y.height));
        assert_eq!(c.boxes.len(), y.boxes.len(), "{}", c.path.display());
        for (p, q) in c.boxes.iter().zip(&y.boxes) {
            assert_eq!(p.class, q.class);
            assert!(p.bbox.iter().zip(q.bbox).all(|(u, v)| (u - v).abs() < 1e-2), "{p:?} vs {q:?}");
        }
    }
}

#[test]
fn a_detection_set_from_fixture_photos_reads_the_same_as_coco_and_as_yolo() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let scenes = build_scenes(&fx, tmp.path(), 24, 8, 256, 16);
    let (coco_train, coco_val) = open_detection(&scenes.coco).unwrap();
    let (yolo_train, yolo_val) = open_detection(&scenes.yolo).unwrap();
    let objects: usize = coco_train.images.iter().map(|i| i.boxes.len()).sum();
    let negatives = coco_train.images.iter().filter(|i| i.boxes.is_empty()).count();
    assert!(objects >= 24 && negatives >= 1, "{objects} objects, {negatives} images without any");
    assert_same(&coco_train, &yolo_train);
    assert_same(&coco_val.unwrap(), &yolo_val.unwrap());
    assert!(coco_train.problems.is_empty() && yolo_train.problems.is_empty());
}
