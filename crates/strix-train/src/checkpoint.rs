//! Files of a run folder written so that a kill at any moment leaves the last good copy: each
//! goes to a temporary name in the same folder, is synced, then renamed over the old one.

use std::path::Path;

use serde::Serialize;

use crate::TrainError;

pub use crate::files::write_atomic;

const MAGIC: &[u8; 8] = b"STRIXCK1";

/// One file: state (JSON), model record, optimizer record. One file, so one rename makes the
/// three consistent.
pub fn save<S: Serialize>(path: &Path, state: &S, model: &[u8], optim: &[u8]) -> Result<(), TrainError> {
    let json = serde_json::to_vec(state).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let mut out = Vec::with_capacity(8 + 24 + json.len() + model.len() + optim.len());
    out.extend_from_slice(MAGIC);
    for part in [&json[..], model, optim] {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    write_atomic(path, &out)
}

pub fn load<S: serde::de::DeserializeOwned>(path: &Path) -> Result<(S, Vec<u8>, Vec<u8>), TrainError> {
    let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
    let bad = |reason: &str| TrainError::Checkpoint { path: path.into(), reason: reason.into() };
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(bad("not a Strix checkpoint"));
    }
    let mut at = 8;
    let mut parts = Vec::new();
    for _ in 0..3 {
        let len_bytes: [u8; 8] =
            bytes.get(at..at + 8).and_then(|s| s.try_into().ok()).ok_or_else(|| bad("truncated"))?;
        let len = u64::from_le_bytes(len_bytes) as usize;
        at += 8;
        parts.push(bytes.get(at..at + len).ok_or_else(|| bad("truncated"))?.to_vec());
        at += len;
    }
    let optim = parts.pop().unwrap_or_default();
    let model = parts.pop().unwrap_or_default();
    let state = serde_json::from_slice(&parts[0]).map_err(|e| bad(&format!("bad state: {e}")))?;
    Ok((state, model, optim))
}

/// A module's record as bytes (what `last.ckpt` and `best.bpk` hold).
pub fn module_bytes<M: burn::module::Module>(model: &M) -> Result<Vec<u8>, TrainError> {
    Ok(model.clone().into_record().into_bytes().map_err(|e| TrainError::Invalid(e.to_string()))?.to_vec())
}

/// `bytes` loaded into `empty` (a module of the right shape); `path` names the source in errors.
pub fn load_module<M: burn::module::Module>(empty: M, bytes: Vec<u8>, path: &Path) -> Result<M, TrainError> {
    let bad = |e: String| TrainError::Checkpoint { path: path.into(), reason: e };
    let record = burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
        .map_err(|e| bad(e.to_string()))?;
    empty.try_load_record(record).map_err(|e| bad(e.to_string()))
}

/// State, model and optimizer of a run, atomically, in `dir/last.ckpt`.
pub fn save_run<S: Serialize, M: burn::module::Module>(
    dir: &Path,
    state: &S,
    model: &M,
    optim: &burn::optim::ModuleOptimizer,
) -> Result<(), TrainError> {
    let optim_bytes = optim.into_bytes().map_err(|e| TrainError::Invalid(e.to_string()))?;
    save(&dir.join(crate::files::CHECKPOINT_FILE), state, &module_bytes(model)?, &optim_bytes)
}

/// What `dir/last.ckpt` holds: the state, the model's bytes (for [`load_module`]) and
/// `optim` restored; the checkpoint's path.
pub fn load_run<S: serde::de::DeserializeOwned>(
    dir: &Path,
    optim: burn::optim::ModuleOptimizer,
) -> Result<(S, Vec<u8>, burn::optim::ModuleOptimizer, std::path::PathBuf), TrainError> {
    let ckpt = dir.join(crate::files::CHECKPOINT_FILE);
    if !ckpt.exists() {
        return Err(TrainError::Checkpoint { path: ckpt, reason: "no checkpoint yet: start the run again".into() });
    }
    let (state, model, optim_bytes) = load::<S>(&ckpt)?;
    let optim = optim
        .from_bytes(burn::tensor::Bytes::from_bytes_vec(optim_bytes))
        .map_err(|e| TrainError::Checkpoint { path: ckpt.clone(), reason: e.to_string() })?;
    Ok((state, model, optim, ckpt))
}

/// `best.bpk`'s bytes and its path.
pub fn read_best_bytes(run_dir: &Path) -> Result<(Vec<u8>, std::path::PathBuf), TrainError> {
    let best = run_dir.join(crate::files::BEST_FILE);
    let bytes = std::fs::read(&best).map_err(TrainError::io(&best))?;
    Ok((bytes, best))
}

/// The best model of a run folder: its description (`model.json`) and `best.bpk`'s bytes with
/// the path they came from (for [`load_module`]).
pub fn read_best<S: serde::de::DeserializeOwned>(
    run_dir: &Path,
) -> Result<(S, Vec<u8>, std::path::PathBuf), TrainError> {
    let meta = run_dir.join(crate::files::MODEL_FILE);
    let text = std::fs::read_to_string(&meta).map_err(TrainError::io(&meta))?;
    let saved: S = serde_json::from_str(&text)
        .map_err(|e| TrainError::Checkpoint { path: meta.clone(), reason: e.to_string() })?;
    let (bytes, best) = read_best_bytes(run_dir)?;
    Ok((saved, bytes, best))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation_detected() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("last.ckpt");
        save(&p, &(2, 5), b"model", b"opt").unwrap();
        let (s, m, o) = load::<(usize, usize)>(&p).unwrap();
        assert_eq!((s, &m[..], &o[..]), ((2, 5), &b"model"[..], &b"opt"[..]));
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 2]).unwrap();
        assert!(load::<(usize, usize)>(&p).unwrap_err().to_string().contains("truncated"));
        assert!(!d.path().join(".last.ckpt.tmp").exists());
    }
}
