//! Strix's TPE against Optuna's own, on the functions of `optuna_reference.py` (run by the
//! project's Python, which `./scripts/setup` gives Optuna): 50 trials, the median best over 100
//! seeds within 10% of Optuna's, and both better than random search. Without that Python the
//! test skips, except under CI=true, where it fails. Test code throughout, so it may read the
//! environment.
#![cfg(test)]

use std::path::PathBuf;

use crate::testfns::{BRANIN, SPHERE5, best_of, median};
use crate::{RandomSampler, TpeSampler};

const SEEDS: u64 = 100;

fn python() -> Option<PathBuf> {
    let venv = std::env::var_os("STRIX_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
    let python = venv.join("bin/python");
    let has_optuna = python.is_file()
        && std::process::Command::new(&python).args(["-c", "import optuna"]).output().is_ok_and(|o| o.status.success());
    if has_optuna {
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and no Optuna in {} (./scripts/setup)",
        python.display()
    );
    eprintln!("skipped: no Optuna in {}", python.display());
    None
}

#[test]
fn strix_tpe_is_within_ten_percent_of_optunas_and_both_beat_random_search() {
    let Some(python) = python() else { return };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("optuna_reference.py");
    // Optuna runs beside Strix's own studies.
    let optuna = std::process::Command::new(python)
        .arg(script)
        .args(["--seeds", &SEEDS.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ours: Vec<(f64, f64)> = [&BRANIN, &SPHERE5]
        .iter()
        .map(|bench| {
            let space = bench.space();
            let tpe = (0..SEEDS).map(|s| best_of(&space, &mut TpeSampler::with_seed(s), 50, bench.f)).collect();
            let random = (0..SEEDS).map(|s| best_of(&space, &mut RandomSampler::new(s), 50, bench.f)).collect();
            (median(tpe), median(random))
        })
        .collect();
    let out = optuna.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let optuna: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (bench, (tpe, random)) in [&BRANIN, &SPHERE5].into_iter().zip(ours) {
        let theirs = |sampler: &str| {
            let bests: Vec<f64> =
                optuna[bench.name][sampler].as_array().unwrap().iter().filter_map(|v| v.as_f64()).collect();
            assert_eq!(bests.len() as u64, SEEDS);
            median(bests)
        };
        let (optuna_tpe, optuna_random) = (theirs("tpe"), theirs("random"));
        let line = format!(
            "{}: median best of {SEEDS} seeds x 50 trials: strix tpe {tpe:.4}, optuna tpe {optuna_tpe:.4}, strix random {random:.4}, optuna random {optuna_random:.4}",
            bench.name
        );
        println!("{line}");
        assert!(tpe <= 1.10 * optuna_tpe, "{line}");
        assert!(tpe < random && optuna_tpe < optuna_random, "{line}");
    }
}
