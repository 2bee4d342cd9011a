//! IDX files (MNIST, Fashion-MNIST), gzipped or not.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

/// The unzipped size a fuzz input may reach: a gzip bomb is refused at this, as at the real
/// limit, without the fuzzer's memory ceiling mistaking the real limit for a leak.
const LIMIT: u64 = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = strix_fuzz::pick(data, 2) else { return };
    let path = Path::new("fuzz-idx");
    if which == 0 {
        if let Ok(images) = strix_data::idx::parse_images(rest.to_vec(), path, LIMIT) {
            // Every image is in the pixels (a header of 2^32 empty images must not loop here).
            assert_eq!(images.pixels.len(), images.count * images.rows * images.cols);
            if images.count > 0 {
                assert_eq!(images.image(images.count - 1).len(), images.rows * images.cols);
            }
        }
    } else {
        let _ = strix_data::idx::parse_labels(rest.to_vec(), path, LIMIT);
    }
});
