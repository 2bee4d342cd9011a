//! `strix monitor quality`: a registered classifier or detector scored on the captured images
//! people have labelled since, against the validation figures it was registered with.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
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

/// The version's validation figures from its lineage (accuracy and macro-F1 for a classifier,
/// mAP and mAP@.5 for a detector), and its `NAME:V`.
fn validation_figures(ctx: &AppContext, model: &str) -> Result<(String, Vec<(&'static str, f64)>)> {
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
    let figures = match summary.val {
        strix_train::Scores::Classify { accuracy, .. } => {
            let f1s: Vec<f64> = summary
                .per_class
                .iter()
                .filter_map(|c| c.figures.iter().find(|(name, _)| name == "f1").map(|(_, v)| *v))
                .collect();
            let macro_f1 = if f1s.is_empty() { accuracy } else { f1s.iter().sum::<f64>() / f1s.len() as f64 };
            vec![("accuracy", accuracy), ("macro_f1", macro_f1)]
        }
        strix_train::Scores::Detect { map, map50, .. } => vec![("map", map), ("map50", map50)],
    };
    Ok((label, figures))
}

/// The captured images of `project` labelled since `since_ms`, with their labels.
fn labelled_captures(project: &Path, since_ms: i64) -> Result<Vec<(PathBuf, strix_label::Labels)>> {
    let rows = crate::inputs::project_files(project)?;
    Ok(rows
        .into_iter()
        .filter(|(row, a, _)| {
            row.root == strix_label::Root::Captured && a.as_ref().is_some_and(|a| a.saved_at >= since_ms)
        })
        .filter_map(|(_, a, path)| a.map(|a| (path, a.labels)))
        .collect())
}

/// A classifier's figures on the labelled images; the images that failed are counted.
fn classifier_figures(
    pipeline: &strix_pipeline::Pipeline,
    labelled: &[(PathBuf, strix_label::Labels)],
    bars: &crate::progress::Bars,
) -> (usize, BTreeMap<String, f64>, usize) {
    let labelled: Vec<(&PathBuf, &String)> =
        labelled.iter().filter_map(|(p, l)| Some((p, l.class.as_ref()?))).collect();
    let files: Vec<PathBuf> = labelled.iter().map(|(p, _)| (*p).clone()).collect();
    let truths: HashMap<&Path, &String> = labelled.iter().map(|(p, c)| (p.as_path(), *c)).collect();
    let mut pairs = Vec::new();
    let mut failed = 0usize;
    pipeline.predict_files(&files, &BatchOptions::default(), bars, |outcome| {
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
    (pairs.len(), [("accuracy".to_string(), accuracy), ("macro_f1".to_string(), macro_f1)].into(), failed)
}

/// A detector's COCO figures on the labelled images (a saved image without boxes is a
/// negative); images that cannot be read are counted and left out.
fn detector_figures(
    pipeline: &strix_pipeline::Pipeline,
    labelled: &[(PathBuf, strix_label::Labels)],
    classes: &[String],
) -> Result<(usize, BTreeMap<String, f64>, usize)> {
    // Every box's class is in `classes` (the caller adds the ones the model lacks).
    use strix_data::detection::{DetBox, DetImage, DetectionSet};
    let mut set = DetectionSet { classes: classes.to_vec(), ..Default::default() };
    let mut failed = 0usize;
    for (path, labels) in labelled {
        let Ok((width, height)) = image::image_dimensions(path) else {
            eprintln!("error: {}: cannot read its size", path.display());
            failed += 1;
            continue;
        };
        let boxes = labels
            .boxes
            .iter()
            .filter_map(|b| {
                let class = classes.iter().position(|c| *c == b.class)?;
                Some(DetBox { class, bbox: [b.x, b.y, b.w, b.h], iscrowd: false })
            })
            .collect();
        set.images.push(DetImage { path: path.clone(), width, height, boxes });
    }
    let scored = crate::scoring::detection(pipeline, &set)?;
    Ok((scored.images, scored.figures, failed))
}

pub fn run(ctx: &AppContext, args: &MonitorQualityArgs) -> Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.max_drop) {
        bail!("--max-drop {}: a share, 0 to 1", args.max_drop);
    }
    let (label, validation) = validation_figures(ctx, &args.model)?;
    let since_ms = match args.since.as_deref().map(crate::inputs::since).transpose()? {
        Some(t) => t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
        None => 0,
    };
    let labelled = labelled_captures(&args.project, since_ms)?;
    if labelled.is_empty() {
        bail!(
            "no captured images of {} labelled{}: label some (strix label serve) first",
            args.project.display(),
            args.since.as_ref().map(|s| format!(" since {s}")).unwrap_or_default()
        );
    }
    let bars = ctx.bars();
    let pipeline = crate::scoring::load(ctx, &args.model, &args.runtime)?;
    let (images, current, failed) = match pipeline.task() {
        strix_core::Task::Classify => classifier_figures(&pipeline, &labelled, &bars),
        strix_core::Task::Detect => {
            // A labelled class the model does not know stays in the truth: boxes it cannot find.
            let mut classes = pipeline.model().labels.clone();
            for b in labelled.iter().flat_map(|(_, l)| &l.boxes) {
                if !classes.contains(&b.class) {
                    classes.push(b.class.clone());
                }
            }
            detector_figures(&pipeline, &labelled, &classes)?
        }
        other => bail!("{label} is a {other} model: monitor quality scores classifiers and detectors"),
    };
    let figures: Vec<Figure> = validation
        .iter()
        .map(|(metric, v)| Figure::new(metric, *v, current.get(*metric).copied().unwrap_or(0.0), args.max_drop))
        .collect();
    let violations: Vec<&Figure> = figures.iter().filter(|f| f.violation).collect();
    let report = json!({"model": label, "project": args.project.display().to_string(), "images": images,
        "since": args.since, "figures": figures, "violations": violations});
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let path = args.out.join("quality.json");
    strix_core::fs::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())
        .with_context(|| path.display().to_string())?;
    if args.json {
        println!("{report}");
    } else if !ctx.quiet {
        eprintln!("{label} on {images} labelled captured images of {}:", args.project.display());
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
