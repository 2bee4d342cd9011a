//! A model's figures on labelled images, through the same runtime path that serves it:
//! accuracy and macro-F1 for classifiers (scikit-learn's), COCO mAP for detectors
//! (pycocotools'). The pipeline's evaluation step scores here; `monitor quality` loads its model
//! here and scores detectors here (its classifier pairs come from captured files by path).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use strix_core::{Answer, Task};
use strix_data::{ImageSet, Part};
use strix_metrics::coco;
use strix_pipeline::{BatchOptions, Pipeline};
use strix_vision::DecodeLimits;

use crate::context::AppContext;

/// Figures by name (`accuracy`, `macro_f1`; `map`, `map50`) and how many images made them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scored {
    pub images: usize,
    pub figures: BTreeMap<String, f64>,
}

/// Images scored per model call.
const CHUNK: usize = 32;

/// `model` (any reference `strix predict` takes) loaded to be scored: a detector keeps its
/// detections down to the score the trainer's mAP counts (a deployed threshold would cut the
/// precision-recall curve short, and the figures would not compare with validation's).
pub fn load(ctx: &AppContext, model: &str, runtime: &crate::cli::RuntimeArgs) -> Result<Pipeline> {
    let mut resolved = ctx.catalog().resolve(model, &ctx.bars())?;
    if let Some(nms) = resolved.spec.decoder.nms_mut() {
        nms.score_threshold = nms.score_threshold.min(strix_train::detect::eval::EVAL_SCORE_THRESHOLD);
    }
    ctx.load_pipeline(resolved, runtime)
}

/// `model` (any reference `strix predict` takes) on the labelled `data`.
pub fn score(ctx: &AppContext, model: &str, data: &Path, runtime: &crate::cli::RuntimeArgs) -> Result<Scored> {
    let pipeline = load(ctx, model, runtime)?;
    match pipeline.task() {
        Task::Classify => {
            let set =
                ImageSet::open(data, Part::Test, None).with_context(|| format!("{}: the test set", data.display()))?;
            classification(&pipeline, &set)
        }
        Task::Detect => {
            let (train, val) = strix_data::detection::open_detection(data)
                .with_context(|| format!("{}: the test set", data.display()))?;
            detection(&pipeline, &val.unwrap_or(train))
        }
        other => bail!("{model} is a {} model; pipelines score classifiers and detectors", other.as_str()),
    }
}

/// Top-1 answers against the set's classes.
pub fn classification(pipeline: &Pipeline, set: &ImageSet) -> Result<Scored> {
    if set.is_empty() {
        bail!("{}: no labelled images", set.origin.display());
    }
    let limits = DecodeLimits::default();
    let opts = BatchOptions { top_k: 1, ..Default::default() };
    let mut pairs = Vec::with_capacity(set.len());
    let indices: Vec<usize> = (0..set.len()).collect();
    for chunk in indices.chunks(CHUNK) {
        let images = chunk
            .iter()
            .map(|&i| {
                set.load(i, &limits).map(|img| img.to_rgb8()).map_err(|e| anyhow::anyhow!("{}: {e}", set.name(i)))
            })
            .collect::<Result<Vec<_>>>()?;
        let answers = pipeline.predict_images(&images, &opts)?;
        for (&i, p) in chunk.iter().zip(answers) {
            let Answer::Labels { classes } = p.answer else { bail!("the model did not answer with classes") };
            let top = classes.into_iter().next().map(|c| c.label).unwrap_or_default();
            pairs.push((set.classes[set.items[i].label].clone(), top));
        }
    }
    let (accuracy, macro_f1) = strix_monitor::quality::classification(&pairs);
    Ok(Scored { images: pairs.len(), figures: [("accuracy".into(), accuracy), ("macro_f1".into(), macro_f1)].into() })
}

/// COCO mAP@[.5:.95] (`map`) and mAP@.5 (`map50`), the model's classes matched to the set's by
/// name.
pub fn detection(pipeline: &Pipeline, set: &strix_data::detection::DetectionSet) -> Result<Scored> {
    if set.images.is_empty() {
        bail!("the detection test set has no images");
    }
    let gt = strix_train::detect::eval::ground_truth(set);
    let by_name: HashMap<String, u64> = gt.categories.iter().map(|c| (c.name.to_lowercase(), c.id)).collect();
    let limits = DecodeLimits::default();
    let opts = BatchOptions { top_k: 1, ..Default::default() };
    let mut results = Vec::new();
    for (chunk_no, chunk) in set.images.chunks(CHUNK).enumerate() {
        let images = chunk
            .iter()
            .map(|im| strix_vision::decode_file(&im.path, &limits).with_context(|| im.path.display().to_string()))
            .collect::<Result<Vec<_>>>()?;
        for (j, p) in pipeline.predict_images(&images, &opts)?.into_iter().enumerate() {
            let image_id = (chunk_no * CHUNK + j) as u64 + 1;
            let Answer::Objects { objects } = p.answer else { bail!("the model did not answer with boxes") };
            for d in &objects {
                if let Some(&category_id) = by_name.get(&d.label.to_lowercase()) {
                    results.push(coco::Result::from_detection(image_id, category_id, d));
                }
            }
        }
    }
    let summary = coco::evaluate(&gt, &results, coco::IouType::Bbox)?;
    let stat = |name: &str| summary.stats.iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| v.max(0.0));
    Ok(Scored {
        images: set.images.len(),
        figures: [("map".into(), stat("AP")), ("map50".into(), stat("AP50"))].into(),
    })
}
