//! An index in memory: its entries, their unit vectors, and the graph over them when it is big
//! enough for one to beat a scan.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::graph::Graph;
use crate::segment::Segment;
use crate::vectors::{dot, top_k};
use crate::{Entry, IndexError};

/// The format of `index.json` this strix writes and reads.
pub const FORMAT: u32 = 1;

/// The model whose vectors an index holds. Vectors of any other model mean nothing next to
/// them, so adding or searching with one is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingModel {
    /// How it was named when the index was made (`efficientnet_lite0_embed`, `trash:3`).
    pub reference: String,
    /// sha256 of its network's weights: what identifies it.
    pub sha256: String,
    pub dimensions: usize,
    /// `embed` (a vector per image) or `faces` (a vector per face).
    pub task: String,
}

impl EmbeddingModel {
    pub fn describe(&self) -> String {
        format!(
            "{} (weights sha256 {}, {}-d)",
            self.reference,
            &self.sha256[..self.sha256.len().min(12)],
            self.dimensions
        )
    }
}

/// The graph file of a version and the leading segments whose vectors it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphFile {
    pub file: String,
    pub segments: usize,
}

/// `index.json`: what a version of an index is made of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub model: EmbeddingModel,
    #[serde(default)]
    pub description: String,
    /// Segment files, oldest first.
    pub segments: Vec<String>,
    /// Ids deleted since their segment was written.
    #[serde(default)]
    pub removed: Vec<u64>,
    /// The id the next entry gets (ids are never reused).
    pub next_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphFile>,
}

/// One search result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Match {
    /// Cosine similarity to the query, -1 to 1.
    pub similarity: f32,
    pub entry: Entry,
}

impl Match {
    /// As `strix index search --json` and the server's search route give it.
    pub fn to_json(&self) -> serde_json::Value {
        let e = &self.entry;
        serde_json::json!({
            "similarity": self.similarity, "id": e.id, "image": e.image,
            "external_id": e.external_id, "bbox": e.bbox, "metadata": e.metadata,
        })
    }
}

/// A loaded version of an index.
#[derive(Debug)]
pub struct Index {
    pub name: String,
    pub version: u64,
    pub manifest: Manifest,
    entries: Vec<Entry>,
    vectors: Vec<f32>,
    /// Row of each live id.
    rows: HashMap<u64, usize>,
    graph: Option<Graph>,
    /// Entries (live or removed) in each segment, in order.
    segment_sizes: Vec<usize>,
    /// The version's files, which the next version keeps.
    pub(crate) artifacts: Vec<strix_registry::ArtifactRecord>,
}

/// Indexes with fewer multiply-adds per scan than this (vectors x dimensions) scan: about a
/// millisecond on one core, what a graph search takes (bench/index.py: a 100k x 512 scan took
/// 14.6 ms, a graph search 0.8 ms), and exact. 8,000 vectors of 512, 3,000 of 1280.
pub const EXACT_WORK: usize = 4_000_000;

/// Whether an index of `n` vectors of `d` dimensions answers by scanning (else by its graph).
pub fn scans(n: usize, d: usize) -> bool {
    n.saturating_mul(d) < EXACT_WORK
}

impl Index {
    /// Assemble a version from its manifest, segments (in the manifest's order) and graph.
    pub(crate) fn assemble(
        record: &strix_registry::VersionRecord,
        manifest: Manifest,
        segments: Vec<Segment>,
        graph: Option<Graph>,
    ) -> Result<Index, IndexError> {
        let name = record.name.as_str();
        let dims = manifest.model.dimensions;
        let damaged = |what: String, reason: String| IndexError::Damaged { name: name.to_string(), what, reason };
        let removed: HashSet<u64> = manifest.removed.iter().copied().collect();
        let (mut entries, mut vectors, mut rows) = (Vec::new(), Vec::new(), HashMap::new());
        let segment_sizes = segments.iter().map(|s| s.entries.len()).collect();
        for (file, seg) in manifest.segments.iter().zip(segments) {
            if seg.dimensions != dims {
                return Err(damaged(file.clone(), format!("{}-d vectors in a {dims}-d index", seg.dimensions)));
            }
            for (i, entry) in seg.entries.iter().enumerate() {
                if entry.id >= manifest.next_id || rows.contains_key(&entry.id) {
                    return Err(damaged(file.clone(), format!("entry id {} is repeated or out of range", entry.id)));
                }
                if removed.contains(&entry.id) {
                    continue;
                }
                rows.insert(entry.id, entries.len());
                entries.push(entry.clone());
                vectors.extend_from_slice(seg.vector(i));
            }
        }
        let mut index = Index {
            name: name.to_string(),
            version: record.version,
            manifest,
            entries,
            vectors,
            rows,
            graph,
            segment_sizes,
            artifacts: record.artifacts.clone(),
        };
        index.sync_graph()?;
        Ok(index)
    }

    /// Bring the graph in line with the live entries: add those the graph file predates, drop
    /// the removed ones. Without a graph file, a big enough index gets one built here.
    fn sync_graph(&mut self) -> Result<(), IndexError> {
        let graph_err = |source| IndexError::Graph { name: self.name.clone(), source };
        let graph = match self.graph.take() {
            Some(g) => g,
            None if !scans(self.len(), self.manifest.model.dimensions) => {
                Graph::new(self.manifest.model.dimensions, self.len()).map_err(graph_err)?
            }
            None => return Ok(()),
        };
        for id in &self.manifest.removed {
            graph.remove(*id).map_err(graph_err)?;
        }
        let missing: Vec<usize> = (0..self.entries.len()).filter(|&r| !graph.contains(self.entries[r].id)).collect();
        graph.reserve(graph.len() + missing.len()).map_err(graph_err)?;
        for r in missing {
            graph.add(self.entries[r].id, self.row(r)).map_err(graph_err)?;
        }
        self.graph = Some(graph);
        Ok(())
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn entry(&self, id: u64) -> Option<&Entry> {
        self.rows.get(&id).map(|&r| &self.entries[r])
    }

    /// The stored vector of entry `id`.
    pub fn vector(&self, id: u64) -> Option<&[f32]> {
        self.rows.get(&id).map(|&r| self.row(r))
    }

    fn row(&self, r: usize) -> &[f32] {
        let d = self.manifest.model.dimensions;
        &self.vectors[r * d..(r + 1) * d]
    }

    /// Whether searches go through the graph (else they scan every vector).
    pub fn uses_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// This index with a graph over its vectors whatever its size (benchmarks compare the two
    /// ways on small sets too).
    pub fn with_graph(mut self) -> Result<Index, IndexError> {
        if self.graph.is_none() {
            let graph = Graph::build(&self.to_segment())
                .map_err(|source| IndexError::Graph { name: self.name.clone(), source })?;
            self.graph = Some(graph);
        }
        Ok(self)
    }

    /// The `k` entries most like `query` (a unit vector of the index's model), best first, with
    /// cosine similarity at least `min_similarity`.
    pub fn search(&self, query: &[f32], k: usize, min_similarity: f32) -> Result<Vec<Match>, IndexError> {
        self.check_query(query)?;
        let hits = match &self.graph {
            Some(graph) => {
                graph.search(query, k).map_err(|source| IndexError::Graph { name: self.name.clone(), source })?
            }
            _ => self.scan(query, k),
        };
        Ok(hits
            .into_iter()
            .filter(|(_, s)| *s >= min_similarity)
            .filter_map(|(id, similarity)| Some(Match { similarity, entry: self.entry(id)?.clone() }))
            .collect())
    }

    /// Exact search: every vector compared.
    pub fn scan(&self, query: &[f32], k: usize) -> Vec<(u64, f32)> {
        let mut scored: Vec<(u64, f32)> =
            (0..self.entries.len()).map(|r| (self.entries[r].id, dot(self.row(r), query))).collect();
        top_k(&mut scored, k);
        scored
    }

    pub(crate) fn check_query(&self, query: &[f32]) -> Result<(), IndexError> {
        let expected = self.manifest.model.dimensions;
        if query.len() != expected {
            return Err(IndexError::Dimensions { name: self.name.clone(), expected, found: query.len() });
        }
        Ok(())
    }

    /// Entries (live or removed) in the first `segments` segments.
    pub(crate) fn covered(&self, segments: usize) -> usize {
        self.segment_sizes.iter().take(segments).sum()
    }

    /// The live entries and vectors as one segment (what a graph is built over).
    pub(crate) fn to_segment(&self) -> Segment {
        Segment {
            dimensions: self.manifest.model.dimensions,
            entries: self.entries.clone(),
            vectors: self.vectors.clone(),
        }
    }
}
