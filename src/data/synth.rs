//! A built-in synthetic WSOL dataset, so the whole pipeline can be trained and scored
//! without downloading anything.
//!
//! Each image holds one object whose *shape* is the class, drawn at a random scale,
//! position, rotation, mirror and colour over a cluttered background (smooth colour
//! field, pixel noise, stroke / dot / arc fragments in the same colour distribution).
//! Nothing but the object's own silhouette tells the class, so a classifier has to look
//! at the object, which is what makes its CAM worth scoring.
//!
//! Output depends only on (seed, split, index): every random draw comes from a per-image
//! ChaCha8 stream and the geometry avoids libm trigonometry (rotations are sampled as
//! unit vectors, polygon vertices use sqrt-only constants), so bytes match across machines.

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::metadata::{write_split, Sample, SplitMetadata};
use super::{rng_from, split_tag};
use wsol_eval::fs::atomic_write;

pub struct SynthOptions {
    pub num_classes: usize,
    pub train: usize,
    pub val: usize,
    pub test: usize,
    /// Side of the square images in pixels.
    pub size: u32,
    pub seed: u64,
    /// Annotate val and test with masks instead of boxes, as OpenImages30k: each image's
    /// object mask `<split>/<index>_mask.png` and, as its ignore region, the pixels the
    /// object only partly covers (`<split>/<index>_ignore.png`); train gets labels only.
    pub masks: bool,
    /// The cluttered scene (colour-field background, fragments, pixel noise, a random
    /// object colour); without it the same objects (the same boxes) are drawn white on
    /// black, an easier task for models that learn slowly from scratch.
    pub clutter: bool,
}

/// Class k is the k-th shape; the most distinct shapes come first so small
/// `num_classes` give an easy task.
pub const SHAPES: [&str; 12] = [
    "disk", "square", "triangle", "plus", "ring", "star", "ellipse", "l_shape", "arrow", "crescent", "hexagon",
    "rhombus",
];

/// Smallest side at which the thinnest shape parts (ring, L bars) stay a few pixels wide.
pub const MIN_SIZE: u32 = 32;

pub fn class_names(num_classes: usize) -> Vec<String> {
    (0..num_classes).map(|k| SHAPES.get(k).map_or_else(|| format!("class{k}"), |s| s.to_string())).collect()
}

/// Writes `<image_root>/<split>/<index:05>.png` for train/val/test, their metadata under
/// `metadata_root` (ids `<split>/<index:05>.png`, boxes for every split), and
/// `<metadata_root>/class_names.txt` (line k = name of class k). Splits of size 0 are
/// not written. Metadata goes last, so an interrupted run leaves no split that lists
/// missing images.
pub fn generate(image_root: &Path, metadata_root: &Path, opts: &SynthOptions) -> Result<()> {
    if opts.num_classes == 0 || opts.num_classes > SHAPES.len() {
        bail!(
            "synthetic data: num_classes {} not supported: expected 1..={} (shapes: {})",
            opts.num_classes,
            SHAPES.len(),
            SHAPES.join(", ")
        );
    }
    if !(MIN_SIZE..=4096).contains(&opts.size) {
        bail!("synthetic data: size {} not supported: expected {MIN_SIZE}..=4096 pixels", opts.size);
    }
    for (split, count) in [("train", opts.train), ("val", opts.val), ("test", opts.test)] {
        if count == 0 {
            continue;
        }
        let dir = image_root.join(split);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let labels = balanced_labels(opts.num_classes, count, opts.seed, split);
        let with_masks = opts.masks && split != "train";
        let samples = labels
            .par_iter()
            .enumerate()
            .map(|(i, &label)| {
                let mut rng = rng_from(&[opts.seed, split_tag(split), i as u64]);
                let r = render(label, opts.size, &mut rng, opts.clutter);
                let name = format!("{i:05}.png");
                let path = dir.join(&name);
                let mut png = Vec::new();
                r.image
                    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                    .with_context(|| format!("encoding {}", path.display()))?;
                std::fs::write(&path, png).with_context(|| format!("cannot write {}", path.display()))?;
                // As OpenImages30k, a mask dataset's train split has labels only.
                let boxes = if with_masks {
                    write_masks(&dir, i, &r.coverage, opts.size)?;
                    Vec::new()
                } else if opts.masks {
                    Vec::new()
                } else {
                    vec![r.bbox.map(f64::from)]
                };
                Ok(Sample { image_id: format!("{split}/{name}"), label, size: (opts.size, opts.size), boxes })
            })
            .collect::<Result<Vec<_>>>()?;
        // A split without boxes gets no localization.txt from write_split; the mask one
        // follows.
        let ids: Vec<String> = samples.iter().map(|s| s.image_id.clone()).collect();
        write_split(metadata_root, &SplitMetadata { split: split.to_string(), samples })?;
        if with_masks {
            let mut loc = String::new();
            for (i, id) in ids.iter().enumerate() {
                loc += &format!("{},{split}/{i:05}_mask.png,{split}/{i:05}_ignore.png\n", id);
            }
            atomic_write(&metadata_root.join(split).join(super::metadata::LOCALIZATION), loc.as_bytes())?;
        }
    }
    let names = class_names(opts.num_classes).join("\n") + "\n";
    atomic_write(&metadata_root.join("class_names.txt"), names.as_bytes())
}

/// The object mask (coverage >= half) and the ignore mask (partly covered pixels) as
/// 8-bit gray PNGs, 255 inside.
fn write_masks(dir: &Path, index: usize, coverage: &[u8], size: u32) -> Result<()> {
    for (suffix, inside) in [("mask", (HALF..=u8::MAX)), ("ignore", (1..=HALF - 1))] {
        let pixels: Vec<u8> = coverage.iter().map(|c| if inside.contains(c) { 255 } else { 0 }).collect();
        let img = image::GrayImage::from_raw(size, size, pixels).expect("size x size coverage");
        let path = dir.join(format!("{index:05}_{suffix}.png"));
        img.save(&path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Exactly balanced classes (counts differ by at most one), in a seeded random order.
pub(super) fn balanced_labels(num_classes: usize, n: usize, seed: u64, split: &str) -> Vec<usize> {
    let mut labels: Vec<usize> = (0..n).map(|i| i % num_classes).collect();
    labels.shuffle(&mut rng_from(&[seed, split_tag(split), u64::MAX]));
    labels
}

pub struct Rendered {
    pub image: RgbImage,
    /// Tight inclusive box `[x0, y0, x1, y1]` of the object mask.
    pub bbox: [u32; 4],
    /// Per-pixel object coverage in sixteenths (4x4 supersampling); the object mask is
    /// coverage >= 8, i.e. pixels at least half covered.
    pub coverage: Vec<u8>,
}

const SS: usize = 4;
const HALF: u8 = (SS * SS / 2) as u8;

/// Renders one sample. With `clutter == false` the same geometry (same RNG draws first)
/// is drawn white on black without noise, which the tests use to check the box.
pub fn render(class: usize, size: u32, rng: &mut ChaCha8Rng, clutter: bool) -> Rendered {
    let side = size as f64;
    let radius = rng.random_range(0.45..0.8) * side / 2.0;
    let cx = rng.random_range(radius + 1.0..side - radius - 1.0);
    let cy = rng.random_range(radius + 1.0..side - radius - 1.0);
    let obj = Frame::random(cx, cy, radius, rng);
    let k = 1.0 / area_scale(class);
    let coverage = obj.coverage(size, |u, v| inside(class, u * k, v * k));

    let n = size as usize;
    let mut bbox = [u32::MAX, u32::MAX, 0, 0];
    for (i, _) in coverage.iter().enumerate().filter(|(_, &c)| c >= HALF) {
        let (x, y) = ((i % n) as u32, (i / n) as u32);
        bbox = [bbox[0].min(x), bbox[1].min(y), bbox[2].max(x), bbox[3].max(y)];
    }

    let mut img: Vec<[f64; 3]>;
    let colour;
    if clutter {
        img = background(size, rng);
        colour = contrasting_colour(&img, size, (cx, cy, radius), rng);
        let keep_out = [cx - radius - 2.0, cy - radius - 2.0, cx + radius + 2.0, cy + radius + 2.0];
        for _ in 0..rng.random_range(2..=4) {
            distractor(&mut img, size, keep_out, rng);
        }
    } else {
        img = vec![[0.0; 3]; n * n];
        colour = [255.0; 3];
    }
    blend(&mut img, &coverage, colour);
    let image = RgbImage::from_fn(size, size, |x, y| {
        let p = img[y as usize * n + x as usize];
        let mut px = [0u8; 3];
        for c in 0..3 {
            let noise = if clutter { (rng.random_range(-6..=6) + rng.random_range(-6..=6)) as f64 } else { 0.0 };
            px[c] = (p[c] + noise).round().clamp(0.0, 255.0) as u8;
        }
        Rgb(px)
    });
    Rendered { image, bbox, coverage }
}

/// Maps pixel coordinates into a shape's unit frame (the shape fits the unit disk).
struct Frame {
    cx: f64,
    cy: f64,
    r: f64,
    cos: f64,
    sin: f64,
    mirror: bool,
}

impl Frame {
    fn random(cx: f64, cy: f64, r: f64, rng: &mut ChaCha8Rng) -> Self {
        let (cos, sin) = unit_vector(rng);
        Frame { cx, cy, r, cos, sin, mirror: rng.random_bool(0.5) }
    }

    fn local(&self, x: f64, y: f64) -> (f64, f64) {
        let (dx, dy) = ((x - self.cx) / self.r, (y - self.cy) / self.r);
        let u = self.cos * dx + self.sin * dy;
        let v = -self.sin * dx + self.cos * dy;
        (if self.mirror { -u } else { u }, v)
    }

    /// Anti-aliasing by 4x4 supersampling of the pixels under the frame's disk.
    fn coverage(&self, size: u32, inside: impl Fn(f64, f64) -> bool) -> Vec<u8> {
        let n = size as usize;
        let mut cov = vec![0u8; n * n];
        let lo = |c: f64| ((c - self.r).floor().max(0.0)) as usize;
        let hi = |c: f64| ((c + self.r).ceil().max(0.0) as usize).min(n);
        for py in lo(self.cy)..hi(self.cy) {
            for px in lo(self.cx)..hi(self.cx) {
                let mut k = 0;
                for sy in 0..SS {
                    for sx in 0..SS {
                        let (x, y) =
                            (px as f64 + (sx as f64 + 0.5) / SS as f64, py as f64 + (sy as f64 + 0.5) / SS as f64);
                        let (u, v) = self.local(x, y);
                        k += inside(u, v) as u8;
                    }
                }
                cov[py * n + px] = k;
            }
        }
        cov
    }
}

/// A uniformly random direction without trigonometry (rejection from the square).
fn unit_vector(rng: &mut ChaCha8Rng) -> (f64, f64) {
    loop {
        let (a, b) = (rng.random_range(-1.0..1.0f64), rng.random_range(-1.0..1.0f64));
        let r2 = a * a + b * b;
        if (0.01..=1.0).contains(&r2) {
            let r = r2.sqrt();
            return (a / r, b / r);
        }
    }
}

/// Linear scale that gives every class the area of the smallest shape (the triangle),
/// so object size says nothing about the class. Without it the classifier learned
/// "much background = triangle" and the triangle's CAM lit up the background (GT-known
/// loc of that class: 2%). Areas are measured once on a fixed 512x512 grid.
fn area_scale(class: usize) -> f64 {
    static SCALES: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let scales = SCALES.get_or_init(|| {
        const G: usize = 512;
        let areas: Vec<f64> = (0..SHAPES.len())
            .map(|c| {
                let cells = (0..G * G)
                    .filter(|i| {
                        let (u, v) = (
                            ((i % G) as f64 + 0.5) / G as f64 * 2.0 - 1.0,
                            ((i / G) as f64 + 0.5) / G as f64 * 2.0 - 1.0,
                        );
                        inside(c, u, v)
                    })
                    .count();
                cells as f64 * 4.0 / (G * G) as f64
            })
            .collect();
        let smallest = areas.iter().cloned().fold(f64::INFINITY, f64::min);
        areas.iter().map(|a| (smallest / a).sqrt()).collect()
    });
    scales[class.min(scales.len() - 1)]
}

fn inside(class: usize, u: f64, v: f64) -> bool {
    let (au, av) = (u.abs(), v.abs());
    let r2 = u * u + v * v;
    let s3 = 3f64.sqrt() / 2.0;
    match class {
        0 => r2 <= 0.95 * 0.95,
        1 => au <= 0.68 && av <= 0.68,
        2 => in_polygon(&[(0.0, -1.0), (s3, 0.5), (-s3, 0.5)], u, v),
        3 => (au <= 0.3 && av <= 0.92) || (av <= 0.3 && au <= 0.92),
        4 => (0.55 * 0.55..=0.95 * 0.95).contains(&r2),
        5 => in_polygon(&star(), u, v),
        6 => (u / 0.95).powi(2) + (v / 0.5).powi(2) <= 1.0,
        7 => ((-0.65..=-0.2).contains(&u) && av <= 0.75) || (au <= 0.65 && (0.3..=0.75).contains(&v)),
        8 => ((-0.95..=0.1).contains(&u) && av <= 0.18) || in_polygon(&[(0.1, -0.55), (0.95, 0.0), (0.1, 0.55)], u, v),
        9 => r2 <= 0.95 * 0.95 && (u - 0.45).powi(2) + v * v > 0.75 * 0.75,
        10 => in_polygon(
            &[
                (0.95, 0.0),
                (0.475, 0.95 * s3),
                (-0.475, 0.95 * s3),
                (-0.95, 0.0),
                (-0.475, -0.95 * s3),
                (0.475, -0.95 * s3),
            ],
            u,
            v,
        ),
        _ => au / 0.95 + av / 0.55 <= 1.0,
    }
}

/// Five-pointed star (outer radius 1, inner 0.42), built by repeated 36-degree turns
/// whose cosine and sine are exact square-root expressions.
fn star() -> [(f64, f64); 10] {
    let c = (1.0 + 5f64.sqrt()) / 4.0;
    let s = (10.0 - 2.0 * 5f64.sqrt()).sqrt() / 4.0;
    let (mut x, mut y) = (0.0, -1.0);
    let mut pts = [(0.0, 0.0); 10];
    for (k, p) in pts.iter_mut().enumerate() {
        let r = if k % 2 == 0 { 1.0 } else { 0.42 };
        *p = (x * r, y * r);
        (x, y) = (c * x - s * y, s * x + c * y);
    }
    pts
}

/// Even-odd rule, so convex and concave outlines alike.
fn in_polygon(pts: &[(f64, f64)], u: f64, v: f64) -> bool {
    let mut inside = false;
    let mut j = pts.len() - 1;
    for i in 0..pts.len() {
        let ((xi, yi), (xj, yj)) = (pts[i], pts[j]);
        if (yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Smooth random colour field: a 4x4 grid of random colours, smoothstep-interpolated,
/// muted towards grey. At full saturation the field drowned the shapes: the tiny demo
/// net stayed near 40% train accuracy after 6 epochs (75% without any clutter).
pub(super) fn background(size: u32, rng: &mut ChaCha8Rng) -> Vec<[f64; 3]> {
    const G: usize = 4;
    const SATURATION: f64 = 0.4;
    let grid: Vec<[f64; 3]> =
        (0..G * G).map(|_| random_colour(rng).map(|c| 128.0 + (c - 128.0) * SATURATION)).collect();
    let n = size as usize;
    let mut img = vec![[0.0; 3]; n * n];
    for y in 0..n {
        let gy = (y as f64 + 0.5) / n as f64 * (G - 1) as f64;
        let (y0, ty) = ((gy as usize).min(G - 2), smooth(gy - (gy as usize).min(G - 2) as f64));
        for x in 0..n {
            let gx = (x as f64 + 0.5) / n as f64 * (G - 1) as f64;
            let (x0, tx) = ((gx as usize).min(G - 2), smooth(gx - (gx as usize).min(G - 2) as f64));
            for c in 0..3 {
                let at = |i: usize, j: usize| grid[(y0 + j) * G + x0 + i][c];
                let top = at(0, 0) * (1.0 - tx) + at(1, 0) * tx;
                let bottom = at(0, 1) * (1.0 - tx) + at(1, 1) * tx;
                img[y * n + x][c] = top * (1.0 - ty) + bottom * ty;
            }
        }
    }
    img
}

fn smooth(t: f64) -> f64 {
    t * t * (3.0 - 2.0 * t)
}

fn random_colour(rng: &mut ChaCha8Rng) -> [f64; 3] {
    [rng.random_range(0.0..255.0), rng.random_range(0.0..255.0), rng.random_range(0.0..255.0)]
}

/// A colour from the shared distribution that stands out from the background at `at`;
/// objects and fragments both use it, so colour and contrast say nothing about the class.
/// Contrast is measured against the mean background at the centre and four points
/// half a radius away, since the colour field varies under large objects.
pub(super) fn contrasting_colour(img: &[[f64; 3]], size: u32, at: (f64, f64, f64), rng: &mut ChaCha8Rng) -> [f64; 3] {
    let n = size as usize;
    let (cx, cy, h) = (at.0, at.1, at.2 / 2.0);
    let mut bg = [0.0; 3];
    for (x, y) in [(cx, cy), (cx - h, cy), (cx + h, cy), (cx, cy - h), (cx, cy + h)] {
        let (x, y) = ((x.max(0.0) as usize).min(n - 1), (y.max(0.0) as usize).min(n - 1));
        (0..3).for_each(|c| bg[c] += img[y * n + x][c] / 5.0);
    }
    let mut best = ([0.0; 3], -1.0);
    for _ in 0..32 {
        let c = random_colour(rng);
        let d: f64 = (0..3).map(|k| (c[k] - bg[k]).abs()).sum();
        if d >= 180.0 {
            return c;
        }
        if d > best.1 {
            best = (c, d);
        }
    }
    best.0
}

/// One clutter fragment that is no class's shape: a short thick stroke, a small dot or
/// a thin partial arc, placed away from the object (`keep_out` box) so the object's
/// silhouette and box stay exact. Skipped when no free spot is found.
fn distractor(img: &mut [[f64; 3]], size: u32, keep_out: [f64; 4], rng: &mut ChaCha8Rng) {
    let side = size as f64;
    let kind = rng.random_range(0..3);
    let extent = match kind {
        0 => rng.random_range(0.06..0.13) * side, // half length of a stroke
        1 => rng.random_range(0.02..0.045) * side,
        _ => rng.random_range(0.06..0.14) * side,
    };
    let spot = (0..20).find_map(|_| {
        let (x, y) = (rng.random_range(0.0..side), rng.random_range(0.0..side));
        let clear = x + extent < keep_out[0]
            || x - extent > keep_out[2]
            || y + extent < keep_out[1]
            || y - extent > keep_out[3];
        clear.then_some((x, y))
    });
    let Some((x, y)) = spot else { return };
    let frame = Frame::random(x, y, extent, rng);
    let coverage = match kind {
        0 => {
            let half_width = rng.random_range(0.18..0.32);
            frame.coverage(size, |u, v| {
                let along = u.clamp(-1.0 + half_width, 1.0 - half_width);
                (u - along).powi(2) + v * v <= half_width * half_width
            })
        }
        1 => frame.coverage(size, |u, v| u * u + v * v <= 1.0),
        _ => {
            let inner = 1.0 - rng.random_range(0.15..0.3);
            // Keep points within an angle of the frame's +u axis: cos(angle) >= limit.
            let limit = rng.random_range(-0.3..0.6);
            frame.coverage(size, move |u, v| {
                let r2 = u * u + v * v;
                r2 <= 1.0 && r2 >= inner * inner && u >= limit * r2.sqrt()
            })
        }
    };
    let colour = contrasting_colour(img, size, (x, y, extent), rng);
    blend(img, &coverage, colour);
}

fn blend(img: &mut [[f64; 3]], coverage: &[u8], colour: [f64; 3]) {
    for (p, &k) in img.iter_mut().zip(coverage) {
        let a = k as f64 / (SS * SS) as f64;
        for c in 0..3 {
            p[c] = p[c] * (1.0 - a) + colour[c] * a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(seed: u64) -> SynthOptions {
        SynthOptions { num_classes: 10, train: 12, val: 0, test: 5, size: 64, seed, masks: false, clutter: true }
    }

    fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for split in ["train", "test"] {
            for e in std::fs::read_dir(root.join(split)).unwrap() {
                let p = e.unwrap().path();
                out.push((p.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn same_seed_same_bytes_other_seed_differs() {
        let d: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        for (dir, seed) in d.iter().zip([7, 7, 8]) {
            generate(dir.path(), &dir.path().join("meta"), &opts(seed)).unwrap();
        }
        let (a, b, c) = (files(d[0].path()), files(d[1].path()), files(d[2].path()));
        assert_eq!(a.len(), 17);
        assert_eq!(a, b);
        assert!(a.iter().zip(&c).all(|(x, y)| x.1 != y.1));
        let meta = |i: usize| std::fs::read_to_string(d[i].path().join("meta/test/localization.txt")).unwrap();
        assert_eq!(meta(0), meta(1));
        assert!(!d[0].path().join("meta/val").exists());
        let m = super::super::read_split(&d[0].path().join("meta"), "test", 10).unwrap();
        assert_eq!(m.samples[3].image_id, "test/00003.png");
        assert!(d[0].path().join(&m.samples[3].image_id).exists());
        let names = std::fs::read_to_string(d[0].path().join("meta/class_names.txt")).unwrap();
        assert_eq!(names.lines().nth(4), Some("ring"));
    }

    /// `clutter: false` draws the same objects: the same boxes, other pixels.
    #[test]
    fn without_clutter_the_boxes_stay() {
        let d: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        for (dir, clutter) in d.iter().zip([true, false]) {
            generate(dir.path(), &dir.path().join("meta"), &SynthOptions { clutter, ..opts(5) }).unwrap();
        }
        let read = |i: usize, f: &str| std::fs::read(d[i].path().join(f)).unwrap();
        assert_eq!(read(0, "meta/test/localization.txt"), read(1, "meta/test/localization.txt"));
        assert_ne!(read(0, "test/00000.png"), read(1, "test/00000.png"));
    }

    #[test]
    fn boxes_are_tight_on_the_drawn_pixels() {
        for class in 0..SHAPES.len() {
            for i in 0..4u64 {
                let seed = [class as u64, i];
                let r = render(class, 64, &mut rng_from(&seed), true);
                let clean = render(class, 64, &mut rng_from(&seed), false);
                // Extent of the at-least-half-covered pixels, read from the clean image.
                let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
                for (x, y, p) in clean.image.enumerate_pixels() {
                    if p[0] >= 128 {
                        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
                    }
                }
                assert_eq!(r.bbox, [x0, y0, x1, y1], "class {class} sample {i}");
                assert!(x0 > 0 && y0 > 0 && x1 < 63 && y1 < 63, "object touches the border");
                assert!((x1 - x0).max(y1 - y0) >= 10, "class {class}: object too small");
            }
        }
    }

    #[test]
    fn classes_are_balanced_and_shapes_distinct() {
        let labels = balanced_labels(7, 100, 3, "train");
        let mut counts = [0; 7];
        labels.iter().for_each(|&l| counts[l] += 1);
        assert!(counts.iter().all(|&c| c == 14 || c == 15), "{counts:?}");
        assert_ne!(labels, balanced_labels(7, 100, 4, "train"));
        // Same frame, different classes: the masks must differ clearly.
        let masks: Vec<Vec<bool>> = (0..SHAPES.len())
            .map(|k| {
                Frame { cx: 32.0, cy: 32.0, r: 20.0, cos: 1.0, sin: 0.0, mirror: false }
                    .coverage(64, |u, v| inside(k, u, v))
                    .iter()
                    .map(|&c| c >= HALF)
                    .collect()
            })
            .collect();
        for a in 0..masks.len() {
            for b in 0..a {
                let diff = masks[a].iter().zip(&masks[b]).filter(|(x, y)| x != y).count();
                assert!(diff > 40, "{} vs {}: {diff} pixels differ", SHAPES[a], SHAPES[b]);
            }
        }
    }

    #[test]
    fn rejects_unsupported_options() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(0);
        o.num_classes = SHAPES.len() + 1;
        let e = generate(dir.path(), dir.path(), &o).unwrap_err().to_string();
        assert!(e.contains("num_classes 13"), "{e}");
        o.num_classes = 3;
        o.size = 16;
        assert!(generate(dir.path(), dir.path(), &o).unwrap_err().to_string().contains("size 16"));
    }
}
