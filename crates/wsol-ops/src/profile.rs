//! Time spent in each of our CPU ops, summed per op and shape, for `wsol bench train
//! --profile`: the breakdown that says which layer to make faster next. Off by default;
//! an op pays one relaxed atomic load when off. What the table leaves out of a step is
//! candle's own ops (residual adds, gradient accumulation, the loss).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<BTreeMap<String, Row>> = Mutex::new(BTreeMap::new());

/// One op at one shape, summed over its calls.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Row {
    pub op: String,
    pub calls: u64,
    pub ms: f64,
    /// Floating-point operations of all calls (multiply-adds count two), where known.
    pub flops: f64,
}

impl Row {
    pub fn gflops_per_s(&self) -> Option<f64> {
        (self.flops > 0.0 && self.ms > 0.0).then(|| self.flops / self.ms / 1e6)
    }
}

/// Starts (or stops) recording, and clears what was recorded.
pub fn record(on: bool) {
    TABLE.lock().unwrap_or_else(|e| e.into_inner()).clear();
    ON.store(on, Ordering::Relaxed);
}

/// What was recorded since [`record`], slowest op first.
pub fn rows() -> Vec<Row> {
    let mut rows: Vec<Row> = TABLE.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
    rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    rows
}

/// Times the scope it lives in, under the name `op()` (built only while recording),
/// crediting it `flops`.
pub fn span(op: impl FnOnce() -> String, flops: f64) -> Span {
    Span(ON.load(Ordering::Relaxed).then(|| (op(), flops, Instant::now())))
}

#[must_use = "a span times the scope it is bound in"]
pub struct Span(Option<(String, f64, Instant)>);

impl Drop for Span {
    fn drop(&mut self) {
        if let Some((op, flops, t0)) = self.0.take() {
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
            let row = table.entry(op.clone()).or_insert_with(|| Row { op, ..Row::default() });
            row.calls += 1;
            row.ms += ms;
            row.flops += flops;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_add_up_per_op_only_while_recording() {
        // Other tests' ops may run meanwhile: look at this test's rows only.
        let ours = || rows().into_iter().filter(|r| r.op.starts_with("test.")).collect::<Vec<_>>();
        drop(span(|| "test.before".into(), 1.0));
        record(true);
        for _ in 0..3 {
            let _s = span(|| "test.conv".into(), 2e6);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        drop(span(|| "test.relu".into(), 0.0));
        let rows = ours();
        record(false);
        drop(span(|| "test.after".into(), 1.0));
        assert_eq!(rows.len(), 2, "{rows:?}");
        let conv = &rows[0];
        assert_eq!((conv.op.as_str(), conv.calls, conv.flops), ("test.conv", 3, 6e6));
        assert!(conv.ms >= 6.0, "{conv:?}");
        assert!(conv.gflops_per_s().is_some() && rows[1].gflops_per_s().is_none());
        assert!(ours().is_empty());
    }
}
