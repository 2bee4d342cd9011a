//! The `strix` binary: parses flags, sets up logging, dispatches to the library crates.

mod cli;
mod context;
mod inputs;
mod predict;
mod progress;
mod settings;

// Every command but predict: left out of the demo build (`./scripts/demo`), which then builds
// without burn, sqlx, object_store, axum and NATS.
macro_rules! full {
    ($($item:item)*) => { $(#[cfg(feature = "full")] $item)* };
}
full! {
    mod batch;
    mod cluster;
    mod data;
    mod eval;
    mod export;
    mod identify;
    mod index;
    mod jobs;
    mod knn;
    mod label;
    mod layered;
    mod models;
    mod monitor;
    mod monitor_live;
    mod monitor_observe;
    mod monitor_quality;
    mod monitor_report;
    mod optimize;
    mod pipeline;
    mod pipeline_train;
    mod queue;
    mod registry;
    mod scoring;
    mod serve;
    mod show;
    mod signals;
    mod stream;
    mod train;
    mod train_job;
    mod tune;
}

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, Global};
use context::AppContext;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    let result = AppContext::from_flags(&cli.global).and_then(|ctx| dispatch(&ctx, &cli.command));
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

/// The demo build's one command.
#[cfg(not(feature = "full"))]
fn dispatch(ctx: &AppContext, command: &Command) -> Result<ExitCode> {
    match command {
        Command::Predict(args) => predict::run(ctx, args),
        Command::NotInDemo(words) => {
            let word = words.first().map_or("", String::as_str);
            if cli::FULL_COMMANDS.contains(&word) {
                anyhow::bail!(
                    "`strix {word}` is not in the demo build (./scripts/demo builds predict alone); build \
                     every command with `cargo build --release -p strix`"
                );
            }
            anyhow::bail!("unknown command `{word}`: this demo build has `strix predict` alone (see strix --help)")
        }
    }
}

#[cfg(feature = "full")]
fn dispatch(ctx: &AppContext, command: &Command) -> Result<ExitCode> {
    match command {
        Command::Predict(args) => predict::run(ctx, args),
        Command::Models(cmd) => models::run(ctx, cmd),
        Command::Eval(args) => match &args.command {
            Some(cmd) => eval::run(ctx, cmd),
            None => train::eval_run(ctx, &args.run),
        },
        Command::Train(args) => train::run(ctx, args),
        Command::Tune(args) => tune::run(ctx, args),
        Command::Data(cmd) => data::run(ctx, cmd),
        Command::Export(args) => export::run(ctx, args),
        Command::Serve(args) => serve::run(ctx, args),
        Command::Stream(args) => stream::run(ctx, args),
        Command::Label(cmd) => label::run(ctx, cmd),
        Command::Batch(args) => batch::run(ctx, args),
        Command::Worker(args) => jobs::worker(ctx, args),
        Command::Jobs(cmd) => jobs::jobs(ctx, cmd),
        Command::Index(cmd) => index::run(ctx, cmd),
        Command::Cluster(args) => cluster::run(ctx, args),
        Command::Monitor(cmd) => monitor::run(ctx, cmd),
        Command::Pipeline(cmd) => pipeline::run(ctx, cmd),
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

#[cfg(all(test, not(feature = "full")))]
mod demo_tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_demo_build_names_a_command_it_lacks_and_says_what_to_build() {
        let cli = Cli::try_parse_from(["strix", "serve", "--port", "8080"]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ctx = AppContext::new(strix_catalog::Settings::isolated(dir.path()), true);
        let e = dispatch(&ctx, &cli.command).unwrap_err().to_string();
        assert!(e.contains("`strix serve` is not in the demo build") && e.contains("cargo build --release"), "{e}");
        let cli = Cli::try_parse_from(["strix", "predcit", "a.jpg"]).unwrap();
        let e = dispatch(&ctx, &cli.command).unwrap_err().to_string();
        assert!(e.contains("unknown command `predcit`"), "{e}");
        // Predict's own flags still parse as predict's, and its help names no registry.
        let help = Cli::command().find_subcommand_mut("predict").unwrap().render_help().to_string();
        assert!(help.contains("--model") && !help.contains("NAME@ALIAS"), "{help}");
        assert!(matches!(Cli::try_parse_from(["strix", "predict", "a.jpg"]).unwrap().command, Command::Predict(_)));
    }
}
