//! Models as suggestion makers, and the background pass that gives every image one.

use std::sync::Arc;

use strix_pipeline::{BatchOptions, Pipeline};
use strix_vision::RgbImage;

use crate::labels::Suggestion;
use crate::{LabelError, Project};

/// Something that looks at an image and suggests labels: a loaded model.
pub trait Suggester: Send + Sync {
    /// How suggestions are marked (the model's reference).
    fn name(&self) -> &str;
    /// Its suggestion for `image`; `Err` names what went wrong.
    fn suggest(&self, image: &RgbImage) -> Result<Suggestion, String>;
}

/// A [`Pipeline`] with the name it was asked for by.
pub struct PipelineSuggester {
    pub name: String,
    pub pipeline: Pipeline,
}

impl std::fmt::Debug for PipelineSuggester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineSuggester").field("name", &self.name).finish()
    }
}

impl Suggester for PipelineSuggester {
    fn name(&self) -> &str {
        &self.name
    }

    fn suggest(&self, image: &RgbImage) -> Result<Suggestion, String> {
        let opts = BatchOptions { batch: 1, top_k: 5, ..BatchOptions::default() };
        let prediction = self
            .pipeline
            .predict_images(std::slice::from_ref(image), &opts)
            .map_err(|e| e.to_string())?
            .pop()
            .ok_or("the model gave no answer")?;
        Suggestion::from_prediction(&self.name, &prediction).ok_or_else(|| {
            format!("a {} model's answers cannot be labels (classify or detect models can)", self.pipeline.task())
        })
    }
}

/// `suggester`'s suggestion for image `id`, made now and kept.
pub async fn suggest_one(project: &Project, suggester: &Arc<dyn Suggester>, id: i64) -> Result<Suggestion, LabelError> {
    let image = project.store.image(id).await?;
    // Read as the page serves it: a file swapped for a link (to /dev/zero, say) is refused.
    let bytes = project.read_image(&image).await.map_err(|e| LabelError::invalid(format!("{}: {e}", image.file)))?;
    let (limits, s, file) = (project.limits, suggester.clone(), image.file);
    let suggestion = tokio::task::spawn_blocking(move || {
        let img = strix_vision::decode_bytes(&bytes, &limits).map_err(|e| format!("{file}: {e}"))?;
        s.suggest(&img)
    })
    .await
    .map_err(|e| LabelError::invalid(format!("suggestion: {e}")))?
    .map_err(LabelError::Invalid)?;
    project.store.put_suggestion(id, &suggestion).await?;
    Ok(suggestion)
}

/// Give every image without one a suggestion from `suggester`, unlabelled images first, until
/// none is left; `done` hears the count after each. Images it fails on are logged and skipped.
pub async fn suggest_all(
    project: &Project,
    suggester: Arc<dyn Suggester>,
    done: impl Fn(usize),
) -> Result<usize, LabelError> {
    let mut made = 0;
    let mut failed = std::collections::HashSet::new();
    loop {
        let todo: Vec<i64> = project
            .store
            .unsuggested(suggester.name(), 64 + failed.len() as i64)
            .await?
            .into_iter()
            .filter(|id| !failed.contains(id))
            .collect();
        if todo.is_empty() {
            return Ok(made);
        }
        for id in todo {
            match suggest_one(project, &suggester, id).await {
                Ok(_) => made += 1,
                Err(e) => {
                    tracing::warn!(image = id, error = %e, "no suggestion");
                    failed.insert(id);
                }
            }
            done(made);
        }
    }
}
