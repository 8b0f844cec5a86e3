//! Pools and strided picks for the backbones: candle's own pools have no padding, no
//! ceil mode, no backward when kernel != stride, and a wrong one when kernel == stride
//! (candle 0.11's `max_pool2d` passes a quarter of the gradient to a unique maximum of a
//! 2x2 window: measured [0, 0, 0, 0.25] for [[1, 2], [3, 4]]). Max pools in f32 are one
//! op of ours with PyTorch's semantics (CPU here, CUDA in `channel_ops_cuda`); other
//! dtypes compose candle ops. The composed 3x3 pool was about 15 candle ops forward and
//! more backward (masks, divisions, padding copies), each a pass over the stem's maps.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_f32;

pub use crate::geometry::Window;

impl Window {
    /// Index into the `h` x `w` plane `x` of the first maximum of output `(oy, ox)`'s
    /// window in row-major order (a NaN wins, as in PyTorch); `None` if all padding.
    #[inline]
    fn argmax(&self, x: &[f32], (h, w): (usize, usize), oy: usize, ox: usize) -> Option<usize> {
        let (y0, y1) = ((oy * self.s).saturating_sub(self.p), (oy * self.s + self.k).saturating_sub(self.p).min(h));
        let (x0, x1) = ((ox * self.s).saturating_sub(self.p), (ox * self.s + self.k).saturating_sub(self.p).min(w));
        if y0 >= y1 || x0 >= x1 {
            return None;
        }
        match (self.k, y1 - y0 == self.k && x1 - x0 == self.k) {
            (2, true) => return Some(first_max::<2>(x, w, y0 * w + x0)),
            (3, true) => return Some(first_max::<3>(x, w, y0 * w + x0)),
            _ => {}
        }
        let mut best = (y0 * w + x0, x[y0 * w + x0]);
        for iy in y0..y1 {
            for (at, &v) in (iy * w + x0..).zip(&x[iy * w + x0..iy * w + x1]) {
                best = keep_first_max(best, at, v);
            }
        }
        Some(best.0)
    }
}

/// [`Window::argmax`] of a whole `K` x `K` window at `start` (unrolled: the pools' common
/// case).
#[inline(always)]
fn first_max<const K: usize>(x: &[f32], w: usize, start: usize) -> usize {
    let mut best = (start, x[start]);
    for i in 0..K {
        for j in 0..K {
            best = keep_first_max(best, start + i * w + j, x[start + i * w + j]);
        }
    }
    best.0
}

/// The running (index, value) of a window's first maximum after value `v` at `at`: it
/// takes a larger value or the first NaN, as selects, not branches (random maps make a
/// branch on `v > m` mispredict about twice per window).
#[inline(always)]
fn keep_first_max((best, m): (usize, f32), at: usize, v: f32) -> (usize, f32) {
    let take = v > m || (v.is_nan() && !m.is_nan());
    (if take { at } else { best }, if take { v } else { m })
}

impl Window {
    /// [`Window::argmax`] of every output of row `oy` into `first_max` (the row's
    /// length): 16 at a time where [`stem_row_argmax`] applies, one by one elsewhere.
    fn row_argmax(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        oy: usize,
        simd: &mut [u32],
        first_max: &mut [Option<usize>],
    ) {
        let (from, to) = stem_row_argmax(x, (h, w), *self, oy, simd);
        for (ox, a) in first_max.iter_mut().enumerate() {
            *a = if (from..to).contains(&ox) { Some(simd[ox] as usize) } else { self.argmax(x, (h, w), oy, ox) };
        }
    }
}

/// [`Window::argmax`] for output row `oy` of a 3x3, stride-2, padding-1 pool over plane
/// `x`, on AVX-512, for whole windows 16 outputs at a time: fills `first_max[from..to]`
/// and returns `(from, to)` (empty where it does not apply). The same indices as the
/// window scan: the first maximum in row-major order, a NaN winning.
fn stem_row_argmax(x: &[f32], (h, w): (usize, usize), win: Window, oy: usize, first_max: &mut [u32]) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if (win.k, win.s, win.p) == (3, 2, 1) && oy >= 1 && 2 * oy + 1 < h && is_x86_feature_detected!("avx512f") {
        // Chunks from output 1 on, while their 34 inputs (2 ox0 - 1 ..= 2 ox0 + 32) fit.
        let wo = first_max.len();
        let chunks = (1..wo).step_by(16).take_while(|&ox0| 2 * ox0 + 32 < w && ox0 + 16 <= wo).count();
        if chunks > 0 && (h * w) < i32::MAX as usize {
            // SAFETY: AVX-512 is present; rows 2 oy - 1 ..= 2 oy + 1 and the chunks'
            // columns lie inside the plane, as checked above.
            unsafe { crate::cpu::pool::stem_row_argmax_avx512(x, w, 2 * oy - 1, &mut first_max[1..1 + 16 * chunks]) };
            return (1, 1 + 16 * chunks);
        }
    }
    let _ = (x, h, w, win, oy, first_max);
    (0, 0)
}

/// PyTorch's max pool of f32 `x` [B, C, H, W]: the gradient goes to each window's first
/// maximum.
fn max_pool(x: &Tensor, win: Window) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool(win))
}

struct MaxPool(Window);

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, "max pool")?;
        let (b, c, h, w) = l.shape().dims4()?;
        let (ho, wo) = self.0.out;
        let _span = crate::profile::span(|| format!("max pool {}x{h}x{w} k{} s{}", c, self.0.k, self.0.s), 0.0);
        let mut y = vec![0f32; b * c * ho * wo];
        let win = self.0;
        y.par_chunks_mut((ho * wo).max(1)).zip(x.par_chunks((h * w).max(1))).for_each(|(yp, xp)| {
            let (mut simd, mut first_max) = (vec![0u32; wo], vec![None; wo]);
            for (oy, row) in yp.chunks_mut(wo.max(1)).enumerate() {
                win.row_argmax(xp, (h, w), oy, &mut simd, &mut first_max);
                for (v, a) in row.iter_mut().zip(&first_max) {
                    *v = a.map_or(f32::NEG_INFINITY, |a| xp[a]);
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((b, c, ho, wo))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::max_pool_fwd(self.0, s, l)
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &MaxPoolGrad(self.0))?))
    }
}

/// (x, dy) -> dx of [`MaxPool`]: each output's gradient added to its window's first
/// maximum, outputs in order (the CUDA kernel gathers in the same order: same sums).
struct MaxPoolGrad(Window);

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "max-pool-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, dy) = (cpu_f32(xs, xl, "max pool")?, cpu_f32(ds, dl, "max pool")?);
        let (_, c, h, w) = xl.shape().dims4()?;
        let (ho, wo) = self.0.out;
        let _span = crate::profile::span(|| format!("max pool grad {}x{h}x{w} k{} s{}", c, self.0.k, self.0.s), 0.0);
        let mut dx = vec![0f32; x.len()];
        let planes = dx.par_chunks_mut((h * w).max(1)).zip(x.par_chunks((h * w).max(1)));
        let win = self.0;
        planes.zip(dy.par_chunks((ho * wo).max(1))).for_each(|((dxp, xp), gp)| {
            let (mut simd, mut first_max) = (vec![0u32; wo], vec![None; wo]);
            for (oy, row) in gp.chunks(wo.max(1)).enumerate() {
                win.row_argmax(xp, (h, w), oy, &mut simd, &mut first_max);
                // Outputs in order, whichever way their window was scanned: the same sums.
                for (&g, a) in row.iter().zip(&first_max) {
                    if let Some(a) = *a {
                        dxp[a] += g;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ds: &candle_core::CudaStorage,
        dl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::max_pool_bwd(self.0, xs, xl, ds, dl)
    }
}

/// Whether [`MaxPool`] runs `x`: f32 on the CPU, or on CUDA in a `cuda` build.
fn ours(x: &Tensor) -> bool {
    x.dtype() == DType::F32 && (x.device().is_cpu() || cfg!(feature = "cuda") && x.device().is_cuda())
}

/// 2x2 max-pool, stride 2 (PyTorch's `MaxPool2d(2)`, odd edges dropped). Composed of
/// candle ops (dtypes other than f32), the gradient goes to every tied maximum.
pub fn max_pool2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    if ours(x) {
        return max_pool(x, Window { k: 2, s: 2, p: 0, out: (ho, wo) });
    }
    let x = if h % 2 == 1 || w % 2 == 1 { x.narrow(2, 0, 2 * ho)?.narrow(3, 0, 2 * wo)? } else { x.clone() };
    x.contiguous()?.reshape((b, c, ho, 2, wo, 2))?.max(5)?.max(3)
}

/// PyTorch's output length of a 3-wide pool.
pub fn pool_len(n: usize, stride: usize, pad: usize, ceil: bool) -> usize {
    let span = n + 2 * pad - 3;
    if !ceil {
        return span / stride + 1;
    }
    let out = span.div_ceil(stride) + 1;
    // The last window must start inside the input or the left padding.
    if (out - 1) * stride >= n + pad {
        out - 1
    } else {
        out
    }
}

/// 3x3 max-pool with PyTorch's padding and ceil mode. Composed of candle ops (dtypes
/// other than f32): edges are replicated (every window holds the real pixel next to its
/// padding, so the max is PyTorch's), the max of three shifted views per axis, then
/// every `stride`-th.
pub fn max_pool3(x: &Tensor, stride: usize, pad: usize, ceil: bool) -> candle_core::Result<Tensor> {
    if ours(x) {
        let (_, _, h, w) = x.dims4()?;
        let out = (pool_len(h, stride, pad, ceil), pool_len(w, stride, pad, ceil));
        return max_pool(x, Window { k: 3, s: stride, p: pad, out });
    }
    let mut y = x.clone();
    for dim in [2, 3] {
        let n = y.dim(dim)?;
        let out = pool_len(n, stride, pad, ceil);
        let needed = (out - 1) * stride + 3;
        let p = y.pad_with_same(dim, pad, needed.saturating_sub(n + pad))?;
        let len = (out - 1) * stride + 1;
        let m = p.narrow(dim, 0, len)?.maximum(&p.narrow(dim, 1, len)?)?.maximum(&p.narrow(dim, 2, len)?)?;
        y = every(&m, dim, stride, out)?;
    }
    Ok(y)
}

/// 3x3 average pool, stride 1, zero padding 1, dividing by 9 everywhere (PyTorch's
/// `count_include_pad`). In f32 on the CPU one op ([`AvgPool3`]); composed of candle ops
/// otherwise, which keep about six activation-sized tensors for the backward (Inception's
/// eleven pools held ~0.9 GB at batch 32).
pub fn avg_pool3_s1(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 4 {
        return x.contiguous()?.apply_op1(AvgPool3);
    }
    avg_pool3_s1_composed(x)
}

fn avg_pool3_s1_composed(x: &Tensor) -> candle_core::Result<Tensor> {
    let mut y = x.clone();
    for dim in [2, 3] {
        let n = y.dim(dim)?;
        let p = y.pad_with_zeros(dim, 1, 1)?;
        y = ((p.narrow(dim, 0, n)? + p.narrow(dim, 1, n)?)? + p.narrow(dim, 2, n)?)?;
    }
    y / 9.0
}

/// [`avg_pool3_s1`] on each [h, w] plane: the three rows summed, then three columns,
/// in the composition's order (so the same bits). The pool is its own adjoint (the
/// window is symmetric and zero padding counts), so the backward is the pool of dy.
struct AvgPool3;

const NINTH: f32 = (1.0 / 9.0) as f32;

impl CustomOp1 for AvgPool3 {
    fn name(&self) -> &'static str {
        "avg-pool3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, "avg pool")?;
        let (_, c, h, w) = l.shape().dims4()?;
        let _span = crate::profile::span(|| format!("avg pool 3x3 {c}x{h}x{w}"), 0.0);
        let plane = h * w;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(plane.max(1)).zip(x.par_chunks(plane.max(1))).for_each(|(y, x)| {
            let row = |iy: usize| &x[iy * w..][..w];
            let mut rows = vec![0f32; w];
            for (oy, y_row) in y.chunks_mut(w).enumerate() {
                match oy.checked_sub(1) {
                    Some(up) => rows.copy_from_slice(row(up)),
                    None => rows.fill(0.0),
                }
                rows.iter_mut().zip(row(oy)).for_each(|(r, &v)| *r += v);
                if oy + 1 < h {
                    rows.iter_mut().zip(row(oy + 1)).for_each(|(r, &v)| *r += v);
                }
                // candle's `/ 9.0` is a product with 1/9.
                if w == 1 {
                    y_row[0] = rows[0] * NINTH;
                    continue;
                }
                y_row[0] = (rows[0] + rows[1]) * NINTH;
                let inner = y_row[1..w - 1].iter_mut().zip(rows.iter().zip(&rows[1..]).zip(&rows[2..]));
                inner.for_each(|(out, ((&a, &b), &c))| *out = ((a + b) + c) * NINTH);
                y_row[w - 1] = (rows[w - 2] + rows[w - 1]) * NINTH;
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op1_no_bwd(&AvgPool3)?))
    }
}

/// Elements 0, s, 2s, ... (`out` of them) along `dim`.
pub fn every(x: &Tensor, dim: usize, s: usize, out: usize) -> candle_core::Result<Tensor> {
    if s == 1 {
        return x.narrow(dim, 0, out);
    }
    let n = x.dim(dim)?;
    let x = x.pad_with_zeros(dim, 0, (out * s).saturating_sub(n))?.narrow(dim, 0, out * s)?;
    let mut shape = x.dims().to_vec();
    shape.splice(dim..dim + 1, [out, s]);
    x.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// The op gives the composition's bits forward, and its gradient up to the order of
    /// the sums, on planes with and without interior (1x1, 1xN, 2x3, 7x5).
    #[test]
    fn avg_pool3_op_equals_the_composition() {
        let dev = Device::Cpu;
        for (h, w) in [(1, 1), (1, 4), (2, 3), (7, 5)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 3, h, w), &dev).unwrap()).unwrap();
            let r = Tensor::randn(0f32, 1., (2, 3, h, w), &dev).unwrap();
            let run = |y: Tensor| {
                let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (flat(&y), flat(g.get(&x).unwrap()))
            };
            let (ours, theirs) = (run(avg_pool3_s1(&x).unwrap()), run(avg_pool3_s1_composed(&x).unwrap()));
            assert_eq!(ours.0, theirs.0, "{h}x{w}");
            let dg = ours.1.iter().zip(&theirs.1).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(dg < 1e-6, "{h}x{w}: gradient off by {dg}");
            if (h, w) == (7, 5) {
                // An interior output is the mean of its nine inputs.
                let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let mean = [0, 1, 2].iter().flat_map(|dy| [0, 1, 2].map(|dx| xs[dy * 5 + dx])).sum::<f32>() / 9.0;
                assert!((ours.0[5 + 1] - mean).abs() < 1e-6);
            }
        }
    }

    /// Same values as candle's pool; the whole gradient to the maximum, unlike candle's.
    #[test]
    fn max_pool2_values_and_gradient() {
        let dev = Device::Cpu;
        let x =
            Var::from_tensor(&Tensor::new(&[[[[1f32, 2., 0.], [3., 4., 9.], [5., 5., 5.]]]], &dev).unwrap()).unwrap();
        let y = max_pool2(x.as_tensor()).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![4.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx: Vec<f32> = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(gx, vec![0., 0., 0., 0., 1., 0., 0., 0., 0.]);
        let r = Tensor::randn(0f32, 1., (2, 3, 8, 6), &dev).unwrap();
        let (a, b) = (max_pool2(&r).unwrap(), r.max_pool2d(2).unwrap());
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    /// Calls `check(what, pool, x)` for the 2x2 pool and the 3x3 ones of every backbone,
    /// on random inputs (so no ties).
    fn for_each_pool_case(check: impl Fn(&str, &dyn Fn(&Tensor) -> Tensor, &Tensor)) {
        let cases =
            [(8, 8, 2, 1, false), (7, 9, 2, 1, false), (9, 9, 2, 0, true), (28, 27, 2, 0, true), (7, 7, 1, 1, false)];
        for (h, w, stride, pad, ceil) in cases {
            let x = Tensor::rand(0f32, 1., (2, 3, h, w), &Device::Cpu).unwrap();
            let pool3 = move |t: &Tensor| max_pool3(t, stride, pad, ceil).unwrap();
            check(&format!("3x3 pool, {h}x{w} s{stride} p{pad} ceil {ceil}"), &pool3, &x);
            check(&format!("2x2 pool, {h}x{w}"), &|t: &Tensor| max_pool2(t).unwrap(), &x);
        }
    }

    /// Shape, values and the gradient of a weighted sum of `pool(x)`, as f32 on the CPU.
    fn values_and_gradient(x: Tensor, pool: &dyn Fn(&Tensor) -> Tensor) -> (Vec<usize>, Vec<f32>, Vec<f32>) {
        let v = Var::from_tensor(&x).unwrap();
        let y = pool(v.as_tensor());
        let wts = Tensor::arange(0f32, y.elem_count() as f32, x.device()).unwrap();
        let wts = wts.to_dtype(x.dtype()).unwrap().reshape(y.shape()).unwrap();
        let g = (&y * wts).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| {
            t.flatten_all().unwrap().to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
        };
        (y.dims().to_vec(), flat(&y), flat(g.get(v.as_tensor()).unwrap()))
    }

    /// The CUDA kernels against the CPU op: same values and gradients.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_pools_match_cpu() {
        let gpu = Device::new_cuda(0).unwrap();
        for_each_pool_case(|what, pool, x| {
            let on_gpu = values_and_gradient(x.to_device(&gpu).unwrap(), pool);
            assert_eq!(on_gpu, values_and_gradient(x.clone(), pool), "{what}");
        });
    }

    /// Our f32 op against the pools composed of candle ops (run in f64, the dtype that
    /// takes them): same values, same gradients.
    #[test]
    fn fused_pools_match_composed_ones() {
        for_each_pool_case(|what, pool, x| {
            let composed = values_and_gradient(x.to_dtype(DType::F64).unwrap(), pool);
            assert_eq!(values_and_gradient(x.clone(), pool), composed, "{what}");
        });
    }

    /// PyTorch's choices: a tie sends the whole gradient to the first maximum in row-major
    /// order, a NaN is the maximum, and padding never is.
    #[test]
    fn ties_go_to_the_first_maximum_and_nan_wins() {
        let grad_of = |v: Vec<f32>, h: usize, w: usize, pool: &dyn Fn(&Tensor) -> Tensor| {
            let x = Var::from_tensor(&Tensor::from_vec(v, (1, 1, h, w), &Device::Cpu).unwrap()).unwrap();
            let y = pool(x.as_tensor());
            let g = y.sum_all().unwrap().backward().unwrap();
            let gx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), gx)
        };
        let (y, g) = grad_of(vec![1., 1., 1., 1.], 2, 2, &|t| max_pool2(t).unwrap());
        assert_eq!((y, g), (vec![1.], vec![1., 0., 0., 0.]));
        // Stem pool on 2x2 of -1: each of the four padded windows holds the whole plane.
        let (y, g) = grad_of(vec![-1.; 4], 2, 2, &|t| max_pool3(t, 1, 1, false).unwrap());
        assert_eq!((y, g), (vec![-1.; 4], vec![4., 0., 0., 0.]));
        for nan_at in 0..4 {
            let mut v = vec![1., 5., 3., 2.];
            v[nan_at] = f32::NAN;
            let (y, g) = grad_of(v, 2, 2, &|t| max_pool2(t).unwrap());
            assert!(y[0].is_nan());
            assert_eq!(g, (0..4).map(|i| f32::from(i == nan_at)).collect::<Vec<_>>());
        }
    }

    /// The stem pool's vectorized rows give the bits of the window scan (values, and the
    /// gradient's routing), on maps wide enough for several 16-output chunks, with ties
    /// and NaNs throughout.
    #[test]
    fn stem_pool_rows_match_the_window_scan() {
        for (h, w) in [(112, 112), (9, 75), (40, 35), (5, 34)] {
            let values = [0.0, 1.0, 1.0, -2.0, f32::NAN, 3.0, 3.0, -0.0];
            let x: Vec<f32> = (0..2 * h * w).map(|i| values[(i * 7 + i / 5) % values.len()]).collect();
            let t = Tensor::from_vec(x.clone(), (1, 2, h, w), &Device::Cpu).unwrap();
            let y = max_pool3(&t, 2, 1, false).unwrap();
            let (ho, wo) = (y.dim(2).unwrap(), y.dim(3).unwrap());
            let win = Window { k: 3, s: 2, p: 1, out: (ho, wo) };
            let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (plane, (yp, xp)) in y.chunks(ho * wo).zip(x.chunks(h * w)).enumerate() {
                for (i, v) in yp.iter().enumerate() {
                    let want = win.argmax(xp, (h, w), i / wo, i % wo).map_or(f32::NEG_INFINITY, |a| xp[a]);
                    assert_eq!(v.to_bits(), want.to_bits(), "{h}x{w} plane {plane} output {i}");
                }
            }
            // The gradient of output i alone lands on the scan's first maximum.
            let weights: Vec<f32> = (0..2 * ho * wo).map(|i| (i + 1) as f32).collect();
            let dy = Tensor::from_vec(weights.clone(), (1, 2, ho, wo), &Device::Cpu).unwrap();
            let dx = t.apply_op2_no_bwd(&dy, &MaxPoolGrad(win)).unwrap();
            let dx = dx.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut want = vec![0f32; x.len()];
            for (plane, xp) in x.chunks(h * w).enumerate() {
                for i in 0..ho * wo {
                    if let Some(a) = win.argmax(xp, (h, w), i / wo, i % wo) {
                        want[plane * h * w + a] += weights[plane * ho * wo + i];
                    }
                }
            }
            assert_eq!(dx, want, "{h}x{w} gradient");
        }
    }

    #[test]
    fn pool_lengths_follow_pytorch() {
        // F.max_pool2d(k=3) output sizes, read off PyTorch.
        assert_eq!(pool_len(112, 2, 1, true), 57);
        assert_eq!(pool_len(111, 2, 1, true), 56);
        assert_eq!(pool_len(28, 2, 0, true), 14);
        assert_eq!(pool_len(27, 2, 0, true), 13);
        assert_eq!(pool_len(8, 2, 0, false), 3);
        assert_eq!(pool_len(7, 1, 1, false), 7);
    }

    /// Same values as candle's own pool on an explicitly padded input where shapes allow.
    #[test]
    fn max_pool_matches_padded_pool() {
        let x = Tensor::rand(0f32, 1., (1, 2, 9, 9), &Device::Cpu).unwrap();
        let ours = max_pool3(&x, 2, 0, true).unwrap();
        let want = x.max_pool2d_with_stride(3, 2).unwrap(); // 9 -> 4 in both modes
        let d: f32 =
            (&ours - &want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        assert_eq!((ours.dims(), d), (want.dims(), 0.0));
    }

    /// Same values as candle's own (forward-only) pool on the padded input, and a gradient
    /// that flows to each window's maximum.
    #[test]
    fn stem_pool_matches_padded_pool_and_has_a_gradient() {
        for (h, w) in [(8, 8), (7, 9), (5, 6), (1, 3)] {
            let x = Var::from_tensor(&Tensor::rand(0f32, 1., (2, 3, h, w), &Device::Cpu).unwrap()).unwrap();
            let ours = max_pool3(x.as_tensor(), 2, 1, false).unwrap();
            let padded = x.as_tensor().pad_with_same(2, 1, 1).unwrap().pad_with_same(3, 1, 1).unwrap();
            let want = padded.max_pool2d_with_stride(3, 2).unwrap();
            assert_eq!(ours.dims(), want.dims(), "{h}x{w}");
            let d: f32 =
                (&ours - &want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
            assert_eq!(d, 0.0, "{h}x{w}");
            let g = ours.sum_all().unwrap().backward().unwrap();
            let gx = g.get(x.as_tensor()).unwrap();
            let total: f32 = gx.sum_all().unwrap().to_scalar().unwrap();
            // One unit of gradient per output cell (random values: no ties).
            assert_eq!(total, ours.elem_count() as f32, "{h}x{w}");
        }
    }
}
