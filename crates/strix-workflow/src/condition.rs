//! A pipeline's condition: comparisons of the candidate's figures with numbers or with the
//! version an alias points to, joined by `and`. A comparison may leave out its figure to
//! reuse the previous one: `test.map50 >= 0.8 and >= production`.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::WorkflowError;

/// Figures a run's summary gives (`val.*`) and the evaluation step measures (`test.*`).
const VAL_FIGURES: [&str; 5] = ["accuracy", "top5", "loss", "map", "map50"];
const TEST_FIGURES: [&str; 4] = ["accuracy", "macro_f1", "map", "map50"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "==")]
    Eq,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            ">=" => Op::Ge,
            ">" => Op::Gt,
            "<=" => Op::Le,
            "<" => Op::Lt,
            "==" => Op::Eq,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
            Op::Eq => "==",
        }
    }

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Ge => a >= b,
            Op::Gt => a > b,
            Op::Le => a <= b,
            Op::Lt => a < b,
            Op::Eq => a == b,
        }
    }
}

/// What a figure is compared with.
#[derive(Clone, Debug, PartialEq)]
pub enum Against {
    Value(f64),
    /// The same figure of the version this alias of the registered model points to.
    Alias(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Clause {
    /// `val.accuracy`, `test.map50`, ...
    pub figure: String,
    pub op: Op,
    pub against: Against,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub text: String,
    pub clauses: Vec<Clause>,
}

/// One comparison as it came out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClauseOutcome {
    /// As read: `test.accuracy 0.9133 >= production 0.8800`.
    pub text: String,
    pub passed: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub passed: bool,
    pub clauses: Vec<ClauseOutcome>,
}

/// What an alias's version gives for a figure.
pub enum Reference {
    /// No version carries the alias yet: nothing to beat.
    NoVersion,
    /// The alias points to this very model already (the same weights): nothing to compare.
    Same(String),
    Figure(f64),
}

fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if "<>=!".contains(c) {
            let mut op = String::new();
            while let Some(&c) = chars.peek().filter(|c| "<>=!".contains(**c)) {
                op.push(c);
                chars.next();
            }
            out.push(op);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek().filter(|c| !c.is_whitespace() && !"<>=!".contains(**c)) {
                word.push(c);
                chars.next();
            }
            out.push(word);
        }
    }
    out
}

fn check_figure(name: &str) -> Result<(), String> {
    let known = match name.split_once('.') {
        Some(("val", f)) => VAL_FIGURES.contains(&f),
        Some(("test", f)) => TEST_FIGURES.contains(&f),
        _ => false,
    };
    if known {
        return Ok(());
    }
    Err(format!(
        "`{name}` is not a figure; val.{{{}}} come from the run, test.{{{}}} from [evaluate]",
        VAL_FIGURES.join(","),
        TEST_FIGURES.join(",")
    ))
}

/// An alias here starts with a letter: `1_0` or `0x10` are numbers mistyped, not aliases.
fn is_alias(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_alphabetic())
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, WorkflowError> {
        let fail = |reason: String| WorkflowError::Condition { text: text.to_string(), reason };
        let words = tokens(text);
        if words.is_empty() {
            return Err(fail("empty; write comparisons like `test.accuracy >= 0.8`, joined by `and`".into()));
        }
        let mut clauses: Vec<Clause> = Vec::new();
        let mut i = 0;
        loop {
            let figure = match words.get(i) {
                Some(w) if Op::parse(w).is_some() => match clauses.last() {
                    Some(last) => last.figure.clone(),
                    None => return Err(fail(format!("`{w}` with no figure before it"))),
                },
                Some(w) => {
                    check_figure(w).map_err(&fail)?;
                    i += 1;
                    w.clone()
                }
                None => return Err(fail("ends with `and`".into())),
            };
            let op = words.get(i).and_then(|w| Op::parse(w)).ok_or_else(|| {
                fail(format!(
                    "after `{figure}`, expected one of >= > <= < ==, found {}",
                    words.get(i).map_or("the end".to_string(), |w| format!("`{w}`"))
                ))
            })?;
            let against = match words.get(i + 1) {
                Some(w) => match w.parse::<f64>() {
                    Ok(v) if v.is_finite() => Against::Value(v),
                    Ok(_) => return Err(fail(format!("`{w}` is not a finite number"))),
                    _ if is_alias(w) && !w.eq_ignore_ascii_case("and") => Against::Alias(w.clone()),
                    _ => return Err(fail(format!("`{w}` is neither a number nor an alias name"))),
                },
                None => return Err(fail(format!("`{figure} {}` compared with nothing", op.as_str()))),
            };
            clauses.push(Clause { figure, op, against });
            i += 2;
            match words.get(i) {
                None => break,
                Some(w) if w.eq_ignore_ascii_case("and") => i += 1,
                Some(w) => {
                    return Err(fail(format!("expected `and` or the end, found `{w}` (only `and` joins comparisons)")));
                }
            }
        }
        Ok(Condition { text: text.to_string(), clauses })
    }

    /// The aliases compared with.
    pub fn aliases(&self) -> BTreeSet<String> {
        self.clauses
            .iter()
            .filter_map(|c| match &c.against {
                Against::Alias(a) => Some(a.clone()),
                Against::Value(_) => None,
            })
            .collect()
    }

    /// Refuse figures a model of `task` (`classify`, `detect`) does not have, before any work.
    pub fn check_task(&self, task: &str) -> Result<(), WorkflowError> {
        let has: &[&str] = match task {
            "classify" => &["val.accuracy", "val.top5", "val.loss", "test.accuracy", "test.macro_f1"],
            "detect" => &["val.map", "val.map50", "test.map", "test.map50"],
            _ => return Ok(()),
        };
        match self.clauses.iter().find(|c| !has.contains(&c.figure.as_str())) {
            Some(c) => Err(WorkflowError::Condition {
                text: self.text.clone(),
                reason: format!("a {task} model has no `{}`; it has {}", c.figure, has.join(", ")),
            }),
            None => Ok(()),
        }
    }

    /// Whether a figure of the test set is read (so the pipeline must evaluate).
    pub fn uses_test(&self) -> bool {
        self.clauses.iter().any(|c| c.figure.starts_with("test."))
    }

    /// Every comparison, with `figure` giving the candidate's figures and `reference(alias,
    /// figure)` an alias's version's. A figure the model does not have is an error, not a
    /// failed comparison: the condition was written for another kind of model.
    pub fn check(
        &self,
        figure: impl Fn(&str) -> Option<f64>,
        reference: impl Fn(&str, &str) -> Result<Reference, String>,
    ) -> Result<Verdict, WorkflowError> {
        let fail = |reason: String| WorkflowError::Condition { text: self.text.clone(), reason };
        let mut clauses = Vec::new();
        for c in &self.clauses {
            let value = figure(&c.figure).ok_or_else(|| fail(format!("this model has no figure `{}`", c.figure)))?;
            let (against, text) = match &c.against {
                Against::Value(v) => (Some(*v), format!("{v}")),
                Against::Alias(alias) => match reference(alias, &c.figure).map_err(&fail)? {
                    Reference::Figure(v) => (Some(v), format!("{alias} {v:.4}")),
                    Reference::NoVersion => (None, format!("{alias} (no version yet)")),
                    Reference::Same(version) => (None, format!("{alias} ({version}, this very model)")),
                },
            };
            let passed = against.is_none_or(|b| c.op.holds(value, b));
            clauses.push(ClauseOutcome { text: format!("{} {value:.4} {} {text}", c.figure, c.op.as_str()), passed });
        }
        Ok(Verdict { passed: clauses.iter().all(|c| c.passed), clauses })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comparison_without_a_figure_reuses_the_last_one() {
        let c = Condition::parse("val.map50 >= 0.8 and >= production AND test.accuracy>0.5").unwrap();
        assert_eq!(c.clauses.len(), 3);
        assert_eq!(
            c.clauses[1],
            Clause { figure: "val.map50".into(), op: Op::Ge, against: Against::Alias("production".into()) }
        );
        assert_eq!(c.clauses[2].against, Against::Value(0.5));
        assert!(c.uses_test());
        assert_eq!(c.aliases(), ["production".to_string()].into());
    }

    #[test]
    fn bad_conditions_say_what_is_wrong() {
        for (text, needle) in [
            ("", "empty"),
            (">= 0.8", "no figure before it"),
            ("accuracy >= 0.8", "`accuracy` is not a figure"),
            ("test.top5 >= 0.8", "`test.top5` is not a figure"),
            ("val.accuracy => 0.8", "expected one of"),
            ("val.accuracy >= ", "compared with nothing"),
            ("val.accuracy >= 0.8 and", "ends with `and`"),
            ("val.accuracy >= 0.8 or >= production", "only `and`"),
            ("val.accuracy >= pro/duction", "neither a number nor an alias"),
            ("val.accuracy >= NaN", "not a finite number"),
            ("val.accuracy >= 1_0", "neither a number nor an alias"),
            ("val.accuracy >= 0x10", "neither a number nor an alias"),
        ] {
            let e = Condition::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn checks_against_numbers_and_aliases_and_a_missing_alias_passes() {
        let c = Condition::parse("test.accuracy >= 0.8 and >= production").unwrap();
        let figure = |f: &str| (f == "test.accuracy").then_some(0.85);
        let v = c.check(figure, |_, _| Ok(Reference::Figure(0.9))).unwrap();
        assert!(!v.passed);
        assert_eq!(v.clauses[0], ClauseOutcome { text: "test.accuracy 0.8500 >= 0.8".into(), passed: true });
        assert_eq!(
            v.clauses[1],
            ClauseOutcome { text: "test.accuracy 0.8500 >= production 0.9000".into(), passed: false }
        );
        let v = c.check(figure, |_, _| Ok(Reference::NoVersion)).unwrap();
        assert!(v.passed, "{v:?}");
        assert!(v.clauses[1].text.ends_with("production (no version yet)"));
        let e = Condition::parse("test.map50 >= 0.5").unwrap().check(figure, |_, _| Ok(Reference::NoVersion));
        assert!(e.unwrap_err().to_string().contains("no figure `test.map50`"));
        let e = c.check(figure, |_, _| Err("production: trash:2 is a detector".into()));
        assert!(e.unwrap_err().to_string().contains("trash:2 is a detector"));
        let v = c.check(figure, |_, _| Ok(Reference::Same("trash:4".into()))).unwrap();
        assert!(v.passed && v.clauses[1].text.ends_with("production (trash:4, this very model)"), "{v:?}");
        assert!(
            Condition::parse("val.map >= 0.5")
                .unwrap()
                .check_task("classify")
                .unwrap_err()
                .to_string()
                .contains("no `val.map`")
        );
        assert!(Condition::parse("test.map50 >= 0.5").unwrap().check_task("detect").is_ok());
        let lower = Condition::parse("val.loss < 0.5").unwrap();
        assert!(lower.check(|_| Some(0.4), |_, _| Ok(Reference::NoVersion)).unwrap().passed);
    }
}
