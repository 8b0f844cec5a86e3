//! The convolution passes through cuDNN's graph (backend) API: each shape's operation graph
//! and execution plan built once, then one variant pack and `cudnnBackendExecute` per call.
//! Why: cuDNN 9 serves the legacy calls of `conv_cudnn.rs` by building a plan inside every
//! call, 50-70 us of host time per convolution on an H200 host (measured with `bench train
//! --profile`): ~4 ms of a 10.6 ms ResNet-18 step at batch 32 while the GPU waits. PyTorch
//! goes through this API (via cudnn-frontend) with cached plans.
//!
//! Engines are chosen as PyTorch chooses them: cuDNN's instant heuristics, then its
//! fallback list; never an engine that down-converts its inputs, and no tensor-core
//! engine unless TF32 is allowed. The first plan that builds is kept, or with
//! `cudnn_benchmark` the fastest of them all, timed on the call's own tensors.

use std::ffi::c_void;

use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{sys::CUevent_flags, CudaStream};
use candle_core::Result;
use sys::cudnnBackendAttributeName_t as A;
use sys::cudnnBackendAttributeType_t as T;
use sys::cudnnBackendDescriptorType_t as D;

use super::{check, Conv, Pass};

/// The graph's tensors in the variant pack: x (or dx), w (or dw), y (or dy).
const UIDS: [i64; 3] = [1, 2, 3];

/// One backend descriptor, destroyed with its owner.
struct Desc(sys::cudnnBackendDescriptor_t);

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from a successful `cudnnBackendCreateDescriptor` (a `Desc` is built only then),
        // destroyed once, here.
        unsafe { sys::cudnnBackendDestroyDescriptor(self.0) };
    }
}

impl Desc {
    fn new(kind: D) -> Result<Desc> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer for the new descriptor.
        check(unsafe { sys::cudnnBackendCreateDescriptor(kind, &mut raw) }, "create descriptor")?;
        Ok(Desc(raw))
    }

    /// Attribute `name` := `values`, whose element type is cuDNN's `ty`.
    fn set<V>(&self, name: A, ty: T, values: &[V]) -> Result<&Self> {
        // SAFETY: `self.0` is live; `values` holds `values.len()` elements of `V`, the Rust type of the cuDNN type
        // `ty` at every call site.
        let status = unsafe {
            sys::cudnnBackendSetAttribute(self.0, name, ty, values.len() as i64, values.as_ptr() as *const c_void)
        };
        attribute(status, name)?;
        Ok(self)
    }

    /// Reads up to `out.len()` elements of attribute `name`; how many there were.
    fn get<V>(&self, name: A, ty: T, out: &mut [V]) -> Result<usize> {
        let mut n = 0i64;
        // No array when only the count is asked for, as cudnn-frontend does.
        let array = if out.is_empty() { std::ptr::null_mut() } else { out.as_mut_ptr() as *mut c_void };
        // SAFETY: `self.0` is live; `array` is null with a count of 0 or holds `out.len()` elements of `V` (the type
        // `ty` names at every call site), and cuDNN writes at most that many; `n` is a live out-pointer.
        let status = unsafe { sys::cudnnBackendGetAttribute(self.0, name, ty, out.len() as i64, &mut n, array) };
        attribute(status, name)?;
        Ok(n as usize)
    }

    fn finalize(self, what: &str) -> Result<Desc> {
        // SAFETY: `self.0` is a live descriptor; cuDNN validates its attributes and reports an error if any is missing.
        check(unsafe { sys::cudnnBackendFinalize(self.0) }, what)?;
        Ok(self)
    }
}

/// `check` with the attribute's name, formatted only on failure (a call sets attributes).
fn attribute(status: sys::cudnnStatus_t, name: A) -> Result<()> {
    match status {
        sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS => Ok(()),
        e => check(e, &format!("{name:?}")),
    }
}

/// A built execution plan and what it refers to (kept alive with it).
/// Fields drop in order, each before what it refers to.
pub(super) struct GraphPlan {
    plan: Desc,
    pub workspace: usize,
    _config: Desc,
    _graph: Desc,
    _parts: [Desc; 5],
}

/// The largest alignment (bytes, up to 16) of a device address: part of a plan's key, as
/// the engines' vector loads depend on it.
pub(super) fn alignment(address: u64) -> i64 {
    [16, 8, 4, 2].into_iter().find(|a| address.is_multiple_of(*a)).unwrap_or(1) as i64
}

fn tensor(uid: i64, dims: [usize; 4], align: i64) -> Result<Desc> {
    let dims = dims.map(|d| d as i64);
    let strides = [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1];
    let t = Desc::new(D::CUDNN_BACKEND_TENSOR_DESCRIPTOR)?;
    t.set(A::CUDNN_ATTR_TENSOR_DATA_TYPE, T::CUDNN_TYPE_DATA_TYPE, &[sys::cudnnDataType_t::CUDNN_DATA_FLOAT])?
        .set(A::CUDNN_ATTR_TENSOR_DIMENSIONS, T::CUDNN_TYPE_INT64, &dims)?
        .set(A::CUDNN_ATTR_TENSOR_STRIDES, T::CUDNN_TYPE_INT64, &strides)?
        .set(A::CUDNN_ATTR_TENSOR_UNIQUE_ID, T::CUDNN_TYPE_INT64, &[uid])?
        .set(A::CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, T::CUDNN_TYPE_INT64, &[align])?;
    t.finalize("tensor descriptor")
}

/// The one-operation graph of `conv`'s pass over (x, w, y) dims: [x, w, y, conv, op, graph].
fn graph(h: sys::cudnnHandle_t, conv: &Conv, dims: [[usize; 4]; 3], align: [i64; 3]) -> Result<(Desc, [Desc; 5])> {
    let [x, w, y] = [0, 1, 2].map(|i| tensor(UIDS[i], dims[i], align[i]));
    let (x, w, y) = (x?, w?, y?);
    let c = Desc::new(D::CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR)?;
    let (pad, s, d) = ([conv.pad.0 as i64, conv.pad.1 as i64], conv.stride as i64, conv.dilation as i64);
    c.set(A::CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, T::CUDNN_TYPE_INT64, &[2i64])?
        .set(A::CUDNN_ATTR_CONVOLUTION_COMP_TYPE, T::CUDNN_TYPE_DATA_TYPE, &[sys::cudnnDataType_t::CUDNN_DATA_FLOAT])?
        .set(
            A::CUDNN_ATTR_CONVOLUTION_CONV_MODE,
            T::CUDNN_TYPE_CONVOLUTION_MODE,
            &[sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION],
        )?
        .set(A::CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, T::CUDNN_TYPE_INT64, &pad)?
        .set(A::CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, T::CUDNN_TYPE_INT64, &pad)?
        .set(A::CUDNN_ATTR_CONVOLUTION_DILATIONS, T::CUDNN_TYPE_INT64, &[d, d])?
        .set(A::CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, T::CUDNN_TYPE_INT64, &[s, s])?;
    let c = c.finalize("convolution descriptor")?;
    // Each pass names its operands: (kind, [x, w, y, conv, alpha, beta]).
    let (kind, names) = match conv.pass {
        Pass::Forward => (
            D::CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
            [
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
            ],
        ),
        Pass::GradInput => (
            D::CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
            [
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA,
            ],
        ),
        Pass::GradWeight => (
            D::CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
            [
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA,
            ],
        ),
    };
    let op = Desc::new(kind)?;
    let descriptor = T::CUDNN_TYPE_BACKEND_DESCRIPTOR;
    op.set(names[0], descriptor, &[x.0])?
        .set(names[1], descriptor, &[w.0])?
        .set(names[2], descriptor, &[y.0])?
        .set(names[3], descriptor, &[c.0])?
        .set(names[4], T::CUDNN_TYPE_FLOAT, &[1f32])?
        .set(names[5], T::CUDNN_TYPE_FLOAT, &[0f32])?;
    let op = op.finalize("convolution operation")?;
    let g = Desc::new(D::CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR)?;
    g.set(A::CUDNN_ATTR_OPERATIONGRAPH_OPS, descriptor, &[op.0])?.set(
        A::CUDNN_ATTR_OPERATIONGRAPH_HANDLE,
        T::CUDNN_TYPE_HANDLE,
        &[h],
    )?;
    Ok((g.finalize("operation graph")?, [x, w, y, c, op]))
}

/// The engine configurations cuDNN's heuristics in `mode` list for `graph`, best first.
fn engine_configs(graph: &Desc, mode: sys::cudnnBackendHeurMode_t) -> Result<Vec<Desc>> {
    let heur = Desc::new(D::CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR)?;
    heur.set(A::CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, T::CUDNN_TYPE_BACKEND_DESCRIPTOR, &[graph.0])?.set(
        A::CUDNN_ATTR_ENGINEHEUR_MODE,
        T::CUDNN_TYPE_HEUR_MODE,
        &[mode],
    )?;
    let heur = heur.finalize("engine heuristics")?;
    let count = heur.get::<sys::cudnnBackendDescriptor_t>(
        A::CUDNN_ATTR_ENGINEHEUR_RESULTS,
        T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
        &mut [],
    )?;
    if count == 0 {
        return Ok(Vec::new());
    }
    // cuDNN fills descriptors the caller created.
    let mut configs =
        (0..count).map(|_| Desc::new(D::CUDNN_BACKEND_ENGINECFG_DESCRIPTOR)).collect::<Result<Vec<_>>>()?;
    let mut raw: Vec<_> = configs.iter().map(|c| c.0).collect();
    let n = heur.get(A::CUDNN_ATTR_ENGINEHEUR_RESULTS, T::CUDNN_TYPE_BACKEND_DESCRIPTOR, &mut raw)?;
    configs.truncate(n);
    Ok(configs)
}

/// Whether PyTorch would run this engine for f32 data: no down-converted inputs, and
/// tensor cores (TF32) only where `tf32` allows them.
fn usable(config: &Desc, tf32: bool) -> Result<bool> {
    use sys::cudnnBackendNumericalNote_t as N;
    let engine = Desc::new(D::CUDNN_BACKEND_ENGINE_DESCRIPTOR)?;
    config.get(A::CUDNN_ATTR_ENGINECFG_ENGINE, T::CUDNN_TYPE_BACKEND_DESCRIPTOR, &mut [engine.0])?;
    // Read as integers: a newer cuDNN may name notes this binding's enum lacks.
    let mut notes = [u32::MAX; 32];
    let n = engine.get(A::CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, T::CUDNN_TYPE_NUMERICAL_NOTE, &mut notes)?;
    let has = |note: N| notes[..n.min(notes.len())].contains(&(note as u32));
    Ok(!has(N::CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) && (tf32 || !has(N::CUDNN_NUMERICAL_NOTE_TENSOR_CORE)))
}

/// The execution plan of one engine configuration and its workspace size, or `None`
/// where this engine cannot run the graph here.
fn execution_plan(h: sys::cudnnHandle_t, config: &Desc) -> Result<Option<(Desc, usize)>> {
    let plan = Desc::new(D::CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR)?;
    plan.set(A::CUDNN_ATTR_EXECUTION_PLAN_HANDLE, T::CUDNN_TYPE_HANDLE, &[h])?.set(
        A::CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
        T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
        &[config.0],
    )?;
    let Ok(plan) = plan.finalize("execution plan") else { return Ok(None) };
    let mut size = [0i64];
    plan.get(A::CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, T::CUDNN_TYPE_INT64, &mut size)?;
    Ok(Some((plan, size[0].max(0) as usize)))
}

/// Runs `plan` on the (x, w, y) device pointers of its graph with `workspace`.
fn run(h: sys::cudnnHandle_t, plan: &Desc, ptrs: [*mut c_void; 3], workspace: *mut c_void) -> Result<()> {
    let pack = Desc::new(D::CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)?;
    pack.set(A::CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, T::CUDNN_TYPE_INT64, &UIDS)?
        .set(A::CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, T::CUDNN_TYPE_VOID_PTR, &ptrs)?
        .set(A::CUDNN_ATTR_VARIANT_PACK_WORKSPACE, T::CUDNN_TYPE_VOID_PTR, &[workspace])?;
    let pack = pack.finalize("variant pack")?;
    // SAFETY: `h` is the thread's handle for the device, which built `plan` (finalized, kept alive by its
    // owner); `pack` holds device buffers of the graph's dims and a workspace of at least the plan's size.
    check(unsafe { sys::cudnnBackendExecute(h, plan.0, pack.0) }, "execute")
}

/// The (x, w, y) of a call's operands `a`, `b` and its result `d` (pointers, alignments).
fn operands<V>(pass: Pass, [a, b, d]: [V; 3]) -> [V; 3] {
    match pass {
        Pass::Forward => [a, b, d],    // (x, w) -> y
        Pass::GradInput => [d, b, a],  // (dy, w) -> dx
        Pass::GradWeight => [a, d, b], // (x, dy) -> dw
    }
}

impl GraphPlan {
    /// The plan for `conv` over (x, w, y) `dims`, the call's (a, b, result) pointers
    /// aligned to `align` bytes. With
    /// `benchmark`, each candidate runs on the call's tensors `ptrs` (a, b, result) with a
    /// workspace from `workspace(bytes)`, and the fastest wins.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        h: sys::cudnnHandle_t,
        stream: &CudaStream,
        conv: &Conv,
        dims: [[usize; 4]; 3],
        align: [i64; 3],
        tf32: bool,
        benchmark: bool,
        ptrs: [*mut c_void; 3],
        workspace: &mut dyn FnMut(usize) -> Result<*mut c_void>,
    ) -> Result<GraphPlan> {
        let (graph, parts) = graph(h, conv, dims, operands(conv.pass, align))?;
        let mut best: Option<(f32, Desc, usize, Desc)> = None;
        let mut failure = None;
        let modes = [
            sys::cudnnBackendHeurMode_t::CUDNN_HEUR_MODE_INSTANT,
            sys::cudnnBackendHeurMode_t::CUDNN_HEUR_MODE_FALLBACK,
        ];
        'modes: for mode in modes {
            let configs = match engine_configs(&graph, mode) {
                Ok(configs) => configs,
                Err(e) => {
                    failure.get_or_insert(e);
                    continue;
                }
            };
            for config in configs {
                if !usable(&config, tf32)? {
                    continue;
                }
                let Some((plan, size)) = execution_plan(h, &config)? else { continue };
                if !benchmark {
                    best = Some((0.0, plan, size, config));
                    break 'modes;
                }
                // An engine whose workspace cannot be had or that fails to run is passed over.
                let Ok(ws) = workspace(size) else { continue };
                let Ok(ms) = time(h, stream, &plan, operands(conv.pass, ptrs), ws) else { continue };
                if best.as_ref().is_none_or(|b| ms < b.0) {
                    best = Some((ms, plan, size, config));
                }
            }
        }
        let Some((_, plan, workspace, config)) = best else {
            return Err(failure.unwrap_or_else(|| {
                candle_core::Error::Msg(format!(
                    "cuDNN's heuristics listed no usable engine for the {:?} pass",
                    conv.pass
                ))
            }));
        };
        Ok(GraphPlan { plan, workspace, _config: config, _graph: graph, _parts: parts })
    }

    /// One call: the pass's operands `a`, `b` and result `d` (device pointers).
    pub(super) fn execute(
        &self,
        h: sys::cudnnHandle_t,
        pass: Pass,
        ptrs: [*mut c_void; 3],
        workspace: *mut c_void,
    ) -> Result<()> {
        run(h, &self.plan, operands(pass, ptrs), workspace)
    }
}

/// Milliseconds of one run of `plan` (the best of three, after one untimed run).
fn time(
    h: sys::cudnnHandle_t,
    stream: &CudaStream,
    plan: &Desc,
    ptrs: [*mut c_void; 3],
    workspace: *mut c_void,
) -> Result<f32> {
    let event = || stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(candle_core::Error::wrap);
    run(h, plan, ptrs, workspace)?;
    let mut best = f32::INFINITY;
    for _ in 0..3 {
        let start = event()?;
        run(h, plan, ptrs, workspace)?;
        let end = event()?;
        best = best.min(start.elapsed_ms(&end).map_err(candle_core::Error::wrap)?);
    }
    Ok(best)
}
