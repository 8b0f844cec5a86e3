//! Text on our RGB pictures (curve.png, `wsol cam` captions), drawn by plotters with an
//! embedded font (DejaVu Sans Mono, see fonts/DejaVu-LICENSE): no system fonts needed.

use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

const FONT: &[u8] = include_bytes!("fonts/DejaVuSansMono.ttf");

/// Registers the embedded font as plotters' "sans-serif" (once per process).
pub fn register_font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded font is invalid"))
    }
}

/// Writes `text` in black into the interleaved RGB buffer (`width` x `height`) with its
/// top-left corner at (x, y) and the given pixel height.
pub fn draw_text(rgb: &mut [u8], width: usize, height: usize, x: i32, y: i32, text: &str, px: u32) -> Result<()> {
    register_font()?;
    let root = BitMapBackend::with_buffer(rgb, (width as u32, height as u32)).into_drawing_area();
    root.draw(&Text::new(text.to_string(), (x, y), ("sans-serif", px).into_font().color(&BLACK)))
        .map_err(|e| anyhow!("cannot draw text: {e}"))?;
    root.present().map_err(|e| anyhow!("cannot draw text: {e}"))
}
