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
    let bytes = std::fs::read(path).with_context(|| format!("cannot read score map {}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| anyhow::anyhow!("{}: not a valid .npy file ({e})", path.display()))?;
    let shape: Vec<u64> = npy.shape().to_vec();
    if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
        bail!("{}: expected a 2-D map (height, width), got shape {shape:?}", path.display());
    }
    if npy.order() != npyz::Order::C {
        bail!("{}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray", path.display());
    }
    let (height, width) = (shape[0] as usize, shape[1] as usize);
    let type_str = npy.dtype().descr();
    let data: Vec<f64> = match type_str.trim_matches('\'') {
        "<f4" | ">f4" => npy.into_vec::<f32>()?.into_iter().map(f64::from).collect(),
        "<f8" | ">f8" => npy.into_vec::<f64>()?,
        other => bail!("{}: expected dtype float32 or float64, got `{other}`", path.display()),
    };
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        bail!("{}: map contains {} at (row {}, col {})", path.display(), data[i], i / width, i % width);
    }
    Ok(ScoreMap { width, height, data })
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
