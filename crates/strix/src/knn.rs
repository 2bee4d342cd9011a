//! `strix train --model knn`: a k-NN classifier (SageMaker's built-in k-NN) over an embedding
//! model's vectors of the labelled images, and `strix export` / `strix eval` of its run folder.
//! The run folder holds knn.toml, neighbours.seg (the labelled vectors) and summary.json; the
//! export is one ONNX file with the vote inside, so it predicts, registers and serves as any
//! classifier does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use strix_core::{Progress, ProgressUnit};
use strix_data::ImageSet;
use strix_index::knn::{KNN_FILE, Knn, KnnRun, KnnSettings, NEIGHBOURS_FILE, VOTE_FLOOR};
use strix_pipeline::{BatchOptions, Pipeline};
use strix_train::classify::{DataParts, PartsSpec};
use strix_train::metrics::{Evaluation, Tally};
use strix_train::summary::{Objective, RunSummary, Stopped};
use strix_vision::{DecodeLimits, RgbImage};
use strix_zoo::ResolvedModel;

use crate::cli::{RuntimeArgs, TrainArgs};
use crate::context::AppContext;

/// Images per inference while embedding a dataset.
const CHUNK: usize = 32;

/// Whether the merged settings ask for a k-NN classifier.
pub fn asked(table: &toml::Table) -> bool {
    table.get("model").and_then(|v| v.as_str()) == Some("knn")
}

/// The vectors of a set's images, `None` for those that could not be read (with the reason).
pub(crate) struct Embedded {
    vectors: Vec<Option<Vec<f32>>>,
    unreadable: Vec<(String, String)>,
}

impl Embedded {
    /// The items that have a vector, and their vectors (unit, `d` wide) in one run.
    pub(crate) fn rows(self, d: usize) -> (Vec<usize>, Vec<f32>) {
        let (mut items, mut flat) = (Vec::new(), Vec::new());
        for (i, v) in self.vectors.into_iter().enumerate() {
            if let Some(v) = v.filter(|v| v.len() == d) {
                items.push(i);
                flat.extend(strix_vision::l2_normalised(&v));
            }
        }
        (items, flat)
    }
}

/// Every image of `set` through the embedding model, a bar counting them.
pub(crate) fn embed(pipeline: &Pipeline, set: &ImageSet, what: &str, bars: &dyn Progress) -> Result<Embedded> {
    let limits = DecodeLimits::default();
    let mut out = Embedded { vectors: Vec::with_capacity(set.len()), unreadable: Vec::new() };
    bars.start(what, Some(set.len() as u64), ProgressUnit::Items);
    for start in (0..set.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(set.len());
        let mut images: Vec<RgbImage> = Vec::with_capacity(end - start);
        let mut read = Vec::with_capacity(end - start);
        for i in start..end {
            match set.load(i, &limits) {
                Ok(img) => {
                    images.push(img.to_rgb8());
                    read.push(true);
                }
                Err(reason) => {
                    out.unreadable.push((set.name(i), reason));
                    read.push(false);
                }
            }
        }
        let predictions = pipeline.predict_images(&images, &BatchOptions::default())?;
        let mut vectors = predictions.iter().map(|p| strix_index::vectors_of(p).into_iter().next().map(|(_, v)| v));
        for ok in read {
            out.vectors.push(if ok { vectors.next().flatten() } else { None });
        }
        bars.advance((end - start) as u64);
    }
    bars.finish();
    Ok(out)
}

/// The embedding model, checked to be the one a run was built with when `expected` is given.
pub(crate) fn embedding_pipeline(
    ctx: &AppContext,
    reference: &str,
    expected: Option<&str>,
    threads: Option<usize>,
) -> Result<(ResolvedModel, Pipeline, strix_index::EmbeddingModel)> {
    let model = ctx.catalog().resolve(reference, &ctx.bars())?;
    let pipeline = ctx.load_pipeline(model.clone(), &RuntimeArgs { threads, ..RuntimeArgs::for_checks() })?;
    if pipeline.task() != strix_core::Task::Embed {
        bail!(
            "--embedding {reference} is a {} model; this compares whole-image embeddings: give an embed model \
             (efficientnet_lite0_embed, or a trained classifier's export/embed.toml)",
            pipeline.task()
        );
    }
    let identity = strix_index::embedding_model(&pipeline, reference)?;
    if let Some(sha) = expected.filter(|sha| **sha != identity.sha256) {
        bail!(
            "the run was built with {reference} weights {sha}, which now resolve to {}: the labelled vectors are of \
             other weights (build the run again)",
            identity.sha256
        );
    }
    Ok((model, pipeline, identity))
}

/// Score embedded images with the vote into an evaluation (log-shares as logits).
fn evaluate(knn: &Knn, set: &ImageSet, embedded: Embedded, keep_worst: usize) -> Evaluation {
    let mut tally = Tally::new(knn.classes.clone(), keep_worst);
    for (i, vector) in embedded.vectors.iter().enumerate() {
        match vector {
            Some(v) => {
                let logits: Vec<f32> = knn.scores(v).iter().map(|p| p.max(1e-12).ln()).collect();
                tally.add(i, set.items[i].label, &logits);
            }
            None if !embedded.unreadable.iter().any(|(n, _)| *n == set.name(i)) => {
                tally.unreadable(set.name(i), "the embedding model gave no vector".into());
            }
            None => {}
        }
    }
    for (name, reason) in embedded.unreadable {
        tally.unreadable(name, reason);
    }
    tally.finish()
}

fn default_run_dir() -> PathBuf {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    PathBuf::from(format!("runs/knn-{now}"))
}

/// `strix train --model knn`.
pub fn train(ctx: &AppContext, args: &TrainArgs, table: toml::Table, origin: &Path) -> Result<ExitCode> {
    if args.queue.is_some() || args.queue_config.is_some() {
        bail!("--model knn builds in seconds where it is asked; it is not queued (leave out --queue)");
    }
    let settings: KnnSettings = toml::Value::Table(table)
        .try_into()
        .map_err(|e| anyhow::anyhow!("{}: --model knn: {}", origin.display(), e.to_string().trim()))?;
    settings.check().map_err(|e| anyhow::anyhow!("{}: {e}", origin.display()))?;
    if let Some(n) = settings.threads.filter(|&n| n > 0) {
        // Only fails when the pool already exists; then it keeps its size.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
    let run_dir = settings.run_dir.clone().unwrap_or_else(default_run_dir);
    if run_dir.join(KNN_FILE).exists() || run_dir.join(strix_train::files::SUMMARY_FILE).exists() {
        bail!("{} already holds a run; give another --run-dir", run_dir.display());
    }
    let built = build(ctx, KnnSettings { run_dir: Some(run_dir.clone()), ..settings })?;
    std::fs::create_dir_all(&run_dir).with_context(|| run_dir.display().to_string())?;
    for (file, bytes) in [(NEIGHBOURS_FILE, built.knn.encode()), (KNN_FILE, built.run.to_toml().into_bytes())] {
        let path = run_dir.join(file);
        strix_core::fs::write_atomic(&path, &bytes).with_context(|| path.display().to_string())?;
    }
    let summary = &built.summary;
    summary.write()?;
    println!(
        "k-NN of {} labelled vectors built in {:.1} s: val {}{}",
        built.knn.len(),
        built.seconds,
        summary.val,
        summary.test.as_ref().map(|t| format!(", test {t}")).unwrap_or_default()
    );
    for c in &summary.per_class {
        let figures: Vec<String> = c.figures.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        println!("  {:<20} {}", crate::show::printable(&c.name), figures.join("  "));
    }
    println!("run: {}", run_dir.display());
    if !args.no_export {
        let options = strix_export::ExportOptions { engines: ctx.export_engines(), ..Default::default() };
        export(ctx, &run_dir, &options)
            .context("the k-NN run is built, but its ONNX export did not pass (retry with `strix export RUN_DIR`)")?;
    }
    if let Some(name) = &args.register {
        let record = crate::registry::register_run(ctx, &run_dir, name, None, None)?;
        crate::registry::print_registered(ctx, &record, false)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A k-NN built and scored, not yet written.
struct Built {
    knn: Knn,
    run: KnnRun,
    summary: RunSummary,
    /// Seconds the labelled images took (the build).
    seconds: f64,
}

/// Embed the labelled images into a k-NN, then score it on the validation (and test) images.
fn build(ctx: &AppContext, settings: KnnSettings) -> Result<Built> {
    let parts = DataParts::open(&parts_spec(&settings))?;
    let (_, pipeline, identity) = embedding_pipeline(ctx, &settings.embedding, None, settings.threads)?;
    let bars = ctx.bars();
    let classes = parts.train.classes.clone();
    if !ctx.quiet {
        eprintln!(
            "k-NN: {} labelled images of {} classes, {} validation images, vectors of {} ({}-d)",
            parts.train.len(),
            classes.len(),
            parts.val.len(),
            settings.embedding,
            identity.dimensions
        );
    }
    let started = std::time::Instant::now();
    let labelled = embed(&pipeline, &parts.train, "embedding the labelled images", &bars)?;
    let mut knn = Knn::new(settings.k, classes.clone(), identity.dimensions);
    let mut problems: Vec<String> = labelled.unreadable.iter().map(|(n, r)| format!("{n}: {r} (left out)")).collect();
    for (i, vector) in labelled.vectors.iter().enumerate() {
        let Some(v) = vector else { continue };
        let name = parts.train.name(i);
        match knn.push(parts.train.items[i].label, absolute_name(&name), v) {
            Ok(()) => {}
            // A vector with no direction (a blank image through a ReLU embedding) votes for
            // nothing: left out and named.
            Err(strix_index::IndexError::BadVector { reason, .. }) => {
                problems.push(format!("{name}: its vector {reason} (left out)"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if knn.is_empty() {
        bail!("no labelled image gave a usable vector");
    }
    let seconds = started.elapsed().as_secs_f64();
    let val = evaluate(&knn, &parts.val, embed(&pipeline, &parts.val, "embedding the validation images", &bars)?, 16);
    let test = match &parts.test {
        Some(t) => Some(evaluate(&knn, t, embed(&pipeline, t, "embedding the test images", &bars)?, 0)),
        None => None,
    };
    let run_dir = settings.run_dir.clone().unwrap_or_default();
    let run = KnnRun { settings, embedding: identity, classes };
    let summary = summary(&run, &knn, &val, test.as_ref(), problems, &run_dir);
    Ok(Built { knn, run, summary, seconds })
}

fn parts_spec(s: &KnnSettings) -> PartsSpec<'_> {
    PartsSpec {
        data: &s.data,
        val_data: s.val_data.as_deref(),
        test_data: s.test_data.as_deref(),
        classes: s.classes.as_deref(),
        val_fraction: s.val_fraction,
        max_images: s.max_images,
        seed: s.seed,
        test: s.test,
    }
}

/// An image's name with its path made absolute (an IDX image's `FILE#N` too).
fn absolute_name(name: &str) -> String {
    crate::inputs::absolute(Path::new(name)).display().to_string()
}

/// A k-NN run folder's settings and labelled vectors.
fn open_run(run_dir: &Path) -> Result<(KnnRun, Knn)> {
    let run = KnnRun::read_if_present(run_dir)?.with_context(|| format!("{}: no {KNN_FILE}", run_dir.display()))?;
    let knn = run.neighbours(run_dir)?;
    Ok((run, knn))
}

fn summary(
    run: &KnnRun,
    knn: &Knn,
    val: &Evaluation,
    test: Option<&Evaluation>,
    problems: Vec<String>,
    run_dir: &Path,
) -> RunSummary {
    RunSummary {
        task: strix_core::Task::Classify,
        run_dir: run_dir.to_path_buf(),
        epochs_run: 0,
        best_epoch: None,
        objective: Objective { metric: "val_accuracy".into(), maximize: true, tie_break: None },
        best_value: Some(val.accuracy),
        stopped: Stopped::Completed,
        val: val.scores(),
        test: test.map(Evaluation::scores),
        per_class: val.class_lines(),
        unreadable: problems.len() + val.unreadable.len() + test.map_or(0, |t| t.unreadable.len()),
        problems,
        notes: vec![format!(
            "k-NN: the {} most similar of {} labelled {} vectors vote, each with its cosine similarity",
            knn.k.min(knn.len()),
            knn.len(),
            run.settings.embedding
        )],
    }
}

/// `strix export RUN_DIR` of a k-NN run: the embedding graph and the vote in one ONNX file,
/// gated against the vote computed here on up to `gate_images` validation images; the labelled
/// vectors are copied beside it.
pub fn export(
    ctx: &AppContext,
    run_dir: &Path,
    options: &strix_export::ExportOptions,
) -> Result<strix_export::Exported> {
    let (run, knn) = open_run(run_dir)?;
    let (model, pipeline, _) =
        embedding_pipeline(ctx, &run.settings.embedding, Some(&run.embedding.sha256), run.settings.threads)?;
    let output = match &model.spec.decoder {
        strix_zoo::DecoderSpec::Embed(head) => head.output.clone(),
        _ => None,
    };
    let bytes = std::fs::read(&model.weights).with_context(|| model.weights.display().to_string())?;
    let metadata = vec![
        ("strix.classes".to_string(), run.classes.join("\n")),
        ("strix.knn".to_string(), format!("k={} vectors={} embedding={}", knn.k, knn.len(), run.settings.embedding)),
    ];
    let neighbours = strix_export::knn::Neighbours {
        vectors: &knn.vectors,
        dimensions: knn.dimensions,
        labels: &knn.labels,
        classes: &knn.classes,
        k: knn.k,
        floor: VOTE_FLOOR,
    };
    let proto = strix_export::knn::knn_model(&bytes, output.as_deref(), &neighbours, &metadata)?;
    let (images, shape, reference) = gate_inputs(&run, &knn, &model, &pipeline, options.gate_images)?;
    let dir = options.out_dir.clone().unwrap_or_else(|| run_dir.join(strix_export::EXPORT_DIR));
    let name = options.name.clone().unwrap_or_else(|| strix_export::name_from_dir(run_dir));
    let summary = format!(
        "k-NN (k = {}) over {} vectors of {} labelled images, {} classes",
        knn.k,
        run.settings.embedding,
        knn.len(),
        knn.classes.len()
    );
    if !ctx.quiet {
        let engines: Vec<String> = options.engines.backends.iter().map(|b| b.to_string()).collect();
        eprintln!(
            "exporting {} to ONNX; gate: {} validation images, the vote here against {}",
            run_dir.display(),
            shape[0],
            engines.join(", ")
        );
    }
    let gate = strix_export::knn::GateInput { images: &images, shape, reference: &reference };
    let exported = strix_export::knn::write_knn(run_dir, &dir, &proto, gate, options, |onnx| {
        strix_export::knn::knn_spec(&name, &model.spec, &knn.classes, onnx, summary)
    })?;
    let (from, to) = (run_dir.join(NEIGHBOURS_FILE), dir.join(NEIGHBOURS_FILE));
    // `--out RUN_DIR` puts the export beside the run's own copy: nothing to copy then.
    if from.canonicalize().ok() != to.canonicalize().ok() {
        let bytes = std::fs::read(&from).with_context(|| from.display().to_string())?;
        strix_core::fs::write_atomic(&to, &bytes).with_context(|| to.display().to_string())?;
    }
    println!("export: {} (spec {})", exported.onnx.display(), exported.spec.display());
    println!("gate passed: {}", exported.gate);
    Ok(exported)
}

/// Up to `n` validation images, preprocessed as the embedding model's spec says, and the vote
/// on the embedding model's vectors of the same images.
fn gate_inputs(
    run: &KnnRun,
    knn: &Knn,
    model: &ResolvedModel,
    pipeline: &Pipeline,
    n: usize,
) -> Result<(Vec<f32>, [usize; 4], Vec<f32>)> {
    let val = DataParts::open(&parts_spec(&run.settings))?.val;
    let (input, pre) = match (&model.spec.input, &model.spec.preprocess) {
        (Some(i), Some(p)) => (i, p),
        _ => bail!("{}: an embedding model without [input] and [preprocess]", run.settings.embedding),
    };
    let preprocessor = strix_vision::Preprocessor::new(input, pre)?;
    let count = n.clamp(1, val.len());
    let limits = DecodeLimits::default();
    let mut images = Vec::new();
    for i in (0..count).map(|i| i * val.len() / count) {
        if let Ok(img) = val.load(i, &limits) {
            images.push(img.to_rgb8());
        }
    }
    if images.is_empty() {
        bail!("no validation image could be read for the export gate");
    }
    let sample = preprocessor.sample_len();
    let mut tensor = vec![0f32; images.len() * sample];
    for (img, out) in images.iter().zip(tensor.chunks_exact_mut(sample)) {
        preprocessor.run(img, out);
    }
    let mut reference = Vec::with_capacity(images.len() * knn.classes.len());
    for p in pipeline.predict_images(&images, &BatchOptions::default())? {
        let (_, v) = strix_index::query_vector(&p).context("the embedding model gave no vector")?;
        reference.extend(knn.scores(&v));
    }
    let shape = preprocessor.shape(images.len());
    let shape: [usize; 4] = shape.try_into().map_err(|s| anyhow::anyhow!("input shape {s:?} is not NCHW"))?;
    Ok((tensor, shape, reference))
}

/// `strix eval RUN_DIR --data D` of a k-NN run.
pub fn eval(ctx: &AppContext, run_dir: &Path, set: &ImageSet) -> Result<Evaluation> {
    let (run, knn) = open_run(run_dir)?;
    let (_, pipeline, _) =
        embedding_pipeline(ctx, &run.settings.embedding, Some(&run.embedding.sha256), run.settings.threads)?;
    let embedded = embed(&pipeline, set, "embedding", &ctx.bars())?;
    Ok(evaluate(&knn, set, embedded, 16))
}
