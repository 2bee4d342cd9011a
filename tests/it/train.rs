//! Training: burn models against the fixture references, and `strix train` end to end.

use std::path::{Path, PathBuf};

use serde_json::Value;
use strix_train::{Arch, Classifier, Device, ModelShape, Weights};
use strix_vision::{DecodeLimits, Preprocessor, decode_file};
use strix_zoo::builtin;

use crate::fixtures_or_skip;
use crate::support::{max_abs_diff, read_npy, run, strix};

fn effnet(fx: &Path) -> Classifier {
    let weights = Weights::open(&fx.join("models/classify/efficientnet_lite0.safetensors")).unwrap();
    let shape = ModelShape { arch: Arch::EfficientnetLite0, classes: 1000, channels: 3, image_size: 224 };
    Classifier::new(&shape, Some(&weights), &Device::flex()).unwrap()
}

#[test]
fn burn_efficientnet_lite0_gives_the_reference_logits_and_top1() {
    let fx = fixtures_or_skip!();
    let model = effnet(&fx);
    let (shape, input) = read_npy(&fx.join("reference/efficientnet_lite0__chelsea__input.npy"));
    assert_eq!(shape, vec![1, 3, 224, 224]);
    let (_, want) = read_npy(&fx.join("reference/efficientnet_lite0__chelsea__logits.npy"));
    let got = model.logits(input, 1, 3, 224, &Device::flex());
    let diff = max_abs_diff(&got, &want);
    eprintln!("burn EfficientNet-Lite0 vs onnxruntime logits: max |diff| {diff:e}");
    assert!(diff <= 1e-3, "burn logits differ from onnxruntime by {diff}");

    // Every reference photo: the zoo's preprocessing, then burn; top-1 as onnxruntime's.
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(fx.join("expected.json")).unwrap()).unwrap();
    let results = expected["models"]["models/classify/efficientnet_lite0.onnx"]["results"].as_object().unwrap();
    let spec = builtin::all().unwrap().into_iter().find(|s| s.name == "efficientnet_lite0").unwrap();
    let pre = Preprocessor::new(spec.input.as_ref().unwrap(), spec.preprocess.as_ref().unwrap()).unwrap();
    let mut batch = Vec::new();
    for image in results.keys() {
        let img = decode_file(&fx.join(image), &DecodeLimits::default()).unwrap();
        let mut x = vec![0f32; pre.sample_len()];
        pre.run(&img, &mut x);
        batch.extend(x);
    }
    let logits = model.logits(batch, results.len(), 3, 224, &Device::flex());
    for ((image, reference), row) in results.iter().zip(logits.chunks(1000)) {
        let top1 = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(top1 as u64, reference["top5"][0]["class_id"].as_u64().unwrap(), "{image}");
    }
    assert!(results.len() >= 10);
}

/// The zoo's inference ONNX (batch norm folded into the convs) as a backbone: burn gives
/// onnxruntime's logits as read, and still after its batch norms are re-measured on photos
/// (that training then starts from the same function is the unit test of `restat`).
#[test]
fn folded_onnx_weights_keep_the_reference_logits_through_restat() {
    let fx = fixtures_or_skip!();
    let weights = Weights::open(&fx.join("models/classify/efficientnet_lite0.onnx")).unwrap();
    assert!(weights.folded);
    let shape = ModelShape { arch: Arch::EfficientnetLite0, classes: 1000, channels: 3, image_size: 224 };
    let ad = Device::flex().autodiff();
    let model = Classifier::new(&shape, Some(&weights), &ad).unwrap();
    let (_, input) = read_npy(&fx.join("reference/efficientnet_lite0__chelsea__input.npy"));
    let (_, want) = read_npy(&fx.join("reference/efficientnet_lite0__chelsea__logits.npy"));
    let diff = max_abs_diff(&model.logits(input.clone(), 1, 3, 224, &ad), &want);
    assert!(diff <= 1e-3, "folded weights: logits differ from onnxruntime by {diff}");

    let spec = builtin::all().unwrap().into_iter().find(|s| s.name == "efficientnet_lite0").unwrap();
    let pre = Preprocessor::new(spec.input.as_ref().unwrap(), spec.preprocess.as_ref().unwrap()).unwrap();
    let photos = ["coffee.png", "baboon.jpg", "squirrel_cls.jpg", "messi5.jpg", "orange.jpg", "apple.jpg"];
    let mut batch = Vec::new();
    for p in photos {
        let img = decode_file(&fx.join("images").join(p), &DecodeLimits::default()).unwrap();
        let mut x = vec![0f32; pre.sample_len()];
        pre.run(&img, &mut x);
        batch.extend(x);
    }
    let model = model.restat(batch, photos.len(), 3, 224, &ad).unwrap();
    let diff = max_abs_diff(&model.logits(input, 1, 3, 224, &ad), &want);
    eprintln!(
        "EfficientNet-Lite0 from the zoo's ONNX, batch norms re-measured: max |logit diff| vs onnxruntime {diff:e}"
    );
    assert!(diff <= 1e-3, "after restat: logits differ from onnxruntime by {diff}");
}

fn final_json(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("final.json")).unwrap()).unwrap()
}

pub(crate) fn train_cmd(fx: &Path, cache: &Path, run: &Path) -> std::process::Command {
    let mut cmd = strix(fx, cache);
    cmd.arg("train").arg("--run-dir").arg(run).arg("--threads").arg("2");
    cmd
}

pub(crate) fn fashion(fx: &Path) -> PathBuf {
    fx.join("datasets/fashion-mnist")
}

/// A small CNN trained for one short epoch on `images` Fashion-MNIST images and exported (a
/// model with a free batch dimension); the path of its spec.
pub(crate) fn quick_export(fx: &Path, tmp: &Path, images: usize) -> PathBuf {
    let run_dir = tmp.join("fm");
    let (out, _, stderr) = run(train_cmd(fx, tmp, &run_dir).arg("--data").arg(fashion(fx)).args([
        "--model",
        "small-cnn",
        "--epochs",
        "1",
        "--max-images",
        &images.to_string(),
        "--test",
        "false",
    ]));
    assert!(out.status.success(), "{stderr}");
    run_dir.join("export/model.toml")
}

/// Acceptance: the small CNN from scratch, 3 epochs of the full Fashion-MNIST training set,
/// at least 90% on the 10,000 test images; then `strix eval` agrees with the run's numbers.
#[test]
fn fashion_mnist_small_cnn_three_epochs_reaches_90_percent() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("fm");
    let (out, stdout, stderr) = run(train_cmd(&fx, tmp.path(), &run_dir)
        .arg("--data")
        .arg(fashion(&fx))
        .args(["--model", "small-cnn", "--epochs", "3", "--crop-scale-min", "1", "--color-jitter", "0"])
        .args(["--val-crop", "1"]));
    assert!(out.status.success(), "{stderr}");
    let f = final_json(&run_dir);
    let test = f["test"]["accuracy"].as_f64().unwrap();
    let secs: Vec<f64> = f["history"].as_array().unwrap().iter().map(|m| m["seconds"].as_f64().unwrap()).collect();
    eprintln!("Fashion-MNIST small-cnn: test accuracy {test:.4}, seconds/epoch {secs:?}");
    assert_eq!(f["test"]["images"].as_u64(), Some(10_000));
    assert!(test >= 0.90, "test accuracy {test}");
    assert!(stdout.contains("test accuracy"), "{stdout}");
    for file in ["report.html", "loss.png", "accuracy.png", "confusion.png", "worst.png", "metrics.jsonl", "best.bpk"] {
        assert!(run_dir.join(file).is_file(), "{file} missing");
    }
    let report = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(report.contains("ankle-boot") && report.contains("<img src=\"confusion.png\">"));
    assert_eq!(std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap().lines().count(), 3);

    let (out, stdout, stderr) =
        run(strix(&fx, tmp.path()).arg("eval").arg(&run_dir).arg("--data").arg(fashion(&fx)).arg("--json"));
    assert!(out.status.success(), "{stderr}");
    let e: Value = serde_json::from_str(&stdout).unwrap();
    assert!((e["accuracy"].as_f64().unwrap() - test).abs() < 1e-9, "eval {} vs run {test}", e["accuracy"]);
}

/// Acceptance: pretrained EfficientNet-Lite0 features beat the same network from random init
/// under the same budget (linear probe, same subset, epochs, schedule and seed).
#[test]
fn pretrained_efficientnet_beats_random_init_on_a_fashion_mnist_subset() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let weights = fx.join("models/classify/efficientnet_lite0.safetensors");
    let accuracy = |name: &str, pretrained: bool| {
        let run_dir = tmp.path().join(name);
        let mut cmd = train_cmd(&fx, tmp.path(), &run_dir);
        cmd.arg("--data").arg(fashion(&fx));
        cmd.args(["--max-images", "2000", "--val-fraction", "0.2", "--model", "efficientnet-lite0"]);
        cmd.args(["--mode", "linear-probe", "--image-size", "112", "--epochs", "2", "--lr", "0.01"]);
        cmd.args(["--crop-scale-min", "1", "--color-jitter", "0", "--val-crop", "1", "--test", "false"]);
        // The same network and budget; only the starting weights differ.
        if pretrained {
            cmd.arg("--pretrained").arg(&weights);
        }
        let (out, _, stderr) = run(&mut cmd);
        assert!(out.status.success(), "{stderr}");
        final_json(&run_dir)["val"]["accuracy"].as_f64().unwrap()
    };
    let pretrained = accuracy("pretrained", true);
    let random = accuracy("random", false);
    eprintln!(
        "2,000 Fashion-MNIST images at 112 px, linear probe, 2 epochs: pretrained {pretrained:.4}, random init {random:.4}"
    );
    assert!(pretrained >= random + 0.10, "pretrained {pretrained} vs random init {random}");
}

/// Where `last.ckpt` says a run stands: (epoch in progress, 0-based; batches done in it). The
/// state is the JSON after the 8-byte magic and its 8-byte length.
fn checkpoint_position(run_dir: &Path) -> Option<(u64, u64)> {
    let bytes = std::fs::read(run_dir.join("last.ckpt")).ok()?;
    let len = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?) as usize;
    let state: Value = serde_json::from_slice(bytes.get(16..16 + len)?).ok()?;
    Some((state["epoch"].as_u64()?, state["batch_in_epoch"].as_u64()?))
}

/// SIGKILL once the run's checkpoint stands inside epoch 2 (batches done, epoch not ended):
/// the event the resume tests need, waited for rather than guessed from timings, so a loaded
/// machine cannot make them kill too early or too late.
pub(crate) fn kill_inside_epoch_2(mut child: std::process::Child, run_dir: &Path) {
    let started = std::time::Instant::now();
    loop {
        if let Some((1, done)) = checkpoint_position(run_dir)
            && done > 0
        {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before a checkpoint inside epoch 2");
        assert!(started.elapsed().as_secs() < 600, "no checkpoint inside epoch 2 in 10 minutes");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Acceptance: kill -9 inside epoch 2, `--resume`, and the run ends where an uninterrupted one
/// with the same seed does. Checkpoints every ~0.1 s, so the resume starts mid-epoch.
#[test]
fn killed_run_resumes_and_matches_an_uninterrupted_one() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let args = |cmd: &mut std::process::Command| {
        cmd.arg("--data").arg(fashion(&fx));
        cmd.args(["--max-images", "4000", "--val-fraction", "0.2", "--epochs", "3", "--seed", "7"]);
        cmd.args(["--crop-scale-min", "0.6", "--test", "false", "--batch-size", "32"]);
    };
    let whole = tmp.path().join("whole");
    let mut cmd = train_cmd(&fx, tmp.path(), &whole);
    args(&mut cmd);
    let (out, _, stderr) = run(&mut cmd);
    assert!(out.status.success(), "{stderr}");

    let killed = tmp.path().join("killed");
    let mut cmd = train_cmd(&fx, tmp.path(), &killed);
    args(&mut cmd);
    cmd.args(["--checkpoint-minutes", "0.002"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let child = cmd.spawn().unwrap();
    kill_inside_epoch_2(child, &killed);
    let metrics = killed.join("metrics.jsonl");
    let epoch1 = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(epoch1.lines().count(), 1, "not killed inside epoch 2");
    assert!(!killed.join("final.json").exists());

    let (out, _, stderr) = run(strix(&fx, tmp.path()).arg("train").arg("--resume").arg(&killed));
    assert!(out.status.success(), "{stderr}");
    let log = std::fs::read_to_string(killed.join("train.log")).unwrap();
    let resumed = log.lines().find(|l| l.contains("resumed at epoch 2 batch")).expect("resumed inside epoch 2");
    assert!(!resumed.ends_with("batch 0"), "{resumed}");

    // Epoch 1 was not computed again: its line, timing included, is the one written before
    // the kill (a restart from scratch would rewrite it with another duration).
    let after = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(after.lines().next(), epoch1.lines().next(), "epoch 1 was recomputed");
    assert_eq!(after.lines().count(), 3);
    // Same seed, same data order, restored optimizer and sampler: the same weights. They are
    // compared by what they compute, every logit on the validation images (the files differ in
    // burn's random parameter ids). Not bit for bit: training after a reload differs from the
    // uninterrupted run in the last bit of some values (4.8e-7 at most here; saving checkpoints
    // alone changes nothing), while a wrongly restored state (sampler, dropout, optimizer,
    // schedule) moves logits by 1e-2 and more.
    let device = strix_train::Device::flex();
    let (images, n) = strix_train::classify::validation_images(&whole, 64).unwrap();
    let logits = |dir: &Path| {
        let (model, saved) = strix_train::classify::load_trained(dir, &device).unwrap();
        let (c, s) = (saved.shape.channels, saved.shape.image_size);
        model.logits(images.clone(), n, c, s, &device)
    };
    let (la, lb) = (logits(&whole), logits(&killed));
    let diff = max_abs_diff(&la, &lb);
    eprintln!("resumed vs uninterrupted: max |logit diff| {diff:e} over {} logits", la.len());
    assert!(diff <= 1e-5, "resumed weights compute other logits than the uninterrupted run's: {diff:e}");

    let (a, b) = (final_json(&whole), final_json(&killed));
    let accs = |f: &Value| -> Vec<f64> {
        f["history"].as_array().unwrap().iter().map(|m| m["val_accuracy"].as_f64().unwrap()).collect()
    };
    eprintln!("uninterrupted {:?}\nresumed       {:?}", accs(&a), accs(&b));
    assert_eq!(accs(&a).len(), 3);
    for (x, y) in accs(&a).iter().zip(accs(&b)) {
        assert!((x - y).abs() <= 0.005, "val accuracy {x} vs {y}");
    }
    let (x, y) = (a["val"]["accuracy"].as_f64().unwrap(), b["val"]["accuracy"].as_f64().unwrap());
    assert!((x - y).abs() <= 0.005, "final val accuracy {x} vs {y}");
}

/// Three classes of small synthetic photos; `broken` adds an unreadable JPEG to one.
fn trash_folder(root: &Path, broken: bool) -> PathBuf {
    let dir = root.join("trash");
    for (c, colour) in [("compost", [120u8, 80, 20]), ("landfill", [90, 90, 90]), ("recycling", [20, 90, 200])] {
        std::fs::create_dir_all(dir.join(c)).unwrap();
        for i in 0..12u32 {
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                let n = ((x * 7 + y * 13 + i * 31) % 40) as u8;
                image::Rgb([colour[0].saturating_add(n), colour[1].saturating_add(n), colour[2].saturating_add(n)])
            });
            img.save(dir.join(format!("{c}/{i}.png"))).unwrap();
        }
    }
    if broken {
        std::fs::write(dir.join("landfill/broken.jpg"), b"\xff\xd8\xff\xe0 this is not a photo").unwrap();
    }
    dir
}

#[test]
fn unreadable_images_are_skipped_counted_and_listed_in_the_report() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let data = trash_folder(tmp.path(), true);
    let run_dir = tmp.path().join("run");
    let (out, stdout, stderr) = run(train_cmd(&fx, tmp.path(), &run_dir).arg("--data").arg(&data).args([
        "--epochs",
        "2",
        "--val-fraction",
        "0.25",
        "--batch-size",
        "8",
    ]));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("1 unreadable images skipped"), "{stdout}");
    let report = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(report.contains("broken.jpg"), "report does not list the unreadable image");
    let f = final_json(&run_dir);
    let listed = f["skipped"].as_array().unwrap().len() + f["val"]["unreadable"].as_array().unwrap().len();
    assert_eq!(listed, 1);
}

#[test]
fn bad_data_and_config_are_clear_errors_before_training() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let data = trash_folder(tmp.path(), false);
    let fail = |cmd: &mut std::process::Command| {
        let (out, _, stderr) = run(cmd);
        assert!(!out.status.success());
        stderr
    };
    // An empty class.
    std::fs::create_dir_all(data.join("hazardous")).unwrap();
    let e = fail(train_cmd(&fx, tmp.path(), &tmp.path().join("r1")).arg("--data").arg(&data));
    assert!(e.contains("class 'hazardous' has no images"), "{e}");
    assert!(!tmp.path().join("r1").exists(), "a run folder was made for a run that cannot start");
    std::fs::remove_dir(data.join("hazardous")).unwrap();
    // A CSV label outside the class list, named with its line.
    let csv = tmp.path().join("labels.csv");
    std::fs::write(&csv, "path,label\ntrash/compost/0.png,compost\ntrash/landfill/0.png,landfil\n").unwrap();
    let e = fail(
        train_cmd(&fx, tmp.path(), &tmp.path().join("r2"))
            .arg("--data")
            .arg(&csv)
            .args(["--classes", "compost,landfill,recycling"]),
    );
    assert!(e.contains("labels.csv:3: label 'landfil' is not in the class list"), "{e}");
    // A typo in the config file, named with its line.
    let cfg = tmp.path().join("trash.toml");
    std::fs::write(&cfg, format!("data = \"{}\"\nepochs = 1\nlearning_rate = 0.1\n", data.display())).unwrap();
    let e = fail(strix(&fx, tmp.path()).arg("train").arg(&cfg));
    assert!(e.contains("trash.toml") && e.contains("learning_rate") && e.contains("line 3"), "{e}");
    // A bad value in a flag goes through the same checks.
    let e =
        fail(train_cmd(&fx, tmp.path(), &tmp.path().join("r3")).arg("--data").arg(&data).args(["--model", "vgg16"]));
    assert!(e.contains("vgg16"), "{e}");
}

#[test]
fn data_inspect_reports_counts_problems_and_writes_a_contact_sheet() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let data = trash_folder(tmp.path(), true);
    std::fs::copy(data.join("compost/0.png"), data.join("recycling/copy.png")).unwrap();
    let sheet = tmp.path().join("sheet.png");
    let (out, stdout, stderr) =
        run(strix(&fx, tmp.path()).args(["data", "inspect"]).arg(&data).arg("--sheet").arg(&sheet));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("38 images, 3 classes"), "{stdout}");
    assert!(stdout.contains("unreadable: 1") && stdout.contains("broken.jpg"), "{stdout}");
    assert!(stdout.contains("exact duplicates: 1 group(s)"), "{stdout}");
    let img = image::open(&sheet).unwrap();
    assert!(img.width() > 8 * 96 && img.height() >= 3 * 96);
}
