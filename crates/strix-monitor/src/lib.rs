//! Watching deployed models: baselines of what a model saw and said ([`baseline`]), and tests
//! of what it sees now against them ([`drift`]): Kolmogorov-Smirnov and chi-squared while
//! windows are small, normalised Wasserstein and Jensen-Shannon beyond (Evidently's choices),
//! MMD with a permutation test on embeddings (alibi-detect's), Bonferroni-corrected.

pub mod baseline;
pub mod drift;
pub mod live;
pub mod mmd;
pub mod properties;
pub mod quality;
pub mod stats;

use std::path::{Path, PathBuf};

pub use baseline::{Baseline, BaselineBuilder, Constraints, Observation, Statistics};
pub use drift::{Check, check_window};
pub use live::{Embedder, LiveMonitor, LiveSettings, MonitorStatus, OnCheck};
pub use properties::ImageProperties;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl MonitorError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MonitorError + '_ {
        move |source| MonitorError::Io { path: path.to_path_buf(), source }
    }
}

pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), MonitorError> {
    strix_core::fs::write_atomic(path, bytes).map_err(MonitorError::io(path))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, MonitorError> {
    let text = std::fs::read_to_string(path).map_err(MonitorError::io(path))?;
    serde_json::from_str(&text).map_err(|e| MonitorError::Format { path: path.to_path_buf(), reason: e.to_string() })
}

/// splitmix64: a small, seeded generator for reservoirs and permutations.
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
