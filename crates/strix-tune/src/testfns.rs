//! Test objectives shared by the sampler tests; the same functions and domains as
//! `optuna_reference.py`.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use crate::sampler::Sampler;
use crate::space::{Param, Params, SearchSpace};
use crate::study::Study;

pub(crate) struct Bench {
    pub name: &'static str,
    pub params: &'static [(&'static str, f64, f64)],
    pub f: fn(&Params) -> f64,
}

impl Bench {
    pub fn space(&self) -> SearchSpace {
        let params: BTreeMap<String, Param> = self
            .params
            .iter()
            .map(|(n, low, high)| (n.to_string(), Param::Float { low: *low, high: *high, log: false }))
            .collect();
        SearchSpace::new(params).expect("a valid benchmark space")
    }
}

fn x(p: &Params, name: &str) -> f64 {
    p.get(name).and_then(|v| v.as_f64()).unwrap_or(f64::NAN)
}

/// Branin-Hoo; minimum 0.397887 at three points.
fn branin(p: &Params) -> f64 {
    let (x1, x2) = (x(p, "x1"), x(p, "x2"));
    let b = 5.1 / (4.0 * PI * PI);
    let c = 5.0 / PI;
    let t = 1.0 / (8.0 * PI);
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

fn sphere(p: &Params) -> f64 {
    (0..5).map(|i| x(p, &format!("x{i}")).powi(2)).sum()
}

pub(crate) const BRANIN: Bench = Bench { name: "branin", params: &[("x1", -5.0, 10.0), ("x2", 0.0, 15.0)], f: branin };

pub(crate) const SPHERE5: Bench = Bench {
    name: "sphere5",
    params: &[("x0", -5.0, 5.0), ("x1", -5.0, 5.0), ("x2", -5.0, 5.0), ("x3", -5.0, 5.0), ("x4", -5.0, 5.0)],
    f: sphere,
};

/// x in [-10, 10].
pub(crate) fn quadratic_space() -> SearchSpace {
    SearchSpace::new([("x".to_string(), Param::Float { low: -10.0, high: 10.0, log: false })].into()).expect("valid")
}

/// The best value of a `n`-trial study of `f` driven by `sampler`.
pub(crate) fn best_of(space: &SearchSpace, sampler: &mut dyn Sampler, n: usize, f: impl Fn(&Params) -> f64) -> f64 {
    let mut study = Study::new(space.clone());
    for _ in 0..n {
        let (id, params) = study.ask(sampler).expect("a suggestion");
        study.tell(id, crate::study::Outcome::Complete(f(&params))).expect("tell");
    }
    study.best_trial().and_then(|t| t.value).unwrap_or(f64::NAN)
}

pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { 0.5 * (xs[n / 2 - 1] + xs[n / 2]) }
}
