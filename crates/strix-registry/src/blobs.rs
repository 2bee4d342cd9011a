//! Artifact blobs in an object store, keyed by content: `blobs/sha256/<hex>`. A local folder by
//! default; the store's URL picks another (`s3://`, `gs://`, `az://`), so a cloud is a setting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload, RetryConfig, WriteMultipart,
};
use sha2::{Digest, Sha256};
use strix_core::{Progress, ProgressUnit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use url::Url;

use crate::RegistryError;
use crate::error::Cause;

/// Files above this go up in parts (S3 wants parts of at least 5 MiB).
const PART_SIZE: usize = 8 << 20;
const READ_CHUNK: usize = 1 << 20;
/// Local uploads are written as `<key>#<n>` and renamed when complete (object_store's scheme);
/// a killed upload leaves one of these behind for `gc`.
const STAGING_MARK: char = '#';
const UNSUPPORTED: &str = "unsupported store: use a folder path, file:///PATH, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or az://CONTAINER/PREFIX";

/// Strix's client settings for every cloud store: an unreachable endpoint fails in seconds,
/// not after minutes of retries. `options` given for the store come after, so they can change them.
fn client_options() -> ClientOptions {
    ClientOptions::new().with_connect_timeout(Duration::from_secs(5))
}

fn retry() -> RetryConfig {
    RetryConfig { max_retries: 2, retry_timeout: Duration::from_secs(20), ..Default::default() }
}

/// A cloud store's builder for `url`, with Strix's client and retry settings and the
/// `options` this store knows. `parse_url_opts` cannot be used: it takes no [`RetryConfig`].
macro_rules! configured {
    ($builder:ty, $key:ty, $url:expr, $options:expr) => {{
        let mut builder = <$builder>::new().with_url($url).with_client_options(client_options()).with_retry(retry());
        for (key, value) in $options {
            // Keys this store does not know (AWS_PROFILE, another cloud's) are not its settings.
            if let Ok(key) = key.to_ascii_lowercase().parse::<$key>() {
                builder = builder.with_config(key, value);
            }
        }
        builder
    }};
}

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
    /// Open `url`, the store picked by its scheme: `s3://BUCKET[/PREFIX]`,
    /// `gs://BUCKET[/PREFIX]`, `az://CONTAINER[/PREFIX]` (and the https forms object_store
    /// knows for those clouds), `file:///PATH` or a plain folder path (created if missing).
    /// Credentials, region and endpoint come from `options`, by object_store's key names
    /// (`aws_endpoint`, `google_service_account`, `azure_storage_account_name`...).
    pub async fn open(url: &str, options: &[(String, String)]) -> Result<Blobs, RegistryError> {
        let shown = strix_core::redact(url);
        let (store, local_root) =
            store_for(url, options).map_err(|source| RegistryError::StoreUrl { url: shown.clone(), source })?;
        Blobs::ready(store, shown, local_root).await
    }

    /// The store, once it answered: a wrong endpoint, bucket or credential fails here with the
    /// store named, before any upload starts.
    async fn ready(
        store: Arc<dyn ObjectStore>,
        url: String,
        local_root: Option<PathBuf>,
    ) -> Result<Blobs, RegistryError> {
        let blobs = Blobs { store, url, local_root };
        blobs.store.list_with_delimiter(Some(&Key::from("blobs"))).await.map_err(|e| blobs.err(e))?;
        Ok(blobs)
    }

    fn err(&self, e: object_store::Error) -> RegistryError {
        RegistryError::StoreUrl { url: self.url.clone(), source: Cause::new(e) }
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
            let got = self.fetch(sha256, label).await?;
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

    /// A blob on its way down; a missing one is a damaged registry, named by `label`.
    async fn fetch(&self, sha256: &str, label: &str) -> Result<object_store::GetResult, RegistryError> {
        self.store.get(&key(sha256)).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => RegistryError::Corrupt {
                what: label.to_string(),
                expected: sha256.to_string(),
                actual: "nothing (the blob is missing)".into(),
            },
            e => self.err(e),
        })
    }

    /// A blob's bytes, checked against its digest and recorded size.
    pub async fn get_bytes(&self, sha256: &str, size: u64, label: &str) -> Result<Vec<u8>, RegistryError> {
        let got = self.fetch(sha256, label).await?;
        let bytes = got.bytes().await.map_err(|e| self.err(e))?;
        let actual = strix_core::digest::sha256_hex(&bytes);
        if actual != sha256 || bytes.len() as u64 != size {
            return Err(RegistryError::Corrupt { what: label.to_string(), expected: sha256.to_string(), actual });
        }
        Ok(bytes.to_vec())
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
        .map_err(|e| RegistryError::Io { path: path.to_path_buf(), source: std::io::Error::other(e) })?
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

/// The store `url` names (a folder path, `file://`, `s3://`, `gs://` or `az://`) with Strix's
/// client and retry settings and the cloud `options` (`aws_endpoint`, ...): what the registry
/// keeps its files in, and what batch transform reads and writes. A folder is created if missing.
pub fn open_store(url: &str, options: &[(String, String)]) -> Result<Arc<dyn ObjectStore>, Cause> {
    store_for(url, options).map(|(store, _)| store)
}

/// The store `url` names, and its folder when it is a local one.
fn store_for(url: &str, options: &[(String, String)]) -> Result<(Arc<dyn ObjectStore>, Option<PathBuf>), Cause> {
    if !url.contains("://") {
        return local(Path::new(url));
    }
    let parsed = Url::parse(url).map_err(Cause::new)?;
    let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(Cause::new)?;
    let remote: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::Local => {
            return local(&parsed.to_file_path().map_err(|()| Cause::msg("not a local path"))?);
        }
        ObjectStoreScheme::AmazonS3 => {
            let mut builder = configured!(AmazonS3Builder, AmazonS3ConfigKey, url, options);
            // A local S3 server (MinIO, the CI's) is reached over plain HTTP.
            if builder.get_config_value(&AmazonS3ConfigKey::Endpoint).is_some_and(|e| e.starts_with("http://")) {
                builder = builder.with_allow_http(true);
            }
            Arc::new(builder.build().map_err(Cause::new)?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            Arc::new(configured!(GoogleCloudStorageBuilder, GoogleConfigKey, url, options).build().map_err(Cause::new)?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            Arc::new(configured!(MicrosoftAzureBuilder, AzureConfigKey, url, options).build().map_err(Cause::new)?)
        }
        _ => return Err(Cause::msg(UNSUPPORTED)),
    };
    let prefix = Key::parse(prefix).map_err(Cause::new)?;
    if prefix.as_ref().is_empty() { Ok((remote, None)) } else { Ok((Arc::new(PrefixStore::new(remote, prefix)), None)) }
}

/// A folder store, the folder created if missing.
fn local(path: &Path) -> Result<(Arc<dyn ObjectStore>, Option<PathBuf>), Cause> {
    std::fs::create_dir_all(path).map_err(|e| Cause::during("cannot create the folder", e))?;
    let fs = LocalFileSystem::new_with_prefix(path).map_err(Cause::new)?;
    Ok((Arc::new(fs), Some(path.to_path_buf())))
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// The error at the end of `e`'s `source()` chain.
    fn root<'a>(e: &'a (dyn std::error::Error + 'static)) -> &'a (dyn std::error::Error + 'static) {
        let mut e = e;
        while let Some(next) = e.source() {
            e = next;
        }
        e
    }

    #[tokio::test(flavor = "current_thread")]
    async fn io_and_store_failures_keep_the_error_that_caused_them() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing.onnx");
        let err = hash_file(&missing).await.unwrap_err();
        let io = root(&err).downcast_ref::<std::io::Error>().expect("an io::Error at the root");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(err.to_string(), missing.display().to_string(), "the cause is not printed twice");

        // A store folder below a plain file cannot be created.
        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        let url = format!("file://{}/file/store", tmp.path().display());
        let err = Blobs::open(&url, &[]).await.unwrap_err();
        assert!(matches!(err, RegistryError::StoreUrl { .. }), "{err}");
        let cause = err.source().and_then(|c| c.downcast_ref::<Cause>()).expect("a Cause");
        assert!(cause.to_string().starts_with("cannot create the folder: "), "{cause}");
        let original = cause.original().expect("the io::Error kept").downcast_ref::<std::io::Error>();
        assert!(original.is_some(), "{cause:?}");
    }

    #[test]
    fn the_url_picks_the_store() {
        let opts = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let shown = |url: &str, options: &[(String, String)]| match store_for(url, options) {
            Ok((store, root)) => format!("{store} {root:?}"),
            Err(e) => format!("error: {e}"),
        };
        let s3 = shown("s3://models", &opts(&[("AWS_REGION", "eu-west-1"), ("AWS_PROFILE", "dev")]));
        assert_eq!(s3, "AmazonS3(models) None");
        assert_eq!(shown("s3://models/team/a", &[]), "PrefixObjectStore(team/a) None");
        assert_eq!(shown("gs://models", &[]), "GoogleCloudStorage(models) None");
        // The account comes from the options, the container from the URL.
        let az = shown("az://models", &opts(&[("azure_storage_account_name", "strix")]));
        assert!(az.starts_with("MicrosoftAzure { account: strix, container: models }"), "{az}");
        let tmp = tempfile::tempdir().unwrap();
        let file = shown(&format!("file://{}/blobs", tmp.path().display()), &[]);
        assert!(file.starts_with("LocalFileSystem(") && file.contains("Some("), "{file}");
        let memory = shown("memory:///", &[]);
        assert!(memory.starts_with("error: unsupported store") && memory.contains("az://"), "{memory}");
    }
}
