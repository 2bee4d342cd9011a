//! What a model is for, the rules for its name, and which registered version it is.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a model answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Classify,
    Detect,
    Pose,
    Segment,
    Faces,
    Text,
    /// An L2-normalised vector per image (or face): what similarity search and k-NN use.
    Embed,
}

impl Task {
    pub const ALL: [Task; 7] =
        [Task::Classify, Task::Detect, Task::Pose, Task::Segment, Task::Faces, Task::Text, Task::Embed];

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Detect => "detect",
            Task::Pose => "pose",
            Task::Segment => "segment",
            Task::Faces => "faces",
            Task::Text => "text",
            Task::Embed => "embed",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Task, String> {
        Task::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = Task::ALL.iter().map(|t| t.as_str()).collect();
            format!("unknown task {s:?}; one of {}", all.join(", "))
        })
    }
}

/// Characters a model (or alias) name may hold.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Model names end up in paths and URLs: letters, digits, `.`, `_`, `-`, not starting with `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.len() <= 128 && !name.starts_with('.') && name.chars().all(is_name_char);
    if ok { Ok(()) } else { Err(format!("invalid model name {name:?}: use letters, digits, '.', '_' and '-'")) }
}

/// A registered model version: `NAME:VERSION`, and the digest of its main network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: u64,
    /// SHA-256 of the version's main network file.
    pub sha256: String,
}

impl fmt::Display for ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_round_trip_through_their_names() {
        for t in Task::ALL {
            assert_eq!(t.to_string().parse::<Task>(), Ok(t));
        }
        assert!("detection".parse::<Task>().unwrap_err().contains("classify, detect"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("trash-v2.1_x").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "x:1", "y@prod", &"n".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
