//! `--threads` and `--workers` mean the same in predict, serve and stream: the threads are the
//! budget, the workers split it (one per thread by default).

use serde_json::Value;

use crate::fixtures_or_skip;
use crate::serve::request;
use crate::support::{photo_folder, run, spawn_serve, strix};

#[test]
fn threads_and_workers_mean_the_same_in_predict_serve_and_stream() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let images =
        photo_folder(&fx, &tmp.path().join("images"), &["apple.jpg", "orange.jpg", "baboon.jpg", "butterfly.jpg"]);
    let cases: [(&[&str], (u64, u64)); 3] =
        [(&["--threads", "2"], (2, 1)), (&["--threads", "2", "--workers", "1"], (1, 2)), (&["--threads", "1"], (1, 1))];
    for (flags, want) in cases {
        // predict: its summary line.
        let (out, _, stderr) = run(strix(&fx, tmp.path())
            .arg("predict")
            .arg(&images)
            .args(["--model", "efficientnet_lite0", "--batch", "1"])
            .args(flags));
        assert!(out.status.success(), "{stderr}");
        let said = format!("{} worker(s) x {} thread(s)", want.0, want.1);
        assert!(stderr.contains(&said), "predict {flags:?}: {stderr}");

        // stream: its summary.
        let (out, stdout, stderr) = run(strix(&fx, tmp.path())
            .arg("stream")
            .arg(&images)
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

        // serve: /v1/models.
        let (mut child, port) =
            spawn_serve(strix(&fx, tmp.path()).args(["serve", "--model", "efficientnet_lite0"]).args(flags));
        let model = &request(port, "GET", "/v1/models", &[], b"").json()["models"][0];
        let got = (model["workers"].as_u64().unwrap(), model["threads"].as_u64().unwrap());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(got, want, "serve {flags:?}: {model}");
    }
}
