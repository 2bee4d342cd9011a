//! Edge video, the DeepLens part of Strix: a video file, network stream, camera or folder of
//! images runs through a model on the device, giving a *device stream* (frames as they came),
//! a *project stream* (frames annotated with tracks, lines and zones) and events other systems
//! act on (JSON lines, webhooks, MQTT).
//!
//! ```text
//! decoder (FFmpeg child) -> bounded queue (policy latest | all) -> inference (batched across
//! sources) -> tracker -> analytics -> events / MJPEG views / recording
//! ```
mod analytics;
mod config;
mod error;
mod identify;
mod live;
mod output;
mod queue;
mod record;
mod run;
mod sinks;
mod source;
mod stats;
mod track;
mod web;

pub use analytics::{Analytics, Counts, Detected, Happening, LineConfig, Scored, TrackBrief, ZoneConfig};
pub use config::StreamConfig;
pub use error::StreamError;
pub use identify::{Identifier, IdentifySettings, Identity};
pub use live::{LiveModel, follow};
pub use queue::{FramePolicy, Queues};
pub use record::check_recordings;
pub use run::{Recording, RunHooks, StreamJob, Summary, recording_paths, run, run_live};
pub use sinks::{Event, EventSink, JsonLines, Mqtt, SinkReport, Webhook, open_sinks};
pub use source::{RawFrame, Source, SourceInfo, SourceKind, SourceNotice, SourceOptions, SourceStopper, read_ppm};
pub use stats::{LagSummary, SourceStats};
pub use track::{Activity, Observation, Track, TrackUpdate, Tracker, TrackerConfig};
pub use web::{StatusFn, WebOptions};
