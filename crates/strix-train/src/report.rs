//! `report.html` of a run: curves, confusion matrix, per-class table, the worst-classified
//! validation images and the images that could not be read. PNGs beside it.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use image::{Rgb, RgbImage, imageops};
use strix_data::ImageSet;
use strix_data::inspect::thumbnail;
use strix_vision::DecodeLimits;
use strix_vision::draw::text;

use crate::TrainError;
use crate::config::TrainConfig;
use crate::lifecycle::Outcome;
use crate::metrics::{EpochMetrics, Evaluation};
use crate::plot::{self, BLUE, ORANGE};
use crate::summary::RunSummary;

pub(crate) use strix_core::html::escape as esc;

pub(crate) fn save_png(img: &RgbImage, path: &Path) -> Result<(), TrainError> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
    crate::checkpoint::write_atomic(path, &bytes)
}

/// A grid of the worst-classified images with "true -> predicted (p)" under each.
fn worst_grid(set: &Arc<ImageSet>, outcome: &Outcome<EpochMetrics, Evaluation>) -> Option<RgbImage> {
    let worst = &outcome.val.worst;
    if worst.is_empty() {
        return None;
    }
    let (cell, cols) = (128u32, 4u32);
    let rows = (worst.len() as u32).div_ceil(cols);
    let mut grid = RgbImage::from_pixel(cols * (cell + 8), rows * (cell + 36), Rgb([255, 255, 255]));
    let classes = &outcome.val.classes;
    for (k, &(item, truth, pred, p)) in worst.iter().enumerate() {
        let (x, y) = ((k as u32 % cols) * (cell + 8) + 4, (k as u32 / cols) * (cell + 36) + 4);
        if let Ok(img) = set.load(item, &DecodeLimits::default()) {
            let t = thumbnail(&img, cell);
            imageops::overlay(
                &mut grid,
                &t,
                i64::from(x + (cell - t.width()) / 2),
                i64::from(y + (cell - t.height()) / 2),
            );
        }
        let short = |c: usize| classes[c].chars().take(15).collect::<String>();
        text(&mut grid, x as i32, (y + cell + 4) as i32, &short(truth), Rgb([0, 120, 0]), 1);
        text(&mut grid, x as i32, (y + cell + 16) as i32, &format!("{} {:.2}", short(pred), p), Rgb([200, 0, 0]), 1);
    }
    Some(grid)
}

/// The page's head and title, shared by classifier and detector reports.
pub(crate) fn head(dir: &Path) -> String {
    let mut html = String::new();
    let title = format!("Strix training run: {}", dir.file_name().and_then(|n| n.to_str()).unwrap_or("run"));
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         th{{background:#f3f3f3}}td:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>\
         <h1>{t}</h1>",
        t = esc(&title)
    );
    html
}

/// A section listing `items` (one line each), or saying there were none.
pub(crate) fn problems(html: &mut String, title: &str, what: &str, items: &[String]) {
    let _ = write!(html, "<h2>{} ({})</h2>", esc(title), items.len());
    if items.is_empty() {
        html.push_str("<p>None.</p>");
    } else {
        let _ = write!(html, "<p>{}</p><ul>", esc(what));
        for i in items {
            let _ = write!(html, "<li>{}</li>", esc(i));
        }
        html.push_str("</ul>");
    }
}

/// The resolved configuration, and the end of the page.
pub(crate) fn tail(html: &mut String, cfg: &TrainConfig) {
    let _ = write!(
        html,
        "<h2>Configuration</h2><pre>{}</pre></body></html>",
        esc(&cfg.to_toml().unwrap_or_else(|e| format!("({e})")))
    );
}

/// The report's opening from the run's summary: model, epochs, best epoch, why it stopped, the
/// best model's scores. Both tasks' reports start with it.
pub(crate) fn summary_html(html: &mut String, what: &str, cfg: &TrainConfig, s: &RunSummary) {
    let stopped = s.stopped_note().map(|n| format!(" ({n})")).unwrap_or_default();
    let _ = write!(
        html,
        "<p>{what} <b>{}</b> ({:?}), {} epochs run, best epoch {}{}.</p><ul><li>validation <b>{}</b></li>",
        esc(cfg.model.name()),
        cfg.mode(),
        s.epochs_run,
        s.best_epoch.map_or("-".into(), |e| e.to_string()),
        esc(&stopped),
        esc(&s.val.to_string()),
    );
    if let Some(t) = &s.test {
        let _ = write!(html, "<li>test <b>{}</b></li>", esc(&t.to_string()));
    }
}

pub fn write(
    dir: &Path,
    cfg: &TrainConfig,
    outcome: &Outcome<EpochMetrics, Evaluation>,
    summary: &RunSummary,
    val: &Arc<ImageSet>,
) -> Result<(), TrainError> {
    let h = &outcome.history;
    let col = |f: fn(&EpochMetrics) -> f64| h.iter().map(f).collect::<Vec<f64>>();
    save_png(
        &plot::lines(
            "loss",
            "epoch",
            &[("train", BLUE, col(|m| m.train_loss)), ("validation", ORANGE, col(|m| m.val_loss))],
        ),
        &dir.join("loss.png"),
    )?;
    save_png(
        &plot::lines(
            "accuracy",
            "epoch",
            &[("train", BLUE, col(|m| m.train_accuracy)), ("validation", ORANGE, col(|m| m.val_accuracy))],
        ),
        &dir.join("accuracy.png"),
    )?;
    save_png(&plot::confusion(&outcome.val.classes, &outcome.val.confusion), &dir.join("confusion.png"))?;
    let grid = worst_grid(val, outcome);
    if let Some(g) = &grid {
        save_png(g, &dir.join("worst.png"))?;
    }

    let mut html = head(dir);
    summary_html(&mut html, "Model", cfg, summary);
    let v = &outcome.val;
    if let Some(last) = h.last() {
        let _ = write!(html, "<li>last epoch: {:.1} s, {:.0} images/s</li>", last.seconds, last.images_per_second);
    }
    html.push_str("</ul><h2>Curves</h2><img src=\"loss.png\"><img src=\"accuracy.png\">");
    html.push_str("<h2>Epochs</h2><table><tr><th>epoch</th><th>train loss</th><th>train acc</th><th>val loss</th><th>val acc</th><th>val top-5</th><th>lr</th><th>s</th><th>img/s</th></tr>");
    for m in h {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{:.4}</td><td>{:.2}%</td><td>{:.4}</td><td>{:.2}%</td><td>{:.2}%</td><td>{:.2e}</td><td>{:.1}</td><td>{:.0}</td></tr>",
            m.epoch,
            m.train_loss,
            100.0 * m.train_accuracy,
            m.val_loss,
            100.0 * m.val_accuracy,
            100.0 * m.val_top5,
            m.lr,
            m.seconds,
            m.images_per_second
        );
    }
    html.push_str("</table><h2>Confusion matrix (validation)</h2><img src=\"confusion.png\"><p>");
    for (i, c) in v.classes.iter().enumerate() {
        let _ = write!(html, "{i} = {} &nbsp; ", esc(c));
    }
    html.push_str("</p><h2>Per class (validation)</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>");
    for c in &v.per_class {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
            esc(&c.name),
            c.precision,
            c.recall,
            c.f1,
            c.support
        );
    }
    html.push_str("</table>");
    if grid.is_some() {
        html.push_str("<h2>Worst-classified validation images</h2><p>Green: true class; red: prediction and the probability given to the true class.</p><img src=\"worst.png\">");
    }
    let unreadable: Vec<String> =
        outcome.skipped.iter().chain(&v.unreadable).map(|(n, r)| format!("{n}: {r}")).collect();
    problems(&mut html, "Unreadable images", "Skipped; training went on without them.", &unreadable);
    tail(&mut html, cfg);
    crate::checkpoint::write_atomic(&dir.join(crate::files::REPORT_FILE), html.as_bytes())
}
