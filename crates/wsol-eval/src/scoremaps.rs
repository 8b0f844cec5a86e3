//! Score maps on disk (`.npy`), as the official evaluator reads them, and the predictions
//! file of `wsol eval-cams`: the exchange format with code that is not ours.
//!
//! Layout: `<root>/<image_id>.npy` (nested, what wsolevaluation's `evaluation.py` loads),
//! or flat `<root>/<image_id with '/' -> '__'>.npy`. Both are read; we write nested.

use std::collections::HashMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use npyz::WriterBuilder;

/// A 2-D map, row-major, in float64 as the official evaluator holds maps (`t2n`).
#[derive(Debug)]
pub struct ScoreMap {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f64>,
}

pub fn nested_path(root: &Path, image_id: &str) -> PathBuf {
    root.join(format!("{image_id}.npy"))
}

pub fn flat_path(root: &Path, image_id: &str) -> PathBuf {
    root.join(format!("{}.npy", image_id.replace('/', "__")))
}

/// The existing file for `image_id`, nested layout first.
pub fn find(root: &Path, image_id: &str) -> Option<PathBuf> {
    [nested_path(root, image_id), flat_path(root, image_id)].into_iter().find(|p| p.is_file())
}

/// Reads a 2-D float32 or float64 `.npy`; anything else is an error naming the file.
pub fn read(path: &Path) -> Result<ScoreMap> {
    let mut reader = MapReader::default();
    let map = reader.read(path)?;
    let data = match map.values {
        MapValues::F32(v) => v.iter().map(|&v| f64::from(v)).collect(),
        MapValues::F64(v) => v.to_vec(),
    };
    Ok(ScoreMap { width: map.width, height: map.height, data })
}

/// A map's values in the type the file holds them: float32 maps need no float64 copy
/// (the box path quantizes them to the same levels from float32).
#[derive(Clone, Copy, Debug)]
pub enum MapValues<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

/// A map as read by [`MapReader`], borrowing the reader's buffers.
#[derive(Debug)]
pub struct MapView<'a> {
    pub width: usize,
    pub height: usize,
    pub values: MapValues<'a>,
}

/// Reads many `.npy` maps with the same checks as [`read`], into buffers kept from one
/// map to the next: one `read` of the file, no allocation once the buffers have grown,
/// and a little-endian map's values used where they lie in the file's bytes.
///
/// The header is parsed here: npyz parses it with a general Python-literal grammar,
/// which cost about as much per map as min-max normalization and quantization together.
/// A header this parser does not recognise (anything numpy does not write for a plain
/// float map) is handed to npyz, so what it accepts or rejects, and how, is unchanged.
#[derive(Default)]
pub struct MapReader {
    /// The file's bytes; `u64` words so that the data (at a 16- or 64-byte multiple in
    /// any file numpy writes) is aligned for `f32` and `f64`.
    words: Vec<u64>,
    /// Values decoded when they cannot be used in place (big-endian or unaligned data,
    /// or a header npyz parsed).
    f32s: Vec<f32>,
    f64s: Vec<f64>,
}

impl MapReader {
    pub fn read(&mut self, path: &Path) -> Result<MapView<'_>> {
        use std::io::Read;
        let cannot = || format!("cannot read score map {}", path.display());
        let MapReader { words, f32s, f64s } = self;
        let mut file = std::fs::File::open(path).with_context(cannot)?;
        let len = file.metadata().with_context(cannot)?.len() as usize;
        words.resize(len.div_ceil(8), 0);
        // SAFETY: the `u64` buffer holds at least `len` bytes, and any bytes are valid `u8`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, len) };
        file.read_exact(bytes).with_context(cannot)?;
        let bytes = &*bytes;
        let Some(h) = parse_header(bytes) else { return read_npyz(path, bytes, f32s, f64s) };
        let (height, width) = check_shape(path, &h.shape, h.fortran_order)?;
        let size = if h.f64 { 8 } else { 4 };
        let n = height.checked_mul(width);
        let end = n.and_then(|n| n.checked_mul(size)).and_then(|b| h.offset.checked_add(b));
        let (Some(n), Some(data)) = (n, end.and_then(|end| bytes.get(h.offset..end))) else {
            // Too short for its shape: npyz says so as it always has.
            return read_npyz(path, bytes, f32s, f64s);
        };
        let in_place = h.little_endian == cfg!(target_endian = "little") && h.offset % size == 0;
        let values = match (h.f64, in_place) {
            // SAFETY: `data` holds `n` values of the type, at an address aligned for it
            // (an 8-byte-aligned buffer plus an offset that is a multiple of the size),
            // and any bit pattern is a valid float.
            (false, true) => MapValues::F32(unsafe { std::slice::from_raw_parts(data.as_ptr() as *const f32, n) }),
            // SAFETY: as above.
            (true, true) => MapValues::F64(unsafe { std::slice::from_raw_parts(data.as_ptr() as *const f64, n) }),
            (false, false) => {
                f32s.clear();
                f32s.extend(data.chunks_exact(4).map(|b| {
                    let b = [b[0], b[1], b[2], b[3]];
                    if h.little_endian {
                        f32::from_le_bytes(b)
                    } else {
                        f32::from_be_bytes(b)
                    }
                }));
                MapValues::F32(f32s)
            }
            (true, false) => {
                f64s.clear();
                f64s.extend(data.chunks_exact(8).map(|b| {
                    let b: [u8; 8] = b.try_into().expect("8 bytes");
                    if h.little_endian {
                        f64::from_le_bytes(b)
                    } else {
                        f64::from_be_bytes(b)
                    }
                }));
                MapValues::F64(f64s)
            }
        };
        check_finite(path, values, width)?;
        Ok(MapView { width, height, values })
    }
}

/// A file whose header [`parse_header`] leaves alone, through npyz.
fn read_npyz<'a>(path: &Path, bytes: &[u8], f32s: &'a mut Vec<f32>, f64s: &'a mut Vec<f64>) -> Result<MapView<'a>> {
    let npy =
        npyz::NpyFile::new(bytes).map_err(|e| anyhow::anyhow!("{}: not a valid .npy file ({e})", path.display()))?;
    let shape: Vec<u64> = npy.shape().to_vec();
    let (height, width) = check_shape(path, &shape, npy.order() != npyz::Order::C)?;
    let type_str = npy.dtype().descr();
    let short = || format!("{}: not a valid .npy file (data shorter than its shape)", path.display());
    let values = match type_str.trim_matches('\'') {
        "<f4" | ">f4" => {
            *f32s = npy.into_vec::<f32>().with_context(short)?;
            MapValues::F32(f32s)
        }
        "<f8" | ">f8" => {
            *f64s = npy.into_vec::<f64>().with_context(short)?;
            MapValues::F64(f64s)
        }
        other => bail!("{}: expected dtype float32 or float64, got `{other}`", path.display()),
    };
    // npyz counts the elements with wrapping arithmetic: a shape whose product
    // overflows reads as a short map.
    let len = match values {
        MapValues::F32(v) => v.len(),
        MapValues::F64(v) => v.len(),
    };
    if height.checked_mul(width) != Some(len) {
        bail!("{}: not a valid .npy file (shape {shape:?} does not match its data)", path.display());
    }
    check_finite(path, values, width)?;
    Ok(MapView { width, height, values })
}

/// `(height, width)` of a 2-D C-ordered map, or the error naming the file.
fn check_shape(path: &Path, shape: &[u64], fortran_order: bool) -> Result<(usize, usize)> {
    if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
        bail!("{}: expected a 2-D map (height, width), got shape {shape:?}", path.display());
    }
    if fortran_order {
        bail!("{}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray", path.display());
    }
    Ok((shape[0] as usize, shape[1] as usize))
}

/// Fails on the first NaN or infinity, naming its row and column.
fn check_finite(path: &Path, values: MapValues, width: usize) -> Result<()> {
    let bad = match values {
        MapValues::F32(v) => first_non_finite(v),
        MapValues::F64(v) => first_non_finite(v),
    };
    match bad {
        Some((i, v)) => bail!("{}: map contains {v} at (row {}, col {})", path.display(), i / width, i % width),
        None => Ok(()),
    }
}

/// Index and value of the first NaN or infinity. Run for every map read, so compiled for
/// AVX2 where the CPU has it (2.5 times as fast as SSE2 on a 224x224 float32 map).
fn first_non_finite<T: Float>(v: &[T]) -> Option<(usize, f64)> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { first_non_finite_avx2(v) };
    }
    first_non_finite_blocks(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn first_non_finite_avx2<T: Float>(v: &[T]) -> Option<(usize, f64)> {
    first_non_finite_blocks(v)
}

/// A block at a time, branch-free inside, so that it vectorizes.
#[inline(always)]
fn first_non_finite_blocks<T: Float>(v: &[T]) -> Option<(usize, f64)> {
    for (k, block) in v.chunks(64).enumerate() {
        if !block.iter().fold(true, |ok, &x| ok & x.finite()) {
            let i = block.iter().position(|&x| !x.finite()).expect("a non-finite value");
            return Some((k * 64 + i, block[i].into()));
        }
    }
    None
}

/// The two value types of a map.
trait Float: Copy + Into<f64> {
    fn finite(self) -> bool;
}

impl Float for f32 {
    #[inline(always)]
    fn finite(self) -> bool {
        self.is_finite()
    }
}

impl Float for f64 {
    #[inline(always)]
    fn finite(self) -> bool {
        self.is_finite()
    }
}

/// What [`MapReader`] needs of a `.npy` header.
#[derive(Debug, PartialEq)]
struct Header {
    /// Where the data starts.
    offset: usize,
    little_endian: bool,
    /// float64 (`f8`); otherwise float32 (`f4`).
    f64: bool,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// The header of a `.npy` holding float32 or float64 values, as numpy writes it
/// (`{'descr': '<f4', 'fortran_order': False, 'shape': (224, 224), }`, any key order,
/// either quote); `None` for anything else, which npyz then reads or rejects.
fn parse_header(bytes: &[u8]) -> Option<Header> {
    if bytes.get(..6)? != b"\x93NUMPY" {
        return None;
    }
    let (len, start): (usize, usize) = match bytes.get(6)? {
        1 => (u16::from_le_bytes(bytes.get(8..10)?.try_into().ok()?) as usize, 10),
        2 | 3 => (u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize, 12),
        _ => return None,
    };
    let text = std::str::from_utf8(bytes.get(start..start.checked_add(len)?)?).ok()?;
    let mut rest = text.trim().strip_prefix('{')?.trim_end().strip_suffix('}')?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (key, after) = quoted(rest)?;
        let after = after.trim_start().strip_prefix(':')?.trim_start();
        rest = match key {
            "descr" if descr.is_none() => {
                let (v, r) = quoted(after)?;
                descr = Some(v);
                r
            }
            "fortran_order" if fortran_order.is_none() => {
                let (v, r) = if let Some(r) = after.strip_prefix("False") {
                    (false, r)
                } else {
                    (true, after.strip_prefix("True")?)
                };
                fortran_order = Some(v);
                r
            }
            "shape" if shape.is_none() => {
                let (inner, r) = after.strip_prefix('(')?.split_once(')')?;
                let dims: Option<Vec<u64>> =
                    inner.split(',').map(str::trim).filter(|d| !d.is_empty()).map(|d| d.parse().ok()).collect();
                shape = Some(dims?);
                r
            }
            _ => return None,
        };
        rest = rest.trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.is_empty() => break,
            None => return None,
        }
    }
    let (little_endian, f64) = match descr? {
        "<f4" => (true, false),
        ">f4" => (false, false),
        "<f8" => (true, true),
        ">f8" => (false, true),
        _ => return None,
    };
    Some(Header { offset: start + len, little_endian, f64, fortran_order: fortran_order?, shape: shape? })
}

/// A string in single or double quotes at the start of `s` (no escapes: none of the
/// keys and values read here has one), and what follows it.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let (v, rest) = s[1..].split_once(q)?;
    Some((v, rest))
}

/// Writes a float64 map atomically.
pub fn write(path: &Path, map: &ScoreMap) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = crate::fs::tmp_path(path);
    let result = (|| -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[map.height as u64, map.width as u64])
            .writer(BufWriter::new(file))
            .begin_nd()?;
        w.extend(map.data.iter().copied())?;
        w.finish()
    })();
    result.with_context(|| format!("cannot write {}", tmp.display()))?;
    crate::fs::commit_tmp(&tmp, path)
}

/// Class predictions: `image_id,top1[,top2,...]` per line.
pub fn read_predictions(path: &Path) -> Result<HashMap<String, Vec<usize>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read predictions file {}", path.display()))?;
    let mut out = HashMap::new();
    for (i, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split(',');
        let id = fields.next().unwrap_or_default().trim().to_string();
        let classes: Result<Vec<usize>, _> = fields.map(|f| f.trim().parse::<usize>()).collect();
        match classes {
            Ok(c) if !c.is_empty() && !id.is_empty() => {
                if out.insert(id.clone(), c).is_some() {
                    bail!("{}:{}: duplicate image id `{id}`", path.display(), i + 1);
                }
            }
            _ => bail!(
                "{}:{}: expected `image_id,top1[,top2..top5]` with class indices, got `{line}`",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trip_and_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let map = ScoreMap { width: 3, height: 2, data: vec![0.0, 0.5, 1.0, 0.25, 0.75, 0.125] };
        let p = nested_path(dir.path(), "test/a.png");
        write(&p, &map).unwrap();
        assert_eq!(find(dir.path(), "test/a.png"), Some(p.clone()));
        let back = read(&p).unwrap();
        assert_eq!((back.width, back.height), (3, 2));
        assert_eq!(back.data, map.data);
        assert_eq!(flat_path(dir.path(), "test/a.png"), dir.path().join("test__a.png.npy"));
    }

    #[test]
    fn rejects_3d_nan_and_ints() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.npy");
        let mut buf = vec![];
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&[1, 2, 2]).writer(&mut buf).begin_nd().unwrap();
        w.extend([0f32; 4]).unwrap();
        w.finish().unwrap();
        std::fs::write(&p, &buf).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("2-D"));
        write(&p, &ScoreMap { width: 2, height: 1, data: vec![0.0, f64::NAN] }).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("NaN"));
        let mut buf = vec![];
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&[1, 2]).writer(&mut buf).begin_nd().unwrap();
        w.extend([1i64, 2]).unwrap();
        w.finish().unwrap();
        std::fs::write(&p, &buf).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("dtype"));
        std::fs::write(&p, b"junk").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("bad.npy"));
    }

    /// A `.npy` with the header text `dict` (padded as numpy pads, so that the data
    /// starts at a multiple of `align`) in format version `version`, then `data`.
    fn npy_bytes(version: u8, dict: &str, align: usize, data: &[u8]) -> Vec<u8> {
        let pre = if version == 1 { 10 } else { 12 };
        let mut text = dict.to_string();
        while !(pre + text.len() + 1).is_multiple_of(align) {
            text.push(' ');
        }
        text.push('\n');
        let mut out = b"\x93NUMPY".to_vec();
        out.extend([version, 0]);
        match version {
            1 => out.extend((text.len() as u16).to_le_bytes()),
            _ => out.extend((text.len() as u32).to_le_bytes()),
        }
        out.extend(text.as_bytes());
        out.extend(data);
        out
    }

    fn values(v: MapValues) -> Vec<f64> {
        match v {
            MapValues::F32(v) => v.iter().map(|&x| x as f64).collect(),
            MapValues::F64(v) => v.to_vec(),
        }
    }

    /// Headers as numpy (and others) write them, at aligned and unaligned data offsets,
    /// little- and big-endian: the reader gives npyz's values, and the files numpy wrote
    /// for the tests are parsed here, not handed to npyz.
    #[test]
    fn reader_agrees_with_npyz_on_header_variants() {
        let dir = tempfile::tempdir().unwrap();
        let vals: Vec<f64> = (0..15).map(|i| (i as f64 * 0.37).sin() * 3.0).collect();
        let le32: Vec<u8> = vals.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
        let be32: Vec<u8> = vals.iter().flat_map(|&v| (v as f32).to_be_bytes()).collect();
        let le64: Vec<u8> = vals.iter().flat_map(|&v| v.to_le_bytes()).collect();
        let be64: Vec<u8> = vals.iter().flat_map(|&v| v.to_be_bytes()).collect();
        let np = "{'descr': 'D', 'fortran_order': False, 'shape': (3, 5), }";
        let cases: Vec<(u8, String, usize, &[u8], bool)> = vec![
            (1, np.replace('D', "<f4"), 64, &le32, true),
            (1, np.replace('D', "<f4"), 2, &le32, true), // data 2 bytes past alignment
            (1, np.replace('D', ">f4"), 64, &be32, true),
            (1, np.replace('D', "<f8"), 64, &le64, true),
            (1, np.replace('D', "<f8"), 4, &le64, true),
            (1, np.replace('D', ">f8"), 16, &be64, true),
            (2, np.replace('D', "<f4"), 64, &le32, true),
            (3, np.replace('D', "<f8"), 64, &le64, true),
            (1, "{\"shape\": (3,5), \"descr\": \"<f4\", \"fortran_order\": False}".into(), 64, &le32, true),
            // Left to npyz: a key of ours repeated, a key not ours, a dtype spelled another way.
            (1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3, 5)}".into(), 64, &le32, false),
            (1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 5), 'x': 1}".into(), 64, &le32, false),
        ];
        let mut reader = MapReader::default();
        for (k, (version, dict, align, data, ours)) in cases.into_iter().enumerate() {
            let bytes = npy_bytes(version, &dict, align, data);
            assert_eq!(parse_header(&bytes).is_some(), ours, "case {k}: {dict}");
            let p = dir.path().join(format!("{k}.npy"));
            std::fs::write(&p, &bytes).unwrap();
            let via_npyz = npyz::NpyFile::new(&bytes[..]);
            let map = reader.read(&p);
            match via_npyz {
                Ok(npy) => {
                    let want: Vec<f64> = match npy.dtype().descr().trim_matches('\'') {
                        "<f4" | ">f4" => npy.into_vec::<f32>().unwrap().into_iter().map(f64::from).collect(),
                        _ => npy.into_vec::<f64>().unwrap(),
                    };
                    let map = map.unwrap_or_else(|e| panic!("case {k}: {e:#}"));
                    assert_eq!((map.width, map.height), (5, 3), "case {k}");
                    let f32_wanted = dict.contains("f4");
                    assert_eq!(matches!(map.values, MapValues::F32(_)), f32_wanted, "case {k}");
                    assert_eq!(values(map.values), want, "case {k}");
                }
                Err(_) => assert!(map.is_err(), "case {k}"),
            }
        }
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/bad_inputs/npy");
        for name in ["ok_float32.npy", "ok_float64.npy"] {
            let bytes = std::fs::read(repo.join(name)).unwrap();
            assert!(parse_header(&bytes).is_some(), "{name}");
            let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
            let (want, got) = (npy.shape().to_vec(), reader.read(&repo.join(name)).unwrap());
            assert_eq!(vec![got.height as u64, got.width as u64], want, "{name}");
        }
    }

    /// One reader over maps of different sizes and types, smaller after larger: each
    /// read gives that file's map, whatever the buffers held before.
    #[test]
    fn reader_reuses_buffers_across_maps() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = MapReader::default();
        for (k, (w, h)) in [(9, 7), (2, 3), (40, 11), (1, 1), (5, 5)].into_iter().enumerate() {
            let data: Vec<f64> = (0..w * h).map(|i| (i * 7 % 13) as f64 / 4.0 - 1.0).collect();
            let p = dir.path().join(format!("{k}.npy"));
            if k % 2 == 0 {
                write(&p, &ScoreMap { width: w, height: h, data: data.clone() }).unwrap();
            } else {
                let mut buf = vec![];
                let mut wr = npyz::WriteOptions::new()
                    .default_dtype()
                    .shape(&[h as u64, w as u64])
                    .writer(&mut buf)
                    .begin_nd()
                    .unwrap();
                wr.extend(data.iter().map(|&v| v as f32)).unwrap();
                wr.finish().unwrap();
                std::fs::write(&p, &buf).unwrap();
            }
            let map = reader.read(&p).unwrap();
            assert_eq!((map.width, map.height), (w, h));
            assert_eq!(values(map.values), data, "map {k}");
        }
    }

    /// Non-finite values are errors naming the first one's place, float32 or float64,
    /// and a file shorter than its shape is an error, not a short map.
    #[test]
    fn reader_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npy");
        let mut reader = MapReader::default();
        let np = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 70), }";
        for (i, bad) in [(0usize, f32::NAN), (69, f32::INFINITY), (139, f32::NEG_INFINITY), (100, f32::NAN)] {
            let mut v = vec![0.5f32; 140];
            v[i] = bad;
            let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            std::fs::write(&p, npy_bytes(1, np, 64, &data)).unwrap();
            let err = reader.read(&p).unwrap_err().to_string();
            let want = format!("map contains {} at (row {}, col {})", bad as f64, i / 70, i % 70);
            assert!(err.contains(&want) && err.contains("m.npy"), "{err}");
            assert_eq!(read(&p).unwrap_err().to_string(), err);
        }
        std::fs::write(&p, npy_bytes(1, np, 64, &[0u8; 139 * 4])).unwrap();
        assert!(reader.read(&p).unwrap_err().to_string().contains("m.npy"));
        std::fs::write(&p, npy_bytes(1, &np.replace("(2, 70)", "(0, 70)"), 64, &[])).unwrap();
        assert!(reader.read(&p).unwrap_err().to_string().contains("2-D"));
        std::fs::write(&p, npy_bytes(1, &np.replace("False", "True"), 64, &[0u8; 560])).unwrap();
        assert!(reader.read(&p).unwrap_err().to_string().contains("Fortran"));
        let huge = np.replace("(2, 70)", "(4294967296, 4294967296)");
        std::fs::write(&p, npy_bytes(1, &huge, 64, &[0u8; 16])).unwrap();
        assert!(reader.read(&p).is_err());
        assert!(reader.read(&dir.path().join("absent.npy")).unwrap_err().to_string().contains("absent.npy"));
    }

    #[test]
    fn predictions_parse_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pred.txt");
        std::fs::write(&p, "\u{feff}a/1.jpg,3,1,2\r\nb.jpg,0\n").unwrap();
        let m = read_predictions(&p).unwrap();
        assert_eq!(m["a/1.jpg"], vec![3, 1, 2]);
        std::fs::write(&p, "a.jpg,1\nb.jpg,x\n").unwrap();
        assert!(read_predictions(&p).unwrap_err().to_string().contains("pred.txt:2"));
    }
}
