//! Model specs and where their files come from.
//!
//! A model is a typed [`ModelSpec`] (TOML beside the weights, or built into the zoo): task,
//! weights file + SHA-256, input, preprocessing, labels, decoder. [`Resolver::fetch`] finds each
//! file in the spec's folder, the cache, the model search path, or downloads it from the hub with
//! a checked, resumable, atomic write into the cache. Where those are comes from the caller's
//! settings (`strix-catalog` builds them); this crate reads no environment.
//!
//! ```no_run
//! use strix_zoo::{locate, Resolver};
//! let located = locate("efficientnet_lite0", "/home/me/.local/share/strix".as_ref())?;
//! let resolved = Resolver::new("/home/me/.cache/strix".into()).resolve(&located, &strix_core::NoProgress)?;
//! println!("{} -> {}", resolved.spec.name, resolved.weights.display());
//! # Ok::<(), strix_zoo::ZooError>(())
//! ```

pub mod builtin;
mod download;
mod error;
mod resolve;
mod spec;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;

use strix_core::Progress;

pub use builtin::DEFAULT_CLASSIFIER;

/// The spec file of a model folder (what `strix export` writes beside `model.onnx`, and what
/// a registered version holds).
pub const SPEC_FILE: &str = "model.toml";
pub use download::sha256_file;
pub use error::ZooError;
pub use resolve::{LocatedSpec, Resolver, locate, read_labels};
pub use spec::{Artifact, DecoderSpec, Head, LabelsSpec, MAIN, ModelSpec, Task, check_name, is_name_char};

/// A spec whose files are on disk and checked.
#[derive(Clone, Debug)]
pub struct ResolvedModel {
    pub spec: ModelSpec,
    /// The `main` network.
    pub weights: PathBuf,
    /// The other networks of a cascade, by name.
    pub networks: BTreeMap<String, PathBuf>,
    pub labels: Vec<String>,
    pub origin: String,
    /// The registry version these files are, for a registry model.
    pub version: Option<strix_core::ModelVersion>,
}

impl Resolver {
    /// Fetch the weights, networks and labels of a located spec.
    pub fn resolve(&self, located: &LocatedSpec, progress: &dyn Progress) -> Result<ResolvedModel, ZooError> {
        let weights = self.fetch(&located.spec.weights, located.base.as_deref(), progress)?;
        self.resolve_with_weights(located, weights, progress)
    }

    /// Like [`Self::resolve`], with the main network's file given (`models import` takes it
    /// from the command line; the other files are still found beside the spec).
    pub fn resolve_with_weights(
        &self,
        located: &LocatedSpec,
        weights: PathBuf,
        progress: &dyn Progress,
    ) -> Result<ResolvedModel, ZooError> {
        let spec = &located.spec;
        let base = located.base.as_deref();
        let networks = spec
            .networks
            .iter()
            .map(|(name, artifact)| Ok((name.clone(), self.fetch(artifact, base, progress)?)))
            .collect::<Result<_, ZooError>>()?;
        let labels = match &spec.labels {
            None => Vec::new(),
            Some(labels) => match labels.artifact() {
                Some(file) => read_labels(&self.fetch(&file, base, progress)?)?,
                None => labels.names.clone(),
            },
        };
        Ok(ResolvedModel {
            spec: spec.clone(),
            weights,
            networks,
            labels,
            origin: located.origin.clone(),
            version: None,
        })
    }
}
