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
    load(registry, record).await
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
    for _ in 0..RETRIES {
        let index = latest_index(registry, name).await?;
        check_model(&index, model)?;
        let mut manifest = index.manifest.clone();
        let first = manifest.next_id;
        let mut segment = Segment { dimensions: model.dimensions, entries: Vec::new(), vectors: Vec::new() };
        for (i, (entry, vector)) in checked.iter().enumerate() {
            segment.entries.push(Entry { id: first + i as u64, ..entry.clone() });
            segment.vectors.extend_from_slice(vector);
        }
        manifest.next_id = first + checked.len() as u64;
        let ids: Vec<u64> = (first..manifest.next_id).collect();
        let note = format!("added {} entries", ids.len());
        match write_next(registry, &index, manifest, segment, created_by, &note).await {
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e),
            Ok(record) => return Ok(Change { record, ids }),
        }
    }
    Err(busy(name))
}

/// Remove entries by id.
pub async fn remove(registry: &Registry, name: &str, ids: &[u64], created_by: &str) -> Result<Change, IndexError> {
    for _ in 0..RETRIES {
        let index = latest_index(registry, name).await?;
        if let Some(&id) = ids.iter().find(|id| index.entry(**id).is_none()) {
            return Err(IndexError::UnknownEntry { name: name.to_string(), id });
        }
        let mut manifest = index.manifest.clone();
        manifest.removed.extend(ids);
        manifest.removed.sort_unstable();
        manifest.removed.dedup();
        let segment = Segment { dimensions: manifest.model.dimensions, ..Default::default() };
        let note = format!("removed {} entries", ids.len());
        match write_next(registry, &index, manifest, segment, created_by, &note).await {
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e),
            Ok(record) => return Ok(Change { record, ids: ids.to_vec() }),
        }
    }
    Err(busy(name))
}

fn busy(name: &str) -> IndexError {
    IndexError::Invalid {
        name: name.to_string(),
        reason: format!("other writers kept changing it; gave up after {RETRIES} tries"),
    }
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
    let in_graph = manifest.graph.as_ref().map_or(0, |g| index.covered(g.segments));
    let live = index.len() + segment.entries.len();
    let outside = live.saturating_sub(in_graph) + manifest.removed.len();
    let compact = !scans(live, manifest.model.dimensions) && outside * 4 > in_graph.max(1);
    let tag = manifest.next_id;
    let mut files = Vec::new();
    let mut kept: Vec<ArtifactRecord> = Vec::new();
    if compact {
        let mut all = index.to_segment();
        all.entries.extend(segment.entries);
        all.vectors.extend(segment.vectors);
        let graph = Graph::build(&all).map_err(|source| IndexError::Graph { name: name.to_string(), source })?;
        let (seg_file, graph_file) = (format!("seg-{tag}.bin"), format!("graph-{tag}.hnsw"));
        files.push(write_file(dir.path(), &seg_file, &all.encode())?);
        let bytes = graph.to_bytes().map_err(|source| IndexError::Graph { name: name.to_string(), source })?;
        files.push(write_file(dir.path(), &graph_file, &bytes)?);
        manifest.segments = vec![seg_file];
        manifest.removed.clear();
        manifest.graph = Some(GraphFile { file: graph_file, segments: 1 });
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

async fn load(registry: &Registry, record: VersionRecord) -> Result<Index, IndexError> {
    let name = record.name.clone();
    if record.task != TASK {
        return Err(IndexError::NotAnIndex { name, task: record.task });
    }
    let damaged =
        |what: &str, reason: String| IndexError::Damaged { name: name.clone(), what: what.to_string(), reason };
    let read = |file: String| {
        let record = &record;
        async move {
            let artifact =
                record.artifact(&file).ok_or_else(|| damaged(&file, "the version has no such file".into()))?;
            registry.read(record, artifact).await.map_err(IndexError::registry(&record.name))
        }
    };
    let manifest: Manifest =
        serde_json::from_slice(&read(MANIFEST.to_string()).await?).map_err(|e| damaged(MANIFEST, e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(damaged(
            MANIFEST,
            format!("format {} (this strix reads {FORMAT}); upgrade strix", manifest.format),
        ));
    }
    let mut segments = Vec::with_capacity(manifest.segments.len());
    for file in &manifest.segments {
        segments.push(Segment::decode(&read(file.clone()).await?).map_err(|reason| damaged(file, reason))?);
    }
    let graph = match &manifest.graph {
        Some(g) => Some(
            Graph::from_bytes(manifest.model.dimensions, &read(g.file.clone()).await?)
                .map_err(|e| damaged(&g.file, e.to_string()))?,
        ),
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
