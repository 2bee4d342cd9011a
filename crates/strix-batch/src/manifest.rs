//! `_manifest.json`: what a finished batch read, wrote and could not answer.

use serde::{Deserialize, Serialize};

use strix_jobs::Status;

use crate::{BatchError, BatchSpec, Place, ShardOutcome};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub image: String,
    pub error: String,
}

/// A shard that did not run to the end (failed after its attempts, or cancelled).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardNotDone {
    pub index: u32,
    pub file: String,
    pub error: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRecord {
    pub index: u32,
    pub file: String,
    pub images: usize,
    pub failed: usize,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `succeeded`, `failed` (a shard could not be run) or `cancelled`.
    pub status: Status,
    pub job: Option<String>,
    pub input: String,
    pub output: String,
    pub model: crate::PinnedModel,
    pub images: usize,
    pub answered: usize,
    pub shards: Vec<ShardRecord>,
    /// Shards that did not run to the end, with why.
    pub shards_not_done: Vec<ShardNotDone>,
    /// Images that got an error line instead of an answer.
    pub failures: Vec<Failure>,
    /// Seconds since 1970.
    pub started_at: f64,
    pub finished_at: f64,
    pub seconds: f64,
}

impl Manifest {
    /// Gather the shards' outcomes; `not_done` lists shards that failed or were cancelled.
    pub fn gather(
        spec: &BatchSpec,
        job: Option<String>,
        status: Status,
        outcomes: &[ShardOutcome],
        not_done: Vec<ShardNotDone>,
        started_at: f64,
        finished_at: f64,
    ) -> Manifest {
        let mut outcomes: Vec<&ShardOutcome> = outcomes.iter().collect();
        outcomes.sort_by_key(|o| o.index);
        let images = outcomes.iter().map(|o| o.images).sum::<usize>();
        let failures: Vec<Failure> = outcomes.iter().flat_map(|o| o.failures.iter().cloned()).collect();
        Manifest {
            status,
            job,
            input: spec.input.clone(),
            output: spec.output.clone(),
            model: spec.model.clone(),
            images,
            answered: images - failures.len(),
            shards: outcomes
                .iter()
                .map(|o| ShardRecord {
                    index: o.index,
                    file: o.file.clone(),
                    images: o.images,
                    failed: o.failures.len(),
                    seconds: o.seconds,
                })
                .collect(),
            shards_not_done: not_done,
            failures,
            started_at,
            finished_at,
            seconds: (finished_at - started_at).max(0.0),
        }
    }

    /// Write it under `output` as `_manifest.json`, whole.
    pub async fn write(&self, output: &Place) -> Result<(), BatchError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(BatchError::json("the manifest"))?;
        output.put(crate::MANIFEST_FILE, bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PinnedModel;

    #[test]
    fn the_manifest_adds_up_the_shards_in_order() {
        let spec = BatchSpec {
            input: "s3://b/in".into(),
            output: "s3://b/out".into(),
            model: PinnedModel { reference: "trash:3".into(), sha256: "ab".into() },
            shard_size: 2,
            top_k: 5,
            max_pixels: 1,
        };
        let failure = Failure { image: "s3://b/in/x.jpg".into(), error: "corrupt".into() };
        let outcomes = [
            ShardOutcome {
                index: 1,
                file: "part-00001.jsonl".into(),
                images: 1,
                failures: vec![failure.clone()],
                seconds: 2.0,
            },
            ShardOutcome { index: 0, file: "part-00000.jsonl".into(), images: 2, failures: vec![], seconds: 1.0 },
        ];
        let not_done = vec![ShardNotDone { index: 2, file: "part-00002.jsonl".into(), error: "cancelled".into() }];
        let m = Manifest::gather(&spec, Some("j1".into()), Status::Cancelled, &outcomes, not_done, 10.0, 14.5);
        assert_eq!((m.images, m.answered, m.seconds), (3, 2, 4.5));
        assert_eq!(m.shards.iter().map(|s| s.index).collect::<Vec<_>>(), vec![0, 1]);
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!((m.failures, m.shards_not_done.len(), m.status), (vec![failure], 1, Status::Cancelled));
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap().model.reference, "trash:3");
    }
}
