//! `strix train --model knn`: a k-NN classifier over embeddings, against a classifier trained on
//! the same 100 digits; its export answers as the run did, registered and predicted like any
//! classifier; a trained classifier's export gives its embedding too.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::fixtures_or_skip;
use crate::support::run;
use crate::tune::{digits_folder, strix_in};

/// The first `labelled` images of each class of `all` into `dir/labelled`, the next `held`
/// into `dir/held`.
fn split(all: &Path, dir: &Path, labelled: usize, held: usize) -> (PathBuf, PathBuf) {
    let (l, h) = (dir.join("labelled"), dir.join("held"));
    let mut classes: Vec<PathBuf> = std::fs::read_dir(all).unwrap().flatten().map(|e| e.path()).collect();
    classes.sort();
    for class in classes {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&class).unwrap().flatten().map(|e| e.path()).collect();
        files.sort();
        let name = class.file_name().unwrap();
        for (i, file) in files.iter().take(labelled + held).enumerate() {
            let to = if i < labelled { l.join(name) } else { h.join(name) };
            std::fs::create_dir_all(&to).unwrap();
            std::fs::copy(file, to.join(file.file_name().unwrap())).unwrap();
        }
    }
    (l, h)
}

fn val_accuracy(run_dir: &Path) -> f64 {
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
    summary["val"]["accuracy"].as_f64().unwrap()
}

fn ok(cmd: &mut std::process::Command) -> String {
    let (out, stdout, stderr) = run(cmd);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

/// Acceptance: on the fixture digits with 10 labelled images per class, k-NN over
/// efficientnet_lite0_embed vectors is at least as accurate on 30 held-out images per class as
/// the classifier `strix train` makes of the same 100 images. The export (one ONNX file, the vote inside)
/// passes its gate, registers, and predicts the held-out images as the run scored them;
/// `strix eval` of the run agrees.
#[test]
fn knn_on_ten_digits_a_class_is_at_least_a_trained_classifier() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let all = digits_folder(&fx, tmp.path());
    let (labelled, held) = split(&all, tmp.path(), 10, 30);
    let knn_run = tmp.path().join("knn");
    let stdout = ok(strix_in(&fx, tmp.path())
        .args(["train", "--model", "knn", "--k", "5", "--test", "false", "--register", "digits-knn", "--data"])
        .arg(&labelled)
        .arg("--val-data")
        .arg(&held)
        .arg("--run-dir")
        .arg(&knn_run));
    assert!(stdout.contains("gate passed") && stdout.contains("registered digits-knn:1"), "{stdout}");
    assert!(knn_run.join("export/neighbours.seg").is_file() && knn_run.join("knn.toml").is_file());

    let cnn_run = tmp.path().join("cnn");
    // The classifier `strix train` gives on the same images with its defaults (a small CNN,
    // 28 px, 10 epochs). A CNN tuned by hand for 8x8 digits (16 px, 30 epochs) scores 62-69%
    // over three seeds, the k-NN 61%: see the note on issue 34.
    ok(strix_in(&fx, tmp.path())
        .args(["train", "--threads", "2", "--test", "false", "--data"])
        .arg(&labelled)
        .arg("--val-data")
        .arg(&held)
        .arg("--run-dir")
        .arg(&cnn_run));
    let (knn, cnn) = (val_accuracy(&knn_run), val_accuracy(&cnn_run));
    eprintln!("digits, 10 labelled per class, 300 held out: k-NN {knn:.4}, strix train's classifier {cnn:.4}");
    assert!(knn >= cnn, "k-NN {knn} < the trained classifier's {cnn}");

    // The registered export predicts the held-out images as the run scored them.
    let stdout =
        ok(strix_in(&fx, tmp.path()).args(["predict", "--json", "--top-k", "1", "--model", "digits-knn:1"]).arg(&held));
    let (mut right, mut total) = (0usize, 0usize);
    for line in stdout.lines() {
        let answer: Value = serde_json::from_str(line).unwrap();
        let image = answer["Image"].as_str().or(answer["image"].as_str()).unwrap_or_else(|| panic!("{answer}"));
        let truth = Path::new(image).parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        right += usize::from(answer["Labels"][0]["Name"] == truth.as_str());
        total += 1;
    }
    assert_eq!(total, 300);
    let exported = right as f64 / total as f64;
    assert!((exported - knn).abs() <= 1.0 / 300.0 + 1e-9, "export {exported} vs run {knn}");
    let stdout = ok(strix_in(&fx, tmp.path()).arg("eval").arg(&knn_run).arg("--data").arg(&held).arg("--json"));
    let eval: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!((eval["accuracy"].as_f64().unwrap() - knn).abs() < 1e-9, "{eval}");

    // A trained classifier's export carries its embedding (the pooled features) and an embed
    // spec for it, which a k-NN run can read its vectors with.
    let embed_spec = cnn_run.join("export/embed.toml");
    let one = held.join("3").read_dir().unwrap().next().unwrap().unwrap().path();
    let stdout = ok(strix_in(&fx, tmp.path()).args(["predict", "--json", "--model"]).arg(&embed_spec).arg(&one));
    let answer: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    // The small CNN's hidden layer, which its head reads.
    assert_eq!(answer["Dimensions"], 128, "{answer}");
    assert_eq!(answer["Embedding"].as_array().unwrap().len(), 128, "{answer}");
    let own = tmp.path().join("knn-own");
    ok(strix_in(&fx, tmp.path())
        .args(["train", "--model", "knn", "--test", "false", "--no-export", "--embedding"])
        .arg(&embed_spec)
        .arg("--data")
        .arg(&labelled)
        .arg("--val-data")
        .arg(&held)
        .arg("--run-dir")
        .arg(&own));
    eprintln!("k-NN over the small CNN's own embedding: {:.4}", val_accuracy(&own));
}

/// Settings k-NN cannot use are refused by name before anything is built.
#[test]
fn knn_refuses_what_it_cannot_use() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let all = digits_folder(&fx, tmp.path());
    let refused = |args: &[&str], needle: &str| {
        let mut cmd = strix_in(&fx, tmp.path());
        let (out, stdout, stderr) = run(cmd.current_dir(tmp.path()).args(["train", "--data"]).arg(&all).args(args));
        assert!(!out.status.success(), "{args:?}: {stdout}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    };
    refused(&["--model", "knn", "--epochs", "3"], "unknown field `epochs`");
    refused(&["--model", "knn", "--k", "0"], "k must be at least 1");
    refused(&["--model", "small-cnn", "--k", "3"], "settings of --model knn");
    refused(&["--model", "knn", "--embedding", "efficientnet_lite0"], "whole-image embeddings");
    refused(&["--model", "knn", "--task", "detect"], "classifies whole images");
    let left = tmp.path().join("runs");
    assert!(!left.exists(), "a refused run left {left:?}");
}
