//! Stratified, seeded splits: every class is divided in the same proportions.

use crate::rng::Rng;

/// Split item indices by `fractions` (e.g. `[0.1, 0.1]` for val and test), class by class;
/// the last part returned holds the rest. Each class with at least `parts` images puts at
/// least one in every part whose fraction is non-zero, so small classes are not missing from
/// validation. Deterministic for a seed.
pub fn stratified(labels: &[usize], fractions: &[f64], seed: u64) -> Vec<Vec<usize>> {
    let n_classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut parts = vec![Vec::new(); fractions.len() + 1];
    for class in 0..n_classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        Rng::derive(seed, &[0x5350_4c54, class as u64]).shuffle(&mut members);
        let n = members.len();
        let mut start = 0;
        for (p, &f) in fractions.iter().enumerate() {
            let mut take = (f * n as f64).round() as usize;
            if take == 0 && f > 0.0 && n > fractions.len() {
                take = 1;
            }
            let take = take.min(n - start);
            parts[p].extend_from_slice(&members[start..start + take]);
            start += take;
        }
        parts[fractions.len()].extend_from_slice(&members[start..]);
    }
    for p in &mut parts {
        p.sort_unstable();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportions_per_class_disjoint_and_seeded() {
        let labels: Vec<usize> = (0..1000).map(|i| if i < 900 { 0 } else { 1 + i % 2 }).collect();
        let parts = stratified(&labels, &[0.1, 0.2], 42);
        let count = |p: &Vec<usize>, c| p.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!((count(&parts[0], 0), count(&parts[1], 0), count(&parts[2], 0)), (90, 180, 630));
        assert_eq!((count(&parts[0], 1), count(&parts[1], 1)), (5, 10));
        let mut all: Vec<usize> = parts.concat();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(parts, stratified(&labels, &[0.1, 0.2], 42));
        assert_ne!(parts[0], stratified(&labels, &[0.1, 0.2], 43)[0]);
    }

    #[test]
    fn tiny_class_still_reaches_validation() {
        let labels = vec![0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
        let parts = stratified(&labels, &[0.1], 1);
        assert!(parts[0].iter().any(|&i| labels[i] == 0));
    }
}
