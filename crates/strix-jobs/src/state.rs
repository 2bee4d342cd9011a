//! What jobs and tasks are doing, as stored in the state bucket. The transitions are plain
//! functions on these values; the queue applies them by compare-and-set.

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

/// A job: its tasks counted by outcome.
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
    /// Deliveries so far (1 on the first).
    pub attempts: u32,
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
            worker: None,
            progress: None,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
        }
    }
}

impl JobState {
    /// Count a task that reached `status` (final). The job is finished when every task is:
    /// failed if any failed, else cancelled if any was, else succeeded.
    pub(crate) fn count(&mut self, status: Status, error: Option<&str>) {
        match status {
            Status::Succeeded => self.succeeded += 1,
            Status::Failed => {
                self.failed += 1;
                if self.error.is_none() {
                    self.error = error.map(str::to_string);
                }
            }
            Status::Cancelled => self.cancelled += 1,
            Status::Queued | Status::Running => return,
        }
        self.settle();
    }

    /// A task started: the job runs (unless already finished).
    pub(crate) fn start(&mut self) {
        if self.status == Status::Queued {
            self.status = Status::Running;
            self.started_at = Some(now());
        }
    }

    fn settle(&mut self) {
        if self.succeeded + self.failed + self.cancelled < self.tasks {
            return;
        }
        self.status = if self.failed > 0 {
            Status::Failed
        } else if self.cancelled > 0 {
            Status::Cancelled
        } else {
            Status::Succeeded
        };
        self.finished_at.get_or_insert_with(now);
    }

    /// Tasks finished, of all.
    pub fn finished_tasks(&self) -> u32 {
        self.succeeded + self.failed + self.cancelled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(tasks: u32) -> JobState {
        JobState {
            id: JobId::new(),
            kind: "batch".into(),
            status: Status::Queued,
            spec: Value::Null,
            tasks,
            succeeded: 0,
            failed: 0,
            cancelled: 0,
            cancel_requested: false,
            submitted_by: "me".into(),
            submitted_at: 0.0,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
        }
    }

    #[test]
    fn a_job_finishes_when_every_task_has_and_a_failure_wins() {
        let mut j = job(3);
        j.start();
        assert_eq!(j.status, Status::Running);
        j.count(Status::Succeeded, None);
        j.count(Status::Cancelled, None);
        assert_eq!((j.status, j.finished_at), (Status::Running, None));
        j.count(Status::Failed, Some("cannot decode a.jpg"));
        assert_eq!(j.status, Status::Failed);
        assert_eq!(j.error.as_deref(), Some("cannot decode a.jpg"));
        assert!(j.finished_at.is_some());

        let mut j = job(2);
        j.count(Status::Succeeded, None);
        j.count(Status::Cancelled, None);
        assert_eq!(j.status, Status::Cancelled);
        let mut j = job(1);
        j.count(Status::Running, None);
        assert_eq!(j.status, Status::Queued);
        j.count(Status::Succeeded, None);
        assert_eq!(j.status, Status::Succeeded);
        let text = serde_json::to_string(&j).unwrap();
        assert_eq!(serde_json::from_str::<JobState>(&text).unwrap(), j);
    }
}
