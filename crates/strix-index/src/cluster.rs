//! k-means on unit vectors: k-means++ seeding, then Lloyd's iterations; the number of clusters
//! chosen by the silhouette when not given. Squared Euclidean distance on unit vectors is
//! 2 - 2 cos, so these are clusters by cosine similarity.

use crate::vectors::dot;

/// A clustering of `n` vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct Clustering {
    pub k: usize,
    /// Cluster of each vector, 0..k.
    pub assignments: Vec<usize>,
    /// `k` x `d` centres.
    pub centres: Vec<f32>,
    /// Sum of squared distances to the centres.
    pub inertia: f64,
    pub iterations: usize,
}

/// A small deterministic generator (splitmix64): the same seed, the same clusters.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn distance2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y) * f64::from(x - y)).sum()
}

/// k-means with k-means++ seeding, at most `max_iterations` Lloyd steps.
pub fn kmeans(vectors: &[f32], d: usize, k: usize, seed: u64, max_iterations: usize) -> Clustering {
    let n = vectors.len() / d.max(1);
    if n == 0 {
        return Clustering { k: 0, assignments: Vec::new(), centres: Vec::new(), inertia: 0.0, iterations: 0 };
    }
    let k = k.clamp(1, n);
    let row = |i: usize| &vectors[i * d..(i + 1) * d];
    let mut rng = Rng(seed);
    let mut centres: Vec<f32> = Vec::with_capacity(k * d);
    centres.extend_from_slice(row((rng.next() % n.max(1) as u64) as usize));
    let mut nearest: Vec<f64> = (0..n).map(|i| distance2(row(i), &centres[..d])).collect();
    while centres.len() < k * d {
        // Each next centre drawn with probability proportional to its squared distance.
        let total: f64 = nearest.iter().sum();
        let pick = if total <= 0.0 {
            (rng.next() % n as u64) as usize
        } else {
            let mut target = rng.unit() * total;
            nearest
                .iter()
                .position(|&w| {
                    target -= w;
                    target <= 0.0
                })
                .unwrap_or(n - 1)
        };
        let start = centres.len();
        centres.extend_from_slice(row(pick));
        for (i, best) in nearest.iter_mut().enumerate() {
            *best = best.min(distance2(row(i), &centres[start..start + d]));
        }
    }
    let mut assignments = vec![usize::MAX; n];
    let mut iterations = 0;
    loop {
        let mut changed = false;
        for (i, slot) in assignments.iter_mut().enumerate() {
            let best = (0..k)
                .map(|c| (c, distance2(row(i), &centres[c * d..(c + 1) * d])))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(c, _)| c);
            changed |= *slot != best;
            *slot = best;
        }
        iterations += 1;
        if !changed || iterations >= max_iterations {
            break;
        }
        let mut sums = vec![0f64; k * d];
        let mut counts = vec![0usize; k];
        for (i, &c) in assignments.iter().enumerate() {
            counts[c] += 1;
            for (s, v) in sums[c * d..(c + 1) * d].iter_mut().zip(row(i)) {
                *s += f64::from(*v);
            }
        }
        for c in 0..k {
            // An emptied cluster keeps its centre (it may win points back).
            if counts[c] > 0 {
                for j in 0..d {
                    centres[c * d + j] = (sums[c * d + j] / counts[c] as f64) as f32;
                }
            }
        }
    }
    let inertia = assignments.iter().enumerate().map(|(i, &c)| distance2(row(i), &centres[c * d..(c + 1) * d])).sum();
    Clustering { k, assignments, centres, inertia, iterations }
}

/// Mean silhouette (-1 to 1; higher: tighter, better separated clusters), by cosine distance,
/// over at most `sample` vectors (every vector compared with every other costs n^2).
pub fn silhouette(vectors: &[f32], d: usize, assignments: &[usize], k: usize, sample: usize) -> f64 {
    let n = assignments.len();
    if k < 2 || n < 3 {
        return 0.0;
    }
    let step = n.div_ceil(sample.max(1)).max(1);
    let chosen: Vec<usize> = (0..n).step_by(step).collect();
    let row = |i: usize| &vectors[i * d..(i + 1) * d];
    let mut total = 0.0;
    for &i in &chosen {
        let mut sum = vec![0f64; k];
        let mut count = vec![0usize; k];
        for &j in &chosen {
            if i != j {
                sum[assignments[j]] += f64::from(1.0 - dot(row(i), row(j)));
                count[assignments[j]] += 1;
            }
        }
        let own = assignments[i];
        if count[own] == 0 {
            continue; // a cluster of one scores 0
        }
        let a = sum[own] / count[own] as f64;
        let b = (0..k)
            .filter(|&c| c != own && count[c] > 0)
            .map(|c| sum[c] / count[c] as f64)
            .fold(f64::INFINITY, f64::min);
        if b.is_finite() {
            total += (b - a) / a.max(b).max(1e-12);
        }
    }
    total / chosen.len() as f64
}

/// [`kmeans`] from `restarts` seeds (`seed`, `seed + 1`, ...), the lowest inertia kept
/// (scikit-learn's `n_init`): one unlucky seeding can merge two groups and split a third.
pub fn kmeans_restarts(vectors: &[f32], d: usize, k: usize, seed: u64, restarts: usize) -> Clustering {
    (0..restarts.max(1) as u64)
        .map(|r| kmeans(vectors, d, k, seed.wrapping_add(r), 100))
        .min_by(|a, b| a.inertia.total_cmp(&b.inertia))
        .unwrap_or_else(|| kmeans(vectors, d, k, seed, 100))
}

/// The clustering with the best silhouette for k in `ks` (each from `restarts` seedings), with
/// every k's score.
pub fn best_k(
    vectors: &[f32],
    d: usize,
    ks: std::ops::RangeInclusive<usize>,
    seed: u64,
    restarts: usize,
) -> (Clustering, Vec<(usize, f64)>) {
    let mut scores = Vec::new();
    let mut best: Option<(f64, Clustering)> = None;
    for k in ks {
        let c = kmeans_restarts(vectors, d, k, seed, restarts);
        let s = silhouette(vectors, d, &c.assignments, c.k, 2000);
        scores.push((c.k, s));
        if best.as_ref().is_none_or(|(b, _)| s > *b) {
            best = Some((s, c));
        }
    }
    let (_, clustering) = best.unwrap_or_else(|| (0.0, kmeans(vectors, d, 1, seed, 100)));
    (clustering, scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three tight groups on the unit circle (in 4-d), 20 points each.
    fn blobs() -> (Vec<f32>, Vec<usize>) {
        let mut rng = Rng(3);
        let centres = [[1.0f32, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]];
        let (mut v, mut truth) = (Vec::new(), Vec::new());
        for i in 0..60 {
            let c = i % 3;
            let p: Vec<f32> = centres[c].iter().map(|x| x + (rng.unit() as f32 - 0.5) * 0.2).collect();
            v.extend(crate::unit(&p).unwrap());
            truth.push(c);
        }
        (v, truth)
    }

    #[test]
    fn three_blobs_are_found_and_k_is_chosen_by_silhouette() {
        let (v, truth) = blobs();
        let (c, scores) = best_k(&v, 4, 2..=6, 1, 3);
        assert_eq!(c.k, 3, "{scores:?}");
        // Same partition as the truth, whatever the cluster numbers.
        for i in 0..60 {
            for j in 0..60 {
                assert_eq!(truth[i] == truth[j], c.assignments[i] == c.assignments[j]);
            }
        }
        assert!(scores.iter().find(|s| s.0 == 3).unwrap().1 > 0.8, "{scores:?}");
        assert_eq!(kmeans(&v, 4, 3, 1, 100), kmeans(&v, 4, 3, 1, 100), "repeatable");
        let restarted = kmeans_restarts(&v, 4, 3, 1, 4);
        assert!((1..5).all(|s| restarted.inertia <= kmeans(&v, 4, 3, s, 100).inertia));
        // More clusters than points: one per point; nothing to cluster: no clusters.
        assert_eq!(kmeans(&v[..8], 4, 5, 1, 100).k, 2);
        assert_eq!(kmeans(&[], 4, 3, 1, 100).k, 0);
    }
}
