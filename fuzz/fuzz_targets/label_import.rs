//! `strix label import`: a COCO file, or a YOLO `classes.txt` and label file, read against a
//! folder of real photos and each image's labels checked as an import checks them.
#![no_main]
use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use strix_label::LabelTask;
use strix_label::export::{Format, read};

struct Fixture {
    images: PathBuf,
    /// `images` with its links resolved, as the import names files.
    resolved: PathBuf,
    labels: PathBuf,
    _dir: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let images = dir.path().join("images");
    let labels = dir.path().join("labels");
    std::fs::create_dir_all(&images).expect("an images folder");
    std::fs::create_dir_all(&labels).expect("a labels folder");
    for photo in ["orange.jpg", "apple.jpg"] {
        std::fs::copy(strix_fuzz::fixtures().join("images").join(photo), images.join(photo)).expect("a fixture photo");
    }
    let resolved = images.canonicalize().expect("the images folder resolves");
    Fixture { images, resolved, labels, _dir: dir }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let Some((which, rest)) = strix_fuzz::pick(data, 2) else { return };
    let incoming = if which == 0 {
        let json = f.labels.join("instances.json");
        std::fs::write(&json, rest).expect("a write");
        read(Format::Coco, Some(&json), &f.images)
    } else {
        // classes.txt, then 0xff, then orange.jpg's label rows.
        let mut parts = rest.splitn(2, |&b| b == 0xff);
        std::fs::write(f.labels.join("classes.txt"), parts.next().unwrap_or_default()).expect("a write");
        std::fs::write(f.labels.join("orange.txt"), parts.next().unwrap_or_default()).expect("a write");
        read(Format::Yolo, Some(&f.labels), &f.images)
    };
    let Ok(incoming) = incoming else { return };
    for (path, labels) in incoming.images {
        assert!(path.starts_with(&f.resolved), "{path:?} is outside the images folder");
        let _ = labels.checked(LabelTask::Detect, &incoming.classes, 640, 480);
    }
});
