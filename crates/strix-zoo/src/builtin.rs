//! The built-in zoo: specs compiled into the binary, found by name.

use crate::ZooError;
use crate::spec::ModelSpec;

/// (name, spec TOML). Each entry is parsed, resolved and run by the test suite.
const ENTRIES: &[(&str, &str)] = &[
    ("efficientnet_lite0", include_str!("../zoo/efficientnet_lite0.toml")),
    ("efficientnet_lite0_embed", include_str!("../zoo/efficientnet_lite0_embed.toml")),
    ("nanodet_m_416", include_str!("../zoo/nanodet_m_416.toml")),
    ("movenet_lightning_192", include_str!("../zoo/movenet_lightning_192.toml")),
    ("movenet_multipose", include_str!("../zoo/movenet_multipose.toml")),
    ("selfie_256", include_str!("../zoo/selfie_256.toml")),
    ("blazeface_front_128", include_str!("../zoo/blazeface_front_128.toml")),
    ("blazeface_back_256", include_str!("../zoo/blazeface_back_256.toml")),
    ("mtcnn", include_str!("../zoo/mtcnn.toml")),
    ("faceres", include_str!("../zoo/faceres.toml")),
    ("ppocrv4", include_str!("../zoo/ppocrv4.toml")),
];

/// The model `strix predict --task T` uses when none is named.
pub fn default_for(task: crate::Task) -> &'static str {
    use crate::Task;
    match task {
        Task::Classify => DEFAULT_CLASSIFIER,
        Task::Detect => "nanodet_m_416",
        Task::Pose => "movenet_multipose",
        Task::Segment => "selfie_256",
        Task::Faces => "blazeface_back_256",
        Task::Text => "ppocrv4",
        Task::Embed => "efficientnet_lite0_embed",
    }
}

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
    ENTRIES.iter().map(|(n, text)| ModelSpec::from_toml(text, &format!("zoo:{n}"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_parses_under_its_own_name() {
        for spec in all().unwrap() {
            assert_eq!(get(&spec.name).unwrap().as_ref(), Some(&spec));
            assert!(spec.weights.sha256.is_some(), "{}: zoo weights need a sha256", spec.name);
            for artifact in spec.networks.values() {
                assert!(artifact.sha256.is_some(), "{}: zoo networks need a sha256", spec.name);
            }
        }
        assert!(get(DEFAULT_CLASSIFIER).unwrap().is_some());
        for task in crate::Task::ALL {
            let spec = get(default_for(task)).unwrap().unwrap();
            assert_eq!(spec.task, task, "default model for {task}");
        }
        assert!(get("nope").unwrap().is_none());
    }
}
