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
use strix_train::detect;
use strix_train::metrics::{EpochMetrics, Evaluation};
use strix_train::train::{self, Observer};
use strix_train::{Device, TrainConfig};

use crate::cli::{DataPart, Global, RunEvalArgs, TrainArgs};

/// Per-epoch bar with loss, accuracy, throughput and ETA; plain lines when not on a terminal.
struct EpochBars {
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

    fn batch(&self, images: usize, loss: f64, accuracy: f64) {
        let n = self.images.fetch_add(images as u64, Ordering::Relaxed) + images as u64;
        if let Some(bar) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let secs = self.started.lock().unwrap_or_else(|p| p.into_inner()).elapsed().as_secs_f64();
            let acc = if accuracy.is_finite() { format!(" acc {:.1}%", 100.0 * accuracy) } else { String::new() };
            bar.set_message(format!("loss {loss:.4}{acc} {:.1} img/s", n as f64 / secs.max(1e-9)));
            bar.inc(1);
        }
    }

    fn epoch_end(&self, m: &EpochMetrics) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            eprintln!("{m}");
        }
    }

    fn phase(&self, what: &str) {
        if !self.quiet {
            eprintln!("{what}...");
        }
    }

    fn detect_epoch_end(&self, m: &detect::DetectEpoch) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            eprintln!("{m}");
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
fn keep_freed_memory() {
    // SAFETY: mallopt only changes glibc's allocation thresholds; it is thread-safe and any value
    // is valid (it returns 0 for one it refuses, and the defaults then stay).
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads.filter(|&n| n > 0) {
        // Only fails when the pool already exists; then it keeps its size.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
}

/// The config file's table with every given flag written over it ([`crate::layered`]).
fn merged_config(args: &TrainArgs) -> Result<TrainConfig> {
    let flags = toml::Table::try_from(args).context("flags")?;
    let (mut table, origin) = crate::layered::merged_table(args.config.as_deref(), flags)?;
    project_data(&mut table)?;
    let task = match table.get("task").and_then(|v| v.as_str()) {
        Some(t) => t.parse::<strix_core::Task>().map_err(|e| anyhow::anyhow!("{}: task: {e}", origin.display()))?,
        None => strix_core::Task::Classify,
    };
    for (key, value) in TrainConfig::task_defaults(task) {
        table.entry(key).or_insert(value);
    }
    if !table.contains_key("data") {
        bail!("no training data: give --data PATH or `data = ...` in the config file");
    }
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

/// The zoo model whose ImageNet weights a detector's backbone starts from by default.
const DEFAULT_BACKBONE: &str = "efficientnet_lite0";

/// A detector without `pretrained` (and not asked to train from scratch) starts from the zoo's
/// EfficientNet-Lite0, found or fetched like any `--model`: `--task detect --data` alone is
/// enough for a useful detector.
fn with_default_backbone(global: &Global, mut cfg: TrainConfig) -> Result<TrainConfig> {
    if cfg.task != strix_core::Task::Detect || cfg.pretrained.is_some() || cfg.mode == Some(Mode::Scratch) {
        return Ok(cfg);
    }
    let model =
        global.catalog().resolve(DEFAULT_BACKBONE, &crate::progress::Bars::new(global.quiet)).with_context(|| {
            format!(
                "the detector's backbone starts from the zoo's {DEFAULT_BACKBONE} weights, which could not be had; \
             give --pretrained FILE (its .onnx or PyTorch .safetensors) or --mode scratch"
            )
        })?;
    if !global.quiet {
        eprintln!("backbone: {DEFAULT_BACKBONE} ImageNet weights from {}", model.weights.display());
    }
    cfg.pretrained = Some(model.weights);
    Ok(cfg)
}

pub fn run(global: &Global, args: &TrainArgs) -> Result<ExitCode> {
    keep_freed_memory();
    let observer = EpochBars {
        quiet: global.quiet,
        tty: std::io::stderr().is_terminal(),
        bar: Mutex::new(None),
        started: Mutex::new(Instant::now()),
        images: AtomicU64::new(0),
    };
    let (cfg, resume) = match &args.resume {
        Some(dir) => {
            let cfg = train::saved_config(dir).with_context(|| format!("{} is not a run folder", dir.display()))?;
            if !global.quiet {
                eprintln!("resuming {}", dir.display());
            }
            (cfg, Some(dir))
        }
        None => (with_default_backbone(global, merged_config(args)?)?, None),
    };
    set_threads(if resume.is_some() { args.threads.or(cfg.threads) } else { cfg.threads });
    let run_dir = if cfg.task == strix_core::Task::Detect {
        let outcome = match resume {
            Some(dir) => detect::resume(dir, &observer)?,
            None => detect::train(cfg, &observer)?,
        };
        print_detect_outcome(&outcome);
        outcome.run_dir
    } else {
        let outcome = match resume {
            Some(dir) => train::resume(dir, &observer)?,
            None => train::train(cfg, &observer)?,
        };
        print_outcome(&outcome);
        outcome.run_dir
    };
    if !args.no_export {
        crate::export::export(
            global,
            &run_dir,
            &strix_export::ExportOptions { engines: crate::export::engines(global), ..Default::default() },
        )
        .context("training finished, but its ONNX export did not (retry with `strix export RUN_DIR`)")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_outcome(outcome: &train::Outcome) {
    let mut summary = format!(
        "best epoch {} of {}: val accuracy {:.2}%",
        outcome.best_epoch.unwrap_or(0),
        outcome.history.len(),
        100.0 * outcome.val.accuracy
    );
    if let Some(t) = &outcome.test {
        summary.push_str(&format!(", test accuracy {:.2}% ({} images)", 100.0 * t.accuracy, t.images));
    }
    // Wherever the split put them: training images skipped, and validation or test images
    // left out of the evaluation.
    let unreadable =
        outcome.skipped.len() + outcome.val.unreadable.len() + outcome.test.as_ref().map_or(0, |t| t.unreadable.len());
    if unreadable > 0 {
        summary.push_str(&format!(", {unreadable} unreadable images skipped"));
    }
    println!("{summary}");
    println!("report: {}", outcome.run_dir.join(strix_train::train::REPORT_FILE).display());
}

fn print_detect_outcome(outcome: &detect::DetectOutcome) {
    println!(
        "best epoch {} of {}: val mAP@[.5:.95] {:.4}, mAP@.5 {:.4} ({} images)",
        outcome.best_epoch.unwrap_or(0),
        outcome.history.len(),
        outcome.val.map,
        outcome.val.map50,
        outcome.val.images
    );
    for c in &outcome.val.per_class {
        println!("  {:<20} AP {:.4}  AP@.5 {:.4}", c.name, c.ap.max(0.0), c.ap50.max(0.0));
    }
    println!(
        "  (scored with detections above {}: `strix eval detect --score-threshold {0}` on the export gives these numbers)",
        detect::eval::EVAL_SCORE_THRESHOLD
    );
    let unreadable = outcome.skipped.len() + outcome.val.unreadable.len();
    if unreadable > 0 {
        println!("{unreadable} unreadable images skipped (listed in train.log)");
    }
    if !outcome.problems.is_empty() {
        println!("{} dataset problems handled (listed in train.log and final.json):", outcome.problems.len());
        for p in outcome.problems.iter().take(10) {
            println!("  {p}");
        }
    }
    println!("run: {}", outcome.run_dir.display());
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
pub fn eval_run(global: &Global, args: &RunEvalArgs) -> Result<ExitCode> {
    let (Some(dir), Some(data)) = (&args.run_dir, &args.data) else {
        bail!("give a run folder and --data (or a subcommand: detect, pose, classify, segment)");
    };
    let device = Device::flex();
    let (model, saved) = train::load_trained(dir, &device)?;
    let part = match args.part {
        DataPart::Train => Part::Train,
        DataPart::Test => Part::Test,
    };
    let set = Arc::new(ImageSet::open(data, part, Some(&saved.classes))?);
    let transform = Arc::new(Transform {
        size: saved.shape.image_size,
        channels: saved.shape.channels,
        normalize: saved.normalize.clone(),
        view: View::Eval { crop: saved.val_crop },
    });
    if !global.quiet {
        eprintln!("evaluating {} on {} images of {}", dir.display(), set.len(), data.display());
    }
    let e = train::evaluate(&model, &set, &transform, args.batch_size.max(1), &device, 0);
    if args.json {
        println!("{}", serde_json::to_string(&e)?);
    } else {
        print_evaluation(&e);
    }
    Ok(ExitCode::SUCCESS)
}
