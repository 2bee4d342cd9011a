//! Vectors from a model: which model an index's vectors are of, and the vectors of an image.

use strix_core::{BBox, Task};
use strix_pipeline::{BatchOptions, Pipeline, Prediction};
use strix_vision::RgbImage;

use crate::{EmbeddingModel, IndexError};

/// The model a pipeline's vectors come from: its embedding network's weights digest and its
/// vectors' size. `reference` is how the user named it. A faces model's vectors are its face
/// description network's.
pub fn embedding_model(pipeline: &Pipeline, reference: &str) -> Result<EmbeddingModel, IndexError> {
    let model = pipeline.model();
    let invalid = |reason: String| IndexError::Invalid { name: reference.to_string(), reason };
    let (path, dimensions) = match (pipeline.task(), &model.spec.describe) {
        (Task::Faces, Some(describe)) => {
            let path =
                model.networks.get(&describe.network).ok_or_else(|| invalid("no face description network".into()))?;
            (path.clone(), describe.dimensions)
        }
        (Task::Embed, _) => {
            // One inference on a plain picture gives the vector's size, whatever the graph says.
            let probe = RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
            let answers =
                pipeline.predict_images(&[probe], &BatchOptions::default()).map_err(|e| invalid(e.to_string()))?;
            let dims = answers.first().and_then(|p| strix_pipeline::vectors(&p.answer).first().map(|v| v.1.len()));
            (model.weights.clone(), dims.ok_or_else(|| invalid("the model gave no vector".into()))?)
        }
        (task, _) => {
            return Err(invalid(format!(
                "a {task} model gives no vectors: index with an embed model (efficientnet_lite0_embed, a classifier's \
                 embedding) or a faces model that describes faces (faceres)"
            )));
        }
    };
    let (sha256, _) =
        strix_core::digest::sha256_file(&path).map_err(|source| IndexError::Io { path: path.clone(), source })?;
    Ok(EmbeddingModel { reference: reference.to_string(), sha256, dimensions, task: pipeline.task().to_string() })
}

/// The vectors of one answer, each with the box it is of (faces) and the image's size.
pub fn vectors_of(prediction: &Prediction) -> Vec<(Option<BBox>, Vec<f32>)> {
    strix_pipeline::vectors(&prediction.answer).into_iter().map(|(b, v)| (b, v.to_vec())).collect()
}

/// The one vector a query image stands for: its embedding, or its largest face's descriptor
/// (as Rekognition's SearchFacesByImage takes the largest face). `None` when it has none.
pub fn query_vector(prediction: &Prediction) -> Option<(Option<BBox>, Vec<f32>)> {
    vectors_of(prediction).into_iter().max_by(|a, b| area(a.0).total_cmp(&area(b.0)))
}

fn area(b: Option<BBox>) -> f32 {
    b.map_or(0.0, |b| b.width() * b.height())
}
