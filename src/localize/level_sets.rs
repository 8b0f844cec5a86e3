//! The connected components of every superlevel set `q >= l` of a quantized map, for all
//! 256 levels in one pass: pixels are added from the highest level down and merged with
//! union-find, instead of scanning and tracing the whole image once per level.
//!
//! For a set without holes, everything the evaluator reads from OpenCV's contours follows
//! from the components alone (each has exactly one border, its outer one):
//! - the border's bounding rectangle is the component's pixel extent;
//! - its `contourArea` (polygon through pixel centres, 8-connected) is the sum over the
//!   2x2 pixel windows of the component of 1 (4 pixels set) or 1/2 (3 set);
//! - OpenCV lists sibling borders in reverse order of discovery, i.e. by the raster index
//!   of each component's first pixel, descending.
//!
//! Whether a set has holes comes from its Euler number (components - holes), kept with
//! Gray's 2x2 window counts for 8-connected foreground. Levels with holes are traced.

/// One component of a superlevel set.
#[derive(Clone, Copy, Debug)]
pub struct Component {
    /// Raster index (in the padded image) of its first pixel: OpenCV's discovery order.
    pub first: u32,
    /// Inclusive pixel extent.
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
    /// Twice its border's polygon area, as [`super::contours::Contour::area2`].
    pub area2: u32,
    size: u32,
    /// Index in `live`.
    pos: u32,
}

/// Per 8-neighbour mask of an added pixel: the change of 4x the Euler number, the change
/// of twice the area, and one neighbour per group of mutually adjacent set neighbours
/// (the only ones worth a union).
#[derive(Clone, Copy)]
struct Step {
    euler4: i8,
    area2: u8,
    reps: [u8; 4],
    n_reps: u8,
}

/// Neighbour bits: 0 NW, 1 N, 2 NE, 3 W, 4 E, 5 SW, 6 S, 7 SE.
const RING: [u8; 8] = [0, 1, 2, 4, 7, 6, 5, 3];

/// Gray's 8-connectivity window term (x4): one pixel +1, three -1, a diagonal pair -2.
const fn window_euler4(tl: bool, tr: bool, bl: bool, br: bool) -> i8 {
    let n = tl as u8 + tr as u8 + bl as u8 + br as u8;
    if n == 1 {
        1
    } else if n == 3 {
        -1
    } else if n == 2 && tl == br {
        -2
    } else {
        0
    }
}

const fn window_area2(n: u8) -> u8 {
    match n {
        4 => 2,
        3 => 1,
        _ => 0,
    }
}

const fn bit(mask: u8, k: u8) -> bool {
    mask >> k & 1 == 1
}

const fn step(mask: u8) -> Step {
    // The four windows around p, as (tl, tr, bl, br) with p's own slot set or not.
    let windows: [[bool; 3]; 4] = [
        [bit(mask, 0), bit(mask, 1), bit(mask, 3)],
        [bit(mask, 1), bit(mask, 2), bit(mask, 4)],
        [bit(mask, 3), bit(mask, 5), bit(mask, 6)],
        [bit(mask, 4), bit(mask, 6), bit(mask, 7)],
    ];
    let mut euler4 = 0i8;
    let mut area2 = 0u8;
    let mut k = 0;
    while k < 4 {
        let [a, c, d] = windows[k];
        let (before, after) = match k {
            0 => (window_euler4(a, c, d, false), window_euler4(a, c, d, true)),
            1 => (window_euler4(a, c, false, d), window_euler4(a, c, true, d)),
            2 => (window_euler4(a, false, c, d), window_euler4(a, true, c, d)),
            _ => (window_euler4(false, a, c, d), window_euler4(true, a, c, d)),
        };
        euler4 += after - before;
        let n = a as u8 + c as u8 + d as u8;
        area2 += window_area2(n + 1) - window_area2(n);
        k += 1;
    }
    // Group set neighbours around the ring: consecutive ring cells touch (4-adjacent),
    // and so do two edge cells around a corner (N and E are diagonal neighbours).
    let mut group = [0u8; 8];
    let mut j = 0;
    while j < 8 {
        group[j] = j as u8;
        j += 1;
    }
    let mut changed = true;
    while changed {
        changed = false;
        let mut j = 0;
        while j < 8 {
            let mut d = 1;
            while d <= 2 {
                let o = (j + d) % 8;
                let linked = bit(mask, RING[j]) && bit(mask, RING[o]) && (d == 1 || j % 2 == 1);
                if linked && group[o] != group[j] {
                    let g = if group[o] < group[j] { group[o] } else { group[j] };
                    group[o] = g;
                    group[j] = g;
                    changed = true;
                }
                d += 1;
            }
            j += 1;
        }
    }
    let mut reps = [0u8; 4];
    let mut n_reps = 0u8;
    let mut j = 0;
    while j < 8 {
        if bit(mask, RING[j]) && group[j] == j as u8 {
            reps[n_reps as usize] = RING[j];
            n_reps += 1;
        }
        j += 1;
    }
    Step { euler4, area2, reps, n_reps }
}

static STEPS: [Step; 256] = {
    let mut t = [Step { euler4: 0, area2: 0, reps: [0; 4], n_reps: 0 }; 256];
    let mut m = 0;
    while m < 256 {
        t[m] = step(m as u8);
        m += 1;
    }
    t
};

/// Reusable buffers for [`LevelSets::sweep`].
///
/// Which neighbours are already in the set when a pixel is added depends only on `q`
/// (higher level, or same level and earlier in raster order), so a raster pre-pass
/// computes every pixel's neighbour mask, the Euler number per level and the extents,
/// and the pass in level order only labels. Pixels carry a component label; merged
/// components point to their survivor in a small alias table, so a merge touches no
/// pixels. Both choices keep the level-order pass's random accesses to one label array:
/// cache misses, not arithmetic, are its cost.
#[derive(Default)]
pub struct LevelSets {
    stride: usize,
    /// Padded (w+2) x (h+2) copy of `q + 1`, 0 on the frame.
    padded: Vec<u16>,
    /// Padded: 1 + component index (possibly merged since), valid where in the set.
    label: Vec<u32>,
    components: Vec<Component>,
    /// Per component: itself, or a component it was merged into.
    alias: Vec<u32>,
    /// Components not merged into another.
    live: Vec<u32>,
    /// (x, y, neighbour mask) sorted by level, highest first.
    order: Vec<(u16, u16, u8)>,
    euler4: i64,
    /// Extent of the current set: x0, y0, x1, y1 (exclusive).
    extent: [usize; 4],
}

/// Pixels per quantized level.
pub fn level_counts(q: &[u8]) -> [usize; 256] {
    let mut counts = [0usize; 256];
    q.iter().for_each(|&v| counts[v as usize] += 1);
    counts
}

impl LevelSets {
    /// Builds the superlevel sets of `q` (row-major `w` x `h`) from the top down and calls
    /// `at_level(l, self)` once the set `q >= l` is complete, for each `l` with `wanted[l]`.
    /// `counts` is [`level_counts`]`(q)`, which the caller needs anyway to choose `wanted`.
    pub fn sweep(
        &mut self,
        q: &[u8],
        w: usize,
        h: usize,
        counts: &[usize; 256],
        wanted: &[bool; 256],
        mut at_level: impl FnMut(u8, &Self),
    ) {
        assert_eq!(q.len(), w * h);
        debug_assert_eq!(counts, &level_counts(q));
        assert!(w < u16::MAX as usize && h < u16::MAX as usize && (w + 2) * (h + 2) < u32::MAX as usize);
        let stride = w + 2;
        self.stride = stride;
        let n = stride * (h + 2);
        self.padded.clear();
        self.padded.resize(n, 0);
        for (src, dst) in q.chunks_exact(w.max(1)).zip(self.padded[stride..].chunks_exact_mut(stride)) {
            dst[1..=w].iter_mut().zip(src).for_each(|(d, &v)| *d = v as u16 + 1);
        }
        self.label.resize(n, 0);
        self.components.clear();
        self.alias.clear();
        self.live.clear();
        self.euler4 = 0;

        // Bucket starts, highest level first.
        let mut start = [0usize; 257];
        for v in 0..256 {
            start[255 - v + 1] = counts[v];
        }
        for k in 1..257 {
            start[k] += start[k - 1];
        }
        // Raster pre-pass: masks (placed in level order, raster order within a level) and
        // Euler change per level; four partial sums so runs of one level do not chain
        // read-modify-writes on one counter.
        let mut euler4_at = [[0i32; 4]; 256];
        self.order.clear();
        self.order.resize(q.len(), (0, 0, 0));
        for y in 1..=h {
            let up = &self.padded[(y - 1) * stride..y * stride];
            let row = &self.padded[y * stride..(y + 1) * stride];
            let down = &self.padded[(y + 1) * stride..(y + 2) * stride];
            for x in 1..=w {
                let c = row[x];
                // Earlier in raster order: in the set from the same level on; later: only above it.
                let m = (up[x - 1] >= c) as u8
                    | ((up[x] >= c) as u8) << 1
                    | ((up[x + 1] >= c) as u8) << 2
                    | ((row[x - 1] >= c) as u8) << 3
                    | ((row[x + 1] > c) as u8) << 4
                    | ((down[x - 1] > c) as u8) << 5
                    | ((down[x] > c) as u8) << 6
                    | ((down[x + 1] > c) as u8) << 7;
                let v = c as usize - 1;
                euler4_at[v][x & 3] += STEPS[m as usize].euler4 as i32;
                let slot = &mut start[255 - v];
                self.order[*slot] = ((x - 1) as u16, (y - 1) as u16, m);
                *slot += 1;
            }
        }

        let extent_at = level_extents(q, w);
        // `start[255 - l]` is now the end of level l's bucket.
        let mut next = 0;
        self.extent = [usize::MAX, usize::MAX, 0, 0];
        for level in (0..256usize).rev() {
            let end = start[255 - level];
            for k in next..end {
                let (x, y, m) = self.order[k];
                self.add(x as i32, y as i32, m);
            }
            next = end;
            self.euler4 += euler4_at[level].iter().map(|&e| e as i64).sum::<i64>();
            let (e, a) = (&mut self.extent, extent_at[level]);
            *e = [e[0].min(a[0]), e[1].min(a[1]), e[2].max(a[2]), e[3].max(a[3])];
            if wanted[level] {
                at_level(level as u8, self);
            }
        }
    }

    fn add(&mut self, x: i32, y: i32, mask: u8) {
        let s = self.stride;
        let i = (y as usize + 1) * s + x as usize + 1;
        let offsets = [i - s - 1, i - s, i - s + 1, i - 1, i + 1, i + s - 1, i + s, i + s + 1];
        let st = &STEPS[mask as usize];
        let c = if st.n_reps == 0 {
            let c = self.components.len() as u32;
            self.components.push(Component {
                first: i as u32,
                x0: x,
                y0: y,
                x1: x,
                y1: y,
                area2: 0,
                size: 0,
                pos: self.live.len() as u32,
            });
            self.alias.push(c);
            self.live.push(c);
            c
        } else {
            let mut c = self.resolve(self.label[offsets[st.reps[0] as usize]] - 1);
            for &rep in &st.reps[1..st.n_reps as usize] {
                let c2 = self.resolve(self.label[offsets[rep as usize]] - 1);
                if c2 != c {
                    c = self.merge(c, c2);
                }
            }
            c
        };
        self.label[i] = c + 1;
        let comp = &mut self.components[c as usize];
        comp.first = comp.first.min(i as u32);
        comp.x0 = comp.x0.min(x);
        comp.y0 = comp.y0.min(y);
        comp.x1 = comp.x1.max(x);
        comp.y1 = comp.y1.max(y);
        comp.size += 1;
        comp.area2 += st.area2 as u32;
    }

    /// The live component `c` was merged into (halving the alias path).
    fn resolve(&mut self, mut c: u32) -> u32 {
        while self.alias[c as usize] != c {
            let up = self.alias[self.alias[c as usize] as usize];
            self.alias[c as usize] = up;
            c = up;
        }
        c
    }

    /// Merges two live components (the smaller into the larger); returns the survivor.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        let (keep, gone) =
            if self.components[a as usize].size >= self.components[b as usize].size { (a, b) } else { (b, a) };
        self.alias[gone as usize] = keep;
        let g = self.components[gone as usize];
        let k = &mut self.components[keep as usize];
        k.first = k.first.min(g.first);
        k.x0 = k.x0.min(g.x0);
        k.y0 = k.y0.min(g.y0);
        k.x1 = k.x1.max(g.x1);
        k.y1 = k.y1.max(g.y1);
        k.area2 += g.area2;
        k.size += g.size;
        // Drop the merged component from `live`.
        let pos = g.pos as usize;
        self.live.swap_remove(pos);
        if let Some(&moved) = self.live.get(pos) {
            self.components[moved as usize].pos = pos as u32;
        }
        keep
    }

    /// Holes of the current set (4-connected background not reaching the image edge).
    pub fn holes(&self) -> i64 {
        debug_assert_eq!(self.euler4 % 4, 0);
        self.live.len() as i64 - self.euler4 / 4
    }

    /// The current set's components, in no particular order.
    pub fn components(&self) -> impl Iterator<Item = &Component> + '_ {
        self.live.iter().map(|&c| &self.components[c as usize])
    }

    /// Extent of the current set: x0, y0, x1, y1 (exclusive).
    pub fn extent(&self) -> [usize; 4] {
        self.extent
    }
}

/// Per level `l`, the extent [x0, y0, x1, y1) of the pixels at exactly `l`, from row and
/// column maxima (elementwise, so it vectorizes) instead of per-pixel min/max updates.
fn level_extents(q: &[u8], w: usize) -> [[usize; 4]; 256] {
    let mut col_max = vec![0u8; w];
    let mut extent = [[usize::MAX, usize::MAX, 0, 0]; 256];
    for (y, row) in q.chunks_exact(w.max(1)).enumerate() {
        col_max.iter_mut().zip(row).for_each(|(c, &v)| *c = (*c).max(v));
        let m = row.iter().copied().max().unwrap_or(0) as usize;
        extent[m][1] = extent[m][1].min(y);
        extent[m][3] = extent[m][3].max(y + 1);
    }
    for (x, &m) in col_max.iter().enumerate() {
        let e = &mut extent[m as usize];
        e[0] = e[0].min(x);
        e[2] = e[2].max(x + 1);
    }
    extent
}

#[cfg(test)]
mod tests {
    use super::super::contours::Tracer;
    use super::*;

    /// xorshift, so the cases do not depend on a crate's stream.
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    /// Every level of random few-valued maps: hole counts, and for hole-free levels the
    /// extents, areas and order, equal what tracing the level finds.
    #[test]
    fn matches_traced_contours_at_every_level() {
        let mut r = rng(7);
        let mut tracer = Tracer::default();
        let mut sets = LevelSets::default();
        let (mut with_holes, mut without) = (0, 0);
        for case in 0..400 {
            let (w, h) = (1 + (r() % 12) as usize, 1 + (r() % 10) as usize);
            let levels = 2 + case % 5;
            let q: Vec<u8> = (0..w * h).map(|_| (r() % levels as u64) as u8 * 40).collect();
            let mut seen = Vec::new();
            sets.sweep(&q, w, h, &level_counts(&q), &[true; 256], |l, s| {
                let traced = tracer.find(&q, w, h, |v| v >= l);
                let holes = traced.iter().filter(|c| c.is_hole).count() as i64;
                assert_eq!(s.holes(), holes, "level {l} of {q:?} ({w}x{h})");
                assert_eq!(s.components().count(), traced.len() - holes as usize);
                if holes == 0 {
                    let mut comps: Vec<&Component> = s.components().collect();
                    comps.sort_by_key(|c| std::cmp::Reverse(c.first));
                    let got: Vec<_> = comps.iter().map(|c| (c.x0, c.y0, c.x1, c.y1, c.area2 as i64)).collect();
                    let want: Vec<_> = traced.iter().map(|c| (c.x_min, c.y_min, c.x_max, c.y_max, c.area2)).collect();
                    assert_eq!(got, want, "level {l} of {q:?} ({w}x{h})");
                    without += 1;
                } else {
                    with_holes += 1;
                }
                seen.push(l);
            });
            assert_eq!(seen, (0..=255).rev().collect::<Vec<u8>>());
        }
        // Both paths were exercised.
        assert!(with_holes > 100 && without > 1000, "{with_holes} {without}");
    }

    #[test]
    fn ring_has_one_hole_and_filled_square_none() {
        let ring = [1u8, 1, 1, 1, 0, 1, 1, 1, 1];
        let mut sets = LevelSets::default();
        let mut wanted = [false; 256];
        wanted[1] = true;
        sets.sweep(&ring, 3, 3, &level_counts(&ring), &wanted, |_, s| {
            assert_eq!(s.holes(), 1);
            assert_eq!(s.extent(), [0, 0, 3, 3]);
        });
        sets.sweep(&[1; 9], 3, 3, &level_counts(&[1; 9]), &wanted, |_, s| {
            assert_eq!(s.holes(), 0);
            let c: Vec<_> = s.components().collect();
            assert_eq!((c.len(), c[0].area2), (1, 8));
        });
    }
}
