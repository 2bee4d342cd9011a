//! `strix tune`: a tuning job over `strix train`'s settings, its bar drawn from the job's
//! observer, the best trial exported and, when asked, registered.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use strix_train::TrainConfig;
use strix_tune::space::Params;
use strix_tune::training::default_space;
use strix_tune::tuning::{self, REPORT_FILE, Tuning, TuningObserver};
use strix_tune::{EarlyStopping, SearchSpace, Strategy, TrialState, TuneSettings};

use crate::cli::TuneArgs;
use crate::context::AppContext;

/// One bar over the trials, its message the best so far; a line per ended trial.
struct TrialBar {
    bar: ProgressBar,
    quiet: bool,
    /// Lines go through the bar on a terminal, straight to stderr elsewhere (a hidden bar
    /// drops them).
    tty: bool,
}

impl TrialBar {
    fn say(&self, line: String) {
        match (self.quiet, self.tty) {
            (true, _) => {}
            (false, true) => self.bar.println(line),
            (false, false) => eprintln!("{line}"),
        }
    }
}

fn params_text(params: &Params) -> String {
    let text: Vec<String> = params
        .iter()
        .map(|(k, v)| match v {
            strix_tune::ParamValue::Float(f) => format!("{k}={f:.3e}"),
            strix_tune::ParamValue::Int(i) => format!("{k}={i}"),
            strix_tune::ParamValue::Choice(c) => format!("{k}={}", c.to_string().trim_matches('"')),
        })
        .collect();
    text.join(" ")
}

impl TuningObserver for TrialBar {
    fn trial_started(&self, id: u64, params: &Params) {
        self.say(format!("trial {id}: {}", params_text(params)));
    }

    fn trial_epoch(&self, id: u64, epoch: usize, epochs: usize, objective: f64) {
        self.bar.set_message(format!("trial {id} epoch {epoch}/{epochs}: {objective:.4}"));
    }

    fn trial_ended(&self, tuning: &Tuning, id: u64) {
        self.bar.inc(1);
        let Some(trial) = tuning.study.trial(id) else { return };
        let run = tuning.runs.get(&id);
        let value =
            tuning.objective(trial).map(|v| format!("{} {v:.4}", tuning.settings.objective)).unwrap_or_default();
        let how = match trial.state {
            TrialState::Complete => "complete".to_string(),
            TrialState::Pruned => "stopped early".to_string(),
            TrialState::Failed => format!("failed: {}", run.and_then(|r| r.error.clone()).unwrap_or_default()),
            TrialState::Running => "running".to_string(),
        };
        let epochs = run.map(|r| format!(", {} epoch(s) in {:.0} s", r.epochs, r.seconds)).unwrap_or_default();
        self.say(format!("trial {id} {how}: {value}{epochs}"));
        if let Some((best, v)) = tuning.best() {
            self.bar.set_message(format!("best {} {v:.4} (trial {})", tuning.settings.objective, best.id));
        }
    }
}

/// The training settings every trial starts from: the flags over the config file, the task's
/// defaults and weights filled in, paths made absolute.
fn base_config(ctx: &AppContext, args: &TuneArgs) -> Result<TrainConfig> {
    let flags = toml::Table::try_from(&args.settings).context("flags")?;
    let (table, origin) = crate::train::merged_table(args.config.as_deref(), flags)?;
    if table.contains_key("run_dir") {
        bail!("{}: run_dir: each trial has its own run folder inside the tuning folder (--out)", origin.display());
    }
    let text = toml::to_string(&table).context("config")?;
    let mut cfg = crate::train::with_default_pretrained(ctx, TrainConfig::from_toml(&text, &origin)?)?;
    let absolute = |p: &mut PathBuf| *p = std::path::absolute(&*p).unwrap_or_else(|_| p.clone());
    absolute(&mut cfg.data);
    for p in [&mut cfg.val_data, &mut cfg.test_data, &mut cfg.pretrained].into_iter().flatten() {
        absolute(p);
    }
    Ok(cfg)
}

fn settings(args: &TuneArgs, cfg: &TrainConfig) -> Result<TuneSettings> {
    let (default_objective, _) = TuneSettings::default_objective(cfg.task);
    let objective = args.objective.clone().unwrap_or_else(|| default_objective.to_string());
    let maximize = match args.direction.as_deref() {
        Some("minimize") => false,
        Some(_) => true,
        None => TuneSettings::maximizes(&objective),
    };
    let threads = cfg.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let settings = TuneSettings {
        objective,
        maximize,
        trials: args.trials as usize,
        parallel: args.parallel as usize,
        threads,
        strategy: match args.strategy.as_str() {
            "random" => Strategy::Random,
            "grid" => Strategy::Grid,
            _ => Strategy::Tpe,
        },
        early_stopping: match args.early_stopping.as_str() {
            "median" => EarlyStopping::Median,
            "off" => EarlyStopping::Off,
            _ => EarlyStopping::Asha,
        },
        seed: args.study_seed,
    };
    settings.validate()?;
    Ok(settings)
}

fn space(args: &TuneArgs, cfg: &TrainConfig) -> Result<SearchSpace> {
    match &args.space {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim()))
        }
        None => Ok(default_space(cfg.task)?),
    }
}

/// A new job from the flags, in a folder that holds none yet.
fn new_job(ctx: &AppContext, args: &TuneArgs) -> Result<(PathBuf, Tuning)> {
    let folder = args.out.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        PathBuf::from("runs").join(format!("tune-{secs}"))
    });
    if folder.join(tuning::STATE_FILE).exists() {
        bail!(
            "{} already holds a tuning job; continue it with `strix tune --resume {0}` or pick another --out",
            folder.display()
        );
    }
    let mut cfg = base_config(ctx, args)?;
    let settings = settings(args, &cfg)?;
    // The run keeps its best model by the objective where the task can.
    if args.settings.monitor.is_none() && ["val_loss", "val_accuracy"].contains(&settings.objective.as_str()) {
        cfg.monitor = if settings.objective == "val_loss" {
            strix_train::config::Monitor::ValLoss
        } else {
            strix_train::config::Monitor::ValAccuracy
        };
    }
    let space = space(args, &cfg)?;
    let base = toml::Table::try_from(&cfg).context("the base config")?;
    let job = strix_jobs::JobId::new().as_str().to_string();
    Ok((folder, Tuning::new(job, cfg.task, settings, base, space)?))
}

pub fn run(ctx: &AppContext, args: &TuneArgs) -> Result<ExitCode> {
    let (folder, job) = search(ctx, args)?;
    finish(ctx, args, &folder, &job)
}

/// The tuning job's trials, run (or resumed) to the end: its folder and state. The bar and the
/// trials' lines go to stderr; nothing to stdout.
pub fn search(ctx: &AppContext, args: &TuneArgs) -> Result<(PathBuf, Tuning)> {
    crate::train::keep_freed_memory();
    let (folder, job) = match &args.resume {
        Some(dir) => {
            (dir.clone(), Tuning::load(dir).with_context(|| format!("{} is not a tuning folder", dir.display()))?)
        }
        None => new_job(ctx, args)?,
    };
    let s = &job.settings;
    if !ctx.quiet {
        eprintln!(
            "tuning job {} in {}: {} trials, {} at a time ({} thread(s) each), {} {}, {} sampling, early stopping: {}\n  space: {}",
            job.job_id,
            folder.display(),
            s.trials,
            s.parallel,
            (s.threads / s.parallel).max(1),
            if s.maximize { "maximising" } else { "minimising" },
            s.objective,
            s.strategy.name(),
            s.early_stopping.name(),
            job.study.space().params().keys().cloned().collect::<Vec<_>>().join(", "),
        );
    }
    let done = job.study.trials().iter().filter(|t| t.state != TrialState::Running).count() as u64;
    let tty = std::io::stderr().is_terminal();
    let observer =
        TrialBar { bar: trial_bar(ctx.quiet || !tty, job.settings.trials as u64, done), quiet: ctx.quiet, tty };
    let job = match queue(ctx, args)? {
        Some(settings) => {
            let rt = crate::queue::runtime()?;
            let text = toml::to_string(&job.base).context("the base config")?;
            let base = TrainConfig::from_toml(&text, Path::new("the tuning job's base config"))?;
            let trainer = crate::train_job::QueueTrainer::new(ctx, &rt, &settings, &job.job_id, base)?;
            tuning::run_with(&folder, job, &trainer, &observer)?
        }
        None => tuning::run(&folder, job, &observer)?,
    };
    observer.bar.finish_and_clear();
    Ok((folder, job))
}

/// What a registered best trial records of its tuning job: the job, the trial, its objective
/// value and parameters, the folder.
pub fn lineage(folder: &Path, job: &Tuning) -> Option<serde_json::Value> {
    let (best, value) = job.best()?;
    let params: serde_json::Map<String, serde_json::Value> =
        best.params.iter().map(|(k, v)| (k.clone(), param_json(v))).collect();
    Some(json!({
        "job": job.job_id,
        "trial": best.id,
        "trials": job.study.trials().len(),
        "objective": job.settings.objective,
        "value": value,
        "params": params,
        "folder": std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf()).display().to_string(),
    }))
}

/// The queue the trials go to, when `--queue` or `--queue-config` names one.
fn queue(ctx: &AppContext, args: &TuneArgs) -> Result<Option<strix_jobs::QueueSettings>> {
    if args.queue.is_none() && args.queue_config.is_none() {
        return Ok(None);
    }
    let queue = crate::cli::QueueArgs { queue: args.queue.clone(), queue_config: args.queue_config.clone() };
    crate::queue::queue_settings(ctx, &queue)
}

fn trial_bar(hidden: bool, trials: u64, done: u64) -> ProgressBar {
    let bar = ProgressBar::new(trials);
    if hidden {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(250));
    }
    if let Ok(style) = ProgressStyle::with_template("trials [{bar:28}] {pos}/{len} {msg} ({elapsed})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(done);
    bar
}

/// Prints the outcome, exports the best trial's run and registers it when asked.
fn finish(ctx: &AppContext, args: &TuneArgs, folder: &Path, job: &Tuning) -> Result<ExitCode> {
    let (complete, pruned, failed) = job.counts();
    println!("{} trials: {complete} complete, {pruned} stopped early, {failed} failed", job.study.trials().len());
    println!("report: {}", folder.join(REPORT_FILE).display());
    let (Some((best, value)), Some(run)) = (job.best(), tuning::best_run_dir(folder, job)) else {
        bail!("no trial completed; see {} for each trial's error", folder.join(REPORT_FILE).display());
    };
    println!("best: trial {} with {} {value:.4}: {}", best.id, job.settings.objective, params_text(&best.params));
    println!("run: {}", run.display());
    if let Ok(summary) = strix_train::RunSummary::read(&run) {
        crate::train::print_summary(&summary);
    }
    if !run.join(strix_export::EXPORT_DIR).join(strix_export::ONNX_FILE).is_file() {
        let options = strix_export::ExportOptions { engines: ctx.export_engines(), ..Default::default() };
        crate::export::export(ctx, &run, &options)
            .context("tuning finished, but the best run's ONNX export did not (retry with `strix export RUN_DIR`)")?;
    }
    if let Some(name) = &args.register {
        let record = crate::registry::register_run(ctx, &run, name, None, lineage(folder, job))?;
        crate::registry::print_registered(ctx, &record, false)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A parameter's value as plain JSON (the lineage's reader needs no tags).
fn param_json(v: &strix_tune::ParamValue) -> serde_json::Value {
    match v {
        strix_tune::ParamValue::Float(f) => json!(f),
        strix_tune::ParamValue::Int(i) => json!(i),
        strix_tune::ParamValue::Choice(c) => c.clone(),
    }
}
