//! `report.html` of a tuning job: the objective of each trial with the best so far, each
//! trial's objective by epoch, each parameter against the objective (stopped trials marked),
//! and a table of every trial. One self-contained page; the charts are inline SVG.

use std::fmt::Write as _;
use std::path::Path;

use strix_core::html::escape;

use crate::TuneError;
use crate::space::{Param, ParamValue};
use crate::state::Tuning;
use crate::trial::{Trial, TrialState};

/// The job's HTML report inside its folder.
pub const REPORT_FILE: &str = "report.html";

const W: f64 = 560.0;
const H: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 44.0;
const BLUE: &str = "#1f77b4";
const ORANGE: &str = "#ff7f0e";
const RED: &str = "#d62728";
const GREEN: &str = "#2ca02c";

/// An axis: its label, range, and for categories the names of its positions.
struct Axis {
    label: String,
    lo: f64,
    hi: f64,
    log: bool,
    /// Counts (trials, epochs): whole-number ticks.
    whole: bool,
    categories: Vec<String>,
}

impl Axis {
    fn numeric(label: &str, values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let (mut lo, mut hi) = values
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if !lo.is_finite() {
            (lo, hi) = if log { (1.0, 10.0) } else { (0.0, 1.0) };
        }
        if hi - lo <= hi.abs() * 1e-9 {
            (lo, hi) = if log { (lo / 2.0, hi * 2.0) } else { (lo - 0.5, hi + 0.5) };
        }
        Axis { label: label.to_string(), lo, hi, log, whole: false, categories: Vec::new() }
    }

    /// An axis of counts from `lo` to `hi`.
    fn whole(label: &str, lo: f64, hi: f64) -> Axis {
        let hi = hi.max(lo + 1.0);
        Axis { label: label.to_string(), lo: lo - 0.5, hi: hi + 0.5, log: false, whole: true, categories: Vec::new() }
    }

    fn categories(label: &str, categories: Vec<String>) -> Axis {
        let hi = categories.len().max(1) as f64 - 0.5;
        Axis { label: label.to_string(), lo: -0.5, hi, log: false, whole: false, categories }
    }

    /// Where `v` falls, 0 at `lo` and 1 at `hi`.
    fn unit(&self, v: f64) -> f64 {
        if self.log {
            (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    /// Five tick values and their labels.
    fn ticks(&self) -> Vec<(f64, String)> {
        if !self.categories.is_empty() {
            return self.categories.iter().enumerate().map(|(i, c)| (i as f64, c.clone())).collect();
        }
        if self.whole {
            let (lo, hi) = ((self.lo + 0.5) as i64, (self.hi - 0.5) as i64);
            let step = ((hi - lo) / 5 + 1).max(1);
            return (lo..=hi).step_by(step as usize).map(|v| (v as f64, v.to_string())).collect();
        }
        (0..5)
            .map(|k| {
                let t = k as f64 / 4.0;
                let v = if self.log {
                    (self.lo.ln() + t * (self.hi.ln() - self.lo.ln())).exp()
                } else {
                    self.lo + t * (self.hi - self.lo)
                };
                (v, number(v))
            })
            .collect()
    }
}

fn number(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) { format!("{v:.2e}") } else { format!("{v:.4}") }
}

/// A point: where, its colour, filled or hollow, and its tooltip.
struct Mark {
    x: f64,
    y: f64,
    colour: &'static str,
    hollow: bool,
    title: String,
}

/// A line through points, in a colour, this wide.
struct Line(Vec<(f64, f64)>, &'static str, f64);

fn chart(title: &str, x: &Axis, y: &Axis, lines: &[Line], marks: &[Mark]) -> String {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let px = |v: f64| LEFT + x.unit(v).clamp(-0.02, 1.02) * pw;
    let py = |v: f64| TOP + (1.0 - y.unit(v).clamp(-0.02, 1.02)) * ph;
    let mut s = format!(
        "<svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\"><title>{}</title>\
         <text x=\"{LEFT}\" y=\"16\" font-weight=\"bold\">{}</text>",
        escape(title),
        escape(title)
    );
    for (v, label) in y.ticks() {
        let yy = py(v);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"10\">{}</text>",
            W - RIGHT,
            LEFT - 4.0,
            yy + 3.0,
            escape(&label)
        );
    }
    for (v, label) in x.ticks() {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{}</text>",
            px(v),
            TOP + ph + 14.0,
            escape(&label)
        );
    }
    let _ = write!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#000\"/>\
         <text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{}</text>\
         <text x=\"12\" y=\"{:.1}\" font-size=\"11\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
        LEFT + pw / 2.0,
        H - 8.0,
        escape(&x.label),
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        escape(&y.label)
    );
    for Line(points, colour, width) in lines {
        let pts: Vec<String> = points.iter().map(|&(a, b)| format!("{:.1},{:.1}", px(a), py(b))).collect();
        let _ = write!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\" opacity=\"0.8\"/>",
            pts.join(" ")
        );
    }
    for m in marks {
        let fill = if m.hollow { "white" } else { m.colour };
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{fill}\" stroke=\"{}\" stroke-width=\"1.5\"><title>{}</title></circle>",
            px(m.x),
            py(m.y),
            m.colour,
            escape(&m.title)
        );
    }
    s.push_str("</svg>");
    s
}

/// A trial's mark: blue for complete, hollow orange for stopped early.
fn mark(trial: &Trial, x: f64, y: f64, best: Option<u64>) -> Mark {
    let (colour, hollow) = match trial.state {
        TrialState::Pruned => (ORANGE, true),
        _ if Some(trial.id) == best => (GREEN, false),
        _ => (BLUE, false),
    };
    Mark { x, y, colour, hollow, title: format!("trial {} ({:?}): {}", trial.id, trial.state, number(y)) }
}

fn value_text(v: &ParamValue) -> String {
    match v {
        ParamValue::Float(f) => number(*f),
        ParamValue::Int(i) => i.to_string(),
        ParamValue::Choice(serde_json::Value::String(s)) => s.clone(),
        ParamValue::Choice(c) => c.to_string(),
    }
}

/// Where a parameter's value falls on its axis.
type Position = Box<dyn Fn(&ParamValue) -> Option<f64>>;

/// One chart per parameter: its value against the objective.
fn param_charts(tuning: &Tuning, objective: &str, scored: &[(&Trial, f64)], best: Option<u64>) -> String {
    let y = Axis::numeric(objective, scored.iter().map(|(_, v)| *v), false);
    let mut out = String::new();
    for (name, param) in tuning.study.space().params() {
        let value = |t: &Trial| t.params.get(name).cloned();
        let (axis, position): (Axis, Position) = match param {
            Param::Categorical { choices } => {
                let names = choices.iter().map(|c| value_text(&ParamValue::Choice(c.clone()))).collect();
                let choices = choices.clone();
                let at = move |v: &ParamValue| {
                    v.as_choice().and_then(|c| choices.iter().position(|x| x == c)).map(|i| i as f64)
                };
                (Axis::categories(name, names), Box::new(at))
            }
            Param::Float { low, high, log } => {
                (Axis::numeric(name, [*low, *high].into_iter(), *log), Box::new(|v: &ParamValue| v.as_f64()))
            }
            Param::Int { low, high, log } => (
                Axis::numeric(name, [*low as f64, *high as f64].into_iter(), *log),
                Box::new(|v: &ParamValue| v.as_i64().map(|i| i as f64)),
            ),
        };
        let marks: Vec<Mark> =
            scored.iter().filter_map(|(t, v)| Some(mark(t, position(&value(t)?)?, *v, best))).collect();
        out.push_str(&chart(&format!("{name} against {objective}"), &axis, &y, &[], &marks));
    }
    out
}

/// The report's charts: objective per trial with the best so far, objective by epoch.
fn trial_charts(tuning: &Tuning, objective: &str, scored: &[(&Trial, f64)], best: Option<u64>) -> String {
    let trials = tuning.study.trials();
    let maximize = tuning.settings.maximize;
    let mut best_so_far: Vec<(f64, f64)> = Vec::new();
    let mut running: Option<f64> = None;
    for (t, v) in scored.iter().filter(|(t, _)| t.state == TrialState::Complete) {
        let better = running.is_none_or(|r| if maximize { *v > r } else { *v < r });
        if better {
            running = Some(*v);
        }
        if let Some(r) = running {
            best_so_far.push((t.id as f64, r));
        }
    }
    let x = Axis::whole("trial", 0.0, trials.len().saturating_sub(1) as f64);
    let y = Axis::numeric(objective, scored.iter().map(|(_, v)| *v), false);
    let marks: Vec<Mark> = scored.iter().map(|(t, v)| mark(t, t.id as f64, *v, best)).collect();
    let mut out =
        chart(&format!("{objective} per trial (line: best so far)"), &x, &y, &[Line(best_so_far, GREEN, 2.0)], &marks);
    let readings = |t: &Trial| -> Vec<(f64, f64)> {
        t.intermediate.iter().map(|(&s, &v)| (s as f64, tuning.settings.from_study(v))).collect()
    };
    let last = trials.iter().flat_map(|t| t.intermediate.keys().copied()).max().unwrap_or(1);
    let ex = Axis::whole("epoch", 1.0, last as f64);
    let ey = Axis::numeric(objective, trials.iter().flat_map(|t| readings(t).into_iter().map(|p| p.1)), false);
    let lines: Vec<Line> = trials
        .iter()
        .map(|t| match t.state {
            TrialState::Pruned => Line(readings(t), ORANGE, 1.0),
            TrialState::Failed => Line(readings(t), RED, 1.0),
            _ if Some(t.id) == best => Line(readings(t), GREEN, 2.5),
            _ => Line(readings(t), BLUE, 1.0),
        })
        .collect();
    let ends: Vec<Mark> = trials
        .iter()
        .filter(|t| t.state == TrialState::Pruned)
        .filter_map(|t| readings(t).last().map(|&(s, v)| mark(t, s, v, best)))
        .collect();
    out.push_str(&chart(&format!("{objective} by epoch (hollow: stopped early)"), &ex, &ey, &lines, &ends));
    out
}

fn table(tuning: &Tuning, best: Option<u64>) -> String {
    let names: Vec<&String> = tuning.study.space().params().keys().collect();
    let mut s =
        String::from("<table><tr><th>trial</th><th>state</th><th>objective</th><th>epochs</th><th>seconds</th>");
    for n in &names {
        let _ = write!(s, "<th>{}</th>", escape(n));
    }
    s.push_str("<th>run</th><th>note</th></tr>");
    for t in tuning.study.trials() {
        let run = tuning.runs.get(&t.id);
        let class = if Some(t.id) == best { " class=\"best\"" } else { "" };
        let _ = write!(
            s,
            "<tr{class}><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td>",
            t.id,
            t.state,
            tuning.objective(t).map(number).unwrap_or_default(),
            run.map(|r| r.epochs.to_string()).unwrap_or_default(),
            run.map(|r| format!("{:.0}", r.seconds)).unwrap_or_default(),
        );
        for n in &names {
            let _ = write!(s, "<td>{}</td>", t.params.get(*n).map(value_text).map(|v| escape(&v)).unwrap_or_default());
        }
        let note = run.and_then(|r| r.error.clone().or(r.stopped.clone())).unwrap_or_default();
        let link = run.map(|r| format!("<a href=\"{0}/report.html\">{0}</a>", escape(&r.dir))).unwrap_or_default();
        let _ = write!(s, "<td>{link}</td><td>{}</td></tr>", escape(&note));
    }
    s.push_str("</table>");
    s
}

/// The page, written atomically into the tuning folder.
pub fn write(folder: &Path, tuning: &Tuning) -> Result<(), TuneError> {
    let settings = &tuning.settings;
    let objective = &settings.objective;
    let scored: Vec<(&Trial, f64)> =
        tuning.study.trials().iter().filter_map(|t| Some((t, tuning.objective(t)?))).collect();
    let best = tuning.best();
    let best_id = best.map(|(t, _)| t.id);
    let (complete, pruned, failed) = tuning.counts();
    let headline = match best {
        Some((t, v)) => {
            let params: Vec<String> = t.params.iter().map(|(k, v)| format!("{k} = {}", value_text(v))).collect();
            format!("best: trial {} with {objective} {}, at {}", t.id, number(v), params.join(", "))
        }
        None => "no trial has completed yet".to_string(),
    };
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>strix tune {job}</title><style>\
         body{{font-family:sans-serif;margin:24px}} svg{{margin:6px;font-family:sans-serif}}\
         table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:3px 6px}}\
         tr.best{{background:#e5f5e0}}</style></head><body>\
         <h1>Tuning job {job}</h1>\
         <p>{task} on {data}: {objective} ({direction} is better), {strategy} sampling, early stopping: {stopping}, \
         {parallel} trials at a time.</p>\
         <p><b>{headline}</b></p>\
         <p>{done} of {trials} trials ended: {complete} complete, {pruned} stopped early, {failed} failed.</p>\
         <p>Green: the best trial; blue: complete; hollow orange: stopped early (its last reading); red: failed.</p>\
         {trial_charts}<h2>Parameters</h2>{param_charts}<h2>Trials</h2>{table}</body></html>\n",
        job = escape(&tuning.job_id),
        task = tuning.task.as_str(),
        data = escape(tuning.base.get("data").and_then(|d| d.as_str()).unwrap_or("?")),
        objective = escape(objective),
        direction = if settings.maximize { "higher" } else { "lower" },
        strategy = settings.strategy.name(),
        stopping = settings.early_stopping.name(),
        parallel = settings.parallel,
        headline = escape(&headline),
        done = complete + pruned + failed,
        trials = settings.trials,
        trial_charts = trial_charts(tuning, objective, &scored, best_id),
        param_charts = param_charts(tuning, objective, &scored, best_id),
        table = table(tuning, best_id),
    );
    let path = folder.join(REPORT_FILE);
    strix_core::fs::write_atomic(&path, page.as_bytes()).map_err(TuneError::io(&path))
}
