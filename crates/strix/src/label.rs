//! `strix label serve|export|import`, and the project side of `strix train --data PROJECT`
//! and `--capture PROJECT`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use strix_label::export::{self, Format, ImportReport, Unlabelled};
use strix_label::{Capture, CaptureSettings, LabelTask, Project, ProjectConfig, ScanReport, Suggester};

use crate::cli::{CaptureArgs, LabelCommand, LabelExportArgs, LabelImportArgs, LabelServeArgs};
use crate::context::AppContext;
use crate::show::printable;

pub fn run(ctx: &AppContext, cmd: &LabelCommand) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    match cmd {
        LabelCommand::Serve(args) => rt.block_on(serve(ctx, args)),
        LabelCommand::Export(args) => rt.block_on(export_cmd(ctx, args)),
        LabelCommand::Import(args) => rt.block_on(import_cmd(ctx, args)),
    }
}

/// Open the project in `dir`, or create it from the flags when it is not one yet.
async fn open_or_create(
    dir: &Path,
    images: Option<&PathBuf>,
    task: Option<&str>,
    classes: &[String],
) -> Result<Project> {
    if Project::is_project(dir) {
        if images.is_some() || task.is_some() || !classes.is_empty() {
            eprintln!(
                "note: {} is a project already; --images, --task and --classes are only read when creating one",
                dir.display()
            );
        }
        return Ok(Project::open(dir).await?);
    }
    let (Some(images), Some(task)) = (images, task) else {
        bail!(
            "{} is not a labelling project yet: create it with --images DIR --task classify|detect --classes a,b,c",
            dir.display()
        );
    };
    let task: LabelTask = task.parse().map_err(anyhow::Error::msg)?;
    let config = ProjectConfig { task, classes: classes.to_vec(), images: images.clone() };
    Ok(Project::create(dir, config).await?)
}

fn say_scan(ctx: &AppContext, report: &ScanReport) {
    if ctx.quiet {
        return;
    }
    if report.added > 0 {
        eprintln!("{} new image(s) added", report.added);
    }
    if !report.problems.is_empty() {
        eprintln!("{} file(s) do not decode and are left out:", report.problems.len());
        for (file, reason) in report.problems.iter().take(20) {
            eprintln!("  {}: {}", printable(file), printable(reason));
        }
        if report.problems.len() > 20 {
            eprintln!("  ... (all of them at /api/project)");
        }
    }
}

/// A model for suggestions, loaded like any `--model`.
fn suggester(ctx: &AppContext, args: &LabelServeArgs, task: LabelTask) -> Result<Option<Arc<dyn Suggester>>> {
    let Some(text) = &args.model else { return Ok(None) };
    let model = ctx.catalog().resolve(text, &ctx.bars())?;
    let pipeline = ctx.load_pipeline(model, &args.runtime)?;
    check_task(pipeline.task(), task, text)?;
    Ok(Some(Arc::new(strix_label::PipelineSuggester { name: text.clone(), pipeline })))
}

/// A model's answers must be the project's kind of labels.
fn check_task(model: strix_core::Task, project: LabelTask, name: &str) -> Result<()> {
    let fits = matches!(
        (model, project),
        (strix_core::Task::Classify, LabelTask::Classify) | (strix_core::Task::Detect, LabelTask::Detect)
    );
    if !fits {
        bail!("{name} is a {model} model; a {project} project takes suggestions from a {project} model");
    }
    Ok(())
}

async fn serve(ctx: &AppContext, args: &LabelServeArgs) -> Result<ExitCode> {
    // Who may reach it is settled first: a refused start creates and scans nothing.
    let (listener, gate) = listen(args).await?;
    let local = listener.local_addr().context("listening address")?;
    let project = open_or_create(&args.project, args.images.as_ref(), args.task.as_deref(), &args.classes).await?;
    say_scan(ctx, &project.scan().await?);
    let suggester = suggester(ctx, args, project.config.task)?;
    let app = Arc::new(strix_label::web::LabelApp { project: project.clone(), suggester: suggester.clone() });
    if let Some(s) = suggester {
        // Suggestions for every image in the background, so "next by uncertainty" has them.
        let project = project.clone();
        tokio::spawn(async move {
            match strix_label::suggest_all(&project, s, |_| {}).await {
                Ok(n) => tracing::info!(made = n, "suggestions made"),
                Err(e) => tracing::warn!(error = %e, "suggestions stopped"),
            }
        });
    }
    let stats = project.store.stats().await?;
    eprintln!(
        "strix label: http://{local} ({} project, {} of {} images labelled, classes {})",
        project.config.task,
        stats.labelled,
        stats.images,
        printable(&project.config.classes.join(","))
    );
    if gate.has_tokens() {
        eprintln!("strix label: the app needs its token: open http://{local}/?token=TOKEN once");
    }
    strix_http::serve_router(
        listener,
        strix_http::guarded(strix_label::web::router(app), gate),
        strix_http::ConnLimits::default(),
        crate::signals::shutdown(),
    )
    .await?;
    project.store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// The listener on `--http` and the gate before it; beyond loopback only with a token.
async fn listen(args: &LabelServeArgs) -> Result<(tokio::net::TcpListener, strix_http::Gate)> {
    let tokens = tokens(args)?;
    let listener =
        tokio::net::TcpListener::bind(&args.http).await.with_context(|| format!("cannot listen on {}", args.http))?;
    let local = listener.local_addr().context("listening address")?;
    if !local.ip().is_loopback() {
        if tokens.is_empty() {
            bail!(
                "--http {}: the labelling app would listen beyond this machine ({local}) with no token, so anyone \
                 who reaches it could read and change the labels. Give --http-token TOKEN (or set \
                 STRIX_HTTP_TOKEN; NAME=TOKEN, repeatable, records who saved), or listen on 127.0.0.1",
                args.http
            );
        }
        tracing::warn!("the labelling app listens on {local}, beyond this machine; its token guards it");
    }
    let gate = strix_http::Gate::new(&args.http_allow_host)
        .map_err(|e| anyhow::anyhow!("--http-allow-host: {e}"))?
        .with_tokens(tokens, local.port());
    Ok((listener, gate))
}

/// The `--http-token`s, one per person.
fn tokens(args: &LabelServeArgs) -> Result<Vec<strix_http::Token>> {
    let tokens = args
        .http_token
        .iter()
        .map(|t| strix_http::Token::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--http-token: {e}"))?;
    let mut users: Vec<&str> = tokens.iter().filter_map(|t| t.user.as_deref()).collect();
    users.sort_unstable();
    if let Some(w) = users.windows(2).find(|w| w[0] == w[1]) {
        bail!("--http-token: two tokens name {:?}; give each person one", w[0]);
    }
    Ok(tokens)
}

async fn export_cmd(ctx: &AppContext, args: &LabelExportArgs) -> Result<ExitCode> {
    let project = Project::open(&args.project).await?;
    let format: Format = args.format.parse().map_err(anyhow::Error::msg)?;
    let report = export::export(&project, format, &args.out).await?;
    if !ctx.quiet {
        eprintln!(
            "exported {} labelled image(s), {} box(es), as {format} to {}",
            report.images,
            report.boxes,
            report.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn import_cmd(ctx: &AppContext, args: &LabelImportArgs) -> Result<ExitCode> {
    let format: Format = args.format.parse().map_err(anyhow::Error::msg)?;
    if args.replace && format != Format::Yolo {
        bail!(
            "--replace is for --format yolo (images without a label file); a {format} import names every image it labels"
        );
    }
    let incoming = export::read(format, args.annotations.as_deref(), &args.images)?;
    let existing = Project::is_project(&args.project);
    let mut project = if existing {
        Project::open(&args.project).await?
    } else {
        let task = if format == Format::Folder { LabelTask::Classify } else { LabelTask::Detect };
        let config = ProjectConfig { task, classes: incoming.classes.clone(), images: args.images.clone() };
        Project::create(&args.project, config).await?
    };
    format.check(project.config.task)?;
    // A missing YOLO label file means "no objects" only where no labels can be lost by it.
    let unlabelled = if args.replace || !existing { Unlabelled::Negative } else { Unlabelled::LeaveAlone };
    let report = export::import(&mut project, incoming, unlabelled).await?;
    say_scan(ctx, &project.scan().await?);
    if !ctx.quiet {
        say_import(&args.project, &report);
    }
    Ok(ExitCode::SUCCESS)
}

/// An import's report; every name is escaped, since files and classes come from the dataset.
fn say_import(project: &Path, report: &ImportReport) {
    eprintln!(
        "imported {} image(s) with {} box(es) into {} ({} had other labels: saved over as new versions; {} \
         had these already: unchanged)",
        report.images,
        report.boxes,
        printable(&project.display().to_string()),
        report.relabelled,
        report.unchanged
    );
    if !report.new_classes.is_empty() {
        eprintln!("new classes: {}", printable(&report.new_classes.join(", ")));
    }
    if report.left_alone > 0 {
        eprintln!(
            "{} image(s) have no label file and were left as they are (--replace saves them as negatives)",
            report.left_alone
        );
    }
    if !report.orphans.is_empty() {
        eprintln!("{} label file(s) have no image and were ignored:", report.orphans.len());
        for file in &report.orphans {
            eprintln!("  {}", printable(file));
        }
    }
    for (file, reason) in &report.problems {
        match file.as_str() {
            "" => eprintln!("  left out: {}", printable(reason)),
            file => eprintln!("  left out: {} {}", printable(file), printable(reason)),
        }
    }
}

/// For `strix train --data PROJECT`: the project's training snapshot (the rule is
/// [`strix_label::training_snapshot`]) and the project's task. `given` is the run's task, when
/// one is set; another than the project's is refused before anything is written.
pub fn training_snapshot(dir: &Path, given: Option<&str>) -> Result<(PathBuf, LabelTask)> {
    let wanted = given.map(str::parse::<strix_core::Task>).transpose().map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(async {
        let project = Project::open(dir).await?;
        let snapshot = strix_label::training_snapshot(&project, wanted).await;
        project.store.close().await;
        match snapshot {
            Ok(s) => Ok((s.dir, s.task)),
            Err(e @ strix_label::SnapshotError::NothingLabelled { .. }) => {
                bail!("{e}: label some with `strix label serve {}`", dir.display())
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// The capture the flags ask for, started.
pub fn start_capture(
    project: &Path,
    limits: &CaptureArgs,
    rate: f64,
    every: u64,
    task: strix_core::Task,
    model: &str,
) -> Result<Capture> {
    let settings = CaptureSettings {
        rate,
        every,
        policy: limits.capture_policy.parse().map_err(anyhow::Error::msg)?,
        max_files: limits.capture_max_files,
        max_bytes: limits.capture_max_bytes,
        ..CaptureSettings::default()
    };
    let capture = Capture::start(project, settings)?;
    check_task(task, capture.task(), model).with_context(|| format!("--capture {}", project.display()))?;
    Ok(capture)
}
