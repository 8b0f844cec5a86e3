//! 2-D convolution whose CPU forward and both backward passes are im2col + GEMM (the
//! `gemm` crate, which candle's own matmul uses), as candle custom ops. Why: candle's CPU
//! backward computes the input gradient with `conv_transpose2d` (a direct loop) and the
//! weight gradient as a convolution whose kernel is the whole output map; together they
//! were most of a training step. Here each pass is one GEMM per tile of output positions:
//!
//! - forward: `y = W · col(x)`,
//! - input gradient: `dx = col⁻¹(Wᵀ · dy)` (col2im adds the overlapping windows back),
//! - weight gradient: `dW = Σ dy · col(x)ᵀ` (col recomputed, not kept, to save memory).
//!
//! On x86-64 with AVX2 or AVX-512 the three passes run on packed kernels of our own
//! ([`packed`]), and 3x3 stride-1 layers with even output maps (all of
//! ResNet's and VGG's) on Winograd's F(2x2, 3x3) ([`winograd`]): 4/9 of the
//! multiply-adds, within float rounding of the direct sums.
//!
//! A layer's bias is fused in: it seeds the output before the GEMM adds the product.
//! Tiles keep the im2col buffer near 8 MB, so VGG's 224x224 layers need no 100 MB copies.
//! Images run in parallel (one GEMM thread each) when the batch has at least as many
//! images as threads, otherwise one image at a time with a parallel GEMM. Depthwise
//! convolutions are [`depthwise`]'s, other grouped ones candle's op; other devices
//! use candle's forward with the backward of [`gpu`].

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use gemm::Parallelism;

use rayon::prelude::*;

use crate::cpu_f32;
use packed::Isa;

#[cfg(feature = "cudnn")]
mod cudnn;
pub mod depthwise;
mod gpu;
pub(crate) mod packed;
pub(crate) mod winograd;

#[cfg(feature = "cudnn")]
pub use cudnn::{set_benchmark as set_cudnn_benchmark, set_graph_api as set_cudnn_graph_api};

/// The packed-GEMM microkernel this process runs (`avx512`, `avx2`), if any.
pub fn microkernel() -> Option<&'static str> {
    Isa::detect().map(|isa| match isa {
        Isa::Avx512 => "avx512",
        Isa::Avx2 => "avx2",
    })
}

/// Size of an im2col tile in floats (8 MB); tests shrink it to cross tile borders.
static COL_FLOATS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(2_000_000);

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    /// Zero padding (rows, columns) on each side.
    pub pad: (usize, usize),
    pub dilation: usize,
}

impl Geometry {
    /// `op c_in x h x w -> c_out kK sS` for the profile, with the flops of `batch` images.
    fn span(&self, op: &str, batch: usize) -> crate::profile::Span {
        let (ho, wo) = self.out_hw();
        let flops = 2.0 * (batch * self.c_out * ho * wo * self.k()) as f64;
        let g = self;
        crate::profile::span(
            || format!("conv {op} {}x{}x{} -> {} k{} s{}", g.c_in, g.h, g.w, g.c_out, g.kh, g.stride),
            flops,
        )
    }

    pub(crate) fn out_hw(&self) -> (usize, usize) {
        let span = |n: usize, k: usize, p: usize| (n + 2 * p - self.dilation * (k - 1) - 1) / self.stride + 1;
        (span(self.h, self.kh, self.pad.0), span(self.w, self.kw, self.pad.1))
    }

    /// Rows of the im2col matrix.
    pub(crate) fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// A 1x1, stride-1, unpadded convolution: the image is its own im2col matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == (0, 0)
    }

    /// A 1x1 strided convolution without padding (ResNet's downsampling shortcut) reads
    /// only every stride-th row and column: it is the stride-1 one on those pixels, which
    /// [`Geometry::subsample`] cuts out (a quarter of x, where the packed path's column
    /// phases would copy all of it).
    fn strided_pointwise(&self) -> Option<Geometry> {
        let (ho, wo) = self.out_hw();
        let strided = self.kh == 1 && self.kw == 1 && self.stride > 1 && self.pad == (0, 0);
        strided.then_some(Geometry { h: ho, w: wo, stride: 1, dilation: 1, ..*self })
    }

    /// The pixels a [`Geometry::strided_pointwise`] convolution reads, [B, C, ho, wo].
    fn subsample(&self, x: &[f32], batch: usize) -> Vec<f32> {
        let ((ho, wo), s) = (self.out_hw(), self.stride);
        crate::memory::par_vec(batch * self.c_in * ho * wo, ho * wo, |k| {
            let plane = &x[k * self.h * self.w..][..self.h * self.w];
            (0..ho).flat_map(move |oy| plane[oy * s * self.w..].iter().step_by(s).take(wo).copied())
        })
    }

    /// Floats of an im2col tile (none for a pointwise convolution, which reads the image).
    fn col_len(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.k() * self.tile()
        }
    }

    /// Output positions per tile, so that a tile's im2col buffer holds about
    /// [`COL_FLOATS`] floats.
    fn tile(&self) -> usize {
        let (ho, wo) = self.out_hw();
        let budget = COL_FLOATS.load(std::sync::atomic::Ordering::Relaxed);
        (budget / self.k().max(1)).max(16).min(ho * wo).max(1)
    }
}

/// For kernel offset `off` (= tap index x dilation) along an axis of `n` inputs padded
/// by `pad`, the outputs `o` whose input `o * stride + off - pad` lies inside: `lo..hi`.
fn inside(n: usize, pad: usize, off: usize, stride: usize, out: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(off).div_ceil(stride);
    let hi = if n + pad > off { (n + pad - off - 1) / stride + 1 } else { 0 };
    (lo.min(out), hi.min(out).max(lo.min(out)))
}

/// Visits the im2col matrix of output positions `l0..l1` row segment by row segment:
/// `f(r, t, len, src)` for `len` entries of row `r` starting at column `t`, reading the
/// image at `src, src + stride, ...` (`None`: padding, zeros).
fn segments(g: &Geometry, l0: usize, l1: usize, mut f: impl FnMut(usize, usize, usize, Option<usize>)) {
    let (ho, wo) = g.out_hw();
    let (oy0, oy1) = (l0 / wo, (l1 - 1) / wo);
    for c in 0..g.c_in {
        for i in 0..g.kh {
            let (y_lo, y_hi) = inside(g.h, g.pad.0, i * g.dilation, g.stride, ho);
            for j in 0..g.kw {
                let r = (c * g.kh + i) * g.kw + j;
                let (x_lo, x_hi) = inside(g.w, g.pad.1, j * g.dilation, g.stride, wo);
                for oy in oy0..=oy1 {
                    // This output row's part of the tile.
                    let a = if oy == oy0 { l0 % wo } else { 0 };
                    let b = if oy == oy1 { (l1 - 1) % wo + 1 } else { wo };
                    let t = oy * wo + a - l0;
                    if oy < y_lo || oy >= y_hi {
                        f(r, t, b - a, None);
                        continue;
                    }
                    let iy = oy * g.stride + i * g.dilation - g.pad.0;
                    let (xa, xb) = (x_lo.clamp(a, b), x_hi.clamp(a, b).max(x_lo.clamp(a, b)));
                    if xa > a {
                        f(r, t, xa - a, None);
                    }
                    if xb > xa {
                        let ix = xa * g.stride + j * g.dilation - g.pad.1;
                        f(r, t + xa - a, xb - xa, Some((c * g.h + iy) * g.w + ix));
                    }
                    if b > xb {
                        f(r, t + xb - a, b - xb, None);
                    }
                }
            }
        }
    }
}

/// `col[r, l - l0]` for output positions `l0..l1` of one image `x` [c_in, h, w]; row
/// `r = (c * kh + i) * kw + j`.
fn im2col(g: &Geometry, x: &[f32], l0: usize, l1: usize, col: &mut [f32]) {
    let n = l1 - l0;
    let s = g.stride;
    segments(g, l0, l1, |r, t, len, src| {
        let dst = &mut col[r * n + t..][..len];
        match src {
            None => dst.fill(0.0),
            Some(p) if s == 1 => dst.copy_from_slice(&x[p..p + len]),
            Some(p) => dst.iter_mut().enumerate().for_each(|(k, v)| *v = x[p + k * s]),
        }
    });
}

/// The adjoint of [`im2col`]: adds `col` back into the image gradient `dx`.
fn col2im(g: &Geometry, col: &[f32], l0: usize, l1: usize, dx: &mut [f32]) {
    let n = l1 - l0;
    let s = g.stride;
    segments(g, l0, l1, |r, t, len, src| {
        if let Some(p) = src {
            let from = &col[r * n + t..][..len];
            if s == 1 {
                dx[p..p + len].iter_mut().zip(from).for_each(|(d, v)| *d += v);
            } else {
                from.iter().enumerate().for_each(|(k, v)| dx[p + k * s] += v);
            }
        }
    });
}

/// `dst[m, n] (row stride dst_rs) = (acc ? dst : 0) + A · B` with A [m, k] and B [k, n]
/// given by (column stride, row stride).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    a: (&[f32], isize, isize),
    b: (&[f32], isize, isize),
    par: Parallelism,
) {
    // SAFETY: the callers size every slice for the strides and extents passed here.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            acc,
            a.0.as_ptr(),
            a.1,
            a.2,
            b.0.as_ptr(),
            b.1,
            b.2,
            if acc { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// How the batch is split over threads: images in parallel, or one image at a time with
/// a parallel GEMM.
fn plan(batch: usize) -> (bool, Parallelism) {
    let threads = rayon::current_num_threads();
    if batch >= threads {
        (true, Parallelism::None)
    } else {
        (false, Parallelism::Rayon(threads))
    }
}

/// A zeroed output of `batch` images of `len` values each, image `b` filled by
/// `f(b, its slice, GEMM parallelism)`, images in parallel or in turn (see [`plan`]).
fn per_image(batch: usize, len: usize, f: impl Fn(usize, &mut [f32], Parallelism) + Sync + Send) -> Vec<f32> {
    let mut out = vec![0f32; batch * len];
    let (images_in_parallel, par) = plan(batch);
    if images_in_parallel {
        out.par_chunks_mut(len.max(1)).enumerate().for_each(|(b, o)| f(b, o, par));
    } else {
        out.chunks_mut(len.max(1)).enumerate().for_each(|(b, o)| f(b, o, par));
    }
    out
}

thread_local! {
    /// This thread's im2col tile, reused across images and calls instead of a fresh one
    /// (up to 8 MB, zeroed) per image.
    static COL: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer of `n` floats, whose contents are left over
/// from earlier use: every caller writes what it reads. (Re-entered through rayon work
/// stealing, the inner call finds the cell empty and allocates its own.)
fn with_col<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut col = COL.take();
    if col.len() < n {
        col.resize(n, 0.0);
    }
    let r = f(&mut col[..n]);
    COL.set(col);
    r
}

/// Tiles `(l0, l1)` of `tile` output positions out of `l_all`.
fn tiles(l_all: usize, tile: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..l_all).step_by(tile).map(move |l0| (l0, (l0 + tile).min(l_all)))
}

/// y = conv(x, w) (+ bias, each output channel's value to start the GEMM's sum from) for
/// x [B, c_in, h, w], w [c_out, c_in, kh, kw] and bias [c_out].
fn forward_cpu(
    g: Geometry,
    (xs, xl): (&CpuStorage, &Layout),
    (ws, wl): (&CpuStorage, &Layout),
    bias: Option<(&CpuStorage, &Layout)>,
    relu: bool,
) -> Result<(CpuStorage, Shape)> {
    let (x, w) = (cpu_f32(xs, xl, "conv")?, cpu_f32(ws, wl, "conv")?);
    let bias = bias.map(|(bs, bl)| cpu_f32(bs, bl, "conv bias")).transpose()?;
    let batch = xl.dims()[0];
    let what = match (bias.is_some(), relu) {
        (false, false) => "forward",
        (true, false) => "forward + bias",
        (false, true) => "forward + relu",
        (true, true) => "forward + bias + relu",
    };
    let _span = g.span(what, batch);
    let (ho, wo) = g.out_hw();
    let y = forward_slices(Isa::detect(), &g, x, w, bias, batch, relu);
    Ok((CpuStorage::F32(y), Shape::from((batch, g.c_out, ho, wo))))
}

/// The forward pass on slices: the packed kernels when `isa` is given, else im2col +
/// `gemm`.
fn forward_slices(
    isa: Option<Isa>,
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    batch: usize,
    relu: bool,
) -> Vec<f32> {
    let (ho, wo) = g.out_hw();
    let (l_all, k, tile) = (ho * wo, g.k(), g.tile());
    if let Some(isa) = isa {
        if winograd::applies(g) {
            return winograd::forward(isa, g, (x, batch), (w, false), bias, relu);
        }
        let packed = packed::pack_panels(isa, g.c_out, k, w);
        if let Some(sub) = g.strided_pointwise() {
            return packed::forward(isa, &sub, &g.subsample(x, batch), batch, &packed, bias, relu);
        }
        return packed::forward(isa, g, x, batch, &packed, bias, relu);
    }
    per_image(batch, g.c_out * l_all, |b, yb, par| {
        let xb = &x[b * g.c_in * g.h * g.w..][..g.c_in * g.h * g.w];
        if let Some(bias) = bias {
            yb.chunks_mut(l_all).zip(bias).for_each(|(row, &v)| row.fill(v));
        }
        with_col(g.col_len(), |col| {
            for (l0, l1) in tiles(l_all, tile) {
                let n = l1 - l0;
                let rhs: (&[f32], isize, isize) = if g.pointwise() {
                    (&xb[l0..], 1, l_all as isize)
                } else {
                    im2col(g, xb, l0, l1, col);
                    (col, 1, n as isize)
                };
                matmul((g.c_out, n, k), &mut yb[l0..], l_all, bias.is_some(), (w, 1, k as isize), rhs, par);
            }
        });
        if relu {
            yb.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    })
}

/// y = conv(x, w) for x [B, c_in, h, w] and w [c_out, c_in, kh, kw]; then max(y, 0)
/// with `relu`, whose gradient passes where y > 0 (PyTorch's; candle's ReLU also passes
/// it where the input is exactly 0).
#[derive(Clone, Copy)]
struct Forward {
    g: Geometry,
    relu: bool,
}

impl Forward {
    /// dy through the fused ReLU, if any.
    fn through_relu(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        if self.relu {
            crate::activation::grad_from_output(dy, y)
        } else {
            dy.contiguous()
        }
    }
}

impl CustomOp2 for Forward {
    fn name(&self) -> &'static str {
        "conv2d-gemm"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        forward_cpu(self.g, (xs, xl), (ws, wl), None, self.relu)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = self.through_relu(y, dy)?;
        grads_of_conv(self.g, x, w, &dy)
    }
}

/// (dx, dw) from dy (after any fused ReLU). An operand outside the graph needs no
/// gradient: the image batch at the stem (its input gradient was a whole GEMM pass per
/// step), or frozen weights.
fn grads_of_conv(g: Geometry, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let dx = x.track_op().then(|| dy.apply_op2_no_bwd(w, &GradInput(g))).transpose()?;
    let dw = w.track_op().then(|| x.apply_op2_no_bwd(dy, &GradWeight(g))).transpose()?;
    Ok((dx, dw))
}

/// conv(x, w) + bias in one op: the bias is where the GEMM's sum starts, and its gradient
/// one pass over dy (candle's broadcast add and its backward were ~30% of a VGG16 step).
struct ForwardBias(Forward);

impl CustomOp3 for ForwardBias {
    fn name(&self) -> &'static str {
        "conv2d-gemm-bias"
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
        forward_cpu(self.0.g, (xs, xl), (ws, wl), Some((bs, bl)), self.0.relu)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = self.0.through_relu(y, dy)?;
        let (dx, dw) = grads_of_conv(self.0.g, x, w, &dy)?;
        let db = b.track_op().then(|| dy.apply_op1_no_bwd(&BiasGrad)).transpose()?;
        Ok((dx, dw, db))
    }
}

/// The bias gradient: dy [B, C, H, W] summed per channel (planes in f32, then in f64
/// across the batch, in order).
struct BiasGrad;

impl CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "conv2d-bias-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dy = cpu_f32(s, l, "conv bias")?;
        let (b, c, h, w) = l.shape().dims4()?;
        let plane = h * w;
        let _span = crate::profile::span(|| format!("conv bias grad {c}x{h}x{w}"), 0.0);
        let db: Vec<f32> = (0..c)
            .into_par_iter()
            .map(|ch| {
                (0..b).map(|i| dy[(i * c + ch) * plane..][..plane].iter().sum::<f32>() as f64).sum::<f64>() as f32
            })
            .collect();
        Ok((CpuStorage::F32(db), Shape::from(c)))
    }
}

/// dx on slices: a stride-1 convolution's as the packed forward pass over dy with the
/// flipped kernel, otherwise `col⁻¹(Wᵀ · dy)` with `gemm`.
fn grad_input_slices(isa: Option<Isa>, g: &Geometry, dy: &[f32], w: &[f32], batch: usize) -> Vec<f32> {
    if let Some((isa, sub)) = isa.zip(g.strided_pointwise()) {
        // The stride-1 input gradient on the pixels read, spread back; zeros elsewhere.
        let dx_sub = grad_input_slices(Some(isa), &sub, dy, w, batch);
        let (plane, (ho, wo)) = (g.h * g.w, g.out_hw());
        let mut dx = vec![0f32; batch * g.c_in * plane];
        dx.par_chunks_mut(plane).zip(dx_sub.par_chunks(ho * wo)).for_each(|(dx, sub)| {
            for (oy, row) in sub.chunks_exact(wo).enumerate() {
                let out = &mut dx[oy * g.stride * g.w..];
                row.iter().enumerate().for_each(|(ox, &v)| out[ox * g.stride] = v);
            }
        });
        return dx;
    }
    if let Some((isa, flipped)) = isa.zip(packed::grad_input_geometry(g)) {
        if winograd::applies(&flipped) {
            return winograd::forward(isa, &flipped, (dy, batch), (w, true), None, false);
        }
        return packed::forward(isa, &flipped, dy, batch, &packed::pack_flipped(isa, g, w), None, false);
    }
    let (ho, wo) = g.out_hw();
    let (l_all, k, tile) = (ho * wo, g.k(), g.tile());
    per_image(batch, g.c_in * g.h * g.w, |b, dxb, par| {
        let dyb = &dy[b * g.c_out * l_all..][..g.c_out * l_all];
        with_col(g.col_len(), |col| {
            for (l0, l1) in tiles(l_all, tile) {
                let n = l1 - l0;
                // Wᵀ [k, c_out]: element (r, c) is w[c * k + r].
                let wt = (w, k as isize, 1);
                let dy_tile = (&dyb[l0..], 1, l_all as isize);
                if g.pointwise() {
                    matmul((k, n, g.c_out), &mut dxb[l0..], l_all, false, wt, dy_tile, par);
                } else {
                    matmul((k, n, g.c_out), col, n, false, wt, dy_tile, par);
                    col2im(g, &col[..k * n], l0, l1, dxb);
                }
            }
        })
    })
}

/// dx from (dy, w).
struct GradInput(Geometry);

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "conv2d-gemm-grad-input"
    }

    fn cpu_fwd(&self, ds: &CpuStorage, dl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (dy, w) = (cpu_f32(ds, dl, "conv")?, cpu_f32(ws, wl, "conv")?);
        let batch = dl.dims()[0];
        let _span = g.span("grad input", batch);
        let dx = grad_input_slices(Isa::detect(), &g, dy, w, batch);
        Ok((CpuStorage::F32(dx), Shape::from((batch, g.c_in, g.h, g.w))))
    }
}

/// dW on slices: the packed kernels when `isa` is given, else `Σ dy · col(x)ᵀ` with
/// `gemm`.
fn grad_weight_slices(isa: Option<Isa>, g: &Geometry, x: &[f32], dy: &[f32], batch: usize) -> Vec<f32> {
    if let Some(isa) = isa {
        if winograd::applies(g) {
            return winograd::grad_weight(isa, g, x, dy, batch);
        }
        if let Some(sub) = g.strided_pointwise() {
            return packed::grad_weight(isa, &sub, &g.subsample(x, batch), dy, batch);
        }
        return packed::grad_weight(isa, g, x, dy, batch);
    }
    let (ho, wo) = g.out_hw();
    let (l_all, k, tile) = (ho * wo, g.k(), g.tile());
    let one_image = |b: usize, dw: &mut [f32], par: Parallelism| {
        let xb = &x[b * g.c_in * g.h * g.w..][..g.c_in * g.h * g.w];
        let dyb = &dy[b * g.c_out * l_all..][..g.c_out * l_all];
        with_col(g.col_len(), |col| {
            for (l0, l1) in tiles(l_all, tile) {
                let n = l1 - l0;
                // col(x)ᵀ [n, k]: element (t, r) is col[r * n + t] (or x[r * l_all + l0 + t]).
                let colt: (&[f32], isize, isize) = if g.pointwise() {
                    (&xb[l0..], l_all as isize, 1)
                } else {
                    im2col(g, xb, l0, l1, col);
                    (col, n as isize, 1)
                };
                matmul((g.c_out, k, n), dw, k, true, (&dyb[l0..], 1, l_all as isize), colt, par);
            }
        })
    };
    let size = g.c_out * k;
    let (images_in_parallel, par) = plan(batch);
    if images_in_parallel {
        // One gradient per thread over a fixed, contiguous share of the images, then
        // the shares added in order: the same sum whatever the scheduling (a parallel
        // fold would add in a varying order). Per image instead, VGG's and layer4's
        // 9 MB gradients were summed 8 times per step on one thread.
        let shares = rayon::current_num_threads().min(batch);
        let per = batch.div_ceil(shares);
        let parts = per_image(shares, size, |i, part, par| {
            (i * per..((i + 1) * per).min(batch)).for_each(|b| one_image(b, part, par))
        });
        let mut dw = vec![0f32; size];
        dw.par_chunks_mut(1 << 16).enumerate().for_each(|(c, out)| {
            for part in parts.chunks(size) {
                out.iter_mut().zip(&part[c << 16..]).for_each(|(p, q)| *p += q);
            }
        });
        dw
    } else {
        let mut dw = vec![0f32; size];
        (0..batch).for_each(|b| one_image(b, &mut dw, par));
        dw
    }
}

/// dW from (x, dy), summed over the batch.
struct GradWeight(Geometry);

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "conv2d-gemm-grad-weight"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ds: &CpuStorage, dl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (x, dy) = (cpu_f32(xs, xl, "conv")?, cpu_f32(ds, dl, "conv")?);
        let batch = xl.dims()[0];
        let _span = g.span("grad weight", batch);
        let dw = grad_weight_slices(Isa::detect(), &g, x, dy, batch);
        Ok((CpuStorage::F32(dw), Shape::from((g.c_out, g.c_in, g.kh, g.kw))))
    }
}

/// `WSOL_CANDLE_CONV=1` runs candle's own convolution instead (for A/B benchmarks).
fn candle_conv_requested() -> bool {
    crate::switches::get().candle_conv
}

/// Whether the GEMM ops run this convolution: CPU f32, no groups, not switched off.
fn cpu_f32_path(x: &Tensor, w: &Tensor) -> bool {
    let grouped = x.dim(1).ok() != w.dim(1).ok();
    x.device().is_cpu() && x.dtype() == DType::F32 && !grouped && !candle_conv_requested()
}

fn geometry(x: &Tensor, w: &Tensor, pad: (usize, usize), stride: usize, dilation: usize) -> Result<Geometry> {
    let (_, c_in, h, wd) = x.dims4()?;
    let (c_out, _, kh, kw) = w.dims4()?;
    Ok(Geometry { c_in, h, w: wd, c_out, kh, kw, stride, pad, dilation })
}

/// `conv2d` of `x` [B, c_in, h, w] with `w` [c_out, c_in, kh, kw], zero padding `pad`
/// (rows, columns), no groups: the GEMM ops on CPU f32, cuDNN for f32 on CUDA in a
/// `cudnn` build, elsewhere candle's op with [`gpu`]'s backward.
pub fn conv2d(x: &Tensor, w: &Tensor, pad: (usize, usize), stride: usize, dilation: usize) -> Result<Tensor> {
    let (_, c_in, _, _) = x.dims4()?;
    let (_, wc_in, _, _) = w.dims4()?;
    if cpu_f32_path(x, w) {
        let g = geometry(x, w, pad, stride, dilation)?;
        return x.contiguous()?.apply_op2(&w.contiguous()?, Forward { g, relu: false });
    }
    if candle_conv_requested() || wc_in != c_in {
        return gpu::candle_conv2d(x, w, pad, stride, dilation);
    }
    #[cfg(feature = "cudnn")]
    if x.device().is_cuda() && x.dtype() == DType::F32 {
        return cudnn::conv2d(x, w, pad, stride, dilation);
    }
    gpu::conv2d(x, w, pad, stride, dilation)
}

/// A convolution layer (`weight`, optional `bias`, torchvision's names) running
/// [`conv2d`]; grouped convolutions go to candle's op.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    pad: (usize, usize),
    stride: usize,
    dilation: usize,
    groups: usize,
}

impl Conv2d {
    /// Square kernel, candle_nn's config and initialization (so weights and seeded runs
    /// are as with `candle_nn::conv2d`).
    pub fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        cfg: candle_nn::Conv2dConfig,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::rect(c_in, c_out, (k, k), (cfg.padding, cfg.padding), cfg.stride, cfg.dilation, cfg.groups, bias, vb)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn rect(
        c_in: usize,
        c_out: usize,
        k: (usize, usize),
        pad: (usize, usize),
        stride: usize,
        dilation: usize,
        groups: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let init = candle_nn::init::DEFAULT_KAIMING_NORMAL;
        let weight = vb.get_with_hints((c_out, c_in / groups, k.0, k.1), "weight", init)?;
        let bias = if bias {
            let bound = 1. / (c_in as f64).sqrt(); // as candle_nn::conv2d
            Some(vb.get_with_hints(c_out, "bias", Init::Uniform { lo: -bound, up: bound })?)
        } else {
            None
        };
        Ok(Conv2d { weight, bias, pad, stride, dilation, groups })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// relu(conv(x) + bias): on the CPU one op, the ReLU applied to each image's output
    /// right after its GEMMs and its mask to dy before the gradients' (VGG's ReLU was two
    /// more passes over every activation and a gradient candle accumulates into a zeroed
    /// copy).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        if self.groups != 1 || !cpu_f32_path(x, &self.weight) {
            return crate::activation::relu(&self.forward(x)?);
        }
        let op = Forward { g: geometry(x, &self.weight, self.pad, self.stride, self.dilation)?, relu: true };
        let (x, w) = (x.contiguous()?, self.weight.contiguous()?);
        match &self.bias {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, ForwardBias(op)),
            None => x.apply_op2(&w, op),
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let (Some(b), 1, true) = (&self.bias, self.groups, cpu_f32_path(x, &self.weight)) {
            let g = geometry(x, &self.weight, self.pad, self.stride, self.dilation)?;
            let op = ForwardBias(Forward { g, relu: false });
            return x.contiguous()?.apply_op3(&self.weight.contiguous()?, &b.contiguous()?, op);
        }
        let (c_out, per_group, _, _) = self.weight.dims4()?;
        let y = if self.groups == 1 {
            conv2d(x, &self.weight, self.pad, self.stride, self.dilation)?
        } else if per_group == 1 && c_out == self.groups && self.dilation == 1 {
            let (rows, cols) = self.pad;
            let pad = depthwise::Padding { top: rows, bottom: rows, left: cols, right: cols };
            depthwise::depthwise_conv2d(x, &self.weight, self.stride, pad)?
        } else {
            let x = if self.pad.0 == self.pad.1 {
                x.clone()
            } else {
                x.pad_with_zeros(2, self.pad.0, self.pad.0)?.pad_with_zeros(3, self.pad.1, self.pad.1)?
            };
            let p = if self.pad.0 == self.pad.1 { self.pad.0 } else { 0 };
            x.conv2d(&self.weight, p, self.stride, self.dilation, self.groups)?
        };
        match &self.bias {
            #[cfg(feature = "cuda")]
            Some(b) if y.device().is_cuda() && y.dtype() == DType::F32 && y.rank() == 4 => {
                crate::cuda::add_channel_bias(&y, b)
            }
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => Ok(y),
        }
    }
}

/// `candle_nn::conv2d`'s signature, for the model files.
pub fn conv2d_layer(
    c_in: usize,
    c_out: usize,
    k: usize,
    cfg: candle_nn::Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Conv2d::new(c_in, c_out, k, cfg, true, vb)
}

/// `candle_nn::conv2d_no_bias`'s signature.
pub fn conv2d_no_bias(
    c_in: usize,
    c_out: usize,
    k: usize,
    cfg: candle_nn::Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Conv2d::new(c_in, c_out, k, cfg, false, vb)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::rel_diff as rel;

    /// (c_in, c_out, h, w, kh, kw, stride, pad, dilation): every shape class the backbones
    /// use (1x1, 3x3, strided, 7x7 stem, rectangular kernels with rectangular padding,
    /// dilation).
    ///
    /// The 2-wide one gives taps with a valid lane in every other position (more runs
    /// than the fill takes); the four after the 16-channel one have output rows of 16 or
    /// more, so whole panels lie inside one row. The 3x3 stride-1 ones with even outputs
    /// and 16 channels or more run Winograd's F(2x2, 3x3): the two after the dilated one,
    /// with panels of tiles across rows and images, and inside one row (18-tile rows);
    /// the last has 3 channels, as VGG's first layer, and stays direct.
    #[allow(clippy::type_complexity)]
    const SHAPE_CLASSES: [(usize, usize, usize, usize, usize, usize, usize, (usize, usize), usize); 18] = [
        (8, 16, 9, 9, 1, 1, 1, (0, 0), 1),
        (8, 12, 10, 11, 3, 3, 1, (1, 1), 1),
        (6, 10, 11, 9, 3, 3, 2, (1, 1), 1),
        (3, 8, 20, 20, 7, 7, 2, (3, 3), 1),
        (5, 7, 12, 12, 1, 7, 1, (0, 3), 1),
        (5, 7, 12, 12, 7, 1, 1, (3, 0), 1),
        (4, 6, 12, 12, 3, 3, 1, (2, 2), 2),
        (4, 6, 12, 12, 1, 1, 2, (0, 0), 1),
        (4, 6, 8, 8, 3, 3, 1, (0, 0), 1),
        (3, 4, 5, 2, 3, 3, 1, (1, 1), 1),
        (16, 12, 9, 21, 3, 3, 1, (1, 1), 1),
        (3, 8, 40, 37, 7, 7, 2, (3, 3), 1),
        (4, 6, 9, 35, 3, 3, 2, (1, 1), 1),
        (4, 6, 7, 34, 3, 3, 1, (1, 1), 1),
        (3, 5, 9, 36, 3, 3, 1, (2, 2), 2),
        (16, 20, 10, 20, 3, 3, 1, (1, 1), 1),
        (20, 16, 14, 36, 3, 3, 1, (1, 1), 1),
        (3, 8, 12, 12, 3, 3, 1, (1, 1), 1),
    ];

    /// Forward, input gradient and weight gradient against candle's own conv2d, for every
    /// shape class the backbones use (1x1, 3x3, strided, 7x7 stem, rectangular kernels
    /// with rectangular padding, dilation), batch 1 (parallel GEMM) and 3.
    #[test]
    fn matches_candle_forward_and_both_gradients() {
        let dev = Device::Cpu;
        // Tiles of a few dozen positions, so every case crosses tile borders too.
        COL_FLOATS.store(1000, std::sync::atomic::Ordering::Relaxed);
        for (c_in, c_out, h, w, kh, kw, stride, pad, dil) in SHAPE_CLASSES {
            for batch in [1usize, 3] {
                let x = Var::from_tensor(&Tensor::randn(0f32, 1., (batch, c_in, h, w), &dev).unwrap()).unwrap();
                let k = Var::from_tensor(&Tensor::randn(0f32, 1., (c_out, c_in, kh, kw), &dev).unwrap()).unwrap();
                let ours = conv2d(x.as_tensor(), k.as_tensor(), pad, stride, dil).unwrap();
                let xp =
                    x.as_tensor().pad_with_zeros(2, pad.0, pad.0).unwrap().pad_with_zeros(3, pad.1, pad.1).unwrap();
                let theirs = xp.conv2d(k.as_tensor(), 0, stride, dil, 1).unwrap();
                let what = format!("{c_in}->{c_out} {h}x{w} k{kh}x{kw} s{stride} p{pad:?} d{dil} b{batch}");
                assert!(rel(&ours, &theirs) < 1e-5, "forward {what}");
                // A loss that weights every output differently.
                let wts = Tensor::randn(0f32, 1., theirs.shape(), &dev).unwrap();
                let g1 = (ours * &wts).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = (theirs * &wts).unwrap().sum_all().unwrap().backward().unwrap();
                for (name, v) in [("input", &x), ("weight", &k)] {
                    let (a, b) = (g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
                    assert!(rel(a, b) < 1e-5, "{name} gradient {what}: {}", rel(a, b));
                }
            }
        }
    }

    /// The packed kernels of every ISA this CPU has against the im2col + `gemm` path, and
    /// the same bits from every ISA and thread count (each sum has one fixed order).
    #[test]
    fn packed_kernels_match_gemm_path_bit_for_bit_across_isas_and_threads() {
        let isas = Isa::available();
        if isas.is_empty() {
            eprintln!("no packed-GEMM kernel on this CPU: nothing to compare");
            return;
        }
        // Also channel counts off the panel sizes and maps off the 16-position panels, and
        // channels in 16s as the backbones have them.
        let more = [
            (20, 33, 7, 7, 3, 3, 1, (1, 1), 1),
            (3, 5, 40, 37, 3, 3, 1, (1, 1), 1),
            (32, 17, 12, 35, 3, 3, 2, (1, 1), 1),
            (16, 8, 10, 10, 1, 1, 2, (0, 0), 1),
            (16, 6, 12, 12, 3, 3, 1, (2, 2), 2),
            (20, 33, 6, 6, 3, 3, 1, (1, 1), 1),
            (33, 20, 8, 6, 3, 3, 1, (0, 2), 1),
            // Winograd's transformed weights over 1 MB, more than a core's L2.
            (128, 144, 6, 10, 3, 3, 1, (1, 1), 1),
        ];
        let cases = SHAPE_CLASSES.iter().chain(&more).copied();
        let mut rng = 0x9e3779b97f4a7c15u64;
        let mut random = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    (rng >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                })
                .collect()
        };
        let rel = |a: &[f32], b: &[f32]| {
            let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            d / b.iter().map(|v| v.abs()).fold(1e-12, f32::max)
        };
        for (c_in, c_out, h, w, kh, kw, stride, pad, dilation) in cases {
            let g = Geometry { c_in, h, w, c_out, kh, kw, stride, pad, dilation };
            let (ho, wo) = g.out_hw();
            let batch = 3;
            let (x, wt) = (random(batch * c_in * h * w), random(c_out * g.k()));
            let (bias, dy) = (random(c_out), random(batch * c_out * ho * wo));
            let run = |isa: Option<Isa>| {
                (
                    forward_slices(isa, &g, &x, &wt, Some(&bias), batch, true),
                    grad_input_slices(isa, &g, &dy, &wt, batch),
                    grad_weight_slices(isa, &g, &x, &dy, batch),
                )
            };
            let reference = run(None);
            let first = run(Some(isas[0]));
            let what = format!("{c_in}->{c_out} {h}x{w} k{kh}x{kw} s{stride} p{pad:?} d{dilation}");
            assert!(rel(&first.0, &reference.0) < 1e-5, "forward {what}");
            assert!(rel(&first.1, &reference.1) < 1e-5, "grad input {what}");
            assert!(rel(&first.2, &reference.2) < 1e-5, "grad weight {what}");
            for &isa in &isas {
                for threads in [1, 3] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    assert!(pool.install(|| run(Some(isa))) == first, "{isa:?} on {threads} threads: {what}");
                }
            }
        }
    }

    #[test]
    fn gradients_only_for_tracked_operands() {
        super::gpu::tests::check_tracked_only(conv2d);
    }

    /// The fused bias: output and the gradients of input, weight and bias against
    /// candle_nn's layer (conv, then broadcast add), strided and not, batch 1 and 3.
    #[test]
    fn bias_layer_matches_candle_with_gradients() {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        for (i, stride, batch) in [(0, 1, 3), (1, 2, 1), (2, 1, 1)] {
            let cfg = candle_nn::Conv2dConfig { padding: 1, stride, ..Default::default() };
            let ours = Conv2d::new(5, 7, 3, cfg, true, vb.pp(i.to_string())).unwrap();
            let theirs = candle_nn::Conv2d::new(ours.weight.clone(), ours.bias.clone(), cfg);
            // 9x9: candle's own backward of a stride-2 conv fails on sizes it cannot invert.
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (batch, 5, 9, 9), &dev).unwrap()).unwrap();
            let (a, b) = (ours.forward(x.as_tensor()).unwrap(), theirs.forward(x.as_tensor()).unwrap());
            assert!(rel(&a, &b) < 1e-5, "forward s{stride} b{batch}");
            let wts = Tensor::randn(0f32, 1., b.shape(), &dev).unwrap();
            let g1 = (a * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (b * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let bias = ours.bias.as_ref().unwrap();
            for (name, t) in [("input", x.as_tensor()), ("weight", &ours.weight), ("bias", bias)] {
                let d = rel(g1.get(t).unwrap(), g2.get(t).unwrap());
                assert!(d < 1e-5, "{name} gradient s{stride} b{batch}: {d}");
            }
        }
    }

    /// The fused ReLU: the layer then our ReLU op, output and gradients of input, weight
    /// and bias, with and without bias (random data: no pre-activation is exactly 0).
    #[test]
    fn fused_relu_matches_layer_then_relu() {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        for (i, bias, stride) in [(0, true, 1), (1, false, 1), (2, true, 2)] {
            let cfg = candle_nn::Conv2dConfig { padding: 1, stride, ..Default::default() };
            let layer = Conv2d::new(4, 6, 3, cfg, bias, vb.pp(i.to_string())).unwrap();
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 4, 9, 9), &dev).unwrap()).unwrap();
            let (a, b) = (
                layer.forward_relu(x.as_tensor()).unwrap(),
                crate::activation::relu(&layer.forward(x.as_tensor()).unwrap()).unwrap(),
            );
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(&a), flat(&b), "forward {i}");
            assert!(flat(&a).contains(&0.0) && flat(&a).iter().any(|&v| v > 0.0));
            let wts = Tensor::randn(0f32, 1., b.shape(), &dev).unwrap();
            let g1 = (a * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (b * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let mut operands = vec![x.as_tensor(), &layer.weight];
            operands.extend(layer.bias.as_ref());
            for t in operands {
                assert_eq!(flat(g1.get(t).unwrap()), flat(g2.get(t).unwrap()), "gradient {i}");
            }
        }
    }

    /// The layer adds its bias and routes grouped convolutions to candle or, depthwise
    /// ones, to our op.
    #[test]
    fn layer_with_bias_and_groups() {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let cfg = candle_nn::Conv2dConfig { padding: 1, groups: 4, ..Default::default() };
        let ours = Conv2d::new(8, 8, 3, cfg, true, vb.pp("a")).unwrap();
        let theirs = candle_nn::Conv2d::new(ours.weight.clone(), ours.bias.clone(), cfg);
        let x = Tensor::randn(0f32, 1., (2, 8, 6, 6), &dev).unwrap();
        assert!(rel(&ours.forward(&x).unwrap(), &theirs.forward(&x).unwrap()) < 1e-6);
        let cfg = candle_nn::Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
        let ours = Conv2d::new(8, 4, 3, cfg, true, vb.pp("b")).unwrap();
        let theirs = candle_nn::Conv2d::new(ours.weight.clone(), ours.bias.clone(), cfg);
        assert!(rel(&ours.forward(&x).unwrap(), &theirs.forward(&x).unwrap()) < 1e-5);
        // Depthwise (groups = channels), which runs depthwise's op.
        let cfg = candle_nn::Conv2dConfig { padding: 2, stride: 2, groups: 8, ..Default::default() };
        let ours = Conv2d::new(8, 8, 5, cfg, true, vb.pp("c")).unwrap();
        let theirs = candle_nn::Conv2d::new(ours.weight.clone(), ours.bias.clone(), cfg);
        assert!(rel(&ours.forward(&x).unwrap(), &theirs.forward(&x).unwrap()) < 1e-5);
    }
}

/// Time of each pass on one VGG-sized layer (`cargo test --release --lib conv_pass_times
/// -- --ignored --nocapture`): where a training step's convolution time goes.
#[cfg(test)]
mod timing {
    use std::time::Instant;

    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    #[ignore]
    fn conv_pass_times() {
        // As `wsol` runs: freed blocks stay in the heap, so big buffers are not fresh pages.
        // SAFETY: this ignored timing test is run by its name, alone (see above), so no
        // other test thread allocates while the parameters change.
        unsafe { crate::memory::keep_freed_memory() };
        let dev = Device::Cpu;
        // Fastest of 7 calls, after one warm-up call: the least disturbed by neighbours on a
        // shared machine.
        let time = |f: &dyn Fn()| {
            f();
            let mut t: Vec<_> = (0..7)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed()
                })
                .collect();
            t.sort();
            t[0]
        };
        let square = |c: usize, hw: usize| Geometry {
            c_in: c,
            h: hw,
            w: hw,
            c_out: c,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: (1, 1),
            dilation: 1,
        };
        let pointwise = |c_in: usize, c_out: usize, hw: usize| Geometry {
            c_in,
            h: hw,
            w: hw,
            c_out,
            kh: 1,
            kw: 1,
            stride: 1,
            pad: (0, 0),
            dilation: 1,
        };
        let stem = Geometry { c_in: 3, h: 224, w: 224, c_out: 64, kh: 7, kw: 7, stride: 2, pad: (3, 3), dilation: 1 };
        let down = Geometry { c_in: 64, h: 56, w: 56, c_out: 128, kh: 3, kw: 3, stride: 2, pad: (1, 1), dilation: 1 };
        let only = std::env::var("WSOL_CONV_TIMES").ok();
        let batch = std::env::var("WSOL_CONV_BATCH").ok().and_then(|b| b.parse().ok()).unwrap_or(8);
        let layers = [
            square(64, 224),
            square(128, 112),
            square(256, 56),
            square(512, 28),
            square(64, 56),
            square(512, 14),
            stem,
            down,
            square(128, 28),
            square(256, 14),
            // ResNet-50's 1x1 layers (its bottlenecks; over half of its step)
            pointwise(512, 2048, 14),
            pointwise(2048, 512, 14),
            pointwise(64, 256, 56),
            pointwise(256, 64, 56),
            // Inception-v3's CAM head (wsolevaluation's 3x3 convs after Mixed_6e)
            square(1024, 14),
            Geometry { c_in: 768, c_out: 1024, ..square(1024, 14) },
        ];
        for (i, g) in layers.into_iter().enumerate() {
            if only.as_ref().is_some_and(|o| !o.split(',').any(|v| v == i.to_string())) {
                continue;
            }
            let x = Tensor::randn(0f32, 1., (batch, g.c_in, g.h, g.w), &dev).unwrap();
            let w = Tensor::randn(0f32, 0.05, (g.c_out, g.c_in, g.kh, g.kw), &dev).unwrap();
            let y = x.apply_op2_no_bwd(&w, &Forward { g, relu: false }).unwrap();
            let fwd = time(&|| drop(x.apply_op2_no_bwd(&w, &Forward { g, relu: false }).unwrap()));
            let gi = time(&|| drop(y.apply_op2_no_bwd(&w, &GradInput(g)).unwrap()));
            let gw = time(&|| drop(x.apply_op2_no_bwd(&y, &GradWeight(g)).unwrap()));
            let (ho, wo) = g.out_hw();
            let gflops = 2.0 * (batch * g.c_out * g.k() * ho * wo) as f64 / 1e9;
            let rate = |d: std::time::Duration| gflops / d.as_secs_f64();
            eprintln!(
                "[{i}] {}ch {}x{} -> {} k{} s{} b{batch}: forward {fwd:.2?} ({:.0} GFLOP/s), grad input {gi:.2?} ({:.0}), grad weight {gw:.2?} ({:.0})",
                g.c_in, g.h, g.w, g.c_out, g.kh, g.stride,
                rate(fwd),
                rate(gi),
                rate(gw)
            );
        }
    }
}
