//! Opening the configured dataset: generating the synthetic one on first use, and
//! loading a split (boxes or masks) into a [`Dataset`].

use std::sync::Arc;

use anyhow::{bail, Result};

use crate::config::{Config, DataFormat};
use crate::data::{self, Dataset};

/// Makes sure the configured dataset exists: the synthetic one is generated on first use.
pub fn prepare_data(cfg: &Config, quiet: bool) -> Result<()> {
    let d = &cfg.data;
    let marker = d.metadata_root.join(&d.train_split).join("image_ids.txt");
    if d.format == DataFormat::Synthetic && !marker.exists() {
        let s = &d.synthetic;
        if !quiet {
            eprintln!(
                "generating the synthetic dataset ({} classes, {}/{}/{} images of {}px) in {}",
                d.num_classes,
                s.train,
                s.val,
                s.test,
                s.size,
                d.image_root.display()
            );
        }
        let opts = data::SynthOptions {
            num_classes: d.num_classes,
            train: s.train,
            val: s.val,
            test: s.test,
            size: s.size,
            seed: s.seed,
            masks: false,
            clutter: s.clutter,
        };
        data::synth::generate(&d.image_root, &d.metadata_root, &opts)?;
    }
    Ok(())
}

pub fn split_exists(cfg: &Config, split: &str) -> bool {
    if cfg.data.format == DataFormat::Cub {
        return matches!(split, "train" | "test") && data::cub::is_cub_root(&cfg.data.metadata_root);
    }
    if cfg.data.format == DataFormat::Folder {
        return cfg.data.image_root.join(split).is_dir();
    }
    cfg.data.metadata_root.join(split).join("image_ids.txt").exists()
}

pub fn load_split(cfg: &Config, split: &str) -> Result<Arc<Dataset>> {
    let root = &cfg.data.metadata_root;
    if cfg.data.format == DataFormat::Folder {
        let meta = data::folder::read_folder_split(&cfg.data.image_root, split, cfg.data.num_classes)?;
        if meta.samples.is_empty() {
            bail!("{}: split `{split}` has no .jpg/.png images", cfg.data.image_root.join(split).display());
        }
        return Ok(Arc::new(Dataset { image_root: cfg.data.image_root.clone(), meta, masks: None }));
    }
    if cfg.data.format == DataFormat::Cub {
        let meta = data::cub::read_cub_split(root, split, cfg.data.num_classes)?;
        if meta.samples.is_empty() {
            bail!("{}: CUB split `{split}` has no images", root.display());
        }
        return Ok(Arc::new(Dataset { image_root: cfg.data.image_root.clone(), meta, masks: None }));
    }
    if !root.join(split).is_dir() {
        bail!("split `{split}` not found: expected directory {} with image_ids.txt, class_labels.txt, image_sizes.txt (data.metadata_root = {})", root.join(split).display(), root.display());
    }
    if data::masks::is_mask_split(root, split)? {
        return load_mask_split(cfg, split);
    }
    let meta = data::read_split(root, split, cfg.data.num_classes)?;
    if meta.samples.is_empty() {
        bail!("{}: split `{split}` lists no images", root.join(split).join("image_ids.txt").display());
    }
    Ok(Arc::new(Dataset { image_root: cfg.data.image_root.clone(), meta, masks: None }))
}

/// A mask split (OpenImages): images and labels for training and classification, the
/// masks for PxAP. Its metadata has no image sizes and no boxes.
fn load_mask_split(cfg: &Config, split: &str) -> Result<Arc<Dataset>> {
    let masks = data::masks::read_mask_split(&cfg.data.metadata_root, split)?;
    let labels = masks.localization.with_file_name(data::metadata::CLASS_LABELS);
    let mut samples = Vec::with_capacity(masks.samples.len());
    for s in &masks.samples {
        if s.label >= cfg.data.num_classes {
            bail!(
                "{}: label {} of image `{}` out of range: expected < data.num_classes = {}",
                labels.display(),
                s.label,
                s.image_id,
                cfg.data.num_classes
            );
        }
        samples.push(data::Sample { image_id: s.image_id.clone(), label: s.label, size: (0, 0), boxes: Vec::new() });
    }
    let root = cfg.data.mask_root.clone().unwrap_or_else(|| cfg.data.image_root.clone());
    Ok(Arc::new(Dataset {
        image_root: cfg.data.image_root.clone(),
        meta: data::SplitMetadata { split: split.to_string(), samples },
        masks: Some(data::MaskSet { root, split: masks }),
    }))
}
