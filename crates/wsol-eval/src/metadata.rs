//! The wsolevaluation metadata format (Choe et al., CVPR 2020), one folder per split:
//! `image_ids.txt`, `class_labels.txt` (`id,label`), `image_sizes.txt` (`id,w,h`) and,
//! for splits with boxes, `localization.txt` (`id,x0,y0,x1,y1`, one line per box).
//!
//! Readers are strict: every problem names `file:line` and what was expected, because a
//! silently dropped image or box changes the published metrics.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::fs::atomic_write;

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Path of the image relative to the image root.
    pub image_id: String,
    pub label: usize,
    /// (width, height) of the original image; boxes are in this pixel frame.
    pub size: (u32, u32),
    /// `[x0, y0, x1, y1]` in original-image pixels; empty for splits without boxes.
    pub boxes: Vec<[f64; 4]>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SplitMetadata {
    pub split: String,
    pub samples: Vec<Sample>,
}

pub const IMAGE_IDS: &str = "image_ids.txt";
pub const CLASS_LABELS: &str = "class_labels.txt";
pub const IMAGE_SIZES: &str = "image_sizes.txt";
pub const LOCALIZATION: &str = "localization.txt";

/// `0 <= x0 <= x1 <= width` and `0 <= y0 <= y1 <= height`: the box is a box, inside its
/// image. Every annotation reader checks its boxes with this.
pub fn box_within(b: &[f64; 4], (width, height): (u32, u32)) -> bool {
    0.0 <= b[0] && b[0] <= b[2] && b[2] <= width as f64 && 0.0 <= b[1] && b[1] <= b[3] && b[3] <= height as f64
}

/// One non-blank line of a metadata file, with its 1-based line number for messages.
struct Line<'a> {
    no: usize,
    text: &'a str,
}

struct MetaFile {
    path: PathBuf,
    text: String,
}

impl MetaFile {
    fn read(path: PathBuf) -> Result<Self> {
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = String::from_utf8(bytes).map_err(|e| anyhow!("{}: not UTF-8 text ({e})", path.display()))?;
        Ok(Self { path, text })
    }

    /// Lines without the BOM, CR endings or surrounding blanks; blank lines are skipped so
    /// that files edited by hand (trailing newline, Windows editors) read the same.
    fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        let text = self.text.strip_prefix('\u{feff}').unwrap_or(&self.text);
        text.split('\n').enumerate().map(|(i, l)| Line { no: i + 1, text: l.trim() }).filter(|l| !l.text.is_empty())
    }

    fn err(&self, line: &Line, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}:{}: {msg} (line: `{}`)", self.path.display(), line.no, line.text)
    }

    /// Splits `id,f1,..,fn` from the right, so ids may themselves contain commas.
    fn fields<'a>(&self, line: &Line<'a>, n: usize, expected: &str) -> Result<(&'a str, Vec<&'a str>)> {
        let mut parts: Vec<&str> = line.text.rsplitn(n + 1, ',').collect();
        if parts.len() != n + 1 {
            return Err(self.err(line, format!("expected `{expected}`")));
        }
        let id = parts.pop().unwrap().trim();
        if id.is_empty() {
            return Err(self.err(line, format!("empty image id, expected `{expected}`")));
        }
        parts.reverse();
        Ok((id, parts.into_iter().map(str::trim).collect()))
    }

    fn number(&self, line: &Line, field: &str, what: &str) -> Result<f64> {
        match field.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(self.err(line, format!("{what}: expected a number, got `{field}`"))),
        }
    }

    /// Accepts `3` and `3.0` (some converters write floats everywhere) but not `3.5`.
    fn whole(&self, line: &Line, field: &str, what: &str, max: f64) -> Result<u64> {
        let v = self.number(line, field, what)?;
        if v < 0.0 || v.fract() != 0.0 || v > max {
            return Err(self.err(line, format!("{what}: expected a non-negative integer, got `{field}`")));
        }
        Ok(v as u64)
    }

    /// Index of `id` in image_ids.txt, or an error naming this line.
    fn lookup(&self, line: &Line, index: &HashMap<String, usize>, id: &str) -> Result<usize> {
        index.get(id).copied().ok_or_else(|| self.err(line, format!("image `{id}` is not listed in {IMAGE_IDS}")))
    }
}

/// Reads `<metadata_root>/<split>/`. `num_classes` bounds the labels (`usize::MAX` to
/// accept any). `localization.txt` is optional (train splits usually have none), but
/// when present every image needs at least one box.
pub fn read_split(metadata_root: &Path, split: &str, num_classes: usize) -> Result<SplitMetadata> {
    let dir = metadata_root.join(split);
    let ids = MetaFile::read(dir.join(IMAGE_IDS))?;
    let mut index: HashMap<String, usize> = HashMap::new();
    // (id, line in image_ids.txt), in file order.
    let mut listed: Vec<(String, usize)> = Vec::new();
    for line in ids.lines() {
        if let Some(&first) = index.get(line.text) {
            return Err(ids.err(&line, format!("duplicate image id (first listed at line {})", listed[first].1)));
        }
        index.insert(line.text.to_string(), listed.len());
        listed.push((line.text.to_string(), line.no));
    }
    let n = listed.len();
    let missing = |file: &MetaFile, i: usize, what: &str| {
        let (id, no) = &listed[i];
        anyhow!("{}: no {what} for image `{id}` (listed at {}:{no})", file.path.display(), ids.path.display())
    };

    let labels_file = MetaFile::read(dir.join(CLASS_LABELS))?;
    let mut labels: Vec<Option<usize>> = vec![None; n];
    for line in labels_file.lines() {
        let (id, f) = labels_file.fields(&line, 1, "image_id,label")?;
        let i = labels_file.lookup(&line, &index, id)?;
        let label = labels_file.whole(&line, f[0], "label", u32::MAX as f64)? as usize;
        if label >= num_classes {
            return Err(
                labels_file.err(&line, format!("label {label} out of range: expected < num_classes = {num_classes}"))
            );
        }
        if labels[i].replace(label).is_some() {
            return Err(labels_file.err(&line, format!("second label for image `{id}`")));
        }
    }

    let sizes_file = MetaFile::read(dir.join(IMAGE_SIZES))?;
    let mut sizes: Vec<Option<(u32, u32)>> = vec![None; n];
    for line in sizes_file.lines() {
        let (id, f) = sizes_file.fields(&line, 2, "image_id,width,height")?;
        let i = sizes_file.lookup(&line, &index, id)?;
        let w = sizes_file.whole(&line, f[0], "width", u32::MAX as f64)? as u32;
        let h = sizes_file.whole(&line, f[1], "height", u32::MAX as f64)? as u32;
        if w == 0 || h == 0 {
            return Err(sizes_file.err(&line, "expected a positive width and height"));
        }
        if sizes[i].replace((w, h)).is_some() {
            return Err(sizes_file.err(&line, format!("second size for image `{id}`")));
        }
    }

    let mut boxes: Vec<Vec<[f64; 4]>> = vec![Vec::new(); n];
    let loc_path = dir.join(LOCALIZATION);
    let loc_file = if loc_path.exists() { Some(MetaFile::read(loc_path)?) } else { None };
    if let Some(loc) = &loc_file {
        for line in loc.lines() {
            let (id, f) = loc.fields(&line, 4, "image_id,x0,y0,x1,y1")?;
            let i = loc.lookup(&line, &index, id)?;
            let mut b = [0.0; 4];
            for (k, name) in ["x0", "y0", "x1", "y1"].iter().enumerate() {
                b[k] = loc.number(&line, f[k], name)?;
            }
            if b[2] < b[0] || b[3] < b[1] {
                return Err(loc.err(&line, "expected x0 <= x1 and y0 <= y1"));
            }
            if let Some((w, h)) = sizes[i] {
                if !box_within(&b, (w, h)) {
                    return Err(loc.err(
                        &line,
                        format!("box lies outside the {w}x{h} image (size from {IMAGE_SIZES}); expected 0 <= x0 <= x1 <= {w}, 0 <= y0 <= y1 <= {h}"),
                    ));
                }
            }
            boxes[i].push(b);
        }
    }

    let mut samples = Vec::with_capacity(n);
    for (i, b) in boxes.into_iter().enumerate() {
        let label = labels[i].ok_or_else(|| missing(&labels_file, i, "label"))?;
        let size = sizes[i].ok_or_else(|| missing(&sizes_file, i, "size"))?;
        if let Some(loc) = &loc_file {
            if b.is_empty() {
                return Err(missing(loc, i, "box"));
            }
        }
        samples.push(Sample { image_id: listed[i].0.clone(), label, size, boxes: b });
    }
    Ok(SplitMetadata { split: split.to_string(), samples })
}

/// Writes the split folder; `localization.txt` only when the samples have boxes, which
/// must then be all of them (the reader would reject anything else).
pub fn write_split(metadata_root: &Path, meta: &SplitMetadata) -> Result<()> {
    let dir = metadata_root.join(&meta.split);
    let with_boxes = meta.samples.iter().filter(|s| !s.boxes.is_empty()).count();
    if with_boxes != 0 && with_boxes != meta.samples.len() {
        let s = meta.samples.iter().find(|s| s.boxes.is_empty()).unwrap();
        bail!(
            "split `{}`: image `{}` has no box while others have; localization.txt needs boxes for all",
            meta.split,
            s.image_id
        );
    }
    let (mut ids, mut labels, mut sizes, mut loc) = (String::new(), String::new(), String::new(), String::new());
    for s in &meta.samples {
        if s.image_id.is_empty() || s.image_id.contains(['\n', '\r']) || s.image_id.trim() != s.image_id {
            bail!("split `{}`: image id {:?} cannot be written as one line", meta.split, s.image_id);
        }
        writeln!(ids, "{}", s.image_id)?;
        writeln!(labels, "{},{}", s.image_id, s.label)?;
        writeln!(sizes, "{},{},{}", s.image_id, s.size.0, s.size.1)?;
        for b in &s.boxes {
            // `{}` prints 60.0 as `60` and keeps fractions exactly (shortest round trip).
            writeln!(loc, "{},{},{},{},{}", s.image_id, b[0], b[1], b[2], b[3])?;
        }
    }
    atomic_write(&dir.join(CLASS_LABELS), labels.as_bytes())?;
    atomic_write(&dir.join(IMAGE_SIZES), sizes.as_bytes())?;
    let loc_path = dir.join(LOCALIZATION);
    if with_boxes > 0 {
        atomic_write(&loc_path, loc.as_bytes())?;
    } else if loc_path.exists() {
        std::fs::remove_file(&loc_path).with_context(|| format!("cannot remove stale {}", loc_path.display()))?;
    }
    // Last, so a reader never finds ids whose labels are not written yet.
    atomic_write(&dir.join(IMAGE_IDS), ids.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, label: usize, boxes: Vec<[f64; 4]>) -> Sample {
        Sample { image_id: id.into(), label, size: (100, 80), boxes }
    }

    fn write(root: &Path, split: &str, files: &[(&str, &str)]) {
        let dir = root.join(split);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    const IDS: &str = "a/1.jpg\na/2.jpg\n";
    const LABELS: &str = "a/1.jpg,0\na/2.jpg,2\n";
    const SIZES: &str = "a/1.jpg,100,80\na/2.jpg,50,60\n";
    const LOC: &str = "a/1.jpg,1,2,30,40\na/2.jpg,0,0,10.5,20\na/1.jpg,60.0,5,70,9\n";

    fn read_err(files: &[(&str, &str)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec![(IMAGE_IDS, IDS), (CLASS_LABELS, LABELS), (IMAGE_SIZES, SIZES), (LOCALIZATION, LOC)];
        for (name, text) in files {
            all.retain(|(n, _)| n != name);
            if !text.is_empty() {
                all.push((name, text));
            }
        }
        write(dir.path(), "test", &all);
        format!("{:#}", read_split(dir.path(), "test", 3).unwrap_err())
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SplitMetadata {
            split: "test".into(),
            samples: vec![
                sample("x/a.png", 1, vec![[1.0, 2.0, 3.5, 4.0], [0.0, 0.0, 99.0, 79.0]]),
                sample("x/b,c.png", 0, vec![[5.0; 4]]),
            ],
        };
        write_split(dir.path(), &meta).unwrap();
        assert_eq!(read_split(dir.path(), "test", 2).unwrap(), meta);
        let train = SplitMetadata { split: "train".into(), samples: vec![sample("t.png", 1, vec![])] };
        write_split(dir.path(), &train).unwrap();
        assert!(!dir.path().join("train").join(LOCALIZATION).exists());
        assert_eq!(read_split(dir.path(), "train", 2).unwrap(), train);
    }

    #[test]
    fn reads_boxes_in_order_with_float_fields() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "val",
            &[(IMAGE_IDS, IDS), (CLASS_LABELS, LABELS), (IMAGE_SIZES, SIZES), (LOCALIZATION, LOC)],
        );
        let m = read_split(dir.path(), "val", 3).unwrap();
        assert_eq!(m.samples[0].boxes, vec![[1.0, 2.0, 30.0, 40.0], [60.0, 5.0, 70.0, 9.0]]);
        assert_eq!(m.samples[1].boxes, vec![[0.0, 0.0, 10.5, 20.0]]);
        assert_eq!((m.samples[1].label, m.samples[1].size), (2, (50, 60)));
    }

    #[test]
    fn accepts_crlf_bom_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let crlf = |s: &str| format!("\u{feff}{}\r\n\r\n", s.trim_end().replace('\n', "\r\n"));
        let files = [
            (IMAGE_IDS, crlf(IDS)),
            (CLASS_LABELS, crlf(LABELS)),
            (IMAGE_SIZES, crlf(SIZES)),
            (LOCALIZATION, crlf(LOC)),
        ];
        let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        write(dir.path(), "test", &files);
        let m = read_split(dir.path(), "test", 3).unwrap();
        assert_eq!(m.samples.iter().map(|s| s.image_id.as_str()).collect::<Vec<_>>(), ["a/1.jpg", "a/2.jpg"]);
        assert_eq!(m.samples[0].boxes.len(), 2);
    }

    #[test]
    fn malformed_inputs_name_file_and_line() {
        let cases: &[(&str, &str, &str)] = &[
            (CLASS_LABELS, "", "class_labels.txt"), // missing file
            (CLASS_LABELS, "a/1.jpg,0\na/2.jpg\n", "class_labels.txt:2: expected `image_id,label`"),
            (CLASS_LABELS, "a/1.jpg,0\na/2.jpg,two\n", "class_labels.txt:2: label: expected a number"),
            (CLASS_LABELS, "a/1.jpg,0\na/2.jpg,3\n", "class_labels.txt:2: label 3 out of range"),
            (CLASS_LABELS, "a/1.jpg,0\n", "no label for image `a/2.jpg`"),
            (CLASS_LABELS, "a/1.jpg,0\na/2.jpg,1\na/3.jpg,1\n", "class_labels.txt:3: image `a/3.jpg` is not listed"),
            (IMAGE_SIZES, "a/1.jpg,100,80\na/2.jpg,50\n", "image_sizes.txt:2: expected `image_id,width,height`"),
            (IMAGE_SIZES, "a/2.jpg,50,60\n", "no size for image `a/1.jpg`"),
            (IMAGE_IDS, "a/1.jpg\na/2.jpg\na/1.jpg\n", "image_ids.txt:3: duplicate image id (first listed at line 1)"),
            (LOCALIZATION, "a/1.jpg,1,2,30,40\na/2.jpg,20,0,10,20\n", "localization.txt:2: expected x0 <= x1"),
            (LOCALIZATION, "a/1.jpg,1,2,30,40\na/2.jpg,0,0,1x,20\n", "localization.txt:2: x1: expected a number"),
            (LOCALIZATION, "a/1.jpg,1,2,30,40\n", "no box for image `a/2.jpg`"),
            (
                LOCALIZATION,
                "a/1.jpg,1,2,30,40\na/2.jpg,0,0,10\n",
                "localization.txt:2: expected `image_id,x0,y0,x1,y1`",
            ),
            (
                LOCALIZATION,
                "a/1.jpg,1,2,30,40\na/2.jpg,0,0,1,2\nb.jpg,0,0,1,2\n",
                "localization.txt:3: image `b.jpg` is not listed",
            ),
            (
                IMAGE_SIZES,
                "a/1.jpg,100,80\na/2.jpg,50,60\nb.jpg,1,1\n",
                "image_sizes.txt:3: image `b.jpg` is not listed",
            ),
            (
                IMAGE_SIZES,
                "a/1.jpg,100,80\na/2.jpg,50.5,60\n",
                "image_sizes.txt:2: width: expected a non-negative integer",
            ),
        ];
        for (file, text, want) in cases {
            let msg = read_err(&[(file, text)]);
            assert!(msg.contains(want), "{file}: got `{msg}`, want `{want}`");
        }
        // Missing rows point at the id's line in image_ids.txt.
        assert!(read_err(&[(CLASS_LABELS, "a/1.jpg,0\n")]).contains("image_ids.txt:2"));
        assert!(read_err(&[(IMAGE_IDS, "")]).contains("image_ids.txt"));
    }

    #[test]
    fn localization_is_optional() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "train", &[(IMAGE_IDS, IDS), (CLASS_LABELS, LABELS), (IMAGE_SIZES, SIZES)]);
        assert!(read_split(dir.path(), "train", 3).unwrap().samples.iter().all(|s| s.boxes.is_empty()));
    }
}
