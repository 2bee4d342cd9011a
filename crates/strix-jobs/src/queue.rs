//! The queue: its stream, consumer, state bucket and log stream, and what clients do with
//! them (submit, look, cancel, wait).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::state::{Counts, JobEnd, JobRecord, now};
use crate::task::{job_key, task_key};
use crate::{JobError, JobId, JobState, QueueSettings, Status, Task, TaskState};

/// A connection to the queue, with everything it uses made if missing.
#[derive(Clone)]
pub struct Queue {
    pub(crate) js: jetstream::Context,
    pub(crate) consumer: consumer::PullConsumer,
    pub(crate) kv: kv::Store,
    /// The bucket's stream, for counting done markers by subject.
    bucket_stream: stream::Stream,
    pub(crate) settings: QueueSettings,
    /// Attempts before a task is given up (`max_deliver`).
    pub(crate) attempts: i64,
}

/// A job to submit: its kind, what it is (shown by `jobs show`) and one spec per task.
pub struct Submission {
    pub kind: String,
    pub spec: Value,
    pub tasks: Vec<Value>,
    pub submitted_by: String,
}

/// How long a client waits for a cluster that is electing its leaders.
fn settle_time(settings: &QueueSettings) -> Duration {
    Duration::from_millis(settings.connect_timeout_ms.max(1000) * 6)
}

/// Make (or find) the task stream, the log stream, the state bucket and the workers' consumer.
async fn open(
    js: &jetstream::Context,
    settings: &QueueSettings,
) -> Result<(consumer::PullConsumer, kv::Store, stream::Stream), JobError> {
    let tasks = js
        .get_or_create_stream(stream::Config {
            name: settings.stream.clone(),
            subjects: vec![format!("{}.>", settings.subject)],
            retention: stream::RetentionPolicy::WorkQueue,
            num_replicas: settings.replicas,
            max_message_size: i32::try_from(settings.max_message_bytes).unwrap_or(i32::MAX),
            // A resubmitted task (same message id) within this window is not queued twice.
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| JobError::js(format!("cannot open the task stream {}", settings.stream), e))?;
    js.get_or_create_stream(stream::Config {
        name: settings.log_stream.clone(),
        subjects: vec![format!("{}-log.>", settings.subject)],
        num_replicas: settings.replicas,
        max_age: Duration::from_secs(14 * 24 * 3600),
        ..Default::default()
    })
    .await
    .map_err(|e| JobError::js(format!("cannot open the log stream {}", settings.log_stream), e))?;
    // The bucket's stream made as ADR-8 defines a KV bucket: async-nats's create_key_value
    // first reads account info in a shape nats-server 2.9 (Debian's) does not send.
    let bucket_stream = js
        .get_or_create_stream(stream::Config {
            name: format!("KV_{}", settings.state_bucket),
            subjects: vec![format!("$KV.{}.>", settings.state_bucket)],
            max_messages_per_subject: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: settings.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| JobError::js(format!("cannot open the state bucket {}", settings.state_bucket), e))?;
    let kv = js
        .get_key_value(&settings.state_bucket)
        .await
        .map_err(|e| JobError::js(format!("cannot open the state bucket {}", settings.state_bucket), e))?;
    let consumer = tasks
        .get_or_create_consumer(
            &settings.consumer,
            consumer::pull::Config {
                durable_name: Some(settings.consumer.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_millis(settings.ack_wait_ms),
                // Unlimited: workers count attempts themselves (deliveries less hand-backs,
                // see `worker::admit`) and record the give-up; JetStream would only drop the
                // message, and would count a hand-back at shutdown as a failure.
                max_deliver: -1,
                filter_subject: format!("{}.>", settings.subject),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| JobError::js(format!("cannot open the consumer {}", settings.consumer), e))?;
    Ok((consumer, kv, bucket_stream))
}

impl Queue {
    /// Connect, and make the streams, bucket and consumer if they are not there.
    pub async fn connect(settings: &QueueSettings) -> Result<Queue, JobError> {
        settings.validate()?;
        let servers: Vec<String> = settings.url.split(',').map(|s| s.trim().to_string()).collect();
        let client = async_nats::ConnectOptions::new()
            .name("strix")
            .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .max_reconnects(None)
            .connect(servers.as_slice());
        let client = tokio::time::timeout(Duration::from_millis(settings.connect_timeout_ms), client)
            .await
            .map_err(|_| {
                JobError::Settings(format!(
                    "cannot reach the queue at {} (no answer within {} ms)",
                    settings.url, settings.connect_timeout_ms
                ))
            })?
            .map_err(|source| JobError::Connect { url: settings.url.clone(), source })?;
        let js = jetstream::new(client);
        // A cluster electing a stream leader (just started, or a server just went) answers
        // JetStream requests with timeouts for a few seconds: wait that out.
        let deadline = tokio::time::Instant::now() + settle_time(settings);
        loop {
            match open(&js, settings).await {
                Ok((consumer, kv, bucket_stream)) => {
                    // A consumer made by an earlier Strix holds a limit of its own (one spare
                    // delivery past max_deliver): keep under it.
                    let made = consumer.cached_info().config.max_deliver;
                    let attempts = if made > 1 { (made - 1).min(settings.max_deliver) } else { settings.max_deliver };
                    return Ok(Queue { js, consumer, kv, bucket_stream, settings: settings.clone(), attempts });
                }
                Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                    tracing::info!("the queue is not ready yet: {}", strix_core::error_chain(&e));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Queue a job: its record first (so a worker never meets a task of an unknown job), then
    /// each task's state, then the messages.
    pub async fn submit(&self, job: Submission) -> Result<JobState, JobError> {
        self.submit_as(JobId::new(), job).await
    }

    /// [`Queue::submit`] under an id taken beforehand (a job whose files are put in place
    /// under its id before it is queued). A fresh [`JobId::new`] each time: an id already
    /// used is refused.
    pub async fn submit_as(&self, id: JobId, job: Submission) -> Result<JobState, JobError> {
        if self.get::<JobRecord>(&job_key(&id)).await?.is_some() {
            return Err(JobError::Refused { id: id.to_string(), reason: "a job with this id exists".into() });
        }
        let tasks = u32::try_from(job.tasks.len())
            .map_err(|_| JobError::Refused { id: id.to_string(), reason: "too many tasks".into() })?;
        // No worker would ever finish (and wrap up) a job without tasks.
        if tasks == 0 {
            return Err(JobError::Refused { id: id.to_string(), reason: "a job needs at least one task".into() });
        }
        let record = JobRecord {
            id: id.clone(),
            kind: job.kind.clone(),
            spec: job.spec,
            tasks,
            submitted_by: job.submitted_by,
            submitted_at: now(),
        };
        let messages: Vec<(u32, Vec<u8>)> = job
            .tasks
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let task = Task { job: id.clone(), index: i as u32, kind: job.kind.clone(), spec };
                serde_json::to_vec(&task).map(|bytes| (i as u32, bytes))
            })
            .collect::<Result<_, _>>()
            .map_err(|source| JobError::State { key: job_key(&id), source })?;
        if let Some((i, bytes)) = messages.iter().find(|(_, b)| b.len() > self.settings.max_message_bytes) {
            return Err(JobError::Refused {
                id: id.to_string(),
                reason: format!(
                    "task {i} is {} bytes (at most {}): make its shards smaller",
                    bytes.len(),
                    self.settings.max_message_bytes
                ),
            });
        }
        self.put(&job_key(&id), &record).await?;
        for (i, _) in &messages {
            self.put(&task_key(&id, *i), &TaskState::queued(&id, *i)).await?;
        }
        let subject = format!("{}.{}", self.settings.subject, job.kind);
        for (i, bytes) in messages {
            if let Err(e) = self.publish_task(&subject, &id, i, bytes).await {
                // The tasks not queued would never run and the job would never end: they fail
                // now, with why (as far as the queue still takes writes).
                let why = format!("not queued: {}", strix_core::error_chain(&e));
                for j in i..tasks {
                    let _ = self.finish_task(&id, j, Status::Failed, None, Some(why.clone())).await;
                }
                return Err(e);
            }
        }
        self.job(&id).await
    }

    async fn publish_task(&self, subject: &str, id: &JobId, i: u32, bytes: Vec<u8>) -> Result<(), JobError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, task_key(id, i).as_str());
        let ack = self
            .js
            .publish_with_headers(subject.to_string(), headers, Bytes::from(bytes))
            .await
            .map_err(|e| JobError::js(format!("cannot queue task {i} of {id}"), e))?;
        ack.await.map_err(|e| JobError::js(format!("the queue did not take task {i} of {id}"), e))?;
        Ok(())
    }

    /// A job as it stands: its record, its tasks' done markers (one stream-info request), its
    /// cancel and end records.
    pub async fn job(&self, id: &JobId) -> Result<JobState, JobError> {
        let record: JobRecord = self.get(&job_key(id)).await?.ok_or_else(|| JobError::NoJob(id.to_string()))?;
        let counts = self.counts(id).await?;
        let cancel = self.get::<f64>(&format!("cancel.{id}")).await?.is_some();
        let started = self.get::<f64>(&format!("started.{id}")).await?;
        let end: Option<JobEnd> = self.get(&format!("end.{id}")).await?;
        // The first failed task's error, read only when there is one.
        let first_failed = counts.0.iter().find(|(_, s)| **s == Status::Failed).map(|(i, _)| *i);
        let first_error = match first_failed {
            Some(i) => self.get::<TaskState>(&task_key(id, i)).await?.and_then(|t| t.error),
            None => None,
        };
        Ok(JobState::assemble(record, &counts, cancel, started, end, first_error))
    }

    /// Final tasks of job `id`, from the subjects of their done markers.
    async fn counts(&self, id: &JobId) -> Result<Counts, JobError> {
        let prefix = format!("$KV.{}.done.{id}.", self.settings.state_bucket);
        let mut subjects = self
            .bucket_stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(|e| JobError::js(format!("cannot count the tasks of {id}"), e))?;
        let mut counts = Counts::default();
        while let Some(entry) = subjects.next().await {
            let (subject, _) = entry.map_err(|e| JobError::js(format!("cannot count the tasks of {id}"), e))?;
            let rest = subject.strip_prefix(&prefix).unwrap_or_default();
            let mut parts = rest.splitn(2, '.');
            let (Some(index), Some(status)) = (parts.next().and_then(|i| i.parse().ok()), parts.next()) else {
                continue;
            };
            if let Ok(status) = serde_json::from_value::<Status>(Value::String(status.to_string())) {
                counts.mark(index, status);
            }
        }
        Ok(counts)
    }

    /// Every task's state, in order.
    pub async fn tasks(&self, job: &JobState) -> Result<Vec<TaskState>, JobError> {
        let mut out = Vec::with_capacity(job.tasks as usize);
        for i in 0..job.tasks {
            let key = task_key(&job.id, i);
            out.push(self.get(&key).await?.unwrap_or_else(|| TaskState::queued(&job.id, i)));
        }
        Ok(out)
    }

    /// Every job the bucket knows, oldest first.
    pub async fn jobs(&self) -> Result<Vec<JobState>, JobError> {
        let mut keys = self.kv.keys().await.map_err(|e| JobError::js("cannot list jobs", e))?;
        let mut ids = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| JobError::js("cannot list jobs", e))?;
            if let Some(id) = key.strip_prefix("job.").and_then(|s| s.parse::<JobId>().ok()) {
                ids.push(id);
            }
        }
        ids.sort();
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            jobs.push(self.job(&id).await?);
        }
        Ok(jobs)
    }

    /// Ask a job to stop: no task starts after this. Tasks still queued are cancelled now;
    /// running ones are told at their next progress tick.
    pub async fn cancel(&self, id: &JobId) -> Result<JobState, JobError> {
        let job = self.job(id).await?;
        if job.status.is_final() {
            return Ok(job);
        }
        self.put(&format!("cancel.{id}"), &now()).await?;
        for i in 0..job.tasks {
            let queued = self.get::<TaskState>(&task_key(id, i)).await?.is_some_and(|t| t.status == Status::Queued);
            if queued {
                self.finish_task(id, i, Status::Cancelled, None, None).await?;
            }
        }
        self.job(id).await
    }

    /// Whether the job was asked to stop.
    pub(crate) async fn cancel_requested(&self, id: &JobId) -> Result<bool, JobError> {
        Ok(self.get::<f64>(&format!("cancel.{id}")).await?.is_some())
    }

    /// Note that a task of job `id` started (the first note stands).
    pub(crate) async fn started(&self, id: &JobId) -> Result<(), JobError> {
        let key = format!("started.{id}");
        if self.get::<f64>(&key).await?.is_none() {
            self.put(&key, &now()).await?;
        }
        Ok(())
    }

    /// Record the end of a job whose tasks are all final (what `job_finished` made).
    pub(crate) async fn end(&self, id: &JobId, result: Option<Value>, error: Option<String>) -> Result<(), JobError> {
        self.put(&format!("end.{id}"), &JobEnd { finished_at: now(), result, error }).await
    }

    /// Poll a job until it is finished and wrapped up, calling `seen` on each change.
    /// A cluster electing a leader is waited out (as [`Queue::connect`] does).
    pub async fn wait(&self, id: &JobId, mut seen: impl FnMut(&JobState)) -> Result<JobState, JobError> {
        let mut last = None;
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            let job = match self.job(id).await {
                Ok(job) => job,
                Err(e) if e.is_transient() => {
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= settle_time(&self.settings) {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            failing_since = None;
            if last.as_ref() != Some(&job) {
                seen(&job);
            }
            if job.status.is_final() && job.wrapped_up {
                return Ok(job);
            }
            last = Some(job);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Append a line to a job's log.
    pub async fn log(&self, id: &JobId, line: &str) -> Result<(), JobError> {
        let subject = format!("{}-log.{id}", self.settings.subject);
        let ack = self
            .js
            .publish(subject, Bytes::from(line.to_string()))
            .await
            .map_err(|e| JobError::js("cannot write the job log", e))?;
        ack.await.map_err(|e| JobError::js("cannot write the job log", e))?;
        Ok(())
    }

    /// A job's log lines so far, each through `line`; with `follow`, go on until the job
    /// finishes.
    pub async fn logs(&self, id: &JobId, follow: bool, mut line: impl FnMut(&str)) -> Result<(), JobError> {
        let stream = self
            .js
            .get_stream(&self.settings.log_stream)
            .await
            .map_err(|e| JobError::js("cannot open the log stream", e))?;
        let reader = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("{}-log.{id}", self.settings.subject),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| JobError::js("cannot read the job log", e))?;
        let mut messages = reader.messages().await.map_err(|e| JobError::js("cannot read the job log", e))?;
        loop {
            let next = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
            match next {
                Ok(Some(Ok(m))) => line(&String::from_utf8_lossy(&m.payload)),
                Ok(Some(Err(e))) => return Err(JobError::js("cannot read the job log", e)),
                Ok(None) => return Ok(()),
                // Quiet for half a second: everything so far has arrived.
                Err(_) if !follow || self.job(id).await?.status.is_final() => return Ok(()),
                Err(_) => {}
            }
        }
    }

    /// Task `index` of `job` reached a final `status` (unless its record already is final):
    /// its record, then its done marker; both writes are idempotent, so a task delivered again
    /// after a lost write is recorded then. The job as it is after.
    pub(crate) async fn finish_task(
        &self,
        job: &JobId,
        index: u32,
        status: Status,
        result: Option<Value>,
        error: Option<String>,
    ) -> Result<JobState, JobError> {
        let key = task_key(job, index);
        let mut task: TaskState = self.get(&key).await?.unwrap_or_else(|| TaskState::queued(job, index));
        if !task.status.is_final() {
            task.status = status;
            task.finished_at = Some(now());
            task.result = result;
            if error.is_some() {
                task.error = error;
            }
            self.put(&key, &task).await?;
        }
        self.put(&format!("done.{job}.{index}.{}", task.status), &()).await?;
        self.job(job).await
    }

    /// Change task `index`'s record (only the worker holding its message writes it).
    pub(crate) async fn change_task(
        &self,
        job: &JobId,
        index: u32,
        change: impl FnOnce(&mut TaskState),
    ) -> Result<TaskState, JobError> {
        let key = task_key(job, index);
        let mut task: TaskState = self.get(&key).await?.unwrap_or_else(|| TaskState::queued(job, index));
        change(&mut task);
        self.put(&key, &task).await?;
        Ok(task)
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, JobError> {
        let Some(bytes) = self.kv.get(key).await.map_err(|e| JobError::js(format!("cannot read {key}"), e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|source| JobError::State { key: key.into(), source })
    }

    pub(crate) async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), JobError> {
        let bytes = serde_json::to_vec(value).map_err(|source| JobError::State { key: key.into(), source })?;
        self.kv.put(key, bytes.into()).await.map_err(|e| JobError::js(format!("cannot write {key}"), e))?;
        Ok(())
    }
}
