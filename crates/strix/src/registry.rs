//! `strix models register | alias | unalias | delete | download | gc`, registry rows in
//! `models list` / `show`, and `NAME:3` / `NAME@production` wherever a model is named.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use strix_catalog::RegistrySession;
use strix_export::SPEC_FILE;
use strix_registry::{Lineage, ModelRef, NewFile, NewVersion, VersionRecord};

use crate::cli::RuntimeArgs;
use crate::context::AppContext;

/// The registry, opened now.
pub fn session(ctx: &AppContext) -> Result<RegistrySession> {
    Ok(ctx.catalog().registry()?)
}

/// Whether a registry has been set up here (see [`strix_catalog::Catalog::registry_exists`]).
pub fn exists(ctx: &AppContext) -> bool {
    ctx.catalog().registry_exists()
}

/// Files of a run folder that travel with its versions (when present).
const RUN_FILES: &[&str] = &[
    strix_train::files::CONFIG_FILE,
    strix_train::files::FINAL_FILE,
    strix_train::files::SUMMARY_FILE,
    strix_train::files::METRICS_FILE,
    strix_train::files::DATASET_FILE,
    strix_train::files::DATASET_MANIFEST_FILE,
    strix_train::files::REPORT_FILE,
];

/// `strix models register SOURCE --name NAME`.
pub fn register(
    ctx: &AppContext,
    source: &Path,
    name: &str,
    spec: Option<&Path>,
    aliases: &[String],
    json: bool,
    runtime: &RuntimeArgs,
) -> Result<ExitCode> {
    check_target(name, aliases)?;
    let (onnx, spec_path, lineage, extra) = if source.is_dir() {
        run_source(source)?
    } else if source.is_file() {
        let spec_path = spec.map(Path::to_path_buf).unwrap_or_else(|| source.with_extension("toml"));
        if !spec_path.is_file() {
            bail!(
                "{}: no spec beside it ({}); pass --spec SPEC.toml (see docs/model-spec.md)",
                source.display(),
                spec_path.display()
            );
        }
        let lineage = Lineage { source: crate::inputs::absolute(source).display().to_string(), ..Default::default() };
        (source.to_path_buf(), spec_path, lineage, Vec::new())
    } else {
        bail!("{}: no such run folder or ONNX file", source.display());
    };
    let files = Registration { onnx: &onnx, spec: &spec_path, lineage, extra };
    let record = register_files(ctx, name, files, aliases, runtime)?;
    print_registered(ctx, &record, json)
}

/// Register a run folder's export as the next version of `name`; `source` names where the
/// run lives when not here (a job's folder in the store), `tuning` the job that chose it.
pub fn register_run(
    ctx: &AppContext,
    run: &Path,
    name: &str,
    source: Option<String>,
    tuning: Option<Value>,
) -> Result<VersionRecord> {
    check_target(name, &[])?;
    let (onnx, spec_path, mut lineage, mut extra) = run_source(run)?;
    lineage.source = source.unwrap_or(lineage.source);
    lineage.tuning = tuning;
    // The version keeps the baseline of its validation images: `--monitor` needs no other.
    // Its images may be gone (a run fetched from a worker names the worker's paths): then the
    // version goes without.
    if strix_index::knn::KnnRun::read_if_present(run)?.is_none() {
        match crate::monitor_observe::run_baseline(ctx, run, &spec_path) {
            Ok(Some(dir)) => {
                use crate::monitor_observe::REGISTERED_PREFIX;
                for file in [strix_monitor::baseline::STATISTICS, strix_monitor::baseline::CONSTRAINTS] {
                    extra.push(NewFile { file: format!("{REGISTERED_PREFIX}{file}"), path: dir.join(file) });
                }
            }
            Ok(None) => {}
            Err(e) if !ctx.quiet => eprintln!("note: registered without a baseline of the validation images: {e:#}"),
            Err(_) => {}
        }
    }
    let files = Registration { onnx: &onnx, spec: &spec_path, lineage, extra };
    register_files(ctx, name, files, &[], &RuntimeArgs::for_checks())
}

/// Refuse a name or alias a new version cannot take, before any work is done for it.
pub fn check_target(name: &str, aliases: &[String]) -> Result<()> {
    strix_registry::check_name(name)?;
    for alias in aliases {
        strix_registry::check_alias(alias)?;
    }
    if strix_zoo::builtin::names().contains(&name) {
        bail!("`{name}` is a zoo model's name; register under another name");
    }
    Ok(())
}

/// What a new version consists of: a checked ONNX file and its spec, lineage and extra files.
pub struct Registration<'a> {
    pub onnx: &'a Path,
    pub spec: &'a Path,
    pub lineage: Lineage,
    pub extra: Vec<NewFile>,
}

/// Check `files` (the ONNX parses, loads and answers through its spec) and register them as
/// the next version of `name`, with `aliases`; the new version's record.
pub fn register_files(
    ctx: &AppContext,
    name: &str,
    files: Registration<'_>,
    aliases: &[String],
    runtime: &RuntimeArgs,
) -> Result<VersionRecord> {
    let Registration { onnx, spec: spec_path, lineage, extra } = files;
    // An ONNX file that does not parse is refused before anything is uploaded.
    strix_runtime::inspect(onnx).with_context(|| format!("{}: not a readable ONNX model", onnx.display()))?;
    let bars = ctx.bars();
    let model = ctx.checked_model(onnx, spec_path, Some(name), runtime, &bars)?;
    let (mut spec, files) = strix_zoo::store::package(&model)?;
    spec.name = name.to_string();
    let staging = tempfile::tempdir().context("temporary folder")?;
    let spec_file = staging.path().join(SPEC_FILE);
    std::fs::write(&spec_file, format!("# Registered by strix from {}\n{}", lineage.source, spec.to_toml()))
        .with_context(|| spec_file.display().to_string())?;
    let mut new_files: Vec<NewFile> = files.into_iter().map(|(file, path)| NewFile { file, path }).collect();
    new_files.push(NewFile { file: SPEC_FILE.into(), path: spec_file });
    new_files.extend(extra);
    let new = NewVersion {
        name: name.to_string(),
        task: spec.task.to_string(),
        files: new_files,
        lineage,
        created_by: crate::settings::who(),
        strix_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let session = session(ctx)?;
    let record = session.run(session.registry.register(new, &bars))?;
    for alias in aliases {
        session.run(session.registry.set_alias(name, record.version, alias))?;
    }
    Ok(session.run(session.registry.get(&ModelRef::parse(&format!("{name}:{}", record.version))?))?)
}

/// Say what was registered: the record as JSON, or a line and a command to try.
pub fn print_registered(ctx: &AppContext, record: &VersionRecord, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        let bytes: u64 = record.artifacts.iter().map(|a| a.size).sum();
        let (store, _) = session(ctx)?.registry.describe();
        println!(
            "registered {}:{} ({} files, {}) in {store}{}\n  try: strix predict --model {}:{} IMAGE",
            record.name,
            record.version,
            record.artifacts.len(),
            crate::show::mib(bytes),
            if record.aliases.is_empty() { String::new() } else { format!("; aliases: {}", record.aliases.join(", ")) },
            record.name,
            record.version
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A run folder's export, spec, lineage and the run files that go with them.
fn run_source(run: &Path) -> Result<(PathBuf, PathBuf, Lineage, Vec<NewFile>)> {
    use strix_export::{EXPORT_DIR, GATE_FILE, ONNX_FILE};
    let export = run.join(EXPORT_DIR);
    let onnx = export.join(ONNX_FILE);
    if !onnx.is_file() {
        bail!(
            "{}: no {EXPORT_DIR}/{ONNX_FILE}; export the run first (`strix export {}`), or register an ONNX file",
            run.display(),
            run.display()
        );
    }
    let read_json = |path: &Path| -> Result<Option<Value>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| path.display().to_string()),
        }
    };
    // A run that has not finished has no figures to record.
    let metrics = strix_train::RunSummary::read_if_finished(run)?.map(serde_json::to_value).transpose()?;
    let mut extra_files = Vec::new();
    let (config, parent) = match strix_index::knn::KnnRun::read_if_present(run)? {
        // A k-NN run stands on its embedding model, and its labelled vectors go with it.
        Some(knn) => {
            let neighbours = export.join(strix_index::knn::NEIGHBOURS_FILE);
            extra_files.push(NewFile { file: strix_index::knn::NEIGHBOURS_FILE.into(), path: neighbours });
            let parent = json!({"model": knn.embedding.reference, "sha256": knn.embedding.sha256});
            (serde_json::to_value(&knn)?, Some(parent))
        }
        None => {
            let config = strix_train::files::saved_config(run)?;
            let parent = match &config.pretrained {
                Some(p) if config.mode() != strix_train::config::Mode::Scratch => {
                    let sha = strix_zoo::sha256_file(p).ok();
                    Some(json!({"path": crate::inputs::absolute(p).display().to_string(), "sha256": sha}))
                }
                _ => None,
            };
            (serde_json::to_value(&config)?, parent)
        }
    };
    let lineage = Lineage {
        source: crate::inputs::absolute(run).display().to_string(),
        metrics,
        dataset: read_json(&run.join(strix_train::files::DATASET_FILE))?,
        config: Some(config),
        parent,
        gate: read_json(&export.join(GATE_FILE))?,
        tuning: None,
    };
    let mut extra: Vec<NewFile> = RUN_FILES
        .iter()
        .map(|f| NewFile { file: f.to_string(), path: run.join(f) })
        .filter(|f| f.path.is_file())
        .collect();
    extra.push(NewFile { file: GATE_FILE.into(), path: export.join(GATE_FILE) });
    extra.extend(extra_files);
    extra.retain(|f| f.path.is_file());
    Ok((onnx, export.join(SPEC_FILE), lineage, extra))
}

pub fn alias(ctx: &AppContext, name: &str, version: u64, alias: &str) -> Result<ExitCode> {
    let session = session(ctx)?;
    session.run(session.registry.set_alias(name, version, alias))?;
    println!("{name}@{alias} -> {name}:{version}");
    Ok(ExitCode::SUCCESS)
}

pub fn unalias(ctx: &AppContext, name: &str, alias: &str) -> Result<ExitCode> {
    let session = session(ctx)?;
    session.run(session.registry.remove_alias(name, alias))?;
    println!("removed {name}@{alias}");
    Ok(ExitCode::SUCCESS)
}

pub fn delete(ctx: &AppContext, model: &str, all: bool) -> Result<ExitCode> {
    let reference = ModelRef::parse(model)?;
    let session = session(ctx)?;
    let deleted = session.run(session.registry.delete(&reference, all))?;
    let list: Vec<String> = deleted.iter().map(|v| format!("{}:{v}", reference.name)).collect();
    println!("deleted {} (files stay until `strix models gc`)", list.join(", "));
    Ok(ExitCode::SUCCESS)
}

pub fn download(ctx: &AppContext, model: &str, out: Option<&Path>) -> Result<ExitCode> {
    let reference = ModelRef::parse(model)?;
    let session = session(ctx)?;
    let record = session.run(session.registry.get(&reference))?;
    let dir =
        out.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(format!("{}-v{}", record.name, record.version)));
    let bars = ctx.bars();
    let paths = session.run(session.registry.download(&record, &dir, &bars))?;
    println!("{}:{} -> {} ({} files, checked)", record.name, record.version, dir.display(), paths.len());
    if dir.join(SPEC_FILE).is_file() {
        println!("  try: strix predict --model {} IMAGE", dir.join(SPEC_FILE).display());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn gc(ctx: &AppContext, grace_minutes: f64, json: bool) -> Result<ExitCode> {
    if !(grace_minutes >= 0.0 && grace_minutes.is_finite()) {
        bail!("--grace-minutes must be a number >= 0");
    }
    let session = session(ctx)?;
    let report = session.run(session.registry.gc(Duration::from_secs_f64(grace_minutes * 60.0)))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "removed {} unreferenced blobs ({}) and {} unfinished uploads; kept {} younger than {grace_minutes} min",
            report.blobs_removed,
            crate::show::mib(report.bytes_removed),
            report.uploads_removed,
            report.blobs_kept_young
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify(ctx: &AppContext) -> Result<ExitCode> {
    let session = session(ctx)?;
    let problems = session.run(session.registry.check())?;
    let versions: u64 = session.run(session.registry.list())?.iter().map(|m| m.versions).sum();
    if problems.is_empty() {
        println!("consistent: {versions} versions, every file present with its recorded size");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        eprintln!("problem: {p}");
    }
    bail!("{} problem(s) in {versions} versions", problems.len());
}

/// Registry models as `models list` rows: `(name, task, size of newest, summary)`.
pub fn list_rows(ctx: &AppContext) -> Result<Vec<(String, String, u64, String)>> {
    if !exists(ctx) {
        return Ok(Vec::new());
    }
    let session = session(ctx)?;
    let mut rows = Vec::new();
    for m in session.run(session.registry.list())? {
        let latest = session.run(session.registry.get(&ModelRef::parse(&format!("{}:{}", m.name, m.latest))?))?;
        let aliases: Vec<String> = m.aliases.iter().map(|(a, v)| format!("@{a}={v}")).collect();
        let summary = format!(
            "(registry) {} version{}{}",
            m.versions,
            if m.versions == 1 { "" } else { "s" },
            if aliases.is_empty() { String::new() } else { format!(", {}", aliases.join(" ")) }
        );
        let size = latest.artifacts.iter().map(|a| a.size).sum();
        rows.push((
            format!("{}:{}", m.name, m.latest),
            crate::show::printable(&m.task),
            size,
            crate::show::printable(&summary),
        ));
    }
    Ok(rows)
}

/// `models show` for a registry model: every version (bare name) or one version's record.
pub fn show(ctx: &AppContext, text: &str, json: bool) -> Result<Option<ExitCode>> {
    let explicit = ModelRef::is_explicit(text);
    if !explicit && (ctx.catalog().locate_local(text).is_ok() || !exists(ctx)) {
        return Ok(None);
    }
    let reference = ModelRef::parse(text)?;
    let session = session(ctx)?;
    let records = if explicit {
        vec![session.run(session.registry.get(&reference))?]
    } else {
        match session.run(session.registry.versions(&reference.name)) {
            Ok(r) => r,
            Err(_) => return Ok(None),
        }
    };
    if json {
        let doc = if explicit { serde_json::to_value(&records[0])? } else { serde_json::to_value(&records)? };
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(Some(ExitCode::SUCCESS));
    }
    for r in &records {
        print_record(r);
    }
    Ok(Some(ExitCode::SUCCESS))
}

/// A version's recorded figures in one line: a trained run's [`strix_train::RunSummary`], or a
/// quantised version's agreement with its float parent.
fn metrics_line(m: &Value) -> String {
    if let Ok(s) = serde_json::from_value::<strix_train::RunSummary>(m.clone()) {
        return s.headline();
    }
    if let (Some(a), Some(x)) = (m.get("agreement").and_then(Value::as_f64), m.get("speedup").and_then(Value::as_f64)) {
        let kl =
            m.get("mean_kl").and_then(Value::as_f64).map(|kl| format!(" (mean KL {kl:.4} nats)")).unwrap_or_default();
        return format!("agrees with its float parent on {:.1}% of held-out images{kl}, {x:.2}x its speed", a * 100.0);
    }
    // Recorded by an older Strix, in a shape this one does not type.
    m.to_string()
}

fn print_record(r: &VersionRecord) {
    let field = |k: &str, v: &str| println!("  {k:<11} {}", crate::show::printable(v));
    println!("{}:{} (registry)", r.name, r.version);
    field("task", &r.task);
    if !r.aliases.is_empty() {
        field("aliases", &r.aliases.join(", "));
    }
    let when = std::time::UNIX_EPOCH + Duration::from_secs(r.created_at.max(0) as u64);
    field(
        "created",
        &format!("{} by {} (strix {})", humantime::format_rfc3339_seconds(when), r.created_by, r.strix_version),
    );
    field("source", &r.lineage.source);
    if let Some(m) = &r.lineage.metrics {
        field("metrics", &metrics_line(m));
    }
    if let Some(d) = &r.lineage.dataset {
        let get =
            |d: &Value, k: &str| d.get(k).map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
        match (d.get("calibration"), d.get("held_out")) {
            (Some(c), Some(h)) => field(
                "images",
                &format!(
                    "calibration {} (sha256 {}), held out {} (sha256 {})",
                    get(c, "images"),
                    get(c, "sha256"),
                    get(h, "images"),
                    get(h, "sha256")
                ),
            ),
            _ => field("dataset", &format!("sha256 {} ({} files)", get(d, "sha256"), get(d, "files"))),
        }
    }
    if let Some(p) = &r.lineage.parent {
        let get = |k: &str| p.get(k).and_then(Value::as_str);
        let what = get("model").or(get("path")).unwrap_or("?");
        field("parent", &format!("{what} (sha256 {})", get("sha256").unwrap_or("?")));
    }
    if let Some(t) = &r.lineage.tuning {
        let get = |k: &str| t.get(k).map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
        field(
            "tuning",
            &format!(
                "job {}: trial {} of {}, {} {} ({})",
                get("job"),
                get("trial"),
                get("trials"),
                get("objective"),
                get("value"),
                get("params")
            ),
        );
    }
    if let Some(g) = &r.lineage.gate {
        if let Ok(report) = serde_json::from_value::<strix_export::gate::GateReport>(g.clone()) {
            field("gate", &format!("passed: {report}"));
        } else if let Ok(report) = serde_json::from_value::<strix_optimize::GateReport>(g.clone()) {
            field("gate", &format!("passed: {}", report.summary()));
        } else {
            field("gate", &g.to_string());
        }
    }
    for a in &r.artifacts {
        field("file", &format!("{:<16} {:>10}  sha256 {}", a.file, crate::show::mib(a.size), a.sha256));
    }
}
