//! The k-NN classifier (SageMaker's built-in k-NN): labelled embeddings, and a vote of the `k`
//! most similar ones. Building it is embedding the training images, so it takes seconds.
//!
//! The vote: each of the `k` nearest neighbours (cosine similarity) gives its class
//! `max(similarity, 0) + 1e-6`; a class's score is its share of the total. The exported ONNX
//! graph (strix-export's `knn`) computes the same with MatMul, TopK and Gather, so
//! [`Knn::scores`] is the reference its gate compares against.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::segment::Segment;
use crate::vectors::{dot, top_k};
use crate::{EmbeddingModel, Entry, IndexError};

/// The run folder's k-NN settings and what the run was built with.
pub const KNN_FILE: &str = "knn.toml";
/// The labelled embeddings: an index segment (each entry's `external_id` is its class). The
/// export keeps a copy beside its ONNX file.
pub const NEIGHBOURS_FILE: &str = "neighbours.seg";
/// What each neighbour's vote adds to its similarity, so that a vote of only negative
/// similarities still picks a class.
pub const VOTE_FLOOR: f32 = 1e-6;
/// The embedding model a k-NN run reads its images with unless told otherwise.
pub const DEFAULT_EMBEDDING: &str = "efficientnet_lite0_embed";

/// `strix train --model knn`'s settings (flags over the config file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnnSettings {
    /// `classify`: k-NN labels whole images.
    #[serde(default = "d_task")]
    pub task: String,
    /// `knn`.
    pub model: String,
    /// Labelled images: class folders, a `path,label` CSV or IDX files.
    pub data: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_data: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_data: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    #[serde(default = "d_val")]
    pub val_fraction: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_images: Option<usize>,
    /// Neighbours that vote.
    #[serde(default = "d_k")]
    pub k: usize,
    /// The embedding model: a zoo name, a registered version, a spec file.
    #[serde(default = "d_embedding")]
    pub embedding: String,
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default = "d_test")]
    pub test: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
}

fn d_task() -> String {
    "classify".into()
}
fn d_val() -> f64 {
    0.1
}
fn d_k() -> usize {
    5
}
fn d_embedding() -> String {
    DEFAULT_EMBEDDING.into()
}
fn d_seed() -> u64 {
    42
}
fn d_test() -> bool {
    true
}

impl KnnSettings {
    /// Settings that cannot work, named.
    pub fn check(&self) -> Result<(), String> {
        if self.task != "classify" {
            return Err(format!("--model knn classifies whole images; --task {} is not for it", self.task));
        }
        if self.model != "knn" {
            return Err(format!("model {:?} is not knn", self.model));
        }
        if self.k == 0 {
            return Err("k must be at least 1".into());
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) && self.val_data.is_none() {
            return Err(format!("val_fraction {} must be between 0 and 1", self.val_fraction));
        }
        Ok(())
    }
}

/// A built k-NN run, as `knn.toml` keeps it: the settings, the embedding model's identity
/// (the export and later evaluations refuse other weights) and the class list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnnRun {
    pub settings: KnnSettings,
    pub embedding: EmbeddingModel,
    pub classes: Vec<String>,
}

impl KnnRun {
    /// `run_dir/knn.toml`, when the folder is a k-NN run.
    pub fn read_if_present(run_dir: &Path) -> Result<Option<KnnRun>, IndexError> {
        let path = run_dir.join(KNN_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(IndexError::Io { path, source }),
        };
        let damaged =
            |reason: String| IndexError::Damaged { name: run_dir.display().to_string(), what: KNN_FILE.into(), reason };
        let run: KnnRun = toml::from_str(&text).map_err(|e| damaged(e.to_string().trim().replace('\n', " ")))?;
        // An edited file is held to what a build would have accepted.
        run.settings.check().map_err(damaged)?;
        if run.classes.is_empty() || run.embedding.dimensions == 0 {
            return Err(damaged("no classes, or 0-d vectors".into()));
        }
        Ok(Some(run))
    }

    /// The run's labelled vectors (`run_dir/neighbours.seg`), checked against its settings.
    pub fn neighbours(&self, run_dir: &Path) -> Result<Knn, IndexError> {
        let knn = Knn::read(run_dir, self.settings.k, self.classes.clone())?;
        if knn.dimensions != self.embedding.dimensions || knn.is_empty() {
            return Err(IndexError::Damaged {
                name: run_dir.display().to_string(),
                what: NEIGHBOURS_FILE.into(),
                reason: format!(
                    "{} vectors of {} dimensions; the run's embedding gives {}",
                    knn.len(),
                    knn.dimensions,
                    self.embedding.dimensions
                ),
            });
        }
        Ok(knn)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("plain settings")
    }
}

/// Labelled unit vectors and the vote over them.
#[derive(Clone, Debug, PartialEq)]
pub struct Knn {
    pub k: usize,
    pub classes: Vec<String>,
    pub dimensions: usize,
    /// Class of row `i`.
    pub labels: Vec<usize>,
    /// Row-major unit vectors.
    pub vectors: Vec<f32>,
    /// Where row `i` came from.
    pub images: Vec<String>,
}

impl Knn {
    pub fn new(k: usize, classes: Vec<String>, dimensions: usize) -> Knn {
        Knn { k, classes, dimensions, labels: Vec::new(), vectors: Vec::new(), images: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Add one labelled vector (scaled to unit length).
    pub fn push(&mut self, label: usize, image: String, vector: &[f32]) -> Result<(), IndexError> {
        let at = self.len();
        if label >= self.classes.len() {
            return Err(IndexError::BadVector {
                at,
                reason: format!("label {label} of {} classes", self.classes.len()),
            });
        }
        if vector.len() != self.dimensions {
            return Err(IndexError::Dimensions { name: "k-NN".into(), expected: self.dimensions, found: vector.len() });
        }
        let unit = crate::unit(vector).map_err(|reason| IndexError::BadVector { at, reason })?;
        self.vectors.extend(unit);
        self.labels.push(label);
        self.images.push(image);
        Ok(())
    }

    /// The neighbours that vote: `(row, similarity)`, most similar first.
    pub fn neighbours(&self, query: &[f32]) -> Vec<(usize, f32)> {
        let q = crate::unit(query).unwrap_or_else(|_| vec![0.0; query.len()]);
        let mut scored: Vec<(u64, f32)> = (0..self.len())
            .map(|i| (i as u64, dot(&q, &self.vectors[i * self.dimensions..(i + 1) * self.dimensions])))
            .collect();
        top_k(&mut scored, self.k.min(self.len()));
        scored.into_iter().map(|(i, s)| (i as usize, s)).collect()
    }

    /// Each class's share of the vote, summing to 1.
    pub fn scores(&self, query: &[f32]) -> Vec<f32> {
        let mut scores = vec![0f32; self.classes.len()];
        for (row, similarity) in self.neighbours(query) {
            scores[self.labels[row]] += similarity.max(0.0) + VOTE_FLOOR;
        }
        let total: f32 = scores.iter().sum();
        if total > 0.0 {
            scores.iter_mut().for_each(|s| *s /= total);
        }
        scores
    }

    /// As a segment: entry `i` is row `i`, its class the external id.
    pub fn to_segment(&self) -> Segment {
        let entries = (0..self.len())
            .map(|i| Entry {
                id: i as u64,
                image: self.images[i].clone(),
                external_id: Some(self.classes[self.labels[i]].clone()),
                ..Default::default()
            })
            .collect();
        Segment { dimensions: self.dimensions, entries, vectors: self.vectors.clone() }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.to_segment().encode()
    }

    /// Read back what [`Knn::encode`] wrote, for `classes` (every entry's class must be one).
    pub fn decode(bytes: &[u8], k: usize, classes: Vec<String>, origin: &str) -> Result<Knn, IndexError> {
        let damaged =
            |reason: String| IndexError::Damaged { name: origin.into(), what: NEIGHBOURS_FILE.into(), reason };
        let segment = Segment::decode(bytes).map_err(damaged)?;
        let mut knn = Knn::new(k, classes, segment.dimensions);
        for (i, entry) in segment.entries.iter().enumerate() {
            let class = entry.external_id.as_deref().unwrap_or_default();
            let label = knn
                .classes
                .iter()
                .position(|c| c == class)
                .ok_or_else(|| damaged(format!("entry {i} has class {class:?}, not one of the run's")))?;
            knn.push(label, entry.image.clone(), segment.vector(i))?;
        }
        Ok(knn)
    }

    /// `dir/neighbours.seg`.
    pub fn read(dir: &Path, k: usize, classes: Vec<String>) -> Result<Knn, IndexError> {
        let path = dir.join(NEIGHBOURS_FILE);
        let bytes = std::fs::read(&path).map_err(|source| IndexError::Io { path: path.clone(), source })?;
        Knn::decode(&bytes, k, classes, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knn() -> Knn {
        let mut knn = Knn::new(3, vec!["a".into(), "b".into()], 2);
        for (label, v) in [(0, [1.0, 0.0]), (0, [0.9, 0.1]), (1, [0.0, 1.0]), (1, [0.1, 0.9]), (1, [0.2, 0.8])] {
            knn.push(label, format!("{v:?}"), &v).unwrap();
        }
        knn
    }

    #[test]
    fn the_vote_weighs_neighbours_by_similarity() {
        let knn = knn();
        let s = knn.scores(&[1.0, 0.05]);
        // Neighbours: both a's and the b nearest to the x axis; a wins clearly.
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{s:?}");
        assert!(s[0] > 0.75 && s[1] > 0.0, "{s:?}");
        let s = knn.scores(&[0.0, 1.0]);
        assert!(s[1] > 0.99, "{s:?}");
        // k larger than the set: everyone votes.
        let mut all = knn.clone();
        all.k = 50;
        assert_eq!(all.neighbours(&[1.0, 0.0]).len(), 5);
    }

    /// Hostile run folders: edited or damaged files are named, never half-read.
    #[test]
    fn a_damaged_run_folder_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let settings = KnnSettings {
            task: d_task(),
            model: "knn".into(),
            data: "d".into(),
            val_data: None,
            test_data: None,
            classes: None,
            val_fraction: d_val(),
            max_images: None,
            k: 3,
            embedding: d_embedding(),
            seed: d_seed(),
            test: true,
            threads: None,
            run_dir: None,
        };
        let embedding =
            EmbeddingModel { reference: "e".into(), sha256: "0".repeat(64), dimensions: 2, task: "embed".into() };
        let run = KnnRun { settings, embedding, classes: vec!["a".into(), "b".into()] };
        let write = |text: &str| std::fs::write(dir.path().join(KNN_FILE), text).unwrap();
        assert!(KnnRun::read_if_present(dir.path()).unwrap().is_none());
        write(&run.to_toml());
        assert_eq!(KnnRun::read_if_present(dir.path()).unwrap().unwrap(), run);
        for (edit, needle) in [
            (run.to_toml().replace("k = 3", "k = 0"), "k must be at least 1"),
            (run.to_toml().replace("k = 3", "k = 3\nepochs = 4"), "unknown field"),
            (run.to_toml().replace("dimensions = 2", "dimensions = 0"), "0-d vectors"),
            ("not toml [".to_string(), KNN_FILE),
        ] {
            write(&edit);
            let err = KnnRun::read_if_present(dir.path()).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains(KNN_FILE), "{edit}: {err}");
        }
        write(&run.to_toml());
        let segment = dir.path().join(NEIGHBOURS_FILE);
        let bytes = knn().encode();
        std::fs::write(&segment, &bytes[..bytes.len() - 3]).unwrap();
        let err = run.neighbours(dir.path()).unwrap_err().to_string();
        assert!(err.contains(NEIGHBOURS_FILE), "{err}");
        let mut wide = Knn::new(3, run.classes.clone(), 3);
        wide.push(0, "x".into(), &[1.0, 0.0, 0.0]).unwrap();
        std::fs::write(&segment, wide.encode()).unwrap();
        let err = run.neighbours(dir.path()).unwrap_err().to_string();
        assert!(err.contains("3 dimensions") && err.contains("gives 2"), "{err}");
        std::fs::write(&segment, knn().encode()).unwrap();
        assert_eq!(run.neighbours(dir.path()).unwrap().len(), 5);
    }

    #[test]
    fn a_knn_round_trips_through_its_segment_and_refuses_strangers() {
        let knn = knn();
        let back = Knn::decode(&knn.encode(), 3, knn.classes.clone(), "t").unwrap();
        assert_eq!(back, knn);
        let err = Knn::decode(&knn.encode(), 3, vec!["a".into()], "t").unwrap_err().to_string();
        assert!(err.contains("class \"b\""), "{err}");
        let mut bad = Knn::new(1, vec!["a".into()], 2);
        assert!(bad.push(0, "x".into(), &[0.0, 0.0]).is_err());
        assert!(bad.push(0, "x".into(), &[1.0, 0.0, 0.0]).is_err());
        assert!(bad.push(1, "x".into(), &[1.0, 0.0]).is_err());
    }
}
