//! `--threads` and `--workers` mean the same in predict, serve and stream: the threads are the
//! budget, the workers split it (one per thread by default). Each command's report is checked
//! against what its workers counted themselves, so a run of one worker that reports two fails.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::fixtures_or_skip;
use crate::serve::request;
use crate::support::{KillOnDrop, run, spawn_serve, strix};

/// Images per run: with `--batch 1` each is a job of its own, enough that two workers both get
/// some however the scheduler treats them (one image takes tens of milliseconds).
const IMAGES: usize = 16;

/// Concurrent clients for serve, and requests each.
const CLIENTS: usize = 8;
const REQUESTS_EACH: usize = 2;

/// `IMAGES` copies of the fixture photos in `dir`.
fn photos(fx: &Path, dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let names = ["apple.jpg", "orange.jpg", "baboon.jpg", "butterfly.jpg"];
    (0..IMAGES)
        .map(|i| {
            let name = names[i % names.len()];
            let to = dir.join(format!("{i:02}-{name}"));
            std::fs::copy(fx.join("images").join(name), &to).unwrap();
            to
        })
        .collect()
}

/// What the workers said they did, `(images, threads)` each, checked against the plan wanted
/// (`(workers, threads)`) and the images sent: one count per worker, every worker busy, each on
/// its share of the threads, and nothing lost or counted twice.
fn check_workers(what: &str, counts: &[(u64, u64)], want: (u64, u64), sent: usize) {
    assert_eq!(counts.len() as u64, want.0, "{what}: one count per worker wanted {want:?}: {counts:?}");
    assert!(counts.iter().all(|&(images, _)| images > 0), "{what}: a worker did nothing: {counts:?}");
    assert!(counts.iter().all(|&(_, threads)| threads == want.1), "{what}: threads per worker {want:?}: {counts:?}");
    assert_eq!(counts.iter().map(|c| c.0).sum::<u64>(), sent as u64, "{what}: images in all: {counts:?}");
}

/// `[{"images": .., "threads": ..}, ...]` as pairs.
fn counts_of(per_worker: &Value) -> Vec<(u64, u64)> {
    let all = per_worker.as_array().unwrap_or_else(|| panic!("no per-worker counts: {per_worker}"));
    all.iter().map(|w| (w["images"].as_u64().unwrap(), w["threads"].as_u64().unwrap())).collect()
}

/// Predict's `[images per worker: 7, 9; threads per worker: 1, 1]` as pairs.
fn predict_counts(stderr: &str) -> Vec<(u64, u64)> {
    let list = |key: &str, end: char| -> Vec<u64> {
        let rest = &stderr[stderr.find(key).unwrap_or_else(|| panic!("no {key:?} in: {stderr}")) + key.len()..];
        rest[..rest.find(end).unwrap()].split(", ").map(|n| n.trim().parse().unwrap()).collect()
    };
    let (images, threads) = (list("images per worker: ", ';'), list("threads per worker: ", ']'));
    assert_eq!(images.len(), threads.len(), "{stderr}");
    images.into_iter().zip(threads).collect()
}

#[test]
fn threads_and_workers_mean_the_same_in_predict_serve_and_stream() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let images_dir = tmp.path().join("images");
    let files = photos(&fx, &images_dir);
    let cases: [(&[&str], (u64, u64)); 3] =
        [(&["--threads", "2"], (2, 1)), (&["--threads", "2", "--workers", "1"], (1, 2)), (&["--threads", "1"], (1, 1))];
    for (flags, want) in cases {
        // predict: its summary line, the plan and the workers' counts.
        let (out, _, stderr) = run(strix(&fx, tmp.path())
            .arg("predict")
            .arg(&images_dir)
            .args(["--model", "efficientnet_lite0", "--batch", "1"])
            .args(flags));
        assert!(out.status.success(), "{stderr}");
        let said = format!("{} worker(s) x {} thread(s)", want.0, want.1);
        assert!(stderr.contains(&said), "predict {flags:?}: {stderr}");
        check_workers(&format!("predict {flags:?}"), &predict_counts(&stderr), want, IMAGES);

        // stream: its summary.
        let (out, stdout, stderr) = run(strix(&fx, tmp.path())
            .arg("stream")
            .arg(&images_dir)
            .args([
                "--model",
                "efficientnet_lite0",
                "--json",
                "--events",
                &tmp.path().join("e.jsonl").display().to_string(),
            ])
            .args(flags));
        assert!(out.status.success(), "{stderr}");
        let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        let got =
            (summary["parallelism"]["workers"].as_u64().unwrap(), summary["parallelism"]["threads"].as_u64().unwrap());
        assert_eq!(got, want, "stream {flags:?}");
        check_workers(&format!("stream {flags:?}"), &counts_of(&summary["per_worker"]), want, IMAGES);

        // serve: /v1/models and /metrics after concurrent requests.
        let (child, port) =
            spawn_serve(strix(&fx, tmp.path()).args(["serve", "--model", "efficientnet_lite0"]).args(flags));
        let _child = KillOnDrop(child);
        let name =
            request(port, "GET", "/v1/models", &[], b"").json()["models"][0]["name"].as_str().unwrap().to_string();
        let route = format!("/v1/models/{name}/predict");
        // Rounds of concurrent requests until every worker has answered some (a loaded
        // machine may start one late), then the counts must add up to what was sent.
        let mut sent = 0;
        let busy = |model: &Value| counts_of(&model["per_worker"]).iter().filter(|c| c.0 > 0).count() as u64;
        for round in 0.. {
            assert!(round < 20, "serve {flags:?}: a worker never answered in {sent} requests");
            std::thread::scope(|scope| {
                for client in 0..CLIENTS {
                    let (files, route) = (&files, &route);
                    scope.spawn(move || {
                        for k in 0..REQUESTS_EACH {
                            let body = std::fs::read(&files[(client * REQUESTS_EACH + k) % files.len()]).unwrap();
                            let reply = request(port, "POST", route, &[("Content-Type", "image/jpeg")], &body);
                            assert_eq!(reply.status, 200, "serve {flags:?}: {}", reply.body);
                        }
                    });
                }
            });
            sent += CLIENTS * REQUESTS_EACH;
            if busy(&request(port, "GET", "/v1/models", &[], b"").json()["models"][0]) == want.0 {
                break;
            }
        }
        let model = &request(port, "GET", "/v1/models", &[], b"").json()["models"][0];
        let got = (model["workers"].as_u64().unwrap(), model["threads"].as_u64().unwrap());
        assert_eq!(got, want, "serve {flags:?}: {model}");
        check_workers(&format!("serve {flags:?}"), &counts_of(&model["per_worker"]), want, sent);
        let metrics = request(port, "GET", "/metrics", &[], b"").body;
        let prefix = format!("strix_worker_images_total{{model=\"{name}\",worker=\"");
        let from_metrics: Vec<(u64, u64)> = metrics
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            // The metric counts images only: the threads are taken as wanted.
            .map(|l| (l.rsplit(' ').next().unwrap().parse().unwrap(), want.1))
            .collect();
        check_workers(&format!("serve /metrics {flags:?}"), &from_metrics, want, sent);
    }
}
