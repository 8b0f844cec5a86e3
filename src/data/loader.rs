//! One epoch of batches, decoded in parallel ahead of the consumer.
//!
//! A background thread walks the epoch's batches and fills each one on a dedicated
//! rayon pool; finished batches wait in a bounded channel, so decoding overlaps the
//! training step while memory stays at a few batches. All randomness is keyed by
//! (seed, epoch[, sample index]), never by thread, so batches are bit-identical for any
//! worker count.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};
use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::metadata::SplitMetadata;
use super::rng_from;
use super::transforms::{apply, load_rgb, TransformConfig};

pub struct Dataset {
    pub image_root: PathBuf,
    pub meta: SplitMetadata,
    /// Mask annotations of a mask split (OpenImages), in the order of `meta.samples`.
    pub masks: Option<MaskSet>,
}

/// A mask split's annotations and the folder their paths are relative to.
pub struct MaskSet {
    pub root: PathBuf,
    pub split: super::masks::MaskSplit,
}

pub struct Batch {
    /// N x 3 x S x S, normalized.
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    /// Positions in `meta.samples`, to find ids and boxes of the batch's images.
    pub indices: Vec<usize>,
    /// Side S of each image.
    pub size: usize,
    /// Images left out because they failed to decode (`skip_bad`): the errors.
    pub skipped: Vec<String>,
}

pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    pub drop_last: bool,
    /// Decode threads; 0 = one per available core.
    pub workers: usize,
    pub seed: u64,
    pub epoch: u64,
    pub transform: TransformConfig,
    /// Batches of the epoch to leave out at its start (resuming an interrupted epoch);
    /// the rest are the same batches, with the same augmentation, as without.
    pub skip_batches: usize,
    /// Leave out images that fail to decode (reported in `Batch::skipped`) instead of
    /// ending the epoch with the error.
    pub skip_bad: bool,
    /// `(rank, world)`: each batch of `batch_size` (the global batch) is cut into `world`
    /// consecutive shards and this process gets shard `rank`, so the ranks together see
    /// the single process's batches with its augmentation (keyed by sample, not by rank).
    /// `(0, 1)`: the whole batch.
    pub shard: (usize, usize),
    /// Shards whole batches instead: rank `r` gets batches `r`, `r + world`, ... uncut,
    /// so every image goes through the model in the single process's batch (evaluation:
    /// its outputs, and the metrics from them, are then that process's bit for bit).
    pub whole_batches: bool,
}

/// Batches decoded ahead of the consumer.
const PREFETCH: usize = 3;
/// Keeps the loader's RNG streams apart from other users of the same seed.
const ORDER_STREAM: u64 = 0x006f_7264_6572;
const AUGMENT_STREAM: u64 = 0x6175_676d;

pub fn num_batches(n: usize, batch_size: usize, drop_last: bool) -> usize {
    match (batch_size, drop_last) {
        (0, _) => 0,
        (b, true) => n / b,
        (b, false) => n.div_ceil(b),
    }
}

/// The sample order of an epoch.
pub fn epoch_order(n: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        order.shuffle(&mut rng_from(&[seed, epoch, ORDER_STREAM]));
    }
    order
}

/// Yields the epoch's batches; a bad image becomes one `Err` naming the file, after
/// which the iterator ends. Dropping the iterator early stops the producer after the
/// batch it is working on.
pub fn epoch_batches(ds: Arc<Dataset>, cfg: LoaderConfig) -> impl Iterator<Item = Result<Batch>> {
    let (tx, rx) = sync_channel(PREFETCH);
    let handle = std::thread::Builder::new().name("wsol-loader".into()).spawn(move || {
        let pool = match check(&cfg).and_then(|_| build_pool(cfg.workers)) {
            Ok(p) => p,
            Err(e) => return drop(tx.send(Err(e))),
        };
        let order = epoch_order(ds.meta.samples.len(), cfg.shuffle, cfg.seed, cfg.epoch);
        let count = num_batches(order.len(), cfg.batch_size, cfg.drop_last);
        let (rank, world) = cfg.shard;
        for (k, chunk) in order.chunks(cfg.batch_size).take(count).enumerate().skip(cfg.skip_batches) {
            let chunk = match cfg.whole_batches {
                true if k % world != rank => continue,
                true => chunk,
                false => shard_of(chunk, cfg.shard),
            };
            let batch = pool.install(|| load_batch(&ds, &cfg, chunk));
            let failed = batch.is_err();
            if tx.send(batch).is_err() || failed {
                return;
            }
        }
    });
    match handle {
        Ok(h) => Batches { rx: Some(rx), handle: Some(h), failed: None },
        Err(e) => Batches { rx: None, handle: None, failed: Some(anyhow!("cannot start the data loader thread: {e}")) },
    }
}

/// Shard `rank` of `world` near-equal consecutive parts of `chunk` (the first
/// `len % world` shards one longer); an empty slice when the chunk has fewer samples
/// than ranks.
pub fn shard_of(chunk: &[usize], (rank, world): (usize, usize)) -> &[usize] {
    let (base, extra) = (chunk.len() / world, chunk.len() % world);
    let start = rank * base + rank.min(extra);
    &chunk[start..start + base + usize::from(rank < extra)]
}

fn check(cfg: &LoaderConfig) -> Result<()> {
    if cfg.batch_size == 0 {
        bail!("data loader: batch_size must be positive");
    }
    let (rank, world) = cfg.shard;
    if world == 0 || rank >= world {
        bail!("data loader: shard {rank} of {world}: expected a rank below a positive world size");
    }
    cfg.transform.validate()
}

fn build_pool(workers: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("wsol-data-{i}"))
        .build()
        .context("cannot start the data loader's worker threads")
}

fn load_batch(ds: &Dataset, cfg: &LoaderConfig, chunk: &[usize]) -> Result<Batch> {
    let per = cfg.transform.output_len();
    let mut images = vec![0f32; chunk.len() * per];
    let results: Vec<Result<()>> = images
        .par_chunks_mut(per)
        .zip(chunk.par_iter())
        .map(|(out, &i)| -> Result<()> {
            let sample = &ds.meta.samples[i];
            let img = load_rgb(&ds.image_root.join(&sample.image_id))?;
            let mut rng = rng_from(&[cfg.seed, cfg.epoch, i as u64, AUGMENT_STREAM]);
            apply(&img, &cfg.transform, &mut rng, out);
            Ok(())
        })
        .collect();
    // Keep the decoded images, moved to the front in order.
    let (mut skipped, mut kept) = (Vec::new(), Vec::with_capacity(chunk.len()));
    for (slot, (r, &i)) in results.into_iter().zip(chunk).enumerate() {
        match r {
            Ok(()) => {
                if kept.len() != slot {
                    images.copy_within(slot * per..(slot + 1) * per, kept.len() * per);
                }
                kept.push(i);
            }
            Err(e) if cfg.skip_bad => skipped.push(format!("{e:#}")),
            Err(e) => return Err(e),
        }
    }
    images.truncate(kept.len() * per);
    let chunk = &kept[..];
    let labels = chunk
        .iter()
        .map(|&i| {
            u32::try_from(ds.meta.samples[i].label)
                .map_err(|_| anyhow!("label of `{}` does not fit u32", ds.meta.samples[i].image_id))
        })
        .collect::<Result<_>>()?;
    Ok(Batch { images, labels, indices: chunk.to_vec(), size: cfg.transform.image_size as usize, skipped })
}

struct Batches {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    failed: Option<anyhow::Error>,
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        let item = self.rx.as_ref()?.recv().ok();
        if item.as_ref().is_none_or(|b| b.is_err()) {
            self.rx = None;
        }
        item
    }
}

impl Drop for Batches {
    /// Closing the channel first makes the producer's next send fail, so the join
    /// waits for one batch at most and no thread outlives the epoch.
    fn drop(&mut self) {
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::metadata::Sample;
    use super::super::transforms::{IMAGENET_MEAN, IMAGENET_STD};
    use super::*;
    use image::{Rgb, RgbImage};

    /// `n` tiny images whose pixels encode their index, of varied sizes.
    fn dataset(n: usize) -> (tempfile::TempDir, Arc<Dataset>) {
        let dir = tempfile::tempdir().unwrap();
        let samples = (0..n)
            .map(|i| {
                let (w, h) = (10 + i as u32 % 5, 9 + i as u32 % 3);
                let img = RgbImage::from_fn(w, h, |x, y| Rgb([i as u8, (x * 20) as u8, (y * 20) as u8]));
                img.save(dir.path().join(format!("{i}.png"))).unwrap();
                Sample { image_id: format!("{i}.png"), label: i % 4, size: (w, h), boxes: vec![] }
            })
            .collect();
        let ds = Dataset {
            image_root: dir.path().to_path_buf(),
            meta: SplitMetadata { split: "train".into(), samples },
            masks: None,
        };
        (dir, Arc::new(ds))
    }

    fn cfg(workers: usize, batch_size: usize, drop_last: bool) -> LoaderConfig {
        let transform = TransformConfig {
            image_size: 8,
            resize_size: 12,
            train: true,
            hflip: true,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        };
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last,
            workers,
            seed: 5,
            epoch: 2,
            transform,
            skip_batches: 0,
            skip_bad: false,
            shard: (0, 1),
            whole_batches: false,
        }
    }

    #[test]
    fn identical_for_any_worker_count_and_each_sample_once() {
        let (_dir, ds) = dataset(23);
        let run = |w| epoch_batches(ds.clone(), cfg(w, 5, false)).map(|b| b.unwrap()).collect::<Vec<_>>();
        let (one, three) = (run(1), run(3));
        assert_eq!(one.len(), 5);
        assert_eq!(one.last().unwrap().labels.len(), 3);
        for (a, b) in one.iter().zip(&three) {
            assert_eq!((&a.indices, &a.labels, a.size), (&b.indices, &b.labels, b.size));
            assert!(a.images == b.images);
            assert_eq!(a.images.len(), a.indices.len() * 3 * 64);
            // Red channel encodes the sample index: the right image is in each slot.
            for (k, &i) in a.indices.iter().enumerate() {
                let red = a.images[k * 192] * IMAGENET_STD[0] + IMAGENET_MEAN[0];
                assert!((red * 255.0 - i as f32).abs() < 0.6, "slot {k} holds image {i}");
                assert_eq!(a.labels[k] as usize, i % 4);
            }
        }
        let mut seen: Vec<usize> = one.iter().flat_map(|b| b.indices.clone()).collect();
        assert_ne!(seen, (0..23).collect::<Vec<_>>(), "shuffle kept the identity order");
        seen.sort();
        assert_eq!(seen, (0..23).collect::<Vec<_>>());
        let next_epoch: Vec<usize> = epoch_batches(ds.clone(), LoaderConfig { epoch: 3, ..cfg(2, 5, false) })
            .flat_map(|b| b.unwrap().indices)
            .collect();
        assert_ne!(next_epoch, one.iter().flat_map(|b| b.indices.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn drop_last_and_counts() {
        let (_dir, ds) = dataset(11);
        let sizes: Vec<usize> = epoch_batches(ds.clone(), cfg(2, 4, true)).map(|b| b.unwrap().labels.len()).collect();
        assert_eq!(sizes, [4, 4]);
        assert_eq!(num_batches(11, 4, true), 2);
        assert_eq!(num_batches(11, 4, false), 3);
        assert_eq!(num_batches(12, 4, false), 3);
        assert_eq!(num_batches(3, 4, true), 0);
        assert_eq!(num_batches(5, 0, false), 0);
        let e = epoch_batches(ds, cfg(2, 0, false)).next().unwrap().err().unwrap();
        assert!(e.to_string().contains("batch_size"));
    }

    #[test]
    fn bad_image_is_an_error_naming_it_and_ends_the_epoch() {
        let (dir, ds) = dataset(12);
        std::fs::write(dir.path().join("7.png"), b"garbage").unwrap();
        let c = LoaderConfig { shuffle: false, ..cfg(2, 4, false) };
        let items: Vec<_> = epoch_batches(ds, c).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        let e = format!("{:#}", items[1].as_ref().err().unwrap());
        assert!(e.contains("7.png"), "{e}");
    }

    #[test]
    fn dropping_early_does_not_hang() {
        let (_dir, ds) = dataset(40);
        for _ in 0..5 {
            let mut it = epoch_batches(ds.clone(), cfg(2, 2, false));
            assert!(it.next().unwrap().is_ok());
        }
    }

    /// The ranks' shards of every batch, put back in rank order, are the single process's
    /// batch, image for image (augmentation included).
    #[test]
    fn rank_shards_together_are_the_single_process_batches() {
        let (_dir, ds) = dataset(13);
        let whole: Vec<Batch> = epoch_batches(ds.clone(), cfg(2, 6, false)).map(Result::unwrap).collect();
        let world = 4;
        let shards: Vec<Vec<Batch>> = (0..world)
            .map(|r| {
                epoch_batches(ds.clone(), LoaderConfig { shard: (r, world), ..cfg(1, 6, false) })
                    .map(Result::unwrap)
                    .collect()
            })
            .collect();
        for (k, b) in whole.iter().enumerate() {
            let indices: Vec<usize> = shards.iter().flat_map(|s| s[k].indices.clone()).collect();
            let images: Vec<f32> = shards.iter().flat_map(|s| s[k].images.clone()).collect();
            assert_eq!(indices, b.indices);
            assert_eq!(images, b.images);
        }
        // The last batch (1 image) leaves ranks 1..3 an empty shard.
        assert_eq!(shards.iter().map(|s| s[2].labels.len()).collect::<Vec<_>>(), [1, 0, 0, 0]);
        assert_eq!(shard_of(&[0, 1, 2, 3, 4], (1, 2)), &[3, 4]);
        assert_eq!(shard_of(&[0, 1, 2, 3, 4], (0, 2)), &[0, 1, 2]);
        assert!(epoch_batches(ds, LoaderConfig { shard: (2, 2), ..cfg(1, 6, false) }).next().unwrap().is_err());
    }

    /// Sharded by whole batches, rank r gets batches r, r + world, ... as they are.
    #[test]
    fn whole_batch_shards_deal_the_batches_round_robin() {
        let (_dir, ds) = dataset(13);
        let whole: Vec<Batch> = epoch_batches(ds.clone(), cfg(2, 3, false)).map(Result::unwrap).collect();
        assert_eq!(whole.len(), 5);
        for r in 0..2 {
            let mine: Vec<Batch> =
                epoch_batches(ds.clone(), LoaderConfig { shard: (r, 2), whole_batches: true, ..cfg(1, 3, false) })
                    .map(Result::unwrap)
                    .collect();
            let want: Vec<&Batch> = whole.iter().skip(r).step_by(2).collect();
            assert_eq!(mine.len(), want.len());
            for (a, b) in mine.iter().zip(want) {
                assert_eq!((&a.indices, &a.images), (&b.indices, &b.images));
            }
        }
    }
}
