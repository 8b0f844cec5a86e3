//! Bicubic resize as `cv2.resize(map, (out_w, out_h), interpolation=cv2.INTER_CUBIC)` on
//! float64: the official pipeline turns every CAM into float64 (`t2n`) and resizes it
//! this way before thresholding, and the 8-bit quantization downstream turns small
//! resampling differences into different boxes, so we follow OpenCV's arithmetic
//! (float32 weights, double sums, separable, rows first).

/// OpenCV's cubic kernel (Keys, A = -0.75), evaluated in f32 like `interpolateCubic`.
fn cubic_weights(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let w0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let w2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// Per output index: the four source indices (replicated at the border) and weights.
/// Half-pixel centres; the scale is `1 / (out / in)` in f64 and the fraction is
/// rounded to f32 before flooring, as OpenCV does.
fn taps(src_len: usize, out_len: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = 1.0 / (out_len as f64 / src_len as f64);
    (0..out_len)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let frac = f - s;
            let s = s as i64;
            let idx = [-1i64, 0, 1, 2].map(|k| (s + k).clamp(0, src_len as i64 - 1) as usize);
            (idx, cubic_weights(frac))
        })
        .collect()
}

/// Row-major `w` x `h` -> `out_w` x `out_h`.
pub fn resize_bicubic(src: &[f64], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<f64> {
    assert_eq!(src.len(), w * h, "map is not {w}x{h}");
    if (w, h) == (out_w, out_h) {
        return src.to_vec(); // cv2.resize copies when the size is unchanged
    }
    let widen = |(idx, a): ([usize; 4], [f32; 4])| (idx, a.map(f64::from));
    let xt: Vec<_> = taps(w, out_w).into_iter().map(widen).collect();
    let yt: Vec<_> = taps(h, out_h).into_iter().map(widen).collect();
    // Horizontal pass on every source row, then vertical.
    let mut rows = vec![0f64; h * out_w];
    for y in 0..h {
        let s = &src[y * w..(y + 1) * w];
        let r = &mut rows[y * out_w..(y + 1) * out_w];
        for (dx, (idx, a)) in xt.iter().enumerate() {
            r[dx] = s[idx[0]] * a[0] + s[idx[1]] * a[1] + s[idx[2]] * a[2] + s[idx[3]] * a[3];
        }
    }
    let mut out = vec![0f64; out_w * out_h];
    for (dy, (idx, b)) in yt.iter().enumerate() {
        let r = |k: usize| &rows[idx[k] * out_w..(idx[k] + 1) * out_w];
        let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
        for (x, o) in out[dy * out_w..(dy + 1) * out_w].iter_mut().enumerate() {
            *o = r0[x] * b[0] + r1[x] * b[1] + r2[x] * b[2] + r3[x] * b[3];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_interpolate_at_zero() {
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
        let w = cubic_weights(0.3);
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn constant_map_stays_constant() {
        let out = resize_bicubic(&[0.25; 12], 4, 3, 7, 5);
        assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }

    #[test]
    fn same_size_is_a_copy() {
        let m = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(resize_bicubic(&m, 2, 2, 2, 2), m.to_vec());
    }
}
