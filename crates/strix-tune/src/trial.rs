//! A trial's record: its parameters, the values it reported by step, and how it ended. Plain
//! data shared by the study, the samplers and the pruners.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::space::Params;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialState {
    /// Asked for and not told yet.
    Running,
    Complete,
    Pruned,
    Failed,
}

/// One trial: its parameters, the values it reported by step, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    /// The trial's number, its index in the study.
    pub id: u64,
    pub params: Params,
    /// Intermediate values by step (finite).
    #[serde(default)]
    pub intermediate: BTreeMap<u64, f64>,
    /// The objective for complete trials, the last reported value for pruned ones.
    pub value: Option<f64>,
    pub state: TrialState,
}
