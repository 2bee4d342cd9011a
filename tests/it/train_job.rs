//! `strix train --queue`: a training run on workers through a real NATS JetStream queue, its
//! data and run folder in the registry's store.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::batch::{logs, machine_nats, queue_config, with_queue, worker};
use crate::support::{self, KillOnDrop, files_under, run, wait_until};
use crate::tune::digits_folder;

/// Acceptance: a run queued with `--register --wait` trains on a worker; the worker is killed
/// after the run's first checkpoint reached the store, and another continues the run from it
/// (not from scratch). The submitter follows the log, gets the run folder back, and the export
/// is registered with the job's run folder as its source.
#[test]
fn a_queued_run_survives_its_worker_and_comes_back_registered() {
    let (Some(fx), Some(url)) = (support::fixtures(), machine_nats()) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = digits_folder(&fx, dir.path());
    let config = queue_config(dir.path(), &url, "train", 1);
    let cache = dir.path().join("cache");
    let back = dir.path().join("back");
    let first = worker(&fx, &cache, &config, dir.path(), "w1");
    let mut cmd = with_queue(&fx, &cache, &config, &["train"]);
    cmd.arg("--data").arg(&data).args([
        "--model",
        "small-cnn",
        "--image-size",
        "16",
        "--epochs",
        "5",
        "--max-images",
        "700",
    ]);
    cmd.args(["--test", "false", "--register", "queued-digits", "--wait", "--run-dir"]).arg(&back);
    let mut submitter = KillOnDrop(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let stdout = support::collect(submitter.0.stdout.take().unwrap());
    let stderr = support::collect(submitter.0.stderr.take().unwrap());

    // The registry's store is the default one under STRIX_HOME.
    let store = cache.join("home/registry/jobs");
    let checkpoint = || files_under(&store).into_iter().any(|p| p.ends_with("run/last.ckpt"));
    let text = |lines: &support::Lines| lines.lock().unwrap().iter().map(|(_, l)| format!("{l}\n")).collect::<String>();
    let mut status = None;
    wait_until("the run's first checkpoint in the store", Duration::from_secs(180), || {
        status = submitter.0.try_wait().unwrap();
        checkpoint() || status.is_some()
    });
    assert!(status.is_none(), "{}\n{}\n{}", text(&stdout), text(&stderr), logs(dir.path()));
    drop(first);
    // Another machine: a cache of its own, the same registry.
    let log = std::fs::File::create(dir.path().join("worker-w2.log")).unwrap();
    let mut other = with_queue(&fx, &dir.path().join("cache2"), &config, &["worker", "--name", "w2", "--threads", "1"]);
    other.env("STRIX_HOME", cache.join("home"));
    let _second = KillOnDrop(other.stdout(Stdio::null()).stderr(log).spawn().unwrap());
    wait_until("the queued run to end", Duration::from_secs(300), || {
        status = submitter.0.try_wait().unwrap();
        status.is_some()
    });
    let (out, err) = (text(&stdout), text(&stderr));
    assert!(status.unwrap().success(), "{out}\n{err}\n{}", logs(dir.path()));
    assert!(out.contains(&format!("run: {}", back.display())) && out.contains("registered queued-digits:1"), "{out}");
    // The log came to the submitter: the second worker went on from the first one's checkpoint.
    assert!(err.contains("fetched the run folder a previous attempt left"), "{err}");
    assert!(err.contains("continuing the run a previous attempt left"), "{err}");
    assert!(err.contains("epoch   5:") && err.contains("gate passed"), "{err}");
    let id = err.split("queued as job ").nth(1).and_then(|s| s.split(';').next()).unwrap().to_string();

    let summary: Value = serde_json::from_str(&std::fs::read_to_string(back.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["epochs_run"], 5);
    assert!(back.join("export/model.onnx").is_file());
    let train_log = std::fs::read_to_string(back.join("train.log")).unwrap();
    assert!(train_log.contains("resumed at epoch"), "{train_log}");
    let mut show = support::strix(&fx, &cache);
    show.env("STRIX_HOME", cache.join("home")).args(["models", "show", "queued-digits:1", "--json"]);
    let (o, shown, e) = run(&mut show);
    assert!(o.status.success(), "{e}");
    let record: Value = serde_json::from_str(&shown).unwrap();
    let source = record["lineage"]["source"].as_str().unwrap();
    assert!(source.ends_with(&format!("jobs/{id}/run")), "{source}");
    assert!(Path::new(source).join("summary.json").is_file(), "{:?}", files_under(Path::new(source)));
    let (o, log, _) = run(&mut with_queue(&fx, &cache, &config, &["jobs", "logs", &id]));
    assert!(o.status.success() && log.contains("registered queued-digits:1"), "{log}");
}

/// Acceptance: `strix tune --queue`: every trial a training job on the workers, from one copy of
/// the data; the trials the pruner stops are cancelled jobs; each run folder comes back, the
/// best one with its export.
#[test]
fn tuning_trials_run_as_jobs_and_the_stopped_ones_are_cancelled() {
    let (Some(fx), Some(url)) = (support::fixtures(), machine_nats()) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = digits_folder(&fx, dir.path());
    let config = queue_config(dir.path(), &url, "tune", 1);
    let cache = dir.path().join("cache");
    let _workers = [worker(&fx, &cache, &config, dir.path(), "w1"), worker(&fx, &cache, &config, dir.path(), "w2")];
    let space = dir.path().join("space.toml");
    std::fs::write(&space, "[lr]\ntype = \"float\"\nlow = 1e-7\nhigh = 3e-2\nlog = true\n").unwrap();
    let folder = dir.path().join("tune");
    let mut cmd = with_queue(&fx, &cache, &config, &["tune"]);
    cmd.args([
        "--trials",
        "6",
        "--parallel",
        "2",
        "--strategy",
        "random",
        "--model",
        "small-cnn",
        "--image-size",
        "16",
    ]);
    // Epochs long enough (about a second each here) that a stopped trial's job is still
    // running when its cancel arrives, however fast training gets.
    cmd.args(["--epochs", "6", "--max-images", "1000", "--test", "false", "--data"]).arg(&data);
    cmd.arg("--space").arg(&space).arg("--out").arg(&folder);
    let (o, out, err) = run(&mut cmd);
    assert!(o.status.success(), "{out}\n{err}\n{}", logs(dir.path()));
    let tuning: Value = serde_json::from_str(&std::fs::read_to_string(folder.join("tuning.json")).unwrap()).unwrap();
    let states: Vec<&str> =
        tuning["study"]["trials"].as_array().unwrap().iter().map(|t| t["state"].as_str().unwrap()).collect();
    let pruned = states.iter().filter(|s| **s == "pruned").count();
    assert!(pruned >= 1 && states.len() == 6 && !states.contains(&"failed"), "{states:?}\n{err}");

    let (o, list, e) = run(&mut with_queue(&fx, &cache, &config, &["jobs", "list", "--json"]));
    assert!(o.status.success(), "{e}");
    let jobs: Vec<Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(jobs.iter().filter(|j| j["kind"] == "train").count(), 6);
    // Every stopped trial's job is asked to cancel, and none other; a job that ends before the
    // request reaches it (the tuner reads epochs from the job's log) finishes instead, so at
    // least one, not all, must have been stopped mid-run.
    let asked = jobs.iter().filter(|j| j["cancel_requested"] == true).count();
    let cancelled = jobs.iter().filter(|j| j["status"] == "cancelled").count();
    assert_eq!(asked, pruned, "{list}");
    assert!((1..=pruned).contains(&cancelled), "{cancelled} of {pruned} stopped trials' jobs cancelled: {list}");
    // One copy of the data for all six.
    let snapshots = files_under(&cache.join("home/registry/jobs")).iter().filter(|p| p.ends_with("0000.png")).count();
    assert_eq!(snapshots, 1);
    let best = out.lines().find_map(|l| l.strip_prefix("run: ")).unwrap();
    assert!(Path::new(best).join("export/model.onnx").is_file() && Path::new(best).join("summary.json").is_file());
}
