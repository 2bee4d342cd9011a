//! Dynamic batching: requests for one model wait in a bounded queue; a worker thread takes the
//! first, waits up to `max_delay` for more (up to `max_batch`), runs them as one batch and hands
//! each caller its answer. With several workers a batch is only a fair share of what waits, and
//! nobody waits for company while another worker is idle: on a CPU, where each worker runs one
//! thread, a bigger batch buys a few percent of throughput and costs its whole length in latency
//! to everyone in it (and an idle worker beside a hoarded queue wastes a core).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use strix_core::Tensor;
use strix_pipeline::{Input, Pipeline, PipelineError, Prediction, WorkerCount};
use strix_runtime::RuntimeError;
use tokio::sync::oneshot;

use crate::Batching;
use crate::metrics::{WorkerImages, WorkerLabels};

/// One request waiting for its answer.
pub enum Job {
    /// An image's answer.
    Answer { input: Input, reply: oneshot::Sender<Result<Prediction, PipelineError>> },
    /// The main network's raw outputs for raw inputs (the Open Inference Protocol): no pre- or
    /// post-processing. Every input's first dimension is the batch.
    Raw { inputs: Vec<Tensor>, reply: oneshot::Sender<Result<RawAnswer, PipelineError>> },
}

/// What the main network made of one raw request: its outputs, or the engine's refusal of its
/// inputs. The `Err` of the reply around it is reserved for the server's own failures.
pub type RawAnswer = Result<Vec<Tensor>, RawRefused>;

/// The engine could not run on a raw request's inputs, though they match every declared
/// dimension: a dynamic dimension the network cannot take (too small for its kernels, say).
/// The request's fault, not the server's; `detail` is the engine's message, for the log only
/// (it names the graph's internal dimensions, which mean nothing to a client).
#[derive(Debug)]
pub struct RawRefused {
    pub detail: String,
}

impl Job {
    /// The caller has given up (timed out) and needs no answer.
    fn abandoned(&self) -> bool {
        match self {
            Job::Answer { reply, .. } => reply.is_closed(),
            Job::Raw { reply, .. } => reply.is_closed(),
        }
    }
}

/// Batches run, by size: exact counts for `/v1/models`, a histogram for `/metrics`; and what
/// each worker did, by worker index.
#[derive(Debug)]
pub struct BatchStats {
    /// `sizes[n]`: batches of `n` images.
    sizes: Vec<AtomicU64>,
    pub histogram: Histogram,
    /// One per worker index started so far (a new version's workers count on in the same ones).
    workers: Mutex<Vec<Arc<WorkerTally>>>,
    /// The workers' image counts, as `/metrics` shows them.
    pub worker_images: WorkerImages,
}

impl BatchStats {
    pub(crate) fn new(max_batch: usize) -> BatchStats {
        BatchStats {
            sizes: (0..=max_batch).map(|_| AtomicU64::new(0)).collect(),
            histogram: crate::metrics::batch_histogram(),
            workers: Mutex::new(Vec::new()),
            worker_images: WorkerImages::default(),
        }
    }

    /// `(batch size, batches)` for every size seen.
    pub fn histogram(&self) -> Vec<(usize, u64)> {
        self.sizes.iter().enumerate().map(|(n, c)| (n, c.load(Ordering::Relaxed))).filter(|(_, c)| *c > 0).collect()
    }

    /// What each worker index has done, by the workers' own counts.
    pub fn per_worker(&self) -> Vec<WorkerCount> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|t| t.count()).collect()
    }

    /// The tally of worker `index`, made the first time a worker of that index is started.
    fn worker(&self, index: usize) -> Arc<WorkerTally> {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        while workers.len() <= index {
            let worker = workers.len();
            // The counter `/metrics` shows is the one the worker counts in.
            let images = self.worker_images.get_or_create(&WorkerLabels { worker }).clone();
            workers.push(Arc::new(WorkerTally { batches: AtomicU64::new(0), images, threads: AtomicUsize::new(0) }));
        }
        workers[index].clone()
    }
}

/// One worker's [`WorkerCount`], readable while it runs.
#[derive(Debug)]
struct WorkerTally {
    batches: AtomicU64,
    images: Counter,
    threads: AtomicUsize,
}

impl WorkerTally {
    fn record(&self, images: usize, threads: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.images.inc_by(images as u64);
        self.threads.store(threads, Ordering::Relaxed);
    }

    fn count(&self) -> WorkerCount {
        WorkerCount {
            batches: self.batches.load(Ordering::Relaxed),
            images: self.images.get(),
            threads: self.threads.load(Ordering::Relaxed),
        }
    }
}

/// The queue in front of one model's worker.
#[derive(Debug)]
pub struct Batcher {
    tx: Sender<Job>,
    pub max_batch: usize,
    pub workers: usize,
    /// Threads per inference.
    pub threads: usize,
    /// Worker threads running; the server is not ready while a model has none.
    alive: Arc<AtomicUsize>,
    /// Workers waiting for a job.
    idle: Arc<AtomicUsize>,
}

/// Counts a worker thread as alive until it ends, by returning or by unwinding.
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn enter(count: &Arc<AtomicUsize>) -> Alive {
        count.fetch_add(1, Ordering::SeqCst);
        Alive(count.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, Ordering::SeqCst) == 1 && std::thread::panicking() {
            tracing::error!("the last batch worker of a model died; /ping now answers 503");
        }
    }
}

/// `f()`, or the panic's message: a bug in one batch (a decoder, an engine) must answer that
/// batch's requests with an error and leave the worker serving the next.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
}

/// Why a job was not queued.
pub enum Refused {
    /// The queue is full: shed load now rather than pile up memory.
    Full,
    /// The worker has stopped (shutting down).
    Closed,
}

impl Batcher {
    /// Start the worker threads for `pipeline`, counting batches in `stats` (shared by the
    /// versions of one served model); they end when the batcher is dropped and the queue has
    /// drained.
    pub fn start(
        name: &str,
        pipeline: Arc<Pipeline>,
        batching: Batching,
        top_k: usize,
        stats: Arc<BatchStats>,
    ) -> Batcher {
        let max_batch = pipeline.batch_size(batching.max_batch).min(batching.max_batch).max(1);
        let (tx, rx) = crossbeam_channel::bounded(batching.queue);
        // The rule predict and stream follow too: --threads is the budget, --workers splits it.
        let plan = pipeline.parallelism(Some(batching.workers));
        let workers = plan.workers;
        // Cascades keep their own threading (all of the budget, one image at a time).
        let threads = (!pipeline.is_cascade()).then_some(plan.threads);
        let delay = Duration::from_millis(batching.max_delay_ms);
        let alive = Arc::new(AtomicUsize::new(0));
        let idle = Arc::new(AtomicUsize::new(0));
        for i in 0..workers {
            let (pipeline, rx, stats, tally) = (pipeline.clone(), rx.clone(), stats.clone(), stats.worker(i));
            let shape = Shape { max_batch, delay, workers, idle: idle.clone() };
            // Counted before the thread starts, so a server is never briefly "not ready".
            let guard = Alive::enter(&alive);
            let spawned = std::thread::Builder::new().name(format!("batcher-{name}-{i}")).spawn(move || {
                let _alive = guard;
                work(&pipeline, &rx, &shape, top_k, threads, &stats, &tally)
            });
            if let Err(e) = spawned {
                tracing::error!("cannot start batcher thread {i} of {name}: {e}");
            }
        }
        Batcher { tx, max_batch, workers, threads: plan.threads, alive, idle }
    }

    /// Worker threads still running.
    pub fn alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }

    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Refused::Full,
            TrySendError::Disconnected(_) => Refused::Closed,
        })
    }

    /// Requests waiting now.
    pub fn depth(&self) -> usize {
        self.tx.len()
    }

    /// Nothing queued, and every live worker waiting for a job (none mid-inference).
    pub fn settled(&self) -> bool {
        self.depth() == 0 && self.idle.load(Ordering::SeqCst) >= self.alive()
    }
}

/// How a worker forms its batches.
struct Shape {
    max_batch: usize,
    delay: Duration,
    /// Workers sharing the queue.
    workers: usize,
    /// Workers waiting for a first job now.
    idle: Arc<AtomicUsize>,
}

impl Shape {
    /// The next job, counted idle while waiting for it.
    fn first(&self, rx: &Receiver<Job>) -> Option<Job> {
        self.idle.fetch_add(1, Ordering::SeqCst);
        let job = rx.recv().ok();
        self.idle.fetch_sub(1, Ordering::SeqCst);
        job
    }

    /// `first` and the jobs that join it: an even share of those waiting now (the rest are
    /// the other workers' when they come back), then new arrivals until `delay` has passed,
    /// but only while no other worker is idle (it would start them at once) and nothing is
    /// left waiting for the others. A lone worker takes everything to `max_batch`.
    fn batch(&self, rx: &Receiver<Job>, first: Job) -> Vec<Job> {
        let deadline = Instant::now() + self.delay;
        let share = (1 + rx.len()).div_ceil(self.workers).min(self.max_batch);
        let mut jobs = vec![first];
        while jobs.len() < self.max_batch {
            if jobs.len() < share
                && let Ok(job) = rx.try_recv()
            {
                jobs.push(job);
                continue;
            }
            let others_can_start = self.idle.load(Ordering::SeqCst) > 0 || !rx.is_empty();
            if self.workers > 1 && others_can_start {
                break;
            }
            match rx.recv_deadline(deadline) {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        jobs
    }
}

/// A worker's loop: batches until the queue closes, counted in `stats` and in its own `tally`.
fn work(
    pipeline: &Pipeline,
    rx: &Receiver<Job>,
    shape: &Shape,
    top_k: usize,
    threads: Option<usize>,
    stats: &BatchStats,
    tally: &WorkerTally,
) {
    // What run_raw and predict_inputs resolve `threads` to, for the tally.
    let used = pipeline.inference_threads(threads);
    while let Some(first) = shape.first(rx) {
        let mut jobs = shape.batch(rx, first);
        // Callers that gave up (timed out) need no answer.
        jobs.retain(|j| !j.abandoned());
        if jobs.is_empty() {
            continue;
        }
        let mut answers = Vec::with_capacity(jobs.len());
        let mut raw = Vec::new();
        for job in jobs {
            match job {
                Job::Answer { input, reply } => answers.push((input, reply)),
                Job::Raw { inputs, reply } => raw.push((inputs, reply)),
            }
        }
        if !raw.is_empty() {
            count(stats, raw.len());
            tally.record(raw.len(), used);
            run_raw(pipeline, raw, threads);
        }
        if answers.is_empty() {
            continue;
        }
        let (inputs, replies): (Vec<Input>, Vec<_>) = answers.into_iter().unzip();
        let n = inputs.len();
        count(stats, n);
        tally.record(n, used);
        let result = guarded(|| pipeline.predict_inputs(inputs, top_k, threads)).unwrap_or_else(|panic| {
            tracing::error!("a batch of {n} panicked: {panic}");
            Err(PipelineError::Batch(format!("the batch failed: {panic}")))
        });
        match result {
            Ok(predictions) => {
                for (reply, p) in replies.into_iter().zip(predictions) {
                    let _ = reply.send(Ok(p));
                }
            }
            Err(e) => fail_all(replies, &crate::error::chain(&e)),
        }
    }
}

fn count(stats: &BatchStats, n: usize) {
    if let Some(c) = stats.sizes.get(n) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    stats.histogram.observe(n as f64);
}

type RawReply = oneshot::Sender<Result<RawAnswer, PipelineError>>;

/// The same error for every caller of a batch that failed.
fn fail_all<T>(replies: Vec<oneshot::Sender<Result<T, PipelineError>>>, message: &str) {
    for reply in replies {
        let _ = reply.send(Err(PipelineError::Batch(message.to_string())));
    }
}

/// Raw requests as few inferences as their shapes allow: requests whose inputs differ only in
/// the batch dimension are stacked into one run (when the network's batch is not fixed), and
/// each gets its rows of every output back.
fn run_raw(pipeline: &Pipeline, jobs: Vec<(Vec<Tensor>, RawReply)>, threads: Option<usize>) {
    let session = pipeline.session();
    let threads = threads.unwrap_or_else(|| session.default_threads()).max(1);
    let stackable = session.inputs().iter().all(|i| i.shape.first().is_some_and(|d| d.fixed().is_none()));
    let mut groups: Vec<Vec<(Vec<Tensor>, RawReply)>> = Vec::new();
    for job in jobs {
        let key = |inputs: &[Tensor]| inputs.iter().map(|t| (t.dtype(), t.shape()[1..].to_vec())).collect::<Vec<_>>();
        match groups.iter_mut().find(|g| stackable && key(&g[0].0) == key(&job.0)) {
            Some(group) => group.push(job),
            None => groups.push(vec![job]),
        }
    }
    for group in groups {
        let counts: Vec<usize> = group.iter().map(|(inputs, _)| inputs[0].shape()[0]).collect();
        let (inputs, replies): (Vec<Vec<Tensor>>, Vec<RawReply>) = group.into_iter().unzip();
        let stacked: Option<Vec<Tensor>> = (0..inputs[0].len())
            .map(|i| Tensor::concat_batch(&inputs.iter().map(|r| &r[i]).collect::<Vec<_>>()))
            .collect();
        let result = match stacked {
            Some(stacked) => guarded(|| session.run_with_threads(&stacked, threads))
                .map_err(|panic| PipelineError::Batch(format!("the batch failed: {panic}")))
                .and_then(refused_or_failed),
            None => Err(PipelineError::Batch("inputs of one batch do not stack".into())),
        };
        match result {
            Ok(Err(refused)) => {
                for reply in replies {
                    let _ = reply.send(Ok(Err(RawRefused { detail: refused.detail.clone() })));
                }
            }
            Ok(Ok(outputs)) if replies.len() == 1 => {
                let _ = replies.into_iter().next().map(|r| r.send(Ok(Ok(outputs))));
            }
            Ok(Ok(outputs)) => {
                // Each output's rows, cut per request; an output without a batch dimension
                // cannot be shared out.
                let cut: Option<Vec<Vec<Tensor>>> = outputs.iter().map(|o| o.split_batch(&counts)).collect();
                match cut {
                    Some(cut) => {
                        for (i, reply) in replies.into_iter().enumerate() {
                            let _ = reply.send(Ok(Ok(cut.iter().map(|pieces| pieces[i].clone()).collect())));
                        }
                    }
                    None => fail_all(replies, "an output has no batch dimension"),
                }
            }
            Err(e) => fail_all(replies, &crate::error::chain(&e)),
        }
    }
}

/// An engine's error on raw inputs: a refusal of the inputs when the engine could not run on
/// them (the request's fault: group members share every dimension but the batch), else the
/// server's failure (an output type Strix cannot read).
fn refused_or_failed(run: Result<Vec<Tensor>, RuntimeError>) -> Result<RawAnswer, PipelineError> {
    match run {
        Ok(outputs) => Ok(Ok(outputs)),
        Err(e @ (RuntimeError::Run { .. } | RuntimeError::InputShape { .. })) => {
            Ok(Err(RawRefused { detail: crate::error::chain(&e) }))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 31: a dynamic model given a size its layers cannot take answered 500; the engine's
    /// failure on inputs is the request's fault, an unreadable output the server's.
    #[test]
    fn an_engine_failure_on_raw_inputs_is_a_refusal_and_others_are_failures() {
        let run = Err(RuntimeError::Run { backend: strix_runtime::Backend::Tract, source: "cannot unify".into() });
        match refused_or_failed(run) {
            Ok(Err(RawRefused { detail })) => assert!(detail.contains("cannot unify"), "{detail}"),
            other => panic!("{other:?}"),
        }
        let output = Err(RuntimeError::OutputDType { name: "y".into(), dtype: "String".into() });
        assert!(matches!(refused_or_failed(output), Err(PipelineError::Runtime(_))));
        assert!(matches!(refused_or_failed(Ok(vec![])), Ok(Ok(outputs)) if outputs.is_empty()));
    }

    fn job() -> Job {
        Job::Raw { inputs: Vec::new(), reply: oneshot::channel().0 }
    }

    fn shape(workers: usize, idle: usize, delay_ms: u64) -> Shape {
        Shape { max_batch: 8, delay: Duration::from_millis(delay_ms), workers, idle: Arc::new(AtomicUsize::new(idle)) }
    }

    fn queue(waiting: usize) -> (Sender<Job>, Receiver<Job>) {
        let (tx, rx) = crossbeam_channel::bounded(64);
        for _ in 0..waiting {
            tx.send(job()).ok();
        }
        (tx, rx)
    }

    #[test]
    fn a_lone_worker_takes_everything_and_waits_for_company() {
        let (tx, rx) = queue(9);
        let lone = shape(1, 0, 0);
        assert_eq!(lone.batch(&rx, job()).len(), 8);
        assert_eq!(rx.len(), 2);
        // An empty queue: it waits out the delay for arrivals.
        let (_tx, rx) = queue(0);
        let start = Instant::now();
        assert_eq!(shape(1, 0, 50).batch(&rx, job()).len(), 1);
        assert!(start.elapsed() >= Duration::from_millis(50));
        drop(tx);
    }

    #[test]
    fn workers_share_what_waits_evenly() {
        // Seven waiting behind the first: four for this batch, four left for the other worker.
        let (_tx, rx) = queue(7);
        assert_eq!(shape(2, 0, 1000).batch(&rx, job()).len(), 4);
        assert_eq!(rx.len(), 4);
        // Three workers, eight in all: three each, at most.
        let (_tx, rx) = queue(7);
        assert_eq!(shape(3, 0, 1000).batch(&rx, job()).len(), 3);
        // Capped by max_batch however many wait.
        let (_tx, rx) = queue(40);
        assert_eq!(shape(2, 0, 1000).batch(&rx, job()).len(), 8);
    }

    /// The window is a minute, so a worker that waited would fail this by half a minute
    /// however loaded the machine is.
    #[test]
    fn nobody_waits_for_company_beside_an_idle_worker() {
        let (_tx, rx) = queue(0);
        let start = Instant::now();
        assert_eq!(shape(2, 1, 60_000).batch(&rx, job()).len(), 1);
        assert!(start.elapsed() < Duration::from_secs(30), "waited {:?}", start.elapsed());
    }

    /// Arrivals join until the batch is full: no deadline is needed to end the wait, so the
    /// window is ten minutes rather than a few milliseconds the sender might miss under load.
    #[test]
    fn a_worker_waits_for_arrivals_while_the_others_are_busy() {
        let (tx, rx) = queue(0);
        let sender = std::thread::spawn(move || {
            for _ in 0..7 {
                std::thread::sleep(Duration::from_millis(10));
                tx.send(job()).ok();
            }
        });
        assert_eq!(shape(2, 0, 600_000).batch(&rx, job()).len(), 8);
        sender.join().unwrap();
    }

    #[test]
    fn a_panicking_batch_becomes_an_error() {
        assert_eq!(guarded(|| 7), Ok(7));
        assert_eq!(guarded(|| -> u8 { panic!("decoder bug") }), Err("decoder bug".to_string()));
        let n = 3;
        assert_eq!(guarded(|| -> u8 { panic!("index {n} out of range") }), Err("index 3 out of range".into()));
    }

    #[test]
    fn each_worker_counts_itself_in_the_metric_too() {
        let stats = BatchStats::new(8);
        stats.worker(1).record(3, 2);
        stats.worker(1).record(1, 2);
        let counts = stats.per_worker();
        assert_eq!(counts.len(), 2, "worker 1 started implies worker 0's slot: {counts:?}");
        assert_eq!(counts[0], WorkerCount::default());
        assert_eq!(counts[1], WorkerCount { batches: 2, images: 4, threads: 2 });
        assert_eq!(stats.worker_images.get_or_create(&WorkerLabels { worker: 1 }).get(), 4);
    }

    #[test]
    fn a_worker_that_dies_is_no_longer_counted_alive() {
        let alive = Arc::new(AtomicUsize::new(0));
        let (a, b) = (Alive::enter(&alive), Alive::enter(&alive));
        let died = std::thread::spawn(move || {
            let _alive = a;
            panic!("worker died");
        });
        assert!(died.join().is_err());
        assert_eq!(alive.load(Ordering::SeqCst), 1);
        drop(b);
        assert_eq!(alive.load(Ordering::SeqCst), 0);
    }
}
