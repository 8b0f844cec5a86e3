//! wsolevaluation's metadata folders read by wsol-eval's readers, so a malformed line is
//! an error naming its file and line rather than a bare `ValueError: not enough values`.

use std::path::Path;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use wsol_eval::masks::read_mask_split;
use wsol_eval::metadata::read_split;

/// (parent, split name) of a split folder such as `metadata/CUB/test`.
fn parts(split_dir: &Path) -> PyResult<(&Path, String)> {
    match (split_dir.parent(), split_dir.file_name()) {
        (Some(root), Some(split)) => {
            let root = if root.as_os_str().is_empty() { Path::new(".") } else { root };
            Ok((root, split.to_string_lossy().into_owned()))
        }
        _ => Err(PyValueError::new_err(format!(
            "{}: expected a split folder such as metadata/CUB/test",
            split_dir.display()
        ))),
    }
}

fn value_error(e: anyhow::Error) -> PyErr {
    PyValueError::new_err(format!("{e:#}"))
}

/// A box split: `image_ids` in file order, and per image its `class_label`,
/// `image_size` (width, height) and original `boxes` (x0, y0, x1, y1).
#[pyfunction]
pub fn read_box_split<'py>(py: Python<'py>, split_dir: &str) -> PyResult<Bound<'py, PyDict>> {
    let (root, split) = parts(Path::new(split_dir))?;
    let meta = read_split(root, &split, usize::MAX).map_err(value_error)?;
    let out = PyDict::new(py);
    let ids: Vec<&str> = meta.samples.iter().map(|s| s.image_id.as_str()).collect();
    out.set_item("image_ids", ids)?;
    out.set_item("class_labels", meta.samples.iter().map(|s| s.label).collect::<Vec<_>>())?;
    out.set_item("image_sizes", meta.samples.iter().map(|s| s.size).collect::<Vec<_>>())?;
    out.set_item("boxes", meta.samples.iter().map(|s| s.boxes.clone()).collect::<Vec<_>>())?;
    Ok(out)
}

/// A mask split (OpenImages30k): `image_ids`, `class_labels`, per image its `mask_paths`
/// and `ignore_path` ("" when none), relative to the mask root.
#[pyfunction]
pub fn read_mask_split_dir<'py>(py: Python<'py>, split_dir: &str) -> PyResult<Bound<'py, PyDict>> {
    let (root, split) = parts(Path::new(split_dir))?;
    let meta = read_mask_split(root, &split).map_err(value_error)?;
    let out = PyDict::new(py);
    out.set_item("image_ids", meta.samples.iter().map(|s| s.image_id.as_str()).collect::<Vec<_>>())?;
    out.set_item("class_labels", meta.samples.iter().map(|s| s.label).collect::<Vec<_>>())?;
    let masks: Vec<Vec<&str>> =
        meta.samples.iter().map(|s| s.masks.iter().map(|m| m.path.as_str()).collect()).collect();
    out.set_item("mask_paths", masks)?;
    let ignore: Vec<&str> = meta.samples.iter().map(|s| s.ignore.as_ref().map_or("", |m| m.path.as_str())).collect();
    out.set_item("ignore_paths", ignore)?;
    Ok(out)
}
