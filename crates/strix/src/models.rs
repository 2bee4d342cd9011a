//! `strix models list | show | fetch | import | inspect`; the registry's commands are in
//! `registry.rs`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde::Serialize;
use strix_core::{NoProgress, TensorInfo};
use strix_vision::{ChannelOrder, Layout, Resize};
use strix_zoo::{Artifact, LocatedSpec, ModelSpec, Resolver, builtin, store};

use crate::cli::{ModelsCommand, RuntimeArgs, ShowFormat};
use crate::context::AppContext;
use crate::registry;

pub fn run(ctx: &AppContext, cmd: &ModelsCommand) -> Result<ExitCode> {
    match cmd {
        ModelsCommand::List { json } => list(ctx, *json),
        ModelsCommand::Show { model, format, toml, json, io, runtime } => {
            let format = if *toml {
                ShowFormat::Toml
            } else if *json {
                ShowFormat::Json
            } else {
                *format
            };
            show(ctx, model, format, io.then_some(runtime))
        }
        ModelsCommand::Fetch { models } => fetch(ctx, models),
        ModelsCommand::Import { onnx, spec, name, force, runtime } => {
            import(ctx, onnx, spec, name.as_deref(), *force, runtime)
        }
        ModelsCommand::Inspect { onnx, json } => inspect(onnx, *json),
        ModelsCommand::Register { source, name, spec, aliases, json, runtime } => {
            registry::register(ctx, source, name, spec.as_deref(), aliases, *json, runtime)
        }
        ModelsCommand::Optimize(args) => crate::optimize::run(ctx, args),
        ModelsCommand::Alias { name, version, alias } => registry::alias(ctx, name, *version, alias),
        ModelsCommand::Unalias { name, alias } => registry::unalias(ctx, name, alias),
        ModelsCommand::Delete { model, all } => registry::delete(ctx, model, *all),
        ModelsCommand::Download { model, out } => registry::download(ctx, model, out.as_deref()),
        ModelsCommand::Gc { grace_minutes, json } => registry::gc(ctx, *grace_minutes, *json),
        ModelsCommand::Verify => registry::verify(ctx),
    }
}

/// Where an artifact is right now, without downloading it.
#[derive(Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
enum Availability {
    /// On disk and checked.
    Local(PathBuf),
    /// Not here; would be downloaded from this URL.
    Download(String),
    /// Not here and no way to get it.
    Missing(String),
    /// In the model registry (this store); fetched on first use.
    Registry(String),
}

fn availability(resolver: &Resolver, artifact: &Artifact, base: Option<&Path>) -> Availability {
    let offline = Resolver { offline: true, ..resolver.clone() };
    match offline.fetch(artifact, base, &NoProgress) {
        Ok(path) => Availability::Local(path),
        Err(e) => {
            let url = resolver.download_url(artifact, base);
            match url {
                Some(url) if !resolver.offline && artifact.sha256.is_some() => Availability::Download(url),
                _ => Availability::Missing(e.to_string()),
            }
        }
    }
}

/// A model's files together: the worst availability of its weights and networks.
fn model_availability(resolver: &Resolver, located: &LocatedSpec) -> Availability {
    let base = located.base.as_deref();
    let mut all = std::iter::once(&located.spec.weights).chain(located.spec.networks.values());
    let mut worst = availability(resolver, all.next().expect("weights"), base);
    for a in all {
        match (availability(resolver, a, base), &worst) {
            (m @ Availability::Missing(_), _) => worst = m,
            (d @ Availability::Download(_), Availability::Local(_)) => worst = d,
            _ => {}
        }
    }
    worst
}

#[derive(Serialize)]
struct ListRow {
    name: String,
    origin: String,
    task: String,
    input: String,
    size: Option<u64>,
    weights: Availability,
    summary: String,
}

fn list(ctx: &AppContext, json: bool) -> Result<ExitCode> {
    let catalog = ctx.catalog();
    let resolver = catalog.resolver();
    let mut located: Vec<LocatedSpec> = builtin::all()?
        .into_iter()
        .map(|spec| LocatedSpec { origin: format!("zoo:{}", spec.name), spec, base: None })
        .collect();
    for name in store::names(catalog.home()) {
        located.push(catalog.locate_local(&name)?);
    }
    let mut rows: Vec<ListRow> = located
        .iter()
        .map(|l| ListRow {
            input: l.spec.input.as_ref().map_or_else(|| "any".to_string(), |i| format!("{}x{}", i.width, i.height)),
            size: Some(l.spec.weights.size.unwrap_or(0) + l.spec.networks.values().filter_map(|a| a.size).sum::<u64>())
                .filter(|&s| s > 0),
            weights: model_availability(resolver, l),
            task: l.spec.task.to_string(),
            summary: l.spec.summary.clone(),
            origin: if l.origin.starts_with("zoo:") { "zoo".into() } else { "imported".into() },
            name: l.spec.name.clone(),
        })
        .collect();
    for (name, task, size, summary) in registry::list_rows(ctx)? {
        let store = &catalog.settings().registry.store;
        rows.push(ListRow {
            name,
            origin: "registry".into(),
            task,
            input: "-".into(),
            size: Some(size),
            weights: Availability::Registry(strix_registry::redact(store)),
            summary,
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<22} {:<9} {:<9} {:>9}  {:<9} SUMMARY", "NAME", "TASK", "INPUT", "SIZE", "WEIGHTS");
    for r in rows {
        let here = match r.weights {
            Availability::Local(_) => "here",
            Availability::Download(_) => "download",
            Availability::Missing(_) => "missing",
            Availability::Registry(_) => "registry",
        };
        let size = r.size.map(crate::show::mib).unwrap_or_else(|| "?".into());
        let summary = if r.origin == "imported" { format!("(imported) {}", r.summary) } else { r.summary };
        println!("{:<22} {:<9} {:<9} {:>9}  {:<9} {}", r.name, r.task, r.input, size, here, summary);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct ShowJson<'a> {
    origin: &'a str,
    spec: &'a ModelSpec,
    weights: Availability,
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<Vec<TensorInfo>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<Vec<TensorInfo>>,
}

fn show(ctx: &AppContext, model: &str, format: ShowFormat, io: Option<&RuntimeArgs>) -> Result<ExitCode> {
    if format != ShowFormat::Toml
        && io.is_none()
        && let Some(code) = registry::show(ctx, model, format == ShowFormat::Json)?
    {
        return Ok(code);
    }
    let located = ctx.catalog().locate(model, &ctx.bars())?.spec;
    let resolver = ctx.catalog().resolver();
    if format == ShowFormat::Toml {
        print!("{}", located.spec.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    let weights = model_availability(resolver, &located);
    let io_info = match io {
        Some(args) => Some(load_io(ctx, &located, args)?),
        None => None,
    };
    if format == ShowFormat::Json {
        let (inputs, outputs) = io_info.unzip();
        let doc = ShowJson { origin: &located.origin, spec: &located.spec, weights, inputs, outputs };
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    let spec = &located.spec;
    println!("{} ({})", spec.name, located.origin);
    if !spec.summary.is_empty() {
        println!("  {}", spec.summary);
    }
    let field = |k: &str, v: &str| println!("  {k:<11} {v}");
    field("task", &spec.task.to_string());
    if let Some(l) = &spec.license {
        field("license", l);
    }
    if let Some(s) = &spec.source {
        field("source", s);
    }
    let artifact = |a: &Artifact| {
        let mut line = a.file.clone();
        if let Some(size) = a.size {
            line.push_str(&format!("  {}", crate::show::mib(size)));
        }
        if let Some(sha) = &a.sha256 {
            line.push_str(&format!("  sha256 {sha}"));
        }
        line
    };
    field("weights", &artifact(&spec.weights));
    for (name, a) in &spec.networks {
        field(&format!("net {name}"), &artifact(a));
    }
    field(
        "",
        &match weights {
            Availability::Local(p) => format!("-> {}", p.display()),
            Availability::Download(url) => format!("not here yet; `strix models fetch` downloads it from {url}"),
            Availability::Missing(why) => format!("not available: {why}"),
            Availability::Registry(store) => format!("in the registry ({store})"),
        },
    );
    match &spec.labels {
        Some(l) if !l.names.is_empty() => {
            let shown: Vec<&str> = l.names.iter().take(12).map(String::as_str).collect();
            let more = if l.names.len() > 12 { ", ..." } else { "" };
            field("labels", &format!("{} names: {}{more}", l.names.len(), shown.join(", ")));
        }
        Some(l) => field("labels", l.file.as_deref().unwrap_or("")),
        None => field("labels", "none"),
    }
    if let (Some(i), Some(p)) = (&spec.input, &spec.preprocess) {
        let layout = match i.layout {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        };
        let dtype = i.dtype.dtype();
        field(
            "input",
            &format!("{} {dtype} {layout} {}x{}", i.name.as_deref().unwrap_or("(first)"), i.width, i.height),
        );
        let resize = match p.resize {
            Resize::Stretch {} => "resize to the input size (aspect ratio not kept)".to_string(),
            Resize::ShorterSideCrop { shorter_side } => format!("resize shorter side to {shorter_side}, centre crop"),
            Resize::PadSquare {} => "pad to a centred square (black), resize".to_string(),
            Resize::Letterbox { fill } => format!("letterbox (aspect kept, padded with {fill})"),
        };
        let channels = match p.channels {
            ChannelOrder::Rgb => "RGB",
            ChannelOrder::Bgr => "BGR",
            ChannelOrder::Gray => "grey (luma)",
        };
        field("preprocess", &format!("{resize}; {channels}; (x - {:?}) / {:?}", p.mean, p.std));
    } else {
        field("input", "any size (the decoder prepares each network's input)");
    }
    field("decoder", &decoder_summary(spec));
    if let Some((inputs, outputs)) = io_info {
        for t in inputs {
            field("onnx in", &t.describe());
        }
        for t in outputs {
            field("onnx out", &t.describe());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kind (key = value, ...)` from the decoder's TOML, nested tables inlined.
fn decoder_summary(spec: &ModelSpec) -> String {
    let Ok(toml::Value::Table(table)) = toml::Value::try_from(&spec.decoder) else {
        return format!("{:?}", spec.decoder);
    };
    let kind = table.get("kind").and_then(|v| v.as_str()).unwrap_or("?").to_string();
    let mut parts = Vec::new();
    for (k, v) in table.iter().filter(|(k, _)| *k != "kind") {
        match v {
            toml::Value::Table(inner) => parts.extend(inner.iter().map(|(ik, iv)| format!("{k}.{ik} = {iv}"))),
            other => parts.push(format!("{k} = {other}")),
        }
    }
    if parts.is_empty() { kind } else { format!("{kind} ({})", parts.join(", ")) }
}

fn load_io(ctx: &AppContext, located: &LocatedSpec, args: &RuntimeArgs) -> Result<(Vec<TensorInfo>, Vec<TensorInfo>)> {
    let bars = ctx.bars();
    let weights = ctx.catalog().resolver().fetch(&located.spec.weights, located.base.as_deref(), &bars)?;
    let runtime = ctx.open_runtime(args)?;
    let session = runtime.load(&weights).with_context(|| format!("cannot load {}", located.spec.name))?;
    Ok((session.inputs().to_vec(), session.outputs().to_vec()))
}

fn fetch(ctx: &AppContext, models: &[String]) -> Result<ExitCode> {
    let bars = ctx.bars();
    let mut failed = false;
    for name in models {
        let result = ctx.catalog().resolve(name, &bars);
        match result {
            Ok(model) => println!("{}: {}", model.spec.name, model.weights.display()),
            Err(e) => {
                failed = true;
                eprintln!("error: {name}: {e:#}");
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Check an ONNX file against a spec by loading it and running one image through it, then
/// copy both into the local store so `--model NAME` finds them.
fn import(
    ctx: &AppContext,
    onnx: &Path,
    spec_path: &Path,
    name: Option<&str>,
    force: bool,
    runtime_args: &RuntimeArgs,
) -> Result<ExitCode> {
    let bars = ctx.bars();
    let model = ctx.checked_model(onnx, spec_path, name, runtime_args, &bars)?;
    let installed = store::install(ctx.catalog().home(), &model, force)?;
    println!(
        "imported {} ({} model) into {}\n  try: strix predict --model {} IMAGE",
        model.spec.name,
        model.spec.task,
        installed.display(),
        model.spec.name
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect(onnx: &Path, json: bool) -> Result<ExitCode> {
    let info = strix_runtime::inspect(onnx)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", onnx.display());
    println!("  producer    {}", if info.producer.is_empty() { "(not recorded)" } else { &info.producer });
    let opsets: Vec<String> = info.opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
    println!("  ir / opset  {} / {}", info.ir_version, opsets.join(", "));
    println!("  weights     {} tensors, {} parameters", info.initializers, info.parameters);
    for t in &info.inputs {
        println!("  input       {}", t.describe());
    }
    for t in &info.outputs {
        println!("  output      {}", t.describe());
    }
    let mut ops: Vec<(&String, &usize)> = info.ops.iter().collect();
    ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let total: usize = info.ops.values().sum();
    println!("  ops         {total} nodes");
    for (op, n) in ops {
        println!("    {n:>5}  {op}");
    }
    for (k, v) in &info.metadata {
        let v =
            if v.chars().count() > 80 { format!("{}...", v.chars().take(80).collect::<String>()) } else { v.clone() };
        println!("  metadata    {k} = {v}");
    }
    Ok(ExitCode::SUCCESS)
}
