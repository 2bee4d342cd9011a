//! Detection datasets built from real fixture data (issue 16's ground): Fashion-MNIST items
//! pasted onto the fixture photos with exact boxes, written in COCO and YOLO form, which read
//! back as the same training set.

use std::path::Path;

use strix_data::Rng;
use strix_data::detection::{DetImage, DetectionSet, read_coco, read_yolo, write_coco, write_yolo_labels};
use strix_data::synth::{SceneSpec, Sprite, scene};

use crate::fixtures_or_skip;

/// Fashion-MNIST items of three classes (T-shirt/top, Trouser, Sneaker) as sprites.
fn sprites(fx: &Path) -> (Vec<String>, Vec<Sprite>) {
    let (images, labels) = strix_data::idx::find_pair(&crate::train::fashion(fx), "t10k").unwrap();
    let images = strix_data::idx::read_images(&images).unwrap();
    let labels = strix_data::idx::read_labels(&labels).unwrap();
    let keep = [(0u8, "t-shirt"), (1, "trouser"), (7, "sneaker")];
    let sprites = (0..images.count)
        .filter_map(|i| {
            let class = keep.iter().position(|(l, _)| *l == labels[i])?;
            Some(Sprite { pixels: images.image(i).to_vec(), size: images.cols as u32, class })
        })
        .take(300)
        .collect();
    (keep.iter().map(|(_, n)| n.to_string()).collect(), sprites)
}

#[test]
fn a_detection_set_from_fixture_photos_reads_the_same_as_coco_and_as_yolo() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (classes, sprites) = sprites(&fx);
    let backgrounds: Vec<image::RgbImage> = ["apple.jpg", "baboon.jpg", "butterfly.jpg", "messi5.jpg", "orange.jpg"]
        .iter()
        .map(|n| image::open(fx.join("images").join(n)).unwrap().to_rgb8())
        .collect();
    let coco_images = tmp.path().join("coco/images/train");
    let yolo_images = tmp.path().join("yolo/images");
    std::fs::create_dir_all(&coco_images).unwrap();
    std::fs::create_dir_all(&yolo_images).unwrap();
    let spec = SceneSpec { size: (256, 256), objects: (0, 3), object_side: (40, 96), threshold: 40 };
    let mut set = DetectionSet { classes, images: Vec::new() };
    let mut rng = Rng::new(16);
    for i in 0..24 {
        let (img, boxes) = scene(&backgrounds[i % backgrounds.len()], &sprites, &spec, &mut rng);
        let path = coco_images.join(format!("scene{i:03}.png"));
        img.save(&path).unwrap();
        std::fs::copy(&path, yolo_images.join(format!("scene{i:03}.png"))).unwrap();
        set.images.push(DetImage { path, width: 256, height: 256, boxes });
    }
    let objects: usize = set.images.iter().map(|i| i.boxes.len()).sum();
    let negatives = set.images.iter().filter(|i| i.boxes.is_empty()).count();
    assert!(objects >= 24 && negatives >= 1, "{objects} objects, {negatives} images without any");
    let json = tmp.path().join("coco/annotations/instances_train.json");
    write_coco(&set, &json, &coco_images).unwrap();
    write_yolo_labels(&set, &tmp.path().join("yolo")).unwrap();
    let coco = read_coco(&json, &coco_images).unwrap();
    let yolo = read_yolo(&tmp.path().join("yolo")).unwrap();
    assert_eq!(coco.classes, yolo.classes);
    assert_eq!(coco.images.len(), yolo.images.len());
    for (c, y) in coco.images.iter().zip(&yolo.images) {
        assert_eq!(c.path.file_name(), y.path.file_name());
        assert_eq!((c.width, c.height), (y.width, y.height));
        assert_eq!(c.boxes.len(), y.boxes.len(), "{}", c.path.display());
        for (a, b) in c.boxes.iter().zip(&y.boxes) {
            assert_eq!(a.class, b.class);
            assert!(a.bbox.iter().zip(b.bbox).all(|(p, q)| (p - q).abs() < 1e-2), "{a:?} vs {b:?}");
        }
    }
}
