//! `wsol cam`: one image's class maps as a picture — the map over the image (jet), the
//! box the evaluator would predict at a threshold (red) and, when the image belongs to
//! the configured evaluation split, its GT boxes (green). Several methods and classes make
//! a grid: one column per method, one row per class, each panel captioned with its
//! method, class and softmax probability.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::eval_transform;
use crate::cam::{self, CamInput};
use crate::config::Config;
use crate::data::transforms::{self, load_rgb};
use crate::models::WsolModel;
use crate::report::encode_png_rgb;
use crate::report::overlay::overlay;
use crate::report::text::draw_text;
use wsol_eval::localize::{boxes_at_thresholds, prepare_map, rescale_boxes, BBox};
use wsol_eval::metadata::Sample;

/// Which classes get a row.
pub enum Classes {
    /// These class indices.
    Given(Vec<usize>),
    /// The model's top-k predictions.
    Top(usize),
}

pub struct Request {
    pub image: PathBuf,
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
    /// Predicted box on the `image_size` grid.
    pub pred: BBox,
}

/// Panels are shown at least this large (nearest-neighbour upscaling of small inputs).
const MIN_PANEL: usize = 224;
const GAP: usize = 4;
/// Height of the caption line under each panel.
const CAPTION: usize = 20;

/// Renders the grid; returns the PNG bytes and what each panel shows. Fails on an empty
/// grid (no method or no class).
pub fn render(model: &dyn WsolModel, cfg: &Config, device: &Device, req: &Request) -> Result<(Vec<u8>, Vec<Panel>)> {
    // The grid's size arithmetic needs at least one column and one row.
    if req.methods.is_empty() {
        bail!("cam figure: no CAM method to draw (one column per method)");
    }
    match &req.classes {
        Classes::Given(c) if c.is_empty() => bail!("cam figure: no class to draw (one row per class)"),
        Classes::Top(0) => bail!("cam figure: top 0 classes leave no row to draw; ask for at least 1"),
        _ => {}
    }
    let size = cfg.data.image_size as usize;
    let img = load_rgb(&req.image)?;
    let tcfg = eval_transform(cfg);
    let mut input = vec![0f32; tcfg.output_len()];
    transforms::apply(&img, &tcfg, &mut ChaCha8Rng::seed_from_u64(0), &mut input);
    let rgb = transforms::to_rgb8(&input, cfg.data.mean, cfg.data.std);
    let x = Tensor::from_vec(input, (1, 3, size, size), device)?;
    let out = model.forward_t(&x, false)?;
    let probs: Vec<f32> = candle_nn::ops::softmax(&out.logits, 1)?.squeeze(0)?.to_vec1()?;
    let classes = match &req.classes {
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
    let gt = find_sample(cfg, &req.image).map(|s| rescale_boxes(&s.boxes, s.size, size)).unwrap_or_default();

    let scale = MIN_PANEL.div_ceil(size).max(1);
    let side = size * scale;
    let (cols, rows) = (req.methods.len(), classes.len());
    let cell_h = side + CAPTION;
    let (grid_w, grid_h) = (cols * side + (cols - 1) * GAP, rows * cell_h + (rows - 1) * GAP);
    let mut grid = vec![255u8; grid_w * grid_h * 3];
    let mut panels = Vec::new();
    for (col, method) in req.methods.iter().enumerate() {
        let name = method.parse().map_err(|e: String| anyhow::anyhow!("--method: {e}"))?;
        let extractor = cam::by_name(name, cfg.eval.cam_layer.as_deref(), model)?;
        for (row, &class) in classes.iter().enumerate() {
            let targets = Tensor::new(&[class as u32], device)?;
            let maps = extractor
                .extract(&CamInput { model, images: &x, out: &out, targets: &targets })
                .with_context(|| format!("computing `{method}` for class {class}"))?;
            let (_, h, w) = maps.dims3()?;
            let map = prepare_map(&maps.flatten_all()?.to_vec1::<f32>()?, w, h, size);
            let pred = boxes_at_thresholds(&map, size, size, &[req.threshold])[0].largest;
            let cell = overlay(&rgb, &map, size, size, req.alpha, &gt, Some(pred));
            let (x0, y0) = (col * (side + GAP), row * (cell_h + GAP));
            blit(&mut grid, grid_w, &cell, size, scale, x0, y0);
            let caption = format!("{method}  class {class}  p={:.3}", probs[class]);
            draw_text(&mut grid, grid_w, grid_h, x0 as i32 + 2, (y0 + side + 3) as i32, &caption, 14)?;
            panels.push(Panel { method: method.clone(), class, score: probs[class], pred });
        }
    }
    Ok((encode_png_rgb(&grid, grid_w as u32, grid_h as u32)?, panels))
}

/// The evaluation split's record of `image`, when it has one.
fn find_sample(cfg: &Config, image: &Path) -> Option<Sample> {
    let root = cfg.data.image_root.canonicalize().ok()?;
    let rel = image.canonicalize().ok()?.strip_prefix(&root).ok()?.to_string_lossy().replace('\\', "/");
    let meta = wsol_eval::metadata::read_split(&cfg.data.metadata_root, &cfg.eval.split, cfg.data.num_classes).ok()?;
    meta.samples.into_iter().find(|s| s.image_id == rel)
}

/// Copies an RGB `size`-square cell into the grid at (x0, y0), each pixel `scale`-fold.
fn blit(grid: &mut [u8], grid_w: usize, cell: &[u8], size: usize, scale: usize, x0: usize, y0: usize) {
    for y in 0..size * scale {
        for x in 0..size * scale {
            let src = ((y / scale) * size + x / scale) * 3;
            let dst = ((y0 + y) * grid_w + x0 + x) * 3;
            grid[dst..dst + 3].copy_from_slice(&cell[src..src + 3]);
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;
    use candle_nn::{VarBuilder, VarMap};

    use super::*;
    use crate::config::{DataConfig, ModelConfig};

    #[test]
    fn an_empty_grid_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("a.png");
        image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 0])).save(&image).unwrap();
        let data = DataConfig { image_size: 32, num_classes: 5, image_root: tmp.path().into(), ..Default::default() };
        let cfg = Config { data, model: ModelConfig { width: 4, ..Default::default() }, ..Default::default() };
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let net = crate::methods::build(&cfg.model, 5, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
        crate::models::init::initialize(&varmap, 3, &dev).unwrap();
        let req = |methods: &[&str], classes| Request {
            image: image.clone(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            classes,
            threshold: 0.2,
            alpha: 0.5,
        };
        let render = |r: &Request| render(net.as_ref(), &cfg, &dev, r).map(|(_, panels)| panels.len());
        assert_eq!(render(&req(&["cam", "gradcam"], Classes::Given(vec![1, 4]))).unwrap(), 4);
        for (r, want) in [
            (req(&[], Classes::Top(1)), "no CAM method"),
            (req(&["cam"], Classes::Given(vec![])), "no class"),
            (req(&["cam"], Classes::Top(0)), "top 0"),
        ] {
            let err = render(&r).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(want), "expected an error with `{want}`, got `{err}`");
        }
    }
}
