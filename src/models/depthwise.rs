//! Depthwise convolution (one k x k filter per channel, `groups == channels`), as
//! EfficientNet and the MobileNets use it.
//!
//! Candle runs a grouped conv as one conv per group (1152 of them in a Lite0 block), so
//! the CPU path is one op of our own with direct kernels for the output and both
//! gradients: each output row is a sum of k*k scaled input rows, which for stride 1 is a
//! contiguous, vectorized loop. Zero padding is implicit (no padded copy), and may be
//! asymmetric, as TensorFlow's SAME is. Other devices (and other dtypes) use
//! [`composed`]: the same sum as candle ops over shifted, strided views.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::pool::every;

/// Zero padding of the rows (top, bottom) and columns (left, right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

/// The depthwise convolution of `x` [B, C, H, W] with `weight` [C, 1, k, k] (no bias).
pub fn depthwise_conv2d(x: &Tensor, weight: &Tensor, stride: usize, pad: Padding) -> candle_core::Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    let (wc, one, k, k2) = weight.dims4()?;
    if wc != c || one != 1 || k != k2 {
        candle_core::bail!("depthwise conv: weight {:?} for {c} channels (expected [{c}, 1, k, k])", weight.dims());
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 && weight.dtype() == DType::F32 {
        let op = Depthwise::new(x.dims4()?, k, stride, pad)?;
        return x.contiguous()?.apply_op2(&weight.contiguous()?, op);
    }
    composed(x, weight, stride, pad)
}

/// The sum of k*k shifted, channel-scaled views of the padded input, as candle ops.
pub fn composed(x: &Tensor, weight: &Tensor, stride: usize, pad: Padding) -> candle_core::Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let k = weight.dim(2)?;
    let g = Depthwise::new(x.dims4()?, k, stride, pad)?;
    let p = x.pad_with_zeros(2, pad.top, pad.bottom)?.pad_with_zeros(3, pad.left, pad.right)?;
    debug_assert_eq!(p.dims()[2..], [h + pad.top + pad.bottom, w + pad.left + pad.right]);
    let mut acc: Option<Tensor> = None;
    for ky in 0..k {
        for kx in 0..k {
            // Rows ky, ky+s, ..., ky+(oh-1)s; likewise columns.
            let v = every(&p.narrow(2, ky, (g.oh - 1) * stride + 1)?, 2, stride, g.oh)?;
            let v = every(&v.narrow(3, kx, (g.ow - 1) * stride + 1)?, 3, stride, g.ow)?;
            let wk = weight.narrow(2, ky, 1)?.narrow(3, kx, 1)?.reshape((1, c, 1, 1))?;
            let term = v.broadcast_mul(&wk)?;
            acc = Some(match acc {
                Some(a) => (a + term)?,
                None => term,
            });
        }
    }
    Ok(acc.expect("kernel has at least one tap"))
}

/// The geometry of one depthwise convolution; the op itself (x, weight) -> y.
#[derive(Clone, Copy, Debug)]
struct Depthwise {
    batch: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    top: usize,
    left: usize,
    oh: usize,
    ow: usize,
}

impl Depthwise {
    fn new(
        (batch, c, h, w): (usize, usize, usize, usize),
        k: usize,
        stride: usize,
        p: Padding,
    ) -> candle_core::Result<Self> {
        let (ph, pw) = (h + p.top + p.bottom, w + p.left + p.right);
        if stride == 0 || k == 0 || ph < k || pw < k {
            candle_core::bail!("depthwise conv: kernel {k} stride {stride} does not fit {h}x{w} padded by {p:?}");
        }
        let (oh, ow) = ((ph - k) / stride + 1, (pw - k) / stride + 1);
        Ok(Depthwise { batch, c, h, w, k, stride, top: p.top, left: p.left, oh, ow })
    }

    fn flops(&self) -> f64 {
        2.0 * (self.batch * self.c * self.oh * self.ow * self.k * self.k) as f64
    }

    fn label(&self, pass: &str) -> String {
        format!("depthwise {pass} {}x{}x{} k{} s{}", self.c, self.h, self.w, self.k, self.stride)
    }

    /// The input row of output row `oy` under kernel row `ky`, if it is not padding.
    fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky).checked_sub(self.top).filter(|&iy| iy < self.h)
    }

    /// The output columns `lo..hi` whose input column under kernel column `kx`
    /// (`ox * stride + kx - left`) is inside the image.
    fn columns(&self, kx: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = self.left.saturating_sub(kx).div_ceil(s);
        let hi = if self.w + self.left > kx { ((self.w + self.left - kx - 1) / s + 1).min(self.ow) } else { 0 };
        (lo, hi.max(lo))
    }

    /// y_row[ox] += wv * x_row[ox * s + kx - left] over the valid columns.
    fn axpy_row(&self, kx: usize, wv: f32, x_row: &[f32], y_row: &mut [f32]) {
        let (lo, hi) = self.columns(kx);
        let start = lo * self.stride + kx - self.left;
        if self.stride == 1 {
            y_row[lo..hi].iter_mut().zip(&x_row[start..]).for_each(|(y, &x)| *y += wv * x);
        } else {
            y_row[lo..hi].iter_mut().zip(x_row[start..].iter().step_by(self.stride)).for_each(|(y, &x)| *y += wv * x);
        }
    }

    /// The transpose of [`Self::axpy_row`]: dx_row[ox * s + kx - left] += wv * dy_row[ox].
    fn scatter_row(&self, kx: usize, wv: f32, dy_row: &[f32], dx_row: &mut [f32]) {
        let (lo, hi) = self.columns(kx);
        let start = lo * self.stride + kx - self.left;
        if self.stride == 1 {
            dx_row[start..].iter_mut().zip(&dy_row[lo..hi]).for_each(|(d, &g)| *d += wv * g);
        } else {
            dx_row[start..].iter_mut().step_by(self.stride).zip(&dy_row[lo..hi]).for_each(|(d, &g)| *d += wv * g);
        }
    }

    /// sum_ox dy_row[ox] * x_row[ox * s + kx - left].
    fn dot_row(&self, kx: usize, dy_row: &[f32], x_row: &[f32]) -> f32 {
        let (lo, hi) = self.columns(kx);
        let start = lo * self.stride + kx - self.left;
        let xs = x_row[start..].iter().step_by(self.stride);
        dy_row[lo..hi].iter().zip(xs).map(|(&g, &x)| g * x).sum()
    }

    /// Runs `plane(image_channel, out)` over each [rows x cols] plane of a new tensor, in parallel.
    fn per_plane(&self, rows: usize, cols: usize, plane: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
        let n = rows * cols;
        let mut out = vec![0f32; self.batch * self.c * n];
        out.par_chunks_mut(n.max(1)).enumerate().for_each(|(bc, o)| plane(bc, o));
        out
    }
}

impl CustomOp2 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-conv"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, weight) = (super::cpu_f32(xs, xl, "depthwise conv")?, super::cpu_f32(ws, wl, "depthwise conv")?);
        let _span = crate::profile::span(|| self.label("forward"), self.flops());
        let (kk, plane) = (self.k * self.k, self.h * self.w);
        let y = self.per_plane(self.oh, self.ow, |bc, y| {
            let (x, wk) = (&x[bc * plane..][..plane], &weight[(bc % self.c) * kk..][..kk]);
            for (oy, y_row) in y.chunks_mut(self.ow).enumerate() {
                for ky in 0..self.k {
                    let Some(iy) = self.input_row(oy, ky) else { continue };
                    for kx in 0..self.k {
                        self.axpy_row(kx, wk[ky * self.k + kx], &x[iy * self.w..][..self.w], y_row);
                    }
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((self.batch, self.c, self.oh, self.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(weight, &DepthwiseGradInput(*self))?;
        let dw = dy.apply_op2_no_bwd(x, &DepthwiseGradWeight(*self))?;
        Ok((Some(dx), Some(dw)))
    }
}

/// dx from (dy, weight): each dy row scattered back through the k*k taps.
struct DepthwiseGradInput(Depthwise);

impl CustomOp2 for DepthwiseGradInput {
    fn name(&self) -> &'static str {
        "depthwise-conv-grad-input"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let (dy, weight) = (super::cpu_f32(ds, dl, "depthwise conv")?, super::cpu_f32(ws, wl, "depthwise conv")?);
        let _span = crate::profile::span(|| g.label("grad input"), g.flops());
        let (kk, out_plane) = (g.k * g.k, g.oh * g.ow);
        let dx = g.per_plane(g.h, g.w, |bc, dx| {
            let (dy, wk) = (&dy[bc * out_plane..][..out_plane], &weight[(bc % g.c) * kk..][..kk]);
            for (oy, dy_row) in dy.chunks(g.ow).enumerate() {
                for ky in 0..g.k {
                    let Some(iy) = g.input_row(oy, ky) else { continue };
                    for kx in 0..g.k {
                        g.scatter_row(kx, wk[ky * g.k + kx], dy_row, &mut dx[iy * g.w..][..g.w]);
                    }
                }
            }
        });
        Ok((CpuStorage::F32(dx), Shape::from((g.batch, g.c, g.h, g.w))))
    }
}

/// dweight from (dy, x): per channel, the correlation of dy with each shifted input,
/// summed over the batch. Rows are summed in f32, the rows' sums in f64 in a fixed
/// order, so every run gives the same bits.
struct DepthwiseGradWeight(Depthwise);

impl CustomOp2 for DepthwiseGradWeight {
    fn name(&self) -> &'static str {
        "depthwise-conv-grad-weight"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let (dy, x) = (super::cpu_f32(ds, dl, "depthwise conv")?, super::cpu_f32(xs, xl, "depthwise conv")?);
        let _span = crate::profile::span(|| g.label("grad weight"), g.flops());
        let (kk, plane, out_plane) = (g.k * g.k, g.h * g.w, g.oh * g.ow);
        let dw: Vec<f32> = (0..g.c)
            .into_par_iter()
            .flat_map_iter(|ch| {
                let mut acc = vec![0f64; kk];
                for b in 0..g.batch {
                    let bc = b * g.c + ch;
                    let (dy, x) = (&dy[bc * out_plane..][..out_plane], &x[bc * plane..][..plane]);
                    for (oy, dy_row) in dy.chunks(g.ow).enumerate() {
                        for ky in 0..g.k {
                            let Some(iy) = g.input_row(oy, ky) else { continue };
                            for kx in 0..g.k {
                                acc[ky * g.k + kx] += g.dot_row(kx, dy_row, &x[iy * g.w..][..g.w]) as f64;
                            }
                        }
                    }
                }
                acc.into_iter().map(|v| v as f32)
            })
            .collect();
        Ok((CpuStorage::F32(dw), Shape::from((g.c, 1, g.k, g.k))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::models::rel_diff;

    fn pad(top: usize, bottom: usize, left: usize, right: usize) -> Padding {
        Padding { top, bottom, left, right }
    }

    /// The output against candle's grouped conv on the padded input, and both gradients
    /// against those of [`composed`] (candle's grouped-conv backward fails when the
    /// stride leaves input rows unread), for the shapes EfficientNet uses (3x3 / 5x5,
    /// stride 1 / 2, SAME's asymmetric padding) and odd ones (no padding, padding wider
    /// than the image, stride 3).
    #[test]
    fn matches_candle_grouped_conv_and_its_gradients() {
        let dev = Device::Cpu;
        let cases = [
            (3, 1, 7, 8, pad(1, 1, 1, 1)),
            (3, 2, 8, 8, pad(0, 1, 0, 1)),
            (5, 2, 9, 9, pad(2, 2, 2, 2)),
            (5, 1, 6, 5, pad(2, 2, 2, 2)),
            (5, 2, 7, 7, pad(1, 2, 1, 2)),
            (3, 1, 5, 6, pad(0, 0, 0, 0)),
            (3, 3, 10, 7, pad(2, 0, 1, 3)),
            (3, 1, 2, 2, pad(2, 2, 2, 2)),
        ];
        for (k, stride, h, w, p) in cases {
            let what = format!("k {k} stride {stride} {h}x{w} {p:?}");
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 3, h, w), &dev).unwrap()).unwrap();
            let wt = Var::from_tensor(&Tensor::randn(0f32, 1., (3, 1, k, k), &dev).unwrap()).unwrap();
            let ours = depthwise_conv2d(&x, &wt, stride, p).unwrap();
            let padded = x.pad_with_zeros(2, p.top, p.bottom).unwrap().pad_with_zeros(3, p.left, p.right).unwrap();
            let want = padded.conv2d(&wt, 0, stride, 1, 3).unwrap();
            assert_eq!(ours.dims(), want.dims(), "{what}");
            assert!(rel_diff(&ours, &want) < 1e-5, "{what}: output");
            let comp = composed(&x, &wt, stride, p).unwrap();
            assert!(rel_diff(&comp, &want) < 1e-5, "{what}: composed");
            // A loss that weighs each output differently, so wrong positions show.
            let r = Tensor::randn(0f32, 1., want.dims(), &dev).unwrap();
            let g_ours = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g_want = (&comp * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for (v, name) in [(&x, "dx"), (&wt, "dweight")] {
                let (a, b) = (g_ours.get(v).unwrap(), g_want.get(v).unwrap());
                assert!(rel_diff(a, b) < 1e-5, "{what}: {name} {}", rel_diff(a, b));
            }
        }
    }

    #[test]
    fn a_kernel_larger_than_the_padded_image_is_an_error() {
        let x = Tensor::zeros((1, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((2, 1, 5, 5), DType::F32, &Device::Cpu).unwrap();
        let e = depthwise_conv2d(&x, &w, 1, pad(0, 0, 0, 0)).unwrap_err().to_string();
        assert!(e.contains("kernel 5"), "{e}");
    }
}
