//! One shard: read its images, answer each, write its JSON Lines file whole.

use std::time::Instant;

use strix_pipeline::rekognition::JsonLine;
use strix_pipeline::{BatchOptions, Pipeline, PipelineError, Prediction};
use strix_vision::{DecodeLimits, RgbImage, VisionError};

use crate::place::Fetched;
use crate::{BatchError, Failure, Place, ShardSpec};

/// Images per inference, as `strix predict` batches them by default; also how many are held
/// decoded at once.
const BATCH: usize = 8;

/// What a shard did, kept with its task and gathered into the manifest.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardOutcome {
    pub index: u32,
    pub file: String,
    pub images: usize,
    pub failures: Vec<Failure>,
    pub seconds: f64,
}

/// Answer `shard`'s images with `pipeline` and write its file; `progress(done, total)` after
/// each group of images, and `stopped()` checked between them: a stopped shard writes nothing
/// and returns `None`.
pub async fn run_shard(
    shard: &ShardSpec,
    pipeline: &Pipeline,
    input: &Place,
    output: &Place,
    progress: &(dyn Fn(u64, u64) + Sync),
    stopped: &(dyn Fn() -> bool + Sync),
) -> Result<Option<ShardOutcome>, BatchError> {
    let started = Instant::now();
    let options = BatchOptions {
        batch: BATCH,
        top_k: shard.batch.top_k.max(1),
        limits: DecodeLimits { max_pixels: shard.batch.max_pixels, ..DecodeLimits::default() },
        workers: Some(1),
    };
    let model = pipeline.model().spec.name.clone();
    let total = shard.images.len() as u64;
    let mut text = String::new();
    let mut failures = Vec::new();
    let mut done = 0u64;
    for keys in shard.images.chunks(BATCH) {
        if stopped() {
            return Ok(None);
        }
        let mut decoded = Vec::with_capacity(keys.len());
        for key in keys {
            decoded.push(read(input, key, &options.limits).await?);
        }
        for (key, answer) in keys.iter().zip(answer_all(pipeline, decoded, &options)) {
            let name = input.name(key);
            if let Err(e) = &answer {
                failures.push(Failure { image: name.clone(), error: e.to_string() });
            }
            text.push_str(&JsonLine::new(&name, answer.as_ref(), &model).to_line());
        }
        done += keys.len() as u64;
        progress(done, total);
    }
    output.put(&shard.file(), text.into_bytes()).await?;
    Ok(Some(ShardOutcome {
        index: shard.index,
        file: shard.file(),
        images: shard.images.len(),
        failures,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// One image decoded from the store as `strix predict` decodes a file: the same size limit
/// before reading, the same decoder after; either refusal is the image's answer. An object the
/// store cannot give (gone since the listing, the store failing) fails the shard instead: it is
/// tried again, and named in the manifest if it never succeeds, rather than kept as an answer.
async fn read(input: &Place, key: &str, limits: &DecodeLimits) -> Result<Result<RgbImage, PipelineError>, BatchError> {
    Ok(match input.fetch(key, limits.max_bytes).await? {
        Fetched::Bytes(bytes) => strix_vision::decode_bytes(&bytes, limits).map_err(PipelineError::from),
        Fetched::TooLarge(bytes) => Err(VisionError::FileTooLarge { bytes, limit: limits.max_bytes }.into()),
    })
}

/// Answers for a group of decoded images in order; those that did not decode keep their error.
fn answer_all(
    pipeline: &Pipeline,
    decoded: Vec<Result<RgbImage, PipelineError>>,
    options: &BatchOptions,
) -> Vec<Result<Prediction, PipelineError>> {
    let (images, slots): (Vec<_>, Vec<_>) = decoded
        .into_iter()
        .map(|d| match d {
            Ok(img) => (Some(img), Ok(())),
            Err(e) => (None, Err(e)),
        })
        .unzip();
    let images: Vec<RgbImage> = images.into_iter().flatten().collect();
    let mut answers = match pipeline.predict_images(&images, options) {
        Ok(a) => a.into_iter().map(Ok).collect::<Vec<_>>().into_iter(),
        Err(e) => {
            let e = e.to_string();
            (0..images.len()).map(|_| Err(PipelineError::Batch(e.clone()))).collect::<Vec<_>>().into_iter()
        }
    };
    slots
        .into_iter()
        .map(|slot| match slot {
            Err(e) => Err(e),
            Ok(()) => {
                answers.next().unwrap_or_else(|| Err(PipelineError::Internal("fewer answers than images".into())))
            }
        })
        .collect()
}
