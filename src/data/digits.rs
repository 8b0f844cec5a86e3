//! A WSOL set of real handwriting: MNIST digits on cluttered canvases (`wsol data digits`).
//!
//! Each image holds one digit, scaled and placed at random on a textured colour field
//! with stroke fragments cut from other digits (so ink alone does not give the object
//! away), and optionally whole distractor digits of other classes; the box is the
//! target digit's ink (pixels at least half inked). Train and val come from MNIST's
//! training file (val from its last sixth, disjoint), test from t10k. Classes are
//! balanced; everything is a function of the seed.
//!
//! The idx files are read by candle-datasets' MNIST reader (cargo feature `digits`), after
//! our own check of each file's header and length, which names the file that is wrong.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{imageops, GrayImage, Rgb, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::metadata::{write_split, Sample, SplitMetadata};
use super::synth::{background, balanced_labels, contrasting_colour};
use super::{rng_from, split_tag};
use wsol_eval::fs::atomic_write;

/// MNIST's four files, as its site names them (each may also be gzipped, `.gz`).
pub const FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];
const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;
/// Smallest canvas: a digit must stay legible at the smallest scale.
pub const MIN_SIZE: u32 = 48;

/// One MNIST part (train or t10k): gray digits of `rows` x `cols` and their labels.
pub struct Digits {
    pub images: Vec<Vec<u8>>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl Digits {
    fn image(&self, i: usize) -> GrayImage {
        GrayImage::from_raw(self.cols as u32, self.rows as u32, self.images[i].clone()).expect("rows x cols")
    }

    /// Indices of each class 0..=9 among `range`.
    fn by_class(&self, range: std::ops::Range<usize>) -> Vec<Vec<usize>> {
        let mut pools = vec![Vec::new(); 10];
        for i in range {
            pools[self.labels[i] as usize].push(i);
        }
        pools
    }
}

pub struct DigitsOptions {
    pub size: u32,
    pub train: usize,
    pub val: usize,
    pub test: usize,
    /// Whole digits of other classes drawn beside the target.
    pub distractors: usize,
    pub seed: u64,
}

/// The header of an idx file checked against its length: `(count, rows, cols)` (rows and
/// cols 1 for labels). Errors name the file and what was expected.
pub fn check_idx(path: &Path, bytes: &[u8], magic: u32) -> Result<(usize, usize, usize)> {
    let what = if magic == IMAGES_MAGIC {
        "an MNIST image file (idx3, magic 2051)"
    } else {
        "an MNIST label file (idx1, magic 2049)"
    };
    let header = if magic == IMAGES_MAGIC { 16 } else { 8 };
    let word = |k: usize| u32::from_be_bytes(bytes[4 * k..4 * k + 4].try_into().expect("4 bytes")) as usize;
    if bytes.len() < header {
        bail!("{}: {} bytes, too short for the header of {what}", path.display(), bytes.len());
    }
    if word(0) as u32 != magic {
        bail!("{}: magic number {}, expected {what}", path.display(), word(0));
    }
    let (n, rows, cols) = if magic == IMAGES_MAGIC { (word(1), word(2), word(3)) } else { (word(1), 1, 1) };
    let expected = header + n * rows * cols;
    if bytes.len() != expected {
        bail!(
            "{}: {} bytes, but its header ({n} items of {rows}x{cols}) means {expected}: truncated or not {what}",
            path.display(),
            bytes.len()
        );
    }
    Ok((n, rows, cols))
}

/// `dir/name`, or `dir/name.gz` decompressed.
fn read_file(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>)> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if plain.is_file() {
        let bytes = std::fs::read(&plain).with_context(|| format!("cannot read {}", plain.display()))?;
        return Ok((plain, bytes));
    }
    if gz.is_file() {
        let file = std::fs::File::open(&gz).with_context(|| format!("cannot read {}", gz.display()))?;
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(file)
            .read_to_end(&mut bytes)
            .with_context(|| format!("{}: not a readable gzip file", gz.display()))?;
        return Ok((gz, bytes));
    }
    bail!(
        "{}: not found (nor {name}.gz): `--mnist` must hold MNIST's four files, {} (gzipped or not)",
        plain.display(),
        FILES.join(", ")
    )
}

/// Reads MNIST's train and t10k parts from `dir`.
pub fn read_mnist(dir: &Path, staging: &Path) -> Result<(Digits, Digits)> {
    if !dir.is_dir() {
        bail!("--mnist {}: no such directory (expected MNIST's four idx files in it)", dir.display());
    }
    let mut checked = Vec::new();
    for (k, name) in FILES.iter().enumerate() {
        let (path, bytes) = read_file(dir, name)?;
        let magic = if k % 2 == 0 { IMAGES_MAGIC } else { LABELS_MAGIC };
        let shape = check_idx(&path, &bytes, magic)?;
        checked.push((path, bytes, shape));
    }
    for pair in checked.chunks(2) {
        let ((images, _, (n, _, _)), (labels, bytes, (m, _, _))) = (&pair[0], &pair[1]);
        if n != m {
            bail!("{} has {n} images but {} has {m} labels", images.display(), labels.display());
        }
        if let Some(bad) = bytes[8..].iter().find(|&&l| l > 9) {
            bail!("{}: label {bad}, expected digits 0-9", labels.display());
        }
    }
    // candle-datasets reads the four plain files from one folder: the checked bytes go
    // to `staging` (gzipped input is decompressed there), then are read back by it.
    std::fs::create_dir_all(staging).with_context(|| format!("cannot create {}", staging.display()))?;
    for (name, (_, bytes, _)) in FILES.iter().zip(&checked) {
        let to = staging.join(name);
        std::fs::write(&to, bytes).with_context(|| format!("cannot write {}", to.display()))?;
    }
    let parts = load_with_candle_datasets(staging);
    std::fs::remove_dir_all(staging).ok();
    let (train, test) = parts?;
    let (_, _, (_, rows, cols)) = checked[0];
    let (_, _, (_, test_rows, test_cols)) = checked[2];
    if (rows, cols) != (test_rows, test_cols) {
        bail!("MNIST train images are {rows}x{cols} but t10k images {test_rows}x{test_cols}");
    }
    let split = |(images, labels): (Vec<u8>, Vec<u8>)| Digits {
        images: images.chunks(rows * cols).map(<[u8]>::to_vec).collect(),
        labels,
        rows,
        cols,
    };
    Ok((split(train), split(test)))
}

/// (train, test) as (pixels, labels), through candle-datasets' reader.
#[cfg(feature = "digits")]
#[allow(clippy::type_complexity)]
fn load_with_candle_datasets(dir: &Path) -> Result<((Vec<u8>, Vec<u8>), (Vec<u8>, Vec<u8>))> {
    let ds = candle_datasets::vision::mnist::load_dir(dir)
        .with_context(|| format!("candle-datasets could not read the MNIST files staged in {}", dir.display()))?;
    // It gives pixels as f32 / 255; back to the bytes they were.
    let bytes = |t: &candle_core::Tensor| -> Result<Vec<u8>> {
        let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
        Ok(v.iter().map(|&p| (p * 255.0).round() as u8).collect())
    };
    let labels = |t: &candle_core::Tensor| -> Result<Vec<u8>> { Ok(t.to_vec1::<u8>()?) };
    Ok(((bytes(&ds.train_images)?, labels(&ds.train_labels)?), (bytes(&ds.test_images)?, labels(&ds.test_labels)?)))
}

#[cfg(not(feature = "digits"))]
#[allow(clippy::type_complexity)]
fn load_with_candle_datasets(_dir: &Path) -> Result<((Vec<u8>, Vec<u8>), (Vec<u8>, Vec<u8>))> {
    bail!(
        "wsol was built without the `digits` feature (MNIST's reader comes from candle-datasets, kept out of \
         the default build): cargo build --release --features digits"
    )
}

/// Writes the set: `<out>/<split>/<index:05>.png`, metadata under `<out>/metadata/<split>/`
/// and `<out>/metadata/class_names.txt`. Metadata goes last in each split.
pub fn generate(out: &Path, train_part: &Digits, test_part: &Digits, opts: &DigitsOptions) -> Result<()> {
    if !(MIN_SIZE..=1024).contains(&opts.size) {
        bail!("--size {}: expected {MIN_SIZE}..=1024 pixels", opts.size);
    }
    if opts.distractors > 4 {
        bail!("--distractors {}: expected 0..=4 (more leave no room beside the target)", opts.distractors);
    }
    let n_train = train_part.labels.len();
    let val_start = n_train - n_train / 6;
    let sources = [
        ("train", opts.train, train_part, 0..val_start),
        ("val", opts.val, train_part, val_start..n_train),
        ("test", opts.test, test_part, 0..test_part.labels.len()),
    ];
    let metadata_root = out.join("metadata");
    for (split, count, part, range) in sources {
        if count == 0 {
            continue;
        }
        let pools = part.by_class(range);
        if let Some(class) = pools.iter().position(Vec::is_empty) {
            bail!("MNIST {split} source has no digit {class}: the files hold too few images for a balanced set");
        }
        let dir = out.join(split);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let labels = balanced_labels(10, count, opts.seed, split);
        let samples = labels
            .par_iter()
            .enumerate()
            .map(|(i, &label)| {
                let mut rng = rng_from(&[opts.seed, split_tag(split), i as u64, 0xD161]);
                let (image, bbox) = compose(part, &pools, label, opts, &mut rng);
                let name = format!("{i:05}.png");
                let path = dir.join(&name);
                image.save(&path).with_context(|| format!("cannot write {}", path.display()))?;
                let boxes = vec![bbox.map(f64::from)];
                Ok(Sample { image_id: format!("{split}/{name}"), label, size: (opts.size, opts.size), boxes })
            })
            .collect::<Result<Vec<_>>>()?;
        write_split(&metadata_root, &SplitMetadata { split: split.to_string(), samples })?;
    }
    let names: String = (0..10).map(|d| format!("{d}\n")).collect();
    atomic_write(&metadata_root.join("class_names.txt"), names.as_bytes())
}

/// A digit of `class` scaled to `side` pixels: its alpha (ink / 255) at canvas size.
fn scaled(part: &Digits, index: usize, side: u32) -> GrayImage {
    imageops::resize(&part.image(index), side, side, imageops::FilterType::Triangle)
}

/// Draws `alpha` (a gray image, ink = 255) at (x, y) in `colour`, clipped to the canvas.
fn draw(canvas: &mut [[f64; 3]], size: u32, alpha: &GrayImage, x: i64, y: i64, colour: [f64; 3]) {
    for (ax, ay, a) in alpha.enumerate_pixels() {
        let (cx, cy) = (x + ax as i64, y + ay as i64);
        if cx < 0 || cy < 0 || cx >= size as i64 || cy >= size as i64 {
            continue;
        }
        let t = a.0[0] as f64 / 255.0;
        let p = &mut canvas[cy as usize * size as usize + cx as usize];
        for c in 0..3 {
            p[c] = p[c] * (1.0 - t) + colour[c] * t;
        }
    }
}

/// Tight inclusive box `[x0, y0, x1, y1]` of the pixels at least half inked, offset by
/// (x, y); `None` for a blank digit.
fn ink_box(alpha: &GrayImage, x: u32, y: u32) -> Option<[u32; 4]> {
    let inked = alpha.enumerate_pixels().filter(|(_, _, a)| a.0[0] >= 128);
    inked.fold(None, |b, (px, py, _)| {
        let (px, py) = (px + x, py + y);
        Some(match b {
            None => [px, py, px, py],
            Some([x0, y0, x1, y1]) => [x0.min(px), y0.min(py), x1.max(px), y1.max(py)],
        })
    })
}

/// One canvas: background, stroke fragments, distractor digits, then the target on top.
fn compose(
    part: &Digits,
    pools: &[Vec<usize>],
    class: usize,
    opts: &DigitsOptions,
    rng: &mut ChaCha8Rng,
) -> (RgbImage, [u32; 4]) {
    let size = opts.size;
    let mut canvas = background(size, rng);
    let pick = |class: usize, rng: &mut ChaCha8Rng| pools[class][rng.random_range(0..pools[class].len())];
    // The target's place first, so clutter can keep out of it.
    let side = (rng.random_range(0.4..0.7) * size as f64) as u32;
    let (tx, ty) = (rng.random_range(0..=size - side), rng.random_range(0..=size - side));
    let target = scaled(part, pick(class, rng), side);
    let clear = |x: i64, y: i64, s: u32| {
        let (s, side) = (s as i64, side as i64);
        x + s <= tx as i64 || x >= tx as i64 + side || y + s <= ty as i64 || y >= ty as i64 + side
    };
    // Stroke fragments: pieces of other digits, a quarter to a half of a digit's side.
    for _ in 0..rng.random_range(3..7) {
        let other = pick(rng.random_range(0..10), rng);
        let digit = scaled(part, other, side);
        let piece = rng.random_range(side / 4..=side / 2).max(2);
        let (px, py) = (rng.random_range(0..=side - piece), rng.random_range(0..=side - piece));
        let crop = imageops::crop_imm(&digit, px, py, piece, piece).to_image();
        let (x, y) = (rng.random_range(0..=size - piece) as i64, rng.random_range(0..=size - piece) as i64);
        if clear(x, y, piece) {
            let colour = contrasting_colour(&canvas, size, (x as f64, y as f64, piece as f64), rng);
            draw(&mut canvas, size, &crop, x, y, colour);
        }
    }
    // Whole digits of other classes, beside the target.
    for _ in 0..opts.distractors {
        let other_class = (class + rng.random_range(1..10)) % 10;
        let s = (rng.random_range(0.3..0.5) * size as f64) as u32;
        let digit = scaled(part, pick(other_class, rng), s);
        let spot = (0..30).find_map(|_| {
            let (x, y) = (rng.random_range(0..=size - s) as i64, rng.random_range(0..=size - s) as i64);
            clear(x, y, s).then_some((x, y))
        });
        if let Some((x, y)) = spot {
            let colour = contrasting_colour(&canvas, size, (x as f64, y as f64, s as f64), rng);
            draw(&mut canvas, size, &digit, x, y, colour);
        }
    }
    let centre = (tx as f64 + side as f64 / 2.0, ty as f64 + side as f64 / 2.0, side as f64);
    let colour = contrasting_colour(&canvas, size, centre, rng);
    draw(&mut canvas, size, &target, tx as i64, ty as i64, colour);
    let bbox = ink_box(&target, tx, ty).unwrap_or([tx, ty, tx + side - 1, ty + side - 1]);
    let image = RgbImage::from_fn(size, size, |x, y| {
        let p = canvas[(y * size + x) as usize];
        Rgb(p.map(|c| c.round().clamp(0.0, 255.0) as u8))
    });
    (image, bbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten tiny "digits": class k is a k+1 pixel wide bar, so boxes can be predicted.
    fn part(n: usize) -> Digits {
        let (rows, cols) = (28, 28);
        let images = (0..n)
            .map(|i| {
                let w = i % 10 + 4;
                (0..rows * cols)
                    .map(|p| if (p % cols) < w && (6..22).contains(&(p / cols)) { 255 } else { 0 })
                    .collect()
            })
            .collect();
        Digits { images, labels: (0..n).map(|i| (i % 10) as u8).collect(), rows, cols }
    }

    fn opts(seed: u64, distractors: usize) -> DigitsOptions {
        DigitsOptions { size: 64, train: 20, val: 10, test: 10, distractors, seed }
    }

    #[test]
    fn same_seed_same_images_and_the_box_covers_the_target() {
        let p = part(60);
        let pools = p.by_class(0..60);
        let a = compose(&p, &pools, 3, &opts(1, 2), &mut rng_from(&[1, 2]));
        let b = compose(&p, &pools, 3, &opts(1, 2), &mut rng_from(&[1, 2]));
        assert_eq!(a.0.as_raw(), b.0.as_raw());
        assert_eq!(a.1, b.1);
        let c = compose(&p, &pools, 3, &opts(1, 2), &mut rng_from(&[1, 3]));
        assert_ne!(a.0.as_raw(), c.0.as_raw());
        let [x0, y0, x1, y1] = a.1;
        assert!(x0 <= x1 && y0 <= y1 && x1 < 64 && y1 < 64);
        // A bar 7 of 28 wide and 16 of 28 tall, scaled: the box is taller than wide.
        assert!(y1 - y0 > x1 - x0, "{:?}", a.1);
    }

    #[test]
    fn idx_headers_are_checked_against_the_length() {
        let path = Path::new("x/train-images-idx3-ubyte");
        let mut ok = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28];
        ok.extend(vec![0u8; 2 * 784]);
        assert_eq!(check_idx(path, &ok, IMAGES_MAGIC).unwrap(), (2, 28, 28));
        let e = check_idx(path, &ok[..1000], IMAGES_MAGIC).unwrap_err().to_string();
        assert!(e.contains("x/train-images-idx3-ubyte") && e.contains("truncated"), "{e}");
        let e = check_idx(path, &ok, LABELS_MAGIC).unwrap_err().to_string();
        assert!(e.contains("magic number 2051") && e.contains("label file"), "{e}");
        let e = check_idx(path, &ok[..5], IMAGES_MAGIC).unwrap_err().to_string();
        assert!(e.contains("too short"), "{e}");
    }

    #[test]
    fn writes_balanced_splits_with_class_names() {
        let dir = tempfile::tempdir().unwrap();
        let (train, test) = (part(120), part(30));
        generate(dir.path(), &train, &test, &opts(0, 1)).unwrap();
        let meta = super::super::read_split(&dir.path().join("metadata"), "train", 10).unwrap();
        assert_eq!(meta.samples.len(), 20);
        for k in 0..10 {
            assert_eq!(meta.samples.iter().filter(|s| s.label == k).count(), 2);
        }
        assert!(dir.path().join("test/00009.png").is_file());
        let names = std::fs::read_to_string(dir.path().join("metadata/class_names.txt")).unwrap();
        assert_eq!(names.lines().count(), 10);
    }
}
