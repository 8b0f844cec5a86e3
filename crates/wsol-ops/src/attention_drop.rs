//! The attention-based drop of ADL (Choe & Shim, CVPR 2019) as one CPU op: x times a map
//! of its channel mean (the drop mask, or the importance map). Why one op: candle's
//! composition (channel mean, map, broadcast product, and their backward: a strided
//! channel sum, the sigmoid's and the mean's gradients, two broadcasts) cost ResNet-50
//! ~55 ms of a 1.7 s step; the op reads x twice forward and x and dy once backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `x * map(mean_c(x))` for [B, C, h, w]: with `drop: Some(threshold)` the map is 1 where
/// the attention is below `threshold` times the image's maximum and 0 elsewhere, else the
/// attention's sigmoid. Our op for f32 on the CPU, candle's composition elsewhere.
pub fn attention_drop(x: &Tensor, drop: Option<f64>) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 4 {
        return x.contiguous()?.apply_op1(AdlOp { drop });
    }
    composed(x, drop)
}

/// The layer as candle ops, on any device and dtype.
fn composed(x: &Tensor, drop: Option<f64>) -> candle_core::Result<Tensor> {
    let attention = x.mean_keepdim(1)?; // [B, 1, h, w]
    let map = match drop {
        Some(threshold) => drop_mask(&attention, threshold)?,
        None => importance_map(&attention)?,
    };
    x.broadcast_mul(&map)
}

/// x * map(x) for f32 [B, C, h, w] on the CPU: the drop mask with `drop: Some(threshold)`,
/// the importance map otherwise. The same values as [`composed`].
struct AdlOp {
    drop: Option<f64>,
}

impl AdlOp {
    /// Per image, the [h * w] map of its attention (the channel mean, summed in channel
    /// order as candle does) and, with `dy`, sum_c(dy * x) per position (else empty).
    fn maps(&self, x: &[f32], dy: Option<&[f32]>, c: usize, plane: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
        let inv_c = (1.0 / c as f64) as f32;
        (0..x.len() / (c * plane))
            .into_par_iter()
            .map(|img| {
                let at = |ch: usize| (img * c + ch) * plane;
                let (mut sum, mut dot) = (vec![0f32; plane], vec![0f32; if dy.is_some() { plane } else { 0 }]);
                for ch in 0..c {
                    let xs = &x[at(ch)..at(ch) + plane];
                    sum.iter_mut().zip(xs).for_each(|(s, &v)| *s += v);
                    if let Some(dy) = dy {
                        dot.iter_mut().zip(xs).zip(&dy[at(ch)..at(ch) + plane]).for_each(|((d, &v), &g)| *d += g * v);
                    }
                }
                let attention: Vec<f32> = sum.iter().map(|&s| s * inv_c).collect();
                let map = match self.drop {
                    Some(threshold) => {
                        let limit = attention.iter().copied().fold(f32::NEG_INFINITY, f32::max) * threshold as f32;
                        attention.iter().map(|&a| if a < limit { 1.0 } else { 0.0 }).collect()
                    }
                    None => attention.iter().map(|&a| 1.0 / (1.0 + (-a).exp())).collect(),
                };
                (map, dot)
            })
            .collect()
    }
}

impl CustomOp1 for AdlOp {
    fn name(&self) -> &'static str {
        "adl"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = crate::cpu_f32(s, l, "adl")?;
        let (_, c, h, w) = l.shape().dims4()?;
        let plane = h * w;
        let _span = crate::profile::span(|| format!("adl forward {c}x{h}x{w}"), 0.0);
        let maps = self.maps(x, None, c, plane);
        let y = crate::memory::par_vec(x.len(), plane, |k| {
            let map = &maps[k / c].0;
            x[k * plane..][..plane].iter().zip(map).map(|(&v, &m)| v * m)
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op2_no_bwd(x, &AdlGrad { drop: self.drop })?))
    }
}

/// dx from (dy, x): dy * mask for the drop mask (no gradient through it); for the
/// importance map s = sigmoid(mean_c x), dy * s + sum_c(dy * x) * s (1 - s) / C.
struct AdlGrad {
    drop: Option<f64>,
}

impl CustomOp2 for AdlGrad {
    fn name(&self) -> &'static str {
        "adl-grad"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (dy, x) = (crate::cpu_f32(ds, dl, "adl")?, crate::cpu_f32(xs, xl, "adl")?);
        let (_, c, h, w) = xl.shape().dims4()?;
        let plane = h * w;
        let _span = crate::profile::span(|| format!("adl grad {c}x{h}x{w}"), 0.0);
        let op = AdlOp { drop: self.drop };
        let maps = op.maps(x, self.drop.is_none().then_some(dy), c, plane);
        let inv_c = (1.0 / c as f64) as f32;
        let importance = self.drop.is_none();
        let dx = crate::memory::par_vec(x.len(), plane, |k| {
            let (map, dot) = &maps[k / c];
            let g = &dy[k * plane..][..plane];
            g.iter().enumerate().map(move |(p, &g)| {
                let s = map[p];
                if importance {
                    g * s + dot[p] * (s * (1.0 - s)) * inv_c
                } else {
                    g * s
                }
            })
        });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

/// 1 where the attention is below `threshold` times its image's maximum, else 0 (no
/// gradient flows through a mask).
pub fn drop_mask(attention: &Tensor, threshold: f64) -> candle_core::Result<Tensor> {
    let b = attention.dim(0)?;
    let max = attention.detach().flatten_from(1)?.max_keepdim(1)?.reshape((b, 1, 1, 1))?;
    attention.detach().broadcast_lt(&(max * threshold)?)?.to_dtype(attention.dtype())
}

/// sigmoid(attention), differentiable as in the reference.
fn importance_map(attention: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::sigmoid(attention)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Image 0's channel means are [1, 2, 3, 4]: with threshold 0.75 of the max, 3 and 4
    /// (>= 3) are dropped. Image 1's are [-1, -2, -1, -2]: 0.75 of a negative maximum is
    /// above it, so nothing is dropped (as in the reference).
    #[test]
    fn drop_mask_by_hand() {
        let x = Tensor::new(
            &[[[[0f32, 2.], [2., 4.]], [[2., 2.], [4., 4.]]], [[[-1., -3.], [-1., -3.]], [[-1., -1.], [-1., -1.]]]],
            &Device::Cpu,
        )
        .unwrap();
        let attention = x.mean_keepdim(1).unwrap();
        let m: Vec<f32> = drop_mask(&attention, 0.75).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(m, vec![1., 1., 0., 0., 1., 1., 1., 1.]);
    }

    /// The fused op against the candle composition, both maps: output and input gradient
    /// to f32 rounding (the channel sums run in another order), and the same drop mask.
    #[test]
    fn fused_op_equals_the_composition() {
        let dev = Device::Cpu;
        for (drop, shape) in [(None, (2, 7, 5, 6)), (Some(0.8), (3, 4, 9, 9)), (Some(0.5), (1, 64, 14, 14))] {
            let x = candle_core::Var::from_tensor(&Tensor::randn(0.2f32, 1., shape, &dev).unwrap()).unwrap();
            let w = Tensor::randn(0f32, 1., shape, &dev).unwrap();
            let fused = x.as_tensor().apply_op1(AdlOp { drop }).unwrap();
            let plain = composed(x.as_tensor(), drop).unwrap();
            let zeros =
                |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().filter(|&&v| v == 0.0).count();
            if drop.is_some() {
                assert_eq!(zeros(&fused), zeros(&plain), "the same positions dropped");
                assert!(zeros(&plain) > 0, "something dropped");
            }
            assert!(crate::rel_diff(&fused, &plain) < 1e-6, "{drop:?} output");
            let grad = |y: Tensor| {
                (y * &w).unwrap().sum_all().unwrap().backward().unwrap().get(x.as_tensor()).unwrap().clone()
            };
            let d = crate::rel_diff(&grad(fused), &grad(plain));
            assert!(d < 1e-5, "{drop:?} input gradient: {d:e}");
        }
    }
}
