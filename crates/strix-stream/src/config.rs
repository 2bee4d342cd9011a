//! Settings of a stream run that a file can hold (`strix stream --config stream.toml`); the
//! command line adds to them and overrides them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::analytics::{LineConfig, ZoneConfig};
use crate::error::StreamError;
use crate::queue::FramePolicy;
use crate::track::TrackerConfig;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// `latest` or `all`; unset: `latest` for live sources, `all` for files and folders.
    pub policy: Option<FramePolicy>,
    /// Frames waiting per source between decoding and inference.
    pub queue: usize,
    /// Most frames per inference when several sources share the model (and it allows).
    pub max_batch: usize,
    /// Classes to track and count (labels as the model names them); empty: all.
    pub classes: Vec<String>,
    /// Quality of the JPEG frames of the live views, 1..=100.
    pub jpeg_quality: f32,
    pub tracker: TrackerConfig,
    pub lines: Vec<LineConfig>,
    pub zones: Vec<ZoneConfig>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            policy: None,
            queue: 4,
            max_batch: 8,
            classes: Vec::new(),
            jpeg_quality: 80.0,
            tracker: TrackerConfig::default(),
            lines: Vec::new(),
            zones: Vec::new(),
        }
    }
}

impl StreamConfig {
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, StreamError> {
        let cfg: StreamConfig =
            toml::from_str(text).map_err(|e| StreamError::Config(format!("{}: {}", path.display(), e.message())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), StreamError> {
        let bad = |m: String| Err(StreamError::Config(m));
        if self.queue == 0 || self.queue > 1024 {
            return bad(format!("queue must be 1..=1024 frames, not {}", self.queue));
        }
        if self.max_batch == 0 || self.max_batch > 256 {
            return bad(format!("max_batch must be 1..=256, not {}", self.max_batch));
        }
        if !(1.0..=100.0).contains(&self.jpeg_quality) {
            return bad(format!("jpeg_quality must be 1..=100, not {}", self.jpeg_quality));
        }
        self.tracker.validate().map_err(StreamError::Config)?;
        for z in &self.zones {
            z.validate().map_err(StreamError::Config)?;
        }
        let mut names: Vec<&str> = self.lines.iter().map(|l| l.name.as_str()).collect();
        names.extend(self.zones.iter().map(|z| z.name.as_str()));
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        if names.len() != n {
            return bad("lines and zones need distinct names".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_config_and_refuses_unknown_or_bad_fields() {
        let text = r#"
            policy = "all"
            classes = ["person"]
            [tracker]
            confirm_hits = 2
            [[lines]]
            name = "door"
            from = [0, 300]
            to = [768, 300]
            [[zones]]
            name = "bench"
            points = [[0, 0], [100, 0], [100, 100]]
        "#;
        let cfg = StreamConfig::from_toml(text, Path::new("s.toml")).unwrap();
        assert_eq!(cfg.policy, Some(FramePolicy::All));
        assert_eq!(cfg.tracker.confirm_hits, 2);
        assert_eq!(cfg.lines[0].to, [768.0, 300.0]);
        let typo = StreamConfig::from_toml("polcy = \"all\"", Path::new("s.toml")).unwrap_err().to_string();
        assert!(typo.contains("unknown field") && typo.contains("s.toml"), "{typo}");
        assert!(StreamConfig::from_toml("queue = 0", Path::new("s.toml")).is_err());
        assert!(StreamConfig::from_toml("[tracker]\nhigh_score = 2.0", Path::new("s.toml")).is_err());
        let dup = "[[lines]]\nname='a'\nfrom=[0,0]\nto=[1,1]\n[[zones]]\nname='a'\npoints=[[0,0],[1,0],[1,1]]";
        assert!(StreamConfig::from_toml(dup, Path::new("s.toml")).is_err());
    }
}
