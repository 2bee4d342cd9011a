//! Parzen estimators as Optuna's TPE builds them (`samplers/_tpe/parzen_estimator.py` and
//! `probability_distributions.py`): a weighted mixture with one kernel per observation plus a
//! prior kernel, each kernel a product over the parameters of a truncated normal (floats; ints
//! as the mass of the integer's unit bin) or a smoothed one-hot distribution (categoricals).
//!
//! Observations and samples are in the samplers' internal numbers (see
//! [`Param::to_internal`](crate::space::Param)): the value itself, or the choice's index.

use crate::rng::Rng;
use crate::space::Param;
use crate::truncnorm;

/// Optuna's kernel settings; the defaults are `TPESampler`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ParzenSettings {
    /// Weight of the prior kernel (a wide normal centred on the range, uniform over choices).
    pub prior_weight: f64,
    /// Floor each bandwidth at range / min(100, kernels + 1) so few observations do not make
    /// needle-thin kernels.
    pub consider_magic_clip: bool,
    /// Let the outermost kernels reach to the bounds when sizing their bandwidths.
    pub consider_endpoints: bool,
}

impl Default for ParzenSettings {
    fn default() -> Self {
        ParzenSettings { prior_weight: 1.0, consider_magic_clip: true, consider_endpoints: false }
    }
}

/// The kernels of one parameter, one entry per kernel (observations first, prior last).
#[derive(Debug, Clone)]
enum Kernels {
    Numeric {
        mus: Vec<f64>,
        sigmas: Vec<f64>,
        /// ln of each kernel's mass inside [low, high], kept for the density.
        log_mass: Vec<f64>,
        /// Bounds in the kernel's space: log-scaled if `log`, widened by half a step for ints.
        low: f64,
        high: f64,
        log: bool,
        /// The integer domain for ints (`None` for floats).
        int_range: Option<(f64, f64)>,
        /// The float domain, to clamp `exp` rounding back in.
        float_range: (f64, f64),
    },
    Categorical {
        probs: Vec<Vec<f64>>,
    },
}

/// A mixture of products of per-parameter kernels.
#[derive(Debug, Clone)]
pub(crate) struct Parzen {
    weights: Vec<f64>,
    dims: Vec<Kernels>,
}

impl Parzen {
    /// `observations[i][d]` is observation i of parameter `params[d]`, with `obs_weights[i]` its
    /// weight before the prior is added and all are normalised.
    pub(crate) fn new(params: &[&Param], observations: &[Vec<f64>], obs_weights: &[f64], s: ParzenSettings) -> Self {
        let mut weights: Vec<f64> = if observations.is_empty() {
            vec![1.0]
        } else {
            obs_weights.iter().copied().chain([s.prior_weight]).collect()
        };
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let dims = params
            .iter()
            .enumerate()
            .map(|(d, param)| {
                let column: Vec<f64> = observations.iter().map(|o| o[d]).collect();
                kernels(param, &column, s)
            })
            .collect();
        Parzen { weights, dims }
    }

    /// `n` draws: pick a kernel by weight, then each parameter from that kernel.
    pub(crate) fn sample(&self, rng: &mut Rng, n: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| {
                let k = rng.weighted(&self.weights);
                self.dims.iter().map(|dim| sample_kernel(dim, k, rng)).collect()
            })
            .collect()
    }

    /// ln of the mixture density (mass, for ints and categoricals) at `x`.
    pub(crate) fn log_pdf(&self, x: &[f64]) -> f64 {
        let terms: Vec<f64> = (0..self.weights.len())
            .map(|k| self.weights[k].ln() + self.dims.iter().zip(x).map(|(dim, &v)| log_kernel(dim, k, v)).sum::<f64>())
            .collect();
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return max;
        }
        max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
    }
}

fn kernels(param: &Param, observations: &[f64], s: ParzenSettings) -> Kernels {
    match param {
        Param::Categorical { choices } => categorical_kernels(choices.len(), observations, s),
        Param::Float { low, high, log } => numeric_kernels(*low, *high, *log, None, observations, s),
        Param::Int { low, high, log } => {
            let range = Some((*low as f64, *high as f64));
            // The unit bins of the integers span [low - 1/2, high + 1/2].
            numeric_kernels(*low as f64 - 0.5, *high as f64 + 0.5, *log, range, observations, s)
        }
    }
}

fn categorical_kernels(n_choices: usize, observations: &[f64], s: ParzenSettings) -> Kernels {
    if observations.is_empty() {
        return Kernels::Categorical { probs: vec![vec![1.0 / n_choices as f64; n_choices]] };
    }
    let n_kernels = observations.len() + 1;
    let mut probs = vec![vec![s.prior_weight / n_kernels as f64; n_choices]; n_kernels];
    for (row, &obs) in probs.iter_mut().zip(observations) {
        row[obs as usize] += 1.0;
    }
    for row in &mut probs {
        let sum: f64 = row.iter().sum();
        if sum > 0.0 {
            row.iter_mut().for_each(|p| *p /= sum);
        }
    }
    Kernels::Categorical { probs }
}

fn numeric_kernels(
    low: f64,
    high: f64,
    log: bool,
    int_range: Option<(f64, f64)>,
    observations: &[f64],
    s: ParzenSettings,
) -> Kernels {
    let float_range = (low, high);
    let (low, high) = if log { (low.ln(), high.ln()) } else { (low, high) };
    let mut mus: Vec<f64> = observations.iter().map(|&x| if log { x.ln() } else { x }).collect();
    let mut sigmas = bandwidths(&mus, low, high, s);
    mus.push(0.5 * (low + high));
    sigmas.push(high - low);
    let log_mass =
        mus.iter().zip(&sigmas).map(|(m, sg)| truncnorm::log_gauss_mass((low - m) / sg, (high - m) / sg)).collect();
    Kernels::Numeric { mus, sigmas, log_mass, low, high, log, int_range, float_range }
}

/// Each observation's bandwidth: the larger gap to its sorted neighbours (the bounds count as
/// neighbours), clipped to [range / min(100, n + 2), range] with the magic clip.
fn bandwidths(mus: &[f64], low: f64, high: f64, s: ParzenSettings) -> Vec<f64> {
    let n = mus.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| mus[i].total_cmp(&mus[j]));
    let mut with_ends = Vec::with_capacity(n + 2);
    with_ends.push(low);
    with_ends.extend(order.iter().map(|&i| mus[i]));
    with_ends.push(high);
    let mut sorted: Vec<f64> =
        (1..=n).map(|i| (with_ends[i] - with_ends[i - 1]).max(with_ends[i + 1] - with_ends[i])).collect();
    if !s.consider_endpoints && n >= 2 {
        // The outermost kernels take the gap to their inner neighbour only.
        sorted[0] = with_ends[2] - with_ends[1];
        sorted[n - 1] = with_ends[n] - with_ends[n - 1];
    }
    let max_sigma = high - low;
    let min_sigma = if s.consider_magic_clip {
        let n_kernels = (n + 1) as f64;
        (high - low) / 100f64.min(1.0 + n_kernels)
    } else {
        1e-12
    };
    let mut sigmas = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        sigmas[i] = sorted[rank].clamp(min_sigma, max_sigma);
    }
    sigmas
}

fn sample_kernel(dim: &Kernels, k: usize, rng: &mut Rng) -> f64 {
    match dim {
        Kernels::Categorical { probs } => {
            let row = &probs[k.min(probs.len() - 1)];
            rng.weighted(row) as f64
        }
        Kernels::Numeric { mus, sigmas, low, high, log, int_range, float_range, .. } => {
            let (mu, sigma) = (mus[k], sigmas[k]);
            let z = truncnorm::ppf(rng.uniform(), (low - mu) / sigma, (high - mu) / sigma);
            let x = z * sigma + mu;
            let x = if *log { x.exp() } else { x };
            match int_range {
                Some((lo, hi)) => (lo + (x - lo).round()).clamp(*lo, *hi),
                None => x.clamp(float_range.0, float_range.1),
            }
        }
    }
}

fn log_kernel(dim: &Kernels, k: usize, x: f64) -> f64 {
    match dim {
        Kernels::Categorical { probs } => probs[k.min(probs.len() - 1)][x as usize].ln(),
        Kernels::Numeric { mus, sigmas, log_mass, low, high, log, int_range, .. } => {
            let (mu, sigma) = (mus[k], sigmas[k]);
            let scale = |v: f64| if *log { v.ln() } else { v };
            if int_range.is_some() {
                truncnorm::log_bin_mass(scale(x - 0.5), scale(x + 0.5), mu, sigma, *low, *high)
            } else {
                let xs = scale(x);
                if xs < *low || xs > *high {
                    return f64::NEG_INFINITY;
                }
                truncnorm::log_norm_pdf((xs - mu) / sigma) - log_mass[k] - sigma.ln()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn float(low: f64, high: f64, log: bool) -> Param {
        Param::Float { low, high, log }
    }

    #[test]
    fn bandwidths_follow_optuna_for_a_small_example() {
        // Optuna 5.1, FloatDistribution(0, 10), observations [2, 3, 7] (checked by hand against
        // parzen_estimator.py): gaps with ends 0|2|3|7|10 are max(2,1)=2, max(1,4)=4, max(4,3)=4;
        // without endpoints the outer two become 1 and 4; clip floor 10 / min(100, 5) = 2.
        let s = ParzenSettings::default();
        assert_eq!(bandwidths(&[7.0, 2.0, 3.0], 0.0, 10.0, s), vec![4.0, 2.0, 4.0]);
        let loose = ParzenSettings { consider_magic_clip: false, ..s };
        assert_eq!(bandwidths(&[7.0, 2.0, 3.0], 0.0, 10.0, loose), vec![4.0, 1.0, 4.0]);
        let ends = ParzenSettings { consider_magic_clip: false, consider_endpoints: true, ..s };
        assert_eq!(bandwidths(&[7.0, 2.0, 3.0], 0.0, 10.0, ends), vec![4.0, 2.0, 4.0]);
        // One observation: the larger gap to the bounds.
        assert_eq!(bandwidths(&[2.0], 0.0, 10.0, loose), vec![8.0]);
    }

    /// Golden numbers from optuna_suggestions.py (Optuna 5.1's `_ParzenEstimator`).
    #[test]
    fn log_pdf_matches_optuna() {
        let golden: serde_json::Value =
            serde_json::from_str(include_str!("../testdata/optuna_suggestions.json")).unwrap();
        let g = &golden["parzen"];
        let choices = vec![Value::from("a"), Value::from("b"), Value::from("c")];
        let params = [
            ("x1", float(-5.0, 10.0, false)),
            ("x2", float(0.0, 15.0, false)),
            ("n", Param::Int { low: 1, high: 20, log: true }),
            ("c", Param::Categorical { choices }),
        ];
        let column = |table: &serde_json::Value, name: &str| -> Vec<f64> {
            table[name].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
        };
        let rows = |table: &serde_json::Value| -> Vec<Vec<f64>> {
            let cols: Vec<Vec<f64>> = params.iter().map(|(name, _)| column(table, name)).collect();
            (0..cols[0].len()).map(|i| cols.iter().map(|c| c[i]).collect()).collect()
        };
        let kinds: Vec<&Param> = params.iter().map(|(_, p)| p).collect();
        let obs = rows(&g["observations"]);
        let est = Parzen::new(&kinds, &obs, &vec![1.0; obs.len()], ParzenSettings::default());
        for (point, expected) in rows(&g["points"]).iter().zip(g["log_pdf"].as_array().unwrap()) {
            let expected = expected.as_f64().unwrap();
            let got = est.log_pdf(point);
            assert!((got - expected).abs() < 1e-12 * expected.abs(), "{point:?}: {got} vs Optuna's {expected}");
        }
    }

    #[test]
    fn the_density_integrates_to_one_and_puts_mass_near_the_observations() {
        let p = float(0.0, 10.0, false);
        let obs: Vec<Vec<f64>> = [2.0, 2.5, 3.0].iter().map(|&x| vec![x]).collect();
        let est = Parzen::new(&[&p], &obs, &[1.0; 3], ParzenSettings::default());
        let n = 20_000;
        let h = 10.0 / n as f64;
        let integral: f64 = (0..n).map(|i| est.log_pdf(&[(i as f64 + 0.5) * h]).exp() * h).sum();
        assert!((integral - 1.0).abs() < 1e-6, "{integral}");
        assert!(est.log_pdf(&[2.5]) > est.log_pdf(&[8.0]) + 1.0);
        assert_eq!(est.log_pdf(&[10.5]), f64::NEG_INFINITY);
    }

    #[test]
    fn samples_stay_in_the_domain_and_follow_the_density() {
        let lr = float(1e-5, 1e-1, true);
        let batch = Param::Int { low: 1, high: 6, log: false };
        let opt = Param::Categorical { choices: vec![Value::from("a"), Value::from("b"), Value::from("c")] };
        let obs = vec![vec![1e-3, 2.0, 0.0], vec![2e-3, 2.0, 0.0], vec![1e-3, 3.0, 1.0]];
        let est = Parzen::new(&[&lr, &batch, &opt], &obs, &[1.0; 3], ParzenSettings::default());
        let mut rng = Rng::new(3);
        let draws = est.sample(&mut rng, 4000);
        let mut near = 0;
        let mut choice_a = 0;
        for d in &draws {
            assert!((1e-5..=1e-1).contains(&d[0]), "{d:?}");
            assert!((1.0..=6.0).contains(&d[1]) && d[1].fract() == 0.0, "{d:?}");
            assert!([0.0, 1.0, 2.0].contains(&d[2]));
            near += usize::from((2.0..=3.0).contains(&d[1]));
            choice_a += usize::from(d[2] == 0.0);
            assert!(est.log_pdf(d).is_finite());
        }
        // Three of four kernels sit on 2 or 3 and on choice "a" for two of them.
        assert!(near > 2000, "{near}");
        assert!(choice_a > 1600 && choice_a < 2600, "{choice_a}");
        // An int estimator alone is a distribution over the integers of its domain.
        let int_only = Parzen::new(&[&batch], &[vec![2.0], vec![6.0]], &[1.0; 2], ParzenSettings::default());
        let total: f64 = (1..=6).map(|b| int_only.log_pdf(&[b as f64]).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
    }

    #[test]
    fn categorical_kernels_smooth_counts_with_the_prior() {
        let Kernels::Categorical { probs } = categorical_kernels(3, &[0.0, 2.0], ParzenSettings::default()) else {
            panic!("categorical")
        };
        // Three kernels: prior weight 1/3 spread on each choice, +1 on the observed one.
        let third = 1.0 / 3.0;
        let row0 = [1.0 + third, third, third].map(|p| p / 2.0);
        assert!(probs[0].iter().zip(row0).all(|(a, b)| (a - b).abs() < 1e-12), "{probs:?}");
        assert!(probs[2].iter().all(|p| (p - third).abs() < 1e-12));
    }
}
