//! COCO `instances_*.json` as training and import read it.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(set) =
        strix_data::detection::parse_coco(text, Path::new("instances.json"), Path::new("/nonexistent/images"))
    {
        for image in &set.images {
            for b in &image.boxes {
                assert!(b.class < set.classes.len(), "a box of an unknown class");
                assert!(b.bbox.iter().all(|v| v.is_finite()) && b.bbox[2] >= 0.0 && b.bbox[3] >= 0.0);
            }
        }
        let _ = strix_data::detection::sanitize(set);
    }
});
