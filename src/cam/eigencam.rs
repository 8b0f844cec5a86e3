//! Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): the activations projected on their first
//! principal component (positions x channels, centred per channel), no gradients and no
//! class. SVD signs are arbitrary; we orient the map to correlate positively with the
//! summed activations, so strong responses come out high (pytorch-grad-cam leaves the
//! sign to the SVD routine).

use candle_core::{Device, Tensor};

use super::{CamExtractor, CamInput, Layer};

pub struct EigenCam {
    pub(super) layer: Layer,
}

impl CamExtractor for EigenCam {
    fn name(&self) -> &'static str {
        "eigencam"
    }

    fn extract(&self, input: &CamInput) -> candle_core::Result<Tensor> {
        let a = self.layer.activations(input)?;
        let (b, c, h, w) = a.dims4()?;
        let values: Vec<f32> = a.flatten_all()?.to_vec1()?;
        let mut maps = Vec::with_capacity(b * h * w);
        for img in values.chunks_exact(c * h * w) {
            maps.extend(first_component(img, c, h * w).into_iter().map(|v| v.max(0.0) as f32));
        }
        Tensor::from_vec(maps, (b, h, w), &Device::Cpu)?.to_device(a.device())
    }
}

/// Projection of the `n` positions of channel-major `a` ([c, n]) on the first principal
/// component of the position x channel matrix, centred per channel. Power iteration on
/// the smaller of the Gram (n x n) and covariance (c x c) matrices, in f64.
fn first_component(a: &[f32], c: usize, n: usize) -> Vec<f64> {
    let mut x = vec![0f64; n * c]; // [n, c]
    for k in 0..c {
        let ch = &a[k * n..(k + 1) * n];
        let mean = ch.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        for (i, &v) in ch.iter().enumerate() {
            x[i * c + k] = v as f64 - mean;
        }
    }
    let dot = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(a, b)| a * b).sum::<f64>();
    let mut proj = if n <= c {
        // X X^T u = s^2 u, and X v = s u.
        let rows: Vec<&[f64]> = x.chunks_exact(c).collect();
        let gram: Vec<f64> = (0..n * n).map(|ij| dot(rows[ij / n], rows[ij % n])).collect();
        let (u, lambda) = top_eigenvector(&gram, n);
        u.iter().map(|v| v * lambda.max(0.0).sqrt()).collect::<Vec<_>>()
    } else {
        let mut cov = vec![0f64; c * c];
        for row in x.chunks_exact(c) {
            for k in 0..c {
                for l in 0..c {
                    cov[k * c + l] += row[k] * row[l];
                }
            }
        }
        let (v, _) = top_eigenvector(&cov, c);
        x.chunks_exact(c).map(|row| dot(row, &v)).collect()
    };
    let strength: Vec<f64> = (0..n).map(|i| (0..c).map(|k| a[k * n + i] as f64).sum()).collect();
    if dot(&proj, &strength) < 0.0 {
        proj.iter_mut().for_each(|v| *v = -*v);
    }
    proj
}

/// Dominant eigenvector (unit) and eigenvalue of a symmetric PSD `m` (d x d).
fn top_eigenvector(m: &[f64], d: usize) -> (Vec<f64>, f64) {
    let mut v: Vec<f64> = (0..d).map(|i| 1.0 + 1e-3 * i as f64).collect();
    let mut lambda = 0.0;
    for _ in 0..1000 {
        let mv: Vec<f64> = m.chunks_exact(d).map(|row| row.iter().zip(&v).map(|(a, b)| a * b).sum()).collect();
        let norm = mv.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return (vec![0.0; d], 0.0);
        }
        let next: Vec<f64> = mv.iter().map(|x| x / norm).collect();
        let change = next.iter().zip(&v).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        v = next;
        lambda = norm;
        if change < 1e-12 {
            break;
        }
    }
    (v, lambda)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_one_activations_give_their_spatial_pattern() {
        // A[k, i] = s_k * p_i + noise-free: the first component is p (centred), up to scale.
        let p = [0.0f32, 1.0, 3.0, 1.0, 0.0, 2.0];
        let s = [1.0f32, 2.0, 0.5];
        let a: Vec<f32> = s.iter().flat_map(|&sk| p.iter().map(move |&pi| sk * pi)).collect();
        {
            let (c, n) = (3, 6);
            let proj = first_component(&a, c, n);
            let mean = p.iter().map(|&v| v as f64).sum::<f64>() / 6.0;
            let ratio = proj[2] / (p[2] as f64 - mean);
            assert!(ratio > 0.0, "oriented towards strong activations");
            for i in 0..n {
                assert!((proj[i] - ratio * (p[i] as f64 - mean)).abs() < 1e-9, "{proj:?} {ratio}");
            }
        }
        // Same answer through the Gram route (more channels than positions).
        let wide: Vec<f32> = (0..8).flat_map(|k| p.iter().map(move |&pi| (k as f32 + 1.0) * pi)).collect();
        let proj = first_component(&wide, 8, 6);
        let mean = p.iter().map(|&v| v as f64).sum::<f64>() / 6.0;
        let ratio = proj[2] / (p[2] as f64 - mean);
        assert!(ratio > 0.0);
        for i in 0..6 {
            assert!((proj[i] - ratio * (p[i] as f64 - mean)).abs() < 1e-9, "{proj:?} {ratio}");
        }
    }
}
