//! The truncated standard normal in log space, as Optuna's `samplers/_tpe/_truncnorm.py` computes
//! it (itself taken from SciPy): accurate far in the tails, where the TPE kernels of a narrowing
//! search put most of their candidates.
//!
//! Bounds `a < b` are in standard units; callers shift and scale.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// ln sqrt(2 pi)
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// Standard normal CDF, choosing erf or erfc where each keeps its precision.
fn ndtr(a: f64) -> f64 {
    let x = a * FRAC_1_SQRT_2;
    if x < -FRAC_1_SQRT_2 {
        0.5 * libm::erfc(-x)
    } else if x < FRAC_1_SQRT_2 {
        0.5 + 0.5 * libm::erf(x)
    } else {
        1.0 - 0.5 * libm::erfc(x)
    }
}

/// ln Phi(a), with the asymptotic series below -20 where Phi underflows.
pub(crate) fn log_ndtr(a: f64) -> f64 {
    if a > 6.0 {
        // ln(1 - p) ~ -p for the tiny upper tail p.
        return -ndtr(-a);
    }
    if a > -20.0 {
        return ndtr(a).ln();
    }
    let log_lhs = -0.5 * a * a - (-a).ln() - 0.5 * (2.0 * PI).ln();
    let mut last_total: f64 = 0.0;
    let mut rhs: f64 = 1.0;
    let mut numerator = 1.0;
    let mut denom_factor = 1.0;
    let denom_cons = 1.0 / (a * a);
    let mut sign = 1.0;
    let mut i = 0.0;
    while (last_total - rhs).abs() > f64::EPSILON {
        i += 1.0;
        last_total = rhs;
        sign = -sign;
        denom_factor *= denom_cons;
        numerator *= 2.0 * i - 1.0;
        rhs += sign * numerator * denom_factor;
    }
    log_lhs + rhs.ln()
}

fn log_diff(log_p: f64, log_q: f64) -> f64 {
    log_p + (-(log_q - log_p).exp()).ln_1p()
}

fn log_add_exp(x: f64, y: f64) -> f64 {
    let m = x.max(y);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((x - m).exp() + (y - m).exp()).ln()
}

/// ln of the standard normal mass in `[a, b]`, computed in the left tail for accuracy.
pub(crate) fn log_gauss_mass(a: f64, b: f64) -> f64 {
    if b <= 0.0 {
        log_diff(log_ndtr(b), log_ndtr(a))
    } else if a > 0.0 {
        log_diff(log_ndtr(-a), log_ndtr(-b))
    } else {
        // Central: 1 - both tails, free of the cancellation in a difference of CDFs near 1.
        (-ndtr(a) - ndtr(-b)).ln_1p()
    }
}

/// The x with ln Phi(x) = y (y <= 0), by Newton's method from Optuna's starting guesses.
fn ndtri_exp(y: f64) -> f64 {
    // Near 0, solve for the mirrored point where the tail is small, then flip back.
    let flipped = y > -1e-2;
    let z = if flipped { (-y.exp_m1()).ln() } else { y };
    let mut x = if z < -5.0 {
        -(-2.0 * (z + LN_SQRT_2PI)).sqrt()
    } else {
        // Logistic approximation of Phi.
        -(3.0f64.sqrt() / PI) * (-z).exp_m1().ln()
    };
    for _ in 0..100 {
        let log_ndtr_x = log_ndtr(x);
        let log_pdf_x = log_norm_pdf(x);
        let dx = (log_ndtr_x - z) * (log_ndtr_x - log_pdf_x).exp();
        x -= dx;
        if dx.abs() < 1e-8 * x.abs() {
            break;
        }
    }
    if flipped { -x } else { x }
}

/// The quantile `q` of the standard normal truncated to `[a, b]`.
pub(crate) fn ppf(q: f64, a: f64, b: f64) -> f64 {
    if q <= 0.0 {
        return a;
    }
    if q >= 1.0 {
        return b;
    }
    let log_mass = log_gauss_mass(a, b);
    let x = if a < 0.0 {
        ndtri_exp(log_add_exp(log_ndtr(a), q.ln() + log_mass))
    } else {
        // Mirror into the left tail, where ln Phi is accurate.
        -ndtri_exp(log_add_exp(log_ndtr(-b), (-q).ln_1p() + log_mass))
    };
    // Newton's last step can overshoot a bound by an ulp or so.
    x.clamp(a, b)
}

/// ln density of the standard normal; a kernel truncated to [a, b] with scale sigma has
/// `log_norm_pdf(z) - log_gauss_mass(a, b) - ln sigma` inside its bounds.
pub(crate) fn log_norm_pdf(z: f64) -> f64 {
    -0.5 * z * z - LN_SQRT_2PI
}

/// ln of the mass of the normal(`mu`, `sigma`) in `[left, right]`, relative to its mass in
/// `[low, high]`: the probability of one integer's bin under a truncated kernel.
pub(crate) fn log_bin_mass(left: f64, right: f64, mu: f64, sigma: f64, low: f64, high: f64) -> f64 {
    log_gauss_mass((left - mu) / sigma, (right - mu) / sigma) - log_gauss_mass((low - mu) / sigma, (high - mu) / sigma)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::LN_2 as LN2;

    fn close(a: f64, b: f64, rtol: f64) -> bool {
        (a - b).abs() <= rtol * b.abs().max(1e-300)
    }

    #[test]
    fn log_ndtr_matches_known_values_in_both_tails() {
        // ln(erfc(-a / sqrt 2) / 2) and log1p(-erfc(a / sqrt 2) / 2) from Python's math module.
        assert!(close(log_ndtr(0.0), -LN2, 1e-14));
        assert!(close(log_ndtr(-1.0), -1.841_021_645_009_263_4, 1e-12));
        assert!(close(log_ndtr(-10.0), -53.231_285_150_512_46, 1e-12));
        // Below -20 the asymptotic series takes over.
        assert!(close(log_ndtr(-30.0), -454.321_243_956_343_1, 1e-12));
        assert!(close(log_ndtr(7.0), -1.279_812_543_886_654e-12, 1e-9));
    }

    #[test]
    fn gauss_mass_of_whole_line_halves_and_tails() {
        assert!(log_gauss_mass(-40.0, 40.0).abs() < 1e-15);
        assert!(close(log_gauss_mass(0.0, 40.0), -LN2, 1e-14));
        assert!(close(log_gauss_mass(-40.0, 0.0), -LN2, 1e-14));
        // [1, 2]: Phi(2) - Phi(1) = 0.13590512198327787
        assert!(close(log_gauss_mass(1.0, 2.0), 0.135_905_121_983_277_87f64.ln(), 1e-12));
        assert!(close(log_gauss_mass(-2.0, -1.0), 0.135_905_121_983_277_87f64.ln(), 1e-12));
    }

    #[test]
    fn ppf_inverts_the_truncated_cdf_in_and_out_of_the_tails() {
        for (a, b) in [(-1.0, 1.0), (-3.0, 0.5), (0.2, 4.0), (-30.0, -25.0), (12.0, 15.0), (-0.5, 50.0)] {
            let log_mass = log_gauss_mass(a, b);
            for q in [1e-9, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0 - 1e-9] {
                let x = ppf(q, a, b);
                assert!((a..=b).contains(&x), "ppf({q}, {a}, {b}) = {x}");
                // The mass left of x over the total mass is q again.
                let back = (log_gauss_mass(a, x) - log_mass).exp();
                assert!((back - q).abs() < 1e-7, "ppf({q}, {a}, {b}) = {x}, cdf back {back}");
            }
        }
        assert_eq!(ppf(0.0, -1.0, 2.0), -1.0);
        assert_eq!(ppf(1.0, -1.0, 2.0), 2.0);
    }

    #[test]
    fn the_truncated_density_integrates_to_one_and_bins_sum_to_one() {
        let (mu, sigma, low, high) = (0.3, 0.7, -0.5, 2.0);
        let log_mass = log_gauss_mass((low - mu) / sigma, (high - mu) / sigma);
        let log_pdf = |x: f64| log_norm_pdf((x - mu) / sigma) - log_mass - f64::ln(sigma);
        let n = 20_000;
        let h = (high - low) / n as f64;
        let integral: f64 = (0..n).map(|i| log_pdf(low + (i as f64 + 0.5) * h).exp() * h).sum();
        assert!((integral - 1.0).abs() < 1e-6, "{integral}");
        // Integers 0..=3 with bins of width 1 inside [-0.5, 3.5].
        let total: f64 = (0..=3).map(|k| log_bin_mass(k as f64 - 0.5, k as f64 + 0.5, 1.2, 0.8, -0.5, 3.5).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
    }
}
