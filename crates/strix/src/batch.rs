//! `strix batch INPUT --model M --out OUTPUT`: plan and pin here, then run the shards here or
//! queue them for `strix worker`s.

use std::process::ExitCode;

use anyhow::{Context, Result};
use strix_batch::{BatchSpec, Manifest, PinnedModel, Place};
use strix_zoo::ResolvedModel;

use crate::cli::BatchArgs;
use crate::context::AppContext;

/// What workers resolve to find the same model: a registered version by `NAME:VERSION`, a spec
/// file by its absolute path, a zoo name as given.
fn pin(given: &str, model: &ResolvedModel) -> Result<PinnedModel> {
    let reference = match &model.version {
        Some(version) => version.to_string(),
        None => match std::fs::canonicalize(given) {
            Ok(path) if std::path::Path::new(given).exists() => path.display().to_string(),
            _ => given.to_string(),
        },
    };
    let (sha256, _) = strix_core::digest::sha256_file(&model.weights)
        .with_context(|| format!("cannot read {}", model.weights.display()))?;
    Ok(PinnedModel { reference, sha256 })
}

/// A folder as every worker must name it: absolute (each worker has its own working folder).
/// URLs stay as they are.
fn absolute(place: &str) -> Result<String> {
    if place.contains("://") {
        return Ok(place.to_string());
    }
    let path = std::path::absolute(place).with_context(|| format!("{place}: cannot make it absolute"))?;
    Ok(path.display().to_string())
}

pub fn run(ctx: &AppContext, args: &BatchArgs) -> Result<ExitCode> {
    let bars = ctx.bars();
    let model = ctx.catalog().resolve(&args.model, &bars)?;
    let queue = if args.here { None } else { crate::queue::queue_settings(ctx, &args.queue)? };
    let (input, output) = match queue {
        Some(_) => (absolute(&args.input)?, absolute(&args.out)?),
        None => (args.input.clone(), args.out.clone()),
    };
    let spec = BatchSpec {
        input,
        output,
        model: pin(&args.model, &model)?,
        shard_size: args.shard_size as usize,
        top_k: args.top_k.max(1),
        max_pixels: args.max_pixels,
    };
    if queue.is_some() && model.version.is_none() && std::path::Path::new(&args.model).exists() && !ctx.quiet {
        eprintln!(
            "note: the model is the file {}: every worker must see it at that path (a registered model or a zoo name needs nothing shared)",
            spec.model.reference
        );
    }
    let store_options = ctx.catalog().settings().registry.s3.clone();
    crate::queue::runtime()?.block_on(async {
        let input = Place::open(&spec.input, &store_options, false)?;
        let output = Place::open(&spec.output, &store_options, true)?;
        let plan = strix_batch::plan(&spec, &input, &output).await?;
        if !ctx.quiet {
            eprintln!(
                "batch: {} images in {} shard(s) of up to {}, {} already complete; model {} (sha256 {})",
                plan.images,
                plan.shards.len(),
                spec.shard_size,
                plan.done.len(),
                spec.model.reference,
                &spec.model.sha256[..12.min(spec.model.sha256.len())]
            );
        }
        if plan.spec_changed && !ctx.quiet {
            eprintln!(
                "batch: {} holds another batch's answers (another model or options): every shard runs again",
                spec.output
            );
        }
        // Here without a queue, and here too when every shard is complete (nothing to queue).
        let queue = queue.filter(|_| !plan.to_run().is_empty());
        let Some(settings) = queue else {
            let pipeline = if plan.to_run().is_empty() { None } else { Some(ctx.load_pipeline(model, &args.runtime)?) };
            let manifest = strix_batch::run_here(&spec, &plan, pipeline.as_ref(), &input, &output, &bars).await?;
            return Ok(summary(ctx, &manifest, output.url()));
        };
        let queue = crate::queue::connect(&settings).await?;
        let job = strix_batch::submit(&queue, &spec, &plan, &output, &crate::settings::who()).await?;
        println!("{}", job.id);
        if !args.wait {
            if !ctx.quiet {
                eprintln!(
                    "batch: queued as job {} ({} task(s)); follow it with `strix jobs wait {}`",
                    job.id, job.tasks, job.id
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        let job = crate::queue::wait(&queue, &job.id, &bars).await?;
        let code = crate::queue::outcome(ctx, &job);
        if job.status != strix_jobs::Status::Succeeded {
            return Ok(code);
        }
        // The manifest the last worker wrote says what became of every image.
        let manifest = read_manifest(&output).await?;
        Ok(summary(ctx, &manifest, output.url()))
    })
}

async fn read_manifest(output: &Place) -> Result<Manifest> {
    let file = format!("{}/{}", output.url(), strix_batch::MANIFEST_FILE);
    let bytes = output
        .get(strix_batch::MANIFEST_FILE, strix_batch::MAX_OWN_FILE)
        .await
        .with_context(|| format!("cannot read {file}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{file} is not a batch manifest"))
}

/// The batch's figures on stderr; success only when every image was answered.
fn summary(ctx: &AppContext, manifest: &Manifest, output: &str) -> ExitCode {
    if !ctx.quiet {
        for f in manifest.failures.iter().take(10) {
            eprintln!("error: {}: {}", f.image, f.error);
        }
        for s in &manifest.shards_not_done {
            eprintln!("error: shard {} ({}) not done: {}", s.index, s.file, s.error);
        }
        eprintln!(
            "batch {}: {} of {} images answered in {:.1} s; {} shard(s) not done; manifest {output}/{}",
            manifest.status,
            manifest.answered,
            manifest.images,
            manifest.seconds,
            manifest.shards_not_done.len(),
            strix_batch::MANIFEST_FILE
        );
    }
    let complete = manifest.shards_not_done.is_empty() && manifest.answered == manifest.images;
    if complete { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
