//! The model a running stream answers with, swappable while it runs: a stream named by a
//! registry alias follows it ([`follow`]) and new frames go to the new version, while frames
//! already taken finish on the old one.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use strix_catalog::{Catalog, Engine, FollowEvent, Follower};
use strix_pipeline::Pipeline;

/// The pipeline answering now.
pub struct LiveModel {
    current: RwLock<Arc<Pipeline>>,
}

impl std::fmt::Debug for LiveModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveModel").field("model", &self.current().model().spec.name).finish()
    }
}

impl LiveModel {
    pub fn new(pipeline: Arc<Pipeline>) -> LiveModel {
        LiveModel { current: RwLock::new(pipeline) }
    }

    pub fn current(&self) -> Arc<Pipeline> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Answer new frames with `pipeline`.
    pub fn swap(&self, pipeline: Pipeline) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pipeline);
    }
}

/// `NAME:VERSION` of a registry model's pipeline.
pub(crate) fn version_of(pipeline: &Pipeline) -> Option<String> {
    pipeline.model().version.as_ref().map(ToString::to_string)
}

/// Follow `reference` (a registry alias or bare name) for `live`: every `interval` the
/// registry is asked, and a new version of the same task that loads and answers a test image
/// replaces the model; one that does not is refused and logged, and the old one stays. `None`
/// when the model did not come from the registry or its reference cannot move.
pub fn follow(
    live: &Arc<LiveModel>,
    catalog: &Catalog,
    engine: &Engine,
    reference: &str,
    interval: Duration,
) -> std::io::Result<Option<Follower>> {
    let current = live.current().model().version.clone();
    let (target, engine) = (live.clone(), engine.clone());
    let install: strix_catalog::Install = Box::new(move |resolved| {
        target.swap(engine.load_replacement(resolved, target.current().task())?);
        Ok(())
    });
    let report = Box::new(|event: &FollowEvent| match event {
        FollowEvent::Unchanged { .. } => {}
        FollowEvent::Swapped { from, to } => tracing::warn!("now answering with {to} (was {from})"),
        FollowEvent::Refused { version, reason } => {
            tracing::error!("refused {version}, still answering with the previous version: {reason}")
        }
        FollowEvent::Failed { reason } => tracing::warn!("cannot check the registry: {reason}"),
    });
    Follower::spawn(catalog.clone(), reference, current.as_ref(), interval, install, report)
}
