//! `strix data inspect`.

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
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
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
    println!("contact sheet: {}", args.sheet.display());
    Ok(ExitCode::SUCCESS)
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
