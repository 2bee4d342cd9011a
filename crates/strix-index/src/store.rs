//! Indexes in the registry: reading a version, and writing the next one without losing a
//! concurrent writer's change.

use std::path::Path;

use strix_core::NoProgress;
use strix_registry::{
    ArtifactRecord, Lineage, ModelRef, ModelSummary, NewFile, NewVersion, Registry, RegistryError, VersionRecord,
};

use crate::graph::Graph;
use crate::index::{FORMAT, GraphFile, Manifest, scans};
use crate::segment::Segment;
use crate::vectors::unit;
use crate::{EmbeddingModel, Entry, Index, IndexError};

/// The registry task of an index's versions.
pub const TASK: &str = "index";
const MANIFEST: &str = "index.json";
/// Writers that keep losing the race give up after this many tries.
const RETRIES: usize = 20;
/// More segments than this are merged into one (each load reads every segment).
const MAX_SEGMENTS: usize = 32;

/// A version a write made, and the ids it gave or removed.
#[derive(Clone, Debug)]
pub struct Change {
    pub record: VersionRecord,
    pub ids: Vec<u64>,
}

/// Make an empty index for `model`'s vectors.
pub async fn create(
    registry: &Registry,
    name: &str,
    model: EmbeddingModel,
    description: &str,
    created_by: &str,
) -> Result<VersionRecord, IndexError> {
    if let Some(record) = latest(registry, name).await? {
        return Err(IndexError::Exists { name: name.to_string(), version: record.version });
    }
    let manifest = Manifest {
        format: FORMAT,
        model,
        description: description.to_string(),
        segments: Vec::new(),
        removed: Vec::new(),
        next_id: 1,
        graph: None,
    };
    let dir = scratch(name)?;
    let files = vec![write_manifest(dir.path(), &manifest, name)?];
    match commit(registry, name, files, Vec::new(), 0, created_by, "created").await {
        Err(IndexError::Registry { source: RegistryError::Conflict { found, .. }, .. }) => {
            Err(IndexError::Exists { name: name.to_string(), version: found })
        }
        other => other,
    }
}

/// Load the version `reference` names.
pub async fn open(registry: &Registry, reference: &ModelRef) -> Result<Index, IndexError> {
    let name = reference.name.as_str();
    let record = registry.get(reference).await.map_err(IndexError::registry(name))?;
    open_version(registry, record).await
}

/// Every index in the registry.
pub async fn list(registry: &Registry) -> Result<Vec<ModelSummary>, IndexError> {
    let all = registry.list().await.map_err(IndexError::registry("list"))?;
    Ok(all.into_iter().filter(|s| s.task == TASK).collect())
}

/// Add entries with their vectors (each of `model`, the index's model). Ids are given here;
/// the entries' own `id` fields are ignored. Returns the new version and the ids, in order.
pub async fn add(
    registry: &Registry,
    name: &str,
    model: &EmbeddingModel,
    items: Vec<(Entry, Vec<f32>)>,
    created_by: &str,
) -> Result<Change, IndexError> {
    let mut checked = Vec::with_capacity(items.len());
    for (at, (entry, vector)) in items.into_iter().enumerate() {
        if vector.len() != model.dimensions {
            return Err(IndexError::Dimensions {
                name: name.to_string(),
                expected: model.dimensions,
                found: vector.len(),
            });
        }
        let vector = unit(&vector).map_err(|reason| IndexError::BadVector { at, reason })?;
        checked.push((entry, vector));
    }
    let change = write_retrying(registry, name, created_by, |index| {
        check_model(index, model)?;
        let mut manifest = index.manifest.clone();
        let first = manifest.next_id;
        let mut segment = Segment { dimensions: model.dimensions, entries: Vec::new(), vectors: Vec::new() };
        for (i, (entry, vector)) in checked.iter().enumerate() {
            segment.entries.push(Entry { id: first + i as u64, ..entry.clone() });
            segment.vectors.extend_from_slice(vector);
        }
        manifest.next_id = first + checked.len() as u64;
        let ids: Vec<u64> = (first..manifest.next_id).collect();
        Ok((manifest, segment, ids))
    })
    .await?;
    Ok(change)
}

/// Remove entries by id.
pub async fn remove(registry: &Registry, name: &str, ids: &[u64], created_by: &str) -> Result<Change, IndexError> {
    write_retrying(registry, name, created_by, |index| {
        if let Some(&id) = ids.iter().find(|id| index.entry(**id).is_none()) {
            return Err(IndexError::UnknownEntry { name: name.to_string(), id });
        }
        let mut manifest = index.manifest.clone();
        manifest.removed.extend(ids);
        manifest.removed.sort_unstable();
        manifest.removed.dedup();
        let segment = Segment { dimensions: manifest.model.dimensions, ..Default::default() };
        Ok((manifest, segment, ids.to_vec()))
    })
    .await
}

/// Read the latest version, make the next from it with `change` (its manifest, a segment to
/// append, the ids it touched) and register it over that version; when another writer got
/// there first, read again and redo the change, after a short random pause.
async fn write_retrying(
    registry: &Registry,
    name: &str,
    created_by: &str,
    change: impl Fn(&Index) -> Result<(Manifest, Segment, Vec<u64>), IndexError>,
) -> Result<Change, IndexError> {
    for attempt in 0..RETRIES {
        let index = latest_index(registry, name).await?;
        let (manifest, segment, ids) = change(&index)?;
        let note = if segment.entries.is_empty() {
            format!("removed {} entries", ids.len())
        } else {
            format!("added {} entries", ids.len())
        };
        match write_next(registry, &index, manifest, segment, created_by, &note).await {
            Err(e) if is_conflict(&e) => tokio::time::sleep(backoff(attempt)).await,
            Err(e) => return Err(e),
            Ok(record) => return Ok(Change { record, ids }),
        }
    }
    Err(IndexError::Busy { name: name.to_string(), tries: RETRIES })
}

/// A pause that grows with the attempt and is spread at random, so racing writers part.
fn backoff(attempt: usize) -> std::time::Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let base = 10u64 << attempt.min(5);
    std::time::Duration::from_millis(base + u64::from(nanos) % base)
}

fn is_conflict(e: &IndexError) -> bool {
    matches!(e, IndexError::Registry { source: RegistryError::Conflict { .. }, .. })
}

fn check_model(index: &Index, model: &EmbeddingModel) -> Result<(), IndexError> {
    let own = &index.manifest.model;
    if own.sha256 != model.sha256 || own.dimensions != model.dimensions {
        return Err(IndexError::OtherModel {
            name: index.name.clone(),
            expected: own.describe(),
            found: model.describe(),
        });
    }
    Ok(())
}

/// The next version of `index`: `manifest` with `segment` appended (when it has entries). When
/// the vectors outside the graph file grow past a quarter of it, or removed ones do, the version
/// is compacted instead: every live vector in one segment and a graph built over them.
async fn write_next(
    registry: &Registry,
    index: &Index,
    mut manifest: Manifest,
    segment: Segment,
    created_by: &str,
    note: &str,
) -> Result<VersionRecord, IndexError> {
    let name = index.name.as_str();
    let dir = scratch(name)?;
    let dims = manifest.model.dimensions;
    let in_graph = manifest.graph.as_ref().map_or(0, |g| index.covered(g.segments));
    let removed_now = manifest.removed.iter().filter(|id| index.entry(**id).is_some()).count();
    let live = index.len() + segment.entries.len() - removed_now;
    let outside = live.saturating_sub(in_graph) + manifest.removed.len();
    let graphed = !scans(live, dims);
    // Compacted: when a graph is due or stale, and (graph or not) when segments or removed ids
    // pile up, since every load reads each segment.
    let compact = (graphed && outside * 4 > in_graph.max(1))
        || manifest.segments.len() + 1 > MAX_SEGMENTS
        || manifest.removed.len() > live / 4 + 16;
    let tag = manifest.next_id;
    let mut files = Vec::new();
    let mut kept: Vec<ArtifactRecord> = Vec::new();
    if compact {
        let removed: std::collections::HashSet<u64> = manifest.removed.iter().copied().collect();
        let mut all = Segment { dimensions: dims, entries: Vec::new(), vectors: Vec::new() };
        for entry in index.entries().iter().filter(|e| !removed.contains(&e.id)) {
            all.entries.push(entry.clone());
            all.vectors.extend_from_slice(index.vector(entry.id).unwrap_or_default());
        }
        all.entries.extend(segment.entries);
        all.vectors.extend(segment.vectors);
        let seg_file = format!("seg-{tag}.bin");
        files.push(write_file(dir.path(), &seg_file, &all.encode())?);
        manifest.segments = vec![seg_file];
        manifest.removed.clear();
        manifest.graph = None;
        if graphed {
            let graph_err = |source| IndexError::Graph { name: name.to_string(), source };
            let graph = Graph::build(&all).map_err(graph_err)?;
            let graph_file = format!("graph-{tag}.hnsw");
            files.push(write_file(dir.path(), &graph_file, &graph.to_bytes().map_err(graph_err)?)?);
            manifest.graph = Some(GraphFile { file: graph_file, segments: 1 });
        }
    } else {
        kept = index.artifacts.iter().filter(|a| a.file != MANIFEST).cloned().collect();
        if !segment.entries.is_empty() {
            let file = format!("seg-{tag}.bin");
            files.push(write_file(dir.path(), &file, &segment.encode())?);
            manifest.segments.push(file);
        }
    }
    files.push(write_manifest(dir.path(), &manifest, name)?);
    commit(registry, name, files, kept, index.version, created_by, note).await
}

async fn commit(
    registry: &Registry,
    name: &str,
    files: Vec<NewFile>,
    kept: Vec<ArtifactRecord>,
    after: u64,
    created_by: &str,
    note: &str,
) -> Result<VersionRecord, IndexError> {
    let new = NewVersion {
        name: name.to_string(),
        task: TASK.to_string(),
        files,
        lineage: Lineage { source: format!("index: {note}"), ..Default::default() },
        created_by: created_by.to_string(),
        strix_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    registry.register_next(new, kept, after, &NoProgress).await.map_err(IndexError::registry(name))
}

/// The latest version of `name`, or `None` when there is no such name.
async fn latest(registry: &Registry, name: &str) -> Result<Option<VersionRecord>, IndexError> {
    let reference = ModelRef::parse(name).map_err(IndexError::registry(name))?;
    match registry.get(&reference).await {
        Ok(record) if record.task == TASK => Ok(Some(record)),
        Ok(record) => Err(IndexError::NotAnIndex { name: name.to_string(), task: record.task }),
        Err(RegistryError::UnknownModel { .. }) => Ok(None),
        Err(e) => Err(IndexError::registry(name)(e)),
    }
}

async fn latest_index(registry: &Registry, name: &str) -> Result<Index, IndexError> {
    let reference = ModelRef::parse(name).map_err(IndexError::registry(name))?;
    open(registry, &reference).await
}

/// The manifest of the version `reference` names, without its vectors.
pub async fn manifest(registry: &Registry, reference: &ModelRef) -> Result<(VersionRecord, Manifest), IndexError> {
    let name = reference.name.as_str();
    let record = registry.get(reference).await.map_err(IndexError::registry(name))?;
    let manifest = read_manifest(registry, &record).await?;
    Ok((record, manifest))
}

async fn read_artifact(registry: &Registry, record: &VersionRecord, file: &str) -> Result<Vec<u8>, IndexError> {
    let damaged = || IndexError::Damaged {
        name: record.name.clone(),
        what: file.to_string(),
        reason: "the version has no such file".into(),
    };
    let artifact = record.artifact(file).ok_or_else(damaged)?;
    registry.read(record, artifact).await.map_err(IndexError::registry(&record.name))
}

async fn read_manifest(registry: &Registry, record: &VersionRecord) -> Result<Manifest, IndexError> {
    let damaged = |reason: String| IndexError::Damaged { name: record.name.clone(), what: MANIFEST.into(), reason };
    if record.task != TASK {
        return Err(IndexError::NotAnIndex { name: record.name.clone(), task: record.task.clone() });
    }
    let manifest: Manifest = serde_json::from_slice(&read_artifact(registry, record, MANIFEST).await?)
        .map_err(|e| damaged(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(damaged(format!("format {} (this strix reads {FORMAT}); upgrade strix", manifest.format)));
    }
    Ok(manifest)
}

/// Load the version `record` describes (a caller that already looked it up).
pub async fn open_version(registry: &Registry, record: VersionRecord) -> Result<Index, IndexError> {
    let manifest = read_manifest(registry, &record).await?;
    let damaged =
        |what: &str, reason: String| IndexError::Damaged { name: record.name.clone(), what: what.to_string(), reason };
    let mut segments = Vec::with_capacity(manifest.segments.len());
    for file in &manifest.segments {
        let bytes = read_artifact(registry, &record, file).await?;
        segments.push(Segment::decode(&bytes).map_err(|reason| damaged(file, reason))?);
    }
    let graph = match &manifest.graph {
        Some(g) => {
            let bytes = read_artifact(registry, &record, &g.file).await?;
            Some(Graph::from_bytes(manifest.model.dimensions, &bytes).map_err(|e| damaged(&g.file, e.to_string()))?)
        }
        None => None,
    };
    Index::assemble(&record, manifest, segments, graph)
}

fn scratch(name: &str) -> Result<tempfile::TempDir, IndexError> {
    tempfile::tempdir().map_err(|source| IndexError::Io { path: std::env::temp_dir().join(name), source })
}

fn write_file(dir: &Path, file: &str, bytes: &[u8]) -> Result<NewFile, IndexError> {
    let path = dir.join(file);
    std::fs::write(&path, bytes).map_err(|source| IndexError::Io { path: path.clone(), source })?;
    Ok(NewFile { file: file.to_string(), path })
}

fn write_manifest(dir: &Path, manifest: &Manifest, name: &str) -> Result<NewFile, IndexError> {
    let bytes = serde_json::to_vec_pretty(manifest)
        .map_err(|e| IndexError::Invalid { name: name.to_string(), reason: format!("cannot write {MANIFEST}: {e}") })?;
    write_file(dir, MANIFEST, &bytes)
}
