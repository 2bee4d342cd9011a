//! The files of a run folder: their names, the saved config, the log, and atomic writes.

use std::path::{Path, PathBuf};

use crate::{TrainConfig, TrainError};

pub const CONFIG_FILE: &str = "config.toml";
pub const CHECKPOINT_FILE: &str = "last.ckpt";
pub const BEST_FILE: &str = "best.bpk";
pub const MODEL_FILE: &str = "model.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LOG_FILE: &str = "train.log";
/// Everything the finished run measured: history and the best model's full evaluations.
pub const FINAL_FILE: &str = "final.json";
/// The typed [`crate::RunSummary`] the registry, `models show`, the report and the export read.
pub const SUMMARY_FILE: &str = "summary.json";
pub const REPORT_FILE: &str = "report.html";
/// The training data's fingerprint ([`strix_data::manifest`]): digest and counts, and the
/// manifest lines (`<sha256>  <part>/<path>`, sorted) beside it.
pub const DATASET_FILE: &str = "dataset.json";
pub const DATASET_MANIFEST_FILE: &str = "dataset.sha256";

/// Write `bytes` to `path` atomically: a kill at any moment leaves the last good copy.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    strix_core::fs::write_atomic(path, bytes).map_err(TrainError::io(path))
}

/// The resolved config a run folder was started with.
pub fn saved_config(run_dir: &Path) -> Result<TrainConfig, TrainError> {
    let cfg_path = run_dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(TrainError::io(&cfg_path))?;
    TrainConfig::from_toml(&text, &cfg_path)
}

/// `dir/train.log`, opened for appending (a resumed run continues it).
pub fn open_log(dir: &Path) -> Result<std::fs::File, TrainError> {
    std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
    let path = dir.join(LOG_FILE);
    std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(TrainError::io(&path))
}

pub(crate) fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `runs/<name>-<unix seconds>` unless the config names the folder.
pub(crate) fn run_dir(cfg: &TrainConfig, name: &str) -> PathBuf {
    cfg.run_dir.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{name}-{}", unix_secs())))
}
