//! Convolution as a packed GEMM whose B panels are built by im2col itself, on x86-64
//! with AVX-512 or AVX2+FMA. Why not im2col + the `gemm` crate (the fallback, in
//! [`super`])? That path writes the im2col matrix, then the crate packs it again
//! and repacks the weights for every image; at ResNet's 56x56 layers the three passes
//! over a 7 MB matrix cost as much as the arithmetic. Here:
//!
//! - the weights are packed once per op into MR-row panels `[k][MR]`, shared by threads;
//! - im2col writes 16 output positions at a time straight into a B panel `[k][16]` that
//!   stays in L2, and one microkernel (16x16 AVX-512, 6x16 AVX2) sweeps the weight panels
//!   over it;
//! - the input gradient of a stride-1 convolution is the same forward pass over dy with
//!   the kernel flipped and transposed (no col2im);
//! - the weight gradient runs the same microkernel with the contraction over output
//!   positions: dy packed `[t][MR]` against x's transposed im2col `[t][16]`.
//!
//! Each output element is summed in one fixed order whatever the thread count and ISA
//! (k ascending inside a register, then added to its seed), so results are the same
//! bits on every machine that runs this path.

use rayon::prelude::*;

use super::Geometry;

/// Output positions (forward) or im2col rows (weight gradient) per B panel: one zmm, or
/// two ymm.
pub(crate) const NR: usize = 16;

/// The microkernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// Rows of A per panel.
    pub(super) fn mr(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 6,
        }
    }

    /// The best microkernel of this CPU, if any (`WSOL_CONV_KERNEL=gemm` turns the path
    /// off, `=avx2` caps it, for A/B benchmarks; `=direct` keeps it but turns
    /// [`super::winograd`] off).
    pub(crate) fn detect() -> Option<Isa> {
        static ISA: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let wanted = &crate::switches::get().conv_kernel;
            Isa::available().into_iter().find(|&isa| match wanted.as_str() {
                "gemm" => false,
                "avx2" => isa == Isa::Avx2,
                _ => true,
            })
        })
    }

    /// Every microkernel this CPU can run, best first.
    pub(crate) fn available() -> Vec<Isa> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                out.push(Isa::Avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                out.push(Isa::Avx2);
            }
        }
        out
    }

    /// `c[i * ldc + j] += Σ_p a[p * MR + i] * b[p * 16 + j]` for i < MR, j < 16.
    ///
    /// # Safety
    /// `a` holds `k * MR` floats, `b` `k * 16`, and `c` MR rows of 16 at stride `ldc`;
    /// the CPU has this ISA.
    pub(super) unsafe fn kernel(self, k: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        self.microkernel::<true>(k, a, b, c, ldc)
    }

    /// [`Isa::kernel`] that writes `c` instead of adding to it (no zero fill first).
    ///
    /// # Safety
    /// As [`Isa::kernel`].
    pub(super) unsafe fn kernel_set(self, k: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        self.microkernel::<false>(k, a, b, c, ldc)
    }

    /// # Safety
    /// As [`Isa::kernel`].
    unsafe fn microkernel<const ADD: bool>(self, k: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        #[cfg(target_arch = "x86_64")]
        match self {
            Isa::Avx512 => x86::kernel_16x16::<ADD>(k, a, b, c, ldc),
            Isa::Avx2 => x86::kernel_6x16::<ADD>(k, a, b, c, ldc),
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no packed-GEMM kernel on this architecture ({k} {a:?} {b:?} {c:?} {ldc})")
    }
}

#[cfg(target_arch = "x86_64")]
use crate::cpu::gemm as x86;

/// Row-major A [m, k] packed as MR-row panels `[k][MR]` (rows past m are zeros). Every
/// pass packs its weights or dy this way, millions of floats per step: on AVX-512, 16x16
/// blocks go through registers and a transpose (a float at a time cost ~5% of a
/// ResNet-18 step).
pub(crate) fn pack_panels(isa: Isa, m: usize, k: usize, a: &[f32]) -> Vec<f32> {
    let mr = isa.mr();
    let mut out = vec![0f32; m.div_ceil(mr) * mr * k];
    out.par_chunks_mut((mr * k).max(1)).enumerate().for_each(|(p, panel)| {
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512 {
            // SAFETY: the CPU has AVX-512; a holds m rows of k, the panel k rows of 16.
            return unsafe { x86::pack_panel_16(&a[p * 16 * k..], (m - p * 16).min(16), k, panel) };
        }
        // 64 columns at a time, so the panel rows being written stay in L1.
        for c0 in (0..k).step_by(64) {
            for row in (p * mr..m).take(mr) {
                let (i, src) = (row - p * mr, &a[row * k..]);
                (c0..(c0 + 64).min(k)).for_each(|col| panel[col * mr + i] = src[col]);
            }
        }
    });
    out
}

/// A mutable pointer shared by work items that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(super) struct Shared(pub(super) *mut f32);
// SAFETY: every user writes only the elements its work item owns.
unsafe impl Send for Shared {}
// SAFETY: as for Send: no two work items touch the same element.
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so closures capture the whole `Shared`, not its field).
    pub(super) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Where one kernel tap reads the 16 output positions of a B panel, as offsets from
/// image 0 of the batch within each channel's plane (the fill adds the channel).
/// Padding and positions past the end read zeros.
pub(crate) enum Tap {
    /// The valid lanes as runs of consecutive inputs, `(lanes mask, offset of lane 0)`
    /// (lane q of a run reads offset + q; a run's lanes are consecutive): a masked load
    /// each on AVX-512. Small and lane-free, as the fill reads it for every channel.
    Runs([(u16, isize); MAX_RUNS], u8),
    /// More than [`MAX_RUNS`] runs (maps narrower than a few lanes): lane by lane.
    Lanes(Box<[Option<usize>; NR]>),
}

/// Runs per tap worth masked loads (a 16-position panel of a 14-wide map with padding
/// has up to 5).
const MAX_RUNS: usize = 6;

/// A tap from its lanes: runs where there are at most [`MAX_RUNS`].
fn tap_of(lanes: [Option<usize>; NR]) -> Tap {
    let (mut out, mut n) = ([(0u16, 0isize); MAX_RUNS], 0);
    for (q, lane) in lanes.iter().enumerate() {
        let Some(o) = *lane else { continue };
        let base = o as isize - q as isize;
        // Continues the last run if the previous lane was in it at the same base.
        if n > 0 && out[n - 1].1 == base && out[n - 1].0 & (1 << (q - 1)) != 0 {
            out[n - 1].0 |= 1 << q;
        } else if n == MAX_RUNS {
            return Tap::Lanes(Box::new(lanes));
        } else {
            out[n] = (1 << q, base);
            n += 1;
        }
    }
    Tap::Runs(out, n as u8)
}

/// The taps of the 16 positions `t0..t0 + 16` of the batch's `total` positions (image
/// `t / l`, position `t % l` in it); offsets count from image 0's channel 0, images
/// `x_len` apart, so a panel may span two images. `cols[ix]` is where input column `ix`
/// lies in its row (see [`Phases`]).
fn taps(g: &Geometry, t0: usize, (l, total, x_len): (usize, usize, usize), cols: &[usize]) -> Vec<Tap> {
    let (_, wo) = g.out_hw();
    // Each lane's image, and where its window starts in the input: one division for
    // lane 0, then steps.
    let mut starts = [None; NR];
    let (mut b, mut t) = (t0 / l, t0 % l);
    let (mut oy, mut ox) = (t / wo, t % wo);
    for start in starts.iter_mut().take(total.saturating_sub(t0)) {
        let corner = ((oy * g.stride) as isize - g.pad.0 as isize, (ox * g.stride) as isize - g.pad.1 as isize);
        *start = Some((b * x_len, corner));
        (t, ox) = (t + 1, ox + 1);
        if ox == wo {
            (oy, ox) = (oy + 1, 0);
        }
        if t == l {
            (b, t, oy, ox) = (b + 1, 0, 0, 0);
        }
    }
    let mut out = Vec::with_capacity(g.kh * g.kw);
    // All 16 lanes in one output row of one image (the common case on wide maps): each
    // tap reads one run of consecutive inputs, found without a look at every lane.
    if let (Some((image, (y0, x0))), Some((last, (y_last, _)))) = (starts[0], starts[NR - 1]) {
        if image == last && y0 == y_last {
            let (s, w) = (g.stride as isize, g.w as isize);
            for i in 0..g.kh {
                let iy = y0 + (i * g.dilation) as isize;
                for j in 0..g.kw {
                    let x0 = x0 + (j * g.dilation) as isize;
                    // Lanes lo..hi read columns x0 + q * s inside 0..w.
                    let lo = ((-x0).max(0) + s - 1) / s;
                    let hi = ((w - x0 + s - 1) / s).clamp(lo, NR as isize);
                    let mut runs = [(0u16, 0isize); MAX_RUNS];
                    let n = if (0..g.h as isize).contains(&iy) && hi > lo {
                        let first = image + iy as usize * g.w + cols[(x0 + lo * s) as usize];
                        runs[0] = (((1u32 << hi) - (1u32 << lo)) as u16, first as isize - lo);
                        1
                    } else {
                        0
                    };
                    out.push(Tap::Runs(runs, n));
                }
            }
            return out;
        }
    }
    for i in 0..g.kh {
        for j in 0..g.kw {
            let (di, dj) = ((i * g.dilation) as isize, (j * g.dilation) as isize);
            let mut lanes = [None; NR];
            for (lane, start) in lanes.iter_mut().zip(&starts) {
                let Some((image, (y0, x0))) = *start else { continue };
                let (iy, ix) = (y0 + di, x0 + dj);
                if (0..g.h as isize).contains(&iy) && (0..g.w as isize).contains(&ix) {
                    *lane = Some(image + iy as usize * g.w + cols[ix as usize]);
                }
            }
            out.push(tap_of(lanes));
        }
    }
    out
}

/// A strided convolution's input with each row's columns grouped by phase (`ix % s`):
/// row `[0, s, 2s, ..., 1, 1 + s, ...]`. Consecutive outputs then read consecutive
/// floats, so the panel fill takes a tap's 16 lanes in one (masked) load instead of 16
/// scalar ones: the 7x7 stride-2 stem spent more time filling than multiplying.
struct Phases {
    /// `cols[ix]`: where input column `ix` lies in its row.
    cols: Vec<usize>,
    /// The regrouped input, when the stride is above 1.
    x: Option<Vec<f32>>,
}

impl Phases {
    fn new(g: &Geometry, x: &[f32]) -> Phases {
        let s = g.stride;
        if s == 1 {
            return Phases { cols: (0..g.w).collect(), x: None };
        }
        // Phase p holds columns p, p + s, ...: ceil((w - p) / s) of them.
        let starts: Vec<usize> =
            (0..s).scan(0, |at, p| Some(std::mem::replace(at, *at + (g.w - p.min(g.w)).div_ceil(s)))).collect();
        let cols: Vec<usize> = (0..g.w).map(|ix| starts[ix % s] + ix / s).collect();
        // Every element is written below (cols is a permutation of each row).
        let mut out: Vec<f32> = Vec::with_capacity(x.len());
        out.spare_capacity_mut().par_chunks_mut(g.w * 64).zip(x.par_chunks(g.w * 64)).for_each(|(out, x)| {
            for (out, x) in out.chunks_exact_mut(g.w).zip(x.chunks_exact(g.w)) {
                cols.iter().zip(x).for_each(|(&c, &v)| _ = out[c].write(v));
            }
        });
        // SAFETY: x holds whole rows, each written above.
        unsafe { out.set_len(x.len()) };
        Phases { cols, x: Some(out) }
    }
}

/// im2col of batch `x` into consecutive panels `[k][16]`, one per entry of `taps` (its
/// 16 output positions), channel by channel and tap by tap: each input row is read
/// along, not once per panel.
fn fill_panels(isa: Isa, g: &Geometry, x: &[f32], taps: &[Vec<Tap>], panels: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the CPU has AVX-512; `panels` holds one panel of k x 16 per entry.
        return unsafe { x86::fill_panels(g, x, taps, panels) };
    }
    let _ = isa;
    let (plane, k) = (g.h * g.w, g.k());
    for c in 0..g.c_in {
        let xc = &x[c * plane..];
        for tap in 0..g.kh * g.kw {
            let r = c * g.kh * g.kw + tap;
            for (s, taps) in taps.iter().enumerate() {
                let row = &mut panels[(s * k + r) * NR..][..NR];
                match &taps[tap] {
                    Tap::Runs(runs, n) => {
                        row.fill(0.0);
                        for &(mask, base) in &runs[..*n as usize] {
                            let (lo, hi) = (mask.trailing_zeros() as usize, 16 - mask.leading_zeros() as usize);
                            let from = (base + lo as isize) as usize;
                            row[lo..hi].copy_from_slice(&xc[from..from + hi - lo]);
                        }
                    }
                    Tap::Lanes(lanes) => {
                        row.iter_mut().zip(lanes.iter()).for_each(|(v, lane)| *v = lane.map_or(0.0, |o| xc[o]))
                    }
                }
            }
        }
    }
}

/// Columns of B panels kept in L2 at once (each pass over the packed weights then serves
/// several panels).
pub(super) const L2_FLOATS: usize = 96 * 1024;

/// y = conv(x, W) (+ bias, where each output's sum starts) for a batch: `w` from
/// [`pack_panels`] of W [c_out, k]; ReLU applied after when asked. Each work item is a
/// run of B panels of the batch, summed into a compact [c_out, 16 x panels] buffer that
/// stays in cache and is then copied out row by row (with the ReLU): the kernels never
/// touch y itself, whose rows lie a whole map apart.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    isa: Isa,
    g: &Geometry,
    x: &[f32],
    batch: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let (ho, wo) = g.out_hw();
    let (l, k, mr) = (ho * wo, g.k(), isa.mr());
    let (x_len, y_len) = (g.c_in * g.h * g.w, g.c_out * l);
    // Every element is written below; not zeroing first saves a pass over y (and, for a
    // fresh allocation, the kernel's zero pages).
    let mut y: Vec<f32> = Vec::with_capacity(batch * y_len);
    crate::memory::advise_huge_pages(y.spare_capacity_mut());
    // Panels of 16 run over the batch's positions, across image borders (a 14x14 map
    // alone would leave its last panel 4/16 full).
    let total = batch * l;
    let panels = total.div_ceil(NR);
    let group = (L2_FLOATS / (k * NR)).clamp(1, panels.max(1));
    let ldc = group * NR;
    let y_ptr = Shared(y.spare_capacity_mut().as_mut_ptr().cast());
    let phases = Phases::new(g, x);
    let x = phases.x.as_deref().unwrap_or(x);
    (0..panels.div_ceil(group)).into_par_iter().for_each_init(
        || (vec![0f32; group * k * NR], vec![0f32; w.len() / k * ldc]),
        |(bs, acc), item| {
            let first = item * group;
            let (t_first, count) = (first * NR, group.min(panels - first));
            let strip_taps: Vec<Vec<Tap>> =
                (0..count).map(|s| taps(g, t_first + s * NR, (l, total, x_len), &phases.cols)).collect();
            fill_panels(isa, g, x, &strip_taps, bs);
            for (m, row) in acc.chunks_exact_mut(ldc).enumerate() {
                row.fill(bias.and_then(|b| b.get(m)).copied().unwrap_or(0.0));
            }
            for (p, a) in w.chunks_exact(k * mr).enumerate() {
                for s in 0..count {
                    // SAFETY: a is one panel of k x MR, bs holds `count` panels of k x 16,
                    // and acc has MR rows of ldc from row p * MR.
                    unsafe {
                        isa.kernel(
                            k,
                            a.as_ptr(),
                            bs[s * k * NR..].as_ptr(),
                            acc[p * mr * ldc + s * NR..].as_mut_ptr(),
                            ldc,
                        )
                    };
                }
            }
            // Copied out image by image: positions t_first..end of the batch.
            let end = (t_first + count * NR).min(total);
            let mut t = t_first;
            while t < end {
                let (b, tl) = (t / l, t % l);
                let n = (l - tl).min(end - t);
                for m in 0..g.c_out {
                    // SAFETY: this item alone writes the batch's positions t_first..end.
                    let out = unsafe { std::slice::from_raw_parts_mut(y_ptr.at(b * y_len + m * l + tl), n) };
                    let src = &acc[m * ldc + t - t_first..][..n];
                    if relu {
                        out.iter_mut().zip(src).for_each(|(o, v)| *o = v.max(0.0));
                    } else {
                        out.copy_from_slice(src);
                    }
                }
                t += n;
            }
        },
    );
    // SAFETY: the items together wrote all batch x c_out x l outputs.
    unsafe { y.set_len(batch * y_len) };
    y
}

/// The input gradient of a stride-1 convolution as a forward convolution of dy: its
/// geometry (dy's channels in, x's out, padding `(k - 1) * dilation - pad`), or `None`
/// when the padding would be negative.
pub(crate) fn grad_input_geometry(g: &Geometry) -> Option<Geometry> {
    let (ho, wo) = g.out_hw();
    let pad = |k: usize, p: usize| ((k - 1) * g.dilation).checked_sub(p);
    let flipped =
        Geometry { c_in: g.c_out, h: ho, w: wo, c_out: g.c_in, pad: (pad(g.kh, g.pad.0)?, pad(g.kw, g.pad.1)?), ..*g };
    (g.stride == 1 && flipped.out_hw() == (g.h, g.w)).then_some(flipped)
}

/// W [c_out, c_in, kh, kw] as the flipped, transposed kernel of [`grad_input_geometry`]
/// in the same layout, [c_in, c_out, kh, kw]: element (ci, co, i, j) = W[co, ci, kh - 1 -
/// i, kw - 1 - j].
pub(crate) fn flip_kernel(g: &Geometry, w: &[f32]) -> Vec<f32> {
    let taps = g.kh * g.kw;
    let mut flipped = vec![0f32; g.c_in * g.c_out * taps];
    flipped.par_chunks_mut(g.c_out * taps).enumerate().for_each(|(ci, row)| {
        for (co, out) in row.chunks_exact_mut(taps).enumerate() {
            let src = &w[(co * g.c_in + ci) * taps..][..taps];
            out.iter_mut().zip(src.iter().rev()).for_each(|(o, &v)| *o = v);
        }
    });
    flipped
}

/// [`flip_kernel`], packed.
pub(crate) fn pack_flipped(isa: Isa, g: &Geometry, w: &[f32]) -> Vec<f32> {
    pack_panels(isa, g.c_in, g.c_out * g.kh * g.kw, &flip_kernel(g, w))
}

/// Output positions per chunk of the weight gradient's contraction: as long as the
/// chunk of packed dy (c_out x chunk) fits [`L2_FLOATS`], so it serves a run of strips
/// from L2, but at least 256 (each kernel call costs a load and store of its tile).
/// From c_out alone, not the ISA's panel height: the same chunks, the same sums.
fn t_chunk(c_out: usize) -> usize {
    (L2_FLOATS / c_out.max(1)).clamp(256, 4096) / NR * NR
}

/// dW [c_out, k] = Σ_b Σ_t dy_b[:, t] col(x_b)[:, t]ᵀ, each element summed over t in
/// chunks of [`t_chunk`], then over images in order.
pub(crate) fn grad_weight(isa: Isa, g: &Geometry, x: &[f32], dy: &[f32], batch: usize) -> Vec<f32> {
    let (ho, wo) = g.out_hw();
    let (l, k, mr) = (ho * wo, g.k(), isa.mr());
    let (x_len, dy_len) = (g.c_in * g.h * g.w, g.c_out * l);
    let m_pad = g.c_out.div_ceil(mr) * mr;
    let chunk = t_chunk(g.c_out);
    // dy of each image as A panels [t][MR].
    let dy_panels: Vec<Vec<f32>> = (0..batch)
        .map(|b| {
            let dyb = &dy[b * dy_len..][..dy_len];
            pack_panels(isa, g.c_out, l, dyb)
        })
        .collect();
    let strips = k.div_ceil(NR);
    // Runs of strips per work item, so each chunk of dy serves several from L2. Every
    // item reads all of dy: with few strips (the stem's 147 rows make 10), one run per
    // thread, or the stem's 25 MB of dy would be read once per strip.
    let threads = rayon::current_num_threads();
    let group = if strips < 8 * threads { strips.div_ceil(threads) } else { strips / (4 * threads) };
    let mut dw = vec![0f32; g.c_out * k];
    let dw_ptr = Shared(dw.as_mut_ptr());
    let taps = g.kh * g.kw;
    let phases = Phases::new(g, x);
    let x = phases.x.as_deref().unwrap_or(x);
    (0..strips.div_ceil(group)).into_par_iter().for_each_init(
        || (vec![0f32; chunk * NR], vec![0f32; group * m_pad * NR]),
        |(bs, acc), item| {
            let run: Vec<(usize, usize)> =
                (item * group..strips.min((item + 1) * group)).map(|s| (s * NR, NR.min(k - s * NR))).collect();
            // Each lane's im2col row r = (c, i, j): its channel and input offsets.
            let lanes: Vec<Vec<(usize, isize, isize)>> = run
                .iter()
                .map(|&(r0, n)| {
                    (r0..r0 + n)
                        .map(|r| {
                            let (c, tap) = (r / taps, r % taps);
                            let (i, j) = (tap / g.kw, tap % g.kw);
                            let d = |o: usize, p: usize| (o * g.dilation) as isize - p as isize;
                            (c, d(i, g.pad.0), d(j, g.pad.1))
                        })
                        .collect()
                })
                .collect();
            acc.fill(0.0);
            for b in 0..batch {
                let xb = &x[b * x_len..][..x_len];
                for t0 in (0..l).step_by(chunk) {
                    let tn = chunk.min(l - t0);
                    for (s, lanes) in lanes.iter().enumerate() {
                        fill_transposed(isa, g, xb, &phases.cols, lanes, (t0, tn), wo, &mut bs[..tn * NR]);
                        let acc = &mut acc[s * m_pad * NR..];
                        for (p, a) in dy_panels[b].chunks_exact(l * mr).enumerate() {
                            // SAFETY: a holds l * MR floats, bs tn * 16, acc MR rows from p * MR.
                            unsafe {
                                isa.kernel(tn, a[t0 * mr..].as_ptr(), bs.as_ptr(), acc[p * mr * NR..].as_mut_ptr(), NR)
                            };
                        }
                    }
                }
            }
            for (s, &(r0, n)) in run.iter().enumerate() {
                for m in 0..g.c_out {
                    // SAFETY: this item alone writes columns r0..r0 + n.
                    let row = unsafe { std::slice::from_raw_parts_mut(dw_ptr.at(m * k + r0), n) };
                    row.copy_from_slice(&acc[(s * m_pad + m) * NR..][..n]);
                }
            }
        },
    );
    dw
}

/// The transposed im2col of positions `t0..t0 + tn` for one strip of rows: `panel[t][q]`
/// = x at lane q's channel and tap for position t (zero in the padding and past the
/// strip's last row). `x` has its columns where `cols` says ([`Phases`]).
#[allow(clippy::too_many_arguments)]
fn fill_transposed(
    isa: Isa,
    g: &Geometry,
    x: &[f32],
    cols: &[usize],
    lanes: &[(usize, isize, isize)],
    (t0, tn): (usize, usize),
    wo: usize,
    panel: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the CPU has AVX-512; the panel holds tn rows of 16.
        return unsafe { x86::fill_transposed(g, x, cols, lanes, (t0, tn), wo, panel) };
    }
    let _ = isa;
    if lanes.len() < NR {
        panel.fill(0.0);
    }
    let plane = g.h * g.w;
    for (q, &(c, dy0, dx0)) in lanes.iter().enumerate() {
        let xc = &x[c * plane..][..plane];
        // Output row by output row: one bounds check per row, a run of columns inside.
        let (mut t, end) = (t0, t0 + tn);
        while t < end {
            let (oy, ox0) = (t / wo, t % wo);
            let run = (wo - ox0).min(end - t);
            let out = &mut panel[(t - t0) * NR + q..];
            let iy = (oy * g.stride) as isize + dy0;
            if !(0..g.h as isize).contains(&iy) {
                (0..run).for_each(|o| out[o * NR] = 0.0);
            } else {
                let row = &xc[iy as usize * g.w..][..g.w];
                for o in 0..run {
                    let ix = ((ox0 + o) * g.stride) as isize + dx0;
                    out[o * NR] = if (0..g.w as isize).contains(&ix) { row[cols[ix as usize]] } else { 0.0 };
                }
            }
            t += run;
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    /// The 16x16 transpose against its definition.
    #[test]
    fn transpose_16x16_transposes() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512 on this CPU: nothing to check");
            return;
        }
        let m: Vec<f32> = (0..256).map(|v| v as f32).collect();
        let mut t = [0f32; 256];
        // SAFETY: AVX-512 is present; loads and stores stay inside m and t.
        unsafe {
            use std::arch::x86_64::*;
            let mut rows = [_mm512_setzero_ps(); 16];
            rows.iter_mut().enumerate().for_each(|(i, r)| *r = _mm512_loadu_ps(m[i * 16..].as_ptr()));
            super::x86::transpose_16x16(&mut rows);
            rows.iter().enumerate().for_each(|(i, r)| _mm512_storeu_ps(t[i * 16..].as_mut_ptr(), *r));
        }
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(t[i * 16 + j], m[j * 16 + i], "({i}, {j})");
            }
        }
    }
}
