//! Plane geometry for text boxes: minimum-area rectangles and polygon measures.

/// A point in pixels.
pub(crate) type Pt = [f64; 2];

/// Convex hull (Andrew's monotone chain), counter-clockwise, no repeated points.
pub(crate) fn convex_hull(points: &[Pt]) -> Vec<Pt> {
    let mut p: Vec<Pt> = points.to_vec();
    p.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let cross = |o: Pt, a: Pt, b: Pt| (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
    let mut lower: Vec<Pt> = Vec::new();
    for &q in &p {
        while lower.len() >= 2 && cross(lower[lower.len() - 2], lower[lower.len() - 1], q) <= 0.0 {
            lower.pop();
        }
        lower.push(q);
    }
    let mut upper: Vec<Pt> = Vec::new();
    for &q in p.iter().rev() {
        while upper.len() >= 2 && cross(upper[upper.len() - 2], upper[upper.len() - 1], q) <= 0.0 {
            upper.pop();
        }
        upper.push(q);
    }
    lower.pop();
    upper.pop();
    lower.extend(upper);
    lower
}

/// A rotated rectangle: corners and side lengths.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RotatedRect {
    pub corners: [Pt; 4],
    pub width: f64,
    pub height: f64,
}

/// The smallest-area rectangle holding all points (rotating calipers over the hull edges).
pub(crate) fn min_area_rect(points: &[Pt]) -> RotatedRect {
    let hull = convex_hull(points);
    if hull.len() < 3 {
        // Degenerate: a point or a segment; an axis-aligned box of its extent.
        let (x0, x1) = extent(&hull, 0);
        let (y0, y1) = extent(&hull, 1);
        return RotatedRect { corners: [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], width: x1 - x0, height: y1 - y0 };
    }
    let mut best: Option<(f64, RotatedRect)> = None;
    for i in 0..hull.len() {
        let (a, b) = (hull[i], hull[(i + 1) % hull.len()]);
        let len = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
        if len == 0.0 {
            continue;
        }
        let u = [(b[0] - a[0]) / len, (b[1] - a[1]) / len];
        let v = [-u[1], u[0]];
        let (mut umin, mut umax, mut vmin, mut vmax) =
            (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for p in &hull {
            let (pu, pv) = (p[0] * u[0] + p[1] * u[1], p[0] * v[0] + p[1] * v[1]);
            umin = umin.min(pu);
            umax = umax.max(pu);
            vmin = vmin.min(pv);
            vmax = vmax.max(pv);
        }
        let area = (umax - umin) * (vmax - vmin);
        if best.as_ref().is_none_or(|(a, _)| area < *a) {
            let at = |pu: f64, pv: f64| [pu * u[0] + pv * v[0], pu * u[1] + pv * v[1]];
            let rect = RotatedRect {
                corners: [at(umin, vmin), at(umax, vmin), at(umax, vmax), at(umin, vmax)],
                width: umax - umin,
                height: vmax - vmin,
            };
            best = Some((area, rect));
        }
    }
    best.map(|(_, r)| r).expect("a hull of three points has an edge")
}

fn extent(points: &[Pt], axis: usize) -> (f64, f64) {
    let lo = points.iter().map(|p| p[axis]).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p[axis]).fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() { (lo, hi) } else { (0.0, 0.0) }
}

/// Corners ordered as PP-OCR's `get_mini_boxes` does: top-left, top-right, bottom-right,
/// bottom-left, by x then y.
pub(crate) fn order_box(mut pts: [Pt; 4]) -> [Pt; 4] {
    pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (tl, bl) = if pts[1][1] > pts[0][1] { (pts[0], pts[1]) } else { (pts[1], pts[0]) };
    let (tr, br) = if pts[3][1] > pts[2][1] { (pts[2], pts[3]) } else { (pts[3], pts[2]) };
    [tl, tr, br, bl]
}

/// Area (shoelace) and perimeter of a polygon.
pub(crate) fn area_and_perimeter(poly: &[Pt]) -> (f64, f64) {
    let mut area = 0.0;
    let mut perimeter = 0.0;
    for i in 0..poly.len() {
        let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
        area += a[0] * b[1] - b[0] * a[1];
        perimeter += ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
    }
    (area.abs() / 2.0, perimeter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_area_rect_of_a_rotated_square() {
        // A square of side sqrt(2) turned 45 degrees.
        let pts = [[1.0, 0.0], [2.0, 1.0], [1.0, 2.0], [0.0, 1.0], [1.0, 1.0]];
        let r = min_area_rect(&pts);
        assert!((r.width * r.height - 2.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn min_area_rect_of_an_axis_aligned_block() {
        let pts: Vec<Pt> = (0..10).flat_map(|x| (0..3).map(move |y| [x as f64, y as f64])).collect();
        let r = min_area_rect(&pts);
        let (w, h) = (r.width.max(r.height), r.width.min(r.height));
        assert_eq!((w, h), (9.0, 2.0));
    }

    #[test]
    fn boxes_are_ordered_from_the_top_left() {
        let b = order_box([[10.0, 5.0], [0.0, 5.0], [10.0, 0.0], [0.0, 0.0]]);
        assert_eq!(b, [[0.0, 0.0], [10.0, 0.0], [10.0, 5.0], [0.0, 5.0]]);
    }
}
