//! `strix cluster`: images (or faces) grouped by their embeddings with k-means, written as
//! clusters.json, clusters.csv and contact sheets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use image::{DynamicImage, Rgb, RgbImage};
use serde_json::json;
use strix_index::cluster::{best_k, kmeans};
use strix_pipeline::BatchOptions;
use strix_vision::DecodeLimits;

use crate::cli::ClusterArgs;
use crate::context::AppContext;
use crate::inputs;

/// One vector to cluster: the image, and the face's box when it is of a face.
struct Item {
    path: PathBuf,
    bbox: Option<[f32; 4]>,
}

pub fn run(ctx: &AppContext, args: &ClusterArgs) -> Result<ExitCode> {
    if args.k == Some(0) || args.max_k < 2 {
        bail!("--k must be at least 1 and --max-k at least 2");
    }
    let (files, problems) = inputs::expand(&args.images);
    for (path, problem) in &problems {
        eprintln!("error: {}: {problem}", path.display());
    }
    let bars = ctx.bars();
    let model = ctx.catalog().resolve(&args.model, &bars)?;
    let pipeline = ctx.load_pipeline(model, &args.runtime)?;
    // Refuses models that give no vectors, with the reason.
    let identity = strix_index::embedding_model(&pipeline, &args.model)?;
    let (mut items, mut vectors, mut failed) = (Vec::new(), Vec::new(), problems.len());
    pipeline.predict_files(&files, &BatchOptions::default(), &bars, |outcome| match &outcome.result {
        Ok(p) => {
            for (bbox, v) in strix_index::vectors_of(p) {
                items.push(Item { path: outcome.path.clone(), bbox: bbox.map(|b| [b.x1, b.y1, b.x2, b.y2]) });
                vectors.extend(v);
            }
        }
        Err(e) => {
            failed += 1;
            bars.suspend(|| eprintln!("error: {}: {e}", outcome.path.display()));
        }
    });
    let d = identity.dimensions;
    if items.len() < 2 {
        bail!("{} vectors: clustering needs at least 2", items.len());
    }
    let max_k = args.max_k.min(items.len() - 1).max(2);
    let (clustering, scores) = match args.k {
        Some(k) => (kmeans(&vectors, d, k, args.seed, 100), Vec::new()),
        None => best_k(&vectors, d, 2..=max_k, args.seed),
    };
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); clustering.k];
    for (i, &c) in clustering.assignments.iter().enumerate() {
        members[c].push(i);
    }
    // Biggest first: what a labeller takes on first.
    members.sort_by_key(|m| std::cmp::Reverse(m.len()));
    members.retain(|m| !m.is_empty());
    write_outputs(args, &items, &members, &scores)?;
    let silhouette = scores.iter().find(|s| s.0 == clustering.k).map(|s| s.1);
    if args.json {
        let clusters: Vec<_> = members
            .iter()
            .enumerate()
            .map(|(c, m)| json!({"cluster": c + 1, "size": m.len(), "sheet": args.out.join(sheet_name(c)).display().to_string()}))
            .collect();
        println!(
            "{}",
            json!({"k": members.len(), "silhouette": silhouette, "out": args.out.display().to_string(), "clusters": clusters})
        );
    } else if !ctx.quiet {
        let how = match args.k {
            Some(_) => "as asked".to_string(),
            None => format!("best silhouette of k = 2..{max_k}: {:.3}", silhouette.unwrap_or(0.0)),
        };
        eprintln!("{} vectors in {} clusters ({how}); written to {}", items.len(), members.len(), args.out.display());
        for (c, m) in members.iter().enumerate() {
            eprintln!("  cluster {:>2}: {:>5}  {}", c + 1, m.len(), args.out.join(sheet_name(c)).display());
        }
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn sheet_name(c: usize) -> String {
    format!("cluster-{:02}.png", c + 1)
}

fn write_outputs(args: &ClusterArgs, items: &[Item], members: &[Vec<usize>], scores: &[(usize, f64)]) -> Result<()> {
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let describe = |i: &usize| json!({"image": items[*i].path.display().to_string(), "bbox": items[*i].bbox});
    let clusters: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(c, m)| json!({"cluster": c + 1, "size": m.len(), "members": m.iter().map(describe).collect::<Vec<_>>()}))
        .collect();
    let report = json!({
        "k": members.len(),
        "chosen_by": if args.k.is_some() { "given" } else { "silhouette" },
        "silhouettes": scores.iter().map(|(k, s)| json!({"k": k, "silhouette": s})).collect::<Vec<_>>(),
        "model": args.model,
        "clusters": clusters,
    });
    write(&out.join("clusters.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    let mut csv = String::from("image,cluster\n");
    for (c, m) in members.iter().enumerate() {
        for &i in m {
            csv.push_str(&format!("{},{}\n", csv_field(&items[i].path.display().to_string()), c + 1));
        }
    }
    write(&out.join("clusters.csv"), csv.as_bytes())?;
    let cell = 96;
    let thumb = |i: usize| thumbnail(&items[i], cell);
    let names: Vec<String> = members.iter().enumerate().map(|(c, m)| format!("{} ({})", c + 1, m.len())).collect();
    let overview = strix_data::inspect::sheet(
        &names,
        args.per_cluster,
        cell,
        |_| Rgb([0, 0, 0]),
        |c| members[c].iter().take(args.per_cluster).map(|&i| thumb(i)).collect(),
    );
    save(&overview, &out.join("overview.png"))?;
    for (c, m) in members.iter().enumerate() {
        let rows: Vec<&[usize]> = m.chunks(10).collect();
        let labels: Vec<String> =
            (0..rows.len()).map(|r| if r == 0 { format!("{}", c + 1) } else { String::new() }).collect();
        let sheet = strix_data::inspect::sheet(
            &labels,
            10,
            cell,
            |_| Rgb([0, 0, 0]),
            |r| rows[r].iter().map(|&i| thumb(i)).collect(),
        );
        save(&sheet, &out.join(sheet_name(c)))?;
    }
    Ok(())
}

/// The image, or its face, fitted in a cell; `None` when it can no longer be read.
fn thumbnail(item: &Item, cell: u32) -> Option<RgbImage> {
    let img = strix_vision::decode_file(&item.path, &DecodeLimits::default()).ok()?;
    let img = match item.bbox {
        Some([x1, y1, x2, y2]) => {
            let (x, y) = (x1.max(0.0) as u32, y1.max(0.0) as u32);
            let (w, h) = (((x2 - x1).max(1.0)) as u32, ((y2 - y1).max(1.0)) as u32);
            image::imageops::crop_imm(
                &img,
                x,
                y,
                w.min(img.width().saturating_sub(x)).max(1),
                h.min(img.height().saturating_sub(y)).max(1),
            )
            .to_image()
        }
        None => img,
    };
    Some(strix_data::inspect::thumbnail(&DynamicImage::ImageRgb8(img), cell))
}

fn save(img: &RgbImage, path: &Path) -> Result<()> {
    img.save(path).with_context(|| format!("cannot write {}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    strix_core::fs::write_atomic(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() }
}
