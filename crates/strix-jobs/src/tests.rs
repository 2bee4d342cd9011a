//! The queue against the machine's NATS server (127.0.0.1:4222, or STRIX_TEST_NATS): every test
//! on streams and a bucket of its own, removed after. Without a server they skip, except under
//! CI=true, where they fail. Test code throughout, so it may read the environment.
#![cfg(test)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{
    Handler, JobState, Queue, QueueSettings, Status, Submission, Task, TaskContext, TaskFailure, TaskState,
    WorkerOptions, work,
};

/// Settings naming streams, bucket and consumer for this test alone.
fn settings(tag: &str) -> QueueSettings {
    let url = std::env::var("STRIX_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let unique = format!(
        "{}_{}_{tag}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
    );
    QueueSettings {
        url,
        stream: format!("T_JOBS_{unique}"),
        subject: format!("t.{unique}"),
        state_bucket: format!("T_STATE_{unique}"),
        log_stream: format!("T_LOGS_{unique}"),
        consumer: "workers".into(),
        ack_wait_ms: 1000,
        max_deliver: 2,
        connect_timeout_ms: 2000,
        ..Default::default()
    }
}

/// A queue of its own, or `None` (skip) without a server outside CI.
async fn queue(tag: &str, change: impl FnOnce(&mut QueueSettings)) -> Option<Queue> {
    let mut s = settings(tag);
    change(&mut s);
    match Queue::connect(&s).await {
        Ok(q) => Some(q),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: no NATS server ({e})");
            None
        }
        Err(e) => panic!("CI=true and no NATS with JetStream at {}: {e:?}", s.url),
    }
}

/// Until the job's first task runs (20 s at most).
async fn first_task_running(q: &Queue, job: &JobState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while q.tasks(job).await.unwrap()[0].status != Status::Running {
        assert!(tokio::time::Instant::now() < deadline, "the task never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Remove what a test made.
async fn drop_queue(q: &Queue) {
    let s = q.settings();
    let _ = q.js.delete_stream(&s.stream).await;
    let _ = q.js.delete_stream(&s.log_stream).await;
    let _ = q.js.delete_key_value(&s.state_bucket).await;
}

fn options(name: &str, max_tasks: Option<u64>) -> WorkerOptions {
    WorkerOptions { name: name.into(), slots: 1, max_tasks }
}

fn submission(kind: &str, tasks: Vec<Value>) -> Submission {
    Submission { kind: kind.into(), spec: json!({"what": "test"}), tasks, submitted_by: "test".into() }
}

/// Answers a task with its spec; `{"fail": "why"}` fails; `{"hold": true}` runs until stopped.
#[derive(Default)]
struct Echo {
    runs: AtomicUsize,
    finished: AtomicUsize,
}

impl Handler for Echo {
    fn kinds(&self) -> Vec<String> {
        vec!["echo".into()]
    }

    fn run(&self, task: &Task, ctx: &TaskContext) -> Result<Value, TaskFailure> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if let Some(why) = task.spec["fail"].as_str() {
            return Err(TaskFailure::Failed(why.to_string()));
        }
        if task.spec["hold"] == true {
            // Capped, so a worker dropped mid-task (whose stop never comes) lets the test end.
            let until = std::time::Instant::now() + Duration::from_secs(8);
            while !ctx.stopped() && std::time::Instant::now() < until {
                ctx.progress(1, 2);
                std::thread::sleep(Duration::from_millis(20));
            }
            return Err(TaskFailure::Interrupted);
        }
        ctx.log(format!("echoed {}", task.index));
        Ok(task.spec.clone())
    }

    fn job_finished(&self, job: &JobState, tasks: &[TaskState]) -> Result<Option<Value>, String> {
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(Some(json!({"tasks": tasks.len(), "status": job.status.to_string()})))
    }
}

/// Run a worker until `done` holds for the job (or 30 s), then stop it.
async fn run_until(q: &Queue, handler: Arc<Echo>, id: &crate::JobId, done: impl Fn(&JobState) -> bool) -> JobState {
    let (stop, stopped) = watch::channel(false);
    let worker = {
        let q = q.clone();
        tokio::spawn(async move { work(&q, handler, &options("w1", None), stopped).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let job = loop {
        let job = q.job(id).await.unwrap();
        if done(&job) {
            break job;
        }
        assert!(tokio::time::Instant::now() < deadline, "job never got there: {job:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stop.send(true);
    worker.await.unwrap().unwrap();
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_runs_once_and_the_last_one_finishes_the_job() {
    let Some(q) = queue("once", |_| {}).await else { return };
    let job = q.submit(submission("echo", vec![json!({"n": 0}), json!({"n": 1}), json!({"n": 2})])).await.unwrap();
    assert_eq!((job.status, job.tasks), (Status::Queued, 3));
    let handler = Arc::new(Echo::default());
    let done = run_until(&q, handler.clone(), &job.id, |j| j.wrapped_up).await;
    assert_eq!((done.status, done.succeeded, done.failed), (Status::Succeeded, 3, 0), "{done:?}");
    assert_eq!(done.result, Some(json!({"tasks": 3, "status": "succeeded"})));
    assert_eq!((handler.runs.load(Ordering::SeqCst), handler.finished.load(Ordering::SeqCst)), (3, 1));
    let tasks = q.tasks(&done).await.unwrap();
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!((t.status, t.attempts, t.worker.as_deref()), (Status::Succeeded, 1, Some("w1")), "{t:?}");
        assert_eq!(t.result, Some(json!({"n": i})));
    }
    let mut lines = Vec::new();
    q.logs(&job.id, false, |l| lines.push(l.to_string())).await.unwrap();
    assert!(lines.iter().any(|l| l == "echoed 2"), "{lines:?}");
    assert!(q.jobs().await.unwrap().iter().any(|j| j.id == job.id));
    drop_queue(&q).await;
}

/// Finishes every task at once, counting them.
struct Finish(AtomicUsize);

impl Handler for Finish {
    fn kinds(&self) -> Vec<String> {
        vec!["echo".into()]
    }

    fn run(&self, task: &Task, _ctx: &TaskContext) -> Result<Value, TaskFailure> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(json!({"by": "b", "index": task.index}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_task_is_kept_alive_and_a_vanished_workers_task_goes_to_another() {
    let Some(q) = queue("vanish", |_| {}).await else { return };
    let job = q.submit(submission("echo", vec![json!({"hold": true})])).await.unwrap();
    // Worker A takes the task and holds it.
    let (_stop_a, stopped_a) = watch::channel(false);
    let a = {
        let q = q.clone();
        tokio::spawn(async move { work(&q, Arc::new(Echo::default()), &options("a", None), stopped_a).await })
    };
    first_task_running(&q, &job).await;
    // Worker B waits for work beside it. For three ack waits the progress acks keep the task
    // A's: B gets nothing.
    let b = Arc::new(Finish(AtomicUsize::new(0)));
    let (stop_b, stopped_b) = watch::channel(false);
    let worker_b = {
        let (q, b) = (q.clone(), b.clone());
        tokio::spawn(async move { work(&q, b, &options("b", None), stopped_b).await })
    };
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(b.0.load(Ordering::SeqCst), 0, "the task was handed to B while A worked on it");
    assert_eq!(q.tasks(&job).await.unwrap()[0].attempts, 1);
    // A vanishes (no ack, no progress): after the ack wait B gets the task and finishes it.
    a.abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !q.job(&job.id).await.unwrap().status.is_final() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_b.send(true);
    worker_b.await.unwrap().unwrap();
    let t = &q.tasks(&q.job(&job.id).await.unwrap()).await.unwrap()[0];
    assert_eq!((t.status, t.attempts, t.worker.as_deref()), (Status::Succeeded, 2, Some("b")), "{t:?}");
    drop_queue(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_workers_keep_vanishing_is_given_up_and_its_job_ends() {
    let Some(q) = queue("vanishing", |_| {}).await else { return };
    let job = q.submit(submission("echo", vec![json!({"hold": true})])).await.unwrap();
    // Twice (max_deliver) a worker takes the task and vanishes without a word.
    for attempt in 1..=2 {
        let (_stop, stopped) = watch::channel(false);
        let w = {
            let q = q.clone();
            tokio::spawn(async move { work(&q, Arc::new(Echo::default()), &options("v", None), stopped).await })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let t = q.tasks(&job).await.unwrap().remove(0);
            if t.status == Status::Running && t.attempts == attempt {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "attempt {attempt} never ran: {t:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        w.abort();
    }
    // The next worker gets the spare delivery and records the give-up: the job ends.
    let handler = Arc::new(Echo::default());
    let done = run_until(&q, handler.clone(), &job.id, |j| j.status.is_final() && j.wrapped_up).await;
    assert_eq!(done.status, Status::Failed);
    assert!(done.error.as_deref().unwrap_or_default().contains("given up after 2 attempts"), "{done:?}");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 0, "a third attempt ran");
    drop_queue(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_failing_is_given_up_with_its_error_and_others_go_on() {
    let Some(q) = queue("poison", |_| {}).await else { return };
    let err = q.submit(submission("echo", vec![])).await.unwrap_err().to_string();
    assert!(err.contains("at least one task"), "a job no worker would ever end: {err}");
    let bad = q.submit(submission("echo", vec![json!({"fail": "cannot read s3://x/a.jpg"})])).await.unwrap();
    let good = q.submit(submission("echo", vec![json!({"n": 1})])).await.unwrap();
    let handler = Arc::new(Echo::default());
    let done = run_until(&q, handler.clone(), &bad.id, |j| j.status.is_final()).await;
    assert_eq!(done.status, Status::Failed);
    assert_eq!(done.error.as_deref(), Some("cannot read s3://x/a.jpg"));
    let t = &q.tasks(&done).await.unwrap()[0];
    assert_eq!((t.status, t.attempts), (Status::Failed, 2), "max_deliver 2: {t:?}");
    let good = run_until(&q, handler, &good.id, |j| j.status.is_final()).await;
    assert_eq!(good.status, Status::Succeeded);
    drop_queue(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_are_not_tasks_are_refused_and_the_worker_goes_on() {
    let Some(q) = queue("malformed", |s| s.max_message_bytes = 4096).await else { return };
    let subject = format!("{}.echo", q.settings().subject);
    for payload in [b"not json".to_vec(), br#"{"job":"jzz-000000","index":0,"kind":"echo","spec":1}"#.to_vec()] {
        q.js.publish(subject.clone(), payload.into()).await.unwrap().await.unwrap();
    }
    // Bigger than the stream takes: refused at the door with a clear error.
    let huge = vec![b'x'; 8192];
    let refused =
        async { q.js.publish(subject.clone(), huge.into()).await?.await.map(|_| ()).map_err(Into::into) }.await;
    let refused: Result<(), Box<dyn std::error::Error + Send + Sync>> = refused;
    assert!(refused.is_err(), "an oversized message was taken");
    let unknown = q.submit(submission("paint", vec![json!({})])).await.unwrap();
    let good = q.submit(submission("echo", vec![json!({"n": 7})])).await.unwrap();
    let handler = Arc::new(Echo::default());
    let done = run_until(&q, handler, &good.id, |j| j.status.is_final()).await;
    assert_eq!(done.status, Status::Succeeded);
    let unknown = q.job(&unknown.id).await.unwrap();
    assert_eq!(unknown.status, Status::Failed, "{unknown:?}");
    assert!(unknown.error.as_deref().unwrap_or_default().contains("\"paint\""), "{unknown:?}");
    drop_queue(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_starts_no_task_and_a_running_one_stops() {
    let Some(q) = queue("cancel", |_| {}).await else { return };
    let job =
        q.submit(submission("echo", vec![json!({"hold": true}), json!({"n": 1}), json!({"n": 2})])).await.unwrap();
    let handler = Arc::new(Echo::default());
    let (stop, stopped) = watch::channel(false);
    let worker = {
        let (q, h) = (q.clone(), handler.clone());
        tokio::spawn(async move { work(&q, h, &options("w", None), stopped).await })
    };
    first_task_running(&q, &job).await;
    let cancelled = q.cancel(&job.id).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    assert!(cancelled.cancel_requested);
    let done = loop {
        let j = q.job(&job.id).await.unwrap();
        if j.status.is_final() {
            break j;
        }
        assert!(tokio::time::Instant::now() < deadline, "{j:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stop.send(true);
    worker.await.unwrap().unwrap();
    assert_eq!((done.status, done.cancelled, done.succeeded), (Status::Cancelled, 3, 0), "{done:?}");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1, "a task started after the cancel");
    drop_queue(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_hands_its_task_back_at_once() {
    let Some(q) = queue("handback", |s| s.ack_wait_ms = 60_000).await else { return };
    let job = q.submit(submission("echo", vec![json!({"hold": true})])).await.unwrap();
    let handler = Arc::new(Echo::default());
    let (stop, stopped) = watch::channel(false);
    let worker = {
        let (q, h) = (q.clone(), handler.clone());
        tokio::spawn(async move { work(&q, h, &options("w", None), stopped).await })
    };
    first_task_running(&q, &job).await;
    let _ = stop.send(true);
    let stats = worker.await.unwrap().unwrap();
    assert_eq!(stats.handed_back, 1, "{stats:?}");
    assert_eq!(q.tasks(&job).await.unwrap()[0].status, Status::Queued);
    // Handed back, not left to the ack wait (a minute here): another worker gets it now.
    let mut batch = q.consumer.fetch().max_messages(1).expires(Duration::from_secs(5)).messages().await.unwrap();
    use futures_util::StreamExt;
    let again = batch.next().await.expect("the task again").unwrap();
    assert_eq!(again.info().unwrap().delivered, 2);
    drop(again);
    drop_queue(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_backs_do_not_use_up_a_tasks_attempts() {
    // max_deliver is 2: three hand-backs in a row (a rolling update) must not fail the task.
    let Some(q) = queue("handbacks", |s| s.ack_wait_ms = 60_000).await else { return };
    let job = q.submit(submission("echo", vec![json!({"hold": true})])).await.unwrap();
    for round in 1..=3u32 {
        let (stop, stopped) = watch::channel(false);
        let worker = {
            let q = q.clone();
            tokio::spawn(async move { work(&q, Arc::new(Echo::default()), &options("w", None), stopped).await })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while q.tasks(&job).await.unwrap()[0].status != Status::Running {
            assert!(tokio::time::Instant::now() < deadline, "round {round}: the task never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop.send(true);
        assert_eq!(worker.await.unwrap().unwrap().handed_back, 1);
        let t = q.tasks(&job).await.unwrap().remove(0);
        assert_eq!((t.status, t.attempts, t.handed_back), (Status::Queued, 1, round), "{t:?}");
    }
    let b = Arc::new(Finish(AtomicUsize::new(0)));
    let (stop, stopped) = watch::channel(false);
    let worker = {
        let (q, b) = (q.clone(), b.clone());
        tokio::spawn(async move { work(&q, b, &options("b", None), stopped).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !q.job(&job.id).await.unwrap().status.is_final() {
        assert!(tokio::time::Instant::now() < deadline, "the task never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    worker.await.unwrap().unwrap();
    let t = q.tasks(&q.job(&job.id).await.unwrap()).await.unwrap().remove(0);
    assert_eq!((t.status, t.attempts, t.handed_back), (Status::Succeeded, 1, 3), "{t:?}");
    drop_queue(&q).await;
}

/// Counts every task it runs, by index, and takes a moment over each.
#[derive(Default)]
struct Tally(std::sync::Mutex<Vec<u32>>);

impl Handler for Tally {
    fn kinds(&self) -> Vec<String> {
        vec!["echo".into()]
    }

    fn run(&self, task: &Task, _ctx: &TaskContext) -> Result<Value, TaskFailure> {
        std::thread::sleep(Duration::from_millis(100));
        self.0.lock().unwrap().push(task.index);
        Ok(json!(task.index))
    }
}

/// Workers running until told to stop.
struct Workers {
    stop: watch::Sender<bool>,
    running: Vec<tokio::task::JoinHandle<Result<crate::WorkerStats, crate::JobError>>>,
}

impl Workers {
    async fn stop(self) {
        let _ = self.stop.send(true);
        for w in self.running {
            let _ = w.await;
        }
    }
}

/// `n` workers `w0`, `w1`, ... sharing one [`Tally`].
fn tally_workers(q: &Queue, n: usize) -> (Arc<Tally>, Workers) {
    let tally = Arc::new(Tally::default());
    let (stop, stopped) = watch::channel(false);
    let running = (0..n)
        .map(|w| {
            let (q, t, stopped) = (q.clone(), tally.clone(), stopped.clone());
            tokio::spawn(async move { work(&q, t, &options(&format!("w{w}"), None), stopped).await })
        })
        .collect();
    (tally, Workers { stop, running })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_queue_loses_nothing_when_a_server_stops_mid_job() {
    let _ = tracing_subscriber::fmt().with_env_filter("strix_jobs=debug,async_nats=warn").with_test_writer().try_init();
    let mut cluster = match crate::testing::NatsCluster::start() {
        Ok(c) => c,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => return eprintln!("skipped: {e}"),
        Err(e) => panic!("CI=true and {e}"),
    };
    let mut s = settings("cluster");
    s.replicas = 3;
    s.ack_wait_ms = 2000;
    s.max_deliver = 5;
    s.connect_timeout_ms = 5000;
    let q = cluster.queue(&s, Duration::from_secs(60)).await.expect("the cluster never took the queue");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let n = 40u32;
    let job = q.submit(submission("echo", (0..n).map(|i| json!({"n": i})).collect())).await.unwrap();
    let (tally, workers) = tally_workers(&q, 2);
    while tally.0.lock().unwrap().len() < (n / 4) as usize {
        assert!(tokio::time::Instant::now() < deadline, "no progress before the stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The task stream's leader goes: the streams keep a quorum and elect another, clients move
    // to another server.
    let leader = cluster.task_stream_leader(&q).await.expect("the task stream's leader");
    cluster.stop(leader);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let done = loop {
        match q.job(&job.id).await {
            Ok(j) if j.status.is_final() => break j,
            // A request that met the stopped server; the client reconnects.
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            let job = q.job(&job.id).await;
            let ran = tally.0.lock().unwrap().len();
            let mut consumer = q.consumer.clone();
            let info = consumer.info().await.map(|i| format!("{i:?}"));
            panic!("the job did not finish after a server stopped: {ran} tasks ran; {job:?}; consumer {info:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    workers.stop().await;
    assert_eq!((done.status, done.succeeded, done.failed), (Status::Succeeded, n, 0), "{done:?}");
    let tasks = q.tasks(&done).await.unwrap();
    let mut results: Vec<u32> =
        tasks.iter().map(|t| t.result.as_ref().and_then(Value::as_u64).unwrap() as u32).collect();
    results.sort();
    assert_eq!(results, (0..n).collect::<Vec<_>>(), "every task's result once");
    // Every task ran; one whose ack was lost with the server may have run twice, never counted twice.
    let mut ran = tally.0.lock().unwrap().clone();
    ran.sort();
    ran.dedup();
    assert_eq!(ran.len(), n as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_count_every_task_once() {
    let Some(q) = queue("two", |_| {}).await else { return };
    let n = 40u32;
    let job = q.submit(submission("echo", (0..n).map(|i| json!({"n": i})).collect())).await.unwrap();
    let (tally, workers) = tally_workers(&q, 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let j = q.job(&job.id).await.unwrap();
        if j.status.is_final() {
            break j;
        }
        assert!(tokio::time::Instant::now() < deadline, "{j:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    workers.stop().await;
    assert_eq!((done.status, done.succeeded), (Status::Succeeded, n), "{done:?}");
    let mut ran = tally.0.lock().unwrap().clone();
    ran.sort();
    ran.dedup();
    assert_eq!(ran.len(), n as usize, "every task ran");
    drop_queue(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_tasks_could_not_be_queued_ends_failed_saying_why() {
    let Some(q) = queue("unqueued", |_| {}).await else { return };
    // The task stream is gone (the state bucket stays): publishing finds nobody to take it.
    q.js.delete_stream(&q.settings().stream).await.unwrap();
    let err = q.submit(submission("echo", vec![json!({"n": 1}), json!({"n": 2})])).await.unwrap_err();
    let jobs = q.jobs().await.unwrap();
    assert_eq!(jobs.len(), 1, "{err}");
    let job = &jobs[0];
    assert_eq!((job.status, job.failed), (Status::Failed, 2), "{job:?}");
    assert!(job.error.as_deref().unwrap_or_default().starts_with("not queued: "), "{job:?}");
    drop_queue(&q).await;
}
