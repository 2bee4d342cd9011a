//! `strix stream --index NAME`: a track's crop embedded by the index's own model and looked up
//! in the index, so tracks get the names of known faces or objects.

use std::sync::Arc;

use anyhow::{Result, bail};
use strix_core::{BBox, Task};
use strix_index::Index;
use strix_pipeline::{BatchOptions, Pipeline};
use strix_stream::{Identifier, IdentifySettings, Identity};
use strix_vision::RgbImage;

use crate::cli::StreamArgs;
use crate::context::AppContext;

/// Similarity a match needs when an index of objects is given no `--index-threshold`: the
/// near-duplicate default of `strix data inspect` (a recompressed, brightened, mirrored or
/// slightly cropped view of the same thing).
const OBJECT_THRESHOLD: f32 = 0.8;

struct IndexIdentifier {
    pipeline: Pipeline,
    index: Index,
    threshold: f32,
    /// Context added around a box on each side, as a share of its size: a face model finds the
    /// face again in its crop, and needs some of the head around it.
    margin: f32,
}

impl Identifier for IndexIdentifier {
    fn index(&self) -> &str {
        &self.index.name
    }

    fn identify(&self, frame: &RgbImage, bbox: BBox) -> Result<Option<Identity>, String> {
        let crop = crop(frame, bbox, self.margin).ok_or("an empty box")?;
        let answers = self.pipeline.predict_images(&[crop], &BatchOptions::default()).map_err(|e| e.to_string())?;
        let Some((_, query)) = answers.first().and_then(strix_index::query_vector) else {
            return Err("no face found in the track's box".into());
        };
        let found = self.index.search(&query, 1, self.threshold).map_err(|e| e.to_string())?;
        Ok(found.into_iter().next().map(|m| Identity {
            name: m.entry.external_id.clone().unwrap_or_else(|| m.entry.image.clone()),
            similarity: m.similarity,
            entry: m.entry.id,
        }))
    }
}

/// `bbox` of `frame` with `margin` of its size added on each side, clipped to the frame.
fn crop(frame: &RgbImage, bbox: BBox, margin: f32) -> Option<RgbImage> {
    let (mx, my) = (bbox.width() * margin, bbox.height() * margin);
    let x1 = (bbox.x1 - mx).max(0.0).floor() as u32;
    let y1 = (bbox.y1 - my).max(0.0).floor() as u32;
    let x2 = ((bbox.x2 + mx).min(frame.width() as f32).ceil() as u32).min(frame.width());
    let y2 = ((bbox.y2 + my).min(frame.height() as f32).ceil() as u32).min(frame.height());
    (x2 > x1 && y2 > y1).then(|| image::imageops::crop_imm(frame, x1, y1, x2 - x1, y2 - y1).to_image())
}

/// The settings `--index` asks for, the index loaded with its model.
pub fn settings(ctx: &AppContext, args: &StreamArgs) -> Result<Option<IdentifySettings>> {
    let Some(name) = &args.index else { return Ok(None) };
    if let Some(t) = args.index_threshold
        && !(-1.0..=1.0).contains(&t)
    {
        bail!("--index-threshold {t}: a cosine similarity, -1 to 1");
    }
    if args.index_every == 0 || args.index_tries == 0 {
        bail!("--index-every and --index-tries must be at least 1");
    }
    let session = crate::registry::session(ctx)?;
    let index = crate::index::open(&session, name)?;
    let (pipeline, _) = crate::index::index_model(ctx, &index, &args.runtime)?;
    let faces = pipeline.task() == Task::Faces;
    // A face index's default is the match Rekognition calls Similarity 80 for its model.
    let describer = pipeline.model().spec.describe.clone();
    let threshold = match (args.index_threshold, describer) {
        (Some(t), _) => t,
        (None, Some(d)) if faces => d.cosine_of_similarity(80.0),
        (None, _) => OBJECT_THRESHOLD,
    };
    if !ctx.quiet {
        eprintln!(
            "naming tracks from index {} (version {}, {} entries) at similarity {threshold:.2} or more",
            index.name,
            index.version,
            index.len()
        );
    }
    let margin = if faces { 0.5 } else { 0.0 };
    let identifier = IndexIdentifier { pipeline, index, threshold, margin };
    Ok(Some(IdentifySettings {
        identifier: Arc::new(identifier),
        every_frames: args.index_every,
        max_tries: args.index_tries,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_grow_by_the_margin_and_stay_inside_the_frame() {
        let frame = RgbImage::new(100, 50);
        let b = |x1, y1, x2, y2| BBox { x1, y1, x2, y2 };
        assert_eq!(crop(&frame, b(10.0, 10.0, 30.0, 20.0), 0.0).map(|c| c.dimensions()), Some((20, 10)));
        assert_eq!(crop(&frame, b(10.0, 10.0, 30.0, 20.0), 0.5).map(|c| c.dimensions()), Some((40, 20)));
        assert_eq!(crop(&frame, b(90.0, 40.0, 120.0, 70.0), 0.5).map(|c| c.dimensions()), Some((25, 25)));
        assert!(crop(&frame, b(120.0, 10.0, 130.0, 20.0), 0.0).is_none());
        assert!(crop(&frame, b(10.0, 10.0, 10.0, 20.0), 0.0).is_none());
    }
}
