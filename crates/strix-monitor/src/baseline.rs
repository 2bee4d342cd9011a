//! A baseline: what a model saw and said on data it was known to do well on, kept as
//! SageMaker Model Monitor keeps one (`statistics.json`, and `constraints.json` with the
//! thresholds, editable), plus a reservoir of embeddings (`embeddings.f32`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use strix_core::Answer;

use crate::MonitorError;
use crate::properties::{ImageProperties, NAMES};

/// What one answered image contributes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// `None`: the file did not decode.
    pub properties: Option<ImageProperties>,
    /// A classifier's top class and its score.
    pub class: Option<String>,
    pub confidence: Option<f64>,
    /// A detector's boxes, and each box's share of the image's area.
    pub boxes: Option<usize>,
    pub box_areas: Vec<f64>,
    pub embedding: Option<Vec<f32>>,
}

impl Observation {
    /// An image's properties, with nothing of an answer yet.
    pub fn of_image(img: &image::RgbImage) -> Observation {
        Observation { properties: Some(ImageProperties::of(img)), ..Observation::default() }
    }

    /// Add what `answer` (to a `width` x `height` image) says: a classifier's top class and
    /// score, a detector's boxes and their areas as shares of the image.
    pub fn with_answer(mut self, answer: &Answer, width: u32, height: u32) -> Observation {
        let area = f64::from(width.max(1)) * f64::from(height.max(1));
        match answer {
            Answer::Labels { classes } => {
                self.class = classes.first().map(|c| c.label.clone());
                self.confidence = classes.first().map(|c| f64::from(c.score));
            }
            Answer::Objects { objects } => {
                self.boxes = Some(objects.len());
                self.box_areas = objects.iter().map(|d| f64::from(d.bbox.width() * d.bbox.height()) / area).collect();
            }
            Answer::Faces { faces } => {
                self.boxes = Some(faces.len());
                self.box_areas = faces.iter().map(|f| f64::from(f.bbox.width() * f.bbox.height()) / area).collect();
            }
            _ => {}
        }
        self
    }

    /// The numeric features this observation gives, by name.
    pub fn numeric(&self) -> Vec<(&'static str, f64)> {
        let mut out = Vec::new();
        if let Some(p) = &self.properties {
            out.extend(NAMES.iter().copied().zip(p.values()));
        }
        if let Some(c) = self.confidence {
            out.push(("confidence", c));
        }
        if let Some(b) = self.boxes {
            out.push(("boxes", b as f64));
        }
        out.extend(self.box_areas.iter().map(|&a| ("box_area", a)));
        out
    }
}

/// One numeric feature's summary and the sample the tests compare with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericStats {
    pub count: u64,
    pub mean: f64,
    pub std_dev: f64,
    pub min: f64,
    pub max: f64,
    /// Up to the baseline's sample size, drawn uniformly (reservoir sampling).
    pub sample: Vec<f64>,
}

/// The embeddings' reservoir, kept beside statistics.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingStats {
    pub model: String,
    pub dimensions: usize,
    pub count: usize,
    pub file: String,
}

/// `statistics.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statistics {
    pub version: u32,
    /// The model whose answers these are, as named when the baseline was made.
    pub model: String,
    pub task: String,
    pub items: u64,
    pub decode_failures: u64,
    pub numeric: BTreeMap<String, NumericStats>,
    /// Counts per value: `predicted_class`.
    pub categorical: BTreeMap<String, BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<EmbeddingStats>,
}

/// `constraints.json`: how windows are tested against the baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    pub version: u32,
    /// Significance of each p-value test before the correction.
    pub alpha: f64,
    /// Divide alpha by the number of p-value tests in a check.
    pub bonferroni: bool,
    /// Up to this many values in the window, KS and chi-squared (p-values); beyond, normalised
    /// Wasserstein and Jensen-Shannon (distances), Evidently's tests (Evidently switches on the reference's size).
    pub large_sample: usize,
    pub wasserstein_threshold: f64,
    pub jensen_shannon_threshold: f64,
    /// Share of files that do not decode beyond which a window is a violation.
    pub max_decode_failure_rate: f64,
    /// Shuffles of the MMD permutation test on embeddings.
    pub mmd_permutations: usize,
    /// Features left out of the checks, by name.
    #[serde(default)]
    pub skip: Vec<String>,
}

impl Default for Constraints {
    fn default() -> Constraints {
        Constraints {
            version: 1,
            alpha: 0.05,
            bonferroni: true,
            large_sample: 1000,
            wasserstein_threshold: 0.1,
            jensen_shannon_threshold: 0.1,
            max_decode_failure_rate: 0.05,
            mmd_permutations: 100,
            skip: Vec::new(),
        }
    }
}

impl Constraints {
    pub fn check(&self) -> Result<(), String> {
        let ok = self.alpha > 0.0
            && self.alpha < 1.0
            && self.wasserstein_threshold > 0.0
            && self.jensen_shannon_threshold > 0.0
            && (0.0..=1.0).contains(&self.max_decode_failure_rate)
            && self.large_sample > 0
            && self.mmd_permutations > 0;
        if ok {
            Ok(())
        } else {
            Err("alpha in (0, 1), thresholds above 0, a rate in 0..=1, large_sample and mmd_permutations above 0"
                .into())
        }
    }
}

/// Builds a baseline from observations, keeping a uniform sample of each feature.
#[derive(Debug)]
pub struct BaselineBuilder {
    sample: usize,
    rng: u64,
    items: u64,
    failures: u64,
    numeric: BTreeMap<String, (NumericStats, f64, f64)>,
    classes: BTreeMap<String, u64>,
    vectors: Vec<f32>,
    dimensions: usize,
    seen_vectors: usize,
}

impl BaselineBuilder {
    /// Keep up to `sample` values per feature (and vectors), drawn with `seed`.
    pub fn new(sample: usize, seed: u64) -> BaselineBuilder {
        BaselineBuilder {
            sample: sample.max(1),
            rng: seed,
            items: 0,
            failures: 0,
            numeric: BTreeMap::new(),
            classes: BTreeMap::new(),
            vectors: Vec::new(),
            dimensions: 0,
            seen_vectors: 0,
        }
    }

    pub fn add(&mut self, o: &Observation) -> Result<(), MonitorError> {
        self.items += 1;
        if o.properties.is_none() {
            self.failures += 1;
        }
        for (name, v) in o.numeric() {
            if !v.is_finite() {
                continue;
            }
            let (stats, sum, sum2) = self.numeric.entry(name.to_string()).or_insert_with(|| {
                (NumericStats { min: f64::INFINITY, max: f64::NEG_INFINITY, ..NumericStats::default() }, 0.0, 0.0)
            });
            stats.count += 1;
            *sum += v;
            *sum2 += v * v;
            stats.min = stats.min.min(v);
            stats.max = stats.max.max(v);
            let slot = reservoir_slot(&mut self.rng, stats.count as usize, self.sample);
            match slot {
                Some(i) if i < stats.sample.len() => stats.sample[i] = v,
                Some(_) => stats.sample.push(v),
                None => {}
            }
        }
        if let Some(c) = &o.class {
            *self.classes.entry(c.clone()).or_default() += 1;
        }
        if let Some(v) = &o.embedding {
            if self.dimensions == 0 {
                self.dimensions = v.len();
            }
            if v.len() != self.dimensions {
                return Err(MonitorError::Invalid(format!(
                    "an embedding of {} values after ones of {}",
                    v.len(),
                    self.dimensions
                )));
            }
            self.seen_vectors += 1;
            match reservoir_slot(&mut self.rng, self.seen_vectors, self.sample) {
                Some(i) if i * self.dimensions < self.vectors.len() => {
                    self.vectors[i * self.dimensions..(i + 1) * self.dimensions].copy_from_slice(v)
                }
                Some(_) => self.vectors.extend_from_slice(v),
                None => {}
            }
        }
        Ok(())
    }

    /// The statistics and the embeddings' reservoir (`n x dimensions`).
    pub fn finish(self, model: &str, task: &str, embedding_model: Option<&str>) -> (Statistics, Vec<f32>) {
        let numeric = self
            .numeric
            .into_iter()
            .map(|(name, (mut s, sum, sum2))| {
                let n = s.count as f64;
                s.mean = sum / n;
                s.std_dev = (sum2 / n - s.mean * s.mean).max(0.0).sqrt();
                (name, s)
            })
            .collect();
        let mut categorical = BTreeMap::new();
        if !self.classes.is_empty() {
            categorical.insert("predicted_class".to_string(), self.classes);
        }
        let embeddings = (self.dimensions > 0).then(|| EmbeddingStats {
            model: embedding_model.unwrap_or_default().to_string(),
            dimensions: self.dimensions,
            count: self.vectors.len() / self.dimensions,
            file: EMBEDDINGS.to_string(),
        });
        let stats = Statistics {
            version: 1,
            model: model.to_string(),
            task: task.to_string(),
            items: self.items,
            decode_failures: self.failures,
            numeric,
            categorical,
            embeddings,
        };
        (stats, self.vectors)
    }
}

/// Algorithm R: the `seen`-th value (from 1) goes to this slot of a reservoir of `size`, or
/// nowhere.
fn reservoir_slot(rng: &mut u64, seen: usize, size: usize) -> Option<usize> {
    if seen <= size {
        return Some(seen - 1);
    }
    let j = (crate::splitmix(rng) % seen as u64) as usize;
    (j < size).then_some(j)
}

pub const STATISTICS: &str = "statistics.json";
pub const CONSTRAINTS: &str = "constraints.json";
pub const EMBEDDINGS: &str = "embeddings.f32";

/// A baseline as read from its folder.
#[derive(Clone, Debug)]
pub struct Baseline {
    pub statistics: Statistics,
    pub constraints: Constraints,
    pub embeddings: Vec<f32>,
}

impl Baseline {
    /// Write the three files into `dir` (created), each whole or not at all.
    pub fn write(&self, dir: &Path) -> Result<(), MonitorError> {
        std::fs::create_dir_all(dir).map_err(MonitorError::io(dir))?;
        let json = |v: serde_json::Result<String>| v.map_err(|e| MonitorError::Invalid(e.to_string()));
        crate::write_whole(&dir.join(STATISTICS), json(serde_json::to_string_pretty(&self.statistics))?.as_bytes())?;
        crate::write_whole(&dir.join(CONSTRAINTS), json(serde_json::to_string_pretty(&self.constraints))?.as_bytes())?;
        if self.statistics.embeddings.is_some() {
            let bytes: Vec<u8> = self.embeddings.iter().flat_map(|v| v.to_le_bytes()).collect();
            crate::write_whole(&dir.join(EMBEDDINGS), &bytes)?;
        }
        Ok(())
    }

    /// `dir`'s constraints.json, checked; `None` when there is none.
    pub fn read_constraints(dir: &Path) -> Result<Option<Constraints>, MonitorError> {
        let path = dir.join(CONSTRAINTS);
        if !path.exists() {
            return Ok(None);
        }
        let constraints: Constraints = crate::read_json(&path)?;
        constraints.check().map_err(|reason| MonitorError::Format { path, reason })?;
        Ok(Some(constraints))
    }

    /// Read a baseline folder, checking that its parts agree.
    pub fn read(dir: &Path) -> Result<Baseline, MonitorError> {
        let statistics: Statistics = crate::read_json(&dir.join(STATISTICS))?;
        let constraints = Self::read_constraints(dir)?.ok_or_else(|| MonitorError::Io {
            path: dir.join(CONSTRAINTS),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let mut embeddings = Vec::new();
        if let Some(e) = &statistics.embeddings {
            let path = dir.join(&e.file);
            if e.file.contains(['/', '\\']) || e.file.starts_with('.') {
                return Err(MonitorError::Format {
                    path,
                    reason: "the embeddings file must sit beside statistics.json".into(),
                });
            }
            let bytes = std::fs::read(&path).map_err(MonitorError::io(&path))?;
            let want = e.count.checked_mul(e.dimensions).and_then(|n| n.checked_mul(4));
            if e.dimensions == 0 || want != Some(bytes.len()) {
                return Err(MonitorError::Format {
                    path,
                    reason: format!("{} bytes, not {} vectors of {} values", bytes.len(), e.count, e.dimensions),
                });
            }
            embeddings = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        }
        Ok(Baseline { statistics, constraints, embeddings })
    }
}
