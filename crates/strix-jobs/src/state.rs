//! What jobs and tasks are doing, as stored in the state bucket, and a job put together
//! from its records.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::JobId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Status {
    /// Succeeded, failed or cancelled: nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        };
        f.write_str(s)
    }
}

/// A job as clients see it, put together from records that each have one writer (see
/// [`crate::Queue::job`]): nothing in the bucket is read, changed and written back by two
/// workers, because a clustered JetStream (2.9, nats-server issue 4320) can accept two
/// compare-and-set writes made against the same revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobState {
    pub id: JobId,
    pub kind: String,
    pub status: Status,
    /// What the job is, in the submitter's words (the kind's own JSON: model, input, output).
    pub spec: Value,
    pub tasks: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
    pub cancel_requested: bool,
    pub submitted_by: String,
    /// Seconds since 1970.
    pub submitted_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    /// What the job made, once finished (the kind's JSON: a manifest's path and figures).
    pub result: Option<Value>,
    /// The first task error, for a failed job.
    pub error: Option<String>,
    /// The handler's end-of-job step ran (once every task is final).
    pub wrapped_up: bool,
}

/// What the submitter writes once: `job.{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobRecord {
    pub id: JobId,
    pub kind: String,
    pub spec: Value,
    pub tasks: u32,
    pub submitted_by: String,
    pub submitted_at: f64,
}

/// What the worker that ends a job writes: `end.{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobEnd {
    pub finished_at: f64,
    pub result: Option<Value>,
    pub error: Option<String>,
}

/// Final tasks by index, from their `done.{id}.{index}.{status}` markers. A task marked twice
/// (run again after a lost ack) counts once: succeeded over failed over cancelled.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Counts(pub std::collections::BTreeMap<u32, Status>);

impl Counts {
    pub fn mark(&mut self, index: u32, status: Status) {
        let rank = |s: Status| match s {
            Status::Succeeded => 3,
            Status::Failed => 2,
            _ => 1,
        };
        let slot = self.0.entry(index).or_insert(status);
        if rank(status) > rank(*slot) {
            *slot = status;
        }
    }

    fn of(&self, status: Status) -> u32 {
        self.0.values().filter(|s| **s == status).count() as u32
    }
}

impl JobState {
    /// The job from its records: finished when every task is final (failed if any failed,
    /// else cancelled if any was, else succeeded).
    pub(crate) fn assemble(
        record: JobRecord,
        counts: &Counts,
        cancel_requested: bool,
        started_at: Option<f64>,
        end: Option<JobEnd>,
        first_error: Option<String>,
    ) -> JobState {
        let (succeeded, failed, cancelled) =
            (counts.of(Status::Succeeded), counts.of(Status::Failed), counts.of(Status::Cancelled));
        let status = if succeeded + failed + cancelled >= record.tasks {
            if failed > 0 {
                Status::Failed
            } else if cancelled > 0 {
                Status::Cancelled
            } else {
                Status::Succeeded
            }
        } else if started_at.is_some() || succeeded + failed + cancelled > 0 {
            Status::Running
        } else {
            Status::Queued
        };
        let wrapped_up = end.is_some();
        let (finished_at, result, end_error) = match end {
            Some(e) => (Some(e.finished_at), e.result, e.error),
            None => (None, None, None),
        };
        JobState {
            id: record.id,
            kind: record.kind,
            status,
            spec: record.spec,
            tasks: record.tasks,
            succeeded,
            failed,
            cancelled,
            cancel_requested,
            submitted_by: record.submitted_by,
            submitted_at: record.submitted_at,
            started_at,
            finished_at,
            result,
            error: first_error.or(end_error),
            wrapped_up,
        }
    }

    /// Tasks finished, of all.
    pub fn finished_tasks(&self) -> u32 {
        self.succeeded + self.failed + self.cancelled
    }
}

/// How far a running task is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskProgress {
    pub done: u64,
    pub total: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskState {
    pub job: JobId,
    pub index: u32,
    pub status: Status,
    /// Attempts so far (1 on the first): deliveries less hand-backs.
    pub attempts: u32,
    /// Times a stopping worker handed it back (not counted as attempts).
    #[serde(default)]
    pub handed_back: u32,
    pub worker: Option<String>,
    pub progress: Option<TaskProgress>,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub result: Option<Value>,
    /// The last attempt's error.
    pub error: Option<String>,
}

pub(crate) fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl TaskState {
    pub(crate) fn queued(job: &JobId, index: u32) -> TaskState {
        TaskState {
            job: job.clone(),
            index,
            status: Status::Queued,
            attempts: 0,
            handed_back: 0,
            worker: None,
            progress: None,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tasks: u32) -> JobRecord {
        JobRecord {
            id: JobId::new(),
            kind: "batch".into(),
            spec: Value::Null,
            tasks,
            submitted_by: "me".into(),
            submitted_at: 0.0,
        }
    }

    #[test]
    fn a_job_finishes_when_every_task_has_and_a_failure_wins() {
        let mut c = Counts::default();
        let job =
            |c: &Counts, started: bool| JobState::assemble(record(3), c, false, started.then_some(1.0), None, None);
        assert_eq!(job(&c, false).status, Status::Queued);
        assert_eq!(job(&c, true).status, Status::Running);
        c.mark(0, Status::Succeeded);
        c.mark(0, Status::Succeeded);
        c.mark(1, Status::Cancelled);
        assert_eq!((job(&c, true).status, job(&c, true).succeeded), (Status::Running, 1), "counted twice");
        c.mark(2, Status::Failed);
        let j = job(&c, true);
        assert_eq!((j.status, j.finished_tasks(), j.wrapped_up), (Status::Failed, 3, false));
        // Run again after a lost ack, and succeeded: the success stands.
        c.mark(2, Status::Succeeded);
        c.mark(2, Status::Failed);
        assert_eq!(job(&c, true).status, Status::Cancelled);
        c.mark(1, Status::Succeeded);
        let end = JobEnd { finished_at: 2.0, result: Some(Value::Bool(true)), error: None };
        let j = JobState::assemble(record(3), &c, false, Some(1.0), Some(end), None);
        assert_eq!((j.status, j.wrapped_up, j.finished_at), (Status::Succeeded, true, Some(2.0)));
        let text = serde_json::to_string(&j).unwrap();
        assert_eq!(serde_json::from_str::<JobState>(&text).unwrap(), j);
    }
}
