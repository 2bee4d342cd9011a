//! One task message: the unit a worker takes, runs and acks.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::JobId;

/// Task `index` of job `job`: a `kind` the worker knows and its `spec` (the kind's own JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub job: JobId,
    pub index: u32,
    pub kind: String,
    pub spec: Value,
}

/// Why a message on the queue is not a task. A worker refuses it (terminated, never
/// redelivered) and goes on.
#[derive(Debug, thiserror::Error)]
pub enum BadTask {
    #[error("a message of {bytes} bytes (at most {limit})")]
    TooLarge { bytes: usize, limit: usize },
    #[error("a message that is not a task (JSON with job, index, kind, spec)")]
    NotATask(#[source] serde_json::Error),
}

impl Task {
    /// Read a message's payload, refusing oversized or malformed ones by name.
    pub fn parse(payload: &[u8], limit: usize) -> Result<Task, BadTask> {
        if payload.len() > limit {
            return Err(BadTask::TooLarge { bytes: payload.len(), limit });
        }
        serde_json::from_slice(payload).map_err(BadTask::NotATask)
    }

    /// Its key in the state bucket (and its message id, so a resubmission is not a duplicate).
    pub fn key(&self) -> String {
        task_key(&self.job, self.index)
    }
}

pub(crate) fn task_key(job: &JobId, index: u32) -> String {
    format!("task.{job}.{index}")
}

pub(crate) fn job_key(job: &JobId) -> String {
    format!("job.{job}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_and_oversized_messages_are_named() {
        let good = Task { job: JobId::new(), index: 3, kind: "batch".into(), spec: serde_json::json!({"a": 1}) };
        let bytes = serde_json::to_vec(&good).unwrap();
        assert_eq!(Task::parse(&bytes, 4096).unwrap(), good);
        let err = Task::parse(&bytes, 8).unwrap_err().to_string();
        assert!(err.contains("at most 8"), "{err}");
        for bad in [
            &b"not json"[..],
            b"{}",
            b"{\"job\":\"j1\",\"index\":0,\"kind\":\"x\",\"spec\":0,\"extra\":1}",
            b"{\"job\":\"j1.>\",\"index\":0,\"kind\":\"x\",\"spec\":0}",
        ] {
            let err = Task::parse(bad, 4096).unwrap_err();
            assert!(matches!(err, BadTask::NotATask(_)), "{err}");
        }
        assert_eq!(good.key(), format!("task.{}.3", good.job));
    }
}
