//! Model files from a hub: verified, resumable, atomic downloads against a local server.

use std::collections::HashMap;
use std::path::Path;

use strix_core::NoProgress;
use strix_zoo::{Artifact, Resolver, ZooError, sha256_file};

use crate::fixtures_or_skip;
use crate::http::{Route, Server};
use crate::support::{files_under, run, strix};

fn resolver(cache: &Path, hub: &str) -> Resolver {
    Resolver { cache_dir: cache.to_path_buf(), search_path: vec![], hub: Some(hub.to_string()), offline: false }
}

/// 700 kB of varied bytes and their digest.
fn payload() -> (Vec<u8>, String) {
    let body: Vec<u8> = (0..700_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    std::fs::write(&p, &body).unwrap();
    let sha = sha256_file(&p).unwrap();
    (body, sha)
}

fn artifact(sha: &str, size: Option<u64>) -> Artifact {
    Artifact { file: "classify/tiny.onnx".into(), sha256: Some(sha.into()), url: None, size }
}

fn leftovers(cache: &Path) -> Vec<String> {
    let mut out: Vec<String> =
        files_under(cache).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    out.sort();
    out
}

#[test]
fn download_is_verified_cached_and_reused() {
    let (body, sha) = payload();
    let server = Server::start(HashMap::from([(
        "/classify/tiny.onnx".to_string(),
        Route { body: body.clone(), ..Default::default() },
    )]));
    let cache = tempfile::tempdir().unwrap();
    let r = resolver(cache.path(), &format!("{}/", server.url));
    let path = r.fetch(&artifact(&sha, Some(body.len() as u64)), None, &NoProgress).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert!(path.starts_with(cache.path()));
    assert_eq!(leftovers(cache.path()), vec!["tiny.onnx", "tiny.onnx.lock"], "no .part left behind");
    drop(server);
    // The server is gone: the cache answers.
    let again = r.fetch(&artifact(&sha, None), None, &NoProgress).unwrap();
    assert_eq!(again, path);
}

#[test]
fn corrupted_download_is_rejected_and_discarded() {
    let (mut body, sha) = payload();
    body[123_456] ^= 1;
    let server =
        Server::start(HashMap::from([("/classify/tiny.onnx".to_string(), Route { body, ..Default::default() })]));
    let cache = tempfile::tempdir().unwrap();
    let err = resolver(cache.path(), &server.url).fetch(&artifact(&sha, None), None, &NoProgress).unwrap_err();
    assert!(matches!(err, ZooError::DownloadCorrupt { .. }), "{err}");
    assert!(err.to_string().contains(&sha) && err.to_string().contains("discarded"), "{err}");
    assert_eq!(leftovers(cache.path()), vec!["tiny.onnx.lock"], "nothing usable may remain");
}

/// An error and its causes on one line, as the CLI prints them: the cause (an HTTP status, a
/// lost connection) is kept as a source, not repeated in the message.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

#[test]
fn interrupted_download_resumes_with_a_range_request() {
    let (body, sha) = payload();
    let route = Route { body: body.clone(), cut_first_after: Some(300_000) };
    let server = Server::start(HashMap::from([("/classify/tiny.onnx".to_string(), route)]));
    let cache = tempfile::tempdir().unwrap();
    let r = resolver(cache.path(), &server.url);
    let err = chain(&r.fetch(&artifact(&sha, None), None, &NoProgress).unwrap_err());
    assert!(err.contains("resume"), "{err}");
    assert!(leftovers(cache.path()).contains(&"tiny.onnx.part".to_string()));
    let path = r.fetch(&artifact(&sha, None), None, &NoProgress).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.path == "/classify/tiny.onnx"));
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[1].range.as_deref(), Some("bytes=300000-"));
}

#[test]
fn offline_missing_checksum_and_http_errors() {
    let (body, sha) = payload();
    let server =
        Server::start(HashMap::from([("/classify/tiny.onnx".to_string(), Route { body, ..Default::default() })]));
    let cache = tempfile::tempdir().unwrap();
    let mut r = resolver(cache.path(), &server.url);
    r.offline = true;
    let err = r.fetch(&artifact(&sha, None), None, &NoProgress).unwrap_err().to_string();
    assert!(err.contains("offline") && err.contains(&server.url), "{err}");
    assert!(server.requests().is_empty(), "offline mode must not touch the network");

    r.offline = false;
    let unchecked = Artifact { sha256: None, ..artifact(&sha, None) };
    let err = r.fetch(&unchecked, None, &NoProgress).unwrap_err();
    assert!(matches!(err, ZooError::NoChecksum { .. }), "{err}");

    let elsewhere = Artifact { file: "classify/other.onnx".into(), ..artifact(&sha, None) };
    let err = chain(&r.fetch(&elsewhere, None, &NoProgress).unwrap_err());
    assert!(err.contains("HTTP 404") && err.contains("other.onnx"), "{err}");

    let wrong_size = artifact(&sha, Some(10));
    let err = chain(&r.fetch(&wrong_size, None, &NoProgress).unwrap_err());
    assert!(err.contains("spec says 10"), "{err}");
}

#[test]
fn cli_fetches_zoo_weights_from_the_hub_then_predicts_offline() {
    let fx = fixtures_or_skip!();
    let models = fx.join("models");
    let route = |p: &str| Route { body: std::fs::read(models.join(p)).unwrap(), ..Default::default() };
    let server = Server::start(HashMap::from([
        ("/classify/efficientnet_lite0.onnx".to_string(), route("classify/efficientnet_lite0.onnx")),
        ("/classify/imagenet_labels.txt".to_string(), route("classify/imagenet_labels.txt")),
    ]));
    let cache = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let (out, stdout, stderr) = run(strix(&fx, cache.path()).env("STRIX_MODEL_PATH", empty.path()).args([
        "models",
        "fetch",
        "efficientnet_lite0",
        "--hub",
        &server.url,
    ]));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&cache.path().display().to_string()), "{stdout}");
    drop(server);
    let (out, stdout, stderr) = run(strix(&fx, cache.path())
        .env("STRIX_MODEL_PATH", empty.path())
        .args(["predict", "--offline"])
        .arg(fx.join("images/coffee.png")));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("espresso"));

    // With an empty cache, offline mode names what it refused to do.
    let fresh = tempfile::tempdir().unwrap();
    let (out, _, stderr) = run(strix(&fx, fresh.path())
        .env("STRIX_MODEL_PATH", empty.path())
        .env("STRIX_HUB_URL", "http://127.0.0.1:9")
        .args(["predict", "--offline"])
        .arg(fx.join("images/coffee.png")));
    assert!(!out.status.success());
    assert!(stderr.contains("offline"), "{stderr}");
}
