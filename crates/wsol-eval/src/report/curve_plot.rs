//! `curve.png`: box accuracy against the CAM threshold at each IoU, the curves that
//! MaxBoxAcc (largest contour, solid) and MaxBoxAccV2 (all contours, dashed) maximize,
//! with the best threshold of each IoU marked. Drawn with plotters into an RGB buffer
//! (text in the embedded font of [`super::text`]).

use anyhow::{anyhow, Result};
use image::codecs::png::CompressionType;
use plotters::prelude::*;

use crate::metrics::Curves;

/// The chart's size in pixels.
pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 500;

/// One color per IoU threshold, in order.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// PNG bytes of the chart.
pub fn curve_png(curves: &Curves) -> Result<Vec<u8>> {
    super::text::register_font()?;
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw(&mut rgb, curves).map_err(|e| anyhow!("cannot draw curve.png: {e}"))?;
    // Balanced DEFLATE: a quarter of the fast setting's bytes for a few milliseconds more;
    // training logs one chart per validation into TensorBoard.
    super::encode_png_rgb_with(&rgb, WIDTH, HEIGHT, CompressionType::Default)
}

/// A curve's best threshold, marked on that curve.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mark {
    iou_index: usize,
    /// The all-contour (MaxBoxAccV2) curve, else the largest-contour (MaxBoxAcc) one.
    all_contours: bool,
    threshold: f64,
    accuracy: f64,
}

/// The first maximum of every curve (the official code's `np.argmax`), one mark each.
fn marks(curves: &Curves) -> Vec<Mark> {
    let mut out = Vec::new();
    for (all_contours, family) in [(false, &curves.largest), (true, &curves.all)] {
        for (iou_index, curve) in family.iter().enumerate() {
            let best = curve.iter().enumerate().fold(None, |b: Option<(usize, f64)>, (t, &v)| match b {
                Some((_, bv)) if bv >= v => b,
                _ => Some((t, v)),
            });
            if let Some((t, accuracy)) = best {
                out.push(Mark { iou_index, all_contours, threshold: curves.thresholds[t], accuracy });
            }
        }
    }
    out
}

fn draw(rgb: &mut [u8], curves: &Curves) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Box accuracy vs CAM threshold", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_desc("CAM threshold")
        .y_desc("box accuracy (%)")
        .label_style(("sans-serif", 14))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| format!("{v:.1}"))
        .light_line_style(RGBColor(244, 244, 244))
        .draw()?;
    let points = |c: &[f64]| -> Vec<(f64, f64)> { curves.thresholds.iter().copied().zip(c.iter().copied()).collect() };
    for (k, iou) in curves.iou_thresholds.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points(&curves.largest[k]), color.stroke_width(2)))?
            .label(format!("v1 IoU {iou} (largest contour)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(points(&curves.all[k]), 6, 4, color.stroke_width(1)))?
            .label(format!("v2 IoU {iou} (all contours)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y), (x + 12, y), (x + 20, y)], color));
    }
    // Each curve's own best threshold, on that curve: V1's dot above its line, V2's below.
    for m in marks(curves) {
        let color = COLORS[m.iou_index % COLORS.len()];
        let (dy, style) = if m.all_contours { (-14.0, color.mix(0.6).filled()) } else { (4.0, color.filled()) };
        chart.draw_series([Circle::new((m.threshold, m.accuracy), 5, style)])?;
        let label = format!("{:.2}", m.threshold);
        chart.draw_series([Text::new(label, (m.threshold + 0.01, m.accuracy + dy), ("sans-serif", 13))])?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_with_the_curves() {
        let thresholds: Vec<f64> = (0..100).map(|t| t as f64 / 100.0).collect();
        let bump =
            |peak: f64| -> Vec<f64> { thresholds.iter().map(|t| 90.0 * (-(t - peak).powi(2) * 20.0).exp()).collect() };
        let curves = Curves {
            thresholds: thresholds.clone(),
            iou_thresholds: vec![30, 50, 70],
            largest: vec![bump(0.2), bump(0.3), bump(0.4)],
            all: vec![bump(0.25), bump(0.35), bump(0.45)],
            top1_loc: None,
            top5_loc: None,
        };
        let png = curve_png(&curves).unwrap();
        // Each validation logs one to TensorBoard: it must stay small (the fast setting
        // made 180 KB).
        assert!(png.len() < 100_000, "{} bytes", png.len());
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        // The first curve's color is drawn, and text (dark pixels) is there.
        let blue = img.pixels().filter(|p| p.0 == [31, 119, 180]).count();
        let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 60)).count();
        assert!(blue > 200 && dark > 500, "blue {blue}, dark {dark}");
    }

    /// Where the largest-contour and all-contour curves peak at different thresholds, each
    /// is marked at its own peak, on its own curve (the V2 best used to be drawn on the V1
    /// curve, at y = 0 when that curve had fallen to 0 there).
    #[test]
    fn each_curve_is_marked_at_its_own_best_threshold() {
        let thresholds: Vec<f64> = (0..10).map(|t| t as f64 / 10.0).collect();
        let curves = Curves {
            thresholds,
            iou_thresholds: vec![50],
            largest: vec![vec![0., 50., 80., 80., 0., 0., 0., 0., 0., 0.]],
            all: vec![vec![0., 0., 0., 0., 0., 10., 60., 20., 0., 0.]],
            top1_loc: None,
            top5_loc: None,
        };
        let m = marks(&curves);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].all_contours, m[0].threshold, m[0].accuracy), (false, 0.2, 80.0), "first maximum");
        assert_eq!((m[1].all_contours, m[1].threshold, m[1].accuracy), (true, 0.6, 60.0));
    }
}
