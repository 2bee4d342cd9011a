//! The one place Strix reads its environment: flags (clap fills them from the STRIX_*
//! variables too) over a settings file over the platform's folders, merged by
//! [`strix_catalog::Settings::from_layers`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use strix_catalog::{Defaults, Layer, Settings};

use crate::cli::Global;

pub fn build(global: &Global) -> Result<Settings> {
    let flags = Layer {
        home: global.home.clone(),
        cache_dir: global.cache_dir.clone(),
        model_path: global
            .model_path
            .as_ref()
            .map(|p| std::env::split_paths(p).filter(|p| !p.as_os_str().is_empty()).collect()),
        hub: global.hub.clone(),
        // A false flag says nothing: the file may still turn offline on.
        offline: global.offline.then_some(true),
        registry_store: global.registry_store.clone(),
        registry_db: global.registry_db.clone(),
        // Commands with engine flags also take --ort-lib; the variable serves the rest (export).
        ort_library: std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
        // Commands that use the queue take --queue / STRIX_QUEUE themselves.
        queue: None,
    };
    let defaults = Defaults {
        home: dirs::data_dir().map(|d| d.join("strix")).unwrap_or_else(|| PathBuf::from(".strix")),
        cache_dir: dirs::cache_dir().map(|d| d.join("strix")).unwrap_or_else(|| PathBuf::from(".strix-cache")),
    };
    let home = flags.home.clone().filter(|h| !h.as_os_str().is_empty()).unwrap_or_else(|| defaults.home.clone());
    let file = match global.settings.clone().filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => Some(path),
        None => Some(home.join("settings.toml")).filter(|p| p.is_file()),
    };
    let file = match file {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| format!("settings file {}", path.display()))?;
            Layer::from_toml(&text, &path)?
        }
        None => Layer::default(),
    };
    // object_store's cloud settings (S3, GCS, Azure) by their own names, as its from_env
    // readers would read them.
    let s3 = std::env::vars()
        .filter(|(k, _)| ["AWS_", "GOOGLE_", "AZURE_"].iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    Ok(Settings::from_layers(vec![flags, file], defaults, s3))
}

/// `user@host`: the login name from the environment, else the passwd entry of our uid.
#[cfg(feature = "full")]
pub fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(passwd_name)
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    if host.is_empty() { user } else { format!("{user}@{host}") }
}

#[cfg(feature = "full")]
fn passwd_name() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == uid)
        .map(|f| f[0].to_string())
}
