//! A model ready to answer: a resolved [`ModelSpec`](strix_zoo::ModelSpec), a runtime session,
//! its preprocessor and its decoder. `strix predict`, the server and the benchmarks all go
//! through [`Pipeline`], so they give the same answers.
//!
//! ```no_run
//! use strix_pipeline::{Pipeline, BatchOptions};
//! use strix_runtime::{open, Backend, RuntimeOptions};
//! use strix_zoo::{locate, Resolver};
//! let located = locate("efficientnet_lite0", "/home/me/.local/share/strix".as_ref())?;
//! let model = Resolver::new("/home/me/.cache/strix".into()).resolve(&located, &strix_core::NoProgress)?;
//! let runtime = open(Backend::Tract, &RuntimeOptions::default())?;
//! let pipeline = Pipeline::load(model, runtime.as_ref())?;
//! let files = vec!["cat.jpg".into()];
//! pipeline.predict_files(&files, &BatchOptions::default(), &strix_core::NoProgress, |outcome| {
//!     println!("{}: {:?}", outcome.path.display(), outcome.result);
//! });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod engine;
mod error;
pub mod rekognition;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use strix_core::{Progress, ProgressUnit, Tensor};
use strix_runtime::{Backend, Runtime, Session};
use strix_vision::{DecodeLimits, Geometry, Outputs, RgbImage, decode_file};
use strix_zoo::{MAIN, ResolvedModel, Task};

use engine::{Engine, SessionNets};
pub use error::PipelineError;

#[cfg(test)]
mod parallelism_tests {
    use super::Parallelism;

    #[test]
    fn threads_are_a_budget_and_workers_split_it() {
        let plan = |budget, workers, cascade| {
            let p = Parallelism::plan(budget, workers, cascade);
            (p.workers, p.threads)
        };
        assert_eq!(plan(2, None, false), (2, 1));
        assert_eq!(plan(2, Some(1), false), (1, 2));
        assert_eq!(plan(8, Some(2), false), (2, 4));
        assert_eq!(plan(1, Some(4), false), (4, 1));
        assert_eq!(plan(4, Some(3), true), (1, 4));
        assert_eq!(Parallelism::plan(4, None, false).at_most(1), Parallelism { workers: 1, threads: 4, budget: 4 });
    }
}

pub use strix_core::Answer;

/// One image's answer and the size of the image it refers to.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub width: u32,
    pub height: u32,
    pub answer: Answer,
}

/// Something that sees inputs and their answers go by (capture for labelling, in
/// `strix-label`). Called on the request or frame path, so it must decide and return at once.
pub trait Tap: Send + Sync + std::fmt::Debug {
    /// An encoded image (a request body) and `model`'s answer to it.
    fn encoded(&self, bytes: &[u8], model: &str, prediction: &Prediction);
    /// A decoded frame and `model`'s answer to it.
    fn frame(&self, image: &RgbImage, model: &str, prediction: &Prediction);
    /// Inputs it picked but could not keep so far, by reason, for a server's metrics.
    fn dropped(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// Several taps seeing the same answers (capture and a drift monitor).
#[derive(Debug)]
pub struct Taps(pub Vec<std::sync::Arc<dyn Tap>>);

impl Tap for Taps {
    fn encoded(&self, bytes: &[u8], model: &str, prediction: &Prediction) {
        self.0.iter().for_each(|t| t.encoded(bytes, model, prediction));
    }

    fn frame(&self, image: &RgbImage, model: &str, prediction: &Prediction) {
        self.0.iter().for_each(|t| t.frame(image, model, prediction));
    }

    fn dropped(&self) -> Vec<(&'static str, u64)> {
        self.0.iter().flat_map(|t| t.dropped()).collect()
    }
}

/// Draw an answer onto the image it is about.
pub fn annotate(img: &mut RgbImage, prediction: &Prediction) {
    use strix_vision::{draw, pose};
    match &prediction.answer {
        Answer::Labels { classes } => draw::labels(img, classes),
        Answer::Objects { objects } => draw::detections(img, objects),
        Answer::People { people } => {
            let coco = people.first().is_some_and(|p| {
                p.keypoints.len() == pose::COCO_KEYPOINTS.len()
                    && p.keypoints.iter().zip(pose::COCO_KEYPOINTS).all(|(k, n)| k.name == n)
            });
            let skeleton: &[(usize, usize)] = if coco { &pose::COCO_SKELETON } else { &[] };
            draw::poses(img, people, skeleton, 0.2);
        }
        Answer::Mask { mask } => draw::mask(img, mask),
        Answer::Faces { faces } => draw::faces(img, faces),
        Answer::Text { lines } => draw::text_lines(img, lines),
        // A vector has nothing to draw on the image.
        Answer::Embedding { .. } => {}
    }
}

/// The vectors an answer holds, for an index: an image's embedding (no box), or each described
/// face's descriptor with the face's box. Empty for other answers.
pub fn vectors(answer: &Answer) -> Vec<(Option<strix_core::BBox>, &[f32])> {
    match answer {
        Answer::Embedding { vector } => vec![(None, vector.as_slice())],
        Answer::Faces { faces } => faces
            .iter()
            .filter_map(|f| f.description.as_ref().map(|d| (Some(f.bbox), d.embedding.as_slice())))
            .collect(),
        _ => Vec::new(),
    }
}

/// An image preprocessed for a single-network model ([`Pipeline::prepare`]).
#[derive(Clone, Debug)]
pub struct Prepared {
    sample: Vec<f32>,
    geometry: Geometry,
}

/// An image on its way into a batch: preprocessed already (single-network models, done by the
/// pipeline that will answer it), or whole (cascades work on the image).
#[derive(Clone, Debug)]
pub enum Input {
    Prepared(Prepared),
    Image(std::sync::Arc<RgbImage>),
}

/// Answers put back in order: results that arrive out of order (parallel workers) wait until
/// the ones before them are in. Sequence numbers start at 0.
#[derive(Debug)]
pub struct InOrder<T> {
    next: u64,
    pending: BTreeMap<u64, T>,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        InOrder { next: 0, pending: BTreeMap::new() }
    }
}

impl<T> InOrder<T> {
    pub fn push(&mut self, seq: u64, item: T) {
        self.pending.insert(seq, item);
    }

    /// The next item in order, once it has arrived, with its sequence number.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        let item = self.pending.remove(&self.next)?;
        self.next += 1;
        Some((self.next - 1, item))
    }
}

/// How many images go through the model at once, and what each answer keeps.
#[derive(Clone, Copy, Debug)]
pub struct BatchOptions {
    /// Images per inference, capped by what the model accepts.
    pub batch: usize,
    /// Classes kept per image.
    pub top_k: usize,
    pub limits: DecodeLimits,
    /// Batches in flight at once in [`Pipeline::predict_files`], each on its share of the
    /// runtime's threads; `None` picks one per thread while there are enough batches.
    pub workers: Option<usize>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions { batch: 8, top_k: 5, limits: DecodeLimits::default(), workers: None }
    }
}

/// How many inferences run at once and on how many threads each: one rule for predict, serve
/// and stream. `--threads` sets the budget (the runtime's threads, default every core);
/// `--workers` the inferences in flight (default one per thread of the budget); each gets an
/// equal share of the budget. A cascade runs one image at a time on the whole budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Parallelism {
    pub workers: usize,
    /// Threads per inference.
    pub threads: usize,
    /// Threads in all.
    pub budget: usize,
}

impl Parallelism {
    pub fn plan(budget: usize, workers: Option<usize>, cascade: bool) -> Parallelism {
        let budget = budget.max(1);
        let workers = if cascade { 1 } else { workers.filter(|&w| w > 0).unwrap_or(budget) };
        Parallelism { workers, threads: (budget / workers).max(1), budget }
    }

    /// At most `jobs` workers (a short list of batches), the budget shared among those.
    pub fn at_most(self, jobs: usize) -> Parallelism {
        let workers = self.workers.clamp(1, jobs.max(1));
        Parallelism { workers, threads: (self.budget / workers).max(1), budget: self.budget }
    }
}

/// What one worker did, counted by the worker as it works rather than copied from the plan,
/// so a report of two workers shows whether two ran. Predict, stream and serve report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerCount {
    /// Inferences it ran.
    pub batches: u64,
    /// Images (files, frames, requests) in them.
    pub images: u64,
    /// Threads it gave its last inference (0 before its first).
    pub threads: usize,
}

impl WorkerCount {
    /// Count one inference of `images` on `threads` threads.
    pub fn record(&mut self, images: usize, threads: usize) {
        self.batches += 1;
        self.images += images as u64;
        self.threads = threads;
    }
}

/// How [`Pipeline::predict_files`] ran.
#[derive(Clone, Debug)]
pub struct RunStats {
    pub batch: usize,
    /// Workers planned.
    pub workers: usize,
    /// Threads per inference, planned.
    pub threads: usize,
    /// What each worker started did, by its own count.
    pub per_worker: Vec<WorkerCount>,
    /// Getting sessions ready for the workers (before the first image).
    pub setup: std::time::Duration,
    /// From the first image to the last answer.
    pub run: std::time::Duration,
}

/// The result for one file of [`Pipeline::predict_files`].
#[derive(Debug)]
pub struct ImageOutcome {
    /// Position in the input list.
    pub index: usize,
    pub path: PathBuf,
    pub result: Result<Prediction, PipelineError>,
}

pub struct Pipeline {
    model: ResolvedModel,
    backend: Backend,
    /// Engine name and version, e.g. `onnxruntime 1.31.1`.
    backend_version: String,
    /// `main` and the cascade's other networks.
    sessions: BTreeMap<String, Box<dyn Session>>,
    /// Names of the main network's outputs, in order.
    output_names: Vec<String>,
    engine: Engine,
}

/// The main network, with the tensors inside it that its decoder reads (an embedding's pooled
/// features) read out as outputs.
fn load_main(model: &ResolvedModel, runtime: &dyn Runtime) -> Result<Box<dyn Session>, PipelineError> {
    let session = runtime.load(&model.weights)?;
    let strix_zoo::Head::Single(decoder) = model.spec.decoder.head() else { return Ok(session) };
    let have: Vec<&str> = session.outputs().iter().map(|o| o.name.as_str()).collect();
    let inner: Vec<String> = decoder.outputs().into_iter().filter(|n| !have.contains(n)).map(String::from).collect();
    if inner.is_empty() {
        return Ok(session);
    }
    Ok(runtime.load_with_outputs(&model.weights, &inner)?)
}

impl Pipeline {
    /// Load the model's networks in `runtime` and check the graphs against the spec.
    pub fn load(model: ResolvedModel, runtime: &dyn Runtime) -> Result<Self, PipelineError> {
        let mut sessions = BTreeMap::new();
        sessions.insert(MAIN.to_string(), load_main(&model, runtime)?);
        for (name, path) in &model.networks {
            sessions.insert(name.clone(), runtime.load(path)?);
        }
        let engine = Engine::new(&model, &sessions)?;
        let output_names = sessions[MAIN].outputs().iter().map(|o| o.name.clone()).collect();
        Ok(Pipeline {
            backend: runtime.backend(),
            backend_version: runtime.version(),
            model,
            sessions,
            output_names,
            engine,
        })
    }

    pub fn model(&self) -> &ResolvedModel {
        &self.model
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Engine name and version, e.g. `onnxruntime 1.31.1`.
    pub fn backend_version(&self) -> &str {
        &self.backend_version
    }

    pub fn task(&self) -> Task {
        self.model.spec.task
    }

    /// The `main` network's session.
    pub fn session(&self) -> &dyn Session {
        self.sessions[MAIN].as_ref()
    }

    /// Images per inference for a requested batch size: the model's own if it fixes one, one
    /// for cascades.
    pub fn batch_size(&self, requested: usize) -> usize {
        match &self.engine {
            Engine::Single { fixed_batch, .. } => fixed_batch.unwrap_or(requested.max(1)),
            Engine::Cascade(_) => 1,
        }
    }

    /// Answers for decoded images, batching as the model allows.
    pub fn predict_images(&self, images: &[RgbImage], opts: &BatchOptions) -> Result<Vec<Prediction>, PipelineError> {
        let threads = self.session().default_threads();
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch_size(opts.batch)) {
            let refs: Vec<&RgbImage> = chunk.iter().collect();
            out.extend(self.predict_batch(&refs, opts.top_k, threads)?);
        }
        Ok(out)
    }

    /// Workers and threads for `workers` inferences in flight ([`Parallelism::plan`] on this
    /// model's thread budget).
    pub fn parallelism(&self, workers: Option<usize>) -> Parallelism {
        Parallelism::plan(self.session().default_threads(), workers, self.is_cascade())
    }

    /// The threads an inference asked to run on `threads` ([`Self::predict_inputs`]) runs on:
    /// the session's default for `None`, and for cascades, which keep their own threading.
    pub fn inference_threads(&self, threads: Option<usize>) -> usize {
        let default = self.session().default_threads();
        if self.is_cascade() { default } else { threads.unwrap_or(default).max(1) }
    }

    /// Whether this is a cascade (several networks run per image), which works on whole images:
    /// a cascade decoder, or a model that describes what it finds in crops of the image.
    pub fn is_cascade(&self) -> bool {
        matches!(self.engine, Engine::Cascade(_)) || self.model.spec.describe.is_some()
    }

    /// Preprocess one image for [`Self::predict_prepared`], so a server can do this work per
    /// request, in parallel, outside the model's batch. `None` for cascades (they work on
    /// whole images: use [`Self::predict_images`]).
    pub fn prepare(&self, img: &RgbImage) -> Option<Prepared> {
        if self.is_cascade() {
            return None;
        }
        let Engine::Single { preprocessor, .. } = &self.engine else { return None };
        let mut sample = vec![0f32; preprocessor.sample_len()];
        let geometry = preprocessor.run(img, &mut sample);
        Some(Prepared { sample, geometry })
    }

    /// The model's input tensor for a batch of prepared images (what [`Self::predict_prepared`]
    /// feeds the network), for tools that run the network themselves (calibration).
    pub fn input_tensor(&self, batch: &[Prepared]) -> Result<Tensor, PipelineError> {
        let Engine::Single { preprocessor, .. } = &self.engine else {
            return Err(PipelineError::Internal("a cascade takes images, not prepared samples".into()));
        };
        let data: Vec<f32> = batch.iter().flat_map(|p| p.sample.iter().copied()).collect();
        Ok(preprocessor.into_tensor(data, batch.len()))
    }

    /// How small an image of `width` x `height` may be decoded for this model
    /// ([`strix_vision::decode_bytes_reduced`]); 1.0 (whole) for cascades, which look at
    /// image regions at their own scales.
    pub fn min_source_scale(&self, width: u32, height: u32) -> f64 {
        match &self.engine {
            Engine::Single { preprocessor, .. } if !self.is_cascade() => preprocessor.min_source_scale(width, height),
            _ => 1.0,
        }
    }

    /// A reduced decode as this model takes it into a batch: preprocessed with its geometry
    /// mapped back to the full image, so answers are in the full image's pixels.
    pub fn input_reduced(&self, reduced: strix_vision::Reduced) -> Input {
        let strix_vision::Reduced { image, full_width, full_height } = reduced;
        match self.prepare(&image) {
            Some(mut prepared) => {
                let g = &mut prepared.geometry;
                let kx = f64::from(full_width) / f64::from(image.width().max(1));
                let ky = f64::from(full_height) / f64::from(image.height().max(1));
                g.scale = [(f64::from(g.scale[0]) * kx) as f32, (f64::from(g.scale[1]) * ky) as f32];
                g.offset = [(f64::from(g.offset[0]) * kx) as f32, (f64::from(g.offset[1]) * ky) as f32];
                g.source_width = full_width;
                g.source_height = full_height;
                Input::Prepared(prepared)
            }
            None => Input::Image(std::sync::Arc::new(image)),
        }
    }

    /// `img` as this model takes it into a batch: preprocessed, or whole for a cascade.
    pub fn input(&self, img: &std::sync::Arc<RgbImage>) -> Input {
        match self.prepare(img) {
            Some(prepared) => Input::Prepared(prepared),
            None => Input::Image(img.clone()),
        }
    }

    /// Answers for a batch of inputs made by [`Self::input`], in their order: the prepared ones
    /// as one inference on `threads` threads, whole images one by one through the cascade.
    pub fn predict_inputs(
        &self,
        inputs: Vec<Input>,
        top_k: usize,
        threads: Option<usize>,
    ) -> Result<Vec<Prediction>, PipelineError> {
        let n = inputs.len();
        let (mut prepared, mut images) = (Vec::new(), Vec::new());
        for (i, input) in inputs.into_iter().enumerate() {
            match input {
                Input::Prepared(p) => prepared.push((i, p)),
                Input::Image(img) => images.push((i, img)),
            }
        }
        let mut out: Vec<Option<Prediction>> = vec![None; n];
        if !prepared.is_empty() {
            let (at, batch): (Vec<usize>, Vec<Prepared>) = prepared.into_iter().unzip();
            for (i, p) in at.into_iter().zip(self.predict_prepared(batch, top_k, threads)?) {
                out[i] = Some(p);
            }
        }
        let opts = BatchOptions { batch: 1, top_k, ..Default::default() };
        for (i, img) in images {
            out[i] = self.predict_images(std::slice::from_ref(&*img), &opts)?.pop();
        }
        out.into_iter().map(|p| p.ok_or_else(|| PipelineError::Internal("an input got no answer".into()))).collect()
    }

    /// Answers for prepared images, as one inference on `threads` threads (`None`: the
    /// session's default); callers keep batches within [`Self::batch_size`].
    pub fn predict_prepared(
        &self,
        batch: Vec<Prepared>,
        top_k: usize,
        threads: Option<usize>,
    ) -> Result<Vec<Prediction>, PipelineError> {
        let Engine::Single { preprocessor, .. } = &self.engine else {
            return Err(PipelineError::Internal("a cascade takes images, not prepared samples".into()));
        };
        let n = batch.len();
        let mut geometries = Vec::with_capacity(n);
        let data = if n == 1 {
            // One image (what a stream's workers run): its sample is the batch, no copy.
            let p = batch.into_iter().next().expect("one prepared image");
            geometries.push(p.geometry);
            p.sample
        } else {
            let mut data = Vec::with_capacity(n * preprocessor.sample_len());
            for p in batch {
                data.extend_from_slice(&p.sample);
                geometries.push(p.geometry);
            }
            data
        };
        self.infer(preprocessor.into_tensor(data, n), &geometries, top_k, self.inference_threads(threads))
    }

    /// One batch of decoded images through the engine (preprocessed in parallel).
    fn predict_batch(
        &self,
        images: &[&RgbImage],
        top_k: usize,
        threads: usize,
    ) -> Result<Vec<Prediction>, PipelineError> {
        match &self.engine {
            Engine::Cascade(spec) => images
                .iter()
                .map(|img| {
                    let nets = SessionNets { sessions: &self.sessions, threads };
                    let mut answer = Engine::cascade(spec)?.run(img, &nets, &self.model.labels)?;
                    self.describe(img, &mut answer, threads)?;
                    Ok(Prediction { width: img.width(), height: img.height(), answer })
                })
                .collect(),
            Engine::Single { preprocessor, .. } => {
                let n = preprocessor.sample_len();
                let mut data = vec![0f32; n * images.len()];
                let geometries: Vec<Geometry> = data
                    .par_chunks_mut(n)
                    .zip(images.par_iter())
                    .map(|(slot, img)| preprocessor.run(img, slot))
                    .collect();
                let mut out = self.infer(preprocessor.into_tensor(data, images.len()), &geometries, top_k, threads)?;
                for (prediction, img) in out.iter_mut().zip(images) {
                    self.describe(img, &mut prediction.answer, threads)?;
                }
                Ok(out)
            }
        }
    }

    /// Run the spec's face description network on the faces of `answer`, if it has one.
    fn describe(&self, img: &RgbImage, answer: &mut Answer, threads: usize) -> Result<(), PipelineError> {
        let (Some(describer), Answer::Faces { faces }) = (&self.model.spec.describe, answer) else { return Ok(()) };
        let nets = SessionNets { sessions: &self.sessions, threads };
        Ok(describer.describe(img, faces, &nets)?)
    }

    /// Run the main network on a prepared batch and decode one prediction per image.
    fn infer(
        &self,
        input: Tensor,
        geometries: &[Geometry],
        top_k: usize,
        threads: usize,
    ) -> Result<Vec<Prediction>, PipelineError> {
        let Engine::Single { preprocessor, decoder, .. } = &self.engine else {
            return Err(PipelineError::Internal("a cascade has no single inference".into()));
        };
        let decoder = Engine::decoder(decoder)?;
        let size = (preprocessor.input().width, preprocessor.input().height);
        // Decoded where the engine holds the outputs: a detector's are megabytes a frame.
        let mut decoded = None;
        self.session().run_borrowed(std::slice::from_ref(&input), threads, &mut |views| {
            let outputs = Outputs::borrowed(&self.output_names, views);
            decoded = Some(decoder.decode(&outputs, geometries, size, &self.model.labels, top_k));
        })?;
        let answers = decoded
            .ok_or_else(|| PipelineError::Internal("the runtime returned without handing over its outputs".into()))??;
        if answers.len() != geometries.len() {
            return Err(PipelineError::Internal(format!("{} answers for {} images", answers.len(), geometries.len())));
        }
        Ok(answers
            .into_iter()
            .zip(geometries)
            .map(|(answer, g)| Prediction { width: g.source_width, height: g.source_height, answer })
            .collect())
    }

    /// Predict image files, handing each outcome to `sink` in input order. Batches go to
    /// workers, each decoding, preprocessing and inferring its batch on its share of the
    /// threads (for models that take one image at a time this beats spreading one inference
    /// over every core); a file that cannot be read gets its own error and the others carry on.
    pub fn predict_files(
        &self,
        files: &[PathBuf],
        opts: &BatchOptions,
        progress: &dyn Progress,
        mut sink: impl FnMut(ImageOutcome),
    ) -> RunStats {
        let started = std::time::Instant::now();
        let batch = self.batch_size(opts.batch);
        let chunks: Vec<&[PathBuf]> = files.chunks(batch).collect();
        let Parallelism { workers, threads, .. } = self.parallelism(opts.workers).at_most(chunks.len());
        tracing::debug!(batch, workers, threads, "predicting {} files", files.len());
        for session in self.sessions.values() {
            if let Err(e) = session.warm_up(threads, workers) {
                // Not fatal: the runs build what they need, and report their own errors.
                tracing::warn!("cannot prepare {workers} sessions: {e}");
            }
        }
        let setup = started.elapsed();
        progress.start(
            &format!("{} {}", self.model.spec.name, self.task()),
            Some(files.len() as u64),
            ProgressUnit::Items,
        );
        let next = AtomicUsize::new(0);
        // Bounded: workers wait rather than pile up answers when the sink is slow.
        let (tx, rx) = crossbeam_channel::bounded::<(usize, Vec<Result<Prediction, PipelineError>>)>(workers * 2);
        let per_worker = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let (tx, next, chunks) = (tx.clone(), &next, &chunks);
                    scope.spawn(move || {
                        let mut count = WorkerCount::default();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(chunk) = chunks.get(i) else { break };
                            count.record(chunk.len(), self.inference_threads(Some(threads)));
                            if tx.send((i, self.run_chunk(chunk, opts, threads))).is_err() {
                                break;
                            }
                        }
                        count
                    })
                })
                .collect();
            drop(tx);
            // Answers come back in any order; hand them on in input order.
            let mut order = InOrder::default();
            for (i, results) in rx {
                order.push(i as u64, results);
                while let Some((due, results)) = order.pop() {
                    for (offset, result) in results.into_iter().enumerate() {
                        let index = due as usize * batch + offset;
                        sink(ImageOutcome { index, path: files[index].clone(), result });
                        progress.advance(1);
                    }
                }
            }
            // A worker's panic still ends the run, as it did when the scope joined them.
            handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        });
        progress.finish();
        RunStats { batch, workers, threads, per_worker, setup, run: started.elapsed() - setup }
    }

    /// Decode, preprocess and infer one batch of files; one result per file.
    fn run_chunk(
        &self,
        chunk: &[PathBuf],
        opts: &BatchOptions,
        threads: usize,
    ) -> Vec<Result<Prediction, PipelineError>> {
        let preprocessor = match &self.engine {
            Engine::Single { preprocessor, .. } if !self.is_cascade() => preprocessor,
            _ => {
                // Whole images: a cascade, or a model that describes crops of what it finds.
                return chunk
                    .iter()
                    .map(|path| {
                        let img = decode_file(path, &opts.limits)?;
                        let mut answers = self.predict_batch(&[&img], opts.top_k, threads)?;
                        answers.pop().ok_or_else(|| PipelineError::Internal("no answer".into()))
                    })
                    .collect();
            }
        };
        let n = preprocessor.sample_len();
        let mut data = vec![0f32; n * chunk.len()];
        let prepared: Vec<Result<Geometry, PipelineError>> = data
            .chunks_mut(n)
            .zip(chunk)
            .map(|(slot, path)| Ok(preprocessor.run(&decode_file(path, &opts.limits)?, slot)))
            .collect();
        let mut answers = self.infer_prepared(data, &prepared, opts.top_k, threads).map(Vec::into_iter);
        prepared
            .into_iter()
            .map(|p| match (p, &mut answers) {
                (Err(e), _) => Err(e),
                (Ok(_), Ok(it)) => it.next().ok_or_else(|| PipelineError::Internal("fewer answers than images".into())),
                (Ok(_), Err(e)) => Err(PipelineError::Batch(e.to_string())),
            })
            .collect()
    }

    /// Infer the images of a prepared batch that decoded, leaving out the slots that failed.
    fn infer_prepared(
        &self,
        mut data: Vec<f32>,
        results: &[Result<Geometry, PipelineError>],
        top_k: usize,
        threads: usize,
    ) -> Result<Vec<Prediction>, PipelineError> {
        let Engine::Single { preprocessor, .. } = &self.engine else {
            return Err(PipelineError::Internal("a cascade has no batch to infer".into()));
        };
        let n = preprocessor.sample_len();
        let ok: Vec<(usize, Geometry)> =
            results.iter().enumerate().filter_map(|(i, r)| r.as_ref().ok().map(|g| (i, *g))).collect();
        if ok.is_empty() {
            return Ok(Vec::new());
        }
        if ok.len() < results.len() {
            for (dst, (src, _)) in ok.iter().enumerate() {
                data.copy_within(src * n..(src + 1) * n, dst * n);
            }
            data.truncate(ok.len() * n);
        }
        let geometries: Vec<Geometry> = ok.iter().map(|(_, g)| *g).collect();
        let input = preprocessor.into_tensor(data, ok.len());
        self.infer(input, &geometries, top_k, threads)
    }
}

#[cfg(test)]
mod tests {
    //! Batching logic against a small in-process session (the real engines are exercised by
    //! the integration tests; none of the fixture classifiers accepts a batch above 1).
    use std::path::Path;

    use strix_core::{DType, Dim, NoProgress, TensorInfo};
    use strix_runtime::RuntimeError;
    use strix_zoo::ModelSpec;

    use super::*;

    /// Logits = mean of each channel, for a dynamic batch of NCHW 2x2 images.
    struct ChannelMeans {
        inputs: Vec<TensorInfo>,
        outputs: Vec<TensorInfo>,
        batches: Batches,
    }

    type Batches = std::sync::Arc<std::sync::Mutex<Vec<usize>>>;

    fn top(p: &Prediction) -> &strix_core::Class {
        match &p.answer {
            Answer::Labels { classes } => &classes[0],
            other => panic!("not labels: {other:?}"),
        }
    }

    impl Session for ChannelMeans {
        fn inputs(&self) -> &[TensorInfo] {
            &self.inputs
        }
        fn outputs(&self) -> &[TensorInfo] {
            &self.outputs
        }
        fn default_threads(&self) -> usize {
            2
        }
        fn run_with_threads(&self, inputs: &[Tensor], _: usize) -> Result<Vec<Tensor>, RuntimeError> {
            let x = inputs[0].as_f32().unwrap();
            let n = inputs[0].shape()[0];
            self.batches.lock().unwrap().push(n);
            let logits: Vec<f32> = x.chunks(4).map(|plane| plane.iter().sum::<f32>() / 4.0).collect();
            Ok(vec![Tensor::from_f32(vec![n, 3], logits).unwrap()])
        }
    }

    struct TestRuntime(Batches);

    impl Runtime for TestRuntime {
        fn backend(&self) -> Backend {
            Backend::Tract
        }
        fn version(&self) -> String {
            "test".into()
        }
        fn load_with_outputs(&self, model: &Path, _: &[String]) -> Result<Box<dyn Session>, RuntimeError> {
            self.load(model)
        }
        fn load(&self, _: &Path) -> Result<Box<dyn Session>, RuntimeError> {
            let dim = |n| Dim::Fixed(n);
            Ok(Box::new(ChannelMeans {
                inputs: vec![TensorInfo {
                    name: "x".into(),
                    dtype: DType::F32,
                    shape: vec![Dim::Symbolic("N".into()), dim(3), dim(2), dim(2)],
                }],
                outputs: vec![TensorInfo {
                    name: "y".into(),
                    dtype: DType::F32,
                    shape: vec![Dim::Symbolic("N".into()), dim(3)],
                }],
                batches: self.0.clone(),
            }))
        }
    }

    fn pipeline() -> (Pipeline, Batches) {
        let spec = ModelSpec::from_toml(
            r#"
name = "rgb"
task = "classify"
[weights]
file = "rgb.onnx"
[labels]
names = ["red", "green", "blue"]
[input]
layout = "nchw"
width = 2
height = 2
[preprocess]
resize = { mode = "stretch" }
[decoder]
kind = "classify"
softmax = false
"#,
            "test",
        )
        .unwrap();
        let model = ResolvedModel {
            networks: Default::default(),
            spec,
            weights: "rgb.onnx".into(),
            labels: vec!["red".into(), "green".into(), "blue".into()],
            origin: "test".into(),
            version: None,
        };
        let batches = Batches::default();
        (Pipeline::load(model, &TestRuntime(batches.clone())).unwrap(), batches)
    }

    #[test]
    fn failed_images_are_left_out_of_the_batch_and_answers_stay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, rgb: [u8; 3]| {
            let p = dir.path().join(name);
            RgbImage::from_pixel(5, 3, image::Rgb(rgb)).save(&p).unwrap();
            p
        };
        let files = vec![
            write("r.png", [200, 0, 0]),
            dir.path().join("missing.png"),
            write("g.png", [0, 200, 0]),
            dir.path().join("also-missing.png"),
            write("b.png", [0, 0, 200]),
        ];
        let (p, batches) = pipeline();
        let mut got = Vec::new();
        p.predict_files(
            &files,
            &BatchOptions { batch: 4, top_k: 1, workers: Some(1), ..Default::default() },
            &NoProgress,
            |o| {
                got.push((o.index, o.result.ok().map(|p| top(&p).label.clone())));
            },
        );
        let want: Vec<(usize, Option<String>)> =
            vec![(0, Some("red".into())), (1, None), (2, Some("green".into())), (3, None), (4, Some("blue".into()))];
        assert_eq!(got, want);
        assert_eq!(*batches.lock().unwrap(), vec![2, 1], "the two failures are left out of the first batch");
    }

    #[test]
    fn many_workers_still_answer_in_input_order() {
        let dir = tempfile::tempdir().unwrap();
        let colours = [[200, 0, 0], [0, 200, 0], [0, 0, 200]];
        let files: Vec<PathBuf> = (0..23)
            .map(|i| {
                let p = dir.path().join(format!("{i}.png"));
                if i % 5 != 4 {
                    RgbImage::from_pixel(3, 3, image::Rgb(colours[i % 3])).save(&p).unwrap();
                }
                p
            })
            .collect();
        let (p, _) = pipeline();
        let mut got = Vec::new();
        let stats = p.predict_files(
            &files,
            &BatchOptions { batch: 3, top_k: 1, workers: Some(3), ..Default::default() },
            &NoProgress,
            |o| {
                got.push((o.index, o.result.ok().map(|p| top(&p).class_id)));
            },
        );
        let want: Vec<(usize, Option<usize>)> = (0..23).map(|i| (i, (i % 5 != 4).then_some(i % 3))).collect();
        assert_eq!(got, want);
        // Each worker started counts itself; which took how many is up to the scheduler.
        assert_eq!(stats.per_worker.len(), 3, "{stats:?}");
        assert_eq!(stats.per_worker.iter().map(|w| w.images).sum::<u64>(), 23, "{stats:?}");
        assert_eq!(stats.per_worker.iter().map(|w| w.batches).sum::<u64>(), 8, "{stats:?}");
        assert!(
            stats.per_worker.iter().all(|w| w.batches == 0 || w.threads == 1),
            "a third of 2, at least 1: {stats:?}"
        );
    }

    #[test]
    fn batches_follow_the_requested_size() {
        let (p, batches) = pipeline();
        let images: Vec<RgbImage> = (0..5).map(|i| RgbImage::from_pixel(2, 2, image::Rgb([i * 40, 0, 0]))).collect();
        let out = p.predict_images(&images, &BatchOptions { batch: 2, top_k: 3, ..Default::default() }).unwrap();
        assert_eq!(out.len(), 5);
        assert_eq!(*batches.lock().unwrap(), vec![2, 2, 1]);
    }
}
