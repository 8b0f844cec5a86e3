//! Human-readable class names for pictures and printed lines (`wsol cam`, `wsol report`,
//! TensorBoard). A class names file holds one name per line, line k naming class k;
//! without one, classes are shown by index. Names are never needed to train or score.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::{Config, DataFormat};

/// The file looked for in `data.metadata_root` when `data.class_names` is not set.
pub const CLASS_NAMES_FILE: &str = "class_names.txt";

/// The names of a dataset's classes, or none (classes shown by index).
#[derive(Clone, Debug, Default)]
pub struct ClassNames {
    names: Option<Vec<String>>,
    /// The file (or folder of class folders) they came from.
    source: Option<PathBuf>,
}

impl ClassNames {
    /// Classes shown by index only.
    pub fn none() -> ClassNames {
        ClassNames::default()
    }

    pub fn from_names(names: Vec<String>, source: &Path) -> ClassNames {
        ClassNames { names: Some(names), source: Some(source.to_path_buf()) }
    }

    /// The configured names: `data.class_names` when set (it must exist), else
    /// `<metadata_root>/class_names.txt` when it exists, else the class folders of a
    /// `folder` dataset; otherwise none. A file that exists but is malformed is an error.
    pub fn load(cfg: &Config) -> Result<ClassNames> {
        let d = &cfg.data;
        if let Some(path) = &d.class_names {
            return Ok(ClassNames::from_names(read(path, d.num_classes)?, path));
        }
        let default = d.metadata_root.join(CLASS_NAMES_FILE);
        if default.is_file() {
            return Ok(ClassNames::from_names(read(&default, d.num_classes)?, &default));
        }
        if d.format == DataFormat::Folder {
            // The folders are the classes; their listing failing is the loader's error to give.
            if let Ok(names) = super::folder::class_names(&d.image_root) {
                if names.len() == d.num_classes {
                    return Ok(ClassNames::from_names(names, &d.image_root.join("train")));
                }
            }
        }
        Ok(ClassNames::none())
    }

    /// Class `k`'s name, if known.
    pub fn name(&self, k: usize) -> Option<&str> {
        self.names.as_ref()?.get(k).map(String::as_str)
    }

    pub fn is_known(&self) -> bool {
        self.names.is_some()
    }

    /// Where the names came from: `N names from PATH`, or that there are none.
    pub fn summary(&self) -> String {
        match (&self.names, &self.source) {
            (Some(n), Some(p)) => format!("{} names from {}", n.len(), p.display()),
            _ => "none (classes shown by index)".to_string(),
        }
    }

    /// `class 3 (tabby)`, or `class 3` without a name: for printed lines.
    pub fn describe(&self, k: usize) -> String {
        match self.name(k) {
            Some(n) => format!("class {k} ({n})"),
            None => format!("class {k}"),
        }
    }

    /// The name, or `class 3` without one: for captions, where the index adds little.
    pub fn label(&self, k: usize) -> String {
        self.name(k).map_or_else(|| format!("class {k}"), str::to_string)
    }
}

/// Reads a class names file: one name per line, line k naming class k, exactly
/// `num_classes` (`data.num_classes`) lines; a final newline is optional, surrounding
/// spaces are trimmed.
pub fn read(path: &Path, num_classes: usize) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read class names file {}", path.display()))?;
    parse(&text, num_classes).map_err(|e| anyhow::anyhow!("{}{e}", path.display()))
}

/// [`read`] on text; errors start with `:<line>: ` or `: ` to follow the file name.
fn parse(text: &str, num_classes: usize) -> Result<Vec<String>> {
    let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    let expected = "one class name per line, line k naming class k";
    if let Some(at) = names.iter().position(String::is_empty) {
        bail!(":{}: empty line; expected {expected}", at + 1);
    }
    // A common other layout (`0 tench` / `0,tench`) would otherwise show as names
    // starting with numbers.
    let numbered = |(k, n): (usize, &String)| {
        n.strip_prefix(&k.to_string()).is_some_and(|rest| rest.starts_with([' ', '\t', ',', ':']))
    };
    if names.len() > 1 && names.iter().enumerate().all(numbered) {
        bail!(":1: every line starts with its class index (`{}`); expected {expected}, without the index", names[0]);
    }
    if names.len() != num_classes {
        bail!(": {} names, but data.num_classes is {num_classes}; expected {expected}", names.len());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataConfig;

    fn cfg(dir: &Path, class_names: Option<PathBuf>) -> Config {
        let data = DataConfig { metadata_root: dir.into(), num_classes: 3, class_names, ..Default::default() };
        Config { data, ..Default::default() }
    }

    #[test]
    fn one_name_per_line_in_class_order() {
        let names = parse("tabby\n great white shark \r\nmaillot, tank suit", 3).unwrap();
        assert_eq!(names, ["tabby", "great white shark", "maillot, tank suit"]);
        let c = ClassNames::from_names(names, Path::new("names.txt"));
        assert_eq!(c.summary(), "3 names from names.txt");
        assert_eq!(c.describe(1), "class 1 (great white shark)");
        assert_eq!(c.label(0), "tabby");
        assert_eq!(c.name(3), None);
        assert_eq!(ClassNames::none().describe(2), "class 2");
        assert_eq!(ClassNames::none().label(2), "class 2");
    }

    #[test]
    fn malformed_files_name_the_line_and_what_was_expected() {
        for (text, want) in [
            ("a\n\nc\n", ":2: empty line; expected one class name per line"),
            ("a\nb\n", ": 2 names, but data.num_classes is 3"),
            ("a\nb\nc\nd\n", ": 4 names, but data.num_classes is 3"),
            ("0 tench\n1 goldfish\n2 shark\n", ":1: every line starts with its class index (`0 tench`)"),
            ("0,tench\n1,goldfish\n2,shark\n", ":1: every line starts with its class index (`0,tench`)"),
            ("", ": 0 names, but data.num_classes is 3"),
        ] {
            let err = parse(text, 3).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
        // Names that merely start with digits are names.
        assert_eq!(parse("1 ton truck\n2 cats\nc\n", 3).unwrap()[0], "1 ton truck");
    }

    #[test]
    fn lookup_order_config_key_then_metadata_root_then_indices() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(!ClassNames::load(&cfg(dir, None)).unwrap().is_known());
        std::fs::write(dir.join(CLASS_NAMES_FILE), "a\nb\nc\n").unwrap();
        assert_eq!(ClassNames::load(&cfg(dir, None)).unwrap().name(2), Some("c"));
        std::fs::write(dir.join("other.txt"), "x\ny\nz\n").unwrap();
        assert_eq!(ClassNames::load(&cfg(dir, Some(dir.join("other.txt")))).unwrap().name(0), Some("x"));
        let err = format!("{:#}", ClassNames::load(&cfg(dir, Some(dir.join("none.txt")))).unwrap_err());
        assert!(err.contains("none.txt"), "{err}");
        std::fs::write(dir.join(CLASS_NAMES_FILE), "a\nb\n").unwrap();
        let err = format!("{:#}", ClassNames::load(&cfg(dir, None)).unwrap_err());
        assert!(err.contains("class_names.txt: 2 names, but data.num_classes is 3"), "{err}");
    }
}
