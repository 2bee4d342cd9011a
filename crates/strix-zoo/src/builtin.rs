//! The built-in zoo: specs compiled into the binary, found by name.

use crate::ZooError;
use crate::spec::ModelSpec;

/// (name, spec TOML). Each entry is parsed, resolved and run by the test suite.
const ENTRIES: &[(&str, &str)] = &[(
    "efficientnet_lite0",
    include_str!("../zoo/efficientnet_lite0.toml"),
)];

/// The model `strix predict` uses when none is named.
pub const DEFAULT_CLASSIFIER: &str = "efficientnet_lite0";

pub fn names() -> Vec<&'static str> {
    ENTRIES.iter().map(|(name, _)| *name).collect()
}

/// The zoo entry called `name`, if there is one.
pub fn get(name: &str) -> Result<Option<ModelSpec>, ZooError> {
    ENTRIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, text)| ModelSpec::from_toml(text, &format!("zoo:{n}")))
        .transpose()
}

/// Every zoo entry, in listing order.
pub fn all() -> Result<Vec<ModelSpec>, ZooError> {
    ENTRIES
        .iter()
        .map(|(n, text)| ModelSpec::from_toml(text, &format!("zoo:{n}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_parses_under_its_own_name() {
        for spec in all().unwrap() {
            assert_eq!(get(&spec.name).unwrap().as_ref(), Some(&spec));
            assert!(
                spec.weights.sha256.is_some(),
                "{}: zoo weights need a sha256",
                spec.name
            );
            assert!(
                spec.weights.file.starts_with(&format!("{}/", spec.task)),
                "{}: file under its task folder",
                spec.name
            );
        }
        assert!(get(DEFAULT_CLASSIFIER).unwrap().is_some());
        assert!(get("nope").unwrap().is_none());
    }
}
