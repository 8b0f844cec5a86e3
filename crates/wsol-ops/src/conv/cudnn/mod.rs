//! Convolution through cuDNN: forward, input gradient and weight gradient, each one cuDNN
//! call (`--features cudnn`). Why: candle's CUDA convolution is an im2col kernel (64-bit
//! index arithmetic for every entry of a matrix 9x the input) + cuBLAS, its `cudnn`
//! feature covers the forward only, and its backward is `conv_transpose2d`, a naive
//! kernel.
//!
//! Each (pass, shapes, math) gets a plan once: its descriptors, its algorithm and that
//! algorithm's workspace size, kept for the run, and one workspace buffer per thread
//! serves every call. cuDNN 9's legacy calls are slow on the host (creating descriptors
//! and asking for a workspace size per call cost ~0.3-0.5 ms per convolution on an H200
//! host, more than the GPU's time for most layers of a ResNet at batch 32). The algorithm
//! is cuDNN's heuristic pick (PyTorch's default) or, with `cudnn_benchmark`, the fastest
//! one timed on the real shapes (PyTorch's `cudnn.benchmark`). The config's `tf32` allows
//! TF32 as PyTorch's `allow_tf32` does (default math), otherwise plain f32 FMAs.
//!
//! [`set_graph_api`] switches to cuDNN's graph API (`graph.rs`), which keeps
//! built execution plans instead; a shape it cannot plan falls back to the calls here.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Error, Layout, Result, Shape, Tensor};

#[cfg(feature = "cudnn-graph")]
mod graph;

use crate::cuda::view;
#[cfg(feature = "cudnn-graph")]
use graph::{alignment, GraphPlan};

static BENCHMARK: AtomicBool = AtomicBool::new(false);
static GRAPH_API: AtomicBool = AtomicBool::new(false);
#[cfg(feature = "cudnn-graph")]
static GRAPH_FALLBACK_WARNED: AtomicBool = AtomicBool::new(false);

/// Pick each shape's algorithm by timing them all on its first call (the config's
/// `cudnn_benchmark`), instead of cuDNN's heuristics.
pub fn set_benchmark(on: bool) {
    BENCHMARK.store(on, Ordering::Relaxed);
}

/// Plan convolutions through cuDNN's graph API (`bench train --cudnn-graph`) instead of
/// its legacy calls. Off by default until measured on a GPU against the legacy calls;
/// builds without the `cudnn-graph` feature have no graph API and refuse to turn it on.
pub fn set_graph_api(on: bool) -> Result<()> {
    if on && cfg!(not(feature = "cudnn-graph")) {
        candle_core::bail!("--cudnn-graph: this build has no cuDNN graph API (build with --features cudnn-graph)")
    }
    GRAPH_API.store(on, Ordering::Relaxed);
    Ok(())
}

/// `conv2d` of `x` [B, c_in, h, w] with `w` [c_out, c_in, kh, kw] (f32, on a CUDA device),
/// zero padding `pad` (rows, columns), no groups.
pub fn conv2d(x: &Tensor, w: &Tensor, pad: (usize, usize), stride: usize, dilation: usize) -> Result<Tensor> {
    let op = Conv { pass: Pass::Forward, pad, stride, dilation, out: [0; 4] };
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Pass {
    /// (x, w) -> y
    Forward,
    /// (dy, w) -> dx
    GradInput,
    /// (x, dy) -> dw
    GradWeight,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Conv {
    pub(super) pass: Pass,
    pub(super) pad: (usize, usize),
    pub(super) stride: usize,
    pub(super) dilation: usize,
    /// The dims a gradient pass produces (x's or w's); unused by the forward.
    out: [usize; 4],
}

/// The op, its (x, w, y) dims, TF32, the benchmark switch and, through the graph API, the
/// alignments of the call's (a, b, result) pointers.
type PlanKey = (DeviceId, Conv, [[usize; 4]; 3], bool, bool, Option<[i64; 3]>);

thread_local! {
    // cuDNN handles are neither Send nor Sync: one per thread and device, as candle's.
    static HANDLES: RefCell<HashMap<DeviceId, Rc<Handle>>> = RefCell::new(HashMap::new());
    static PLANS: RefCell<HashMap<PlanKey, Rc<Prepared>>> = RefCell::new(HashMap::new());
    static WORKSPACE: RefCell<HashMap<DeviceId, CudaSlice<u8>>> = RefCell::new(HashMap::new());
}

pub(super) fn check(status: sys::cudnnStatus_t, what: &str) -> Result<()> {
    match status {
        sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS => Ok(()),
        e => candle_core::bail!("cuDNN {what}: {e:?}"),
    }
}

/// A cuDNN handle on the device's stream.
struct Handle(sys::cudnnHandle_t);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from a successful `cudnnCreate` (a `Handle` is built only then), destroyed once.
        unsafe { sys::cudnnDestroy(self.0) };
    }
}

fn handle(dev: &CudaDevice) -> Result<Rc<Handle>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let stream = dev.cuda_stream();
        stream.context().bind_to_thread().map_err(Error::wrap)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer, and the device's context is bound to this thread above.
        check(unsafe { sys::cudnnCreate(&mut raw) }, "create")?;
        let c = Rc::new(Handle(raw));
        // SAFETY: `raw` is the live handle just created; the stream is this device's own.
        check(unsafe { sys::cudnnSetStream(raw, stream.cu_stream() as sys::cudaStream_t) }, "set stream")?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

/// A shape's plan: legacy descriptors and algorithm, or a graph API execution plan.
enum Prepared {
    Legacy(Plan),
    #[cfg(feature = "cudnn-graph")]
    Graph(GraphPlan),
}

impl Prepared {
    fn workspace(&self) -> usize {
        match self {
            Prepared::Legacy(p) => p.workspace,
            #[cfg(feature = "cudnn-graph")]
            Prepared::Graph(g) => g.workspace,
        }
    }
}

/// The thread's workspace on `dev`, grown to at least `bytes`. The buffer outlives the
/// pointer's use: it is only replaced by a later call on the same stream.
fn workspace(dev: &CudaDevice, stream: &Arc<CudaStream>, bytes: usize) -> Result<*mut c_void> {
    WORKSPACE.with(|ws| {
        let mut ws = ws.borrow_mut();
        if ws.get(&dev.id()).is_none_or(|w| w.len() < bytes) {
            // Free the smaller one first.
            ws.remove(&dev.id());
            // SAFETY: uninitialized scratch memory, only handed to cuDNN as workspace (never read as data).
            ws.insert(dev.id(), unsafe { dev.alloc::<u8>(bytes.max(1))? });
        }
        let (p, _guard) = ws.get_mut(&dev.id()).expect("inserted above").device_ptr_mut(stream);
        Ok(p as *mut c_void)
    })
}

/// The descriptors of one convolution and the algorithm chosen for its pass.
struct Plan {
    x: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    algo: Algo,
    workspace: usize,
}

#[derive(Clone, Copy)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    GradInput(sys::cudnnConvolutionBwdDataAlgo_t),
    GradWeight(sys::cudnnConvolutionBwdFilterAlgo_t),
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each descriptor is one `Plan::new` created, destroyed once here; one still null (creation
        // failed part way) is passed as null, which cuDNN's destroy calls are relied on to ignore.
        unsafe {
            sys::cudnnDestroyTensorDescriptor(self.x);
            sys::cudnnDestroyFilterDescriptor(self.w);
            sys::cudnnDestroyTensorDescriptor(self.y);
            sys::cudnnDestroyConvolutionDescriptor(self.conv);
        }
    }
}

/// One pass's algorithm search: cuDNN's `$find` (timed, with `benchmark`) or `$heuristic`
/// over the descriptors `$args` (in the order the pass's functions take them), the
/// first usable result, and `$workspace`'s size for it into `$size`: (algorithm, math).
macro_rules! search {
    ($perf:ty, $count:literal, $find:path, $heuristic:path, $workspace:path, ($($arg:expr),*), $benchmark:expr, $size:expr, $what:literal) => {{
        let mut perf = [std::mem::zeroed::<$perf>(); $count];
        let mut n = 0;
        let status = if $benchmark {
            $find($($arg),*, $count, &mut n, perf.as_mut_ptr())
        } else {
            $heuristic($($arg),*, $count, &mut n, perf.as_mut_ptr())
        };
        check(status, concat!($what, " algorithm search"))?;
        let usable = perf[..n as usize].iter().find(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS);
        let Some(p) = usable else { candle_core::bail!(concat!("cuDNN found no algorithm for the ", $what)) };
        check($workspace($($arg),*, p.algo, $size), concat!($what, " workspace size"))?;
        (p.algo, p.mathType)
    }};
}

impl Plan {
    fn new(h: &Handle, conv: &Conv, [x, w, y]: [[usize; 4]; 3], tf32: bool, benchmark: bool) -> Result<Plan> {
        let f32t = sys::cudnnDataType_t::CUDNN_DATA_FLOAT;
        let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let i = |v: usize| v as i32;
        let mut plan = Plan {
            x: std::ptr::null_mut(),
            w: std::ptr::null_mut(),
            y: std::ptr::null_mut(),
            conv: std::ptr::null_mut(),
            algo: Algo::Forward(sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM),
            workspace: 0,
        };
        // SAFETY: each create call gets a valid out-pointer to a field of `plan` (whose `Drop` destroys it), each
        // set call a descriptor created just above, with plain values.
        unsafe {
            check(sys::cudnnCreateTensorDescriptor(&mut plan.x), "tensor descriptor")?;
            check(sys::cudnnCreateTensorDescriptor(&mut plan.y), "tensor descriptor")?;
            check(sys::cudnnCreateFilterDescriptor(&mut plan.w), "filter descriptor")?;
            check(sys::cudnnCreateConvolutionDescriptor(&mut plan.conv), "convolution descriptor")?;
            check(sys::cudnnSetTensor4dDescriptor(plan.x, nchw, f32t, i(x[0]), i(x[1]), i(x[2]), i(x[3])), "x")?;
            check(sys::cudnnSetTensor4dDescriptor(plan.y, nchw, f32t, i(y[0]), i(y[1]), i(y[2]), i(y[3])), "y")?;
            check(sys::cudnnSetFilter4dDescriptor(plan.w, f32t, nchw, i(w[0]), i(w[1]), i(w[2]), i(w[3])), "w")?;
            let (p, s, d) = (conv.pad, i(conv.stride), i(conv.dilation));
            let mode = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
            check(sys::cudnnSetConvolution2dDescriptor(plan.conv, i(p.0), i(p.1), s, s, d, d, mode, f32t), "conv")?;
            let math =
                if tf32 { sys::cudnnMathType_t::CUDNN_DEFAULT_MATH } else { sys::cudnnMathType_t::CUDNN_FMA_MATH };
            check(sys::cudnnSetConvolutionMathType(plan.conv, math), "math type")?;
        }
        let (hd, (xd, wd, yd, cd)) = (h.0, (plan.x, plan.w, plan.y, plan.conv));
        let size = &mut plan.workspace;
        // Each search lists every algorithm; the first usable one wins, and its math type
        // is set as PyTorch does (within what `math` above allows).
        // SAFETY: the handle and descriptors are live and passed in each cuDNN function's order; `perf` holds
        // `$count` results (zeroed is valid: every enum field has a 0 variant) and `size` is a live out-pointer.
        let math = unsafe {
            match conv.pass {
                Pass::Forward => {
                    let (algo, math) = search!(
                        sys::cudnnConvolutionFwdAlgoPerf_t,
                        8,
                        sys::cudnnFindConvolutionForwardAlgorithm,
                        sys::cudnnGetConvolutionForwardAlgorithm_v7,
                        sys::cudnnGetConvolutionForwardWorkspaceSize,
                        (hd, xd, wd, cd, yd),
                        benchmark,
                        size,
                        "forward pass"
                    );
                    plan.algo = Algo::Forward(algo);
                    math
                }
                Pass::GradInput => {
                    let (algo, math) = search!(
                        sys::cudnnConvolutionBwdDataAlgoPerf_t,
                        6,
                        sys::cudnnFindConvolutionBackwardDataAlgorithm,
                        sys::cudnnGetConvolutionBackwardDataAlgorithm_v7,
                        sys::cudnnGetConvolutionBackwardDataWorkspaceSize,
                        (hd, wd, yd, cd, xd),
                        benchmark,
                        size,
                        "input gradient"
                    );
                    plan.algo = Algo::GradInput(algo);
                    math
                }
                Pass::GradWeight => {
                    let (algo, math) = search!(
                        sys::cudnnConvolutionBwdFilterAlgoPerf_t,
                        7,
                        sys::cudnnFindConvolutionBackwardFilterAlgorithm,
                        sys::cudnnGetConvolutionBackwardFilterAlgorithm_v7,
                        sys::cudnnGetConvolutionBackwardFilterWorkspaceSize,
                        (hd, xd, yd, cd, wd),
                        benchmark,
                        size,
                        "weight gradient"
                    );
                    plan.algo = Algo::GradWeight(algo);
                    math
                }
            }
        };
        // SAFETY: `plan.conv` is the live descriptor created above; `math` is what cuDNN reported for the algorithm.
        check(unsafe { sys::cudnnSetConvolutionMathType(plan.conv, math) }, "math type")?;
        Ok(plan)
    }

    /// One call on the pass's operands `a`, `b` and result `d` (device pointers).
    fn run(&self, h: sys::cudnnHandle_t, [a, b, d]: [*mut c_void; 3], wsp: *mut c_void) -> Result<()> {
        let (one, zero) = (&1f32 as *const f32 as *const c_void, &0f32 as *const f32 as *const c_void);
        let n = self.workspace;
        // SAFETY: `h` and the descriptors are live; `a`, `b`, `d` are device buffers of the descriptors' sizes
        // (the caller's contract), `wsp` has at least the `n` bytes cuDNN asked for; alpha, beta are host f32s.
        let status = unsafe {
            match self.algo {
                Algo::Forward(algo) => {
                    sys::cudnnConvolutionForward(h, one, self.x, a, self.w, b, self.conv, algo, wsp, n, zero, self.y, d)
                }
                Algo::GradInput(algo) => sys::cudnnConvolutionBackwardData(
                    h, one, self.w, b, self.y, a, self.conv, algo, wsp, n, zero, self.x, d,
                ),
                Algo::GradWeight(algo) => sys::cudnnConvolutionBackwardFilter(
                    h, one, self.x, a, self.y, b, self.conv, algo, wsp, n, zero, self.w, d,
                ),
            }
        };
        check(status, "convolution")
    }
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

impl Conv {
    /// The plan for `key`: through the graph API where it is on and can plan the shape
    /// (timing candidates on the call's pointers `ptrs` with `cudnn_benchmark`), else the
    /// legacy descriptors and algorithm.
    fn prepare(
        &self,
        h: &Handle,
        dev: &CudaDevice,
        stream: &Arc<CudaStream>,
        key: &PlanKey,
        ptrs: [*mut c_void; 3],
    ) -> Result<Prepared> {
        let &(_, _, shapes, tf32, benchmark, align) = key;
        #[cfg(feature = "cudnn-graph")]
        if let Some(align) = align {
            let mut ws = |bytes| workspace(dev, stream, bytes);
            match GraphPlan::new(h.0, stream, self, shapes, align, tf32, benchmark, ptrs, &mut ws) {
                Ok(g) => return Ok(Prepared::Graph(g)),
                Err(e) if !GRAPH_FALLBACK_WARNED.swap(true, Ordering::Relaxed) => {
                    eprintln!("warning: cuDNN graph API: {e}; using cuDNN's legacy calls for this shape (warned once)")
                }
                Err(_) => {}
            }
        }
        #[cfg(not(feature = "cudnn-graph"))]
        let _ = (align, dev, stream, ptrs);
        Ok(Prepared::Legacy(Plan::new(h, self, shapes, tf32, benchmark)?))
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
        let shapes = self.shapes(dims4(l1)?, dims4(l2)?);
        let out = match self.pass {
            Pass::Forward => shapes[2],
            Pass::GradInput => shapes[0],
            Pass::GradWeight => shapes[1],
        };
        // Host time (the GPU runs the call later): `bench train --profile` on a GPU.
        let _span = crate::profile::span(
            || format!("cuDNN {:?} host time, x {:?} w {:?}", self.pass, shapes[0], shapes[1]),
            0.0,
        );
        let h = handle(dev)?;
        let tf32 = candle_core::cuda_backend::gemm_reduced_precision_f32();
        let benchmark = BENCHMARK.load(Ordering::Relaxed);
        let stream = dev.cuda_stream();
        // SAFETY: uninitialized, but the cuDNN call below writes all of it (beta = 0: the output is not read).
        let mut dst = unsafe { dev.alloc::<f32>(out.iter().product())? };
        {
            let (pa, _ga) = a.device_ptr(&stream);
            let (pb, _gb) = b.device_ptr(&stream);
            let (pd, _gd) = dst.device_ptr_mut(&stream);
            let ptrs = [pa as *mut c_void, pb as *mut c_void, pd as *mut c_void];
            #[cfg(feature = "cudnn-graph")]
            let align = GRAPH_API.load(Ordering::Relaxed).then(|| [pa, pb, pd].map(alignment));
            #[cfg(not(feature = "cudnn-graph"))]
            let align: Option<[i64; 3]> = None;
            let key = (dev.id(), *self, shapes, tf32, benchmark, align);
            let plan = match PLANS.with(|p| p.borrow().get(&key).cloned()) {
                Some(plan) => plan,
                None => {
                    let plan = Rc::new(self.prepare(&h, dev, &stream, &key, ptrs)?);
                    PLANS.with(|p| p.borrow_mut().insert(key, plan.clone()));
                    plan
                }
            };
            let wsp = workspace(dev, &stream, plan.workspace())?;
            match &*plan {
                #[cfg(feature = "cudnn-graph")]
                Prepared::Graph(g) => g.execute(h.0, self.pass, ptrs, wsp)?,
                Prepared::Legacy(p) => p.run(h.0, ptrs, wsp)?,
            }
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

    /// Forward and both gradients on the GPU against the CPU GEMM ops, with the
    /// heuristics' algorithms and with the timed ones (plans are kept per choice).
    #[test]
    fn matches_gemm_ops_on_cuda() {
        for benchmark in [false, true] {
            super::set_benchmark(benchmark);
            super::super::gpu::tests::check_against_cpu_ops(&Device::new_cuda(0).unwrap(), super::conv2d);
        }
        super::set_benchmark(false);
    }

    /// The same through cuDNN's graph API, and no shape fell back to the legacy calls.
    #[test]
    #[cfg(feature = "cudnn-graph")]
    fn graph_api_matches_gemm_ops_on_cuda() {
        super::set_graph_api(true).unwrap();
        for benchmark in [false, true] {
            super::set_benchmark(benchmark);
            super::super::gpu::tests::check_against_cpu_ops(&Device::new_cuda(0).unwrap(), super::conv2d);
        }
        super::set_benchmark(false);
        super::set_graph_api(false).unwrap();
        let (graph, legacy) = super::PLANS.with(|p| {
            let p = p.borrow();
            let graph_keys = p.iter().filter(|(k, _)| k.5.is_some());
            graph_keys.fold((0, 0), |(g, l), (_, v)| match **v {
                super::Prepared::Graph(_) => (g + 1, l),
                super::Prepared::Legacy(_) => (g, l + 1),
            })
        });
        assert!(graph > 0 && legacy == 0, "{graph} graph plans, {legacy} shapes fell back to the legacy calls");
    }
}
