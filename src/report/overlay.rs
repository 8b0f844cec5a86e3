//! CAM overlays: the image under a jet-coloured map, with the GT box (green) and the box
//! the evaluator would predict (red). What researchers look at first.

use wsol_eval::localize::BBox;

/// The classic jet colormap, piecewise linear, for v in [0, 1].
pub fn jet(v: f32) -> [f32; 3] {
    let v = v.clamp(0.0, 1.0);
    let ramp = |centre: f32| (1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0);
    [ramp(3.0), ramp(2.0), ramp(1.0)]
}

/// Blends `map` (row-major, [0, 1], same size as the image) over `rgb` with `alpha`,
/// then draws the boxes. Returns interleaved RGB bytes.
pub fn overlay(
    rgb: &[u8],
    map: &[f64],
    width: usize,
    height: usize,
    alpha: f32,
    gt: &[BBox],
    pred: Option<BBox>,
) -> Vec<u8> {
    assert_eq!(rgb.len(), 3 * width * height, "image is not {width}x{height} RGB");
    assert_eq!(map.len(), width * height, "map is not {width}x{height}");
    let mut out: Vec<u8> = rgb
        .chunks(3)
        .zip(map)
        .flat_map(|(px, &m)| {
            let c = jet(m as f32);
            [0, 1, 2].map(|k| ((1.0 - alpha) * px[k] as f32 + alpha * 255.0 * c[k]).round().clamp(0.0, 255.0) as u8)
        })
        .collect();
    for b in gt {
        draw_box(&mut out, width, height, *b, [0, 255, 0]);
    }
    if let Some(b) = pred {
        draw_box(&mut out, width, height, b, [255, 0, 0]);
    }
    out
}

fn draw_box(img: &mut [u8], width: usize, height: usize, b: BBox, colour: [u8; 3]) {
    let clamp = |v: i32, hi: usize| v.clamp(0, hi as i32 - 1) as usize;
    let (x0, x1, y0, y1) = (clamp(b.x0, width), clamp(b.x1, width), clamp(b.y0, height), clamp(b.y1, height));
    let mut put = |x: usize, y: usize| img[3 * (y * width + x)..3 * (y * width + x) + 3].copy_from_slice(&colour);
    for x in x0..=x1 {
        put(x, y0);
        put(x, y1);
    }
    for y in y0..=y1 {
        put(x0, y);
        put(x1, y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_ends_and_boxes() {
        assert_eq!(jet(0.0), [0.0, 0.0, 0.5]);
        assert_eq!(jet(1.0), [0.5, 0.0, 0.0]);
        let rgb = vec![100u8; 3 * 4 * 3];
        let map = vec![0.5f64; 12];
        let out = overlay(
            &rgb,
            &map,
            4,
            3,
            0.0,
            &[BBox { x0: 1, y0: 0, x1: 2, y1: 1 }],
            Some(BBox { x0: 3, y0: 2, x1: 3, y1: 2 }),
        );
        assert_eq!(&out[3..6], &[0, 255, 0]); // (1,0) on the GT box
        assert_eq!(&out[0..3], &[100, 100, 100]); // untouched, alpha 0
        assert_eq!(&out[3 * 11..], &[255, 0, 0]); // (3,2) the predicted box
    }
}
