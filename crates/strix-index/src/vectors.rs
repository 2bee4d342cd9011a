//! Small vector arithmetic the index, its graph and k-means share.

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight running sums let the compiler vectorise the loop.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Keep the `k` best-scored, best first (ties by id, so answers are repeatable).
pub(crate) fn top_k(scored: &mut Vec<(u64, f32)>, k: usize) {
    let order = |a: &(u64, f32), b: &(u64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if scored.len() > k && k > 0 {
        scored.select_nth_unstable_by(k - 1, order);
        scored.truncate(k);
    }
    scored.truncate(k);
    scored.sort_by(order);
}

/// `v` scaled to unit length; refused when it has no direction or holds NaN or infinity.
pub fn unit(v: &[f32]) -> Result<Vec<f32>, String> {
    if v.iter().any(|x| !x.is_finite()) {
        return Err("it holds NaN or infinity".into());
    }
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm < 1e-12 {
        return Err("it is all zeros".into());
    }
    Ok(v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_best_first_and_dot_matches_naive() {
        let mut s = vec![(1, 0.2), (2, 0.9), (3, 0.5), (4, 0.9)];
        top_k(&mut s, 3);
        assert_eq!(s, vec![(2, 0.9), (4, 0.9), (3, 0.5)]);
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.05).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
        assert!(unit(&[0.0, 0.0]).is_err() && unit(&[f32::NAN]).is_err());
        assert_eq!(unit(&[3.0, 4.0]).unwrap(), vec![0.6, 0.8]);
    }
}
