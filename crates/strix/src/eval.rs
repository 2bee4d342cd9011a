//! `strix eval detect | pose | classify | segment`: how good is a model, measured the way the
//! reference tools measure it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use strix_metrics::classify::Classification;
use strix_metrics::coco::{self, Dataset, IouType};
use strix_metrics::segment::Segmentation;
use strix_pipeline::{Answer, BatchOptions, Pipeline};
use strix_vision::segment::read_label_png;

use crate::cli::{ClassifyEvalArgs, CocoEvalArgs, EvalCommand, SegmentEvalArgs};
use crate::context::AppContext;
use crate::inputs;

pub fn run(ctx: &AppContext, cmd: &EvalCommand) -> Result<ExitCode> {
    match cmd {
        EvalCommand::Detect(args) => coco_eval(ctx, args, IouType::Bbox),
        EvalCommand::Pose(args) => coco_eval(ctx, args, IouType::Keypoints),
        EvalCommand::Classify(args) => classify(ctx, args),
        EvalCommand::Segment(args) => segment(args),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read {what}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a valid {what}", path.display()))
}

fn load_model(ctx: &AppContext, name: &str, runtime: &crate::cli::RuntimeArgs) -> Result<Pipeline> {
    let model = ctx.catalog().resolve(name, &ctx.bars())?;
    ctx.load_pipeline(model, runtime)
}

#[derive(Serialize)]
struct CocoReport<'a> {
    images: usize,
    detections: usize,
    stats: BTreeMap<&'a str, f64>,
    /// In pycocotools' order.
    stats_in_order: Vec<f64>,
    per_class: &'a [coco::ClassAp],
}

fn coco_eval(ctx: &AppContext, args: &CocoEvalArgs, kind: IouType) -> Result<ExitCode> {
    let gt: Dataset = read_json(&args.gt, "COCO ground truth")?;
    let results: Vec<coco::Result> = match (&args.predictions, &args.model) {
        (Some(p), None) => read_json(p, "COCO results file")?,
        (None, Some(model)) => {
            let images =
                args.images.as_deref().context("--model needs --images (the folder of the ground truth's images)")?;
            run_coco_model(ctx, args, &gt, model, images, kind)?
        }
        _ => bail!("give either --predictions (a COCO results file) or --model with --images"),
    };
    let summary = coco::evaluate(&gt, &results, kind)?;
    if args.json {
        let report = CocoReport {
            images: gt.images.len(),
            detections: results.len(),
            stats: summary.stats.iter().map(|(n, v)| (n.as_str(), *v)).collect(),
            stats_in_order: summary.stats.iter().map(|(_, v)| *v).collect(),
            per_class: &summary.per_class,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let what = if kind == IouType::Bbox { "box" } else { "keypoint (OKS)" };
    println!(
        "COCO {what} evaluation: {} images, {} categories, {} predictions",
        gt.images.len(),
        gt.categories.len(),
        results.len()
    );
    let (ranges, caps) = match kind {
        IouType::Bbox => (
            ["all", "all", "all", "small", "medium", "large", "all", "all", "all", "small", "medium", "large"]
                .as_slice(),
            [100, 100, 100, 100, 100, 100, 1, 10, 100, 100, 100, 100].as_slice(),
        ),
        IouType::Keypoints => (
            ["all", "all", "all", "medium", "large", "all", "all", "all", "medium", "large"].as_slice(),
            [20; 10].as_slice(),
        ),
    };
    for (i, (name, v)) in summary.stats.iter().enumerate() {
        let (kind, short) =
            if name.starts_with("AP") { ("Average Precision", "AP") } else { ("Average Recall   ", "AR") };
        let iou = if name.ends_with("50") {
            "0.50     "
        } else if name.ends_with("75") {
            "0.75     "
        } else {
            "0.50:0.95"
        };
        println!(" {kind}  ({short}) @[ IoU={iou} | area={:>6} | maxDets={:>3} ] = {v:.3}", ranges[i], caps[i]);
    }
    if summary.per_class.len() > 1 {
        println!("per category (AP@[.5:.95], AP@.5):");
        for c in &summary.per_class {
            println!(
                "  {:<20} {:>6.3} {:>6.3}",
                if c.name.is_empty() { c.category_id.to_string() } else { c.name.clone() },
                c.ap,
                c.ap50
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run a model over the ground truth's images and write its answers as COCO results.
fn run_coco_model(
    ctx: &AppContext,
    args: &CocoEvalArgs,
    gt: &Dataset,
    model: &str,
    images: &Path,
    kind: IouType,
) -> Result<Vec<coco::Result>> {
    let mut resolved = ctx.catalog().resolve(model, &ctx.bars())?;
    if let Some(t) = args.score_threshold {
        let nms = resolved.spec.decoder.nms_mut().with_context(|| format!("{model} has no score threshold to set"))?;
        nms.score_threshold = t;
    }
    let pipeline = ctx.load_pipeline(resolved, &args.runtime)?;
    let by_name: HashMap<String, u64> = gt.categories.iter().map(|c| (c.name.to_lowercase(), c.id)).collect();
    let person = by_name.get("person").copied().or_else(|| (gt.categories.len() == 1).then(|| gt.categories[0].id));
    let files: Vec<(u64, PathBuf)> = gt
        .images
        .iter()
        .map(|i| {
            let name = i.file_name.as_deref().with_context(|| format!("image {} has no file_name", i.id))?;
            Ok((i.id, images.join(name)))
        })
        .collect::<Result<_>>()?;
    let paths: Vec<PathBuf> = files.iter().map(|(_, p)| p.clone()).collect();
    let bars = ctx.bars();
    let opts = BatchOptions { top_k: 1, ..Default::default() };
    let mut results = Vec::new();
    let mut unmatched: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = Vec::new();
    pipeline.predict_files(&paths, &opts, &bars, |o| match o.result {
        Err(e) => failed.push(format!("{}: {e}", o.path.display())),
        Ok(p) => {
            let image_id = files[o.index].0;
            match (&p.answer, kind) {
                (Answer::Objects { objects }, IouType::Bbox) => {
                    for d in objects {
                        match by_name.get(&d.label.to_lowercase()) {
                            Some(&category_id) => results.push(coco::Result::from_detection(image_id, category_id, d)),
                            None => *unmatched.entry(d.label.clone()).or_default() += 1,
                        }
                    }
                }
                (Answer::People { people }, IouType::Keypoints) => {
                    if let Some(category_id) = person {
                        results.extend(people.iter().map(|p| coco::Result::from_pose(image_id, category_id, p)));
                    }
                }
                _ => failed.push(format!(
                    "{}: {} is not a {} model",
                    o.path.display(),
                    model,
                    if kind == IouType::Bbox { "detection" } else { "pose" }
                )),
            }
        }
    });
    for f in &failed {
        eprintln!("error: {f}");
    }
    if !failed.is_empty() {
        bail!("{} of {} images could not be evaluated", failed.len(), paths.len());
    }
    if kind == IouType::Keypoints && person.is_none() {
        bail!("the ground truth has no `person` category to compare keypoints with");
    }
    if !unmatched.is_empty() {
        let list: Vec<String> = unmatched.iter().map(|(l, n)| format!("{l} ({n})")).collect();
        eprintln!("note: detections of classes the ground truth does not have were left out: {}", list.join(", "));
    }
    if let Some(out) = &args.save_predictions {
        std::fs::write(out, serde_json::to_vec(&results)?)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(results)
}

#[derive(Serialize)]
struct ClassifyReport<'a> {
    images: u64,
    top1_accuracy: f64,
    top5_accuracy: f64,
    per_class: Vec<strix_metrics::classify::ClassScores>,
    classes: &'a [String],
    confusion: &'a [Vec<u64>],
}

fn classify(ctx: &AppContext, args: &ClassifyEvalArgs) -> Result<ExitCode> {
    // (truth class name, ranked predicted class names) per image.
    let mut pairs: Vec<(String, Vec<String>)> = Vec::new();
    match (&args.data, &args.model, &args.gt, &args.predictions) {
        (Some(data), Some(model), None, None) => {
            let mut files = Vec::new();
            let mut truth = Vec::new();
            let mut entries: Vec<PathBuf> = std::fs::read_dir(data)
                .with_context(|| format!("{}: cannot read the dataset folder", data.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            entries.sort();
            if entries.is_empty() {
                bail!("{}: no class sub-folders (expected one folder of images per class)", data.display());
            }
            for dir in entries {
                let class = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let (found, problems) = inputs::expand(std::slice::from_ref(&dir));
                for (p, why) in problems {
                    eprintln!("warning: {}: {why}", p.display());
                }
                truth.extend(std::iter::repeat_n(class, found.len()));
                files.extend(found);
            }
            let pipeline = load_model(ctx, model, &args.runtime)?;
            let bars = ctx.bars();
            let mut failed = 0;
            pipeline.predict_files(&files, &BatchOptions { top_k: 5, ..Default::default() }, &bars, |o| {
                match o.result {
                    Ok(p) => match p.answer {
                        Answer::Labels { classes } => {
                            pairs.push((truth[o.index].clone(), classes.into_iter().map(|c| c.label).collect()))
                        }
                        _ => failed += 1,
                    },
                    Err(e) => {
                        eprintln!("error: {}: {e}", o.path.display());
                        failed += 1;
                    }
                }
            });
            if failed > 0 {
                bail!("{failed} of {} images could not be classified", files.len());
            }
        }
        (None, None, Some(gt), Some(predictions)) => {
            let text = std::fs::read_to_string(gt).with_context(|| format!("{}: cannot read", gt.display()))?;
            let mut truth: HashMap<String, String> = HashMap::new();
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let Some((image, label)) = line.rsplit_once(',') else {
                    bail!("{}:{}: expected `image,label`, got {line:?}", gt.display(), n + 1);
                };
                if n == 0 && image.trim() == "image" {
                    continue;
                }
                truth.insert(image.trim().to_string(), label.trim().to_string());
            }
            let lines = std::fs::read_to_string(predictions)
                .with_context(|| format!("{}: cannot read", predictions.display()))?;
            for (n, line) in lines.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not JSON", predictions.display(), n + 1))?;
                let image = v["Image"]
                    .as_str()
                    .with_context(|| format!("{}:{}: no \"Image\"", predictions.display(), n + 1))?;
                let Some(label) = truth.get(image).or_else(|| {
                    let name = Path::new(image).file_name()?.to_str()?;
                    truth.get(name)
                }) else {
                    continue;
                };
                let ranked = v["Labels"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|l| l["Name"].as_str().map(String::from)).collect())
                    .unwrap_or_default();
                pairs.push((label.clone(), ranked));
            }
        }
        _ => bail!("give --data DIR with --model, or --gt labels.csv with --predictions (from `strix predict --json`)"),
    }
    if pairs.is_empty() {
        bail!("no labelled image has a prediction");
    }
    let mut classes: Vec<String> =
        pairs.iter().map(|(t, _)| t.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let other = "(other)".to_string();
    if pairs.iter().any(|(_, r)| r.first().is_none_or(|p| !classes.contains(p))) {
        classes.push(other.clone());
    }
    let index = |name: &str| classes.iter().position(|c| c == name).unwrap_or(classes.len() - 1);
    let mut metrics = Classification::new(classes.clone());
    for (truth, ranked) in &pairs {
        let ranked: Vec<usize> =
            if ranked.is_empty() { vec![index(&other)] } else { ranked.iter().map(|r| index(r)).collect() };
        metrics.add(index(truth), &ranked)?;
    }
    if args.json {
        let report = ClassifyReport {
            images: metrics.total,
            top1_accuracy: metrics.top1_accuracy(),
            top5_accuracy: metrics.top5_accuracy(),
            per_class: metrics.per_class(),
            classes: &metrics.classes,
            confusion: &metrics.confusion,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} images: top-1 accuracy {:.2}%, top-5 {:.2}%",
        metrics.total,
        metrics.top1_accuracy() * 100.0,
        metrics.top5_accuracy() * 100.0
    );
    println!("{:<24} {:>9} {:>9} {:>9} {:>8}", "CLASS", "PRECISION", "RECALL", "F1", "IMAGES");
    for c in metrics.per_class() {
        println!("{:<24} {:>9.3} {:>9.3} {:>9.3} {:>8}", c.name, c.precision, c.recall, c.f1, c.support);
    }
    println!("confusion matrix (rows: truth, columns: predicted, in the order above)");
    for row in &metrics.confusion {
        println!("  {}", row.iter().map(|v| format!("{v:>5}")).collect::<String>());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct SegmentReport {
    images: usize,
    mean_iou: f64,
    pixel_accuracy: f64,
    iou: Vec<Option<f64>>,
}

fn segment(args: &SegmentEvalArgs) -> Result<ExitCode> {
    let mut metrics = Segmentation::new(args.classes as usize, args.ignore);
    let (gts, problems) = inputs::expand(std::slice::from_ref(&args.gt));
    if let Some((p, why)) = problems.first() {
        bail!("{}: {why}", p.display());
    }
    let mut images = 0;
    for gt in gts.iter().filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"))) {
        let stem = gt.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = stem.trim_end_matches(".mask");
        let candidates =
            [args.predictions.join(format!("{stem}.mask.png")), args.predictions.join(format!("{stem}.png"))];
        let Some(pred) = candidates.iter().find(|p| p.is_file()) else {
            bail!("{}: no prediction {} (or {})", gt.display(), candidates[0].display(), candidates[1].display());
        };
        let read = |p: &Path| -> Result<(u32, u32, Vec<u8>)> {
            let bytes = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
            read_label_png(&bytes).with_context(|| p.display().to_string())
        };
        let (tw, th, truth) = read(gt)?;
        let (pw, ph, predicted) = read(pred)?;
        if (tw, th) != (pw, ph) {
            bail!("{}: {tw}x{th} but its prediction {} is {pw}x{ph}", gt.display(), pred.display());
        }
        metrics.add(&truth, &predicted).with_context(|| gt.display().to_string())?;
        images += 1;
    }
    if images == 0 {
        bail!("{}: no PNG label masks", args.gt.display());
    }
    if args.json {
        let report = SegmentReport {
            images,
            mean_iou: metrics.mean_iou(),
            pixel_accuracy: metrics.pixel_accuracy(),
            iou: metrics.iou(),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{images} masks: mean IoU {:.4}, pixel accuracy {:.4}", metrics.mean_iou(), metrics.pixel_accuracy());
    for (c, iou) in metrics.iou().iter().enumerate() {
        match iou {
            Some(v) => println!("  class {c:>3}  IoU {v:.4}"),
            None => println!("  class {c:>3}  absent"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
