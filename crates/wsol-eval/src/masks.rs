//! Mask splits (OpenImages30k in wsolevaluation): `localization.txt` names PNG masks
//! instead of boxes, `<image_id>,<mask path>,<ignore path>`, one line per instance; the
//! first line of an image carries its ignore-box mask, later lines leave that field empty.
//!
//! Loading follows the official `get_mask` because PxAP depends on every pixel: gray
//! values as `cv2.imread(.., IMREAD_GRAYSCALE)` gives them, nearest-neighbour resize with
//! OpenCV's `INTER_NEAREST` pixel mapping, foreground where `value > 0.5` (any non-zero
//! gray level), instances OR-ed, ignore = ignore box AND NOT foreground.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::metrics::{MASK_BG, MASK_FG, MASK_IGNORE};

/// A path from `localization.txt`, relative to the mask root, with its line for messages.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskRef {
    pub path: String,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MaskSample {
    pub image_id: String,
    pub label: usize,
    /// Instance masks, OR-ed together.
    pub masks: Vec<MaskRef>,
    /// None when the first line's ignore field is empty: no ignored pixels. (The official
    /// code would fail on such a line; an image without an ignore box is still meaningful.)
    pub ignore: Option<MaskRef>,
}

#[derive(Clone, Debug)]
pub struct MaskSplit {
    pub split: String,
    /// `<split dir>/localization.txt`, named in mask errors.
    pub localization: PathBuf,
    pub samples: Vec<MaskSample>,
}

/// Non-blank lines (1-based numbers) without BOM, CR or surrounding blanks, as the box
/// metadata reader treats them.
fn lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| anyhow!("{}: not UTF-8 text ({e})", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    Ok(text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty())
        .collect())
}

/// Whether `<metadata_root>/<split>/localization.txt` names masks (`id,mask,ignore`, the
/// mask path not a number) rather than boxes; false without the file.
pub fn is_mask_split(metadata_root: &Path, split: &str) -> Result<bool> {
    let path = metadata_root.join(split).join(crate::metadata::LOCALIZATION);
    if !path.exists() {
        return Ok(false);
    }
    let first = lines(&path)?.into_iter().next();
    Ok(first.is_some_and(|(_, line)| {
        let parts: Vec<&str> = line.rsplitn(3, ',').collect();
        parts.len() == 3 && parts[1].trim().parse::<f64>().is_err()
    }))
}

/// Reads `image_ids.txt`, `class_labels.txt` and a mask `localization.txt` of
/// `<metadata_root>/<split>/`. Every listed image needs a label and at least one mask.
pub fn read_mask_split(metadata_root: &Path, split: &str) -> Result<MaskSplit> {
    let dir = metadata_root.join(split);
    let ids_path = dir.join(crate::metadata::IMAGE_IDS);
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut samples: Vec<MaskSample> = Vec::new();
    let mut id_lines: Vec<usize> = Vec::new();
    for (no, id) in lines(&ids_path)? {
        if let Some(&first) = index.get(&id) {
            bail!("{}:{no}: duplicate image id `{id}` (first listed at line {})", ids_path.display(), id_lines[first]);
        }
        index.insert(id.clone(), samples.len());
        samples.push(MaskSample { image_id: id, label: usize::MAX, masks: Vec::new(), ignore: None });
        id_lines.push(no);
    }
    if samples.is_empty() {
        bail!("{}: no images listed", ids_path.display());
    }
    let lookup = |path: &Path, no: usize, id: &str| {
        index
            .get(id)
            .copied()
            .ok_or_else(|| anyhow!("{}:{no}: image `{id}` is not listed in {}", path.display(), ids_path.display()))
    };

    let labels_path = dir.join(crate::metadata::CLASS_LABELS);
    let mut has_label = vec![false; samples.len()];
    for (no, line) in lines(&labels_path)? {
        let (id, label) = line
            .rsplit_once(',')
            .ok_or_else(|| anyhow!("{}:{no}: expected `image_id,label` (line: `{line}`)", labels_path.display()))?;
        let i = lookup(&labels_path, no, id.trim())?;
        let label: usize = label.trim().parse().map_err(|_| {
            anyhow!("{}:{no}: label: expected a non-negative integer, got `{}`", labels_path.display(), label.trim())
        })?;
        if std::mem::replace(&mut has_label[i], true) {
            bail!("{}:{no}: second label for image `{}`", labels_path.display(), id.trim());
        }
        samples[i].label = label;
    }

    let loc_path = dir.join(crate::metadata::LOCALIZATION);
    for (no, line) in lines(&loc_path)? {
        let err = |msg: String| anyhow!("{}:{no}: {msg} (line: `{line}`)", loc_path.display());
        let parts: Vec<&str> = line.rsplitn(3, ',').collect();
        if parts.len() != 3 {
            return Err(err(
                "expected `image_id,mask_path,ignore_path` (a mask split; box splits need no --masks)".into()
            ));
        }
        let (id, mask, ignore) = (parts[2].trim(), parts[1].trim(), parts[0].trim());
        if mask.is_empty() {
            return Err(err("empty mask path".into()));
        }
        if mask.parse::<f64>().is_ok() && ignore.parse::<f64>().is_ok() {
            return Err(err("numbers where mask paths were expected; is this a box split?".into()));
        }
        let i = lookup(&loc_path, no, id)?;
        let s = &mut samples[i];
        if s.masks.is_empty() {
            s.ignore = (!ignore.is_empty()).then(|| MaskRef { path: ignore.to_string(), line: no });
        } else if !ignore.is_empty() && s.ignore.as_ref().map(|r| r.path.as_str()) != Some(ignore) {
            return Err(err(format!("a second ignore path for image `{id}`; only its first line may carry one")));
        }
        s.masks.push(MaskRef { path: mask.to_string(), line: no });
    }

    for (i, s) in samples.iter().enumerate() {
        if !has_label[i] {
            bail!(
                "{}: no label for image `{}` (listed at {}:{})",
                labels_path.display(),
                s.image_id,
                ids_path.display(),
                id_lines[i]
            );
        }
        if s.masks.is_empty() {
            bail!(
                "{}: no mask for image `{}` (listed at {}:{})",
                loc_path.display(),
                s.image_id,
                ids_path.display(),
                id_lines[i]
            );
        }
    }
    Ok(MaskSplit { split: split.to_string(), localization: loc_path, samples })
}

/// Gray levels of a mask image, as OpenCV's PNG reader with `IMREAD_GRAYSCALE` returns
/// them: 8-bit gray as is, 16-bit reduced to the high byte (libpng `strip_16`), alpha
/// dropped (not composited), color through libpng's `rgb_to_gray` with OpenCV's weights
/// 0.299/0.587 (fixed point 9797, 19234, 3737 of 32768, truncated), which decides whether
/// a faint colored pixel counts. Checked against cv2 5.0 (libpng 1.6) on random images.
pub fn read_gray(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    use image::DynamicImage as D;
    if !path.is_file() {
        bail!("mask file {} does not exist", path.display());
    }
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open mask {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read mask {}", path.display()))?
        .decode()
        .map_err(|e| anyhow!("{}: cannot decode mask image ({e})", path.display()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let gray3 = |r: u32, g: u32, b: u32| -> u8 {
        if r == g && g == b {
            return r as u8;
        }
        ((9797 * r + 19234 * g + 3737 * b) >> 15) as u8
    };
    let data: Vec<u8> = match &img {
        D::ImageLuma8(b) => b.as_raw().clone(),
        D::ImageLumaA8(b) => b.pixels().map(|p| p.0[0]).collect(),
        D::ImageLuma16(b) => b.pixels().map(|p| (p.0[0] >> 8) as u8).collect(),
        D::ImageLumaA16(b) => b.pixels().map(|p| (p.0[0] >> 8) as u8).collect(),
        D::ImageRgb8(b) => b.pixels().map(|p| gray3(p.0[0] as u32, p.0[1] as u32, p.0[2] as u32)).collect(),
        D::ImageRgba8(b) => b.pixels().map(|p| gray3(p.0[0] as u32, p.0[1] as u32, p.0[2] as u32)).collect(),
        other => other.to_rgb8().pixels().map(|p| gray3(p.0[0] as u32, p.0[1] as u32, p.0[2] as u32)).collect(),
    };
    Ok((data, w, h))
}

/// `cv2.resize(src, (out_w, out_h), interpolation=cv2.INTER_NEAREST)`: source index
/// `min(floor(d * (1 / (out / in))), in - 1)` with the scale inverted in f64 exactly as
/// OpenCV's `resizeNN` does (not `d * in / out`, which rounds differently).
pub fn resize_nearest(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    assert_eq!(src.len(), w * h, "mask is not {w}x{h}");
    let map = |src_len: usize, out_len: usize| -> Vec<usize> {
        let inv = 1.0 / (out_len as f64 / src_len as f64);
        (0..out_len).map(|d| ((d as f64 * inv).floor() as usize).min(src_len - 1)).collect()
    };
    let (xs, ys) = (map(w, out_w), map(h, out_h));
    let mut out = Vec::with_capacity(out_w * out_h);
    for &sy in &ys {
        let row = &src[sy * w..(sy + 1) * w];
        out.extend(xs.iter().map(|&sx| row[sx]));
    }
    out
}

/// One mask file on the `size` x `size` grid, as booleans `gray > 0.5`.
fn load_binary(mask_root: &Path, r: &MaskRef, loc: &Path, size: usize) -> Result<Vec<bool>> {
    let path = mask_root.join(&r.path);
    let (gray, w, h) = read_gray(&path).with_context(|| format!("mask named at {}:{}", loc.display(), r.line))?;
    if w == 0 || h == 0 {
        bail!("{}: empty mask image (named at {}:{})", path.display(), loc.display(), r.line);
    }
    // Gray levels are integers, so the official float `> 0.5` is `!= 0`.
    Ok(resize_nearest(&gray, w, h, size, size).into_iter().map(|v| v != 0).collect())
}

/// The image's evaluation mask on the `size` x `size` grid: `MASK_FG` where any instance
/// covers the pixel, `MASK_IGNORE` inside the ignore box elsewhere, `MASK_BG` otherwise.
pub fn load_mask(mask_root: &Path, sample: &MaskSample, localization: &Path, size: usize) -> Result<Vec<u8>> {
    let mut fg = vec![false; size * size];
    for r in &sample.masks {
        let m = load_binary(mask_root, r, localization, size)?;
        fg.iter_mut().zip(m).for_each(|(a, b)| *a |= b);
    }
    let ignore = match &sample.ignore {
        Some(r) => load_binary(mask_root, r, localization, size)?,
        None => vec![false; size * size],
    };
    Ok(combine_mask(&fg, &ignore))
}

/// Per pixel: foreground wins over ignore (the ignore region is the ignore box minus the
/// instances, as in the official `get_mask`), everything else is background.
pub fn combine_mask(fg: &[bool], ignore: &[bool]) -> Vec<u8> {
    fg.iter()
        .zip(ignore)
        .map(|(&f, &i)| {
            if f {
                MASK_FG
            } else if i {
                MASK_IGNORE
            } else {
                MASK_BG
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir.join("test")).unwrap();
        for (n, t) in files {
            std::fs::write(dir.join("test").join(n), t).unwrap();
        }
    }

    const IDS: &str = "a.jpg\nb.jpg\n";
    const LABELS: &str = "a.jpg,0\nb.jpg,3\n";

    fn read_with(loc: &str) -> Result<MaskSplit> {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), &[("image_ids.txt", IDS), ("class_labels.txt", LABELS), ("localization.txt", loc)]);
        read_mask_split(d.path(), "test")
    }

    #[test]
    fn reads_instances_and_ignore_paths() {
        let s = read_with("a.jpg,m/a1.png,m/a_ig.png\r\nb.jpg,m/b.png,\na.jpg,m/a2.png,\n").unwrap();
        let a = &s.samples[0];
        assert_eq!(
            a.masks.iter().map(|m| (m.path.as_str(), m.line)).collect::<Vec<_>>(),
            [("m/a1.png", 1), ("m/a2.png", 3)]
        );
        assert_eq!(a.ignore.as_ref().unwrap().path, "m/a_ig.png");
        assert_eq!((s.samples[1].label, s.samples[1].ignore.is_none()), (3, true));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let cases = [
            (
                "a.jpg,m/a.png,i.png\nb.jpg,1,2,3,4\n",
                "localization.txt:2: numbers where mask paths were expected; is this a box split?",
            ),
            ("a.jpg,m/a.png,i.png\nb.jpg,m/b.png\n", "localization.txt:2: expected `image_id,mask_path,ignore_path`"),
            ("a.jpg,m/a.png,i.png\nb.jpg,,\n", "localization.txt:2: empty mask path"),
            ("a.jpg,m/a.png,i.png\na.jpg,m/b.png,j.png\nb.jpg,m,\n", "localization.txt:2: a second ignore path"),
            ("a.jpg,m/a.png,i.png\nc.jpg,m/c.png,\n", "localization.txt:2: image `c.jpg` is not listed"),
            ("a.jpg,m/a.png,i.png\n", "no mask for image `b.jpg` (listed at"),
        ];
        for (loc, want) in cases {
            let msg = format!("{:#}", read_with(loc).unwrap_err());
            assert!(msg.contains(want), "got `{msg}`, want `{want}`");
        }
    }

    #[test]
    fn nearest_resize_matches_opencv_mapping() {
        // 3 -> 7: inv = 1 / (7/3) = 0.42857..; floor(d * inv) = 0,0,0,1,1,2,2.
        let src = [10u8, 20, 30];
        assert_eq!(resize_nearest(&src, 3, 1, 7, 1), [10, 10, 10, 20, 20, 30, 30]);
        // 5 -> 2: inv = 2.5 -> 0, 2.
        assert_eq!(resize_nearest(&[1, 2, 3, 4, 5], 5, 1, 2, 1), [1, 3]);
        // Rows too: 2x2 -> 4x4 duplicates each pixel.
        let out = resize_nearest(&[1, 2, 3, 4], 2, 2, 4, 4);
        assert_eq!(out, [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
    }

    #[test]
    fn mask_combines_instances_and_ignore() {
        let d = tempfile::tempdir().unwrap();
        let save = |name: &str, px: [u8; 4]| {
            image::GrayImage::from_raw(2, 2, px.to_vec()).unwrap().save(d.path().join(name)).unwrap()
        };
        save("a1.png", [255, 0, 0, 0]);
        save("a2.png", [0, 1, 0, 0]); // gray 1 > 0.5: foreground
        save("ig.png", [255, 255, 255, 0]);
        let s = MaskSample {
            image_id: "a".into(),
            label: 0,
            masks: vec![MaskRef { path: "a1.png".into(), line: 1 }, MaskRef { path: "a2.png".into(), line: 2 }],
            ignore: Some(MaskRef { path: "ig.png".into(), line: 1 }),
        };
        let loc = Path::new("meta/test/localization.txt");
        assert_eq!(load_mask(d.path(), &s, loc, 2).unwrap(), [MASK_FG, MASK_FG, MASK_IGNORE, MASK_BG]);
        let mut missing = s.clone();
        missing.masks[1].path = "nope.png".into();
        let msg = format!("{:#}", load_mask(d.path(), &missing, loc, 2).unwrap_err());
        assert!(msg.contains("nope.png") && msg.contains("localization.txt:2"), "{msg}");
    }
}
