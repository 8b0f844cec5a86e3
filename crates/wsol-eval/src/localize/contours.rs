//! Border following (Suzuki & Abe 1985) as OpenCV's `findContours(RETR_TREE,
//! CHAIN_APPROX_SIMPLE)` runs it, reduced to what the evaluator reads from each contour:
//! its bounding rectangle, its polygon area (`cv2.contourArea`) and its position in
//! OpenCV's output order (which decides ties in "largest contour").
//!
//! The scan and the tracer mirror OpenCV's decisions step by step (start conditions,
//! search directions, pixel marking), because later starts depend on earlier marks.
//! Borders get distinct labels here (OpenCV reuses one), which only serves to find each
//! border's parent; every start/marking decision compares against 0, 1 or the sign, so
//! it is the same as OpenCV's.

/// One traced border, in the unpadded image's pixel coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contour {
    /// Inclusive extent of the border pixels.
    pub x_min: i32,
    pub y_min: i32,
    pub x_max: i32,
    pub y_max: i32,
    /// Twice the shoelace area of the traced polygon: exact, and ordered like
    /// `cv2.contourArea` (which is this / 2 in f64).
    pub area2: i64,
    pub is_hole: bool,
}

/// Chain-code steps: 0 = right, then counter-clockwise on screen (2 = up, 4 = left, 6 = down).
const CODE: [(i32, i32); 8] = [(1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1)];

/// Reusable buffers, so a threshold sweep allocates once per image.
#[derive(Default)]
pub struct Tracer {
    img: Vec<i32>,
    stride: usize,
    /// Window origin in the full image.
    offset: (i32, i32),
    found: Vec<Contour>,
    parent: Vec<usize>,
    vertices: Vec<(i32, i32)>,
}

impl Tracer {
    /// Contours of the pixels `q[i]` with `fg(q[i])` (row-major, `w` x `h`), in OpenCV's
    /// output order.
    ///
    /// OpenCV 4+ pads the image with a zero frame, so foreground touching the image edge
    /// still gets a border; we pad the same way.
    pub fn find(&mut self, q: &[u8], w: usize, h: usize, fg: impl Fn(u8) -> bool) -> Vec<Contour> {
        self.find_within(q, w, h, [0, 0, w, h], fg)
    }

    /// As [`Tracer::find`], when every foreground pixel lies in `[x0, y0, x1, y1)`: only
    /// that window is scanned. Same contours, same order (the window keeps raster order
    /// and everything outside it is background), in full-image coordinates.
    pub fn find_within(
        &mut self,
        q: &[u8],
        w: usize,
        h: usize,
        window: [usize; 4],
        fg: impl Fn(u8) -> bool,
    ) -> Vec<Contour> {
        assert_eq!(q.len(), w * h);
        let [x0, y0, x1, y1] = window;
        assert!(x0 <= x1 && x1 <= w && y0 <= y1 && y1 <= h);
        let (cw, ch) = (x1 - x0, y1 - y0);
        let stride = cw + 2;
        self.stride = stride;
        self.offset = (x0 as i32, y0 as i32);
        self.img.clear();
        self.img.resize(stride * (ch + 2), 0);
        for (src, dst) in q[y0 * w..y1 * w].chunks_exact(w).zip(self.img[stride..].chunks_exact_mut(stride)) {
            dst[1..=cw].iter_mut().zip(&src[x0..x1]).for_each(|(d, &v)| *d = fg(v) as i32);
        }
        self.found.clear();
        // Index 0 is the frame (a hole border around everything); borders get labels >= 2.
        self.parent.clear();
        self.parent.push(0);
        for y in 1..=ch {
            let base = y * stride;
            let mut lnbd = 0usize; // the frame
            let mut prev = 0i32;
            let mut x = 1;
            while x < stride {
                // Runs of equal values can neither start a border nor change LNBD.
                let row = &self.img[base..base + stride];
                match row[x..].iter().position(|&v| v != prev) {
                    Some(k) => x += k,
                    None => break,
                }
                let p = row[x];
                // OpenCV decides where the value changes: an outer border starts at a
                // fresh foreground pixel after background; a hole border starts at
                // background after foreground whose right side is still unexamined.
                let is_hole = if prev == 0 && p == 1 {
                    Some(false)
                } else if p == 0 && prev >= 1 {
                    Some(true)
                } else {
                    None
                };
                if let Some(is_hole) = is_hole {
                    let lnbd_is_hole = lnbd == 0 || self.found[lnbd - 1].is_hole;
                    let parent = if lnbd_is_hole == is_hole { self.parent[lnbd] } else { lnbd };
                    let label = self.found.len() as i32 + 2;
                    let c = self.trace(base + x - is_hole as usize, is_hole, label);
                    self.found.push(c);
                    self.parent.push(parent);
                }
                let v = self.img[base + x];
                if v != 0 && v != 1 {
                    lnbd = v.unsigned_abs() as usize - 1;
                }
                prev = v;
                x += 1;
            }
        }
        self.output_order()
    }

    /// As [`Tracer::find_within`] for a set given as its row runs: `runs(y)` are the
    /// (first, last) columns of row `y`'s foreground, left to right and maximal, all in
    /// `window`. Same contours, same order, without the per-pixel work of the scan:
    /// textured maps trace many large levels with holes, where clearing, filling and
    /// scanning the window pixel by pixel was most of the sweep.
    ///
    /// A border can only start at a run's first pixel (outer) or just past its last
    /// (hole): everywhere else the scan sees no 0/1 change. The scan's LNBD at either
    /// point is the last marked (not 0 or 1) pixel left of it; no border starts inside a
    /// run, so the run's marks are final when its end is reached (and background is
    /// never marked).
    pub fn find_runs<'a>(&mut self, runs: impl Fn(usize) -> &'a [(u16, u16)], window: [usize; 4]) -> Vec<Contour> {
        let [x0, y0, x1, y1] = window;
        assert!(x0 <= x1 && y0 <= y1);
        let (cw, ch) = (x1 - x0, y1 - y0);
        let stride = cw + 2;
        self.stride = stride;
        self.offset = (x0 as i32, y0 as i32);
        // Every element is written below, so no clearing pass first.
        self.img.resize(stride * (ch + 2), 0);
        self.img[..stride].fill(0);
        self.img[(ch + 1) * stride..].fill(0);
        for y in 0..ch {
            let row = &mut self.img[(y + 1) * stride..(y + 2) * stride];
            let mut x = 0;
            for &(s, e) in runs(y0 + y) {
                let (a, b) = (s as usize - x0 + 1, e as usize - x0 + 1);
                assert!(x <= a && b <= cw, "runs must be sorted, disjoint and within the window");
                row[x..a].fill(0);
                row[a..=b].fill(1);
                x = b + 1;
            }
            row[x..].fill(0);
        }
        self.found.clear();
        self.parent.clear();
        self.parent.push(0);
        for y in 1..=ch {
            let base = y * stride;
            let mut lnbd = 0usize;
            for &(s, e) in runs(y0 + y - 1) {
                let (a, b) = (base + s as usize - x0 + 1, base + e as usize - x0 + 1);
                if self.img[a] == 1 {
                    self.start(a, false, lnbd);
                }
                // The run's first pixel is marked now (traced just above, or before).
                let mut i = b;
                while i > a && self.img[i] == 1 {
                    i -= 1;
                }
                lnbd = self.img[i].unsigned_abs() as usize - 1;
                if self.img[b] >= 1 {
                    self.start(b, true, lnbd);
                }
            }
        }
        self.output_order()
    }

    /// Traces the border starting at `i0` (the pixel itself for an outer border, the
    /// foreground pixel left of the scan position for a hole), with the scan's LNBD.
    fn start(&mut self, i0: usize, is_hole: bool, lnbd: usize) {
        let lnbd_is_hole = lnbd == 0 || self.found[lnbd - 1].is_hole;
        let parent = if lnbd_is_hole == is_hole { self.parent[lnbd] } else { lnbd };
        let label = self.found.len() as i32 + 2;
        let c = self.trace(i0, is_hole, label);
        self.found.push(c);
        self.parent.push(parent);
    }

    /// Follows one border from `i0`, marking pixels as OpenCV does (negative where the
    /// right neighbour was examined and found background), and measures it.
    fn trace(&mut self, i0: usize, is_hole: bool, nbd: i32) -> Contour {
        let st = self.stride as isize;
        let d: [isize; 8] = [1, 1 - st, -st, -st - 1, -1, st - 1, st, st + 1];
        let delta = |s: usize| d[s & 7];
        let at = |i: usize, s: usize| (i as isize + delta(s)) as usize;
        let mut pt = ((i0 % self.stride) as i32 - 1 + self.offset.0, (i0 / self.stride) as i32 - 1 + self.offset.1);
        self.vertices.clear();

        // Clockwise search for the first neighbour, starting next to the known
        // background pixel (left for outer borders, right for holes).
        let s_first = if is_hole { 0 } else { 4 };
        let mut s = s_first;
        let mut i1;
        loop {
            s = (s + 7) & 7;
            i1 = at(i0, s);
            if self.img[i1] != 0 || s == s_first {
                break;
            }
        }
        if s == s_first {
            // Lone pixel: a one-point contour of area 0.
            self.img[i0] = -nbd;
            self.vertices.push(pt);
        } else {
            let mut i3 = i0;
            let mut prev_s = s ^ 4;
            loop {
                let s_end = s;
                let mut i4 = i3;
                // Counter-clockwise from the previous pixel's direction.
                while s < 15 {
                    s += 1;
                    i4 = at(i3, s);
                    if self.img[i4] != 0 {
                        break;
                    }
                }
                s &= 7;
                if s.wrapping_sub(1) < s_end {
                    self.img[i3] = -nbd;
                } else if self.img[i3] == 1 {
                    self.img[i3] = nbd;
                }
                // CHAIN_APPROX_SIMPLE keeps the points where the direction changes.
                if s != prev_s {
                    self.vertices.push(pt);
                    prev_s = s;
                }
                pt.0 += CODE[s].0;
                pt.1 += CODE[s].1;
                if i4 == i0 && i3 == i1 {
                    break;
                }
                i3 = i4;
                s = (s + 4) & 7;
            }
        }
        measure(&self.vertices, is_hole)
    }

    /// OpenCV links each new border as the *first* child of its parent, then lists the
    /// tree depth-first: so siblings come out in reverse order of discovery (the bottom
    /// blob first), each followed by its own subtree.
    fn output_order(&self) -> Vec<Contour> {
        let n = self.found.len();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
        for label in 1..=n {
            children[self.parent[label]].push(label);
        }
        let mut out = Vec::with_capacity(n);
        let mut stack: Vec<usize> = children[0].clone(); // popped last-discovered first
        while let Some(label) = stack.pop() {
            out.push(self.found[label - 1]);
            stack.extend(children[label].iter().copied());
        }
        out
    }
}

fn measure(vertices: &[(i32, i32)], is_hole: bool) -> Contour {
    let (mut x_min, mut y_min, mut x_max, mut y_max) = (i32::MAX, i32::MAX, i32::MIN, i32::MIN);
    let mut twice = 0i64;
    let mut prev = *vertices.last().expect("a contour has a point");
    for &(x, y) in vertices {
        x_min = x_min.min(x);
        y_min = y_min.min(y);
        x_max = x_max.max(x);
        y_max = y_max.max(y);
        twice += prev.0 as i64 * y as i64 - prev.1 as i64 * x as i64;
        prev = (x, y);
    }
    Contour { x_min, y_min, x_max, y_max, area2: twice.abs(), is_hole }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contours(rows: &[&str]) -> Vec<Contour> {
        let h = rows.len();
        let w = rows[0].len();
        let px: Vec<u8> = rows.iter().flat_map(|r| r.bytes().map(|b| (b == b'#') as u8)).collect();
        Tracer::default().find(&px, w, h, |v| v == 1)
    }

    #[test]
    fn lone_pixel_has_zero_area() {
        let c = contours(&["...", ".#.", "..."]);
        assert_eq!(c, vec![Contour { x_min: 1, y_min: 1, x_max: 1, y_max: 1, area2: 0, is_hole: false }]);
    }

    #[test]
    fn square_area_is_polygon_not_pixel_count() {
        // 3x3 block: polygon through pixel centres is 2x2 = 4.
        let c = contours(&["###", "###", "###"]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].area2, 8);
        assert_eq!((c[0].x_min, c[0].y_min, c[0].x_max, c[0].y_max), (0, 0, 2, 2));
    }

    #[test]
    fn ring_has_outer_then_hole() {
        let c = contours(&["#####", "#...#", "#...#", "#####"]);
        assert_eq!(c.len(), 2);
        assert!(!c[0].is_hole && c[1].is_hole);
        assert_eq!(c[0].area2, 2 * 12);
        // The hole border runs through the inner ring pixels.
        assert_eq!((c[1].x_min, c[1].y_min, c[1].x_max, c[1].y_max), (0, 0, 4, 3));
    }

    #[test]
    fn siblings_come_out_bottom_first() {
        let c = contours(&["#..", "...", "..#"]);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].x_min, c[0].y_min), (2, 2));
        assert_eq!((c[1].x_min, c[1].y_min), (0, 0));
    }

    #[test]
    fn diagonal_pixels_are_one_region() {
        let c = contours(&["#..", ".#.", "..#"]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].area2, 0);
        assert_eq!((c[0].x_max, c[0].y_max), (2, 2));
    }
}
