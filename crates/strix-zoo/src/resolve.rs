//! Finding a spec from what the user typed, and the files it names on disk.

use std::path::{Path, PathBuf};

use strix_core::Progress;

use crate::download::{download, sha256_file};
use crate::spec::{Artifact, ModelSpec};
use crate::{ZooError, builtin};

/// A spec and where its relative file paths start.
#[derive(Clone, Debug)]
pub struct LocatedSpec {
    pub spec: ModelSpec,
    /// Folder of a spec file; `None` for zoo entries (their files come from the search path,
    /// the cache or the hub).
    pub base: Option<PathBuf>,
    /// How to name the spec in messages: a path or `zoo:NAME`.
    pub origin: String,
}

/// Find the spec for a `--model` argument: a zoo name, the name of a model imported under
/// `home` (Strix's data folder), a spec `.toml`, or an `.onnx` with its spec beside it
/// (`model.onnx` -> `model.toml`).
pub fn locate(reference: &str, home: &Path) -> Result<LocatedSpec, ZooError> {
    let path = Path::new(reference);
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("toml") => load_spec_file(path),
        Some("onnx") => {
            let beside = path.with_extension("toml");
            if !path.is_file() {
                let source = std::io::Error::new(std::io::ErrorKind::NotFound, "model file not found");
                return Err(ZooError::Io { path: path.to_path_buf(), source });
            }
            if !beside.is_file() {
                return Err(ZooError::NoSpecBeside { onnx: path.to_path_buf(), expected: beside });
            }
            let mut located = load_spec_file(&beside)?;
            let onnx_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if located.spec.weights.file != onnx_name {
                return Err(ZooError::SpecInvalid {
                    origin: located.origin,
                    message: format!(
                        "weights.file is {:?} but the spec was found beside {onnx_name:?}",
                        located.spec.weights.file
                    ),
                });
            }
            located.base = path.parent().map(Path::to_path_buf);
            Ok(located)
        }
        _ => match builtin::get(reference)? {
            Some(spec) => Ok(LocatedSpec { spec, base: None, origin: format!("zoo:{reference}") }),
            None => match crate::store::find(home, reference) {
                Some(path) => load_spec_file(&path),
                None => {
                    let mut available: Vec<String> = builtin::names().into_iter().map(String::from).collect();
                    available.extend(crate::store::names(home));
                    Err(ZooError::UnknownModel { name: reference.to_string(), available: available.join(", ") })
                }
            },
        },
    }
}

fn load_spec_file(path: &Path) -> Result<LocatedSpec, ZooError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ZooError::SpecRead { path: path.to_path_buf(), source })?;
    let origin = path.display().to_string();
    let spec = ModelSpec::from_toml(&text, &origin)?;
    let base = path.parent().map(|p| if p.as_os_str().is_empty() { PathBuf::from(".") } else { p.to_path_buf() });
    Ok(LocatedSpec { spec, base, origin })
}

/// Where model files are looked for, and whether the network may be used.
#[derive(Clone, Debug)]
pub struct Resolver {
    /// Downloads land here, one folder per SHA-256.
    pub cache_dir: PathBuf,
    /// Folders holding model files by their spec-relative path
    pub search_path: Vec<PathBuf>,
    /// Base URL of a model hub that serves files by their spec-relative path.
    pub hub: Option<String>,
    /// Never download.
    pub offline: bool,
}

impl Resolver {
    /// Downloads into `cache_dir`; no search path, no hub, online.
    pub fn new(cache_dir: PathBuf) -> Self {
        Resolver { cache_dir, search_path: Vec::new(), hub: None, offline: false }
    }

    /// Where a verified download of `artifact` lives in the cache.
    pub fn cache_path(&self, artifact: &Artifact, sha256: &str) -> PathBuf {
        let name = Path::new(&artifact.file).file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "model".into());
        self.cache_dir.join("files").join(sha256).join(name)
    }

    /// Where `artifact` would be downloaded from: its own `url`, else (for zoo specs, which
    /// have no `base` folder) the hub plus its relative path.
    pub fn download_url(&self, artifact: &Artifact, base: Option<&Path>) -> Option<String> {
        artifact.url.clone().or_else(|| {
            let hub = self.hub.as_ref().filter(|_| base.is_none())?;
            Some(format!("{}/{}", hub.trim_end_matches('/'), artifact.file))
        })
    }

    /// A local path holding `artifact`, checked against its SHA-256: from the spec's folder,
    /// the cache, the search path, or downloaded into the cache, in that order.
    pub fn fetch(
        &self,
        artifact: &Artifact,
        base: Option<&Path>,
        progress: &dyn Progress,
    ) -> Result<PathBuf, ZooError> {
        let mut searched: Vec<String> = Vec::new();
        if let Some(base) = base {
            let path = base.join(&artifact.file);
            if path.is_file() {
                // A pinned digest says exactly what may be read; an unpinned file must not be
                // a link to anything outside the folder.
                if artifact.sha256.is_none() {
                    inside(base, &path)?;
                }
                verify(&path, artifact)?;
                return Ok(path);
            }
            searched.push(base.display().to_string());
        }
        if let Some(sha) = &artifact.sha256 {
            let cached = self.cache_path(artifact, sha);
            if cached.is_file() {
                if sha256_file(&cached)? == *sha {
                    return Ok(cached);
                }
                tracing::warn!(path = %cached.display(), "cached file is corrupt; fetching it again");
                std::fs::remove_file(&cached).map_err(|e| ZooError::io(&cached, e))?;
            }
            searched.push(format!("the cache ({})", self.cache_dir.display()));
        }
        if base.is_none() {
            for dir in &self.search_path {
                let path = dir.join(&artifact.file);
                if path.is_file() {
                    verify(&path, artifact)?;
                    return Ok(path);
                }
            }
            if self.search_path.is_empty() {
                searched.push("STRIX_MODEL_PATH (unset)".into());
            } else {
                searched.push(format!(
                    "STRIX_MODEL_PATH ({})",
                    self.search_path.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":")
                ));
            }
        }
        let url = self.download_url(artifact, base);
        let missing = |hint: String| ZooError::ArtifactMissing {
            file: artifact.file.clone(),
            searched: searched.join(", "),
            hint,
        };
        let Some(url) = url else {
            return Err(missing(if base.is_none() {
                "; set STRIX_HUB_URL to download it, or STRIX_MODEL_PATH to a folder that holds it".into()
            } else {
                String::new()
            }));
        };
        if self.offline {
            return Err(missing(format!("; offline mode forbids downloading it from {}", strix_core::redact(&url))));
        }
        let Some(sha) = &artifact.sha256 else {
            return Err(ZooError::NoChecksum { url: strix_core::redact(&url) });
        };
        let dest = self.cache_path(artifact, sha);
        tracing::info!(url = %strix_core::redact(&url), dest = %dest.display(), "downloading");
        download(&url, &dest, sha, artifact.size, progress)?;
        Ok(dest)
    }
}

/// Refuse a file that resolves (through links) to somewhere outside `folder`: a spec folder
/// from someone else must not make `models import` copy, or a model read, any other file.
/// (Files whose sha256 the spec pins may live elsewhere, e.g. weights linked from shared
/// storage: their content is checked, so nothing but that exact content can be read.)
fn inside(folder: &Path, path: &Path) -> Result<(), ZooError> {
    let real_folder = folder.canonicalize().map_err(|e| ZooError::io(folder, e))?;
    let real = path.canonicalize().map_err(|e| ZooError::io(path, e))?;
    if real.starts_with(&real_folder) {
        Ok(())
    } else {
        Err(ZooError::OutsideFolder { path: path.to_path_buf(), folder: folder.to_path_buf() })
    }
}

/// Check a local file against the artifact's digest, when it has one.
fn verify(path: &Path, artifact: &Artifact) -> Result<(), ZooError> {
    if let Some(expected) = &artifact.sha256 {
        let actual = sha256_file(path)?;
        if actual != *expected {
            return Err(ZooError::ChecksumMismatch { path: path.to_path_buf(), expected: expected.clone(), actual });
        }
    }
    Ok(())
}

/// Read a labels file: one class per line, line i = class i.
pub fn read_labels(path: &Path) -> Result<Vec<String>, ZooError> {
    let text = std::fs::read_to_string(path).map_err(|e| ZooError::io(path, e))?;
    Ok(text.lines().map(|l| l.trim_end_matches('\r').to_string()).collect())
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn an_unreadable_spec_keeps_the_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("nothing.toml");
        let err = locate(path.to_str().unwrap(), tmp.path()).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: cannot read model spec", path.display()));
        let io = err.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("the io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_symlink_out_of_the_spec_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (model, outside) = (tmp.path().join("model"), tmp.path().join("outside"));
        std::fs::create_dir_all(&model).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), "secret\n").unwrap();
        std::os::unix::fs::symlink("../outside/secret.txt", model.join("labels.txt")).unwrap();
        std::fs::write(model.join("real.txt"), "a\n").unwrap();
        std::os::unix::fs::symlink("real.txt", model.join("inner.txt")).unwrap();
        let resolver = Resolver { cache_dir: tmp.path().join("cache"), search_path: vec![], hub: None, offline: true };
        let artifact = |file: &str| Artifact { file: file.into(), sha256: None, url: None, size: None };
        let err = resolver.fetch(&artifact("labels.txt"), Some(&model), &strix_core::NoProgress).unwrap_err();
        assert!(matches!(err, ZooError::OutsideFolder { .. }), "{err}");
        assert!(err.to_string().contains("outside the model folder"), "{err}");
        // A link that stays inside the folder is fine, and so is one out of it whose content
        // the spec pins.
        assert!(resolver.fetch(&artifact("inner.txt"), Some(&model), &strix_core::NoProgress).is_ok());
        let pinned =
            Artifact { sha256: Some(sha256_file(&outside.join("secret.txt")).unwrap()), ..artifact("labels.txt") };
        assert!(resolver.fetch(&pinned, Some(&model), &strix_core::NoProgress).is_ok());
    }
}
