//! The queue: its stream, consumer, state bucket and log stream, and what clients do with
//! them (submit, look, cancel, wait).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::state::now;
use crate::task::{job_key, task_key};
use crate::{JobError, JobId, JobState, QueueSettings, Status, Task, TaskState};

/// A connection to the queue, with everything it uses made if missing.
#[derive(Clone)]
pub struct Queue {
    pub(crate) js: jetstream::Context,
    pub(crate) consumer: consumer::PullConsumer,
    pub(crate) kv: kv::Store,
    pub(crate) settings: QueueSettings,
}

/// A job to submit: its kind, what it is (shown by `jobs show`) and one spec per task.
pub struct Submission {
    pub kind: String,
    pub spec: Value,
    pub tasks: Vec<Value>,
    pub submitted_by: String,
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
        js.get_or_create_stream(stream::Config {
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
                    max_deliver: settings.max_deliver,
                    filter_subject: format!("{}.>", settings.subject),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| JobError::js(format!("cannot open the consumer {}", settings.consumer), e))?;
        Ok(Queue { js, consumer, kv, settings: settings.clone() })
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Queue a job: its state first (so a worker never meets a task of an unknown job), then
    /// each task's, then the messages.
    pub async fn submit(&self, job: Submission) -> Result<JobState, JobError> {
        let id = JobId::new();
        let state = JobState {
            id: id.clone(),
            kind: job.kind.clone(),
            status: if job.tasks.is_empty() { Status::Succeeded } else { Status::Queued },
            spec: job.spec,
            tasks: u32::try_from(job.tasks.len())
                .map_err(|_| JobError::Refused { id: id.to_string(), reason: "too many tasks".into() })?,
            succeeded: 0,
            failed: 0,
            cancelled: 0,
            cancel_requested: false,
            submitted_by: job.submitted_by,
            submitted_at: now(),
            started_at: None,
            finished_at: job.tasks.is_empty().then(now),
            result: None,
            error: None,
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
        self.put(&job_key(&id), &state).await?;
        for (i, _) in &messages {
            self.put(&task_key(&id, *i), &TaskState::queued(&id, *i)).await?;
        }
        let subject = format!("{}.{}", self.settings.subject, job.kind);
        for (i, bytes) in messages {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, task_key(&id, i).as_str());
            let ack = self
                .js
                .publish_with_headers(subject.clone(), headers, Bytes::from(bytes))
                .await
                .map_err(|e| JobError::js(format!("cannot queue task {i} of {id}"), e))?;
            ack.await.map_err(|e| JobError::js(format!("the queue did not take task {i} of {id}"), e))?;
        }
        Ok(state)
    }

    /// A job's state.
    pub async fn job(&self, id: &JobId) -> Result<JobState, JobError> {
        self.get(&job_key(id)).await?.ok_or_else(|| JobError::NoJob(id.to_string()))
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
            if let Some(job) = self.get(&job_key(&id)).await? {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    /// Ask a job to stop: no task starts after this. Tasks still queued are cancelled now;
    /// running ones are told at their next progress tick.
    pub async fn cancel(&self, id: &JobId) -> Result<JobState, JobError> {
        let job = self
            .update(&job_key(id), |j: &mut JobState| {
                !j.status.is_final() && !std::mem::replace(&mut j.cancel_requested, true)
            })
            .await?;
        for i in 0..job.tasks {
            self.finish_task(id, i, Status::Cancelled, None, None, |t| t.status == Status::Queued).await?;
        }
        self.job(id).await
    }

    /// Poll a job until it is finished, calling `seen` on each change.
    pub async fn wait(&self, id: &JobId, mut seen: impl FnMut(&JobState)) -> Result<JobState, JobError> {
        let mut last = None;
        loop {
            let job = self.job(id).await?;
            if last.as_ref() != Some(&job) {
                seen(&job);
            }
            if job.status.is_final() {
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

    /// Move task `index` of `job` to a final `status` if `when` holds for it, and count it in
    /// the job once (a task redelivered after it finished is not counted again). Returns the
    /// job when this call moved the task.
    pub(crate) async fn finish_task(
        &self,
        job: &JobId,
        index: u32,
        status: Status,
        result: Option<Value>,
        error: Option<String>,
        when: impl Fn(&TaskState) -> bool,
    ) -> Result<Option<JobState>, JobError> {
        let mut moved = false;
        self.update(&task_key(job, index), |t: &mut TaskState| {
            moved = !t.status.is_final() && when(t);
            if moved {
                t.status = status;
                t.finished_at = Some(now());
                t.result = result.clone();
                if error.is_some() {
                    t.error = error.clone();
                }
            }
            moved
        })
        .await?;
        if !moved {
            return Ok(None);
        }
        let job = self
            .update(&job_key(job), |j: &mut JobState| {
                j.count(status, error.as_deref());
                true
            })
            .await?;
        Ok(Some(job))
    }

    /// Change the value at `key` with `change` (which says whether it changed anything),
    /// retrying when another writer got there first.
    pub(crate) async fn update<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        mut change: impl FnMut(&mut T) -> bool,
    ) -> Result<T, JobError> {
        loop {
            let entry = self.kv.entry(key).await.map_err(|e| JobError::js(format!("cannot read {key}"), e))?;
            let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
                return Err(JobError::NoJob(key.to_string()));
            };
            let mut value: T =
                serde_json::from_slice(&entry.value).map_err(|source| JobError::State { key: key.into(), source })?;
            if !change(&mut value) {
                return Ok(value);
            }
            let bytes = serde_json::to_vec(&value).map_err(|source| JobError::State { key: key.into(), source })?;
            match self.kv.update(key, bytes.into(), entry.revision).await {
                Ok(_) => return Ok(value),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(JobError::js(format!("cannot write {key}"), e)),
            }
        }
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, JobError> {
        let Some(bytes) = self.kv.get(key).await.map_err(|e| JobError::js(format!("cannot read {key}"), e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|source| JobError::State { key: key.into(), source })
    }

    async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), JobError> {
        let bytes = serde_json::to_vec(value).map_err(|source| JobError::State { key: key.into(), source })?;
        self.kv.put(key, bytes.into()).await.map_err(|e| JobError::js(format!("cannot write {key}"), e))?;
        Ok(())
    }
}
