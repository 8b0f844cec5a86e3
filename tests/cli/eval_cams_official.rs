//! `wsol eval-cams` against numbers computed by the official clovaai/wsolevaluation code
//! itself (its `inference.CAMComputer` loop with `evaluation.BoxEvaluator` and
//! `MaskEvaluator`), stored with the maps and metadata in
//! `tests/fixtures/eval_parity/official/`. `expected.json` records the wsolevaluation
//! commit and the numpy / OpenCV versions; `scripts/make_official_parity_fixture.py`
//! regenerates everything (see its docstring).

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

/// Box accuracies are `count * 100 / n` on both sides, so any real difference is at least
/// `100 / n`; PxAP agrees to the last bit today. Metrics and curve points: within 0.01.
const TOL: f64 = 0.01;
/// Best thresholds must be the same sweep step.
const THR_TOL: f64 = 1e-9;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval_parity/official")
}

fn expected() -> Value {
    read_json(&fixture().join("expected.json"))
}

fn text<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("expected.json: {what} is not a string: {v}"))
}

/// Records a mismatch (a missing number counts as one).
fn near(bad: &mut Vec<String>, what: String, ours: Option<f64>, official: f64, tol: f64) {
    match ours {
        Some(o) if (o - official).abs() <= tol => {}
        _ => bad.push(format!("{what}: ours {ours:?}, official {official}")),
    }
}

/// `curve.csv`: header and numeric rows.
fn read_curve(path: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("curve.csv header").split(',').map(str::to_string).collect();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(|x| x.trim().parse::<f64>().expect("curve.csv number")).collect())
        .collect();
    (header, rows)
}

/// Runs eval-cams on the box split `name` of the fixture for every recorded sweep interval,
/// in both contour modes, and lists every number that differs from the official one.
fn box_disagreements(name: &str) -> Vec<String> {
    let exp = expected();
    let set = &exp[name];
    let n = set["num_images"].as_u64().expect("num_images") as f64;
    let size = exp["image_size"].as_u64().expect("image_size").to_string();
    let ious: Vec<String> = exp["iou_thresholds"]
        .as_array()
        .expect("iou_thresholds")
        .iter()
        .map(|v| v.as_u64().expect("iou").to_string())
        .collect();
    let runs = set["runs"].as_object().expect("runs");
    assert!(!runs.is_empty(), "expected.json: {name} has no runs");
    let iou_list = ious.join(",");
    let tmp = tempfile::tempdir().unwrap();
    let mut bad = Vec::new();
    for (interval, run) in runs {
        let step: f64 = interval.parse().expect("interval");
        // (flag, the official run its V2 numbers correspond to)
        for (flag, mode) in [("--multi-contour", "all"), ("--largest-contour", "largest")] {
            let out = tmp.path().join(format!("{name}-{interval}{flag}"));
            let args = [
                "eval-cams",
                "--metadata",
                text(&set["metadata"], "metadata"),
                "--cams",
                text(&set["cams"], "cams"),
                "--predictions",
                text(&set["predictions"], "predictions"),
                "--image-size",
                size.as_str(),
                "--iou",
                iou_list.as_str(),
                "--cam-curve-interval",
                interval.as_str(),
                flag,
                "--out",
                out.to_str().unwrap(),
                "--quiet",
            ];
            wsol_ok(&args, &fixture());
            let m = read_json(&out.join("metrics.json"));
            let at = |what: &str| format!("{name} interval {interval} {flag}: {what}");
            near(&mut bad, at("num_images"), m["num_images"].as_f64(), n, 0.0);
            near(&mut bad, at("maxboxacc"), m["maxboxacc"].as_f64(), run["maxboxacc"].as_f64().unwrap(), TOL);
            near(&mut bad, at("gt_known_loc"), m["gt_known_loc"].as_f64(), run["maxboxacc"].as_f64().unwrap(), TOL);
            near(
                &mut bad,
                at("best_threshold_v1"),
                m["best_threshold_v1"].as_f64(),
                run["best_threshold"].as_f64().unwrap(),
                THR_TOL,
            );
            near(&mut bad, at("maxboxacc_v2"), m["maxboxacc_v2"].as_f64(), run[mode]["mean"].as_f64().unwrap(), TOL);
            for iou in &ious {
                let key = iou.as_str();
                near(
                    &mut bad,
                    at(&format!("maxboxacc_v2_by_iou[{iou}]")),
                    m["maxboxacc_v2_by_iou"][key].as_f64(),
                    run[mode]["maxboxacc_by_iou"][key].as_f64().unwrap(),
                    TOL,
                );
                near(
                    &mut bad,
                    at(&format!("best_threshold_v2_by_iou[{iou}]")),
                    m["best_threshold_v2_by_iou"][key].as_f64(),
                    run[mode]["best_threshold_by_iou"][key].as_f64().unwrap(),
                    THR_TOL,
                );
            }
            // Every curve point, both contour rules (curve.csv has both whatever the flag).
            let (header, rows) = read_curve(&out.join("curve.csv"));
            assert!(!rows.is_empty(), "{}: empty curve.csv", at("curve"));
            for (t, row) in rows.iter().enumerate() {
                near(&mut bad, at(&format!("curve.csv row {t} threshold")), Some(row[0]), t as f64 * step, 1e-6);
            }
            for rule in ["largest", "all"] {
                for iou in &ious {
                    let counts = run[rule]["num_correct"][iou.as_str()].as_array().expect("num_correct");
                    if counts.len() != rows.len() {
                        bad.push(at(&format!("curve.csv has {} thresholds, official {}", rows.len(), counts.len())));
                        continue;
                    }
                    let column = format!("{}_iou{iou}", if rule == "largest" { "v1" } else { "v2" });
                    let c = header
                        .iter()
                        .position(|h| *h == column)
                        .unwrap_or_else(|| panic!("curve.csv has no column {column}: {header:?}"));
                    for (row, count) in rows.iter().zip(counts) {
                        near(
                            &mut bad,
                            at(&format!("curve {column} at threshold {:.3}", row[0])),
                            Some(row[c]),
                            count.as_f64().unwrap() * 100.0 / n,
                            TOL,
                        );
                    }
                }
            }
        }
    }
    bad
}

fn report(bad: &[String]) -> String {
    let more = format!("... and {} more", bad.len().saturating_sub(40));
    let mut s: Vec<&str> = bad.iter().take(40).map(String::as_str).collect();
    if bad.len() > 40 {
        s.push(&more);
    }
    format!("{} disagreement(s) with the official wsolevaluation numbers:\n{}", bad.len(), s.join("\n"))
}

/// MaxBoxAcc, MaxBoxAccV2, per-IoU accuracies and best thresholds, and every point of the
/// accuracy curves, at cam_curve_interval 0.01 and 0.001, largest and all contours.
#[test]
fn box_metrics_match_official_box_evaluator() {
    let bad = box_disagreements("boxes");
    assert!(bad.is_empty(), "{}", report(&bad));
}

/// PxAP of the mask split at cam_curve_interval 0.01 and 0.001.
#[test]
fn pxap_matches_official_mask_evaluator() {
    let exp = expected();
    let set = &exp["masks"];
    let size = exp["image_size"].as_u64().expect("image_size").to_string();
    let pxap = set["pxap"].as_object().expect("pxap");
    assert!(!pxap.is_empty());
    let tmp = tempfile::tempdir().unwrap();
    let mut bad = Vec::new();
    for (interval, official) in pxap {
        let out = tmp.path().join(format!("masks-{interval}"));
        let args = [
            "eval-cams",
            "--metadata",
            text(&set["metadata"], "metadata"),
            "--cams",
            text(&set["cams"], "cams"),
            "--masks",
            text(&set["masks"], "masks"),
            "--image-size",
            size.as_str(),
            "--cam-curve-interval",
            interval.as_str(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ];
        wsol_ok(&args, &fixture());
        let m = read_json(&out.join("metrics.json"));
        near(
            &mut bad,
            format!("masks interval {interval}: num_images"),
            m["num_images"].as_f64(),
            set["num_images"].as_f64().unwrap(),
            0.0,
        );
        near(&mut bad, format!("masks interval {interval}: pxap"), m["pxap"].as_f64(), official.as_f64().unwrap(), TOL);
    }
    assert!(bad.is_empty(), "{}", report(&bad));
}

/// Maps that separate a float32 pipeline from the official one, which converts every CAM
/// to float64 before resizing and normalizing: a constant map of another size (float32
/// resize ripples, stretched to [0, 1], give spurious boxes; float64 keeps it constant,
/// so all zero) and a pixel tying for the maximum in float64 that is 1 ulp below it in
/// float32. Details in expected.json `known_diff.note`.
#[test]
fn float64_maps_match_official_where_float32_would_not() {
    let bad = box_disagreements("known_diff");
    assert!(bad.is_empty(), "{}", report(&bad));
}
