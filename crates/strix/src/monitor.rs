//! `strix monitor baseline | run`: what a model saw and said, kept as a baseline, and new
//! images tested against it.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::json;
use strix_monitor::{Baseline, BaselineBuilder, Check};

use crate::cli::{MonitorBaselineArgs, MonitorCommand, MonitorRunArgs};
use crate::context::AppContext;
use crate::inputs;
use crate::monitor_observe::{images, models, observe};
use crate::monitor_report::number;

/// Exit status of a run that found violations (0: none, 1: an error).
const VIOLATIONS: u8 = 3;

pub fn run(ctx: &AppContext, cmd: &MonitorCommand) -> Result<ExitCode> {
    match cmd {
        MonitorCommand::Baseline(args) => baseline(ctx, args),
        MonitorCommand::Run(args) => run_checks(ctx, args),
        MonitorCommand::Quality(args) => crate::monitor_quality::run(ctx, args),
    }
}

fn baseline(ctx: &AppContext, args: &MonitorBaselineArgs) -> Result<ExitCode> {
    let (files, problems) = images(&args.data, None)?;
    for (path, problem) in &problems {
        eprintln!("error: {}: {problem}", path.display());
    }
    if files.is_empty() {
        bail!("no images in {}", args.data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    let embedding = (args.embedding != "none").then_some(args.embedding.as_str());
    let models = models(ctx, &args.model, embedding, &args.runtime)?;
    let mut builder = BaselineBuilder::new(args.sample, args.seed);
    for o in observe(ctx, &models, &files)? {
        builder.add(&o)?;
    }
    let task = models.watched.task().to_string();
    let (statistics, embeddings) = builder.finish(&args.model, &task, embedding);
    // Constraints kept from an earlier baseline in the folder: someone may have edited them,
    // so one that does not read stops the run rather than being replaced.
    let constraints = Baseline::read_constraints(&args.out)
        .with_context(|| format!("the constraints already in {}", args.out.display()))?
        .unwrap_or_default();
    let baseline = Baseline { statistics, constraints, embeddings };
    baseline.write(&args.out)?;
    let s = &baseline.statistics;
    if args.json {
        println!(
            "{}",
            json!({"out": args.out.display().to_string(), "items": s.items, "decode_failures": s.decode_failures, "features": s.numeric.keys().chain(s.categorical.keys()).collect::<Vec<_>>()})
        );
    } else if !ctx.quiet {
        eprintln!(
            "baseline of {} on {} images ({} did not decode): {} features{}; written to {}",
            args.model,
            s.items,
            s.decode_failures,
            s.numeric.len() + s.categorical.len(),
            s.embeddings.as_ref().map_or(String::new(), |e| format!(", {} embeddings of {}", e.count, e.model)),
            args.out.display()
        );
    }
    Ok(if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn run_checks(ctx: &AppContext, args: &MonitorRunArgs) -> Result<ExitCode> {
    // A pipeline that cannot run is said now, not after the images are checked.
    if let Some(p) = &args.on_violation {
        strix_workflow::PipelineSpec::read(p).with_context(|| format!("--on-violation {}", p.display()))?;
    }
    let baseline = Baseline::read(&args.baseline).with_context(|| format!("baseline {}", args.baseline.display()))?;
    let since = args.since.as_deref().map(inputs::since).transpose()?;
    let (files, problems) = images(&args.data, since)?;
    for (path, problem) in &problems {
        eprintln!("error: {}: {problem}", path.display());
    }
    if files.is_empty() {
        bail!("no images to check{}", args.since.as_ref().map(|s| format!(" since {s}")).unwrap_or_default());
    }
    let model = args.model.as_deref().unwrap_or(&baseline.statistics.model);
    let embedding = baseline.statistics.embeddings.as_ref().map(|e| e.model.as_str()).filter(|m| !m.is_empty());
    let models = models(ctx, model, embedding, &args.runtime)?;
    let window = observe(ctx, &models, &files)?;
    let checks = strix_monitor::check_window(&baseline, &window, args.seed);
    let violations: Vec<&Check> = checks.iter().filter(|c| c.drift).collect();
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let report = json!({
        "baseline": args.baseline.display().to_string(),
        "model": model,
        "images": files.len(),
        "since": args.since,
        "violations": violations,
        "checks": checks,
    });
    strix_core::fs::write_atomic(&args.out.join("violations.json"), serde_json::to_string_pretty(&report)?.as_bytes())
        .with_context(|| args.out.join("violations.json").display().to_string())?;
    let html = crate::monitor_report::html(&baseline, &window, &checks, model);
    strix_core::fs::write_atomic(&args.out.join("report.html"), html.as_bytes())
        .with_context(|| args.out.join("report.html").display().to_string())?;
    if args.json {
        println!("{}", json!({"images": files.len(), "violations": violations, "out": args.out.display().to_string()}));
    } else if !ctx.quiet {
        eprintln!(
            "{} images against {}: {} checks, {} violations",
            files.len(),
            args.baseline.display(),
            checks.len(),
            violations.len()
        );
        for c in &checks {
            let p = c.p_value.map_or(String::new(), |p| format!("  p {}", number(p)));
            let verdict = if c.drift { "VIOLATION" } else { "ok" };
            let (stat, limit) = (number(c.statistic), number(c.threshold));
            eprintln!("  {:<16} {:<15} {stat:>9}{p:<13} (threshold {limit})  {verdict}", c.feature, c.test);
        }
        eprintln!("report: {}", args.out.join("report.html").display());
    }
    if let Some(pipeline) = args.on_violation.as_ref().filter(|_| !violations.is_empty()) {
        if !ctx.quiet {
            eprintln!("violations: running the pipeline {}", pipeline.display());
        }
        let queue = crate::cli::QueueArgs { queue: None, queue_config: None };
        // Its own outcome (done, or a condition not met) is printed; the exit status stays the
        // monitor's.
        crate::pipeline::run_file(ctx, pipeline, &queue, &args.runtime, args.json)
            .with_context(|| format!("--on-violation {}", pipeline.display()))?;
    }
    Ok(if !violations.is_empty() {
        ExitCode::from(VIOLATIONS)
    } else if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
