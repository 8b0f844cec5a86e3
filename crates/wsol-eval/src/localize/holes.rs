//! The holes of a level set given as row runs, found without tracing: what the evaluator
//! reads from a hole's border (its box) follows from the hole itself.
//!
//! A hole is a 4-connected background component not reaching the image edge (OpenCV's
//! foreground is 8-connected, its background 4-connected). Its border, as
//! `findContours` traces it, runs through the foreground pixels 4-adjacent to it, all of
//! the enclosing component: a pixel of an island inside the hole lies between hole
//! pixels in every direction. So the border's extent is the hole's extent grown by one
//! pixel on every side (the pixel beyond each extreme hole pixel is such a border
//! pixel, and none lies further out).
//!
//! Holes are labelled over the gaps between runs (union-find, gaps of consecutive rows
//! join when they share a column). A gap before a row's first run or after its last
//! reaches the image edge, and so does any gap of the set's first or last row (the rows
//! beyond are empty): gaps joined to those are outside, the rest are holes.

/// A gap component's statistics, kept at its root.
#[derive(Clone, Copy)]
struct Gap {
    x0: u16,
    x1: u16,
    y0: u16,
    y1: u16,
    outside: bool,
}

/// Reusable buffers for labelling the holes of one level set.
#[derive(Default)]
pub(super) struct Holes {
    /// Gaps between the runs of a row, in raster order: the `i`th gap of row `y` is
    /// `row_base[y - y0] + i`. A parent always has a smaller index.
    parent: Vec<u32>,
    /// Per root: its component's statistics.
    stats: Vec<Gap>,
    row_base: Vec<u32>,
    /// First row of the set last labelled.
    y0: usize,
    /// Inclusive extents (x0, y0, x1, y1) of the hole borders, in no particular order.
    pub borders: Vec<[i32; 4]>,
}

impl Holes {
    /// Labels the holes of the set whose row `y` holds the (first, last) columns `rows[y]`
    /// (sorted, disjoint, maximal), all in rows `y0..y1`; fills [`Holes::borders`].
    pub fn label(&mut self, rows: &[Vec<(u16, u16)>], y0: usize, y1: usize) {
        self.parent.clear();
        self.stats.clear();
        self.row_base.clear();
        self.borders.clear();
        self.y0 = y0;
        for y in y0..y1 {
            let runs = &rows[y];
            let base = self.parent.len() as u32;
            self.row_base.push(base);
            // Rows beyond the set are empty, so the first and last rows' gaps reach the edge.
            let edge = y == y0 || y + 1 == y1;
            for (i, pair) in runs.windows(2).enumerate() {
                self.parent.push(base + i as u32);
                let (x0, x1) = (pair[0].1 + 1, pair[1].0 - 1);
                self.stats.push(Gap { x0, x1, y0: y as u16, y1: y as u16, outside: edge });
            }
            if y > y0 {
                self.join_rows(&rows[y - 1], runs, self.row_base[y - y0 - 1], base);
            }
        }
        for r in 0..self.parent.len() {
            let s = self.stats[r];
            if self.parent[r] as usize == r && !s.outside {
                let [x0, y0, x1, y1] = [s.x0, s.y0, s.x1, s.y1].map(i32::from);
                self.borders.push([x0 - 1, y0 - 1, x1 + 1, y1 + 1]);
            }
        }
    }

    /// Whether the gap after run `i` of row `y` is (part of) a hole; after [`Holes::label`].
    pub fn is_hole(&mut self, y: usize, i: usize) -> bool {
        let g = self.row_base[y - self.y0] + i as u32;
        let r = self.find(g);
        !self.stats[r as usize].outside
    }

    /// Joins the gaps of consecutive rows `above` (gaps from index `a_base`) and `below`
    /// (from `b_base`) that share a column, and marks those meeting the other row's
    /// first or last gap (the whole row when it is empty) as outside.
    fn join_rows(&mut self, above: &[(u16, u16)], below: &[(u16, u16)], a_base: u32, b_base: u32) {
        // The first gap of a row ends before its first run, the last starts after its last.
        let ends = |runs: &[(u16, u16)]| match (runs.first(), runs.last()) {
            (Some(f), Some(l)) => (f.0 as i32, l.1 as i32),
            _ => (i32::MAX, i32::MIN),
        };
        let (a_first, a_last) = ends(above);
        let (b_first, b_last) = ends(below);
        let (na, nb) = (above.len().saturating_sub(1), below.len().saturating_sub(1));
        let gap = |runs: &[(u16, u16)], i: usize| (runs[i].1 as i32 + 1, runs[i + 1].0 as i32 - 1);
        for i in 0..na {
            let (s, e) = gap(above, i);
            if s < b_first || e > b_last {
                self.mark_outside(a_base + i as u32);
            }
        }
        let mut j = 0;
        for i in 0..nb {
            let (s, e) = gap(below, i);
            if s < a_first || e > a_last {
                self.mark_outside(b_base + i as u32);
            }
            // Gaps above that end left of this one are done with; the last one that
            // overlaps may also overlap the next gap below.
            while j < na && gap(above, j).1 < s {
                j += 1;
            }
            let mut k = j;
            while k < na && gap(above, k).0 <= e {
                self.union(a_base + k as u32, b_base + i as u32);
                k += 1;
            }
        }
    }

    fn find(&mut self, mut r: u32) -> u32 {
        while self.parent[r as usize] != r {
            let up = self.parent[self.parent[r as usize] as usize];
            self.parent[r as usize] = up;
            r = up;
        }
        r
    }

    fn mark_outside(&mut self, g: u32) {
        let r = self.find(g);
        self.stats[r as usize].outside = true;
    }

    fn union(&mut self, a: u32, b: u32) {
        let (a, b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        let (lo, hi) = (a.min(b), a.max(b));
        self.parent[hi as usize] = lo;
        let from = self.stats[hi as usize];
        let into = &mut self.stats[lo as usize];
        into.x0 = into.x0.min(from.x0);
        into.x1 = into.x1.max(from.x1);
        into.y0 = into.y0.min(from.y0);
        into.y1 = into.y1.max(from.y1);
        into.outside |= from.outside;
    }
}
