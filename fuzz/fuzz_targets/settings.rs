//! The settings file (`~/.config/strix/settings.toml`) and its layering.
#![no_main]
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use strix_catalog::{Defaults, Layer, Settings};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(layer) = Layer::from_toml(text, Path::new("settings.toml")) {
        let defaults =
            Defaults { home: PathBuf::from("/nonexistent/home"), cache_dir: PathBuf::from("/nonexistent/c") };
        let settings = Settings::from_layers(vec![layer], defaults, Vec::new());
        let _ = settings.resolver();
    }
});
