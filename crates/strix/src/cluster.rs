//! `strix cluster`: images (or faces) grouped by their embeddings with k-means, written as
//! clusters.json, clusters.csv and contact sheets; for a labelling project, into its database
//! too, where the labelling page walks them ("next by cluster") and labels them a cluster at a
//! time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use image::{DynamicImage, Rgb, RgbImage};
use serde_json::json;
use strix_index::cluster::{best_k, kmeans_restarts};
use strix_pipeline::BatchOptions;
use strix_vision::DecodeLimits;

use crate::cli::ClusterArgs;
use crate::context::AppContext;
use crate::inputs;

/// One vector to cluster: the image, the face's box when it is of a face, and the project's
/// image id when it is a project's.
struct Item {
    path: PathBuf,
    bbox: Option<[f32; 4]>,
    image: Option<i64>,
}

/// What is clustered: files, or a labelling project's images (by file, with their ids).
struct Inputs {
    files: Vec<PathBuf>,
    problems: Vec<(PathBuf, String)>,
    project: Option<(PathBuf, HashMap<PathBuf, i64>)>,
}

fn inputs(given: &[PathBuf]) -> Result<Inputs> {
    let Some(dir) = given.iter().find(|p| strix_label::Project::is_project(p)) else {
        let (files, problems) = inputs::expand(given);
        return Ok(Inputs { files, problems, project: None });
    };
    if given.len() > 1 {
        bail!("{} is a labelling project: cluster it on its own (its clusters are written into it)", dir.display());
    }
    let rows = inputs::project_files(dir)?;
    let ids: HashMap<PathBuf, i64> = rows.into_iter().map(|(row, _, path)| (path, row.id)).collect();
    let mut files: Vec<PathBuf> = ids.keys().cloned().collect();
    files.sort_by_key(|f| ids[f]);
    Ok(Inputs { files, problems: Vec::new(), project: Some((dir.clone(), ids)) })
}

pub fn run(ctx: &AppContext, args: &ClusterArgs) -> Result<ExitCode> {
    if args.k == Some(0) || args.max_k < 2 {
        bail!("--k must be at least 1 and --max-k at least 2");
    }
    let Inputs { files, problems, project } = inputs(&args.images)?;
    for (path, problem) in &problems {
        eprintln!("error: {}: {problem}", path.display());
    }
    let out = match (&args.out, &project) {
        (Some(out), _) => out.clone(),
        (None, Some((dir, _))) => dir.join("clusters"),
        (None, None) => PathBuf::from("clusters"),
    };
    let bars = ctx.bars();
    let model = ctx.catalog().resolve(&args.model, &bars)?;
    let pipeline = ctx.load_pipeline(model, &args.runtime)?;
    // Refuses models that give no vectors, with the reason.
    let identity = strix_index::embedding_model(&pipeline, &args.model)?;
    let (mut items, mut vectors, mut failed) = (Vec::new(), Vec::new(), problems.len());
    pipeline.predict_files(&files, &BatchOptions::default(), &bars, |outcome| match &outcome.result {
        Ok(p) => {
            let image = project.as_ref().and_then(|(_, ids)| ids.get(&outcome.path).copied());
            // A project's image goes in one cluster: by its first vector (its likeliest face).
            let keep = if image.is_some() { 1 } else { usize::MAX };
            for (bbox, v) in strix_index::vectors_of(p).into_iter().take(keep) {
                items.push(Item { path: outcome.path.clone(), bbox: bbox.map(|b| [b.x1, b.y1, b.x2, b.y2]), image });
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
        Some(k) => (kmeans_restarts(&vectors, d, k, args.seed, args.restarts as usize), Vec::new()),
        None => best_k(&vectors, d, 2..=max_k, args.seed, args.restarts as usize),
    };
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); clustering.k];
    for (i, &c) in clustering.assignments.iter().enumerate() {
        members[c].push(i);
    }
    // Biggest first: what a labeller takes on first.
    members.sort_by_key(|m| std::cmp::Reverse(m.len()));
    members.retain(|m| !m.is_empty());
    write_outputs(args, &out, &items, &members, &scores)?;
    if let Some((dir, _)) = &project {
        let placements = placements(&items, &vectors, &clustering, &members);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
        rt.block_on(async {
            let project = strix_label::Project::open(dir).await?;
            let written = project.store.put_clusters(&args.model, &placements).await;
            project.store.close().await;
            written
        })
        .with_context(|| format!("cannot write the clusters into {}", dir.display()))?;
        if !ctx.quiet {
            eprintln!(
                "{} images of {} placed in {} clusters: `strix label serve {}`, next by cluster",
                placements.len(),
                dir.display(),
                members.len(),
                dir.display()
            );
        }
    }
    let silhouette = scores.iter().find(|s| s.0 == clustering.k).map(|s| s.1);
    if args.json {
        let clusters: Vec<_> = members
            .iter()
            .enumerate()
            .map(|(c, m)| json!({"cluster": c + 1, "size": m.len(), "sheet": out.join(sheet_name(c)).display().to_string()}))
            .collect();
        println!(
            "{}",
            json!({"k": members.len(), "silhouette": silhouette, "out": out.display().to_string(), "clusters": clusters})
        );
    } else if !ctx.quiet {
        let how = match args.k {
            Some(_) => "as asked".to_string(),
            None => format!("best silhouette of k = 2..{max_k}: {:.3}", silhouette.unwrap_or(0.0)),
        };
        eprintln!("{} vectors in {} clusters ({how}); written to {}", items.len(), members.len(), out.display());
        for (c, m) in members.iter().enumerate() {
            eprintln!("  cluster {:>2}: {:>5}  {}", c + 1, m.len(), out.join(sheet_name(c)).display());
        }
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Each project image's cluster (numbered as `members`, from 1) and its cosine distance to
/// the cluster's centre.
fn placements(
    items: &[Item],
    vectors: &[f32],
    clustering: &strix_index::cluster::Clustering,
    members: &[Vec<usize>],
) -> Vec<strix_label::Placement> {
    let d = vectors.len() / items.len().max(1);
    let mut out = Vec::new();
    for (c, m) in members.iter().enumerate() {
        for &i in m {
            let Some(image) = items[i].image else { continue };
            let v = &vectors[i * d..(i + 1) * d];
            let k = clustering.assignments[i];
            // The centre is the members' mean, not of unit length.
            let centre = &clustering.centres[k * d..(k + 1) * d];
            let norm = centre.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
            let cosine = v.iter().zip(centre).map(|(a, b)| a * b).sum::<f32>() / norm;
            out.push(strix_label::Placement { image, cluster: c as u32 + 1, distance: (1.0 - cosine).max(0.0) });
        }
    }
    out
}

fn sheet_name(c: usize) -> String {
    format!("cluster-{:02}.png", c + 1)
}

fn write_outputs(
    args: &ClusterArgs,
    out: &Path,
    items: &[Item],
    members: &[Vec<usize>],
    scores: &[(usize, f64)],
) -> Result<()> {
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
