//! `--monitor` for `strix serve` and `strix stream`: a baseline loaded, the embedding model it names, and the
//! violations sent where `--monitor-events`, `--monitor-webhook` and `--monitor-mqtt` say.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use serde_json::json;
use strix_monitor::{Baseline, Embedder, LiveMonitor, LiveSettings, OnCheck};
use strix_pipeline::BatchOptions;
use strix_stream::EventSink;

use crate::cli::{MonitorLiveArgs, RuntimeArgs};
use crate::context::AppContext;

/// A started monitor and the sinks its violations go to.
pub struct Live {
    pub monitor: Arc<LiveMonitor>,
    sinks: Arc<Mutex<Vec<Box<dyn EventSink>>>>,
}

impl Live {
    /// Test what is queued, close the sinks, and say how it went.
    pub fn close(self) -> String {
        let s = self.monitor.close();
        let mut out = format!(
            "monitor: {} answers, {} tests, {} violations ({} answers not taken)",
            s.answers, s.tests, s.violations_total, s.dropped
        );
        let sinks = self.sinks.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
        for sink in sinks {
            let r = sink.close();
            out.push_str(&format!("; {}: {} sent, {} failed", r.sink, r.sent, r.failed));
        }
        out
    }
}

/// Start monitoring `model` (its route name) when `--monitor` asks.
/// The baseline is `--baseline`, else the one the registered `version` keeps.
pub fn start(
    ctx: &AppContext,
    args: &MonitorLiveArgs,
    model: &str,
    version: Option<&strix_core::ModelVersion>,
    runtime: &RuntimeArgs,
) -> Result<Option<Live>> {
    if !args.monitor {
        return Ok(None);
    }
    let registered = match (&args.baseline, version) {
        (None, Some(v)) => crate::monitor_observe::registered_baseline(ctx, v)?,
        _ => None,
    };
    let Some(dir) = args.baseline.as_ref().or(registered.as_ref()) else {
        bail!(
            "--monitor needs --baseline DIR for {model}: it is not a registered version that keeps one (versions \
             registered from a training run do; `strix monitor baseline --model M --data VALIDATION --out DIR` writes one)"
        );
    };
    if registered.is_some() && !ctx.quiet {
        eprintln!("monitor: {model} against the baseline registered with it ({})", dir.display());
    }
    if args.monitor_window < 2 || args.monitor_every == 0 {
        bail!("--monitor-window must be at least 2 and --monitor-every at least 1");
    }
    let baseline = Baseline::read(dir).with_context(|| format!("baseline {}", dir.display()))?;
    // Sinks before the model: a typo in a URL should not cost a load.
    let sinks = strix_stream::open_sinks(
        args.monitor_events.as_deref(),
        args.monitor_webhook.as_deref(),
        args.monitor_mqtt.as_deref(),
    )?;
    let embedder: Option<Embedder> = match baseline.statistics.embeddings.as_ref().filter(|e| !e.model.is_empty()) {
        Some(e) => {
            let bars = ctx.bars();
            let pipeline = ctx.load_pipeline(ctx.catalog().resolve(&e.model, &bars)?, runtime)?;
            Some(Box::new(move |img: &strix_vision::RgbImage| {
                let answers = pipeline.predict_images(std::slice::from_ref(img), &BatchOptions::default()).ok()?;
                answers.first().and_then(strix_index::query_vector).map(|(_, v)| v)
            }))
        }
        None => None,
    };
    let sinks = Arc::new(Mutex::new(sinks));
    let to = sinks.clone();
    let name = dir.display().to_string();
    let on_check: OnCheck = Box::new(move |status, drifted| {
        if drifted.is_empty() {
            return;
        }
        let events: Vec<String> = drifted
            .iter()
            .map(|c| {
                json!({
                    "type": "drift", "model": status.model, "baseline": status.baseline, "feature": c.feature,
                    "test": c.test, "statistic": c.statistic, "p_value": c.p_value, "threshold": c.threshold,
                    "window": status.window, "answers": status.answers, "time_ms": status.last_at_ms,
                })
                .to_string()
            })
            .collect();
        tracing::warn!(model = %status.model, features = ?drifted.iter().map(|c| &c.feature).collect::<Vec<_>>(), "drift");
        if let Ok(mut sinks) = to.lock() {
            for sink in sinks.iter_mut() {
                sink.send(&events);
            }
        }
    });
    let settings = LiveSettings { window: args.monitor_window, every: args.monitor_every, seed: 1 };
    let monitor = Arc::new(LiveMonitor::start(model, baseline, &name, settings, embedder, on_check));
    eprintln!(
        "monitoring {model} against {name} (window {}, tested every {} answers)",
        args.monitor_window, args.monitor_every
    );
    Ok(Some(Live { monitor, sinks }))
}
