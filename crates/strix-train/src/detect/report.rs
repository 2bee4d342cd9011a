//! `report.html` of a detection run: loss terms and mAP per epoch, per-class AP, precision /
//! recall curves, and validation images with the ground truth and the predictions drawn.

use std::fmt::Write as _;
use std::path::Path;

use image::{Rgb, RgbImage, imageops};
use strix_core::{BBox, Detection};
use strix_data::detection::DetectionSet;
use strix_vision::DecodeLimits;
use strix_vision::draw;

use super::assign::iou;
use super::epoch::DetectEpoch;
use super::eval::DetEvaluation;
use crate::TrainError;
use crate::config::TrainConfig;
use crate::lifecycle::Outcome;
use crate::plot::{self, BLUE, ORANGE};
use crate::report::{esc, save_png};
use crate::summary::RunSummary;

/// Precision / recall points at IoU 0.5 for class `class`: detections best first, each a true
/// positive when it overlaps a not yet matched box of its class by half or more.
pub fn pr_curve(set: &DetectionSet, detections: &[Vec<Detection>], class: usize) -> Vec<(f64, f64)> {
    let mut dets: Vec<(f32, usize, [f32; 4])> = detections
        .iter()
        .enumerate()
        .flat_map(|(i, ds)| {
            ds.iter()
                .filter(|d| d.class_id == class)
                .map(move |d| (d.score, i, [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2]))
        })
        .collect();
    dets.sort_by(|a, b| b.0.total_cmp(&a.0));
    let gt: Vec<Vec<[f32; 4]>> = set
        .images
        .iter()
        .map(|im| {
            im.boxes
                .iter()
                .filter(|b| b.class == class && !b.iscrowd)
                .map(|b| [b.bbox[0], b.bbox[1], b.bbox[0] + b.bbox[2], b.bbox[1] + b.bbox[3]])
                .collect()
        })
        .collect();
    let total: usize = gt.iter().map(Vec::len).sum();
    let mut used: Vec<Vec<bool>> = gt.iter().map(|g| vec![false; g.len()]).collect();
    let (mut tp, mut points) = (0usize, vec![(0.0, 1.0)]);
    for (k, (_, i, b)) in dets.iter().enumerate() {
        let best = gt[*i]
            .iter()
            .enumerate()
            .filter(|(j, _)| !used[*i][*j])
            .map(|(j, g)| (j, iou(b, g)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((j, o)) = best
            && o >= 0.5
        {
            used[*i][j] = true;
            tp += 1;
        }
        points.push((tp as f64 / total.max(1) as f64, tp as f64 / (k + 1) as f64));
    }
    points
}

/// Up to `n` validation images (spread over the set), ground truth in green, predictions in
/// their class colours with scores.
fn samples(set: &DetectionSet, detections: &[Vec<Detection>], n: usize, threshold: f32) -> Option<RgbImage> {
    let len = set.images.len();
    if len == 0 {
        return None;
    }
    let (cell, cols) = (256u32, 4u32);
    let count = n.min(len);
    let rows = (count as u32).div_ceil(cols);
    let mut grid = RgbImage::from_pixel(cols * (cell + 8), rows * (cell + 8), Rgb([255, 255, 255]));
    for k in 0..count {
        let i = k * len / count;
        let Ok(img) = strix_vision::decode_file(&set.images[i].path, &DecodeLimits::default()) else { continue };
        let mut img = img;
        for b in &set.images[i].boxes {
            let [x, y, w, h] = b.bbox;
            draw::rect(&mut img, &BBox::new(x, y, x + w, y + h), Rgb([0, 200, 0]), 3);
        }
        let shown: Vec<Detection> = detections[i].iter().filter(|d| d.score > threshold).cloned().collect();
        draw::detections(&mut img, &shown);
        let t = strix_data::inspect::thumbnail(&image::DynamicImage::ImageRgb8(img), cell);
        let (x, y) = ((k as u32 % cols) * (cell + 8) + 4, (k as u32 / cols) * (cell + 8) + 4);
        imageops::overlay(&mut grid, &t, i64::from(x), i64::from(y));
    }
    Some(grid)
}

pub fn write(
    dir: &Path,
    cfg: &TrainConfig,
    saved: &super::SavedDetector,
    outcome: &Outcome<DetectEpoch, DetEvaluation>,
    summary: &RunSummary,
    val: &DetectionSet,
) -> Result<(), TrainError> {
    let h = &outcome.history;
    let col = |f: fn(&DetectEpoch) -> f64| h.iter().map(f).collect::<Vec<f64>>();
    let terms = [
        ("total", BLUE, col(|m| m.loss)),
        ("quality focal", ORANGE, col(|m| m.qfl)),
        ("distribution focal", Rgb([44, 160, 44]), col(|m| m.dfl)),
        ("GIoU", Rgb([214, 39, 40]), col(|m| m.giou)),
    ];
    save_png(&plot::lines("training loss", "epoch", &terms), &dir.join("loss.png"))?;
    let maps = [("mAP@[.5:.95]", BLUE, col(|m| m.map)), ("mAP@.5", ORANGE, col(|m| m.map50))];
    save_png(&plot::lines("validation mAP", "epoch", &maps), &dir.join("map.png"))?;
    let v = &outcome.val;
    let curves: Vec<plot::Curve> = val
        .classes
        .iter()
        .enumerate()
        .map(|(c, name)| (name.clone(), draw::colour(c), pr_curve(val, &v.detections, c)))
        .collect();
    save_png(&plot::unit_curves("precision / recall at IoU 0.5", "recall", "precision", &curves), &dir.join("pr.png"))?;
    let threshold = saved.nms.score_threshold;
    let grid = samples(val, &v.detections, 12, threshold);
    if let Some(g) = &grid {
        save_png(g, &dir.join("samples.png"))?;
    }
    let mut html = crate::report::head(dir);
    crate::report::summary_html(&mut html, "Detector on", cfg, summary);
    if let Some(last) = h.last() {
        let _ = write!(html, "<li>last epoch: {:.1} s, {:.1} images/s</li>", last.seconds, last.images_per_second);
    }
    html.push_str(
        "</ul><h2>Per class (validation)</h2><table><tr><th>class</th><th>AP@[.5:.95]</th><th>AP@.5</th></tr>",
    );
    for c in &v.per_class {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td></tr>",
            esc(&c.name),
            c.ap.max(0.0),
            c.ap50.max(0.0)
        );
    }
    html.push_str("</table><h2>Curves</h2><img src=\"loss.png\"><img src=\"map.png\"><img src=\"pr.png\">");
    if grid.is_some() {
        let _ = write!(
            html,
            "<h2>Validation images</h2><p>Green: ground truth; coloured with scores: the best model's detections above \
             the export's threshold ({threshold}).</p><img src=\"samples.png\">"
        );
    }
    html.push_str("<h2>Epochs</h2><table><tr><th>epoch</th><th>loss</th><th>qfl</th><th>dfl</th><th>giou</th><th>mAP</th><th>mAP@.5</th><th>lr</th><th>s</th><th>img/s</th></tr>");
    for m in h {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.2e}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            m.epoch, m.loss, m.qfl, m.dfl, m.giou, m.map, m.map50, m.lr, m.seconds, m.images_per_second
        );
    }
    html.push_str("</table>");
    crate::report::problems(
        &mut html,
        "Dataset problems",
        "What reading the labels found, and what was done about it.",
        &outcome.problems,
    );
    let unreadable: Vec<String> =
        outcome.skipped.iter().chain(&v.unreadable).map(|(n, r)| format!("{n}: {r}")).collect();
    crate::report::problems(&mut html, "Unreadable images", "Skipped; training went on without them.", &unreadable);
    crate::report::tail(&mut html, cfg);
    crate::checkpoint::write_atomic(&dir.join(crate::files::REPORT_FILE), html.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strix_data::detection::{DetBox, DetImage};

    fn det(class_id: usize, score: f32, b: [f32; 4]) -> Detection {
        Detection { bbox: BBox::new(b[0], b[1], b[2], b[3]), score, class_id, label: String::new() }
    }

    #[test]
    fn pr_points_follow_the_ranked_detections() {
        let mut set = DetectionSet { classes: vec!["a".into()], ..DetectionSet::default() };
        for _ in 0..2 {
            let boxes = vec![DetBox { class: 0, bbox: [0.0, 0.0, 10.0, 10.0], iscrowd: false }];
            set.images.push(DetImage { path: "x.png".into(), width: 20, height: 20, boxes });
        }
        // Best: a hit; then a miss; then the second image's hit.
        let dets = vec![
            vec![det(0, 0.9, [0.0, 0.0, 10.0, 10.0]), det(0, 0.8, [10.0, 10.0, 20.0, 20.0])],
            vec![det(0, 0.7, [1.0, 0.0, 10.0, 10.0])],
        ];
        let p = pr_curve(&set, &dets, 0);
        assert_eq!(p, vec![(0.0, 1.0), (0.5, 1.0), (0.5, 0.5), (1.0, 2.0 / 3.0)]);
    }
}
