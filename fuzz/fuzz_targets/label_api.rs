//! The labelling API's bodies and queries, through `strix label`'s real router on real
//! projects (one classification, one detection, each on a fixture photo): saves, cluster
//! labels, listings and the next-image query. Any 500 is a bug. Saves change the projects for
//! the inputs after them, so a crash may need the inputs before it to happen again.
#![no_main]
use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use strix_label::web::{LabelApp, router};
use strix_label::{LabelTask, Project, ProjectConfig};

struct Fixture {
    rt: tokio::runtime::Runtime,
    apps: Vec<axum::Router>,
    _dir: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let rt = strix_fuzz::runtime();
    let classes: Vec<String> = ["compost", "recycling", "landfill"].map(String::from).to_vec();
    let mut apps = Vec::new();
    for task in [LabelTask::Classify, LabelTask::Detect] {
        let images = dir.path().join(format!("{task:?}-images"));
        std::fs::create_dir_all(&images).expect("an images folder");
        std::fs::copy(strix_fuzz::fixtures().join("images/orange.jpg"), images.join("orange.jpg"))
            .expect("the fixture photo");
        let config = ProjectConfig { task, classes: classes.clone(), images };
        let project = rt.block_on(async {
            let project = Project::create(&dir.path().join(format!("{task:?}")), config).await.expect("a project");
            project.scan().await.expect("a scan");
            project
        });
        apps.push(router(Arc::new(LabelApp { project, suggester: None })));
    }
    Fixture { rt, apps, _dir: dir }
});

/// `bytes` as they may stand in a URI's query or path segment.
fn escaped(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'=' | b'&' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let Some((pick, rest)) = strix_fuzz::pick(data, 10) else { return };
    let app = &f.apps[usize::from(pick % 2)];
    let request = match pick / 2 {
        0 => Request::put("/api/images/1/labels")
            .header("content-type", "application/json")
            .body(Body::from(rest.to_vec())),
        1 => Request::post("/api/clusters/0/label")
            .header("content-type", "application/json")
            .body(Body::from(rest.to_vec())),
        2 => Request::get(format!("/api/images?{}", escaped(rest))).body(Body::empty()),
        3 => Request::get(format!("/api/next?{}", escaped(rest))).body(Body::empty()),
        _ => Request::get(format!("/api/images/{}", escaped(rest))).body(Body::empty()),
    };
    let Ok(request) = request else { return };
    strix_fuzz::answer(&f.rt, app, request);
});
