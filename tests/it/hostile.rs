//! Hostile input and a tampered shared registry: each test pins a hole found by probing the
//! release binary as an attacker would (extreme images, registry rows used as paths, passwords
//! in messages, unbounded decodes and connections, symlinks out of a spec folder, a recording
//! over its own input). Each fails on the code before the fix.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures_or_skip;
use crate::registry::{Registry, fails, model_files, ok_json};
use crate::support::{Lines, collect, files_under, live_address, run, said_at, strix, wait_until};

/// `strix` under an address-space cap: an allocation past it fails (and aborts the process)
/// instead of taking the machine's memory.
fn strix_capped(fx: &Path, cache: &Path, bytes: u64) -> Command {
    let plain = strix(fx, cache);
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={bytes}")).arg("--").arg(plain.get_program());
    for (k, v) in plain.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

fn save_png(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8]))
        .save(path)
        .unwrap();
}

/// A 138-byte PNG once killed `strix serve --model ppocrv4` (a 130 GB allocation). Every task's
/// model, cascades included, answers extreme aspect ratios and one-pixel sides in bounded memory
/// and time: each image gets an answer (not an error), and every box and keypoint of it lies on
/// the picture (a pose once put a knee 9000 widths to its left).
#[test]
fn extreme_aspect_ratios_on_every_task_are_answered_on_the_picture_under_a_memory_cap() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let sizes = [(20_000, 1), (1, 20_000), (3000, 1), (1, 1), (2, 20_000), (20_000, 24)];
    let images: Vec<PathBuf> = sizes
        .iter()
        .map(|&(w, h)| {
            let p = tmp.path().join(format!("{w}x{h}.png"));
            save_png(&p, w, h);
            p
        })
        .collect();
    let models = [
        ("classify", "efficientnet_lite0"),
        ("detect", "nanodet_m_416"),
        ("pose", "movenet_lightning_192"),
        ("segment", "selfie_256"),
        ("faces", "blazeface_front_128"),
        ("faces", "mtcnn"),
        ("text", "ppocrv4"),
    ];
    for (task, model) in models {
        let started = Instant::now();
        let (out, stdout, stderr) = run(strix_capped(&fx, tmp.path(), 6 << 30)
            .args(["predict", "--json", "--task", task, "--model", model])
            .args(&images));
        let took = started.elapsed();
        // A signal (an abort at the cap) has no exit code; 1 would be an image refused.
        assert_eq!(out.status.code(), Some(0), "{model}: {:?}\n{stderr}", out.status);
        assert!(!stderr.contains("panicked") && !stderr.contains("memory allocation"), "{model}: {stderr}");
        let answers: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(answers.len(), images.len(), "{model}: {stdout}");
        for (a, img) in answers.iter().zip(&images) {
            assert_eq!(a["Image"].as_str(), img.to_str(), "{model}");
            assert!(a.get("Error").is_none(), "{model}: {a}");
            off_the_picture(a, &mut |share| panic!("{model}: {} has {share} off the picture: {a}", img.display()));
        }
        assert!(took < Duration::from_secs(120), "{model} took {took:?}");
        eprintln!("{model}: {} images in {:.1} s, exit {:?}", images.len(), took.as_secs_f64(), out.status.code());
    }
}

/// Calls `off` for each box edge or point of a Rekognition-shaped answer that lies outside the
/// picture (shares outside 0..=1).
fn off_the_picture(answer: &Value, off: &mut dyn FnMut(String)) {
    match answer {
        Value::Object(fields) => {
            for (key, v) in fields {
                // Missing, null (how a NaN is written) or infinite counts as off the picture.
                let share = |k: &str| v[k].as_f64().filter(|x| x.is_finite()).unwrap_or(f64::NAN);
                if key == "BoundingBox" {
                    let (l, t, w, h) = (share("Left"), share("Top"), share("Width"), share("Height"));
                    if [l, t, w, h, l + w, t + h].iter().any(|s| !(-1e-4..=1.0001).contains(s)) {
                        off(format!("box {v}"));
                    }
                }
                if key == "Keypoints" || key == "Landmarks" || key == "Polygon" {
                    for p in v.as_array().into_iter().flatten() {
                        let coordinate = |k: &str| p[k].as_f64().filter(|x| x.is_finite()).unwrap_or(f64::NAN);
                        let (x, y) = (coordinate("X"), coordinate("Y"));
                        if !(-1e-4..=1.0001).contains(&x) || !(-1e-4..=1.0001).contains(&y) {
                            off(format!("point {p}"));
                        }
                    }
                }
                off_the_picture(v, off);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| off_the_picture(v, off)),
        _ => {}
    }
}

/// A registered model whose database rows were edited by someone with write access to a
/// shared registry.
fn tampered_registry(fx: &Path, tmp: &Path, sql: &str) -> (Registry, PathBuf) {
    let reg = Registry::local(tmp);
    let cache = tmp.join("cache");
    let onnx = model_files(fx, &cache, &tmp.join("user"), "selfie_256", "segment/selfie_256.onnx", "seg");
    ok_json(reg.cmd(fx, &cache).args(["models", "register"]).arg(&onnx).args(["--name", "seg", "--json"]));
    let db = tmp.join("registry/registry.db");
    let script = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()";
    let out = Command::new("python3").args(["-c", script]).arg(&db).arg(sql).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (reg, cache)
}

#[test]
fn registry_rows_naming_paths_outside_the_folder_are_refused() {
    let fx = fixtures_or_skip!();
    for (case, sql) in [
        ("parent", "UPDATE artifacts SET file = '../escaped.txt' WHERE file = 'model.toml'"),
        ("absolute", "UPDATE artifacts SET file = '/tmp/strix-escaped-abs.txt' WHERE file = 'model.toml'"),
        ("digest", "UPDATE artifacts SET sha256 = '../../../../escaped' WHERE file = 'model.toml'"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (reg, cache) = tampered_registry(&fx, tmp.path(), sql);
        let before = files_under(tmp.path()).len();
        let out_dir = tmp.path().join("download/here");
        fails(
            reg.cmd(&fx, &cache).args(["models", "download", "seg:1", "--out"]).arg(&out_dir),
            "refusing a bad record",
        );
        fails(
            reg.cmd(&fx, &cache).args(["predict", "--model", "seg:1"]).arg(fx.join("images/apple.jpg")),
            "refusing a bad record",
        );
        assert!(!tmp.path().join("download/escaped.txt").exists(), "{case}");
        assert!(!Path::new("/tmp/strix-escaped-abs.txt").exists(), "{case}");
        assert_eq!(files_under(tmp.path()).len(), before, "{case}: files were written");
    }
}

#[test]
fn registry_fields_with_control_characters_are_shown_escaped() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let sql = "UPDATE versions SET created_by = 'x' || char(27) || '[2J' || char(7) || 'y'";
    let (reg, cache) = tampered_registry(&fx, tmp.path(), sql);
    let (out, stdout, stderr) = run(reg.cmd(&fx, &cache).args(["models", "show", "seg:1"]));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("x\\u{1b}[2J\\u{7}y"), "{stdout}");
    assert!(!stdout.contains('\u{1b}') && !stdout.contains('\u{7}'), "{stdout:?}");
}

/// A spec folder's labels file that links to a file outside it is not read, and not copied
/// into STRIX_HOME by `models import`.
#[test]
fn a_symlink_out_of_the_spec_folder_is_not_imported() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let user = tmp.path().join("user");
    let onnx = model_files(&fx, &cache, &user, "efficientnet_lite0", "classify/efficientnet_lite0.onnx", "eff");
    // A hand-written spec: the labels file has no digest to betray the swap.
    let spec_path = user.join("eff.toml");
    let mut spec: toml::Table = std::fs::read_to_string(&spec_path).unwrap().parse().unwrap();
    let labels = spec["labels"].as_table_mut().unwrap();
    labels.remove("sha256");
    let labels_file = user.join(labels["file"].as_str().unwrap());
    std::fs::write(&spec_path, toml::to_string(&spec).unwrap()).unwrap();
    std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
    std::fs::write(tmp.path().join("outside/secret.txt"), "the secret\n".repeat(1000)).unwrap();
    std::fs::remove_file(&labels_file).unwrap();
    let depth = labels_file.strip_prefix(&user).unwrap().components().count() - 1;
    let up = "../".repeat(depth + 1);
    std::os::unix::fs::symlink(format!("{up}outside/secret.txt"), &labels_file).unwrap();
    assert_eq!(std::fs::read_to_string(&labels_file).unwrap().lines().count(), 1000, "the link works");
    let home = tmp.path().join("home");
    let (out, _, stderr) = run(strix(&fx, &cache)
        .env("STRIX_HOME", &home)
        .args(["models", "import"])
        .arg(&onnx)
        .arg("--spec")
        .arg(&spec_path)
        .args(["--name", "eff"]));
    assert!(!out.status.success(), "imported through a symlink");
    assert!(stderr.contains("outside the model folder"), "{stderr}");
    let copied: Vec<PathBuf> = files_under(&home)
        .into_iter()
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("the secret")))
        .collect();
    assert!(copied.is_empty(), "{copied:?}");
}

/// Camera, webhook, database and hub passwords never reach stderr, events, the summary or
/// the page.
#[test]
fn passwords_in_urls_never_leave_the_process() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let events = tmp.path().join("events.jsonl");
    let started = Instant::now();
    let mut child = strix(&fx, tmp.path())
        .args(["-v", "stream", &format!("http://cam:s3cret@127.0.0.1:{dead}/live.ts")])
        .args(["--reconnect", "3", "--json", "--backend", "tract", "--http", "127.0.0.1:0"])
        .args(["--webhook", &format!("http://hook:w3bpass@127.0.0.1:{dead}/events")])
        .arg("--events")
        .arg(&events)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (addr, mut stderr) = live_address(&mut err_lines);
    let addr = addr.unwrap_or_else(|| panic!("no address: {stderr}"));
    // The page's numbers while the source keeps failing.
    let mut stats = String::new();
    while started.elapsed() < Duration::from_secs(20) && !stats.contains("source_lost") {
        if let Ok(mut s) = TcpStream::connect(&addr) {
            let _ = write!(s, "GET /stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stats.clear();
            let _ = s.read_to_string(&mut stats);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for line in err_lines.map_while(Result::ok) {
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events = std::fs::read_to_string(&events).unwrap_or_default();
    assert!(stats.contains("source_lost"), "{stats}");
    assert!(events.contains("source_lost") && stderr.contains("cam:***@"), "{events}\n{stderr}");
    for (what, text) in [("stderr", &stderr), ("stdout", &stdout.to_string()), ("events", &events), ("/stats", &stats)]
    {
        assert!(!text.contains("s3cret") && !text.contains("w3bpass"), "{what} leaks a password:\n{text}");
    }

    // Registry databases and hubs: the error names the URL without its password.
    let cache = tmp.path().join("cache");
    for db in
        [format!("postgres://bob:s3cret@127.0.0.1:{dead}/x"), format!("postgres://127.0.0.1:{dead}/x?password=s3cret")]
    {
        let (out, _, stderr) = run(strix(&fx, &cache).args(["models", "list", "--registry-db", &db]));
        assert!(!out.status.success() && stderr.contains(&format!("127.0.0.1:{dead}")), "{stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
    let (out, _, stderr) = run(strix(&fx, &cache)
        .env("STRIX_MODEL_PATH", tmp.path())
        .env("STRIX_HUB_URL", format!("http://hub:s3cret@127.0.0.1:{dead}/models"))
        .args(["-v", "predict"])
        .arg(fx.join("images/apple.jpg")));
    assert!(!out.status.success() && stderr.contains(&format!("127.0.0.1:{dead}")), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

/// A `side` x `side` grey PNG of a few hundred KB that decodes to `3 side²` bytes of RGB.
fn png_bomb(side: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().unwrap();
    let mut stream = writer.stream_writer().unwrap();
    let row = vec![0u8; side as usize];
    for _ in 0..side {
        stream.write_all(&row).unwrap();
    }
    stream.finish().unwrap();
    drop(writer);
    out
}

/// `strix serve` of EfficientNet with `config`, its port, and its log as it arrives.
fn serve_child(fx: &Path, cache: &Path, config: &str) -> (Child, u16, Lines) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = cache.join("serve.toml");
    std::fs::create_dir_all(cache).unwrap();
    std::fs::write(&path, format!("port = {port}\n{config}")).unwrap();
    let mut child = strix(fx, cache)
        .args(["serve", "--model", "efficientnet_lite0", "--backend", "tract", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "strix serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port, log)
}

fn status_of(port: u16, head: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Send `first`, then `rest` a byte each 200 ms until the server answers or closes (its
/// deadlines decide, not ours); what it said, and when.
fn trickle(port: u16, first: &[u8], rest: &[u8]) -> (String, Duration) {
    // From before the connection: the server's deadlines may start at its accept.
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(first).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    for b in rest {
        if s.write_all(std::slice::from_ref(b)).is_err() {
            return (String::new(), started.elapsed());
        }
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => return (String::new(), started.elapsed()),
            Ok(n) => return (String::from_utf8_lossy(&buf[..n]).into_owned(), started.elapsed()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return (String::new(), started.elapsed()),
        }
    }
    panic!("the server took all {} bytes over {:?} without cutting them off", rest.len(), started.elapsed());
}

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

/// Four small PNGs declaring 10000x10000 once took 1.66 GB at once: decodes in flight are
/// bounded before their bodies are read, requests wait for a slot in a line as long as the
/// model's queue, and the rest are shed with 503.
#[test]
fn decodes_in_flight_are_bounded_so_memory_is() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, port, _) = serve_child(&fx, tmp.path(), "[limits]\nmax_decoding = 2\n[batching]\nqueue = 4\n");
    let bomb = png_bomb(8000);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let head = format!(
        "POST /v1/models/efficientnet_lite0/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        bomb.len()
    );
    let base = peak_rss_mib(child.id());
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let tasks: Vec<_> = (0..8).map(|_| s.spawn(|| status_of(port, &head, &bomb))).collect();
        tasks.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let peak = peak_rss_mib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("8 concurrent 8000x8000 PNGs: statuses {statuses:?}, peak RSS {peak} MiB (idle {base} MiB)");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{statuses:?}");
    // Two decoding and four waiting are answered; two more than that are shed.
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((2..=7).contains(&ok) && statuses.contains(&503), "{statuses:?}");
    // Each decode holds 64 MB grey + 192 MB RGB; two at once, never eight.
    assert!(peak < base + 900, "peak RSS {peak} MiB over idle {base} MiB");
}

/// 300 half-open connections once stayed open past 35 s and SIGTERM waited for the slowest
/// client: header, body and idle timeouts, a connection cap and a drain deadline.
#[test]
fn slow_and_silent_clients_are_cut_and_shutdown_has_a_deadline() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let config = "[connections]\nheader_timeout_ms = 1000\nbody_timeout_ms = 1500\nidle_timeout_ms = 1500\n\
                  max_connections = 64\ndrain_timeout_ms = 2000\n";
    let (mut child, port, _) = serve_child(&fx, tmp.path(), config);
    let started = Instant::now();
    let mut held: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let _ = s.write_all(b"POST /v1/models/efficientnet_lite0/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            // Far past every limit: a read that times out means the server kept the connection.
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s
        })
        .collect();
    // Every one is closed by the server (the read ends, it does not time out): 36 at once
    // (503, over the cap), the rest at the header timeout, so not before it.
    let mut refused = 0;
    for (i, s) in held.iter_mut().enumerate() {
        let mut text = String::new();
        // A reset is the server closing too (over the cap, with our half header unread).
        if let Err(e) = s.read_to_string(&mut text)
            && matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        {
            panic!("connection {i} still open after {:?}: {e}", started.elapsed());
        }
        refused += usize::from(text.starts_with("HTTP/1.1 503"));
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1000), "connections cut after {took:?}, before the header timeout");
    assert!(refused >= 36, "{refused} refused over the cap");
    // The server still answers.
    let apple = std::fs::read(fx.join("images/apple.jpg")).unwrap();
    let good = format!(
        "POST /v1/models/efficientnet_lite0/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        apple.len()
    );
    assert_eq!(status_of(port, &good, &apple), 200);
    // Bytes that keep coming do not keep a request alive (the idle timeout never fires for
    // them): a trickled header is cut at the header deadline, a trickled body gets 408.
    let head = good.replace("Connection: close\r\n", "");
    let endless = format!("X-Slow: {}", "a".repeat(300));
    let (answer, took) = trickle(port, &head.as_bytes()[..head.find("Content-Type").unwrap()], endless.as_bytes());
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "header: {answer:?}");
    assert!(took >= Duration::from_millis(1000), "a trickled header cut after {took:?}");
    let (answer, took) = trickle(port, head.as_bytes(), &apple[..300]);
    assert!(answer.starts_with("HTTP/1.1 408"), "body: {answer:?} after {took:?}");
    assert!(took >= Duration::from_millis(1500), "a trickled body cut after {took:?}, before its deadline");
    let _ = child.kill();
    let _ = child.wait();

    // A client holding a request open does not hold up SIGTERM past the drain deadline. Its
    // header and body deadlines are five minutes here, so only the drain deadline can end it: the
    // server exits, not before that deadline, and says it cut the connection.
    let config = "[limits]\nmax_decoding = 1\n\
                  [connections]\nheader_timeout_ms = 300000\nbody_timeout_ms = 300000\ndrain_timeout_ms = 1000\n";
    let (mut child, port, log) = serve_child(&fx, &tmp.path().join("drain"), config);
    // Two half-sent requests: one reading its body in the one decode slot, one waiting for
    // it. The server counting one waiting shows both are in flight before SIGTERM is sent.
    let holders: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut holder = TcpStream::connect(("127.0.0.1", port)).unwrap();
            holder.write_all(head.as_bytes()).unwrap();
            holder.write_all(&apple[..10]).unwrap();
            holder
        })
        .collect();
    wait_until("both requests in flight", Duration::from_secs(60), || {
        crate::serve::request(port, "GET", "/v1/models", &[], b"").json()["decoding"]["waiting"] == 1
    });
    let stop = Instant::now();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    wait_until("strix serve to exit after SIGTERM", Duration::from_secs(60), || child.try_wait().unwrap().is_some());
    assert!(stop.elapsed() >= Duration::from_millis(1000), "shutdown took {:?}", stop.elapsed());
    wait_until("the cut in the log", Duration::from_secs(10), || {
        said_at(&log, "after shutdown began; closing them").is_some()
    });
    drop(holders);
}

/// `--record` over the run's own input once truncated it; an existing file needs --force.
#[test]
fn a_recording_never_overwrites_its_own_input_or_an_existing_file_without_force() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let video = tmp.path().join("in.mp4");
    std::fs::copy(fx.join("video/vtest_10s_h264.mp4"), &video).unwrap();
    let size = std::fs::metadata(&video).unwrap().len();
    let stream = || {
        let mut c = strix(&fx, tmp.path());
        c.args(["stream", "--max-frames", "3", "--backend", "tract"]).arg(&video);
        c
    };
    let (out, _, stderr) = run(stream().arg("--record").arg(&video).arg("--force"));
    assert!(!out.status.success() && stderr.contains("is also a source"), "{stderr}");
    let (out, _, stderr) = run(stream().arg("--record").arg(tmp.path().join(".").join("in.mp4")));
    assert!(!out.status.success() && stderr.contains("is also a source"), "{stderr}");
    assert_eq!(std::fs::metadata(&video).unwrap().len(), size, "the input was touched");
    let existing = tmp.path().join("out.mp4");
    std::fs::write(&existing, b"keep me").unwrap();
    let (out, _, stderr) = run(stream().arg("--record").arg(&existing));
    assert!(!out.status.success() && stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    let (out, _, stderr) = run(stream().arg("--record").arg(&existing).arg("--force"));
    assert!(out.status.success(), "{stderr}");
    assert!(std::fs::metadata(&existing).unwrap().len() > 1000);
}

/// The stream page answers only known hosts (DNS rebinding) and, with a token, only those who
/// carry it; bound beyond loopback it warns.
#[test]
fn the_stream_page_checks_host_and_token() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = strix(&fx, tmp.path())
        .args(["stream", "--realtime", "--loop", "--duration", "60s", "--backend", "tract"])
        .arg(fx.join("video/vtest_10s_h264.mp4"))
        .args(["--http", "0.0.0.0:0", "--http-token", "t0ken", "--http-allow-host", "cam.example.org"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (addr, said) = live_address(&mut lines);
    let port: u16 =
        addr.and_then(|a| a.rsplit(':').next()?.parse().ok()).unwrap_or_else(|| panic!("no address: {said}"));
    assert!(said.contains("beyond this machine"), "{said}");
    let get = |host: &str, extra: &str, path: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    };
    let local = format!("127.0.0.1:{port}");
    assert!(get(&local, "", "/stats").starts_with("HTTP/1.1 401"));
    assert!(get(&local, "Authorization: Bearer wrong\r\n", "/stats").starts_with("HTTP/1.1 401"));
    assert!(get(&local, "Authorization: Bearer t0ken\r\n", "/stats").starts_with("HTTP/1.1 200"));
    let page = get(&local, "", "/?token=t0ken");
    let cookie = format!("strix_token_{port}=t0ken");
    assert!(page.starts_with("HTTP/1.1 200") && page.contains(&format!("set-cookie: {cookie}")), "{page}");
    let with_cookie = format!("Cookie: {cookie}\r\n");
    assert!(get(&local, &with_cookie, "/stats").starts_with("HTTP/1.1 200"));
    assert!(get("cam.example.org", &with_cookie, "/stats").starts_with("HTTP/1.1 200"));
    let rebound = get("evil.example.com", &with_cookie, "/stats");
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    let _ = child.kill();
    let _ = child.wait();
}

/// A 1.0 MB KServe v2 request naming one output 20000 times once got a 422 MB answer and took
/// the server to 2.16 GB: an output may be asked for once, so ten such requests (each naming
/// it 40000 times) get 400 with the protocol's error and the server stays small.
#[test]
fn kserve_outputs_named_again_and_again_are_refused_in_bounded_memory() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, port, _) = serve_child(&fx, tmp.path(), "");
    let zeros = vec!["0"; 3 * 224 * 224].join(",");
    let outputs = vec![r#"{"name":"logits"}"#; 40_000].join(",");
    let body = format!(
        r#"{{"inputs":[{{"name":"input","shape":[1,3,224,224],"datatype":"FP32","data":[{zeros}]}}],"outputs":[{outputs}]}}"#
    );
    assert!((1_000_000..2_000_000).contains(&body.len()), "{} bytes", body.len());
    let head = format!(
        "POST /v2/models/efficientnet_lite0/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    let replies: Vec<String> = (0..10)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(body.as_bytes()).unwrap();
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            text
        })
        .collect();
    let peak = peak_rss_mib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("10 requests of {} bytes in {:?}: peak RSS {peak} MiB", body.len(), started.elapsed());
    for reply in &replies {
        assert!(reply.starts_with("HTTP/1.1 400"), "{}", &reply[..reply.len().min(300)]);
        let json = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
        let error: Value = serde_json::from_str(json).unwrap();
        let message = error["error"].as_str().unwrap_or_default();
        assert!(message.contains("40000 outputs requested but the model gives 1 (logits)"), "{message}");
    }
    assert!(peak < 300, "peak RSS {peak} MiB");
}
