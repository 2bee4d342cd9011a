//! Who may reach `strix label serve` and `strix serve`: host names (DNS rebinding), the
//! labelling app's tokens, and the headers that keep both out of other sites' frames.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::fixtures_or_skip;
use crate::serve::{Reply, read_reply};
use crate::support::{KillOnDrop, free_port, photo_folder, run, spawn_serve, strix, wait_for_port};

/// `strix label serve` on a new classification project of one photo, with `extra` flags, on a
/// free loopback port; the port once it listens.
fn label_serve(fx: &Path, tmp: &Path, extra: &[&str]) -> (KillOnDrop, u16) {
    let images = photo_folder(fx, &tmp.join("photos"), &["chelsea.png"]);
    let port = free_port();
    let child = strix(fx, tmp)
        .args(["label", "serve"])
        .arg(tmp.join("bins"))
        .arg("--images")
        .arg(&images)
        .args(["--task", "classify", "--classes", "cat,dog", "--http", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    wait_for_port(port);
    (child, port)
}

/// One request with the `Host` and extra header lines given.
pub(crate) fn call(port: u16, method: &str, path: &str, host: &str, extra: &str, body: &str) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    read_reply(&mut s)
}

/// The answer forbids framing and sniffing (Reply lower-cases header values).
fn refuses_framing(r: &Reply) {
    assert_eq!(r.header("x-frame-options").as_deref(), Some("deny"), "{r:?}");
    assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"), "{r:?}");
    assert_eq!(r.header("content-security-policy").as_deref(), Some("frame-ancestors 'none'"), "{r:?}");
}

/// Saves from a rebound name once reached the labels (a PUT with `Host:
/// rebind.attacker.example` got 200 and was saved): now 421 from both servers, every answer
/// refuses frames, and an allowed name is served.
#[test]
fn rebound_host_names_get_421_from_label_serve_and_serve() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (_label, port) = label_serve(&fx, tmp.path(), &["--http-allow-host", "labels.example.org"]);
    let save = json!({ "version": 0, "labels": { "class": "cat" } }).to_string();
    let json = "Content-Type: application/json\r\n";
    let rebound = call(port, "PUT", "/api/images/1/labels", "rebind.attacker.example:8070", json, &save);
    assert_eq!(rebound.status, 421, "{rebound:?}");
    refuses_framing(&rebound);
    let history = call(port, "GET", "/api/images/1/history", "127.0.0.1", "", "");
    assert_eq!(history.json()["versions"], json!([]), "the refused save was stored");
    for host in ["localhost:8070", "labels.example.org", "[::1]"] {
        let page = call(port, "GET", "/", host, "", "");
        assert_eq!(page.status, 200, "{host}: {page:?}");
        refuses_framing(&page);
    }

    let (child, port) = spawn_serve(
        strix(&fx, tmp.path())
            .args(["serve", "--model", "efficientnet_lite0", "--backend", "tract"])
            .args(["--http-allow-host", "models.example.org"]),
    );
    let _serve = KillOnDrop(child);
    let evil = call(port, "GET", "/v1/models", "evil.example", "", "");
    assert_eq!(evil.status, 421, "{evil:?}");
    refuses_framing(&evil);
    for host in ["models.example.org:8080", "127.0.0.1"] {
        let ok = call(port, "GET", "/v1/models", host, "", "");
        assert_eq!(ok.status, 200, "{host}: {ok:?}");
        refuses_framing(&ok);
    }
}

/// With `--http-token`, the page and every `/api` route answer 401 without it; a token that
/// names a user puts the user in the history of what they saved.
#[test]
fn the_labelling_app_behind_tokens_records_who_saved() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (_label, port) =
        label_serve(&fx, tmp.path(), &["--http-token", "alice=a-secret", "--http-token", "team-secret"]);
    let host = "127.0.0.1";
    for path in ["/", "/api/project", "/api/images", "/api/images/1/file", "/api/next"] {
        assert_eq!(call(port, "GET", path, host, "", "").status, 401, "{path}");
        assert_eq!(call(port, "GET", path, host, "Authorization: Bearer a-secre\r\n", "").status, 401, "{path}");
    }
    let alice = "Authorization: Bearer a-secret\r\n";
    assert_eq!(call(port, "GET", "/api/project", host, alice, "").status, 200);
    let page = call(port, "GET", "/?token=team-secret", host, "", "");
    assert_eq!(page.status, 200);
    let cookie = format!("strix_token_{port}=team-secret");
    assert!(page.header("set-cookie").is_some_and(|c| c.starts_with(&format!("{cookie};"))), "{page:?}");
    let cookie = &format!("Cookie: {cookie}\r\n");
    assert_eq!(call(port, "GET", "/api/project", host, cookie, "").status, 200);

    let json = "Content-Type: application/json\r\n";
    let save = |extra: &str, version: i64, class: &str| {
        let body = json!({ "version": version, "labels": { "class": class } }).to_string();
        call(port, "PUT", "/api/images/1/labels", host, &format!("{extra}{json}"), &body)
    };
    assert_eq!(save("", 0, "cat").status, 401);
    assert_eq!(save(alice, 0, "cat").status, 200);
    assert_eq!(save(cookie, 1, "dog").status, 200);
    let history = call(port, "GET", "/api/images/1/history", host, alice, "").json();
    let users: Vec<_> = history["versions"].as_array().unwrap().iter().map(|v| v["user"].clone()).collect();
    assert_eq!(users, vec![json!("alice"), json!(null)], "{history}");
}

/// Beyond loopback without a token the labelling app does not start, and says how to set one.
#[test]
fn label_serve_beyond_loopback_needs_a_token() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let images = photo_folder(&fx, &tmp.path().join("photos"), &["chelsea.png"]);
    let mut cmd = strix(&fx, tmp.path());
    cmd.env_remove("STRIX_HTTP_TOKEN")
        .args(["label", "serve"])
        .arg(tmp.path().join("bins"))
        .arg("--images")
        .arg(&images)
        .args(["--task", "classify", "--classes", "cat,dog", "--http", &format!("0.0.0.0:{}", free_port())]);
    let (out, _, stderr) = run(&mut cmd);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--http-token") && stderr.contains("STRIX_HTTP_TOKEN"), "{stderr}");
    assert!(!tmp.path().join("bins").exists(), "a refused start created the project");

    // With a token it starts, and warns that it is reachable from elsewhere.
    let port = free_port();
    let mut child = KillOnDrop(
        strix(&fx, tmp.path())
            .args(["label", "serve"])
            .arg(tmp.path().join("bins"))
            .arg("--images")
            .arg(&images)
            .args(["--task", "classify", "--classes", "cat,dog", "--http", &format!("0.0.0.0:{port}")])
            .env("STRIX_HTTP_TOKEN", "t0ken")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port);
    assert_eq!(call(port, "GET", "/api/project", "127.0.0.1", "", "").status, 401);
    assert_eq!(call(port, "GET", "/api/project", "127.0.0.1", "Authorization: Bearer t0ken\r\n", "").status, 200);
    let _ = child.0.kill();
    let mut said = String::new();
    let _ = child.0.stderr.take().unwrap().read_to_string(&mut said);
    assert!(said.contains("beyond this machine"), "{said}");
}
