//! `strix train` and `strix eval RUN_DIR`: flags merged over the config file, bars drawn from
//! the trainer's observer.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Mutex;
use strix_data::{ImageSet, Part, Transform, View};
use strix_train::config::Mode;
use strix_train::metrics::Evaluation;
use strix_train::observe::{Control, EpochEnd, Observer};
use strix_train::{Device, RunSummary, TrainConfig, classify};

use crate::cli::{DataPart, RunEvalArgs, TrainArgs};
use crate::context::AppContext;

/// Per-epoch bar with loss, accuracy, throughput and ETA; plain lines when not on a terminal.
pub(crate) struct EpochBars {
    quiet: bool,
    tty: bool,
    bar: Mutex<Option<ProgressBar>>,
    started: Mutex<Instant>,
    images: AtomicU64,
}

impl Observer for EpochBars {
    fn epoch_start(&self, epoch: usize, epochs: usize, batches: usize, done: usize) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.images.store(0, Ordering::Relaxed);
        if self.quiet || !self.tty {
            return;
        }
        let bar = ProgressBar::new(batches as u64);
        bar.set_draw_target(ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("epoch {prefix} [{bar:28}] {pos}/{len} {msg} eta {eta} ({elapsed})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        bar.set_position(done as u64);
        bar.enable_steady_tick(Duration::from_millis(250));
        *self.bar.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
    }

    fn batch(&self, images: usize, loss: f64, accuracy: Option<f64>) {
        let n = self.images.fetch_add(images as u64, Ordering::Relaxed) + images as u64;
        if let Some(bar) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let secs = self.started.lock().unwrap_or_else(|p| p.into_inner()).elapsed().as_secs_f64();
            let acc = accuracy.map(|a| format!(" acc {:.1}%", 100.0 * a)).unwrap_or_default();
            bar.set_message(format!("loss {loss:.4}{acc} {:.1} img/s", n as f64 / secs.max(1e-9)));
            bar.inc(1);
        }
    }

    fn epoch_end(&self, end: &EpochEnd<'_>) -> Control {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            eprintln!("{}", end.line);
        }
        Control::Continue
    }

    fn phase(&self, what: &str) {
        if !self.quiet {
            eprintln!("{what}...");
        }
    }
}

/// Keeps freed memory in the process for the next step. A training step allocates and frees the
/// same large activation and gradient buffers (tens of MiB at 224x224) every time; glibc serves
/// blocks that size with a fresh `mmap` each, so every step page-faults and zeroes them again:
/// a fifth of a ResNet-18 step in `perf`, 1.5 instead of 1.8 s per step without it. Training's
/// peak is reached in the first step anyway, so keeping it costs no more than that peak.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn keep_freed_memory() {
    // SAFETY: mallopt only changes glibc's allocation thresholds; it is thread-safe and any value
    // is valid (it returns 0 for one it refuses, and the defaults then stay).
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn keep_freed_memory() {}

impl EpochBars {
    pub(crate) fn new(quiet: bool) -> EpochBars {
        EpochBars {
            quiet,
            tty: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
            started: Mutex::new(Instant::now()),
            images: AtomicU64::new(0),
        }
    }
}

pub(crate) fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads.filter(|&n| n > 0) {
        // Only fails when the pool already exists; then it keeps its size.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
}

/// The config file's table with every given flag written over it ([`crate::layered`]), a
/// labelling project as its snapshot, the task's defaults under both; and where it came from.
pub(crate) fn merged_table(
    config: Option<&std::path::Path>,
    flags: toml::Table,
) -> Result<(toml::Table, std::path::PathBuf)> {
    let (mut table, origin) = crate::layered::merged_table(config, flags)?;
    project_data(&mut table)?;
    let task = match table.get("task").and_then(|v| v.as_str()) {
        Some(t) => t.parse::<strix_core::Task>().map_err(|e| anyhow::anyhow!("{}: task: {e}", origin.display()))?,
        None => strix_core::Task::Classify,
    };
    for (key, value) in strix_train::train::task_defaults(task)? {
        table.entry(key).or_insert(value);
    }
    if !table.contains_key("data") {
        bail!("no training data: give --data PATH or `data = ...` in the config file");
    }
    Ok((table, origin))
}

/// The training config of `strix train`'s flags over its config file.
fn merged_config(args: &TrainArgs) -> Result<TrainConfig> {
    let flags = toml::Table::try_from(args).context("flags")?;
    let (table, origin) = merged_table(args.config.as_deref(), flags)?;
    let text = toml::to_string(&table).context("config")?;
    Ok(TrainConfig::from_toml(&text, &origin)?)
}

/// `data` naming a labelling project: its labels exported as a snapshot training reads, and
/// the project's task unless one is given.
fn project_data(table: &mut toml::Table) -> Result<()> {
    let Some(dir) = table.get("data").and_then(|v| v.as_str()).map(std::path::PathBuf::from) else { return Ok(()) };
    if !strix_label::Project::is_project(&dir) {
        return Ok(());
    }
    let given = table.get("task").and_then(|v| v.as_str());
    let (snapshot, task) = crate::label::training_snapshot(&dir, given)?;
    let task = task.to_string();
    eprintln!("data: labelling project {}, its labels as of now in {}", dir.display(), snapshot.display());
    table.insert("task".into(), task.into());
    table.insert("data".into(), snapshot.display().to_string().into());
    Ok(())
}

/// A run of a task with default weights (a detector's EfficientNet-Lite0 backbone), without
/// `pretrained` and not asked to train from scratch, starts from them, found or fetched like
/// any `--model`: `--task detect --data` alone is enough for a useful detector.
pub(crate) fn with_default_pretrained(ctx: &AppContext, mut cfg: TrainConfig) -> Result<TrainConfig> {
    let Some(name) = strix_train::train::default_pretrained(cfg.task) else { return Ok(cfg) };
    if cfg.pretrained.is_some() || cfg.mode == Some(Mode::Scratch) {
        return Ok(cfg);
    }
    let model = ctx.catalog().resolve(name, &ctx.bars()).with_context(|| {
        format!(
            "a {} run starts from the zoo's {name} weights, which could not be had; \
             give --pretrained FILE (its .onnx or PyTorch .safetensors) or --mode scratch",
            cfg.task.as_str()
        )
    })?;
    if !ctx.quiet {
        eprintln!("backbone: {name} ImageNet weights from {}", model.weights.display());
    }
    cfg.pretrained = Some(model.weights);
    Ok(cfg)
}

pub fn run(ctx: &AppContext, args: &TrainArgs) -> Result<ExitCode> {
    keep_freed_memory();
    let observer = EpochBars::new(ctx.quiet);
    if args.resume.is_none() {
        let flags = toml::Table::try_from(args).context("flags")?;
        let (mut table, origin) = crate::layered::merged_table(args.config.as_deref(), flags)?;
        if crate::knn::asked(&table) {
            project_data(&mut table)?;
            return crate::knn::train(ctx, args, table, &origin);
        }
        if args.k.is_some() || args.embedding.is_some() {
            bail!("--k and --embedding are settings of --model knn");
        }
    }
    if args.queue.is_some() || args.queue_config.is_some() {
        return queued(ctx, args);
    }
    let (cfg, resume) = match &args.resume {
        Some(dir) => {
            let cfg = strix_train::files::saved_config(dir)
                .with_context(|| format!("{} is not a run folder", dir.display()))?;
            if !ctx.quiet {
                eprintln!("resuming {}", dir.display());
            }
            (cfg, Some(dir))
        }
        None => (with_default_pretrained(ctx, merged_config(args)?)?, None),
    };
    set_threads(if resume.is_some() { args.settings.threads.or(cfg.threads) } else { cfg.threads });
    let summary = match resume {
        Some(dir) => strix_train::train::resume(dir, &observer)?,
        None => strix_train::train::train(cfg, &observer)?,
    };
    print_summary(&summary);
    let run_dir = summary.run_dir;
    if !args.no_export {
        crate::export::export(
            ctx,
            &run_dir,
            &strix_export::ExportOptions { engines: ctx.export_engines(), ..Default::default() },
        )
        .context("training finished, but its ONNX export did not (retry with `strix export RUN_DIR`)")?;
    }
    if let Some(name) = &args.register {
        let record = crate::registry::register_run(ctx, &run_dir, name, None, None)?;
        crate::registry::print_registered(ctx, &record, false)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `strix train ... --queue`: the run as a job for a worker.
fn queued(ctx: &AppContext, args: &TrainArgs) -> Result<ExitCode> {
    if args.no_export {
        bail!("--no-export: a queued run is always exported (its worker registers and returns the export)");
    }
    let queue = crate::cli::QueueArgs { queue: args.queue.clone(), queue_config: args.queue_config.clone() };
    let settings = crate::queue::queue_settings(ctx, &queue)?.context("no job queue: give --queue nats://HOST:4222")?;
    let mut cfg = with_default_pretrained(ctx, merged_config(args)?)?;
    // The run folder is the worker's; this one is where --wait puts the copy.
    cfg.run_dir = None;
    let local = args.run_dir.clone();
    crate::train_job::run(ctx, &settings, cfg, local, args.register.clone(), args.wait)
}

/// The run's summary: its headline, each class's figures, what to know about them, the
/// dataset's problems and where the report is.
pub(crate) fn print_summary(s: &RunSummary) {
    println!("{}", s.headline());
    for c in &s.per_class {
        let figures: Vec<String> = c.figures.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        println!("  {:<20} {}", crate::show::printable(&c.name), figures.join("  "));
    }
    for note in &s.notes {
        println!("  ({note})");
    }
    if !s.problems.is_empty() {
        println!("{} dataset problems handled (listed in train.log and final.json):", s.problems.len());
        for p in s.problems.iter().take(10) {
            println!("  {p}");
        }
    }
    println!("report: {}", s.run_dir.join(strix_train::files::REPORT_FILE).display());
}

fn print_evaluation(e: &Evaluation) {
    println!("images      {}", e.images);
    println!("accuracy    {:.2}%", 100.0 * e.accuracy);
    println!("top-5       {:.2}%", 100.0 * e.top5);
    println!("loss        {:.4}", e.loss);
    println!("\n{:<20} {:>9} {:>9} {:>9} {:>8}", "class", "precision", "recall", "f1", "support");
    for c in &e.per_class {
        println!("{:<20} {:>9.3} {:>9.3} {:>9.3} {:>8}", c.name, c.precision, c.recall, c.f1, c.support);
    }
    if !e.unreadable.is_empty() {
        println!("\n{} unreadable images skipped:", e.unreadable.len());
        for (n, r) in &e.unreadable {
            println!("  {n}: {r}");
        }
    }
}

/// `strix eval RUN_DIR --data DIR`.
pub fn eval_run(ctx: &AppContext, args: &RunEvalArgs) -> Result<ExitCode> {
    let (Some(dir), Some(data)) = (&args.run_dir, &args.data) else {
        bail!("give a run folder and --data (or a subcommand: detect, pose, classify, segment)");
    };
    let part = match args.part {
        DataPart::Train => Part::Train,
        DataPart::Test => Part::Test,
    };
    if let Some(run) = strix_index::knn::KnnRun::read_if_present(dir)? {
        let set = ImageSet::open(data, part, Some(&run.classes))?;
        if !ctx.quiet {
            eprintln!("evaluating the k-NN run {} on {} images of {}", dir.display(), set.len(), data.display());
        }
        return print_eval(&crate::knn::eval(ctx, dir, &set)?, args.json);
    }
    let device = Device::flex();
    let (model, saved) = classify::load_trained(dir, &device)?;
    let set = Arc::new(ImageSet::open(data, part, Some(&saved.classes))?);
    let transform = Arc::new(Transform {
        size: saved.shape.image_size,
        channels: saved.shape.channels,
        normalize: saved.normalize.clone(),
        view: View::Eval { crop: saved.val_crop },
    });
    if !ctx.quiet {
        eprintln!("evaluating {} on {} images of {}", dir.display(), set.len(), data.display());
    }
    let e = classify::evaluate(&model, &set, &transform, args.batch_size.max(1), &device, 0);
    print_eval(&e, args.json)
}

fn print_eval(e: &Evaluation, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(e)?);
    } else {
        print_evaluation(e);
    }
    Ok(ExitCode::SUCCESS)
}
