//! Two-sample tests and distances for drift: Kolmogorov-Smirnov and chi-squared with p-values,
//! normalised Wasserstein and Jensen-Shannon as distances, as Evidently and alibi-detect compute
//! them through scipy. The unit tests hold scipy 1.17's answers.

use std::collections::BTreeMap;

/// Two-sided two-sample Kolmogorov-Smirnov: the statistic and its p-value. While both samples
/// have at most 10,000 values the p-value is exact, as `scipy.stats.ks_2samp` gives it; beyond,
/// it is Kolmogorov's limit, where scipy takes `kstwo` at round(mn / (m + n)) (within 1% at
/// 20,000 against 15,000). NaN values must be left out by the caller.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (m, n) = (a.len(), b.len());
    if m == 0 || n == 0 {
        return (0.0, 1.0);
    }
    let (mut x, mut y) = (a.to_vec(), b.to_vec());
    x.sort_by(f64::total_cmp);
    y.sort_by(f64::total_cmp);
    // The statistic as a whole number of 1/(m n): the largest |i n - j m| over the values, with
    // i and j the counts at or below each value (ties step together).
    let (mut i, mut j, mut h) = (0usize, 0usize, 0u64);
    while i < m || j < n {
        let v = match (x.get(i), y.get(j)) {
            (Some(&p), Some(&q)) => p.min(q),
            (Some(&p), None) => p,
            (None, Some(&q)) => q,
            (None, None) => break,
        };
        while i < m && x[i] <= v {
            i += 1;
        }
        while j < n && y[j] <= v {
            j += 1;
        }
        h = h.max((i as i128 * n as i128 - j as i128 * m as i128).unsigned_abs() as u64);
    }
    let d = h as f64 / (m as f64 * n as f64);
    let p =
        if m.max(n) <= 10_000 { exact_p(m, n, h) } else { kolmogorov_sf(d * ((m * n) as f64 / (m + n) as f64).sqrt()) };
    (d, p.clamp(0.0, 1.0))
}

/// P(D >= h / (m n)) under the null: one minus the share of the lattice paths from (0, 0) to
/// (m, n) that keep |i n - j m| < h at every point. Each point holds its share of the paths that
/// reach it, so nothing overflows.
fn exact_p(m: usize, n: usize, h: u64) -> f64 {
    let inside = |i: usize, j: usize| ((i as i128 * n as i128 - j as i128 * m as i128).unsigned_abs() as u64) < h;
    let mut row = vec![0.0f64; n + 1];
    for i in 0..=m {
        for j in 0..=n {
            row[j] = if !inside(i, j) {
                0.0
            } else if i == 0 && j == 0 {
                1.0
            } else {
                let t = (i + j) as f64;
                let from_up = if i > 0 { row[j] * i as f64 / t } else { 0.0 };
                let from_left = if j > 0 { row[j - 1] * j as f64 / t } else { 0.0 };
                from_up + from_left
            };
        }
    }
    1.0 - row[n]
}

/// The Kolmogorov distribution's survival function (scipy's `kstwobign.sf`).
fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 1.0 {
        // The cdf's theta-function form converges fast for small x.
        let c = -std::f64::consts::PI.powi(2) / (8.0 * x * x);
        let s: f64 = (1..=20).map(|k| ((2 * k - 1) as f64).powi(2) * c).map(f64::exp).sum();
        return 1.0 - (2.0 * std::f64::consts::PI).sqrt() / x * s;
    }
    let s: f64 = (1..=100).map(|k| (-1f64).powi(k + 1) * (-2.0 * (k as f64).powi(2) * x * x).exp()).sum();
    (2.0 * s).clamp(0.0, 1.0)
}

/// Chi-squared test of homogeneity between two samples of categories (the 2 x k contingency
/// table, `scipy.stats.chi2_contingency` as alibi-detect's `ChiSquareDrift` calls it, Yates'
/// correction at one degree of freedom): `(statistic, p-value)`. A category only one sample has
/// adds to the statistic in proportion to its count, where comparing against the reference's
/// proportions (Evidently's `chisquare`) would make it infinite.
pub fn chi_squared(reference: &BTreeMap<String, u64>, current: &BTreeMap<String, u64>) -> (f64, f64) {
    let (nr, nc) = (reference.values().sum::<u64>() as f64, current.values().sum::<u64>() as f64);
    let count = |m: &BTreeMap<String, u64>, k: &String| m.get(k).copied().unwrap_or(0);
    // Categories neither sample has (zero counts) would be 0 / 0.
    let keys: std::collections::BTreeSet<&String> =
        reference.keys().chain(current.keys()).filter(|k| count(reference, k) + count(current, k) > 0).collect();
    let dof = keys.len().saturating_sub(1);
    if nr == 0.0 || nc == 0.0 || dof == 0 {
        return (0.0, 1.0);
    }
    let total = nr + nc;
    let mut stat = 0.0;
    for k in &keys {
        let (r, c) = (count(reference, k) as f64, count(current, k) as f64);
        let column = r + c;
        for (observed, row) in [(r, nr), (c, nc)] {
            let expected = row * column / total;
            // Yates: each difference moved half a count towards zero, never past it.
            let diff = (observed - expected).abs();
            let diff = if dof == 1 { (diff - 0.5).max(0.0) } else { diff };
            stat += diff * diff / expected;
        }
    }
    (stat, gamma_q(dof as f64 / 2.0, stat / 2.0))
}

/// The regularised upper incomplete gamma function Q(a, x) (the chi-squared survival function
/// is Q(k/2, x/2)): a series below a + 1, a continued fraction above.
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let log_prefix = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        return (1.0 - sum * log_prefix.exp()).clamp(0.0, 1.0);
    }
    // Lentz's method.
    let tiny = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / tiny;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..1000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < tiny {
            d = tiny;
        }
        c = b + an / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (log_prefix.exp() * h).clamp(0.0, 1.0)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let s = G[0] + (1..9).map(|i| G[i] / (x + i as f64)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

/// The 1-D Wasserstein (earth mover's) distance divided by the reference's standard deviation
/// (at least 0.001), Evidently's `wasserstein` test for large samples.
pub fn wasserstein_normed(reference: &[f64], current: &[f64]) -> f64 {
    if reference.is_empty() || current.is_empty() {
        return 0.0;
    }
    let (mut u, mut v) = (reference.to_vec(), current.to_vec());
    u.sort_by(f64::total_cmp);
    v.sort_by(f64::total_cmp);
    let mut all: Vec<f64> = u.iter().chain(&v).copied().collect();
    all.sort_by(f64::total_cmp);
    let (mut i, mut j, mut area) = (0usize, 0usize, 0.0);
    for w in all.windows(2) {
        while i < u.len() && u[i] <= w[0] {
            i += 1;
        }
        while j < v.len() && v[j] <= w[0] {
            j += 1;
        }
        area += (i as f64 / u.len() as f64 - j as f64 / v.len() as f64).abs() * (w[1] - w[0]);
    }
    let mean = u.iter().sum::<f64>() / u.len() as f64;
    let sd = (u.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / u.len() as f64).sqrt();
    area / sd.max(0.001)
}

/// The Jensen-Shannon distance (natural logarithm; the square root of the divergence) between
/// two categorical distributions given as counts, Evidently's test for large samples.
pub fn jensen_shannon(reference: &BTreeMap<String, u64>, current: &BTreeMap<String, u64>) -> f64 {
    let (nr, nc) = (reference.values().sum::<u64>() as f64, current.values().sum::<u64>() as f64);
    if nr == 0.0 || nc == 0.0 {
        return 0.0;
    }
    let keys: std::collections::BTreeSet<&String> = reference.keys().chain(current.keys()).collect();
    let kl = |p: f64, q: f64| if p > 0.0 { p * (p / q).ln() } else { 0.0 };
    let mut divergence = 0.0;
    for k in keys {
        let p = reference.get(k).copied().unwrap_or(0) as f64 / nr;
        let q = current.get(k).copied().unwrap_or(0) as f64 / nc;
        let mid = (p + q) / 2.0;
        divergence += (kl(p, mid) + kl(q, mid)) / 2.0;
    }
    divergence.max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, rel: f64) {
        assert!((got - want).abs() <= rel * want.abs().max(1e-12), "got {got}, scipy {want}");
    }

    /// A repeatable spread of values: x_k = frac(k * golden ratio) scaled and shifted.
    fn spread(n: usize, scale: f64, shift: f64) -> Vec<f64> {
        (1..=n).map(|k| ((k as f64 * 0.618_033_988_749_895) % 1.0) * scale + shift).collect()
    }

    #[test]
    fn ks_matches_scipy() {
        // scipy.stats.ks_2samp([1, 2, 3, 4, 5], [3, 4, 5, 6, 7, 8]) -> (0.5, 0.35714285714285715)
        let (d, p) = ks_2samp(&[1.0, 2.0, 3.0, 4.0, 5.0], &[3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        close(d, 0.5, 1e-12);
        close(p, 0.357_142_857_142_857_15, 1e-9);
        // Equal sizes, the same values: D = 0, p = 1.
        assert_eq!(ks_2samp(&[1.0, 2.0], &[2.0, 1.0]), (0.0, 1.0));
        // spread(400, 1, 0) against spread(300, 1, 0.1), as arrays in the same order:
        // scipy: statistic 0.10583333333333333, pvalue 0.0403210871433994 (exact)
        let (d, p) = ks_2samp(&spread(400, 1.0, 0.0), &spread(300, 1.0, 0.1));
        close(d, 0.105_833_333_333_333_33, 1e-12);
        close(p, 0.040_321_087_143_399_4, 1e-9);
        // Past 10,000 values, Kolmogorov's limit: scipy (kstwo at round(en)) gives
        // (0.0102, 0.33228557638279965); the limit is within 1% of it.
        let (d, p) = ks_2samp(&spread(20_000, 1.0, 0.0), &spread(15_000, 1.0, 0.01));
        close(d, 0.0102, 1e-9);
        close(p, 0.332_285_576_382_799_65, 1e-2);
    }

    #[test]
    fn kolmogorov_limit_matches_scipy() {
        // scipy.stats.kstwobign.sf([0.5, 1.0, 1.5])
        close(kolmogorov_sf(0.5), 0.963_945_243_664_875_1, 1e-9);
        close(kolmogorov_sf(1.0), 0.269_999_671_677_354_56, 1e-9);
        close(kolmogorov_sf(1.5), 0.022_217_962_616_525_127, 1e-9);
    }

    #[test]
    fn chi_squared_matches_scipy() {
        let counts = |v: &[(&str, u64)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect::<BTreeMap<_, _>>();
        // scipy.stats.chi2_contingency([[400, 400, 200], [30, 50, 20]])
        let (stat, p) =
            chi_squared(&counts(&[("a", 400), ("b", 400), ("c", 200)]), &counts(&[("a", 30), ("b", 50), ("c", 20)]));
        close(stat, 4.547_803_617_571_06, 1e-12);
        close(p, 0.102_909_861_107_468_82, 1e-9);
        // A category only the current sample has: chi2_contingency([[40, 30, 30, 0], [10, 12, 8, 1]])
        let (stat, p) = chi_squared(
            &counts(&[("a", 40), ("b", 30), ("c", 30)]),
            &counts(&[("a", 10), ("b", 12), ("c", 8), ("z", 1)]),
        );
        close(stat, 4.300_790_686_393_403, 1e-12);
        close(p, 0.230_762_566_705_273_9, 1e-9);
        // One degree of freedom, Yates' correction: chi2_contingency([[10, 0], [5, 1]])
        let (stat, p) = chi_squared(&counts(&[("a", 10)]), &counts(&[("a", 5), ("z", 1)]));
        close(stat, 0.071_111_111_111_111_11, 1e-12);
        close(p, 0.789_725_820_928_050_3, 1e-9);
        // scipy.stats.chi2.sf(3.0, 9), chi2.sf(60, 3)
        close(gamma_q(4.5, 1.5), 0.964_294_972_685_089_1, 1e-9);
        close(gamma_q(1.5, 30.0), 5.878_230_727_906_921e-13, 1e-6);
    }

    #[test]
    fn distances_match_scipy() {
        // scipy.stats.wasserstein_distance([0, 1, 3], [5, 6, 8]) / np.std([0, 1, 3])
        close(wasserstein_normed(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]), 4.008_918_628_686_366_5, 1e-12);
        // scipy.spatial.distance.jensenshannon([0.5, 0.5, 0], [0.25, 0.25, 0.5])
        let counts = |v: &[(&str, u64)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect::<BTreeMap<_, _>>();
        let js = jensen_shannon(&counts(&[("a", 2), ("b", 2)]), &counts(&[("a", 1), ("b", 1), ("c", 2)]));
        close(js, 0.464_501_404_022_459, 1e-9);
    }
}
