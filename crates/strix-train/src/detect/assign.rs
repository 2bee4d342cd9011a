//! Which cells learn which object: NanoDet-Plus's dynamic soft-label assigner, on the host
//! from the network's own (detached) predictions.
//!
//! For every pair of a candidate cell (its centre inside the object) and an object, the cost
//! is the classification cost of predicting the object's class with the pair's IoU as the soft
//! target, plus `3 * -ln(IoU)`, plus a centre prior `10^(distance in strides - 3)`. Each object
//! then takes its `k` cheapest cells, `k` being the sum of its 13 best IoUs (at least 1); a cell
//! wanted by several objects goes to the one it is cheapest for.

/// A cell of one level: its centre in input pixels and its stride.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prior {
    pub cx: f32,
    pub cy: f32,
    pub stride: f32,
}

/// Every cell of every level, finest level first, row-major within a level (the order of the
/// flattened outputs and of the `nanodet` decoder).
pub fn priors(grids: &[(usize, usize)], strides: &[usize]) -> Vec<Prior> {
    let mut out = Vec::new();
    for (&(w, h), &s) in grids.iter().zip(strides) {
        for y in 0..h {
            for x in 0..w {
                let stride = s as f32;
                out.push(Prior { cx: (x as f32 + 0.5) * stride, cy: (y as f32 + 0.5) * stride, stride });
            }
        }
    }
    out
}

/// A ground-truth object: `[x1, y1, x2, y2]` in input pixels and its class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    pub bbox: [f32; 4],
    pub class: usize,
}

/// A cell given an object to learn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assigned {
    pub prior: usize,
    pub target: usize,
}

const TOP_IOUS: usize = 13;
const IOU_WEIGHT: f32 = 3.0;

pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

fn inside(p: &Prior, b: &[f32; 4]) -> bool {
    p.cx > b[0] && p.cx < b[2] && p.cy > b[1] && p.cy < b[3]
}

/// Binary cross-entropy of probability `p` against soft target `t`.
fn bce(p: f32, t: f32) -> f32 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
}

/// Assign `targets` to cells of one image.
///
/// `scores`: per prior, `classes` probabilities (sigmoid of the class logits); `boxes`: per prior
/// the predicted box `[x1, y1, x2, y2]`.
pub fn assign(
    priors: &[Prior],
    scores: &[f32],
    classes: usize,
    boxes: &[[f32; 4]],
    targets: &[Target],
) -> Vec<Assigned> {
    if targets.is_empty() {
        return Vec::new();
    }
    // Candidates: cells whose centre lies inside the object; an object too small to contain
    // any centre gets its nearest cell, so every object is learnt somewhere.
    let mut pairs: Vec<(usize, usize, f32, f32)> = Vec::new(); // (prior, target, cost, iou)
    let mut ious_of: Vec<Vec<f32>> = vec![Vec::new(); targets.len()];
    for (t, target) in targets.iter().enumerate() {
        let mut cells: Vec<usize> = (0..priors.len()).filter(|&p| inside(&priors[p], &target.bbox)).collect();
        if cells.is_empty() {
            let (cx, cy) = ((target.bbox[0] + target.bbox[2]) / 2.0, (target.bbox[1] + target.bbox[3]) / 2.0);
            let d = |p: &Prior| (p.cx - cx).powi(2) + (p.cy - cy).powi(2);
            cells.extend((0..priors.len()).min_by(|&a, &b| d(&priors[a]).total_cmp(&d(&priors[b]))));
        }
        let (gx, gy) = ((target.bbox[0] + target.bbox[2]) / 2.0, (target.bbox[1] + target.bbox[3]) / 2.0);
        for p in cells {
            let prior = &priors[p];
            let overlap = iou(&boxes[p], &target.bbox);
            let row = &scores[p * classes..(p + 1) * classes];
            let cls_cost: f32 = row
                .iter()
                .enumerate()
                .map(|(c, &s)| {
                    let soft = if c == target.class { overlap } else { 0.0 };
                    bce(s, soft) * (soft - s).powi(2)
                })
                .sum();
            let dist = ((prior.cx - gx).powi(2) + (prior.cy - gy).powi(2)).sqrt() / prior.stride;
            let cost = cls_cost + IOU_WEIGHT * -(overlap + 1e-7).ln() + 10f32.powf(dist - 3.0);
            pairs.push((p, t, cost, overlap));
            ious_of[t].push(overlap);
        }
    }
    // Each object's k cheapest cells.
    let mut best: std::collections::HashMap<usize, (usize, f32)> = std::collections::HashMap::new();
    for (t, ious) in ious_of.iter_mut().enumerate() {
        ious.sort_by(|a, b| b.total_cmp(a));
        let k = (ious.iter().take(TOP_IOUS).sum::<f32>() as usize).max(1);
        let mut mine: Vec<&(usize, usize, f32, f32)> = pairs.iter().filter(|q| q.1 == t).collect();
        mine.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
        for &&(p, _, cost, _) in mine.iter().take(k) {
            let e = best.entry(p).or_insert((t, cost));
            if cost < e.1 {
                *e = (t, cost);
            }
        }
    }
    let mut out: Vec<Assigned> = best.into_iter().map(|(prior, (target, _))| Assigned { prior, target }).collect();
    out.sort_by_key(|a| a.prior);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priors_are_cell_centres_finest_level_first() {
        let p = priors(&[(2, 1), (1, 1)], &[8, 16]);
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].cx, p[0].cy, p[1].cx, p[2].cx, p[2].stride), (4.0, 4.0, 12.0, 8.0, 16.0));
    }

    #[test]
    fn each_object_gets_cells_inside_it_and_tiny_ones_their_nearest() {
        let priors = priors(&[(4, 4)], &[8]);
        let n = priors.len();
        let scores = vec![0.01f32; n * 2];
        // Every cell predicts an 8-pixel box around its centre.
        let boxes: Vec<[f32; 4]> = priors.iter().map(|p| [p.cx - 4.0, p.cy - 4.0, p.cx + 4.0, p.cy + 4.0]).collect();
        let big = Target { bbox: [0.0, 0.0, 16.0, 16.0], class: 0 };
        let tiny = Target { bbox: [25.0, 25.0, 27.0, 27.0], class: 1 };
        let a = assign(&priors, &scores, 2, &boxes, &[big, tiny]);
        assert!(a.iter().filter(|x| x.target == 0).all(|x| [0, 1, 4, 5].contains(&x.prior)), "{a:?}");
        assert!(a.iter().any(|x| x.target == 0));
        // The tiny box holds no centre: it gets the cell whose centre (28, 28) is nearest.
        assert_eq!(a.iter().filter(|x| x.target == 1).map(|x| x.prior).collect::<Vec<_>>(), vec![15]);
        assert!(assign(&priors, &scores, 2, &boxes, &[]).is_empty());
    }
}
