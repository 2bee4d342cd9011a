//! IDX files (MNIST, Fashion-MNIST): big-endian headers, optionally gzipped.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::DataError;

/// Greyscale images stored back to back, `rows x cols` bytes each.
#[derive(Debug)]
pub struct IdxImages {
    pub pixels: Vec<u8>,
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
}

impl IdxImages {
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// The class names of Fashion-MNIST, in label order.
pub const FASHION_MNIST: [&str; 10] =
    ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"];

/// The most an IDX file may hold once unzipped (Fashion-MNIST's training images: 47 MB): a
/// small gzip bomb must not fill the memory.
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// `raw` itself, or unzipped when it is gzip, refused when it unzips past `limit` bytes (`path`
/// names it in errors; bytes already in memory are not limited again).
fn unzip_bounded(raw: Vec<u8>, path: &Path, limit: u64) -> Result<Vec<u8>, DataError> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(path, format!("corrupt gzip: {e}")))?;
        if out.len() as u64 > limit {
            return Err(DataError::format(path, format!("unzips to more than {limit} bytes; refusing it")));
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parse the header: magic `0 0 8 ndim`, then `ndim` big-endian u32 sizes.
fn parse(path: &Path, bytes: &[u8], ndim: u8) -> Result<(Vec<usize>, usize), DataError> {
    let bad = |r: String| DataError::format(path, r);
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 8 {
        return Err(bad("not an IDX file of unsigned bytes (magic 0x0000_08xx)".into()));
    }
    if bytes[3] != ndim {
        return Err(bad(format!("expected {ndim} dimensions, the header says {}", bytes[3])));
    }
    let head = 4 + 4 * ndim as usize;
    if bytes.len() < head {
        return Err(bad("truncated header".into()));
    }
    let dims: Vec<usize> = (0..ndim as usize)
        .map(|i| u32::from_be_bytes([bytes[4 + 4 * i], bytes[5 + 4 * i], bytes[6 + 4 * i], bytes[7 + 4 * i]]) as usize)
        .collect();
    let want = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(format!("header sizes {dims:?} overflow")))?;
    if bytes.len() - head != want {
        return Err(bad(format!("header promises {want} bytes of data, the file holds {}", bytes.len() - head)));
    }
    Ok((dims, head))
}

pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    parse_images(std::fs::read(path).map_err(DataError::io(path))?, path, MAX_IDX_BYTES)
}

/// [`read_images`] on a file's bytes, gzipped or not; gzip that unzips past `limit` bytes is
/// refused (`path` names it in errors).
pub fn parse_images(bytes: Vec<u8>, path: &Path, limit: u64) -> Result<IdxImages, DataError> {
    let mut bytes = unzip_bounded(bytes, path, limit)?;
    let (dims, head) = parse(path, &bytes, 3)?;
    bytes.drain(..head);
    Ok(IdxImages { pixels: bytes, count: dims[0], rows: dims[1], cols: dims[2] })
}

pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    parse_labels(std::fs::read(path).map_err(DataError::io(path))?, path, MAX_IDX_BYTES)
}

/// [`read_labels`] on a file's bytes, gzipped or not; gzip that unzips past `limit` bytes is
/// refused (`path` names it in errors).
pub fn parse_labels(bytes: Vec<u8>, path: &Path, limit: u64) -> Result<Vec<u8>, DataError> {
    let mut bytes = unzip_bounded(bytes, path, limit)?;
    let (_, head) = parse(path, &bytes, 1)?;
    bytes.drain(..head);
    Ok(bytes)
}

/// `prefix-images-idx3-ubyte[.gz]` and its labels file in `dir`, if both are there.
pub fn find_pair(dir: &Path, prefix: &str) -> Option<(PathBuf, PathBuf)> {
    let pick = |kind: &str, n: u8| {
        [format!("{prefix}-{kind}-idx{n}-ubyte.gz"), format!("{prefix}-{kind}-idx{n}-ubyte")]
            .into_iter()
            .map(|name| dir.join(name))
            .find(|p| p.is_file())
    };
    Some((pick("images", 3)?, pick("labels", 1)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(ndim: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, ndim];
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend(data);
        v
    }

    #[test]
    fn reads_plain_and_gzipped_and_rejects_bad_headers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-images-idx3-ubyte");
        std::fs::write(&p, idx(3, &[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])).unwrap();
        let imgs = read_images(&p).unwrap();
        assert_eq!((imgs.count, imgs.rows, imgs.cols), (2, 2, 3));
        assert_eq!(imgs.image(1), &[7, 8, 9, 10, 11, 12]);

        let l = dir.path().join("x-labels-idx1-ubyte.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &idx(1, &[2], &[3, 4])).unwrap();
        std::fs::write(&l, gz.finish().unwrap()).unwrap();
        assert_eq!(read_labels(&l).unwrap(), vec![3, 4]);
        assert_eq!(find_pair(dir.path(), "x"), Some((p.clone(), l.clone())));

        std::fs::write(&p, idx(3, &[2, 2, 3], &[1, 2, 3])).unwrap();
        let e = read_images(&p).unwrap_err().to_string();
        assert!(e.contains("promises 12 bytes"), "{e}");
        assert!(read_labels(&p).unwrap_err().to_string().contains("expected 1 dimensions"));
    }

    #[test]
    fn a_gzip_bomb_is_refused_before_it_fills_memory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bomb-labels-idx1-ubyte.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..8 {
            std::io::Write::write_all(&mut gz, &zeros).unwrap();
        }
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        let e = unzip_bounded(std::fs::read(&p).unwrap(), &p, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("unzips to more than 1048576 bytes"), "{e}");
    }

    #[test]
    fn header_sizes_that_overflow_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-images-idx3-ubyte");
        std::fs::write(&p, idx(3, &[u32::MAX, u32::MAX, u32::MAX], &[1, 2, 3])).unwrap();
        let e = read_images(&p).unwrap_err().to_string();
        assert!(e.contains("overflow"), "{e}");
    }
}
