//! The `strix` binary as a user runs it.

use std::path::Path;

use serde_json::Value;

use crate::fixtures_or_skip;
use crate::support::{backends, png_declaring, run, strix};

#[test]
fn help_teaches() {
    let (out, stdout, _) = run(std::process::Command::new(env!("CARGO_BIN_EXE_strix")).arg("--help"));
    assert!(out.status.success());
    for needle in ["predict", "models", "Examples:", "STRIX_MODEL_PATH", "STRIX_HUB_URL", "--offline"] {
        assert!(stdout.contains(needle), "--help lacks {needle}:\n{stdout}");
    }
    let (out, stdout, _) = run(std::process::Command::new(env!("CARGO_BIN_EXE_strix")).args(["predict", "--help"]));
    assert!(out.status.success());
    for needle in ["--backend", "--top-k", "--json", "--max-pixels", "--batch", "--threads"] {
        assert!(stdout.contains(needle), "predict --help lacks {needle}");
    }
}

#[test]
fn predict_prints_labels_and_json_on_every_backend() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    for backend in backends() {
        let (out, stdout, stderr) = run(strix(&fx, cache.path())
            .args(["predict", "--backend", backend.as_str(), "-k", "3"])
            .arg(fx.join("images/coffee.png")));
        assert!(out.status.success(), "{backend}: {stderr}");
        assert!(stdout.contains("espresso"), "{backend}: {stdout}");
        assert_eq!(stdout.lines().count(), 4, "{backend}: image line + 3 classes:\n{stdout}");

        let (out, stdout, stderr) = run(strix(&fx, cache.path())
            .args(["predict", "--json", "--backend", backend.as_str()])
            .arg(fx.join("images")));
        assert!(out.status.success(), "{backend}: {stderr}");
        let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 11, "one JSON line per image in the folder");
        let baboon = lines.iter().find(|l| l["Image"].as_str().unwrap().ends_with("baboon.jpg")).unwrap();
        assert_eq!(baboon["Labels"][0]["Name"], "baboon");
        let confidence = baboon["Labels"][0]["Confidence"].as_f64().unwrap();
        assert!((confidence - 92.04).abs() < 1.0, "Rekognition confidence is a percentage: {confidence}");
        assert_eq!(baboon["Labels"].as_array().unwrap().len(), 5);
        assert_eq!(baboon["LabelModelVersion"], "efficientnet_lite0");
    }
}

#[test]
fn bad_images_get_one_line_errors_and_the_rest_still_get_results() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let messi = std::fs::read(fx.join("images/messi5.jpg")).unwrap();
    std::fs::write(d.join("truncated.jpg"), &messi[..messi.len() * 6 / 10]).unwrap();
    std::fs::write(d.join("text.png"), b"just some text, not a picture\n").unwrap();
    std::fs::write(d.join("empty.jpg"), b"").unwrap();
    std::fs::write(d.join("huge.png"), png_declaring(30000, 30000)).unwrap();
    let args = [
        fx.join("images/coffee.png"),
        d.join("truncated.jpg"),
        d.join("text.png"),
        d.join("empty.jpg"),
        d.join("huge.png"),
        d.join("missing.jpg"),
        fx.join("images/baboon.jpg"),
    ];
    let (out, stdout, stderr) = run(strix(&fx, cache.path()).args(["predict", "--json"]).args(&args));
    assert!(!out.status.success(), "a failed image must make the exit code non-zero");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 5, "one error line per bad file:\n{stderr}");
    let expect = [
        ("truncated.jpg", "truncated"),
        ("text.png", "not an image"),
        ("empty.jpg", "empty file"),
        ("huge.png", "30000x30000"),
        ("missing.jpg", "not found"),
    ];
    for (file, problem) in expect {
        let line =
            errors.iter().find(|l| l.contains(file)).unwrap_or_else(|| panic!("no error names {file}:\n{stderr}"));
        assert!(line.contains(problem), "{file}: expected {problem:?} in {line:?}");
    }
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(lines[0]["Labels"][0]["Name"], "espresso");
    assert_eq!(lines[6]["Labels"][0]["Name"], "baboon");
    assert_eq!(lines[1]["Error"]["Code"], "InvalidImageFormatException");
    assert_eq!(lines[4]["Error"]["Code"], "ImageTooLargeException");

    // The pixel limit is configurable: a 451x300 image is refused under 100000 pixels.
    let (out, _, stderr) =
        run(strix(&fx, cache.path()).args(["predict", "--max-pixels", "100000"]).arg(fx.join("images/chelsea.png")));
    assert!(!out.status.success());
    assert!(stderr.contains("chelsea.png") && stderr.contains("451x300"), "{stderr}");
}

fn link(from: &Path, to: &Path) {
    std::os::unix::fs::symlink(from, to).unwrap();
}

fn own_spec(fx: &Path, dir: &Path, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    link(&fx.join("models/classify/efficientnet_lite0.onnx"), &dir.join("mine.onnx"));
    link(&fx.join("models/classify/imagenet_labels.txt"), &dir.join("labels.txt"));
    let zoo = include_str!("../../crates/strix-zoo/zoo/efficientnet_lite0.toml")
        .replace("classify/efficientnet_lite0.onnx", "mine.onnx")
        .replace("classify/imagenet_labels.txt", "labels.txt")
        .replace("name = \"efficientnet_lite0\"", "name = \"mine\"");
    let path = dir.join("mine.toml");
    std::fs::write(&path, edit(zoo)).unwrap();
    path
}

#[test]
fn own_model_by_spec_or_by_onnx_path() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = own_spec(&fx, dir.path(), |s| s);
    for model in [spec.clone(), dir.path().join("mine.onnx")] {
        let (out, stdout, stderr) = run(strix(&fx, cache.path())
            .args(["predict", "--json", "--model"])
            .arg(&model)
            .arg(fx.join("images/coffee.png")));
        assert!(out.status.success(), "{}: {stderr}", model.display());
        let v: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(v["Labels"][0]["Name"], "espresso");
        assert_eq!(v["LabelModelVersion"], "mine");
    }
}

#[test]
fn spec_with_unknown_field_is_refused_before_any_work() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = own_spec(&fx, dir.path(), |s| s.replace("channels = \"rgb\"", "channels = \"rgb\"\nnormalize = true"));
    let (out, stdout, stderr) =
        run(strix(&fx, cache.path()).args(["predict", "--model"]).arg(&spec).arg(fx.join("images/coffee.png")));
    assert!(!out.status.success());
    assert!(stdout.is_empty());
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(line.contains("mine.toml") && line.contains("unknown field `normalize`"), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error:")).count(), 1);
}

#[test]
fn weights_with_wrong_sha256_are_refused() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    // A model folder on the search path whose EfficientNet file is not the real one.
    let models = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(models.path().join("classify")).unwrap();
    let mut bytes = std::fs::read(fx.join("models/classify/efficientnet_lite0.onnx")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(models.path().join("classify/efficientnet_lite0.onnx"), &bytes).unwrap();
    let (out, _, stderr) = run(strix(&fx, cache.path())
        .env("STRIX_MODEL_PATH", models.path())
        .arg("predict")
        .arg(fx.join("images/coffee.png")));
    assert!(!out.status.success());
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(
        line.contains("efficientnet_lite0.onnx") && line.contains("sha256") && line.contains("feec595e"),
        "{stderr}"
    );

    // The same through a spec file with a wrong digest.
    let dir = tempfile::tempdir().unwrap();
    let spec = own_spec(&fx, dir.path(), |s| s.replace("feec595eeaab", "0000000eeaab"));
    let (out, _, stderr) =
        run(strix(&fx, cache.path()).args(["predict", "--model"]).arg(&spec).arg(fx.join("images/coffee.png")));
    assert!(!out.status.success());
    assert!(stderr.contains("mine.onnx") && stderr.contains("0000000eeaab"), "{stderr}");
}

#[test]
fn unknown_model_and_missing_weights_say_what_to_do() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    let (out, _, stderr) =
        run(strix(&fx, cache.path()).args(["predict", "--model", "resnet9000"]).arg(fx.join("images/coffee.png")));
    assert!(!out.status.success());
    assert!(stderr.contains("unknown model `resnet9000`") && stderr.contains("efficientnet_lite0"), "{stderr}");

    let empty = tempfile::tempdir().unwrap();
    let (out, _, stderr) = run(strix(&fx, cache.path())
        .env("STRIX_MODEL_PATH", empty.path())
        .arg("predict")
        .arg(fx.join("images/coffee.png")));
    assert!(!out.status.success());
    assert!(stderr.contains("classify/efficientnet_lite0.onnx") && stderr.contains("STRIX_HUB_URL"), "{stderr}");
}

#[cfg(feature = "ort")]
#[test]
fn ort_backend_without_library_explains_where_to_get_it() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    let (out, _, stderr) = run(strix(&fx, cache.path())
        .env_remove("ORT_DYLIB_PATH")
        .args(["predict", "--backend", "ort"])
        .arg(fx.join("images/coffee.png")));
    assert!(!out.status.success());
    assert!(stderr.contains("ORT_DYLIB_PATH") && stderr.contains("onnxruntime"), "{stderr}");
}

/// `--device cuda` runs on a GPU or says why not: tract has no GPU, a CPU-only ONNX Runtime
/// library is refused by name (never a silent CPU run), and an unknown device is an error.
#[test]
fn gpu_device_is_refused_clearly_where_it_cannot_run() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    let photo = fx.join("images/coffee.png");
    let (out, _, stderr) =
        run(strix(&fx, cache.path()).args(["predict", "--backend", "tract", "--device", "cuda"]).arg(&photo));
    assert!(!out.status.success());
    assert!(
        stderr.contains("tract backend runs on the CPU only, not on cuda") && stderr.contains("--backend ort"),
        "{stderr}"
    );

    let (out, _, stderr) = run(strix(&fx, cache.path()).args(["predict", "--device", "tpu"]).arg(&photo));
    assert!(!out.status.success());
    assert!(stderr.contains("unknown device `tpu`"), "{stderr}");

    let Some(lib) = crate::support::ort_library("--device cuda") else { return };
    // The library scripts/setup installs is PyPI's CPU-only `onnxruntime`.
    let (out, _, stderr) = run(strix(&fx, cache.path())
        .env("ORT_DYLIB_PATH", lib)
        .args(["predict", "--backend", "ort", "--device", "cuda:0"])
        .arg(&photo));
    assert!(!out.status.success());
    assert!(stderr.contains("ONNX Runtime cannot run on cuda") && stderr.contains("onnxruntime-gpu"), "{stderr}");
}

#[test]
fn models_list_and_show() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    let (out, stdout, stderr) = run(strix(&fx, cache.path()).args(["models", "list"]));
    assert!(out.status.success(), "{stderr}");
    let row = stdout.lines().find(|l| l.starts_with("efficientnet_lite0")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.contains("classify") && row.contains("here"), "{row}");

    let (out, stdout, _) = run(strix(&fx, cache.path()).args(["models", "list", "--json"]));
    assert!(out.status.success());
    let rows: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows[0]["weights"]["status"], "local");

    let (out, stdout, stderr) = run(strix(&fx, cache.path()).args(["models", "show", "efficientnet_lite0", "--io"]));
    assert!(out.status.success(), "{stderr}");
    for needle in
        ["shorter side to 256", "onnx in     input: f32[1,3,224,224]", "onnx out    logits: f32[1,1000]", "feec595e"]
    {
        assert!(stdout.contains(needle), "show lacks {needle:?}:\n{stdout}");
    }

    // --toml prints a spec that parses back, so users can start their own from it.
    let (out, stdout, _) = run(strix(&fx, cache.path()).args(["models", "show", "efficientnet_lite0", "--toml"]));
    assert!(out.status.success());
    let again = strix_zoo::ModelSpec::from_toml(&stdout, "shown").unwrap();
    assert_eq!(again.name, "efficientnet_lite0");
}

#[test]
fn every_task_answers_in_its_rekognition_shape_and_draws() {
    let fx = fixtures_or_skip!();
    let cache = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let cases = [
        ("detect", "images/messi5.jpg", "Labels"),
        ("pose", "images/astronaut.png", "Persons"),
        ("segment", "images/astronaut.png", "Segmentation"),
        ("faces", "images/astronaut.png", "FaceDetails"),
        ("text", "images/page.png", "TextDetections"),
    ];
    for (task, image, key) in cases {
        let annotated = out_dir.path().join(task);
        let (out, stdout, stderr) = run(strix(&fx, cache.path())
            .args(["predict", "--json", "--task", task, "--save-annotated"])
            .arg(&annotated)
            .arg(fx.join(image)));
        assert!(out.status.success(), "{task}: {stderr}");
        let v: Value = serde_json::from_str(stdout.trim()).unwrap();
        let items = &v[key];
        assert!(!items.is_null(), "{task}: no {key} in {v}");
        match task {
            "detect" => {
                let person = &items[0];
                assert_eq!(person["Name"], "person");
                let b = &person["Instances"][0]["BoundingBox"];
                for k in ["Width", "Height", "Left", "Top"] {
                    let r = b[k].as_f64().unwrap();
                    assert!((0.0..=1.0).contains(&r), "{k} must be a ratio: {r}");
                }
            }
            "pose" => assert_eq!(items[0]["Keypoints"].as_array().unwrap().len(), 17),
            "segment" => assert_eq!(items["Classes"][1]["Name"], "person"),
            "faces" => assert_eq!(items[0]["Landmarks"].as_array().unwrap().len(), 6),
            "text" => assert_eq!(items[0]["Geometry"]["Polygon"].as_array().unwrap().len(), 4),
            _ => unreachable!(),
        }
        let stem = std::path::Path::new(image).file_stem().unwrap().to_str().unwrap();
        let drawn = image::open(annotated.join(format!("{stem}.jpg"))).unwrap().to_rgb8();
        // The original through the same JPEG encoder (the image crate's, quality 75): away from
        // what was drawn, its 8x8 blocks come out the same, so what differs was drawn, and it
        // must lie where the answers are.
        let baseline = annotated.join(format!("{stem}.baseline.jpg"));
        image::open(fx.join(image)).unwrap().to_rgb8().save(&baseline).unwrap();
        let original = image::open(&baseline).unwrap().to_rgb8();
        assert_eq!(drawn.dimensions(), original.dimensions());
        let (w, h) = (drawn.width() as f64, drawn.height() as f64);
        let strong = |x: u32, y: u32| {
            let (a, b) = (drawn.get_pixel(x, y).0, original.get_pixel(x, y).0);
            (0..3).any(|c| a[c].abs_diff(b[c]) > 60)
        };
        let all: Vec<(u32, u32)> = (0..drawn.height())
            .flat_map(|y| (0..drawn.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| strong(x, y))
            .collect();
        // Every answer's box (Rekognition shapes: fractions of the image).
        let boxes: Vec<&Value> = match task {
            "detect" => items
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|l| l["Instances"].as_array().unwrap())
                .map(|i| &i["BoundingBox"])
                .collect(),
            "text" => items.as_array().unwrap().iter().map(|t| &t["Geometry"]["BoundingBox"]).collect(),
            "segment" => Vec::new(),
            _ => items.as_array().unwrap().iter().map(|f| &f["BoundingBox"]).collect(),
        };
        if boxes.is_empty() {
            // A mask is blended over the person: a large share of the image.
            assert!(all.len() as f64 > 0.05 * w * h, "{task}: {} pixels drawn", all.len());
            continue;
        }
        // Each box's lines, its label tag in a band above it (tags are wider than small boxes
        // and are pushed inside the image), and the 16-pixel JPEG blocks they touch.
        let regions: Vec<[f64; 4]> = boxes
            .iter()
            .flat_map(|b| {
                let r = |k: &str| b[k].as_f64().unwrap();
                let (l, t, rt, bt) =
                    (r("Left") * w, r("Top") * h, (r("Left") + r("Width")) * w, (r("Top") + r("Height")) * h);
                [[l - 16.0, t - 16.0, rt + 16.0, bt + 16.0], [l - 160.0, t - 48.0, rt + 160.0, t + 16.0]]
            })
            .collect();
        let near = |x: u32, y: u32| {
            let (x, y) = (f64::from(x), f64::from(y));
            regions.iter().any(|g| x >= g[0] && x <= g[2] && y >= g[1] && y <= g[3])
        };
        let inside = all.iter().filter(|&&(x, y)| near(x, y)).count();
        assert!(inside >= 100, "{task}: {inside} pixels drawn around the answers");
        assert!(
            inside as f64 >= 0.95 * all.len() as f64,
            "{task}: {} of {} drawn pixels away from every answer",
            all.len() - inside,
            all.len()
        );
    }
    // A model of another task than asked for is a clear error.
    let (out, _, stderr) = run(strix(&fx, cache.path())
        .args(["predict", "--task", "detect", "--model", "selfie_256"])
        .arg(fx.join("images/coffee.png")));
    assert!(!out.status.success());
    assert!(stderr.contains("selfie_256 is a segment model, not detect"), "{stderr}");
}

/// Settings are decided once: flags, then STRIX_* variables, then the settings file
/// (`--settings`, else `STRIX_HOME/settings.toml`), then the defaults.
#[test]
fn settings_come_from_flags_then_the_environment_then_the_settings_file() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let file = home.join("settings.toml");
    let models = fx.join("models");
    std::fs::write(&file, format!("model_path = [{:?}]\noffline = true\n", models.display().to_string())).unwrap();
    let fetch = || {
        let mut cmd = strix(&fx, &tmp.path().join("cache"));
        cmd.env_remove("STRIX_MODEL_PATH").env("STRIX_HOME", &home).args(["models", "fetch", "efficientnet_lite0"]);
        cmd
    };
    // The file alone: its search path finds the weights.
    let (out, stdout, stderr) = run(&mut fetch());
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&models.display().to_string()), "{stdout}");
    // The environment beats the file: a search path without the file.
    let (out, _, stderr) = run(fetch().env("STRIX_MODEL_PATH", tmp.path().join("nothing-here")));
    assert!(!out.status.success() && stderr.contains("nothing-here"), "{stderr}");
    // A flag beats the environment.
    let (out, _, stderr) =
        run(fetch().env("STRIX_MODEL_PATH", tmp.path().join("nothing-here")).arg("--model-path").arg(&models));
    assert!(out.status.success(), "{stderr}");
    // A named file replaces the default one; an unknown key is an error naming file and key.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "cache = \"/tmp\"\n").unwrap();
    let (out, _, stderr) = run(fetch().arg("--settings").arg(&bad));
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("bad.toml") && stderr.contains("unknown field `cache`"), "{stderr}");
}

/// `--backend auto` (the default) takes ONNX Runtime when its library is found and says so,
/// else tract, and gives the same answer either way.
#[test]
fn backend_auto_takes_onnx_runtime_when_its_library_is_found_else_tract() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let photo = fx.join("images/chelsea.png");
    let predict = |lib: Option<&std::ffi::OsStr>| {
        let mut cmd = strix(&fx, tmp.path());
        cmd.env_remove("STRIX_BACKEND")
            .env_remove("ORT_DYLIB_PATH")
            .args(["predict", "--json", "--top-k", "1"])
            .arg(&photo);
        if let Some(lib) = lib {
            cmd.env("ORT_DYLIB_PATH", lib);
        }
        let (out, stdout, stderr) = run(&mut cmd);
        assert!(out.status.success(), "{stderr}");
        let answer: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        (answer, stderr)
    };
    let (without, said) = predict(None);
    assert!(said.contains("engine: tract (--backend auto:"), "{said}");
    let Some(lib) = crate::support::ort_library("--backend auto") else { return };
    let (with, said) = predict(Some(lib.as_os_str()));
    assert!(said.contains("engine: ort (--backend auto: ONNX Runtime from"), "{said}");
    assert!(said.contains("on onnxruntime"), "{said}");
    let label = |a: &Value| a["Labels"][0]["Name"].clone();
    assert!(label(&with).is_string(), "{with}");
    assert_eq!(label(&with), label(&without), "{with} vs {without}");
}
