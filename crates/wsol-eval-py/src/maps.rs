//! Score maps handed in from numpy: borrowed without a copy (float32 or float64, C order),
//! checked as the official `check_scoremap_validity`, and turned into the 8-bit levels the
//! threshold sweep reads.

use numpy::{PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use wsol_eval::localize::prepare_quantized;

/// A map's pixels in the caller's dtype.
#[derive(Clone, Copy)]
pub enum Pixels<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

/// One `h` x `w` map, row-major.
#[derive(Clone, Copy)]
pub struct MapView<'a> {
    pub pixels: Pixels<'a>,
    pub h: usize,
    pub w: usize,
}

/// A numpy array borrowed read-only for as long as its views are in use.
pub enum Borrowed<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
}

impl<'py> Borrowed<'py> {
    /// Borrows a float32 / float64 array; anything else is a TypeError naming `what`.
    pub fn new(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, f64>>() {
            return Ok(Borrowed::F64(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, f32>>() {
            return Ok(Borrowed::F32(a));
        }
        let got = match obj.getattr("dtype") {
            Ok(dtype) => format!("dtype {}", dtype.str()?),
            Err(_) => format!("a {}", obj.get_type().name()?),
        };
        Err(PyTypeError::new_err(format!("{what}: expected a numpy array of float32 or float64, got {got}")))
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Borrowed::F32(a) => a.shape(),
            Borrowed::F64(a) => a.shape(),
        }
    }

    /// All pixels in C order; a TypeError when the array is not C-contiguous (the Python
    /// layer makes it so before calling).
    pub fn pixels(&self, what: &str) -> PyResult<Pixels<'_>> {
        let err = |_| PyTypeError::new_err(format!("{what}: expected a C-contiguous array"));
        Ok(match self {
            Borrowed::F32(a) => Pixels::F32(a.as_slice().map_err(err)?),
            Borrowed::F64(a) => Pixels::F64(a.as_slice().map_err(err)?),
        })
    }

    /// The array as one map (`[H, W]`).
    pub fn map(&self, what: &str) -> PyResult<MapView<'_>> {
        match *self.shape() {
            [h, w] => Ok(MapView { pixels: self.pixels(what)?, h, w }),
            ref s => Err(PyValueError::new_err(format!("{what}: expected a 2-D array (H, W), got shape {}", shape(s)))),
        }
    }

    /// The array as a stack of maps (`[N, H, W]`).
    pub fn stack(&self, what: &str) -> PyResult<Vec<MapView<'_>>> {
        let [n, h, w] = *self.shape() else {
            let s = self.shape();
            return Err(PyValueError::new_err(format!(
                "{what}: expected a 3-D array (N, H, W), got shape {}",
                shape(s)
            )));
        };
        let per = h * w;
        Ok(match self.pixels(what)? {
            Pixels::F32(p) if per > 0 => {
                p.chunks_exact(per).map(|c| MapView { pixels: Pixels::F32(c), h, w }).collect()
            }
            Pixels::F64(p) if per > 0 => {
                p.chunks_exact(per).map(|c| MapView { pixels: Pixels::F64(c), h, w }).collect()
            }
            _ => (0..n).map(|_| MapView { pixels: Pixels::F64(&[]), h, w }).collect(),
        })
    }
}

/// A shape as numpy prints it: `(224, 224)`, `(3,)`.
fn shape(s: &[usize]) -> String {
    match s {
        [n] => format!("({n},)"),
        _ => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

/// Why a map cannot be scored as the official evaluator would score it.
pub enum BadMap {
    Empty,
    NaN,
    OutOfRange { min: f64, max: f64 },
}

impl BadMap {
    /// The ValueError a caller sees, naming the image.
    pub fn error(&self, image: &str) -> PyErr {
        let msg = match self {
            BadMap::Empty => "the map has no pixels".to_string(),
            BadMap::NaN => "the map holds NaN (normalize it first: `normalize_scoremap` zeroes such maps)".to_string(),
            BadMap::OutOfRange { min, max } => format!(
                "values must lie in [0, 1], got min {min} and max {max} (normalize it first, or pass normalize=True)"
            ),
        };
        PyValueError::new_err(format!("scoremap of image {image}: {msg}"))
    }
}

/// `(scoremap * 255).astype(np.uint8)` after `check_scoremap_validity`: a map in [0, 1]
/// without NaN, levels from the float64 product truncated (a float32 map widened first,
/// as `astype(np.float64)` would). One pass; the checks only cost a compare per pixel.
pub fn quantize_checked(map: &MapView) -> Result<Vec<u8>, BadMap> {
    fn levels<T: Copy + Into<f64>>(px: &[T]) -> Result<Vec<u8>, BadMap> {
        if px.is_empty() {
            return Err(BadMap::Empty);
        }
        let mut bad = false;
        let q = px
            .iter()
            .map(|&v| {
                let v: f64 = v.into();
                // `!(v >= 0 && v <= 1)` is also true for NaN.
                bad |= !((0.0..=1.0).contains(&v));
                (v * 255.0) as u8
            })
            .collect();
        if !bad {
            return Ok(q);
        }
        let vals = || px.iter().map(|&v| v.into());
        if vals().any(|v: f64| v.is_nan()) {
            return Err(BadMap::NaN);
        }
        let (min, max) = vals().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        Err(BadMap::OutOfRange { min, max })
    }
    match map.pixels {
        Pixels::F32(p) => levels(p),
        Pixels::F64(p) => levels(p),
    }
}

/// A raw CAM to levels as `wsol eval-cams` and the official `inference.py` prepare it:
/// bicubic resize to `size` x `size` (when it is not that size already), min-max
/// normalization (NaN or constant maps become zeros), then quantization.
pub fn prepare(map: &MapView, size: usize) -> Result<Vec<u8>, BadMap> {
    if map.h * map.w == 0 {
        return Err(BadMap::Empty);
    }
    Ok(match map.pixels {
        Pixels::F32(p) => prepare_quantized(p, map.w, map.h, size),
        Pixels::F64(p) => prepare_quantized(p, map.w, map.h, size),
    })
}

/// Float64 pixels of a map (for the PxAP histograms, which compare in float64 as numpy
/// does when float32 scores meet float64 bin edges).
pub fn to_f64(map: &MapView) -> Vec<f64> {
    match map.pixels {
        Pixels::F32(p) => p.iter().map(|&v| v as f64).collect(),
        Pixels::F64(p) => p.to_vec(),
    }
}

/// The official `inference.py` preparation of a raw CAM as a float64 map in [0, 1]:
/// bicubic resize to `size` x `size` (as `cv2.resize(..., INTER_CUBIC)`), then
/// `normalize_scoremap` (a NaN or constant map becomes zeros).
#[pyfunction]
#[pyo3(signature = (cam, size = 224))]
pub fn prepare_scoremap<'py>(
    py: Python<'py>,
    cam: &Bound<'py, PyAny>,
    size: usize,
) -> PyResult<Bound<'py, numpy::PyArray2<f64>>> {
    use numpy::IntoPyArray;
    let arr = Borrowed::new(cam, "cam")?;
    let map = arr.map("cam")?;
    if map.h * map.w == 0 || size == 0 {
        return Err(PyValueError::new_err("cam: expected a non-empty map and a positive size"));
    }
    let prepared = match map.pixels {
        Pixels::F32(p) => wsol_eval::localize::prepare_map(p, map.w, map.h, size),
        Pixels::F64(p) => wsol_eval::localize::prepare_map(p, map.w, map.h, size),
    };
    Ok(numpy::ndarray::Array2::from_shape_vec((size, size), prepared).expect("size x size").into_pyarray(py))
}
