//! `strix worker` and `strix jobs ...`: the NATS JetStream job queue from the command line.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use strix_batch::BatchHandler;
use strix_catalog::Engine;
use strix_jobs::{Handler, JobId, JobState, QueueSettings, TaskFailure, TaskState, WorkerOptions};

use crate::cli::{JobsCommand, QueueArgs, WorkerArgs};
use crate::context::AppContext;
use crate::queue::{connect, line, outcome, queue_settings, runtime, wait};
use crate::train_job::TrainHandler;

fn required(ctx: &AppContext, args: &QueueArgs) -> Result<QueueSettings> {
    queue_settings(ctx, args)?
        .context("no job queue: give --queue nats://HOST:4222, set STRIX_QUEUE, or `queue` in the settings file")
}

/// What runs the job kinds this binary knows (batch shards, training runs), and ends their jobs.
fn handler(ctx: &AppContext, engine: Engine, runtime: tokio::runtime::Handle) -> Arc<dyn Handler> {
    let settings = ctx.catalog().settings().clone();
    let threads = engine.options.threads.unwrap_or(1);
    let train = TrainHandler::new(settings.clone(), threads, runtime.clone());
    let batch = BatchHandler::new(ctx.catalog().clone(), engine, settings.registry.s3.clone(), runtime);
    Arc::new(Kinds(vec![Box::new(batch), Box::new(train)]))
}

/// Handlers by the kinds they run.
struct Kinds(Vec<Box<dyn Handler>>);

impl Kinds {
    fn of(&self, kind: &str) -> Option<&dyn Handler> {
        self.0.iter().find(|h| h.kinds().iter().any(|k| k == kind)).map(|h| h.as_ref())
    }
}

impl Handler for Kinds {
    fn kinds(&self) -> Vec<String> {
        self.0.iter().flat_map(|h| h.kinds()).collect()
    }

    fn run(&self, task: &strix_jobs::Task, ctx: &strix_jobs::TaskContext) -> Result<serde_json::Value, TaskFailure> {
        match self.of(&task.kind) {
            Some(h) => h.run(task, ctx),
            None => Err(TaskFailure::Failed(format!("no handler for task kind {:?}", task.kind))),
        }
    }

    fn job_finished(&self, job: &JobState, tasks: &[TaskState]) -> Result<Option<serde_json::Value>, String> {
        self.of(&job.kind).map_or(Ok(None), |h| h.job_finished(job, tasks))
    }
}

/// `strix worker`: run tasks until SIGTERM / Ctrl-C (or `--max-tasks`).
pub fn worker(ctx: &AppContext, args: &WorkerArgs) -> Result<ExitCode> {
    let settings = required(ctx, &args.queue)?;
    let rt = runtime()?;
    let name = args.name.clone().unwrap_or_else(crate::settings::who);
    let slots = args.jobs as usize;
    let mut engine = ctx.engine(&args.runtime);
    // Each slot runs on its share of the threads, as --workers shares them in predict.
    let threads = engine.options.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    engine.options.threads = Some((threads / slots).max(1));
    let handler = handler(ctx, engine, rt.handle().clone());
    let options = WorkerOptions { name: name.clone(), slots, max_tasks: args.max_tasks };
    let stats = rt.block_on(async {
        let queue = connect(&settings).await?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            crate::signals::shutdown().await;
            let _ = stop_tx.send(true);
        });
        if !ctx.quiet {
            eprintln!(
                "worker {name}: taking tasks from {} ({slots} at a time, {} thread(s) each); Ctrl-C hands running ones back",
                strix_core::redact(&settings.url),
                (threads / slots).max(1)
            );
        }
        strix_jobs::work(&queue, handler, &options, stop_rx).await.context("worker")
    })?;
    if !ctx.quiet {
        eprintln!(
            "worker {name}: {} succeeded, {} failed, {} retried, {} handed back, {} cancelled, {} refused",
            stats.succeeded, stats.failed, stats.retried, stats.handed_back, stats.cancelled, stats.refused
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `strix jobs list|show|logs|wait|cancel`.
pub fn jobs(ctx: &AppContext, cmd: &JobsCommand) -> Result<ExitCode> {
    let (queue_args, id) = match cmd {
        JobsCommand::List { queue, .. } => (queue, None),
        JobsCommand::Show { queue, id, .. }
        | JobsCommand::Logs { queue, id, .. }
        | JobsCommand::Wait { queue, id }
        | JobsCommand::Cancel { queue, id } => (queue, Some(id)),
    };
    let settings = required(ctx, queue_args)?;
    let id = id.map(|text| text.parse::<JobId>().map_err(|e| anyhow::anyhow!("job id {text:?}: {e}"))).transpose()?;
    let id = || id.clone().context("no job id");
    runtime()?.block_on(async {
        let queue = connect(&settings).await?;
        match cmd {
            JobsCommand::List { json, .. } => {
                let jobs = queue.jobs().await?;
                if *json {
                    println!("{}", serde_json::to_string(&jobs)?);
                } else if jobs.is_empty() {
                    println!("no jobs");
                }
                for j in jobs.iter().filter(|_| !*json) {
                    println!("{}", line(j));
                }
            }
            JobsCommand::Show { json, .. } => {
                let job = queue.job(&id()?).await?;
                let tasks = queue.tasks(&job).await?;
                if *json {
                    println!("{}", serde_json::json!({"job": job, "tasks": tasks}));
                } else {
                    print!("{}", describe(&job, &tasks));
                }
            }
            JobsCommand::Logs { follow, .. } => {
                let stdout = std::io::stdout();
                queue
                    .logs(&id()?, *follow, |l| {
                        let _ = writeln!(stdout.lock(), "{l}");
                    })
                    .await?;
            }
            JobsCommand::Wait { .. } => {
                let job = wait(&queue, &id()?, &ctx.bars()).await?;
                return Ok(outcome(ctx, &job));
            }
            JobsCommand::Cancel { .. } => {
                let mut job = queue.cancel(&id()?).await?;
                // Nothing was running: no worker will end the job (write a batch's manifest),
                // so it ends here. Ending needs no model: any engine does.
                if job.status.is_final() && !job.wrapped_up {
                    let engine = Engine::new(strix_runtime::Backend::Tract, Default::default());
                    let handler = handler(ctx, engine, tokio::runtime::Handle::current());
                    strix_jobs::wrap_up(&queue, &handler, &job).await?;
                    job = queue.job(&job.id).await?;
                }
                println!("{}", line(&job));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// A job and its tasks, for `strix jobs show`.
fn describe(job: &JobState, tasks: &[TaskState]) -> String {
    let mut text = format!("{}\n", line(job));
    if let Some(e) = &job.error {
        text += &format!("  error: {e}\n");
    }
    if let Some(r) = &job.result {
        text += &format!("  result: {r}\n");
    }
    for t in tasks {
        let progress = t.progress.map(|p| format!(" {}/{}", p.done, p.total)).unwrap_or_default();
        let worker = t.worker.as_deref().map(|w| format!(" on {w}")).unwrap_or_default();
        let error = t.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        let back = if t.handed_back > 0 { format!(", handed back {}x", t.handed_back) } else { String::new() };
        text += &format!(
            "  task {:>4}  {:<9}{progress}{worker}, {} attempt(s){back}{error}\n",
            t.index,
            t.status.to_string(),
            t.attempts
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_line_says_what_a_script_and_a_person_need() {
        let job: JobState = serde_json::from_value(serde_json::json!({
            "id": "jabc-000001", "kind": "batch", "status": "running", "spec": null, "tasks": 8,
            "succeeded": 5, "failed": 1, "cancelled": 0, "cancel_requested": true,
            "submitted_by": "me@host", "submitted_at": 1.0, "started_at": 2.0, "finished_at": null,
            "result": null, "error": "shard 3: model gone", "wrapped_up": false
        }))
        .unwrap();
        let text = describe(&job, &[]);
        assert!(
            text.starts_with(
                "jabc-000001  batch  running   (cancelling)  6/8 tasks done (1 failed, 0 cancelled)  by me@host\n"
            ),
            "{text}"
        );
        assert!(text.contains("  error: shard 3: model gone\n"), "{text}");
    }
}
