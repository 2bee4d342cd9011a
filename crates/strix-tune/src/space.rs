//! Search spaces: named parameters, each a float or int range (optionally log-scaled) or a list
//! of choices, and the [`Params`] a sampler draws from them.
//!
//! A space is written as a table of parameters (TOML here, the same shape in JSON):
//!
//! ```toml
//! [lr]
//! type = "float"
//! low = 1e-5
//! high = 1e-1
//! log = true
//!
//! [batch]
//! type = "int"
//! low = 8
//! high = 64
//!
//! [optimizer]
//! type = "categorical"
//! choices = ["adam", "sgd"]
//! ```
//!
//! Every way of building a [`SearchSpace`] (serde or [`SearchSpace::new`]) validates it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::TuneError;

/// Integers beyond this are not exact in the f64 the samplers work in.
const MAX_EXACT_INT: i64 = 1 << 53;

/// One parameter's domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Param {
    /// A real number in `[low, high]`; `log` samples `ln x` uniformly (needs `low > 0`).
    Float {
        low: f64,
        high: f64,
        #[serde(default)]
        log: bool,
    },
    /// An integer in `[low, high]`, both included; `log` needs `low >= 1`.
    Int {
        low: i64,
        high: i64,
        #[serde(default)]
        log: bool,
    },
    /// One of `choices` (strings, numbers, booleans: any JSON value), unordered.
    Categorical { choices: Vec<Value> },
}

/// A value drawn for one parameter. Tagged in JSON (`{"float": 0.1}`, `{"int": 3}`,
/// `{"choice": "adam"}`) so that a saved study reads back exactly, a float 3.0 staying a float.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamValue {
    Float(f64),
    Int(i64),
    Choice(Value),
}

/// The values of one trial's parameters, by name.
pub type Params = BTreeMap<String, ParamValue>;

impl ParamValue {
    /// The value of a float parameter.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// The value of an int parameter.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ParamValue::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The chosen value of a categorical parameter.
    pub fn as_choice(&self) -> Option<&Value> {
        match self {
            ParamValue::Choice(v) => Some(v),
            _ => None,
        }
    }
}

impl Param {
    fn validate(&self, name: &str) -> Result<(), TuneError> {
        let fail = |reason: String| Err(TuneError::InvalidParam { param: name.to_string(), reason });
        match self {
            Param::Float { low, high, log } => {
                if !low.is_finite() || !high.is_finite() {
                    return fail(format!("low ({low}) and high ({high}) must be finite"));
                }
                if low >= high {
                    return fail(format!("low ({low}) must be below high ({high})"));
                }
                if *log && *low <= 0.0 {
                    return fail(format!("log = true needs low > 0, got low = {low}"));
                }
            }
            Param::Int { low, high, log } => {
                if low >= high {
                    return fail(format!("low ({low}) must be below high ({high})"));
                }
                if low.abs() > MAX_EXACT_INT || high.abs() > MAX_EXACT_INT {
                    return fail(format!("low and high must lie within +-2^53, got [{low}, {high}]"));
                }
                if *log && *low < 1 {
                    return fail(format!("log = true needs low > 0, got low = {low}"));
                }
            }
            Param::Categorical { choices } => {
                if choices.is_empty() {
                    return fail("choices is empty".to_string());
                }
                for (i, c) in choices.iter().enumerate() {
                    if choices[..i].contains(c) {
                        return fail(format!("choice {c} is listed twice"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The number a sampler works with: the value itself for floats and ints, the index of the
    /// choice for categoricals. `None` when the value is of the wrong kind or outside the domain.
    pub(crate) fn to_internal(&self, value: &ParamValue) -> Option<f64> {
        match (self, value) {
            (Param::Float { low, high, .. }, ParamValue::Float(v)) if (*low..=*high).contains(v) => Some(*v),
            (Param::Int { low, high, .. }, ParamValue::Int(v)) if (*low..=*high).contains(v) => Some(*v as f64),
            (Param::Categorical { choices }, ParamValue::Choice(v)) => {
                choices.iter().position(|c| c == v).map(|i| i as f64)
            }
            _ => None,
        }
    }

    /// The value for an internal number (clamped into the domain; ints and indices rounded).
    pub(crate) fn value_of_internal(&self, x: f64) -> ParamValue {
        match self {
            Param::Float { low, high, .. } => ParamValue::Float(x.clamp(*low, *high)),
            Param::Int { low, high, .. } => ParamValue::Int((x.round() as i64).clamp(*low, *high)),
            Param::Categorical { choices } => {
                let i = (x.round().max(0.0) as usize).min(choices.len() - 1);
                ParamValue::Choice(choices[i].clone())
            }
        }
    }

    /// Whether `value` is of this parameter's kind and inside its domain.
    pub fn contains(&self, value: &ParamValue) -> bool {
        self.to_internal(value).is_some()
    }
}

/// A validated set of named parameters, kept sorted by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<String, Param>", into = "BTreeMap<String, Param>")]
pub struct SearchSpace {
    params: BTreeMap<String, Param>,
}

impl SearchSpace {
    /// Checks every parameter: `low < high`, finite bounds, `low > 0` for log scales, non-empty
    /// choices without duplicates, at least one parameter.
    pub fn new(params: BTreeMap<String, Param>) -> Result<Self, TuneError> {
        if params.is_empty() {
            return Err(TuneError::InvalidSpace("a search space needs at least one parameter".to_string()));
        }
        for (name, param) in &params {
            if name.is_empty() {
                return Err(TuneError::InvalidSpace("a parameter has an empty name".to_string()));
            }
            param.validate(name)?;
        }
        Ok(SearchSpace { params })
    }

    /// The parameters, sorted by name.
    pub fn params(&self) -> &BTreeMap<String, Param> {
        &self.params
    }

    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.get(name)
    }

    /// Whether `params` names exactly this space's parameters, each value inside its domain.
    pub fn contains(&self, params: &Params) -> bool {
        params.len() == self.params.len()
            && self.params.iter().all(|(name, p)| params.get(name).is_some_and(|v| p.contains(v)))
    }
}

impl TryFrom<BTreeMap<String, Param>> for SearchSpace {
    type Error = TuneError;

    fn try_from(params: BTreeMap<String, Param>) -> Result<Self, TuneError> {
        SearchSpace::new(params)
    }
}

impl From<SearchSpace> for BTreeMap<String, Param> {
    fn from(space: SearchSpace) -> Self {
        space.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [lr]
        type = "float"
        low = 1e-5
        high = 1e-1
        log = true

        [batch]
        type = "int"
        low = 8
        high = 64

        [optimizer]
        type = "categorical"
        choices = ["adam", "sgd"]
    "#;

    fn parse(text: &str) -> Result<SearchSpace, String> {
        toml::from_str::<SearchSpace>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_module_example_parses_into_three_parameters() {
        let space = parse(EXAMPLE).unwrap();
        assert_eq!(space.get("lr"), Some(&Param::Float { low: 1e-5, high: 1e-1, log: true }));
        assert_eq!(space.get("batch"), Some(&Param::Int { low: 8, high: 64, log: false }));
        assert_eq!(
            space.get("optimizer"),
            Some(&Param::Categorical { choices: vec![Value::from("adam"), Value::from("sgd")] })
        );
        // The same shape in JSON, and back.
        let json = serde_json::to_string(&space).unwrap();
        assert_eq!(serde_json::from_str::<SearchSpace>(&json).unwrap(), space);
    }

    #[test]
    fn invalid_spaces_are_refused_with_the_parameter_and_the_reason() {
        let cases = [
            ("[x]\ntype = \"float\"\nlow = 1.0\nhigh = 1.0", "low (1) must be below high (1)"),
            ("[x]\ntype = \"float\"\nlow = 2.0\nhigh = 1.0", "must be below high"),
            ("[x]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\nlog = true", "log = true needs low > 0"),
            ("[x]\ntype = \"float\"\nlow = 0.0\nhigh = nan", "must be finite"),
            ("[x]\ntype = \"int\"\nlow = 0\nhigh = 10\nlog = true", "log = true needs low > 0"),
            ("[x]\ntype = \"int\"\nlow = 3\nhigh = 3", "must be below high"),
            ("[x]\ntype = \"categorical\"\nchoices = []", "choices is empty"),
            ("[x]\ntype = \"categorical\"\nchoices = [1, 2, 1]", "listed twice"),
            ("[x]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\nstep = 0.1", "unknown field `step`"),
            ("[x]\ntype = \"uniform\"\nlow = 0.0\nhigh = 1.0", "unknown variant `uniform`"),
            ("[x]\ntype = \"float\"\nlow = 0.0", "missing field `high`"),
            ("", "at least one parameter"),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(expected), "{text:?}: {err}");
            if expected.contains("below") || expected.contains("log") || expected.contains("choices") {
                assert!(err.contains("\"x\""), "the error names the parameter: {err}");
            }
        }
    }

    #[test]
    fn values_map_to_internal_numbers_and_back() {
        let space = parse(EXAMPLE).unwrap();
        let opt = space.get("optimizer").unwrap();
        assert_eq!(opt.to_internal(&ParamValue::Choice(Value::from("sgd"))), Some(1.0));
        assert_eq!(opt.to_internal(&ParamValue::Choice(Value::from("rmsprop"))), None);
        assert_eq!(opt.value_of_internal(1.0), ParamValue::Choice(Value::from("sgd")));
        let batch = space.get("batch").unwrap();
        assert_eq!(batch.to_internal(&ParamValue::Int(65)), None);
        assert_eq!(batch.to_internal(&ParamValue::Float(9.0)), None);
        assert_eq!(batch.value_of_internal(70.4), ParamValue::Int(64));
        assert_eq!(batch.value_of_internal(9.6), ParamValue::Int(10));

        let params: Params = [
            ("lr".to_string(), ParamValue::Float(1e-3)),
            ("batch".to_string(), ParamValue::Int(16)),
            ("optimizer".to_string(), ParamValue::Choice(Value::from("adam"))),
        ]
        .into();
        assert!(space.contains(&params));
        let mut missing = params.clone();
        missing.remove("lr");
        assert!(!space.contains(&missing));
    }

    #[test]
    fn param_values_are_tagged_in_json_so_kinds_survive_a_round_trip() {
        let params: Params =
            [("a".to_string(), ParamValue::Float(3.0)), ("b".to_string(), ParamValue::Choice(Value::from(3)))].into();
        let json = serde_json::to_string(&params).unwrap();
        assert_eq!(json, r#"{"a":{"float":3.0},"b":{"choice":3}}"#);
        assert_eq!(serde_json::from_str::<Params>(&json).unwrap(), params);
    }
}
