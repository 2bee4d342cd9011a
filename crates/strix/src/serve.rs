//! `strix serve`: load the models, then hand them to strix-serve until Ctrl-C / SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use strix_serve::{ModelConfig, ServeConfig, ServeState, ServedModel};

use crate::cli::ServeArgs;
use crate::context::AppContext;

/// The config file (if any) with the flags applied over it ([`crate::layered`]).
fn config(args: &ServeArgs) -> Result<ServeConfig> {
    use crate::layered::{section, set};
    let mut flags = toml::Table::new();
    set(&mut flags, "host", args.host.as_ref())?;
    set(&mut flags, "port", args.port)?;
    set(&mut flags, "api_key_file", args.api_key_file.as_ref())?;
    set(&mut flags, "fast_decode", args.fast_decode.then_some(true))?;
    set(&mut flags, "allowed_hosts", (!args.http_allow_host.is_empty()).then_some(&args.http_allow_host))?;
    let mut batching = toml::Table::new();
    set(&mut batching, "max_batch", args.max_batch)?;
    set(&mut batching, "max_delay_ms", args.max_delay_ms)?;
    set(&mut batching, "queue", args.queue)?;
    set(&mut batching, "timeout_ms", args.timeout_ms)?;
    set(&mut batching, "workers", args.workers)?;
    section(&mut flags, "batching", batching);
    let mut limits = toml::Table::new();
    set(&mut limits, "max_body_bytes", args.max_body_bytes)?;
    set(&mut limits, "max_pixels", args.max_pixels)?;
    section(&mut flags, "limits", limits);
    let models: Vec<ModelConfig> = args
        .models
        .iter()
        .map(|m| match m.split_once('=') {
            Some((n, m)) => ModelConfig { model: m.to_string(), name: Some(n.to_string()), batching: None },
            None => ModelConfig { model: m.clone(), name: None, batching: None },
        })
        .collect();
    if !models.is_empty() {
        set(&mut flags, "models", Some(models))?;
    }
    let cfg = crate::layered::merged(args.config.as_deref(), flags, ServeConfig::from_toml)?;
    if cfg.models.is_empty() && args.indexes.is_empty() {
        bail!("no models to serve: give --model NAME (repeatable), [[models]] in --config, or --index NAME");
    }
    Ok(cfg)
}

/// The vectors each served model gives, and the `--index` names: an index whose model no
/// `--model` gives the same vectors as brings its own model along.
fn index_models(
    ctx: &AppContext,
    args: &ServeArgs,
    models: &mut Vec<ServedModel>,
    cfg: &ServeConfig,
) -> Result<strix_serve::Indexes> {
    let identity = |m: &ServedModel| -> Result<Option<(String, strix_index::EmbeddingModel)>> {
        let pipeline = m.pipeline();
        let gives = pipeline.task() == strix_core::Task::Embed || pipeline.model().spec.describe.is_some();
        Ok(if gives { Some((m.name.clone(), strix_index::embedding_model(&pipeline, &m.reference)?)) } else { None })
    };
    let mut identities = Vec::new();
    for m in models.iter() {
        identities.extend(identity(m)?);
    }
    if !args.indexes.is_empty() {
        let session = crate::registry::session(ctx)?;
        for name in &args.indexes {
            let reference = strix_registry::ModelRef::parse(name)?;
            if reference.selector != strix_registry::Selector::Latest {
                bail!("--index {name}: serve an index by its name; searches always use its latest version");
            }
            let index = session.block_on(strix_index::open(&session.registry, &reference))?;
            let own = &index.manifest.model;
            if identities.iter().any(|(_, m): &(String, strix_index::EmbeddingModel)| m.sha256 == own.sha256) {
                continue;
            }
            let model = ctx.catalog().resolve(&own.reference, &ctx.bars())?;
            let pipeline = ctx.load_pipeline(model, &args.runtime)?;
            let route = pipeline.model().spec.name.clone();
            if models.iter().any(|m| m.name == route) {
                bail!("--index {name}: its model {} is not the served {route}", own.describe());
            }
            let served = ServedModel::new(&route, &own.reference, pipeline, cfg.batching, args.top_k);
            let found = identity(&served)?.context("an index's model gives vectors")?;
            if found.1.sha256 != own.sha256 {
                bail!(
                    "--index {name}: its model was {}, but {} is now {}",
                    own.describe(),
                    own.reference,
                    found.1.describe()
                );
            }
            identities.push(found);
            models.push(served);
        }
    }
    Ok(strix_serve::Indexes::new(ctx.catalog().settings().registry.clone(), args.indexes.clone(), identities))
}

pub fn run(ctx: &AppContext, args: &ServeArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let cfg = config(args)?;
    let keys = cfg.api_keys()?;
    let bars = ctx.bars();
    let mut models: Vec<ServedModel> = Vec::new();
    for m in &cfg.models {
        let model = ctx.catalog().resolve(&m.model, &bars)?;
        let pipeline = ctx.load_pipeline(model, &args.runtime)?;
        let name = m.name.clone().unwrap_or_else(|| pipeline.model().spec.name.clone());
        strix_core::check_name(&name).map_err(anyhow::Error::msg)?;
        if models.iter().any(|s| s.name == name) {
            bail!("two models are served as {name:?}; name one with ROUTE=MODEL");
        }
        let batching = m.batching.unwrap_or(cfg.batching);
        models.push(ServedModel::new(&name, &m.model, pipeline, batching, args.top_k));
    }
    let indexes = index_models(ctx, args, &mut models, &cfg)?;
    let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    let served: Vec<(strix_core::Task, String)> =
        models.iter().map(|m| (m.pipeline().task(), m.name.clone())).collect();
    let first_version = models.first().and_then(|m| m.pipeline().model().version.clone());
    let mut state = ServeState::new(models, cfg.limits)
        .with_api_keys(&keys)
        .with_fast_decode(cfg.fast_decode)
        .with_gate(strix_http::Gate::new(&cfg.allowed_hosts).map_err(anyhow::Error::msg)?)
        .with_indexes(indexes);
    let mut capture = None;
    if let Some(project) = &args.capture {
        let (task, name) = served.first().cloned().context("no models")?;
        for (t, n) in &served {
            if *t != task {
                bail!("--capture takes one kind of answer: {name} is a {task} model, {n} a {t} model");
            }
        }
        let c =
            Arc::new(crate::label::start_capture(project, &args.capture_limits, args.capture_rate, 1, task, &name)?);
        eprintln!("strix serve: capturing {:.1}% of requests into {}", 100.0 * args.capture_rate, project.display());
        state = state.with_tap(c.clone());
        capture = Some(c);
    }
    let live = match served.first() {
        Some((_, name)) => crate::monitor_live::start(ctx, &args.monitor, name, first_version.as_ref(), &args.runtime)?,
        None => None,
    };
    if let Some(l) = &live {
        state = state.with_monitor(l.monitor.clone());
    }
    let state = Arc::new(state);
    if !args.follow_interval.is_zero() {
        let interval = args.follow_interval;
        let engine = ctx.engine(&args.runtime);
        let following = state.follow(ctx.catalog(), &engine, interval).context("cannot start following")?;
        if following > 0 {
            eprintln!("strix serve: {following} model(s) follow their registry alias (checked every {interval:?})");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(async {
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let listener =
            tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr().context("listening address")?;
        if !local.ip().is_loopback() && keys.is_empty() {
            tracing::warn!(
                "strix serve listens on {local}, beyond this machine, with no API keys: anyone who can reach it \
                 may use the models; give --api-key-file FILE"
            );
        }
        eprintln!(
            "strix serve: http://{local} ({}), ready {:.2} s after start",
            names.join(", "),
            started.elapsed().as_secs_f64()
        );
        strix_serve::serve(listener, state, cfg.connections, crate::signals::shutdown()).await?;
        anyhow::Ok(())
    })?;
    if let Some(c) = capture {
        eprintln!("capture: {}", c.close().summary("requests"));
    }
    if let Some(l) = live {
        eprintln!("{}", l.close());
    }
    Ok(ExitCode::SUCCESS)
}
