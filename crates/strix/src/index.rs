//! `strix index create | add | search | list | show | remove`: vector indexes of images and
//! faces, kept in the registry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use strix_catalog::RegistrySession;
use strix_index::{EmbeddingModel, Entry, Index, Match};
use strix_pipeline::{BatchOptions, Pipeline};
use strix_registry::ModelRef;

use crate::cli::{ExternalIdFrom, IndexAddArgs, IndexCommand, IndexSearchArgs, RuntimeArgs};
use crate::context::AppContext;
use crate::inputs;

pub fn run(ctx: &AppContext, cmd: &IndexCommand) -> Result<ExitCode> {
    match cmd {
        IndexCommand::Create { name, model, description, runtime, json } => {
            create(ctx, name, model, description, runtime, *json)
        }
        IndexCommand::Add(args) => add(ctx, args),
        IndexCommand::Search(args) => search(ctx, args),
        IndexCommand::List { json } => list(ctx, *json),
        IndexCommand::Show { name, entries, json } => show(ctx, name, *entries, *json),
        IndexCommand::Remove { name, ids, images, all } => remove(ctx, name, ids, images, *all),
    }
}

fn who() -> String {
    format!("strix {} index", env!("CARGO_PKG_VERSION"))
}

/// The model an index's vectors are of, loaded, and checked to still be that model (a name
/// without a version may have moved on in the registry).
pub(crate) fn index_model(
    ctx: &AppContext,
    index: &Index,
    runtime: &RuntimeArgs,
) -> Result<(Pipeline, EmbeddingModel)> {
    let reference = index.manifest.model.reference.clone();
    let bars = ctx.bars();
    let model = ctx.catalog().resolve(&reference, &bars).with_context(|| format!("index {}'s model", index.name))?;
    let pipeline = ctx.load_pipeline(model, runtime)?;
    let identity = strix_index::embedding_model(&pipeline, &reference)?;
    if identity.sha256 != index.manifest.model.sha256 {
        bail!(
            "index {}'s model was {}, but {reference} is now {}: its vectors would not compare",
            index.name,
            index.manifest.model.describe(),
            identity.describe()
        );
    }
    Ok((pipeline, identity))
}

pub(crate) fn open(session: &RegistrySession, name: &str) -> Result<Index> {
    let reference = ModelRef::parse(name)?;
    Ok(session.block_on(strix_index::open(&session.registry, &reference))?)
}

fn create(
    ctx: &AppContext,
    name: &str,
    model: &str,
    description: &str,
    runtime: &RuntimeArgs,
    json: bool,
) -> Result<ExitCode> {
    strix_registry::check_name(name)?;
    let bars = ctx.bars();
    let resolved = ctx.catalog().resolve(model, &bars)?;
    let pipeline = ctx.load_pipeline(resolved, runtime)?;
    let identity = strix_index::embedding_model(&pipeline, model)?;
    let session = crate::registry::session(ctx)?;
    let record =
        session.block_on(strix_index::create(&session.registry, name, identity.clone(), description, &who()))?;
    if json {
        println!("{}", json!({"index": name, "version": record.version, "model": identity}));
    } else {
        println!("index {name} created (version {}) for the vectors of {}", record.version, identity.describe());
    }
    Ok(ExitCode::SUCCESS)
}

fn metadata(pairs: &[String]) -> Result<serde_json::Map<String, Value>> {
    let mut map = serde_json::Map::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            bail!("--meta {pair:?}: write KEY=VALUE");
        };
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(map)
}

fn external_id(path: &Path, from: ExternalIdFrom) -> Option<String> {
    let name = match from {
        ExternalIdFrom::None => return None,
        ExternalIdFrom::Stem => path.file_stem(),
        ExternalIdFrom::Folder => path.parent().and_then(Path::file_name),
    };
    name.map(|n| n.to_string_lossy().into_owned())
}

/// What `index add` embeds: files, and for some of them a labelling project's class and
/// metadata or the URL they were fetched from.
struct Sources {
    files: Vec<PathBuf>,
    problems: Vec<(PathBuf, String)>,
    labelled: HashMap<PathBuf, (Option<String>, serde_json::Map<String, Value>)>,
    fetched: HashMap<PathBuf, String>,
    /// Holds the fetched objects until they are embedded.
    staging: tempfile::TempDir,
}

/// Files and folders as given, labelling projects' images, bucket prefixes' objects (fetched).
fn sources(ctx: &AppContext, session: &RegistrySession, given: &[PathBuf]) -> Result<Sources> {
    let (stores, paths): (Vec<PathBuf>, Vec<PathBuf>) =
        given.iter().cloned().partition(|p| p.to_str().is_some_and(|s| s.contains("://")));
    let (projects, paths): (Vec<PathBuf>, Vec<PathBuf>) =
        paths.into_iter().partition(|p| strix_label::Project::is_project(p));
    let (mut files, problems) = inputs::expand(&paths);
    let mut labelled = HashMap::new();
    for dir in &projects {
        for (path, class, extra) in session.block_on(project_images(dir))? {
            files.push(path.clone());
            labelled.insert(path, (class, extra));
        }
    }
    let staging = tempfile::tempdir().context("a staging folder")?;
    let mut fetched = HashMap::new();
    let store_options = ctx.catalog().settings().registry.s3.clone();
    for (i, url) in stores.iter().enumerate() {
        let url = url.to_string_lossy();
        let dir = staging.path().join(i.to_string());
        for (local, name) in session.block_on(store_images(&url, &store_options, &dir, &ctx.bars()))? {
            files.push(local.clone());
            fetched.insert(local, name);
        }
    }
    Ok(Sources { files, problems, labelled, fetched, staging })
}

/// Most bytes of one object fetched from a store.
const MAX_OBJECT_BYTES: u64 = 256 << 20;

/// Every image under a folder or bucket prefix `url`, fetched into `dir`: each local file and
/// the URL it came from.
async fn store_images(
    url: &str,
    options: &[(String, String)],
    dir: &Path,
    bars: &dyn strix_core::Progress,
) -> Result<Vec<(PathBuf, String)>> {
    let place = strix_batch::Place::open(url, options, false)?;
    let keys: Vec<String> =
        place.list().await?.into_iter().filter(|k| strix_vision::is_image_path(Path::new(k))).collect();
    if keys.is_empty() {
        bail!("{url}: no images there (.jpg .jpeg .png .webp .gif .bmp .tif .tiff)");
    }
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    bars.start(&format!("fetching {url}"), Some(keys.len() as u64), strix_core::ProgressUnit::Items);
    let mut out = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let bytes = place.get(key, MAX_OBJECT_BYTES).await?;
        // The key's extension tells the decoder what it holds; the name is ours.
        let ext = Path::new(key).extension().map_or(String::new(), |e| format!(".{}", e.to_string_lossy()));
        let local = dir.join(format!("{i:08}{ext}"));
        std::fs::write(&local, &bytes).with_context(|| local.display().to_string())?;
        out.push((local, place.name(key)));
        bars.advance(1);
    }
    bars.finish();
    Ok(out)
}

/// A labelling project's images: each file, its class label when it has one (the entry's
/// external id unless --external-id says otherwise), and where in the project it is.
async fn project_images(dir: &Path) -> Result<Vec<(PathBuf, Option<String>, serde_json::Map<String, Value>)>> {
    let project = strix_label::Project::open(dir).await?;
    let files = project.files().await;
    project.store.close().await;
    let out = files?
        .into_iter()
        .map(|(row, annotation, path)| {
            let mut extra = serde_json::Map::new();
            extra.insert("project".into(), crate::inputs::absolute(dir).display().to_string().into());
            extra.insert("project_image".into(), row.id.into());
            if let Some(a) = &annotation {
                extra.insert("reviewed".into(), a.reviewed.into());
            }
            (path, annotation.and_then(|a| a.labels.class), extra)
        })
        .collect();
    Ok(out)
}

fn add(ctx: &AppContext, args: &IndexAddArgs) -> Result<ExitCode> {
    let meta = metadata(&args.meta)?;
    let session = crate::registry::session(ctx)?;
    let index = open(&session, &args.name)?;
    let Sources { files, problems, labelled, fetched, staging: _staging } = sources(ctx, &session, &args.images)?;
    for (path, problem) in &problems {
        eprintln!("error: {}: {problem}", path.display());
    }
    if files.is_empty() {
        bail!("no images to add");
    }
    let (pipeline, identity) = index_model(ctx, &index, &args.runtime)?;
    let bars = ctx.bars();
    let options = BatchOptions { batch: args.batch as usize, ..Default::default() };
    let (mut items, mut failed, mut empty) = (Vec::new(), problems.len(), 0usize);
    pipeline.predict_files(&files, &options, &bars, |outcome| {
        // A fetched object goes by its URL, in messages and in the index.
        let url = fetched.get(&outcome.path);
        let shown = url.cloned().unwrap_or_else(|| outcome.path.display().to_string());
        match &outcome.result {
            Ok(prediction) => {
                let vectors = strix_index::vectors_of(prediction);
                if vectors.is_empty() {
                    empty += 1;
                    bars.suspend(|| eprintln!("note: {shown}: no face found, nothing added"));
                }
                let image =
                    url.cloned().unwrap_or_else(|| crate::inputs::absolute(&outcome.path).display().to_string());
                let id_from = url.map_or_else(|| outcome.path.clone(), PathBuf::from);
                for (bbox, vector) in vectors {
                    let mut external = external_id(&id_from, args.external_id);
                    // The project's facts first, so that --meta wins over them.
                    let mut metadata = serde_json::Map::new();
                    if let Some((class, extra)) = labelled.get(&outcome.path) {
                        metadata.extend(extra.clone());
                        external = external.or_else(|| class.clone());
                    }
                    metadata.extend(meta.clone());
                    let entry = Entry {
                        id: 0,
                        image: image.clone(),
                        external_id: external,
                        bbox: bbox.map(|b| [b.x1, b.y1, b.x2, b.y2]),
                        metadata,
                    };
                    items.push((entry, vector));
                }
            }
            Err(e) => {
                failed += 1;
                bars.suspend(|| eprintln!("error: {shown}: {e}"));
            }
        }
    });
    if items.is_empty() {
        bail!("nothing to add: no image gave a vector");
    }
    let count = items.len();
    let change = session.block_on(strix_index::add(&session.registry, &index.name, &identity, items, &who()))?;
    if args.json {
        println!(
            "{}",
            json!({"index": index.name, "version": change.record.version, "added": change.ids, "failed": failed, "without_vectors": empty})
        );
    } else if !ctx.quiet {
        eprintln!(
            "added {count} vectors from {} images to {} (version {}){}",
            files.len() - (failed - problems.len()),
            index.name,
            change.record.version,
            if failed > 0 { format!(", {failed} images failed") } else { String::new() }
        );
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn search(ctx: &AppContext, args: &IndexSearchArgs) -> Result<ExitCode> {
    if let Some(t) = args.threshold
        && !(-1.0..=1.0).contains(&t)
    {
        bail!("--threshold {t}: a cosine similarity, -1 to 1");
    }
    let session = crate::registry::session(ctx)?;
    let index = open(&session, &args.name)?;
    let (files, problems) = inputs::expand(&args.images);
    for (path, problem) in &problems {
        eprintln!("error: {}: {problem}", path.display());
    }
    let (pipeline, _) = index_model(ctx, &index, &args.runtime)?;
    let mut failed = problems.len();
    let several = files.len() > 1;
    let bars = ctx.bars();
    let outcome_of = |path: &Path, prediction: &strix_pipeline::Prediction| -> Result<()> {
        let Some((bbox, query)) = strix_index::query_vector(prediction) else {
            bail!("{}: no face found to search with", path.display());
        };
        let matches = index.search(&query, args.k.max(1), args.threshold.unwrap_or(-1.0))?;
        if args.json {
            let out = json!({
                "index": index.name,
                "version": index.version,
                "query": path.display().to_string(),
                "query_bbox": bbox.map(|b| [b.x1, b.y1, b.x2, b.y2]),
                "exact": !index.uses_graph(),
                "matches": matches.iter().map(Match::to_json).collect::<Vec<_>>(),
            });
            bars.suspend(|| println!("{out}"));
            return Ok(());
        }
        bars.suspend(|| {
            if several {
                println!("{}:", path.display());
            }
            if matches.is_empty() {
                println!(
                    "  no match{}",
                    args.threshold.map(|t| format!(" at similarity {t} or more")).unwrap_or_default()
                );
            }
            for (rank, m) in matches.iter().enumerate() {
                let id = m.entry.external_id.as_deref().map(|e| format!("  [{e}]")).unwrap_or_default();
                println!("{:>3}  {:.4}  {}{id}", rank + 1, m.similarity, m.entry.image);
            }
        });
        Ok(())
    };
    pipeline.predict_files(&files, &BatchOptions::default(), &bars, |outcome| {
        let done = match &outcome.result {
            Ok(prediction) => outcome_of(&outcome.path, prediction),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", outcome.path.display())),
        };
        if let Err(e) = done {
            failed += 1;
            bars.suspend(|| eprintln!("error: {e:#}"));
        }
    });
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn list(ctx: &AppContext, json: bool) -> Result<ExitCode> {
    let session = crate::registry::session(ctx)?;
    let all = session.block_on(strix_index::list(&session.registry))?;
    if json {
        println!("{}", serde_json::to_string(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        eprintln!("no indexes yet: strix index create NAME --model MODEL");
    }
    for s in all {
        println!("{:<24} {:>4} versions  latest {}", s.name, s.versions, s.latest);
    }
    Ok(ExitCode::SUCCESS)
}

fn show(ctx: &AppContext, name: &str, entries: bool, json: bool) -> Result<ExitCode> {
    let session = crate::registry::session(ctx)?;
    let index = open(&session, name)?;
    let m = &index.manifest;
    if json {
        let mut out = json!({
            "index": index.name,
            "version": index.version,
            "model": m.model,
            "description": m.description,
            "entries": index.len(),
            "segments": m.segments.len(),
            "graph": m.graph.is_some(),
            "exact": !index.uses_graph(),
        });
        if entries {
            out["items"] = serde_json::to_value(index.entries())?;
        }
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("index      {} (version {})", index.name, index.version);
    println!("model      {}", m.model.describe());
    if !m.description.is_empty() {
        println!("about      {}", m.description);
    }
    println!("entries    {}", index.len());
    println!("search     {}", if index.uses_graph() { "HNSW graph" } else { "exact (every vector compared)" });
    println!("files      {} segments{}", m.segments.len(), if m.graph.is_some() { " + graph" } else { "" });
    if entries {
        for e in index.entries() {
            let ext = e.external_id.as_deref().map(|x| format!("  [{x}]")).unwrap_or_default();
            let bbox =
                e.bbox.map(|b| format!("  box {:.0},{:.0},{:.0},{:.0}", b[0], b[1], b[2], b[3])).unwrap_or_default();
            println!("{:>8}  {}{ext}{bbox}", e.id, e.image);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(ctx: &AppContext, name: &str, ids: &[u64], images: &[String], all: bool) -> Result<ExitCode> {
    let session = crate::registry::session(ctx)?;
    if all {
        if !ids.is_empty() || !images.is_empty() {
            bail!("--all removes the whole index: leave out --id and --image");
        }
        let index = open(&session, name)?;
        let reference = ModelRef::parse(&index.name)?;
        let versions = session.run(session.registry.delete(&reference, true))?;
        println!("removed index {} ({} versions)", index.name, versions.len());
        return Ok(ExitCode::SUCCESS);
    }
    if ids.is_empty() && images.is_empty() {
        bail!("say what to remove: --id ID, --image IMAGE, or --all for the whole index");
    }
    let index = open(&session, name)?;
    let mut chosen: Vec<u64> = ids.to_vec();
    for image in images {
        let wanted = [image.clone(), crate::inputs::absolute(Path::new(image)).display().to_string()];
        let found: Vec<u64> = index.entries().iter().filter(|e| wanted.contains(&e.image)).map(|e| e.id).collect();
        if found.is_empty() {
            bail!("index {} has no entry of image {image}", index.name);
        }
        chosen.extend(found);
    }
    chosen.sort_unstable();
    chosen.dedup();
    let change = session.block_on(strix_index::remove(&session.registry, &index.name, &chosen, &who()))?;
    println!("removed {} entries from {} (version {})", chosen.len(), index.name, change.record.version);
    Ok(ExitCode::SUCCESS)
}
