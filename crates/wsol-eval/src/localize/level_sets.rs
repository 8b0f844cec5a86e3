//! The connected components of the superlevel sets `q >= l` of a quantized map, level
//! by level from the top, kept as row runs rather than pixels. A run is born at a row's
//! peak (a plateau with lower neighbours) and only grows and merges with its neighbours
//! as the level falls, so each row keeps its runs from one level to the next and extends
//! them by a few pixels; the runs of consecutive rows are then labelled with union-find
//! over components (a run under a lone run it touches joins it without a search).
//! Smooth maps have about one run per row, so a level costs about its number of rows,
//! and a level where the set is one chain of single touching runs costs only its new
//! rows (the others grow later, when it stops being one). Below a level that was one
//! component without holes, a level is first checked for being one too while growing
//! only the rows where something can change ([`LevelSets::grow_topology`]); then its box
//! is the set's extent. Only levels of several components or with holes grow and label
//! every row. (A pixel-by-pixel union-find
//! over all levels cost ~20 ns per pixel, mostly cache misses; packing every row of
//! every level into bit masks ~50 ns per row.)
//!
//! For a set without holes (each component has exactly one border, its outer one):
//! - the border's bounding rectangle is the component's pixel extent;
//! - its `contourArea` (polygon through pixel centres, 8-connected) is the sum over the
//!   2x2 pixel windows of the component of 1 (4 pixels set) or 1/2 (3 set), each window
//!   counted at a run of its lower row ([`LevelSets::label`]);
//! - OpenCV lists sibling borders in reverse order of discovery, i.e. by the raster index
//!   of each component's first pixel, descending.
//!
//! Holes come from the Euler number of the run graph: runs are contractible, two runs of
//! consecutive rows that touch (8-connected) meet in a segment or a corner, and no three
//! runs meet, so components - holes = runs - touching pairs. Levels with holes are traced,
//! or (for callers that take the boxes in any order, [`LevelSets::set_resolve_holes`])
//! resolved without tracing: their holes labelled from the gaps between runs
//! ([`Holes`]), and their outer borders' areas taken from the set with its holes filled,
//! which has the same outer borders and none inside.

use std::ops::Range;

use super::holes::Holes;

/// One component of a superlevel set.
#[derive(Clone, Copy, Debug)]
pub struct Component {
    /// Raster index (`y * w + x`) of its first pixel: OpenCV's discovery order.
    pub first: u32,
    /// Inclusive pixel extent.
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
    /// Twice its border's polygon area, as [`super::contours::Contour::area2`]; not
    /// computed (`None`) when the component is the whole set.
    pub area2: Option<u32>,
}

/// A component's statistics while it is labelled, kept at its root (born with the
/// component's first pixel, and so its first row).
#[derive(Clone, Copy)]
struct Stats {
    first: u32,
    x0: u16,
    x1: u16,
    y1: u16,
    area2: u32,
}

/// A row's local maximum: the plateau `a..=b` of row `y` at level `v`, whose neighbours
/// are lower (or the row's end). Every run is born at one.
#[derive(Clone, Copy)]
struct Peak {
    v: u8,
    y: u16,
    a: u16,
    b: u16,
}

/// Union-find over the current level's components, and the component of each run of
/// the rows being labelled: per-run entries were most of labelling's stores.
#[derive(Default)]
struct Forest {
    /// Components in order of birth, i.e. of their first pixel; a parent always has a
    /// smaller index, so a root is its merged set's first-born.
    parent: Vec<u32>,
    /// Per root: its component's statistics.
    stats: Vec<Stats>,
    /// Component of each run labelled so far, in raster order.
    of_run: Vec<u32>,
}

impl Stats {
    /// Takes in run `s..=e` of row `y`, below its first row, adding `area2` under it.
    fn add_run(&mut self, s: u16, e: u16, y: usize, area2: u32) {
        self.x0 = self.x0.min(s);
        self.x1 = self.x1.max(e);
        self.y1 = y as u16;
        self.area2 += area2;
    }
}

impl Forest {
    fn find(&mut self, mut r: u32) -> u32 {
        while self.parent[r as usize] != r {
            let up = self.parent[self.parent[r as usize] as usize];
            self.parent[r as usize] = up;
            r = up;
        }
        r
    }

    /// Joins two roots under the earlier one, which takes the other's statistics.
    fn union_roots(&mut self, a: u32, b: u32) -> u32 {
        if a == b {
            return a;
        }
        let (lo, hi) = (a.min(b), a.max(b));
        self.parent[hi as usize] = lo;
        let from = self.stats[hi as usize];
        let into = &mut self.stats[lo as usize];
        into.x0 = into.x0.min(from.x0);
        into.x1 = into.x1.max(from.x1);
        into.y1 = into.y1.max(from.y1);
        into.area2 += from.area2;
        lo
    }
}

/// Reusable buffers for [`LevelSets::sweep`].
#[derive(Default)]
pub struct LevelSets {
    /// Per row, its runs (first, last column) at the current level, left to right.
    rows: Vec<Vec<(u16, u16)>>,
    peaks: Vec<Peak>,
    sorted_peaks: Vec<Peak>,
    forest: Forest,
    components: Vec<Component>,
    /// The map with [`PAD`] zero bytes before and [`TRAIL`] after, for growth and peaks.
    padded: Vec<u8>,
    /// Holes of the current set.
    holes: i64,
    /// Extent of the current set: x0, y0, x1, y1 (exclusive).
    extent: [usize; 4],
    /// Whether levels with holes get [`LevelSets::hole_borders`] and
    /// [`LevelSets::outer_components`].
    resolve_holes: bool,
    hole_labels: Holes,
    /// Per row, the runs of the set with its holes filled.
    filled: Vec<Vec<(u16, u16)>>,
    outer: Vec<Component>,
    /// Components of the runs of the row above and of the row being labelled, for
    /// [`LevelSets::grow_topology`].
    ids: [Vec<u32>; 2],
    /// Levels resolved by [`LevelSets::grow_topology`] (not one chain), and the rows it
    /// left lazy: the tests check that they are exercised.
    #[cfg(test)]
    topology_counts: (usize, usize),
    /// Levels with holes whose largest contour needed the filled set labelled.
    #[cfg(test)]
    filled_relabels: usize,
}

impl LevelSets {
    /// Labels the superlevel sets of `q` (row-major `w` x `h`) and calls `at_level(l, self)`
    /// for each `l` with `wanted[l]`, from the highest level down.
    pub fn sweep(&mut self, q: &[u8], w: usize, h: usize, wanted: &[bool; 256], mut at_level: impl FnMut(u8, &Self)) {
        assert_eq!(q.len(), w * h);
        assert!(w < u16::MAX as usize && h < u16::MAX as usize && w * h < u32::MAX as usize);
        let mut padded = std::mem::take(&mut self.padded);
        padded.clear();
        padded.extend_from_slice(&[0; PAD]);
        padded.extend_from_slice(q);
        padded.extend_from_slice(&[0; TRAIL]);
        let lowest = wanted.iter().position(|&b| b).unwrap_or(256).min(255) as u8;
        self.find_peaks(&padded, w, h, lowest);
        self.rows.resize_with(h, Vec::new);
        self.rows.iter_mut().for_each(Vec::clear);
        let extent_at = level_extents(q, w);
        let mut e = [usize::MAX, usize::MAX, 0, 0];
        let mut born = 0;
        // Whether the last wanted level's set was one chain of touching single runs, and
        // whether it was one component without holes.
        let (mut chain, mut simple) = (false, true);
        for level in (0..256usize).rev() {
            let a = extent_at[level];
            e = [e[0].min(a[0]), e[1].min(a[1]), e[2].max(a[2]), e[3].max(a[3])];
            if !wanted[level] {
                continue;
            }
            // Runs born since the last wanted level. A peak lower than that level lies
            // outside every run and one pixel clear of it (its neighbours are lower still).
            let new = born;
            while let Some(p) = self.peaks.get(born).filter(|p| p.v as usize >= level) {
                let runs = &mut self.rows[p.y as usize];
                let at = runs.partition_point(|r| r.0 < p.a);
                runs.insert(at, (p.a, p.b));
                born += 1;
            }
            let [_, last_y0, _, last_y1] = std::mem::replace(&mut self.extent, e);
            let l = level as u8;
            chain = chain && self.extends_chain(&padded, w, l, new..born, (last_y0, last_y1));
            // Below a level of one component without holes, the next is most often one
            // too: first try to show that without growing every row. Where that fails
            // (or the level above was not simple), grow every row and label them.
            let mut one = chain;
            if !chain && simple {
                if let Some(is_chain) = self.grow_topology(&padded, w, l) {
                    (chain, one) = (is_chain, true);
                    #[cfg(test)]
                    {
                        self.topology_counts.0 += !is_chain as usize;
                    }
                }
            }
            if !one {
                chain = self.grow(&padded, w, l);
                one = chain;
            }
            if one {
                self.single(w);
                simple = true;
            } else {
                self.label(w);
                if self.holes != 0 && self.resolve_holes {
                    self.resolve(w);
                }
                simple = self.holes == 0 && self.components.len() == 1;
            }
            at_level(l, self);
        }
        self.padded = padded;
    }

    /// Grows every row's runs to level `l` (`q` is the map with [`PAD`] bytes either
    /// side), from whatever earlier level each was left at. Returns whether each row of
    /// the extent holds one run touching the one above: then the set is one component
    /// without holes.
    fn grow(&mut self, q: &[u8], w: usize, l: u8) -> bool {
        let [_, y0, _, y1] = self.extent;
        // The run of the row above; the first row's "above" touches anything.
        let (mut simple, mut above) = (true, (0u16, u16::MAX - 1));
        for y in y0..y1.max(y0) {
            let runs = &mut self.rows[y];
            if let [(s, e)] = runs.as_mut_slice() {
                // One run, the common case: nothing can merge.
                *s = grow_left(q, PAD + y * w, *s as usize, l) as u16;
                *e = grow_right(q, PAD + y * w, w, *e as usize, l) as u16;
                simple &= touches(above, (*s, *e));
                above = (*s, *e);
            } else {
                grow_runs(runs, q, w, y, l);
                simple = false;
            }
        }
        simple && y1 > y0
    }

    /// Whether the set at level `l` is one component without holes, found while growing
    /// only the rows whose growth can change that: `Some(is_chain)` if it is (then
    /// `is_chain` says whether it is one chain of touching single runs, as [`Self::grow`]
    /// returns), `None` if not. A row of one run that touches the one run of the row
    /// above (grown) and of the row below (as left at an earlier level) is left as it is
    /// ("lazy"): growth only extends runs, so it keeps those touches and can make no
    /// other (its neighbours hold one run each), and it keeps one run (every run born
    /// since is in the rows already, see [`Self::sweep`]). The run graph (runs, and the
    /// pairs of consecutive rows' runs that touch) is then the level's, so its components
    /// are the set's and, with its Euler number (runs - touching pairs, see the module
    /// notes), its holes. Smooth maps' sets are mostly such rows: their growth and
    /// labelling were most of a sweep where the set is not one chain.
    fn grow_topology(&mut self, q: &[u8], w: usize, l: u8) -> Option<bool> {
        let [_, y0, _, y1] = self.extent;
        if y1 <= y0 {
            return None;
        }
        let LevelSets { rows, forest: f, ids: [ids_above, ids_row], .. } = self;
        f.parent.clear();
        ids_above.clear();
        // Components (births - merges), runs, touching pairs; whether one chain so far.
        let (mut comps, mut runs, mut touching, mut chain) = (0i64, 0i64, 0i64, true);
        // The run of the row above and its component, where that row holds one run.
        let mut above_one: Option<((u16, u16), u32)> = None;
        let mut y = y0;
        while y < y1 {
            if let &[mut run] = rows[y].as_slice() {
                if let Some((_, id)) = above_one.filter(|&(a, _)| touches(a, run)) {
                    // Rows `y..y + lazy` are lazy: each touches the row above, and the row
                    // below holds one run touching it. The first that is not (it touches
                    // the row above as they were, and still once grown) ends the stretch;
                    // all join the component above, without a search.
                    let mut lazy = 0;
                    while y + lazy + 1 < y1 {
                        match rows[y + lazy + 1].as_slice() {
                            &[b] if touches(run, b) => (run, lazy) = (b, lazy + 1),
                            _ => break,
                        }
                    }
                    y += lazy;
                    let row_at = PAD + y * w;
                    run = (
                        grow_left(q, row_at, run.0 as usize, l) as u16,
                        grow_right(q, row_at, w, run.1 as usize, l) as u16,
                    );
                    rows[y][0] = run;
                    #[cfg(test)]
                    {
                        self.topology_counts.1 += lazy;
                    }
                    let n = lazy as i64 + 1;
                    (runs, touching, above_one) = (runs + n, touching + n, Some((run, id)));
                    y += 1;
                    continue;
                }
                let row_at = PAD + y * w;
                run = (
                    grow_left(q, row_at, run.0 as usize, l) as u16,
                    grow_right(q, row_at, w, run.1 as usize, l) as u16,
                );
                rows[y][0] = run;
                if let Some((a, id)) = above_one {
                    if touches(a, run) {
                        (runs, touching, above_one) = (runs + 1, touching + 1, Some((run, id)));
                        y += 1;
                        continue;
                    }
                }
            } else if !rows[y].is_empty() {
                grow_runs(&mut rows[y], q, w, y, l);
            }
            let (done, rest) = rows.split_at(y);
            let row = &rest[0];
            chain &= y == y0 && row.len() == 1;
            runs += row.len() as i64;
            let above: &[(u16, u16)] = if y > y0 { &done[y - 1] } else { &[] };
            let one_id;
            let above_ids: &[u32] = match above_one {
                Some((_, id)) => {
                    one_id = [id];
                    &one_id
                }
                None => ids_above,
            };
            ids_row.clear();
            let mut j = 0;
            for &(s, e) in row {
                while j < above.len() && above[j].1 + 1 < s {
                    j += 1;
                }
                let mut k = j;
                let mut root: Option<u32> = None;
                while k < above.len() && above[k].0 <= e + 1 {
                    let other = f.find(above_ids[k]);
                    root = Some(match root {
                        Some(a) if a != other => {
                            // Merge under the earlier-born root, as `union_roots` does.
                            let (lo, hi) = (a.min(other), a.max(other));
                            f.parent[hi as usize] = lo;
                            comps -= 1;
                            lo
                        }
                        _ => other,
                    });
                    k += 1;
                }
                touching += (k - j) as i64;
                let id = root.unwrap_or_else(|| {
                    comps += 1;
                    f.parent.push(f.parent.len() as u32);
                    f.parent.len() as u32 - 1
                });
                ids_row.push(id);
            }
            above_one = match row.as_slice() {
                &[run] => Some((run, ids_row[0])),
                _ => None,
            };
            std::mem::swap(ids_above, ids_row);
            y += 1;
        }
        // Holes = components - (runs - touching pairs).
        (comps == 1 && runs - touching == 1).then_some(chain)
    }

    /// Whether the set at level `l` is still one chain of touching single runs, given
    /// that it was at the last wanted level (rows `last_y0..last_y1`) and that `peaks[new]`
    /// were born since. Rows of a chain keep one run (runs are born only at peaks, and
    /// a run cannot split) and keep touching (runs only grow), so only new rows need a
    /// look: each must hold one new peak, and they must continue the chain above or
    /// below it. Grows just those rows and the chain's end rows; the others stay at an
    /// earlier level until the set stops being a chain (growth is the same from any
    /// earlier level). Most levels of a smooth map are chains; skipping their growth
    /// took 15-20% off a sweep.
    fn extends_chain(
        &mut self,
        q: &[u8],
        w: usize,
        l: u8,
        new: Range<usize>,
        (last_y0, last_y1): (usize, usize),
    ) -> bool {
        let [_, y0, _, y1] = self.extent;
        // Every new peak lies in the extent. Each alone in its row (so none in a row of
        // the chain, which would now hold two runs), as many as the new rows: one each.
        if new.len() != (last_y0 - y0) + (y1 - last_y1) {
            return false;
        }
        if self.peaks[new].iter().any(|p| self.rows[p.y as usize].len() != 1) {
            return false;
        }
        for y in (y0..=last_y0).chain(last_y1 - 1..y1) {
            let (s, e) = self.rows[y][0];
            self.rows[y][0] =
                (grow_left(q, PAD + y * w, s as usize, l) as u16, grow_right(q, PAD + y * w, w, e as usize, l) as u16);
        }
        let joined = |y: usize| touches(self.rows[y - 1][0], self.rows[y][0]);
        (y0 + 1..=last_y0).all(joined) && (last_y1..y1).all(joined)
    }

    /// The set as its one component, whose area is not needed (there is nothing to
    /// compare it with).
    fn single(&mut self, w: usize) {
        let [x0, y0, x1, y1] = self.extent;
        let first = (y0 * w + self.rows[y0][0].0 as usize) as u32;
        let (x0, y0, x1, y1) = (x0 as i32, y0 as i32, x1 as i32 - 1, y1 as i32 - 1);
        self.components.clear();
        self.components.push(Component { first, x0, y0, x1, y1, area2: None });
        self.holes = 0;
    }

    /// Labels the grown runs into [`LevelSets::components`].
    fn label(&mut self, w: usize) {
        let [_, y0, _, y1] = self.extent;
        self.holes = label_rows(&mut self.forest, &self.rows, y0, y1, w, &mut self.components);
    }

    /// For a set with holes: labels them (their borders' extents), and the components of
    /// the set with its holes filled (the outer borders that are not inside a hole, with
    /// their areas). Islands inside holes are left out of those: an island's border lies
    /// strictly inside its hole's, which lies inside the enclosing component's outer
    /// border and comes after it in OpenCV's order, so neither can be the largest.
    fn resolve(&mut self, w: usize) {
        let [_, y0, _, y1] = self.extent;
        self.hole_labels.label(&self.rows, y0, y1);
        debug_assert_eq!(self.hole_labels.borders.len() as i64, self.holes);
        self.outer.clear();
        if let [c] = self.components[..] {
            // The only candidate: its area is not needed.
            self.outer.push(Component { area2: None, ..c });
            return;
        }
        // Filling a component's holes only adds to its windows, so its outer border's area
        // is at least its own; and a border's area is at most its box's (the polygon runs
        // through pixel centres inside it). A component whose own area beats every other
        // one's box is the largest, and is no island (its enclosing component's box would
        // bound it). Usually the map's main region: then nothing needs filling.
        let area = |c: &Component| c.area2.expect("labelled components have areas");
        let bound = |c: &Component| 2 * (c.x1 - c.x0) as u32 * (c.y1 - c.y0) as u32;
        let best = (0..self.components.len()).max_by_key(|&i| area(&self.components[i])).expect("a set with holes");
        let c = self.components[best];
        if self.components.iter().enumerate().all(|(i, d)| i == best || area(&c) > bound(d)) {
            self.outer.push(c);
            return;
        }
        #[cfg(test)]
        {
            self.filled_relabels += 1;
        }
        self.filled.resize_with(self.rows.len(), Vec::new);
        for y in y0..y1 {
            let filled = &mut self.filled[y];
            filled.clear();
            for (i, &(s, e)) in self.rows[y].iter().enumerate() {
                match filled.last_mut() {
                    Some(last) if self.hole_labels.is_hole(y, i - 1) => last.1 = e,
                    _ => filled.push((s, e)),
                }
            }
        }
        let holes = label_rows(&mut self.forest, &self.filled, y0, y1, w, &mut self.outer);
        debug_assert_eq!(holes, 0);
    }

    /// Every row's peaks, highest first.
    fn find_peaks(&mut self, padded: &[u8], w: usize, h: usize, lowest: u8) {
        self.peaks.clear();
        for y in 0..h {
            let at = PAD + y * w;
            let row = &padded[at..at + w];
            for block in (0..w).step_by(64) {
                // Pixels `block..block + 64` and their neighbours, past the row's ends too
                // (the neighbouring rows' pixels, or padding): the row's first and last
                // pixels' masks are set below whatever those are.
                let [mut rises, mut falls, mut flat] = step_masks(&padded[at + block - 1..at + block + 65]);
                let n = (w - block).min(64);
                let valid = if n == 64 { !0 } else { (1u64 << n) - 1 };
                // The row's ends border "minus infinity".
                if block == 0 {
                    rises |= 1;
                }
                if n < 64 || block + 64 == w {
                    falls |= 1 << (n - 1);
                    flat &= !(1 << (n - 1));
                }
                // Single-pixel peaks, then plateaus entered by a rise (followed to their end).
                let mut single = rises & falls & valid;
                while single != 0 {
                    let x = block + single.trailing_zeros() as usize;
                    single &= single - 1;
                    self.peaks.push(Peak { v: row[x], y: y as u16, a: x as u16, b: x as u16 });
                }
                // A plateau is a run of `flat` bits and its end; adding its first bit
                // carries through the run onto that end. Plateaus ending in a fall peak.
                let starts = rises & flat & valid;
                let (sum, past_block) = flat.overflowing_add(starts);
                let mut peak_ends = sum & !flat & falls;
                while peak_ends != 0 {
                    let b = peak_ends.trailing_zeros();
                    peak_ends &= peak_ends - 1;
                    // The plateau's start: the last start before its end.
                    let a = block + 63 - (starts & ((1u64 << b) - 1)).leading_zeros() as usize;
                    let b = block + b as usize;
                    self.peaks.push(Peak { v: row[a], y: y as u16, a: a as u16, b: b as u16 });
                }
                if past_block {
                    // The last plateau goes on into the next block: follow it there,
                    // unless it lies below every wanted level (a map's background is
                    // often one long plateau at 0).
                    let a = block + 63 - starts.leading_zeros() as usize;
                    let v = row[a];
                    if v < lowest {
                        continue;
                    }
                    let b = plateau_end(padded, at, w, a, v);
                    if b + 1 == w || row[b + 1] < v {
                        self.peaks.push(Peak { v, y: y as u16, a: a as u16, b: b as u16 });
                    }
                }
            }
        }
        // Highest first, by counting (a map has about a thousand peaks, of 256 values):
        // peaks of one value go into disjoint places, so their order does not matter.
        let mut start = [0u32; 257];
        self.peaks.iter().for_each(|p| start[255 - p.v as usize + 1] += 1);
        (1..257).for_each(|v| start[v] += start[v - 1]);
        self.sorted_peaks.clear();
        self.sorted_peaks.resize(self.peaks.len(), Peak { v: 0, y: 0, a: 0, b: 0 });
        for &p in &self.peaks {
            let at = &mut start[255 - p.v as usize];
            self.sorted_peaks[*at as usize] = p;
            *at += 1;
        }
        std::mem::swap(&mut self.peaks, &mut self.sorted_peaks);
    }

    /// Holes of the current set (4-connected background not reaching the image edge).
    pub fn holes(&self) -> i64 {
        self.holes
    }

    /// The current set's components, in order of their first pixel.
    pub fn components(&self) -> impl Iterator<Item = &Component> + '_ {
        self.components.iter()
    }

    /// Runs (first, last column) of row `y` of the current set, left to right; only
    /// for a set with holes (a one-chain set, which has none, may keep rows of an
    /// earlier level, see [`LevelSets::extends_chain`]).
    pub fn runs(&self, y: usize) -> &[(u16, u16)] {
        debug_assert!(self.holes != 0);
        &self.rows[y]
    }

    /// Extent of the current set: x0, y0, x1, y1 (exclusive).
    pub fn extent(&self) -> [usize; 4] {
        self.extent
    }

    /// Whether sweeps resolve levels with holes ([`LevelSets::hole_borders`],
    /// [`LevelSets::outer_components`]) for callers that do not trace them.
    pub fn set_resolve_holes(&mut self, on: bool) {
        self.resolve_holes = on;
    }

    /// Inclusive extents (x0, y0, x1, y1) of the current set's hole borders, in no
    /// particular order; only for a set with holes, when resolving them.
    pub fn hole_borders(&self) -> &[[i32; 4]] {
        debug_assert!(self.holes != 0 && self.resolve_holes);
        &self.hole_labels.borders
    }

    /// The candidates for the largest contour of the current set (see
    /// [`LevelSets::resolve`]): its components with their holes filled, with the areas of
    /// their outer borders, in order of their first pixel; or the one component that
    /// bounds alone show to be the largest. Only for a set with holes, when resolving them.
    pub fn outer_components(&self) -> &[Component] {
        debug_assert!(self.holes != 0 && self.resolve_holes);
        &self.outer
    }
}

/// Labels the runs `rows[y0..y1]` top-down (row `y` against row `y - 1`) with union-find
/// over components, keeping each component's statistics at its root; the components go
/// to `out` in order of their first pixel. Returns the number of holes.
fn label_rows(
    f: &mut Forest,
    rows: &[Vec<(u16, u16)>],
    y0: usize,
    y1: usize,
    w: usize,
    out: &mut Vec<Component>,
) -> i64 {
    f.parent.clear();
    f.stats.clear();
    f.of_run.clear();
    // Runs not listed in `of_run` (inside chains), and touching pairs.
    let (mut unlisted, mut touching) = (0, 0);
    // Index of the first run of the row above.
    let mut above_base = 0;
    let mut y = y0;
    while y < y1 {
        // The row above the extent holds no runs.
        let above: &[(u16, u16)] = if y > y0 { &rows[y - 1] } else { &[] };
        let base = f.of_run.len();
        // A chain, the common case: rows of one run, each touching the one above.
        // They all join the component of the run above the first, which is updated
        // in registers and written back once (a store per row made a dependency
        // chain through memory).
        if let (&[run], &[above_run]) = (rows[y].as_slice(), above) {
            if touches(above_run, run) {
                let root = f.find(f.of_run[above_base]);
                let mut c = f.stats[root as usize];
                let (mut prev, mut length) = (above_run, 0);
                while y < y1 {
                    let &[run] = rows[y].as_slice() else { break };
                    if !touches(prev, run) {
                        break;
                    }
                    c.add_run(run.0, run.1, y, area2_under(&[prev], run.0, run.1));
                    (prev, length, y) = (run, length + 1, y + 1);
                }
                f.stats[root as usize] = c;
                // Only the chain's last run is listed, for the row below.
                f.of_run.push(root);
                unlisted += length - 1;
                touching += length;
                above_base = base;
                continue;
            }
        }
        let mut j = 0;
        for &(s, e) in &rows[y] {
            // Runs of the row above that end left of this one's 8-neighbourhood are
            // done with; the first left may also touch the next run of this row.
            while j < above.len() && above[j].1 + 1 < s {
                j += 1;
            }
            let mut k = j;
            let mut root = None;
            while k < above.len() && above[k].0 <= e + 1 {
                let other = f.find(f.of_run[above_base + k]);
                root = Some(root.map_or(other, |a| f.union_roots(a, other)));
                k += 1;
            }
            let id = match root {
                None => {
                    let id = f.parent.len() as u32;
                    f.parent.push(id);
                    f.stats.push(Stats { first: (y * w) as u32 + s as u32, x0: s, x1: e, y1: y as u16, area2: 0 });
                    id
                }
                Some(root) => {
                    touching += k - j;
                    f.stats[root as usize].add_run(s, e, y, area2_under(&above[j..k], s, e));
                    root
                }
            };
            f.of_run.push(id);
        }
        above_base = base;
        y += 1;
    }
    out.clear();
    for (r, &p) in f.parent.iter().enumerate() {
        if p as usize == r {
            let c = &f.stats[r];
            let (x0, y0, x1, y1) = (c.x0 as i32, (c.first as usize / w) as i32, c.x1 as i32, c.y1 as i32);
            out.push(Component { first: c.first, x0, y0, x1, y1, area2: Some(c.area2) });
        }
    }
    let runs = f.of_run.len() + unlisted;
    out.len() as i64 - runs as i64 + touching as i64
}

/// Whether runs of consecutive rows touch (8-connected).
#[inline(always)]
fn touches(above: (u16, u16), run: (u16, u16)) -> bool {
    (above.0 <= run.1 + 1) & (run.0 <= above.1 + 1)
}

/// Twice the polygon area that run `s..=e` adds under the runs `above` it touches (sorted,
/// disjoint, at least one): the 2x2 windows whose lower pixels lie in the run. One across
/// the run's interior adds its upper pixels (2 for 4 set, 1 for 3); one over a run end
/// adds 1 when both upper pixels are set. Sum: twice the upper pixels over the run, minus
/// those over its ends, plus the two end windows. Only the first touching run can cover
/// columns `s - 1` and `s`, only the last `e` and `e + 1`.
fn area2_under(above: &[(u16, u16)], s: u16, e: u16) -> u32 {
    let over: i32 = above.iter().map(|&(ps, pe)| (pe.min(e) as i32 - ps.max(s) as i32 + 1).max(0)).sum();
    let ((fs, fe), (ls, le)) = (above[0], above[above.len() - 1]);
    let (left, first) = ((fs < s) as i32, ((fs <= s) & (s <= fe)) as i32);
    let (last, right) = (((ls <= e) & (e <= le)) as i32, (le > e) as i32);
    (2 * over - first - last + (left & first) + (last & right)) as u32
}

/// Extends the runs of row `y` (`q` is the `w`-wide map padded by [`PAD`]) over the
/// neighbours at `>= l`, merging runs that meet. A run's left end cannot reach the run
/// before it (that one grew right first and stopped at a pixel below `l`), so only right
/// ends merge. Ends move sixteen pixels per compare ([`grow_left`], [`grow_right`] with
/// [`ge_mask16`]): a pixel-by-pixel loop mispredicted its exit at nearly every run end.
fn grow_runs(runs: &mut Vec<(u16, u16)>, q: &[u8], w: usize, y: usize, l: u8) {
    let row = PAD + y * w;
    #[cfg(target_arch = "x86_64")]
    if runs.len() >= MASK_RUNS && w <= 256 && std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX-512BW, checked just above.
        return unsafe { runs_at_level_avx512(&q[row..row + w], l, runs) };
    }
    let (mut kept, mut i) = (0, 0);
    while i < runs.len() {
        let s = grow_left(q, row, runs[i].0 as usize, l);
        let mut e = runs[i].1 as usize;
        i += 1;
        loop {
            e = grow_right(q, row, w, e, l);
            // Grown into the next run: take it over and keep growing from its end.
            if i < runs.len() && runs[i].0 as usize <= e {
                e = e.max(runs[i].1 as usize);
                i += 1;
            } else {
                break;
            }
        }
        runs[kept] = (s as u16, e as u16);
        kept += 1;
    }
    runs.truncate(kept);
}

/// [`grow_runs`] for rows of up to 256 pixels, from the row's mask at `>= l` (four
/// comparisons of 64 pixels) rather than from the runs: every run of the row at level
/// `l` holds one of its peaks at `l` or above, all of which are in `runs` already (see
/// [`LevelSets::sweep`]), so the mask's runs are what growing and merging them gives.
/// Rows of many runs mispredicted growth's exits at most run ends.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,bmi1")]
unsafe fn runs_at_level_avx512(row: &[u8], l: u8, runs: &mut Vec<(u16, u16)>) {
    use std::arch::x86_64::*;
    let (valid, level) = (block_masks(row.len()), _mm512_set1_epi8(l as i8));
    let set: [u64; 4] = std::array::from_fn(|k| {
        // SAFETY: the mask reads only the row's bytes `64k..min(64k + 64, w)`.
        let v = unsafe { _mm512_maskz_loadu_epi8(valid[k], row.as_ptr().add(64 * k) as *const i8) };
        _mm512_mask_cmpge_epu8_mask(valid[k], v, level)
    });
    // The first bit at or after `p` that is set (`flip` 0) or clear (`flip` all ones);
    // bits past the row are clear, so a clear one is always found by bit 256.
    let next = |p: usize, flip: u64| -> Option<usize> {
        let mut k = p / 64;
        let mut bits = (set.get(k)? ^ flip) & (!0u64 << (p % 64));
        while bits == 0 {
            k += 1;
            bits = set.get(k)? ^ flip;
        }
        Some(64 * k + bits.trailing_zeros() as usize)
    };
    runs.clear();
    let mut p = 0;
    while let Some(s) = next(p, 0) {
        let e = next(s, !0).unwrap_or(256);
        runs.push((s as u16, e as u16 - 1));
        p = e;
    }
}

/// The new first column of a run starting at column `s` of the row at `q[row..]`, in a
/// map with [`PAD`] bytes before it (so the 16 bytes left of any pixel exist).
#[inline(always)]
fn grow_left(q: &[u8], row: usize, mut s: usize, l: u8) -> usize {
    while s > 0 {
        let at = row + s;
        let n = ((ge_mask16(&q[at - 16..at], l) as u16).leading_ones() as usize).min(s);
        s -= n;
        if n < 16 {
            break;
        }
    }
    s
}

/// The new last column of a run ending at column `e` of the `w`-wide row at `q[row..]`,
/// in a map with [`PAD`] bytes after it (so the 16 bytes right of any pixel exist).
#[inline(always)]
fn grow_right(q: &[u8], row: usize, w: usize, mut e: usize, l: u8) -> usize {
    while e + 1 < w {
        let at = row + e + 1;
        let n = ((ge_mask16(&q[at..at + 16], l) as u16).trailing_ones() as usize).min(w - 1 - e);
        e += n;
        if n < 16 {
            break;
        }
    }
    e
}

/// Bytes around the map copy that growth reads, so its 16-byte loads need no edge cases.
const PAD: usize = 16;

/// Zero bytes after the padded map: [`LevelSets::find_peaks`] reads 66 bytes from the
/// pixel before each block of 64, past the last row's end.
const TRAIL: usize = 66;

/// Rows of this many runs or more take them from the row's mask ([`runs_at_level_avx512`]):
/// growing each run from where it was is cheaper for rows of one or two (smooth maps at
/// 1000 thresholds took 8% more CPU with masks for every row of two runs or more), the
/// mask for rows of many (upsampled 28x28 maps at 100 thresholds, 6% less).
const MASK_RUNS: usize = 3;

/// For a row of `w <= 256` pixels in four blocks of 64: the bits of each block's pixels.
fn block_masks(w: usize) -> [u64; 4] {
    debug_assert!(w <= 256);
    std::array::from_fn(|k| match w.saturating_sub(64 * k) {
        n if n >= 64 => !0,
        n => (1u64 << n) - 1,
    })
}

/// The last pixel of the plateau at `v` from pixel `a` of the `w`-wide row at
/// `padded[at..]` (the padding after the map lets 16 bytes be read past any pixel).
fn plateau_end(padded: &[u8], at: usize, w: usize, a: usize, v: u8) -> usize {
    let mut x = a;
    loop {
        let n = eq_mask16(&padded[at + x..at + x + 16], v).trailing_ones() as usize;
        x += n;
        if n < 16 || x >= w {
            return x.min(w) - 1;
        }
    }
}

/// Bit `i` set when `block[i] == v`, for the first 16 bytes of `block`.
#[cfg(target_arch = "x86_64")]
fn eq_mask16(block: &[u8], v: u8) -> u32 {
    use std::arch::x86_64::*;
    assert!(block.len() >= 16);
    // SAFETY: SSE2 is always available on x86-64; the unaligned load reads `block[..16]`.
    unsafe {
        _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(block.as_ptr() as *const __m128i), _mm_set1_epi8(v as i8)))
            as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn eq_mask16(block: &[u8], v: u8) -> u32 {
    block[..16].iter().enumerate().fold(0, |m, (i, &u)| m | ((u == v) as u32) << i)
}

/// Bit `i` set when `block[i] >= l`, for the first 16 bytes of `block`.
#[cfg(target_arch = "x86_64")]
fn ge_mask16(block: &[u8], l: u8) -> u32 {
    use std::arch::x86_64::*;
    assert!(block.len() >= 16);
    // SAFETY: SSE2 is always available on x86-64; the unaligned load reads `block[..16]`.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr() as *const __m128i);
        _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(l as i8)), v)) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn ge_mask16(block: &[u8], l: u8) -> u32 {
    block[..16].iter().enumerate().fold(0, |m, (i, &v)| m | ((v >= l) as u32) << i)
}

/// For the 64 pixels `p[1..65]` (`p[0]` and `p[65]` their outer neighbours): bit masks of
/// the pixels above their left neighbour, above their right neighbour, and equal to their
/// right neighbour.
#[cfg(target_arch = "x86_64")]
fn step_masks(p: &[u8]) -> [u64; 3] {
    use std::arch::x86_64::*;
    assert!(p.len() >= 66);
    if std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX-512BW, checked just above; `p` holds 66 bytes.
        return unsafe { step_masks_avx512(p) };
    }
    let mut m = [0u64; 3];
    // SAFETY: SSE2 is always available on x86-64, and every unaligned 16-byte load below
    // ends at or before `p[66]` (checked above).
    unsafe {
        let zero = _mm_setzero_si128();
        let load = |at: usize| _mm_loadu_si128(p.as_ptr().add(at) as *const __m128i);
        let bits = |v: __m128i| _mm_movemask_epi8(v) as u16 as u64;
        for i in 0..4 {
            let (left, cur, right) = (load(16 * i), load(16 * i + 1), load(16 * i + 2));
            // Unsigned a > b  <=>  saturating a - b != 0.
            m[0] |= (!bits(_mm_cmpeq_epi8(_mm_subs_epu8(cur, left), zero)) & 0xffff) << (16 * i);
            m[1] |= (!bits(_mm_cmpeq_epi8(_mm_subs_epu8(cur, right), zero)) & 0xffff) << (16 * i);
            m[2] |= bits(_mm_cmpeq_epi8(cur, right)) << (16 * i);
        }
    }
    m
}

/// [`step_masks`] on 64 lanes: three loads and three comparisons.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn step_masks_avx512(p: &[u8]) -> [u64; 3] {
    use std::arch::x86_64::*;
    assert!(p.len() >= 66);
    // SAFETY: each 64-byte load ends at or before `p[66]` (checked above).
    let load = |at: usize| unsafe { _mm512_loadu_si512(p.as_ptr().add(at) as *const __m512i) };
    let (left, cur, right) = (load(0), load(1), load(2));
    [_mm512_cmpgt_epu8_mask(cur, left), _mm512_cmpgt_epu8_mask(cur, right), _mm512_cmpeq_epu8_mask(cur, right)]
}

#[cfg(not(target_arch = "x86_64"))]
fn step_masks(p: &[u8]) -> [u64; 3] {
    let mut m = [0u64; 3];
    for i in 0..64 {
        let (left, cur, right) = (p[i], p[i + 1], p[i + 2]);
        m[0] |= ((cur > left) as u64) << i;
        m[1] |= ((cur > right) as u64) << i;
        m[2] |= ((cur == right) as u64) << i;
    }
    m
}

/// Per level `l`, the extent [x0, y0, x1, y1) of the pixels at exactly `l`, from row and
/// column maxima (elementwise, so it vectorizes) instead of per-pixel min/max updates.
fn level_extents(q: &[u8], w: usize) -> [[usize; 4]; 256] {
    #[cfg(target_arch = "x86_64")]
    if (1..=256).contains(&w) && std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX-512BW, checked just above.
        return unsafe { level_extents_avx512(q, w) };
    }
    level_extents_any(q, w)
}

fn level_extents_any(q: &[u8], w: usize) -> [[usize; 4]; 256] {
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

/// [`level_extents`] for rows of up to 256 pixels: the column maxima stay in four
/// registers, and each row's maximum is reduced from its four blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn level_extents_avx512(q: &[u8], w: usize) -> [[usize; 4]; 256] {
    use std::arch::x86_64::*;
    let valid = block_masks(w);
    let mut extent = [[usize::MAX, usize::MAX, 0, 0]; 256];
    let mut col = [_mm512_setzero_si512(); 4];
    for (y, row) in q.chunks_exact(w).enumerate() {
        // SAFETY: each mask reads only the row's bytes `64k..min(64k + 64, w)`.
        let v: [__m512i; 4] = std::array::from_fn(|k| unsafe {
            _mm512_maskz_loadu_epi8(valid[k], row.as_ptr().add(64 * k) as *const i8)
        });
        for (c, &v) in col.iter_mut().zip(&v) {
            *c = _mm512_max_epu8(*c, v);
        }
        let m = _mm512_max_epu8(_mm512_max_epu8(v[0], v[1]), _mm512_max_epu8(v[2], v[3]));
        let m = _mm512_max_epu8(m, _mm512_shuffle_i64x2::<0b01_00_11_10>(m, m));
        let m = _mm512_max_epu8(m, _mm512_shuffle_i64x2::<0b10_11_00_01>(m, m));
        let mut x = _mm512_castsi512_si128(m);
        x = _mm_max_epu8(x, _mm_srli_si128::<8>(x));
        x = _mm_max_epu8(x, _mm_srli_si128::<4>(x));
        x = _mm_max_epu8(x, _mm_srli_si128::<2>(x));
        x = _mm_max_epu8(x, _mm_srli_si128::<1>(x));
        let m = (_mm_cvtsi128_si32(x) & 0xff) as usize;
        extent[m][1] = extent[m][1].min(y);
        extent[m][3] = extent[m][3].max(y + 1);
    }
    let mut col_max = [0u8; 256];
    for (k, &c) in col.iter().enumerate() {
        // SAFETY: `col_max` holds 256 bytes.
        unsafe { _mm512_storeu_si512(col_max.as_mut_ptr().add(64 * k) as *mut __m512i, c) };
    }
    for (x, &m) in col_max[..w].iter().enumerate() {
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

    /// Every level of random few-valued maps, and random subsets of the levels (so that
    /// rows left behind while the set is a chain grow across several levels at once):
    /// hole counts, and for hole-free levels the extents, areas and order, equal what
    /// tracing the level finds; for levels with holes, the resolved hole borders' extents
    /// and the largest outer border too.
    #[test]
    fn matches_traced_contours_at_every_level() {
        let mut r = rng(7);
        let mut tracer = Tracer::default();
        let mut sets = LevelSets::default();
        sets.set_resolve_holes(true);
        let (mut with_holes, mut without, mut one_component) = (0, 0, 0);
        for case in 0..400 {
            let q = random_map(&mut r, case);
            let (w, h) = (q[0].len(), q.len());
            let q: Vec<u8> = q.concat();
            let mut some = [false; 256];
            some.iter_mut().for_each(|b| *b = r().is_multiple_of(4));
            for wanted in [[true; 256], some] {
                let mut seen = Vec::new();
                sets.sweep(&q, w, h, &wanted, |l, s| {
                    match check_level(&q, w, h, l, s, &mut tracer) {
                        Checked::Holes => with_holes += 1,
                        Checked::Several => without += 1,
                        Checked::One => (without, one_component) = (without + 1, one_component + 1),
                    }
                    seen.push(l);
                });
                let levels: Vec<u8> = (0..=255).rev().filter(|&l| wanted[l as usize]).collect();
                assert_eq!(seen, levels);
            }
        }
        // Every path was exercised.
        assert!(with_holes > 100 && without > 1000 && one_component > 1000, "{with_holes} {without} {one_component}");
        let (topology, lazy) = sets.topology_counts;
        assert!(topology > 100 && lazy > 1000, "{topology} {lazy}");
        assert!(sets.filled_relabels > 100, "{}", sets.filled_relabels);
    }

    /// What [`check_level`] found at a level.
    enum Checked {
        Holes,
        /// No holes, and components with areas (several, or one among holes).
        Several,
        /// One component without holes, whose area is not computed.
        One,
    }

    /// The level-`l` set `s` of map `q` against tracing it: hole counts, and for a
    /// hole-free level the extents, areas and order of its components; for a level with
    /// holes, the resolved hole borders' extents and the largest outer border.
    fn check_level(q: &[u8], w: usize, h: usize, l: u8, s: &LevelSets, tracer: &mut Tracer) -> Checked {
        let traced = tracer.find(q, w, h, |v| v >= l);
        let holes = traced.iter().filter(|c| c.is_hole).count() as i64;
        assert_eq!(s.holes(), holes, "level {l} of {q:?} ({w}x{h})");
        assert_eq!(s.components().count(), traced.len() - holes as usize);
        if holes == 0 {
            let mut comps: Vec<&Component> = s.components().collect();
            comps.sort_by_key(|c| std::cmp::Reverse(c.first));
            // Areas are computed wherever there are several components.
            assert!(comps.len() == 1 || comps.iter().all(|c| c.area2.is_some()));
            let got: Vec<_> = comps.iter().map(|c| (c.x0, c.y0, c.x1, c.y1, c.area2.map(i64::from))).collect();
            let want: Vec<_> = (traced.iter().zip(&got))
                .map(|(c, g)| (c.x_min, c.y_min, c.x_max, c.y_max, g.4.and(Some(c.area2))))
                .collect();
            // A lone component's first pixel is the set's (several are checked through
            // their order).
            if let [c] = comps[..] {
                assert_eq!(Some(c.first as usize), q.iter().position(|&v| v >= l));
            }
            assert_eq!(got, want, "level {l} of {q:?} ({w}x{h})");
            if comps.len() == 1 && comps[0].area2.is_none() {
                Checked::One
            } else {
                Checked::Several
            }
        } else {
            let mut got = s.hole_borders().to_vec();
            let mut want: Vec<[i32; 4]> =
                traced.iter().filter(|c| c.is_hole).map(|c| [c.x_min, c.y_min, c.x_max, c.y_max]).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "hole borders at level {l} of {q:?} ({w}x{h})");
            // The first contour of largest area, in OpenCV's order.
            let best = traced.iter().rev().max_by_key(|c| c.area2).unwrap();
            let c = s.outer_components().iter().max_by_key(|c| (c.area2, c.first)).unwrap();
            assert_eq!(
                (c.x0, c.y0, c.x1, c.y1),
                (best.x_min, best.y_min, best.x_max, best.y_max),
                "largest at level {l} of {q:?} ({w}x{h})"
            );
            Checked::Holes
        }
    }

    /// A CAM-like map (`w` x `h`, quantized as the evaluator does): Gaussian blobs over a
    /// low-frequency ripple and pixel noise, so that sets are mostly rows of one run with
    /// a few rows of two (bumps, saddles, small rings): the rows the lazy pass of
    /// [`LevelSets::grow_topology`] skips, next to those it must grow.
    fn cam_like(seed: u64, w: usize, h: usize) -> Vec<u8> {
        let mut r = rng(seed | 1);
        let mut unit = move || (r() % 1_000_000) as f64 / 1_000_000.0;
        let blobs: Vec<[f64; 5]> = (0..1 + (unit() * 4.0) as usize)
            .map(|k| {
                let amp = if k == 0 { 1.0 } else { 0.2 + 0.7 * unit() };
                [
                    unit() * w as f64,
                    unit() * h as f64,
                    1.0 + unit() * w as f64 / 3.0,
                    1.0 + unit() * h as f64 / 3.0,
                    amp,
                ]
            })
            .collect();
        let (fx, fy, phase, ripple, noise) =
            (unit() * 0.6, unit() * 0.6, unit() * 6.3, unit() * 0.3, [0.0, 0.003, 0.02][(unit() * 3.0) as usize]);
        let m: Vec<f64> = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f64, (i / w) as f64);
                let b: f64 = blobs
                    .iter()
                    .map(|[cx, cy, sx, sy, a]| {
                        a * (-((x - cx) / sx).powi(2) / 2.0 - ((y - cy) / sy).powi(2) / 2.0).exp()
                    })
                    .sum();
                let bg = ripple * (0.5 + 0.5 * (fx * x + phase).sin() * (fy * y).cos());
                (b + bg + noise * (unit() - 0.5)).max(0.0)
            })
            .collect();
        let (lo, hi) = m.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        m.iter().map(|&v| if hi > lo { ((v - lo) / (hi - lo) * 255.0) as u8 } else { 0 }).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// CAM-like maps, every level or a random subset of them (so that lazy rows are
        /// left behind across several levels, and one-component levels follow levels of
        /// several components): every level equals tracing it.
        #[test]
        fn cam_like_maps_match_traced_contours(
            seed in proptest::prelude::any::<u64>(),
            w in 2usize..64,
            h in 2usize..64,
            every in 1u64..6,
        ) {
            let q = cam_like(seed, w, h);
            let mut wanted = [false; 256];
            let mut r = rng(seed ^ 0x9e37_79b9_7f4a_7c15);
            wanted.iter_mut().for_each(|b| *b = r().is_multiple_of(every));
            let (mut sets, mut tracer) = (LevelSets::default(), Tracer::default());
            sets.set_resolve_holes(true);
            sets.sweep(&q, w, h, &wanted, |l, s| {
                check_level(&q, w, h, l, s, &mut tracer);
            });
        }
    }

    /// The vectorized extents equal the plain ones, for rows of every width up to 256.
    #[test]
    fn level_extents_of_every_width() {
        let mut r = rng(11);
        for w in 1..=256 {
            let h = 1 + (r() % 9) as usize;
            let q: Vec<u8> = (0..w * h).map(|_| (r() % [3, 256][w % 2]) as u8).collect();
            assert_eq!(level_extents(&q, w), level_extents_any(&q, w), "{w}x{h}");
        }
    }

    /// Lazy rows are left on CAM-like maps, and the levels they resolve are checked.
    #[test]
    fn cam_like_maps_leave_rows_lazy() {
        let (mut sets, mut tracer) = (LevelSets::default(), Tracer::default());
        sets.set_resolve_holes(true);
        for seed in 0..40 {
            let q = cam_like(seed, 48, 40);
            sets.sweep(&q, 48, 40, &[true; 256], |l, s| {
                check_level(&q, 48, 40, l, s, &mut tracer);
            });
        }
        let (topology, lazy) = sets.topology_counts;
        assert!(topology > 100 && lazy > 2000, "{topology} {lazy}");
    }

    /// Rows of a random map: few-valued noise of assorted sizes (some rows span several
    /// 64-bit words), or a quantized sum of two Gaussian blobs (rows of single runs).
    fn random_map(r: &mut impl FnMut() -> u64, case: usize) -> Vec<Vec<u8>> {
        let (w, h) = match case % 8 {
            // Wide rows too: over 256 pixels, where the AVX-512 paths step aside.
            0 => (60 + (r() % 260) as usize, 1 + (r() % 6) as usize),
            1 => (20 + (r() % 50) as usize, 10 + (r() % 30) as usize),
            _ => (1 + (r() % 12) as usize, 1 + (r() % 10) as usize),
        };
        if case % 8 == 1 {
            let blobs: Vec<[f64; 3]> =
                (0..2).map(|_| [(r() % w as u64) as f64, (r() % h as u64) as f64, 2.0 + (r() % 8) as f64]).collect();
            return (0..h)
                .map(|y| {
                    (0..w)
                        .map(|x| {
                            let v: f64 = blobs
                                .iter()
                                .map(|[cx, cy, s]| {
                                    (-((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)) / (2.0 * s * s)).exp()
                                })
                                .sum();
                            (v * 127.0) as u8
                        })
                        .collect()
                })
                .collect();
        }
        let levels = 2 + case as u64 % 5;
        (0..h).map(|_| (0..w).map(|_| (r() % levels) as u8 * 40).collect()).collect()
    }

    #[test]
    fn ring_has_one_hole_and_filled_square_none() {
        let ring = [1u8, 1, 1, 1, 0, 1, 1, 1, 1];
        let mut sets = LevelSets::default();
        let mut wanted = [false; 256];
        wanted[1] = true;
        sets.sweep(&ring, 3, 3, &wanted, |_, s| {
            assert_eq!(s.holes(), 1);
            assert_eq!(s.extent(), [0, 0, 3, 3]);
        });
        sets.sweep(&[1; 9], 3, 3, &wanted, |_, s| {
            assert_eq!(s.holes(), 0);
            let c: Vec<_> = s.components().collect();
            assert_eq!((c.len(), c[0].area2), (1, None));
        });
    }
}
