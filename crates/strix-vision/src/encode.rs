//! JPEG encoding for live views (MJPEG streams), through the same libjpeg-turbo as decoding.

use std::panic::AssertUnwindSafe;

use image::RgbImage;

use crate::VisionError;

/// Encode an RGB image as baseline JPEG at `quality` (1..=100), with libjpeg-turbo's fastest
/// settings: live frames are encoded once each and must not hold up the video.
pub fn encode_jpeg(img: &RgbImage, quality: f32) -> Result<Vec<u8>, VisionError> {
    let fail = |e: crate::error::Cause| VisionError::Encode { format: "JPEG", source: e };
    // libjpeg reports fatal errors by unwinding (the mozjpeg crate's documented contract).
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Vec<u8>> {
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        c.set_fastest_defaults();
        c.set_size(img.width() as usize, img.height() as usize);
        c.set_quality(quality.clamp(1.0, 100.0));
        let mut started = c.start_compress(Vec::with_capacity(img.as_raw().len() / 8))?;
        started.write_scanlines(img.as_raw())?;
        started.finish()
    }));
    match out {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(fail(e.into())),
        Err(_) => Err(fail("libjpeg failed to encode".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecodeLimits, decode_bytes};

    #[test]
    fn round_trips_close_to_the_original() {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 128]));
        let jpeg = encode_jpeg(&img, 90.0).unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
        let back = decode_bytes(&jpeg, &DecodeLimits::default()).unwrap();
        assert_eq!(back.dimensions(), (64, 48));
        let worst = img.as_raw().iter().zip(back.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(worst <= 12, "worst channel difference {worst}");
    }
}
