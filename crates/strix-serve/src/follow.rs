//! Models served by registry alias follow it: a [`Follower`] per model polls the registry, and
//! a new version is loaded, answers a test image, and is swapped in whole, or is refused
//! (logged and counted) while the old one keeps serving. `POST /v1/models/{name}/reload` checks
//! at once.

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use strix_catalog::{Catalog, Engine, FollowEvent, Follower};

use crate::ApiError;
use crate::state::ServeState;

impl ServeState {
    /// Start following every model whose reference can move (`NAME@alias`, or a bare registry
    /// name) and that came from the registry; returns how many follow. Checks every
    /// `interval`; new versions load with `engine`.
    pub fn follow(self: &Arc<Self>, catalog: &Catalog, engine: &Engine, interval: Duration) -> std::io::Result<usize> {
        let mut following = 0;
        for (index, model) in self.models.iter().enumerate() {
            let current = model.pipeline().model().version.clone();
            let install = installer(Arc::downgrade(self), index, engine.clone());
            let (state, name) = (Arc::downgrade(self), model.name.clone());
            let report = Box::new(move |event: &FollowEvent| report(&state, &name, event));
            let spawned =
                Follower::spawn(catalog.clone(), &model.reference, current.as_ref(), interval, install, report)?;
            if let Some(follower) = spawned {
                let _ = model.follower.set(follower);
                following += 1;
            }
        }
        Ok(following)
    }
}

/// Load a new version with `engine`, check it, and swap it in for model `index`.
fn installer(state: Weak<ServeState>, index: usize, engine: Engine) -> strix_catalog::Install {
    Box::new(move |resolved| {
        let state = state.upgrade().ok_or("the server has stopped")?;
        let model = &state.models[index];
        model.swap(engine.load_replacement(resolved, model.pipeline().task())?);
        Ok(())
    })
}

/// Log and count what a check found.
fn report(state: &Weak<ServeState>, name: &str, event: &FollowEvent) {
    let Some(state) = state.upgrade() else { return };
    match event {
        FollowEvent::Unchanged { .. } => {}
        FollowEvent::Swapped { from, to } => {
            tracing::warn!("{name}: now serving {to} (was {from})");
            state.metrics.reload(name, "swapped");
        }
        FollowEvent::Refused { version, reason } => {
            tracing::error!("{name}: refused {version}, still serving the previous version: {reason}");
            state.metrics.reload(name, "refused");
        }
        FollowEvent::Failed { reason } => {
            tracing::warn!("{name}: cannot check the registry: {reason}");
            state.metrics.reload(name, "failed");
        }
    }
}

/// `POST /v1/models/{name}/reload`: check the registry now and install a new version if the
/// alias moved. 200 with what happened; 409 when the new version was refused or the model does
/// not follow an alias; 503 when the registry could not be asked.
pub(crate) async fn reload(State(state): State<Arc<ServeState>>, Path(name): Path<String>) -> Response {
    let started = std::time::Instant::now();
    let result = async {
        let model = state.model(&name)?;
        if model.follower.get().is_none() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "NotFollowing",
                format!("{name} serves {}, which is not a registry alias or name: nothing to reload", model.reference),
            ));
        }
        let (s, n) = (state.clone(), name.clone());
        let event = tokio::task::spawn_blocking(move || {
            let model = s.models.iter().find(|m| m.name == n);
            model.and_then(|m| m.follower.get()).map(Follower::check_now)
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(FollowEvent::Failed { reason: "the check did not finish".into() });
        let version = model.current().version_label(&model.name);
        let (status, body) = match &event {
            FollowEvent::Unchanged { .. } => (StatusCode::OK, json!({"outcome": "unchanged"})),
            FollowEvent::Swapped { from, to } => {
                (StatusCode::OK, json!({"outcome": "swapped", "from": from, "to": to}))
            }
            FollowEvent::Refused { version, reason } => {
                (StatusCode::CONFLICT, json!({"outcome": "refused", "refused": version, "reason": reason}))
            }
            FollowEvent::Failed { reason } => {
                (StatusCode::SERVICE_UNAVAILABLE, json!({"outcome": "failed", "reason": reason}))
            }
        };
        let mut body = body;
        body["model"] = json!(name);
        body["version"] = json!(version);
        Ok((status, axum::Json(body)).into_response())
    }
    .await;
    state.finish(&name, started, result)
}
