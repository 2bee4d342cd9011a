//! Maximum mean discrepancy between two sets of vectors, with a permutation test: alibi-detect's
//! `MMDDrift` (Gaussian RBF kernel, its bandwidth from the reference's pairwise distances by the
//! median heuristic, unbiased MMD², p-value from permutations of the pooled vectors).

/// Most vectors of a window the test takes (evenly spaced): the kernel matrix grows with the
/// square of the vectors.
pub const MAX_CURRENT: usize = 2000;

/// `(mmd², p-value)` of `current` against `reference` (each `n x d`, row-major), with
/// `permutations` shuffles drawn from `seed`. Vectors with a value that is not finite are left
/// out; a window beyond [`MAX_CURRENT`] vectors is thinned to it.
pub fn mmd_test(reference: &[f32], current: &[f32], d: usize, permutations: usize, seed: u64) -> (f64, f64) {
    if d == 0 {
        return (0.0, 1.0);
    }
    let finite = |v: &&[f32]| v.iter().all(|x| x.is_finite());
    let reference: Vec<&[f32]> = reference.chunks_exact(d).filter(finite).collect();
    let current: Vec<&[f32]> = current.chunks_exact(d).filter(finite).collect();
    let step = current.len().div_ceil(MAX_CURRENT).max(1);
    let current: Vec<&[f32]> = current.into_iter().step_by(step).collect();
    let (n, m) = (reference.len(), current.len());
    if n < 2 || m < 2 {
        return (0.0, 1.0);
    }
    let pooled: Vec<&[f32]> = reference.into_iter().chain(current).collect();
    let total = pooled.len();
    let mut dist = vec![0.0f64; total * total];
    for i in 0..total {
        for j in i + 1..total {
            let s: f64 = pooled[i].iter().zip(pooled[j]).map(|(a, b)| f64::from(a - b).powi(2)).sum();
            dist[i * total + j] = s;
            dist[j * total + i] = s;
        }
    }
    // alibi-detect's sigma_median on the reference against itself (the bandwidth is fixed by
    // the baseline, not by the window): half the median of its pairwise squared distances.
    let mut within: Vec<f64> =
        (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))).map(|(i, j)| dist[i * total + j]).collect();
    within.sort_by(f64::total_cmp);
    let median = within[(within.len() / 2).saturating_sub(1)];
    let sigma2 = (0.5 * median).max(f64::MIN_POSITIVE);
    let kernel: Vec<f64> = dist.iter().map(|d2| (-d2 / (2.0 * sigma2)).exp()).collect();
    let observed = mmd2(&kernel, total, &(0..total).collect::<Vec<_>>(), n);
    let mut order: Vec<usize> = (0..total).collect();
    let mut rng = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut at_least = 0usize;
    for _ in 0..permutations {
        for i in (1..total).rev() {
            let j = (crate::splitmix(&mut rng) % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        if mmd2(&kernel, total, &order, n) >= observed {
            at_least += 1;
        }
    }
    (observed, at_least as f64 / permutations.max(1) as f64)
}

/// Unbiased MMD² with the first `n` of `order` as one set and the rest as the other (the
/// diagonal left out).
fn mmd2(kernel: &[f64], total: usize, order: &[usize], n: usize) -> f64 {
    let m = total - n;
    let k = |a: usize, b: usize| kernel[order[a] * total + order[b]];
    let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
    for a in 0..total {
        for b in 0..total {
            if a == b {
                continue;
            }
            match (a < n, b < n) {
                (true, true) => xx += k(a, b),
                (false, false) => yy += k(a, b),
                (false, true) => xy += k(a, b),
                (true, false) => {}
            }
        }
    }
    xx / (n * (n - 1)) as f64 + yy / (m * (m - 1)) as f64 - 2.0 * xy / (n * m) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud(n: usize, d: usize, shift: f32, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n * d).map(|_| (crate::splitmix(&mut s) as f64 / u64::MAX as f64) as f32 + shift).collect()
    }

    #[test]
    fn the_same_cloud_passes_and_a_shifted_one_fails() {
        let (reference, same, moved) = (cloud(60, 8, 0.0, 1), cloud(60, 8, 0.0, 2), cloud(60, 8, 0.3, 3));
        let (_, p_same) = mmd_test(&reference, &same, 8, 100, 7);
        let (stat, p_moved) = mmd_test(&reference, &moved, 8, 100, 7);
        assert!(p_same > 0.05, "{p_same}");
        assert!(p_moved < 0.01 && stat > 0.0, "{p_moved} {stat}");
    }
}
