//! A model's quality on what production sent it, once people have labelled it: accuracy and
//! macro-F1 against the figures it was registered with.

use std::collections::BTreeSet;

use serde::Serialize;

/// Accuracy and macro-F1 of `(truth, predicted)` class pairs. Macro-F1 averages the F1 of every
/// class that is a truth or a prediction (a class predicted but never true scores 0).
pub fn classification(pairs: &[(String, String)]) -> (f64, f64) {
    if pairs.is_empty() {
        return (0.0, 0.0);
    }
    let right = pairs.iter().filter(|(t, p)| t == p).count();
    let classes: BTreeSet<&String> = pairs.iter().flat_map(|(t, p)| [t, p]).collect();
    let f1: f64 = classes
        .iter()
        .map(|c| {
            let tp = pairs.iter().filter(|(t, p)| t == *c && p == *c).count() as f64;
            let predicted = pairs.iter().filter(|(_, p)| p == *c).count() as f64;
            let actual = pairs.iter().filter(|(t, _)| t == *c).count() as f64;
            if tp == 0.0 { 0.0 } else { 2.0 * tp / (predicted + actual) }
        })
        .sum();
    (right as f64 / pairs.len() as f64, f1 / classes.len() as f64)
}

/// One figure now against the version's validation figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figure {
    pub metric: &'static str,
    pub validation: f64,
    pub current: f64,
    /// Validation minus current.
    pub drop: f64,
    pub max_drop: f64,
    pub violation: bool,
}

impl Figure {
    pub fn new(metric: &'static str, validation: f64, current: f64, max_drop: f64) -> Figure {
        let drop = validation - current;
        Figure { metric, validation, current, drop, max_drop, violation: drop > max_drop }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(t, p)| (t.to_string(), p.to_string())).collect()
    }

    #[test]
    fn accuracy_and_macro_f1_match_scikit_learn() {
        // scikit-learn's accuracy_score 0.6 and f1_score(average="macro") 4/9: F1 of a = 4/6,
        // of b = 2/3, of c (true once, never predicted) = 0.
        let p = pairs(&[("a", "a"), ("a", "a"), ("a", "b"), ("b", "b"), ("c", "a")]);
        let (acc, f1) = classification(&p);
        assert!((acc - 0.6).abs() < 1e-12);
        assert!((f1 - 4.0 / 9.0).abs() < 1e-12, "{f1}");
        assert_eq!(classification(&[]), (0.0, 0.0));
        let f = Figure::new("accuracy", 0.9, 0.8, 0.05);
        assert!(f.violation && (f.drop - 0.1).abs() < 1e-12);
        assert!(!Figure::new("accuracy", 0.9, 0.88, 0.05).violation);
    }
}
