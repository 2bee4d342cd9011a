//! The job queue as every command that uses it sees it: its settings, a connection, following
//! a job to its end and the exit status it earns. `strix jobs` / `strix worker`, batch
//! transform and training jobs all come through here.

use std::process::ExitCode;

use anyhow::{Context, Result};
use strix_core::Progress as _;
use strix_jobs::{JobId, JobState, Queue, QueueSettings, Status};

use crate::cli::QueueArgs;
use crate::context::AppContext;
use crate::progress::Bars;

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// The queue `--queue`, `STRIX_QUEUE` or the settings file's `queue` names, with the rest of
/// its settings from `--queue-config`; `None` when nothing names one.
pub fn queue_settings(ctx: &AppContext, args: &QueueArgs) -> Result<Option<QueueSettings>> {
    let mut settings = match &args.queue_config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("queue settings {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("queue settings {}", path.display()))?
        }
        None => QueueSettings::default(),
    };
    match args.queue.clone().filter(|q| !q.is_empty()).or_else(|| ctx.catalog().settings().queue.clone()) {
        Some(url) => settings.url = url,
        None if args.queue_config.is_some() => {}
        None => return Ok(None),
    }
    settings.validate()?;
    Ok(Some(settings))
}

pub async fn connect(settings: &QueueSettings) -> Result<Queue> {
    Queue::connect(settings).await.with_context(|| format!("job queue {}", settings.url))
}

/// One line per job: id, kind, status, tasks, submitter.
pub fn line(j: &JobState) -> String {
    let cancelling = if j.cancel_requested && !j.status.is_final() { " (cancelling)" } else { "" };
    format!(
        "{}  {:<6} {:<9}{cancelling}  {}/{} tasks done ({} failed, {} cancelled)  by {}",
        j.id,
        j.kind,
        j.status.to_string(),
        j.finished_tasks(),
        j.tasks,
        j.failed,
        j.cancelled,
        j.submitted_by
    )
}

/// Follow a job to its end with a bar of finished tasks, fed by the job's state.
pub async fn wait(queue: &Queue, id: &JobId, bars: &Bars) -> Result<JobState> {
    let mut shown: Option<u64> = None;
    let job = queue
        .wait(id, |j| {
            let now = u64::from(j.finished_tasks());
            match shown {
                None => {
                    bars.start(&format!("job {id}"), Some(u64::from(j.tasks)), strix_core::ProgressUnit::Items);
                    bars.advance(now);
                }
                Some(before) => bars.advance(now.saturating_sub(before)),
            }
            shown = Some(now);
        })
        .await?;
    bars.finish();
    Ok(job)
}

/// The job's line and error on stderr; success only for a succeeded job.
pub fn outcome(ctx: &AppContext, job: &JobState) -> ExitCode {
    if !ctx.quiet {
        eprintln!("{}", line(job));
        if let Some(e) = &job.error {
            eprintln!("error: {e}");
        }
    }
    if job.status == Status::Succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
