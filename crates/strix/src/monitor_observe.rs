//! What monitoring observes: the images of a folder or project, the watched and embedding
//! models, each image's observation; and the baseline a registered version keeps, made from its
//! run's validation images.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use strix_core::Progress as _;
use strix_monitor::{Baseline, BaselineBuilder, Observation};
use strix_pipeline::{BatchOptions, Pipeline};
use strix_vision::{DecodeLimits, RgbImage};

use crate::cli::RuntimeArgs;
use crate::context::AppContext;
use crate::inputs;

/// Image files, and the paths given that could not be read with why.
pub type Found = (Vec<PathBuf>, Vec<(PathBuf, String)>);

/// The images of `data` (files, folders or one labelling project), those added or modified
/// since `since` when given, and the paths that could not be read.
pub fn images(data: &[PathBuf], since: Option<SystemTime>) -> Result<Found> {
    let after = |t: SystemTime| since.is_none_or(|s| t >= s);
    if let [dir] = data
        && strix_label::Project::is_project(dir)
    {
        let rows = inputs::project_files(dir)?;
        let at = |ms: i64| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        return Ok((
            rows.into_iter().filter(|(row, _, _)| after(at(row.added_at))).map(|(_, _, p)| p).collect(),
            Vec::new(),
        ));
    }
    let (files, problems) = inputs::expand(data);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).map_or(true, after);
    Ok((files.into_iter().filter(|p| modified(p)).collect(), problems))
}

/// The models a baseline or a run needs: the one watched, and the embedding model.
pub struct Models {
    pub watched: Pipeline,
    pub embed: Option<Pipeline>,
}

pub fn models(ctx: &AppContext, model: &str, embedding: Option<&str>, runtime: &RuntimeArgs) -> Result<Models> {
    let bars = ctx.bars();
    let watched = ctx.load_pipeline(ctx.catalog().resolve(model, &bars)?, runtime)?;
    let embed = match embedding {
        Some(name) => {
            let p = ctx.load_pipeline(ctx.catalog().resolve(name, &bars)?, runtime)?;
            if p.task() != strix_core::Task::Embed {
                bail!("--embedding {name}: a {} model; give an embed model (efficientnet_lite0_embed)", p.task());
            }
            Some(p)
        }
        None => None,
    };
    Ok(Models { watched, embed })
}

/// Each image's observation, in order: its properties (none when it does not decode), the
/// watched model's answer, its embedding.
pub fn observe(ctx: &AppContext, models: &Models, files: &[PathBuf]) -> Result<Vec<Observation>> {
    let limits = DecodeLimits::default();
    observe_with(ctx, models, files.len(), |i| {
        strix_vision::decode_file(&files[i], &limits).map_err(|e| format!("{}: {e}", files[i].display()))
    })
}

/// [`observe`] over `count` images that `load` gives by index (an error: one that does not
/// decode, counted as such).
fn observe_with(
    ctx: &AppContext,
    models: &Models,
    count: usize,
    load: impl Fn(usize) -> std::result::Result<RgbImage, String>,
) -> Result<Vec<Observation>> {
    let bars = ctx.bars();
    bars.start("observing", Some(count as u64), strix_core::ProgressUnit::Items);
    let mut out = Vec::with_capacity(count);
    let options = BatchOptions::default();
    for i in 0..count {
        let img = match load(i) {
            Ok(img) => img,
            Err(e) => {
                bars.suspend(|| eprintln!("note: {e} (counted as a file that does not decode)"));
                out.push(Observation::default());
                bars.advance(1);
                continue;
            }
        };
        let answer = models.watched.predict_images(std::slice::from_ref(&img), &options)?;
        let mut o = Observation::of_image(&img);
        if let Some(p) = answer.first() {
            o = o.with_answer(&p.answer, p.width, p.height);
        }
        if let Some(embed) = &models.embed {
            let v = embed.predict_images(std::slice::from_ref(&img), &options)?;
            o.embedding = v.first().and_then(strix_index::query_vector).map(|(_, v)| v);
        }
        out.push(o);
        bars.advance(1);
    }
    bars.finish();
    Ok(out)
}

/// Where a run keeps the baseline of its validation images, and the prefix its files carry in
/// a registered version (whose files sit in one folder).
pub const RUN_BASELINE: &str = "baseline";
pub const REGISTERED_PREFIX: &str = "baseline-";
/// Validation images a run's baseline observes at most, evenly spread: enough for the tests'
/// reference samples, and seconds even for a 224-pixel model.
const RUN_BASELINE_IMAGES: usize = 300;

/// The baseline of a trained run's validation images as its exported model (`model`, its spec)
/// sees them, written to `RUN/baseline/` unless there is one; `None` for a run of another task.
/// No embeddings: `strix monitor baseline --embedding` adds them (the MMD test).
pub fn run_baseline(ctx: &AppContext, run: &Path, model: &Path) -> Result<Option<PathBuf>> {
    let dir = run.join(RUN_BASELINE);
    if dir.join(strix_monitor::baseline::STATISTICS).is_file() {
        return Ok(Some(dir));
    }
    let cfg = strix_train::files::saved_config(run)?;
    let reference = model.display().to_string();
    let models = models(ctx, &reference, None, &crate::cli::RuntimeArgs::for_checks())?;
    let limits = DecodeLimits::default();
    let observations = match cfg.task {
        strix_core::Task::Classify => {
            let parts = strix_train::classify::DataParts::open(&strix_train::classify::PartsSpec {
                data: &cfg.data,
                val_data: cfg.val_data.as_deref(),
                test_data: None,
                classes: cfg.classes.as_deref(),
                val_fraction: cfg.val_fraction,
                max_images: cfg.max_images,
                seed: cfg.seed,
                test: false,
            })?;
            let picked = spread(parts.val.len());
            observe_with(ctx, &models, picked.len(), |i| {
                parts
                    .val
                    .load(picked[i], &limits)
                    .map(|img| img.to_rgb8())
                    .map_err(|e| format!("{}: {e}", parts.val.name(picked[i])))
            })?
        }
        strix_core::Task::Detect => {
            let (_, val) = strix_train::detect::validation_set(run)?;
            let files: Vec<PathBuf> =
                spread(val.images.len()).into_iter().map(|i| val.images[i].path.clone()).collect();
            observe(ctx, &models, &files)?
        }
        _ => return Ok(None),
    };
    let mut builder = BaselineBuilder::new(RUN_BASELINE_IMAGES, cfg.seed);
    for o in &observations {
        builder.add(o)?;
    }
    let task = models.watched.task().to_string();
    let (statistics, embeddings) = builder.finish(&reference, &task, None);
    let baseline = Baseline { statistics, constraints: Default::default(), embeddings };
    baseline.write(&dir)?;
    Ok(Some(dir))
}

/// At most [`RUN_BASELINE_IMAGES`] of `n` indices, evenly spread.
fn spread(n: usize) -> Vec<usize> {
    let k = n.min(RUN_BASELINE_IMAGES);
    (0..k).map(|i| i * n / k.max(1)).collect()
}

/// A registered version's own baseline (registered from a run), laid out as a baseline folder
/// beside its cached files; `None` when it carries none.
pub fn registered_baseline(ctx: &AppContext, version: &strix_core::ModelVersion) -> Result<Option<PathBuf>> {
    use strix_monitor::baseline::{CONSTRAINTS, STATISTICS};
    let cached = ctx.catalog().version_dir(&version.name, version.version);
    if !cached.join(format!("{REGISTERED_PREFIX}{STATISTICS}")).is_file() {
        return Ok(None);
    }
    let dir = cached.join(RUN_BASELINE);
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let from = cached.join(format!("{REGISTERED_PREFIX}{CONSTRAINTS}"));
    std::fs::copy(&from, dir.join(CONSTRAINTS)).with_context(|| from.display().to_string())?;
    // The run's baseline names the run's export; here it is this version.
    let from = cached.join(format!("{REGISTERED_PREFIX}{STATISTICS}"));
    let text = std::fs::read_to_string(&from).with_context(|| from.display().to_string())?;
    let mut statistics: serde_json::Value = serde_json::from_str(&text).with_context(|| from.display().to_string())?;
    statistics["model"] = format!("{}:{}", version.name, version.version).into();
    strix_core::fs::write_atomic(&dir.join(STATISTICS), serde_json::to_string_pretty(&statistics)?.as_bytes())
        .with_context(|| dir.display().to_string())?;
    Ok(Some(dir))
}
