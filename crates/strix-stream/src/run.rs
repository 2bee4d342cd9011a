//! One stream run: decoder threads (one per source) -> bounded queues -> one inference loop
//! (batching across sources when the model allows) -> an output thread per source (tracking,
//! events, views, recording) -> one events thread (the sinks).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use strix_core::{Progress, ProgressUnit};
use strix_pipeline::{InOrder, Input, Pipeline, Prepared, WorkerCount};
use strix_vision::RgbImage;
use strix_zoo::Task;

use crate::analytics::{Analytics, Happening};
use crate::config::StreamConfig;
use crate::error::StreamError;
use crate::identify::{IdentifySettings, Identifying};
use crate::live::LiveModel;
use crate::output::{Answered, SourceOutput, emit};
use crate::queue::{FramePolicy, Queues};
use crate::record::Recorder;
use crate::sinks::{Event, EventSink, SinkReport};
use crate::source::{Source, SourceKind, SourceNotice, SourceOptions, SourceStopper};
use crate::stats::{Meter, SourceStats};
use crate::track::Tracker;
use crate::web::{Board, WebOptions, WebServer};

/// Everything a run needs besides the model.
pub struct StreamJob {
    pub sources: Vec<SourceKind>,
    pub source_options: SourceOptions,
    pub config: StreamConfig,
    /// Where events go.
    pub sinks: Vec<Box<dyn EventSink>>,
    /// Serve the page and the MJPEG streams (`127.0.0.1:8090`; port 0 picks one).
    pub http: Option<WebOptions>,
    /// Record the project stream (one file per source: `NAME-2.mp4` for the second).
    pub record: Option<PathBuf>,
    /// Replace recordings that exist already.
    pub overwrite: bool,
    /// Stop each source after this many answered frames.
    pub max_frames: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// An event per frame with its detections and tracks.
    pub frame_events: bool,
    /// Classes kept per classification answer.
    pub top_k: usize,
    /// Inferences in flight at once [default: one per core, each on one thread].
    pub workers: Option<usize>,
    /// Sees every answered frame (capture for labelling).
    pub tap: Option<Arc<dyn strix_pipeline::Tap>>,
    /// Names tracks from an index of known faces or objects.
    pub identify: Option<IdentifySettings>,
    /// The drift monitor's status, for the page's drift section.
    pub monitor_status: Option<crate::web::StatusFn>,
}

/// How a run went.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub model: String,
    pub backend: String,
    pub wall_s: f64,
    pub sources: Vec<SourceStats>,
    pub sinks: Vec<SinkReport>,
    pub recordings: Vec<Recording>,
    /// Problems that ended a source early (also in its stats).
    pub errors: Vec<String>,
    /// Inferences per batch size: frames of several sources share a batch when the model
    /// takes one.
    pub batch_sizes: BTreeMap<usize, u64>,
    /// Inferences in flight and threads each, as planned.
    pub parallelism: strix_pipeline::Parallelism,
    /// What each inference worker started did (frames, threads), by its own count.
    pub per_worker: Vec<WorkerCount>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Recording {
    pub path: PathBuf,
    pub frames: u64,
}

/// What the caller hears while a run goes.
pub trait RunHooks: Sync {
    /// The page is up at this address.
    fn serving(&self, _addr: SocketAddr) {}
    /// Frames answered, for a bar.
    fn progress(&self) -> Arc<dyn Progress> {
        Arc::new(strix_core::NoProgress)
    }
}

/// A frame on its way to the model.
struct Item {
    index: u64,
    time_s: f64,
    arrived: Instant,
    image: Arc<RgbImage>,
    /// Preprocessed on the decoder's thread (policy `all`), so it overlaps inference, by the
    /// pipeline that did it (a swapped-in version prepares again).
    prepared: Option<(Prepared, Arc<Pipeline>)>,
}

/// The inference workers' sessions, built on their own thread. Dropping it waits for the
/// build, so a run that fails to start leaves no thread behind.
struct Warming {
    build: Option<std::thread::JoinHandle<Result<(), String>>>,
    workers: usize,
}

impl Warming {
    fn start(pipeline: Arc<Pipeline>, threads: usize, workers: usize) -> Warming {
        let build = std::thread::spawn(move || pipeline.session().warm_up(threads, workers).map_err(|e| e.to_string()));
        Warming { build: Some(build), workers }
    }

    /// Wait for the sessions. A failure is not fatal: runs build what they need and report
    /// their own errors.
    fn finish(&mut self) {
        let workers = self.workers;
        match self.build.take().map(std::thread::JoinHandle::join) {
            None | Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => tracing::warn!("cannot prepare {workers} sessions: {e}"),
            Some(Err(_)) => tracing::warn!("preparing {workers} sessions panicked"),
        }
    }
}

impl Drop for Warming {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Run sources through the model until they end, `stop` is set, or the limits are reached.
pub fn run(
    pipeline: Arc<Pipeline>,
    job: StreamJob,
    stop: Arc<AtomicBool>,
    hooks: &dyn RunHooks,
) -> Result<Summary, StreamError> {
    run_live(Arc::new(LiveModel::new(pipeline)), job, stop, hooks)
}

/// [`run`] with a model that may be swapped while it runs ([`crate::follow`]): each batch
/// takes the version current when it starts, and events say which version answered.
pub fn run_live(
    live: Arc<LiveModel>,
    job: StreamJob,
    stop: Arc<AtomicBool>,
    hooks: &dyn RunHooks,
) -> Result<Summary, StreamError> {
    let pipeline = live.current();
    job.config.validate()?;
    if job.sources.is_empty() {
        return Err(StreamError::Config("no sources".into()));
    }
    if let Some(record) = &job.record {
        crate::record::check_recordings(&recording_paths(record, job.sources.len()), &job.sources, job.overwrite)?;
    }
    // Several inferences at once, each on its share of the cores, when the model takes one
    // frame at a time (what won on 2 cores); outputs put answers back in frame order.
    let parallelism = pipeline.parallelism(job.workers);
    let (workers, threads) = (parallelism.workers, parallelism.threads);
    // The workers' sessions are built while the sources are probed, FFmpeg starts and the
    // first frames are decoded and prepared: startup is a short run's idle core otherwise.
    let mut warming = Warming::start(pipeline.clone(), threads, workers);
    // The clock (`--duration`, frame lag) counts from here, the overlapped build included.
    let started = Instant::now();
    let mut sources = Vec::new();
    for kind in &job.sources {
        sources.push(Source::open(kind.clone(), job.source_options.clone())?);
    }
    // A file played at its own rate stands in for a camera, so it defaults like one.
    let is_live = |s: &Source| s.kind().is_live() || job.source_options.realtime;
    let policies: Vec<FramePolicy> = sources
        .iter()
        .map(|s| job.config.policy.unwrap_or(if is_live(s) { FramePolicy::Latest } else { FramePolicy::All }))
        .collect();
    // Recordings play at the source's rate; live sources that do not say get 25 fps.
    let rates: Vec<f64> = sources.iter().map(|s| s.info().fps.unwrap_or(25.0)).collect();
    let names = unique_names(&sources);
    let meters = sources
        .iter()
        .zip(&names)
        .zip(&policies)
        .map(|((s, n), p)| Meter::new(n.clone(), s.kind().is_live(), *p))
        .collect();
    let model_name = pipeline.model().spec.name.clone();
    let board = Arc::new(Board::new(model_name.clone(), meters).with_monitor(job.monitor_status.clone()));
    board.set_version(crate::live::version_of(&pipeline));
    // A latest-policy queue holds one frame: anything older is stale by definition.
    let queues: Arc<Queues<Item>> = Arc::new(Queues::new(
        policies.iter().map(|p| (if *p == FramePolicy::Latest { 1 } else { job.config.queue }, *p)),
    ));
    let web = match &job.http {
        Some(options) => {
            let server = WebServer::start(options, board.clone())?;
            hooks.serving(server.addr);
            Some(server)
        }
        None => None,
    };
    let progress = hooks.progress();
    let total = if job.source_options.loop_file || policies.contains(&FramePolicy::Latest) {
        None
    } else {
        let frames: Option<u64> =
            sources.iter().map(|s| s.info().frames.map(|f| job.max_frames.map_or(f, |m| f.min(m)))).sum();
        frames
    };
    progress.start(&format!("{model_name} on {}", names.join(", ")), total, ProgressUnit::Items);

    let stoppers: Vec<SourceStopper> = sources.iter().map(Source::stopper).collect();
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let (events_tx, events_rx) = crossbeam_channel::bounded::<Vec<Event>>(256);
    let sinks = job.sinks;
    let tracked = matches!(pipeline.task(), Task::Detect | Task::Faces | Task::Pose);
    let done = AtomicBool::new(false);
    let (outcome, reports) = std::thread::scope(|scope| {
        let events_thread = scope.spawn(move || {
            let mut sinks = sinks;
            for batch in events_rx {
                // Serialised once for every sink.
                let lines: Vec<String> = batch
                    .iter()
                    .filter_map(|e| {
                        serde_json::to_string(e).map_err(|err| tracing::error!("event not sent: {err}")).ok()
                    })
                    .collect();
                for s in sinks.iter_mut() {
                    s.send(&lines);
                }
            }
            sinks.into_iter().map(|s| s.close()).collect::<Vec<SinkReport>>()
        });
        // Watchdog: an outside stop or the time limit stops every source.
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let timed_out = job.duration.is_some_and(|d| started.elapsed() >= d);
                if stop.load(Ordering::SeqCst) || timed_out {
                    stoppers.iter().for_each(SourceStopper::stop);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        for (lane, source) in sources.into_iter().enumerate() {
            let decoder = Decoder {
                lane,
                name: names[lane].clone(),
                queues: queues.clone(),
                board: board.clone(),
                events: events_tx.clone(),
                errors: errors.clone(),
                live: live.clone(),
                prepare: !pipeline.is_cascade() && policies[lane] == FramePolicy::All,
                started,
            };
            scope.spawn(move || decoder.run(source));
        }
        let mut output_txs = Vec::new();
        let mut output_threads = Vec::new();
        for lane in 0..names.len() {
            let (tx, rx) = crossbeam_channel::bounded::<Answered>(4);
            output_txs.push(tx);
            let out = SourceOutput {
                lane,
                name: names[lane].clone(),
                tracker: tracked.then(|| Tracker::new(job.config.tracker.clone())),
                analytics: Analytics::new(job.config.lines.clone(), job.config.zones.clone()),
                classes: job.config.classes.clone(),
                frame_events: job.frame_events,
                recorder: None,
                jpeg_quality: job.config.jpeg_quality,
                board: board.clone(),
                events: events_tx.clone(),
                max_frames: job.max_frames,
                stopper: stoppers[lane].clone(),
                progress: progress.clone(),
                processed: 0,
                tap: job.tap.clone().map(|t| (t, pipeline.model().spec.name.clone())),
                identifying: job.identify.clone().map(Identifying::new),
            };
            let record = job.record.as_ref().map(|p| RecordTo {
                path: recording_path(p, lane, names.len()),
                fps: rates[lane],
                overwrite: job.overwrite,
            });
            let ffmpeg = job.source_options.ffmpeg.clone();
            let errors = errors.clone();
            output_threads.push(scope.spawn(move || output_loop(out, rx, record, &ffmpeg, &errors)));
        }
        drop(events_tx);

        warming.finish();
        let failed = AtomicBool::new(false);
        let batch_sizes = Mutex::new(BTreeMap::new());
        let inferred: Vec<Result<WorkerCount, StreamError>> = std::thread::scope(|inner| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let (live, queues, output_txs, failed, stoppers, sizes, board) =
                        (&live, &queues, &output_txs, &failed, &stoppers, &batch_sizes, &board);
                    let limits = (job.config.max_batch, job.top_k, threads);
                    inner.spawn(move || {
                        let r = infer_loop(live, board, queues, output_txs, limits, w, sizes);
                        if r.is_err() && !failed.swap(true, Ordering::SeqCst) {
                            stoppers.iter().for_each(SourceStopper::stop);
                            queues.close_all();
                        }
                        r
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(StreamError::output("inference", "a worker panicked"))))
                .collect()
        });
        let (per_worker, mut first_error) = split_counts(inferred);
        drop(output_txs);
        let mut recordings = Vec::new();
        for t in output_threads {
            match t.join() {
                Ok(Ok(Some(r))) => recordings.push(r),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(_) => first_error = first_error.or(Some(StreamError::output("output", "a thread panicked"))),
            }
        }
        done.store(true, Ordering::SeqCst);
        let reports = events_thread.join().unwrap_or_default();
        let outcome = match first_error {
            Some(e) => Err(e),
            None => Ok((recordings, batch_sizes.into_inner().unwrap_or_else(|e| e.into_inner()), per_worker)),
        };
        (outcome, reports)
    });
    progress.finish();
    if let Some(w) = web {
        w.stop();
    }
    let (recordings, batch_sizes, per_worker) = outcome?;
    let sources: Vec<SourceStats> = (0..names.len()).map(|i| board.meter(i).finish()).collect();
    Ok(Summary {
        model: model_name,
        backend: pipeline.backend_version().to_string(),
        wall_s: (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        sources,
        sinks: reports,
        recordings,
        errors: std::mem::take(&mut *errors.lock().unwrap_or_else(|e| e.into_inner())),
        batch_sizes,
        parallelism,
        per_worker,
    })
}

/// Reads one source into its queue.
struct Decoder {
    lane: usize,
    name: String,
    queues: Arc<Queues<Item>>,
    board: Arc<Board>,
    events: crossbeam_channel::Sender<Vec<Event>>,
    errors: Arc<Mutex<Vec<String>>>,
    live: Arc<LiveModel>,
    prepare: bool,
    started: Instant,
}

impl Decoder {
    fn run(self, mut source: Source) {
        let mut index = 0u64;
        loop {
            let mut notice = |n: SourceNotice| self.notice(n, index);
            match source.next_frame(&mut notice) {
                Ok(Some(raw)) => {
                    {
                        let mut m = self.board.meter(self.lane);
                        m.stats.frames_read += 1;
                        (m.stats.width, m.stats.height) = raw.image.dimensions();
                    }
                    let prepared = if self.prepare {
                        let pipeline = self.live.current();
                        pipeline.prepare(&raw.image).map(|p| (p, pipeline))
                    } else {
                        None
                    };
                    let item =
                        Item { index, time_s: raw.time_s, arrived: raw.arrived, image: Arc::new(raw.image), prepared };
                    index += 1;
                    match self.queues.push(self.lane, item) {
                        Ok(0) => {}
                        Ok(dropped) => self.board.meter(self.lane).stats.dropped += dropped,
                        Err(_) => break,
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let msg = e.to_string();
                    tracing::error!("{msg}");
                    self.board.meter(self.lane).stats.error = Some(msg.clone());
                    self.errors.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
                    break;
                }
            }
        }
        self.queues.close(self.lane);
    }

    /// A lost / regained connection becomes an event.
    fn notice(&self, n: SourceNotice, frame: u64) {
        let what = match n {
            SourceNotice::Lost { reason, attempt, wait } => {
                tracing::warn!(source = %self.name, %reason, attempt, "source lost; reconnecting");
                self.board.meter(self.lane).stats.reconnects += 1;
                Happening::SourceLost { reason, attempt, retry_in_s: wait.as_secs_f64() }
            }
            SourceNotice::Reconnected => Happening::SourceReconnected,
        };
        // Seconds since the run started: a lost source has no position of its own.
        let time_s = self.started.elapsed().as_secs_f64();
        let version = self.board.version();
        emit(&self.board, &self.events, (&self.name, version.as_deref()), frame, time_s, vec![what]);
    }
}

/// The output thread of one source: answered frames in order until the inference loop ends.
/// One source's recording: where, at what rate, and whether an existing file may go.
struct RecordTo {
    path: PathBuf,
    fps: f64,
    overwrite: bool,
}

fn output_loop(
    mut out: SourceOutput,
    rx: crossbeam_channel::Receiver<Answered>,
    record: Option<RecordTo>,
    ffmpeg: &std::path::Path,
    errors: &Mutex<Vec<String>>,
) -> Result<Option<Recording>, StreamError> {
    let mut failure = None;
    // Answers from parallel workers, held until the ones before them are in.
    let mut order = InOrder::default();
    for arrived in rx {
        order.push(arrived.seq, arrived);
        while let Some((_, a)) = order.pop() {
            if failure.is_some() {
                continue;
            }
            if let Some(to) = &record
                && out.recorder.is_none()
            {
                match Recorder::start(ffmpeg, &to.path, a.image.dimensions(), to.fps, to.overwrite) {
                    Ok(r) => out.recorder = Some((to.path.clone(), r)),
                    Err(e) => {
                        failure = Some(e);
                        out.stopper.stop();
                        continue;
                    }
                }
            }
            if let Err(e) = out.handle(a) {
                failure = Some(e);
                out.stopper.stop();
            }
        }
    }
    let finished = out.finish();
    if let Some(e) = failure {
        errors.lock().unwrap_or_else(|e| e.into_inner()).push(e.to_string());
        return Err(e);
    }
    Ok(finished?.map(|(path, frames)| Recording { path, frames }))
}

/// The workers' counts, and the first error one of them ended with.
fn split_counts(workers: Vec<Result<WorkerCount, StreamError>>) -> (Vec<WorkerCount>, Option<StreamError>) {
    let (mut counts, mut first_error) = (Vec::new(), None);
    for worker in workers {
        match worker {
            Ok(count) => counts.push(count),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    (counts, first_error)
}

/// Take frames (one per source at a time), infer on `threads` threads, hand answers to the
/// output threads; what this worker did, once the queues close.
fn infer_loop(
    live: &LiveModel,
    board: &Board,
    queues: &Queues<Item>,
    outputs: &[crossbeam_channel::Sender<Answered>],
    (max_batch, top_k, threads): (usize, usize, usize),
    worker: usize,
    batch_sizes: &Mutex<BTreeMap<usize, u64>>,
) -> Result<WorkerCount, StreamError> {
    let mut count = WorkerCount::default();
    // Workers start at different sources so each gets served.
    let mut last = (outputs.len() + worker).saturating_sub(1) % outputs.len().max(1);
    // The version answering and its label, worked out once per version rather than per batch.
    let mut answering: Option<(Arc<Pipeline>, Option<Arc<str>>)> = None;
    loop {
        // The version current when the batch starts answers all of it.
        let pipeline = live.current();
        let version = match &answering {
            Some((p, v)) if Arc::ptr_eq(p, &pipeline) => v.clone(),
            _ => {
                let v: Option<Arc<str>> = crate::live::version_of(&pipeline).map(Arc::from);
                board.set_version(v.as_deref().map(str::to_string));
                answering = Some((pipeline.clone(), v.clone()));
                v
            }
        };
        let Some(mut items) = queues.take(pipeline.batch_size(max_batch), last) else { break };
        last = items.last().map_or(last, |(lane, _, _)| *lane);
        *batch_sizes.lock().unwrap_or_else(|e| e.into_inner()).entry(items.len()).or_default() += 1;
        // Frames prepared by another version (swapped in since) are prepared again.
        let inputs: Vec<Input> = items
            .iter_mut()
            .map(|(_, _, item)| match item.prepared.take() {
                Some((p, by)) if Arc::ptr_eq(&by, &pipeline) => Input::Prepared(p),
                _ => pipeline.input(&item.image),
            })
            .collect();
        count.record(inputs.len(), pipeline.inference_threads(Some(threads)));
        let predictions = pipeline.predict_inputs(inputs, top_k, Some(threads))?;
        for ((lane, seq, item), prediction) in items.into_iter().zip(predictions) {
            let answered = Answered {
                seq,
                index: item.index,
                time_s: item.time_s,
                arrived: item.arrived,
                image: item.image,
                prediction,
                version: version.clone(),
            };
            // An output thread that stopped (its limit reached) no longer listens.
            let _ = outputs[lane].send(answered);
        }
    }
    Ok(count)
}

/// Source names for events and the page, made unique (`cam.mp4`, `cam.mp4#2`).
fn unique_names(sources: &[Source]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in sources {
        let base = s.kind().name();
        let mut name = base.clone();
        let mut k = 2;
        while names.contains(&name) {
            name = format!("{base}#{k}");
            k += 1;
        }
        names.push(name);
    }
    names
}

/// Every source's recording path.
pub fn recording_paths(path: &std::path::Path, sources: usize) -> Vec<PathBuf> {
    (0..sources).map(|lane| recording_path(path, lane, sources)).collect()
}

/// `out.mp4` for one source; `out.mp4`, `out-2.mp4`... for several.
fn recording_path(path: &std::path::Path, lane: usize, sources: usize) -> PathBuf {
    if sources <= 1 || lane == 0 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!("{stem}-{}{ext}", lane + 1))
}
