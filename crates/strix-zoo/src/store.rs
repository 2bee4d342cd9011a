//! Models the user imported: one folder per model under `HOME/models` (`HOME` is Strix's data
//! folder, from the settings) holding the spec (`NAME.toml`) and every file it names, found by
//! name like zoo entries.

use std::fs;
use std::path::{Path, PathBuf};

use crate::spec::{Artifact, ModelSpec, check_name};
use crate::{ResolvedModel, ZooError, builtin};

fn models_dir(home: &Path) -> PathBuf {
    home.join("models")
}

/// The spec file of an imported model called `name`, if there is one.
pub fn find(home: &Path, name: &str) -> Option<PathBuf> {
    check_name(name).ok()?;
    let path = models_dir(home).join(name).join(format!("{name}.toml"));
    path.is_file().then_some(path)
}

/// Names of the imported models.
pub fn names(home: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(models_dir(home))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| find(home, n).is_some())
        .collect();
    names.sort();
    names
}

/// Copy a resolved model's files into the store under `spec.name`, with a spec naming them
/// by file name and digest. The folder appears whole or not at all (built aside, then renamed).
pub fn install(home: &Path, model: &ResolvedModel, force: bool) -> Result<PathBuf, ZooError> {
    let name = &model.spec.name;
    let invalid = |message: String| ZooError::SpecInvalid { origin: model.origin.clone(), message };
    if builtin::names().contains(&name.as_str()) {
        return Err(invalid(format!("`{name}` is a zoo model; import under another name (--name)")));
    }
    let dir = models_dir(home);
    let target = dir.join(name);
    if target.exists() && !force {
        return Err(invalid(format!(
            "a model called `{name}` is already imported ({}); use --force to replace it",
            target.display()
        )));
    }
    fs::create_dir_all(&dir).map_err(|e| ZooError::io(&dir, e))?;
    let staging = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| ZooError::io(&staging, e))?;
    let result = (|| {
        let (spec, files) = package(model)?;
        for (file, path) in &files {
            fs::copy(path, staging.join(file)).map_err(|e| ZooError::io(path, e))?;
        }
        let spec_path = staging.join(format!("{name}.toml"));
        let text = format!("# Imported by strix from {}\n{}", model.origin, spec.to_toml());
        ModelSpec::from_toml(&text, &spec_path.display().to_string())?;
        fs::write(&spec_path, text).map_err(|e| ZooError::io(&spec_path, e))?;
        if target.exists() {
            fs::remove_dir_all(&target).map_err(|e| ZooError::io(&target, e))?;
        }
        fs::rename(&staging, &target).map_err(|e| ZooError::io(&target, e))?;
        Ok(target.join(format!("{name}.toml")))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// A model as a self-contained folder would hold it: the spec naming each file by its file
/// name (`weights` keeps its name, other networks become `ROLE-FILENAME`) with sha256 and size,
/// labels written into the spec; and `(file name, where the file is now)` for each file.
/// `models import` copies these into the store; the registry uploads them.
pub fn package(model: &ResolvedModel) -> Result<(ModelSpec, Vec<(String, PathBuf)>), ZooError> {
    let mut spec = model.spec.clone();
    let mut files = Vec::new();
    spec.weights = describe(&model.weights, "weights", &mut files)?;
    for (net, path) in &model.networks {
        spec.networks.insert(net.clone(), describe(path, net, &mut files)?);
    }
    // Labels travel inside the spec: one file less to keep in step.
    if let Some(labels) = &mut spec.labels {
        labels.names = model.labels.clone();
        labels.file = None;
        labels.sha256 = None;
        labels.url = None;
    }
    Ok((spec, files))
}

fn describe(path: &Path, role: &str, files: &mut Vec<(String, PathBuf)>) -> Result<Artifact, ZooError> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.onnx".into());
    let file = if role == "weights" { file_name } else { format!("{role}-{file_name}") };
    let (sha256, size) = strix_core::digest::sha256_file(path).map_err(|e| ZooError::io(path, e))?;
    let artifact = Artifact { file: file.clone(), sha256: Some(sha256), url: None, size: Some(size) };
    files.push((file, path.to_path_buf()));
    Ok(artifact)
}
