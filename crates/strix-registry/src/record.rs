//! What the registry records about a version.

use serde::{Deserialize, Serialize};

/// One file of a version: its name inside the version and its content digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// File name inside the version (`model.onnx`, `model.toml`, `report.html`).
    pub file: String,
    /// Lower-case hex sha256 of the content; the blob's key is `blobs/sha256/<sha256>`.
    pub sha256: String,
    pub size: u64,
}

/// Where a version came from: the facts needed to tell how it was made and to make it again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// What was registered: a run folder or an ONNX file, as given.
    pub source: String,
    /// Metrics of the run (validation and test accuracy, top-5, loss, best epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
    /// The training data: manifest digest (sorted file list + content hashes) and counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<serde_json::Value>,
    /// The resolved training configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Weights the training started from (path and sha256), when it did not start from scratch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<serde_json::Value>,
    /// The export gate's report (each engine's max |logit difference| against burn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<serde_json::Value>,
}

/// A registered version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub name: String,
    pub version: u64,
    pub task: String,
    /// Unix seconds.
    pub created_at: i64,
    pub created_by: String,
    pub strix_version: String,
    pub aliases: Vec<String>,
    pub artifacts: Vec<ArtifactRecord>,
    pub lineage: Lineage,
}

impl VersionRecord {
    pub fn artifact(&self, file: &str) -> Option<&ArtifactRecord> {
        self.artifacts.iter().find(|a| a.file == file)
    }
}

/// A model name in the registry at a glance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub name: String,
    /// How many versions exist (deleted ones are not counted).
    pub versions: u64,
    pub latest: u64,
    pub task: String,
    /// Unix seconds of the newest version.
    pub updated_at: i64,
    /// `(alias, version)`.
    pub aliases: Vec<(String, u64)>,
}
