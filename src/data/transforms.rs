//! Per-sample image pipeline, following wsolevaluation's torchvision transforms:
//! train = Resize((R, R)) -> RandomCrop(S) -> RandomHorizontalFlip -> ToTensor -> Normalize,
//! eval = Resize((S, S)) -> ToTensor -> Normalize. Eval resizes straight to S x S
//! (no center crop) so GT boxes map to the network grid by plain scaling.

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::imageops::{self, FilterType};
use image::RgbImage;
use rand::Rng;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Clone, Debug)]
pub struct TransformConfig {
    /// Network input side S (train crop and eval resize).
    pub image_size: u32,
    /// Side R the train images are resized to before the random crop.
    pub resize_size: u32,
    pub train: bool,
    pub hflip: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl TransformConfig {
    pub fn validate(&self) -> Result<()> {
        if self.image_size == 0 {
            bail!("transform: image_size must be positive");
        }
        if self.train && self.resize_size < self.image_size {
            bail!(
                "transform: resize_size {} is smaller than the crop image_size {}",
                self.resize_size,
                self.image_size
            );
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            bail!("transform: std values must be positive, got {s}");
        }
        Ok(())
    }

    /// Floats per transformed image (3 * S * S).
    pub fn output_len(&self) -> usize {
        3 * self.image_size as usize * self.image_size as usize
    }
}

/// Decodes PNG / JPEG by content (not extension) and converts gray, alpha and 16-bit
/// images to 8-bit RGB, as PIL's `.convert('RGB')` does in the reference loaders.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot open image {}", path.display()))?;
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(&bytes) {
        bail!("cannot decode image {}: truncated JPEG (no end-of-image marker after the scan data)", path.display());
    }
    let img = reader.decode().with_context(|| format!("cannot decode image {}", path.display()))?;
    Ok(img.to_rgb8())
}

/// The JPEG decoder fills a cut-off scan with grey instead of failing (PIL raises
/// "image file is truncated"), so we check for the end-of-image marker after the last
/// start-of-scan: inside scan data 0xFF is always followed by 0x00 or a restart marker,
/// and an EXIF thumbnail's own marker comes before the main scan.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w == [0xFF, m]);
    matches!((last(0xDA), last(0xD9)), (Some(sos), Some(eoi)) if eoi > sos)
}

/// Writes the transformed image into `out` (length 3*S*S, CHW). Randomness is drawn in
/// a fixed order (crop x, crop y, flip), so a seeded `rng` reproduces the augmentation;
/// [`apply_at`] does the rest. Call [`TransformConfig::validate`] first; a crop larger
/// than the resized image is clamped rather than panicking.
pub fn apply(img: &RgbImage, cfg: &TransformConfig, rng: &mut impl Rng, out: &mut [f32]) {
    let (mut offset, mut flip) = ((0, 0), false);
    if cfg.train {
        let room = cfg.resize_size.max(cfg.image_size) - cfg.image_size;
        offset = (rng.random_range(0..=room), rng.random_range(0..=room));
        flip = cfg.hflip && rng.random_bool(0.5);
    }
    apply_at(img, cfg, offset, flip, out);
}

/// The deterministic part of [`apply`]: for training, Resize((R, R)), the S x S crop whose
/// top-left corner is `offset` = (x0, y0) (clamped to the resized image), a horizontal
/// flip if `flip`, then ToTensor + Normalize; for evaluation Resize((S, S)) + ToTensor +
/// Normalize, and `offset` and `flip` are ignored.
pub fn apply_at(img: &RgbImage, cfg: &TransformConfig, offset: (u32, u32), flip: bool, out: &mut [f32]) {
    let s = cfg.image_size;
    assert_eq!(out.len(), cfg.output_len(), "output buffer must hold 3*S*S floats");
    if cfg.train {
        let r = cfg.resize_size.max(s);
        let (x0, y0) = (offset.0.min(r - s), offset.1.min(r - s));
        let view = imageops::crop_imm(&resize(img, r), x0, y0, s, s).to_image();
        to_tensor_normalize(&view, flip, cfg.mean, cfg.std, out);
    } else {
        to_tensor_normalize(&resize(img, s), false, cfg.mean, cfg.std, out);
    }
}

/// ToTensor + Normalize, (v / 255 - mean) / std per channel into CHW `out` (3 * w * h),
/// mirrored left-right if `flip`.
pub fn to_tensor_normalize(view: &RgbImage, flip: bool, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    let (w, h) = (view.width() as usize, view.height() as usize);
    assert_eq!(out.len(), 3 * w * h, "output buffer must hold 3*w*h floats");
    let plane = w * h;
    // One multiply-add per value.
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| -mean[c] / std[c]);
    for (y, row) in view.rows().enumerate() {
        for (x, p) in row.enumerate() {
            let x = if flip { w - 1 - x } else { x };
            let at = y * w + x;
            for c in 0..3 {
                out[c * plane + at] = p[c] as f32 * scale[c] + shift[c];
            }
        }
    }
}

/// Back from a normalized CHW image (what [`apply`] writes) to interleaved 8-bit RGB,
/// for pictures of what the network saw.
pub fn to_rgb8(chw: &[f32], mean: [f32; 3], std: [f32; 3]) -> Vec<u8> {
    let plane = chw.len() / 3;
    (0..plane)
        .flat_map(|p| {
            (0..3).map(move |c| ((chw[c * plane + p] * std[c] + mean[c]) * 255.0).round().clamp(0.0, 255.0) as u8)
        })
        .collect()
}

/// Bilinear resize to a square; downscaling widens the filter (antialiasing) like PIL,
/// whose Resize the reference transforms use. fast_image_resize's SIMD convolution
/// instead of `image::imageops` (within one gray level of it): resizing was two thirds of
/// the loader's time per image. Within one level of PIL's `Resize` on real photos, up and
/// down (tests/cli/pipeline_parity.rs; experiments/README.md has the numbers).
pub fn resize(img: &RgbImage, side: u32) -> RgbImage {
    if img.dimensions() == (side, side) {
        return img.clone();
    }
    use fast_image_resize as fr;
    let mut dst = RgbImage::new(side, side);
    let opts = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    match fr::Resizer::new().resize(img, &mut dst, &opts) {
        Ok(()) => dst,
        // Only an unsupported pixel layout fails, which an RgbImage is not.
        Err(_) => imageops::resize(img, side, side, FilterType::Triangle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, ImageBuffer, Luma, Rgb, Rgba};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn cfg(train: bool, hflip: bool) -> TransformConfig {
        TransformConfig { image_size: 8, resize_size: 8, train, hflip, mean: IMAGENET_MEAN, std: IMAGENET_STD }
    }

    #[test]
    fn eval_resizes_and_normalizes_constant_image() {
        let img = RgbImage::from_pixel(37, 21, Rgb([255, 128, 0]));
        let mut out = vec![0.0; 3 * 64];
        apply(&img, &cfg(false, false), &mut ChaCha8Rng::seed_from_u64(0), &mut out);
        for c in 0..3 {
            let v = [255.0, 128.0, 0.0][c] / 255.0;
            let want = (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            assert!(out[c * 64..(c + 1) * 64].iter().all(|x| (x - want).abs() < 1e-5), "channel {c}");
        }
    }

    #[test]
    fn hflip_mirrors_and_crop_stays_inside() {
        let img = RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 30) as u8, (y * 30) as u8, 7]));
        let mut plain = vec![0.0; 3 * 64];
        apply(&img, &cfg(false, false), &mut ChaCha8Rng::seed_from_u64(0), &mut plain);
        let (mut flipped, mut seen) = (vec![0.0; 3 * 64], [false; 2]);
        for seed in 0..20 {
            apply(&img, &cfg(true, true), &mut ChaCha8Rng::seed_from_u64(seed), &mut flipped);
            let mirrored = (0..3 * 64).all(|i| flipped[i] == plain[(i / 8) * 8 + 7 - i % 8]);
            seen[mirrored as usize] = true;
            assert!(mirrored || flipped == plain);
        }
        assert_eq!(seen, [true, true], "p=0.5 flip never / always happened");
        // Random crop of a larger resize: values come from the image, position varies.
        let c = TransformConfig { resize_size: 12, ..cfg(true, false) };
        let mut a = vec![0.0; 3 * 64];
        let outs: Vec<Vec<f32>> = (0..10)
            .map(|seed| {
                apply(&img, &c, &mut ChaCha8Rng::seed_from_u64(seed), &mut a);
                a.clone()
            })
            .collect();
        assert!(outs.iter().any(|o| o != &outs[0]));
    }

    #[test]
    fn apply_is_apply_at_with_draws_in_order_x_y_flip() {
        let img = RgbImage::from_fn(19, 13, |x, y| Rgb([(x * 13) as u8, (y * 19) as u8, (x * y) as u8]));
        let c = TransformConfig { resize_size: 12, ..cfg(true, true) };
        let (mut a, mut b) = (vec![0.0; 3 * 64], vec![0.0; 3 * 64]);
        for seed in 0..8 {
            apply(&img, &c, &mut ChaCha8Rng::seed_from_u64(seed), &mut a);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let offset = (rng.random_range(0..=4), rng.random_range(0..=4));
            apply_at(&img, &c, offset, rng.random_bool(0.5), &mut b);
            assert_eq!(a, b, "seed {seed}");
        }
        // Evaluation has no crop and no flip.
        apply(&img, &cfg(false, true), &mut ChaCha8Rng::seed_from_u64(0), &mut a);
        apply_at(&img, &cfg(false, true), (3, 2), true, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn load_converts_formats_and_names_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let gray16: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_pixel(3, 2, Luma([65535]));
        let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> = ImageBuffer::from_pixel(3, 2, Rgba([10, 20, 30, 0]));
        DynamicImage::ImageLuma16(gray16).save(dir.path().join("g.png")).unwrap();
        DynamicImage::ImageRgba8(rgba).save(dir.path().join("a.png")).unwrap();
        DynamicImage::ImageRgb8(RgbImage::from_pixel(3, 2, Rgb([9, 9, 9]))).save(dir.path().join("j.jpg")).unwrap();
        assert_eq!(load_rgb(&dir.path().join("g.png")).unwrap().get_pixel(0, 0), &Rgb([255, 255, 255]));
        assert_eq!(load_rgb(&dir.path().join("a.png")).unwrap().get_pixel(2, 1), &Rgb([10, 20, 30]));
        assert_eq!(load_rgb(&dir.path().join("j.jpg")).unwrap().dimensions(), (3, 2));
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let e = format!("{:#}", load_rgb(&bad).unwrap_err());
        assert!(e.contains("bad.png"), "{e}");
        assert!(format!("{:#}", load_rgb(&dir.path().join("none.png")).unwrap_err()).contains("none.png"));
    }

    #[test]
    fn validate_rejects_crop_larger_than_resize() {
        assert!(TransformConfig { resize_size: 4, ..cfg(true, false) }.validate().is_err());
        assert!(cfg(false, false).validate().is_ok());
    }
}
