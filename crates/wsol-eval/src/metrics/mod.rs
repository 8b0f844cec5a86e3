//! Scores from boxes and predictions: the box-accuracy family (MaxBoxAcc, MaxBoxAccV2,
//! GT-known / top-k localization) and classification accuracy, in percent, with the
//! official evaluator's arithmetic (`count * 100. / cnt` in f64), PxAP for mask
//! datasets, and the per-image rows behind them (`per_image.csv`).

mod box_acc;
mod classification;
#[cfg(test)]
mod opencv_parity;
mod per_image;
mod pxap;

pub use box_acc::{BoxAccumulator, BoxEvalConfig, ClsOutcome, Curves, LocalizationMetrics, ScoredSweep};
pub use classification::{topk_correct, ClsAccumulator};
pub use per_image::{ImageInfo, PerImageRecorder, PerImageRow, PerImageTable, Prediction, PER_IMAGE_HEADER};
pub use pxap::{PxapAccumulator, MASK_BG, MASK_FG, MASK_IGNORE};

/// `num_correct * 100. / float(cnt)`; an empty split scores 0 rather than NaN.
pub(crate) fn percent(count: u64, total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    count as f64 * 100.0 / total as f64
}
