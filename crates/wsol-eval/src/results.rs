//! One evaluation's numbers, as written to `metrics.json` and printed as a table.

use serde_json::{json, Map, Value};

use crate::metrics::{LocalizationMetrics, PerImageTable};

pub struct EvalResult {
    pub split: String,
    pub cam: String,
    pub num_images: usize,
    /// None when no class predictions were given (`wsol eval-cams` without --predictions).
    pub top1_cls: Option<f64>,
    pub top5_cls: Option<f64>,
    /// None when the split has no boxes (also for mask splits, which have none).
    pub loc: Option<LocalizationMetrics>,
    /// PxAP in percent; Some only when the split was scored against masks.
    pub pxap: Option<f64>,
    /// The rows of `per_image.csv`; Some when boxes were scored and rows were asked for.
    pub per_image: Option<PerImageTable>,
    /// Faithfulness of the maps (`eval.faithfulness`), when asked for.
    pub faithfulness: Option<FaithfulnessResult>,
}

/// Means over the split of the faithfulness metrics, and what they cost.
#[derive(Clone, Debug)]
pub struct FaithfulnessResult {
    /// By metrics.json key (`avg_drop`, `deletion_auc`, `road_morf`, ...).
    pub values: std::collections::BTreeMap<String, f64>,
    /// Perturbed inputs the model scored per image.
    pub inputs_per_image: f64,
    /// Wall seconds per image (not in metrics.json: it changes from run to run).
    pub seconds_per_image: f64,
}

/// Older names kept beside the ones that say their contour rule: `maxboxacc_by_iou` and
/// `best_threshold` are DESIGN.md's keys, `best_threshold_by_iou` was written before the
/// v1/v2 names. `(alias, key it repeats)`.
pub const ALIASES: &[(&str, &str)] = &[
    ("maxboxacc_by_iou", "maxboxacc_v2_by_iou"),
    ("best_threshold", "best_threshold_v1"),
    ("best_threshold_by_iou", "best_threshold_v2_by_iou"),
];

impl EvalResult {
    /// The `metrics.json` object (keys of DESIGN.md).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("split".into(), json!(self.split));
        m.insert("cam".into(), json!(self.cam));
        m.insert("num_images".into(), json!(self.num_images));
        if let (Some(t1), Some(t5)) = (self.top1_cls, self.top5_cls) {
            m.insert("top1_cls".into(), json!(t1));
            m.insert("top5_cls".into(), json!(t5));
        }
        if let Some(l) = &self.loc {
            if let Value::Object(loc) = serde_json::to_value(l).expect("metrics serialize") {
                for (k, v) in loc {
                    m.entry(k).or_insert(v);
                }
            }
            for (alias, key) in ALIASES {
                let v = m[*key].clone();
                m.insert(alias.to_string(), v);
            }
        }
        if let Some(p) = self.pxap {
            m.insert("pxap".into(), json!(p));
        }
        if let Some(f) = &self.faithfulness {
            for (k, v) in &f.values {
                m.insert(k.clone(), json!(v));
            }
            m.insert("faithfulness_inputs_per_image".into(), json!(f.inputs_per_image));
        }
        Value::Object(m)
    }

    /// Rows for the console table, most-read numbers first.
    pub fn table_rows(&self) -> Vec<(String, String)> {
        let mut rows =
            vec![("split".to_string(), format!("{} ({} images, {})", self.split, self.num_images, self.cam))];
        let pct = |v: f64| format!("{v:.2}");
        let opt = |v: Option<f64>| v.map(pct).unwrap_or_else(|| "n/a".into());
        rows.push(("top1_cls".into(), opt(self.top1_cls)));
        rows.push(("top5_cls".into(), opt(self.top5_cls)));
        if let Some(l) = &self.loc {
            rows.push(("top1_loc".into(), opt(l.top1_loc)));
            rows.push(("top5_loc".into(), opt(l.top5_loc)));
            rows.push(("gt_known_loc".into(), pct(l.gt_known_loc)));
            rows.push(("maxboxacc (v1 @IoU50)".into(), pct(l.maxboxacc)));
            rows.push(("maxboxacc_v2".into(), pct(l.maxboxacc_v2)));
            for (iou, v) in by_iou_numeric(&l.maxboxacc_v2_by_iou) {
                rows.push((format!("  v2 @IoU{iou}"), pct(v)));
            }
            rows.push(("best_threshold_v1".into(), format!("{:.3}", l.best_threshold_v1)));
            rows.push(("gt_known_loc_fixed".into(), pct(l.gt_known_loc_fixed)));
        } else if self.pxap.is_none() {
            rows.push(("localization".into(), "unavailable (split has no boxes)".into()));
        }
        if let Some(p) = self.pxap {
            rows.push(("pxap".into(), pct(p)));
        }
        if let Some(f) = &self.faithfulness {
            for (k, v) in &f.values {
                rows.push((k.clone(), format!("{v:.4}")));
            }
            let cost = format!("{:.0} inputs, {:.1} ms per image", f.inputs_per_image, f.seconds_per_image * 1e3);
            rows.push(("faithfulness cost".into(), cost));
        }
        rows
    }

    /// A named metric for model selection.
    pub fn metric(&self, key: &str) -> Option<f64> {
        match key {
            "top1_cls" => self.top1_cls,
            "top5_cls" => self.top5_cls,
            _ => self.to_json().get(key).and_then(Value::as_f64),
        }
    }
}

/// A per-IoU map's entries in increasing IoU (its keys sort as text: "100" < "30").
pub fn by_iou_numeric(map: &std::collections::BTreeMap<String, f64>) -> Vec<(u32, f64)> {
    let mut v: Vec<(u32, f64)> = map.iter().filter_map(|(k, v)| Some((k.parse().ok()?, *v))).collect();
    v.sort_by_key(|e| e.0);
    v
}

/// `curve.csv`: accuracy at every threshold, per IoU, for the largest-contour (`v1_iouXX`,
/// MaxBoxAcc) and all-contour (`v2_iouXX`, MaxBoxAccV2) rules, plus top-1/top-5 loc (v1,
/// IoU 50) when known; in percent.
pub fn curve_csv(curves: &crate::metrics::Curves) -> String {
    let mut header = vec!["threshold".to_string()];
    for iou in &curves.iou_thresholds {
        header.push(format!("v1_iou{iou}"));
    }
    for iou in &curves.iou_thresholds {
        header.push(format!("v2_iou{iou}"));
    }
    if curves.top1_loc.is_some() {
        header.extend(["top1_loc".to_string(), "top5_loc".to_string()]);
    }
    let mut out = header.join(",") + "\n";
    for (t, threshold) in curves.thresholds.iter().enumerate() {
        let mut row = vec![format!("{threshold:.6}")];
        row.extend(curves.largest.iter().map(|c| format!("{:.4}", c[t])));
        row.extend(curves.all.iter().map(|c| format!("{:.4}", c[t])));
        if let (Some(t1), Some(t5)) = (&curves.top1_loc, &curves.top5_loc) {
            row.extend([format!("{:.4}", t1[t]), format!("{:.4}", t5[t])]);
        }
        out += &(row.join(",") + "\n");
    }
    out
}

impl EvalResult {
    /// Writes `metrics.json` (with `extra` keys merged in) and, when boxes were scored,
    /// `curve.csv`, `curve.png` and `per_image.csv` into `dir`.
    pub fn write(&self, dir: &std::path::Path, extra: &[(&str, Value)]) -> anyhow::Result<()> {
        let mut json = self.to_json();
        for (k, v) in extra {
            json[*k] = v.clone();
        }
        crate::report::write_json(&dir.join("metrics.json"), &json)?;
        if let Some(l) = &self.loc {
            crate::fs::atomic_write(&dir.join("curve.csv"), curve_csv(&l.curves).as_bytes())?;
            let png = crate::report::curve_plot::curve_png(&l.curves)?;
            crate::fs::atomic_write(&dir.join("curve.png"), &png)?;
        }
        if let Some(rows) = &self.per_image {
            crate::fs::atomic_write(&dir.join("per_image.csv"), rows.to_csv().as_bytes())?;
        }
        Ok(())
    }
}
