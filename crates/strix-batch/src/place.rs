//! Where images come from and answers go: a folder or a bucket prefix, through object_store.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::BatchError;

/// What [`Place::fetch`] found.
#[derive(Debug)]
pub enum Fetched {
    Bytes(Bytes),
    /// The object's size, over the limit.
    TooLarge(u64),
}

/// A folder or bucket prefix. Keys are relative to it, `/`-separated.
#[derive(Clone)]
pub struct Place {
    url: String,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Place {
    /// Open `url` (a folder path or a store URL) with the cloud `options` (`aws_endpoint`, ...).
    /// An input folder must exist; an output one is created.
    pub fn open(url: &str, options: &[(String, String)], create: bool) -> Result<Place, BatchError> {
        let folder = url.strip_prefix("file://").unwrap_or(url);
        if (!url.contains("://") || url.starts_with("file://")) && !create && !std::path::Path::new(folder).is_dir() {
            return Err(BatchError::Place { place: url.into(), what: "no such folder".into(), source: None });
        }
        let store = strix_registry::open_store(url, options).map_err(|e| BatchError::Place {
            place: url.into(),
            what: "cannot open it".into(),
            source: Some(Box::new(e)),
        })?;
        Ok(Place { url: url.trim_end_matches('/').to_string(), store })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// How `key` is named in answers: the folder path or URL joined with the key.
    pub fn name(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    fn err(&self, what: String, e: object_store::Error) -> BatchError {
        BatchError::Place { place: self.url.clone(), what, source: Some(Box::new(e)) }
    }

    fn missing(&self, key: &str) -> BatchError {
        BatchError::Place {
            place: self.url.clone(),
            what: format!("cannot read {key}: there is no such object"),
            source: None,
        }
    }

    fn key(key: &str) -> Result<Key, BatchError> {
        Key::parse(key).map_err(|e| BatchError::Invalid(format!("{key:?} is not a store key: {e}")))
    }

    /// Every key under the place, sorted.
    pub async fn list(&self) -> Result<Vec<String>, BatchError> {
        let mut listing = self.store.list(None);
        let mut keys = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.err("cannot list it".into(), e))?;
            keys.push(meta.location.to_string());
        }
        keys.sort();
        Ok(keys)
    }

    /// `key`'s bytes; one larger than `max_bytes` is refused before it is read.
    pub async fn get(&self, key: &str, max_bytes: u64) -> Result<Bytes, BatchError> {
        self.get_if_there(key, max_bytes).await?.ok_or_else(|| self.missing(key))
    }

    /// `key`'s bytes, or `None` when there is no such object (one request either way).
    pub async fn get_if_there(&self, key: &str, max_bytes: u64) -> Result<Option<Bytes>, BatchError> {
        match self.try_fetch(key, max_bytes).await? {
            None => Ok(None),
            Some(Fetched::Bytes(bytes)) => Ok(Some(bytes)),
            Some(Fetched::TooLarge(size)) => Err(BatchError::Place {
                place: self.url.clone(),
                what: format!("{key} has {size} bytes, more than the {max_bytes} allowed"),
                source: None,
            }),
        }
    }

    /// `key`'s bytes, or its size when that is over `max_bytes` (nothing more is read).
    pub async fn fetch(&self, key: &str, max_bytes: u64) -> Result<Fetched, BatchError> {
        self.try_fetch(key, max_bytes).await?.ok_or_else(|| self.missing(key))
    }

    /// What [`Place::fetch`] gives, or `None` when there is no such object.
    async fn try_fetch(&self, key: &str, max_bytes: u64) -> Result<Option<Fetched>, BatchError> {
        let got = match self.store.get(&Self::key(key)?).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(format!("cannot read {key}"), e)),
        };
        if got.meta.size > max_bytes {
            return Ok(Some(Fetched::TooLarge(got.meta.size)));
        }
        Ok(Some(Fetched::Bytes(got.bytes().await.map_err(|e| self.err(format!("cannot read {key}"), e))?)))
    }

    /// Remove `key` (nothing when it is not there).
    pub async fn delete(&self, key: &str) -> Result<(), BatchError> {
        match self.store.delete(&Self::key(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(format!("cannot remove {key}"), e)),
        }
    }

    /// Write `key` whole: object_store's local store writes a temporary file and renames it,
    /// and a cloud PUT replaces the object at once; a reader never sees half a file.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BatchError> {
        self.store
            .put(&Self::key(key)?, PutPayload::from(bytes))
            .await
            .map_err(|e| self.err(format!("cannot write {key}"), e))?;
        Ok(())
    }
}
