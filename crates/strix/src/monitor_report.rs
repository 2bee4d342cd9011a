//! `report.html` of `strix monitor run`: one row per feature with the baseline and the current
//! values drawn over each other, the test, its numbers and the verdict. One file, no scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use strix_monitor::{Baseline, Check, Observation};

const BINS: usize = 24;
const W: f64 = 360.0;
const H: f64 = 90.0;

pub fn html(baseline: &Baseline, window: &[Observation], checks: &[Check], model: &str) -> String {
    let mut current: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    for o in window {
        for (name, v) in o.numeric() {
            current.entry(name).or_default().push(v);
        }
        if let Some(c) = &o.class {
            *classes.entry(c.clone()).or_default() += 1;
        }
    }
    let violations = checks.iter().filter(|c| c.drift).count();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=en><meta charset=utf-8><title>Strix monitor: {}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:24px;color:#1d2330}}table{{border-collapse:collapse}}\
         td,th{{padding:6px 10px;border-bottom:1px solid #dde;text-align:left;vertical-align:middle}}\
         .bad{{color:#b00020;font-weight:600}}.ok{{color:#137333}}.key span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}}</style>\
         <h1>{} images against the baseline of {}</h1><p>{} checks, <span class={}>{} violations</span>. \
         <span class=key><span style=background:#8aa4c8></span>baseline<span style=background:#e8833a;opacity:.7></span>current</span></p>\
         <table><tr><th>feature</th><th>baseline and current</th><th>test</th><th>statistic</th><th>p-value</th><th>threshold</th><th>verdict</th></tr>",
        escape(model),
        window.len(),
        escape(model),
        checks.len(),
        if violations > 0 { "bad" } else { "ok" },
        violations
    );
    for c in checks {
        let picture = match (c.feature.as_str(), baseline.statistics.numeric.get(&c.feature)) {
            ("predicted_class", _) => baseline
                .statistics
                .categorical
                .get("predicted_class")
                .map_or(String::new(), |base| bars(base, &classes)),
            (_, Some(base)) => {
                current.get(c.feature.as_str()).map_or(String::new(), |cur| histogram(&base.sample, cur))
            }
            _ => format!(
                "baseline {}<br>current {}",
                escape(&c.baseline_summary.to_string()),
                escape(&c.current_summary.to_string())
            ),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{picture}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class={}>{}</td></tr>",
            escape(&c.feature),
            c.test,
            number(c.statistic),
            c.p_value.map_or("-".into(), number),
            number(c.threshold),
            if c.drift { "bad" } else { "ok" },
            if c.drift { "violation" } else { "ok" }
        );
    }
    out.push_str("</table></html>\n");
    out
}

/// Two histograms on one axis, each scaled to its own total. (Every element ends in ` />`: in
/// HTML an unquoted value would swallow the slash, and the next element would nest inside.)
fn histogram(base: &[f64], cur: &[f64]) -> String {
    let lo = base.iter().chain(cur).copied().fold(f64::INFINITY, f64::min);
    let hi = base.iter().chain(cur).copied().fold(f64::NEG_INFINITY, f64::max);
    let span = (hi - lo).max(1e-12);
    let shares = |v: &[f64]| {
        let mut bins = [0.0f64; BINS];
        for x in v {
            bins[(((x - lo) / span) * BINS as f64).min(BINS as f64 - 1.0).max(0.0) as usize] += 1.0;
        }
        bins.map(|b| b / v.len().max(1) as f64)
    };
    let (a, b) = (shares(base), shares(cur));
    let top = a.iter().chain(&b).copied().fold(1e-12, f64::max);
    let bw = W / BINS as f64;
    let mut svg = format!("<svg width={W} height={} viewBox='0 0 {W} {}'>", H + 14.0, H + 14.0);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        for (v, colour, opacity) in [(x, "#8aa4c8", 1.0), (y, "#e8833a", 0.7)] {
            let h = v / top * H;
            let _ = write!(
                svg,
                "<rect x={:.1} y={:.1} width={:.1} height={h:.1} fill='{colour}' opacity={opacity} />",
                i as f64 * bw,
                H - h,
                bw - 1.0
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=0 y={} font-size=10>{}</text><text x={W} y={} font-size=10 text-anchor=end>{}</text></svg>",
        H + 12.0,
        short(lo),
        H + 12.0,
        short(hi)
    );
    svg
}

/// Each class's share, baseline above current.
fn bars(base: &BTreeMap<String, u64>, cur: &BTreeMap<String, u64>) -> String {
    let (nb, nc) = (base.values().sum::<u64>().max(1) as f64, cur.values().sum::<u64>().max(1) as f64);
    let names: std::collections::BTreeSet<&String> = base.keys().chain(cur.keys()).collect();
    let mut svg = format!("<svg width={W} height={}>", names.len() as f64 * 22.0);
    for (i, name) in names.iter().enumerate() {
        let y = i as f64 * 22.0;
        let b = base.get(*name).copied().unwrap_or(0) as f64 / nb;
        let c = cur.get(*name).copied().unwrap_or(0) as f64 / nc;
        let _ = write!(
            svg,
            "<text x=0 y={:.1} font-size=11>{}</text><rect x=110 y={y:.1} width={:.1} height=9 fill='#8aa4c8' />\
             <rect x=110 y={:.1} width={:.1} height=9 fill='#e8833a' opacity=.7 /><text x={:.1} y={:.1} font-size=10>{:.0}% / {:.0}%</text>",
            y + 14.0,
            escape(&clipped(name, 18)),
            b * 200.0,
            y + 10.0,
            c * 200.0,
            115.0 + b.max(c) * 200.0,
            y + 14.0,
            b * 100.0,
            c * 100.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// At most `n` characters, the rest shown as an ellipsis.
fn clipped(name: &str, n: usize) -> String {
    if name.chars().count() <= n {
        name.to_string()
    } else {
        format!("{}…", name.chars().take(n - 1).collect::<String>())
    }
}

fn short(v: f64) -> String {
    if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.3}") }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A statistic or p-value for people: four decimals, or two significant digits when tiny.
pub(crate) fn number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() || v.abs() >= 1e-3 { format!("{v:.4}") } else { format!("{v:.2e}") }
}
