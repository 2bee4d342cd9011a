//! The `strix` binary: parses flags, sets up logging, dispatches to the library crates.

mod cli;
mod data;
mod eval;
mod export;
mod inputs;
mod label;
mod layered;
mod models;
mod optimize;
mod predict;
mod progress;
mod registry;
mod serve;
mod settings;
mod stream;
mod train;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use strix_pipeline::Pipeline;
use strix_runtime::{Runtime, RuntimeOptions};
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, Global, RuntimeArgs};

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    init_logging(&cli.global);
    let result = settings::build(&cli.global).and_then(|settings| {
        cli.global.catalog = Some(strix_catalog::Catalog::open(settings));
        dispatch(&cli)
    });
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

fn dispatch(cli: &Cli) -> Result<ExitCode> {
    match &cli.command {
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
        Command::Label(cmd) => label::run(&cli.global, cmd),
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

/// The engine the flags name: backend, threads and libonnxruntime.
fn engine(global: &Global, args: &RuntimeArgs) -> strix_catalog::Engine {
    let options = RuntimeOptions {
        threads: args.threads,
        device: args.device,
        ort_library: settings::ort_library(global, args.ort_lib.as_ref()),
    };
    let backend = match args.backend {
        cli::BackendChoice::Fixed(b) => b,
        cli::BackendChoice::Auto => auto_backend(global, options.ort_library.as_deref()),
    };
    strix_catalog::Engine::new(backend, options)
}

/// `--backend auto`: ONNX Runtime, the faster engine, when this build has it and its library
/// is there, else tract; said once on stderr, so nobody runs the slower engine unknowingly.
fn auto_backend(global: &Global, ort_library: Option<&std::path::Path>) -> strix_runtime::Backend {
    use strix_runtime::Backend;
    static SAID: std::sync::Once = std::sync::Once::new();
    let found = ort_library.filter(|p| p.is_file());
    let (backend, why) = match (Backend::Ort.is_compiled(), found) {
        (true, Some(lib)) => (Backend::Ort, format!("ONNX Runtime from {}", lib.display())),
        (true, None) => (Backend::Tract, "no ONNX Runtime library found (set ORT_DYLIB_PATH or --ort-lib)".to_string()),
        (false, _) => (Backend::Tract, "this build has no ONNX Runtime support".to_string()),
    };
    if !global.quiet {
        SAID.call_once(|| eprintln!("engine: {backend} (--backend auto: {why})"));
    }
    backend
}

/// A resolved model loaded on the backend the flags name.
fn load_pipeline(global: &Global, model: strix_zoo::ResolvedModel, args: &RuntimeArgs) -> Result<Pipeline> {
    Ok(engine(global, args).load(model)?)
}

fn open_runtime(global: &Global, args: &RuntimeArgs) -> Result<Box<dyn Runtime>> {
    Ok(engine(global, args).runtime()?)
}
