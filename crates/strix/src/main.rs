//! The `strix` binary: parses flags, sets up logging, dispatches to the library crates.

mod cli;
mod data;
mod eval;
mod export;
mod inputs;
mod models;
mod predict;
mod progress;
mod registry;
mod serve;
mod stream;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use strix_pipeline::Pipeline;
use strix_runtime::{Runtime, RuntimeOptions};
use strix_zoo::Resolver;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, Global, RuntimeArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    let result = match &cli.command {
        Command::Predict(args) => predict::run(&cli.global, args),
        Command::Models(cmd) => models::run(&cli.global, cmd),
        Command::Eval(args) => match &args.command {
            Some(cmd) => eval::run(&cli.global, cmd),
            None => train::eval_run(&cli.global, &args.run),
        },
        Command::Train(args) => train::run(&cli.global, args),
        Command::Data(cmd) => data::run(&cli.global, cmd),
        Command::Export(args) => export::run(&cli.global, args),
        Command::Serve(args) => serve::run(&cli.global, args),
        Command::Stream(args) => stream::run(&cli.global, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the chain of contexts and causes, outermost first.
            // Errors quote URLs (cameras, databases, hubs): never their passwords.
            eprintln!("error: {}", strix_core::redact(&format!("{e:#}").replace('\n', " ")));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(global: &Global) {
    let default = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warn,strix=info,strix_train=info,strix_zoo=info,strix_runtime=info,strix_pipeline=info",
        (false, _) => "info,strix=debug,strix_zoo=debug,strix_runtime=debug,strix_pipeline=debug,strix_vision=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(RedactedStderr).with_target(false).init();
}

/// Log lines go to stderr through [`strix_core::redact`]: libraries log URLs and the messages
/// of tools (FFmpeg, sqlx) that quote them with their passwords.
struct RedactedStderr;

/// One log event, buffered so it is redacted whole and written with one call.
struct RedactedLine(Vec<u8>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactedStderr {
    type Writer = RedactedLine;
    fn make_writer(&'a self) -> RedactedLine {
        RedactedLine(Vec::new())
    }
}

impl std::io::Write for RedactedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedLine {
    fn drop(&mut self) {
        let text = strix_core::redact(&String::from_utf8_lossy(&self.0));
        let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
    }
}

/// Model-file lookup from the global flags (which clap also fills from the STRIX_* variables).
fn resolver(global: &Global) -> Resolver {
    let mut r = Resolver::from_env();
    if let Some(dir) = &global.cache_dir {
        r.cache_dir = dir.clone();
    }
    if let Some(path) = &global.model_path {
        r.search_path = std::env::split_paths(path).filter(|p| !p.as_os_str().is_empty()).collect();
    }
    if let Some(hub) = &global.hub {
        r.hub = Some(hub.clone()).filter(|h| !h.is_empty());
    }
    r.offline |= global.offline;
    r
}

/// Resolve a located model's files and load it on the backend the flags name.
fn load_pipeline(
    global: &Global,
    located: &strix_zoo::LocatedSpec,
    args: &RuntimeArgs,
    bars: &progress::Bars,
) -> Result<Pipeline> {
    let model = resolver(global).resolve(located, bars)?;
    let runtime = open_runtime(args)?;
    let name = model.spec.name.clone();
    Pipeline::load(model, runtime.as_ref()).with_context(|| format!("cannot load {name} with {}", args.backend))
}

/// A settings file parsed by `parse`, or the defaults when none was given.
fn settings<T: Default, E: Into<anyhow::Error>>(
    path: Option<&std::path::Path>,
    parse: impl FnOnce(&str, &std::path::Path) -> Result<T, E>,
) -> Result<T> {
    let Some(path) = path else { return Ok(T::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    parse(&text, path).map_err(Into::into)
}

fn open_runtime(args: &RuntimeArgs) -> Result<Box<dyn Runtime>> {
    let options = RuntimeOptions {
        threads: args.threads,
        ort_library: args.ort_lib.clone().filter(|p: &PathBuf| !p.as_os_str().is_empty()),
    };
    Ok(strix_runtime::open(args.backend, &options)?)
}
