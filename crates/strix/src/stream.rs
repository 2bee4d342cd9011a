//! `strix stream`: sources through a model until they end, the limits are reached or Ctrl-C.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use strix_core::{Progress, Task};
use strix_stream::{
    LineConfig, RunHooks, SourceKind, SourceOptions, StreamConfig, StreamJob, Summary, WebOptions, ZoneConfig,
};

use crate::cli::StreamArgs;
use crate::context::AppContext;
use crate::progress::Bars;

/// The config file (if any) with the flags applied over it ([`crate::layered`]).
fn config(args: &StreamArgs) -> Result<StreamConfig> {
    use crate::layered::set;
    let mut flags = toml::Table::new();
    set(&mut flags, "policy", args.policy)?;
    set(&mut flags, "queue", args.queue)?;
    set(&mut flags, "max_batch", args.max_batch)?;
    let classes: Vec<String> = args.classes.iter().map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
    set(&mut flags, "classes", Some(classes).filter(|c| !c.is_empty()))?;
    let lines =
        args.lines.iter().map(|l| LineConfig::parse(l)).collect::<Result<Vec<_>, _>>().map_err(anyhow::Error::msg)?;
    set(&mut flags, "lines", Some(lines).filter(|l| !l.is_empty()))?;
    let zones =
        args.zones.iter().map(|z| ZoneConfig::parse(z)).collect::<Result<Vec<_>, _>>().map_err(anyhow::Error::msg)?;
    set(&mut flags, "zones", Some(zones).filter(|z| !z.is_empty()))?;
    crate::layered::merged(args.config.as_deref(), flags, StreamConfig::from_toml)
}

struct Hooks {
    bars: Arc<Bars>,
    quiet: bool,
}

impl RunHooks for Hooks {
    fn serving(&self, addr: SocketAddr) {
        if !self.quiet {
            // Tests and scripts read the address from this line (port 0 picks one).
            eprintln!("strix stream: live view at http://{addr}/");
        }
    }

    fn progress(&self) -> Arc<dyn Progress> {
        self.bars.clone()
    }
}

pub fn run(ctx: &AppContext, args: &StreamArgs) -> Result<ExitCode> {
    let cfg = config(args)?;
    let mut sources = Vec::new();
    for s in &args.sources {
        sources.push(SourceKind::parse(s)?);
    }
    if let Some(record) = &args.record {
        if args.loop_file && args.duration.is_none() && args.max_frames.is_none() {
            bail!("--record with --loop needs --duration or --max-frames, or the file grows until Ctrl-C");
        }
        let paths = strix_stream::recording_paths(record, sources.len());
        strix_stream::check_recordings(&paths, &sources, args.force)?;
    }
    // Outputs are checked before the model loads: a typo in a URL should not cost a load.
    let sinks = strix_stream::open_sinks(args.events.as_deref(), args.webhook.as_deref(), args.mqtt.as_deref())?;

    let bars = Arc::new(ctx.bars());
    let model =
        ctx.catalog().resolve_for_task(args.model.as_deref(), args.task, strix_core::Task::Detect, bars.as_ref())?;
    if model.spec.task == strix_core::Task::Embed {
        bail!(
            "{} answers with a vector per image (an embedding), which a stream has nothing to draw or track with; \
             give a classify, detect, pose, faces, segment or text model",
            model.spec.name
        );
    }
    let live = Arc::new(strix_stream::LiveModel::new(Arc::new(ctx.load_pipeline(model, &args.runtime)?)));
    // Kept until the run ends: dropping it stops the polling.
    let _follower = match (&args.model, args.follow_interval.is_zero()) {
        (Some(reference), false) => {
            let engine = ctx.engine(&args.runtime);
            strix_stream::follow(&live, ctx.catalog(), &engine, reference, args.follow_interval)
                .context("cannot start following the registry")?
        }
        _ => None,
    };

    let capture = match &args.capture {
        Some(project) => {
            let pipeline = live.current();
            let name = pipeline.model().spec.name.clone();
            Some(Arc::new(crate::label::start_capture(
                project,
                &args.capture_limits,
                1.0,
                args.capture_every,
                pipeline.task(),
                &name,
            )?))
        }
        None => None,
    };
    let identify = crate::identify::settings(ctx, args)?;
    let watched = live.current().model().spec.name.clone();
    let version = live.current().model().version.clone();
    let monitor = crate::monitor_live::start(ctx, &args.monitor, &watched, version.as_ref(), &args.runtime)?;
    let monitor_tap = monitor.as_ref().map(|l| l.monitor.clone() as Arc<dyn strix_pipeline::Tap>);
    if identify.is_some() && !matches!(live.current().task(), Task::Detect | Task::Faces | Task::Pose) {
        bail!("--index names tracks: give a model with boxes (detect, faces or pose)");
    }
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    let job = StreamJob {
        sources,
        source_options: SourceOptions {
            realtime: args.realtime,
            loop_file: args.loop_file,
            reconnect: args.reconnect,
            folder_fps: args.folder_fps,
            ffmpeg: args.ffmpeg.clone(),
            ..SourceOptions::default()
        },
        config: cfg,
        sinks,
        http: args.http.clone().map(|addr| WebOptions {
            addr,
            token: args.http_token.clone().filter(|t| !t.is_empty()),
            allowed_hosts: args.http_allow_host.clone(),
        }),
        record: args.record.clone(),
        overwrite: args.force,
        max_frames: args.max_frames,
        duration: args.duration,
        frame_events: args.frame_events,
        top_k: args.top_k.max(1),
        workers: args.workers,
        tap: taps(capture.clone().map(|c| c as Arc<dyn strix_pipeline::Tap>), monitor_tap),
        identify,
        monitor_status: monitor.as_ref().map(|l| {
            let m = l.monitor.clone();
            Arc::new(move || serde_json::to_value(m.status()).unwrap_or_default()) as strix_stream::StatusFn
        }),
    };
    let hooks = Hooks { bars: bars.clone(), quiet: ctx.quiet };
    let summary = strix_stream::run_live(live, job, stop, &hooks)?;
    if let Some(capture) = capture {
        let stats = capture.close();
        if !ctx.quiet {
            eprintln!("capture: {}", stats.summary("frames"));
        }
    }
    if let Some(m) = monitor {
        eprintln!("{}", m.close());
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else if !ctx.quiet {
        eprint!("{}", render(&summary));
    }
    let failed = !summary.errors.is_empty() || summary.sinks.iter().any(|s| s.failed > 0);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The summary for people.
/// The taps a run feeds: capture, a drift monitor, both, or none.
fn taps(
    capture: Option<Arc<dyn strix_pipeline::Tap>>,
    monitor: Option<Arc<dyn strix_pipeline::Tap>>,
) -> Option<Arc<dyn strix_pipeline::Tap>> {
    match (capture, monitor) {
        (Some(a), Some(b)) => Some(Arc::new(strix_pipeline::Taps(vec![a, b]))),
        (a, b) => a.or(b),
    }
}

fn render(s: &Summary) -> String {
    let mut out = String::new();
    let p = &s.parallelism;
    let _ = writeln!(
        out,
        "{} on {} ({} worker(s) x {} thread(s)), {:.1} s",
        s.model, s.backend, p.workers, p.threads, s.wall_s
    );
    for src in &s.sources {
        let _ = writeln!(
            out,
            "  {}: {} of {} frames answered ({} dropped, policy {}), {:.1} fps, lag p50 {} ms p95 {} ms max {} ms{}",
            src.source,
            src.frames_processed,
            src.frames_read,
            src.dropped,
            src.policy,
            src.fps,
            src.lag_ms.p50,
            src.lag_ms.p95,
            src.lag_ms.max,
            if src.reconnects > 0 { format!(", {} reconnects", src.reconnects) } else { String::new() }
        );
        let c = &src.counts;
        if !c.tracks.is_empty() {
            let tracks: Vec<String> = c.tracks.iter().map(|(k, v)| format!("{v} {k}")).collect();
            let _ = writeln!(out, "    tracks: {} (longest stay {:.1} s)", tracks.join(", "), c.longest_dwell_s);
        }
        for (line, [fwd, back]) in &c.crossings {
            let _ = writeln!(out, "    line {line}: {fwd} forward, {back} backward");
        }
        for (zone, n) in &c.zone_entries {
            let _ = writeln!(out, "    zone {zone}: {n} entries");
        }
        if !c.labels.is_empty() {
            let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "    frames per label: {}", labels.join(", "));
        }
        if let Some(e) = &src.error {
            let _ = writeln!(out, "    error: {e}");
        }
    }
    if s.batch_sizes.keys().any(|&b| b > 1) {
        let sizes: Vec<String> = s.batch_sizes.iter().map(|(b, n)| format!("{n} x {b}")).collect();
        let _ = writeln!(out, "  batches (count x frames): {}", sizes.join(", "));
    }
    for sink in &s.sinks {
        let failed = if sink.failed > 0 { format!(", {} FAILED", sink.failed) } else { String::new() };
        let _ = writeln!(out, "  events to {}: {} delivered{failed}", sink.sink, sink.sent);
    }
    for r in &s.recordings {
        let _ = writeln!(out, "  recorded {} frames to {}", r.frames, r.path.display());
    }
    out
}

/// Ctrl-C / SIGTERM end the run cleanly (sinks flushed, recording closed, summary printed).
fn watch_signals(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(crate::signals::shutdown());
        stop.store(true, Ordering::SeqCst);
    });
}
