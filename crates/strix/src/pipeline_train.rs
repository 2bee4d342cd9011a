//! The pipeline's model-making step: a `strix train` run (or a `strix tune` job) inside the
//! state folder, recorded under the digest of its settings and of every file it reads. A
//! record still `running` under the same key is an interrupted step: its run resumes from the
//! checkpoint, its tuning job from its trials, its queued job is waited on again.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use strix_export::{EXPORT_DIR, ONNX_FILE};
use strix_train::files::CHECKPOINT_FILE;
use strix_train::{RunSummary, Scores, TrainConfig};
use strix_workflow::{State, StepRecord, StepStatus, key};

use crate::cli::QueueArgs;
use crate::context::AppContext;

/// A made model: its run folder, how the step went (`ran`, `cached`, `resumed`) and what it
/// recorded (`run`, `headline`, `val` figures).
pub struct Made {
    pub run: PathBuf,
    pub status: &'static str,
    pub output: Value,
}

/// The sha256 of what a data setting reads: a CSV with the images it lists, a folder's files,
/// a file.
pub fn data_digest(path: &Path) -> Result<String> {
    if path.extension().is_some_and(|e| e == "csv") && path.is_file() {
        let set = strix_data::ImageSet::csv(path, None).with_context(|| path.display().to_string())?;
        return Ok(strix_data::manifest::dataset_manifest(&[("data", &set)])?.sha256);
    }
    strix_core::digest::sha256_tree(path).with_context(|| format!("{}: cannot read it to digest it", path.display()))
}

fn exported(run: &Path) -> bool {
    run.join(EXPORT_DIR).join(ONNX_FILE).is_file()
}

/// A run's validation figures by the names conditions use (`val.accuracy`, ...).
pub fn val_figures(summary: &RunSummary) -> Value {
    match summary.val {
        Scores::Classify { accuracy, top5, loss, .. } => json!({"accuracy": accuracy, "top5": top5, "loss": loss}),
        Scores::Detect { map, map50, .. } => json!({"map": map, "map50": map50}),
    }
}

fn finished(ctx: &AppContext, run: &Path, status: &'static str) -> Result<Made> {
    if !exported(run) {
        let options = strix_export::ExportOptions { engines: ctx.export_engines(), ..Default::default() };
        let done = crate::export::export_quietly(ctx, run, &options).context("the run's ONNX export")?;
        if !ctx.quiet {
            eprintln!("export: {}; gate passed: {}", done.onnx.display(), done.gate);
        }
    }
    let summary = RunSummary::read(run).with_context(|| format!("{}: the run's summary", run.display()))?;
    let output =
        json!({"run": run.display().to_string(), "headline": summary.headline(), "val": val_figures(&summary)});
    Ok(Made { run: run.to_path_buf(), status, output })
}

const TRAIN: &str = "train";
const TUNE: &str = "tune";

/// `[train]`: its table (TrainConfig's keys, `config = FILE` under them) as one run.
pub fn train(ctx: &AppContext, state: &State, mut table: toml::Table, queue: &QueueArgs) -> Result<Made> {
    let config = table.remove("config").and_then(|v| v.as_str().map(PathBuf::from));
    let (merged, origin) = crate::train::merged_table(config.as_deref(), table)?;
    if crate::knn::asked(&merged) {
        bail!("[train] model = \"knn\": a k-NN classifier is built with `strix train --model knn`, not in a pipeline");
    }
    let text = toml::to_string(&merged).context("the training settings")?;
    // Its lines are the merged settings', not the pipeline file's: the key names the setting.
    let cfg = TrainConfig::from_toml(&text, &origin).context("[train] (merged with its `config`)")?;
    let cfg = crate::train::with_default_pretrained(ctx, cfg)?;
    let settings = toml::to_string(&cfg).context("the training settings")?;
    let files = [
        ("data", Some(cfg.data.as_path())),
        ("val_data", cfg.val_data.as_deref()),
        ("test_data", cfg.test_data.as_deref()),
        ("pretrained", cfg.pretrained.as_deref()),
    ];
    let key = step_key(&settings, &files)?;
    let run = state.dir().join("runs").join(format!("train-{}", &key[..12]));
    // Only when asked: a queue named in the settings file does not move a pipeline's training.
    let queue = match queue.queue.is_some() || queue.queue_config.is_some() {
        true => crate::queue::queue_settings(ctx, queue)?,
        false => None,
    };
    let record = state.same(TRAIN, &key)?;
    match &record {
        Some(r) if r.status == StepStatus::Done && exported(&run) => {
            return Ok(Made { run, status: "cached", output: r.output.clone() });
        }
        Some(r) if r.status == StepStatus::Running && r.output.get("job").is_some() => {
            let made = wait_again(ctx, state, &key, r, &run, queue.as_ref())?;
            state.write(TRAIN, &StepRecord::new(&key, StepStatus::Done, made.output.clone()))?;
            return Ok(made);
        }
        _ => {}
    }
    // The folder is named by the key: whatever is in it was trained with these very settings
    // (an interrupted run, or one whose record another setting's run replaced since).
    if let Some(made) = resume_local(ctx, &run)? {
        state.write(TRAIN, &StepRecord::new(&key, StepStatus::Done, made.output.clone()))?;
        return Ok(made);
    }
    if run.exists() {
        std::fs::remove_dir_all(&run).with_context(|| format!("{}: an unfinished run's folder", run.display()))?;
    }
    let made = match queue {
        Some(settings) => queued(ctx, state, &key, Some(cfg), &run, &settings, None)?,
        None => {
            state
                .write(TRAIN, &StepRecord::new(&key, StepStatus::Running, json!({"run": run.display().to_string()})))?;
            crate::train::set_threads(cfg.threads);
            let mut cfg = cfg;
            cfg.run_dir = Some(run.clone());
            strix_train::train::train(cfg, &crate::train::EpochBars::new(ctx.quiet))?;
            finished(ctx, &run, "ran")?
        }
    };
    state.write(TRAIN, &StepRecord::new(&key, StepStatus::Done, made.output.clone()))?;
    Ok(made)
}

/// The run in `run` (named by its key) taken up again: exported when it had finished, resumed
/// from its checkpoint when it had not; `None` when nothing of it is there.
fn resume_local(ctx: &AppContext, run: &Path) -> Result<Option<Made>> {
    if RunSummary::read_if_finished(run)?.is_some() {
        let status = if exported(run) { "cached" } else { "resumed" };
        return Ok(Some(finished(ctx, run, status)?));
    }
    if !run.join(CHECKPOINT_FILE).is_file() {
        return Ok(None);
    }
    if !ctx.quiet {
        eprintln!("train: resuming {} from its checkpoint", run.display());
    }
    let cfg = strix_train::files::saved_config(run)?;
    crate::train::set_threads(cfg.threads);
    strix_train::train::resume(run, &crate::train::EpochBars::new(ctx.quiet))?;
    Ok(Some(finished(ctx, run, "resumed")?))
}

/// A job an earlier run of the pipeline queued, waited for again (not queued twice).
fn wait_again(
    ctx: &AppContext,
    state: &State,
    key: &str,
    record: &StepRecord,
    run: &Path,
    queue: Option<&strix_jobs::QueueSettings>,
) -> Result<Made> {
    let job = record.output["job"].as_str().unwrap_or_default();
    let settings =
        queue.with_context(|| format!("the training step was queued as job {job}: give --queue to wait for it"))?;
    if !ctx.quiet {
        eprintln!("train: waiting again for job {job}, queued by an earlier run of this pipeline");
    }
    let spec = record.output.get("spec").cloned().unwrap_or(Value::Null);
    queued(ctx, state, key, None, run, settings, Some((job, spec)))
}

/// The run as a job on the queue (or the job `earlier` already queued), its id recorded before
/// it is waited on; the run folder fetched into `run`.
fn queued(
    ctx: &AppContext,
    state: &State,
    key: &str,
    cfg: Option<TrainConfig>,
    run: &Path,
    settings: &strix_jobs::QueueSettings,
    earlier: Option<(&str, Value)>,
) -> Result<Made> {
    let status = if earlier.is_some() { "resumed" } else { "ran" };
    let rt = crate::queue::runtime()?;
    let job = rt.block_on(async {
        let queue = crate::queue::connect(settings).await?;
        let (id, spec) = match earlier {
            Some((id, spec)) => (id.parse::<strix_jobs::JobId>().map_err(anyhow::Error::msg)?, spec),
            None => {
                let mut cfg = cfg.context("a new job needs its training settings")?;
                cfg.run_dir = None;
                let (id, spec) = crate::train_job::submit(ctx, &queue, cfg, None).await?;
                let output = json!({"job": id.as_str(), "spec": spec, "run": run.display().to_string()});
                state.write(TRAIN, &StepRecord::new(key, StepStatus::Running, output))?;
                if !ctx.quiet {
                    eprintln!("train: queued as job {id}; its log follows");
                }
                (id, spec)
            }
        };
        crate::train_job::follow(ctx, &queue, &id, &spec, run).await
    })?;
    if job.status != strix_jobs::Status::Succeeded {
        // Ended for good: the next run queues a new job rather than wait on this one again.
        let output = json!({"job": job.id.as_str(), "status": format!("{:?}", job.status), "error": job.error});
        state.write(TRAIN, &StepRecord::new(key, StepStatus::Failed, output))?;
        bail!("training job {} ended {:?}: {}", job.id, job.status, job.error.as_deref().unwrap_or("no error given"));
    }
    finished(ctx, run, status)
}

/// The key of a model-making step: its resolved settings and the digest of every file named.
fn step_key(settings: &str, files: &[(&str, Option<&Path>)]) -> Result<String> {
    let mut parts = vec![("settings".to_string(), settings.to_string())];
    for (name, path) in files {
        if let Some(p) = path {
            parts.push((name.to_string(), data_digest(p)?));
        }
    }
    let parts: Vec<(&str, &str)> = parts.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    Ok(key(&parts))
}

/// `[tune]`: its table as `strix tune`'s flags (`config` its positional base config), the
/// tuning folder in the state folder, the best trial's run the model.
pub fn tune(ctx: &AppContext, state: &State, table: toml::Table, queue: &QueueArgs) -> Result<Made> {
    // The files the trials read, wherever they are named: the table or its base config.
    let config = table.get("config").and_then(|v| v.as_str()).map(PathBuf::from);
    let (merged, _) = crate::layered::merged_table(config.as_deref(), table.clone())?;
    let settings = toml::to_string(&merged).context("the tuning settings")?;
    let path = |name: &str| merged.get(name).and_then(|v| v.as_str()).map(Path::new);
    let files = ["space", "data", "val_data", "test_data", "pretrained"].map(|name| (name, path(name)));
    let key = step_key(&settings, &files)?;
    let folder = state.dir().join("runs").join(format!("tune-{}", &key[..12]));
    let best = |folder: &Path| -> Option<PathBuf> {
        let job = strix_tune::tuning::Tuning::load(folder).ok()?;
        strix_tune::tuning::best_run_dir(folder, &job).filter(|r| exported(r))
    };
    let record = state.same(TUNE, &key)?;
    if let Some(r) = record.as_ref().filter(|r| r.status == StepStatus::Done)
        && let Some(run) = best(&folder)
    {
        return Ok(Made { run, status: "cached", output: r.output.clone() });
    }
    let resuming = record.is_some() && strix_tune::tuning::Tuning::load(&folder).is_ok();
    let mut argv = vec!["strix".to_string(), "tune".to_string()];
    if resuming {
        argv.extend(["--resume".to_string(), folder.display().to_string()]);
    } else {
        if folder.exists() {
            std::fs::remove_dir_all(&folder).with_context(|| folder.display().to_string())?;
        }
        argv.extend(tune_flags(&table)?);
        argv.extend(["--out".to_string(), folder.display().to_string()]);
    }
    if let Some(q) = &queue.queue {
        argv.extend(["--queue".to_string(), q.clone()]);
    }
    if let Some(q) = &queue.queue_config {
        argv.extend(["--queue-config".to_string(), q.display().to_string()]);
    }
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(&argv)
        .map_err(|e| anyhow::anyhow!("[tune]: {}", e.render()))?;
    let crate::cli::Command::Tune(args) = cli.command else { bail!("[tune]: not a tuning command") };
    state.write(TUNE, &StepRecord::new(&key, StepStatus::Running, json!({"folder": folder.display().to_string()})))?;
    let (folder, job) = crate::tune::search(ctx, &args)?;
    let run = strix_tune::tuning::best_run_dir(&folder, &job)
        .with_context(|| format!("{}: no trial of the tuning job finished", folder.display()))?;
    let mut made = finished(ctx, &run, if resuming { "resumed" } else { "ran" })?;
    made.output["folder"] = json!(folder.display().to_string());
    made.output["tuning"] = crate::tune::lineage(&folder, &job).unwrap_or(Value::Null);
    state.write(TUNE, &StepRecord::new(&key, StepStatus::Done, made.output.clone()))?;
    Ok(made)
}

/// A `[tune]` table as flags: `key = value` as `--key=value` (`_` as `-`), lists comma-joined,
/// `config` as the positional base config; a switch (`--no-export`) is given for `true` and
/// left out for `false`, a flag that takes a value gets `true` / `false`.
fn tune_flags(table: &toml::Table) -> Result<Vec<String>> {
    let cli = <crate::cli::Cli as clap::CommandFactory>::command();
    let tune = cli.find_subcommand("tune").context("strix has no tune command")?;
    let is_switch = |long: &str| {
        tune.get_arguments().find(|a| a.get_long() == Some(long)).is_some_and(|a| !a.get_action().takes_values())
    };
    let mut out = Vec::new();
    for (k, v) in table {
        if k == "config" {
            out.push(v.as_str().with_context(|| "[tune] config: a path")?.to_string());
            continue;
        }
        if !k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            bail!("[tune] {k:?}: not a setting name (strix tune's flags, written with `_`)");
        }
        let long = k.replace('_', "-");
        let flag = format!("--{long}");
        let value = match v {
            toml::Value::Boolean(b) if is_switch(&long) => {
                if *b {
                    out.push(flag);
                }
                continue;
            }
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    toml::Value::String(s) => Ok(s.clone()),
                    toml::Value::Integer(n) => Ok(n.to_string()),
                    toml::Value::Float(f) => Ok(f.to_string()),
                    other => bail!("[tune] {k}: a list of {}", other.type_str()),
                })
                .collect::<Result<Vec<_>>>()?
                .join(","),
            other => bail!("[tune] {k}: a {} is not a flag value", other.type_str()),
        };
        // One word: a value that starts with `-` stays a value.
        out.push(format!("{flag}={value}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tune_table_becomes_strix_tunes_flags() {
        let table: toml::Table = toml::from_str(
            "config = \"/p/base.toml\"\ntrials = 4\nstrategy = \"random\"\nlr = 0.01\nclasses = [\"a\", \"b\"]\ntest = false\n",
        )
        .unwrap();
        let flags = tune_flags(&table).unwrap();
        let text = flags.join(" ");
        for want in ["/p/base.toml", "--trials=4", "--strategy=random", "--lr=0.01", "--classes=a,b", "--test=false"] {
            assert!(text.contains(want), "{text}");
        }
        let bad: toml::Table = toml::from_str("space = { a = 1 }\n").unwrap();
        assert!(tune_flags(&bad).unwrap_err().to_string().contains("not a flag value"));
        let bad: toml::Table = toml::from_str("\"out=/x --trials\" = 1\n").unwrap();
        assert!(tune_flags(&bad).unwrap_err().to_string().contains("not a setting name"));
    }
}
