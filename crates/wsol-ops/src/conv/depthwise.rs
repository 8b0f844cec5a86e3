//! Depthwise convolution (one k x k filter per channel, `groups == channels`), as
//! EfficientNet and the MobileNets use it.
//!
//! Candle runs a grouped conv as one conv per group (1152 of them in a Lite0 block), so
//! the CPU path is one op of our own with direct kernels for the output and both
//! gradients. Each plane is split, zero-padded, into stride x stride phase planes
//! ([`Phases`]) in which every tap is one contiguous loop over all output rows; the
//! input gradient runs the same loops transposed. Padding may be asymmetric, as
//! TensorFlow's SAME is. Other devices (and other dtypes)
//! use [`composed`]: the same sum as candle ops over shifted, strided views.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::pool::every;

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

    /// Runs `plane(image_channel, out, scratch)` over each [rows x cols] plane of a new
    /// tensor, in parallel, each thread with its own scratch.
    fn per_plane(&self, rows: usize, cols: usize, plane: impl Fn(usize, &mut [f32], &mut Scratch) + Sync) -> Vec<f32> {
        let n = rows * cols;
        let mut out = vec![0f32; self.batch * self.c * n];
        out.par_chunks_mut(n.max(1)).enumerate().for_each_init(Scratch::default, |s, (bc, o)| plane(bc, o, s));
        out
    }
}

/// A thread's buffers: the phase planes, and the output (or dy) laid out flat.
#[derive(Default)]
struct Scratch {
    phases: Vec<f32>,
    flat: Vec<f32>,
}

/// The zero-padded input plane split into s x s phase planes, phase (py, px) holding
/// padded rows py, py + s, ... and columns px, px + s, ..., each `rows` x `pw`. Output
/// (oy, ox) under tap (ky, kx) then reads phase (ky % s, kx % s) at (oy + ky / s, ox +
/// kx / s): with output rows laid out flat at the phase width, each tap is one
/// contiguous axpy (or dot) of `len` elements over the whole plane; the pw - ow columns
/// between rows are computed and dropped (or are zeros). On 7x7 and 14x14 planes the
/// per-row loops this replaces cost 2-4x more in overhead than in arithmetic.
#[derive(Clone, Copy, Debug)]
struct Phases {
    g: Depthwise,
    rows: usize,
    pw: usize,
    len: usize,
}

impl Phases {
    fn new(g: Depthwise) -> Phases {
        let reach = (g.k - 1) / g.stride;
        let (rows, pw) = (g.oh + reach, g.ow + reach);
        Phases { g, rows, pw, len: (g.oh - 1) * pw + g.ow }
    }

    fn plane_len(&self) -> usize {
        self.rows * self.pw
    }

    /// Where tap (ky, kx)'s run of `len` elements starts.
    fn tap(&self, ky: usize, kx: usize) -> usize {
        let s = self.g.stride;
        ((ky % s) * s + kx % s) * self.plane_len() + (ky / s) * self.pw + kx / s
    }

    /// For padded row `r` (`r = i * s + py`): the input row, if it is not padding.
    fn input_row(&self, r: usize) -> Option<usize> {
        r.checked_sub(self.g.top).filter(|&iy| iy < self.g.h)
    }

    /// For phase column `px`: the first phase column j whose input column j * s + px -
    /// left is in the image, and that input column.
    fn first_column(&self, px: usize) -> (usize, usize) {
        let (s, left) = (self.g.stride, self.g.left);
        let j = left.saturating_sub(px).div_ceil(s);
        (j, j * s + px - left)
    }

    /// Every phase row that holds input: (input row, where the phase row starts in the
    /// buffer, its first phase column j holding input, and that input column).
    fn input_runs(&self) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
        let s = self.g.stride;
        (0..s)
            .flat_map(move |py| (0..self.rows).filter_map(move |i| self.input_row(i * s + py).map(|iy| (py, i, iy))))
            .flat_map(move |(py, i, iy)| {
                (0..s).map(move |px| {
                    let (j, ix) = self.first_column(px);
                    (iy, (py * s + px) * self.plane_len() + i * self.pw, j, ix)
                })
            })
    }

    /// `x` [h x w] into the phase planes (`buf` is resized and zeroed).
    fn split(&self, x: &[f32], buf: &mut Vec<f32>) {
        let (s, w) = (self.g.stride, self.g.w);
        buf.clear();
        buf.resize(s * s * self.plane_len(), 0.0);
        for (iy, at, j, ix) in self.input_runs() {
            let (x_row, out) = (&x[iy * w..][..w], &mut buf[at..][..self.pw]);
            if s == 1 {
                let n = (self.pw - j.min(self.pw)).min(w - ix.min(w));
                out[j..j + n].copy_from_slice(&x_row[ix..ix + n]);
            } else {
                out.iter_mut().skip(j).zip(x_row.iter().skip(ix).step_by(s)).for_each(|(o, &v)| *o = v);
            }
        }
    }

    /// The transpose of [`Self::split`]: dx [h x w] from the phase planes' gradients
    /// (`dx` zeroed; padding and input left unread by the stride get nothing).
    fn merge(&self, buf: &[f32], dx: &mut [f32]) {
        let (s, w) = (self.g.stride, self.g.w);
        for (iy, at, j, ix) in self.input_runs() {
            let (src, dx_row) = (&buf[at..][..self.pw], &mut dx[iy * w..][..w]);
            dx_row.iter_mut().skip(ix).step_by(s).zip(src.iter().skip(j)).for_each(|(d, &v)| *d = v);
        }
    }

    /// `rows` [oh x ow] laid out flat at the phase width, zeros between (`flat` resized).
    fn lay_out(&self, rows: &[f32], flat: &mut Vec<f32>) {
        flat.clear();
        flat.resize(self.len, 0.0);
        for (oy, row) in rows.chunks_exact(self.g.ow).enumerate() {
            flat[oy * self.pw..][..self.g.ow].copy_from_slice(row);
        }
    }

    /// Each tap's index ky * k + kx, in order, with where its run starts.
    fn taps(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let k = self.g.k;
        (0..k * k).map(move |t| (t, self.tap(t / k, t % k)))
    }
}

/// sum a_i b_i in 16 independent f32 lanes added in order at the end (a single running
/// sum is a chain of dependent adds; the lanes vectorize and give the same bits on any
/// SIMD width).
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut s = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x * y).sum();
    for (ca, cb) in ca.zip(cb) {
        for i in 0..L {
            s[i] += ca[i] * cb[i];
        }
    }
    s.iter().sum::<f32>() + tail
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
        let (x, weight) = (crate::cpu_f32(xs, xl, "depthwise conv")?, crate::cpu_f32(ws, wl, "depthwise conv")?);
        let _span = crate::profile::span(|| self.label("forward"), self.flops());
        let (kk, plane, ph) = (self.k * self.k, self.h * self.w, Phases::new(*self));
        let y = self.per_plane(self.oh, self.ow, |bc, y, s| {
            let wk = &weight[(bc % self.c) * kk..][..kk];
            ph.split(&x[bc * plane..][..plane], &mut s.phases);
            s.flat.clear();
            s.flat.resize(ph.len, 0.0);
            for (t, at) in ph.taps() {
                let (wv, p) = (wk[t], &s.phases[at..][..ph.len]);
                s.flat.iter_mut().zip(p).for_each(|(y, &x)| *y += wv * x);
            }
            for (oy, row) in y.chunks_exact_mut(self.ow).enumerate() {
                row.copy_from_slice(&s.flat[oy * ph.pw..][..self.ow]);
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

/// dx from (dy, weight): each tap's run of the phase planes gets dy scaled by the tap.
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
        let (dy, weight) = (crate::cpu_f32(ds, dl, "depthwise conv")?, crate::cpu_f32(ws, wl, "depthwise conv")?);
        let _span = crate::profile::span(|| g.label("grad input"), g.flops());
        let (kk, out_plane, ph) = (g.k * g.k, g.oh * g.ow, Phases::new(*g));
        let dx = g.per_plane(g.h, g.w, |bc, dx, s| {
            let wk = &weight[(bc % g.c) * kk..][..kk];
            ph.lay_out(&dy[bc * out_plane..][..out_plane], &mut s.flat);
            s.phases.clear();
            s.phases.resize(g.stride * g.stride * ph.plane_len(), 0.0);
            for (t, at) in ph.taps() {
                let wv = wk[t];
                s.phases[at..][..ph.len].iter_mut().zip(&s.flat).for_each(|(d, &v)| *d += wv * v);
            }
            ph.merge(&s.phases, dx);
        });
        Ok((CpuStorage::F32(dx), Shape::from((g.batch, g.c, g.h, g.w))))
    }
}

/// dweight from (dy, x): per channel, the dot of dy with each tap's run of the phase
/// planes, summed over the batch: each plane's dot in f32 lanes, the planes' in f64 in
/// a fixed order, so every run gives the same bits.
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
        let (dy, x) = (crate::cpu_f32(ds, dl, "depthwise conv")?, crate::cpu_f32(xs, xl, "depthwise conv")?);
        let _span = crate::profile::span(|| g.label("grad weight"), g.flops());
        let (kk, plane, out_plane, ph) = (g.k * g.k, g.h * g.w, g.oh * g.ow, Phases::new(*g));
        let dw: Vec<f32> = (0..g.c)
            .into_par_iter()
            .map_init(Scratch::default, |s, ch| {
                let mut acc = vec![0f64; kk];
                for b in 0..g.batch {
                    let bc = b * g.c + ch;
                    ph.split(&x[bc * plane..][..plane], &mut s.phases);
                    ph.lay_out(&dy[bc * out_plane..][..out_plane], &mut s.flat);
                    for (t, at) in ph.taps() {
                        acc[t] += lane_dot(&s.flat, &s.phases[at..][..ph.len]) as f64;
                    }
                }
                acc
            })
            .flat_map_iter(|acc| acc.into_iter().map(|v| v as f32))
            .collect();
        Ok((CpuStorage::F32(dw), Shape::from((g.c, 1, g.k, g.k))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::rel_diff;

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
            // Padding over k - 1 (taps that read only zeros for some rows).
            (3, 1, 4, 5, pad(3, 1, 0, 4)),
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

    /// EfficientNet's plane sizes (long flat runs, many lanes per dot) against the
    /// composition in f64.
    #[test]
    fn matches_f64_on_efficientnet_planes() {
        let dev = Device::Cpu;
        for (c, h, k, stride, p) in [(4, 112, 3, 1, 1), (4, 56, 5, 2, 2), (3, 112, 3, 2, 1), (8, 7, 5, 1, 2)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, c, h, h), &dev).unwrap()).unwrap();
            let wt = Var::from_tensor(&Tensor::randn(0f32, 1., (c, 1, k, k), &dev).unwrap()).unwrap();
            let f64v = |v: &Var| Var::from_tensor(&v.to_dtype(DType::F64).unwrap()).unwrap();
            let (x64, w64) = (f64v(&x), f64v(&wt));
            let ours = depthwise_conv2d(&x, &wt, stride, pad(p, p, p, p)).unwrap();
            let want = composed(&x64, &w64, stride, pad(p, p, p, p)).unwrap();
            let r = Tensor::randn(0f32, 1., ours.dims(), &dev).unwrap();
            let g_ours = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g_want = (&want * r.to_dtype(DType::F64).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
            let f32t = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let what = format!("{c}x{h}x{h} k{k} s{stride}");
            assert!(rel_diff(&ours, &f32t(&want)) < 1e-6, "{what}: output");
            for (v, v64, name) in [(&x, &x64, "dx"), (&wt, &w64, "dweight")] {
                let d = rel_diff(g_ours.get(v).unwrap(), &f32t(g_want.get(v64).unwrap()));
                assert!(d < 1e-6, "{what}: {name} {d}");
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
