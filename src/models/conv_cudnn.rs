//! Convolution through cuDNN: forward, input gradient and weight gradient, each one cuDNN
//! call (`--features cudnn`). Why: candle's CUDA convolution is an im2col kernel (64-bit
//! index arithmetic for every entry of a matrix 9x the input) + cuBLAS, its `cudnn`
//! feature covers the forward only, and its backward is `conv_transpose2d`, a naive
//! kernel. Algorithms are cuDNN's heuristic pick (PyTorch's without
//! `cudnn.benchmark`), cached per shape; the config's `tf32` allows TF32 as PyTorch's
//! `allow_tf32` does (default math), otherwise plain f32 FMAs.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use candle_core::cuda_backend::cudarc::cudnn::{sys, ConvBackwardData, ConvBackwardFilter, ConvForward, Cudnn};
use candle_core::cuda_backend::cudarc::driver::CudaSlice;
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Error, Layout, Result, Shape, Tensor};

use super::channel_ops_cuda::view;

/// `conv2d` of `x` [B, c_in, h, w] with `w` [c_out, c_in, kh, kw] (f32, on a CUDA device),
/// zero padding `pad` (rows, columns), no groups.
pub fn conv2d(x: &Tensor, w: &Tensor, pad: (usize, usize), stride: usize, dilation: usize) -> Result<Tensor> {
    let op = Conv { pass: Pass::Forward, pad, stride, dilation, out: [0; 4] };
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pass {
    /// (x, w) -> y
    Forward,
    /// (dy, w) -> dx
    GradInput,
    /// (x, dy) -> dw
    GradWeight,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Conv {
    pass: Pass,
    pad: (usize, usize),
    stride: usize,
    dilation: usize,
    /// The dims a gradient pass produces (x's or w's); unused by the forward.
    out: [usize; 4],
}

#[derive(Clone, Copy)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    GradInput(sys::cudnnConvolutionBwdDataAlgo_t),
    GradWeight(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// The op, its (x, w, y) dims and TF32.
type AlgoKey = (Conv, [[usize; 4]; 3], bool);

thread_local! {
    // cuDNN handles are neither Send nor Sync: one per thread and device, as candle's.
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
    static ALGOS: RefCell<HashMap<AlgoKey, Algo>> = RefCell::new(HashMap::new());
}

fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream()).map_err(Error::wrap)?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

fn dims4(l: &Layout) -> Result<[usize; 4]> {
    let (a, b, c, d) = l.shape().dims4()?;
    Ok([a, b, c, d])
}

impl Conv {
    /// (x, w, y) dims of this pass from its two operands.
    fn shapes(&self, a: [usize; 4], b: [usize; 4]) -> [[usize; 4]; 3] {
        let (x, w) = match self.pass {
            Pass::Forward => (a, b),
            Pass::GradInput => (self.out, b),
            Pass::GradWeight => (a, self.out),
        };
        let span = |n: usize, k: usize, p: usize| (n + 2 * p - self.dilation * (k - 1) - 1) / self.stride + 1;
        let y = [x[0], w[0], span(x[2], w[2], self.pad.0), span(x[3], w[3], self.pad.1)];
        [x, w, y]
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "conv2d-cudnn"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("cuDNN conv2d on CPU tensors")
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = &s1.device;
        let (a, b) = (view(s1, l1)?, view(s2, l2)?);
        let [x, w, y] = self.shapes(dims4(l1)?, dims4(l2)?);
        let out = match self.pass {
            Pass::Forward => y,
            Pass::GradInput => x,
            Pass::GradWeight => w,
        };
        let i32s = |d: [usize; 4]| d.map(|v| v as i32);
        let tf32 = candle_core::cuda_backend::gemm_reduced_precision_f32();
        let h = handle(dev)?;
        let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let (ph, pw, s, d) = (self.pad.0 as i32, self.pad.1 as i32, self.stride as i32, self.dilation as i32);
        let mode = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
        let mut conv = h.create_conv2d::<f32>([ph, pw], [s, s], [d, d], mode).map_err(Error::wrap)?;
        let math = if tf32 { sys::cudnnMathType_t::CUDNN_DEFAULT_MATH } else { sys::cudnnMathType_t::CUDNN_FMA_MATH };
        conv.set_math_type(math).map_err(Error::wrap)?;
        let xd = h.create_4d_tensor::<f32>(nchw, i32s(x)).map_err(Error::wrap)?;
        let wd = h.create_4d_filter::<f32>(nchw, i32s(w)).map_err(Error::wrap)?;
        let yd = h.create_4d_tensor::<f32>(nchw, i32s(y)).map_err(Error::wrap)?;
        let mut dst = unsafe { dev.alloc::<f32>(out.iter().product())? };
        let key = (*self, [x, w, y], tf32);
        let cached = ALGOS.with(|a| a.borrow().get(&key).copied());
        let workspace = |bytes: usize| -> Result<Option<CudaSlice<u8>>> {
            Ok(if bytes == 0 { None } else { Some(unsafe { dev.alloc::<u8>(bytes)? }) })
        };
        let algo = match self.pass {
            Pass::Forward => {
                let op = ConvForward { conv: &conv, x: &xd, w: &wd, y: &yd };
                let algo = match cached {
                    Some(Algo::Forward(a)) => a,
                    _ => op.pick_algorithm().map_err(Error::wrap)?,
                };
                let mut ws = workspace(op.get_workspace_size(algo).map_err(Error::wrap)?)?;
                unsafe { op.launch(algo, ws.as_mut(), (1f32, 0f32), &a, &b, &mut dst) }.map_err(Error::wrap)?;
                Algo::Forward(algo)
            }
            Pass::GradInput => {
                let op = ConvBackwardData { conv: &conv, dx: &xd, w: &wd, dy: &yd };
                let algo = match cached {
                    Some(Algo::GradInput(a)) => a,
                    _ => op.pick_algorithm().map_err(Error::wrap)?,
                };
                let mut ws = workspace(op.get_workspace_size(algo).map_err(Error::wrap)?)?;
                unsafe { op.launch(algo, ws.as_mut(), (1f32, 0f32), &mut dst, &b, &a) }.map_err(Error::wrap)?;
                Algo::GradInput(algo)
            }
            Pass::GradWeight => {
                let op = ConvBackwardFilter { conv: &conv, x: &xd, dw: &wd, dy: &yd };
                let algo = match cached {
                    Some(Algo::GradWeight(a)) => a,
                    _ => op.pick_algorithm().map_err(Error::wrap)?,
                };
                let mut ws = workspace(op.get_workspace_size(algo).map_err(Error::wrap)?)?;
                unsafe { op.launch(algo, ws.as_mut(), (1f32, 0f32), &a, &mut dst, &b) }.map_err(Error::wrap)?;
                Algo::GradWeight(algo)
            }
        };
        if cached.is_none() {
            ALGOS.with(|a| a.borrow_mut().insert(key, algo));
        }
        Ok((CudaStorage::wrap_cuda_slice(dst, dev.clone()), Shape::from(&out)))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let pass = |pass: Pass, out: &Tensor| -> Result<Conv> {
            let (a, b, c, d) = out.dims4()?;
            Ok(Conv { pass, out: [a, b, c, d], ..*self })
        };
        let dx = match x.track_op() {
            true => Some(dy.apply_op2_no_bwd(w, &pass(Pass::GradInput, x)?)?),
            false => None,
        };
        let dw = match w.track_op() {
            true => Some(x.apply_op2_no_bwd(&dy, &pass(Pass::GradWeight, w)?)?),
            false => None,
        };
        Ok((dx, dw))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    /// Forward and both gradients on the GPU against the CPU GEMM ops.
    #[test]
    fn matches_gemm_ops_on_cuda() {
        super::super::conv_gpu::tests::check_against_cpu_ops(&Device::new_cuda(0).unwrap(), super::conv2d);
    }
}
