//! Pools and strided picks for the backbones, from differentiable ops: candle's own
//! pools have no padding, no ceil mode, no backward when kernel != stride, and a wrong
//! one when kernel == stride (candle 0.11's `max_pool2d` passes a quarter of the gradient
//! to a unique maximum of a 2x2 window: measured [0, 0, 0, 0.25] for [[1, 2], [3, 4]]).

use candle_core::Tensor;

/// 2x2 max-pool, stride 2 (PyTorch's `MaxPool2d(2)`, odd edges dropped), as a max over
/// each window's four values: the gradient goes whole to the window's maximum (to every
/// tied maximum, where PyTorch picks the first).
pub(crate) fn max_pool2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && x.dtype() == candle_core::DType::F32 {
        return super::channel_ops_cuda::max_pool(x, 2, 2, 0, (ho, wo));
    }
    let x = if h % 2 == 1 || w % 2 == 1 { x.narrow(2, 0, 2 * ho)?.narrow(3, 0, 2 * wo)? } else { x.clone() };
    x.contiguous()?.reshape((b, c, ho, 2, wo, 2))?.max(5)?.max(3)
}

/// PyTorch's output length of a 3-wide pool.
pub(crate) fn pool_len(n: usize, stride: usize, pad: usize, ceil: bool) -> usize {
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

/// 3x3 max-pool with PyTorch's padding and ceil mode, from differentiable ops: edges are
/// replicated (every window holds the real pixel next to its padding, so the max is
/// PyTorch's), the max of three shifted views per axis, then every `stride`-th.
pub(crate) fn max_pool3(x: &Tensor, stride: usize, pad: usize, ceil: bool) -> candle_core::Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && x.dtype() == candle_core::DType::F32 {
        let (_, _, h, w) = x.dims4()?;
        let out = (pool_len(h, stride, pad, ceil), pool_len(w, stride, pad, ceil));
        return super::channel_ops_cuda::max_pool(x, 3, stride, pad, out);
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
/// `count_include_pad`).
pub(crate) fn avg_pool3_s1(x: &Tensor) -> candle_core::Result<Tensor> {
    let mut y = x.clone();
    for dim in [2, 3] {
        let n = y.dim(dim)?;
        let p = y.pad_with_zeros(dim, 1, 1)?;
        y = ((p.narrow(dim, 0, n)? + p.narrow(dim, 1, n)?)? + p.narrow(dim, 2, n)?)?;
    }
    y / 9.0
}

/// Elements 0, s, 2s, ... (`out` of them) along `dim`.
pub(crate) fn every(x: &Tensor, dim: usize, s: usize, out: usize) -> candle_core::Result<Tensor> {
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

    /// The CUDA kernels against the CPU pools (random inputs, so no ties): values and the
    /// gradient of a weighted sum, for the 2x2 pool and the 3x3 ones of every backbone.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_pools_match_cpu() {
        let gpu = Device::new_cuda(0).unwrap();
        let cases =
            [(8, 8, 2, 1, false), (7, 9, 2, 1, false), (9, 9, 2, 0, true), (28, 27, 2, 0, true), (7, 7, 1, 1, false)];
        for (h, w, stride, pad, ceil) in cases {
            let x = Tensor::rand(0f32, 1., (2, 3, h, w), &Device::Cpu).unwrap();
            type Pool = Box<dyn Fn(&Tensor) -> Tensor>;
            let pools: [(&str, Pool); 2] = [
                ("3x3", Box::new(move |t: &Tensor| max_pool3(t, stride, pad, ceil).unwrap())),
                ("2x2", Box::new(|t: &Tensor| max_pool2(t).unwrap())),
            ];
            for (name, pool) in pools {
                let run = |dev: &Device| {
                    let v = Var::from_tensor(&x.to_device(dev).unwrap()).unwrap();
                    let y = pool(v.as_tensor());
                    let wts = Tensor::arange(0f32, y.elem_count() as f32, dev).unwrap().reshape(y.shape()).unwrap();
                    let g = (&y * wts).unwrap().sum_all().unwrap().backward().unwrap();
                    let flat = |t: &Tensor| {
                        t.flatten_all().unwrap().to_device(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap()
                    };
                    (y.dims().to_vec(), flat(&y), flat(g.get(v.as_tensor()).unwrap()))
                };
                assert_eq!(run(&gpu), run(&Device::Cpu), "{name} pool, {h}x{w} s{stride} p{pad} ceil {ceil}");
            }
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
