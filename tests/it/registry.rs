//! The model registry through the CLI, on both backend pairs: a local folder + SQLite, and a
//! real S3 server (s3s-fs, installed by scripts/setup) + the real PostgreSQL on 127.0.0.1.
//! The same contract runs on each; then concurrent registrations, kill -9 in the middle of an
//! upload, bad input, and a trained run registered with its lineage.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures_or_skip;
use crate::support::{files_under, in_ci, run, strix};
use crate::train::{fashion, train_cmd};

/// One backend pair: the environment that points `strix` at it, and the folder where its
/// bytes land (watched by the kill test).
pub(crate) struct Registry {
    what: &'static str,
    env: Vec<(String, String)>,
    /// Where uploads write files.
    watch: PathBuf,
    _s3: Option<S3Server>,
    _schema: Option<PgSchema>,
}

impl Registry {
    pub(crate) fn local(dir: &Path) -> Registry {
        let store = dir.join("registry");
        Registry {
            what: "local folder + SQLite",
            env: vec![
                ("STRIX_HOME".into(), dir.join("home").display().to_string()),
                ("STRIX_REGISTRY_STORE".into(), store.display().to_string()),
                ("STRIX_REGISTRY_DB".into(), format!("sqlite://{}?mode=rwc", store.join("registry.db").display())),
            ],
            watch: store,
            _s3: None,
            _schema: None,
        }
    }

    /// s3s-fs on a free loopback port and a fresh PostgreSQL schema; `None` (skipped) outside
    /// CI when either is missing.
    fn remote(dir: &Path, tag: &str) -> Option<Registry> {
        let s3 = S3Server::start(&dir.join("s3"))?;
        let schema = PgSchema::create(tag)?;
        let mut env = vec![
            ("STRIX_HOME".into(), dir.join("home").display().to_string()),
            ("STRIX_REGISTRY_STORE".into(), format!("s3://{}/team/models", S3Server::BUCKET)),
            ("STRIX_REGISTRY_DB".into(), schema.url.clone()),
        ];
        env.extend(s3.client_env());
        Some(Registry {
            what: "S3 (s3s-fs) + PostgreSQL",
            env,
            watch: s3.root.clone(),
            _s3: Some(s3),
            _schema: Some(schema),
        })
    }

    pub(crate) fn cmd(&self, fx: &Path, cache: &Path) -> Command {
        let mut cmd = strix(fx, cache);
        clear_aws(&mut cmd);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// No S3 setting of the machine's own (a profile, another endpoint) reaches `cmd`.
pub(crate) fn clear_aws(cmd: &mut Command) {
    for k in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT", "AWS_ALLOW_HTTP"] {
        cmd.env_remove(k);
    }
}

/// A real S3 protocol server on a folder: bucket `BUCKET` is `root/BUCKET`.
pub(crate) struct S3Server {
    child: Child,
    pub(crate) port: u16,
    pub(crate) root: PathBuf,
}

impl S3Server {
    pub(crate) const BUCKET: &str = "strix-test";
    pub(crate) const KEY: &str = "strixtestkey";
    pub(crate) const SECRET: &str = "strixtestsecret";

    fn binary() -> Option<PathBuf> {
        let candidates = [
            std::env::var_os("STRIX_S3_SERVER").map(PathBuf::from),
            // Where scripts/setup installs it (scripts/env.sh sets STRIX_S3_SERVER to this).
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/strix-tools/bin/s3s-fs")),
        ];
        let found = candidates.into_iter().flatten().find(|p| p.is_file());
        if found.is_none() {
            assert!(!in_ci(), "s3s-fs not found (./scripts/setup installs it); CI must test the S3 registry");
            eprintln!("skipped: s3s-fs not found (run ./scripts/setup)");
        }
        found
    }

    /// Started on a free port, or `None` (skipped) outside CI when s3s-fs is not installed.
    pub(crate) fn start(root: &Path) -> Option<S3Server> {
        let bin = Self::binary()?;
        std::fs::create_dir_all(root.join(Self::BUCKET)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", Self::KEY, "--secret-key", Self::SECRET])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let server = S3Server { child, port, root: root.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }
}

impl S3Server {
    /// What a client needs to reach it: the `AWS_*` variables.
    pub(crate) fn client_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), Self::KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), Self::SECRET.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), format!("http://127.0.0.1:{}", self.port)),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A schema of its own in the `test` database, so parallel tests do not share tables.
struct PgSchema {
    name: String,
    url: String,
}

impl PgSchema {
    fn psql(sql: &str) -> Result<(), String> {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", "5432", "-d", "test", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    }

    fn create(tag: &str) -> Option<PgSchema> {
        let name = format!("strix_it_{tag}_{}", std::process::id());
        match Self::psql(&format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")) {
            Ok(()) => {}
            Err(e) => {
                assert!(!in_ci(), "PostgreSQL on 127.0.0.1:5432 (database test) is needed in CI: {e}");
                eprintln!("skipped: no PostgreSQL: {e}");
                return None;
            }
        }
        // The role psql logged in as: the OS user (trust auth).
        let user =
            Command::new("id").arg("-un").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let user = user.ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "postgres".into());
        let url = format!("postgres://{user}@127.0.0.1:5432/test?options=-c%20search_path%3D{name}");
        Some(PgSchema { name, url })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = Self::psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

/// A zoo model's ONNX file copied out with its spec beside it, as a user would have them.
pub(crate) fn model_files(fx: &Path, cache: &Path, dir: &Path, zoo: &str, onnx: &str, stem: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let target = dir.join(format!("{stem}.onnx"));
    std::fs::copy(fx.join("models").join(onnx), &target).unwrap();
    let (out, spec, stderr) = run(strix(fx, cache).args(["models", "show", zoo, "--toml"]));
    assert!(out.status.success(), "{stderr}");
    // The spec names its weights by the file beside it, as `--model FILE.onnx` expects.
    let mut spec: toml::Table = spec.parse().unwrap();
    spec["weights"].as_table_mut().unwrap().insert("file".into(), format!("{stem}.onnx").into());
    // A labels file goes beside it too, at the path the spec gives.
    if let Some(labels) = spec.get("labels").and_then(|l| l.get("file")).and_then(|f| f.as_str()) {
        std::fs::create_dir_all(dir.join(labels).parent().unwrap()).unwrap();
        std::fs::copy(fx.join("models").join(labels), dir.join(labels)).unwrap();
    }
    std::fs::write(dir.join(format!("{stem}.toml")), toml::to_string(&spec).unwrap()).unwrap();
    target
}

pub(crate) fn ok_json(cmd: &mut Command) -> Value {
    let (out, stdout, stderr) = run(cmd);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

pub(crate) fn fails(cmd: &mut Command, needle: &str) -> String {
    let (out, _, stderr) = run(cmd);
    assert!(!out.status.success(), "succeeded, expected an error naming {needle:?}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    stderr
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// The contract every backend pair keeps.
fn contract(reg: &Registry, fx: &Path, tmp: &Path) {
    let cache = tmp.join("cache");
    let onnx = model_files(fx, &cache, &tmp.join("user"), "selfie_256", "segment/selfie_256.onnx", "seg");
    let strix = || reg.cmd(fx, &cache);
    let what = reg.what;

    let v1 = ok_json(strix().args(["models", "register"]).arg(&onnx).args(["--name", "seg", "--json"]));
    assert_eq!(v1["version"], 1, "{what}: {v1}");
    let files: BTreeSet<&str> =
        v1["artifacts"].as_array().unwrap().iter().map(|a| a["file"].as_str().unwrap()).collect();
    assert_eq!(files, BTreeSet::from(["model.toml", "seg.onnx"]), "{what}");
    let onnx_record = v1["artifacts"].as_array().unwrap().iter().find(|a| a["file"] == "seg.onnx").unwrap();
    assert_eq!(onnx_record["sha256"], sha256(&onnx), "{what}");
    assert_eq!(v1["lineage"]["source"], std::path::absolute(&onnx).unwrap().display().to_string());

    let v2 = ok_json(
        strix().args(["models", "register"]).arg(&onnx).args(["--name", "seg", "--json", "--alias", "staging"]),
    );
    assert_eq!(v2["version"], 2, "{what}");
    assert_eq!(v2["aliases"], serde_json::json!(["staging"]), "{what}");

    // Aliases point and move.
    let (out, _, stderr) = run(strix().args(["models", "alias", "seg", "1", "production"]));
    assert!(out.status.success(), "{what}: {stderr}");
    assert_eq!(ok_json(strix().args(["models", "show", "seg@production", "--json"]))["version"], 1, "{what}");
    let (out, _, stderr) = run(strix().args(["models", "alias", "seg", "2", "production"]));
    assert!(out.status.success(), "{what}: {stderr}");
    assert_eq!(ok_json(strix().args(["models", "show", "seg@production", "--json"]))["version"], 2, "{what}");
    assert_eq!(ok_json(strix().args(["models", "show", "seg", "--json"])).as_array().unwrap().len(), 2, "{what}");
    fails(strix().args(["models", "show", "seg@canary"]), "no alias \"canary\"");
    fails(strix().args(["models", "show", "seg:7"]), "has no version 7");
    fails(strix().args(["models", "alias", "seg", "9", "production"]), "has no version 9");

    // A registered version predicts exactly as the files it came from.
    let image = fx.join("images/messi5.jpg");
    let predict = |model: &str| {
        let (out, stdout, stderr) = run(strix().args(["predict", "--json", "--model", model]).arg(&image));
        assert!(out.status.success(), "{what}: predict {model}: {stderr}");
        let mut v: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        v.as_object_mut().unwrap().retain(|k, _| !k.ends_with("ModelVersion") && k != "Image");
        v
    };
    let direct = predict(&onnx.display().to_string());
    assert_eq!(predict("seg@production"), direct, "{what}");
    assert_eq!(predict("seg:1"), direct, "{what}");

    // Download: every file, checked.
    let out_dir = tmp.join("dl");
    let (out, _, stderr) = run(strix().args(["models", "download", "seg:1", "--out"]).arg(&out_dir));
    assert!(out.status.success(), "{what}: {stderr}");
    assert_eq!(std::fs::read(out_dir.join("seg.onnx")).unwrap(), std::fs::read(&onnx).unwrap(), "{what}");

    // Deleted numbers are never given out again.
    let (out, _, stderr) = run(strix().args(["models", "delete", "seg:1"]));
    assert!(out.status.success(), "{what}: {stderr}");
    fails(strix().args(["models", "show", "seg:1"]), "has no version 1");
    fails(strix().args(["models", "delete", "seg"]), "--all");
    let v3 = ok_json(strix().args(["models", "register"]).arg(&onnx).args(["--name", "seg", "--json"]));
    assert_eq!(v3["version"], 3, "{what}");
    let list = ok_json(strix().args(["models", "list", "--json"]));
    let row = list.as_array().unwrap().iter().find(|r| r["origin"] == "registry").expect("registry row");
    assert_eq!(row["name"], "seg:3", "{what}");
    assert!(row["summary"].as_str().unwrap().contains("2 versions"), "{what}: {row}");

    // Files shared by live versions survive gc; once every version is gone, gc frees them.
    let gc = ok_json(strix().args(["models", "gc", "--grace-minutes", "0", "--json"]));
    assert_eq!(gc["blobs_removed"], 0, "{what}: {gc}");
    let (out, _, stderr) = run(strix().args(["models", "delete", "seg", "--all"]));
    assert!(out.status.success(), "{what}: {stderr}");
    let gc = ok_json(strix().args(["models", "gc", "--grace-minutes", "0", "--json"]));
    assert_eq!(gc["blobs_removed"], 2, "{what}: {gc}");
    let (out, stdout, _) = run(strix().args(["models", "verify"]));
    assert!(out.status.success() && stdout.contains("consistent: 0 versions"), "{what}: {stdout}");
    fails(strix().args(["models", "show", "seg:3"]), "no model called \"seg\"");
}

#[test]
fn registry_contract_local_folder_and_sqlite() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    contract(&Registry::local(tmp.path()), &fx, tmp.path());
}

#[test]
fn registry_contract_s3_and_postgres() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let Some(reg) = Registry::remote(tmp.path(), "contract") else { return };
    contract(&reg, &fx, tmp.path());
}

/// Three processes register the same name at the same moment: all succeed, numbers distinct.
fn concurrent(reg: &Registry, fx: &Path, tmp: &Path) {
    let cache = tmp.join("cache");
    let onnx = model_files(fx, &cache, &tmp.join("user"), "selfie_256", "segment/selfie_256.onnx", "seg");
    let children: Vec<Child> = (0..3)
        .map(|_| {
            reg.cmd(fx, &cache)
                .args(["models", "register"])
                .arg(&onnx)
                .args(["--name", "race", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut versions = BTreeSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}: {}", reg.what, String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        versions.insert(v["version"].as_u64().unwrap());
    }
    assert_eq!(versions, BTreeSet::from([1, 2, 3]), "{}", reg.what);
}

#[test]
fn concurrent_registrations_get_distinct_versions_local() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    concurrent(&Registry::local(tmp.path()), &fx, tmp.path());
}

#[test]
fn concurrent_registrations_get_distinct_versions_s3_postgres() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let Some(reg) = Registry::remote(tmp.path(), "race") else { return };
    concurrent(&reg, &fx, tmp.path());
}

/// Files in a store, the SQLite database aside.
fn store_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = files_under(dir);
    files.retain(|p| !p.extension().is_some_and(|x| x == "db" || x == "db-journal"));
    files
}

/// kill -9 as soon as the first byte of an 18 MB upload lands in the store: no version may
/// appear, the registry stays consistent, gc cleans up, and registering again works.
fn kill_mid_upload(reg: &Registry, fx: &Path, tmp: &Path) {
    let cache = tmp.join("cache");
    let onnx =
        model_files(fx, &cache, &tmp.join("user"), "efficientnet_lite0", "classify/efficientnet_lite0.onnx", "big");
    let strix = || reg.cmd(fx, &cache);
    // Make sure the store exists (and holds a version of another model) before the kill.
    let seg = model_files(fx, &cache, &tmp.join("user"), "selfie_256", "segment/selfie_256.onnx", "seg");
    ok_json(strix().args(["models", "register"]).arg(&seg).args(["--name", "other", "--json"]));
    let before: BTreeSet<PathBuf> = store_files(&reg.watch).into_iter().collect();

    let mut child = strix().args(["models", "register"]).arg(&onnx).args(["--name", "big"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if store_files(&reg.watch).iter().any(|p| !before.contains(p)) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "{}: register finished before the upload was seen", reg.what);
        assert!(Instant::now() < deadline, "{}: no upload seen", reg.what);
        std::thread::sleep(Duration::from_micros(500));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let leftovers = store_files(&reg.watch).into_iter().filter(|p| !before.contains(p)).count();
    eprintln!("{}: killed mid-upload, {leftovers} new file(s) left in the store", reg.what);

    // No half version: the name does not exist, the other model is whole.
    fails(strix().args(["models", "show", "big:1"]), "no model called \"big\"");
    let list = ok_json(strix().args(["models", "list", "--json"]));
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["origin"] == "registry")
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other:1"], "{}", reg.what);
    let (out, _, stderr) = run(strix().args(["models", "download", "other:1", "--out"]).arg(tmp.join("other")));
    assert!(out.status.success(), "{}: {stderr}", reg.what);
    let (out, stdout, stderr) = run(strix().args(["models", "verify"]));
    assert!(out.status.success() && stdout.contains("consistent: 1 versions"), "{}: {stdout}{stderr}", reg.what);

    // gc removes what the killed upload left (the S3 server keeps unfinished multipart
    // parts of its own; only completed objects are ours to delete).
    let gc = ok_json(strix().args(["models", "gc", "--grace-minutes", "0", "--json"]));
    eprintln!("{}: gc after the kill: {gc}", reg.what);
    if reg._s3.is_none() {
        assert_eq!(store_files(&reg.watch).into_iter().filter(|p| !before.contains(p)).count(), 0, "{}", reg.what);
    }

    // And the registration goes through when tried again.
    let v = ok_json(strix().args(["models", "register"]).arg(&onnx).args(["--name", "big", "--json"]));
    assert_eq!(v["version"], 1, "{}", reg.what);
    let (out, _, stderr) = run(strix().args(["models", "download", "big:1", "--out"]).arg(tmp.join("big")));
    assert!(out.status.success(), "{}: {stderr}", reg.what);
    assert_eq!(sha256(&tmp.join("big/big.onnx")), sha256(&onnx));
}

#[test]
fn kill_during_upload_leaves_no_half_version_local() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    kill_mid_upload(&Registry::local(tmp.path()), &fx, tmp.path());
}

#[test]
fn kill_during_upload_leaves_no_half_version_s3_postgres() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let Some(reg) = Registry::remote(tmp.path(), "kill") else { return };
    kill_mid_upload(&reg, &fx, tmp.path());
}

#[test]
fn bad_registrations_are_one_line_errors_and_write_nothing() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::local(tmp.path());
    let cache = tmp.path().join("cache");
    let onnx = model_files(&fx, &cache, &tmp.path().join("user"), "selfie_256", "segment/selfie_256.onnx", "seg");
    let strix = || reg.cmd(&fx, &cache);
    let register = |name: &str| {
        let mut c = strix();
        c.args(["models", "register"]).arg(&onnx).args(["--name", name]);
        c
    };
    fails(&mut register("a/b"), "invalid model name");
    fails(&mut register(".."), "invalid model name");
    fails(&mut register("ok\u{1}name"), "invalid model name");
    fails(&mut register("efficientnet_lite0"), "zoo model's name");
    fails(strix().args(["models", "register"]).arg(&onnx).args(["--name", "x", "--alias", "a/b"]), "invalid alias");
    fails(strix().args(["models", "register", "no/such/run", "--name", "x"]), "no such run folder or ONNX file");
    let run_dir = tmp.path().join("run-without-export");
    std::fs::create_dir_all(&run_dir).unwrap();
    fails(strix().args(["models", "register"]).arg(&run_dir).args(["--name", "x"]), "export the run first");
    let garbage = tmp.path().join("user/garbage.onnx");
    std::fs::write(&garbage, b"this is not a protobuf").unwrap();
    std::fs::copy(tmp.path().join("user/seg.toml"), tmp.path().join("user/garbage.toml")).unwrap();
    fails(strix().args(["models", "register"]).arg(&garbage).args(["--name", "x"]), "not a readable ONNX model");
    fails(strix().args(["predict", "--model", "x:0"]).arg(fx.join("images/apple.jpg")), "not a positive whole number");
    assert!(store_files(&reg.watch).is_empty(), "something was written: {:?}", store_files(&reg.watch));

    // Unreachable store and database: a quick, one-line error naming which.
    let started = Instant::now();
    fails(
        strix()
            .args(["models", "register"])
            .arg(&onnx)
            .args(["--name", "x", "--registry-store", "s3://nowhere/models"])
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
            .env("AWS_ACCESS_KEY_ID", "k")
            .env("AWS_SECRET_ACCESS_KEY", "s"),
        "registry store s3://nowhere/models",
    );
    fails(
        strix().args(["models", "register"]).arg(&onnx).args([
            "--name",
            "x",
            "--registry-db",
            "postgres://127.0.0.1:1/x",
        ]),
        "registry database postgres://127.0.0.1:1/x",
    );
    fails(strix().args(["models", "list", "--registry-db", "mysql://h/db"]), "unsupported URL");
    assert!(started.elapsed() < Duration::from_secs(60), "unreachable services took {:?}", started.elapsed());
    assert!(store_files(&reg.watch).is_empty(), "something was written: {:?}", store_files(&reg.watch));
}

/// A trained run registers with its lineage (dataset digest, config, metrics, gate) and serves
/// by alias exactly as its export does.
#[test]
fn a_trained_run_registers_with_its_lineage() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::local(tmp.path());
    let cache = tmp.path().join("cache");
    let run_dir = tmp.path().join("fm");
    let (out, _, stderr) = run(train_cmd(&fx, &cache, &run_dir)
        .envs(reg.env.iter().map(|(k, v)| (k, v)))
        .arg("--data")
        .arg(fashion(&fx))
        .args(["--model", "small-cnn", "--epochs", "1", "--max-images", "1200", "--test", "false"]));
    assert!(out.status.success(), "{stderr}");
    let dataset: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("dataset.json")).unwrap()).unwrap();
    // The digest is the manifest file's sha256: checkable with sha256sum.
    assert_eq!(dataset["sha256"], sha256(&run_dir.join("dataset.sha256")));
    assert_eq!(dataset["files"], 4, "{dataset}"); // the IDX images and labels, train and t10k

    let v = ok_json(reg.cmd(&fx, &cache).args(["models", "register"]).arg(&run_dir).args([
        "--name",
        "fashion",
        "--alias",
        "production",
        "--json",
    ]));
    assert_eq!(v["version"], 1);
    let lineage = &v["lineage"];
    assert_eq!(lineage["dataset"]["sha256"], dataset["sha256"]);
    assert_eq!(lineage["config"]["model"], "small-cnn", "{lineage}");
    let final_json: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("final.json")).unwrap()).unwrap();
    assert_eq!(lineage["metrics"]["val"]["accuracy"], final_json["val"]["accuracy"]);
    assert_eq!(lineage["metrics"]["task"], "classify", "the run's typed summary: {lineage}");
    let accuracy = final_json["val"]["accuracy"].as_f64().unwrap();
    let (out, shown, stderr) = run(reg.cmd(&fx, &cache).args(["models", "show", "fashion:1"]));
    assert!(out.status.success(), "{stderr}");
    let line = shown.lines().find(|l| l.trim_start().starts_with("metrics")).unwrap_or_default();
    assert!(line.contains(&format!("val accuracy {:.2}%", 100.0 * accuracy)), "{shown}");
    assert!(lineage["gate"].is_object(), "{lineage}");
    assert!(lineage["parent"].is_null(), "trained from scratch: {lineage}");
    let files: BTreeSet<&str> =
        v["artifacts"].as_array().unwrap().iter().map(|a| a["file"].as_str().unwrap()).collect();
    for f in ["model.onnx", "model.toml", "config.toml", "final.json", "dataset.json", "dataset.sha256", "gate.json"] {
        assert!(files.contains(f), "{f} missing from {files:?}");
    }
    // Any picture will do: the point is that both routes give the same answer.
    let image = fx.join("images/apple.jpg");
    let predict = |model: &str| {
        let (out, stdout, stderr) = run(reg.cmd(&fx, &cache).args(["predict", "--json", "--model", model]).arg(&image));
        assert!(out.status.success(), "predict {model}: {stderr}");
        let v: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        v["Labels"].clone()
    };
    assert_eq!(predict("fashion@production"), predict(&run_dir.join("export/model.onnx").display().to_string()));
}
