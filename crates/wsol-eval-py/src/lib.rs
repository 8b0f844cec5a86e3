//! `wsol_eval._native`: wsol-eval's engine for Python. The Python package around it
//! (`python/wsol_eval`) gives wsolevaluation's `evaluation.py` interface; this module holds
//! what runs per map, off the GIL where a batch allows it.
//!
//! - [`maps`]: numpy arrays borrowed in place, checked and quantized.
//! - [`boxes`]: box accuracy counts and `compute_bboxes_from_scoremaps`.
//! - [`masks`]: PxAP histograms and GT masks.
//! - [`metadata`]: metadata folders with line-level errors.

use pyo3::prelude::*;

pub mod boxes;
pub mod maps;
pub mod masks;
pub mod metadata;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<boxes::PyBoxAccumulator>()?;
    m.add_class::<masks::PyMaskAccumulator>()?;
    m.add_function(wrap_pyfunction!(boxes::compute_bboxes_from_scoremaps, m)?)?;
    m.add_function(wrap_pyfunction!(masks::get_mask, m)?)?;
    m.add_function(wrap_pyfunction!(maps::prepare_scoremap, m)?)?;
    m.add_function(wrap_pyfunction!(metadata::read_box_split, m)?)?;
    m.add_function(wrap_pyfunction!(metadata::read_mask_split_dir, m)?)?;
    Ok(())
}
