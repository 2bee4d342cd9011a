//! A window of observations tested against a baseline, feature by feature.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::baseline::{Baseline, Observation};
use crate::stats;

/// One feature's test on one window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub feature: String,
    /// `ks`, `chi_squared`, `wasserstein`, `jensen_shannon`, `mmd` or `rate`.
    pub test: &'static str,
    pub statistic: f64,
    /// For the tests that give one.
    pub p_value: Option<f64>,
    /// The p-value below which (after the correction), or the distance above which, it drifted.
    pub threshold: f64,
    pub drift: bool,
    /// Values in the window and in the baseline's sample.
    pub current_count: usize,
    pub baseline_count: usize,
    /// Means (numeric) or shares per value (categorical), baseline then current, for reports.
    pub baseline_summary: serde_json::Value,
    pub current_summary: serde_json::Value,
}

/// Test `window` against `baseline`: every numeric feature both have, the predicted classes,
/// the decode failure rate, and the embeddings (when both have them). P-value tests share
/// alpha by Bonferroni when the constraints say so. `seed` draws the MMD permutations.
pub fn check_window(baseline: &Baseline, window: &[Observation], seed: u64) -> Vec<Check> {
    let (stats, limits) = (&baseline.statistics, &baseline.constraints);
    let skipped = |name: &str| limits.skip.iter().any(|s| s == name);
    let mut numeric: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    let mut vectors: Vec<f32> = Vec::new();
    for o in window {
        for (name, v) in o.numeric() {
            if v.is_finite() {
                numeric.entry(name).or_default().push(v);
            }
        }
        if let Some(c) = &o.class {
            *classes.entry(c.clone()).or_default() += 1;
        }
        if let (Some(v), Some(e)) = (&o.embedding, &stats.embeddings)
            && v.len() == e.dimensions
        {
            vectors.extend_from_slice(v);
        }
    }
    let mut out = Vec::new();
    for (name, current) in &numeric {
        let Some(base) = stats.numeric.get(*name).filter(|b| !b.sample.is_empty() && !skipped(name)) else { continue };
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let (test, statistic, p) = if current.len() <= limits.large_sample {
            let (d, p) = stats::ks_2samp(&base.sample, current);
            ("ks", d, Some(p))
        } else {
            ("wasserstein", stats::wasserstein_normed(&base.sample, current), None)
        };
        out.push(Check {
            feature: name.to_string(),
            test,
            statistic,
            p_value: p,
            threshold: if p.is_some() { limits.alpha } else { limits.wasserstein_threshold },
            drift: false,
            current_count: current.len(),
            baseline_count: base.sample.len(),
            baseline_summary: serde_json::json!({ "mean": base.mean, "std_dev": base.std_dev }),
            current_summary: serde_json::json!({ "mean": mean(current) }),
        });
    }
    if let Some(base) =
        stats.categorical.get("predicted_class").filter(|_| !classes.is_empty() && !skipped("predicted_class"))
    {
        let n: u64 = classes.values().sum();
        let (test, statistic, p) = if n as usize <= limits.large_sample {
            let (s, p) = stats::chi_squared(base, &classes);
            ("chi_squared", s, Some(p))
        } else {
            ("jensen_shannon", stats::jensen_shannon(base, &classes), None)
        };
        out.push(Check {
            feature: "predicted_class".into(),
            test,
            statistic,
            p_value: p,
            threshold: if p.is_some() { limits.alpha } else { limits.jensen_shannon_threshold },
            drift: false,
            current_count: n as usize,
            baseline_count: base.values().sum::<u64>() as usize,
            baseline_summary: shares(base),
            current_summary: shares(&classes),
        });
    }
    if let Some(e) = &stats.embeddings
        && vectors.len() >= 2 * e.dimensions
        && !skipped("embedding")
    {
        let (mmd2, p) =
            crate::mmd::mmd_test(&baseline.embeddings, &vectors, e.dimensions, limits.mmd_permutations, seed);
        out.push(Check {
            feature: "embedding".into(),
            test: "mmd",
            statistic: mmd2,
            p_value: Some(p),
            threshold: limits.alpha,
            drift: false,
            current_count: vectors.len() / e.dimensions,
            baseline_count: e.count,
            baseline_summary: serde_json::json!({ "vectors": e.count }),
            current_summary: serde_json::json!({ "vectors": vectors.len() / e.dimensions }),
        });
    }
    // Bonferroni: the p-value tests share alpha.
    let tests = out.iter().filter(|c| c.p_value.is_some()).count().max(1);
    let alpha = if limits.bonferroni { limits.alpha / tests as f64 } else { limits.alpha };
    for c in &mut out {
        match c.p_value {
            Some(p) => {
                c.threshold = alpha;
                c.drift = p < alpha;
            }
            None => c.drift = c.statistic > c.threshold,
        }
    }
    if !window.is_empty() && !skipped("decode_failures") {
        let failed = window.iter().filter(|o| o.properties.is_none()).count();
        let rate = failed as f64 / window.len() as f64;
        let base_rate = stats.decode_failures as f64 / stats.items.max(1) as f64;
        out.push(Check {
            feature: "decode_failures".into(),
            test: "rate",
            statistic: rate,
            p_value: None,
            threshold: limits.max_decode_failure_rate,
            drift: rate > limits.max_decode_failure_rate,
            current_count: window.len(),
            baseline_count: stats.items as usize,
            baseline_summary: serde_json::json!({ "rate": base_rate }),
            current_summary: serde_json::json!({ "rate": rate }),
        });
    }
    out
}

fn shares(counts: &BTreeMap<String, u64>) -> serde_json::Value {
    let n = counts.values().sum::<u64>().max(1) as f64;
    counts.iter().map(|(k, v)| (k.clone(), serde_json::json!(*v as f64 / n))).collect::<serde_json::Map<_, _>>().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{BaselineBuilder, Constraints};
    use crate::properties::ImageProperties;

    /// A repeatable normal-ish value: the mean of four uniform draws, centred, scaled to sd 1.
    fn normal(rng: &mut u64) -> f64 {
        let u: f64 = (0..4).map(|_| crate::splitmix(rng) as f64 / u64::MAX as f64).sum();
        (u - 2.0) / (4.0f64 / 12.0).sqrt()
    }

    fn observation(rng: &mut u64, brightness_shift: f64, class: &str) -> Observation {
        let mut v = || normal(rng);
        let properties = ImageProperties {
            brightness: 120.0 + 30.0 * (v() + brightness_shift),
            contrast: 50.0 + 10.0 * v(),
            sharpness: 300.0 + 80.0 * v(),
            colourfulness: 40.0 + 10.0 * v(),
            width: 640.0,
            height: 480.0,
            aspect_ratio: 640.0 / 480.0,
        };
        Observation {
            properties: Some(properties),
            class: Some(class.into()),
            confidence: Some(0.8 + 0.05 * v()),
            ..Observation::default()
        }
    }

    fn baseline(rng: &mut u64) -> Baseline {
        let mut b = BaselineBuilder::new(2000, 1);
        for i in 0..2000 {
            b.add(&observation(rng, 0.0, ["a", "b", "c"][i % 3])).unwrap();
        }
        let (statistics, embeddings) = b.finish("m", "classify", None);
        Baseline { statistics, constraints: Constraints::default(), embeddings }
    }

    #[test]
    fn same_windows_rarely_drift_and_a_shift_of_a_third_of_a_deviation_does() {
        let mut rng = 42;
        let base = baseline(&mut rng);
        let window = |rng: &mut u64, shift: f64| -> Vec<Observation> {
            (0..500).map(|i| observation(rng, shift, ["a", "b", "c"][i % 3])).collect()
        };
        let drifted =
            |checks: &[Check]| checks.iter().filter(|c| c.drift).map(|c| c.feature.clone()).collect::<Vec<_>>();
        let false_alarms =
            (0..30).filter(|s| !drifted(&check_window(&base, &window(&mut rng, 0.0), *s)).is_empty()).count();
        assert!(false_alarms <= 2, "{false_alarms} of 30 same-distribution windows raised a violation");
        let (mut caught, mut others) = (0, 0);
        for s in 0..30 {
            let d = drifted(&check_window(&base, &window(&mut rng, 0.3), s));
            caught += usize::from(d.iter().any(|f| f == "brightness"));
            others += usize::from(d.iter().any(|f| f != "brightness"));
        }
        eprintln!("false alarms {false_alarms} of 30; shift caught {caught} of 30, other features {others}");
        assert!(caught >= 29, "a 0.3 sd shift caught in {caught} of 30 windows");
        assert!(others <= 2, "other features flagged in {others} of 30 windows");
    }

    #[test]
    fn one_class_windows_and_undecodable_files_are_violations() {
        let mut rng = 7;
        let base = baseline(&mut rng);
        let one_class: Vec<Observation> = (0..200).map(|_| observation(&mut rng, 0.0, "a")).collect();
        let checks = check_window(&base, &one_class, 1);
        let class = checks.iter().find(|c| c.feature == "predicted_class").unwrap();
        assert!(class.drift && class.test == "chi_squared", "{class:?}");
        assert!(checks.iter().filter(|c| c.drift).count() == 1, "{checks:?}");
        let mut broken: Vec<Observation> =
            (0..90).map(|i| observation(&mut rng, 0.0, ["a", "b", "c"][i % 3])).collect();
        broken.extend((0..10).map(|_| Observation::default()));
        let checks = check_window(&base, &broken, 1);
        assert!(checks.iter().any(|c| c.feature == "decode_failures" && c.drift), "{checks:?}");
        // Past large_sample, distances take over.
        let big: Vec<Observation> = (0..1500).map(|i| observation(&mut rng, 0.0, ["a", "b", "c"][i % 3])).collect();
        let checks = check_window(&base, &big, 1);
        assert!(checks.iter().all(|c| c.test != "ks" && !c.drift), "{checks:?}");
    }
}
