//! `strix serve` settings: a TOML file and the same as flags.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ServeError;

/// The whole server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    /// Models to load; the first answers `/invocations` when no target model is named.
    pub models: Vec<ModelConfig>,
    /// Batching settings every model starts from.
    pub batching: Batching,
    pub limits: Limits,
    /// Timeouts and the cap on open connections.
    pub connections: strix_http::ConnLimits,
    /// A file of API keys, one per line (`#` comments); when set, every route but `/ping` and
    /// `/health/*` needs one (`Authorization: Bearer KEY` or `X-Api-Key: KEY`).
    pub api_key_file: Option<std::path::PathBuf>,
    /// Decode JPEGs at 1/2, 1/4 or 1/8 of their size when the model's input is that much
    /// smaller (libjpeg-turbo's DCT scaling): faster, with slightly different pixels.
    pub fast_decode: bool,
    /// Host names answered besides loopback names and IP literals (a DNS-rebinding guard;
    /// others get 421); `*` answers any name.
    pub allowed_hosts: Vec<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            models: Vec::new(),
            batching: Batching::default(),
            limits: Limits::default(),
            connections: strix_http::ConnLimits::default(),
            api_key_file: None,
            fast_decode: false,
            allowed_hosts: Vec::new(),
        }
    }
}

/// One served model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// What to load: a zoo name, `NAME:3` / `NAME@alias` from the registry, a spec file.
    pub model: String,
    /// The name in routes (`/v1/models/{name}/predict`) [default: the spec's name].
    #[serde(default)]
    pub name: Option<String>,
    /// Overrides of the server's batching for this model.
    #[serde(default)]
    pub batching: Option<Batching>,
}

/// How requests are grouped into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Batching {
    /// Most images per inference (capped by what the model accepts).
    pub max_batch: usize,
    /// How long the first request of a batch waits for company (with several workers, only
    /// while all the others are busy).
    pub max_delay_ms: u64,
    /// Requests waiting per model; beyond this the server answers 503 at once.
    pub queue: usize,
    /// A request not answered within this gets 504.
    pub timeout_ms: u64,
    /// Batches in flight at once, sharing the runtime's threads (`--threads`); 0: one worker per
    /// core with one thread each (on a CPU, parallel single-thread inferences beat one
    /// inference spread over every core). Cascades always use one worker.
    pub workers: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Batching { max_batch: 8, max_delay_ms: 5, queue: 64, timeout_ms: 30_000, workers: 0 }
    }
}

/// What a request may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body in bytes (base64 JSON included).
    pub max_body_bytes: usize,
    /// Largest image (width x height), checked from the header before decoding.
    pub max_pixels: u64,
    /// Requests being read and decoded at once, over all models (each may hold a body and a
    /// full-size image; a cascade's keep theirs until answered); more are answered 503 before
    /// their body is read. 0: one per core.
    pub max_decoding: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_body_bytes: 20 << 20, max_pixels: strix_vision::DecodeLimits::DEFAULT_MAX_PIXELS, max_decoding: 0 }
    }
}

impl Limits {
    /// [`Limits::max_decoding`] with 0 resolved to the core count.
    pub fn decode_slots(&self) -> usize {
        match self.max_decoding {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl ServeConfig {
    pub fn from_toml(text: &str, origin: &Path) -> Result<ServeConfig, ServeError> {
        let cfg: ServeConfig =
            toml::from_str(text).map_err(|source| ServeError::ConfigFile { path: origin.to_path_buf(), source })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The keys of `api_key_file` (none when it is not set); a set file with no key is an error.
    pub fn api_keys(&self) -> Result<Vec<String>, ServeError> {
        let Some(path) = &self.api_key_file else { return Ok(Vec::new()) };
        let text =
            std::fs::read_to_string(path).map_err(|source| ServeError::KeyFile { path: path.to_path_buf(), source })?;
        let keys: Vec<String> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
        if keys.is_empty() {
            return Err(ServeError::Config(format!("{}: no API keys in the file", path.display())));
        }
        Ok(keys)
    }

    pub fn validate(&self) -> Result<(), ServeError> {
        let bad = |m: String| Err(ServeError::Config(m));
        for b in std::iter::once(&self.batching).chain(self.models.iter().filter_map(|m| m.batching.as_ref())) {
            if b.max_batch == 0 || b.queue == 0 || b.timeout_ms == 0 {
                return bad("max_batch, queue and timeout_ms must be at least 1".into());
            }
            if b.max_delay_ms > 10_000 {
                return bad(format!("max_delay_ms {} is over 10 s", b.max_delay_ms));
            }
        }
        if self.limits.max_body_bytes < 1024 {
            return bad("limits.max_body_bytes must be at least 1024".into());
        }
        strix_http::Gate::new(&self.allowed_hosts).map_err(ServeError::Config)?;
        self.connections.validate().map_err(|e| ServeError::Config(format!("[connections]: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_defaults_and_overrides() {
        let text = r#"
port = 9000
[batching]
max_batch = 16
[[models]]
model = "efficientnet_lite0"
[[models]]
model = "trash@production"
name = "trash"
batching = { max_batch = 4, max_delay_ms = 2, queue = 8, timeout_ms = 1000, workers = 1 }
"#;
        let cfg = ServeConfig::from_toml(text, Path::new("serve.toml")).unwrap();
        assert_eq!((cfg.port, cfg.batching.max_batch, cfg.batching.queue), (9000, 16, 64));
        assert_eq!(cfg.models[1].batching.unwrap().max_batch, 4);
        let err = ServeConfig::from_toml("prot = 1", Path::new("serve.toml")).unwrap_err();
        assert_eq!(err.to_string(), "serve config serve.toml");
        let cause = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
        assert!(cause.contains("unknown field `prot`"), "{cause}");
        assert!(ServeConfig::from_toml("[batching]\nqueue = 0", Path::new("s.toml")).is_err());
    }
}
