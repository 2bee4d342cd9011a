//! `PIPELINE.toml`: one table per step, run in a fixed order (snapshot, train or tune,
//! evaluate, condition, register with its alias); a step whose table is absent is left out.
//! Relative paths are the file's folder's, so a pipeline runs the same from anywhere.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::WorkflowError;
use crate::condition::Condition;

/// Settings in a `[train]` or `[tune]` table that name files.
const PATH_KEYS: [&str; 6] = ["config", "data", "val_data", "test_data", "pretrained", "space"];
/// Settings the pipeline decides itself.
const TRAIN_OWNED: [&str; 2] = ["run_dir", "resume"];
const TUNE_OWNED: [&str; 6] = ["out", "resume", "register", "queue", "queue_config", "wait"];

/// Label a project's images, then train on them: the snapshot is its labels as of the run.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotStep {
    /// A labelling project (`strix label serve` made it).
    pub project: PathBuf,
}

/// The fixed test set every candidate, and the version it would replace, is scored on.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvaluateStep {
    /// Labelled images never trained on: class folders, a CSV, IDX files (classifiers); a COCO
    /// or YOLO folder (detectors; its validation part when it has one).
    pub data: PathBuf,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConditionStep {
    /// For example `test.accuracy >= 0.8 and >= production`.
    pub when: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegisterStep {
    /// The registered model the new version joins.
    pub model: String,
    /// The alias moved to the new version (deployments that follow it pick it up).
    #[serde(default)]
    pub alias: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    state: Option<PathBuf>,
    #[serde(default)]
    snapshot: Option<SnapshotStep>,
    #[serde(default)]
    train: Option<toml::Table>,
    #[serde(default)]
    tune: Option<toml::Table>,
    #[serde(default)]
    evaluate: Option<EvaluateStep>,
    #[serde(default)]
    condition: Option<ConditionStep>,
    #[serde(default)]
    register: Option<RegisterStep>,
}

/// How the model is made: one training run, or a tuning job's best trial.
#[derive(Clone, Debug, PartialEq)]
pub enum Trainer {
    /// `strix train`'s config keys (`config = FILE` for a base file under them).
    Train(toml::Table),
    /// `strix tune`'s flags as keys (`trials = 8`, `space = "space.toml"`, ...).
    Tune(toml::Table),
}

/// A read and checked pipeline, its paths made absolute.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    pub file: PathBuf,
    /// Where the steps' records and outputs live.
    pub state: PathBuf,
    pub snapshot: Option<SnapshotStep>,
    pub trainer: Trainer,
    pub evaluate: Option<EvaluateStep>,
    pub condition: Option<Condition>,
    pub register: Option<RegisterStep>,
}

impl PipelineSpec {
    pub fn read(path: &Path) -> Result<PipelineSpec, WorkflowError> {
        let text = std::fs::read_to_string(path).map_err(WorkflowError::io(path))?;
        PipelineSpec::parse(&text, path)
    }

    /// `text` as the pipeline file `path` (whose folder anchors relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<PipelineSpec, WorkflowError> {
        let format = |reason: String| WorkflowError::Format { path: path.to_path_buf(), reason };
        let file: File = toml::from_str(text).map_err(|e| format(e.to_string()))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let base = std::path::absolute(base).map_err(WorkflowError::io(base))?;
        let trainer = match (file.train, file.tune) {
            (Some(t), None) => Trainer::Train(settings(t, &base, &TRAIN_OWNED, "train").map_err(format)?),
            (None, Some(t)) => Trainer::Tune(settings(t, &base, &TUNE_OWNED, "tune").map_err(format)?),
            (Some(_), Some(_)) => {
                return Err(format("[train] and [tune] both given: a pipeline makes its model one way".into()));
            }
            (None, None) => return Err(format("no [train] or [tune] table: nothing makes the model".into())),
        };
        let has_data = match &trainer {
            Trainer::Train(t) | Trainer::Tune(t) => t.contains_key("data") || t.contains_key("config"),
        };
        if file.snapshot.is_some() && matches!(&trainer, Trainer::Train(t) | Trainer::Tune(t) if t.contains_key("data"))
        {
            return Err(format("[snapshot] and a `data` setting both given: the snapshot is the training data".into()));
        }
        if file.snapshot.is_none() && !has_data {
            return Err(format("no training data: give a [snapshot] project or `data` in [train] / [tune]".into()));
        }
        let condition = file.condition.map(|c| Condition::parse(&c.when)).transpose()?;
        if let Some(c) = &condition {
            if c.uses_test() && file.evaluate.is_none() {
                return Err(format(format!(
                    "the condition {:?} reads test.* figures: add an [evaluate] table with the test set",
                    c.text
                )));
            }
            if !c.aliases().is_empty() && file.register.is_none() {
                return Err(format(format!(
                    "the condition {:?} compares with an alias: add a [register] table naming the model",
                    c.text
                )));
            }
        }
        if let Some(r) = &file.register
            && (r.model.trim().is_empty() || r.alias.as_deref().is_some_and(|a| a.trim().is_empty()))
        {
            return Err(format("[register]: an empty model or alias name".into()));
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "pipeline".into());
        let state = match file.state {
            Some(s) => base.join(s),
            None => base.join(format!("{stem}.pipeline")),
        };
        Ok(PipelineSpec {
            file: base.join(path.file_name().unwrap_or(path.as_os_str())),
            state,
            snapshot: file.snapshot.map(|s| SnapshotStep { project: base.join(s.project) }),
            trainer,
            evaluate: file.evaluate.map(|e| EvaluateStep { data: base.join(e.data) }),
            condition,
            register: file.register,
        })
    }
}

/// A `[train]` / `[tune]` table with its file settings made absolute; settings the pipeline
/// owns are refused.
fn settings(mut table: toml::Table, base: &Path, owned: &[&str], step: &str) -> Result<toml::Table, String> {
    if let Some(key) = owned.iter().find(|k| table.contains_key(**k)) {
        return Err(format!("[{step}] {key}: the pipeline sets this itself (its runs live in its state folder)"));
    }
    for key in PATH_KEYS {
        match table.get_mut(key) {
            None => {}
            Some(toml::Value::String(s)) => *s = base.join(&*s).display().to_string(),
            Some(other) => return Err(format!("[{step}] {key}: a path, not {}", other.type_str())),
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PipelineSpec, WorkflowError> {
        PipelineSpec::parse(text, Path::new("/srv/trash/retrain.toml"))
    }

    #[test]
    fn paths_are_the_files_folders_and_the_state_sits_beside_it() {
        let p = parse(
            "[snapshot]\nproject = \"labels\"\n[train]\nmodel = \"small-cnn\"\nepochs = 2\npretrained = \"w/e.onnx\"\n\
             [evaluate]\ndata = \"/data/test\"\n[condition]\nwhen = \"test.accuracy >= 0.8 and >= production\"\n\
             [register]\nmodel = \"trash\"\nalias = \"production\"\n",
        )
        .unwrap();
        assert_eq!(p.state, Path::new("/srv/trash/retrain.pipeline"));
        assert_eq!(p.snapshot.unwrap().project, Path::new("/srv/trash/labels"));
        assert_eq!(p.evaluate.unwrap().data, Path::new("/data/test"));
        let Trainer::Train(t) = p.trainer else { panic!() };
        assert_eq!(t["pretrained"].as_str(), Some("/srv/trash/w/e.onnx"));
        assert_eq!(t["epochs"].as_integer(), Some(2));
        assert_eq!(p.condition.unwrap().aliases(), ["production".to_string()].into());
    }

    #[test]
    fn contradictions_and_unknown_keys_are_refused_with_the_reason() {
        let cases = [
            ("[train]\ndata = \"d\"\n[tune]\ndata = \"d\"\n", "both given"),
            ("[evaluate]\ndata = \"t\"\n", "nothing makes the model"),
            ("[train]\nepochs = 1\n", "no training data"),
            ("[snapshot]\nproject = \"p\"\n[train]\ndata = \"d\"\n", "the snapshot is the training data"),
            ("[train]\ndata = \"d\"\nrun_dir = \"r\"\n", "run_dir: the pipeline sets this"),
            ("[tune]\ndata = \"d\"\nregister = \"x\"\n", "register: the pipeline sets this"),
            ("[train]\ndata = 3\n", "data: a path"),
            ("[train]\ndata = \"d\"\n[condition]\nwhen = \"test.accuracy >= 0.5\"\n", "add an [evaluate]"),
            ("[train]\ndata = \"d\"\n[condition]\nwhen = \"val.accuracy >= production\"\n", "add a [register]"),
            ("[train]\ndata = \"d\"\n[registr]\nmodel = \"x\"\n", "unknown field"),
            ("[train]\ndata = \"d\"\n[register]\nmodel = \"x\"\nalias = \"\"\n", "empty model or alias"),
            ("[train]\ndata = \"d\"\n[condition]\nwhen = \"val.accuracy >>= 1\"\n", "condition"),
        ];
        for (text, needle) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
