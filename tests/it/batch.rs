//! `strix batch`, `strix worker` and `strix jobs` end to end: the binary against a real NATS with
//! JetStream (the machine's, or STRIX_TEST_NATS; a three-server cluster the test starts). Each
//! test names streams and a bucket of its own in a `--queue-config` file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{self, KillOnDrop, run, strix, wait_until};

const MODEL: &str = "efficientnet_lite0";

/// `n` different small photos `img-NNNN.jpg`: crops of the fixture photos at shifting offsets
/// and sizes, 96x96.
fn photos(fx: &Path, dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let sources: Vec<image::RgbImage> = ["apple.jpg", "baboon.jpg", "butterfly.jpg", "messi5.jpg", "orange.jpg"]
        .iter()
        .map(|f| image::open(fx.join("images").join(f)).unwrap().to_rgb8())
        .collect();
    for i in 0..n {
        let src = &sources[i % sources.len()];
        let (w, h) = src.dimensions();
        let short = w.min(h);
        let side = short / 2 + (i as u32 * 7) % (short / 2);
        let (x, y) = ((i as u32 * 13) % (w - side + 1), (i as u32 * 29) % (h - side + 1));
        let crop = image::imageops::crop_imm(src, x, y, side, side).to_image();
        let small = image::imageops::resize(&crop, 96, 96, image::imageops::FilterType::Triangle);
        small.save(dir.join(format!("img-{i:04}.jpg"))).unwrap();
    }
    dir.to_path_buf()
}

/// The machine's NATS URL, or `None` (skip) when nothing listens there outside CI.
pub(crate) fn machine_nats() -> Option<String> {
    let url = std::env::var("STRIX_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let address = url.trim_start_matches("nats://").split(',').next().unwrap_or_default().to_string();
    if std::net::TcpStream::connect(&address).is_ok() {
        return Some(url);
    }
    assert!(!support::in_ci(), "CI=true and no NATS with JetStream at {url}");
    eprintln!("skipped: no NATS at {url}");
    None
}

/// A queue settings file naming streams, bucket and consumer for this test alone.
pub(crate) fn queue_config(dir: &Path, url: &str, tag: &str, replicas: usize) -> PathBuf {
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
    let unique = format!("{}_{micros}_{tag}", std::process::id());
    let text = format!(
        "url = {url:?}\nstream = \"T_JOBS_{unique}\"\nsubject = \"t.{unique}\"\nstate_bucket = \"T_STATE_{unique}\"\n\
         log_stream = \"T_LOGS_{unique}\"\nconsumer = \"workers\"\nreplicas = {replicas}\nack_wait_ms = 2000\n\
         max_deliver = 2\nconnect_timeout_ms = 5000\n"
    );
    let path = dir.join(format!("queue-{tag}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// What every queue test starts from: `images` photos in `in/`, an `out/` to come, a cache and
/// a queue settings file of its own on the machine's NATS.
struct Setup {
    fx: PathBuf,
    dir: tempfile::TempDir,
    cache: PathBuf,
    input: PathBuf,
    out: PathBuf,
    config: PathBuf,
}

/// `None` (skip) without fixtures or NATS outside CI.
fn setup(tag: &str, images: usize) -> Option<Setup> {
    let fx = support::fixtures()?;
    let url = machine_nats()?;
    let dir = tempfile::tempdir().unwrap();
    let input = photos(&fx, &dir.path().join("in"), images);
    let config = queue_config(dir.path(), &url, tag, 1);
    let (cache, out) = (dir.path().join("cache"), dir.path().join("out"));
    Some(Setup { fx, dir, cache, input, out, config })
}

/// `strix WORDS... --queue-config CONFIG` with the test's cache and fixtures.
pub(crate) fn with_queue(fx: &Path, cache: &Path, config: &Path, words: &[&str]) -> Command {
    let mut cmd = strix(fx, cache);
    cmd.env_remove("STRIX_QUEUE").env("STRIX_HOME", cache.join("home"));
    cmd.args(words).arg("--queue-config").arg(config);
    cmd
}

/// A worker, its log in `dir/worker-NAME.log`.
pub(crate) fn worker(fx: &Path, cache: &Path, config: &Path, dir: &Path, name: &str) -> KillOnDrop {
    let log = std::fs::File::create(dir.join(format!("worker-{name}.log"))).unwrap();
    let mut cmd = with_queue(fx, cache, config, &["worker", "--name", name, "--threads", "1"]);
    KillOnDrop(cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap())
}

/// Queue a batch of `input` into `out`; its job id.
fn submit(fx: &Path, cache: &Path, config: &Path, input: &Path, out: &Path, shard_size: u32) -> String {
    let mut cmd = with_queue(fx, cache, config, &["batch"]);
    cmd.arg(input).arg("--out").arg(out);
    cmd.args(["--model", MODEL, "--shard-size", &shard_size.to_string()]);
    let (o, stdout, stderr) = run(&mut cmd);
    assert!(o.status.success(), "{stderr}");
    stdout.trim().to_string()
}

/// `strix jobs show ID --json`: the job and its tasks.
fn show(fx: &Path, cache: &Path, config: &Path, id: &str) -> (Value, Vec<Value>) {
    let (o, stdout, stderr) = run(&mut with_queue(fx, cache, config, &["jobs", "show", id, "--json"]));
    assert!(o.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    (v["job"].clone(), v["tasks"].as_array().unwrap().clone())
}

/// `strix jobs wait ID`: its exit status and stderr; a job not over within 5 minutes (a task
/// lost for good) fails the test instead of hanging it.
fn wait(fx: &Path, cache: &Path, config: &Path, id: &str) -> (bool, String) {
    let mut cmd = with_queue(fx, cache, config, &["jobs", "wait", id]);
    let mut child = KillOnDrop(cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
    let stderr = support::collect(child.0.stderr.take().unwrap());
    let mut status = None;
    wait_until(&format!("job {id} to end"), Duration::from_secs(300), || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    });
    let text = stderr.lock().unwrap().iter().map(|(_, l)| format!("{l}\n")).collect();
    (status.unwrap().success(), text)
}

/// The worker logs under `dir`, for a failure message.
pub(crate) fn logs(dir: &Path) -> String {
    support::files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| format!("--- {}\n{}", p.display(), std::fs::read_to_string(&p).unwrap_or_default()))
        .collect()
}

/// Every answer line of the shard files under `out`, by image file name; panics on an image
/// answered twice.
fn answers(out: &Path) -> BTreeMap<String, Value> {
    let mut by_image = BTreeMap::new();
    let mut files: Vec<PathBuf> =
        support::files_under(out).into_iter().filter(|p| p.extension().is_some_and(|e| e == "jsonl")).collect();
    files.sort();
    for file in files {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}: {line}", file.display()));
            let name = Path::new(v["Image"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
            assert!(by_image.insert(name.clone(), v).is_none(), "{name} answered twice");
        }
    }
    by_image
}

/// What `strix predict --json` answers for every image of `input`, by file name.
fn predicted(fx: &Path, cache: &Path, input: &Path) -> BTreeMap<String, Value> {
    let (o, stdout, stderr) = run(strix(fx, cache).args(["predict", "--model", MODEL, "--json", "-q"]).arg(input));
    assert!(!stdout.is_empty(), "predict answered nothing ({:?}): {stderr}", o.status);
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (Path::new(v["Image"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect()
}

/// Each batch answer is predict's: the same image set, top-1 equal, every score within 1e-4
/// (Confidence is 0-100), errors alike.
fn assert_same_as_predict(batch: &BTreeMap<String, Value>, predict: &BTreeMap<String, Value>) {
    assert_eq!(batch.keys().collect::<Vec<_>>(), predict.keys().collect::<Vec<_>>(), "not the same images");
    for (image, b) in batch {
        let p = &predict[image];
        assert_eq!(b["Error"]["Code"], p["Error"]["Code"], "{image}: {b} against {p}");
        if b.get("Error").is_some() {
            continue;
        }
        let (bl, pl) = (b["Labels"].as_array().unwrap(), p["Labels"].as_array().unwrap());
        assert_eq!((bl.len(), &bl[0]["Name"]), (pl.len(), &pl[0]["Name"]), "{image}: {b} against {p}");
        for (x, y) in bl.iter().zip(pl) {
            let gap = (x["Confidence"].as_f64().unwrap() - y["Confidence"].as_f64().unwrap()).abs();
            assert!(gap <= 1e-2, "{image}: {} {gap} points apart ({b} against {p})", x["Name"]);
        }
    }
}

fn manifest(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).unwrap()).unwrap()
}

#[test]
fn batch_here_answers_as_predict_does_and_a_rerun_redoes_only_broken_shards() {
    let fx = crate::fixtures_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = photos(&fx, &dir.path().join("in"), 22);
    std::fs::write(input.join("broken.jpg"), b"\xff\xd8\xff not a jpeg").unwrap();
    std::fs::write(input.join("notes.txt"), b"not an image, not an input").unwrap();
    let out = dir.path().join("out");
    let batch = || {
        let mut cmd = strix(&fx, &cache);
        cmd.env_remove("STRIX_QUEUE").arg("batch").arg(&input).arg("--out").arg(&out);
        run(cmd.args(["--model", MODEL, "--shard-size", "5"]))
    };
    // --here: a queue named in the environment (nothing listens there) is not used.
    let mut cmd = strix(&fx, &cache);
    cmd.env("STRIX_QUEUE", "nats://127.0.0.1:1").arg("batch").arg(&input).arg("--out").arg(&out);
    let (o, _, stderr) = run(cmd.args(["--model", MODEL, "--shard-size", "5", "--here"]));
    // One image does not decode: it gets its error line, the rest their answers, exit 1.
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("22 of 23 images answered"), "{stderr}");
    assert!(stderr.contains("broken.jpg"), "{stderr}");
    let first = answers(&out);
    assert_same_as_predict(&first, &predicted(&fx, &cache, &input));
    assert_eq!(first["broken.jpg"]["Error"]["Code"], "InvalidImageFormatException");
    let m = manifest(&out);
    assert_eq!(
        (m["status"].as_str(), m["images"].as_u64(), m["answered"].as_u64()),
        (Some("succeeded"), Some(23), Some(22))
    );
    assert_eq!(m["shards"].as_array().unwrap().len(), 5, "{m}");
    assert_eq!(m["failures"][0]["image"].as_str().map(|s| s.ends_with("broken.jpg")), Some(true), "{m}");
    assert_eq!(m["model"]["reference"], MODEL);
    assert_eq!(m["model"]["sha256"].as_str().map(str::len), Some(64));

    // A shard cut short and a shard gone are run again; the three complete ones are not touched.
    let part = |i: u32| out.join(format!("part-{i:05}.jsonl"));
    let text = std::fs::read_to_string(part(1)).unwrap();
    std::fs::write(part(1), &text[..text.len() / 2]).unwrap();
    std::fs::remove_file(part(3)).unwrap();
    let untouched: Vec<_> =
        [0, 2, 4].iter().map(|&i| std::fs::metadata(part(i)).unwrap().modified().unwrap()).collect();
    let (o, _, stderr) = batch();
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("3 already complete"), "{stderr}");
    let again: Vec<_> = [0, 2, 4].iter().map(|&i| std::fs::metadata(part(i)).unwrap().modified().unwrap()).collect();
    assert_eq!(untouched, again, "a complete shard was written again");
    assert_eq!(answers(&out), first);
    assert_eq!(manifest(&out)["answered"].as_u64(), Some(22));
    // All complete: nothing to queue, so the queue (nothing listens there) is not even asked.
    let mut cmd = strix(&fx, &cache);
    cmd.env_remove("STRIX_QUEUE").arg("batch").arg(&input).arg("--out").arg(&out);
    let (o, _, stderr) = run(cmd.args(["--model", MODEL, "--shard-size", "5", "--queue", "nats://127.0.0.1:1"]));
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("5 already complete") && stderr.contains("22 of 23 images answered"), "{stderr}");
}

#[test]
fn two_workers_one_killed_mid_shard_answer_every_image_exactly_once() {
    let Some(Setup { fx, dir, cache, input, out, config }) = setup("kill", 512) else { return };
    let mut a = worker(&fx, &cache, &config, dir.path(), "a");
    let _b = worker(&fx, &cache, &config, dir.path(), "b");
    let id = submit(&fx, &cache, &config, &input, &out, 64);
    // Worker a is in the middle of a shard (8 to 40 of its 64 images done when last said,
    // less than a second ago): its file is not written yet, and will not be before the kill.
    let mid_shard = |t: &Value| {
        t["status"] == "running"
            && t["worker"] == "a"
            && (8..=40).contains(&t["progress"]["done"].as_u64().unwrap_or(0))
    };
    wait_until("worker a in the middle of a shard", Duration::from_secs(180), || {
        std::thread::sleep(Duration::from_millis(100));
        show(&fx, &cache, &config, &id).1.iter().any(mid_shard)
    });
    a.0.kill().unwrap();
    let _ = a.0.wait();
    let tasks = show(&fx, &cache, &config, &id).1;
    let orphan =
        tasks.iter().find(|t| t["status"] == "running" && t["worker"] == "a").expect("the killed worker's shard");
    let orphan = orphan["index"].clone();
    let part = out.join(format!("part-{:05}.jsonl", orphan.as_u64().unwrap()));
    assert!(!part.exists(), "the killed worker's shard was written: the kill was not mid-shard");
    let (ok, stderr) = wait(&fx, &cache, &config, &id);
    assert!(ok, "{stderr}\n{}", logs(dir.path()));
    let (job, tasks) = show(&fx, &cache, &config, &id);
    assert_eq!((job["succeeded"].as_u64(), job["failed"].as_u64()), (Some(8), Some(0)), "{job}");
    let taken_again = tasks.iter().find(|t| t["index"] == orphan).unwrap();
    assert_eq!(
        (taken_again["worker"].as_str(), taken_again["attempts"].as_u64()),
        (Some("b"), Some(2)),
        "{taken_again}"
    );
    let batch = answers(&out);
    assert_eq!(batch.len(), 512);
    assert_same_as_predict(&batch, &predicted(&fx, &cache, &input));
    let m = manifest(&out);
    assert_eq!((m["status"].as_str(), m["answered"].as_u64()), (Some("succeeded"), Some(512)), "{m}");
    assert_eq!(m["job"].as_str(), Some(id.as_str()));
}

#[test]
fn a_batch_on_a_replicated_cluster_completes_when_a_server_stops() {
    let fx = crate::fixtures_or_skip!();
    let mut cluster = match strix_jobs::testing::NatsCluster::start() {
        Ok(c) => c,
        Err(e) if !support::in_ci() => return eprintln!("skipped: {e}"),
        Err(e) => panic!("CI=true and {e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = photos(&fx, &dir.path().join("in"), 160);
    let out = dir.path().join("out");
    let config = queue_config(dir.path(), &cluster.url(), "cluster", 3);
    // The streams, on all three servers once the cluster has its leader.
    let settings: strix_jobs::QueueSettings = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let queue =
        rt.block_on(cluster.queue(&settings, Duration::from_secs(60))).expect("the cluster never took the queue");
    let _w = [worker(&fx, &cache, &config, dir.path(), "a"), worker(&fx, &cache, &config, dir.path(), "b")];
    let id = submit(&fx, &cache, &config, &input, &out, 16);
    wait_until("two shards done", Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_millis(100));
        show(&fx, &cache, &config, &id).0["succeeded"].as_u64() >= Some(2)
    });
    // The task stream's leader goes, not just a follower.
    let leader = rt.block_on(cluster.task_stream_leader(&queue)).expect("the task stream's leader");
    cluster.stop(leader);
    let (ok, stderr) = wait(&fx, &cache, &config, &id);
    assert!(ok, "{stderr}\n{}", logs(dir.path()));
    let batch = answers(&out);
    assert_eq!(batch.len(), 160, "lost or doubled");
    assert_eq!(manifest(&out)["answered"].as_u64(), Some(160));
}

#[test]
fn a_poison_job_fails_with_its_error_and_the_next_job_completes() {
    let Some(Setup { fx, dir, cache, input, config, .. }) = setup("poison", 6) else { return };
    // A model that resolves when the batch is submitted and is gone when a worker looks.
    let gone = dir.path().join("gone");
    std::fs::create_dir_all(&gone).unwrap();
    let (o, spec, stderr) = run(strix(&fx, &cache).args(["models", "show", MODEL, "--toml"]));
    assert!(o.status.success(), "{stderr}");
    std::fs::write(gone.join("doomed.toml"), spec.replace(&format!("name = \"{MODEL}\""), "name = \"doomed\""))
        .unwrap();
    std::fs::create_dir_all(gone.join("classify")).unwrap();
    for file in ["efficientnet_lite0.onnx", "imagenet_labels.txt"] {
        std::fs::copy(fx.join("models/classify").join(file), gone.join("classify").join(file)).unwrap();
    }
    let mut cmd = with_queue(&fx, &cache, &config, &["batch"]);
    cmd.arg(&input).arg("--out").arg(dir.path().join("poisoned"));
    cmd.arg("--model").arg(gone.join("doomed.toml"));
    let (o, stdout, stderr) = run(&mut cmd);
    assert!(o.status.success(), "{stderr}");
    let poisoned = stdout.trim().to_string();
    std::fs::remove_dir_all(&gone).unwrap();
    let good = submit(&fx, &cache, &config, &input, &dir.path().join("good"), 3);
    let _w = worker(&fx, &cache, &config, dir.path(), "a");
    let (ok, stderr) = wait(&fx, &cache, &config, &poisoned);
    assert!(!ok, "the poison job succeeded: {stderr}");
    let (job, tasks) = show(&fx, &cache, &config, &poisoned);
    assert_eq!(job["status"], "failed", "{job}");
    assert!(tasks.iter().all(|t| t["attempts"] == 2 && t["status"] == "failed"), "max_deliver is 2: {tasks:?}");
    let (o, text, _) = run(&mut with_queue(&fx, &cache, &config, &["jobs", "show", &poisoned]));
    assert!(o.status.success());
    assert!(text.contains("doomed.toml"), "the error names the model: {text}");
    let (ok, stderr) = wait(&fx, &cache, &config, &good);
    assert!(ok, "{stderr}\n{}", logs(dir.path()));
    assert_eq!(answers(&dir.path().join("good")).len(), 6);
}

#[test]
fn a_cancelled_batch_starts_no_new_shard_and_its_manifest_says_so() {
    let Some(Setup { fx, dir, cache, out, config, .. }) = setup("cancel", 160) else { return };
    // Folders given relative to the submitter's folder: a worker elsewhere still finds them.
    let mut cmd = with_queue(&fx, &cache, &config, &["batch", "in", "--out", "out", "--shard-size", "2"]);
    let (o, stdout, stderr) = run(cmd.current_dir(dir.path()).args(["--model", MODEL]));
    assert!(o.status.success(), "{stderr}");
    let id = stdout.trim().to_string();
    let _w = worker(&fx, &cache, &config, dir.path(), "a");
    wait_until("a shard done", Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_millis(100));
        show(&fx, &cache, &config, &id).0["succeeded"].as_u64() >= Some(1)
    });
    let (o, stdout, stderr) = run(&mut with_queue(&fx, &cache, &config, &["jobs", "cancel", &id]));
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains(&id), "{stdout}");
    let cancelled_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let (ok, stderr) = wait(&fx, &cache, &config, &id);
    assert!(!ok, "a cancelled job is not a success: {stderr}");
    let (job, tasks) = show(&fx, &cache, &config, &id);
    assert_eq!(job["status"], "cancelled", "{job}");
    // At most the shard running at the cancel (and one taken in the same instant) starts after it.
    let late = tasks.iter().filter(|t| t["started_at"].as_f64().is_some_and(|s| s > cancelled_at + 1.0)).count();
    assert_eq!(late, 0, "shards started after the cancel: {tasks:?}");
    let never = tasks.iter().filter(|t| t["status"] == "cancelled" && t["attempts"] == 0).count();
    assert!(never >= 40, "only {never} of 80 shards were never started: {tasks:?}");
    let m = manifest(&out);
    assert_eq!((m["status"].as_str(), m["input"].as_str()), (Some("cancelled"), dir.path().join("in").to_str()), "{m}");
    let written = answers(&out).len();
    assert_eq!(m["answered"].as_u64(), Some(written as u64), "{m}");
    assert!(written < 160 && m["shards_not_done"].as_array().unwrap().len() >= 40, "{m}");
}

#[test]
fn a_batch_cancelled_before_any_worker_took_it_ends_with_its_manifest() {
    let Some(Setup { fx, dir: _dir, cache, input, out, config }) = setup("early", 4) else { return };
    let id = submit(&fx, &cache, &config, &input, &out, 2);
    let (o, stdout, stderr) = run(&mut with_queue(&fx, &cache, &config, &["jobs", "cancel", &id]));
    assert!(o.status.success() && stdout.contains("cancelled"), "{stdout}{stderr}");
    // No worker ever ran: the cancel itself ended the job, so waiting ends at once.
    let (ok, stderr) = wait(&fx, &cache, &config, &id);
    assert!(!ok, "{stderr}");
    let m = manifest(&out);
    assert_eq!((m["status"].as_str(), m["answered"].as_u64()), (Some("cancelled"), Some(0)), "{m}");
    assert_eq!(m["shards_not_done"].as_array().map(Vec::len), Some(2), "{m}");
}

#[test]
fn a_batch_reads_and_writes_s3_as_it_does_folders() {
    let fx = crate::fixtures_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let Some(s3) = crate::registry::S3Server::start(&dir.path().join("s3")) else { return };
    let cache = dir.path().join("cache");
    // The bucket's objects are the server's files: photos/ in, answers/ out.
    let bucket = s3.root.join(crate::registry::S3Server::BUCKET);
    let input = photos(&fx, &bucket.join("photos"), 7);
    std::fs::rename(input.join("img-0003.jpg"), input.join("img 0003 copy.jpg")).unwrap();
    let mut cmd = strix(&fx, &cache);
    crate::registry::clear_aws(&mut cmd);
    cmd.env_remove("STRIX_QUEUE").envs(s3.client_env()).arg("batch");
    let bucket_url = format!("s3://{}", crate::registry::S3Server::BUCKET);
    let (o, _, stderr) = run(cmd
        .args([&format!("{bucket_url}/photos"), "--out", &format!("{bucket_url}/answers")])
        .args(["--model", MODEL, "--shard-size", "3"]));
    assert!(o.status.success(), "{stderr}");
    let batch = answers(&bucket.join("answers"));
    assert!(batch.values().all(|v| v["Image"].as_str().unwrap().starts_with(&format!("{bucket_url}/photos/"))));
    assert_same_as_predict(&batch, &predicted(&fx, &cache, &input));
    let m = manifest(&bucket.join("answers"));
    assert_eq!((m["answered"].as_u64(), m["shards"].as_array().map(Vec::len)), (Some(7), Some(3)), "{m}");
}
