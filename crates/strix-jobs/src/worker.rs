//! A worker: takes tasks one at a time per slot, runs them on a blocking thread, keeps them
//! alive with progress acks, and acks, retries or gives up on each.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::watch;

use crate::state::now;
use crate::{JobError, JobState, Queue, Status, Task, TaskProgress, TaskState};

/// What a worker runs. Called on a blocking thread; long work checks
/// [`TaskContext::stopped`] between units and returns [`TaskFailure::Interrupted`].
pub trait Handler: Send + Sync + 'static {
    /// Kinds this worker runs (others are refused and given up).
    fn kinds(&self) -> Vec<String>;
    /// Do `task`; its result is stored with the task.
    fn run(&self, task: &Task, ctx: &TaskContext) -> Result<Value, TaskFailure>;
    /// Every task of `job` has finished (called once, by the worker that finished the last),
    /// with the tasks' final states; what it returns is stored as the job's result.
    fn job_finished(&self, _job: &JobState, _tasks: &[TaskState]) -> Result<Option<Value>, String> {
        Ok(None)
    }
}

/// Why a task did not finish.
#[derive(Debug)]
pub enum TaskFailure {
    /// It failed; tried again until `max_deliver`, then given up with this error.
    Failed(String),
    /// It was told to stop (shutdown or cancel) and left nothing half-done.
    Interrupted,
}

/// A running task's line to its worker: stop requests in, progress and log lines out.
#[derive(Clone, Default)]
pub struct TaskContext {
    stop: Arc<AtomicBool>,
    progress: Arc<Mutex<Option<TaskProgress>>>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl TaskContext {
    /// Whether the task should stop now (the worker is shutting down or the job was cancelled).
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn progress(&self, done: u64, total: u64) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(TaskProgress { done, total });
    }

    /// A line for the job's log (`strix jobs logs`).
    pub fn log(&self, line: impl Into<String>) {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).push(line.into());
    }

    fn take_lines(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn current(&self) -> Option<TaskProgress> {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Shown in task states and logs.
    pub name: String,
    /// Tasks run at once.
    pub slots: usize,
    /// Stop after this many tasks (tests, one-shot workers); `None`: until shutdown.
    pub max_tasks: Option<u64>,
}

/// What a worker did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerStats {
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    pub handed_back: u64,
    pub cancelled: u64,
    /// Messages that were not tasks (malformed, oversized, unknown kind or job).
    pub refused: u64,
    /// Tasks delivered again after they were done (an ack lost), acked without running.
    pub again: u64,
}

/// Run `handler` on the queue's tasks until `shutdown` turns true (or `max_tasks`); a task
/// running then is handed back for another worker.
pub async fn work(
    queue: &Queue,
    handler: Arc<dyn Handler>,
    options: &WorkerOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<WorkerStats, JobError> {
    let stats = Arc::new(Mutex::new(WorkerStats::default()));
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..options.slots.max(1) {
        let (queue, handler, stats, shutdown) = (queue.clone(), handler.clone(), stats.clone(), shutdown.clone());
        let name = if options.slots > 1 { format!("{}/{slot}", options.name) } else { options.name.clone() };
        let max_tasks = options.max_tasks;
        slots.spawn(async move { run_slot(&queue, handler, &name, max_tasks, shutdown, &stats).await });
    }
    let mut first_error = None;
    while let Some(done) = slots.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(JobError::js("a worker slot panicked", e))),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(stats.lock().unwrap_or_else(|e| e.into_inner()).clone()),
    }
}

async fn run_slot(
    queue: &Queue,
    handler: Arc<dyn Handler>,
    name: &str,
    max_tasks: Option<u64>,
    mut shutdown: watch::Receiver<bool>,
    stats: &Mutex<WorkerStats>,
) -> Result<(), JobError> {
    let mut taken = 0u64;
    while !*shutdown.borrow() && max_tasks.is_none_or(|m| taken < m) {
        // Trouble reaching the queue (a server restarting, a leader election) passes: the
        // client reconnects, and a task not acked is delivered again.
        let fetched = queue.consumer.fetch().max_messages(1).expires(Duration::from_secs(1)).messages().await;
        let mut batch = match fetched {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("asking the queue for a task: {}", strix_core::error_chain(&e));
                pause(&mut shutdown).await;
                continue;
            }
        };
        let message = tokio::select! {
            m = batch.next() => m,
            _ = shutdown.changed() => break,
        };
        let message = match message {
            // Expired without a task.
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::warn!("fetching a task: {e}");
                pause(&mut shutdown).await;
                continue;
            }
        };
        taken += 1;
        match take(queue, &handler, name, message, shutdown.clone()).await {
            Ok(outcome) => count(stats, outcome),
            Err(e) => {
                // Not acked: the queue delivers it again once it can be recorded.
                tracing::warn!("a task could not be recorded: {}", strix_core::error_chain(&e));
                pause(&mut shutdown).await;
            }
        }
    }
    Ok(())
}

/// Half a second, or until shutdown.
async fn pause(shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        _ = shutdown.changed() => {}
    }
}

/// What became of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
    Retried,
    HandedBack,
    Cancelled,
    Refused,
    /// Delivered again after it was done (its ack was lost).
    Again,
}

fn count(stats: &Mutex<WorkerStats>, outcome: Outcome) {
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
    let n = match outcome {
        Outcome::Succeeded => &mut s.succeeded,
        Outcome::Failed => &mut s.failed,
        Outcome::Retried => &mut s.retried,
        Outcome::HandedBack => &mut s.handed_back,
        Outcome::Cancelled => &mut s.cancelled,
        Outcome::Refused => &mut s.refused,
        Outcome::Again => &mut s.again,
    };
    *n += 1;
}

async fn ack(message: &Message, kind: AckKind) {
    // A lost ack only means a redelivery, which every step below tolerates.
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!("acknowledging a task: {e}");
    }
}

/// Check, run and settle one message.
async fn take(
    queue: &Queue,
    handler: &Arc<dyn Handler>,
    worker: &str,
    message: Message,
    shutdown: watch::Receiver<bool>,
) -> Result<Outcome, JobError> {
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1).max(1);
    let (task, attempt) = match admit(queue, handler, &message, delivered).await? {
        Admitted::Run(task, attempt) => (task, attempt),
        Admitted::Done(outcome, kind) => {
            ack(&message, kind).await;
            return Ok(outcome);
        }
    };
    queue
        .change_task(&task.job, task.index, |t| {
            t.status = Status::Running;
            t.attempts = u32::try_from(attempt).unwrap_or(u32::MAX);
            t.worker = Some(worker.to_string());
            t.started_at = Some(now());
        })
        .await?;
    // A cancel that came between the check in `admit` and the record above: the task must
    // not start after it.
    if queue.cancel_requested(&task.job).await? {
        settle(queue, handler, &task, Status::Cancelled, None, None).await?;
        ack(&message, AckKind::Ack).await;
        return Ok(Outcome::Cancelled);
    }
    queue.started(&task.job).await?;
    let _ = queue.log(&task.job, &format!("{worker}: task {} started (attempt {attempt})", task.index)).await;
    let ctx = TaskContext::default();
    let result = run_alive(queue, handler, &task, &message, &ctx, shutdown).await;
    flush_log(queue, &task, &ctx).await;
    conclude(queue, handler, worker, &task, &message, attempt, result).await
}

/// What to do with a message before running anything.
enum Admitted {
    /// Run it: this is its `attempt`-th (deliveries less hand-backs).
    Run(Task, i64),
    /// Settled without running: ack it so.
    Done(Outcome, AckKind),
}

/// Refuse what is not a task of a known job and kind; settle what was cancelled or is done
/// already (delivered again after a lost ack: its record or marker may have been lost too), and
/// give up a task on its attempt past `max_deliver`: a task whose workers all vanished
/// (killed mid-task, never saying it failed) is still recorded as failed, and its job can end.
async fn admit(
    queue: &Queue,
    handler: &Arc<dyn Handler>,
    message: &Message,
    delivered: i64,
) -> Result<Admitted, JobError> {
    let task = match Task::parse(&message.payload, queue.settings.max_message_bytes) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("refused a message on {}: {e}", message.subject);
            return Ok(Admitted::Done(Outcome::Refused, AckKind::Term));
        }
    };
    match queue.job(&task.job).await {
        Ok(_) => {}
        Err(JobError::NoJob(_)) => {
            tracing::error!("refused task {} of {}: no such job", task.index, task.job);
            return Ok(Admitted::Done(Outcome::Refused, AckKind::Term));
        }
        Err(e) => return Err(e),
    }
    if !handler.kinds().contains(&task.kind) {
        let error = format!("this worker runs {:?}, not {:?}", handler.kinds(), task.kind);
        settle(queue, handler, &task, Status::Failed, None, Some(error)).await?;
        return Ok(Admitted::Done(Outcome::Refused, AckKind::Term));
    }
    if queue.cancel_requested(&task.job).await? {
        settle(queue, handler, &task, Status::Cancelled, None, None).await?;
        return Ok(Admitted::Done(Outcome::Cancelled, AckKind::Ack));
    }
    let state: Option<TaskState> = queue.get(&task.key()).await?;
    if let Some(state) = state.as_ref().filter(|t| t.status.is_final()) {
        settle(queue, handler, &task, state.status, None, None).await?;
        return Ok(Admitted::Done(Outcome::Again, AckKind::Ack));
    }
    // A hand-back (a worker told to stop) is not an attempt: a rolling update or a scale-down
    // must not use up a healthy task's tries.
    let attempt = delivered - state.as_ref().map_or(0, |t| i64::from(t.handed_back));
    if attempt > queue.attempts {
        let last = state.and_then(|t| t.error).map(|e| format!("; the last error: {e}")).unwrap_or_default();
        let error = format!(
            "given up after {} attempts: the workers running it stopped without finishing it (killed, or lost the queue){last}",
            queue.attempts
        );
        settle(queue, handler, &task, Status::Failed, None, Some(error)).await?;
        return Ok(Admitted::Done(Outcome::Failed, AckKind::Term));
    }
    Ok(Admitted::Run(task, attempt))
}

/// Record how a run ended and ack, retry, hand back or give up the message.
async fn conclude(
    queue: &Queue,
    handler: &Arc<dyn Handler>,
    worker: &str,
    task: &Task,
    message: &Message,
    attempt: i64,
    result: Result<Value, TaskFailure>,
) -> Result<Outcome, JobError> {
    match result {
        Ok(value) => {
            settle(queue, handler, task, Status::Succeeded, Some(value), None).await?;
            // Acked only once recorded: a worker killed before this re-runs the task elsewhere.
            if let Err(e) = message.double_ack().await {
                tracing::warn!("acknowledging task {} of {}: {e}", task.index, task.job);
            }
            Ok(Outcome::Succeeded)
        }
        Err(TaskFailure::Interrupted) if queue.cancel_requested(&task.job).await? => {
            settle(queue, handler, task, Status::Cancelled, None, None).await?;
            ack(message, AckKind::Ack).await;
            Ok(Outcome::Cancelled)
        }
        Err(TaskFailure::Interrupted) => {
            queue
                .change_task(&task.job, task.index, |t| {
                    t.status = Status::Queued;
                    t.worker = None;
                    t.handed_back += 1;
                })
                .await?;
            let _ = queue.log(&task.job, &format!("{worker}: task {} handed back (stopping)", task.index)).await;
            ack(message, AckKind::Nak(None)).await;
            Ok(Outcome::HandedBack)
        }
        Err(TaskFailure::Failed(error)) => {
            let line = format!("{worker}: task {} failed (attempt {attempt}): {error}", task.index);
            let _ = queue.log(&task.job, &line).await;
            if attempt >= queue.attempts {
                settle(queue, handler, task, Status::Failed, None, Some(error)).await?;
                ack(message, AckKind::Term).await;
                return Ok(Outcome::Failed);
            }
            queue
                .change_task(&task.job, task.index, |t| {
                    t.status = Status::Queued;
                    t.error = Some(error);
                })
                .await?;
            // Back off a little, longer each time, so a flaky store has a moment.
            ack(message, AckKind::Nak(Some(Duration::from_millis(500 * attempt as u64)))).await;
            Ok(Outcome::Retried)
        }
    }
}

/// Run the handler on a blocking thread; meanwhile keep the message alive, publish progress,
/// and pass on a shutdown or a cancel as a stop request.
async fn run_alive(
    queue: &Queue,
    handler: &Arc<dyn Handler>,
    task: &Task,
    message: &Message,
    ctx: &TaskContext,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Value, TaskFailure> {
    let running = {
        let (handler, task, ctx) = (handler.clone(), task.clone(), ctx.clone());
        tokio::task::spawn_blocking(move || handler.run(&task, &ctx))
    };
    tokio::pin!(running);
    // Three ticks per ack wait: one lost progress ack does not cost the task.
    let mut tick = tokio::time::interval(Duration::from_millis((queue.settings.ack_wait_ms / 3).max(50)));
    tick.tick().await;
    let mut shutdown_seen = *shutdown.borrow();
    if shutdown_seen {
        ctx.stop.store(true, Ordering::SeqCst);
    }
    loop {
        tokio::select! {
            done = &mut running => {
                return done.unwrap_or_else(|e| Err(TaskFailure::Failed(format!("the task panicked: {e}"))));
            }
            _ = tick.tick() => {
                ack(message, AckKind::Progress).await;
                let progress = ctx.current();
                let _ = queue.change_task(&task.job, task.index, |t| t.progress = progress).await;
                flush_log(queue, task, ctx).await;
                if queue.cancel_requested(&task.job).await.unwrap_or(false) {
                    ctx.stop.store(true, Ordering::SeqCst);
                }
            }
            changed = shutdown.changed(), if !shutdown_seen => {
                shutdown_seen = true;
                if changed.is_err() || *shutdown.borrow() {
                    ctx.stop.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

async fn flush_log(queue: &Queue, task: &Task, ctx: &TaskContext) {
    for line in ctx.take_lines() {
        if let Err(e) = queue.log(&task.job, &line).await {
            tracing::warn!("job {} log: {e}", task.job);
            break;
        }
    }
}

/// Record a task's end (idempotent); when every task of the job is final and the job is not
/// yet wrapped up, run the handler's `job_finished` and record the job's end. Two workers
/// ending the last two tasks at once may both do this: `job_finished` must be idempotent
/// (a manifest written twice is the same file).
async fn settle(
    queue: &Queue,
    handler: &Arc<dyn Handler>,
    task: &Task,
    status: Status,
    result: Option<Value>,
    error: Option<String>,
) -> Result<(), JobError> {
    let job = queue.finish_task(&task.job, task.index, status, result, error).await?;
    wrap_up(queue, handler, &job).await
}

/// End a job whose tasks are all final and that nobody has ended yet: run the handler's
/// `job_finished` and record the job's end. A worker does this after a job's last task; `strix
/// jobs cancel` does it when a cancel ends a job no worker is running. Two callers at once
/// both run `job_finished`, which must be idempotent.
pub async fn wrap_up(queue: &Queue, handler: &Arc<dyn Handler>, job: &JobState) -> Result<(), JobError> {
    if !job.status.is_final() || job.wrapped_up {
        return Ok(());
    }
    let tasks = queue.tasks(job).await?;
    let finished = {
        let (handler, job) = (handler.clone(), job.clone());
        tokio::task::spawn_blocking(move || handler.job_finished(&job, &tasks)).await
    };
    let (result, error) = match finished {
        Ok(Ok(result)) => (result, None),
        Ok(Err(e)) => (None, Some(e)),
        Err(e) => (None, Some(format!("finishing the job panicked: {e}"))),
    };
    queue.end(&job.id, result, error).await?;
    let _ = queue.log(&job.id, &format!("job {}: {}", job.id, job.status)).await;
    Ok(())
}
