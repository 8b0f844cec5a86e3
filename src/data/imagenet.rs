//! ILSVRC 2012 localization annotations (PASCAL VOC-style XML, one file per image) to the
//! wsolevaluation metadata format. Class indices follow the line order of the synset
//! mapping file (`LOC_synset_mapping.txt`: `n01440764 tench, ...`), as in the usual
//! 1000-class ordering; image ids are `<prefix><filename>.JPEG` (wsolevaluation's ImageNet
//! ids are `val/ILSVRC2012_val_00000001.JPEG`); every object's box is kept.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::metadata::{box_within, Sample, SplitMetadata};

/// Synset id -> class index, from the mapping file's line order.
pub fn read_synsets(path: &Path) -> Result<HashMap<String, usize>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut map = HashMap::new();
    for (no, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let id = line.split_whitespace().next().unwrap_or_default();
        if !id.starts_with('n') || map.insert(id.to_string(), map.len()).is_some() {
            bail!(
                "{}:{}: expected a new synset id like `n01440764 tench`, got `{}`",
                path.display(),
                no + 1,
                line.trim()
            );
        }
    }
    Ok(map)
}

/// Every `*.xml` of `xml_dir` (sorted by name) as one split.
pub fn read_xml_split(
    xml_dir: &Path,
    synsets: &HashMap<String, usize>,
    split: &str,
    prefix: &str,
) -> Result<SplitMetadata> {
    let mut files: Vec<_> = std::fs::read_dir(xml_dir)
        .with_context(|| format!("cannot list {}", xml_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    let samples = files.iter().map(|p| read_xml(p, synsets, prefix)).collect::<Result<Vec<_>>>()?;
    Ok(SplitMetadata { split: split.to_string(), samples })
}

fn read_xml(path: &Path, synsets: &HashMap<String, usize>, prefix: &str) -> Result<Sample> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc = roxmltree::Document::parse(&text).map_err(|e| anyhow!("{}: not valid XML ({e})", path.display()))?;
    let root = doc.root_element();
    let filename = field(path, root, "filename")?;
    let size = child(root, "size").ok_or_else(|| anyhow!("{}: no <size>", path.display()))?;
    let (w, h) = (number(path, size, "width")? as u32, number(path, size, "height")? as u32);
    let mut label = None;
    let mut boxes = Vec::new();
    for object in root.children().filter(|n| n.has_tag_name("object")) {
        let name = field(path, object, "name")?;
        let class = *synsets
            .get(&name)
            .ok_or_else(|| anyhow!("{}: synset `{name}` is not in the mapping file", path.display()))?;
        if *label.get_or_insert(class) != class {
            bail!("{}: objects of two classes ({name} and class {})", path.display(), label.unwrap());
        }
        let b = child(object, "bndbox").ok_or_else(|| anyhow!("{}: an <object> has no <bndbox>", path.display()))?;
        let bbox =
            [number(path, b, "xmin")?, number(path, b, "ymin")?, number(path, b, "xmax")?, number(path, b, "ymax")?];
        if !box_within(&bbox, (w, h)) {
            bail!("{}: box {bbox:?} is inverted or outside the {w}x{h} image", path.display());
        }
        boxes.push(bbox);
    }
    let label = label.ok_or_else(|| anyhow!("{}: no <object>", path.display()))?;
    let image_id = format!("{prefix}{filename}.JPEG");
    Ok(Sample { image_id, label, size: (w, h), boxes })
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name(tag))
}

fn field(path: &Path, node: roxmltree::Node<'_, '_>, tag: &str) -> Result<String> {
    child(node, tag)
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
        .ok_or_else(|| anyhow!("{}: <{}> has no <{tag}>", path.display(), node.tag_name().name()))
}

fn number(path: &Path, node: roxmltree::Node<'_, '_>, tag: &str) -> Result<f64> {
    let v = field(path, node, tag)?;
    v.parse().map_err(|_| anyhow!("{}: <{tag}> is `{v}`, expected a number", path.display()))
}
