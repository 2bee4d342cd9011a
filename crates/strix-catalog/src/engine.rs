//! Loading a resolved model on a backend, checked by a test inference.

use strix_pipeline::{BatchOptions, Pipeline};
use strix_runtime::{Backend, RuntimeOptions};
use strix_vision::RgbImage;
use strix_zoo::ResolvedModel;

use crate::CatalogError;

/// A backend and its options: what every model of a run is loaded with.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    pub backend: Backend,
    pub options: RuntimeOptions,
}

impl Engine {
    pub fn new(backend: Backend, options: RuntimeOptions) -> Engine {
        Engine { backend, options }
    }

    /// The runtime these settings open.
    pub fn runtime(&self) -> Result<Box<dyn strix_runtime::Runtime>, CatalogError> {
        Ok(strix_runtime::open(self.backend, &self.options)?)
    }

    /// Load `model` without a test inference (a caller that answers real images at once).
    pub fn load(&self, model: ResolvedModel) -> Result<Pipeline, CatalogError> {
        let runtime = self.runtime()?;
        let name = model.version.as_ref().map_or_else(|| model.spec.name.clone(), ToString::to_string);
        Pipeline::load(model, runtime.as_ref()).map_err(|source| CatalogError::Load {
            name,
            backend: self.backend,
            source,
        })
    }

    /// Load `model` and answer one grey 320x240 image with it: a model whose files load but
    /// whose graph does not fit its spec (a wrong input size, outputs its decoder cannot read)
    /// fails here, not on a user's first request.
    pub fn load_checked(&self, model: ResolvedModel) -> Result<Pipeline, CatalogError> {
        let pipeline = self.load(model)?;
        probe(&pipeline)?;
        Ok(pipeline)
    }

    /// A new version to replace one doing `task` (what a [`crate::Follower`] installs): it must
    /// do the same task, load and answer a test image; else why not, on one line.
    pub fn load_replacement(&self, model: ResolvedModel, task: strix_core::Task) -> Result<Pipeline, String> {
        if model.spec.task != task {
            return Err(format!("it is a {} model; the one it would replace does {task}", model.spec.task));
        }
        self.load_checked(model).map_err(|e| crate::error_chain(&e))
    }
}

/// One test inference on a plain grey image.
pub fn probe(pipeline: &Pipeline) -> Result<(), CatalogError> {
    let image = RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128]));
    let model = pipeline.model();
    let name = model.version.as_ref().map_or_else(|| model.spec.name.clone(), ToString::to_string);
    pipeline
        .predict_images(&[image], &BatchOptions::default())
        .map(|_| ())
        .map_err(|source| CatalogError::Probe { name, source })
}
