//! Convolution off the CPU, with backward passes that are convolutions too. Why:
//! candle's input gradient is `conv_transpose2d`, on CUDA a naive kernel (one thread per
//! input element, looping over every output channel and tap: no GEMM). Here both
//! gradients are candle `conv2d`s, im2col + cuBLAS on the GPU:
//!
//! - input gradient: `dx = conv2d(place(dilate(dy)), flip(W)ᵀ)`, the transposed
//!   convolution written as a plain one over the zero-dilated, padded `dy` (a 1x1 kernel
//!   skips the zeros: `dilate(Wᵀ·dy)`);
//! - weight gradient: `dW = conv2d(xᵀ, dyᵀ)ᵀ`, images as channels and `dy` as the kernel
//!   (candle's own formulation).
//!
//! The forward is candle's `conv2d` on detached operands; a custom op hands its result
//! on and carries the backward above. Only candle ops, so it runs on any device, and the
//! tests check it on the CPU against candle's own gradients.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, MetalStorage, Result, Shape, Storage, Tensor};

/// `conv2d` of `x` [B, c_in, h, w] with `w` [c_out, c_in, kh, kw], zero padding `pad`
/// (rows, columns), no groups; gradients as in the module doc.
pub fn conv2d(x: &Tensor, w: &Tensor, pad: (usize, usize), stride: usize, dilation: usize) -> Result<Tensor> {
    let y = candle_conv2d(&x.detach(), &w.detach(), pad, stride, dilation)?;
    let y = if y.is_contiguous() && y.layout().start_offset() == 0 { y } else { y.copy()? };
    x.apply_op2(w, Grads { pad, stride, dilation, y: Mutex::new(Some(y)) })
}

/// candle's `conv2d`, which pads rows and columns alike: other padding is added first.
pub fn candle_conv2d(x: &Tensor, w: &Tensor, pad: (usize, usize), stride: usize, dilation: usize) -> Result<Tensor> {
    if pad.0 == pad.1 {
        return x.conv2d(w, pad.0, stride, dilation, 1);
    }
    x.pad_with_zeros(2, pad.0, pad.0)?.pad_with_zeros(3, pad.1, pad.1)?.conv2d(w, 0, stride, dilation, 1)
}

/// The custom op: its forward hands on the convolution computed beforehand (taken, so
/// the graph does not keep a second copy), its backward is the module doc's.
struct Grads {
    pad: (usize, usize),
    stride: usize,
    dilation: usize,
    y: Mutex<Option<Tensor>>,
}

impl Grads {
    /// A copy of the precomputed output's storage, on whatever device it lives.
    fn hand_on<S: BackendStorage>(&self, pick: impl Fn(&Storage) -> Option<&S>) -> Result<(S, Shape)> {
        let y = self.y.lock().ok().and_then(|mut y| y.take());
        let y = y.ok_or_else(|| candle_core::Error::Msg("conv2d: the forward ran twice".into()))?;
        let (storage, layout) = y.storage_and_layout();
        let s = pick(&storage).ok_or_else(|| candle_core::Error::Msg("conv2d: output on another device".into()))?;
        Ok((s.try_clone(layout)?, layout.shape().clone()))
    }
}

impl CustomOp2 for Grads {
    fn name(&self) -> &'static str {
        "conv2d-gemm-grads"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.hand_on(|s| if let Storage::Cpu(s) = s { Some(s) } else { None })
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        self.hand_on(|s| if let Storage::Cuda(s) = s { Some(s) } else { None })
    }

    fn metal_fwd(&self, _: &MetalStorage, _: &Layout, _: &MetalStorage, _: &Layout) -> Result<(MetalStorage, Shape)> {
        self.hand_on(|s| if let Storage::Metal(s) = s { Some(s) } else { None })
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = match x.track_op() {
            true => Some(self.input_grad(x.dims4()?, w, &dy)?),
            false => None,
        };
        let dw = match w.track_op() {
            true => Some(self.weight_grad(x, w.dims4()?, &dy)?),
            false => None,
        };
        Ok((dx, dw))
    }
}

impl Grads {
    fn input_grad(&self, (_, _, h, wd): (usize, usize, usize, usize), w: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let (_, _, kh, kw) = w.dims4()?;
        let (s, d, (ph, pw)) = (self.stride, self.dilation, self.pad);
        let wt = w.transpose(0, 1)?.contiguous()?; // [c_in, c_out, kh, kw]
        if (kh, kw, ph, pw) == (1, 1, 0, 0) {
            let dx = dy.conv2d(&wt, 0, 1, 1, 1)?;
            return place(&dilate(&dx, s)?, (0, 0), (h, wd));
        }
        let rev = |n: usize| Tensor::new((0..n as u32).rev().collect::<Vec<_>>(), w.device());
        let flipped = wt.index_select(&rev(kh)?, 2)?.index_select(&rev(kw)?, 3)?;
        // Output i gathers dy at i + pad - tap * dilation: dy's first entry sits at
        // (kh - 1) * dilation - pad, and the plane spans the input plus the kernel.
        let (ry, rx) = ((kh - 1) * d, (kw - 1) * d);
        let at = (ry as isize - ph as isize, rx as isize - pw as isize);
        place(&dilate(dy, s)?, at, (h + ry, wd + rx))?.conv2d(&flipped, 0, 1, d, 1)
    }

    fn weight_grad(&self, x: &Tensor, (_, _, kh, kw): (usize, usize, usize, usize), dy: &Tensor) -> Result<Tensor> {
        // dW[o, c, i, j] = Σ dy[n, o, a, b] · x[n, c, a·s + i·d - p, b·s + j·d - p]: a
        // convolution of xᵀ [c_in, B, h, w] by dyᵀ [c_out, B, ho, wo] with stride d and
        // dilation s, cut to the kernel's size (the last outputs may overhang it).
        let (s, d) = (self.stride, self.dilation);
        let dw = candle_conv2d(&x.transpose(0, 1)?, &dy.transpose(0, 1)?, self.pad, d, s)?;
        dw.narrow(2, 0, kh)?.narrow(3, 0, kw)?.transpose(0, 1)?.contiguous()
    }
}

/// `t` [B, C, h, w] with `s - 1` zeros after every entry along both axes: [B, C, h·s, w·s].
fn dilate(t: &Tensor, s: usize) -> Result<Tensor> {
    if s == 1 {
        return Ok(t.clone());
    }
    let (b, c, h, w) = t.dims4()?;
    let zeros = |shape: &[usize]| Tensor::zeros(shape, t.dtype(), t.device());
    let t = Tensor::cat(&[&t.unsqueeze(4)?, &zeros(&[b, c, h, w, s - 1])?], 4)?.reshape((b, c, h, w * s))?;
    Tensor::cat(&[&t.unsqueeze(3)?, &zeros(&[b, c, h, s - 1, w * s])?], 3)?.reshape((b, c, h * s, w * s))
}

/// A [.., rows, cols] plane of zeros with `t`'s first entry at `at` (negative: `t` is cut
/// on that side), cut where `t` runs past the plane.
fn place(t: &Tensor, at: (isize, isize), (rows, cols): (usize, usize)) -> Result<Tensor> {
    let fit = |t: Tensor, dim: usize, at: isize, len: usize| -> Result<Tensor> {
        let t = if at < 0 { t.narrow(dim, (-at) as usize, t.dim(dim)? - (-at) as usize)? } else { t };
        let before = at.max(0) as usize;
        let kept = t.dim(dim)?.min(len - before);
        let t = if kept < t.dim(dim)? { t.narrow(dim, 0, kept)? } else { t };
        t.pad_with_zeros(dim, before, len - before - kept)
    };
    fit(fit(t.clone(), 2, at.0, rows)?, 3, at.1, cols)
}

#[cfg(test)]
pub(super) mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::rel_diff as rel;

    type Conv = fn(&Tensor, &Tensor, (usize, usize), usize, usize) -> Result<Tensor>;

    /// (c_in, c_out, h, w, kh, kw, stride, pad, dilation): every shape class of the
    /// backbones, plus stride 2 with odd and even inputs and padding past the kernel.
    type Case = (usize, usize, usize, usize, usize, usize, usize, (usize, usize), usize);
    const CASES: [Case; 11] = [
        (8, 16, 9, 9, 1, 1, 1, (0, 0), 1),
        (8, 12, 10, 11, 3, 3, 1, (1, 1), 1),
        (6, 10, 11, 9, 3, 3, 2, (1, 1), 1),
        (6, 10, 10, 12, 3, 3, 2, (1, 1), 1),
        (3, 8, 20, 20, 7, 7, 2, (3, 3), 1),
        (5, 7, 12, 12, 1, 7, 1, (0, 3), 1),
        (5, 7, 12, 12, 7, 1, 1, (3, 0), 1),
        (4, 6, 12, 12, 3, 3, 1, (2, 2), 2),
        (4, 6, 12, 13, 1, 1, 2, (0, 0), 1),
        (4, 6, 8, 8, 3, 3, 1, (0, 0), 1),
        (4, 6, 9, 9, 1, 1, 1, (1, 1), 1),
    ];

    /// Forward, input and weight gradients on `dev` against the CPU GEMM ops of
    /// `models::conv` (themselves checked against candle's). Not against candle's own
    /// backward: it fails on some shapes (a 1x1 stride-2 convolution of an odd width).
    pub(crate) fn check_against_cpu_ops(dev: &Device, conv: Conv) {
        let cpu = Device::Cpu;
        for (c_in, c_out, h, w, kh, kw, stride, pad, dil) in CASES {
            for batch in [1usize, 3] {
                let x = Tensor::randn(0f32, 1., (batch, c_in, h, w), &cpu).unwrap();
                let k = Tensor::randn(0f32, 1., (c_out, c_in, kh, kw), &cpu).unwrap();
                let (xv, kv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&k).unwrap());
                let theirs = super::super::conv2d(xv.as_tensor(), kv.as_tensor(), pad, stride, dil).unwrap();
                let xd = Var::from_tensor(&x.to_device(dev).unwrap()).unwrap();
                let kd = Var::from_tensor(&k.to_device(dev).unwrap()).unwrap();
                let ours = conv(xd.as_tensor(), kd.as_tensor(), pad, stride, dil).unwrap();
                let what = format!("{c_in}->{c_out} {h}x{w} k{kh}x{kw} s{stride} p{pad:?} d{dil} b{batch}");
                assert!(rel(&ours.to_device(&cpu).unwrap(), &theirs) < 1e-5, "forward {what}");
                let wts = Tensor::randn(0f32, 1., theirs.shape(), &cpu).unwrap();
                let g1 = (ours * wts.to_device(dev).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = (theirs * &wts).unwrap().sum_all().unwrap().backward().unwrap();
                for (name, a, b) in [("input", &xd, &xv), ("weight", &kd, &kv)] {
                    let a = g1.get(a.as_tensor()).unwrap().to_device(&cpu).unwrap();
                    let b = g2.get(b.as_tensor()).unwrap();
                    assert_eq!(a.dims(), b.dims(), "{name} gradient {what}");
                    assert!(rel(&a, b) < 1e-5, "{name} gradient {what}: {}", rel(&a, b));
                }
            }
        }
    }

    #[test]
    fn matches_gemm_ops_forward_and_both_gradients() {
        check_against_cpu_ops(&Device::Cpu, conv2d);
    }

    /// The same on the GPU, where this path runs (`cargo test --features cuda`).
    #[cfg(feature = "cuda")]
    #[test]
    fn matches_gemm_ops_on_cuda() {
        check_against_cpu_ops(&Device::new_cuda(0).unwrap(), conv2d);
    }

    #[test]
    fn gradients_only_for_tracked_operands() {
        check_tracked_only(conv2d);
    }

    /// Only operands in the graph get a gradient: a plain input tensor (the image batch)
    /// none, and a plain weight tensor (frozen) none, while the other one still does.
    pub(crate) fn check_tracked_only(conv2d: Conv) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 8, 8), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (4, 3, 3, 3), &dev).unwrap();
        let (xv, kv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&k).unwrap());
        let g = conv2d(&x, kv.as_tensor(), (1, 1), 1, 1).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none() && g.get(kv.as_tensor()).is_some());
        let g = conv2d(xv.as_tensor(), &k, (1, 1), 1, 1).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(xv.as_tensor()).is_some() && g.get(&k).is_none());
    }

    #[test]
    fn dilate_and_place() {
        let t = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu).unwrap();
        let d = dilate(&t, 2).unwrap().squeeze(0).unwrap().squeeze(0).unwrap();
        assert_eq!(d.to_vec2::<f32>().unwrap(), [[1., 0., 2., 0.], [0.; 4], [3., 0., 4., 0.], [0.; 4]]);
        let p = place(&t, (1, -1), (4, 2)).unwrap().squeeze(0).unwrap().squeeze(0).unwrap();
        assert_eq!(p.to_vec2::<f32>().unwrap(), [[0., 0.], [2., 0.], [4., 0.], [0., 0.]]);
        assert_eq!(place(&t, (0, 0), (1, 1)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [1.]);
    }
}
