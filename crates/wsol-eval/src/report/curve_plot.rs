//! `curve.png`: box accuracy against the CAM threshold at each IoU, the curves that
//! MaxBoxAcc (largest contour, solid) and MaxBoxAccV2 (all contours, dashed) maximize,
//! with the best threshold of each IoU marked. Drawn with plotters into an RGB buffer
//! (text in the embedded font of [`super::text`]).

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::metrics::Curves;

const WIDTH: u32 = 800;
const HEIGHT: u32 = 500;

/// One color per IoU threshold, in order.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// PNG bytes of the chart. `best_by_iou[k]` is the best threshold at `curves.iou_thresholds[k]`
/// (largest-contour rule), if known.
pub fn curve_png(curves: &Curves, best_by_iou: &[Option<f64>]) -> Result<Vec<u8>> {
    super::text::register_font()?;
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw(&mut rgb, curves, best_by_iou).map_err(|e| anyhow!("cannot draw curve.png: {e}"))?;
    super::encode_png_rgb(&rgb, WIDTH, HEIGHT)
}

fn draw(rgb: &mut [u8], curves: &Curves, best_by_iou: &[Option<f64>]) -> Result<(), Box<dyn std::error::Error>> {
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
            .label(format!("IoU {iou}, largest contour"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(points(&curves.all[k]), 6, 4, color.stroke_width(1)))?
            .label(format!("IoU {iou}, all contours"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y), (x + 12, y), (x + 20, y)], color));
        if let Some(Some(best)) = best_by_iou.get(k) {
            let t = curves.thresholds.iter().position(|&t| (t - best).abs() < 1e-9);
            if let Some(t) = t {
                let y = curves.largest[k][t];
                chart.draw_series([Circle::new((*best, y), 5, color.filled())])?;
                chart.draw_series([Text::new(format!("{best:.2}"), (*best + 0.01, y + 4.0), ("sans-serif", 13))])?;
            }
        }
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
        let png = curve_png(&curves, &[Some(0.2), Some(0.3), None]).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        // The first curve's color is drawn, and text (dark pixels) is there.
        let blue = img.pixels().filter(|p| p.0 == [31, 119, 180]).count();
        let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 60)).count();
        assert!(blue > 200 && dark > 500, "blue {blue}, dark {dark}");
    }
}
