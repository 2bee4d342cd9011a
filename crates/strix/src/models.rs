//! `strix models list | show | fetch`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde::Serialize;
use strix_core::{NoProgress, TensorInfo};
use strix_vision::{ChannelOrder, Layout, Resize};
use strix_zoo::{Artifact, DecoderSpec, LocatedSpec, ModelSpec, Resolver, builtin, locate};

use crate::cli::{Global, ModelsCommand, ShowFormat};
use crate::progress::Bars;
use crate::{open_runtime, resolver};

pub fn run(global: &Global, cmd: &ModelsCommand) -> Result<ExitCode> {
    match cmd {
        ModelsCommand::List { json } => list(global, *json),
        ModelsCommand::Show {
            model,
            format,
            toml,
            json,
            io,
            runtime,
        } => {
            let format = if *toml {
                ShowFormat::Toml
            } else if *json {
                ShowFormat::Json
            } else {
                *format
            };
            show(global, model, format, io.then_some(runtime))
        }
        ModelsCommand::Fetch { models } => fetch(global, models),
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
}

fn availability(
    resolver: &Resolver,
    artifact: &Artifact,
    base: Option<&std::path::Path>,
) -> Availability {
    let offline = Resolver {
        offline: true,
        ..resolver.clone()
    };
    match offline.fetch(artifact, base, &NoProgress) {
        Ok(path) => Availability::Local(path),
        Err(e) => {
            let url = artifact.url.clone().or_else(|| {
                base.is_none()
                    .then(|| {
                        resolver
                            .hub
                            .as_ref()
                            .map(|h| format!("{}/{}", h.trim_end_matches('/'), artifact.file))
                    })
                    .flatten()
            });
            match url {
                Some(url) if !resolver.offline && artifact.sha256.is_some() => {
                    Availability::Download(url)
                }
                _ => Availability::Missing(e.to_string()),
            }
        }
    }
}

#[derive(Serialize)]
struct ListRow {
    name: String,
    task: String,
    input: String,
    size: Option<u64>,
    weights: Availability,
    summary: String,
}

fn list(global: &Global, json: bool) -> Result<ExitCode> {
    let resolver = resolver(global);
    let rows: Vec<ListRow> = builtin::all()?
        .into_iter()
        .map(|spec| ListRow {
            input: format!("{}x{}", spec.input.width, spec.input.height),
            size: spec.weights.size,
            weights: availability(&resolver, &spec.weights, None),
            task: spec.task.to_string(),
            summary: spec.summary.clone(),
            name: spec.name,
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:<9} {:<9} {:>9}  {:<9} SUMMARY",
        "NAME", "TASK", "INPUT", "SIZE", "WEIGHTS"
    );
    for r in rows {
        let here = match r.weights {
            Availability::Local(_) => "here",
            Availability::Download(_) => "download",
            Availability::Missing(_) => "missing",
        };
        let size = r.size.map(mib).unwrap_or_else(|| "?".into());
        println!(
            "{:<22} {:<9} {:<9} {:>9}  {:<9} {}",
            r.name, r.task, r.input, size, here, r.summary
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
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

fn show(
    global: &Global,
    model: &str,
    format: ShowFormat,
    io: Option<&crate::cli::RuntimeArgs>,
) -> Result<ExitCode> {
    let located = locate(model)?;
    let resolver = resolver(global);
    if format == ShowFormat::Toml {
        print!("{}", located.spec.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    let weights = availability(&resolver, &located.spec.weights, located.base.as_deref());
    let io_info = match io {
        Some(args) => Some(load_io(global, &located, args)?),
        None => None,
    };
    if format == ShowFormat::Json {
        let (inputs, outputs) = io_info.unzip();
        let doc = ShowJson {
            origin: &located.origin,
            spec: &located.spec,
            weights,
            inputs,
            outputs,
        };
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
    let w = &spec.weights;
    let mut weights_line = w.file.clone();
    if let Some(size) = w.size {
        weights_line.push_str(&format!("  {}", mib(size)));
    }
    if let Some(sha) = &w.sha256 {
        weights_line.push_str(&format!("  sha256 {sha}"));
    }
    field("weights", &weights_line);
    field(
        "",
        &match weights {
            Availability::Local(p) => format!("-> {}", p.display()),
            Availability::Download(url) => {
                format!("not here yet; `strix models fetch` downloads it from {url}")
            }
            Availability::Missing(why) => format!("not available: {why}"),
        },
    );
    match &spec.labels {
        Some(l) if !l.names.is_empty() => field(
            "labels",
            &format!("{} names: {}", l.names.len(), l.names.join(", ")),
        ),
        Some(l) => field("labels", l.file.as_deref().unwrap_or("")),
        None => field("labels", "none (classes are shown by number)"),
    }
    let i = &spec.input;
    let layout = match i.layout {
        Layout::Nchw => "NCHW",
        Layout::Nhwc => "NHWC",
    };
    field(
        "input",
        &format!(
            "{} {:?} {layout} {}x{}",
            i.name.as_deref().unwrap_or("(first)"),
            i.dtype,
            i.width,
            i.height
        )
        .to_lowercase()
        .replace("nchw", "NCHW")
        .replace("nhwc", "NHWC"),
    );
    let p = &spec.preprocess;
    let resize = match p.resize {
        Resize::Stretch {} => "resize to the input size (aspect ratio not kept)".to_string(),
        Resize::ShorterSideCrop { shorter_side } => {
            format!("resize shorter side to {shorter_side}, centre crop")
        }
        Resize::PadSquare {} => "pad to a centred square (black), resize".to_string(),
        Resize::Letterbox { fill } => format!("letterbox (aspect kept, padded with {fill})"),
    };
    let channels = match p.channels {
        ChannelOrder::Rgb => "RGB",
        ChannelOrder::Bgr => "BGR",
    };
    field(
        "preprocess",
        &format!("{resize}; {channels}; (x - {:?}) / {:?}", p.mean, p.std),
    );
    match &spec.decoder {
        DecoderSpec::Classify { softmax, output } => field(
            "decoder",
            &format!(
                "classify{}{}",
                if *softmax {
                    ", softmax over logits"
                } else {
                    ", outputs are probabilities"
                },
                output
                    .as_ref()
                    .map(|o| format!(", output {o}"))
                    .unwrap_or_default()
            ),
        ),
    }
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

fn load_io(
    global: &Global,
    located: &LocatedSpec,
    args: &crate::cli::RuntimeArgs,
) -> Result<(Vec<TensorInfo>, Vec<TensorInfo>)> {
    let bars = Bars::new(global.quiet);
    let weights = resolver(global).fetch(&located.spec.weights, located.base.as_deref(), &bars)?;
    let runtime = open_runtime(args)?;
    let session = runtime
        .load(&weights)
        .with_context(|| format!("cannot load {}", located.spec.name))?;
    Ok((session.inputs().to_vec(), session.outputs().to_vec()))
}

fn fetch(global: &Global, models: &[String]) -> Result<ExitCode> {
    let resolver = resolver(global);
    let bars = Bars::new(global.quiet);
    let mut failed = false;
    for name in models {
        let result = locate(name)
            .map_err(anyhow::Error::from)
            .and_then(|located| Ok(resolver.resolve(&located, &bars)?));
        match result {
            Ok(model) => println!("{}: {}", model.spec.name, model.weights.display()),
            Err(e) => {
                failed = true;
                eprintln!("error: {name}: {e:#}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
