//! The Open Inference Protocol (KServe v2) on `strix serve`: NVIDIA's tritonclient, unchanged,
//! gets onnxruntime's reference logits for EfficientNet-Lite0 on both backends (JSON and
//! binary tensors); bad tensors get a 400 with the protocol's `{"error": "..."}`.

use serde_json::{Value, json};

use crate::fixtures_or_skip;
use crate::serve::request;
use crate::support::{backends, python, run, spawn_serve, strix};

#[test]
fn tritonclient_gets_the_reference_logits_and_bad_tensors_a_v2_error() {
    let fx = fixtures_or_skip!();
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let reference = fx.join("reference");
    for backend in backends() {
        let (mut child, port) = spawn_serve(strix(&fx, tmp.path()).args([
            "serve",
            "--model",
            "efficientnet_lite0",
            "--backend",
            backend.as_str(),
        ]));
        let (out, stdout, stderr) = run(std::process::Command::new(&python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/it/kserve_client.py"))
            .arg(format!("127.0.0.1:{port}"))
            .arg("efficientnet_lite0")
            .arg(reference.join("efficientnet_lite0__chelsea__input.npy"))
            .arg(reference.join("efficientnet_lite0__chelsea__logits.npy")));
        assert!(out.status.success(), "{backend}: {stderr}");
        let report: Value = serde_json::from_str(stdout.trim()).unwrap();
        eprintln!("{backend}: tritonclient max |diff| {}", report["max_diff"]);
        assert_eq!(
            (&report["live"], &report["ready"], &report["model_ready"]),
            (&json!(true), &json!(true), &json!(true))
        );
        assert_eq!(
            report["metadata"]["inputs"][0],
            json!({"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224]})
        );
        for (how, diff) in report["max_diff"].as_object().unwrap() {
            assert!(diff.as_f64().unwrap() <= 1e-4, "{backend} {how}: max |diff| {diff}");
        }
        let shape = &report["errors"]["shape"];
        assert_eq!(shape["status"], "400", "{shape}");
        assert!(shape["message"].as_str().unwrap().contains("does not fit the model's [1, 3, 224, 224]"), "{shape}");
        assert!(report["errors"]["datatype"]["message"].as_str().unwrap().contains("INT32 but the model takes FP32"));

        // Raw requests: too few values, an unknown input, malformed JSON, an unknown model.
        let infer = |body: &str| {
            request(
                port,
                "POST",
                "/v2/models/efficientnet_lite0/infer",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            )
        };
        let cases = [
            (
                r#"{"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32", "data": [1, 2, 3]}]}"#,
                "holds 150528 values but 3 were given",
            ),
            (
                r#"{"inputs": [{"name": "pixels", "shape": [1], "datatype": "FP32", "data": [1]}]}"#,
                "unknown input \"pixels\"; the model takes input",
            ),
            (
                r#"{"inputs": [{"name": "input", "shape": [1, 3, 224, -224], "datatype": "FP32", "data": []}]}"#,
                "negative dimension",
            ),
            (r#"{"inputs": []}"#, "input \"input\" is missing"),
            (r#"{"inputs": "#, "malformed inference request"),
        ];
        for (body, needle) in cases {
            let reply = infer(body);
            assert_eq!(reply.status, 400, "{body}: {}", reply.body);
            let message = reply.json()["error"].as_str().unwrap_or_default().to_string();
            assert!(message.contains(needle), "{body}: {message}");
        }
        // The versioned routes name the version served (not a registry model: "1").
        assert_eq!(request(port, "GET", "/v2/models/efficientnet_lite0/versions/1/ready", &[], b"").status, 200);
        assert_eq!(request(port, "GET", "/v2/models/efficientnet_lite0/versions/7/ready", &[], b"").status, 404);
        let missing = request(port, "GET", "/v2/models/nope/ready", &[], b"");
        assert_eq!(missing.status, 404);
        assert!(missing.json()["error"].as_str().unwrap().contains("no model called \"nope\""));
        // The server kept serving through the bad requests.
        assert_eq!(request(port, "GET", "/v2/health/ready", &[], b"").json(), json!({"ready": true}));
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Issue 31: tensors nested to the wrong depth or with ragged rows were accepted, `1e39`
/// became infinity (and the answer `null`s), a `text/plain` body was read, and PP-OCR's
/// detector given a zero or unusable dimension answered 500. Each is a 400 naming the problem,
/// with the model's shape written as the protocol does (`-1`), never the graph's dimension names.
#[test]
fn malformed_tensors_and_unusable_dimensions_get_a_400_naming_the_problem() {
    let fx = fixtures_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    for backend in backends() {
        let (mut child, port) =
            spawn_serve(strix(&fx, tmp.path()).args(["serve", "--model", "ppocrv4", "--backend", backend.as_str()]));
        let infer = |content_type: &str, shape: &[usize], data: Value| {
            let body = json!({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": data}]});
            let reply = request(
                port,
                "POST",
                "/v2/models/ppocrv4/infer",
                &[("Content-Type", content_type)],
                body.to_string().as_bytes(),
            );
            let message = reply.json()["error"].as_str().unwrap_or_default().to_string();
            (reply.status, message)
        };
        let values = |n: usize| json!(vec![0.5; n]);
        let rows = |h: usize, w: usize| json!([(0..3).map(|_| vec![vec![0.5; w]; h]).collect::<Vec<_>>()]);
        let mut ragged = rows(32, 32);
        ragged[0][1][5] = json!(vec![0.5; 31]);
        let mut huge = values(3 * 32 * 32);
        huge[7] = json!(1e39);
        let cases = [
            ("application/json", vec![1, 3, 32, 32], ragged, "data[0][1][5] has 31 items where the shape has 32"),
            (
                "application/json",
                vec![1, 3, 32, 32],
                json!([rows(32, 32)]),
                "data[0] has 1 items where the shape has 3",
            ),
            ("application/json", vec![1, 3, 32, 32], huge, "1e+39 is outside the FP32 range"),
            ("text/plain", vec![1, 3, 32, 32], values(3 * 32 * 32), "Content-Type \"text/plain\""),
            ("application/json", vec![1, 3, 0, 32], json!([]), "every dimension must be at least 1"),
            ("application/json", vec![1, 3, 33, 47], values(3 * 33 * 47), "shape [1, 3, 33, 47]"),
        ];
        for (content_type, shape, data, needle) in cases {
            let (status, message) = infer(content_type, &shape, data);
            assert_eq!(status, 400, "{backend} {shape:?} {needle}: {message}");
            assert!(message.contains(needle), "{backend} {shape:?}: {message}");
            assert!(message.contains("[-1, 3, -1, -1]") || !message.contains("the model takes"), "{message}");
            assert!(!message.contains("p2o") && !message.contains("internal"), "{backend}: {message}");
        }
        // Flat and properly nested data are both read.
        for data in [values(3 * 32 * 32), rows(32, 32)] {
            assert_eq!(infer("application/json", &[1, 3, 32, 32], data).0, 200, "{backend}");
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
