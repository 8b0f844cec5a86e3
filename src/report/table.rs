//! Console tables for metrics.

/// Two aligned columns under a `metric  value` header and a rule: names left-aligned,
/// values right-aligned so decimal numbers line up.
pub fn metrics_table(rows: &[(String, String)]) -> String {
    let width = |s: &str| s.chars().count();
    let w0 = rows.iter().map(|(k, _)| width(k)).max().unwrap_or(0).max(width("metric"));
    let w1 = rows.iter().map(|(_, v)| width(v)).max().unwrap_or(0).max(width("value"));
    let mut out = format!("{:<w0$}  {:>w1$}\n{}  {}\n", "metric", "value", "-".repeat(w0), "-".repeat(w1));
    for (k, v) in rows {
        out.push_str(&format!("{k:<w0$}  {v:>w1$}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let rows = vec![
            ("top1_cls".to_string(), "72.31".to_string()),
            ("maxboxacc_v2".to_string(), "5.00".to_string()),
            ("split".to_string(), "test".to_string()),
        ];
        let t = metrics_table(&rows);
        let expected = "\
metric        value
------------  -----
top1_cls      72.31
maxboxacc_v2   5.00
split          test
";
        assert_eq!(t, expected);
    }

    #[test]
    fn empty_and_wide_unicode() {
        assert_eq!(metrics_table(&[]), "metric  value\n------  -----\n");
        let t = metrics_table(&[("µ".into(), "123456".into())]);
        assert_eq!(t, "metric   value\n------  ------\nµ       123456\n");
    }
}
