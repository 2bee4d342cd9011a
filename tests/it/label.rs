//! `strix label`: the labelling page in a real headless Chromium (driven over the DevTools
//! protocol), concurrent and killed servers, COCO / YOLO round trips, hostile requests, and
//! the loop from labels to a trained, served model whose requests come back as new images.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fixtures_or_skip;
use crate::serve::{Reply, request};
use crate::stream::chromium;
use crate::support::{KillOnDrop, free_port, in_ci, photo_folder, run, strix, wait_for_port};

/// A `strix label serve` child on a free port; killed when dropped.
struct LabelServer {
    child: KillOnDrop,
    port: u16,
}

impl LabelServer {
    fn start(mut cmd: Command) -> LabelServer {
        let port = free_port();
        let child = KillOnDrop(
            cmd.args(["--http", &format!("127.0.0.1:{port}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for_port(port);
        LabelServer { child, port }
    }

    fn get(&self, path: &str) -> Reply {
        request(self.port, "GET", path, &[], b"")
    }

    fn put_json(&self, path: &str, body: &Value) -> Reply {
        request(self.port, "PUT", path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
    }

    fn save(&self, id: i64, version: i64, labels: Value) -> Reply {
        self.put_json(&format!("/api/images/{id}/labels"), &json!({ "version": version, "labels": labels }))
    }

    fn ids(&self) -> Vec<i64> {
        let r = self.get("/api/images?limit=1000");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["images"].as_array().unwrap().iter().map(|i| i["image"]["id"].as_i64().unwrap()).collect()
    }

    /// SIGKILL, and wait for it to be gone.
    fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}

fn label_cmd(fx: &Path, cache: &Path, project: &Path) -> Command {
    let mut cmd = strix(fx, cache);
    cmd.env("STRIX_HOME", cache.join("home")).args(["label", "serve"]).arg(project);
    cmd
}

/// A detection project on three fixture photos plus a file that does not decode.
fn detect_project(fx: &Path, tmp: &Path) -> (PathBuf, PathBuf) {
    let images = photo_folder(fx, &tmp.join("photos"), &["chelsea.png", "messi5.jpg", "baboon.jpg"]);
    std::fs::write(images.join("broken.jpg"), b"\xff\xd8\xff\xe0 this is not a jpeg").unwrap();
    (tmp.join("bins"), images)
}

/// [`detect_project`] served, classes `cat` and `person`, no model.
fn detect_server(fx: &Path, tmp: &Path) -> (PathBuf, LabelServer) {
    let (project, images) = detect_project(fx, tmp);
    let mut cmd = label_cmd(fx, tmp, &project);
    cmd.arg("--images").arg(&images).args(["--task", "detect", "--classes", "cat,person"]);
    (project.clone(), LabelServer::start(cmd))
}

// ---------------------------------------------------------------------------------------------
// Chromium over the DevTools protocol.

/// A headless Chromium and a DevTools connection to its one page.
struct Browser {
    _child: KillOnDrop,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(chromium: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        // Owned by a guard from the start: a failed step below must not leave Chromium running.
        let mut child = KillOnDrop(
            Command::new(chromium)
                .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
                .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
                .args(["--remote-debugging-port=0", "--window-size=1280,800", "--hide-scrollbars"])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg("about:blank")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = child.0.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let port: u16 = loop {
            let line = lines.next().expect("chromium ended before DevTools listened").unwrap();
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                break rest.split('/').next().unwrap().parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let deadline = Instant::now() + Duration::from_secs(30);
        let page = loop {
            let list = devtools_targets(port);
            if let Some(p) = list.as_array().and_then(|l| l.iter().find(|t| t["type"] == "page")) {
                // The listed URL is built from the Host header, which carried no port.
                break format!("ws://127.0.0.1:{port}/devtools/page/{}", p["id"].as_str().unwrap());
            }
            assert!(Instant::now() < deadline, "chromium shows no page");
            std::thread::sleep(Duration::from_millis(100));
        };
        let (ws, _) = tungstenite::connect(page.as_str()).unwrap();
        Browser { _child: child, ws, next_id: 1, _profile: profile }
    }

    /// One DevTools call and its result (events that arrive meanwhile are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let v = self.call_raw(method, params);
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }

    /// A JavaScript expression's value, or `None` if it failed (a page being replaced).
    fn try_eval(&mut self, expr: &str) -> Option<Value> {
        let v = self
            .call_raw("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }));
        if v.get("error").is_some() || v["result"].get("exceptionDetails").is_some() {
            return None;
        }
        Some(v["result"]["result"]["value"].clone())
    }

    fn call_raw(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.ws
            .send(tungstenite::Message::text(json!({ "id": id, "method": method, "params": params }).to_string()))
            .unwrap();
        loop {
            let msg = self.ws.read().unwrap();
            let tungstenite::Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"].as_u64() == Some(id) {
                return v;
            }
        }
    }

    /// A JavaScript expression's value (promises awaited).
    fn eval(&mut self, expr: &str) -> Value {
        let r =
            self.call("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }));
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Wait until `expr` is true (30 s at most).
    fn until(&mut self, expr: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.try_eval(&format!("!!({expr})")) != Some(json!(true)) {
            assert!(Instant::now() < deadline, "the page never got to: {expr}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn open(&mut self, url: &str) {
        self.call("Page.enable", json!({}));
        self.call("Page.navigate", json!({ "url": url }));
        match url.split_once('#') {
            Some((_, id)) => {
                self.until(&format!("window.strix && strix.ready() && strix.state.img && strix.state.img.id === {id}"))
            }
            None => self.until("window.strix && strix.ready() && strix.state.img"),
        }
    }

    fn mouse(&mut self, kind: &str, (x, y): (f64, f64), buttons: u32) {
        let button = if kind == "mouseMoved" && buttons == 0 { "none" } else { "left" };
        self.call(
            "Input.dispatchMouseEvent",
            json!({ "type": kind, "x": x, "y": y, "button": button, "buttons": buttons, "clickCount": 1 }),
        );
    }

    /// Press at `from`, move in steps, release at `to`: a drag as a hand makes it.
    fn drag(&mut self, from: (f64, f64), to: (f64, f64)) {
        self.mouse("mouseMoved", from, 0);
        self.mouse("mousePressed", from, 1);
        for i in 1..=5 {
            let t = f64::from(i) / 5.0;
            self.mouse("mouseMoved", (from.0 + (to.0 - from.0) * t, from.1 + (to.1 - from.1) * t), 1);
        }
        self.mouse("mouseReleased", to, 0);
    }

    fn click(&mut self, at: (f64, f64)) {
        self.mouse("mouseMoved", at, 0);
        self.mouse("mousePressed", at, 1);
        self.mouse("mouseReleased", at, 0);
    }

    fn key(&mut self, key: &str) {
        let (code, text) = match key {
            "ArrowRight" => (39, None),
            k => (k.chars().next().unwrap().to_ascii_uppercase() as u32, Some(k)),
        };
        let mut down = json!({ "type": "keyDown", "key": key, "windowsVirtualKeyCode": code });
        if let Some(t) = text {
            down["text"] = json!(t);
        }
        self.call("Input.dispatchKeyEvent", down);
        self.call("Input.dispatchKeyEvent", json!({ "type": "keyUp", "key": key, "windowsVirtualKeyCode": code }));
    }

    /// `key` with Ctrl held.
    fn ctrl_key(&mut self, key: &str) {
        let code = key.chars().next().unwrap().to_ascii_uppercase() as u32;
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({ "type": kind, "key": key, "modifiers": 2, "windowsVirtualKeyCode": code }),
            );
        }
    }

    /// Page coordinates of image pixel `(x, y)`.
    fn screen(&mut self, x: f64, y: f64) -> (f64, f64) {
        let p = self.eval(&format!("strix.toScreen({x}, {y})"));
        (p["x"].as_f64().unwrap(), p["y"].as_f64().unwrap())
    }

    fn screenshot(&mut self, path: &Path) -> image::RgbImage {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        std::fs::write(path, &png).unwrap();
        image::load_from_memory(&png).unwrap().to_rgb8()
    }
}

/// `GET /json/list` of Chromium's DevTools server, read by its Content-Length (the server keeps
/// the connection open whatever the request says).
fn devtools_targets(port: u16) -> Value {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /json/list HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "DevTools closed the connection: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
                })
                .expect("DevTools answered without a Content-Length");
            if body.len() >= len {
                return serde_json::from_str(&body[..len]).unwrap();
            }
        }
    }
}

/// Where screenshots go: `STRIX_SCREENSHOTS` when set (to look at them), else beside the test.
fn screenshot_path(tmp: &Path, name: &str) -> PathBuf {
    let dir = std::env::var_os("STRIX_SCREENSHOTS").map_or_else(|| tmp.to_path_buf(), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn colours(img: &image::RgbImage) -> usize {
    img.pixels().map(|p| p.0).collect::<std::collections::HashSet<_>>().len()
}

/// An image's file name and its `(class, [x, y, w, h])` boxes.
type ImageBoxes = (String, Vec<(String, [f64; 4])>);

/// Boxes `[class, x, y, w, h]` of an image's labels as the API gives them.
fn boxes_of(labels: &Value) -> Vec<(String, [f64; 4])> {
    labels["boxes"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .map(|b| {
                    let f = |k: &str| b[k].as_f64().unwrap();
                    (b["class"].as_str().unwrap().to_string(), [f("x"), f("y"), f("w"), f("h")])
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Acceptance: in Chromium, a box drawn with the mouse gets its class from a key, a model
/// suggestion on the next image is accepted with a click, both survive a reload, and the COCO
/// and YOLO exports hold exactly those boxes.
#[test]
fn boxes_drawn_and_suggestions_accepted_in_chromium_survive_reload_and_export() {
    let fx = fixtures_or_skip!();
    let Some(chromium) = chromium() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (project, images) = detect_project(&fx, tmp.path());
    let mut cmd = label_cmd(&fx, tmp.path(), &project);
    cmd.arg("--images").arg(&images).args([
        "--task",
        "detect",
        "--classes",
        "cat,person,dog",
        "--model",
        "nanodet_m_416",
    ]);
    let server = LabelServer::start(cmd);
    let p = server.get("/api/project").json();
    assert_eq!(p["stats"]["images"], 3, "{p}");
    assert_eq!(p["problems"].as_array().unwrap().len(), 1, "the broken file is listed: {p}");
    assert!(p["problems"][0]["file"].as_str().unwrap().ends_with("broken.jpg"), "{p}");
    let ids = server.ids();
    let files: Vec<String> = ids
        .iter()
        .map(|id| server.get(&format!("/api/images/{id}")).json()["image"]["file"].as_str().unwrap().to_string())
        .collect();
    // Sorted by name: baboon, chelsea, messi5.
    assert_eq!(files, ["baboon.jpg", "chelsea.png", "messi5.jpg"]);

    let mut b = Browser::launch(&chromium);
    let base = format!("http://127.0.0.1:{}/", server.port);
    // The cat photo: draw a box around the cat and make it "cat" with key 1 (after 2: person).
    b.open(&format!("{base}#{}", ids[1]));
    assert_eq!(b.eval("strix.state.img.id"), json!(ids[1]));
    let (from, to) = (b.screen(40.0, 30.0), b.screen(420.0, 300.0));
    b.drag(from, to);
    b.until("strix.state.labels.boxes.length === 1");
    b.key("2");
    b.until("strix.state.labels.boxes[0].class === 'person'");
    b.key("1");
    b.until("strix.state.labels.boxes[0].class === 'cat'");
    // Resize by the bottom-right corner (the photo is 451x300), undo it, redo it, undo again.
    let (corner, inward) = (b.screen(420.0, 300.0), b.screen(400.0, 250.0));
    b.drag(corner, inward);
    let size = |w: f64, h: f64| {
        format!(
            "Math.abs(strix.state.labels.boxes[0].w - {w}) < 1.5 && Math.abs(strix.state.labels.boxes[0].h - {h}) < 1.5"
        )
    };
    b.until(&size(360.0, 220.0));
    b.ctrl_key("z");
    b.until(&size(380.0, 270.0));
    b.ctrl_key("y");
    b.until(&size(360.0, 220.0));
    b.ctrl_key("z");
    b.until(&format!("{} && strix.state.labels.boxes[0].class === 'cat'", size(380.0, 270.0)));
    b.key("s");
    b.until("strix.state.version === 1 && !strix.state.dirty");
    // What the server stored (f32) is what a reload and the exports must show.
    let drawn = boxes_of(&server.get(&format!("/api/images/{}", ids[1])).json()["labels"]);
    assert_eq!(drawn.len(), 1);
    assert_eq!(drawn[0].0, "cat");
    for (got, want) in drawn[0].1.iter().zip([40.0, 30.0, 380.0, 270.0]) {
        assert!((got - want).abs() < 1.5, "drawn box {:?} is not where the mouse went", drawn[0].1);
    }
    let detect_shot = b.screenshot(&screenshot_path(tmp.path(), "label-detect-drawn.png"));
    assert!(colours(&detect_shot) > 2000, "the page shows no photo");

    // Next (→) goes to the next unlabelled image, messi5.jpg, with the detector's people.
    b.key("ArrowRight");
    b.until(&format!("strix.state.img && strix.state.img.id === {} && strix.ready()", ids[2]));
    let suggestion = b.eval("strix.state.suggestion");
    let people: Vec<&Value> =
        suggestion["boxes"].as_array().unwrap().iter().filter(|s| s["class"] == "person").collect();
    assert!(!people.is_empty(), "nanodet suggests no person on messi5.jpg: {suggestion}");
    let s = people[0];
    let (sx, sy, sw, sh) =
        (s["x"].as_f64().unwrap(), s["y"].as_f64().unwrap(), s["w"].as_f64().unwrap(), s["h"].as_f64().unwrap());
    // A click on the dashed box's left edge accepts it.
    let edge = b.screen(sx, sy + sh / 2.0);
    b.click(edge);
    b.until("strix.state.labels.boxes.length === 1");
    b.screenshot(&screenshot_path(tmp.path(), "label-detect-suggestions.png"));
    b.key("s");
    b.until("strix.state.version === 1 && !strix.state.dirty");

    // A reload shows both from the server.
    b.eval("window.beforeReload = true");
    b.call("Page.reload", json!({ "ignoreCache": true }));
    b.until("!window.beforeReload && window.strix && strix.ready() && strix.state.img");
    b.open(&format!("{base}#{}", ids[1]));
    assert_eq!(boxes_of(&b.eval("strix.state.labels")), drawn);
    b.open(&format!("{base}#{}", ids[2]));
    let accepted = boxes_of(&b.eval("strix.state.labels"));
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].0, "person");
    let (w, h) =
        (b.eval("strix.state.img.width").as_f64().unwrap(), b.eval("strix.state.img.height").as_f64().unwrap());
    // The suggestion as accepted (clipped to the image if it reached past an edge).
    let want = [sx.max(0.0), sy.max(0.0), (sx + sw).min(w) - sx.max(0.0), (sy + sh).min(h) - sy.max(0.0)];
    for (got, want) in accepted[0].1.iter().zip(want) {
        assert!((got - want).abs() < 1e-3, "accepted {:?}, suggested {want:?}", accepted[0].1);
    }
    drop(b);

    // The exports hold exactly those boxes.
    let want: Vec<ImageBoxes> = vec![("chelsea.png".into(), drawn.clone()), ("messi5.jpg".into(), accepted.clone())];
    let (coco, yolo) = exports_hold(&fx, tmp.path(), &project, &want);
    assert!(coco.join("images/train/chelsea.png").is_file() && yolo.join("images/messi5.jpg").is_file());
}

/// Export `project` as COCO and as YOLO (into `tmp/coco`, `tmp/yolo`, returned) and check that
/// both hold `want`, sorted by file name: COCO exactly, YOLO to its 6 normalised decimals.
fn exports_hold(fx: &Path, tmp: &Path, project: &Path, want: &[ImageBoxes]) -> (PathBuf, PathBuf) {
    let (coco, yolo) = (tmp.join("coco"), tmp.join("yolo"));
    for (format, out) in [("coco", &coco), ("yolo", &yolo)] {
        let (o, _, err) =
            run(strix(fx, tmp).args(["label", "export"]).arg(project).args(["--format", format, "--out"]).arg(out));
        assert!(o.status.success(), "{err}");
    }
    assert_eq!(read_coco_boxes(&coco.join("annotations/instances_train.json")), want);
    let from_yolo = read_yolo_boxes(&yolo);
    assert_eq!(from_yolo.len(), want.len());
    for ((n, bs), (wn, wbs)) in from_yolo.iter().zip(want) {
        assert_eq!((n, bs.len()), (wn, wbs.len()));
        for ((c, b), (wc, wb)) in bs.iter().zip(wbs) {
            assert_eq!(c, wc);
            assert!(b.iter().zip(wb).all(|(x, y)| (x - y).abs() < 1e-2), "{n}: {b:?} vs {wb:?}");
        }
    }
    (coco, yolo)
}

/// `strix label import PROJECT --format coco`: how it ended and its stderr.
fn coco_import(fx: &Path, cache: &Path, project: &Path, json: &Path, images: &Path) -> (std::process::Output, String) {
    let (o, _, err) = run(strix(fx, cache)
        .args(["label", "import"])
        .arg(project)
        .args(["--format", "coco", "--annotations"])
        .arg(json)
        .arg("--images")
        .arg(images));
    (o, err)
}

/// `(file, [(class, [x, y, w, h])])` of a COCO file, by file name.
fn read_coco_boxes(json: &Path) -> Vec<ImageBoxes> {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let cats: std::collections::HashMap<u64, String> = doc["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_u64().unwrap(), c["name"].as_str().unwrap().to_string()))
        .collect();
    let mut out: Vec<ImageBoxes> = doc["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|im| {
            let id = im["id"].as_u64().unwrap();
            let boxes = doc["annotations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["image_id"].as_u64() == Some(id))
                .map(|a| {
                    let b: Vec<f64> = a["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                    (cats[&a["category_id"].as_u64().unwrap()].clone(), [b[0], b[1], b[2], b[3]])
                })
                .collect();
            (im["file_name"].as_str().unwrap().to_string(), boxes)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The same from a YOLO folder (boxes back in pixels).
fn read_yolo_boxes(dir: &Path) -> Vec<ImageBoxes> {
    let set = strix_data::detection::read_yolo(dir).unwrap();
    let mut out: Vec<_> = set
        .images
        .iter()
        .map(|im| {
            let boxes = im.boxes.iter().map(|b| (set.classes[b.class].clone(), b.bbox.map(f64::from))).collect();
            (im.path.file_name().unwrap().to_string_lossy().into_owned(), boxes)
        })
        .collect();
    out.sort_by(|a: &(String, Vec<_>), b| a.0.cmp(&b.0));
    out
}

/// Acceptance: the classification page picks classes with keys (saving and moving on), shows
/// a classifier's suggestions, and labels made there train a model that registers and serves;
/// the served model's captured requests come back as new images with its answers.
#[test]
fn keys_label_a_classification_project_that_trains_serves_and_captures() {
    let fx = fixtures_or_skip!();
    let Some(chromium) = chromium() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let names = ["apple.jpg", "orange.jpg", "coffee.png", "baboon.jpg", "squirrel_cls.jpg", "butterfly.jpg"];
    let images = photo_folder(&fx, &tmp.path().join("photos"), &names);
    let project = tmp.path().join("trash");
    let mut cmd = label_cmd(&fx, tmp.path(), &project);
    cmd.arg("--images").arg(&images).args([
        "--task",
        "classify",
        "--classes",
        "fruit,animal",
        "--model",
        "efficientnet_lite0",
    ]);
    let server = LabelServer::start(cmd);
    let mut b = Browser::launch(&chromium);
    b.open(&format!("http://127.0.0.1:{}/", server.port));
    // The classifier's ImageNet suggestions are shown (not acceptable: not project classes).
    b.until("strix.state.suggestion && strix.state.suggestion.classes.length > 0");
    b.screenshot(&screenshot_path(tmp.path(), "label-classify.png"));
    // In name order: apple, baboon, butterfly, coffee, orange, squirrel.
    let want = ["fruit", "animal", "animal", "fruit", "fruit", "animal"];
    for (i, class) in want.iter().enumerate() {
        b.until(&format!("strix.ready() && strix.state.version === 0 && strix.state.visited.length === {}", i + 1));
        b.key(if *class == "fruit" { "1" } else { "2" });
    }
    b.until("document.getElementById('empty').style.display === 'flex'");
    drop(b);
    let listed = server.get("/api/images").json();
    let mut got: Vec<(String, String)> = listed["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (i["image"]["file"].as_str().unwrap().to_string(), i["labels"]["class"].as_str().unwrap_or("-").to_string())
        })
        .collect();
    got.sort();
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort();
    let expected: Vec<(String, String)> =
        sorted.iter().zip(want).map(|(n, c)| (n.to_string(), c.to_string())).collect();
    assert_eq!(got, expected);
    let stats = server.get("/api/project").json()["stats"].clone();
    assert_eq!((stats["labelled"].as_u64(), stats["per_class"]["fruit"].as_u64()), (Some(6), Some(3)), "{stats}");
    drop(server);

    // Train on the project directly, register, serve with capture.
    let home = tmp.path().join("home");
    let run_dir = tmp.path().join("run");
    let (o, _, err) = run(strix(&fx, tmp.path())
        .env("STRIX_HOME", &home)
        .args(["train", "--data"])
        .arg(&project)
        .args([
            "--model",
            "small-cnn",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--threads",
            "2",
            "--test",
            "false",
            "--val-fraction",
            "0.34",
        ])
        .arg("--run-dir")
        .arg(&run_dir));
    assert!(o.status.success(), "{err}");
    assert!(err.contains("labelling project"), "{err}");
    let (o, _, err) = run(strix(&fx, tmp.path())
        .env("STRIX_HOME", &home)
        .args(["models", "register"])
        .arg(&run_dir)
        .args(["--name", "trash"]));
    assert!(o.status.success(), "{err}");
    let port = free_port();
    let mut serve = KillOnDrop(
        strix(&fx, tmp.path())
            .env("STRIX_HOME", &home)
            .args(["serve", "--model", "trash=trash:1", "--capture"])
            .arg(&project)
            .args(["--capture-rate", "1", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port);
    for name in ["orange.jpg", "chelsea.png"] {
        let bytes = std::fs::read(fx.join("images").join(name)).unwrap();
        let r = request(port, "POST", "/v1/models/trash/predict", &[("Content-Type", "image/jpeg")], &bytes);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    Command::new("kill").arg("-TERM").arg(serve.0.id().to_string()).status().unwrap();
    let status = serve.0.wait().unwrap();
    let mut said = String::new();
    std::io::Read::read_to_string(&mut serve.0.stderr.take().unwrap(), &mut said).unwrap();
    assert!(status.success(), "{said}");
    assert!(said.contains("capture: kept 2 of 2"), "{said}");

    // The captured requests are new images with the served model's answers as suggestions.
    let server = LabelServer::start(label_cmd(&fx, tmp.path(), &project));
    let p = server.get("/api/project").json();
    assert_eq!((p["stats"]["images"].as_u64(), p["stats"]["captured"].as_u64()), (Some(8), Some(2)), "{p}");
    let listed = server.get("/api/images").json();
    let captured: Vec<&Value> =
        listed["images"].as_array().unwrap().iter().filter(|i| i["image"]["root"] == "captured").collect();
    assert_eq!(captured.len(), 2);
    for c in captured {
        let id = c["image"]["id"].as_i64().unwrap();
        let one = server.get(&format!("/api/images/{id}")).json();
        let s = &one["suggestion"];
        assert!(s["model"].as_str().unwrap().starts_with("trash"), "{one}");
        let classes: Vec<&str> =
            s["classes"].as_array().unwrap().iter().map(|c| c["class"].as_str().unwrap()).collect();
        assert!(classes.contains(&"fruit") && classes.contains(&"animal"), "{one}");
        let file = server.get(&format!("/api/images/{id}/file"));
        assert_eq!(file.status, 200);
    }

    // Quality: the captured images labelled against the model's own answers score 0; labelled
    // as it answered, 1. Either is compared with the version's validation accuracy.
    let val: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
    let val_accuracy = val["val"]["accuracy"].as_f64().unwrap();
    let captured: Vec<(i64, String)> = server.get("/api/images").json()["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["image"]["root"] == "captured")
        .map(|i| {
            let id = i["image"]["id"].as_i64().unwrap();
            let answer = server.get(&format!("/api/images/{id}")).json()["suggestion"]["classes"][0]["class"].clone();
            (id, answer.as_str().unwrap().to_string())
        })
        .collect();
    let quality = |version: i64, opposite: bool| {
        for (id, answer) in &captured {
            let class = if (answer == "fruit") == opposite { "animal" } else { "fruit" };
            assert_eq!(server.save(*id, version, json!({ "class": class })).status, 200);
        }
        let out = tmp.path().join(format!("quality{version}"));
        let (o, stdout, err) = run(strix(&fx, tmp.path())
            .env("STRIX_HOME", &home)
            .args(["monitor", "quality", "--model", "trash:1", "--json", "--project"])
            .arg(&project)
            .arg("--out")
            .arg(&out));
        let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout} {err}"));
        assert_eq!(report["images"], 2, "{report}");
        assert_eq!(report["figures"][0]["validation"].as_f64(), Some(val_accuracy), "{report}");
        (o.status.code(), report["figures"][0]["current"].as_f64().unwrap())
    };
    let (code, accuracy) = quality(0, true);
    eprintln!("validation accuracy {val_accuracy}: quality exits {code:?} at accuracy {accuracy}");
    assert_eq!(accuracy, 0.0);
    assert_eq!(code, Some(if val_accuracy > 0.05 { 3 } else { 0 }), "validation accuracy {val_accuracy}");
    assert_eq!(quality(1, false), (Some(0), 1.0));
}

/// Two clients save one image on the same version: one wins, the other gets 409 and the
/// winner's labels are what is stored; nothing is lost in the history.
#[test]
fn concurrent_saves_of_one_image_give_one_winner_and_a_409() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (_, server) = detect_server(&fx, tmp.path());
    let id = server.ids()[1];
    let port = server.port;
    for round in 0..10 {
        let version = server.get(&format!("/api/images/{id}")).json()["version"].as_i64().unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let handles: Vec<_> = ["cat", "person"]
            .into_iter()
            .map(|class| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let body = json!({ "version": version, "labels": { "boxes": [{ "class": class, "x": 10, "y": 10, "w": 50 + round, "h": 40 }] } });
                    barrier.wait();
                    let r = request(port, "PUT", &format!("/api/images/{id}/labels"), &[("Content-Type", "application/json")], body.to_string().as_bytes());
                    (class, r.status, r.body)
                })
            })
            .collect();
        let results: Vec<(&str, u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let statuses: Vec<u16> = results.iter().map(|r| r.1).collect();
        assert!(statuses.contains(&200) && statuses.contains(&409), "round {round}: {results:?}");
        let winner = results.iter().find(|r| r.1 == 200).unwrap().0;
        let loser = results.iter().find(|r| r.1 == 409).unwrap();
        let err: Value = serde_json::from_str(&loser.2).unwrap();
        assert_eq!(err["error"]["code"], "stale_version");
        assert_eq!(err["current_version"], version + 1);
        let now = server.get(&format!("/api/images/{id}")).json();
        assert_eq!(now["version"], version + 1);
        assert_eq!(now["labels"]["boxes"][0]["class"], winner);
    }
    let history = server.get(&format!("/api/images/{id}/history")).json();
    let versions: Vec<i64> =
        history["versions"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, (1..=10).collect::<Vec<_>>());
}

/// A save from the page made on a version someone else saved over meanwhile gets a 409: the
/// page then shows the image as it now is (their labels, the new version, nothing unsaved), and
/// a save made on that goes through.
#[test]
fn the_page_reloads_the_image_after_a_409_in_chromium() {
    let fx = fixtures_or_skip!();
    let Some(chromium) = chromium() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (_, server) = detect_server(&fx, tmp.path());
    let id = server.ids()[1];
    let mut b = Browser::launch(&chromium);
    b.open(&format!("http://127.0.0.1:{}/#{id}", server.port));
    let (from, to) = (b.screen(40.0, 30.0), b.screen(200.0, 150.0));
    b.drag(from, to);
    b.until("strix.state.labels.boxes.length === 1 && strix.state.dirty && strix.state.version === 0");

    // Someone else saves this image first.
    let theirs = json!({ "boxes": [{ "class": "person", "x": 250, "y": 100, "w": 100, "h": 150 }] });
    assert_eq!(server.save(id, 0, theirs.clone()).status, 200);
    b.key("s");
    b.until("strix.state.version === 1 && !strix.state.dirty && !strix.state.busy");
    assert_eq!(boxes_of(&b.eval("strix.state.labels")), boxes_of(&theirs), "the page shows their labels");
    let said = b.eval("document.getElementById('status').textContent");
    assert!(said.as_str().unwrap().contains("Someone saved this image meanwhile"), "{said}");
    let stored = server.get(&format!("/api/images/{id}")).json();
    assert_eq!((stored["version"].as_i64(), boxes_of(&stored["labels"])), (Some(1), boxes_of(&theirs)));

    // A box added to what was reloaded saves as version 2, on top of theirs.
    b.drag(from, to);
    b.until("strix.state.labels.boxes.length === 2 && strix.state.dirty");
    b.key("s");
    b.until("strix.state.version === 2 && !strix.state.dirty");
    let stored = server.get(&format!("/api/images/{id}")).json();
    assert_eq!(stored["version"], 2, "{stored}");
    let boxes = boxes_of(&stored["labels"]);
    assert_eq!(boxes.len(), 2, "{stored}");
    assert!(boxes.contains(&boxes_of(&theirs)[0]), "their box was kept: {stored}");
}

/// kill -9 in the middle of a burst of saves: after a restart every acknowledged save is there.
/// Until the kill every reply must be a 200: a writer that got anything else (an error, a
/// refused save, a dropped connection) is a failure, not a writer that stopped early.
#[test]
fn every_acknowledged_save_survives_kill_9() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (project, mut server) = detect_server(&fx, tmp.path());
    let ids = server.ids();
    let port = server.port;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<i64, (i64, f64)>::new()));
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let killed = std::sync::Arc::new(AtomicBool::new(false));
    // Three writers, one per image, saving as fast as the server answers.
    let writers: Vec<_> = ids
        .iter()
        .map(|&id| {
            let (acked, failures, killed) = (acked.clone(), failures.clone(), killed.clone());
            std::thread::spawn(move || {
                let mut version = 0;
                for n in 0..100_000 {
                    let w = 10.0 + (n % 200) as f64;
                    let body = json!({ "version": version, "labels": { "boxes": [{ "class": "cat", "x": 1, "y": 1, "w": w, "h": 5 }] } });
                    let head = format!(
                        "PUT /api/images/{id}/labels HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.to_string().len()
                    );
                    let reply = TcpStream::connect(("127.0.0.1", port)).and_then(|mut stream| {
                        std::io::Write::write_all(&mut stream, head.as_bytes())?;
                        let mut raw = String::new();
                        std::io::Read::read_to_string(&mut stream, &mut raw)?;
                        Ok(raw)
                    });
                    match reply {
                        Ok(raw) if raw.starts_with("HTTP/1.1 200") => {
                            version += 1;
                            acked.lock().unwrap().insert(id, (version, w));
                        }
                        // A reply the server did send is never anything but a 200.
                        Ok(raw) if raw.starts_with("HTTP/") => {
                            let status = raw.lines().next().unwrap_or_default().to_string();
                            failures.lock().unwrap().push(format!("image {id}, save {n}: {status}"));
                            return;
                        }
                        // No reply (a connection refused, cut or empty) only once the server is killed.
                        other if !killed.load(Ordering::SeqCst) => {
                            failures.lock().unwrap().push(format!("image {id}, save {n} before the kill: {other:?}"));
                            return;
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let acked_by_all = || acked.lock().unwrap().values().all(|(v, _)| *v >= 20) && acked.lock().unwrap().len() == 3;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !acked_by_all() && failures.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the writers got no 20 saves each acknowledged");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The burst goes on a moment longer, so the kill lands in the middle of saves.
    std::thread::sleep(Duration::from_millis(300));
    killed.store(true, Ordering::SeqCst);
    server.kill(); // SIGKILL
    for w in writers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{} save(s) failed: {failures:?}", failures.len());
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 3, "every writer got saves acknowledged before the kill");
    let server = LabelServer::start(label_cmd(&fx, tmp.path(), &project));
    for (id, (version, w)) in acked {
        let now = server.get(&format!("/api/images/{id}")).json();
        let stored = now["version"].as_i64().unwrap();
        // A save can land and be killed before its answer is sent: then the store is one ahead.
        assert!(
            stored == version || stored == version + 1,
            "image {id}: acknowledged version {version}, stored {stored}"
        );
        if stored == version {
            assert_eq!(now["labels"]["boxes"][0]["w"].as_f64(), Some(w), "{now}");
        }
        let history = server.get(&format!("/api/images/{id}/history")).json();
        assert_eq!(history["versions"].as_array().unwrap().len() as i64, stored);
    }
}

/// Acceptance: a COCO set imported, then exported as COCO and as YOLO, gives back the same
/// boxes and classes (an image without boxes stays a negative).
#[test]
fn coco_import_exports_back_as_identical_coco_and_yolo() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let images = photo_folder(&fx, &tmp.path().join("coco-images"), &["chelsea.png", "messi5.jpg", "apple.jpg"]);
    let boxes = [
        ("chelsea.png", vec![("cat", [12.5, 20.0, 300.25, 250.0]), ("dog", [0.0, 0.0, 30.0, 40.0])]),
        ("messi5.jpg", vec![("person", [100.0, 50.0, 80.5, 200.0])]),
        ("apple.jpg", vec![]),
    ];
    let cats = ["person", "cat", "dog"];
    let mut anns = Vec::new();
    let mut imgs = Vec::new();
    for (i, (name, bs)) in boxes.iter().enumerate() {
        let (w, h) = image::image_dimensions(images.join(name)).unwrap();
        imgs.push(json!({ "id": 10 + i, "file_name": name, "width": w, "height": h }));
        for (c, b) in bs {
            let cat = 7 + cats.iter().position(|x| x == c).unwrap();
            anns.push(json!({ "id": anns.len() + 1, "image_id": 10 + i, "category_id": cat, "bbox": b, "iscrowd": 0, "area": b[2] * b[3] }));
        }
    }
    let categories: Vec<Value> = cats.iter().enumerate().map(|(i, c)| json!({ "id": 7 + i, "name": c })).collect();
    let json_path = tmp.path().join("instances.json");
    std::fs::write(&json_path, json!({ "images": imgs, "annotations": anns, "categories": categories }).to_string())
        .unwrap();

    let project = tmp.path().join("imported");
    let import = || {
        let (o, err) = coco_import(&fx, tmp.path(), &project, &json_path, &images);
        assert!(o.status.success(), "{err}");
        err
    };
    let said = import();
    assert!(said.contains("imported 3 image(s) with 3 box(es)"), "{said}");
    let mut want: Vec<ImageBoxes> = boxes
        .iter()
        .map(|(n, bs)| (n.to_string(), bs.iter().map(|(c, b)| (c.to_string(), b.map(f64::from))).collect()))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let (_, yolo) = exports_hold(&fx, tmp.path(), &project, &want);
    let classes = std::fs::read_to_string(yolo.join("classes.txt")).unwrap();
    assert_eq!(classes.lines().collect::<Vec<_>>(), cats);
    // A second import of the same set continues: same images, nothing saved again, no
    // duplicates.
    let said = import();
    assert!(said.contains("0 had other labels") && said.contains("3 had these already"), "{said}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (images_now, versions) = rt.block_on(async {
        let p = strix_label::Project::open(&project).await.unwrap();
        let labelled = p.store.labelled().await.unwrap();
        (p.store.stats().await.unwrap().images, labelled.iter().map(|(_, a)| a.version).collect::<Vec<_>>())
    });
    assert_eq!((images_now, versions), (3, vec![1, 1, 1]));
}

/// Hostile requests get clear 4xx JSON and write nothing; the server keeps serving.
#[test]
fn bad_requests_are_refused_with_json_errors_and_change_nothing() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (_, server) = detect_server(&fx, tmp.path());
    let id = server.ids()[0];
    let path = format!("/api/images/{id}/labels");
    let ok_box = json!({ "boxes": [{ "class": "cat", "x": 1, "y": 1, "w": 10, "h": 10 }] });
    let big_len = 2 << 20;
    let cases: Vec<(&str, Reply, u16)> = vec![
        (
            "unknown class",
            server.save(id, 0, json!({ "boxes": [{ "class": "giraffe", "x": 1, "y": 1, "w": 5, "h": 5 }] })),
            400,
        ),
        (
            "box outside",
            server.save(id, 0, json!({ "boxes": [{ "class": "cat", "x": 5000, "y": 1, "w": 5, "h": 5 }] })),
            400,
        ),
        ("class on a detect project", server.save(id, 0, json!({ "class": "cat" })), 400),
        ("unknown field", server.put_json(&path, &json!({ "version": 0, "labels": ok_box, "colour": 1 })), 400),
        ("stale", server.save(id, 5, ok_box.clone()), 409),
        ("no such image", server.save(999_999, 0, ok_box.clone()), 404),
        (
            "bad id",
            server.put_json("/api/images/..%2F..%2Fetc%2Fpasswd/labels", &json!({ "version": 0, "labels": ok_box })),
            400,
        ),
        (
            "malformed",
            request(
                server.port,
                "PUT",
                &path,
                &[("Content-Type", "application/json")],
                b"{\"version\": 0, \"labels\": {",
            ),
            400,
        ),
        ("not json", request(server.port, "PUT", &path, &[("Content-Type", "text/plain")], b"{}"), 415),
        ("too large", head_only(server.port, &path, big_len), 413),
        ("path as id", server.get("/api/images/..%2Fphotos%2Fchelsea.png/file"), 400),
        ("bad query", server.get("/api/next?order=cheapest"), 400),
        ("bad exclude", server.get("/api/next?exclude=1,two"), 400),
        ("no route", server.get("/api/../../etc/passwd"), 404),
    ];
    for (what, reply, status) in cases {
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        let body = reply.json();
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    }
    let now = server.get(&format!("/api/images/{id}")).json();
    assert_eq!(now["version"], 0, "nothing was written: {now}");
    assert_eq!(server.get("/api/project").json()["stats"]["labelled"], 0);
    // Still serving, and a good save still works.
    assert_eq!(server.save(id, 0, ok_box).status, 200);
}

/// A PUT whose headers announce `len` bytes of JSON, none sent: the answer to the headers alone.
fn head_only(port: u16, path: &str, len: usize) -> Reply {
    use std::io::Write;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    crate::serve::read_reply(&mut stream)
}

/// `strix stream --capture`: every Nth frame with the detector's boxes lands in a project.
#[test]
fn stream_capture_adds_every_nth_frame_with_its_detections() {
    let fx = fixtures_or_skip!();
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        assert!(!in_ci(), "ffmpeg missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("empty");
    std::fs::create_dir_all(&images).unwrap();
    let project = tmp.path().join("street");
    let (o, _, err) = run(strix(&fx, tmp.path())
        .args(["label", "import", "--format", "yolo"])
        .arg(&project)
        .arg("--annotations")
        .arg(write_yolo_stub(tmp.path()))
        .arg("--images")
        .arg(&images));
    assert!(o.status.success(), "{err}");
    let (o, _, err) = run(strix(&fx, tmp.path())
        .arg("stream")
        .arg(fx.join("video/vtest_10s_h264.mp4"))
        .args(["--model", "nanodet_m_416", "--max-frames", "20", "--capture"])
        .arg(&project)
        .args(["--capture-every", "5", "--policy", "all"]));
    assert!(o.status.success(), "{err}");
    assert!(err.contains("capture: kept 4 of 20 frames"), "{err}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let p = strix_label::Project::open(&project).await.unwrap();
        let rows = p.store.images(0, 100).await.unwrap();
        assert_eq!(rows.len(), 4);
        for (row, _) in rows {
            assert_eq!(row.root, strix_label::Root::Captured);
            assert_eq!((row.width, row.height), (768, 576));
            let s = p.store.suggestion(row.id, None).await.unwrap().unwrap();
            assert!(s.boxes.iter().any(|b| b.class == "person"), "{s:?}");
        }
    });
}

/// An empty YOLO labels folder with classes.txt: a way to make a detection project by import.
fn write_yolo_stub(dir: &Path) -> PathBuf {
    let labels = dir.join("stub-labels");
    std::fs::create_dir_all(&labels).unwrap();
    std::fs::write(labels.join("classes.txt"), "person\ncar\n").unwrap();
    labels
}

// ---------------------------------------------------------------------------------------------
// Issue 31, holes found by probing: the page's own-key lookups.

/// Issue 31 item 14: the page read per-class counts from a plain object, so a class named
/// `constructor` showed `function Object() { [native code] }` and `__proto__` `[object Object]`.
#[test]
fn class_counts_on_the_page_read_only_own_keys() {
    let fx = fixtures_or_skip!();
    let Some(chromium) = chromium() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let images = photo_folder(&fx, &tmp.path().join("photos"), &["apple.jpg", "orange.jpg"]);
    let mut cmd = label_cmd(&fx, tmp.path(), &tmp.path().join("project"));
    let classes = "constructor,toString,__proto__,hasOwnProperty";
    cmd.arg("--images").arg(&images).args(["--task", "classify", "--classes", classes]);
    let server = LabelServer::start(cmd);
    let id = server.ids()[0];
    assert_eq!(server.save(id, 0, json!({ "class": "toString" })).status, 200);
    let mut b = Browser::launch(&chromium);
    b.open(&format!("http://127.0.0.1:{}/", server.port));
    b.until("document.querySelectorAll('#classes .cls .n').length === 4");
    let counts = b.eval("[...document.querySelectorAll('#classes .cls .n')].map((n) => n.textContent)");
    assert_eq!(counts, json!(["0", "1", "0", "0"]), "per-class counts shown for {classes}");
}

// ---------------------------------------------------------------------------------------------
// Issue 31, holes found by probing: `label import`.

/// Issue 31 item 4: a COCO `file_name` that was absolute or climbed out with `..` was imported
/// (the outside file hard-linked into `PROJECT/imported/`, then served and exported). Now the
/// import fails naming the file, and nothing is written.
#[test]
fn import_refuses_coco_file_names_outside_the_images_folder() {
    use std::os::unix::fs::MetadataExt;
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let images = photo_folder(&fx, &tmp.path().join("coco-images"), &["chelsea.png"]);
    let secret = photo_folder(&fx, &tmp.path().join("outside"), &["apple.jpg"]).join("apple.jpg");
    let project = tmp.path().join("project");
    for name in [secret.to_str().unwrap(), "../outside/apple.jpg"] {
        let imgs = json!([
            { "id": 1, "file_name": "chelsea.png", "width": 451, "height": 300 },
            { "id": 2, "file_name": name, "width": 32, "height": 32 },
        ]);
        let doc = json!({ "images": imgs, "annotations": [], "categories": [{ "id": 1, "name": "cat" }] });
        let json_path = tmp.path().join("instances.json");
        std::fs::write(&json_path, doc.to_string()).unwrap();
        let (o, err) = coco_import(&fx, tmp.path(), &project, &json_path, &images);
        assert!(!o.status.success(), "{name}: {err}");
        assert!(err.contains(&format!("file_name {name:?}")) && err.contains("images folder"), "{name}: {err}");
        assert!(crate::support::files_under(&project).is_empty(), "{name}: the project was written");
        assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1, "{name}: the outside file was linked");
    }
}

/// Issue 31 item 9: file names holding ESC / BEL reached the terminal raw from `label import`
/// (a file named `ESC]0;PWNED BEL` retitles the window); they are printed escaped.
#[test]
fn import_prints_file_names_with_control_characters_escaped() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let images = photo_folder(&fx, &tmp.path().join("photos"), &["apple.jpg"]);
    std::fs::write(images.join("\u{1b}]0;PWNED\u{7}.jpg"), b"not an image").unwrap();
    let labels = tmp.path().join("labels");
    std::fs::create_dir_all(&labels).unwrap();
    std::fs::write(labels.join("classes.txt"), "fruit\n").unwrap();
    std::fs::write(labels.join("apple.txt"), "0 0.5 0.5 0.2 0.2\n").unwrap();
    std::fs::write(labels.join("\u{1b}[2J.txt"), "0 0.5 0.5 0.2 0.2\n").unwrap();
    let (o, out, err) = run(strix(&fx, tmp.path())
        .args(["label", "import"])
        .arg(tmp.path().join("project"))
        .args(["--format", "yolo", "--annotations"])
        .arg(&labels)
        .arg("--images")
        .arg(&images));
    assert!(o.status.success(), "{err}");
    let raw = |bytes: &[u8]| bytes.iter().any(|&b| b == 0x1b || b == 0x07);
    assert!(!raw(&o.stdout) && !raw(&o.stderr), "raw control characters in the output: {out:?} {err:?}");
    assert!(err.contains("\\u{1b}]0;PWNED\\u{7}.jpg"), "the broken file is not named: {err}");
    assert!(err.contains("\\u{1b}[2J.txt"), "the orphan label file is not named: {err}");
}

/// Acceptance (issue 34): `strix cluster PROJECT` puts a project's images in clusters; the page
/// walks them cluster by cluster, shows the cluster beside the image, and one key labels the
/// rest of a cluster like the image labelled first, unverified, for the review mode to walk.
/// Three Fashion-MNIST classes (20 images each) come out labelled at least 95% right from three
/// keyed labels.
#[test]
fn clusters_label_a_project_a_cluster_at_a_time_in_chromium() {
    let fx = fixtures_or_skip!();
    let Some(chromium) = chromium() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let images = crate::index::fashion_mix(&fx, &tmp.path().join("mix"), &[1, 7, 8], 20);
    let project = tmp.path().join("clothes");
    let classes = [("1", "trouser"), ("7", "sneaker"), ("8", "bag")];
    let mut cmd = label_cmd(&fx, tmp.path(), &project);
    cmd.arg("--images").arg(&images).args(["--task", "classify", "--classes", "trouser,sneaker,bag"]);
    let server = LabelServer::start(cmd);
    let cluster = |extra: &[&str]| {
        let mut cmd = strix(&fx, tmp.path());
        run(cmd.env("STRIX_HOME", tmp.path().join("home")).arg("cluster").arg(&project).args(extra))
    };
    // The server answers once its scan is done (it listens before).
    assert_eq!(server.get("/api/project").json()["stats"]["images"], 60);
    let (o, _, err) = cluster(&["--k", "3"]);
    assert!(o.status.success(), "{err}");
    assert!(project.join("clusters/overview.png").is_file(), "{err}");
    let made = server.get("/api/clusters").json();
    let sizes: Vec<u64> = made["clusters"].as_array().unwrap().iter().map(|c| c["size"].as_u64().unwrap()).collect();
    assert_eq!((sizes.len(), sizes.iter().sum::<u64>()), (3, 60), "{made}");

    // Hostile clients, refused before anything is written: a page on another host name (DNS
    // rebinding), a repeated field, a cluster number past u32, a body announced at 1 GiB.
    let json_type = "Content-Type: application/json\r\n";
    let rebound = crate::gate::call(
        server.port,
        "POST",
        "/api/clusters/1/label",
        "rebind.attacker.example",
        json_type,
        r#"{"class": "bag"}"#,
    );
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    let repeated = crate::gate::call(
        server.port,
        "POST",
        "/api/clusters/1/label",
        "127.0.0.1",
        json_type,
        r#"{"class": "bag", "class": "bag"}"#,
    );
    assert!(repeated.status == 400 && repeated.body.contains("duplicate"), "{}", repeated.body);
    let past = crate::gate::call(
        server.port,
        "POST",
        "/api/clusters/99999999999/label",
        "127.0.0.1",
        json_type,
        r#"{"class": "bag"}"#,
    );
    assert_eq!(past.status, 400, "{}", past.body);
    assert_eq!(head_only(server.port, "/api/clusters/1/label", 1 << 30).status, 413);
    let untouched = server.get("/api/project").json()["stats"].clone();
    assert_eq!(untouched["labelled"], 0, "{untouched}");

    let mut b = Browser::launch(&chromium);
    b.open(&format!("http://127.0.0.1:{}/", server.port));
    b.eval("document.getElementById('order').value = 'cluster'; document.getElementById('order').onchange(); true");
    let truth = |b: &mut Browser| {
        let file = b.eval("strix.state.img.file");
        let digit = file.as_str().unwrap().split('_').next().unwrap().to_string();
        classes.iter().position(|(d, _)| *d == digit).unwrap()
    };
    // The page opened on the first image added; from there it walks by cluster.
    b.eval("strix.next().then(() => true)");
    for round in 0..3 {
        // The first image of a cluster, labelled by its key: save, next (in the same cluster).
        b.until("strix.ready() && strix.state.version === 0 && strix.state.members.length > 0");
        let (c, shown) = (b.eval("strix.state.cluster"), b.eval("strix.state.img.id"));
        let key = truth(&mut b) + 1;
        b.key(&key.to_string());
        b.until(&format!("strix.ready() && strix.state.img.id !== {shown}"));
        assert_eq!(b.eval("strix.state.cluster"), c, "a cluster of one image");
        if round == 1 {
            b.until("document.getElementById('bulk').disabled === false && document.querySelectorAll('#thumbs img').length > 0");
            b.screenshot(&screenshot_path(tmp.path(), "label-clusters.png"));
        }
        // The rest of the cluster, labelled like it with one key; the page walks on.
        b.key("c");
        b.until(&format!("strix.ready() && (strix.state.cluster !== {c} || document.getElementById('empty').style.display === 'flex')"));
        let done = server.get("/api/clusters").json();
        let this = done["clusters"].as_array().unwrap().iter().find(|s| s["cluster"] == c).unwrap().clone();
        assert_eq!(this["unlabelled"], 0, "{done}");
    }
    let listed = server.get("/api/images").json();
    let rows = listed["images"].as_array().unwrap();
    let right = rows
        .iter()
        .filter(|r| {
            let digit = r["image"]["file"].as_str().unwrap().split('_').next().unwrap().to_string();
            let want = classes.iter().find(|(d, _)| *d == digit).unwrap().1;
            r["labels"]["class"] == want
        })
        .count();
    eprintln!("{right} of {} labelled right from 3 keyed labels", rows.len());
    assert!(rows.iter().all(|r| r["labels"]["class"].is_string()), "{listed}");
    assert!(right >= 57, "{right} of 60 right");
    let bulk: usize = rows
        .iter()
        .map(|r| server.get(&format!("/api/images/{}/history", r["image"]["id"])).json())
        .filter(|h| h["versions"][0]["origin"] == "cluster")
        .count();
    assert_eq!(bulk, 57, "three keyed labels, the rest by cluster");
    let stats = server.get("/api/project").json()["stats"].clone();
    assert_eq!((stats["labelled"].as_u64(), stats["reviewed"].as_u64()), (Some(60), Some(0)), "{stats}");

    // Review mode walks the unverified labels cluster by cluster; v verifies.
    b.eval(
        "document.getElementById('filter').value = 'unreviewed'; document.getElementById('filter').onchange(); true",
    );
    b.until("strix.ready() && strix.state.version === 1 && !strix.state.reviewed");
    let first = b.eval("strix.state.img.id");
    b.key("v");
    b.until(&format!("strix.ready() && strix.state.img.id !== {first}"));
    drop(b);
    let stats = server.get("/api/project").json()["stats"].clone();
    assert_eq!(stats["reviewed"].as_u64(), Some(1), "{stats}");

    // Refused, nothing written: unknown cluster and class, a bad number, a detection project,
    // a project clustered with other folders.
    let post = |server: &LabelServer, path: &str, body: Value| {
        request(server.port, "POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
    };
    assert_eq!(post(&server, "/api/clusters/9/label", json!({"class": "bag"})).status, 404);
    // Clusters made again since the client looked: its cluster numbers mean other images.
    let stale = post(&server, "/api/clusters/1/label", json!({"class": "bag", "clustering": 1}));
    assert!(stale.status == 409 && stale.body.contains("clusters_changed"), "{}", stale.body);
    assert_eq!(post(&server, "/api/clusters/1/label", json!({"class": "hat"})).status, 400);
    assert_eq!(post(&server, "/api/clusters/1/label", json!({"class": "bag", "x": 1})).status, 400);
    assert_eq!(server.get("/api/clusters/x").status, 400);
    assert_eq!(server.get("/api/clusters/9").status, 404);
    let (o, _, err) = cluster(&[images.to_str().unwrap()]);
    assert!(!o.status.success() && err.contains("on its own"), "{err}");
    let tmp2 = tempfile::tempdir().unwrap();
    let (_, boxes) = detect_server(&fx, tmp2.path());
    let r = post(&boxes, "/api/clusters/1/label", json!({"class": "cat"}));
    assert!(r.status == 400 && r.body.contains("classification"), "{}", r.body);
}
