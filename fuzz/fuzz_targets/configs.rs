//! The other TOML files a user hands Strix: `strix serve --config`, `strix stream --config`,
//! `strix pipeline run`'s file and its `when` condition.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = strix_fuzz::pick(data, 4) else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let origin = Path::new("/nonexistent/fuzz.toml");
    match which {
        0 => drop(strix_serve::ServeConfig::from_toml(text, origin)),
        1 => drop(strix_stream::StreamConfig::from_toml(text, origin)),
        2 => drop(strix_workflow::PipelineSpec::parse(text, origin)),
        _ => drop(strix_workflow::Condition::parse(text)),
    }
});
