//! Image decoding with limits checked before any pixel is decoded.
//!
//! Every decoded image is 8-bit RGB with EXIF orientation applied. Palette, grey and
//! alpha images become RGB the way Pillow's `convert('RGB')` does it: the palette is expanded,
//! grey is replicated, alpha is dropped (not composited).

use std::io::Cursor;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::VisionError;
use crate::error::Cause;

/// Bounds on what a decode may cost, checked from the header before decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest width x height accepted.
    pub max_pixels: u64,
    /// Largest encoded size in bytes accepted.
    pub max_bytes: u64,
}

impl DecodeLimits {
    /// 100 megapixels: above a 12000x8000 photo, below anything that would exhaust memory
    /// (an RGB image of the limit takes 300 MB).
    pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;
    pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_pixels: Self::DEFAULT_MAX_PIXELS, max_bytes: Self::DEFAULT_MAX_BYTES }
    }
}

/// Extensions of the formats [`decode_file`] reads, lower case.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Whether `path` is named like an image this crate decodes (extension, any case).
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Read and decode an image file. Errors name the problem; callers add the path.
pub fn decode_file(path: &Path, limits: &DecodeLimits) -> Result<RgbImage, VisionError> {
    decode_bytes(&read_file(path, limits)?, limits)
}

/// Read an image file's bytes, refusing folders and files over the size limit before reading.
pub fn read_file(path: &Path, limits: &DecodeLimits) -> Result<Vec<u8>, VisionError> {
    let meta = std::fs::metadata(path).map_err(VisionError::from_io)?;
    if meta.is_dir() {
        return Err(VisionError::NotAFile);
    }
    if meta.len() > limits.max_bytes {
        return Err(VisionError::FileTooLarge { bytes: meta.len(), limit: limits.max_bytes });
    }
    std::fs::read(path).map_err(VisionError::from_io)
}

/// Decode an encoded image (JPEG, PNG, WebP, GIF, BMP, TIFF) held in memory.
pub fn decode_bytes(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, VisionError> {
    Ok(decode_bytes_reduced(bytes, limits, &|_, _| 1.0)?.image)
}

/// An image decoded at a reduced size: `image` stands for a `full_width` x `full_height`
/// picture (the same when nothing was reduced).
#[derive(Clone, Debug)]
pub struct Reduced {
    pub image: RgbImage,
    pub full_width: u32,
    pub full_height: u32,
}

/// DCT scales libjpeg-turbo has fast paths for, as eighths (1/8, 1/4, 1/2).
const DCT_EIGHTHS: [u8; 3] = [1, 2, 4];

/// Decode like [`decode_bytes`], but let a JPEG decode at 1/2, 1/4 or 1/8 of its size through
/// libjpeg-turbo's DCT scaling (most of the decoding work is skipped) when that still leaves
/// at least `min_scale(width, height)` of the full size on both axes. Other formats, and JPEGs
/// no reduction fits, decode whole. The pixels differ from decoding whole and resizing: the
/// DCT scaling is its own (box-like) filter.
pub fn decode_bytes_reduced(
    bytes: &[u8],
    limits: &DecodeLimits,
    min_scale: &dyn Fn(u32, u32) -> f64,
) -> Result<Reduced, VisionError> {
    if bytes.is_empty() {
        return Err(VisionError::Empty);
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(VisionError::FileTooLarge { bytes: bytes.len() as u64, limit: limits.max_bytes });
    }
    let format = image::guess_format(bytes).map_err(|_| VisionError::UnknownFormat { head: printable_head(bytes) })?;
    if format == ImageFormat::Jpeg {
        return decode_jpeg(bytes, limits, min_scale);
    }
    // Two passes over the header: the first only learns the size, so an image declaring
    // 30000x30000 is refused before the decoder is even asked to allocate.
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| VisionError::Corrupt { format: format_name(format), source: e.into() })?;
    check_pixels(width as u64, height as u64, limits)?;

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decode_limits = Limits::default();
    // The pixel check above is the real bound; this only keeps the decoder's own guard from
    // refusing an image we accepted (RGBA16 is the widest buffer it may allocate).
    decode_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(decode_limits);
    let corrupt = |e: image::ImageError| VisionError::Corrupt { format: format_name(format), source: e.into() };
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    img.apply_orientation(orientation);
    let image = img.into_rgb8();
    Ok(Reduced { full_width: image.width(), full_height: image.height(), image })
}

/// The largest of [`DCT_EIGHTHS`] below 8/8 that keeps `min_scale` of a `width` x `height`
/// image (libjpeg rounds scaled sizes up), or 8 (decode whole).
fn dct_eighths(width: usize, height: usize, min_scale: f64) -> u8 {
    DCT_EIGHTHS
        .into_iter()
        .find(|&n| {
            let scaled = |d: usize| (d * n as usize).div_ceil(8) as f64 / d as f64;
            scaled(width) >= min_scale && scaled(height) >= min_scale
        })
        .unwrap_or(8)
}

/// JPEG goes through libjpeg-turbo (as packaged by `mozjpeg`): the decoder Pillow, OpenCV and
/// TensorFlow use, so pixels equal what a model was trained and checked on in Python, bit for
/// bit. (zune-jpeg, inside `image`, differs by up to 5 levels per channel, enough to move class
/// probabilities by 0.02.)
fn decode_jpeg(
    bytes: &[u8],
    limits: &DecodeLimits,
    min_scale: &dyn Fn(u32, u32) -> f64,
) -> Result<Reduced, VisionError> {
    let corrupt = |e: Cause| VisionError::Corrupt { format: "JPEG", source: e };
    // libjpeg only warns about a file cut short and fills the rest with grey; Pillow refuses it.
    if !ends_after_scan(bytes) {
        return Err(corrupt("file ends before the end-of-image marker (truncated)".into()));
    }
    // libjpeg reports fatal errors by unwinding (the mozjpeg crate's documented contract).
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<JpegOutcome, VisionError> {
        let mut decoder = mozjpeg::Decompress::with_markers(&[mozjpeg::Marker::APP(1)])
            .from_mem(bytes)
            .map_err(|e| corrupt(e.into()))?;
        let (width, height) = decoder.size();
        check_pixels(width as u64, height as u64, limits)?;
        let orientation = decoder
            .markers()
            .filter_map(|m| m.data.strip_prefix(b"Exif\0\0"))
            .find_map(Orientation::from_exif_chunk)
            .unwrap_or(Orientation::NoTransforms);
        if matches!(decoder.color_space(), mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK) {
            // libjpeg does not convert CMYK to RGB; the `image` crate does.
            return Ok(JpegOutcome::Cmyk(orientation));
        }
        // Orientation may swap the axes; the reduction is the same on both, so it does not matter.
        let eighths = dct_eighths(width, height, min_scale(width as u32, height as u32));
        if eighths != 8 {
            decoder.scale(eighths);
        }
        let mut started = decoder.rgb().map_err(|e| corrupt(e.into()))?;
        let (out_w, out_h) = (started.width(), started.height());
        let pixels: Vec<u8> = started.read_scanlines().map_err(|e| corrupt(e.into()))?;
        started.finish().map_err(|e| corrupt(e.into()))?;
        let rgb = RgbImage::from_raw(out_w as u32, out_h as u32, pixels)
            .ok_or_else(|| corrupt("decoder returned fewer pixels than the header declares".into()))?;
        Ok(JpegOutcome::Rgb(rgb, orientation, (width as u32, height as u32)))
    }));
    let (rgb, orientation, (full_width, full_height)) = match decoded {
        Ok(Ok(JpegOutcome::Rgb(rgb, orientation, full))) => (rgb, orientation, full),
        Ok(Ok(JpegOutcome::Cmyk(orientation))) => {
            let img = image::load_from_memory_with_format(bytes, ImageFormat::Jpeg).map_err(|e| corrupt(e.into()))?;
            let full = (img.width(), img.height());
            (img.into_rgb8(), orientation, full)
        }
        Ok(Err(e)) => return Err(e),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .map(|s| s.trim_start_matches("libjpeg fatal error: ").to_string())
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "decoder failed".into());
            return Err(corrupt(detail.into()));
        }
    };
    let swaps = matches!(
        orientation,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    );
    let (full_width, full_height) = if swaps { (full_height, full_width) } else { (full_width, full_height) };
    let image = if orientation == Orientation::NoTransforms {
        rgb
    } else {
        let mut img = DynamicImage::ImageRgb8(rgb);
        img.apply_orientation(orientation);
        img.into_rgb8()
    };
    Ok(Reduced { image, full_width, full_height })
}

enum JpegOutcome {
    /// The pixels, the orientation to apply and the full (unreduced) size.
    Rgb(RgbImage, Orientation, (u32, u32)),
    Cmyk(Orientation),
}

/// Whether an end-of-image marker follows the first scan. Walks the marker segments up to the
/// first start-of-scan (so bytes inside EXIF thumbnails do not count), then looks for `FF D9`,
/// which cannot occur inside entropy-coded data (there `FF` is always followed by `00` or a
/// restart marker).
fn ends_after_scan(bytes: &[u8]) -> bool {
    let mut i = 2; // after SOI
    loop {
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1; // fill bytes
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(i), bytes.get(i + 1)) else {
            return false;
        };
        match marker {
            0xDA => break,
            0xD0..=0xD7 | 0x01 => i += 2,
            0xD9 => return false, // end of image before any scan
            _ => {
                let Some(len) = bytes.get(i + 2..i + 4).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize) else {
                    return false;
                };
                i += 2 + len;
            }
        }
    }
    bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9])
}

fn check_pixels(width: u64, height: u64, limits: &DecodeLimits) -> Result<(), VisionError> {
    if width == 0 || height == 0 {
        let source = format!("{width}x{height} has no pixels").into();
        return Err(VisionError::Corrupt { format: "image", source });
    }
    if width.saturating_mul(height) > limits.max_pixels {
        return Err(VisionError::TooManyPixels { width, height, limit: limits.max_pixels });
    }
    Ok(())
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        _ => "image",
    }
}

/// What a file that is not an image starts with: its magic number (the first 4 bytes, in hex:
/// `50 4b 03 04` a zip, `3c 21 44 4f` HTML) and whether it looks like text. Never the contents
/// as text: the file may be anything readable (an import once echoed `/proc/self/environ`).
fn printable_head(bytes: &[u8]) -> String {
    let magic: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let sniff = &bytes[..bytes.len().min(512)];
    let text = sniff.iter().all(|&b| (b >= 0x20 && b != 0x7f) || matches!(b, b'\t' | b'\n' | b'\r'));
    format!("{}{}", magic.join(" "), if text { " (text)" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgba, RgbaImage};

    fn png(img: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn a_reduced_decode_takes_the_largest_dct_scale_that_keeps_what_is_needed() {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 100]));
        let bytes = jpeg(&img);
        let limits = DecodeLimits::default();
        for (need, size) in [(0.1, (8, 6)), (0.125, (8, 6)), (0.2, (16, 12)), (0.3, (32, 24)), (0.6, (64, 48))] {
            let r = decode_bytes_reduced(&bytes, &limits, &|w, h| {
                assert_eq!((w, h), (64, 48), "the need is asked for the full size");
                need
            })
            .unwrap();
            assert_eq!((r.image.width(), r.image.height()), size, "need {need}");
            assert_eq!((r.full_width, r.full_height), (64, 48));
        }
        // A half-size decode is close to the picture: DCT scaling averages 2x2 blocks.
        let half = decode_bytes_reduced(&bytes, &limits, &|_, _| 0.5).unwrap().image;
        let (a, b) = (half.get_pixel(10, 10)[0] as i32, img.get_pixel(21, 21)[0] as i32);
        assert!((a - b).abs() <= 6, "{a} vs {b}");
        // Odd sizes round up, as libjpeg does: 1/8 of 9 pixels is 2.
        assert_eq!(dct_eighths(9, 9, 0.2), 1);
        assert_eq!(dct_eighths(9, 9, 0.23), 2);
        // Other formats decode whole.
        let r = decode_bytes_reduced(&png(&DynamicImage::ImageRgb8(img)), &limits, &|_, _| 0.1).unwrap();
        assert_eq!((r.image.width(), r.full_width), (64, 64));
    }

    fn jpeg(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    /// A small PNG file whose header declares `w` x `h` (its pixel data is a stub).
    pub(crate) fn png_declaring(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        let mut writer = encoder.write_header().unwrap();
        // An empty zlib stream: enough for a reader to find the first IDAT after the header.
        writer.write_chunk(png::chunk::IDAT, &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]).unwrap();
        drop(writer);
        out
    }

    #[test]
    fn rgba_drops_alpha_like_pillow() {
        let mut img = RgbaImage::new(2, 1);
        img.put_pixel(0, 0, Rgba([10, 20, 30, 0]));
        img.put_pixel(1, 0, Rgba([200, 100, 50, 128]));
        let rgb = decode_bytes(&png(&DynamicImage::ImageRgba8(img)), &DecodeLimits::default()).unwrap();
        assert_eq!(rgb.as_raw(), &[10, 20, 30, 200, 100, 50]);
    }

    #[test]
    fn grey_is_replicated() {
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_raw(2, 1, vec![7, 250]).unwrap());
        let rgb = decode_bytes(&png(&img), &DecodeLimits::default()).unwrap();
        assert_eq!(rgb.as_raw(), &[7, 7, 7, 250, 250, 250]);
    }

    #[test]
    fn huge_header_is_refused_before_decoding() {
        let bytes = png_declaring(30000, 30000);
        match decode_bytes(&bytes, &DecodeLimits::default()) {
            Err(VisionError::TooManyPixels { width: 30000, height: 30000, .. }) => {}
            other => panic!("expected a pixel-limit error, got {other:?}"),
        }
        let limits = DecodeLimits { max_pixels: 100, ..Default::default() };
        let small = png(&DynamicImage::ImageRgb8(RgbImage::new(20, 20)));
        assert!(matches!(decode_bytes(&small, &limits), Err(VisionError::TooManyPixels { .. })));
    }

    #[test]
    fn truncated_jpeg_is_an_error_not_a_grey_picture() {
        let img = RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 100]));
        let full = jpeg(&img);
        assert_eq!(decode_bytes(&full, &DecodeLimits::default()).unwrap().dimensions(), (64, 64));
        let cut = &full[..full.len() * 2 / 3];
        let err = decode_bytes(cut, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, VisionError::Corrupt { format: "JPEG", .. }), "{err:?}");
    }

    #[test]
    fn a_corrupt_png_keeps_the_decoder_error_and_an_io_failure_its_io_error() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(32, 32, image::Rgb([9, 8, 7])));
        let full = png(&img);
        let err = decode_bytes(&full[..full.len() - 20], &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.to_string(), "corrupt or truncated PNG", "the cause is not printed twice");
        let source = std::error::Error::source(&err).expect("a cause");
        assert!(source.downcast_ref::<image::ImageError>().is_some(), "{source:?}");

        let err = VisionError::from_io(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"));
        let io = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(io.map(std::io::Error::kind), Some(std::io::ErrorKind::PermissionDenied), "{err:?}");
    }

    #[test]
    fn libjpeg_fatal_errors_become_errors() {
        let img = RgbImage::from_pixel(16, 16, image::Rgb([1, 2, 3]));
        let mut bytes = jpeg(&img);
        // Sample precision 8 -> 3 in the frame header: libjpeg aborts ("Unsupported JPEG data precision").
        let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        bytes[sof + 4] = 3;
        let err = decode_bytes(&bytes, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, VisionError::Corrupt { format: "JPEG", .. }), "{err:?}");
        let cause = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
        assert!(cause.to_lowercase().contains("precision"), "{err:?}");
    }

    #[test]
    fn jpeg_pixel_limit_is_checked_from_the_header() {
        let img = RgbImage::from_pixel(40, 30, image::Rgb([1, 2, 3]));
        let limits = DecodeLimits { max_pixels: 1000, ..Default::default() };
        let err = decode_bytes(&jpeg(&img), &limits).unwrap_err();
        assert!(matches!(err, VisionError::TooManyPixels { width: 40, height: 30, limit: 1000 }), "{err:?}");
    }

    #[test]
    fn text_and_empty_files_are_named_as_such() {
        let err = decode_bytes(b"hello world\n", &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.to_string(), "not an image: unrecognised format (starts with bytes 68 65 6c 6c (text))");
        assert!(matches!(decode_bytes(b"", &DecodeLimits::default()), Err(VisionError::Empty)));
    }

    /// Regression: an import of `/proc/self/environ` answered `starts with "SHELL=/bin/b"`.
    #[test]
    fn unknown_format_errors_do_not_echo_the_contents() {
        let err = decode_bytes(b"SHELL=/bin/bash\0SECRET=hunter2\0", &DecodeLimits::default()).unwrap_err();
        let said = err.to_string();
        assert!(!said.contains("SHEL") && !said.contains("hunter2"), "{said}");
        assert!(said.contains("53 48 45 4c"), "{said}");
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 2x1 JPEG (red, blue) tagged "rotate 90 clockwise" (orientation 6) must come out 1x2.
        let img =
            RgbImage::from_fn(16, 8, |x, _| if x < 8 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) });
        let plain = jpeg(&img);
        let tiff: Vec<u8> = [
            &b"MM\x00\x2a\x00\x00\x00\x08"[..], // big-endian TIFF header, IFD at 8
            &[0x00, 0x01],                      // one entry
            &[0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 0x00, 0x00], // orientation = 6
            &[0, 0, 0, 0],
        ]
        .concat();
        let mut app1 = b"Exif\x00\x00".to_vec();
        app1.extend_from_slice(&tiff);
        let mut tagged = plain[..2].to_vec(); // SOI
        tagged.extend_from_slice(&[0xFF, 0xE1]);
        tagged.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        tagged.extend_from_slice(&app1);
        tagged.extend_from_slice(&plain[2..]);
        let out = decode_bytes(&tagged, &DecodeLimits::default()).unwrap();
        assert_eq!(out.dimensions(), (8, 16));
        // After a clockwise turn the left (red) half is on top.
        assert!(out.get_pixel(4, 2)[0] > 200 && out.get_pixel(4, 13)[2] > 200);
    }
}
