//! One evaluation's numbers, as written to `metrics.json` and printed as a table.

use serde_json::{json, Map, Value};

use crate::metrics::LocalizationMetrics;

pub struct EvalResult {
    pub split: String,
    pub cam: String,
    pub num_images: usize,
    /// None when no class predictions were given (`wsol eval-cams` without --predictions).
    pub top1_cls: Option<f64>,
    pub top5_cls: Option<f64>,
    /// None when the split has no boxes.
    pub loc: Option<LocalizationMetrics>,
}

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
        }
        Value::Object(m)
    }

    /// Rows for the console table, most-read numbers first.
    pub fn table_rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![("split".to_string(), format!("{} ({} images, {})", self.split, self.num_images, self.cam))];
        let pct = |v: f64| format!("{v:.2}");
        let opt = |v: Option<f64>| v.map(pct).unwrap_or_else(|| "n/a".into());
        rows.push(("top1_cls".into(), opt(self.top1_cls)));
        rows.push(("top5_cls".into(), opt(self.top5_cls)));
        if let Some(l) = &self.loc {
            rows.push(("top1_loc".into(), opt(l.top1_loc)));
            rows.push(("top5_loc".into(), opt(l.top5_loc)));
            rows.push(("gt_known_loc".into(), pct(l.gt_known_loc)));
            rows.push(("maxboxacc".into(), pct(l.maxboxacc)));
            rows.push(("maxboxacc_v2".into(), pct(l.maxboxacc_v2)));
            for (iou, v) in &l.maxboxacc_by_iou {
                rows.push((format!("  box acc @IoU{iou}"), pct(*v)));
            }
            rows.push(("best_threshold".into(), format!("{:.3}", l.best_threshold)));
            rows.push(("gt_known_loc_fixed".into(), pct(l.gt_known_loc_fixed)));
        } else {
            rows.push(("localization".into(), "unavailable (split has no boxes)".into()));
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
