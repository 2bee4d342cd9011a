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

impl ArtifactRecord {
    /// Check a record read back from the database: whoever can write a shared registry's
    /// tables must not be able to make a download write outside its folder (`../x`, `/tmp/x`)
    /// or read a blob outside the store (a digest that is not 64 hex digits).
    pub fn check(&self) -> Result<(), String> {
        if !is_plain_file_name(&self.file) {
            return Err(format!("artifact name {:?} is not a plain file name", self.file));
        }
        if !is_sha256(&self.sha256) {
            return Err(format!("artifact {:?} has digest {:?}, not 64 lower-case hex digits", self.file, self.sha256));
        }
        Ok(())
    }
}

/// A name with no folder part, no leading dot and only the model-name characters.
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && name.chars().all(strix_core::is_name_char)
}

/// Lower-case hex SHA-256.
pub(crate) fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
    /// The tuning job whose best trial this run was: its id, the trial, its parameters and
    /// objective, and the trials it was chosen from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<serde_json::Value>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_records_from_the_database_are_checked() {
        let good = ArtifactRecord { file: "model.onnx".into(), sha256: "ab".repeat(32), size: 3 };
        assert!(good.check().is_ok());
        for file in ["../escaped.txt", "/tmp/x", "a/b", ".hidden", "", "a\\b", "x\n"] {
            let bad = ArtifactRecord { file: file.into(), ..good.clone() };
            assert!(bad.check().unwrap_err().contains("plain file name"), "{file:?}");
        }
        for sha in ["../../etc/passwd", &"AB".repeat(32), &"ab".repeat(31), &"zz".repeat(32)] {
            let bad = ArtifactRecord { sha256: sha.to_string(), ..good.clone() };
            assert!(bad.check().unwrap_err().contains("64 lower-case hex"), "{sha:?}");
        }
    }
}
