//! Ops that work row by row over the last dim — LayerNorm, softmax, GELU — each one pass
//! forward and one pass backward. Written with candle's differentiable ops, a transformer
//! block's LayerNorm, attention softmax and GELU kept 5-9 intermediates of the activation's
//! size for the backward and ran a dozen passes over them (max, broadcast subtractions,
//! strided sums): on DeiT-S they were most of a CPU step's time outside the matrix
//! products, and its extra memory. The fused forms keep the input (or output) alone.
//! CPU f32 only; other devices and dtypes take the composite path, which gives the same
//! values up to rounding.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::cpu_f32;

/// Rows per parallel task: enough work per task for the pool's overhead to vanish.
fn rows_per_task(width: usize) -> usize {
    (16_384 / width.max(1)).max(1)
}

fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Sum with eight running lanes, so LLVM vectorizes it (a single accumulator is a serial
/// chain it may not reorder).
pub(crate) fn sum(xs: impl Iterator<Item = f32>) -> f32 {
    let mut lanes = [0f32; 8];
    for (i, v) in xs.enumerate() {
        lanes[i % 8] += v;
    }
    lanes.iter().sum()
}

/// The largest value (-inf for none), with eight running lanes as [`sum`]: a fold of
/// `f32::max` is a serial chain too, and the attention softmax runs one per row.
pub(crate) fn max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = if v > *l { v } else { *l };
        }
    }
    for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *l = if v > *l { v } else { *l };
    }
    lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// `rows x width` floats made in parallel, by tasks of whole rows, with no zero fill
/// first: `fill(first_row, out)` must write every element of its rows.
fn par_rows(rows: usize, width: usize, fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync) -> Vec<f32> {
    let n = rows * width;
    let per_task = rows_per_task(width);
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(per_task * width.max(1))
        .enumerate()
        .for_each(|(k, out)| fill(k * per_task, out));
    // SAFETY: every task wrote all of its rows (the callers' fills write each element of
    // `out`, row by row), and the tasks cover the n elements.
    unsafe { v.set_len(n) };
    v
}

// ---------------------------------------------------------------- bias

/// x + b over the last dim (a linear layer's bias). Why an op: candle's `broadcast_add`
/// takes the bias gradient as a sum over the broadcast dims, a strided reduction that cost
/// DeiT-S ~13% of a CPU training step; here it is one pass of row additions.
pub fn add_bias(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        return x.broadcast_add(b);
    }
    x.contiguous()?.apply_op2(&b.contiguous()?, AddBias)
}

struct AddBias;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "add-bias"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, bs: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (cpu_f32(xs, xl, "add bias")?, cpu_f32(bs, bl, "add bias")?);
        let c = b.len();
        if c == 0 || xl.dims().last() != Some(&c) {
            candle_core::bail!("add bias: input {:?}, bias {:?}", xl.dims(), bl.dims());
        }
        let y = par_rows(x.len() / c, c, |r0, out| {
            for (k, out) in out.chunks_mut(c).enumerate() {
                for ((o, &v), &b) in out.iter_mut().zip(&x[(r0 + k) * c..][..c]).zip(b) {
                    o.write(v + b);
                }
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, b: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = dy.contiguous()?.apply_op1_no_bwd(&ColumnSums { width: b.elem_count() })?;
        Ok((Some(dy.clone()), Some(db)))
    }
}

/// The sums over rows of a [rows, width] tensor: partial sums per task of rows, added in
/// task order (the same for any thread count).
struct ColumnSums {
    width: usize,
}

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "column-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, "column sums")?;
        let c = self.width;
        let per_task = rows_per_task(c);
        let partials: Vec<Vec<f32>> = x
            .par_chunks(per_task * c)
            .map(|rows| {
                let mut acc = vec![0f32; c];
                for row in rows.chunks(c) {
                    acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                acc
            })
            .collect();
        let mut sums = vec![0f32; c];
        for p in &partials {
            sums.iter_mut().zip(p).for_each(|(s, v)| *s += v);
        }
        Ok((CpuStorage::F32(sums), Shape::from(c)))
    }
}

// ---------------------------------------------------------------- LayerNorm

/// LayerNorm over the last dim with an affine (PyTorch's `nn.LayerNorm`): biased variance,
/// `eps` inside the square root.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused(x) {
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        return centred.broadcast_div(&(var + eps)?.sqrt()?)?.broadcast_mul(weight)?.broadcast_add(bias);
    }
    x.contiguous()?.apply_op3(weight, bias, LayerNorm { eps: eps as f32 })
}

struct LayerNorm {
    eps: f32,
}

/// The row's mean and 1 / sqrt(var + eps), two passes as PyTorch's CPU kernel.
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let mean = sum(row.iter().copied()) / row.len() as f32;
    let var = sum(row.iter().map(|v| (v - mean) * (v - mean))) / row.len() as f32;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) =
            (cpu_f32(xs, xl, "layer norm")?, cpu_f32(ws, wl, "layer norm")?, cpu_f32(bs, bl, "layer norm")?);
        let c = w.len();
        if c == 0 || b.len() != c || x.len() % c != 0 || xl.dims().last() != Some(&c) {
            candle_core::bail!("layer norm: input {:?}, weight {:?}, bias {:?}", xl.dims(), wl.dims(), bl.dims());
        }
        let _span = crate::profile::span(|| format!("layer norm forward {:?}", xl.dims()), 0.0);
        let eps = self.eps;
        let y = par_rows(x.len() / c, c, |r0, out| {
            for (k, out) in out.chunks_mut(c).enumerate() {
                let row = &x[(r0 + k) * c..][..c];
                let (mean, rstd) = moments(row, eps);
                for (((o, &v), &w), &b) in out.iter_mut().zip(row).zip(w).zip(b) {
                    o.write((v - mean) * rstd * w + b);
                }
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = w.elem_count();
        let rows = x.elem_count() / c;
        // One op returns the three gradients stacked: dx's rows, then dw, then db.
        let all = x.apply_op3_no_bwd(w, &dy.contiguous()?, &LayerNormGrad { eps: self.eps })?;
        let dx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = all.narrow(0, rows, 1)?.reshape(c)?;
        let db = all.narrow(0, rows + 1, 1)?.reshape(c)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// (x, w, dy) -> [rows + 2, C]: dx = rstd (g - mean(g) - x̂ mean(g x̂)) with g = dy w, then
/// dw = sum over rows of dy x̂, db = sum of dy.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, dy) = (
            cpu_f32(xs, xl, "layer norm grad")?,
            cpu_f32(ws, wl, "layer norm grad")?,
            cpu_f32(ds, dl, "layer norm grad")?,
        );
        let c = w.len();
        if dy.len() != x.len() {
            candle_core::bail!("layer norm grad: dy {:?} for x {:?}", dl.dims(), xl.dims());
        }
        let _span = crate::profile::span(|| format!("layer norm backward {:?}", xl.dims()), 0.0);
        let rows = x.len() / c;
        let per_task = rows_per_task(c);
        let eps = self.eps;
        let mut out = Vec::with_capacity((rows + 2) * c);
        let spare = &mut out.spare_capacity_mut()[..(rows + 2) * c];
        let (dx, tail) = spare.split_at_mut(rows * c);
        // Each task's partial dw and db, summed after in task order: the same sums for
        // any thread count and schedule.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(per_task * c)
            .enumerate()
            .map(|(k, dx)| {
                let (mut dw, mut db) = (vec![0f32; c], vec![0f32; c]);
                for (i, dx) in dx.chunks_mut(c).enumerate() {
                    let r = k * per_task + i;
                    let (row, g) = (&x[r * c..][..c], &dy[r * c..][..c]);
                    let (mean, rstd) = moments(row, eps);
                    let xhat = |j: usize| (row[j] - mean) * rstd;
                    let mean_g = sum((0..c).map(|j| g[j] * w[j])) / c as f32;
                    let mean_gx = sum((0..c).map(|j| g[j] * w[j] * xhat(j))) / c as f32;
                    for (j, o) in dx.iter_mut().enumerate() {
                        let xh = xhat(j);
                        o.write(rstd * (g[j] * w[j] - mean_g - xh * mean_gx));
                        dw[j] += g[j] * xh;
                        db[j] += g[j];
                    }
                }
                (dw, db)
            })
            .collect();
        let (dw_out, db_out) = tail.split_at_mut(c);
        for j in 0..c {
            dw_out[j].write(partials.iter().map(|p| p.0[j]).sum());
            db_out[j].write(partials.iter().map(|p| p.1[j]).sum());
        }
        // SAFETY: every row of dx was written by its task, and dw, db just above.
        unsafe { out.set_len((rows + 2) * c) };
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, c))))
    }
}

// ---------------------------------------------------------------- softmax

/// Softmax over the last dim.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        return candle_nn::ops::softmax(x, D::Minus1);
    }
    x.contiguous()?.apply_op1(SoftmaxLastDim)
}

struct SoftmaxLastDim;

/// `out = e^{(x - max) scale}`, vectorized.
pub(crate) fn exp_shifted(x: &[f32], max: f32, scale: f32, out: &mut [MaybeUninit<f32>]) {
    let run = crate::math::widest!(|x: &[f32], max: f32, scale: f32, out: &mut [MaybeUninit<f32>]| {
        for (o, &v) in out.iter_mut().zip(x) {
            o.write(crate::math::exp((v - max) * scale));
        }
    });
    run(x, max, scale, out)
}

/// `x = e^{(x - max) scale}` in place, vectorized.
pub(crate) fn exp_shifted_in_place(x: &mut [f32], max: f32, scale: f32) {
    let run = crate::math::widest!(|x: &mut [f32], max: f32, scale: f32| {
        for v in x.iter_mut() {
            *v = crate::math::exp((*v - max) * scale);
        }
    });
    run(x, max, scale)
}

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(xs, xl, "softmax")?;
        let c = *xl.dims().last().unwrap_or(&1);
        let _span = crate::profile::span(|| format!("softmax forward {:?}", xl.dims()), 0.0);
        let y = par_rows(x.len() / c.max(1), c, |r0, out| {
            for (k, out) in out.chunks_mut(c).enumerate() {
                let row = &x[(r0 + k) * c..][..c];
                let max = max(row);
                exp_shifted(row, max, 1.0, out);
                // SAFETY: the loop above wrote every element of `out`.
                let out = unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) };
                let inv = 1.0 / sum(out.iter().copied());
                out.iter_mut().for_each(|o| *o *= inv);
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxGrad)?))
    }
}

/// (y, dy) -> y (dy - sum(dy y)) per row.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-last-dim-grad"
    }

    fn cpu_fwd(&self, ys: &CpuStorage, yl: &Layout, ds: &CpuStorage, dl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, dy) = (cpu_f32(ys, yl, "softmax grad")?, cpu_f32(ds, dl, "softmax grad")?);
        let c = *yl.dims().last().unwrap_or(&1);
        if dy.len() != y.len() {
            candle_core::bail!("softmax grad: dy {:?} for y {:?}", dl.dims(), yl.dims());
        }
        let _span = crate::profile::span(|| format!("softmax backward {:?}", yl.dims()), 0.0);
        let dx = par_rows(y.len() / c.max(1), c, |r0, out| {
            for (k, out) in out.chunks_mut(c).enumerate() {
                let (y, g) = (&y[(r0 + k) * c..][..c], &dy[(r0 + k) * c..][..c]);
                let dot = sum(y.iter().zip(g).map(|(y, g)| y * g));
                for ((o, &y), &g) in out.iter_mut().zip(y).zip(g) {
                    o.write(y * (g - dot));
                }
            }
        });
        Ok((CpuStorage::F32(dx), yl.shape().clone()))
    }
}

// ---------------------------------------------------------------- GELU

/// GELU with the exact erf (PyTorch's `nn.GELU()` default), erf vectorized
/// ([`crate::math::erf_and_gauss`]): within 1e-6 relative of candle's `gelu_erf`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(GeluErf)
}

const CHUNK: usize = 1 << 14;

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(xs, xl, "gelu")?;
        let _span = crate::profile::span(|| format!("gelu forward {:?}", xl.dims()), 0.0);
        let gelu = crate::math::widest!(|x: &[f32], out: &mut [MaybeUninit<f32>]| {
            for (o, &v) in out.iter_mut().zip(x) {
                let (erf, _) = crate::math::erf_and_gauss(v * std::f32::consts::FRAC_1_SQRT_2);
                o.write((erf + 1.) * 0.5 * v);
            }
        });
        // SAFETY: the loop writes every element of each chunk (x's chunk is as long).
        let y = unsafe { crate::memory::par_fill(x.len(), CHUNK, |k, out| gelu(&x[k * CHUNK..][..out.len()], out)) };
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &GeluErfGrad)?))
    }
}

/// (x, dy) -> dy (Φ(x) + x φ(x)): Φ the normal CDF, φ its density.
struct GeluErfGrad;

impl CustomOp2 for GeluErfGrad {
    fn name(&self) -> &'static str {
        "gelu-erf-grad"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ds: &CpuStorage, dl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dy) = (cpu_f32(xs, xl, "gelu grad")?, cpu_f32(ds, dl, "gelu grad")?);
        if dy.len() != x.len() {
            candle_core::bail!("gelu grad: dy {:?} for x {:?}", dl.dims(), xl.dims());
        }
        let _span = crate::profile::span(|| format!("gelu backward {:?}", xl.dims()), 0.0);
        // 1 / sqrt(2 pi)
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let grad = crate::math::widest!(|x: &[f32], dy: &[f32], out: &mut [MaybeUninit<f32>]| {
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(dy) {
                // erf's e^{-x²} at x / sqrt 2 is the density's e^{-v²/2}.
                let (erf, gauss) = crate::math::erf_and_gauss(v * std::f32::consts::FRAC_1_SQRT_2);
                o.write(g * (0.5 * (1.0 + erf) + v * INV_SQRT_2PI * gauss));
            }
        });
        // SAFETY: the loop writes every element of each chunk (x's and dy's are as long).
        let dx = unsafe {
            crate::memory::par_fill(x.len(), CHUNK, |k, out| {
                grad(&x[k * CHUNK..][..out.len()], &dy[k * CHUNK..][..out.len()], out)
            })
        };
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn input(shape: &[usize], seed: u64) -> Tensor {
        crate::test_input(shape, seed, 6.0)
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        crate::rel_diff(a, b)
    }

    /// Forward values and every gradient against the composite ops, on shapes with more
    /// rows than one task holds (so several tasks' partial dw / db are summed).
    #[test]
    fn layer_norm_matches_the_composite_ops() {
        let (x, w, b) = (
            Var::from_tensor(&input(&[3, 70, 96], 1)).unwrap(),
            Var::from_tensor(&input(&[96], 2)).unwrap(),
            Var::from_tensor(&input(&[96], 3)).unwrap(),
        );
        let seed = input(&[3, 70, 96], 4);
        let composite = |x: &Tensor, w: &Tensor, b: &Tensor| {
            let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            centred.broadcast_div(&(var + 1e-6)?.sqrt()?)?.broadcast_mul(w)?.broadcast_add(b)
        };
        let ours = layer_norm(&x, &w, &b, 1e-6).unwrap();
        let theirs = composite(&x, &w, &b).unwrap();
        assert!(max_rel(&ours, &theirs) < 1e-5);
        let g1 = (ours * &seed).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &seed).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w, &b] {
            let (a, e) = (g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(max_rel(a, e) < 1e-4, "{}", max_rel(a, e));
        }
    }

    #[test]
    fn add_bias_matches_broadcast_add() {
        let (x, b) = (Var::from_tensor(&input(&[4, 90, 70], 8)).unwrap(), Var::from_tensor(&input(&[70], 9)).unwrap());
        let seed = input(&[4, 90, 70], 10);
        let ours = add_bias(&x, &b).unwrap();
        let theirs = x.broadcast_add(&b).unwrap();
        assert_eq!(max_rel(&ours, &theirs), 0.0);
        let g1 = (ours * &seed).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &seed).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(max_rel(g1.get(&x).unwrap(), g2.get(&x).unwrap()), 0.0);
        assert!(max_rel(g1.get(&b).unwrap(), g2.get(&b).unwrap()) < 1e-6);
    }

    #[test]
    fn softmax_matches_the_composite_ops() {
        let x = Var::from_tensor(&(input(&[2, 3, 50, 50], 5) * 4.0).unwrap()).unwrap();
        let seed = input(&[2, 3, 50, 50], 6);
        let ours = softmax_last_dim(&x).unwrap();
        let theirs = candle_nn::ops::softmax(&x, D::Minus1).unwrap();
        assert!(max_rel(&ours, &theirs) < 1e-6);
        let row: f32 = ours.get(0).unwrap().get(0).unwrap().get(7).unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!((row - 1.0).abs() < 1e-6);
        let g1 = (ours * &seed).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &seed).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_rel(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-5);
    }

    #[test]
    fn gelu_matches_the_exact_gelu_and_its_derivative() {
        let x = Var::from_tensor(&input(&[5, 3000], 7)).unwrap();
        let ours = gelu_erf(&x).unwrap();
        // Against the exact GELU in f64: erf's error (<= 1.5e-7) times x / 2, plus rounding.
        let exact = |v: f64| 0.5 * v * (1.0 + libm_erf(v / 2f64.sqrt()));
        let values = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (&v, &y) in x.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().zip(&values) {
            let err = (y as f64 - exact(v as f64)).abs();
            assert!(err <= 1e-7 * (v as f64).abs() + 2.4e-7 * (y as f64).abs() + 1e-12, "x {v}: {y}, error {err}");
        }
        assert!(max_rel(&ours, &x.gelu_erf().unwrap()) < 1e-6);
        let grad = ours.sum_all().unwrap().backward().unwrap();
        let got = grad.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (&v, &g) in xs.iter().zip(&got) {
            // A central difference in f64 of the exact GELU.
            let gelu = |v: f64| 0.5 * v * (1.0 + libm_erf(v / 2f64.sqrt()));
            let h = 1e-4;
            let want = (gelu(v as f64 + h) - gelu(v as f64 - h)) / (2.0 * h);
            assert!((g as f64 - want).abs() < 1e-5, "x {v}: {g} vs {want}");
        }
    }

    fn libm_erf(v: f64) -> f64 {
        candle_core::cpu::erf::erf_f64(v)
    }
}
