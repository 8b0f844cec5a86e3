//! 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", CVPR 2016), on the packed-GEMM
//! kernel of [`super::packed`]. Each 2x2 block of outputs (a tile) comes from its
//! 4x4 input patch d through 16 products instead of 36:
//!
//! `y = Aᵀ [(G w Gᵀ) ⊙ (Bᵀ d B)] A`,
//!
//! and summed over input channels the ⊙ becomes one GEMM per point ξ of the 4x4
//! transformed domain: `M[ξ] (c_out x tiles) = U[ξ] (c_out x c_in) · V[ξ] (c_in x tiles)`.
//! The GEMMs do 4/9 of the direct path's multiply-adds. The transforms only add and halve
//! (coefficients 0, ±1, ±1/2), so the result stays within float rounding of the direct
//! sum (checked in `conv.rs`' tests against candle's convolution). ResNet's and VGG's
//! 3x3 stride-1 layers are all of this kind but VGG's first (3 channels): the forward
//! pass, the input gradient (the forward with the kernel flipped) and the weight
//! gradient (the adjoint).
//!
//! Each output is summed in one fixed order whatever the thread count and ISA, as in the
//! direct path.

use rayon::prelude::*;

use super::packed::{Isa, Shared, L2_FLOATS, NR};
use super::Geometry;

/// Points of the transformed domain (4x4).
pub(crate) const POINTS: usize = 16;

/// Fewer channels in or out than this keep the direct path: the GEMMs' panels and strips
/// are 16 channels wide, so below that the padding eats the saving (VGG's first layer,
/// 3 -> 64 channels: weight gradient 75 ms by Winograd against 28 ms direct).
const MIN_CHANNELS: usize = 16;

/// Whether F(2x2, 3x3) computes this convolution: a 3x3 kernel at stride 1, no dilation,
/// an output of whole tiles (even height and width; odd maps keep the direct path), and
/// at least [`MIN_CHANNELS`] channels in and out. `WSOL_CONV_KERNEL=direct` keeps every
/// convolution on the direct path (A/B runs).
pub(crate) fn applies(g: &Geometry) -> bool {
    if crate::switches::get().conv_kernel == "direct" {
        return false;
    }
    let (ho, wo) = g.out_hw();
    let tiles_whole = ho > 0 && wo > 0 && ho % 2 == 0 && wo % 2 == 0;
    g.kh == 3 && g.kw == 3 && g.stride == 1 && g.dilation == 1 && tiles_whole && g.c_in.min(g.c_out) >= MIN_CHANNELS
}

/// The 4x4 input patches as a convolution of their own: a 4x4 window at stride 2 with
/// the layer's padding gives tile (ty, tx) the patch at rows 2ty - pad.0 .., columns
/// 2tx - pad.1 .. (dy's 2x2 tiles likewise, see [`grad_weight`]).
fn patch_geometry(g: &Geometry) -> Geometry {
    Geometry { kh: 4, kw: 4, stride: 2, ..*g }
}

/// U[ξ] = G w Gᵀ for every (c_out, c_in) pair, as the GEMM's A: point ξ's panels at
/// `ξ * a_len`, `a_len` = c_out rounded up to MR, times c_in. `w` is [c_out, c_in, 3, 3];
/// `flipped` reads it as the input gradient's kernel instead (see
/// [`super::packed::flip_kernel`]): element (co, ci, tap) = w[ci, co, 8 - tap].
fn transform_weights(isa: Isa, g: &Geometry, w: &[f32], flipped: bool) -> Vec<f32> {
    let (c_out, c_in, mr) = (g.c_out, g.c_in, isa.mr());
    let a_len = c_out.div_ceil(mr) * mr * c_in;
    // Every element is written below (rows past c_out as zeros).
    let mut u: Vec<f32> = Vec::with_capacity(POINTS * a_len);
    let u_ptr = Shared(u.spare_capacity_mut().as_mut_ptr().cast());
    (0..c_out.div_ceil(mr)).into_par_iter().for_each(|p| {
        // SAFETY: panel p's rows, written by this task alone.
        unsafe { transform_panel(isa, w, flipped, (c_out, c_in), p, u_ptr, a_len) }
    });
    // SAFETY: every panel's rows of every channel and point were written above.
    unsafe { u.set_len(POINTS * a_len) };
    u
}

/// [`transform_weights`] of panel `p` (output channels p * MR..), all input channels.
/// The reads of w stay at the baseline ISA: built for AVX-512, LLVM turned them into
/// gathers, which took 4x as long; the transform itself runs on AVX-512.
///
/// # Safety
/// `u` holds 16 points of `a_len` floats; no one else writes panel p's rows.
unsafe fn transform_panel(
    isa: Isa,
    w: &[f32],
    flipped: bool,
    (c_out, c_in): (usize, usize),
    p: usize,
    u: Shared,
    a_len: usize,
) {
    let mr = isa.mr();
    for ci in 0..c_in {
        // The panel's rows (output channels) in lanes; past c_out they stay zero.
        let mut taps = [[0f32; NR]; 9];
        for (i, co) in (p * mr..c_out.min(p * mr + mr)).enumerate() {
            if flipped {
                let src: &[f32; 9] = w[(ci * c_out + co) * 9..][..9].try_into().unwrap();
                taps.iter_mut().zip(src.iter().rev()).for_each(|(lanes, &v)| lanes[i] = v);
            } else {
                let src: &[f32; 9] = w[(co * c_in + ci) * 9..][..9].try_into().unwrap();
                taps.iter_mut().zip(src).for_each(|(lanes, &v)| lanes[i] = v);
            }
        }
        let t = kernel_transform_on(isa, &taps);
        for (xi, lanes) in t.iter().enumerate() {
            let at = u.at(xi * a_len + (p * c_in + ci) * mr);
            // A fixed-size store where MR is 16 (a slice copy was a memmove call each).
            if mr == NR {
                at.cast::<[f32; NR]>().write_unaligned(*lanes);
            } else {
                std::slice::from_raw_parts_mut(at, mr).copy_from_slice(&lanes[..mr]);
            }
        }
    }
}

/// G w Gᵀ of 3x3 kernels, one per lane (`w[tap]`, tap = 3i + j), as ξ = 4a + b;
/// G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]].
#[allow(clippy::needless_range_loop)] // index loops: closures here stayed calls
#[inline(always)]
pub(crate) fn kernel_transform(w: &[[f32; NR]; 9]) -> [[f32; NR]; POINTS] {
    // Columns first (G w: 4 rows of 3), then rows ((G w) Gᵀ); G's rows: (1, 0, 0),
    // (½, ½, ½), (½, -½, ½), (0, 0, 1).
    let mut gw = [[[0f32; NR]; 3]; 4];
    for j in 0..3 {
        let (w0, w1, w2) = (&w[j], &w[3 + j], &w[6 + j]);
        for q in 0..NR {
            gw[0][j][q] = w0[q];
            gw[1][j][q] = 0.5 * (w0[q] + w1[q] + w2[q]);
            gw[2][j][q] = 0.5 * (w0[q] - w1[q] + w2[q]);
            gw[3][j][q] = w2[q];
        }
    }
    let mut out = [[0f32; NR]; POINTS];
    for a in 0..4 {
        let r = &gw[a];
        for q in 0..NR {
            out[4 * a][q] = r[0][q];
            out[4 * a + 1][q] = 0.5 * (r[0][q] + r[1][q] + r[2][q]);
            out[4 * a + 2][q] = 0.5 * (r[0][q] - r[1][q] + r[2][q]);
            out[4 * a + 3][q] = r[2][q];
        }
    }
    out
}

/// Bᵀ d B for one channel of 16 tiles: `d` is the 16 rows of the patch (element (i, j)
/// at row 4i + j, a lane per tile), written as row ξ = 4a + b of `out` every `stride`
/// floats. Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
#[inline(always)]
pub(crate) fn input_transform(d: &[f32], out: &mut [f32], stride: usize) {
    let row = |i: usize| -> &[f32; NR] { d[i * NR..][..NR].try_into().unwrap() };
    // t = Bᵀ d (rows combined), then t B (columns combined).
    let mut t = [[0f32; NR]; POINTS];
    for j in 0..4 {
        let (d0, d1, d2, d3) = (row(j), row(4 + j), row(8 + j), row(12 + j));
        for q in 0..NR {
            t[j][q] = d0[q] - d2[q];
            t[4 + j][q] = d1[q] + d2[q];
            t[8 + j][q] = d2[q] - d1[q];
            t[12 + j][q] = d1[q] - d3[q];
        }
    }
    for a in 0..4 {
        let [t0, t1, t2, t3] = [&t[4 * a], &t[4 * a + 1], &t[4 * a + 2], &t[4 * a + 3]];
        let rows = &mut out[4 * a * stride..];
        let mut put = |b: usize, v: [f32; NR]| rows[b * stride..][..NR].copy_from_slice(&v);
        put(0, lanes(|q| t0[q] - t2[q]));
        put(1, lanes(|q| t1[q] + t2[q]));
        put(2, lanes(|q| t2[q] - t1[q]));
        put(3, lanes(|q| t1[q] - t3[q]));
    }
}

/// Aᵀ m A of one output channel for 16 tiles: `m` holds row ξ every `stride` floats; the
/// result is the tiles' four outputs (top-left, top-right, bottom-left, bottom-right).
/// Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // index loops: closures here stayed calls
fn output_transform(m: &[f32], stride: usize) -> [[f32; NR]; 4] {
    // r0 = row 0 + row 1 + row 2, r1 = row 1 - row 2 - row 3 of the 4x4 (each a row of 4).
    let mut r = [[[0f32; NR]; 4]; 2];
    for b in 0..4 {
        let [m0, m1, m2, m3] = column(m, b, stride);
        for q in 0..NR {
            r[0][b][q] = m0[q] + m1[q] + m2[q];
            r[1][b][q] = m1[q] - m2[q] - m3[q];
        }
    }
    let mut out = [[0f32; NR]; 4];
    for i in 0..2 {
        for q in 0..NR {
            out[2 * i][q] = r[i][0][q] + r[i][1][q] + r[i][2][q];
            out[2 * i + 1][q] = r[i][1][q] - r[i][2][q] - r[i][3][q];
        }
    }
    out
}

/// Column b of a 4x4 of 16-lane rows (point ξ = 4a + b at `m[ξ * stride..]`).
#[inline(always)]
fn column(m: &[f32], b: usize, stride: usize) -> [&[f32]; 4] {
    let row = |a: usize| &m[(4 * a + b) * stride..][..NR];
    [row(0), row(1), row(2), row(3)]
}

/// 16 lanes of `f(lane)`: written as a loop, which LLVM turns into one register (the
/// generic `std::array::from_fn` was left as a call in the transforms).
#[inline(always)]
fn lanes(f: impl Fn(usize) -> f32) -> [f32; NR] {
    let mut v = [0f32; NR];
    for (q, v) in v.iter_mut().enumerate() {
        *v = f(q);
    }
    v
}

#[cfg(target_arch = "x86_64")]
use crate::cpu::winograd as x86;

fn input_transform_on(isa: Isa, d: &[f32], out: &mut [f32], stride: usize) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the CPU has AVX-512.
        return unsafe { x86::input_transform(d, out, stride) };
    }
    let _ = isa;
    input_transform(d, out, stride)
}

/// Lanes of a 16-tile panel that lie in one row of tiles of one image: their patches'
/// windows sit side by side, 2 columns apart, in the same input rows.
#[derive(Clone, Copy)]
pub(crate) struct Segment {
    /// The lanes, `q0..q0 + n`.
    pub(crate) q0: usize,
    pub(crate) n: usize,
    /// The image's offset in the batch, and the input row and column of lane q0's
    /// window (before the padding: may be negative).
    pub(crate) image: usize,
    pub(crate) row: isize,
    pub(crate) col: isize,
}

/// The [`Segment`]s of the 16 tiles from `t0` (of `tiles`; `(th, tw)` tiles per image,
/// images `x_len` apart) for windows of geometry `pg` (stride 2).
fn segments(pg: &Geometry, t0: usize, tiles: usize, (th, tw): (usize, usize), x_len: usize) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(4);
    for t in t0..(t0 + NR).min(tiles) {
        let (b, r) = (t / (th * tw), t % (th * tw));
        let (ty, tx) = (r / tw, r % tw);
        match out.last_mut() {
            Some(seg) if tx > 0 => seg.n += 1,
            _ => out.push(Segment {
                q0: t - t0,
                n: 1,
                image: b * x_len,
                row: (2 * ty) as isize - pg.pad.0 as isize,
                col: (2 * tx) as isize - pg.pad.1 as isize,
            }),
        }
    }
    out
}

/// The patches of `segs` (one list per panel) for channels `0..pg.c_in` of `x` (counted
/// from image 0, the images `x_len` apart as the segments say) into consecutive panels
/// `[c_in * kh * kw][16]`, row c * kh * kw + tap, like the direct path's im2col. Zero in
/// the padding and past the last tile. Reads x as it lies: on AVX-512, a window row is
/// two masked loads per pair of taps, split into even and odd columns by permutes, so
/// no copy of x with its columns regrouped is made.
fn fill_patches(isa: Isa, pg: &Geometry, x: &[f32], segs: &[Vec<Segment>], panels: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the CPU has AVX-512; every load is masked to columns inside x's rows.
        return unsafe { x86::fill_patches(pg, x, segs, panels) };
    }
    let _ = isa;
    let (plane, kk) = (pg.h * pg.w, pg.kh * pg.kw);
    let k = pg.c_in * kk;
    for (s, segs) in segs.iter().enumerate() {
        let panel = &mut panels[s * k * NR..][..k * NR];
        panel.fill(0.0);
        for c in 0..pg.c_in {
            for seg in segs {
                for i in 0..pg.kh {
                    let iy = seg.row + i as isize;
                    if !(0..pg.h as isize).contains(&iy) {
                        continue;
                    }
                    let row = &x[seg.image + c * plane + iy as usize * pg.w..][..pg.w];
                    for j in 0..pg.kw {
                        let out = &mut panel[(c * kk + i * pg.kw + j) * NR..][..NR];
                        for q in 0..seg.n {
                            let ix = seg.col + (2 * q + j) as isize;
                            if (0..pg.w as isize).contains(&ix) {
                                out[seg.q0 + q] = row[ix as usize];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Where a panel's tiles put their outputs in y (channel 0; rows `wo` apart).
pub(crate) enum Corners {
    /// All 16 tiles side by side in one row of tiles: their top-left output.
    Row(usize),
    /// Tile by tile, None past the batch's last tile (boxed: the rarer case).
    Tiles(Box<[Option<usize>; NR]>),
}

/// The [`Corners`] of the 16 tiles from `t0` (of `tiles`, rows of `tw` in images of
/// th x tw).
fn corners(t0: usize, tiles: usize, (th, tw): (usize, usize), wo: usize, y_len: usize) -> Corners {
    let at = |t: usize| {
        let (b, r) = (t / (th * tw), t % (th * tw));
        b * y_len + 2 * (r / tw) * wo + 2 * (r % tw)
    };
    let last = t0 + NR - 1;
    if last < tiles && last / tw == t0 / tw {
        return Corners::Row(at(t0));
    }
    Corners::Tiles(Box::new(std::array::from_fn(|q| (t0 + q < tiles).then(|| at(t0 + q)))))
}

/// The output transform of one channel's 16 tiles (M's rows `stride` apart), plus the
/// bias, ReLU'd when asked, written to y at `y` (that channel's plane).
///
/// # Safety
/// `y` is valid for every output the corners name, and no one else writes them.
#[inline(always)]
pub(crate) unsafe fn write_tiles(
    m: &[f32],
    stride: usize,
    (seed, relu): (f32, bool),
    corners: &Corners,
    y: *mut f32,
    wo: usize,
) {
    let mut out = output_transform(m, stride);
    for row in out.iter_mut() {
        for v in row.iter_mut() {
            *v += seed;
            if relu {
                *v = v.max(0.0);
            }
        }
    }
    match corners {
        Corners::Row(at) => {
            // Outputs (2q, 2q + 1) of each row come from tile q's left and right halves.
            for (half, at) in [(0, *at), (2, at + wo)] {
                let mut row = [0f32; 2 * NR];
                for (i, v) in row.iter_mut().enumerate() {
                    *v = out[half + i % 2][i / 2];
                }
                std::ptr::copy_nonoverlapping(row.as_ptr(), y.add(at), 2 * NR);
            }
        }
        Corners::Tiles(at) => {
            for (q, at) in at.iter().enumerate() {
                let Some(at) = *at else { continue };
                for (k, off) in [0, 1, wo, wo + 1].into_iter().enumerate() {
                    *y.add(at + off) = out[k][q];
                }
            }
        }
    }
}

/// [`write_tiles`] compiled for AVX-512 where the CPU has it.
///
/// # Safety
/// As [`write_tiles`].
unsafe fn write_tiles_on(
    isa: Isa,
    m: &[f32],
    stride: usize,
    post: (f32, bool),
    corners: &Corners,
    y: *mut f32,
    wo: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        return x86::write_tiles(m, stride, post, corners, y, wo);
    }
    let _ = isa;
    write_tiles(m, stride, post, corners, y, wo)
}

/// Input channels filled as patches at a time before their transform (a scratch of
/// 16 rows of 16 per channel and panel that stays in L1).
const FILL_CHANNELS: usize = 8;

/// Transformed weights past this size (f32s; 24 MB) do not stay in the last-level cache
/// between work items: on a 2-core Xeon ResNet's 512 -> 512 layers
/// (16 MB of U) ran at ~380 GFLOP/s with one panel per item, Inception's 1024 -> 1024
/// head (64 MB) at ~175.
const U_CACHED_FLOATS: usize = 6 << 20;

/// V of one work item is kept under this (f32s; 16 MB) when U is not cached.
const V_STREAMED_FLOATS: usize = 4 << 20;

/// Panels of 16 tiles per work item of [`forward`]. Each item streams all of U once, so
/// where U fits in cache an item's V is sized to L2 (and there are at least 4 items a
/// thread, to balance them); where U does not, items grow to one per thread (V then
/// streams from the last-level cache, which costs less than U from memory): Inception's
/// head at batch 8, 167 -> 89 ms per forward pass. Which tiles share an item does not
/// change any sum, so the result is the same bits either way.
fn panels_per_item(c_in: usize, c_out: usize, panels: usize, threads: usize) -> usize {
    let v_per_panel = (POINTS * c_in * NR).max(1);
    let in_l2 = (L2_FLOATS / v_per_panel).min(panels.div_ceil(4 * threads));
    let group = if POINTS * c_in * c_out > U_CACHED_FLOATS {
        in_l2.max(panels.div_ceil(threads.max(1)).min(V_STREAMED_FLOATS / v_per_panel))
    } else {
        in_l2
    };
    group.clamp(1, panels.max(1))
}

/// y = conv(x, W) (+ bias) (then ReLU when asked) for a batch, W [c_out, c_in, 3, 3] as
/// stored, or when `flipped` the kernel of [`super::packed::flip_kernel`] read from
/// the layer's own W (the input gradient; `g` is then the flipped geometry).
///
/// Work items are runs of 16-tile panels ([`panels_per_item`]): each transforms its
/// patches into V (16 points x c_in x 16 tiles per panel), then per 16 output channels runs the 16
/// GEMMs into a small M and writes the output transform of M straight into y.
pub(crate) fn forward(
    isa: Isa,
    g: &Geometry,
    (x, batch): (&[f32], usize),
    (w, flipped): (&[f32], bool),
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let (ho, wo) = g.out_hw();
    let (l, mr, c_in) = (ho * wo, isa.mr(), g.c_in);
    let (x_len, y_len) = (c_in * g.h * g.w, g.c_out * l);
    let pg = patch_geometry(g);
    let (th, tw) = pg.out_hw();
    debug_assert_eq!((th * 2, tw * 2), (ho, wo));
    let tiles = batch * th * tw;
    let panels = tiles.div_ceil(NR);
    let u = transform_weights(isa, g, w, flipped);
    let a_len = u.len() / POINTS;
    let a_panels = g.c_out.div_ceil(mr);
    let group = panels_per_item(c_in, g.c_out, panels, rayon::current_num_threads());
    let ldc = group * NR;
    // Every element is written below (the tiles cover y exactly).
    let mut y: Vec<f32> = Vec::with_capacity(batch * y_len);
    crate::memory::advise_huge_pages(y.spare_capacity_mut());
    let y_ptr = Shared(y.spare_capacity_mut().as_mut_ptr().cast());
    let plane = g.h * g.w;
    (0..panels.div_ceil(group)).into_par_iter().for_each_init(
        || {
            (
                vec![0f32; FILL_CHANNELS * POINTS * NR * group],
                vec![0f32; POINTS * group * c_in * NR],
                vec![0f32; POINTS * mr * ldc],
            )
        },
        |(patches, v, m), item| {
            let first = item * group;
            let count = group.min(panels - first);
            let t_first = first * NR;
            let segs: Vec<Vec<Segment>> =
                (0..count).map(|s| segments(&pg, t_first + s * NR, tiles, (th, tw), x_len)).collect();
            // V: point ξ of panel s at v[(ξ * count + s) * c_in * 16], rows by channel.
            let xi_stride = count * c_in * NR;
            for c0 in (0..c_in).step_by(FILL_CHANNELS) {
                let cb = FILL_CHANNELS.min(c_in - c0);
                let gb = Geometry { c_in: cb, ..pg };
                // The segments count from image 0's channel 0: here the block's first.
                fill_patches(isa, &gb, &x[c0 * plane..], &segs, &mut patches[..count * cb * POINTS * NR]);
                for s in 0..count {
                    for c in 0..cb {
                        let d = &patches[(s * cb + c) * POINTS * NR..][..POINTS * NR];
                        input_transform_on(isa, d, &mut v[(s * c_in + c0 + c) * NR..], xi_stride);
                    }
                }
            }
            let corners: Vec<Corners> =
                (0..count).map(|s| corners(t_first + s * NR, tiles, (th, tw), wo, y_len)).collect();
            for p in 0..a_panels {
                for xi in 0..POINTS {
                    let a = &u[xi * a_len + p * mr * c_in..][..mr * c_in];
                    for s in 0..count {
                        // SAFETY: a is one panel of c_in x MR, v holds a panel of c_in x 16
                        // at this offset, and m MR rows of ldc from row ξ * MR.
                        unsafe {
                            isa.kernel_set(
                                c_in,
                                a.as_ptr(),
                                v[(xi * count + s) * c_in * NR..].as_ptr(),
                                m[xi * mr * ldc + s * NR..].as_mut_ptr(),
                                ldc,
                            )
                        };
                    }
                }
                for i in 0..mr.min(g.c_out - p * mr) {
                    let co = p * mr + i;
                    let seed = bias.map_or(0.0, |b| b[co]);
                    for (s, corners) in corners.iter().enumerate() {
                        let m = &m[i * ldc + s * NR..];
                        // SAFETY: this item alone writes its tiles' outputs, each once.
                        unsafe { write_tiles_on(isa, m, mr * ldc, (seed, relu), corners, y_ptr.at(co * l), wo) };
                    }
                }
            }
        },
    );
    // SAFETY: the tiles together cover all batch x c_out x ho x wo outputs.
    unsafe { y.set_len(batch * y_len) };
    y
}

/// Tiles per chunk of the weight gradient (a multiple of 16), from the geometry alone so
/// each sum has one order on every thread count. A chunk's transformed tiles (16 points
/// x (c_in + c_out) floats per tile) should stay in L3, about 8 MB (64ch 56x56: 9.0 ms
/// at 2 MB, 8.0 at 8 MB, 8.6-9.1 at 16 MB), but each chunk also reads and writes P (16 x
/// c_out x c_in): at least 2 c_in c_out / (c_in + c_out) tiles, which balances the two.
fn tile_chunk(c_in: usize, c_out: usize) -> usize {
    let cached = (1 << 17) / (c_in + c_out).max(1);
    let balanced = 2 * c_in * c_out / (c_in + c_out).max(1);
    cached.max(balanced).max(NR).div_ceil(NR) * NR
}

/// dW [c_out, c_in, 3, 3] = Gᵀ [Σ_tiles (A dy Aᵀ) ⊙ (Bᵀ d B)] G, the adjoint of
/// [`forward`]. Chunk by chunk of tiles, dy's 2x2 tiles and x's 4x4 patches go to the
/// transformed domain (packed with the tiles as the contraction), and one GEMM per point
/// ξ adds the chunk's sum to P[ξ] (c_out x c_in); then Gᵀ P G maps the 16 points back to
/// the 9 taps.
pub(crate) fn grad_weight(isa: Isa, g: &Geometry, x: &[f32], dy: &[f32], batch: usize) -> Vec<f32> {
    let (ho, wo) = g.out_hw();
    let (mr, c_in, c_out) = (isa.mr(), g.c_in, g.c_out);
    let pg = patch_geometry(g);
    let (th, tw) = pg.out_hw();
    let tiles = batch * th * tw;
    let t_pad = tiles.div_ceil(NR) * NR;
    let chunk = tile_chunk(c_in, c_out).min(t_pad);
    // dy's tiles as a convolution's patches too: 2x2 windows at stride 2.
    let dg = Geometry { c_in: c_out, h: ho, w: wo, kh: 2, kw: 2, stride: 2, pad: (0, 0), dilation: 1, c_out: c_in };
    let (strips, a_panels) = (c_in.div_ceil(NR), c_out.div_ceil(mr));
    // V: point ξ's strips of 16 input channels at ξ * v_len, each [chunk][16]; D: point
    // ξ's panels of MR output channels at ξ * d_len, each [chunk][MR]. Each chunk writes
    // all of V and D but the rows of the last panel past c_out, zeroed here once.
    let (v_len, d_len) = (strips * chunk * NR, a_panels * chunk * mr);
    let mut v: Vec<f32> = Vec::with_capacity(POINTS * v_len);
    let mut d: Vec<f32> = Vec::with_capacity(POINTS * d_len);
    // SAFETY: written before read (V and D by each chunk, the tail rows of D here).
    unsafe {
        v.set_len(POINTS * v_len);
        d.set_len(POINTS * d_len);
    }
    if c_out % mr != 0 {
        for d in d.chunks_exact_mut(d_len) {
            d[(a_panels - 1) * chunk * mr..].chunks_exact_mut(mr).for_each(|t| t[c_out % mr..].fill(0.0));
        }
    }
    let (v_ptr, d_ptr) = (Shared(v.as_mut_ptr()), Shared(d.as_mut_ptr()));
    let (x_len, dy_len) = (c_in * g.h * g.w, c_out * ho * wo);
    // P[ξ] [a_panels * MR, strips * 16], every element written by the first chunk.
    let ldc = strips * NR;
    let p_len = a_panels * mr * ldc;
    let mut p: Vec<f32> = Vec::with_capacity(POINTS * p_len);
    let p_ptr = Shared(p.spare_capacity_mut().as_mut_ptr().cast());
    for (first, c0) in (0..t_pad).step_by(chunk).enumerate().map(|(i, c0)| (i == 0, c0)) {
        let tn = chunk.min(t_pad - c0);
        (0..tn / NR).into_par_iter().for_each_init(
            || (vec![0f32; NR * POINTS * NR], vec![0f32; POINTS * NR * NR]),
            |(patches, rows), panel| {
                let t0 = panel * NR;
                let x_segs = [segments(&pg, c0 + t0, tiles, (th, tw), x_len)];
                for (s, ch) in (0..c_in).step_by(NR).enumerate() {
                    let cb = NR.min(c_in - ch);
                    let gb = Geometry { c_in: cb, ..pg };
                    fill_patches(isa, &gb, &x[ch * g.h * g.w..], &x_segs, &mut patches[..cb * POINTS * NR]);
                    rows[cb * NR..].iter_mut().for_each(|v| *v = 0.0);
                    for c in 0..cb {
                        input_transform_on(isa, &patches[c * POINTS * NR..], &mut rows[c * NR..], NR * NR);
                    }
                    for xi in 0..POINTS {
                        // SAFETY: strip s of point ξ, tiles t0..t0 + 16: this item's alone.
                        let out = unsafe {
                            std::slice::from_raw_parts_mut(v_ptr.at(xi * v_len + (s * chunk + t0) * NR), NR * NR)
                        };
                        transpose_into(isa, &rows[xi * NR * NR..][..NR * NR], NR, 0, out);
                    }
                }
                let dy_segs = [segments(&dg, c0 + t0, tiles, (th, tw), dy_len)];
                for ch in (0..c_out).step_by(NR) {
                    let cb = NR.min(c_out - ch);
                    let gb = Geometry { c_in: cb, ..dg };
                    fill_patches(isa, &gb, &dy[ch * ho * wo..], &dy_segs, &mut patches[..cb * 4 * NR]);
                    for c in 0..cb {
                        tile_transform_on(isa, &patches[c * 4 * NR..], &mut rows[c * NR..], NR * NR);
                    }
                    for xi in 0..POINTS {
                        // Rows ch..ch + cb of point ξ land in panels ch / MR.. at tiles t0..t0 + 16.
                        for (r0, r1) in panel_runs(ch, ch + cb, mr) {
                            let at = xi * d_len + ((r0 / mr) * chunk + t0) * mr;
                            // SAFETY: panel r0 / MR of point ξ, tiles t0..t0 + 16: this item's alone.
                            let out = unsafe { std::slice::from_raw_parts_mut(d_ptr.at(at), NR * mr) };
                            let rows = &rows[xi * NR * NR + (r0 - ch) * NR..][..(r1 - r0) * NR];
                            transpose_into(isa, rows, mr, r0 % mr, out);
                        }
                    }
                }
            },
        );
        // The chunk's sums: one item per point and strip of input channels, which stays
        // in L1 while the panels of output channels stream past it.
        (0..POINTS * strips).into_par_iter().for_each(|item| {
            let (xi, s) = (item / strips, item % strips);
            let b = v[xi * v_len + s * chunk * NR..].as_ptr();
            for panel in 0..a_panels {
                let a = d[xi * d_len + panel * chunk * mr..].as_ptr();
                let c = p_ptr.at(xi * p_len + panel * mr * ldc + s * NR);
                // SAFETY: a and b hold tn rows of MR and 16; c is MR rows of ldc, the
                // columns of strip s, this item's alone.
                unsafe {
                    if first {
                        isa.kernel_set(tn, a, b, c, ldc)
                    } else {
                        isa.kernel(tn, a, b, c, ldc)
                    }
                };
            }
        });
    }
    // SAFETY: the first chunk wrote every element of P.
    unsafe { p.set_len(POINTS * p_len) };
    drop((v, d));
    // dW = Gᵀ P G, 16 input channels at a time.
    let mut dw: Vec<f32> = Vec::with_capacity(c_out * c_in * 9);
    dw.spare_capacity_mut().par_chunks_mut(c_in * 9).enumerate().for_each(|(co, dw)| {
        for c0 in (0..c_in).step_by(NR) {
            let cb = NR.min(c_in - c0);
            let taps = weight_transform_on(isa, &p[co * ldc + c0..], p_len);
            for (c, out) in dw[c0 * 9..].chunks_exact_mut(9).take(cb).enumerate() {
                out.iter_mut().zip(&taps).for_each(|(o, t)| _ = o.write(t[c]));
            }
        }
    });
    // SAFETY: every (co, ci, tap) was written above.
    unsafe { dw.set_len(c_out * c_in * 9) };
    dw
}

/// Runs of rows `r0..r1` that stay within one MR-row panel.
fn panel_runs(r0: usize, r1: usize, mr: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut r = r0;
    std::iter::from_fn(move || {
        (r < r1).then(|| {
            let end = ((r / mr + 1) * mr).min(r1);
            (std::mem::replace(&mut r, end), end)
        })
    })
}

/// Rows of 16 lanes (`rows`, row-major) stored transposed into panel rows of `width`:
/// `out[q * width + lane0 + r] = rows[r * 16 + q]`.
fn transpose_into(isa: Isa, rows: &[f32], width: usize, lane0: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && width == NR && rows.len() == NR * NR {
        // SAFETY: the CPU has AVX-512; rows and out hold 16 x 16 floats.
        return unsafe { x86::transpose_16(rows, out) };
    }
    let _ = isa;
    for (r, row) in rows.chunks_exact(NR).enumerate() {
        for (q, &v) in row.iter().enumerate() {
            out[q * width + lane0 + r] = v;
        }
    }
}

/// A dy Aᵀ of one channel's 2x2 tiles (rows 0..4 of `d`, element (i, j) at row 2i + j,
/// a lane per tile), as row ξ of `out` every `stride` floats. A = [[1, 0], [1, 1], [1,
/// -1], [0, -1]].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // index loops: closures here stayed calls
pub(crate) fn tile_transform(d: &[f32], out: &mut [f32], stride: usize) {
    // Rows first (A d: 4 rows of 2), then columns; A's rows: (1, 0), (1, 1), (1, -1), (0, -1).
    let mut e = [[[0f32; NR]; 2]; 4];
    for j in 0..2 {
        let (d0, d1) = (&d[j * NR..][..NR], &d[(2 + j) * NR..][..NR]);
        for q in 0..NR {
            e[0][j][q] = d0[q];
            e[1][j][q] = d0[q] + d1[q];
            e[2][j][q] = d0[q] - d1[q];
            e[3][j][q] = -d1[q];
        }
    }
    for i in 0..4 {
        let (v0, v1) = (&e[i][0], &e[i][1]);
        let rows = &mut out[4 * i * stride..];
        for q in 0..NR {
            rows[q] = v0[q];
            rows[stride + q] = v0[q] + v1[q];
            rows[2 * stride + q] = v0[q] - v1[q];
            rows[3 * stride + q] = -v1[q];
        }
    }
}

/// Gᵀ p G for 16 pairs of channels, p's row ξ every `stride` floats: the 9 taps.
/// Gᵀ = [[1, ½, ½, 0], [0, ½, -½, 0], [0, ½, ½, 1]].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // index loops: closures here stayed calls
pub(crate) fn weight_transform(p: &[f32], stride: usize) -> [[f32; NR]; 9] {
    // Gᵀ P (3 rows of 4), then (Gᵀ P) G; Gᵀ's rows: (1, ½, ½, 0), (0, ½, -½, 0), (0, ½, ½, 1).
    let mut t = [[[0f32; NR]; 4]; 3];
    for b in 0..4 {
        let [p0, p1, p2, p3] = column(p, b, stride);
        for q in 0..NR {
            t[0][b][q] = p0[q] + 0.5 * (p1[q] + p2[q]);
            t[1][b][q] = 0.5 * (p1[q] - p2[q]);
            t[2][b][q] = 0.5 * (p1[q] + p2[q]) + p3[q];
        }
    }
    let mut out = [[0f32; NR]; 9];
    for i in 0..3 {
        let r = &t[i];
        for q in 0..NR {
            out[3 * i][q] = r[0][q] + 0.5 * (r[1][q] + r[2][q]);
            out[3 * i + 1][q] = 0.5 * (r[1][q] - r[2][q]);
            out[3 * i + 2][q] = 0.5 * (r[1][q] + r[2][q]) + r[3][q];
        }
    }
    out
}

fn kernel_transform_on(isa: Isa, w: &[[f32; NR]; 9]) -> [[f32; NR]; POINTS] {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the CPU has AVX-512.
        return unsafe { x86::kernel_transform(w) };
    }
    let _ = isa;
    kernel_transform(w)
}

fn tile_transform_on(isa: Isa, d: &[f32], out: &mut [f32], stride: usize) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the CPU has AVX-512.
        return unsafe { x86::tile_transform(d, out, stride) };
    }
    let _ = isa;
    tile_transform(d, out, stride)
}

fn weight_transform_on(isa: Isa, p: &[f32], stride: usize) -> [[f32; NR]; 9] {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the CPU has AVX-512.
        return unsafe { x86::weight_transform(p, stride) };
    }
    let _ = isa;
    weight_transform(p, stride)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tile by the transforms against the direct 3x3 sums.
    #[test]
    fn transforms_give_the_direct_sums() {
        let d: Vec<f32> = (0..16).map(|v| ((v * 7) % 11) as f32 - 5.0).collect();
        let w: Vec<f32> = (0..9).map(|v| ((v * 5) % 7) as f32 * 0.5 - 1.0).collect();
        // 16 lanes, lane q scales the patch by q + 1.
        let lanes: Vec<f32> = (0..16 * NR).map(|i| d[i / NR] * ((i % NR) + 1) as f32).collect();
        let mut v = vec![0f32; POINTS * NR];
        input_transform(&lanes, &mut v, NR);
        let u = kernel_transform(&std::array::from_fn(|t| [w[t]; NR]));
        let m: Vec<f32> = (0..POINTS * NR).map(|i| u[i / NR][i % NR] * v[i]).collect();
        let out = output_transform(&m, NR);
        for (k, (oy, ox)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
            let direct: f32 = (0..9).map(|t| w[t] * d[(oy + t / 3) * 4 + ox + t % 3]).sum();
            for (q, v) in out[k].iter().enumerate() {
                assert_eq!(*v, direct * (q + 1) as f32, "output {k}, lane {q}");
            }
        }
    }
}
