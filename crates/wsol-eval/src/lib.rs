//! wsol-eval: the WSOL evaluation engine of Choe et al., CVPR 2020 (clovaai/wsolevaluation),
//! on plain arrays and annotation files.
//!
//! Maps from any source are scored the same way: prepare each map (resize, min-max
//! normalize), sweep the CAM thresholds, trace contours into boxes, and accumulate
//! MaxBoxAcc / MaxBoxAccV2 / top-k Loc / PxAP. Nothing here knows about models or
//! training, and nothing depends on candle.
//!
//! - [`metadata`], [`masks`]: the metadata format (boxes) and mask splits (OpenImages).
//! - [`localize`]: map preparation, thresholds, contours, boxes, IoU.
//! - [`metrics`]: the accumulators and the numbers of `metrics.json`.
//! - [`scoremaps`]: score maps as `.npy` files, the layout wsolevaluation reads.
//! - [`faithfulness`]: Average Drop / Increase, Deletion / Insertion, ROAD: the perturbed
//!   inputs a map asks for and the numbers from their class scores (the model is the caller's).
//! - [`eval_cams`]: a folder of maps against a split, end to end (`wsol eval-cams`).
//! - [`results`], [`report`]: `metrics.json`, `curve.csv`, `curve.png`, `per_image.csv`,
//!   console rows.

pub mod eval_cams;
pub mod faithfulness;
pub mod fs;
pub mod localize;
pub mod masks;
pub mod metadata;
pub mod metrics;
pub mod report;
pub mod results;
pub mod scoremaps;
