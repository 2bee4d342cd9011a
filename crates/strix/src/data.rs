//! `strix data inspect`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use strix_data::inspect::{contact_sheet, inspect};
use strix_data::inspect_detect::{detection_sheet, inspect_detection as inspect_detection_set};
use strix_data::{ImageSet, Part};
use strix_vision::DecodeLimits;

use crate::cli::{DataCommand, DataPart, InspectArgs};
use crate::context::AppContext;

pub fn run(ctx: &AppContext, cmd: &DataCommand) -> Result<ExitCode> {
    match cmd {
        DataCommand::Inspect(args) => inspect_cmd(ctx, args),
    }
}

fn inspect_cmd(ctx: &AppContext, args: &InspectArgs) -> Result<ExitCode> {
    if strix_data::detection::is_detection_dir(&args.data) {
        return inspect_detection(args);
    }
    let part = if args.part == DataPart::Test { Part::Test } else { Part::Train };
    let set = ImageSet::open(&args.data, part, None)?;
    let limits = DecodeLimits::default();
    let r = inspect(&set, &limits, &ctx.bars());
    let sheet = contact_sheet(&set, args.per_class.max(1), 96, 0, &limits);
    sheet.save(&args.sheet).with_context(|| format!("cannot write {}", args.sheet.display()))?;
    let near = if args.near_duplicates { Some(near_duplicates(ctx, args, &set)?) } else { None };
    if args.json {
        let mut value = serde_json::to_value(&r)?;
        if let (Some(near), Some(map)) = (&near, value.as_object_mut()) {
            map.insert("near_duplicates".into(), serde_json::to_value(&near.within)?);
            map.insert("leaks".into(), serde_json::to_value(&near.leaks)?);
            map.insert("near_duplicate_sheet".into(), near.sheet.display().to_string().into());
        }
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}: {} images, {} classes", r.origin, r.images, r.classes.len());
    let max = r.classes.iter().map(|c| c.1).max().unwrap_or(1).max(1);
    for (name, n) in &r.classes {
        let bar = "#".repeat((30 * n).div_ceil(max));
        let flag = if r.near_empty.contains(name) { "  <- near-empty" } else { "" };
        println!("  {name:<20} {n:>7} {bar}{flag}");
    }
    if let (Some(w), Some(h)) = (&r.width, &r.height) {
        println!("width  min {} median {} max {}", w.min, w.median, w.max);
        println!("height min {} median {} max {}", h.min, h.median, h.max);
    }
    println!("unreadable: {}", r.unreadable.len());
    for (n, why) in &r.unreadable {
        println!("  {n}: {why}");
    }
    println!("exact duplicates: {} group(s)", r.duplicates.len());
    for g in r.duplicates.iter().take(20) {
        println!("  {}", g.join(" = "));
    }
    if let Some(near) = &near {
        near.print(args.similarity);
    }
    println!("contact sheet: {}", args.sheet.display());
    Ok(ExitCode::SUCCESS)
}

/// Two images alike by their embeddings.
#[derive(Debug, serde::Serialize)]
struct NearPair {
    /// Item indices of `a` (in the data) and `b` (in the data, or the other part for a leak).
    #[serde(skip)]
    at: (usize, usize),
    a: String,
    b: String,
    a_label: String,
    b_label: String,
    similarity: f32,
}

struct NearFindings {
    within: Vec<NearPair>,
    /// `a` in the data, `b` in the validation (or test) images.
    leaks: Vec<NearPair>,
    /// What the leaks were looked for in, when anything.
    other: Option<String>,
    sheet: PathBuf,
}

/// Pairs drawn on the sheet, each kind.
const SHEET_PAIRS: usize = 24;

impl NearFindings {
    fn print(&self, threshold: f32) {
        let line = |p: &NearPair| {
            let labels = if p.a_label == p.b_label {
                p.a_label.clone()
            } else {
                format!("{} / {} DIFFERENT LABELS", p.a_label, p.b_label)
            };
            println!("  {:.3}  {}  ~  {}  ({labels})", p.similarity, p.a, p.b);
        };
        println!("near-duplicates (cosine >= {threshold}): {} pair(s)", self.within.len());
        self.within.iter().take(20).for_each(line);
        match &self.other {
            Some(other) => {
                println!("leaks into {other}: {} pair(s)", self.leaks.len());
                self.leaks.iter().take(20).for_each(line);
            }
            None => println!("leaks: no validation or test images to look in (give --val-data DIR)"),
        }
        println!("near-duplicate pairs: {}", self.sheet.display());
    }
}

/// `--near-duplicates`: every image embedded, pairs at least `--similarity` alike within the
/// data and across into the validation (or test) images, the closest drawn side by side.
fn near_duplicates(ctx: &AppContext, args: &InspectArgs, set: &ImageSet) -> Result<NearFindings> {
    if !(args.similarity > -1.0 && args.similarity <= 1.0) {
        anyhow::bail!("--similarity {} must be a cosine similarity in (-1, 1]", args.similarity);
    }
    // The other part's own classes: a class it lacks is no reason not to look for leaks.
    let other = match &args.val_data {
        Some(v) => Some(ImageSet::open(v, Part::Train, None)?),
        None if args.part == DataPart::Train && ImageSet::has_test_part(&args.data) => {
            Some(ImageSet::open(&args.data, Part::Test, None)?)
        }
        None => None,
    };
    let (_, pipeline, identity) = crate::knn::embedding_pipeline(ctx, &args.embedding, None, None)?;
    let bars = ctx.bars();
    let d = identity.dimensions;
    let (rows, vectors) = crate::knn::embed(&pipeline, set, "embedding", &bars)?.rows(d);
    let pair = |x: &ImageSet, i: usize, y: &ImageSet, j: usize, similarity: f32| NearPair {
        at: (i, j),
        a: x.name(i),
        b: y.name(j),
        a_label: x.classes[x.items[i].label].clone(),
        b_label: y.classes[y.items[j].label].clone(),
        similarity,
    };
    let within: Vec<NearPair> = strix_index::near::within(&vectors, d, args.similarity)?
        .into_iter()
        .map(|p| pair(set, rows[p.a], set, rows[p.b], p.similarity))
        .collect();
    let mut leaks = Vec::new();
    if let Some(o) = &other {
        let (other_rows, other_vectors) = crate::knn::embed(&pipeline, o, "embedding the other part", &bars)?.rows(d);
        for p in strix_index::near::across(&vectors, &other_vectors, d, args.similarity)? {
            leaks.push(pair(set, rows[p.a], o, other_rows[p.b], p.similarity));
        }
    }
    let sheet = pairs_sheet_path(&args.sheet);
    let drawn: Vec<(&NearPair, &ImageSet)> = within
        .iter()
        .take(SHEET_PAIRS)
        .map(|p| (p, set))
        .chain(other.iter().flat_map(|o| leaks.iter().take(SHEET_PAIRS).map(move |p| (p, o))))
        .collect();
    let picture = pairs_sheet(&drawn, set, within.len().min(SHEET_PAIRS));
    picture.save(&sheet).with_context(|| format!("cannot write {}", sheet.display()))?;
    let other = other.map(|o| o.origin.display().to_string());
    Ok(NearFindings { within, leaks, other, sheet })
}

fn pairs_sheet_path(sheet: &std::path::Path) -> PathBuf {
    let stem = sheet.file_stem().map_or("contact_sheet".into(), |s| s.to_string_lossy().into_owned());
    sheet.with_file_name(format!("{stem}_near_duplicates.png"))
}

/// One row per pair: its similarity (red for a leak or two labels), then both images; each
/// pair's `b` is in the set beside it.
fn pairs_sheet(pairs: &[(&NearPair, &ImageSet)], set: &ImageSet, within: usize) -> image::RgbImage {
    let rows: Vec<String> = pairs
        .iter()
        .enumerate()
        .map(|(i, (p, _))| format!("{:.3} {}", p.similarity, if i < within { "dup" } else { "leak" }))
        .collect();
    let limits = DecodeLimits::default();
    let thumb = |s: &ImageSet, i: usize| s.load(i, &limits).ok().map(|im| strix_data::inspect::thumbnail(&im, 96));
    strix_data::inspect::sheet(
        &rows,
        2,
        96,
        |i| {
            let p = pairs[i].0;
            if i >= within || p.a_label != p.b_label { image::Rgb([200, 0, 0]) } else { image::Rgb([0, 0, 0]) }
        },
        |i| {
            let (p, other) = pairs[i];
            vec![thumb(set, p.at.0), thumb(other, p.at.1)]
        },
    )
}

/// `strix data inspect` on a COCO or YOLO detection dataset.
fn inspect_detection(args: &InspectArgs) -> Result<ExitCode> {
    let (train, val) = strix_data::detection::open_detection(&args.data)?;
    let mut parts = vec![("train", &train)];
    if let Some(v) = &val {
        parts.push(("val", v));
    }
    let r = inspect_detection_set(&parts);
    let sheet = detection_sheet(&train, args.per_class.max(1), 128, &DecodeLimits::default());
    sheet.save(&args.sheet).with_context(|| format!("cannot write {}", args.sheet.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let parts: Vec<String> = r.parts.iter().map(|(p, n)| format!("{n} {p}")).collect();
    println!("{}: detection dataset, {} images, {} classes", args.data.display(), parts.join(" + "), r.classes.len());
    let max = r.classes.iter().map(|c| c.boxes).max().unwrap_or(1).max(1);
    println!("  {:<20} {:>7} {:>7}", "class", "images", "boxes");
    for c in &r.classes {
        let bar = "#".repeat((30 * c.boxes).div_ceil(max));
        let flag = if c.boxes == 0 { "  <- no boxes" } else { "" };
        println!("  {:<20} {:>7} {:>7} {bar}{flag}", c.class, c.images, c.boxes);
    }
    println!("images without boxes (negatives): {}", r.negatives);
    if let (Some(w), Some(h), Some(p)) = (&r.box_width, &r.box_height, &r.box_percent) {
        println!("box width  min {} median {} max {} px", w.min, w.median, w.max);
        println!("box height min {} median {} max {} px", h.min, h.median, h.max);
        println!("box side   min {}% median {}% max {}% of the image", p.min, p.median, p.max);
    }
    println!("boxes under {} px: {}", strix_data::inspect_detect::SMALL_BOX, r.small_boxes);
    if let (Some(w), Some(h)) = (&r.width, &r.height) {
        println!("image width  min {} median {} max {}", w.min, w.median, w.max);
        println!("image height min {} median {} max {}", h.min, h.median, h.max);
    }
    println!("problems: {}", r.problems.len());
    for p in &r.problems {
        println!("  {p}");
    }
    println!("contact sheet: {}", args.sheet.display());
    Ok(ExitCode::SUCCESS)
}
