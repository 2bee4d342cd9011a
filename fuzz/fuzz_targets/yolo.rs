//! YOLO label rows (`class cx cy w h`) and Ultralytics' `data.yaml`.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = strix_fuzz::pick(data, 2) else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    if which == 0 {
        if let Ok(boxes) = strix_data::detection::parse_yolo_label(text, Path::new("a.txt"), 640, 480, 3) {
            for b in boxes {
                assert!(b.class < 3 && b.bbox.iter().all(|v| v.is_finite()));
            }
        }
    } else if let Ok(layout) = strix_data::detection::parse_data_yaml(text, Path::new("/nonexistent/data.yaml")) {
        let _ = layout.classes.len();
    }
});
