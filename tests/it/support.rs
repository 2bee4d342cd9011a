//! Fixture lookup and small helpers shared by the tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strix_runtime::Backend;

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The fixture folder, or `None` (test skipped) outside CI when it is absent.
pub fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("STRIX_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
    if dir.join("MANIFEST.md").is_file() {
        return Some(dir.canonicalize().unwrap_or(dir));
    }
    assert!(!in_ci(), "fixtures not found at {} (set STRIX_FIXTURES); CI must not skip these tests", dir.display());
    eprintln!("skipped: fixtures not found at {}", dir.display());
    None
}

/// `let fx = fixtures_or_skip!();` returns from the test when fixtures are absent outside CI.
#[macro_export]
macro_rules! fixtures_or_skip {
    () => {
        match $crate::support::fixtures() {
            Some(dir) => dir,
            None => return,
        }
    };
}

/// Engine options as the binary's settings give them: ONNX Runtime's library from
/// `ORT_DYLIB_PATH` (libraries read no environment themselves).
pub fn runtime_options() -> strix_runtime::RuntimeOptions {
    strix_runtime::RuntimeOptions {
        ort_library: std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
        ..Default::default()
    }
}

/// A data folder with nothing imported: zoo names and spec files only.
pub fn empty_home() -> PathBuf {
    std::env::temp_dir().join("strix-it-empty-home")
}

/// The libonnxruntime `ORT_DYLIB_PATH` names, when there is one and this build has the ort
/// backend; under CI a missing library fails the test, which `what` names.
pub fn ort_library(what: &str) -> Option<PathBuf> {
    let Some(lib) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| Path::new(p).is_file()) else {
        assert!(!in_ci(), "ORT_DYLIB_PATH does not name libonnxruntime; CI must test {what} with it");
        eprintln!("note: ORT_DYLIB_PATH unset, {what} not tested");
        return None;
    };
    cfg!(feature = "ort").then(|| PathBuf::from(lib))
}

/// The backends to check: tract always; ort when built in and its library is available
/// (required under CI).
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Tract];
    if ort_library("the ort backend").is_some() {
        out.push(Backend::Ort);
    }
    out
}

/// The Python of the project's virtualenv (`./scripts/setup` makes it, with onnx and
/// pycocotools), or `None` (test skipped) outside CI when there is none.
pub fn python() -> Option<PathBuf> {
    let venv = std::env::var_os("STRIX_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
    let python = venv.join("bin/python");
    if python.is_file() {
        return Some(python);
    }
    assert!(!in_ci(), "no Python at {} (run ./scripts/setup); CI must not skip these tests", python.display());
    eprintln!("skipped: no Python at {}", python.display());
    None
}

/// Read a little-endian f32 or i32 `.npy` file as f32.
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).expect("npy header");
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let data = match npy.dtype().descr().trim_matches('\'') {
        "<f4" => npy.into_vec::<f32>().expect("f32 data"),
        "<i4" => npy.into_vec::<i32>().expect("i32 data").into_iter().map(|v| v as f32).collect(),
        other => panic!("{}: unsupported dtype {other}", path.display()),
    };
    (shape, data)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The `strix` binary with a clean environment: fixtures as the model search path, a private
/// cache, no hub, nothing inherited that would change lookups.
pub fn strix(fixtures: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strix"));
    cmd.env("STRIX_MODEL_PATH", fixtures.join("models"))
        .env("STRIX_CACHE_DIR", cache)
        .env_remove("STRIX_HUB_URL")
        .env_remove("STRIX_OFFLINE")
        // The tests were written against tract's answers; `--backend auto` has its own test.
        .env("STRIX_BACKEND", "tract")
        .env_remove("STRIX_REGISTRY_STORE")
        .env_remove("STRIX_REGISTRY_DB")
        .env_remove("RUST_LOG");
    cmd
}

/// Every file under `dir`, recursively (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("run strix");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// A small PNG file whose header declares `w` x `h` (its pixel data is a stub).
pub fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    let mut writer = encoder.write_header().unwrap();
    // An empty zlib stream: enough for a reader to find the first IDAT after the header.
    writer.write_chunk(png::chunk::IDAT, &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]).unwrap();
    drop(writer);
    out
}

/// What a [`CountingRuntime`]'s sessions were asked to run: one entry per inference, one
/// fingerprint (the sum of its values) per image of the batch.
pub type BatchLog = std::sync::Arc<std::sync::Mutex<Vec<Vec<f64>>>>;

/// A runtime whose sessions record every batch they run, so tests count batches themselves
/// instead of believing the server's own report.
pub struct CountingRuntime {
    pub inner: Box<dyn strix_runtime::Runtime>,
    pub log: BatchLog,
    /// Added to every inference, so work queues up behind it as it would behind a big model.
    pub slow: std::time::Duration,
}

struct CountingSession {
    inner: Box<dyn strix_runtime::Session>,
    log: BatchLog,
    slow: std::time::Duration,
}

impl strix_runtime::Runtime for CountingRuntime {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    fn version(&self) -> String {
        self.inner.version()
    }
    fn load(&self, model: &Path) -> Result<Box<dyn strix_runtime::Session>, strix_runtime::RuntimeError> {
        Ok(Box::new(CountingSession { inner: self.inner.load(model)?, log: self.log.clone(), slow: self.slow }))
    }
    fn load_with_outputs(
        &self,
        model: &Path,
        tensors: &[String],
    ) -> Result<Box<dyn strix_runtime::Session>, strix_runtime::RuntimeError> {
        let inner = self.inner.load_with_outputs(model, tensors)?;
        Ok(Box::new(CountingSession { inner, log: self.log.clone(), slow: self.slow }))
    }
}

impl strix_runtime::Session for CountingSession {
    fn inputs(&self) -> &[strix_core::TensorInfo] {
        self.inner.inputs()
    }
    fn outputs(&self) -> &[strix_core::TensorInfo] {
        self.inner.outputs()
    }
    fn default_threads(&self) -> usize {
        self.inner.default_threads()
    }
    fn run_with_threads(
        &self,
        inputs: &[strix_core::Tensor],
        threads: usize,
    ) -> Result<Vec<strix_core::Tensor>, strix_runtime::RuntimeError> {
        if let Some(x) = inputs.first() {
            let values = x.to_f32_vec();
            let n = x.shape().first().copied().unwrap_or(1).max(1);
            let per = values.len() / n;
            let sums = values.chunks(per.max(1)).map(|c| c.iter().map(|&v| f64::from(v)).sum()).collect();
            self.log.lock().unwrap().push(sums);
        }
        std::thread::sleep(self.slow);
        self.inner.run_with_threads(inputs, threads)
    }
    fn warm_up(&self, threads: usize, concurrency: usize) -> Result<(), strix_runtime::RuntimeError> {
        self.inner.warm_up(threads, concurrency)
    }
}

/// Read a `strix stream --http` child's stderr up to the line that gives the page's address:
/// the address (`127.0.0.1:PORT`, `None` if the stream ended first) and every line read.
pub fn live_address(
    lines: &mut std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
) -> (Option<String>, String) {
    let mut said = String::new();
    for line in lines.map_while(Result::ok) {
        said.push_str(&line);
        said.push('\n');
        if let Some(rest) = line.split("live view at http://").nth(1) {
            return (Some(rest.trim_end_matches('/').to_string()), said);
        }
    }
    (None, said)
}

/// `cmd` (a `strix serve ...` without `--port`) started on a free loopback port, its output
/// discarded; returns once it accepts connections.
pub fn spawn_serve(cmd: &mut Command) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = cmd
        .args(["--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    (child, port)
}

/// Wait (up to 2 minutes) until something listens on `port`.
pub fn wait_for_port(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A folder `dir` holding copies of the named fixture photos (`images/NAME`).
pub fn photo_folder(fx: &Path, dir: &Path, names: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for name in names {
        std::fs::copy(fx.join("images").join(name), dir.join(name)).unwrap();
    }
    dir.to_path_buf()
}

/// A loopback port free now (for a child told to listen on it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed (and reaped) when this is dropped, a panic included.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `done` until it holds: tests wait for the event they need, with a deadline generous
/// enough for a loaded machine, instead of sleeping a guessed time.
pub fn wait_until(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Intersection over union of two (left, top, width, height) boxes.
pub fn share_iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let (x1, y1) = (a[0].max(b[0]), a[1].max(b[1]));
    let (x2, y2) = ((a[0] + a[2]).min(b[0] + b[2]), (a[1] + a[3]).min(b[1] + b[3]));
    let inter = (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
    inter / (a[2] * a[3] + b[2] * b[3] - inter)
}

/// Every detection in a Rekognition `Labels` answer: (class, confidence, box as shares).
pub fn detections(answer: &serde_json::Value) -> Vec<(String, f64, [f64; 4])> {
    let mut found = Vec::new();
    for label in answer["Labels"].as_array().into_iter().flatten() {
        for instance in label["Instances"].as_array().into_iter().flatten() {
            let b = &instance["BoundingBox"];
            let name = label["Name"].as_str().unwrap_or_default().to_string();
            let confidence = instance["Confidence"].as_f64().unwrap_or_default();
            found.push((name, confidence, ["Left", "Top", "Width", "Height"].map(|k| b[k].as_f64().unwrap())));
        }
    }
    found
}

/// Lines a child writes, each with when it arrived, collected by a thread.
pub type Lines = std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>;

pub fn collect(reader: impl std::io::Read + Send + 'static) -> Lines {
    use std::io::BufRead;
    let lines: Lines = Default::default();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader).lines().map_while(Result::ok) {
            sink.lock().unwrap().push((std::time::Instant::now(), line));
        }
    });
    lines
}

/// When the first line holding `needle` arrived, if one has.
pub fn said_at(log: &Lines, needle: &str) -> Option<std::time::Instant> {
    log.lock().unwrap().iter().find(|(_, l)| l.contains(needle)).map(|(t, _)| *t)
}
