//! `strix monitor quality`: a registered classifier scored on the captured images people have
//! labelled since, against the validation figures it was registered with.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::json;
use strix_monitor::quality::{Figure, classification};
use strix_pipeline::BatchOptions;
use strix_registry::ModelRef;

use crate::cli::MonitorQualityArgs;
use crate::context::AppContext;

/// Exit status when a figure dropped too far (as `monitor run` on violations).
const VIOLATIONS: u8 = 3;

/// Accuracy and macro-F1 on the validation images, from the version's lineage.
fn validation_figures(ctx: &AppContext, model: &str) -> Result<(String, f64, f64)> {
    let session = crate::registry::session(ctx)?;
    let record = session.run(session.registry.get(&ModelRef::parse(model)?))?;
    let label = format!("{}:{}", record.name, record.version);
    let summary: strix_train::RunSummary = record
        .lineage
        .metrics
        .clone()
        .map(serde_json::from_value)
        .transpose()
        .with_context(|| format!("{label}'s recorded metrics"))?
        .with_context(|| format!("{label} was registered without a run's figures: nothing to compare with"))?;
    let strix_train::Scores::Classify { accuracy, .. } = summary.val else {
        bail!("{label} is not a classifier: monitor quality scores classifiers (accuracy, macro-F1)");
    };
    let f1s: Vec<f64> = summary
        .per_class
        .iter()
        .filter_map(|c| c.figures.iter().find(|(name, _)| name == "f1").map(|(_, v)| *v))
        .collect();
    let macro_f1 = if f1s.is_empty() { accuracy } else { f1s.iter().sum::<f64>() / f1s.len() as f64 };
    Ok((label, accuracy, macro_f1))
}

pub fn run(ctx: &AppContext, args: &MonitorQualityArgs) -> Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.max_drop) {
        bail!("--max-drop {}: a share, 0 to 1", args.max_drop);
    }
    let (label, val_accuracy, val_f1) = validation_figures(ctx, &args.model)?;
    let since_ms = match args.since.as_deref().map(crate::inputs::since).transpose()? {
        Some(t) => t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
        None => 0,
    };
    let rows = crate::inputs::project_files(&args.project)?;
    let labelled: Vec<(std::path::PathBuf, String)> = rows
        .into_iter()
        .filter(|(row, a, _)| {
            row.root == strix_label::Root::Captured && a.as_ref().is_some_and(|a| a.saved_at >= since_ms)
        })
        .filter_map(|(_, a, path)| a.and_then(|a| a.labels.class).map(|c| (path, c)))
        .collect();
    if labelled.is_empty() {
        bail!(
            "no captured images of {} labelled{}: label some (strix label serve) first",
            args.project.display(),
            args.since.as_ref().map(|s| format!(" since {s}")).unwrap_or_default()
        );
    }
    let bars = ctx.bars();
    let pipeline = ctx.load_pipeline(ctx.catalog().resolve(&args.model, &bars)?, &args.runtime)?;
    let files: Vec<std::path::PathBuf> = labelled.iter().map(|(p, _)| p.clone()).collect();
    let truths: std::collections::HashMap<&std::path::Path, &String> =
        labelled.iter().map(|(p, c)| (p.as_path(), c)).collect();
    let mut pairs = Vec::new();
    let mut failed = 0usize;
    pipeline.predict_files(&files, &BatchOptions::default(), &bars, |outcome| {
        let truth = truths.get(outcome.path.as_path()).map(|c| (*c).clone());
        match (&outcome.result, truth) {
            (Ok(p), Some(truth)) => {
                let top = match &p.answer {
                    strix_core::Answer::Labels { classes } => classes.first().map(|c| c.label.clone()),
                    _ => None,
                };
                pairs.push((truth, top.unwrap_or_default()));
            }
            (Err(e), _) => {
                failed += 1;
                bars.suspend(|| eprintln!("error: {}: {e}", outcome.path.display()));
            }
            _ => {}
        }
    });
    let (accuracy, macro_f1) = classification(&pairs);
    let figures = [
        Figure::new("accuracy", val_accuracy, accuracy, args.max_drop),
        Figure::new("macro_f1", val_f1, macro_f1, args.max_drop),
    ];
    let violations: Vec<&Figure> = figures.iter().filter(|f| f.violation).collect();
    let report = json!({"model": label, "project": args.project.display().to_string(), "images": pairs.len(),
        "since": args.since, "figures": figures, "violations": violations});
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let path = args.out.join("quality.json");
    strix_core::fs::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())
        .with_context(|| path.display().to_string())?;
    if args.json {
        println!("{report}");
    } else if !ctx.quiet {
        eprintln!("{label} on {} labelled captured images of {}:", pairs.len(), args.project.display());
        for f in &figures {
            eprintln!(
                "  {:<9} {:.4} (validation {:.4}, drop {:+.4}, at most {:.4})  {}",
                f.metric,
                f.current,
                f.validation,
                f.drop,
                f.max_drop,
                if f.violation { "VIOLATION" } else { "ok" }
            );
        }
    }
    Ok(if !violations.is_empty() {
        ExitCode::from(VIOLATIONS)
    } else if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
