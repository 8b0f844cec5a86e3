//! Rules on the source text that the compiler does not check.

use std::path::Path;

/// The doc comment (`///` lines) directly above the first line of `text` starting with
/// `item`, joined with spaces.
fn doc_above(text: &str, item: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let at = lines.iter().position(|l| l.starts_with(item)).unwrap_or_else(|| panic!("no `{item}`"));
    let mut doc: Vec<&str> = lines[..at].iter().rev().take_while(|l| l.starts_with("///")).copied().collect();
    doc.reverse();
    doc.iter().map(|l| l.trim_start_matches('/').trim()).collect::<Vec<_>>().join(" ")
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `unsafe` block says why it is sound: a `// SAFETY:` line at most 3 lines above.
/// (wsol-ops has clippy's `undocumented_unsafe_blocks` for this; these crates do not.)
#[test]
fn every_unsafe_block_has_a_safety_comment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("crates/wsol-eval/src"), &mut files);
    let mut missing = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap();
            let opens_block = code.match_indices("unsafe").any(|(k, _)| code[k + 6..].trim_start().starts_with('{'));
            if opens_block && !lines[i.saturating_sub(3)..i].iter().any(|l| l.contains("// SAFETY:")) {
                missing.push(format!("{}:{}", path.strip_prefix(root).unwrap().display(), i + 1));
            }
        }
    }
    assert!(missing.is_empty(), "unsafe blocks without a `// SAFETY:` line within 3 lines above: {missing:?}");
}

/// The vendored candle-core's `Tensor::is_sole_owner` (ours) sits next to `detach`: each
/// keeps its own doc comment.
#[test]
fn vendored_tensor_docs_sit_on_their_functions() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/candle-core/src/tensor.rs");
    let text = std::fs::read_to_string(path).unwrap();
    let detach = doc_above(&text, "pub fn detach(");
    assert!(detach.starts_with("Returns a new tensor detached from the current graph"), "detach: {detach:?}");
    let sole = doc_above(&text, "pub fn is_sole_owner(");
    assert!(sole.starts_with("Whether this handle is the only one"), "is_sole_owner: {sole:?}");
    assert!(!sole.contains("detached from the current graph"), "is_sole_owner: {sole:?}");
}
