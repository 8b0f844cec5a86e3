//! Datasets: the wsolevaluation metadata format, a synthetic WSOL generator, the
//! per-image transforms and the parallel, deterministic batch loader.

pub mod class_names;
pub mod cub;
pub mod digits;
pub mod folder;
pub mod imagenet;
pub mod loader;
pub mod open;
pub mod synth;
pub mod transforms;

pub use class_names::ClassNames;
pub use loader::{epoch_batches, epoch_order, num_batches, Batch, Dataset, LoaderConfig, MaskSet};
// The metadata format is read by the evaluator too, so it lives in wsol-eval.
pub use synth::{class_names, SynthOptions};
pub use transforms::{apply, apply_at, load_rgb, TransformConfig, IMAGENET_MEAN, IMAGENET_STD};
pub use wsol_eval::metadata::{read_split, write_split, Sample, SplitMetadata};
pub use wsol_eval::{masks, metadata};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A ChaCha8 stream keyed by up to four numbers (seed, split, epoch, index ...), laid
/// out directly in the 32-byte key: distinct tuples never share a stream, and the
/// result is the same on every machine and for every thread count.
pub(crate) fn rng_from(parts: &[u64]) -> ChaCha8Rng {
    assert!(parts.len() <= 4, "rng_from takes at most four parts");
    let mut key = [0u8; 32];
    for (k, p) in parts.iter().enumerate() {
        key[k * 8..k * 8 + 8].copy_from_slice(&p.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// Stable number for a split name (FNV-1a), to key per-split random streams.
pub(crate) fn split_tag(split: &str) -> u64 {
    split.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}
