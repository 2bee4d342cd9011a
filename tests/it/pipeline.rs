//! `strix pipeline run`: a labelling project's labels to a registered version with its alias
//! moved; an unchanged rerun runs no step; a condition not met registers nothing; a pipeline
//! killed while training resumes from the run's checkpoint; `monitor run --on-violation` runs
//! one.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::fixtures_or_skip;
use crate::support::run;
use crate::tune::{digits_folder, strix_in};

/// The fixture digits as class folders, every fourth image of each class moved to a test set.
fn digits_split(fx: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let train = digits_folder(fx, dir);
    let test = dir.join("digits-test");
    for class in std::fs::read_dir(&train).unwrap() {
        let class = class.unwrap().path();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&class).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let out = test.join(class.file_name().unwrap());
        std::fs::create_dir_all(&out).unwrap();
        for f in files.iter().step_by(4) {
            std::fs::rename(f, out.join(f.file_name().unwrap())).unwrap();
        }
    }
    (train, test)
}

/// A pipeline file in `dir`: the project's snapshot, the small CNN with `train` settings over
/// the shared ones, the test set, `when`, registered as `digits` with `production` moved.
fn pipeline(dir: &Path, name: &str, project: &Path, test: &Path, train: &str, when: &str) -> PathBuf {
    let file = dir.join(name);
    let text = format!(
        "[snapshot]\nproject = {project:?}\n\n[train]\nmodel = \"small-cnn\"\nimage_size = 16\nthreads = 2\nseed = 3\n\
         val_fraction = 0.2\nmax_images = 700\n{train}\n\n[evaluate]\ndata = {test:?}\n\n[condition]\nwhen = {when:?}\n\n\
         [register]\nmodel = \"digits\"\nalias = \"production\"\n",
        project = project.display().to_string(),
        test = test.display().to_string(),
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// `strix pipeline run FILE --json`: the exit code and its report.
fn pipeline_run(fx: &Path, tmp: &Path, file: &Path) -> (Option<i32>, Value, String) {
    let (out, stdout, stderr) = run(strix_in(fx, tmp).args(["pipeline", "run", "--json"]).arg(file));
    // Only the report on stdout: training's and tuning's words go to stderr.
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code(), report, format!("{stdout}\n{stderr}"))
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .map(|s| s.iter().map(|s| (s["step"].as_str().unwrap().into(), s["status"].as_str().unwrap().into())).collect())
        .unwrap_or_default()
}

/// How many versions of `digits` there are and the one `production` points to.
fn versions(fx: &Path, tmp: &Path) -> (usize, u64) {
    let show = |reference: &str| {
        let (out, stdout, stderr) = run(strix_in(fx, tmp).args(["models", "show", reference, "--json"]));
        assert!(out.status.success(), "{stderr}");
        serde_json::from_str::<Value>(&stdout).unwrap()
    };
    let all = show("digits").as_array().map_or(0, Vec::len);
    (all, show("digits@production")["version"].as_u64().unwrap())
}

/// Acceptance: the first run registers digits:1 and moves `production`; the rerun runs 0
/// steps; a worse candidate (one short epoch) fails `>= production` and registers nothing; a
/// run killed inside its second epoch resumes on the rerun and registers digits:2.
#[test]
fn a_pipeline_registers_then_caches_then_refuses_then_resumes() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = digits_split(&fx, tmp.path());
    let project = tmp.path().join("digits-labels");
    let (out, _, stderr) = run(strix_in(&fx, tmp.path())
        .args(["label", "import", "--format", "folder", "--images"])
        .arg(&train)
        .arg(&project));
    assert!(out.status.success(), "{stderr}");

    let when = "test.accuracy >= 0.5 and >= production";
    let file = pipeline(tmp.path(), "retrain.toml", &project, &test, "epochs = 3", when);
    let (code, report, stderr) = pipeline_run(&fx, tmp.path(), &file);
    assert_eq!(code, Some(0), "{stderr}");
    let all_ran: Vec<(String, String)> = ["snapshot", "train", "evaluate", "condition", "register", "alias"]
        .iter()
        .map(|s| (s.to_string(), "ran".to_string()))
        .collect();
    assert_eq!(statuses(&report), all_ran, "{report}");
    let accuracy = report["steps"][2]["output"]["candidate"]["figures"]["accuracy"].as_f64().unwrap();
    assert!(report["steps"][2]["output"]["aliases"]["production"].is_null(), "{report}");
    assert_eq!(versions(&fx, tmp.path()), (1, 1));
    assert!(tmp.path().join("retrain.pipeline/steps/train.json").is_file());
    serve_watches_with_the_registered_baseline(&fx, tmp.path(), &test);

    let (code, report, stderr) = pipeline_run(&fx, tmp.path(), &file);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["ran"], 0, "{report}");
    assert!(statuses(&report).iter().all(|(_, s)| s == "cached"), "{report}");
    on_violation_runs_the_pipeline(&fx, tmp.path(), &test, &file);

    // An edited condition is checked again, though the model is registered: not met, exit 4;
    // written back, the candidate is production itself, which it need not beat.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace(when, "test.accuracy >= 0.99 and >= production")).unwrap();
    let (code, report, stderr) = pipeline_run(&fx, tmp.path(), &file);
    assert_eq!(code, Some(4), "{stderr}");
    assert_eq!(report["ran"], 1, "{report}");
    std::fs::write(&file, &text).unwrap();
    let (code, report, stderr) = pipeline_run(&fx, tmp.path(), &file);
    assert_eq!(code, Some(0), "{stderr}");
    let clause = report["steps"][3]["output"]["clauses"][1]["text"].as_str().unwrap();
    assert!(clause.ends_with("production (digits:1, this very model)"), "{report}");
    assert_eq!(versions(&fx, tmp.path()), (1, 1));
    // A mistyped alias, while the model has versions, is an error, not a pass.
    std::fs::write(&file, text.replace(when, "test.accuracy >= 0.5 and >= productoin")).unwrap();
    let (code, _, stderr) = pipeline_run(&fx, tmp.path(), &file);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("has no alias \"productoin\""), "{stderr}");
    std::fs::write(&file, &text).unwrap();

    // One short epoch at a learning rate too small to learn: worse on the test set than
    // production, so nothing is registered.
    let worse = pipeline(tmp.path(), "worse.toml", &project, &test, "epochs = 1\nlr = 0.000001", when);
    let (code, report, stderr) = pipeline_run(&fx, tmp.path(), &worse);
    assert_eq!(code, Some(4), "{stderr}\n{report}");
    let steps = statuses(&report);
    assert_eq!(steps.last().unwrap(), &("condition".to_string(), "ran".to_string()), "{report}");
    let verdict = &report["steps"][3]["output"];
    assert_eq!(verdict["met"], false, "{verdict}");
    let production = verdict["clauses"][1]["text"].as_str().unwrap();
    assert!(production.contains(&format!("production {accuracy:.4}")), "{production}");
    assert_eq!(versions(&fx, tmp.path()), (1, 1));

    // Killed inside epoch 2 (checkpoints every ~0.1 s), then run again: the run resumes.
    let resumed = pipeline(
        tmp.path(),
        "resumed.toml",
        &project,
        &test,
        "epochs = 3\nbatch_size = 16\ncheckpoint_minutes = 0.002",
        "test.accuracy >= 0.5",
    );
    let mut child = strix_in(&fx, tmp.path())
        .args(["pipeline", "run"])
        .arg(&resumed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let runs = tmp.path().join("resumed.pipeline/runs");
    let started = std::time::Instant::now();
    let run_dir = loop {
        if let Some(dir) = std::fs::read_dir(&runs).ok().and_then(|mut d| d.next()).map(|e| e.unwrap().path()) {
            break dir;
        }
        assert!(child.try_wait().unwrap().is_none(), "the pipeline ended before it trained");
        assert!(started.elapsed().as_secs() < 300, "no run folder in {}", runs.display());
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    crate::train::kill_inside_epoch_2(child, &run_dir);
    let (code, report, stderr) = pipeline_run(&fx, tmp.path(), &resumed);
    assert_eq!(code, Some(0), "{stderr}\n{report}");
    assert_eq!(statuses(&report)[1], ("train".to_string(), "resumed".to_string()), "{report}");
    let log = std::fs::read_to_string(run_dir.join("train.log")).unwrap();
    assert!(log.contains("resumed at epoch 2"), "{log}");
    assert_eq!(versions(&fx, tmp.path()), (2, 2));
    eprintln!("pipeline: digits:1 test accuracy {accuracy:.4}; the resumed run registered digits:2");
}

/// `strix monitor run --on-violation`: inverted test digits against a baseline of the test
/// digits run the pipeline (unchanged here: nothing runs) and still exit 3.
fn on_violation_runs_the_pipeline(fx: &Path, tmp: &Path, test: &Path, pipeline: &Path) {
    let base = tmp.join("digits-baseline");
    let (out, _, stderr) = run(strix_in(fx, tmp)
        .args(["--quiet", "monitor", "baseline", "--model", "digits@production", "--embedding", "none", "--data"])
        .arg(test)
        .arg("--out")
        .arg(&base));
    assert!(out.status.success(), "{stderr}");
    let inverted = tmp.join("inverted");
    std::fs::create_dir_all(&inverted).unwrap();
    for class in std::fs::read_dir(test).unwrap() {
        for f in std::fs::read_dir(class.unwrap().path()).unwrap().take(6) {
            let f = f.unwrap().path();
            let mut img = image::open(&f).unwrap().to_luma8();
            image::imageops::invert(&mut img);
            img.save(inverted.join(f.file_name().unwrap())).unwrap();
        }
    }
    let (out, stdout, stderr) = run(strix_in(fx, tmp)
        .args(["monitor", "run", "--json", "--baseline"])
        .arg(&base)
        .arg("--data")
        .arg(&inverted)
        .arg("--out")
        .arg(tmp.join("monitor"))
        .arg("--on-violation")
        .arg(pipeline));
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let lines: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines[0]["violations"].as_array().unwrap().is_empty(), "{stdout}");
    assert_eq!(lines.last().unwrap()["ran"], 0, "{stdout}");
    assert!(stderr.contains("violations: running the pipeline"), "{stderr}");
}

/// `strix serve --monitor` on digits@production with no --baseline: the version's own baseline
/// (its run's validation images) is used; test digits raise nothing, the same digits inverted
/// (white ink on black becomes black on white) are flagged on brightness.
fn serve_watches_with_the_registered_baseline(fx: &Path, tmp: &Path, test: &Path) {
    use crate::serve::request;
    use crate::support::{KillOnDrop, free_port, wait_for_port};
    let port = free_port();
    let _serve = KillOnDrop(
        strix_in(fx, tmp)
            .args(["serve", "--model", "digits@production", "--port", &port.to_string(), "--monitor"])
            .args(["--monitor-window", "40", "--monitor-every", "40"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port);
    let mut files: Vec<PathBuf> = std::fs::read_dir(test)
        .unwrap()
        .flat_map(|c| std::fs::read_dir(c.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    // By file name: the digits' own order, every class mixed (by path they come class by class,
    // and the monitor rightly flags a window of zeros and ones).
    files.sort_by_key(|f| f.file_name().unwrap().to_os_string());
    let send_and_wait = |invert: bool, tests: u64| {
        for f in files.iter().step_by(3).take(40) {
            let mut img = image::open(f).unwrap().to_luma8();
            if invert {
                image::imageops::invert(&mut img);
            }
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
            let r = request(port, "POST", "/v1/models/digits/predict", &[("Content-Type", "image/png")], &png);
            assert_eq!(r.status, 200, "{}", r.body);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let s = request(port, "GET", "/v1/models/digits/monitor", &[], b"").json();
            if s["tests"].as_u64() == Some(tests) {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "the monitor never ran test {tests}: {s}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let s = send_and_wait(false, 1);
    assert!(s["baseline"].as_str().unwrap().ends_with("registry/digits/1/baseline"), "{s}");
    assert_eq!(s["violations_total"], 0, "{s}");
    let s = send_and_wait(true, 2);
    assert_eq!(s["violations_by_feature"]["brightness"], 1, "{s}");
}

/// Bad pipeline files are refused before any step, naming the problem.
#[test]
fn bad_pipeline_files_are_refused_before_any_step() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("[train]\ndata = \"d\"\n[tune]\ntrials = 2\n", "both given"),
        ("[train]\ndata = \"d\"\nrun_dir = \"x\"\n", "the pipeline sets this itself"),
        ("[train]\ndata = \"d\"\n[condition]\nwhen = \"test.acc >= 1\"\n", "is not a figure"),
        ("[train\n", "TOML parse error"),
        ("[train]\ndata = \"d\"\n[register]\nmodel = \"m\"\nalias = \"a/b\"\n", "[register]"),
        ("[train]\ndata = \"d\"\n[register]\nmodel = \"efficientnet_lite0\"\n", "a zoo model's name"),
        ("[train]\ndata = \"d\"\n[evaluate]\ndata = \"nowhere\"\n", "no such file or folder"),
        ("[train]\ndata = \"d\"\n[condition]\nwhen = \"val.map >= 0.5\"\n", "a classify model has no `val.map`"),
    ] {
        let file = tmp.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let (out, _, stderr) = run(strix_in(&fx, tmp.path()).args(["pipeline", "run"]).arg(&file));
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
        assert!(!tmp.path().join("bad.pipeline").exists(), "{text}: a state folder was made");
    }
}

/// `[tune]`: a two-trial search on the digits, its best trial's run registered; a rerun runs
/// nothing.
#[test]
fn a_tune_pipeline_registers_the_best_trial_once() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let data = digits_folder(&fx, tmp.path());
    let file = tmp.path().join("tuned.toml");
    std::fs::write(
        &file,
        format!(
            "[tune]\ndata = {:?}\nmodel = \"small-cnn\"\nimage_size = 16\nepochs = 2\nthreads = 2\nmax_images = 300\n\
             val_fraction = 0.2\ntest = false\ntrials = 2\nstrategy = \"random\"\n\n[register]\nmodel = \"digits-tuned\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let (code, report, stderr) = pipeline_run(&fx, tmp.path(), &file);
    assert_eq!(code, Some(0), "{stderr}");
    let ran = [("tune", "ran"), ("register", "ran")].map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(statuses(&report), ran, "{report}");
    assert!(report["steps"][0]["output"]["run"].as_str().unwrap().contains("tuned.pipeline/runs/tune-"), "{report}");
    let (code, report, stderr) = pipeline_run(&fx, tmp.path(), &file);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["ran"], 0, "{report}");
}
