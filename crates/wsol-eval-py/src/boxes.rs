//! Box accuracy for Python: the counts behind the official `BoxEvaluator` (`num_correct`,
//! `cnt`) from one map at a time or from a batch scored on all cores, and the boxes of
//! `compute_bboxes_from_scoremaps` on their own.

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use std::path::PathBuf;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use rayon::prelude::*;

use wsol_eval::localize::{sweep_quantized, BBox};
use wsol_eval::metrics::{BoxAccumulator as Accumulator, BoxEvalConfig};
use wsol_eval::scoremaps;

use crate::maps::{prepare, quantize_checked, BadMap, Borrowed, MapView, Pixels};

/// Correct-image counts per (IoU, CAM threshold) for the largest contour (MaxBoxAcc) and
/// for all contours (MaxBoxAccV2's `multi_contour_eval`), over the maps accumulated.
#[pyclass(name = "BoxAccumulator", module = "wsol_eval._native")]
pub struct PyBoxAccumulator {
    acc: Accumulator,
    cfg: BoxEvalConfig,
}

/// GT boxes as the evaluator holds them (x0, y0, x1, y1 on the evaluation grid).
fn gt(boxes: &[[i64; 4]]) -> Vec<BBox> {
    let c = |v: i64| v.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    boxes.iter().map(|b| BBox::new(c(b[0]), c(b[1]), c(b[2]), c(b[3]))).collect()
}

/// The first bad map in batch order of two threads' (index, error), whichever met it.
fn first_bad<E>(a: Option<(usize, E)>, b: Option<(usize, E)>) -> Option<(usize, E)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if x.0 <= y.0 { x } else { y }),
        (x, y) => x.or(y),
    }
}

/// The levels a map is scored on: as given (official `accumulate`: a map already in
/// [0, 1]) or prepared from a raw CAM (`normalize`: resized to `size`, min-max).
fn levels(map: &MapView, normalize: Option<usize>) -> Result<(Vec<u8>, usize, usize), BadMap> {
    match normalize {
        Some(size) => Ok((prepare(map, size)?, size, size)),
        None => Ok((quantize_checked(map)?, map.w, map.h)),
    }
}

#[pymethods]
impl PyBoxAccumulator {
    #[new]
    #[pyo3(signature = (cam_thresholds, iou_thresholds, multi_contour_eval = false))]
    fn new(cam_thresholds: Vec<f64>, iou_thresholds: Vec<u32>, multi_contour_eval: bool) -> PyResult<Self> {
        let cfg = BoxEvalConfig {
            thresholds: cam_thresholds,
            iou_thresholds,
            multi_contour: multi_contour_eval,
            // Only the `*_fixed` keys of `metrics()` read it.
            fixed_threshold: 0.5,
        };
        let acc = Accumulator::new(&cfg).map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
        Ok(PyBoxAccumulator { acc, cfg })
    }

    /// Scores one map against its GT boxes. `normalize`: the evaluation size to prepare a
    /// raw CAM at (resize + min-max); None: the map must already lie in [0, 1].
    #[pyo3(signature = (scoremap, gt_boxes, image_id = "?", normalize = None))]
    fn accumulate(
        &mut self,
        scoremap: &Bound<'_, PyAny>,
        gt_boxes: Vec<[i64; 4]>,
        image_id: &str,
        normalize: Option<usize>,
    ) -> PyResult<()> {
        let what = format!("scoremap of image {image_id}");
        let arr = Borrowed::new(scoremap, &what)?;
        let map = arr.map(&what)?;
        let (q, w, h) = levels(&map, normalize).map_err(|e| e.error(image_id))?;
        self.acc.add_quantized(&q, w, h, &gt(&gt_boxes), None);
        Ok(())
    }

    /// Scores many maps on all cores, without the GIL: `scoremaps` an `[N, H, W]` array or
    /// a list of `[H, W]` arrays, `gt_boxes[i]` and `image_ids[i]` those of map i. A bad
    /// map fails the whole batch (nothing of it is counted), naming the first such image.
    #[pyo3(signature = (scoremaps, gt_boxes, image_ids, normalize = None))]
    fn accumulate_batch(
        &mut self,
        py: Python<'_>,
        scoremaps: &Bound<'_, PyAny>,
        gt_boxes: Vec<Vec<[i64; 4]>>,
        image_ids: Vec<String>,
        normalize: Option<usize>,
    ) -> PyResult<()> {
        let borrowed: Vec<Borrowed> = match scoremaps.cast::<PyList>() {
            Ok(list) => list
                .iter()
                .zip(&image_ids)
                .map(|(m, id)| Borrowed::new(&m, &format!("scoremap of image {id}")))
                .collect::<PyResult<_>>()?,
            Err(_) => vec![Borrowed::new(scoremaps, "scoremaps")?],
        };
        let maps: Vec<MapView> = match scoremaps.is_instance_of::<PyList>() {
            true => borrowed
                .iter()
                .zip(&image_ids)
                .map(|(b, id)| b.map(&format!("scoremap of image {id}")))
                .collect::<PyResult<_>>()?,
            false => borrowed[0].stack("scoremaps")?,
        };
        if maps.len() != image_ids.len() || maps.len() != gt_boxes.len() {
            return Err(PyValueError::new_err(format!(
                "accumulate_batch: {} maps, {} image ids and {} GT box lists; expected one of each per map",
                maps.len(),
                image_ids.len(),
                gt_boxes.len()
            )));
        }
        let cfg = &self.cfg;
        let empty = || (Accumulator::new(cfg).expect("checked at construction"), None::<(usize, BadMap)>);
        let (acc, bad) = py.detach(|| {
            maps.par_iter()
                .enumerate()
                .fold(empty, |(mut acc, bad), (i, map)| {
                    if bad.is_some() {
                        return (acc, bad);
                    }
                    match levels(map, normalize) {
                        Ok((q, w, h)) => {
                            acc.add_quantized(&q, w, h, &gt(&gt_boxes[i]), None);
                            (acc, None)
                        }
                        Err(e) => (acc, Some((i, e))),
                    }
                })
                .reduce(empty, |(mut a, bad_a), (b, bad_b)| {
                    a.merge(&b);
                    (a, first_bad(bad_a, bad_b))
                })
        });
        if let Some((i, e)) = bad {
            return Err(e.error(&image_ids[i]));
        }
        self.acc.merge(&acc);
        Ok(())
    }

    /// [`Self::accumulate_batch`] for maps saved as `.npy` files (float32 or float64,
    /// `[H, W]`), read on all cores: no numpy array per map.
    #[pyo3(signature = (paths, gt_boxes, image_ids, normalize = None))]
    fn accumulate_files(
        &mut self,
        py: Python<'_>,
        paths: Vec<PathBuf>,
        gt_boxes: Vec<Vec<[i64; 4]>>,
        image_ids: Vec<String>,
        normalize: Option<usize>,
    ) -> PyResult<()> {
        if paths.len() != image_ids.len() || paths.len() != gt_boxes.len() {
            return Err(PyValueError::new_err(format!(
                "accumulate_files: {} paths, {} image ids and {} GT box lists; expected one of each per map",
                paths.len(),
                image_ids.len(),
                gt_boxes.len()
            )));
        }
        let cfg = &self.cfg;
        let empty = || (Accumulator::new(cfg).expect("checked at construction"), None::<(usize, PyErr)>);
        let (acc, bad) = py.detach(|| {
            paths
                .par_iter()
                .enumerate()
                // A reader per thread: its buffers are reused from map to map.
                .fold(
                    || (empty(), scoremaps::MapReader::default()),
                    |((mut acc, bad), mut reader), (i, path)| {
                        if bad.is_some() {
                            return ((acc, bad), reader);
                        }
                        let outcome = match reader.read(path) {
                            Err(e) => Err(PyOSError::new_err(format!("{e:#}"))),
                            Ok(map) => {
                                let pixels = match map.values {
                                    scoremaps::MapValues::F32(v) => Pixels::F32(v),
                                    scoremaps::MapValues::F64(v) => Pixels::F64(v),
                                };
                                let view = MapView { pixels, h: map.height, w: map.width };
                                levels(&view, normalize)
                                    .map_err(|e| e.error(&format!("{} ({})", image_ids[i], path.display())))
                            }
                        };
                        match outcome {
                            Ok((q, w, h)) => {
                                acc.add_quantized(&q, w, h, &gt(&gt_boxes[i]), None);
                                ((acc, None), reader)
                            }
                            Err(e) => ((acc, Some((i, e))), reader),
                        }
                    },
                )
                .map(|(state, _)| state)
                .reduce(empty, |(mut a, bad_a), (b, bad_b)| {
                    a.merge(&b);
                    (a, first_bad(bad_a, bad_b))
                })
        });
        if let Some((_, e)) = bad {
            return Err(e);
        }
        self.acc.merge(&acc);
        Ok(())
    }

    /// Maps accumulated so far (the official `cnt`).
    #[getter]
    fn cnt(&self) -> u64 {
        self.acc.count()
    }

    /// `[IoU thresholds, CAM thresholds]` correct-image counts as float64, the official
    /// `num_correct` rows: all contours (`all_contours`) or the largest one.
    fn num_correct<'py>(&self, py: Python<'py>, all_contours: bool) -> Bound<'py, PyArray2<f64>> {
        let rows = self.acc.num_correct(all_contours);
        let flat: Vec<f64> = rows.iter().flatten().map(|&c| c as f64).collect();
        Array2::from_shape_vec((self.cfg.iou_thresholds.len(), self.cfg.thresholds.len()), flat)
            .expect("one row per IoU")
            .into_pyarray(py)
    }

    /// wsol's localization numbers (the `metrics.json` keys: maxboxacc, maxboxacc_v2,
    /// per-IoU maxima, best thresholds, gt_known_loc, ...) as a JSON object.
    fn metrics_json(&self) -> String {
        serde_json::to_string(&self.acc.finish()).expect("metrics serialize")
    }
}

/// Per CAM threshold, a `[k, 4]` array of boxes, and the k of each.
type BoxesPerThreshold<'py> = (Vec<Bound<'py, PyArray2<i64>>>, Vec<usize>);

/// `compute_bboxes_from_scoremaps`: per CAM threshold, the boxes of the largest contour (or
/// of all contours) of a map in [0, 1], as `[k, 4]` int64 arrays, and their counts.
#[pyfunction]
#[pyo3(signature = (scoremap, scoremap_threshold_list, multi_contour_eval = false))]
pub fn compute_bboxes_from_scoremaps<'py>(
    py: Python<'py>,
    scoremap: &Bound<'py, PyAny>,
    scoremap_threshold_list: Vec<f64>,
    multi_contour_eval: bool,
) -> PyResult<BoxesPerThreshold<'py>> {
    let arr = Borrowed::new(scoremap, "scoremap")?;
    let map = arr.map("scoremap")?;
    let q = quantize_checked(&map).map_err(|e| e.error("(compute_bboxes_from_scoremaps)"))?;
    let sweep = sweep_quantized(&q, map.w, map.h, &scoremap_threshold_list);
    let mut boxes = Vec::with_capacity(sweep.index.len());
    let mut counts = Vec::with_capacity(sweep.index.len());
    for &g in &sweep.index {
        let group = &sweep.groups[g];
        let chosen: &[BBox] = if multi_contour_eval { &group.all } else { std::slice::from_ref(&group.largest) };
        let flat: Vec<i64> = chosen.iter().flat_map(|b| [b.x0, b.y0, b.x1, b.y1].map(i64::from)).collect();
        boxes.push(Array2::from_shape_vec((chosen.len(), 4), flat).expect("4 per box").into_pyarray(py));
        counts.push(chosen.len());
    }
    Ok((boxes, counts))
}
