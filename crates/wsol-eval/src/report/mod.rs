//! Pictures and files of an evaluation: `metrics.json` writing, PNG encoding, `curve.png`,
//! and text in the embedded font.

pub mod curve_plot;
pub mod text;

use std::path::Path;

use anyhow::{Context, Result};
use image::codecs::png::{CompressionType, FilterType};

/// Pretty JSON with a trailing newline, written atomically so a reader (or a crash)
/// never sees a half-written `metrics.json`.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot serialize JSON")?;
    text.push('\n');
    crate::fs::atomic_write(path, text.as_bytes())
}

/// PNG bytes for interleaved 8-bit RGB (`rgb.len() == 3 * width * height`), e.g. for
/// [`TbWriter::add_image_png`] or overlay files.
pub fn encode_png_rgb(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    encode_png_rgb_with(rgb, width, height, CompressionType::Fast)
}

/// [`encode_png_rgb`] at a chosen DEFLATE effort.
pub(crate) fn encode_png_rgb_with(
    rgb: &[u8],
    width: u32,
    height: u32,
    compression: CompressionType,
) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    anyhow::ensure!(
        rgb.len() as u64 == 3 * width as u64 * height as u64,
        "RGB buffer has {} bytes, expected 3 x {width} x {height}",
        rgb.len()
    );
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(&mut out, compression, FilterType::Adaptive)
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        .context("cannot encode PNG")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_json_is_pretty_complete_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out/metrics.json");
        let v = serde_json::json!({"top1_cls": 71.5, "maxboxacc_by_iou": {"30": 90.0, "50": 60.0}});
        write_json(&p, &v).unwrap();
        write_json(&p, &v).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.ends_with("}\n") && text.contains("\n  \"top1_cls\""));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("metrics.json")]);
    }

    #[test]
    fn write_json_reports_unwritable_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(write_json(&file.join("m.json"), &serde_json::json!(1)).is_err());
    }

    #[test]
    fn png_round_trips_and_checks_size() {
        let rgb: Vec<u8> = (0..4 * 2 * 3).map(|i| i as u8 * 10).collect();
        let png = encode_png_rgb(&rgb, 4, 2).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (4, 2));
        assert_eq!(img.into_raw(), rgb);
        assert!(encode_png_rgb(&rgb, 3, 3).is_err());
    }
}
