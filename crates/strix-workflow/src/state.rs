//! A pipeline's state folder: one record per step (`steps/<step>.json`, written whole), each
//! under the digest of what the step read and how it was set. A step whose record has the
//! same key and is done is not run again; one that is still `running` under the same key was
//! interrupted and resumes from what it left (a training run's checkpoint, a queued job).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::WorkflowError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Running,
    Done,
    /// Finished and said no (a condition not met); rerunning it unchanged says no again.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    pub key: String,
    pub status: StepStatus,
    /// What the step made (a run folder, figures, a version), or for a running step what it
    /// needs to resume.
    pub output: Value,
    /// Unix seconds of the last write.
    pub at: u64,
}

impl StepRecord {
    pub fn new(key: &str, status: StepStatus, output: Value) -> StepRecord {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        StepRecord { key: key.to_string(), status, output, at }
    }
}

/// The digest a step is cached under: sha256 over its named parts, each part's name and
/// length written before it so no two lists of parts give the same bytes.
pub fn key(parts: &[(&str, &str)]) -> String {
    let mut bytes = Vec::new();
    for (name, value) in parts {
        bytes.extend_from_slice(format!("{}:{name}={}:", name.len(), value.len()).as_bytes());
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(b'\n');
    }
    strix_core::digest::sha256_hex(&bytes)
}

/// An opened state folder; holds its lock until dropped.
pub struct State {
    dir: PathBuf,
    _lock: std::fs::File,
}

const STEPS: &str = "steps";
const LOCK: &str = "lock";

impl State {
    /// Open (creating) `dir`, refusing it while another run holds it.
    pub fn open(dir: &Path) -> Result<State, WorkflowError> {
        std::fs::create_dir_all(dir.join(STEPS)).map_err(WorkflowError::io(dir))?;
        let path = dir.join(LOCK);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(WorkflowError::io(&path))?;
        match lock.try_lock() {
            Ok(()) => Ok(State { dir: dir.to_path_buf(), _lock: lock }),
            Err(std::fs::TryLockError::WouldBlock) => Err(WorkflowError::Busy { path: dir.to_path_buf() }),
            Err(std::fs::TryLockError::Error(e)) => Err(WorkflowError::Io { path, source: e }),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, step: &str) -> PathBuf {
        self.dir.join(STEPS).join(format!("{step}.json"))
    }

    /// The step's record, if it has one. One that does not read is an error, not a reason to
    /// run the step again over what it may have made.
    pub fn record(&self, step: &str) -> Result<Option<StepRecord>, WorkflowError> {
        let path = self.path(step);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| WorkflowError::Format { path, reason: format!("{e}; delete it to run the step again") }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(WorkflowError::Io { path, source: e }),
        }
    }

    /// The step's record when it has this key.
    pub fn same(&self, step: &str, key: &str) -> Result<Option<StepRecord>, WorkflowError> {
        Ok(self.record(step)?.filter(|r| r.key == key))
    }

    pub fn write(&self, step: &str, record: &StepRecord) -> Result<(), WorkflowError> {
        let path = self.path(step);
        let text = serde_json::to_string_pretty(record)
            .map_err(|e| WorkflowError::Format { path: path.clone(), reason: e.to_string() })?;
        strix_core::fs::write_atomic(&path, text.as_bytes()).map_err(WorkflowError::io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_second_run_is_refused_while_the_first_holds_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let state = State::open(tmp.path()).unwrap();
        assert!(state.record("train").unwrap().is_none());
        let r = StepRecord::new("k1", StepStatus::Running, serde_json::json!({"run": "/r"}));
        state.write("train", &r).unwrap();
        assert_eq!(state.record("train").unwrap(), Some(r.clone()));
        assert_eq!(state.same("train", "k1").unwrap(), Some(r));
        assert_eq!(state.same("train", "k2").unwrap(), None);
        assert!(matches!(State::open(tmp.path()), Err(WorkflowError::Busy { .. })));
        drop(state);
        let state = State::open(tmp.path()).unwrap();
        std::fs::write(tmp.path().join("steps/train.json"), "{").unwrap();
        assert!(state.record("train").unwrap_err().to_string().contains("delete it to run the step again"));
    }

    #[test]
    fn keys_follow_every_part_and_its_boundaries() {
        let a = key(&[("data", "ab"), ("cfg", "c")]);
        assert_eq!(a, key(&[("data", "ab"), ("cfg", "c")]));
        assert_ne!(a, key(&[("data", "a"), ("cfg", "bc")]));
        assert_ne!(a, key(&[("data", "ab"), ("cfg", "d")]));
        assert_eq!(a.len(), 64);
    }
}
