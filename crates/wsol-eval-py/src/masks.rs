//! PxAP for Python: the pixel histograms of the official `MaskEvaluator` and its area under
//! the precision-recall curve, and the GT masks of OpenImages30k read as `get_mask` does.

use std::path::PathBuf;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use wsol_eval::masks::{combine_mask, read_gray, resize_nearest};
use wsol_eval::metrics::PxapAccumulator;

use crate::maps::{quantize_checked, to_f64, Borrowed};

#[pyclass(name = "MaskAccumulator", module = "wsol_eval._native")]
pub struct PyMaskAccumulator {
    acc: PxapAccumulator,
}

#[pymethods]
impl PyMaskAccumulator {
    /// `cam_thresholds`: ascending, in [0, 1); the bins are `[t0, t1), .., [last, 1), [1, 2),
    /// [2, 3]` as the official `threshold_list_right_edge`.
    #[new]
    fn new(cam_thresholds: Vec<f64>) -> PyResult<Self> {
        let acc = PxapAccumulator::new(&cam_thresholds).map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
        Ok(PyMaskAccumulator { acc })
    }

    /// Adds the pixels of one map (in [0, 1], as the official check wants) to the
    /// histograms: `gt_mask` 1 foreground, 0 background, anything else ignored.
    #[pyo3(signature = (scoremap, gt_mask, image_id = "?"))]
    fn accumulate(
        &mut self,
        scoremap: &Bound<'_, PyAny>,
        gt_mask: PyReadonlyArray2<'_, u8>,
        image_id: &str,
    ) -> PyResult<()> {
        let what = format!("scoremap of image {image_id}");
        let arr = Borrowed::new(scoremap, &what)?;
        let map = arr.map(&what)?;
        // The same checks as box scoring; the levels themselves are not needed here.
        quantize_checked(&map).map_err(|e| e.error(image_id))?;
        if gt_mask.shape() != [map.h, map.w] {
            return Err(PyValueError::new_err(format!(
                "{what}: shape ({}, {}) differs from its mask's {:?} (maps are scored on the mask grid, 224 x 224)",
                map.h,
                map.w,
                gt_mask.shape()
            )));
        }
        let mask = gt_mask.as_slice().map_err(|_| PyValueError::new_err("gt_mask: expected a C-contiguous array"))?;
        self.acc.add(&to_f64(&map), mask);
        Ok(())
    }

    #[getter]
    fn gt_true_score_hist<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.acc.histograms().0.iter().map(|&c| c as f64).collect::<Vec<_>>().into_pyarray(py)
    }

    #[getter]
    fn gt_false_score_hist<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.acc.histograms().1.iter().map(|&c| c as f64).collect::<Vec<_>>().into_pyarray(py)
    }

    /// PxAP in percent; RuntimeError without foreground pixels or positive predictions,
    /// as the official `compute()`.
    fn compute(&self) -> PyResult<f64> {
        self.acc.finish().map_err(|e| PyRuntimeError::new_err(format!("{e:#}")))
    }
}

/// `get_mask`: the instance masks OR-ed (1), the ignore region minus them (255), the rest
/// 0, each PNG read as OpenCV's grayscale reader would and resized to `size` x `size` by
/// nearest neighbour (`load_mask_image`); an empty `ignore_path` ignores nothing.
#[pyfunction]
#[pyo3(signature = (mask_root, mask_paths, ignore_path, size = 224))]
pub fn get_mask<'py>(
    py: Python<'py>,
    mask_root: PathBuf,
    mask_paths: Vec<String>,
    ignore_path: String,
    size: usize,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let binary = |rel: &str| -> PyResult<Vec<bool>> {
        let path = mask_root.join(rel);
        let (gray, w, h) = read_gray(&path).map_err(|e| PyOSError::new_err(format!("{e:#}")))?;
        if w == 0 || h == 0 {
            return Err(PyOSError::new_err(format!("{}: empty mask image", path.display())));
        }
        // Gray levels are integers, so the official float `> 0.5` is `!= 0`.
        Ok(resize_nearest(&gray, w, h, size, size).into_iter().map(|v| v != 0).collect())
    };
    if mask_paths.is_empty() {
        return Err(PyValueError::new_err("get_mask: expected at least one mask path"));
    }
    let mut fg = vec![false; size * size];
    for p in &mask_paths {
        fg.iter_mut().zip(binary(p)?).for_each(|(a, b)| *a |= b);
    }
    let ignore = if ignore_path.is_empty() { vec![false; size * size] } else { binary(&ignore_path)? };
    let mask = combine_mask(&fg, &ignore);
    Ok(Array2::from_shape_vec((size, size), mask).expect("size x size").into_pyarray(py))
}
