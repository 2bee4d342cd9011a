//! Vector indexes and face descriptions: faceres against its onnxruntime reference, every
//! fixture photo found again from its augmentations among the photos and video frames, faces
//! matched across augmentation and told apart across people, and bad input refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{DynamicImage, RgbImage, imageops};
use serde_json::Value;
use strix_core::Answer;

use crate::fixtures_or_skip;
use crate::support::{backends, max_abs_diff, read_npy, run, strix};
use crate::tasks::{pipeline, predict};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// FaceRes on the reference crop gives the reference tensors on every engine; on the whole
/// photo (BlazeFace's box, Human's crop) it gives the reference descriptor, and the age range
/// and gender the fixtures' notes give (astronaut: 0.33 male, argmax age 29).
#[test]
fn faceres_matches_its_reference_and_describes_the_astronaut() {
    let fx = fixtures_or_skip!();
    let reference = |name: &str| read_npy(&fx.join(format!("reference/faceres__astronaut__{name}.npy")));
    let (shape, input) = reference("input");
    for backend in backends() {
        let runtime = strix_runtime::open(backend, &crate::support::runtime_options()).unwrap();
        let session = runtime.load(&fx.join("models/face/faceres.onnx")).unwrap();
        let tensor = strix_core::Tensor::from_f32(shape.clone(), input.clone()).unwrap();
        let outs = session.run(&[tensor]).unwrap();
        for (name, out) in session.outputs().iter().zip(&outs) {
            let file = name.name.replace('/', "_").replace(":0", "");
            let (_, want) = reference(&file);
            let diff = max_abs_diff(&out.to_f32_vec(), &want);
            assert!(diff < 1e-4, "{backend} {}: max diff {diff}", name.name);
        }

        let p = pipeline(&fx, "faceres", backend);
        let answer = predict(&p, &fx, "images/astronaut.png");
        let Answer::Faces { faces } = &answer.answer else { panic!("{answer:?}") };
        assert_eq!(faces.len(), 1, "{faces:?}");
        let d = faces[0].description.as_ref().expect("described");
        let (_, descriptor) = reference("global_pooling_Mean");
        let similarity = cosine(&d.embedding, &descriptor);
        assert!(similarity > 0.98, "{backend}: cosine to the reference descriptor {similarity}");
        assert!((d.male.unwrap() - 0.33).abs() < 0.05, "{d:?}");
        let [low, high] = d.age_range.unwrap();
        assert!(low <= 29 && 29 <= high && high - low <= 30, "{low}..{high}");
        // Rekognition's DetectFaces shape carries them.
        let line = strix_pipeline::rekognition::Response::from_prediction(&answer, "faceres");
        let j = serde_json::to_value(&line).unwrap();
        assert_eq!(j["FaceDetails"][0]["Gender"]["Value"], "Female", "{j}");
        assert!(j["FaceDetails"][0]["AgeRange"]["Low"].as_u64().unwrap() <= 29, "{j}");
    }
}

fn save(img: &RgbImage, path: &Path) {
    img.save(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn brightness(img: &RgbImage, factor: f32) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for c in p.0.iter_mut() {
            *c = (f32::from(*c) * factor).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// The augmentations of the acceptance: crop to 80%, brightness +-20%, mirrored, JPEG quality 50.
fn augment(src: &Path, out: &Path) -> Vec<PathBuf> {
    let img = image::open(src).unwrap().to_rgb8();
    let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
    let (w, h) = img.dimensions();
    let (cw, ch) = (w * 4 / 5, h * 4 / 5);
    let crop = imageops::crop_imm(&img, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
    let mut made = Vec::new();
    for (tag, aug) in [
        ("crop80", crop),
        ("bright120", brightness(&img, 1.2)),
        ("bright80", brightness(&img, 0.8)),
        ("mirror", imageops::flip_horizontal(&img)),
    ] {
        let path = out.join(format!("{stem}__{tag}.png"));
        save(&aug, &path);
        made.push(path);
    }
    let path = out.join(format!("{stem}__jpeg50.jpg"));
    let mut bytes = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 50);
    DynamicImage::ImageRgb8(img).write_with_encoder(encoder).unwrap();
    std::fs::write(&path, bytes).unwrap();
    made.push(path);
    made
}

fn cli(fx: &Path, dir: &Path) -> Command {
    let mut cmd = strix(fx, &dir.join("cache"));
    cmd.env("STRIX_HOME", dir.join("home")).arg("--quiet");
    cmd
}

fn ok(cmd: &mut Command) -> String {
    let (o, out, err) = run(cmd);
    assert!(o.status.success(), "{cmd:?}\n{out}\n{err}");
    out
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Every fixture photo, augmented five ways, finds its original at rank 1 among all the photos
/// and frames of the fixture video; removing and re-adding an image works through the CLI.
#[test]
fn augmented_photos_find_their_originals_among_photos_and_video_frames() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let gallery = tmp.path().join("gallery");
    let queries = tmp.path().join("queries");
    std::fs::create_dir_all(&gallery).unwrap();
    std::fs::create_dir_all(&queries).unwrap();
    let mut photos = Vec::new();
    for e in std::fs::read_dir(fx.join("images")).unwrap() {
        let src = e.unwrap().path();
        let to = gallery.join(src.file_name().unwrap());
        std::fs::copy(&src, &to).unwrap();
        augment(&src, &queries);
        photos.push(to);
    }
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(fx.join("video/vtest_10s_h264.mp4"))
        .args(["-vf", "fps=1"])
        .arg(gallery.join("frame%02d.png"))
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let frames = std::fs::read_dir(&gallery).unwrap().count() - photos.len();
    assert!(frames >= 9, "{frames} frames");

    ok(cli(&fx, tmp.path()).args(["index", "create", "gallery", "--model", "efficientnet_lite0_embed"]));
    let added = json_lines(&ok(cli(&fx, tmp.path())
        .args(["index", "add", "gallery", "--json", "--external-id", "stem"])
        .arg(&gallery)));
    assert_eq!(added[0]["added"].as_array().unwrap().len(), photos.len() + frames, "{added:?}");

    let out =
        ok(cli(&fx, tmp.path()).args(["index", "search", "gallery", "--k", "3", "--json", "--image"]).arg(&queries));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), photos.len() * 5);
    let mut margins = Vec::new();
    for line in &lines {
        let query = line["query"].as_str().unwrap();
        let stem = Path::new(query).file_stem().unwrap().to_string_lossy();
        let original = stem.split("__").next().unwrap();
        let top = &line["matches"][0];
        assert_eq!(top["external_id"], original, "{query}: {line}");
        margins.push(top["similarity"].as_f64().unwrap() - line["matches"][1]["similarity"].as_f64().unwrap());
        assert_eq!(line["exact"], true);
    }
    margins.sort_by(f64::total_cmp);
    eprintln!("rank-1 margin over the runner-up: min {:.3}, median {:.3}", margins[0], margins[margins.len() / 2]);

    // Remove one photo, search finds something else; add it again and it is back (new id).
    let coffee = gallery.join("coffee.png");
    ok(cli(&fx, tmp.path()).args(["index", "remove", "gallery", "--image"]).arg(&coffee));
    let q = queries.join("coffee__mirror.png");
    let line =
        &json_lines(&ok(cli(&fx, tmp.path()).args(["index", "search", "gallery", "--json", "--image"]).arg(&q)))[0];
    assert_ne!(line["matches"][0]["external_id"], "coffee", "{line}");
    ok(cli(&fx, tmp.path()).args(["index", "add", "gallery", "--external-id", "stem"]).arg(&coffee));
    let line =
        &json_lines(&ok(cli(&fx, tmp.path()).args(["index", "search", "gallery", "--json", "--image"]).arg(&q)))[0];
    assert_eq!(line["matches"][0]["external_id"], "coffee", "{line}");
    assert_eq!(line["version"], 4, "create, add, remove, add: {line}");
    let show = &json_lines(&ok(cli(&fx, tmp.path()).args(["index", "show", "gallery", "--json"])))[0];
    assert_eq!(show["entries"], photos.len() + frames);
    assert!(ok(cli(&fx, tmp.path()).args(["index", "list"])).contains("gallery"));
}

/// Faces: one person's face augmented is matched at Similarity >= 80 (cosine >= the model's
/// calibration point), another person's is not; an image without a face, a non-embedding
/// model and unknown indexes are refused with the reason.
#[test]
fn faces_match_across_augmentation_and_not_across_people() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let people = tmp.path().join("people");
    let queries = tmp.path().join("queries");
    std::fs::create_dir_all(&people).unwrap();
    std::fs::create_dir_all(&queries).unwrap();
    for name in ["astronaut.png", "messi5.jpg"] {
        std::fs::copy(fx.join("images").join(name), people.join(name)).unwrap();
        let made = augment(&fx.join("images").join(name), &queries);
        // The 80% crop may cut a face near the edge; the other four keep it whole.
        std::fs::remove_file(&made[0]).unwrap();
    }
    ok(cli(&fx, tmp.path()).args(["index", "create", "staff", "--model", "faceres"]));
    ok(cli(&fx, tmp.path()).args(["index", "add", "staff", "--external-id", "stem"]).arg(&people));
    let lines =
        json_lines(&ok(cli(&fx, tmp.path()).args(["index", "search", "staff", "--json", "--image"]).arg(&queries)));
    assert_eq!(lines.len(), 8);
    let at_80 = 0.75; // faceres.toml: similarity = [0.40, 0.75]
    for line in &lines {
        let query = line["query"].as_str().unwrap();
        let person = Path::new(query).file_stem().unwrap().to_string_lossy().split("__").next().unwrap().to_string();
        let (top, other) = (&line["matches"][0], &line["matches"][1]);
        assert_eq!(top["external_id"], person.as_str(), "{line}");
        assert!(top["similarity"].as_f64().unwrap() >= at_80, "{line}");
        assert!(other["similarity"].as_f64().unwrap() < at_80, "{line}");
        assert!(top["bbox"].as_array().is_some_and(|b| b.len() == 4), "{line}");
    }

    let (o, _, err) =
        run(cli(&fx, tmp.path()).args(["index", "search", "staff", "--image"]).arg(fx.join("images/coffee.png")));
    assert!(!o.status.success() && err.contains("no face found"), "{err}");
    let (o, _, err) = run(cli(&fx, tmp.path()).args(["index", "create", "labels", "--model", "efficientnet_lite0"]));
    assert!(!o.status.success() && err.contains("gives no vectors"), "{err}");
    let (o, _, err) = run(cli(&fx, tmp.path()).args(["index", "search", "nobody", "--image"]).arg(&people));
    assert!(!o.status.success() && err.contains("nobody"), "{err}");
    let (o, _, err) = run(cli(&fx, tmp.path()).args(["index", "create", "staff", "--model", "faceres"]));
    assert!(!o.status.success() && err.contains("already exists"), "{err}");
    let (o, _, err) =
        run(cli(&fx, tmp.path()).args(["index", "search", "staff", "--threshold", "80", "--image"]).arg(&people));
    assert!(!o.status.success() && err.contains("-1 to 1"), "{err}");
    let (o, _, err) = run(cli(&fx, tmp.path()).args(["index", "remove", "staff"]));
    assert!(!o.status.success() && err.contains("--all"), "{err}");
    ok(cli(&fx, tmp.path()).args(["index", "remove", "staff", "--all"]));
    assert!(!ok(cli(&fx, tmp.path()).args(["index", "list"])).contains("staff"));
}

/// Rekognition's face collections through boto3, unchanged: CreateCollection, IndexFaces,
/// SearchFacesByImage (Similarity >= 80 for the same face mirrored, the other person below),
/// SearchFaces, CompareFaces, ListFaces, DeleteFaces, DeleteCollection, and the errors boto3
/// raises by name. Two replicas on one registry see each other's collections.
#[test]
fn boto3_keeps_face_collections_in_the_registry() {
    let fx = fixtures_or_skip!();
    let Some(python) = crate::support::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mirrored = tmp.path().join("astronaut_mirrored.png");
    save(&imageops::flip_horizontal(&image::open(fx.join("images/astronaut.png")).unwrap().to_rgb8()), &mirrored);
    let serve = || {
        let mut cmd = cli(&fx, tmp.path());
        cmd.args(["serve", "--model", "faceres"]);
        crate::support::spawn_serve(&mut cmd)
    };
    let (first, port) = serve();
    let _first = crate::support::KillOnDrop(first);
    let (second, other_port) = serve();
    let _second = crate::support::KillOnDrop(second);
    let (o, stdout, stderr) = run(Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/it/rekognition_client.py"))
        .arg(format!("127.0.0.1:{port}"))
        .arg(fx.join("images/astronaut.png"))
        .arg(fx.join("images/messi5.jpg"))
        .arg(&mirrored)
        .arg(fx.join("images/coffee.png")));
    assert!(o.status.success(), "{stderr}");
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["create"]["StatusCode"], 200, "{}", r["create"]);
    assert_eq!(r["create_again"]["code"], "ResourceAlreadyExistsException", "{}", r["create_again"]);
    let record = &r["index_astronaut"]["FaceRecords"][0]["Face"];
    assert_eq!(record["ExternalImageId"], "eileen", "{}", r["index_astronaut"]);
    assert_eq!(r["index_coffee"]["FaceRecords"].as_array().unwrap().len(), 0, "{}", r["index_coffee"]);
    assert_eq!(r["list_collections"]["CollectionIds"], serde_json::json!(["staff"]));
    assert_eq!(r["list_faces"]["Faces"].as_array().unwrap().len(), 2, "{}", r["list_faces"]);

    let matches = r["search_mirrored"]["FaceMatches"].as_array().unwrap();
    assert_eq!(matches.len(), 1, "threshold 80 keeps only the same face: {}", r["search_mirrored"]);
    assert_eq!(matches[0]["Face"]["ExternalImageId"], "eileen");
    assert!(matches[0]["Similarity"].as_f64().unwrap() >= 80.0, "{}", matches[0]);
    let all = r["search_mirrored_all"]["FaceMatches"].as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["Face"]["ExternalImageId"], "lionel");
    assert!(all[1]["Similarity"].as_f64().unwrap() < 80.0, "{}", all[1]);
    eprintln!("Similarity: same face mirrored {}, other person {}", all[0]["Similarity"], all[1]["Similarity"]);
    let by_id = r["search_faces"]["FaceMatches"].as_array().unwrap();
    assert_eq!(
        (by_id.len(), &by_id[0]["Face"]["ExternalImageId"]),
        (1, &Value::from("lionel")),
        "{}",
        r["search_faces"]
    );
    assert_eq!(r["compare_same"]["FaceMatches"].as_array().unwrap().len(), 1, "{}", r["compare_same"]);
    assert_eq!(r["compare_other"]["FaceMatches"].as_array().unwrap().len(), 0, "{}", r["compare_other"]);
    assert_eq!(r["compare_other"]["UnmatchedFaces"].as_array().unwrap().len(), 1, "{}", r["compare_other"]);

    assert_eq!(r["no_face"]["code"], "InvalidParameterException", "{}", r["no_face"]);
    assert_eq!(r["unknown_collection"]["code"], "ResourceNotFoundException", "{}", r["unknown_collection"]);
    assert_eq!(r["bad_threshold"]["status"], 400, "{}", r["bad_threshold"]);
    assert_eq!(r["too_many"]["status"], 400, "{}", r["too_many"]);
    assert_eq!(r["delete_faces"]["DeletedFaces"].as_array().unwrap().len(), 1, "{}", r["delete_faces"]);
    assert_eq!(r["delete_faces"]["UnsuccessfulFaceDeletions"][0]["Reasons"][0], "FACE_NOT_FOUND");
    let left = r["after_delete"]["FaceMatches"].as_array().unwrap();
    assert_eq!((left.len(), &left[0]["Face"]["ExternalImageId"]), (1, &Value::from("lionel")), "{}", r["after_delete"]);
    assert_eq!(r["delete_collection"]["StatusCode"], 200);
    assert_eq!(r["deleted_list"]["CollectionIds"], serde_json::json!([]));

    // The second replica sees what the first wrote: one registry.
    let reply = rekognition(port, "CreateCollection", &serde_json::json!({"CollectionId": "shared"}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = rekognition(other_port, "ListCollections", &serde_json::json!({}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("shared"), "{}", reply.body);

    // Collection actions touch face collections only: an image index is not theirs to delete.
    ok(cli(&fx, tmp.path()).args(["index", "create", "pantry"]));
    let reply = rekognition(port, "DeleteCollection", &serde_json::json!({"CollectionId": "pantry"}));
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(reply.json()["__type"], "ResourceNotFoundException", "{}", reply.body);

    // Hostile requests: a path in CollectionId, a body that is not JSON, no FaceIds, a NextToken
    // this server never gave, a wrong type: each a 400, and the server keeps serving.
    for (action, body) in [
        ("CreateCollection", serde_json::json!({"CollectionId": "../../etc"})),
        ("DeleteFaces", serde_json::json!({"CollectionId": "shared", "FaceIds": []})),
        ("ListFaces", serde_json::json!({"CollectionId": "shared", "NextToken": "-1"})),
        ("ListCollections", serde_json::json!({"MaxResults": "many"})),
    ] {
        let reply = rekognition(port, action, &body);
        assert_eq!(reply.status, 400, "{action} {body}: {}", reply.body);
    }
    let headers = [("Content-Type", "application/x-amz-json-1.1"), ("X-Amz-Target", "RekognitionService.ListFaces")];
    let reply = crate::serve::request(port, "POST", "/", &headers, b"{not json");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(rekognition(port, "ListCollections", &serde_json::json!({})).status, 200);
    assert!(ok(cli(&fx, tmp.path()).args(["index", "list"])).contains("pantry"));
}

/// One Rekognition action on `POST /`, as the JSON 1.1 protocol sends it.
fn rekognition(port: u16, action: &str, body: &Value) -> crate::serve::Reply {
    let target = format!("RekognitionService.{action}");
    let headers = [("Content-Type", "application/x-amz-json-1.1"), ("X-Amz-Target", target.as_str())];
    crate::serve::request(port, "POST", "/", &headers, body.to_string().as_bytes())
}

/// `strix serve --index NAME` answers `POST /v1/indexes/NAME/search` and brings the index's
/// model along; other names are 404, bad parameters 400.
#[test]
fn serve_searches_an_index() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let photos =
        crate::support::photo_folder(&fx, &tmp.path().join("photos"), &["coffee.png", "baboon.jpg", "orange.jpg"]);
    ok(cli(&fx, tmp.path()).args(["index", "create", "pantry"]));
    ok(cli(&fx, tmp.path()).args(["index", "add", "pantry", "--external-id", "stem"]).arg(&photos));
    let mut cmd = cli(&fx, tmp.path());
    cmd.args(["serve", "--index", "pantry"]);
    let (child, port) = crate::support::spawn_serve(&mut cmd);
    let _child = crate::support::KillOnDrop(child);
    let mirrored = tmp.path().join("q.png");
    save(&imageops::flip_horizontal(&image::open(fx.join("images/baboon.jpg")).unwrap().to_rgb8()), &mirrored);
    let bytes = std::fs::read(&mirrored).unwrap();
    let png = [("Content-Type", "image/png")];
    let reply = crate::serve::request(port, "POST", "/v1/indexes/pantry/search?k=2", &png, &bytes);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(answer["matches"][0]["external_id"], "baboon", "{answer}");
    assert_eq!(answer["matches"].as_array().unwrap().len(), 2);
    let reply = crate::serve::request(port, "POST", "/v1/indexes/other/search", &png, &bytes);
    assert_eq!(reply.status, 404, "{}", reply.body);
    let reply = crate::serve::request(port, "POST", "/v1/indexes/pantry/search?threshold=7", &png, &bytes);
    assert_eq!(reply.status, 400, "{}", reply.body);
}

/// `count` Fashion-MNIST test images of each of `classes` as `CLASS_N.png` in one flat folder
/// (no class folders: clustering must not see the labels).
pub(crate) fn fashion_mix(fx: &Path, dir: &Path, classes: &[u8], count: usize) -> PathBuf {
    use std::io::Read;
    let read = |name: &str| {
        let mut bytes = Vec::new();
        let file = std::fs::File::open(fx.join("datasets/fashion-mnist").join(name)).unwrap();
        flate2::read::GzDecoder::new(file).read_to_end(&mut bytes).unwrap();
        bytes
    };
    let (images, labels) = (read("t10k-images-idx3-ubyte.gz"), read("t10k-labels-idx1-ubyte.gz"));
    std::fs::create_dir_all(dir).unwrap();
    let mut taken = [0usize; 10];
    for (i, &label) in labels[8..].iter().enumerate() {
        if classes.contains(&label) && taken[label as usize] < count {
            taken[label as usize] += 1;
            let pixels = images[16 + i * 784..16 + (i + 1) * 784].to_vec();
            let img = image::GrayImage::from_raw(28, 28, pixels).unwrap();
            img.save(dir.join(format!("{label}_{i}.png"))).unwrap();
        }
    }
    dir.to_path_buf()
}

/// k-means on embeddings of three Fashion-MNIST classes (trouser, sneaker, bag), unlabelled:
/// the clusters are at least 90% pure; without --k the silhouette picks k; the contact sheets
/// are written.
#[test]
fn clusters_of_three_classes_are_pure() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let mix = fashion_mix(&fx, &tmp.path().join("mix"), &[1, 7, 8], 30);
    let out = tmp.path().join("clusters");
    let text = ok(cli(&fx, tmp.path()).args(["cluster", "--k", "3", "--json", "--out"]).arg(&out).arg(&mix));
    let summary: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(summary["k"], 3, "{summary}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("clusters.json")).unwrap()).unwrap();
    let mut majority = 0;
    for cluster in report["clusters"].as_array().unwrap() {
        let mut counts = std::collections::BTreeMap::new();
        for m in cluster["members"].as_array().unwrap() {
            let name = Path::new(m["image"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
            *counts.entry(name.split('_').next().unwrap().to_string()).or_insert(0) += 1;
        }
        eprintln!("cluster {}: {counts:?}", cluster["cluster"]);
        majority += counts.values().max().copied().unwrap_or(0);
    }
    let purity = f64::from(majority) / 90.0;
    assert!(purity >= 0.9, "purity {purity}");
    for file in ["overview.png", "cluster-01.png", "cluster-03.png", "clusters.csv"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    assert_eq!(std::fs::read_to_string(out.join("clusters.csv")).unwrap().lines().count(), 91);

    let text = ok(cli(&fx, tmp.path())
        .args(["cluster", "--max-k", "6", "--json", "--out"])
        .arg(tmp.path().join("auto"))
        .arg(&mix));
    let auto: Value = serde_json::from_str(text.trim()).unwrap();
    eprintln!("silhouette chose k = {} ({})", auto["k"], auto["silhouette"]);
    assert!(auto["silhouette"].as_f64().unwrap() > 0.0, "{auto}");
    let (o, _, err) = run(cli(&fx, tmp.path()).args(["cluster", "--model", "efficientnet_lite0"]).arg(&mix));
    assert!(!o.status.success() && err.contains("gives no vectors"), "{err}");
}

/// `strix data inspect --near-duplicates`: a photo recompressed (JPEG q50) under another
/// label is a near-duplicate pair (its labels named as different), a photo darkened into the
/// validation images is a leak, distinct photos (apple and orange: 0.65) are neither; the
/// pairs are drawn.
#[test]
fn data_inspect_finds_near_duplicates_and_leaks() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let val = tmp.path().join("val");
    crate::support::photo_folder(&fx, &data.join("compost"), &["orange.jpg", "apple.jpg"]);
    crate::support::photo_folder(&fx, &data.join("landfill"), &["coffee.png", "baboon.jpg"]);
    crate::support::photo_folder(&fx, &val.join("landfill"), &["chelsea.png"]);
    let augmented = tmp.path().join("augmented");
    std::fs::create_dir_all(&augmented).unwrap();
    let made = augment(&fx.join("images/orange.jpg"), &augmented);
    let jpeg = made.iter().find(|p| p.to_string_lossy().contains("jpeg50")).unwrap();
    std::fs::copy(jpeg, data.join("landfill/orange_copy.jpg")).unwrap();
    let made = augment(&fx.join("images/baboon.jpg"), &augmented);
    let darker = made.iter().find(|p| p.to_string_lossy().contains("bright80")).unwrap();
    std::fs::copy(darker, val.join("landfill/baboon_darker.png")).unwrap();

    let sheet = tmp.path().join("sheet.png");
    let out = ok(cli(&fx, tmp.path())
        .args(["data", "inspect", "--near-duplicates", "--json", "--sheet"])
        .arg(&sheet)
        .arg("--val-data")
        .arg(&val)
        .arg(&data));
    let found: Value = serde_json::from_str(out.trim()).unwrap();
    let pairs = |key: &str| -> Vec<(String, String, f64)> {
        let name = |v: &Value| Path::new(v.as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
        found[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (name(&p["a"]), name(&p["b"]), p["similarity"].as_f64().unwrap()))
            .collect()
    };
    let (within, leaks) = (pairs("near_duplicates"), pairs("leaks"));
    eprintln!("near-duplicates {within:?}, leaks {leaks:?}");
    assert_eq!(within.len(), 1, "{found}");
    assert_eq!((within[0].0.as_str(), within[0].1.as_str()), ("orange.jpg", "orange_copy.jpg"), "{found}");
    assert_eq!(found["near_duplicates"][0]["b_label"], "landfill");
    assert_eq!(leaks.len(), 1, "{found}");
    assert_eq!((leaks[0].0.as_str(), leaks[0].1.as_str()), ("baboon.jpg", "baboon_darker.png"), "{found}");
    let drawn = image::open(tmp.path().join("sheet_near_duplicates.png")).unwrap();
    assert!(drawn.height() >= 2 * 96, "{}x{}", drawn.width(), drawn.height());
}

/// `strix index add NAME PROJECT`: a labelling project's images go in with their class labels
/// as external ids and their project image ids in the metadata.
#[test]
fn an_index_takes_a_labelling_projects_images_and_labels() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let folders = tmp.path().join("folders");
    crate::support::photo_folder(&fx, &folders.join("compost"), &["orange.jpg", "apple.jpg"]);
    crate::support::photo_folder(&fx, &folders.join("landfill"), &["coffee.png"]);
    let project = tmp.path().join("project");
    ok(cli(&fx, tmp.path())
        .args(["label", "import"])
        .arg(&project)
        .args(["--format", "folder", "--images"])
        .arg(&folders));
    ok(cli(&fx, tmp.path()).args(["index", "create", "bins"]));
    ok(cli(&fx, tmp.path()).args(["index", "add", "bins"]).arg(&project));
    let shown: Value =
        serde_json::from_str(&ok(cli(&fx, tmp.path()).args(["index", "show", "bins", "--entries", "--json"]))).unwrap();
    let entries = shown["items"].as_array().unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(entries.len(), 3, "{shown}");
    for e in entries {
        let file = Path::new(e["image"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
        let want = if file == "coffee.png" { "landfill" } else { "compost" };
        assert_eq!(e["external_id"], want, "{e}");
        assert!(e["metadata"]["project_image"].is_i64(), "{e}");
    }
    let query = tmp.path().join("q.png");
    save(&imageops::flip_horizontal(&image::open(fx.join("images/coffee.png")).unwrap().to_rgb8()), &query);
    let hits = json_lines(&ok(cli(&fx, tmp.path())
        .args(["index", "search", "bins", "--k", "1", "--json", "--image"])
        .arg(&query)));
    assert_eq!(hits[0]["matches"][0]["external_id"], "landfill", "{:?}", hits);
}

/// `strix index add NAME s3://BUCKET/PREFIX`: every image under the prefix, named by its URL,
/// its folder as the external id when asked.
#[test]
fn an_index_takes_images_from_a_bucket_prefix() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let Some(s3) = crate::registry::S3Server::start(&tmp.path().join("s3")) else { return };
    let bucket = s3.root.join(crate::registry::S3Server::BUCKET);
    crate::support::photo_folder(&fx, &bucket.join("pantry/fruit"), &["orange.jpg", "apple.jpg"]);
    crate::support::photo_folder(&fx, &bucket.join("pantry/drinks"), &["coffee.png"]);
    let url = format!("s3://{}/pantry", crate::registry::S3Server::BUCKET);
    ok(cli(&fx, tmp.path()).args(["index", "create", "pantry"]));
    let mut add = cli(&fx, tmp.path());
    crate::registry::clear_aws(&mut add);
    ok(add.envs(s3.client_env()).args(["index", "add", "pantry", &url, "--external-id", "folder"]));
    let shown: Value =
        serde_json::from_str(&ok(cli(&fx, tmp.path()).args(["index", "show", "pantry", "--entries", "--json"])))
            .unwrap();
    let mut seen: Vec<(String, String)> = shown["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{shown}"))
        .iter()
        .map(|e| (e["image"].as_str().unwrap().to_string(), e["external_id"].as_str().unwrap().to_string()))
        .collect();
    seen.sort();
    let want: Vec<(String, String)> =
        [("drinks/coffee.png", "drinks"), ("fruit/apple.jpg", "fruit"), ("fruit/orange.jpg", "fruit")]
            .iter()
            .map(|(k, id)| (format!("{url}/{k}"), id.to_string()))
            .collect();
    assert_eq!(seen, want);
}

fn iou(a: &Value, b: &Value) -> f64 {
    let f = |v: &Value, i: usize| v[i].as_f64().unwrap();
    let w = (f(a, 2).min(f(b, 2)) - f(a, 0).max(f(b, 0))).max(0.0);
    let h = (f(a, 3).min(f(b, 3)) - f(a, 1).max(f(b, 1))).max(0.0);
    let area = |v: &Value| (f(v, 2) - f(v, 0)) * (f(v, 3) - f(v, 1));
    w * h / (area(a) + area(b) - w * h)
}

/// `strix stream --index NAME`: the people of the video's first frame, cropped and indexed by
/// name, are named on their tracks (at 0.7: a 30 x 76 pixel walker two frames on is 0.74-0.83
/// alike to its own crop, 0.54-0.72 to the others', and the best match is the right one) (an `identified` event naming the person whose box the track
/// holds, the name in the frame events and on the track); an index of other things names no
/// one; a model without boxes is refused.
#[test]
fn stream_names_tracks_from_an_index() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let frame = image::open(fx.join("video/vtest_frame000.png")).unwrap().to_rgb8();
    let crops = tmp.path().join("walkers");
    std::fs::create_dir_all(&crops).unwrap();
    let people = crate::stream::frame0_people(&fx);
    for (i, p) in people.iter().enumerate() {
        let b: Vec<u32> = (0..4).map(|k| p["box_xyxy_image"][k].as_f64().unwrap().max(0.0) as u32).collect();
        let crop = imageops::crop_imm(&frame, b[0], b[1], b[2] - b[0], b[3] - b[1]).to_image();
        save(&crop, &crops.join(format!("walker{i}.png")));
    }
    ok(cli(&fx, tmp.path()).args(["index", "create", "walkers"]));
    ok(cli(&fx, tmp.path()).args(["index", "add", "walkers", "--external-id", "stem"]).arg(&crops));
    let fruit = crate::support::photo_folder(&fx, &tmp.path().join("fruit"), &["apple.jpg", "orange.jpg"]);
    ok(cli(&fx, tmp.path()).args(["index", "create", "fruit"]));
    ok(cli(&fx, tmp.path()).args(["index", "add", "fruit"]).arg(&fruit));

    let stream = |index: &str, events: &Path| {
        ok(cli(&fx, tmp.path())
            .arg("stream")
            .arg(fx.join("video/vtest_10s_h264.mp4"))
            .args(["--model", "nanodet_m_416", "--classes", "person", "--max-frames", "12", "--frame-events"])
            .args(["--policy", "all", "--index", index, "--index-threshold", "0.7", "--events"])
            .arg(events));
        std::fs::read_to_string(events)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect::<Vec<Value>>()
    };
    let events = stream("walkers", &tmp.path().join("walkers.jsonl"));
    let named: Vec<&Value> = events.iter().filter(|e| e["type"] == "identified").collect();
    eprintln!("{} of {} walkers named", named.len(), people.len());
    assert_eq!(named.len(), people.len(), "{named:?}");
    for e in &named {
        assert_eq!((e["index"].as_str(), e["class"].as_str()), (Some("walkers"), Some("person")), "{e}");
        assert!(e["similarity"].as_f64().unwrap() >= 0.7, "{e}");
        // The track's box in that frame overlaps the named walker's box in frame 0 most.
        let frame = events.iter().find(|f| f["type"] == "frame" && f["frame"] == e["frame"]).unwrap();
        let track = frame["tracks"].as_array().unwrap().iter().find(|t| t["track_id"] == e["track_id"]).unwrap();
        assert_eq!(track["identity"], e["name"], "{frame}");
        let best = (0..people.len())
            .max_by(|&a, &b| {
                let box_of = |i: usize| &people[i]["box_xyxy_image"];
                iou(&track["bbox"], box_of(a)).total_cmp(&iou(&track["bbox"], box_of(b)))
            })
            .unwrap();
        assert_eq!(e["name"].as_str(), Some(format!("walker{best}").as_str()), "{e} {track}");
    }
    let ids: std::collections::HashSet<&Value> = named.iter().map(|e| &e["track_id"]).collect();
    assert_eq!(ids.len(), named.len(), "a track was named twice: {named:?}");

    let events = stream("fruit", &tmp.path().join("fruit.jsonl"));
    assert!(events.iter().all(|e| e["type"] != "identified"), "a walker was taken for fruit");
    let (o, _, err) = run(cli(&fx, tmp.path()).arg("stream").arg(fx.join("video/vtest_10s_h264.mp4")).args([
        "--task",
        "classify",
        "--max-frames",
        "1",
        "--index",
        "walkers",
    ]));
    assert!(!o.status.success() && err.contains("model with boxes"), "{err}");
    let (o, _, err) = run(cli(&fx, tmp.path()).arg("stream").arg(fx.join("video/vtest_10s_h264.mp4")).args([
        "--max-frames",
        "1",
        "--index",
        "walkers",
        "--index-threshold",
        "80",
    ]));
    assert!(!o.status.success() && err.contains("-1 to 1"), "{err}");
}
