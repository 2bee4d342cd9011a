//! The examples in the docs are real specs: each TOML block of docs/model-spec.md must parse
//! and validate, and together they cover every decoder.

use std::collections::BTreeSet;

use strix_zoo::ModelSpec;

#[test]
fn every_spec_example_in_the_docs_is_valid_and_every_decoder_has_one() {
    let doc = include_str!("../../docs/model-spec.md");
    let mut kinds = BTreeSet::new();
    for (n, block) in doc.split("```toml\n").skip(1).enumerate() {
        let text = block.split("```").next().unwrap();
        let spec = ModelSpec::from_toml(text, &format!("docs example {}", n + 1)).unwrap_or_else(|e| panic!("{e}"));
        let table: toml::Value = toml::Value::try_from(&spec.decoder).unwrap();
        kinds.insert(table["kind"].as_str().unwrap().to_string());
    }
    let all: BTreeSet<String> = [
        "classify",
        "embed",
        "nanodet",
        "yolo",
        "ssd",
        "centernet",
        "movenet",
        "movenet-multipose",
        "mask",
        "blazeface",
    ]
    .into_iter()
    .chain(["mtcnn", "ppocr"])
    .map(String::from)
    .collect();
    assert_eq!(kinds, all, "docs/model-spec.md needs one example per decoder");
}

/// The first TOML block of the README after `marker`.
fn readme_toml_after(marker: &str) -> &'static str {
    let readme = include_str!("../../README.md");
    let section = readme.split(marker).nth(1).unwrap_or_else(|| panic!("README has no {marker:?}"));
    section.split("```toml\n").nth(1).unwrap().split("```").next().unwrap()
}

#[test]
fn the_stream_config_example_in_the_readme_is_valid() {
    let block = readme_toml_after("### Video");
    let cfg = strix_stream::StreamConfig::from_toml(block, std::path::Path::new("README.md")).unwrap();
    assert_eq!((cfg.lines.len(), cfg.zones.len(), cfg.classes.len()), (1, 1, 1));
}

/// Libraries take settings; the binary's `settings.rs` is the one place that reads the
/// environment (unit tests aside). strix-registry knows nothing of the zoo.
#[test]
fn only_the_settings_module_reads_the_environment_and_the_registry_needs_no_zoo() {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    for entry in crate::support::files_under(&crates) {
        let rel = entry.strip_prefix(&crates).unwrap().display().to_string();
        if !rel.ends_with(".rs") || !rel.contains("/src/") || rel.starts_with("strix/src/settings.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&entry).unwrap();
        // A test module of its own (`#![cfg(test)]`) may read the environment.
        if text.lines().any(|l| l.trim() == "#![cfg(test)]") {
            continue;
        }
        // Unit tests sit at the end of a file, after `#[cfg(test)]`.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for needle in ["env::var", "env::vars", "env::var_os", "from_env()"] {
            if code.contains(needle) {
                offenders.push(format!("{rel}: {needle}"));
            }
        }
    }
    assert!(offenders.is_empty(), "environment read outside crates/strix/src/settings.rs: {offenders:?}");
    let manifest = std::fs::read_to_string(crates.join("strix-registry/Cargo.toml")).unwrap();
    assert!(!manifest.contains("strix-zoo"), "strix-registry depends on strix-zoo again");
}

#[test]
fn the_settings_example_in_the_readme_is_valid() {
    let block = readme_toml_after("**Settings** are decided once");
    let layer = strix_catalog::Layer::from_toml(block, std::path::Path::new("README.md")).unwrap();
    assert_eq!(layer.registry_store.as_deref(), Some("s3://team-models/strix"));
    assert_eq!(layer.model_path, Some(vec!["/mnt/models".into()]));
}
