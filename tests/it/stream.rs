//! `strix stream` end to end: the pedestrian video through NanoDet (every frame, tracks, events
//! in JSON lines and over the machine's real MQTT broker, a recording), the MJPEG views in
//! headless Chromium, the latest-frame policy, a network source that dies, bad input.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use strix_core::{BBox, Detection};

use crate::fixtures_or_skip;
use crate::support::{
    BatchLog, CountingRuntime, KillOnDrop, backends, free_port, in_ci, live_address, photo_folder, run, strix,
    wait_until,
};
use crate::tasks::{check_detections, expected};
use crate::train::quick_export;

const VIDEO: &str = "video/vtest_10s_h264.mp4";

fn stream_cmd(fx: &Path, cache: &Path) -> Command {
    let mut cmd = strix(fx, cache);
    cmd.arg("stream");
    cmd
}

fn summary(stdout: &str) -> Value {
    let last = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no summary in {stdout}"));
    serde_json::from_str(last).unwrap()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn bbox(v: &Value) -> BBox {
    let f = |i: usize| v[i].as_f64().unwrap() as f32;
    BBox::new(f(0), f(1), f(2), f(3))
}

/// The people (score >= 0.5) onnxruntime finds in the video's first frame.
pub(crate) fn frame0_people(fx: &Path) -> Vec<Value> {
    let exp = expected(fx);
    let all = &exp["models"]["models/detect/nanodet_m_416.onnx"]["results"]["video/vtest_frame000.png"]["detections"];
    let people: Vec<Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["label"] == "person" && d["score"].as_f64().unwrap() >= 0.5)
        .cloned()
        .collect();
    assert!(people.len() >= 3);
    people
}

/// The people of a `frame` event, as detections (class 0, as the reference numbers them).
fn people_in(frame: &Value) -> Vec<Detection> {
    let detections = frame["detections"].as_array().cloned().unwrap_or_default();
    detections
        .iter()
        .filter(|d| d["class"] == "person")
        .map(|d| Detection {
            bbox: bbox(&d["bbox"]),
            score: d["score"].as_f64().unwrap() as f32,
            class_id: 0,
            label: "person".into(),
        })
        .collect()
}

/// Collects what an MQTT topic receives, subscribed with QoS 1 before anything is published.
pub(crate) struct Subscriber {
    got: Arc<Mutex<Vec<Vec<u8>>>>,
    client: rumqttc::Client,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    pub(crate) fn start(topic: &str) -> Subscriber {
        let options = rumqttc::MqttOptions::new(format!("strix-test-sub-{}", std::process::id()), "127.0.0.1", 1883);
        let (client, mut connection) = rumqttc::Client::new(options, 64);
        client.subscribe(topic, rumqttc::QoS::AtLeastOnce).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = got.clone();
        let thread = std::thread::spawn(move || {
            let mut subscribed = false;
            for event in connection.iter() {
                match event {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        subscribed = true;
                        let _ = ready_tx.send(());
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        sink.lock().unwrap().push(p.payload.to_vec());
                    }
                    Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) if !subscribed => panic!("MQTT subscriber: {e} (is Mosquitto running on 127.0.0.1:1883?)"),
                    Err(_) => break,
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("MQTT subscription acknowledged");
        Subscriber { got, client, thread: Some(thread) }
    }

    /// Messages received once `n` have arrived (or 10 s passed).
    pub(crate) fn wait_for(mut self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.got.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.client.disconnect().unwrap();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.got.lock().unwrap().iter().map(|b| serde_json::from_slice(b).unwrap()).collect()
    }
}

/// Chains of raw detections that overlap (IoU >= 0.5) from one frame to the next without
/// ambiguity (no second candidate over 0.3, as when two walkers cross or NMS leaves a merged
/// box): the people who stay in view, found without the tracker. Each chain is a list of
/// (frame, box) pairs; a tracker must give every box of a chain one id.
fn detection_chains(frames: &BTreeMap<u64, Vec<BBox>>) -> Vec<Vec<(u64, BBox)>> {
    let mut open: Vec<Vec<(u64, BBox)>> = Vec::new();
    let mut done = Vec::new();
    let mut prev_frame = None;
    for (&f, boxes) in frames {
        let mut next_open: Vec<Vec<(u64, BBox)>> = Vec::new();
        let mut used = vec![false; boxes.len()];
        for chain in open.drain(..) {
            let last = chain.last().unwrap().1;
            let mut candidates: Vec<(f32, usize)> = (0..boxes.len())
                .filter(|&i| !used[i] && prev_frame == Some(f - 1))
                .map(|i| (last.iou(&boxes[i]), i))
                .collect();
            candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
            let clear = match candidates[..] {
                [(best, i), (second, _), ..] if best >= 0.5 && second < 0.3 => Some(i),
                [(best, i)] if best >= 0.5 => Some(i),
                _ => None,
            };
            match clear {
                Some(i) => {
                    used[i] = true;
                    let mut c = chain;
                    c.push((f, boxes[i]));
                    next_open.push(c);
                }
                None => done.push(chain),
            }
        }
        for (i, b) in boxes.iter().enumerate() {
            if !used[i] {
                next_open.push(vec![(f, *b)]);
            }
        }
        open = next_open;
        prev_frame = Some(f);
    }
    done.extend(open);
    done
}

/// The `path` line (y = 330, across the whole frame) is crossed where a reported track's centre
/// goes from one side to the other between its sightings: forward downwards (image y grows),
/// backward upwards. Worked out here from the frame events' tracks, so the crossings must
/// really happen, as `crossed` events and as the summary's `[forward, backward]` counts.
fn check_crossings(lines: &[Value], frames: &[&Value], counts: &Value, appeared: &[u64]) {
    let mut last_y: HashMap<u64, f64> = HashMap::new();
    let mut want = [0u64; 2];
    for e in frames {
        for t in e["tracks"].as_array().cloned().unwrap_or_default() {
            let b = bbox(&t["bbox"]);
            let y = f64::from(b.y1 + b.y2) / 2.0;
            if let Some(prev) = last_y.insert(t["track_id"].as_u64().unwrap(), y)
                && (prev - 330.0) * (y - 330.0) < 0.0
            {
                want[usize::from(y < 330.0)] += 1;
            }
        }
    }
    assert!(want.iter().sum::<u64>() >= 2, "the video's people cross the line; the tracks show {want:?}");
    let crossed: Vec<&Value> = lines.iter().filter(|e| e["type"] == "crossed").collect();
    let events = |direction: &str| crossed.iter().filter(|e| e["direction"] == direction).count() as u64;
    assert_eq!([events("forward"), events("backward")], want, "crossed events against the tracks' moves");
    assert_eq!(counts["path"], serde_json::json!(want), "summary counts against the tracks' moves");
    for e in &crossed {
        assert_eq!((e["line"].as_str(), e["class"].as_str()), (Some("path"), Some("person")), "{e}");
        assert!(appeared.contains(&e["track_id"].as_u64().unwrap()), "crossed by a track that never appeared: {e}");
    }
}

#[test]
fn video_through_nanodet_every_frame_tracked_and_events_agree_on_mqtt() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let record = tmp.path().join("annotated.mp4");
    let topic = format!("strix/test/{}", std::process::id());
    let sub = Subscriber::start(&topic);
    let (out, stdout, stderr) = run(stream_cmd(&fx, tmp.path())
        .arg(fx.join(VIDEO))
        .args(["--model", "nanodet_m_416", "--policy", "all", "--classes", "person", "--frame-events", "--json"])
        .arg("--events")
        .arg(&events)
        .args(["--mqtt", &format!("mqtt://127.0.0.1:1883/{topic}")])
        .args(["--line", "path=0,330,768,330", "--zone", "lawn=0,400,300,400,300,576,0,576"])
        .arg("--record")
        .arg(&record));
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let s = summary(&stdout);
    let src = &s["sources"][0];
    assert_eq!(src["frames_read"], 100, "{s}");
    assert_eq!(src["frames_processed"], 100, "{s}");
    assert_eq!(src["dropped"], 0);
    assert_eq!((src["width"].as_u64(), src["height"].as_u64()), (Some(768), Some(576)));

    // Frame 0's people match onnxruntime's reference for the first frame of the video.
    let lines = read_jsonl(&events);
    let frame_events: Vec<&Value> = lines.iter().filter(|e| e["type"] == "frame").collect();
    assert_eq!(frame_events.len(), 100);
    check_detections(&people_in(frame_events[0]), &frame0_people(&fx), "stream frame 0", 0.5);

    // People who stay in view keep one track id for 20 frames and more.
    let mut raw: BTreeMap<u64, Vec<BBox>> = BTreeMap::new();
    let mut tracked: HashMap<u64, Vec<(u64, BBox)>> = HashMap::new();
    for e in &frame_events {
        let f = e["frame"].as_u64().unwrap();
        let dets = e["detections"].as_array().cloned().unwrap_or_default();
        raw.insert(f, dets.iter().filter(|d| d["score"].as_f64().unwrap() >= 0.5).map(|d| bbox(&d["bbox"])).collect());
        for t in e["tracks"].as_array().cloned().unwrap_or_default() {
            tracked.entry(f).or_default().push((t["track_id"].as_u64().unwrap(), bbox(&t["bbox"])));
        }
    }
    let chains: Vec<_> = detection_chains(&raw).into_iter().filter(|c| c.len() >= 20).collect();
    assert!(chains.len() >= 3, "only {} people stay in view 20 frames", chains.len());
    for chain in &chains {
        // Skip the first frames of a chain: a track is confirmed after a few matches.
        let ids: Vec<Option<u64>> = chain[3..]
            .iter()
            .map(|(f, b)| tracked.get(f).and_then(|ts| ts.iter().find(|(_, tb)| tb.iou(b) >= 0.9).map(|(id, _)| *id)))
            .collect();
        let first = ids[0].unwrap_or_else(|| panic!("no track for the person at frame {}", chain[3].0));
        assert!(
            ids.iter().all(|id| *id == Some(first)),
            "one person, several ids over frames {}..: {ids:?}",
            chain[3].0
        );
    }

    // Track events: every appeared track leaves, with its dwell time.
    let appeared: Vec<u64> =
        lines.iter().filter(|e| e["type"] == "appeared").map(|e| e["track_id"].as_u64().unwrap()).collect();
    let left: Vec<&Value> = lines.iter().filter(|e| e["type"] == "left").collect();
    assert!(appeared.len() >= 3);
    assert_eq!(appeared.len(), left.len());
    // Each dwell is the track's own span: from its first sighting (at or before it was
    // confirmed, 3 matches = at least 0.2 s at 10 fps) to its last, which is before it left.
    for e in &left {
        let f = |k: &str| e[k].as_f64().unwrap();
        let id = e["track_id"].as_u64().unwrap();
        let appeared_at = lines
            .iter()
            .find(|a| a["type"] == "appeared" && a["track_id"].as_u64() == Some(id))
            .map(|a| a["time_s"].as_f64().unwrap())
            .unwrap_or_else(|| panic!("track {id} left without appearing"));
        assert_eq!(e["class"], "person");
        assert!((f("dwell_s") - (f("last_seen_s") - f("first_seen_s"))).abs() < 1e-3, "{e}");
        assert!(f("dwell_s") >= 0.2 - 1e-6, "{e}");
        assert!(f("first_seen_s") <= appeared_at + 1e-6 && appeared_at <= f("last_seen_s") + 1e-6, "{e}");
        assert!(f("last_seen_s") <= f("time_s") + 1e-6, "{e}");
    }
    assert_eq!(src["counts"]["tracks"]["person"].as_u64().unwrap() as usize, appeared.len());
    check_crossings(&lines, &frame_events, &src["counts"]["crossings"], &appeared);

    // The broker got the same events, in the same order.
    let sinks = s["sinks"].as_array().unwrap();
    assert!(sinks.iter().all(|k| k["failed"] == 0), "{sinks:?}");
    let mqtt = sub.wait_for(lines.len());
    assert_eq!(mqtt.len(), lines.len());
    assert_eq!(mqtt, lines);

    // The recording holds every annotated frame.
    assert_eq!(s["recordings"][0]["frames"], 100);
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames,width,height,codec_name", "-of", "json"])
        .arg(&record)
        .output()
        .unwrap();
    let p: Value = serde_json::from_slice(&probe.stdout).unwrap();
    let st = &p["streams"][0];
    assert_eq!(
        (st["codec_name"].as_str(), st["width"].as_u64(), st["height"].as_u64()),
        (Some("h264"), Some(768), Some(576))
    );
    assert_eq!(st["nb_read_frames"], "100");
}

#[test]
fn frame_zero_matches_the_reference_on_every_backend() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    for backend in backends() {
        let (out, stdout, stderr) = run(stream_cmd(&fx, tmp.path()).arg(fx.join(VIDEO)).args([
            "--max-frames",
            "1",
            "--frame-events",
            "--events",
            "-",
            "--backend",
            &backend.to_string(),
        ]));
        assert!(out.status.success(), "{backend}: {stderr}");
        let frame: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        assert_eq!((frame["type"].as_str(), frame["frame"].as_u64()), (Some("frame"), Some(0)));
        check_detections(&people_in(&frame), &frame0_people(&fx), &format!("{backend} frame 0"), 0.5);
    }
}

/// Reads one multipart part of an MJPEG response: its JPEG bytes.
fn next_part(r: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut len = None;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if let Some(v) = l.strip_prefix("Content-Length: ") {
            len = Some(v.parse::<usize>().unwrap());
        }
        if l.is_empty() && len.is_some() {
            break;
        }
    }
    let mut jpeg = vec![0u8; len.unwrap()];
    r.read_exact(&mut jpeg).unwrap();
    jpeg
}

pub(crate) fn http_get(addr: &str, path: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (String::from_utf8_lossy(&all[..split]).into_owned(), all[split + 4..].to_vec())
}

/// A running `strix stream --http 127.0.0.1:0` and the address it printed.
pub(crate) fn start_live(fx: &Path, cache: &Path, extra: &[&str]) -> (Child, String, Arc<Mutex<String>>) {
    let mut child = stream_cmd(fx, cache)
        .arg(fx.join(VIDEO))
        .args(["--http", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (addr, said) = live_address(&mut lines);
    let addr = addr.unwrap_or_else(|| panic!("strix stream printed no address: {said}"));
    let rest = Arc::new(Mutex::new(String::new()));
    let sink = rest.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    (child, addr, rest)
}

pub(crate) fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(PathBuf::from).find(|p| p.is_file());
    if found.is_none() {
        assert!(!in_ci(), "chromium not installed (./scripts/setup installs it); CI must run the browser tests");
        eprintln!("skipped: chromium not installed");
    }
    found
}

#[test]
fn mjpeg_streams_carry_successive_frames_and_the_page_renders_in_chromium() {
    let fx = fixtures_or_skip!();
    let Some(chromium) = chromium() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, addr, stderr) = start_live(&fx, tmp.path(), &["--loop", "--realtime", "--duration", "60s"]);

    // The project stream: successive, different JPEG frames of the video's size.
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(s, "GET /stream/project HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    while r.read_line(&mut head).unwrap() > 2 && !head.ends_with("\r\n\r\n") {}
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("content-type: multipart/x-mixed-replace; boundary=strixframe"), "{head}");
    let frames: Vec<Vec<u8>> = (0..4).map(|_| next_part(&mut r)).collect();
    for f in &frames {
        let img = strix_vision::decode_bytes(f, &strix_vision::DecodeLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (768, 576));
    }
    assert!(frames.windows(2).all(|w| w[0] != w[1]), "the stream repeats one frame");
    drop(r);
    // The device stream too.
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(s, "GET /stream/device HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(s);
    let device = next_part(&mut r);
    // The frame as it came: the video's size, and none of the annotated frames.
    let img = strix_vision::decode_bytes(&device, &strix_vision::DecodeLimits::default()).unwrap();
    assert_eq!(img.dimensions(), (768, 576));
    assert!(frames.iter().all(|f| *f != device), "the device stream sent an annotated frame");
    drop(r);

    let (head, body) = http_get(&addr, "/stats");
    assert!(head.contains("200 OK"), "{head}");
    let stats: Value = serde_json::from_slice(&body).unwrap();
    assert!(stats["sources"][0]["frames_processed"].as_u64().unwrap() >= 4);
    let (_, page) = http_get(&addr, "/");
    assert!(String::from_utf8_lossy(&page).contains("/stream/"));
    let (head, _) = http_get(&addr, "/stream/7/project");
    assert!(head.contains("404"), "{head}");

    // Headless Chromium opens the page, lets frames arrive, and takes a screenshot.
    let shot = tmp.path().join("page.png");
    let profile = tmp.path().join("chromium-profile");
    let status = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--window-size=1000,900", "--timeout=6000", "--hide-scrollbars"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://{addr}/"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "chromium failed");
    let png = image::open(&shot).unwrap().to_rgb8();
    // The page alone is a flat dark background with text; the video frame brings thousands
    // of colours. Count them in the area where the first stream sits.
    let mut colours = std::collections::HashSet::new();
    for y in 60..500.min(png.height()) {
        for x in 20..700.min(png.width()) {
            colours.insert(png.get_pixel(x, y).0);
        }
    }
    assert!(colours.len() > 2000, "the screenshot shows no video ({} colours)", colours.len());

    // SIGTERM ends the run cleanly with a summary.
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let err = stderr.lock().unwrap().clone();
    assert!(status.success(), "{err}");
    assert!(err.contains("frames answered"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn latest_policy_drops_stale_frames_and_keeps_lag_bounded() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    // FFmpeg decodes the file far faster than the model answers on tract.
    let (out, stdout, stderr) = run(stream_cmd(&fx, tmp.path()).arg(fx.join(VIDEO)).args([
        "--policy",
        "latest",
        "--json",
        "--backend",
        "tract",
        "--threads",
        "1",
    ]));
    assert!(out.status.success(), "{stderr}");
    let src = &summary(&stdout)["sources"][0];
    let (read, processed, dropped) = (
        src["frames_read"].as_u64().unwrap(),
        src["frames_processed"].as_u64().unwrap(),
        src["dropped"].as_u64().unwrap(),
    );
    assert_eq!(read, 100);
    assert!(dropped > 0, "{src}");
    assert_eq!(processed + dropped, read, "every frame is answered or counted as dropped: {src}");
    // A frame waits at most for the inference in progress and its own.
    let max_lag = src["lag_ms"]["max"].as_f64().unwrap();
    assert!(max_lag < 1500.0, "lag {max_lag} ms: {src}");

    // Policy `all` on the same file keeps every frame.
    let (out, stdout, _) =
        run(stream_cmd(&fx, tmp.path()).arg(fx.join(VIDEO)).args(["--policy", "all", "--json", "--max-frames", "30"]));
    assert!(out.status.success());
    let src = &summary(&stdout)["sources"][0];
    assert_eq!((src["frames_processed"].as_u64(), src["dropped"].as_u64()), (Some(30), Some(0)));
}

/// FFmpeg as a live HTTP camera: the video as MPEG-TS at its own rate, one client. It loops,
/// so it runs until killed, however slowly a loaded machine reads it.
fn http_camera(fx: &Path, port: u16) -> KillOnDrop {
    KillOnDrop(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1"])
            .arg("-i")
            .arg(fx.join(VIDEO))
            .args(["-c", "copy", "-f", "mpegts", "-listen", "1"])
            .arg(format!("http://127.0.0.1:{port}/live.ts"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Waits until something listens on `port`, read from /proc/net/tcp: connecting to find out
/// would use up the camera's one client.
fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let listening = || {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&format!(":{port:04X}")) && f[3] == "0A"
        })
    };
    while !listening() {
        assert!(Instant::now() < deadline, "the HTTP camera did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The JSON events written to `path` so far (the file sink flushes after every frame).
fn events_so_far(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // A line being written has no newline yet: only whole lines count.
    text.split_inclusive('\n').filter(|l| l.ends_with('\n')).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `child`'s exit and output, waited for `limit` at most (then it is killed and the test fails).
fn output_within(mut child: KillOnDrop, limit: Duration) -> std::process::Output {
    fn drain(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        let mut r = r.unwrap();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = r.read_to_end(&mut bytes);
            bytes
        })
    }
    let (stdout, stderr) = (drain(child.0.stdout.take()), drain(child.0.stderr.take()));
    let mut status = None;
    wait_until("the stream to end", limit, || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    });
    std::process::Output { status: status.unwrap(), stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

#[test]
fn a_network_source_that_dies_is_reconnected_then_given_up_with_a_clear_error() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut camera = http_camera(&fx, port);
    wait_listening(port);
    let events = tmp.path().join("events.jsonl");
    let child = KillOnDrop(
        stream_cmd(&fx, tmp.path())
            .arg(format!("http://127.0.0.1:{port}/live.ts"))
            .args(["--reconnect", "5", "--json", "--backend", "tract", "--frame-events"])
            .arg("--events")
            .arg(&events)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let frames = |from: usize| events_so_far(&events)[from..].iter().filter(|e| e["type"] == "frame").count();
    // Kill the camera once frames arrive, bring it back (a reconnect), and once frames come
    // through the new connection, kill it for good. Each step waits for what it needs.
    wait_until("frames from the camera", Duration::from_secs(120), || frames(0) >= 5);
    camera.0.kill().unwrap();
    camera.0.wait().unwrap();
    let mut camera = http_camera(&fx, port);
    wait_listening(port);
    let reconnected = || events_so_far(&events).iter().position(|e| e["type"] == "source_reconnected");
    wait_until("the reconnect", Duration::from_secs(120), || reconnected().is_some());
    wait_until("frames after the reconnect", Duration::from_secs(120), || frames(reconnected().unwrap()) >= 5);
    camera.0.kill().unwrap();
    camera.0.wait().unwrap();
    let gone = Instant::now();
    let out = output_within(child, Duration::from_secs(180));
    // Five reconnects wait 0.5 + 1 + 2 + 4 + 8 s before giving up: it must not hang on.
    let gave_up = gone.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a source that is gone for good is a failure");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(gave_up >= Duration::from_secs(15), "gave up after {gave_up:?}, before its reconnects were tried");
    let s = summary(&stdout);
    let src = &s["sources"][0];
    assert!(src["frames_processed"].as_u64().unwrap() >= 10, "{src}");
    let error = src["error"].as_str().unwrap();
    assert!(error.contains(&format!("127.0.0.1:{port}")) && error.contains("after 5 reconnect attempts"), "{error}");
    let kinds: Vec<String> = read_jsonl(&events).iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "source_reconnected").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "source_lost").count() as u64, src["reconnects"].as_u64().unwrap());
    // At least one try for the first loss, then all five for the last.
    assert!(src["reconnects"].as_u64().unwrap() >= 6, "{src}");
}

#[test]
fn bad_sources_and_settings_are_clear_errors() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("notes.mp4");
    std::fs::write(&text, "this is not a video\n").unwrap();
    let truncated = tmp.path().join("truncated.mp4");
    let bytes = std::fs::read(fx.join(VIDEO)).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let empty_dir = tmp.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let bad_toml = tmp.path().join("s.toml");
    std::fs::write(&bad_toml, "polcy = 'all'\n").unwrap();
    let video = fx.join(VIDEO).display().to_string();
    let dead_broker = format!("mqtt://127.0.0.1:{}/t", free_port());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["/no/such/video.mp4".into()], "no such file"),
        (vec![text.display().to_string()], "not a readable video"),
        (vec![empty_dir.display().to_string()], "no images"),
        (vec!["gopher://camera/1".into()], "unsupported scheme"),
        (vec![video.clone(), "--line".into(), "door=1,2,3".into()], "X1,Y1,X2,Y2"),
        (vec![video.clone(), "--zone".into(), "z=0,0,1,1".into()], "three"),
        (vec![video.clone(), "--config".into(), bad_toml.display().to_string()], "unknown field"),
        (vec![video.clone(), "--mqtt".into(), dead_broker], "MQTT broker"),
        (vec![video.clone(), "--record".into(), "/no/such/dir/out.mp4".into()], "does not exist"),
        (vec![video.clone(), "--policy".into(), "newest".into()], "latest or all"),
    ];
    for (args, says) in cases {
        let started = Instant::now();
        let (out, _, stderr) = run(stream_cmd(&fx, tmp.path()).args(&args));
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(30), "{args:?} took {:?}", started.elapsed());
    }
    // A file cut short: the frames before the cut, then a clean end or a clear error.
    let (out, stdout, stderr) = run(stream_cmd(&fx, tmp.path()).arg(&truncated).arg("--json"));
    assert!(!stderr.contains("panicked"), "{stderr}");
    let src = &summary(&stdout)["sources"][0];
    let processed = src["frames_processed"].as_u64().unwrap();
    assert!((1..100).contains(&processed), "{src}");
    assert!(out.status.success() || src["error"].is_string(), "{src}");
}

#[test]
fn a_folder_of_photos_through_a_classifier_gives_label_events() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let photos =
        photo_folder(&fx, &tmp.path().join("photos"), &["apple.jpg", "baboon.jpg", "butterfly.jpg", "chelsea.png"]);
    let (out, stdout, stderr) = run(stream_cmd(&fx, tmp.path()).arg(&photos).args([
        "--model",
        "efficientnet_lite0",
        "--events",
        "-",
        "--frame-events",
        "--top-k",
        "3",
    ]));
    assert!(out.status.success(), "{stderr}");
    let events: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let frames: Vec<&Value> = events.iter().filter(|e| e["type"] == "frame").collect();
    assert_eq!(frames.len(), 4);
    assert_eq!(frames[0]["labels"].as_array().unwrap().len(), 3);
    // The first photo's label is announced at once; times follow the folder's 10 fps.
    let first = events.iter().find(|e| e["type"] == "label").unwrap();
    assert_eq!(first["frame"], 0);
    assert_eq!(first["label"], frames[0]["labels"][0]["label"]);
    assert_eq!(frames[3]["time_s"], 0.3);
    assert!(stderr.contains("4 of 4 frames answered"), "{stderr}");
}

/// Several sources share one model: with a model that takes a batch, frames of different
/// sources go through it together; every source is answered in full, under its own name.
/// Batches are counted at the session, and told apart by their images' content: each source
/// is a folder of different photos.
#[test]
fn sources_sharing_a_model_are_batched_together() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let spec = quick_export(&fx, tmp.path(), 600);
    let folders = [["apple.jpg", "baboon.jpg"], ["butterfly.jpg", "chelsea.png"], ["orange.jpg", "messi5.jpg"]];
    let mut sources = Vec::new();
    for (i, names) in folders.iter().enumerate() {
        sources.push(strix_stream::SourceKind::Folder(photo_folder(
            &fx,
            &tmp.path().join(format!("photos{i}")),
            names,
        )));
    }
    let log = BatchLog::default();
    let runtime = CountingRuntime {
        inner: strix_runtime::open(strix_runtime::Backend::Tract, &Default::default()).unwrap(),
        log: log.clone(),
        // The small CNN answers in a millisecond, faster than a photo decodes: slowed down, the
        // other sources' frames are waiting when the worker comes back (not left to timing).
        slow: std::time::Duration::from_millis(300),
    };
    let resolver =
        strix_zoo::Resolver { cache_dir: tmp.path().join("cache"), search_path: vec![], hub: None, offline: true };
    let located = strix_zoo::locate(spec.to_str().unwrap(), &crate::support::empty_home()).unwrap();
    let model = resolver.resolve(&located, &strix_core::NoProgress).unwrap();
    let pipeline = std::sync::Arc::new(strix_pipeline::Pipeline::load(model, &runtime).unwrap());
    log.lock().unwrap().clear();
    // Each image's fingerprint, as the session will see it, by source.
    let spec = &pipeline.model().spec;
    let pre = strix_vision::Preprocessor::new(spec.input.as_ref().unwrap(), spec.preprocess.as_ref().unwrap()).unwrap();
    let fingerprint = |path: &Path| -> f64 {
        let img = strix_vision::decode_file(path, &strix_vision::DecodeLimits::default()).unwrap();
        let mut x = vec![0f32; pre.sample_len()];
        pre.run(&img, &mut x);
        x.iter().map(|&v| f64::from(v)).sum()
    };
    let owners: Vec<(f64, usize)> = folders
        .iter()
        .enumerate()
        .flat_map(|(i, names)| names.iter().map(move |n| (i, *n)))
        .map(|(i, n)| (fingerprint(&tmp.path().join(format!("photos{i}")).join(n)), i))
        .collect();
    let job = strix_stream::StreamJob {
        sources,
        source_options: strix_stream::SourceOptions::default(),
        config: strix_stream::StreamConfig::default(),
        sinks: Vec::new(),
        http: None,
        record: None,
        overwrite: false,
        max_frames: None,
        duration: None,
        frame_events: false,
        top_k: 1,
        workers: Some(1),
        tap: None,
        identify: None,
        monitor_status: None,
    };
    struct Quiet;
    impl strix_stream::RunHooks for Quiet {}
    let s = strix_stream::run(pipeline, job, Default::default(), &Quiet).unwrap();
    let names: Vec<&str> = s.sources.iter().map(|x| x.source.as_str()).collect();
    assert_eq!(names.len(), 3);
    assert!(s.sources.iter().all(|x| x.frames_processed == 2), "{names:?}");
    let owner = |sum: f64| owners.iter().find(|(f, _)| (f - sum).abs() <= 1e-3 * f.abs().max(1.0)).map(|o| o.1);
    // Any inference made to warm the engine up carries none of the photos.
    let batches: Vec<Vec<f64>> =
        log.lock().unwrap().iter().filter(|b| b.iter().all(|&s| owner(s).is_some())).cloned().collect();
    let per_batch: Vec<std::collections::BTreeSet<usize>> =
        batches.iter().map(|b| b.iter().filter_map(|&sum| owner(sum)).collect()).collect();
    eprintln!("sources per batch: {per_batch:?}");
    assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 6);
    assert!(per_batch.iter().any(|sources| sources.len() >= 2), "no batch held frames of several sources");
}

/// A webhook receiver: answers 200 to every POST and keeps the bodies.
fn webhook_receiver() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                // Keep-alive: one request after another on the same connection.
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    assert!(line.starts_with("POST /hook "), "{line}");
                    loop {
                        line.clear();
                        reader.read_line(&mut line).unwrap();
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).unwrap();
                    sink.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
                }
            });
        }
    });
    (port, got)
}

#[test]
fn webhook_receives_the_same_events_as_the_jsonl_file() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (port, got) = webhook_receiver();
    let events = tmp.path().join("events.jsonl");
    let (out, stdout, stderr) = run(stream_cmd(&fx, tmp.path())
        .arg(fx.join(VIDEO))
        .args(["--max-frames", "25", "--json"])
        .args(["--webhook", &format!("http://127.0.0.1:{port}/hook")])
        .arg("--events")
        .arg(&events));
    assert!(out.status.success(), "{stderr}");
    let lines = read_jsonl(&events);
    assert!(lines.iter().any(|e| e["type"] == "appeared"), "{lines:?}");
    let s = summary(&stdout);
    let hook =
        s["sinks"].as_array().unwrap().iter().find(|k| k["sink"].as_str().unwrap().starts_with("webhook")).unwrap();
    assert_eq!((hook["sent"].as_u64(), hook["failed"].as_u64()), (Some(lines.len() as u64), Some(0)));
    assert_eq!(*got.lock().unwrap(), lines);

    // A receiver that is not there: the run goes on, the summary counts the failures.
    let dead = free_port();
    let (out, stdout, _) = run(stream_cmd(&fx, tmp.path())
        .arg(fx.join(VIDEO))
        .args(["--max-frames", "25", "--json"])
        .args(["--webhook", &format!("http://127.0.0.1:{dead}/hook")]));
    assert!(!out.status.success(), "undelivered events make the exit status a failure");
    let s = summary(&stdout);
    assert_eq!(s["sources"][0]["frames_processed"], 25);
    assert!(s["sinks"][0]["failed"].as_u64().unwrap() > 0, "{s}");
}

/// `--task pose` is MoveNet MultiPose now: on the street video several people are tracked at
/// once, and each track in the frame events carries its skeleton (17 named keypoints on the
/// person's box). Its pedestrians score about 0.2, so the tracker starts tracks from 0.15.
#[test]
fn multipose_tracks_keep_their_skeletons() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("stream.toml");
    std::fs::write(&config, "[tracker]\nhigh_score = 0.15\nlow_score = 0.05\n").unwrap();
    let events = tmp.path().join("events.jsonl");
    let (out, stdout, stderr) = run(stream_cmd(&fx, tmp.path())
        .arg(fx.join(VIDEO))
        .args(["--task", "pose", "--policy", "all", "--max-frames", "12", "--frame-events", "--json", "--config"])
        .arg(&config)
        .arg("--events")
        .arg(&events));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(summary(&stdout)["model"], "movenet_multipose", "{stdout}");
    let lines = read_jsonl(&events);
    let frames: Vec<&Value> = lines.iter().filter(|e| e["type"] == "frame").collect();
    assert_eq!(frames.len(), 12);
    let last = frames.last().unwrap();
    let tracks = last["tracks"].as_array().cloned().unwrap_or_default();
    assert!(tracks.len() >= 2, "{last}");
    for t in &tracks {
        let kps = t["keypoints"].as_array().unwrap_or_else(|| panic!("a track without a skeleton: {t}"));
        assert_eq!(kps.len(), 17, "{t}");
        assert_eq!(kps[0]["name"], "nose");
        let b: Vec<f64> = t["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let inside = kps
            .iter()
            .filter(|k| {
                let (x, y) = (k["x"].as_f64().unwrap(), k["y"].as_f64().unwrap());
                x >= b[0] - 10.0 && x <= b[2] + 10.0 && y >= b[1] - 10.0 && y <= b[3] + 10.0
            })
            .count();
        assert!(inside >= 12, "{inside} of 17 keypoints on the track's box: {t}");
    }
}
