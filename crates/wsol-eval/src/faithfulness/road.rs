//! ROAD (Rong et al., ICML 2022): pixels removed by a percentile of the map and filled by
//! the noisy linear imputer, as pytorch-grad-cam's `metrics/road.py` does it.
//!
//! Each removed pixel takes the weighted mean of its 8 neighbours (1/6 for the four
//! sides, 1/12 for the corners; only neighbours inside the image count), known pixels as
//! they are and removed ones as unknowns: one sparse linear system per image, shared by
//! the channels. pytorch-grad-cam solves it directly (SciPy's `spsolve`); we solve it by
//! conjugate gradients to a relative residual of 1e-10, which agrees to float32 rounding.

/// Neighbour offsets (row, column) and their weights, in the reference's order.
const NEIGHBOURS: [((isize, isize), f64); 8] = [
    ((1, 1), 1.0 / 12.0),
    ((0, 1), 1.0 / 6.0),
    ((-1, 1), 1.0 / 12.0),
    ((1, -1), 1.0 / 12.0),
    ((0, -1), 1.0 / 6.0),
    ((-1, -1), 1.0 / 12.0),
    ((1, 0), 1.0 / 6.0),
    ((-1, 0), 1.0 / 6.0),
];

/// `np.percentile(map, p)` of a float32 map (numpy's default linear method, which
/// interpolates in float32 with the weight rounded to float32).
pub fn percentile(map: &[f32], p: f64) -> f32 {
    let mut sorted = map.to_vec();
    sorted.sort_by(f32::total_cmp);
    let index = (sorted.len() - 1) as f64 * (p / 100.0);
    let below = index.floor() as usize;
    let gamma = index - below as f64;
    let (a, b) = (sorted[below], sorted[(below + 1).min(sorted.len() - 1)]);
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma) as f32
    } else {
        a + diff * gamma as f32
    }
}

/// Which pixels a ROAD step keeps (true) and which it imputes: most relevant first removes
/// the pixels at or above the `p`-th percentile of the map (`map < threshold` kept), least
/// relevant first does the same on `1 - map`.
pub fn kept(map: &[f32], p: f64, most_relevant_first: bool) -> Vec<bool> {
    let m: Vec<f32> = if most_relevant_first { map.to_vec() } else { map.iter().map(|&v| 1.0 - v).collect() };
    let t = percentile(&m, p);
    m.iter().map(|&v| v < t).collect()
}

/// Fills the pixels of `image` (`c` planes of `h` x `w`) that `kept` marks false with the
/// linear imputation, plus `noise()` per value (the reference adds 0.01 x N(0, 1)).
pub fn impute(image: &mut [f32], c: usize, h: usize, w: usize, kept: &[bool], mut noise: impl FnMut() -> f32) {
    let plane = h * w;
    assert_eq!(image.len(), c * plane);
    assert_eq!(kept.len(), plane);
    // Variable number of each removed pixel, row-major.
    let unknown: Vec<usize> = (0..plane).filter(|&i| !kept[i]).collect();
    if unknown.is_empty() {
        return;
    }
    let mut var = vec![usize::MAX; plane];
    unknown.iter().enumerate().for_each(|(k, &i)| var[i] = k);
    // The system as rows of (diagonal, [(unknown neighbour, weight)], [(known neighbour, weight)]).
    let n = unknown.len();
    let mut diag = vec![0.0f64; n];
    let mut links: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    let mut known: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    for (k, &i) in unknown.iter().enumerate() {
        let (y, x) = ((i / w) as isize, (i % w) as isize);
        for &((dy, dx), weight) in &NEIGHBOURS {
            let (ny, nx) = (y + dy, x + dx);
            if ny < 0 || nx < 0 || ny >= h as isize || nx >= w as isize {
                continue;
            }
            diag[k] += weight;
            let j = ny as usize * w + nx as usize;
            if kept[j] {
                known[k].push((j, weight));
            } else {
                links[k].push((var[j], weight));
            }
        }
    }
    // `diag x_k - sum w x_j = sum w known_j`: symmetric positive definite (each region of
    // removed pixels touches a kept one unless nothing is kept), so conjugate gradients.
    let apply = |v: &[f64], out: &mut [f64]| {
        for k in 0..n {
            out[k] = diag[k] * v[k] - links[k].iter().map(|&(j, wt)| wt * v[j]).sum::<f64>();
        }
    };
    for ch in 0..c {
        let px = &mut image[ch * plane..(ch + 1) * plane];
        let b: Vec<f64> = known.iter().map(|row| row.iter().map(|&(j, wt)| wt * px[j] as f64).sum()).collect();
        let x = conjugate_gradients(&apply, &diag, &b);
        for (k, &i) in unknown.iter().enumerate() {
            px[i] = x[k] as f32 + noise();
        }
    }
}

/// Jacobi-preconditioned conjugate gradients from zero, to a residual of 1e-10 of `b`'s
/// norm (or 10 n iterations, more than the method needs in exact arithmetic).
fn conjugate_gradients(apply: &impl Fn(&[f64], &mut [f64]), diag: &[f64], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut x = vec![0.0; n];
    let mut r = b.to_vec();
    let tol = 1e-10 * dot(b, b).sqrt();
    if tol == 0.0 {
        return x;
    }
    let mut z: Vec<f64> = r.iter().zip(diag).map(|(r, d)| r / d).collect();
    let mut p = z.clone();
    let mut rz = dot(&r, &z);
    let mut ap = vec![0.0; n];
    for _ in 0..10 * n {
        apply(&p, &mut ap);
        let alpha = rz / dot(&p, &ap);
        x.iter_mut().zip(&p).for_each(|(x, p)| *x += alpha * p);
        r.iter_mut().zip(&ap).for_each(|(r, ap)| *r -= alpha * ap);
        if dot(&r, &r).sqrt() <= tol {
            break;
        }
        z.iter_mut().zip(r.iter().zip(diag)).for_each(|(z, (r, d))| *z = r / d);
        let rz_next = dot(&r, &z);
        let beta = rz_next / rz;
        rz = rz_next;
        p.iter_mut().zip(&z).for_each(|(p, z)| *p = z + beta * *p);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_as_numpy() {
        // np.percentile(np.float32([0.1, 0.2, 0.3, 0.7]), 30) == np.float32(0.19)
        assert_eq!(percentile(&[0.7, 0.1, 0.3, 0.2], 30.0), 0.19f32);
        assert_eq!(percentile(&[0.7, 0.1, 0.3, 0.2], 0.0), 0.1);
        assert_eq!(percentile(&[0.7, 0.1, 0.3, 0.2], 100.0), 0.7);
        // Weight 0.5 and above interpolates from the upper value, as numpy's _lerp.
        assert_eq!(percentile(&[1.0, 2.0], 75.0), 2.0f32 - 1.0 * 0.25);
    }

    #[test]
    fn imputed_pixels_are_the_weighted_mean_of_their_neighbours() {
        let (h, w) = (5, 6);
        let mut img: Vec<f32> = (0..h * w).map(|i| ((i * 7) % 11) as f32).collect();
        let mut keep = vec![true; h * w];
        for i in [8, 9, 14, 15, 16, 27] {
            keep[i] = false;
        }
        impute(&mut img, 1, h, w, &keep, || 0.0);
        for i in (0..h * w).filter(|&i| !keep[i]) {
            let (y, x) = ((i / w) as isize, (i % w) as isize);
            let (mut sum, mut total) = (0.0f64, 0.0f64);
            for &((dy, dx), wt) in &NEIGHBOURS {
                let (ny, nx) = (y + dy, x + dx);
                if ny >= 0 && nx >= 0 && ny < h as isize && nx < w as isize {
                    sum += wt * img[ny as usize * w + nx as usize] as f64;
                    total += wt;
                }
            }
            assert!((img[i] as f64 - sum / total).abs() < 1e-5, "pixel {i}: {} vs {}", img[i], sum / total);
        }
    }
}
