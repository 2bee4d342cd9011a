//! DB (Differentiable Binarization) post-processing: from a text-probability map to text
//! boxes, as PaddleOCR's `DBPostProcess` does it (threshold, dilate, contours, min-area box,
//! box score, unclip, min-area box again).

use image::GrayImage;
use imageproc::contours::{BorderType, find_contours};

use super::geometry::{Pt, area_and_perimeter, min_area_rect, order_box};

#[derive(Clone, Copy, Debug)]
pub(crate) struct DbParams {
    pub threshold: f32,
    pub box_threshold: f32,
    pub unclip_ratio: f32,
    pub dilate: bool,
    pub max_candidates: usize,
    pub min_size: f32,
}

/// Text boxes (corners from the top-left, in `dest` pixels) and their scores, from a `w` x `h`
/// probability map of an image that is `dest` in size.
pub(crate) fn text_boxes(prob: &[f32], w: usize, h: usize, p: &DbParams, dest: (u32, u32)) -> Vec<([Pt; 4], f32)> {
    let mut bitmap = GrayImage::new(w as u32, h as u32);
    for (i, px) in bitmap.iter_mut().enumerate() {
        *px = if prob[i] > p.threshold { 255 } else { 0 };
    }
    if p.dilate {
        bitmap = dilate_2x2(&bitmap);
    }
    let mut out = Vec::new();
    let contours = find_contours::<i32>(&bitmap);
    for contour in contours.iter().filter(|c| c.border_type == BorderType::Outer).take(p.max_candidates) {
        let points: Vec<Pt> = contour.points.iter().map(|q| [q.x as f64, q.y as f64]).collect();
        let rect = min_area_rect(&points);
        if rect.width.min(rect.height) < p.min_size as f64 {
            continue;
        }
        let corners = order_box(rect.corners);
        let score = box_score(prob, w, h, &corners);
        if score < p.box_threshold {
            continue;
        }
        let expanded = unclip(&corners, p.unclip_ratio as f64);
        let rect = min_area_rect(&expanded);
        if rect.width.min(rect.height) < p.min_size as f64 + 2.0 {
            continue;
        }
        // numpy's round: half to even.
        let scale =
            |v: f64, from: usize, to: u32| (v / from as f64 * to as f64).round_ties_even().clamp(0.0, to as f64);
        let corners = order_box(rect.corners).map(|q| [scale(q[0], w, dest.0), scale(q[1], h, dest.1)]);
        out.push((corners, score));
    }
    out
}

/// OpenCV's dilation with a 2x2 kernel (anchor at its centre): a pixel is set when it or its
/// left, upper or upper-left neighbour is.
fn dilate_2x2(src: &GrayImage) -> GrayImage {
    let (w, h) = src.dimensions();
    GrayImage::from_fn(w, h, |x, y| {
        let mut v = 0;
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            if x >= dx && y >= dy {
                v = v.max(src.get_pixel(x - dx, y - dy)[0]);
            }
        }
        image::Luma([v])
    })
}

/// Mean probability inside the box (PaddleOCR's "fast" score: the polygon filled over its
/// integer bounding rectangle).
fn box_score(prob: &[f32], w: usize, h: usize, corners: &[Pt; 4]) -> f32 {
    let clamp = |v: f64, hi: usize| (v as i64).clamp(0, hi as i64 - 1) as usize;
    let xmin = clamp(corners.iter().map(|q| q[0]).fold(f64::INFINITY, f64::min).floor(), w);
    let xmax = clamp(corners.iter().map(|q| q[0]).fold(f64::NEG_INFINITY, f64::max).ceil(), w);
    let ymin = clamp(corners.iter().map(|q| q[1]).fold(f64::INFINITY, f64::min).floor(), h);
    let ymax = clamp(corners.iter().map(|q| q[1]).fold(f64::NEG_INFINITY, f64::max).ceil(), h);
    // The polygon's vertices are truncated to integers, as cv2.fillPoly receives them.
    let poly: Vec<Pt> = corners.iter().map(|q| [(q[0] - xmin as f64).trunc(), (q[1] - ymin as f64).trunc()]).collect();
    let (mut sum, mut n) = (0f64, 0usize);
    for y in ymin..=ymax {
        for x in xmin..=xmax {
            if inside(&poly, [(x - xmin) as f64, (y - ymin) as f64]) {
                sum += prob[y * w + x] as f64;
                n += 1;
            }
        }
    }
    if n == 0 { 0.0 } else { (sum / n as f64) as f32 }
}

/// Whether `q` lies in the convex polygon or on its border.
fn inside(poly: &[Pt], q: Pt) -> bool {
    let mut sign = 0.0f64;
    for i in 0..poly.len() {
        let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
        let cross = (b[0] - a[0]) * (q[1] - a[1]) - (b[1] - a[1]) * (q[0] - a[0]);
        if cross != 0.0 {
            if sign != 0.0 && cross.signum() != sign {
                return false;
            }
            sign = cross.signum();
        }
    }
    true
}

/// Grow a box by `area * ratio / perimeter` as PaddleOCR does with pyclipper: corners
/// truncated to integers, offset with round joins (Clipper's arc steps, tolerance 0.25),
/// vertices rounded to integers. The caller takes the min-area rectangle of the result.
fn unclip(corners: &[Pt; 4], ratio: f64) -> Vec<Pt> {
    let (area, perimeter) = area_and_perimeter(corners);
    if perimeter == 0.0 {
        return corners.to_vec();
    }
    let delta = area * ratio / perimeter;
    let mut poly: Vec<Pt> = corners.iter().map(|p| [p[0].trunc(), p[1].trunc()]).collect();
    poly.dedup();
    if poly.len() < 3 || delta <= 0.0 {
        return poly;
    }
    // Clipper offsets outward when the normals (dy, -dx) point away from the inside.
    let cx = poly.iter().map(|p| p[0]).sum::<f64>() / poly.len() as f64;
    let cy = poly.iter().map(|p| p[1]).sum::<f64>() / poly.len() as f64;
    let normal = |a: Pt, b: Pt| {
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len = (dx * dx + dy * dy).sqrt();
        if len == 0.0 { [0.0, 0.0] } else { [dy / len, -dx / len] }
    };
    let n0 = normal(poly[0], poly[1]);
    let mid = [(poly[0][0] + poly[1][0]) / 2.0, (poly[0][1] + poly[1][1]) / 2.0];
    if n0[0] * (mid[0] - cx) + n0[1] * (mid[1] - cy) < 0.0 {
        poly.reverse();
    }
    let n = poly.len();
    let normals: Vec<Pt> = (0..n).map(|j| normal(poly[j], poly[(j + 1) % n])).collect();
    let tolerance = 0.25f64.min(delta * 0.25);
    let steps = (std::f64::consts::PI / (1.0 - tolerance / delta).acos()).min(delta * std::f64::consts::PI);
    let (sin, cos) = ((2.0 * std::f64::consts::PI / steps).sin(), (2.0 * std::f64::consts::PI / steps).cos());
    let steps_per_rad = steps / (2.0 * std::f64::consts::PI);
    let at = |p: Pt, nx: f64, ny: f64| [(p[0] + nx * delta).round(), (p[1] + ny * delta).round()];
    let mut out = Vec::new();
    let mut k = n - 1;
    for j in 0..n {
        let (nk, nj) = (normals[k], normals[j]);
        let sin_a = (nk[0] * nj[1] - nj[0] * nk[1]).clamp(-1.0, 1.0);
        let cos_a = nk[0] * nj[0] + nk[1] * nj[1];
        if (sin_a * delta).abs() < 1.0 && cos_a > 0.0 {
            out.push(at(poly[j], nk[0], nk[1]));
        } else if sin_a * delta < 0.0 {
            out.push(at(poly[j], nk[0], nk[1]));
            out.push(poly[j]);
            out.push(at(poly[j], nj[0], nj[1]));
        } else {
            let a = sin_a.atan2(cos_a);
            let count = ((steps_per_rad * a.abs()).round() as i64).max(1);
            let (mut x, mut y) = (nk[0], nk[1]);
            for _ in 0..count {
                out.push(at(poly[j], x, y));
                let x2 = x;
                x = x * cos - sin * y;
                y = x2 * sin + y * cos;
            }
            out.push(at(poly[j], nj[0], nj[1]));
        }
        k = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bright_bar_becomes_one_grown_box() {
        // A 40x12 map with a 30x4 strip of text probability at rows 4..8, columns 5..35.
        let (w, h) = (40, 12);
        let mut prob = vec![0f32; w * h];
        for y in 4..8 {
            for x in 5..35 {
                prob[y * w + x] = 0.9;
            }
        }
        let p = DbParams {
            threshold: 0.3,
            box_threshold: 0.5,
            unclip_ratio: 1.5,
            dilate: false,
            max_candidates: 10,
            min_size: 1.0,
        };
        let boxes = text_boxes(&prob, w, h, &p, (w as u32, h as u32));
        assert_eq!(boxes.len(), 1);
        let (corners, score) = boxes[0];
        assert!((score - 0.9).abs() < 1e-5);
        // Grown beyond the strip on every side, to whole pixels.
        assert!(
            corners[0][0] < 5.0 && corners[0][1] < 4.0 && corners[2][0] > 34.0 && corners[2][1] > 7.0,
            "{corners:?}"
        );
    }

    #[test]
    fn unclip_grows_a_rectangle_evenly_with_rounded_corners() {
        // 20x4 box: area 80, perimeter 48, ratio 1.5 -> 2.5 px each side.
        let grown = unclip(&[[0.0, 0.0], [20.0, 0.0], [20.0, 4.0], [0.0, 4.0]], 1.5);
        let r = min_area_rect(&grown);
        let (long, short) = (r.width.max(r.height), r.width.min(r.height));
        assert!((long - 25.0).abs() <= 1.0 && (short - 9.0).abs() <= 1.0, "{long} x {short}");
        assert!(grown.iter().all(|p| p[0].fract() == 0.0 && p[1].fract() == 0.0), "integer vertices");
        assert!(grown.len() > 8, "corners are arcs");
    }

    #[test]
    fn dilation_reaches_right_and_down() {
        let mut img = GrayImage::new(3, 3);
        img.put_pixel(1, 1, image::Luma([255]));
        let d = dilate_2x2(&img);
        let set: Vec<(u32, u32)> = d.enumerate_pixels().filter(|p| p.2[0] > 0).map(|p| (p.0, p.1)).collect();
        assert_eq!(set, vec![(1, 1), (2, 1), (1, 2), (2, 2)]);
    }
}
