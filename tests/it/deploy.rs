//! deploy/: the Kubernetes manifests valid against Kubernetes' own schemas (offline, through
//! PyPI's kubernetes-validate), KEDA's trigger on the queue's real consumer, and every `strix`
//! command line in them accepted by this binary's argument parser.

use std::path::Path;
use std::process::Command;

use crate::support;

#[test]
fn the_manifests_are_valid_and_every_strix_command_in_them_is_accepted() {
    let Some(python) = support::python() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let queue = strix_jobs::QueueSettings::default();
    let out = Command::new(python)
        .arg(root.join("tests/it/deploy_check.py"))
        .arg(root.join("deploy"))
        .args([&queue.stream, &queue.consumer])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let commands: Vec<Vec<String>> =
        lines.iter().filter(|l| l.is_array()).map(|l| serde_json::from_value(l.clone()).unwrap()).collect();
    // The workers' queue settings are Strix's, on all three NATS servers.
    let configs: Vec<&str> = lines.iter().filter_map(|l| l["queue.toml"].as_str()).collect();
    assert_eq!(configs.len(), 1, "{lines:?}");
    let settings: strix_jobs::QueueSettings = toml::from_str(configs[0]).unwrap();
    settings.validate().unwrap();
    assert_eq!(settings.replicas, 3);
    let subcommands: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(subcommands, ["serve", "worker"], "{commands:?}");
    for args in &commands {
        // Flags and values are checked as they are met, before --help is acted on.
        let o = Command::new(env!("CARGO_BIN_EXE_strix")).args(args).arg("--help").output().unwrap();
        assert!(o.status.success(), "strix {args:?} is refused: {}", String::from_utf8_lossy(&o.stderr));
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_strix")).args(["worker", "--jobs", "none", "--help"]).output();
    assert!(!refused.unwrap().status.success(), "the check would pass anything");

    // The image ships the ONNX Runtime the tests run, built by the Rust the workspace names.
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    let setup = std::fs::read_to_string(root.join("scripts/setup")).unwrap();
    let ort = setup.split("ORT_VERSION:-").nth(1).and_then(|s| s.split('}').next()).unwrap();
    assert!(dockerfile.contains(&format!("ARG ORT_VERSION={ort}")), "Dockerfile's onnxruntime is not {ort}");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let rust = manifest.split("rust-version = \"").nth(1).and_then(|s| s.split('"').next()).unwrap();
    assert!(dockerfile.contains(&format!("FROM rust:{rust}-")), "Dockerfile's Rust is not {rust}");
}
