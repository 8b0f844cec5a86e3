//! A plain folder-per-class layout for users' own data: `<image_root>/<split>/<class>/`
//! holding `.jpg` / `.jpeg` / `.png` files. Class indices follow the sorted class folder
//! names of the train split, so every split agrees. Classification only: there are no
//! boxes, and evaluation reports localization as unavailable, not as zero.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::metadata::{Sample, SplitMetadata};

/// Sorted class folder names of `root/train`.
pub fn class_names(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("train");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {} (expected one folder per class)", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

pub fn read_folder_split(root: &Path, split: &str, num_classes: usize) -> Result<SplitMetadata> {
    let classes = class_names(root)?;
    if classes.len() != num_classes {
        bail!(
            "data.num_classes is {num_classes} but {} has {} class folders ({})",
            root.join("train").display(),
            classes.len(),
            classes.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let split_dir = root.join(split);
    let mut samples = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&split_dir)
        .with_context(|| format!("cannot list {}", split_dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let class = entry.file_name().to_string_lossy().into_owned();
        let Some(label) = classes.iter().position(|c| *c == class) else {
            bail!("{}: class folder `{class}` is not a class of the train split", entry.path().display());
        };
        let mut files: Vec<String> = std::fs::read_dir(entry.path())
            .with_context(|| format!("cannot list {}", entry.path().display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                let lower = n.to_ascii_lowercase();
                [".jpg", ".jpeg", ".png"].iter().any(|ext| lower.ends_with(ext))
            })
            .collect();
        files.sort();
        for file in files {
            let image_id = format!("{split}/{class}/{file}");
            let size = image::image_dimensions(root.join(&image_id))
                .with_context(|| format!("cannot read the size of {}", root.join(&image_id).display()))?;
            samples.push(Sample { image_id, label, size, boxes: Vec::new() });
        }
    }
    Ok(SplitMetadata { split: split.to_string(), samples })
}
