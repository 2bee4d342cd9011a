//! Strix vector indexes: the embeddings of images (or of the faces in them) kept with where
//! they came from, searched by cosine similarity. What `strix index`, the server's search route,
//! Rekognition's face collections, the k-NN classifier and the stream's identities stand on.
//!
//! - An index lives in the registry like a model: each change is a new version of its name
//!   (task `index`), registered only if no other writer registered one since it read the
//!   latest, so concurrent writers never lose an update (they re-read and retry).
//! - A version is `index.json` (the embedding model, the segment list, removed ids), segment
//!   files (entries and vectors, immutable: a later version keeps them without writing them
//!   again) and, once a scan would cost more than a graph search ([`scans`]), an HNSW graph file.
//! - Search scans every vector while that is as fast (and exact), else walks the graph.
//!
//! ```no_run
//! # async fn demo(registry: &strix_registry::Registry, query: &[f32]) -> Result<(), strix_index::IndexError> {
//! let index = strix_index::open(registry, &strix_registry::ModelRef::parse("pantry").unwrap()).await?;
//! for hit in index.search(query, 10, 0.5)? {
//!     println!("{:.3} {}", hit.similarity, hit.entry.image);
//! }
//! # Ok(()) }
//! ```

pub mod cluster;
mod embed;
mod error;
mod graph;
mod index;
pub mod knn;
pub mod near;
mod segment;
mod store;
mod vectors;

use serde::{Deserialize, Serialize};

pub use embed::{embedding_model, query_vector, vectors_of};
pub use error::IndexError;
pub use index::{EXACT_WORK, EmbeddingModel, FORMAT, GraphFile, Index, Manifest, Match, scans};
pub use store::{Change, TASK, add, create, list, manifest, open, open_version, remove};
pub use vectors::unit;

/// What an index knows of a vector besides the vector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Given when added; never reused.
    pub id: u64,
    /// Where the vector came from, as given (a path, a URL, a store key, a project's image).
    pub image: String,
    /// The caller's own name for it (Rekognition's ExternalImageId, a person's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The face's or object's box in the image, `[x1, y1, x2, y2]` pixels, when the vector is of
    /// part of the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests;
