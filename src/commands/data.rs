//! `wsol data synth|check|convert`: dataset tools.

use anyhow::{Context, Result};

use super::load_config;
use crate::cli::{CheckArgs, ConvertArgs, DigitsArgs, SynthArgs};
use crate::config::Config;
use crate::data;
use crate::report::metrics_table;

pub fn synth(a: SynthArgs) -> Result<()> {
    let opts = data::SynthOptions {
        num_classes: a.num_classes,
        train: a.train,
        val: a.val,
        test: a.test,
        size: a.size,
        seed: a.seed,
        masks: a.masks,
        clutter: true,
    };
    data::synth::generate(&a.out, &a.out.join("metadata"), &opts)?;
    if !a.quiet {
        eprintln!("wrote {} + {} + {} images and metadata to {}", a.train, a.val, a.test, a.out.display());
    }
    Ok(())
}

/// `wsol data digits`: MNIST's files read and checked, then the set written.
pub fn digits(a: DigitsArgs) -> Result<()> {
    let opts = data::digits::DigitsOptions {
        size: a.size,
        train: a.train,
        val: a.val,
        test: a.test,
        distractors: a.distractors,
        seed: a.seed,
    };
    let (train, test) = data::digits::read_mnist(&a.mnist, &a.out.join(".mnist-staging"))?;
    data::digits::generate(&a.out, &train, &test, &opts)?;
    if !a.quiet {
        eprintln!(
            "wrote {} + {} + {} images of digits (from {} + {} MNIST images) and metadata to {}",
            a.train,
            a.val,
            a.test,
            train.labels.len(),
            test.labels.len(),
            a.out.display()
        );
    }
    Ok(())
}

/// `wsol data check`: every split's counts, then every problem found (missing or
/// unreadable images, sizes that disagree with `image_sizes.txt`, missing masks), the
/// first few of each split by name; non-zero exit when there is any. Metadata that does
/// not parse (duplicate ids, boxes outside their image, ...) stops at its first bad line.
pub fn check(a: CheckArgs) -> Result<()> {
    let cfg = load_config(&a.common, None)?;
    check_config(&cfg, a.common.quiet).map(|_| ())
}

/// [`check`] of a loaded config: the table on stdout, an error naming the problems; else
/// the train split's image count (None when it is absent).
pub(crate) fn check_config(cfg: &Config, quiet: bool) -> Result<Option<usize>> {
    use rayon::prelude::*;
    crate::data::open::prepare_data(cfg, quiet)?;
    let mut train_images = None;
    let mut rows = Vec::new();
    let mut problems: Vec<(String, Vec<String>)> = Vec::new();
    for split in [&cfg.data.train_split, &cfg.data.val_split, &cfg.data.test_split] {
        if !crate::data::open::split_exists(cfg, split) {
            rows.push((split.clone(), "absent".to_string()));
            continue;
        }
        let ds = crate::data::open::load_split(cfg, split)?;
        if *split == cfg.data.train_split {
            train_images = Some(ds.meta.samples.len());
        }
        let mut per_class = vec![0usize; cfg.data.num_classes];
        let boxes: usize = ds.meta.samples.iter().map(|s| s.boxes.len()).sum();
        ds.meta.samples.iter().for_each(|s| per_class[s.label] += 1);
        let mut found: Vec<String> = ds
            .meta
            .samples
            .par_iter()
            .enumerate()
            .flat_map_iter(|(i, s)| {
                let mut p = Vec::new();
                let path = ds.image_root.join(&s.image_id);
                match image::image_dimensions(&path) {
                    Err(_) if !path.is_file() => p.push(format!("missing image {}", path.display())),
                    Err(e) => p.push(format!("unreadable image {}: {e}", path.display())),
                    Ok(wh) if s.size != (0, 0) && wh != s.size => p.push(format!(
                        "{} is {}x{}, image_sizes.txt says {}x{} (its boxes would be rescaled wrongly)",
                        path.display(),
                        wh.0,
                        wh.1,
                        s.size.0,
                        s.size.1
                    )),
                    Ok(_) => {}
                }
                if let Some(m) = &ds.masks {
                    let ms = &m.split.samples[i];
                    for r in ms.masks.iter().chain(&ms.ignore) {
                        if !m.root.join(&r.path).is_file() {
                            p.push(format!(
                                "missing mask {} ({}:{})",
                                m.root.join(&r.path).display(),
                                m.split.localization.display(),
                                r.line
                            ));
                        }
                    }
                }
                p
            })
            .collect();
        let masks = ds.masks.as_ref().map_or(String::new(), |m| {
            format!(", {} masks", m.split.samples.iter().map(|s| s.masks.len()).sum::<usize>())
        });
        let empty = per_class.iter().filter(|&&c| c == 0).count();
        let (lo, hi) = (per_class.iter().min().copied().unwrap_or(0), per_class.iter().max().copied().unwrap_or(0));
        rows.push((
            split.clone(),
            format!(
                "{} images, {boxes} boxes{masks}, {} classes present ({lo}-{hi} images each), {empty} empty, {} problems",
                ds.meta.samples.len(),
                cfg.data.num_classes - empty,
                found.len()
            ),
        ));
        if !found.is_empty() {
            found.sort();
            problems.push((split.clone(), found));
        }
    }
    // Names only label pictures, but a malformed file should show here, not first in `wsol cam`.
    let names = crate::data::ClassNames::load(cfg)?;
    rows.push(("class names".to_string(), names.summary()));
    println!("{}", metrics_table(&rows));
    if problems.is_empty() {
        return Ok(train_images);
    }
    let total: usize = problems.iter().map(|(_, p)| p.len()).sum();
    // One line (errors are one line): per split, its count and first few problems.
    let parts: Vec<String> = problems
        .iter()
        .map(|(split, found)| {
            let first: Vec<&str> = found.iter().take(5).map(String::as_str).collect();
            format!("{split}: {} ({}{})", found.len(), first.join("; "), if found.len() > 5 { "; ..." } else { "" })
        })
        .collect();
    let msg = format!("data check found {total} problem(s) — {}", parts.join(" | "));
    anyhow::bail!(msg)
}

pub fn convert(a: ConvertArgs) -> Result<()> {
    if a.format == "imagenet-xml" {
        let synsets =
            a.synsets.as_ref().context("data convert imagenet-xml: --synsets LOC_synset_mapping.txt is required")?;
        let synsets = data::imagenet::read_synsets(synsets)?;
        let prefix = a.id_prefix.clone().unwrap_or_else(|| format!("{}/", a.split));
        let meta = data::imagenet::read_xml_split(&a.root, &synsets, &a.split, &prefix)?;
        anyhow::ensure!(!meta.samples.is_empty(), "{}: no .xml annotations", a.root.display());
        data::write_split(&a.out, &meta)?;
        println!("{}: {} images -> {}", a.split, meta.samples.len(), a.out.join(&a.split).display());
        return Ok(());
    }
    anyhow::ensure!(a.format == "cub", "data convert: unknown format `{}` (available: cub, imagenet-xml)", a.format);
    anyhow::ensure!(
        data::cub::is_cub_root(&a.root),
        "{}: not a CUB-200-2011 root (expected images.txt, image_class_labels.txt, train_test_split.txt, bounding_boxes.txt)",
        a.root.display()
    );
    for split in ["train", "test"] {
        let meta = data::cub::read_cub_split(&a.root, split, a.num_classes)?;
        data::write_split(&a.out, &meta)?;
        println!("{split}: {} images -> {}", meta.samples.len(), a.out.join(split).display());
    }
    println!("image ids are relative to {}: set data.image_root to it", a.root.join("images").display());
    Ok(())
}
