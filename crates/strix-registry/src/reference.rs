//! What a user types to name a registered model: `NAME`, `NAME:VERSION` or `NAME@ALIAS`.

use std::fmt;

use crate::RegistryError;

/// Which version of a registered model is meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// The newest version.
    Latest,
    Version(u64),
    Alias(String),
}

/// A model name and a version selector, as parsed from `NAME`, `NAME:3` or `NAME@production`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRef {
    pub name: String,
    pub selector: Selector,
}

impl ModelRef {
    /// Parse and check a reference; every part obeys the name rules.
    pub fn parse(text: &str) -> Result<ModelRef, RegistryError> {
        let bad = |reason: String| RegistryError::InvalidRef { text: text.to_string(), reason };
        if let Some((name, alias)) = text.split_once('@') {
            check_name(name)?;
            check_alias(alias)?;
            return Ok(ModelRef { name: name.to_string(), selector: Selector::Alias(alias.to_string()) });
        }
        if let Some((name, version)) = text.split_once(':') {
            check_name(name)?;
            let v: u64 = version
                .parse()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| bad(format!("version {version:?} is not a positive whole number")))?;
            return Ok(ModelRef { name: name.to_string(), selector: Selector::Version(v) });
        }
        check_name(text)?;
        Ok(ModelRef { name: text.to_string(), selector: Selector::Latest })
    }

    /// Whether `text` names a version explicitly (`NAME:V` or `NAME@ALIAS`), which only the
    /// registry can answer; a bare name may also be a zoo model.
    pub fn is_explicit(text: &str) -> bool {
        text.contains(['@', ':'])
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Latest => write!(f, "{}", self.name),
            Selector::Version(v) => write!(f, "{}:{v}", self.name),
            Selector::Alias(a) => write!(f, "{}@{a}", self.name),
        }
    }
}

/// Model names become object-store keys and folder names: the zoo's rule (letters, digits,
/// `.`, `_`, `-`, not starting with `.`), so `/`, `..` and control characters never get in.
pub fn check_name(name: &str) -> Result<(), RegistryError> {
    strix_core::check_name(name).map_err(|reason| RegistryError::InvalidName { reason })
}

/// Aliases follow the name rule and must not be a number (`NAME@3` would read like a version).
pub fn check_alias(alias: &str) -> Result<(), RegistryError> {
    let ok = !alias.is_empty()
        && alias.len() <= 64
        && !alias.starts_with('.')
        && alias.chars().all(strix_core::is_name_char)
        && !alias.chars().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidName {
            reason: format!(
                "invalid alias {alias:?}: use letters, digits, '.', '_' and '-' (not only digits, at most 64)"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(ModelRef::parse("trash").unwrap().selector, Selector::Latest);
        assert_eq!(ModelRef::parse("trash:3").unwrap().selector, Selector::Version(3));
        let r = ModelRef::parse("trash@production").unwrap();
        assert_eq!((r.name.as_str(), r.selector), ("trash", Selector::Alias("production".into())));
        assert_eq!(ModelRef::parse("trash@production").unwrap().to_string(), "trash@production");
    }

    #[test]
    fn refuses_paths_control_characters_and_bad_versions() {
        for bad in [
            "a/b",
            "..",
            "../x",
            "x\n",
            "x\u{7}",
            "",
            "trash:0",
            "trash:-1",
            "trash:x",
            "trash@",
            "trash@12",
            "trash@a/b",
            ":3",
            "@prod",
        ] {
            assert!(ModelRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
