//! Samplers: what to try next, given the space and every trial so far. The TPE sampler lives in
//! [`tpe`](crate::tpe).
//!
//! A sampler is a small trait; adding one means implementing [`Sampler::suggest`]. The samplers
//! here draw trial `n` from a random stream fixed by their seed and `n` alone, so a study saved
//! and resumed suggests exactly what an uninterrupted one would.

use std::collections::HashSet;

use crate::TuneError;
use crate::rng::Rng;
use crate::space::{Param, ParamValue, Params, SearchSpace};
use crate::trial::Trial;

/// Chooses the parameters of the next trial. Lower objective values are better.
pub trait Sampler: Send {
    /// The parameters for trial number `history.len()`; `history` holds every earlier trial,
    /// finished or not, in order. Every value must lie in `space`.
    fn suggest(&mut self, space: &SearchSpace, history: &[Trial]) -> Result<Params, TuneError>;
}

/// Independent uniform draws, as Optuna's `RandomSampler` makes them: floats uniform (in `ln x`
/// for log scales), ints uniform over their unit bins `[low - 1/2, high + 1/2]` (in `ln` for log
/// scales) and rounded, choices uniform.
#[derive(Debug, Clone)]
pub struct RandomSampler {
    seed: u64,
}

impl RandomSampler {
    pub fn new(seed: u64) -> Self {
        RandomSampler { seed }
    }
}

impl Sampler for RandomSampler {
    fn suggest(&mut self, space: &SearchSpace, history: &[Trial]) -> Result<Params, TuneError> {
        let mut rng = Rng::for_stream(self.seed, history.len() as u64);
        Ok(sample_uniform(space, &mut rng))
    }
}

/// One uniform draw of every parameter of `space` (the random sampler's, and TPE's start-up).
pub(crate) fn sample_uniform(space: &SearchSpace, rng: &mut Rng) -> Params {
    space.params().iter().map(|(name, param)| (name.clone(), sample_param(param, rng))).collect()
}

fn sample_param(param: &Param, rng: &mut Rng) -> ParamValue {
    match param {
        Param::Float { low, high, log: false } => ParamValue::Float(rng.uniform_in(*low, *high)),
        Param::Float { low, high, log: true } => {
            ParamValue::Float(rng.uniform_in(low.ln(), high.ln()).exp().clamp(*low, *high))
        }
        Param::Int { low, high, log } => {
            let (lo, hi) = (*low as f64 - 0.5, *high as f64 + 0.5);
            let x = if *log { rng.uniform_in(lo.ln(), hi.ln()).exp() } else { rng.uniform_in(lo, hi) };
            param.value_of_internal(x)
        }
        Param::Categorical { choices } => ParamValue::Choice(choices[rng.below(choices.len())].clone()),
    }
}

/// Every combination of the parameters' grid points, in order (the first parameter by name
/// varies slowest), skipping combinations any earlier trial already has. Floats get `points`
/// evenly spaced values including both bounds (geometrically for log scales); ints get every
/// integer when there are at most `points`, else `points` evenly spaced ones, rounded;
/// categoricals get every choice. Fails with [`TuneError::GridExhausted`] once all are taken.
#[derive(Debug, Clone)]
pub struct GridSampler {
    points: usize,
}

impl GridSampler {
    /// `points`: the most values per float or int parameter, at least 2.
    pub fn new(points: usize) -> Result<Self, TuneError> {
        if points < 2 {
            return Err(TuneError::InvalidSetting {
                what: "grid sampler",
                reason: format!("points per numeric parameter must be at least 2, got {points}"),
            });
        }
        Ok(GridSampler { points })
    }

    /// The grid values of each parameter, in the space's order.
    pub fn axes(&self, space: &SearchSpace) -> Vec<Vec<ParamValue>> {
        space.params().values().map(|p| self.axis(p)).collect()
    }

    fn axis(&self, param: &Param) -> Vec<ParamValue> {
        let n = self.points;
        // n evenly spaced numbers from a to b, both included exactly.
        let spaced = |a: f64, b: f64| -> Vec<f64> {
            (0..n).map(|i| if i + 1 == n { b } else { a + (b - a) * i as f64 / (n - 1) as f64 }).collect()
        };
        match param {
            Param::Float { low, high, log: false } => spaced(*low, *high).into_iter().map(ParamValue::Float).collect(),
            Param::Float { low, high, log: true } => spaced(low.ln(), high.ln())
                .into_iter()
                .enumerate()
                .map(|(i, x)| ParamValue::Float(if i == 0 { *low } else { x.exp().clamp(*low, *high) }))
                .collect(),
            Param::Int { low, high, log } => {
                if ((high - low) as u128) < n as u128 {
                    return (*low..=*high).map(ParamValue::Int).collect();
                }
                let xs = if *log {
                    spaced((*low as f64).ln(), (*high as f64).ln()).into_iter().map(f64::exp).collect()
                } else {
                    spaced(*low as f64, *high as f64)
                };
                let mut values: Vec<ParamValue> = xs.into_iter().map(|x| param.value_of_internal(x)).collect();
                values.dedup();
                values
            }
            Param::Categorical { choices } => choices.iter().cloned().map(ParamValue::Choice).collect(),
        }
    }
}

/// The number of combinations, or `None` past u128.
fn grid_size(axes: &[Vec<ParamValue>]) -> Option<u128> {
    axes.iter().try_fold(1u128, |acc, axis| acc.checked_mul(axis.len() as u128))
}

/// The grid index of `params`, if every value is a grid point.
fn grid_index(names: &[&String], axes: &[Vec<ParamValue>], params: &Params) -> Option<u128> {
    let mut index = 0u128;
    for (name, axis) in names.iter().zip(axes) {
        let value = params.get(*name)?;
        let pos = axis.iter().position(|v| v == value)?;
        index = index * axis.len() as u128 + pos as u128;
    }
    Some(index)
}

impl Sampler for GridSampler {
    fn suggest(&mut self, space: &SearchSpace, history: &[Trial]) -> Result<Params, TuneError> {
        let axes = self.axes(space);
        let total = grid_size(&axes).ok_or_else(|| TuneError::InvalidSetting {
            what: "grid sampler",
            reason: "the grid has more than 2^128 points".to_string(),
        })?;
        let names: Vec<&String> = space.params().keys().collect();
        let taken: HashSet<u128> = history.iter().filter_map(|t| grid_index(&names, &axes, &t.params)).collect();
        // At most history.len() + 1 steps: each taken index is skipped once.
        let Some(mut index) = (0..total).find(|i| !taken.contains(i)) else {
            return Err(TuneError::GridExhausted { points: total });
        };
        let mut params = Params::new();
        for (name, axis) in names.iter().zip(&axes).rev() {
            let len = axis.len() as u128;
            params.insert((*name).clone(), axis[(index % len) as usize].clone());
            index /= len;
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trial::TrialState;
    use serde_json::Value;
    use std::collections::BTreeMap;

    fn space(params: &[(&str, Param)]) -> SearchSpace {
        SearchSpace::new(params.iter().map(|(n, p)| (n.to_string(), p.clone())).collect()).unwrap()
    }

    fn trial(id: usize, params: Params) -> Trial {
        Trial { id: id as u64, params, intermediate: BTreeMap::new(), value: Some(0.0), state: TrialState::Complete }
    }

    fn mixed() -> SearchSpace {
        space(&[
            ("a", Param::Float { low: 0.0, high: 1.0, log: false }),
            ("b", Param::Int { low: 1, high: 3, log: false }),
            ("c", Param::Categorical { choices: vec![Value::from("x"), Value::from("y")] }),
            ("d", Param::Float { low: 1e-4, high: 1.0, log: true }),
        ])
    }

    #[test]
    fn grid_covers_every_combination_once_then_is_exhausted() {
        let space = mixed();
        let mut grid = GridSampler::new(3).unwrap();
        let mut history = Vec::new();
        for id in 0..3 * 3 * 2 * 3 {
            let params = grid.suggest(&space, &history).unwrap();
            assert!(space.contains(&params), "{params:?}");
            assert!(history.iter().all(|t: &Trial| t.params != params), "repeated {params:?}");
            history.push(trial(id, params));
        }
        let err = grid.suggest(&space, &history).unwrap_err();
        assert!(matches!(err, TuneError::GridExhausted { points: 54 }), "{err}");
        // The axes: floats include both bounds, log floats are geometric.
        let axes = grid.axes(&space);
        assert_eq!(axes[0], vec![ParamValue::Float(0.0), ParamValue::Float(0.5), ParamValue::Float(1.0)]);
        let d: Vec<f64> = axes[3].iter().filter_map(ParamValue::as_f64).collect();
        assert_eq!(d[0], 1e-4);
        assert!((d[1] - 1e-2).abs() < 1e-15 && d[2] == 1.0, "{d:?}");
    }

    #[test]
    fn grid_fills_the_gaps_a_resumed_history_leaves() {
        let space = space(&[("b", Param::Int { low: 0, high: 2, log: false })]);
        let mut grid = GridSampler::new(5).unwrap();
        let history = vec![
            trial(0, [("b".to_string(), ParamValue::Int(0))].into()),
            trial(1, [("b".to_string(), ParamValue::Int(2))].into()),
        ];
        assert_eq!(grid.suggest(&space, &history).unwrap()["b"], ParamValue::Int(1));
    }

    #[test]
    fn wide_int_ranges_are_gridded_into_the_given_number_of_points() {
        let grid = GridSampler::new(4).unwrap();
        let axis = grid.axis(&Param::Int { low: 0, high: 90, log: false });
        assert_eq!(axis, [0, 30, 60, 90].map(ParamValue::Int).to_vec());
        let axis = grid.axis(&Param::Int { low: 1, high: 1000, log: true });
        assert_eq!(axis, [1, 10, 100, 1000].map(ParamValue::Int).to_vec());
        assert!(GridSampler::new(1).is_err());
    }

    #[test]
    fn random_draws_cover_the_domain_uniformly_and_depend_on_seed_and_trial_number() {
        let space = mixed();
        let mut sampler = RandomSampler::new(11);
        let mut history = Vec::new();
        let (mut a_low, mut d_low, mut ints, mut xs) = (0, 0, [0usize; 3], 0);
        let n = 3000;
        for id in 0..n {
            let p = sampler.suggest(&space, &history).unwrap();
            assert!(space.contains(&p));
            a_low += usize::from(p["a"].as_f64().unwrap() < 0.5);
            // Log-uniform on [1e-4, 1]: half the draws below 1e-2.
            d_low += usize::from(p["d"].as_f64().unwrap() < 1e-2);
            ints[(p["b"].as_i64().unwrap() - 1) as usize] += 1;
            xs += usize::from(p["c"].as_choice() == Some(&Value::from("x")));
            history.push(trial(id, p));
        }
        for count in [a_low, d_low, xs] {
            assert!((1350..1650).contains(&count), "{count}");
        }
        assert!(ints.iter().all(|c| (850..1150).contains(c)), "{ints:?}");
        // Same seed and history length, same draw; another seed, another draw.
        let again = RandomSampler::new(11).suggest(&space, &history[..5]).unwrap();
        assert_eq!(again, history[5].params);
        assert_ne!(RandomSampler::new(12).suggest(&space, &history[..5]).unwrap(), history[5].params);
    }
}
