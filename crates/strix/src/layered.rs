//! The one merge rule for command configs (train, serve, stream): the config file's TOML table
//! with the given flags written over it, then parsed and checked as the typed config (unknown
//! keys refused). Flags are a table of their own, nested like the file (`[batching]
//! max_batch`): tables merge key by key, a flag replaces the value it names, and a repeatable
//! flag that adds items (`--model`, `--line`, `--zone`: lists of tables) adds them to the
//! file's list.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use toml::{Table, Value};

/// The merged config: `file` (if any) under `flags`, parsed by `parse`.
pub fn merged<T, E: Into<anyhow::Error>>(
    file: Option<&Path>,
    flags: Table,
    parse: impl FnOnce(&str, &Path) -> Result<T, E>,
) -> Result<T> {
    let (table, origin) = merged_table(file, flags)?;
    let text = toml::to_string(&table).context("config")?;
    parse(&text, &origin).map_err(Into::into)
}

/// The merged table before parsing, and what to name it in messages.
pub fn merged_table(file: Option<&Path>, flags: Table) -> Result<(Table, PathBuf)> {
    let (mut table, origin) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let table: Table = text.parse().map_err(|e: toml::de::Error| {
                anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim().replace('\n', " "))
            })?;
            (table, path.to_path_buf())
        }
        None => (Table::new(), PathBuf::from("flags")),
    };
    over(&mut table, flags);
    Ok((table, origin))
}

/// Write `flags` over `base`.
fn over(base: &mut Table, flags: Table) {
    for (key, value) in flags {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(f)) => over(b, f),
            (Some(Value::Array(b)), Value::Array(f)) if f.iter().all(Value::is_table) => b.extend(f),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Flags as a table: `set(&mut t, "port", args.port)` writes what was given and skips `None`.
pub fn set<V: Serialize>(table: &mut Table, key: &str, value: Option<V>) -> Result<()> {
    if let Some(v) = value {
        table.insert(key.to_string(), Value::try_from(v).with_context(|| format!("flag for {key}"))?);
    }
    Ok(())
}

/// A section of flags (`[batching]`), left out when empty.
pub fn section(table: &mut Table, key: &str, section: Table) {
    if !section.is_empty() {
        table.insert(key.to_string(), Value::Table(section));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_replace_values_merge_tables_and_add_to_lists_of_tables() {
        let mut base: Table =
            "port = 1\nclasses = ['a']\n[batching]\nqueue = 4\nmax_batch = 2\n[[models]]\nmodel = 'x'\n"
                .parse()
                .unwrap();
        let flags: Table =
            "port = 2\nclasses = ['b', 'c']\n[batching]\nmax_batch = 8\n[[models]]\nmodel = 'y'\n".parse().unwrap();
        over(&mut base, flags);
        let want: Table = "port = 2\nclasses = ['b', 'c']\n[batching]\nqueue = 4\nmax_batch = 8\n[[models]]\nmodel = 'x'\n[[models]]\nmodel = 'y'\n"
            .parse()
            .unwrap();
        assert_eq!(base, want);
    }
}
