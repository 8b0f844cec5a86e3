//! `wsol cam`: one image's class maps as a picture — the map over the original image
//! (jet), the box the evaluator would predict at a threshold (red) and, when the image
//! belongs to the configured evaluation split, its GT boxes (green). Several methods and
//! classes make a grid: one column per method, one row per class, each panel captioned
//! with its method and softmax probability, then its class (by name when known).
//!
//! The network sees the image as the evaluator does, squashed to `image_size` square;
//! the map and box found there are taken back to the original pixels by a per-axis
//! scale, so the picture keeps the image's aspect ratio and boxes read in its pixels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use image::imageops::{self, FilterType};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::eval_transform;
use crate::cam::{self, CamExtractor, CamInput, CamMethod};
use crate::config::Config;
use crate::data::transforms::{self, load_rgb};
use crate::data::ClassNames;
use crate::models::WsolModel;
use crate::report::encode_png_rgb;
use crate::report::overlay::overlay;
use crate::report::text::draw_text;
use crate::report::Progress;
use wsol_eval::localize::{boxes_at_thresholds, prepare_map, resize_bicubic, BBox};
use wsol_eval::metadata::Sample;

/// Which classes get a row.
pub enum Classes {
    /// These class indices.
    Given(Vec<usize>),
    /// The model's top-k predictions.
    Top(usize),
}

impl Classes {
    /// Rows per image for a model of `num_classes`.
    pub fn rows(&self, num_classes: usize) -> usize {
        match self {
            Classes::Given(c) => c.len(),
            Classes::Top(k) => (*k).min(num_classes),
        }
    }
}

pub struct Request {
    pub methods: Vec<String>,
    pub classes: Classes,
    /// Foreground threshold of the drawn box (on the min-max normalized map).
    pub threshold: f64,
    pub alpha: f32,
}

/// One cell of the grid, for the caller to print.
pub struct Panel {
    pub method: String,
    pub class: usize,
    /// Softmax probability of `class`.
    pub score: f32,
    /// Predicted box in the original image's pixels (corners inclusive).
    pub pred: BBox,
}

/// One image's picture and what its panels show.
pub struct Figure {
    pub png: Vec<u8>,
    /// The original image's width and height in pixels.
    pub image_size: (u32, u32),
    pub panels: Vec<Panel>,
}

/// Panels show the image at its own aspect ratio: a small image is enlarged by a whole
/// factor (pixels stay sharp) until its longer side reaches `MIN_PANEL`, a large one
/// shrunk to `MAX_PANEL`; cells are at least `MIN_PANEL` wide so captions fit.
const MIN_PANEL: u32 = 224;
const MAX_PANEL: u32 = 1024;
const GAP: usize = 4;
/// Height of the two caption lines under each panel (method and probability, then the
/// class), and their font size.
const CAPTION: usize = 36;
const LINE: usize = 16;
const FONT_PX: u32 = 14;
/// Advance of one character of the caption font (DejaVu Sans Mono: 0.602 em), rounded up.
const CHAR_W: f64 = 8.5;

/// Draws the figures of a [`Request`] for one model: the CAM extractors are built once,
/// then [`CamFigure::render`] runs per image.
pub struct CamFigure<'a> {
    model: &'a dyn WsolModel,
    cfg: &'a Config,
    device: &'a Device,
    req: Request,
    names: ClassNames,
    extractors: Vec<Box<dyn CamExtractor>>,
    progress: Progress,
    /// The evaluation split by image path, read when an image first lies under image_root.
    split: OnceLock<HashMap<PathBuf, Sample>>,
}

impl<'a> CamFigure<'a> {
    /// Fails on an empty grid (no method or no class) and on an unknown method or layer.
    /// `progress` counts panels (and shows Score-CAM's passes as its message).
    pub fn new(
        model: &'a dyn WsolModel,
        cfg: &'a Config,
        device: &'a Device,
        req: Request,
        names: ClassNames,
        progress: &Progress,
    ) -> Result<Self> {
        // The grid's size arithmetic needs at least one column and one row.
        if req.methods.is_empty() {
            bail!("cam figure: no CAM method to draw (one column per method)");
        }
        match &req.classes {
            Classes::Given(c) if c.is_empty() => bail!("cam figure: no class to draw (one row per class)"),
            Classes::Top(0) => bail!("cam figure: top 0 classes leave no row to draw; ask for at least 1"),
            _ => {}
        }
        let mut extractors = Vec::with_capacity(req.methods.len());
        for method in &req.methods {
            let name: CamMethod = method.parse().map_err(|e: String| anyhow::anyhow!("--method: {e}"))?;
            let mut extractor = cam::by_name(name, cfg.eval.cam_layer.as_deref(), model)?;
            let bar = progress.clone();
            let method = method.clone();
            extractor.set_progress(Arc::new(move |done, total| {
                bar.set_message(format!("{method}: {done}/{total} masked inputs"));
            }));
            extractors.push(extractor);
        }
        Ok(CamFigure { model, cfg, device, req, names, extractors, progress: progress.clone(), split: OnceLock::new() })
    }

    /// The figure of one image file.
    pub fn render(&self, image: &Path) -> Result<Figure> {
        let size = self.cfg.data.image_size as usize;
        let img = load_rgb(image)?;
        let (w, h) = img.dimensions();
        let tcfg = eval_transform(self.cfg);
        let mut input = vec![0f32; tcfg.output_len()];
        transforms::apply(&img, &tcfg, &mut ChaCha8Rng::seed_from_u64(0), &mut input);
        let x = Tensor::from_vec(input, (1, 3, size, size), self.device)?;
        let out = self.model.forward_t(&x, false)?;
        let probs: Vec<f32> = candle_nn::ops::softmax(&out.logits, 1)?.squeeze(0)?.to_vec1()?;
        let classes = match &self.req.classes {
            Classes::Given(c) => {
                if let Some(&bad) = c.iter().find(|&&k| k >= probs.len()) {
                    bail!("--class {bad}: the model has {} classes (0..{})", probs.len(), probs.len() - 1);
                }
                c.clone()
            }
            Classes::Top(k) => {
                let mut order: Vec<usize> = (0..probs.len()).collect();
                order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
                order.truncate(*k);
                order
            }
        };

        let (dw, dh) = display_size(w, h);
        let shown = if (dw, dh) == (w, h) {
            img
        } else {
            let filter = if dw > w { FilterType::Nearest } else { FilterType::Triangle };
            imageops::resize(&img, dw, dh, filter)
        };
        let gt: Vec<BBox> = self
            .gt_boxes(image)
            .map(|(boxes, frame)| boxes.into_iter().map(|b| scale_box(b, frame, (dw, dh))).collect())
            .unwrap_or_default();
        let (dw, dh) = (dw as usize, dh as usize);
        let cell_w = dw.max(MIN_PANEL as usize);
        let cell_h = dh + CAPTION;
        let (cols, rows) = (self.req.methods.len(), classes.len());
        let (grid_w, grid_h) = (cols * cell_w + (cols - 1) * GAP, rows * cell_h + (rows - 1) * GAP);
        let mut grid = vec![255u8; grid_w * grid_h * 3];
        let mut panels = Vec::new();
        let file = image.file_name().map_or_else(|| image.display().to_string(), |n| n.to_string_lossy().into_owned());
        for (col, (method, extractor)) in self.req.methods.iter().zip(&self.extractors).enumerate() {
            for (row, &class) in classes.iter().enumerate() {
                self.progress.set_message(format!("{file}: {method}, {}", self.names.label(class)));
                let targets = Tensor::new(&[class as u32], self.device)?;
                let maps = extractor
                    .extract(&CamInput { model: self.model, images: &x, out: &out, targets: &targets })
                    .with_context(|| {
                        format!("computing `{method}` for {} of {}", self.names.describe(class), image.display())
                    })?;
                let (_, mh, mw) = maps.dims3()?;
                // The box exactly as the evaluator finds it, on its grid, then in original pixels.
                let map = prepare_map(&maps.flatten_all()?.to_vec1::<f32>()?, mw, mh, size);
                let on_grid = boxes_at_thresholds(&map, size, size, &[self.req.threshold])[0].largest;
                let pred = scale_box(on_grid, (size as u32, size as u32), (w, h));
                let mut shown_map =
                    if (dw, dh) == (size, size) { map } else { resize_bicubic(&map, size, size, dw, dh) };
                // Bicubic overshoots a little past [0, 1].
                shown_map.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
                let drawn = scale_box(pred, (w, h), (dw as u32, dh as u32));
                let cell = overlay(shown.as_raw(), &shown_map, dw, dh, self.req.alpha, &gt, Some(drawn));
                let (x0, y0) = (col * (cell_w + GAP), row * (cell_h + GAP));
                blit(&mut grid, grid_w, &cell, dw, dh, x0 + (cell_w - dw) / 2, y0);
                let lines = [format!("{method}  p={:.3}", probs[class]), self.names.label(class)];
                for (k, line) in lines.iter().enumerate() {
                    let (x, y) = (x0 as i32 + 2, (y0 + dh + 3 + k * LINE) as i32);
                    draw_text(&mut grid, grid_w, grid_h, x, y, &fit(line, cell_w), FONT_PX)?;
                }
                panels.push(Panel { method: method.clone(), class, score: probs[class], pred });
                self.progress.inc(1);
            }
        }
        Ok(Figure { png: encode_png_rgb(&grid, grid_w as u32, grid_h as u32)?, image_size: (w, h), panels })
    }

    /// The GT boxes of `image` when the evaluation split lists it, with the image size
    /// they are given in (`image_sizes.txt`).
    fn gt_boxes(&self, image: &Path) -> Option<(Vec<BBox>, (u32, u32))> {
        let root = self.cfg.data.image_root.canonicalize().ok()?;
        let image = image.canonicalize().ok()?;
        if !image.starts_with(&root) {
            return None;
        }
        let split = self.split.get_or_init(|| {
            let meta = wsol_eval::metadata::read_split(
                &self.cfg.data.metadata_root,
                &self.cfg.eval.split,
                self.cfg.data.num_classes,
            );
            meta.map(|m| m.samples.into_iter().map(|s| (root.join(&s.image_id), s)).collect()).unwrap_or_default()
        });
        let s = split.get(&image)?;
        let boxes = s.boxes.iter().map(|b| BBox::new(b[0] as i32, b[1] as i32, b[2] as i32, b[3] as i32)).collect();
        Some((boxes, s.size)).filter(|(_, (sw, sh))| *sw > 0 && *sh > 0)
    }
}

/// The picture size of a `w` x `h` image (see [`MIN_PANEL`]).
fn display_size(w: u32, h: u32) -> (u32, u32) {
    let long = w.max(h).max(1);
    if long < MIN_PANEL {
        let f = MIN_PANEL.div_ceil(long);
        (w * f, h * f)
    } else if long > MAX_PANEL {
        let s = MAX_PANEL as f64 / long as f64;
        (((w as f64 * s).round() as u32).max(1), ((h as f64 * s).round() as u32).max(1))
    } else {
        (w, h)
    }
}

/// A box of inclusive pixel corners from a `from` (w, h) pixel frame to a `to` frame
/// scaled per axis: the smallest box of `to` pixels covering the area the box's pixels
/// cover (the evaluation transform squashes the image to a square, so this undoes it).
pub fn scale_box(b: BBox, from: (u32, u32), to: (u32, u32)) -> BBox {
    let axis = |lo: i32, hi: i32, f: u32, t: u32| -> (i32, i32) {
        let (f, t) = (u64::from(f.max(1)), u64::from(t.max(1)));
        let (lo, hi) = (lo.max(0) as u64, hi.max(lo).max(0) as u64);
        let first = (lo * t / f).min(t - 1);
        let last = ((hi + 1) * t).div_ceil(f) - 1;
        (first as i32, last.clamp(first, t - 1) as i32)
    };
    let (x0, x1) = axis(b.x0, b.x1, from.0, to.0);
    let (y0, y1) = axis(b.y0, b.y1, from.1, to.1);
    BBox { x0, y0, x1, y1 }
}

/// `text` shortened with an ellipsis to fit `width` pixels of caption.
fn fit(text: &str, width: usize) -> String {
    let room = (width.saturating_sub(4) as f64 / CHAR_W) as usize;
    if text.chars().count() <= room {
        return text.to_string();
    }
    text.chars().take(room.saturating_sub(1)).collect::<String>() + "…"
}

/// Copies an RGB `w` x `h` cell into the grid with its top-left corner at (x0, y0).
fn blit(grid: &mut [u8], grid_w: usize, cell: &[u8], w: usize, h: usize, x0: usize, y0: usize) {
    for y in 0..h {
        let dst = ((y0 + y) * grid_w + x0) * 3;
        grid[dst..dst + 3 * w].copy_from_slice(&cell[y * w * 3..(y + 1) * w * 3]);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;
    use candle_nn::{VarBuilder, VarMap};

    use super::*;
    use crate::config::{DataConfig, ModelConfig};

    #[test]
    fn an_empty_grid_is_an_error_and_a_non_square_image_keeps_its_shape() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("a.png");
        image::RgbImage::from_fn(80, 50, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 0])).save(&image).unwrap();
        let data = DataConfig { image_size: 32, num_classes: 5, image_root: tmp.path().into(), ..Default::default() };
        let cfg = Config { data, model: ModelConfig { width: 4, ..Default::default() }, ..Default::default() };
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let net = crate::methods::build(&cfg.model, 5, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
        crate::models::init::initialize(&varmap, 3, &dev).unwrap();
        let req = |methods: &[&str], classes| Request {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            classes,
            threshold: 0.2,
            alpha: 0.5,
        };
        let progress = Progress::new(0, "cam", true);
        let names = ClassNames::from_names(["a", "b", "c", "d", "e"].map(String::from).to_vec(), Path::new("n"));
        let figure = |r: Request| {
            CamFigure::new(net.as_ref(), &cfg, &dev, r, names.clone(), &progress).and_then(|f| f.render(&image))
        };
        let f = figure(req(&["cam", "gradcam"], Classes::Given(vec![1, 4]))).unwrap();
        assert_eq!(f.panels.len(), 4);
        assert_eq!(f.image_size, (80, 50));
        // 80x50 shown 3x (240x150), two columns and rows, captions and gaps.
        let png = image::load_from_memory(&f.png).unwrap();
        assert_eq!((png.width(), png.height()), (2 * 240 + GAP as u32, 2 * (150 + CAPTION as u32) + GAP as u32));
        for p in &f.panels {
            let b = p.pred;
            assert!(0 <= b.x0 && b.x0 <= b.x1 && b.x1 < 80 && 0 <= b.y0 && b.y0 <= b.y1 && b.y1 < 50, "{b:?}");
        }
        for (r, want) in [
            (req(&[], Classes::Top(1)), "no CAM method"),
            (req(&["cam"], Classes::Given(vec![])), "no class"),
            (req(&["cam"], Classes::Top(0)), "top 0"),
        ] {
            let err = figure(r).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(want), "expected an error with `{want}`, got `{err}`");
        }
    }

    #[test]
    fn boxes_go_back_to_original_pixels_per_axis() {
        // The whole grid is the whole image.
        assert_eq!(scale_box(BBox::new(0, 0, 47, 47), (48, 48), (80, 50)), BBox::new(0, 0, 79, 49));
        // Grid pixel 10 covers original x in [16.67, 18.33): pixels 16..=18.
        assert_eq!(scale_box(BBox::new(10, 10, 10, 10), (48, 48), (80, 50)), BBox::new(16, 10, 18, 11));
        // Exact multiples: pixel 10 of 48 is pixels 20 and 21 of 96.
        assert_eq!(scale_box(BBox::new(10, 0, 10, 0), (48, 48), (96, 48)), BBox::new(20, 0, 21, 0));
        // Shrinking keeps at least one pixel and stays inside.
        assert_eq!(scale_box(BBox::new(5, 5, 5, 5), (100, 100), (10, 10)), BBox::new(0, 0, 0, 0));
        assert_eq!(scale_box(BBox::new(99, 0, 99, 0), (100, 100), (10, 10)), BBox::new(9, 0, 9, 0));
    }

    #[test]
    fn pictures_keep_the_aspect_ratio_within_bounds() {
        assert_eq!(display_size(48, 48), (240, 240));
        assert_eq!(display_size(80, 50), (240, 150));
        assert_eq!(display_size(500, 375), (500, 375));
        assert_eq!(display_size(4000, 3000), (1024, 768));
        assert_eq!(display_size(1, 2000), (1, 1024));
    }

    #[test]
    fn long_names_are_shortened_to_the_panel() {
        assert_eq!(fit("great white shark", 240), "great white shark");
        let c = fit("Bernese mountain dog, and a very long tail", 240);
        assert!(c.starts_with("Bernese mountain dog") && c.ends_with('…'), "{c}");
        assert!(c.chars().count() as f64 * CHAR_W <= 236.0, "{c}");
    }
}
