//! Artifact blobs in an object store, keyed by content: `blobs/sha256/<hex>`. A local folder by
//! default, any S3-compatible store by `s3://bucket/prefix`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};
use sha2::{Digest, Sha256};
use strix_core::{Progress, ProgressUnit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::RegistryError;

/// Files above this go up in parts (S3 wants parts of at least 5 MiB).
const PART_SIZE: usize = 8 << 20;
const READ_CHUNK: usize = 1 << 20;
/// Local uploads are written as `<key>#<n>` and renamed when complete (object_store's scheme);
/// a killed upload leaves one of these behind for `gc`.
const STAGING_MARK: char = '#';

#[derive(Debug)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// Shown in messages (no credentials: those come from the environment).
    pub url: String,
    /// The folder of a local store.
    local_root: Option<PathBuf>,
}

/// A blob in the store.
#[derive(Clone, Debug)]
pub struct BlobInfo {
    pub sha256: String,
    pub size: u64,
    pub modified: SystemTime,
}

pub fn key(sha256: &str) -> Key {
    Key::from(format!("blobs/sha256/{sha256}"))
}

impl Blobs {
    /// Open `url`: `s3://bucket[/prefix]` (credentials, region and endpoint from `s3`, by
    /// object_store's key names), `file:///path`, or a plain folder path (created if missing).
    pub async fn open(url: &str, s3: &[(String, String)]) -> Result<Blobs, RegistryError> {
        let bad = |reason: String| RegistryError::StoreUrl { url: strix_core::redact(url), reason };
        let (store, local_root): (Arc<dyn ObjectStore>, Option<PathBuf>) = if let Some(rest) = url.strip_prefix("s3://")
        {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket: use s3://BUCKET/PREFIX".into()));
            }
            let mut builder = AmazonS3Builder::new();
            for (key, value) in s3 {
                // Keys object_store does not know (AWS_PROFILE, ...) are not S3 settings.
                if let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            let mut builder = builder
                .with_bucket_name(bucket)
                // An unreachable endpoint should fail in seconds, not after minutes of retries.
                .with_retry(RetryConfig {
                    max_retries: 2,
                    retry_timeout: Duration::from_secs(20),
                    ..Default::default()
                })
                .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), "5s");
            if builder.get_config_value(&AmazonS3ConfigKey::Endpoint).is_some_and(|e| e.starts_with("http://")) {
                builder = builder.with_allow_http(true);
            }
            let s3 = builder.build().map_err(|e| bad(one_line(&e)))?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() { (Arc::new(s3), None) } else { (Arc::new(PrefixStore::new(s3, prefix)), None) }
        } else if url.contains("://") && !url.starts_with("file://") {
            return Err(bad("unsupported store: use a folder path, file:///PATH or s3://BUCKET/PREFIX".into()));
        } else {
            let path = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
            std::fs::create_dir_all(&path).map_err(|e| bad(format!("cannot create the folder: {e}")))?;
            let fs = LocalFileSystem::new_with_prefix(&path).map_err(|e| bad(one_line(&e)))?;
            (Arc::new(fs), Some(path))
        };
        let blobs = Blobs { store, url: strix_core::redact(url), local_root };
        // Ask the store something now, so a wrong endpoint, bucket or credential fails here
        // with the store named, before any upload starts.
        blobs.store.list_with_delimiter(Some(&Key::from("blobs"))).await.map_err(|e| blobs.err(e))?;
        Ok(blobs)
    }

    fn err(&self, e: object_store::Error) -> RegistryError {
        RegistryError::StoreUrl { url: self.url.clone(), reason: one_line(&e) }
    }

    /// Upload a file whose digest [`hash_file`] gave as `expected`. The bytes sent are hashed
    /// again, and a file that changed in between is refused (the upload is aborted, nothing
    /// appears under the key).
    pub async fn put_file(
        &self,
        path: &Path,
        expected: &str,
        size: u64,
        label: &str,
        progress: &dyn Progress,
    ) -> Result<(), RegistryError> {
        let key = key(expected);
        let mut file = tokio::fs::File::open(path).await.map_err(RegistryError::io(path))?;
        progress.start(&format!("uploading {label}"), Some(size), ProgressUnit::Bytes);
        let result = async {
            if size as usize <= 2 * PART_SIZE {
                let mut bytes = Vec::with_capacity(size as usize);
                file.read_to_end(&mut bytes).await.map_err(RegistryError::io(path))?;
                if strix_core::digest::sha256_hex(&bytes) != expected {
                    return Err(RegistryError::Changed { path: path.to_path_buf() });
                }
                self.store.put(&key, PutPayload::from(bytes)).await.map_err(|e| self.err(e))?;
                progress.advance(size);
                return Ok(());
            }
            let upload = self.store.put_multipart(&key).await.map_err(|e| self.err(e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                let n = match file.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(RegistryError::io(path)(e));
                    }
                };
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                if let Err(e) = writer.wait_for_capacity(4).await {
                    let _ = writer.abort().await;
                    return Err(self.err(e));
                }
                writer.write(&buf[..n]);
                progress.advance(n as u64);
            }
            if hex::encode(hasher.finalize()) != expected {
                let _ = writer.abort().await;
                return Err(RegistryError::Changed { path: path.to_path_buf() });
            }
            writer.finish().await.map_err(|e| self.err(e))?;
            Ok(())
        }
        .await;
        progress.finish();
        result
    }

    /// The blob's size and age, or `None` when the store lacks it.
    pub async fn head(&self, sha256: &str) -> Result<Option<BlobInfo>, RegistryError> {
        match self.store.head(&key(sha256)).await {
            Ok(meta) => {
                Ok(Some(BlobInfo { sha256: sha256.to_string(), size: meta.size, modified: meta.last_modified.into() }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Download a blob into `dest`, checking its digest; `dest` appears only when it is whole
    /// and right (written aside, then renamed).
    pub async fn get_file(
        &self,
        sha256: &str,
        size: u64,
        dest: &Path,
        label: &str,
        progress: &dyn Progress,
    ) -> Result<(), RegistryError> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir).await.map_err(RegistryError::io(dir))?;
        let (partial, mut out) = new_partial(dest).await?;
        progress.start(&format!("downloading {label}"), Some(size), ProgressUnit::Bytes);
        let result = async {
            let got = self.store.get(&key(sha256)).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => RegistryError::Corrupt {
                    what: label.to_string(),
                    expected: sha256.to_string(),
                    actual: "nothing (the blob is missing)".into(),
                },
                e => self.err(e),
            })?;
            let mut stream = got.into_stream();
            let mut hasher = Sha256::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.err(e))?;
                hasher.update(&chunk);
                out.write_all(&chunk).await.map_err(RegistryError::io(&partial))?;
                progress.advance(chunk.len() as u64);
            }
            out.flush().await.map_err(RegistryError::io(&partial))?;
            drop(out);
            let actual = hex::encode(hasher.finalize());
            if actual != sha256 {
                return Err(RegistryError::Corrupt { what: label.to_string(), expected: sha256.to_string(), actual });
            }
            tokio::fs::rename(&partial, dest).await.map_err(RegistryError::io(dest))
        }
        .await;
        progress.finish();
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }

    /// Every blob in the store.
    pub async fn list(&self) -> Result<Vec<BlobInfo>, RegistryError> {
        let prefix = Key::from("blobs/sha256");
        let mut stream = self.store.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| self.err(e))?;
            let Some(name) = meta.location.filename() else { continue };
            if name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) {
                out.push(BlobInfo { sha256: name.to_string(), size: meta.size, modified: meta.last_modified.into() });
            }
        }
        Ok(out)
    }

    pub async fn delete(&self, sha256: &str) -> Result<(), RegistryError> {
        match self.store.delete(&key(sha256)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Remove unfinished local uploads older than `grace` (left by a killed `register`);
    /// returns how many. Object stores keep their own unfinished multipart uploads: S3 drops
    /// them by a lifecycle rule (AbortIncompleteMultipartUpload).
    pub fn remove_stale_uploads(&self, grace: Duration) -> Result<usize, RegistryError> {
        let Some(root) = &self.local_root else { return Ok(0) };
        let dir = root.join("blobs").join("sha256");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(0) };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= grace);
            if name.contains(STAGING_MARK) && stale {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(RegistryError::io(&path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// sha256 and size of a file, hashed off the async threads.
pub async fn hash_file(path: &Path) -> Result<(String, u64), RegistryError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || strix_core::digest::sha256_file(&owned))
        .await
        .map_err(|e| RegistryError::Io { path: path.to_path_buf(), reason: e.to_string() })?
        .map_err(RegistryError::io(path))
}

/// A fresh temporary file beside `dest`, created with `create_new`: a file or link already at
/// that name (left by someone else, or planted) is never opened or followed.
async fn new_partial(dest: &Path) -> Result<(PathBuf, tokio::fs::File), RegistryError> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut last = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let partial = dir.join(format!(".{name}.{}.{n}.{nanos}.part", std::process::id()));
        match tokio::fs::OpenOptions::new().write(true).create_new(true).open(&partial).await {
            Ok(file) => return Ok((partial, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(RegistryError::io(&partial)(e)),
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::other("no free temporary name"));
    Err(RegistryError::io(dir)(e))
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    strix_core::redact(&e.to_string().replace('\n', " "))
}
