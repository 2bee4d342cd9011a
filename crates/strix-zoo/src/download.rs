//! Verified, resumable, atomic downloads into the cache.
//!
//! The file grows as `NAME.part` (resumed with an HTTP range request after an interruption),
//! is hashed while it is written, and becomes `NAME` by a rename only when its SHA-256 matches.
//! A lock file (`NAME.lock`, left in place) keeps two processes from writing the same `.part`.
//!
//! This module knows nothing of specs or where files are looked for ([`crate::resolve`] calls
//! it, never the other way).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use strix_core::{Progress, ProgressUnit};

use crate::ZooError;

const CHUNK: usize = 256 * 1024;

/// Download `url` to `dest`, which must end up with SHA-256 `sha256`.
pub(crate) fn download(
    url: &str,
    dest: &Path,
    sha256: &str,
    size: Option<u64>,
    progress: &dyn Progress,
) -> Result<(), ZooError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| ZooError::io(dir, e))?;
    let part = with_suffix(dest, ".part");
    let lock_path = with_suffix(dest, ".lock");
    let lock = File::create(&lock_path).map_err(|e| ZooError::io(&lock_path, e))?;
    lock.lock().map_err(|e| ZooError::io(&lock_path, e))?;
    // Another process may have finished the same download while we waited for the lock.
    if dest.is_file() && sha256_file(dest)? == sha256 {
        return Ok(());
    }
    let result = fetch_into(url, &part, size, progress).and_then(|()| {
        let actual = sha256_file(&part)?;
        if actual != sha256 {
            // A wrong file must not be resumed from either: start clean next time.
            let _ = fs::remove_file(&part);
            return Err(ZooError::DownloadCorrupt {
                url: strix_core::redact(url),
                expected: sha256.to_string(),
                actual,
            });
        }
        fs::rename(&part, dest).map_err(|e| ZooError::io(dest, e))
    });
    progress.finish();
    // The lock file stays: removing it would let a waiting process lock an unlinked inode
    // while a newcomer locks a fresh one.
    result
}

/// Lower-case hex SHA-256 of a file, read in chunks.
pub fn sha256_file(path: &Path) -> Result<String, ZooError> {
    strix_core::digest::sha256_file(path).map(|(sha, _)| sha).map_err(|e| ZooError::io(path, e))
}

/// The connection dropped in the middle of the body.
#[derive(Debug, thiserror::Error)]
#[error("connection lost after {written} bytes; run again to resume")]
struct ConnectionLost {
    written: u64,
    #[source]
    source: io::Error,
}

/// `e` as the cause of a failed download of `url`. A message that quotes a URL with
/// credentials is kept as masked text instead of the error itself.
fn download_failed(url: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ZooError {
    let e = e.into();
    let text = e.to_string();
    let masked = strix_core::redact(&text);
    let source = if masked == text { e } else { masked.into() };
    ZooError::Download { url: strix_core::redact(url), source }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Append the rest of `url` to `part`, asking for a byte range when `part` already holds a
/// prefix; start over when the server does not honour the range.
fn fetch_into(url: &str, part: &Path, size: Option<u64>, progress: &dyn Progress) -> Result<(), ZooError> {
    let failed = |e: String| download_failed(url, e);
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .user_agent(concat!("strix/", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let mut have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if size.is_some_and(|s| have > s) {
        have = 0;
    }
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| download_failed(url, e))?;
    let status = response.status().as_u16();
    let resumed = match status {
        206 if have > 0 => true,
        200 => false,
        // Our prefix is already the whole file (or stale): fetch it again from the start.
        416 if have > 0 => {
            let _ = fs::remove_file(part);
            return fetch_into(url, part, size, progress);
        }
        _ => return Err(failed(format!("HTTP {status}"))),
    };
    let length: Option<u64> =
        response.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let start = if resumed { have } else { 0 };
    let total = length.map(|l| l + start).or(size);
    if let (Some(expected), Some(total)) = (size, total)
        && total != expected
    {
        return Err(failed(format!("server offers {total} bytes, the spec says {expected}")));
    }
    let mut file =
        OpenOptions::new().create(true).write(true).truncate(false).open(part).map_err(|e| ZooError::io(part, e))?;
    if resumed {
        file.seek(SeekFrom::Start(start)).map_err(|e| ZooError::io(part, e))?;
        tracing::info!(url, from = start, "resuming download");
    } else {
        file.set_len(0).map_err(|e| ZooError::io(part, e))?;
    }
    let name = part.file_name().map(|n| n.to_string_lossy().trim_end_matches(".part").to_string()).unwrap_or_default();
    progress.start(&format!("downloading {name}"), total, ProgressUnit::Bytes);
    progress.advance(start);
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; CHUNK];
    let mut written = start;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(download_failed(url, ConnectionLost { written, source })),
        };
        written += n as u64;
        if let Some(limit) = size.or(total)
            && written > limit
        {
            let _ = fs::remove_file(part);
            return Err(failed(format!("server sent more than the expected {limit} bytes")));
        }
        file.write_all(&buf[..n]).map_err(|e| ZooError::io(part, e))?;
        progress.advance(n as u64);
    }
    file.sync_all().map_err(|e| ZooError::io(part, e))?;
    if let Some(total) = total
        && written < total
    {
        return Err(failed(format!("connection closed after {written} of {total} bytes; run again to resume")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::error::Error as _;

    #[test]
    fn a_failed_download_keeps_the_transport_error() {
        let tmp = tempfile::tempdir().unwrap();
        // Port 1 of the loopback: refused at once.
        let url = "http://127.0.0.1:1/m.onnx";
        let err =
            download(url, &tmp.path().join("m.onnx"), &"0".repeat(64), None, &strix_core::NoProgress).unwrap_err();
        assert_eq!(err.to_string(), format!("{url}: download failed"));
        let source = err.source().expect("a cause");
        assert!(source.downcast_ref::<ureq::Error>().is_some(), "{source:?}");
    }

    #[test]
    fn a_lost_connection_keeps_the_io_error_and_a_quoted_password_is_masked() {
        let lost = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        let err = download_failed("https://hub/m.onnx", ConnectionLost { written: 10, source: lost });
        let io = err.source().and_then(|s| s.source()).and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(io.map(io::Error::kind), Some(io::ErrorKind::ConnectionReset), "{err:?}");

        let err = download_failed("https://me:secret@hub/m.onnx", "bad URI https://me:secret@hub/m.onnx".to_string());
        let shown = format!("{err}: {}", err.source().expect("a cause"));
        assert!(!shown.contains("secret") && shown.contains("https://me:"), "{shown}");
    }

    #[test]
    fn suffix_is_appended_not_replacing_the_extension() {
        assert_eq!(with_suffix(Path::new("/c/model.onnx"), ".part"), PathBuf::from("/c/model.onnx.part"));
    }
}
