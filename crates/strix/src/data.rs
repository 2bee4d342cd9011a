//! `strix data inspect`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use strix_data::inspect::{contact_sheet, inspect};
use strix_data::{ImageSet, Part};
use strix_vision::DecodeLimits;

use crate::cli::{DataCommand, DataPart, Global, InspectArgs};
use crate::progress::Bars;

pub fn run(global: &Global, cmd: &DataCommand) -> Result<ExitCode> {
    match cmd {
        DataCommand::Inspect(args) => inspect_cmd(global, args),
    }
}

fn inspect_cmd(global: &Global, args: &InspectArgs) -> Result<ExitCode> {
    let part = if args.part == DataPart::Test { Part::Test } else { Part::Train };
    let set = ImageSet::open(&args.data, part, None)?;
    let limits = DecodeLimits::default();
    let r = inspect(&set, &limits, &Bars::new(global.quiet));
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
