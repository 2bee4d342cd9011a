//! Small PNG charts for the run report: line charts and a confusion heat map, drawn with
//! imageproc and the 8x8 bitmap font already used for annotations (no font files needed).

use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut, draw_line_segment_mut};
use imageproc::rect::Rect;
use strix_vision::draw::text;

const W: u32 = 640;
const H: u32 = 400;
const LEFT: i32 = 70;
const RIGHT: i32 = 20;
const TOP: i32 = 40;
const BOTTOM: i32 = 50;
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GREY: Rgb<u8> = Rgb([220, 220, 220]);
pub const BLUE: Rgb<u8> = Rgb([31, 119, 180]);
pub const ORANGE: Rgb<u8> = Rgb([255, 127, 14]);

/// A line chart of `series` (name, colour, y values at x = 1, 2, ...).
pub fn lines(title: &str, x_label: &str, series: &[(&str, Rgb<u8>, Vec<f64>)]) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let n = series.iter().map(|s| s.2.len()).max().unwrap_or(0).max(1);
    let values = series.iter().flat_map(|s| s.2.iter().copied()).filter(|v| v.is_finite());
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    let (pw, ph) = (W as i32 - LEFT - RIGHT, H as i32 - TOP - BOTTOM);
    let px = |i: usize| LEFT as f32 + if n == 1 { pw as f32 / 2.0 } else { i as f32 * pw as f32 / (n - 1) as f32 };
    let py = |v: f64| TOP as f32 + ((hi - v) / (hi - lo)) as f32 * ph as f32;
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let y = py(v);
        draw_line_segment_mut(&mut img, (LEFT as f32, y), ((W as i32 - RIGHT) as f32, y), GREY);
        text(&mut img, 4, y as i32 - 4, &format!("{v:.3}"), BLACK, 1);
    }
    let ticks = n.min(10);
    for k in 0..ticks {
        let i = if ticks == 1 { 0 } else { k * (n - 1) / (ticks - 1) };
        let label = (i + 1).to_string();
        text(&mut img, px(i) as i32 - 4 * label.len() as i32, H as i32 - BOTTOM + 8, &label, BLACK, 1);
    }
    draw_hollow_rect_mut(&mut img, Rect::at(LEFT, TOP).of_size(pw as u32, ph as u32), BLACK);
    text(&mut img, LEFT, 12, title, BLACK, 2);
    text(&mut img, W as i32 / 2 - 4 * x_label.len() as i32, H as i32 - 20, x_label, BLACK, 1);
    for (k, (name, colour, ys)) in series.iter().enumerate() {
        let lx = W as i32 - RIGHT - 150;
        let ly = TOP + 10 + 14 * k as i32;
        draw_filled_rect_mut(&mut img, Rect::at(lx, ly).of_size(16, 8), *colour);
        text(&mut img, lx + 22, ly, name, BLACK, 1);
        let pts: Vec<(f32, f32)> =
            ys.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| (px(i), py(v))).collect();
        for w in pts.windows(2) {
            for d in [-0.5f32, 0.0, 0.5] {
                draw_line_segment_mut(&mut img, (w[0].0, w[0].1 + d), (w[1].0, w[1].1 + d), *colour);
            }
        }
        for &(x, y) in &pts {
            draw_filled_rect_mut(&mut img, Rect::at(x as i32 - 2, y as i32 - 2).of_size(5, 5), *colour);
        }
    }
    img
}

/// A named curve: `(name, colour, (x, y) points)`.
pub type Curve = (String, Rgb<u8>, Vec<(f64, f64)>);

/// Curves on the unit square (precision over recall).
pub fn unit_curves(title: &str, x_label: &str, y_label: &str, series: &[Curve]) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let (pw, ph) = (W as i32 - LEFT - RIGHT, H as i32 - TOP - BOTTOM);
    let px = |x: f64| LEFT as f32 + x.clamp(0.0, 1.0) as f32 * pw as f32;
    let py = |y: f64| TOP as f32 + (1.0 - y.clamp(0.0, 1.0)) as f32 * ph as f32;
    for k in 0..=4 {
        let v = k as f64 / 4.0;
        draw_line_segment_mut(&mut img, (LEFT as f32, py(v)), ((W as i32 - RIGHT) as f32, py(v)), GREY);
        text(&mut img, 4, py(v) as i32 - 4, &format!("{v:.2}"), BLACK, 1);
        text(&mut img, px(v) as i32 - 12, H as i32 - BOTTOM + 8, &format!("{v:.2}"), BLACK, 1);
    }
    draw_hollow_rect_mut(&mut img, Rect::at(LEFT, TOP).of_size(pw as u32, ph as u32), BLACK);
    text(&mut img, LEFT, 12, title, BLACK, 2);
    text(&mut img, W as i32 / 2 - 4 * x_label.len() as i32, H as i32 - 20, x_label, BLACK, 1);
    text(&mut img, 4, TOP - 12, y_label, BLACK, 1);
    for (k, (name, colour, pts)) in series.iter().enumerate() {
        let (lx, ly) = (W as i32 - RIGHT - 170, TOP + 10 + 14 * k as i32);
        draw_filled_rect_mut(&mut img, Rect::at(lx, ly).of_size(16, 8), *colour);
        text(&mut img, lx + 22, ly, name, BLACK, 1);
        for w in pts.windows(2) {
            for d in [-0.5f32, 0.0, 0.5] {
                draw_line_segment_mut(&mut img, (px(w[0].0), py(w[0].1) + d), (px(w[1].0), py(w[1].1) + d), *colour);
            }
        }
    }
    img
}

/// Rows = true class, columns = predicted; colour by the row-normalised share, counts printed.
pub fn confusion(classes: &[String], m: &[Vec<u64>]) -> RgbImage {
    let n = classes.len().max(1);
    let cell: u32 = (560 / n as u32).clamp(12, 64);
    let label_w = 8 * classes.iter().map(|c| c.chars().count()).max().unwrap_or(1).min(16) as u32 + 10;
    let (w, h) = (label_w + cell * n as u32 + 20, 40 + cell * n as u32 + 10);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    text(&mut img, 4, 4, "true (rows) vs predicted (columns)", BLACK, 1);
    for (r, row) in m.iter().enumerate() {
        let total: u64 = row.iter().sum::<u64>().max(1);
        let name: String = classes.get(r).map(|c| c.chars().take(16).collect()).unwrap_or_default();
        let y = 40 + r as u32 * cell;
        text(&mut img, 2, (y + cell / 2) as i32 - 4, &name, BLACK, 1);
        for (c, &v) in row.iter().enumerate() {
            let share = v as f64 / total as f64;
            let shade = (255.0 * (1.0 - share)) as u8;
            let colour = if r == c { Rgb([shade, shade, 255]) } else { Rgb([255, shade, shade]) };
            let x = label_w + c as u32 * cell;
            draw_filled_rect_mut(&mut img, Rect::at(x as i32, y as i32).of_size(cell, cell), colour);
            draw_hollow_rect_mut(&mut img, Rect::at(x as i32, y as i32).of_size(cell, cell), GREY);
            if cell >= 24 && v > 0 {
                let s = v.to_string();
                let ink = if share > 0.6 { Rgb([255, 255, 255]) } else { BLACK };
                text(&mut img, (x + cell / 2) as i32 - 4 * s.len() as i32, (y + cell / 2) as i32 - 4, &s, ink, 1);
            }
        }
    }
    // Columns carry class indices: names would not fit; the report lists them.
    for c in 0..n {
        let x = label_w + c as u32 * cell + cell / 2;
        let s = c.to_string();
        text(&mut img, x as i32 - 4 * s.len() as i32, 26, &s, BLACK, 1);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_have_ink_where_the_data_is() {
        let img =
            lines("loss", "epoch", &[("train", BLUE, vec![1.0, 0.5, 0.25]), ("val", ORANGE, vec![1.2, f64::NAN, 0.4])]);
        assert_eq!(img.dimensions(), (W, H));
        assert!(img.pixels().any(|p| *p == BLUE) && img.pixels().any(|p| *p == ORANGE));
        let c = confusion(&["a".into(), "b".into()], &[vec![5, 0], vec![1, 4]]);
        // The (a, a) cell is fully blue: every 'a' was right.
        assert!(c.pixels().any(|p| *p == Rgb([0, 0, 255])));
    }
}
