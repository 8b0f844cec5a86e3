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

/// Columns under a header and a rule; numbers (cells that parse as one) right-aligned,
/// text left-aligned, the last column unpadded.
pub fn grid(header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let n = header.len();
    let w: Vec<usize> = (0..n)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|v| width(v)).chain([width(header[c])]).max().unwrap_or(0))
        .collect();
    let numeric = |c: usize| rows.iter().filter_map(|r| r.get(c)).all(|v| v.parse::<f64>().is_ok());
    let cell = |c: usize, v: &str| {
        let pad = " ".repeat(w[c] - width(v));
        match (c + 1 == n, numeric(c)) {
            (_, true) => format!("{pad}{v}"),
            (true, false) => v.to_string(),
            (false, false) => format!("{v}{pad}"),
        }
    };
    let line = |cells: Vec<String>| cells.join("  ").trim_end().to_string() + "\n";
    let mut out = line((0..n).map(|c| cell(c, header[c])).collect());
    out += &line((0..n).map(|c| "-".repeat(w[c])).collect());
    for r in rows {
        out += &line((0..n).map(|c| cell(c, r.get(c).map_or("", String::as_str))).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_aligns_numbers_right_and_text_left() {
        let rows = vec![
            vec!["trial-000".to_string(), "82.60".to_string(), "lr=0.1".to_string()],
            vec!["trial-001".to_string(), "5.00".to_string(), "lr=0.01  <- best".to_string()],
        ];
        let expected = "\
trial        val  sampled
---------  -----  ----------------
trial-000  82.60  lr=0.1
trial-001   5.00  lr=0.01  <- best
";
        assert_eq!(grid(&["trial", "val", "sampled"], &rows), expected);
    }

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
