//! `strix pipeline run PIPELINE.toml`: snapshot, train or tune, evaluate, condition, register,
//! alias, in that order. Each step is recorded in the state folder under the digest of what it
//! read ([`strix_workflow`]); the training step is [`crate::pipeline_train`]'s, the scoring
//! [`crate::scoring`]'s.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Value, json};
use strix_export::{EXPORT_DIR, ONNX_FILE, SPEC_FILE};
use strix_registry::{ModelRef, RegistryError, VersionRecord};
use strix_workflow::condition::Reference;
use strix_workflow::spec::Trainer;
use strix_workflow::{PipelineSpec, SnapshotStep, State, StepRecord, StepStatus, key};

use crate::cli::{PipelineCommand, QueueArgs, RuntimeArgs};
use crate::context::AppContext;
use crate::pipeline_train::{Made, data_digest};

/// Exit status when the condition was not met (nothing registered).
const CONDITION_NOT_MET: u8 = 4;

#[derive(Serialize)]
struct StepReport {
    step: String,
    /// `ran`, `resumed` or `cached`.
    status: &'static str,
    seconds: f64,
    summary: String,
    output: Value,
}

struct Runner<'a> {
    ctx: &'a AppContext,
    runtime: &'a RuntimeArgs,
    /// One connection to the registry for the run's look-ups, opened at the first.
    session: std::cell::OnceCell<strix_catalog::RegistrySession>,
    state: State,
    steps: Vec<StepReport>,
}

type Figures = BTreeMap<String, f64>;

/// The version an alias pointed to when the candidate was compared with it.
struct Compared {
    record: VersionRecord,
    figures: Figures,
    /// It holds the candidate's very weights.
    same: bool,
}

/// The candidate's and the aliases' figures on the test set.
#[derive(Default)]
struct Evaluated {
    candidate: Figures,
    /// Per alias: the version it pointed to, or `None` when no version had it.
    aliases: BTreeMap<String, Option<Compared>>,
}

/// The keys the register, alias and evaluation steps are recorded under.
fn register_key(model: &str, onnx_sha: &str) -> String {
    key(&[("model", model), ("onnx", onnx_sha)])
}

fn alias_key(model: &str, version: u64, alias: &str) -> String {
    key(&[("model", model), ("version", &version.to_string()), ("alias", alias)])
}

fn evaluate_key(onnx_sha: &str, data_sha: &str) -> String {
    key(&[("onnx", onnx_sha), ("data", data_sha)])
}

/// What can be checked before any step runs: names the registry would refuse, a test set that
/// is not there.
fn check_before(spec: &PipelineSpec) -> Result<()> {
    if let Some(r) = &spec.register {
        crate::registry::check_target(&r.model, r.alias.as_slice()).context("[register]")?;
    }
    if let Some(e) = &spec.evaluate
        && !e.data.exists()
    {
        anyhow::bail!("[evaluate] data {}: no such file or folder", e.data.display());
    }
    // With a snapshot the project says the task, once it is opened.
    if let (Some(c), None) = (&spec.condition, &spec.snapshot) {
        c.check_task(task_of(&spec.trainer))?;
    }
    Ok(())
}

/// The task a `[train]` / `[tune]` table sets [default: classify].
fn task_of(trainer: &Trainer) -> &str {
    let (Trainer::Train(table) | Trainer::Tune(table)) = trainer;
    table.get("task").and_then(|v| v.as_str()).unwrap_or("classify")
}

pub fn run(ctx: &AppContext, cmd: &PipelineCommand) -> Result<ExitCode> {
    match cmd {
        PipelineCommand::Run(args) => {
            let queue = QueueArgs { queue: args.queue.clone(), queue_config: args.queue_config.clone() };
            run_file(ctx, &args.file, &queue, &args.runtime, args.json)
        }
    }
}

/// Run the pipeline in `file`; its outcome printed (JSON with `json`).
pub fn run_file(
    ctx: &AppContext,
    file: &Path,
    queue: &QueueArgs,
    runtime: &RuntimeArgs,
    json: bool,
) -> Result<ExitCode> {
    let spec = PipelineSpec::read(file)?;
    check_before(&spec)?;
    let state = State::open(&spec.state)?;
    if !ctx.quiet {
        eprintln!("pipeline {} (state {})", spec.file.display(), spec.state.display());
    }
    let mut runner = Runner { ctx, runtime, session: Default::default(), state, steps: Vec::new() };
    let met = runner.all(&spec, queue)?;
    let ran = runner.steps.iter().filter(|s| s.status != "cached").count();
    let cached = runner.steps.len() - ran;
    if json {
        let report = json!({"file": spec.file.display().to_string(), "state": spec.state.display().to_string(),
            "steps": runner.steps, "ran": ran, "cached": cached, "condition_met": met});
        println!("{report}");
    } else {
        let steps = |n: usize| if n == 1 { "1 step".to_string() } else { format!("{n} steps") };
        println!(
            "{} ran, {} unchanged{}",
            steps(ran),
            steps(cached),
            if met { "" } else { "; the condition was not met: nothing registered" }
        );
    }
    Ok(if met { ExitCode::SUCCESS } else { ExitCode::from(CONDITION_NOT_MET) })
}

/// `<figure> <value>` pairs of a figures object, for one-line summaries.
fn figures_text(figures: &Value) -> String {
    figures
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some(format!("{k} {:.4}", v.as_f64()?))).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn as_figures(v: &Value) -> Figures {
    v.as_object().map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect()).unwrap_or_default()
}

impl Runner<'_> {
    fn registry(&self) -> Result<&strix_catalog::RegistrySession> {
        if self.session.get().is_none() {
            let _ = self.session.set(crate::registry::session(self.ctx)?);
        }
        self.session.get().context("the registry session")
    }

    fn report(&mut self, step: &str, status: &'static str, started: Instant, summary: String, output: Value) {
        let seconds = started.elapsed().as_secs_f64();
        if !self.ctx.quiet {
            eprintln!("  {step:<10} {status:<8} {seconds:>7.1}s  {summary}");
        }
        self.steps.push(StepReport { step: step.to_string(), status, seconds, summary, output });
    }

    /// Every step in order; whether the condition (if any) was met.
    fn all(&mut self, spec: &PipelineSpec, queue: &QueueArgs) -> Result<bool> {
        let mut trainer = spec.trainer.clone();
        if let Some(snapshot) = &spec.snapshot {
            let (Trainer::Train(table) | Trainer::Tune(table)) = &mut trainer;
            self.snapshot(snapshot, table)?;
        }
        // Without a snapshot, check_before has checked this already.
        if let (Some(c), Some(_)) = (&spec.condition, &spec.snapshot) {
            c.check_task(task_of(&trainer))?;
        }
        let started = Instant::now();
        let (step, made) = match trainer {
            Trainer::Train(table) => ("train", crate::pipeline_train::train(self.ctx, &self.state, table, queue)?),
            Trainer::Tune(table) => ("tune", crate::pipeline_train::tune(self.ctx, &self.state, table, queue)?),
        };
        let summary = made.output["headline"].as_str().unwrap_or_default().to_string();
        self.report(step, made.status, started, summary, made.output.clone());
        let onnx = made.run.join(EXPORT_DIR).join(ONNX_FILE);
        let onnx_sha = strix_zoo::sha256_file(&onnx).with_context(|| onnx.display().to_string())?;
        let test = match &spec.evaluate {
            Some(e) => Some((e.data.clone(), data_digest(&e.data)?)),
            None => None,
        };
        if self.deployed(spec, &made, &onnx_sha, test.as_ref().map(|(_, sha)| sha.as_str()))? {
            return Ok(true);
        }
        let evaluated = match &test {
            Some((data, data_sha)) => self.evaluate(spec, &made, &onnx_sha, data, data_sha)?,
            None => Evaluated::default(),
        };
        if let Some(condition) = &spec.condition
            && !self.condition(spec, condition, &made, &evaluated)?
        {
            return Ok(false);
        }
        if let Some(register) = &spec.register {
            let version = self.register(spec, &register.model, &made, &onnx_sha)?;
            if let Some(alias) = &register.alias {
                let compared = evaluated.aliases.get(alias).map(|c| c.as_ref().map(|c| c.record.version));
                self.alias(&register.model, version, alias, compared)?;
            }
        }
        Ok(true)
    }

    /// Whether this pipeline already judged, registered and aliased this very model (the
    /// records of those steps under its digest, the version still there): then the rest is
    /// unchanged, reported from the records. Judging it again would compare it with itself.
    fn deployed(&mut self, spec: &PipelineSpec, made: &Made, onnx_sha: &str, data_sha: Option<&str>) -> Result<bool> {
        let Some(register) = &spec.register else { return Ok(false) };
        let started = Instant::now();
        let done = |step: &str, key: &str| -> Result<Option<StepRecord>> {
            Ok(self.state.same(step, key)?.filter(|r| r.status == StepStatus::Done))
        };
        let model = register.model.as_str();
        let Some(registered) = done("register", &register_key(model, onnx_sha))? else { return Ok(false) };
        let Some(version) = registered.output["version"].as_u64() else { return Ok(false) };
        if !self.still_registered(model, version, onnx_sha)? {
            return Ok(false);
        }
        if let Some(alias) = &register.alias
            && done("alias", &alias_key(model, version, alias))?.is_none()
        {
            return Ok(false);
        }
        let mut steps = Vec::new();
        if let Some(data_sha) = data_sha {
            let Some(r) = done("evaluate", &evaluate_key(onnx_sha, data_sha))? else { return Ok(false) };
            let summary = format!("{} test images: {}", r.output["images"], figures_text(&r.output["figures"]));
            steps.push(("evaluate", summary, r.output));
        }
        if let Some(condition) = &spec.condition {
            // The condition as written then: an edited one is checked again.
            let Some(r) = self
                .state
                .record("condition")?
                .filter(|r| r.status == StepStatus::Done && r.output["when"] == condition.text.as_str())
            else {
                return Ok(false);
            };
            steps.push(("condition", format!("met when {model}:{version} was registered"), r.output));
        }
        for (step, summary, output) in steps {
            self.report(step, "cached", started, summary, output);
        }
        self.register(spec, model, made, onnx_sha)?;
        if let Some(alias) = &register.alias {
            self.alias(model, version, alias, None)?;
        }
        Ok(true)
    }

    /// The project's labels as of now (a snapshot named by their digest) as the training data.
    fn snapshot(&mut self, step: &SnapshotStep, table: &mut toml::Table) -> Result<()> {
        let started = Instant::now();
        let given = table.get("task").and_then(|v| v.as_str());
        let (dir, task) = crate::label::training_snapshot(&step.project, given)?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let key = key(&[("project", &step.project.display().to_string()), ("snapshot", &name)]);
        let cached = self.state.same("snapshot", &key)?.is_some_and(|r| r.status == StepStatus::Done);
        let output = json!({"project": step.project.display().to_string(), "dir": dir.display().to_string(),
            "task": task.to_string()});
        if !cached {
            self.state.write("snapshot", &StepRecord::new(&key, StepStatus::Done, output.clone()))?;
        }
        table.insert("data".into(), dir.display().to_string().into());
        table.entry("task").or_insert_with(|| task.to_string().into());
        let summary = format!("labels of {} as of now: snapshot {name}", step.project.display());
        self.report("snapshot", if cached { "cached" } else { "ran" }, started, summary, output);
        Ok(())
    }

    /// `model` scored on `data` under the record `step`, unless the same model (by its ONNX
    /// digest) was scored on the same data before; the output and whether it ran.
    fn scored(&self, step: &str, model: &str, onnx_sha: &str, data: &Path, data_sha: &str) -> Result<(Value, bool)> {
        let key = evaluate_key(onnx_sha, data_sha);
        if let Some(r) = self.state.same(step, &key)?.filter(|r| r.status == StepStatus::Done) {
            return Ok((r.output, false));
        }
        let scored =
            crate::scoring::score(self.ctx, model, data, self.runtime).with_context(|| format!("scoring {model}"))?;
        let output = json!({"model": model, "images": scored.images, "figures": scored.figures});
        self.state.write(step, &StepRecord::new(&key, StepStatus::Done, output.clone()))?;
        Ok((output, true))
    }

    /// The candidate, and each version an alias of the condition points to, on the test set.
    fn evaluate(
        &mut self,
        spec: &PipelineSpec,
        made: &Made,
        onnx_sha: &str,
        data: &Path,
        data_sha: &str,
    ) -> Result<Evaluated> {
        let started = Instant::now();
        let model = made.run.join(EXPORT_DIR).join(SPEC_FILE).display().to_string();
        let (candidate, mut ran) = self.scored("evaluate", &model, onnx_sha, data, data_sha)?;
        let mut summary = vec![format!("{} test images: {}", candidate["images"], figures_text(&candidate["figures"]))];
        let mut output = json!({"candidate": candidate, "aliases": {}});
        let mut evaluated = Evaluated { candidate: as_figures(&candidate["figures"]), ..Default::default() };
        let aliases = spec.condition.as_ref().map(|c| c.aliases()).unwrap_or_default();
        for alias in aliases {
            let model_name = spec.register.as_ref().map(|r| r.model.as_str()).unwrap_or_default();
            let Some(record) = self.compared_version(model_name, &alias)? else {
                summary.push(format!("{alias}: no version yet"));
                output["aliases"][&alias] = Value::Null;
                evaluated.aliases.insert(alias, None);
                continue;
            };
            let label = format!("{}:{}", record.name, record.version);
            // A version without an ONNX file is known by its name and number.
            let sha = record.artifact(ONNX_FILE).map_or_else(|| label.clone(), |a| a.sha256.clone());
            let same = sha == onnx_sha;
            // The same weights score the same: the candidate's figures stand for them.
            let scored = if same {
                json!({"model": label, "images": candidate["images"], "figures": candidate["figures"]})
            } else {
                let (scored, this_ran) = self.scored(&format!("evaluate-{alias}"), &label, &sha, data, data_sha)?;
                ran |= this_ran;
                scored
            };
            summary.push(format!("{alias} ({label}): {}", figures_text(&scored["figures"])));
            output["aliases"][&alias] = scored.clone();
            let figures = as_figures(&scored["figures"]);
            evaluated.aliases.insert(alias, Some(Compared { record, figures, same }));
        }
        self.report("evaluate", if ran { "ran" } else { "cached" }, started, summary.join("; "), output);
        Ok(evaluated)
    }

    /// The version `alias` of `model` points to; `None` when the model or the alias does not
    /// exist yet.
    fn alias_version(&self, model: &str, alias: &str) -> Result<Option<VersionRecord>> {
        let session = self.registry()?;
        match session.run(session.registry.get(&ModelRef::parse(&format!("{model}@{alias}"))?)) {
            Ok(r) => Ok(Some(r)),
            Err(RegistryError::UnknownModel { .. } | RegistryError::UnknownAlias { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The version a condition's `alias` points to; `None` while the model has no version at
    /// all (a first run: nothing to beat). A model that has versions but not this alias is a
    /// mistyped condition, not a pass.
    fn compared_version(&self, model: &str, alias: &str) -> Result<Option<VersionRecord>> {
        let session = self.registry()?;
        match session.run(session.registry.get(&ModelRef::parse(&format!("{model}@{alias}"))?)) {
            Ok(r) => Ok(Some(r)),
            Err(RegistryError::UnknownModel { .. }) => Ok(None),
            Err(e @ RegistryError::UnknownAlias { .. }) => {
                Err(anyhow::Error::new(e).context(format!("the condition compares with {model}@{alias}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn condition(
        &mut self,
        spec: &PipelineSpec,
        condition: &strix_workflow::Condition,
        made: &Made,
        evaluated: &Evaluated,
    ) -> Result<bool> {
        let started = Instant::now();
        let val = as_figures(&made.output["val"]);
        let figure = |name: &str| -> Option<f64> {
            match name.split_once('.') {
                Some(("val", f)) => val.get(f).copied(),
                Some(("test", f)) => evaluated.candidate.get(f).copied(),
                _ => None,
            }
        };
        let model = spec.register.as_ref().map(|r| r.model.as_str()).unwrap_or_default();
        let reference = |alias: &str, name: &str| -> Result<Reference, String> {
            let (kind, f) = name.split_once('.').unwrap_or(("", name));
            if let Some(Some(c)) = evaluated.aliases.get(alias)
                && c.same
            {
                return Ok(Reference::Same(format!("{}:{}", c.record.name, c.record.version)));
            }
            if kind == "test" {
                return match evaluated.aliases.get(alias) {
                    Some(Some(c)) => c
                        .figures
                        .get(f)
                        .map(|v| Reference::Figure(*v))
                        .ok_or_else(|| format!("{}:{} has no figure `{name}`", c.record.name, c.record.version)),
                    _ => Ok(Reference::NoVersion),
                };
            }
            let record = self.compared_version(model, alias).map_err(|e| format!("{e:#}"))?;
            let Some(record) = record else { return Ok(Reference::NoVersion) };
            let summary: Option<strix_train::RunSummary> =
                record.lineage.metrics.clone().and_then(|m| serde_json::from_value(m).ok());
            let figures = summary.map(|s| as_figures(&crate::pipeline_train::val_figures(&s))).unwrap_or_default();
            figures.get(f).map(|v| Reference::Figure(*v)).ok_or_else(|| {
                format!("{}:{} was registered without a run's `{name}` to compare with", record.name, record.version)
            })
        };
        let verdict = condition.check(figure, reference)?;
        let inputs = json!({"val": val, "test": evaluated.candidate,
            "aliases": evaluated.aliases.iter().map(|(a, v)| (a.clone(), v.as_ref().map(|c| json!({"version": c.record.version, "figures": c.figures})))).collect::<BTreeMap<_, _>>()});
        let key = key(&[("when", &condition.text), ("figures", &inputs.to_string())]);
        let cached = self.state.same("condition", &key)?.is_some();
        let output = json!({"when": condition.text, "met": verdict.passed, "clauses": verdict.clauses});
        let status = if verdict.passed { StepStatus::Done } else { StepStatus::Failed };
        if !cached {
            self.state.write("condition", &StepRecord::new(&key, status, output.clone()))?;
        }
        let clauses: Vec<String> =
            verdict.clauses.iter().map(|c| format!("{}{}", c.text, if c.passed { "" } else { " (NO)" })).collect();
        let summary = format!("{}: {}", if verdict.passed { "met" } else { "NOT met" }, clauses.join("; "));
        self.report("condition", if cached { "cached" } else { "ran" }, started, summary, output);
        Ok(verdict.passed)
    }

    /// The candidate as the next version of `model`, unless this pipeline registered the same
    /// ONNX file there before (and that version still exists).
    fn register(&mut self, spec: &PipelineSpec, model: &str, made: &Made, onnx_sha: &str) -> Result<u64> {
        let started = Instant::now();
        let key = register_key(model, onnx_sha);
        // Registered already, by this run (a kill after registering, before its record) or an
        // earlier one (settings changed and changed back): that version, not a copy of it.
        if let Some(version) = self.registered_as(model, onnx_sha)? {
            let output = json!({"model": model, "version": version});
            let cached = self.state.same("register", &key)?.is_some_and(|r| r.output["version"] == version);
            self.state.write("register", &StepRecord::new(&key, StepStatus::Done, output.clone()))?;
            let summary =
                format!("{model}:{version}{}", if cached { "" } else { " (this model was registered already)" });
            self.report("register", "cached", started, summary, output);
            return Ok(version);
        }
        let source = format!("pipeline {} (run {})", spec.file.display(), made.run.display());
        let tuning = made.output.get("tuning").filter(|t| !t.is_null()).cloned();
        let record = crate::registry::register_run(self.ctx, &made.run, model, Some(source), tuning)?;
        let output = json!({"model": model, "version": record.version});
        self.state.write("register", &StepRecord::new(&key, StepStatus::Done, output.clone()))?;
        self.report("register", "ran", started, format!("{model}:{}", record.version), output);
        Ok(record.version)
    }

    /// The newest version of `model` whose ONNX file is this one.
    fn registered_as(&self, model: &str, onnx_sha: &str) -> Result<Option<u64>> {
        let session = self.registry()?;
        match session.run(session.registry.versions(model)) {
            Ok(all) => Ok(all
                .iter()
                .filter(|r| r.artifact(ONNX_FILE).is_some_and(|a| a.sha256 == onnx_sha))
                .map(|r| r.version)
                .max()),
            Err(RegistryError::UnknownModel { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn still_registered(&self, model: &str, version: u64, onnx_sha: &str) -> Result<bool> {
        let session = self.registry()?;
        match session.run(session.registry.get(&ModelRef::parse(&format!("{model}:{version}"))?)) {
            Ok(r) => Ok(r.artifact(ONNX_FILE).is_some_and(|a| a.sha256 == onnx_sha)),
            Err(RegistryError::UnknownModel { .. } | RegistryError::UnknownVersion { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// `alias` moved to `version`, once: a rerun does not move back an alias someone has moved
    /// since (a rollback stays).
    ///
    /// `compared`: the version the condition compared the candidate with through this alias
    /// (`Some(None)`: none had it then). If the alias has moved since, another run moved it:
    /// the comparison no longer holds, and the alias is left alone.
    fn alias(&mut self, model: &str, version: u64, alias: &str, compared: Option<Option<u64>>) -> Result<()> {
        let started = Instant::now();
        let key = alias_key(model, version, alias);
        let now = self.alias_version(model, alias)?.map(|r| r.version);
        if let Some(r) = self.state.same("alias", &key)?.filter(|r| r.status == StepStatus::Done) {
            let moved = match now {
                Some(v) if v != version => format!(" (it points to {model}:{v} now: moved since, left there)"),
                None => " (the alias is gone now: removed since, left so)".to_string(),
                _ => String::new(),
            };
            self.report("alias", "cached", started, format!("{alias} -> {model}:{version}{moved}"), r.output);
            return Ok(());
        }
        if let Some(then) = compared
            && now != then
            && now != Some(version)
        {
            let was = |v: Option<u64>| v.map_or("no version".to_string(), |v| format!("{model}:{v}"));
            anyhow::bail!(
                "{alias} moved from {} to {} while this pipeline ran; {model}:{version} is registered but {alias} \
                 was left alone: run the pipeline again to compare with {}",
                was(then),
                was(now),
                was(now)
            );
        }
        let previous = now;
        let session = self.registry()?;
        session.run(session.registry.set_alias(model, version, alias))?;
        let output = json!({"model": model, "alias": alias, "version": version, "previous": previous});
        self.state.write("alias", &StepRecord::new(&key, StepStatus::Done, output.clone()))?;
        let was = previous.map(|p| format!(" (was {model}:{p})")).unwrap_or_default();
        self.report("alias", "ran", started, format!("{alias} -> {model}:{version}{was}"), output);
        Ok(())
    }
}
