//! COCO evaluation, the same numbers as pycocotools' `COCOeval` for `iouType` `bbox` and
//! `keypoints`, step for step: its quirks (crowd boxes matched by intersection over the
//! detection's area, ground truth ignored by its `area` field, stable sorts, 101-point
//! interpolation, `-1` where a slice has no data) are kept on purpose.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::MetricsError;

/// A COCO-format ground-truth file (the fields evaluation reads; others are ignored).
#[derive(Clone, Debug, Deserialize)]
pub struct Dataset {
    pub images: Vec<Image>,
    #[serde(default)]
    pub annotations: Vec<Annotation>,
    pub categories: Vec<Category>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Image {
    pub id: u64,
    #[serde(default)]
    pub file_name: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Category {
    pub id: u64,
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Annotation {
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    pub bbox: [f64; 4],
    pub area: f64,
    #[serde(default)]
    pub iscrowd: u8,
    #[serde(default)]
    pub keypoints: Option<Vec<f64>>,
    #[serde(default)]
    pub num_keypoints: Option<u32>,
}

/// One detection of a COCO results file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Result {
    pub image_id: u64,
    pub category_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f64; 4]>,
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keypoints: Option<Vec<f64>>,
}

/// The one adapter from Strix's answers to COCO results: `strix eval` (classes matched by name)
/// and the detector trainer (classes by index) both go through it, so their numbers agree.
impl Result {
    /// A detection as a box result: COCO boxes are `[x, y, width, height]`, ours are corners.
    pub fn from_detection(image_id: u64, category_id: u64, d: &strix_core::Detection) -> Result {
        let b = &d.bbox;
        Result {
            image_id,
            category_id,
            bbox: Some([f64::from(b.x1), f64::from(b.y1), f64::from(b.width()), f64::from(b.height())]),
            score: f64::from(d.score),
            keypoints: None,
        }
    }

    /// A person's keypoints as a keypoint result: `[x, y, score]` per keypoint, in the model's order.
    pub fn from_pose(image_id: u64, category_id: u64, pose: &strix_core::Pose) -> Result {
        let keypoints =
            pose.keypoints.iter().flat_map(|k| [f64::from(k.x), f64::from(k.y), f64::from(k.score)]).collect();
        Result { image_id, category_id, bbox: None, score: f64::from(pose.score), keypoints: Some(keypoints) }
    }
}

/// What is matched: boxes by IoU, or keypoints by OKS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IouType {
    Bbox,
    Keypoints,
}

/// COCO's per-keypoint OKS constants for the 17 person keypoints (pycocotools'
/// `kpt_oks_sigmas`: the published values divided by 10).
pub const COCO_SIGMAS: [f64; 17] = [
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089,
    0.089,
];

/// The summary `COCOeval.summarize()` prints, with names.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// `(name, value)`: 12 for boxes (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm,
    /// ARl), 10 for keypoints (AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl); -1 where a
    /// slice has nothing to measure.
    pub stats: Vec<(String, f64)>,
    /// AP@[.5:.95] and AP@.5 per category (all areas, most detections).
    pub per_class: Vec<ClassAp>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassAp {
    pub category_id: u64,
    pub name: String,
    pub ap: f64,
    pub ap50: f64,
}

/// A detection as evaluation sees it (after pycocotools' `loadRes`).
#[derive(Clone, Debug)]
struct Det {
    score: f64,
    bbox: [f64; 4],
    area: f64,
    keypoints: Vec<f64>,
}

struct Gt<'a> {
    ann: &'a Annotation,
    ignore: bool,
}

/// numpy's `linspace(start, stop, num)`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| start + i as f64 * step).collect();
    v[num - 1] = stop;
    v
}

/// Per-image matching of one category, area range and detection cap (`evaluateImg`).
struct ImageEval {
    /// `[threshold][detection]`: matched to a ground truth.
    dt_matched: Vec<Vec<bool>>,
    dt_ignore: Vec<Vec<bool>>,
    dt_scores: Vec<f64>,
    gt_ignore: Vec<bool>,
}

/// Evaluate `results` against `gt`.
pub fn evaluate(gt: &Dataset, results: &[Result], iou_type: IouType) -> std::result::Result<Summary, MetricsError> {
    let invalid = |reason: String| MetricsError::Invalid { what: "COCO evaluation".into(), reason };
    let img_ids: Vec<u64> = gt.images.iter().map(|i| i.id).collect::<BTreeSet<_>>().into_iter().collect();
    let cat_ids: Vec<u64> = gt.categories.iter().map(|c| c.id).collect::<BTreeSet<_>>().into_iter().collect();
    let known_imgs: std::collections::HashSet<u64> = img_ids.iter().copied().collect();
    let (area_rngs, max_dets): (Vec<[f64; 2]>, Vec<usize>) = match iou_type {
        IouType::Bbox => {
            (vec![[0.0, 1e10], [0.0, 32.0 * 32.0], [32.0 * 32.0, 96.0 * 96.0], [96.0 * 96.0, 1e10]], vec![1, 10, 100])
        }
        IouType::Keypoints => (vec![[0.0, 1e10], [32.0 * 32.0, 96.0 * 96.0], [96.0 * 96.0, 1e10]], vec![20]),
    };
    let iou_thrs = linspace(0.5, 0.95, 10);
    let rec_thrs = linspace(0.0, 1.0, 101);

    // loadRes: areas (and for keypoints, boxes) derived from the results.
    let mut dts: HashMap<(u64, u64), Vec<Det>> = HashMap::new();
    for (i, r) in results.iter().enumerate() {
        if !known_imgs.contains(&r.image_id) {
            return Err(invalid(format!(
                "result {i} is for image {}, which the ground truth does not have",
                r.image_id
            )));
        }
        let det = match iou_type {
            IouType::Bbox => {
                let bbox = r.bbox.ok_or_else(|| invalid(format!("result {i} has no bbox")))?;
                Det { score: r.score, bbox, area: bbox[2] * bbox[3], keypoints: vec![] }
            }
            IouType::Keypoints => {
                let kps = r.keypoints.clone().ok_or_else(|| invalid(format!("result {i} has no keypoints")))?;
                if kps.len() != COCO_SIGMAS.len() * 3 {
                    return Err(invalid(format!(
                        "result {i} has {} keypoint values, not {}",
                        kps.len(),
                        COCO_SIGMAS.len() * 3
                    )));
                }
                let xs = kps.iter().step_by(3);
                let ys = kps.iter().skip(1).step_by(3);
                let (x0, x1) =
                    (xs.clone().copied().fold(f64::INFINITY, f64::min), xs.copied().fold(f64::NEG_INFINITY, f64::max));
                let (y0, y1) =
                    (ys.clone().copied().fold(f64::INFINITY, f64::min), ys.copied().fold(f64::NEG_INFINITY, f64::max));
                Det { score: r.score, bbox: [x0, y0, x1 - x0, y1 - y0], area: (x1 - x0) * (y1 - y0), keypoints: kps }
            }
        };
        dts.entry((r.image_id, r.category_id)).or_default().push(det);
    }
    // _prepare: pycocotools sets `ignore` from `iscrowd` alone (overwriting any `ignore` field).
    let mut gts: HashMap<(u64, u64), Vec<Gt>> = HashMap::new();
    for ann in &gt.annotations {
        let mut ignore = ann.iscrowd != 0;
        if iou_type == IouType::Keypoints {
            let kps =
                ann.keypoints.as_ref().ok_or_else(|| invalid(format!("annotation {} has no keypoints", ann.id)))?;
            if kps.len() != COCO_SIGMAS.len() * 3 {
                return Err(invalid(format!("annotation {} has {} keypoint values", ann.id, kps.len())));
            }
            ignore |= ann.num_keypoints.unwrap_or(0) == 0;
        }
        gts.entry((ann.image_id, ann.category_id)).or_default().push(Gt { ann, ignore });
    }
    // Detections best first (stable), capped, with their IoU/OKS against each ground truth.
    let max_det = *max_dets.last().expect("caps");
    for d in dts.values_mut() {
        d.sort_by(|a, b| b.score.total_cmp(&a.score));
        d.truncate(max_det);
    }
    let empty_d: Vec<Det> = Vec::new();
    let empty_g: Vec<Gt> = Vec::new();
    let mut evals: Vec<Option<ImageEval>> = Vec::with_capacity(cat_ids.len() * area_rngs.len() * img_ids.len());
    for &cat in &cat_ids {
        let ious: Vec<Vec<Vec<f64>>> = img_ids
            .iter()
            .map(|&img| {
                let d = dts.get(&(img, cat)).unwrap_or(&empty_d);
                let g = gts.get(&(img, cat)).unwrap_or(&empty_g);
                match iou_type {
                    IouType::Bbox => box_ious(d, g),
                    IouType::Keypoints => oks(d, g),
                }
            })
            .collect();
        for rng in &area_rngs {
            for (ii, &img) in img_ids.iter().enumerate() {
                let d = dts.get(&(img, cat)).unwrap_or(&empty_d);
                let g = gts.get(&(img, cat)).unwrap_or(&empty_g);
                evals.push(evaluate_img(d, g, &ious[ii], *rng, max_det, &iou_thrs));
            }
        }
    }
    // accumulate: precision[t][r][k][a][m], recall[t][k][a][m], -1 where undefined.
    let (t_n, r_n, k_n, a_n, m_n, i_n) =
        (iou_thrs.len(), rec_thrs.len(), cat_ids.len(), area_rngs.len(), max_dets.len(), img_ids.len());
    let mut precision = vec![-1.0; t_n * r_n * k_n * a_n * m_n];
    let mut recall = vec![-1.0; t_n * k_n * a_n * m_n];
    let p_at = |t: usize, r: usize, k: usize, a: usize, m: usize| (((t * r_n + r) * k_n + k) * a_n + a) * m_n + m;
    let r_at = |t: usize, k: usize, a: usize, m: usize| ((t * k_n + k) * a_n + a) * m_n + m;
    for k in 0..k_n {
        for a in 0..a_n {
            for (m, &cap) in max_dets.iter().enumerate() {
                let es: Vec<&ImageEval> = (0..i_n).filter_map(|i| evals[(k * a_n + a) * i_n + i].as_ref()).collect();
                if es.is_empty() {
                    continue;
                }
                // Concatenate per-image detections (each capped), then a stable sort by score.
                let mut rows: Vec<(f64, usize, usize)> = Vec::new();
                for (e_i, e) in es.iter().enumerate() {
                    for d in 0..e.dt_scores.len().min(cap) {
                        rows.push((e.dt_scores[d], e_i, d));
                    }
                }
                rows.sort_by(|x, y| y.0.total_cmp(&x.0));
                let npig = es.iter().flat_map(|e| &e.gt_ignore).filter(|ig| !**ig).count();
                if npig == 0 {
                    continue;
                }
                for t in 0..t_n {
                    let (mut tp, mut fp) = (0f64, 0f64);
                    let mut rc = Vec::with_capacity(rows.len());
                    let mut pr = Vec::with_capacity(rows.len());
                    for &(_, e_i, d) in &rows {
                        let (matched, ignored) = (es[e_i].dt_matched[t][d], es[e_i].dt_ignore[t][d]);
                        if matched && !ignored {
                            tp += 1.0;
                        } else if !matched && !ignored {
                            fp += 1.0;
                        }
                        rc.push(tp / npig as f64);
                        pr.push(tp / (fp + tp + f64::EPSILON));
                    }
                    recall[r_at(t, k, a, m)] = rc.last().copied().unwrap_or(0.0);
                    for i in (1..pr.len()).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    for (ri, &thr) in rec_thrs.iter().enumerate() {
                        // searchsorted(rc, thr, 'left'); beyond the last detection the rest stay 0.
                        let pi = rc.partition_point(|&v| v < thr);
                        precision[p_at(t, ri, k, a, m)] = if pi < pr.len() { pr[pi] } else { 0.0 };
                    }
                }
            }
        }
    }
    // summarize
    let mean = |vals: Vec<f64>| {
        let valid: Vec<f64> = vals.into_iter().filter(|v| *v > -1.0).collect();
        if valid.is_empty() { -1.0 } else { valid.iter().sum::<f64>() / valid.len() as f64 }
    };
    let ap = |t: Option<usize>, a: usize, m: usize| {
        let ts: Vec<usize> = t.map_or((0..t_n).collect(), |t| vec![t]);
        mean(
            ts.iter()
                .flat_map(|&t| (0..r_n).flat_map(move |r| (0..k_n).map(move |k| (t, r, k))))
                .map(|(t, r, k)| precision[p_at(t, r, k, a, m)])
                .collect(),
        )
    };
    let ar = |t: Option<usize>, a: usize, m: usize| {
        let ts: Vec<usize> = t.map_or((0..t_n).collect(), |t| vec![t]);
        mean(ts.iter().flat_map(|&t| (0..k_n).map(move |k| (t, k))).map(|(t, k)| recall[r_at(t, k, a, m)]).collect())
    };
    let last = m_n - 1;
    let stats: Vec<(&str, f64)> = match iou_type {
        IouType::Bbox => vec![
            ("AP", ap(None, 0, 2)),
            ("AP50", ap(Some(0), 0, 2)),
            ("AP75", ap(Some(5), 0, 2)),
            ("AP_small", ap(None, 1, 2)),
            ("AP_medium", ap(None, 2, 2)),
            ("AP_large", ap(None, 3, 2)),
            ("AR1", ar(None, 0, 0)),
            ("AR10", ar(None, 0, 1)),
            ("AR100", ar(None, 0, 2)),
            ("AR_small", ar(None, 1, 2)),
            ("AR_medium", ar(None, 2, 2)),
            ("AR_large", ar(None, 3, 2)),
        ],
        IouType::Keypoints => vec![
            ("AP", ap(None, 0, last)),
            ("AP50", ap(Some(0), 0, last)),
            ("AP75", ap(Some(5), 0, last)),
            ("AP_medium", ap(None, 1, last)),
            ("AP_large", ap(None, 2, last)),
            ("AR", ar(None, 0, last)),
            ("AR50", ar(Some(0), 0, last)),
            ("AR75", ar(Some(5), 0, last)),
            ("AR_medium", ar(None, 1, last)),
            ("AR_large", ar(None, 2, last)),
        ],
    };
    let names: HashMap<u64, &str> = gt.categories.iter().map(|c| (c.id, c.name.as_str())).collect();
    let per_class = cat_ids
        .iter()
        .enumerate()
        .map(|(k, &id)| {
            let class_ap = |ts: Vec<usize>| {
                mean(
                    ts.into_iter()
                        .flat_map(|t| (0..r_n).map(move |r| (t, r)))
                        .map(|(t, r)| precision[p_at(t, r, k, 0, last)])
                        .collect(),
                )
            };
            ClassAp {
                category_id: id,
                name: names.get(&id).unwrap_or(&"").to_string(),
                ap: class_ap((0..t_n).collect()),
                ap50: class_ap(vec![0]),
            }
        })
        .collect();
    Ok(Summary { stats: stats.into_iter().map(|(n, v)| (n.to_string(), v)).collect(), per_class })
}

/// `maskUtils.iou` on boxes: `[detection][ground truth]`; a crowd box counts the intersection
/// over the detection's area.
fn box_ious(dts: &[Det], gts: &[Gt]) -> Vec<Vec<f64>> {
    if dts.is_empty() || gts.is_empty() {
        return Vec::new();
    }
    dts.iter()
        .map(|d| {
            gts.iter()
                .map(|g| {
                    let (a, b) = (d.bbox, g.ann.bbox);
                    let w = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
                    let h = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
                    if w <= 0.0 || h <= 0.0 {
                        return 0.0;
                    }
                    let inter = w * h;
                    let union = if g.ann.iscrowd != 0 { a[2] * a[3] } else { a[2] * a[3] + b[2] * b[3] - inter };
                    inter / union
                })
                .collect()
        })
        .collect()
}

/// Object keypoint similarity, `[detection][ground truth]` (`computeOks`).
fn oks(dts: &[Det], gts: &[Gt]) -> Vec<Vec<f64>> {
    if dts.is_empty() || gts.is_empty() {
        return Vec::new();
    }
    let vars: Vec<f64> = COCO_SIGMAS.iter().map(|s| (s * 2.0).powi(2)).collect();
    let mut out = vec![vec![0.0; gts.len()]; dts.len()];
    for (j, g) in gts.iter().enumerate() {
        let kg = g.ann.keypoints.as_deref().unwrap_or(&[]);
        let visible = (0..vars.len()).filter(|&i| kg[i * 3 + 2] > 0.0).count();
        let bb = g.ann.bbox;
        let (x0, x1, y0, y1) = (bb[0] - bb[2], bb[0] + bb[2] * 2.0, bb[1] - bb[3], bb[1] + bb[3] * 2.0);
        for (i, d) in dts.iter().enumerate() {
            let mut sum = 0.0;
            let mut n = 0usize;
            for k in 0..vars.len() {
                let (xd, yd) = (d.keypoints[k * 3], d.keypoints[k * 3 + 1]);
                let (dx, dy) = if visible > 0 {
                    if kg[k * 3 + 2] <= 0.0 {
                        continue;
                    }
                    (xd - kg[k * 3], yd - kg[k * 3 + 1])
                } else {
                    ((x0 - xd).max(0.0) + (xd - x1).max(0.0), (y0 - yd).max(0.0) + (yd - y1).max(0.0))
                };
                let e = (dx * dx + dy * dy) / vars[k] / (g.ann.area + f64::EPSILON) / 2.0;
                sum += (-e).exp();
                n += 1;
            }
            out[i][j] = if n == 0 { 0.0 } else { sum / n as f64 };
        }
    }
    out
}

/// `evaluateImg` for one image, category and area range. `ious` rows follow `dts` (sorted,
/// capped); `None` when the image has neither ground truth nor detections.
fn evaluate_img(
    dts: &[Det],
    gts: &[Gt],
    ious: &[Vec<f64>],
    rng: [f64; 2],
    max_det: usize,
    thrs: &[f64],
) -> Option<ImageEval> {
    if dts.is_empty() && gts.is_empty() {
        return None;
    }
    let out_of_range = |area: f64| area < rng[0] || area > rng[1];
    let gt_ignore_raw: Vec<bool> = gts.iter().map(|g| g.ignore || out_of_range(g.ann.area)).collect();
    // Ground truth that counts first (stable), as pycocotools orders it.
    let mut order: Vec<usize> = (0..gts.len()).collect();
    order.sort_by_key(|&i| gt_ignore_raw[i]);
    let gt_ignore: Vec<bool> = order.iter().map(|&i| gt_ignore_raw[i]).collect();
    let crowd: Vec<bool> = order.iter().map(|&i| gts[i].ann.iscrowd != 0).collect();
    let dts = &dts[..dts.len().min(max_det)];
    let (t_n, d_n, g_n) = (thrs.len(), dts.len(), gts.len());
    let mut gt_matched = vec![vec![false; g_n]; t_n];
    let mut dt_matched = vec![vec![false; d_n]; t_n];
    let mut dt_ignore = vec![vec![false; d_n]; t_n];
    if !ious.is_empty() {
        for (t, &thr) in thrs.iter().enumerate() {
            for d in 0..d_n {
                let mut best = thr.min(1.0 - 1e-10);
                let mut m: Option<usize> = None;
                for g in 0..g_n {
                    if gt_matched[t][g] && !crowd[g] {
                        continue;
                    }
                    // Once matched to counted ground truth, stop at the ignored ones.
                    if m.is_some_and(|m| !gt_ignore[m]) && gt_ignore[g] {
                        break;
                    }
                    let iou = ious[d][order[g]];
                    if iou < best {
                        continue;
                    }
                    best = iou;
                    m = Some(g);
                }
                if let Some(g) = m {
                    dt_ignore[t][d] = gt_ignore[g];
                    dt_matched[t][d] = true;
                    gt_matched[t][g] = true;
                }
            }
        }
    }
    for t in 0..t_n {
        for d in 0..d_n {
            if !dt_matched[t][d] && out_of_range(dts[d].area) {
                dt_ignore[t][d] = true;
            }
        }
    }
    Some(ImageEval { dt_matched, dt_ignore, dt_scores: dts.iter().map(|d| d.score).collect(), gt_ignore })
}

impl Summary {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.stats.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(anns: Vec<Annotation>) -> Dataset {
        Dataset {
            images: vec![Image { id: 1, file_name: None }, Image { id: 2, file_name: None }],
            annotations: anns,
            categories: vec![Category { id: 1, name: "a".into() }, Category { id: 2, name: "b".into() }],
        }
    }

    fn ann(id: u64, image_id: u64, category_id: u64, bbox: [f64; 4]) -> Annotation {
        Annotation {
            id,
            image_id,
            category_id,
            bbox,
            area: bbox[2] * bbox[3],
            iscrowd: 0,
            keypoints: None,
            num_keypoints: None,
        }
    }

    fn res(image_id: u64, category_id: u64, bbox: [f64; 4], score: f64) -> Result {
        Result { image_id, category_id, bbox: Some(bbox), score, keypoints: None }
    }

    #[test]
    fn adapter_writes_corner_boxes_as_coco_boxes_that_match_their_ground_truth() {
        use strix_core::{BBox, Detection};
        let d = Detection { bbox: BBox::new(10.0, 20.0, 40.0, 60.0), score: 0.75, class_id: 0, label: "a".into() };
        let r = Result::from_detection(2, 1, &d);
        assert_eq!((r.image_id, r.category_id, r.bbox, r.score), (2, 1, Some([10.0, 20.0, 30.0, 40.0]), 0.75));
        assert!(r.keypoints.is_none());
        let gt = dataset(vec![ann(1, 2, 1, [10.0, 20.0, 30.0, 40.0])]);
        let s = evaluate(&gt, &[r], IouType::Bbox).unwrap();
        assert!((s.get("AP").unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn adapter_writes_keypoints_as_x_y_score_triples() {
        use strix_core::{BBox, Keypoint, Pose};
        let kp = |x, y, score| Keypoint { name: String::new(), x, y, score };
        let pose = Pose {
            score: 0.5,
            bbox: BBox::new(0.0, 0.0, 1.0, 1.0),
            keypoints: vec![kp(1.0, 2.0, 0.25), kp(3.0, 4.0, 1.0)],
        };
        let r = Result::from_pose(7, 3, &pose);
        assert_eq!((r.image_id, r.category_id, r.score, r.bbox), (7, 3, 0.5, None));
        assert_eq!(r.keypoints, Some(vec![1.0, 2.0, 0.25, 3.0, 4.0, 1.0]));
    }

    #[test]
    fn perfect_detections_score_one() {
        let gt = dataset(vec![ann(1, 1, 1, [10.0, 10.0, 50.0, 50.0]), ann(2, 2, 2, [0.0, 0.0, 200.0, 100.0])]);
        let r = vec![res(1, 1, [10.0, 10.0, 50.0, 50.0], 0.9), res(2, 2, [0.0, 0.0, 200.0, 100.0], 0.8)];
        let s = evaluate(&gt, &r, IouType::Bbox).unwrap();
        // Precision is tp / (tp + fp + eps), as pycocotools divides.
        assert!((s.get("AP").unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(s.get("AR100"), Some(1.0));
        assert_eq!(s.get("AP_small"), Some(-1.0), "no small objects: undefined");
        assert_eq!(s.per_class.len(), 2);
    }

    #[test]
    fn a_false_positive_ranked_first_halves_precision_at_that_recall() {
        let gt = dataset(vec![ann(1, 1, 1, [10.0, 10.0, 50.0, 50.0])]);
        let r = vec![res(1, 1, [100.0, 100.0, 50.0, 50.0], 0.9), res(1, 1, [10.0, 10.0, 50.0, 50.0], 0.8)];
        let s = evaluate(&gt, &r, IouType::Bbox).unwrap();
        assert!((s.get("AP").unwrap() - 0.5).abs() < 1e-12, "{:?}", s.stats);
        assert_eq!(s.get("AR1"), Some(0.0), "the one detection allowed is the wrong one");
    }

    #[test]
    fn results_for_unknown_images_are_refused() {
        let gt = dataset(vec![]);
        assert!(evaluate(&gt, &[res(9, 1, [0.0; 4], 1.0)], IouType::Bbox).is_err());
    }

    #[test]
    fn linspace_matches_numpy() {
        let t = linspace(0.5, 0.95, 10);
        assert_eq!(t[0], 0.5);
        assert_eq!(t[9], 0.95);
        assert!((t[5] - 0.75).abs() < 1e-15);
    }
}
