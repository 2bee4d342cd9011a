//! `strix export RUN_DIR`: ONNX export of a trained run, kept only when the gate passes.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use strix_export::{ExportOptions, Exported};

use crate::cli::ExportArgs;
use crate::context::AppContext;

pub fn run(ctx: &AppContext, args: &ExportArgs) -> Result<ExitCode> {
    let mut options = ExportOptions { out_dir: args.out.clone(), name: args.name.clone(), ..Default::default() };
    options.gate_images = args.gate_images.max(1);
    options.tolerance = strix_export::gate::Tolerance { atol: args.tolerance, rtol: args.rtol };
    options.engines = ctx.export_engines();
    if let Some(b) = &args.backends {
        // Engines the user named must run.
        options.engines.backends = b.clone();
        options.engines.skip_unavailable = false;
    }
    export(ctx, &args.run_dir, &options)?;
    Ok(ExitCode::SUCCESS)
}

/// Export and gate `run_dir`, telling the user what was checked; the outcome on stdout.
pub fn export(ctx: &AppContext, run_dir: &Path, options: &ExportOptions) -> Result<Exported> {
    if strix_index::knn::KnnRun::read_if_present(run_dir)?.is_some() {
        return crate::knn::export(ctx, run_dir, options);
    }
    let exported = export_quietly(ctx, run_dir, options)?;
    println!("export: {} (spec {})", exported.onnx.display(), exported.spec.display());
    println!("gate passed: {}", exported.gate);
    Ok(exported)
}

/// [`export`] of a trained run whose caller reports the outcome (a pipeline keeps stdout for
/// its own).
pub fn export_quietly(ctx: &AppContext, run_dir: &Path, options: &ExportOptions) -> Result<Exported> {
    if !ctx.quiet {
        let engines: Vec<String> = options.engines.backends.iter().map(|b| b.to_string()).collect();
        eprintln!(
            "exporting {} to ONNX; gate: {} validation images through burn and {}",
            run_dir.display(),
            options.gate_images,
            engines.join(", ")
        );
    }
    Ok(strix_export::export_run(run_dir, options)?)
}
