//! CUB-200-2011 in its native layout, read directly: `images.txt` (`id path`),
//! `image_class_labels.txt` (`id class`, 1-based), `train_test_split.txt` (`id 1|0`) and
//! `bounding_boxes.txt` (`id x y w h`, floats) under the dataset root, images under
//! `images/`. Image ids are the paths relative to `images/`, as in wsolevaluation's CUB
//! metadata, and boxes become `x, y, x + w, y + h` as there; image sizes come from the
//! image headers (CUB has no size file). CUB has no val split of its own: wsolevaluation's
//! CUBV2 val ships as metadata (`data.format: wsol`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::metadata::{box_within, Sample, SplitMetadata};

pub const IMAGES: &str = "images.txt";
pub const LABELS: &str = "image_class_labels.txt";
pub const SPLIT: &str = "train_test_split.txt";
pub const BOXES: &str = "bounding_boxes.txt";

/// Whether `root` holds the CUB files.
pub fn is_cub_root(root: &Path) -> bool {
    [IMAGES, LABELS, SPLIT, BOXES].iter().all(|f| root.join(f).is_file())
}

/// The `train` or `test` split of the CUB root.
pub fn read_cub_split(root: &Path, split: &str, num_classes: usize) -> Result<SplitMetadata> {
    let want_train = match split {
        "train" => true,
        "test" => false,
        other => bail!(
            "CUB-200-2011 has the splits `train` and `test`, not `{other}` (its CUBV2 val split comes as wsolevaluation metadata: use data.format: wsol)"
        ),
    };
    let paths = table(root, IMAGES, 1)?;
    let labels = table(root, LABELS, 1)?;
    let is_train = table(root, SPLIT, 1)?;
    let boxes = table(root, BOXES, 4)?;
    let mut samples = Vec::new();
    for (id, (line, fields)) in &paths.rows {
        let field = |t: &Table, what: &str| -> Result<String> {
            t.rows.get(id).map(|(_, f)| f[0].clone()).ok_or_else(|| {
                anyhow!("{}:{line}: image id {id} has no line in {} ({what})", root.join(IMAGES).display(), t.name)
            })
        };
        let train = match field(&is_train, "train/test flag")?.as_str() {
            "1" => true,
            "0" => false,
            other => bail!("{}: image id {id}: expected 1 or 0, got `{other}`", root.join(SPLIT).display()),
        };
        if train != want_train {
            continue;
        }
        let class: usize =
            field(&labels, "class")?.parse().ok().filter(|&c| c >= 1 && c <= num_classes).ok_or_else(|| {
                anyhow!("{}: image id {id}: expected a class in 1..={num_classes}", root.join(LABELS).display())
            })?;
        let image_id = fields[0].clone();
        let path = root.join("images").join(&image_id);
        let (w, h) = image::image_dimensions(&path)
            .with_context(|| format!("{}: cannot read the size of {}", root.join(IMAGES).display(), path.display()))?;
        let (box_line, b) = boxes
            .rows
            .get(id)
            .ok_or_else(|| anyhow!("{}:{line}: image id {id} has no line in {BOXES}", root.join(IMAGES).display()))?;
        let num = |k: usize| -> Result<f64> {
            b[k].parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| anyhow!("{}:{box_line}: expected a number, got `{}`", root.join(BOXES).display(), b[k]))
        };
        let (x, y, bw, bh) = (num(0)?, num(1)?, num(2)?, num(3)?);
        let bbox = [x, y, x + bw, y + bh];
        if !box_within(&bbox, (w, h)) {
            bail!(
                "{}:{box_line}: box x={x} y={y} w={bw} h={bh} lies outside the {w}x{h} image {}",
                root.join(BOXES).display(),
                path.display()
            );
        }
        samples.push((*id, Sample { image_id, label: class - 1, size: (w, h), boxes: vec![bbox] }));
    }
    samples.sort_by_key(|(id, _)| *id);
    Ok(SplitMetadata { split: split.to_string(), samples: samples.into_iter().map(|(_, s)| s).collect() })
}

/// A CUB file: numeric image id -> (line number, the remaining fields).
struct Table {
    name: &'static str,
    rows: HashMap<u64, (usize, Vec<String>)>,
}

/// Reads `id field...` lines (space separated; the path in images.txt has no spaces).
fn table(root: &Path, name: &'static str, fields: usize) -> Result<Table> {
    let path = root.join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = HashMap::new();
    for (no, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let line_no = no + 1;
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.is_empty() {
            continue;
        }
        if parts.len() != fields + 1 {
            bail!("{}:{line_no}: expected an image id and {fields} field(s), got `{}`", path.display(), line.trim());
        }
        let id: u64 = parts[0]
            .parse()
            .map_err(|_| anyhow!("{}:{line_no}: expected a numeric image id, got `{}`", path.display(), parts[0]))?;
        let row = (line_no, parts[1..].iter().map(|s| s.to_string()).collect());
        if let Some((first, _)) = rows.insert(id, row) {
            bail!("{}:{line_no}: image id {id} appears twice (first at line {first})", path.display());
        }
    }
    Ok(Table { name, rows })
}
