//! Jobs that outgrow one machine, on NATS JetStream.
//!
//! A job (a batch transform, a training run, a tuning study) is split into tasks. Each task is
//! one message on a work-queue stream; workers on any machine pull them from one durable
//! consumer, one at a time, and ack each only when its work is done and recorded:
//! - a task in progress is kept alive with progress acks, so a long one is not redelivered;
//! - a worker killed mid-task never acks, so the server hands the task to another worker
//!   after the ack wait;
//! - a task that keeps failing is given up after `max_deliver` attempts, its error recorded;
//! - a worker told to stop hands its task back at once (a nak) for another to take.
//!
//! What each job and task is doing lives in a JetStream key-value bucket (status, attempts,
//! worker, progress, result, error, times). Every record there has one writer (the submitter,
//! or the worker holding a task's message), and a job's counts come from per-task done
//! markers counted by subject, never from a shared counter: a clustered JetStream can accept
//! two compare-and-set writes made against the same revision (nats-server issue 4320), and
//! the three-server test lost counts that way. Log lines go to a second stream, one subject per
//! job.
//!
//! The queue is NATS's: clustering, replication and redelivery are the server's (RAFT-replicated
//! streams with `replicas = 3`), not Strix's.

mod error;
mod id;
mod queue;
mod state;
mod task;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod worker;

pub use error::JobError;
pub use id::JobId;
pub use queue::{Queue, Submission};
pub use state::{JobState, Status, TaskProgress, TaskState};
pub use task::{BadTask, Task};
pub use worker::{Handler, TaskContext, TaskFailure, WorkerOptions, WorkerStats, work, wrap_up};

use serde::{Deserialize, Serialize};

/// Where the queue is and how it behaves. Every worker and client of one queue must agree on
/// the names; the timings are the consumer's and are set by whoever creates it first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// `nats://HOST:PORT`; several, comma-separated, for a cluster.
    pub url: String,
    /// Stream of tasks (work-queue retention: a task is gone once acked).
    pub stream: String,
    /// Tasks are published on `{subject}.{kind}`.
    pub subject: String,
    /// Key-value bucket of job and task states.
    pub state_bucket: String,
    /// Stream of log lines, on `{subject}-log.{job}`.
    pub log_stream: String,
    /// The workers' durable pull consumer.
    pub consumer: String,
    /// Copies of each stream and the bucket (3 on a three-server cluster).
    pub replicas: usize,
    /// A task not acked (nor progress-acked) within this is handed to another worker.
    pub ack_wait_ms: u64,
    /// Attempts at a task before it is given up as failed.
    pub max_deliver: i64,
    /// Largest task message; bigger ones are refused when submitted and when received.
    pub max_message_bytes: usize,
    /// How long connecting may take before the queue is reported unreachable.
    pub connect_timeout_ms: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            url: "nats://127.0.0.1:4222".into(),
            stream: "STRIX_JOBS".into(),
            subject: "strix.jobs".into(),
            state_bucket: "STRIX_JOB_STATE".into(),
            log_stream: "STRIX_JOB_LOGS".into(),
            consumer: "strix-workers".into(),
            replicas: 1,
            ack_wait_ms: 30_000,
            max_deliver: 3,
            max_message_bytes: 1 << 20,
            connect_timeout_ms: 5_000,
        }
    }
}

impl QueueSettings {
    /// The queue at `url` with the default names.
    pub fn at(url: &str) -> Self {
        QueueSettings { url: url.to_string(), ..Default::default() }
    }

    /// A readable error for settings no queue can work with.
    pub fn validate(&self) -> Result<(), JobError> {
        let bad = |what: &str| Err(JobError::Settings(what.to_string()));
        if self.url.trim().is_empty() {
            return bad("the queue URL is empty (nats://HOST:4222)");
        }
        if self.replicas == 0 || self.replicas > 5 {
            return bad("replicas must be 1 to 5");
        }
        if self.ack_wait_ms < 100 || self.max_deliver < 1 || self.max_message_bytes < 1024 {
            return bad("ack_wait_ms must be at least 100, max_deliver at least 1, max_message_bytes at least 1024");
        }
        for (what, name) in [
            ("stream", &self.stream),
            ("state_bucket", &self.state_bucket),
            ("log_stream", &self.log_stream),
            ("consumer", &self.consumer),
        ] {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(JobError::Settings(format!("{what} {name:?}: letters, digits, '_' and '-' only")));
            }
        }
        if self.subject.is_empty() || self.subject.split('.').any(|t| t.is_empty() || t.contains(['*', '>', ' '])) {
            return Err(JobError::Settings(format!(
                "subject {:?}: dot-separated tokens without wildcards",
                self.subject
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn settings_refuse_what_no_queue_can_use() {
        assert!(QueueSettings::default().validate().is_ok());
        for bad in [
            QueueSettings { url: " ".into(), ..Default::default() },
            QueueSettings { replicas: 0, ..Default::default() },
            QueueSettings { stream: "a.b".into(), ..Default::default() },
            QueueSettings { subject: "strix.>".into(), ..Default::default() },
            QueueSettings { subject: "strix..jobs".into(), ..Default::default() },
            QueueSettings { ack_wait_ms: 10, ..Default::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let err = serde_json::from_str::<QueueSettings>(r#"{"urll": "x"}"#);
        assert!(err.is_err());
    }
}
