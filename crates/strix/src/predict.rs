//! `strix predict`: images in, answers out.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use strix_pipeline::rekognition::{JsonLine, Response};
use strix_pipeline::{Answer, BatchOptions, ImageOutcome, Prediction, annotate};
use strix_vision::{DecodeLimits, decode_file, segment};

use crate::cli::PredictArgs;
use crate::context::AppContext;
use crate::inputs;

pub fn run(ctx: &AppContext, args: &PredictArgs) -> Result<ExitCode> {
    let bars = ctx.bars();
    let (files, problems) = inputs::expand(&args.images);
    for (path, problem) in &problems {
        eprintln!("error: {}: {problem}", path.display());
    }
    if files.is_empty() {
        bail!("no images to read");
    }
    for dir in [&args.save_annotated, &args.save_masks].into_iter().flatten() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let started = Instant::now();
    // Classification unless told otherwise (builtin::DEFAULT_CLASSIFIER).
    let model = ctx.catalog().resolve_for_task(args.model.as_deref(), args.task, strix_core::Task::Classify, &bars)?;
    let pipeline = ctx.load_pipeline(model, &args.runtime)?;
    let name = pipeline.model().spec.name.clone();
    let ready = Instant::now();
    tracing::info!(model = %name, backend = %pipeline.backend(), load_ms = (ready - started).as_millis() as u64, "model loaded");

    let options = BatchOptions {
        batch: args.batch as usize,
        top_k: args.top_k.max(1),
        limits: DecodeLimits { max_pixels: args.max_pixels, ..DecodeLimits::default() },
        workers: args.workers.map(|w| w as usize),
    };
    let mut failed = problems.len();
    let mut done = 0usize;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_error: Option<std::io::Error> = None;
    let mut names = OutputNames::default();
    let stats = pipeline.predict_files(&files, &options, &bars, |outcome: ImageOutcome| {
        let line = match &outcome.result {
            Ok(p) => {
                done += 1;
                let saved = save_outputs(args, &outcome.path, p, &options.limits, &mut names);
                let mask_file = match saved {
                    Ok(mask_file) => mask_file,
                    Err(e) => {
                        bars.suspend(|| eprintln!("error: {}: {e:#}", outcome.path.display()));
                        None
                    }
                };
                Some(render(&outcome.path, p, &name, args.json, mask_file.as_deref()))
            }
            Err(e) => {
                failed += 1;
                bars.suspend(|| eprintln!("error: {}: {e}", outcome.path.display()));
                args.json.then(|| JsonLine::new(&outcome.path.display().to_string(), Err(e), &name).to_line())
            }
        };
        if let Some(line) = line
            && write_error.is_none()
            && let Err(e) = bars.suspend(|| out.write_all(line.as_bytes()).and_then(|()| out.flush()))
        {
            write_error = Some(e);
        }
    });
    if let Some(e) = write_error {
        // A closed pipe (`| head`) is not worth an error message.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("cannot write results");
        }
    }
    if !ctx.quiet {
        // Throughput counts from the first image: loading the model is reported apart.
        let secs = stats.run.as_secs_f64();
        // What each worker did by its own count, after the plan (scripts parse the plan's text).
        let list = |f: fn(&strix_pipeline::WorkerCount) -> String| {
            stats.per_worker.iter().map(f).collect::<Vec<_>>().join(", ")
        };
        eprintln!(
            "{done} of {} images read by {name} ({}) on {} in {secs:.2} s ({:.1} images/s; \
             {} worker(s) x {} thread(s) [images per worker: {}; threads per worker: {}], batch {}; \
             model ready in {:.2} s){}",
            files.len() + problems.len(),
            pipeline.task(),
            pipeline.backend_version(),
            done as f64 / secs.max(1e-9),
            stats.workers,
            stats.threads,
            list(|w| w.images.to_string()),
            list(|w| w.threads.to_string()),
            stats.batch,
            (ready - started + stats.setup).as_secs_f64(),
            if failed > 0 { format!(", {failed} failed") } else { String::new() }
        );
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// File names for saved outputs, unique within the run (two `a.jpg` from different folders
/// become `a` and `a-2`).
#[derive(Default)]
struct OutputNames(HashSet<String>);

impl OutputNames {
    fn stem(&mut self, path: &Path) -> String {
        let base = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let mut stem = base.clone();
        let mut n = 1;
        while !self.0.insert(stem.clone()) {
            n += 1;
            stem = format!("{base}-{n}");
        }
        stem
    }
}

/// Write the annotated image and the mask PNG when asked; returns the mask's path.
fn save_outputs(
    args: &PredictArgs,
    path: &Path,
    p: &Prediction,
    limits: &DecodeLimits,
    names: &mut OutputNames,
) -> Result<Option<String>> {
    if args.save_annotated.is_none() && args.save_masks.is_none() {
        return Ok(None);
    }
    let stem = names.stem(path);
    let mut mask_file = None;
    if let (Some(dir), Answer::Mask { mask }) = (&args.save_masks, &p.answer) {
        let file: PathBuf = dir.join(format!("{stem}.mask.png"));
        std::fs::write(&file, segment::mask_png(mask)?).with_context(|| format!("cannot write {}", file.display()))?;
        mask_file = Some(file.display().to_string());
    }
    if let Some(dir) = &args.save_annotated {
        // Decoded again rather than kept from the run, so memory stays flat over many images.
        let mut img = decode_file(path, limits)?;
        annotate(&mut img, p);
        let file = dir.join(format!("{stem}.jpg"));
        img.save(&file).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(mask_file)
}

fn render(path: &Path, p: &Prediction, model: &str, json: bool, mask_file: Option<&str>) -> String {
    let image = path.display().to_string();
    if json {
        let mut line = JsonLine::new(&image, Ok(p), model);
        if let Some(Response::Segmentation { segmentation, .. }) = &mut line.response {
            segmentation.mask_file = mask_file.map(str::to_string);
        }
        return line.to_line();
    }
    let mut text = format!("{image}\n");
    let b = |b: &strix_core::BBox| format!("[{:.1}, {:.1}, {:.1}, {:.1}]", b.x1, b.y1, b.x2, b.y2);
    match &p.answer {
        Answer::Labels { classes } => {
            for c in classes {
                let _ = writeln!(text, "  {:>6.2}%  {} ({})", c.score * 100.0, c.label, c.class_id);
            }
        }
        Answer::Objects { objects } => {
            if objects.is_empty() {
                text.push_str("  no objects\n");
            }
            for d in objects {
                let _ = writeln!(text, "  {:>6.2}%  {:<14} {}", d.score * 100.0, d.label, b(&d.bbox));
            }
        }
        Answer::People { people } => {
            for person in people {
                let _ = writeln!(text, "  person {:.1}%  {}", person.score * 100.0, b(&person.bbox));
                for k in &person.keypoints {
                    let _ = writeln!(text, "    {:<15} {:>5.1}%  ({:.1}, {:.1})", k.name, k.score * 100.0, k.x, k.y);
                }
            }
        }
        Answer::Mask { mask } => {
            for (class, coverage) in
                mask.classes.iter().zip(mask.coverage()).skip(usize::from(mask.probability.is_some()))
            {
                let _ = writeln!(text, "  {:>6.2}%  of the image is {class}", coverage * 100.0);
            }
            if let Some(f) = mask_file {
                let _ = writeln!(text, "  mask: {f}");
            }
        }
        Answer::Faces { faces } => {
            if faces.is_empty() {
                text.push_str("  no faces\n");
            }
            for f in faces {
                let marks: Vec<String> =
                    f.landmarks.iter().map(|k| format!("{} ({:.0}, {:.0})", k.name, k.x, k.y)).collect();
                let _ = writeln!(text, "  face {:.1}%  {}  {}", f.score * 100.0, b(&f.bbox), marks.join(" "));
            }
        }
        Answer::Text { lines } => {
            if lines.is_empty() {
                text.push_str("  no text\n");
            }
            for l in lines {
                let _ = writeln!(text, "  {:>6.2}%  {:?}  {}", l.score * 100.0, l.text, b(&l.bbox()));
            }
        }
        Answer::Embedding { vector } => {
            let head: Vec<String> = vector.iter().take(6).map(|v| format!("{v:.4}")).collect();
            let _ = writeln!(
                text,
                "  embedding of {} values, unit length: [{}, ...] (--json for all)",
                vector.len(),
                head.join(", ")
            );
        }
    }
    text
}
