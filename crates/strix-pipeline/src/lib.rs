//! A model ready to answer: a resolved [`ModelSpec`](strix_zoo::ModelSpec), a runtime session,
//! its preprocessor and its decoder. `strix predict`, the server and the benchmarks all go
//! through [`Pipeline`], so they give the same answers.
//!
//! ```no_run
//! use strix_pipeline::{Pipeline, BatchOptions};
//! use strix_runtime::{open, Backend, RuntimeOptions};
//! use strix_zoo::{locate, Resolver};
//! let model = Resolver::from_env().resolve(&locate("efficientnet_lite0")?, &strix_core::NoProgress)?;
//! let runtime = open(Backend::Tract, &RuntimeOptions::default())?;
//! let pipeline = Pipeline::load(model, runtime.as_ref())?;
//! let files = vec!["cat.jpg".into()];
//! pipeline.predict_files(&files, &BatchOptions::default(), &strix_core::NoProgress, |outcome| {
//!     println!("{}: {:?}", outcome.path.display(), outcome.result);
//! });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
pub mod rekognition;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::Serialize;
use strix_core::{Dim, Progress, ProgressUnit, Tensor};
use strix_runtime::{Backend, Runtime, Session};
use strix_vision::{
    Class, Classifier, DecodeLimits, Geometry, Layout, Preprocessor, RgbImage, decode_file,
};
use strix_zoo::{DecoderSpec, ResolvedModel};

pub use error::PipelineError;

/// One image's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Prediction {
    /// Ranked classes, best first.
    Labels { classes: Vec<Class> },
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
        BatchOptions {
            batch: 8,
            top_k: 5,
            limits: DecodeLimits::default(),
            workers: None,
        }
    }
}

/// How [`Pipeline::predict_files`] ran.
#[derive(Clone, Copy, Debug)]
pub struct RunStats {
    pub batch: usize,
    pub workers: usize,
    /// Threads per inference.
    pub threads: usize,
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

enum Decoder {
    Classify(Classifier),
}

pub struct Pipeline {
    model: ResolvedModel,
    backend: Backend,
    session: Box<dyn Session>,
    preprocessor: Preprocessor,
    /// The session's batch dimension when the model fixes it (many exports fix it at 1).
    fixed_batch: Option<usize>,
    output_index: usize,
    decoder: Decoder,
}

impl Pipeline {
    /// Load the model's weights in `runtime` and check that the ONNX graph matches its spec.
    pub fn load(model: ResolvedModel, runtime: &dyn Runtime) -> Result<Self, PipelineError> {
        let spec = &model.spec;
        let mismatch = |message: String| PipelineError::SpecMismatch {
            model: model.origin.clone(),
            message,
        };
        let preprocessor = Preprocessor::new(&spec.input, &spec.preprocess)?;
        let session = runtime.load(&model.weights)?;
        let inputs = session.inputs();
        if inputs.len() != 1 {
            return Err(mismatch(format!(
                "the ONNX graph has {} inputs ({}); image models take one",
                inputs.len(),
                inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let input = &inputs[0];
        if let Some(name) = &spec.input.name
            && *name != input.name
        {
            return Err(mismatch(format!(
                "input.name is {name:?} but the graph's input is {:?}",
                input.name
            )));
        }
        if input.dtype != spec.input.dtype.dtype() {
            return Err(mismatch(format!(
                "input.dtype is {} but the graph takes {}",
                spec.input.dtype.dtype(),
                input.describe()
            )));
        }
        let wanted = preprocessor.shape(1);
        let fits = input.shape.len() == 4
            && input.shape[1..]
                .iter()
                .zip(&wanted[1..])
                .all(|(d, &n)| d.fixed().is_none_or(|f| f == n));
        if !fits {
            let layout = match spec.input.layout {
                Layout::Nchw => "NCHW",
                Layout::Nhwc => "NHWC",
            };
            return Err(mismatch(format!(
                "the spec describes {}x{} {layout} input {:?} but the graph takes {}",
                spec.input.width,
                spec.input.height,
                wanted,
                input.describe()
            )));
        }
        let fixed_batch = match &input.shape[0] {
            Dim::Fixed(n) => Some((*n).max(1)),
            Dim::Symbolic(_) => None,
        };
        let decoder;
        let output_name;
        match &spec.decoder {
            DecoderSpec::Classify { softmax, output } => {
                decoder = Decoder::Classify(Classifier {
                    softmax: *softmax,
                    labels: model.labels.clone(),
                });
                output_name = output.clone();
            }
        }
        let outputs = session.outputs();
        let output_index = match &output_name {
            None => 0,
            Some(name) => outputs
                .iter()
                .position(|o| o.name == *name)
                .ok_or_else(|| {
                    mismatch(format!(
                        "decoder output {name:?} is not in the graph (outputs: {})",
                        outputs
                            .iter()
                            .map(|o| o.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
        };
        if outputs.is_empty() {
            return Err(mismatch("the graph has no outputs".into()));
        }
        Ok(Pipeline {
            backend: runtime.backend(),
            model,
            session,
            preprocessor,
            fixed_batch,
            output_index,
            decoder,
        })
    }

    pub fn model(&self) -> &ResolvedModel {
        &self.model
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn session(&self) -> &dyn Session {
        self.session.as_ref()
    }

    /// Images per inference for a requested batch size: the model's own if it fixes one.
    pub fn batch_size(&self, requested: usize) -> usize {
        self.fixed_batch.unwrap_or(requested.max(1))
    }

    /// Preprocess images in parallel into one input tensor.
    ///
    /// # Shapes
    /// Returns the model input for `images.len()` images (`[N, 3, H, W]` or `[N, H, W, 3]`).
    pub fn prepare(&self, images: &[&RgbImage]) -> (Tensor, Vec<Geometry>) {
        let n = self.preprocessor.sample_len();
        let mut data = vec![0f32; n * images.len()];
        let geometries = data
            .par_chunks_mut(n)
            .zip(images.par_iter())
            .map(|(slot, img)| self.preprocessor.run(img, slot))
            .collect();
        (
            self.preprocessor.into_tensor(data, images.len()),
            geometries,
        )
    }

    /// Run the model on a prepared batch and decode one prediction per image.
    pub fn infer(
        &self,
        input: Tensor,
        geometries: &[Geometry],
        top_k: usize,
    ) -> Result<Vec<Prediction>, PipelineError> {
        self.infer_with_threads(input, geometries, top_k, self.session.default_threads())
    }

    fn infer_with_threads(
        &self,
        input: Tensor,
        _geometries: &[Geometry],
        top_k: usize,
        threads: usize,
    ) -> Result<Vec<Prediction>, PipelineError> {
        let outputs = self
            .session
            .run_with_threads(std::slice::from_ref(&input), threads)?;
        let info = &self.session.outputs()[self.output_index];
        let output = outputs
            .get(self.output_index)
            .ok_or_else(|| PipelineError::SpecMismatch {
                model: self.model.origin.clone(),
                message: format!("the run returned no output `{}`", info.name),
            })?;
        match &self.decoder {
            Decoder::Classify(c) => {
                let classes = c.decode(output, &info.name, top_k)?;
                Ok(classes
                    .into_iter()
                    .map(|classes| Prediction::Labels { classes })
                    .collect())
            }
        }
    }

    /// Predict decoded images, batching as the model allows.
    pub fn predict_images(
        &self,
        images: &[RgbImage],
        opts: &BatchOptions,
    ) -> Result<Vec<Prediction>, PipelineError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch_size(opts.batch)) {
            let refs: Vec<&RgbImage> = chunk.iter().collect();
            let (input, geometries) = self.prepare(&refs);
            out.extend(self.infer(input, &geometries, opts.top_k)?);
        }
        Ok(out)
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
        let budget = self.session.default_threads().max(1);
        let workers = opts.workers.unwrap_or(budget).clamp(1, chunks.len().max(1));
        let threads = (budget / workers).max(1);
        tracing::debug!(batch, workers, threads, "predicting {} files", files.len());
        if let Err(e) = self.session.warm_up(threads, workers) {
            // Not fatal: the runs build what they need, and report their own errors.
            tracing::warn!("cannot prepare {workers} sessions: {e}");
        }
        let setup = started.elapsed();
        progress.start("classifying", Some(files.len() as u64), ProgressUnit::Items);
        let next = AtomicUsize::new(0);
        // Bounded: workers wait rather than pile up answers when the sink is slow.
        let (tx, rx) = crossbeam_channel::bounded::<(usize, Vec<Result<Prediction, PipelineError>>)>(
            workers * 2,
        );
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let (tx, next, chunks) = (tx.clone(), &next, &chunks);
                scope.spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(chunk) = chunks.get(i) else { break };
                        if tx.send((i, self.run_chunk(chunk, opts, threads))).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            // Answers come back in any order; hand them on in input order.
            let mut pending = BTreeMap::new();
            let mut due = 0;
            for (i, results) in rx {
                pending.insert(i, results);
                while let Some(results) = pending.remove(&due) {
                    for (offset, result) in results.into_iter().enumerate() {
                        let index = due * batch + offset;
                        sink(ImageOutcome {
                            index,
                            path: files[index].clone(),
                            result,
                        });
                        progress.advance(1);
                    }
                    due += 1;
                }
            }
        });
        progress.finish();
        RunStats {
            batch,
            workers,
            threads,
            setup,
            run: started.elapsed() - setup,
        }
    }

    /// Decode, preprocess and infer one batch of files; one result per file.
    fn run_chunk(
        &self,
        chunk: &[PathBuf],
        opts: &BatchOptions,
        threads: usize,
    ) -> Vec<Result<Prediction, PipelineError>> {
        let n = self.preprocessor.sample_len();
        let mut data = vec![0f32; n * chunk.len()];
        let prepared: Vec<Result<Geometry, PipelineError>> = data
            .chunks_mut(n)
            .zip(chunk)
            .map(|(slot, path)| {
                Ok(self
                    .preprocessor
                    .run(&decode_file(path, &opts.limits)?, slot))
            })
            .collect();
        let mut answers = self
            .infer_prepared(data, &prepared, opts.top_k, threads)
            .map(Vec::into_iter);
        prepared
            .into_iter()
            .map(|p| match (p, &mut answers) {
                (Err(e), _) => Err(e),
                (Ok(_), Ok(it)) => it
                    .next()
                    .ok_or_else(|| PipelineError::Internal("fewer answers than images".into())),
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
        let n = self.preprocessor.sample_len();
        let ok: Vec<(usize, Geometry)> = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().ok().map(|g| (i, *g)))
            .collect();
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
        let input = self.preprocessor.into_tensor(data, ok.len());
        self.infer_with_threads(input, &geometries, top_k, threads)
    }
}

#[cfg(test)]
mod tests {
    //! Batching logic against a small in-process session (the real engines are exercised by
    //! the integration tests; none of the fixture classifiers accepts a batch above 1).
    use std::path::Path;

    use strix_core::{DType, NoProgress, TensorInfo};
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
        fn run_with_threads(
            &self,
            inputs: &[Tensor],
            _: usize,
        ) -> Result<Vec<Tensor>, RuntimeError> {
            let x = inputs[0].as_f32().unwrap();
            let n = inputs[0].shape()[0];
            self.batches.lock().unwrap().push(n);
            let logits: Vec<f32> = x
                .chunks(4)
                .map(|plane| plane.iter().sum::<f32>() / 4.0)
                .collect();
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
            spec,
            weights: "rgb.onnx".into(),
            labels: vec!["red".into(), "green".into(), "blue".into()],
            origin: "test".into(),
        };
        let batches = Batches::default();
        (
            Pipeline::load(model, &TestRuntime(batches.clone())).unwrap(),
            batches,
        )
    }

    #[test]
    fn failed_images_are_left_out_of_the_batch_and_answers_stay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, rgb: [u8; 3]| {
            let p = dir.path().join(name);
            RgbImage::from_pixel(5, 3, image::Rgb(rgb))
                .save(&p)
                .unwrap();
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
            &BatchOptions {
                batch: 4,
                top_k: 1,
                workers: Some(1),
                ..Default::default()
            },
            &NoProgress,
            |o| {
                got.push((
                    o.index,
                    o.result
                        .ok()
                        .map(|Prediction::Labels { classes }| classes[0].label.clone()),
                ));
            },
        );
        let want: Vec<(usize, Option<String>)> = vec![
            (0, Some("red".into())),
            (1, None),
            (2, Some("green".into())),
            (3, None),
            (4, Some("blue".into())),
        ];
        assert_eq!(got, want);
        assert_eq!(
            *batches.lock().unwrap(),
            vec![2, 1],
            "the two failures are left out of the first batch"
        );
    }

    #[test]
    fn many_workers_still_answer_in_input_order() {
        let dir = tempfile::tempdir().unwrap();
        let colours = [[200, 0, 0], [0, 200, 0], [0, 0, 200]];
        let files: Vec<PathBuf> = (0..23)
            .map(|i| {
                let p = dir.path().join(format!("{i}.png"));
                if i % 5 != 4 {
                    RgbImage::from_pixel(3, 3, image::Rgb(colours[i % 3]))
                        .save(&p)
                        .unwrap();
                }
                p
            })
            .collect();
        let (p, _) = pipeline();
        let mut got = Vec::new();
        p.predict_files(
            &files,
            &BatchOptions {
                batch: 3,
                top_k: 1,
                workers: Some(3),
                ..Default::default()
            },
            &NoProgress,
            |o| {
                got.push((
                    o.index,
                    o.result
                        .ok()
                        .map(|Prediction::Labels { classes }| classes[0].class_id),
                ));
            },
        );
        let want: Vec<(usize, Option<usize>)> = (0..23)
            .map(|i| (i, (i % 5 != 4).then_some(i % 3)))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn batches_follow_the_requested_size() {
        let (p, batches) = pipeline();
        let images: Vec<RgbImage> = (0..5)
            .map(|i| RgbImage::from_pixel(2, 2, image::Rgb([i * 40, 0, 0])))
            .collect();
        let out = p
            .predict_images(
                &images,
                &BatchOptions {
                    batch: 2,
                    top_k: 3,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(out.len(), 5);
        assert_eq!(*batches.lock().unwrap(), vec![2, 2, 1]);
    }
}
