//! `wsol eval-cams`: maps from anywhere scored against a metadata split (wsol-eval alone).

use anyhow::Result;

use crate::cli::EvalCamsArgs;
use crate::report::metrics_table;

pub fn run(a: EvalCamsArgs) -> Result<()> {
    let min_interval = wsol_eval::localize::MIN_CAM_CURVE_INTERVAL;
    if !(min_interval..1.0).contains(&a.cam_curve_interval) {
        anyhow::bail!("--cam-curve-interval {:?}: expected a value in [{min_interval}, 1)", a.cam_curve_interval);
    }
    if !(0.0..1.0).contains(&a.fixed_threshold) {
        anyhow::bail!("--fixed-threshold {}: expected a value in [0, 1)", a.fixed_threshold);
    }
    if a.image_size == 0 {
        anyhow::bail!("--image-size: expected a positive size");
    }
    let iou_thresholds = wsol_eval::eval_cams::parse_iou_list(&a.iou)?;
    if !iou_thresholds.contains(&50) {
        anyhow::bail!("--iou {}: must contain 50 (MaxBoxAcc and GT-known Loc use IoU 0.5)", a.iou);
    }
    let opts = wsol_eval::eval_cams::EvalCamsOptions {
        metadata: a.metadata,
        cams: a.cams,
        predictions: a.predictions,
        image_size: a.image_size,
        iou_thresholds,
        cam_curve_interval: a.cam_curve_interval,
        multi_contour: !a.largest_contour,
        fixed_threshold: a.fixed_threshold,
        masks: a.masks,
    };
    // Without --out, a new folder, never files strewn into the current directory.
    let (out, named_here) = match a.out {
        Some(o) => (o, false),
        None => (crate::train::stamped_dir(std::path::Path::new("."), "eval-cams"), true),
    };
    let result = wsol_eval::eval_cams::eval_cams(&opts)?;
    result.write(&out, &[])?;
    println!("{}", metrics_table(&result.table_rows()));
    if !a.quiet || named_here {
        eprintln!("metrics written to {}", out.join("metrics.json").display());
    }
    Ok(())
}
