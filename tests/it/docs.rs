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
    let all: BTreeSet<String> =
        ["classify", "nanodet", "yolo", "ssd", "centernet", "movenet", "mask", "blazeface", "mtcnn", "ppocr"]
            .map(String::from)
            .into();
    assert_eq!(kinds, all, "docs/model-spec.md needs one example per decoder");
}

#[test]
fn the_stream_config_example_in_the_readme_is_valid() {
    let readme = include_str!("../../README.md");
    let section = readme.split("### Video").nth(1).unwrap();
    let block = section.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
    let cfg = strix_stream::StreamConfig::from_toml(block, std::path::Path::new("README.md")).unwrap();
    assert_eq!((cfg.lines.len(), cfg.zones.len(), cfg.classes.len()), (1, 1, 1));
}
