//! `strix predict`: images in, labels out.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use strix_pipeline::rekognition::{DetectLabels, ErrorBody};
use strix_pipeline::{BatchOptions, ImageOutcome, Pipeline, Prediction};
use strix_vision::DecodeLimits;

use crate::cli::{Global, PredictArgs};
use crate::progress::Bars;
use crate::{inputs, open_runtime, resolver};

/// One JSON line of `--json` output.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonLine {
    image: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    labels: Option<DetectLabels>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody>,
}

pub fn run(global: &Global, args: &PredictArgs) -> Result<ExitCode> {
    let bars = Bars::new(global.quiet);
    let (files, problems) = inputs::expand(&args.images);
    for (path, problem) in &problems {
        eprintln!("error: {}: {problem}", path.display());
    }
    if files.is_empty() {
        bail!("no images to classify");
    }

    let started = Instant::now();
    let located = strix_zoo::locate(&args.model)?;
    let model = resolver(global).resolve(&located, &bars)?;
    let runtime = open_runtime(&args.runtime)?;
    let name = model.spec.name.clone();
    let pipeline = Pipeline::load(model, runtime.as_ref())
        .with_context(|| format!("cannot load {name} with {}", args.runtime.backend))?;
    let ready = Instant::now();
    tracing::info!(model = %name, backend = %runtime.version(), load_ms = (ready - started).as_millis() as u64, "model loaded");

    let options = BatchOptions {
        batch: args.batch as usize,
        top_k: args.top_k.max(1),
        limits: DecodeLimits {
            max_pixels: args.max_pixels,
            ..DecodeLimits::default()
        },
        workers: args.workers.map(|w| w as usize),
    };
    let mut failed = problems.len();
    let mut done = 0usize;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_error: Option<std::io::Error> = None;
    let stats = pipeline.predict_files(&files, &options, &bars, |outcome: ImageOutcome| {
        let line = match &outcome.result {
            Ok(p) => {
                done += 1;
                render(&outcome, p, &name, args.json)
            }
            Err(e) => {
                failed += 1;
                bars.suspend(|| eprintln!("error: {}: {e}", outcome.path.display()));
                args.json.then(|| {
                    json_line(JsonLine {
                        image: outcome.path.display().to_string(),
                        labels: None,
                        error: Some(ErrorBody::from_error(e)),
                    })
                })
            }
        };
        if let Some(line) = line
            && write_error.is_none()
            && let Err(e) =
                bars.suspend(|| out.write_all(line.as_bytes()).and_then(|()| out.flush()))
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
    if !global.quiet {
        // Throughput counts from the first image: loading the model is reported apart.
        let secs = stats.run.as_secs_f64();
        eprintln!(
            "{done} of {} images classified with {name} on {} in {secs:.2} s ({:.1} images/s; \
             {} worker(s) x {} thread(s), batch {}; model ready in {:.2} s){}",
            files.len() + problems.len(),
            runtime.version(),
            done as f64 / secs.max(1e-9),
            stats.workers,
            stats.threads,
            stats.batch,
            (ready - started + stats.setup).as_secs_f64(),
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        );
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn render(
    outcome: &ImageOutcome,
    prediction: &Prediction,
    model: &str,
    json: bool,
) -> Option<String> {
    let image = outcome.path.display().to_string();
    if json {
        return Some(json_line(JsonLine {
            image,
            labels: Some(DetectLabels::from_prediction(prediction, model)),
            error: None,
        }));
    }
    let Prediction::Labels { classes } = prediction;
    let mut text = format!("{image}\n");
    for c in classes {
        text.push_str(&format!(
            "  {:>6.2}%  {} ({})\n",
            c.score * 100.0,
            c.label,
            c.class_id
        ));
    }
    Some(text)
}

fn json_line(line: JsonLine) -> String {
    let mut s = serde_json::to_string(&line).unwrap_or_else(|e| format!("{{\"Error\":\"{e}\"}}"));
    s.push('\n');
    s
}
