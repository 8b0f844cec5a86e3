//! `per_image.csv`: what the evaluation decided for each image, for error analysis — its
//! top-5 predictions, the v1 (largest-contour) box at the best threshold (the box that
//! counted for `gt_known_loc`), that box's IoU and whether it was correct.
//!
//! The best threshold is known only once every image is scored, so [`PerImageRecorder`]
//! keeps each image's v1 box at every threshold of the sweep, fed from the same sweep as
//! the [`super::BoxAccumulator`] ([`super::BoxAccumulator::score`]). Boxes are 16-bit and
//! run-length coded over the thresholds (neighbouring thresholds often give the same box):
//! at most 10 bytes per threshold and image, so 50,000 images at 100 thresholds take at
//! most 50 MB, plus each image's id and predictions.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use super::box_acc::{best_iou, iou_hit, ScoredSweep, IOU_LOC};
use super::{ClsOutcome, LocalizationMetrics};
use crate::localize::{box_to_original, BBox};

/// A predicted class and, when the predictions came with scores, its softmax probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    pub class: usize,
    pub probability: Option<f32>,
}

/// What a row says about an image besides its box.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    pub image_id: String,
    pub gt_class: usize,
    /// Width and height in pixels, as `image_sizes.txt` gives them.
    pub original_size: (u32, u32),
    /// Up to five, most likely first; empty when there are no predictions.
    pub predictions: Vec<Prediction>,
    pub cls: Option<ClsOutcome>,
}

/// Each image's v1 box at every threshold, until the best threshold is known.
#[derive(Clone, Debug)]
pub struct PerImageRecorder {
    n_thresholds: usize,
    image_size: usize,
    images: Vec<Recorded>,
}

#[derive(Clone, Debug)]
struct Recorded {
    /// Position in the split, so rows come out in metadata order whatever the threads did.
    position: usize,
    info: ImageInfo,
    /// GT boxes on the evaluation grid.
    gt: Box<[BBox]>,
    runs: Box<[Run]>,
}

/// The v1 box from threshold index `first` up to the next run's.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Run {
    first: u16,
    bbox: [u16; 4],
}

impl PerImageRecorder {
    /// For a sweep of `n_thresholds` CAM thresholds on an `image_size` square grid.
    pub fn new(n_thresholds: usize, image_size: usize) -> Result<Self> {
        // 16-bit storage; the sweep never has more than 10,000 thresholds.
        ensure!(
            n_thresholds <= u16::MAX as usize + 1,
            "per-image results: {n_thresholds} CAM thresholds, at most 65536 supported"
        );
        ensure!(
            image_size <= u16::MAX as usize + 1,
            "per-image results: image_size {image_size} above the 65536 pixels supported"
        );
        Ok(PerImageRecorder { n_thresholds, image_size, images: Vec::new() })
    }

    /// Keeps image `position` of the split; `gt` are its GT boxes on the grid, `scored`
    /// its sweep as the box accumulator scored it.
    pub fn record(&mut self, position: usize, info: ImageInfo, gt: &[BBox], scored: &ScoredSweep) {
        let boxes = scored.v1_boxes();
        assert_eq!(boxes.len(), self.n_thresholds, "a sweep of another threshold count");
        let mut runs: Vec<Run> = Vec::new();
        for (t, b) in boxes.enumerate() {
            // Sweep boxes lie on the grid (0..image_size), which `new` bounds to 16 bits.
            let bbox = [b.x0, b.y0, b.x1, b.y1].map(|v| v as u16);
            if runs.last().is_none_or(|r| r.bbox != bbox) {
                runs.push(Run { first: t as u16, bbox });
            }
        }
        self.images.push(Recorded { position, info, gt: gt.into(), runs: runs.into() });
    }

    /// Adds the images of `other` (another thread's share of the split).
    pub fn merge(&mut self, mut other: PerImageRecorder) {
        assert_eq!(
            (self.n_thresholds, self.image_size),
            (other.n_thresholds, other.image_size),
            "merging per-image recorders of different configurations"
        );
        self.images.append(&mut other.images);
    }

    /// The recorded images as bytes, for [`Self::extend_from_bytes`] in another process
    /// (ranks of a sharded evaluation send theirs to one that writes the table). Every
    /// field goes as its bits, so the rows rebuilt there are the rows recorded here.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let u32_of = |n: usize| u32::try_from(n).expect("per-image field above 4 G entries");
        for r in &self.images {
            out.extend((r.position as u64).to_le_bytes());
            out.extend(u32_of(r.info.image_id.len()).to_le_bytes());
            out.extend(r.info.image_id.as_bytes());
            out.extend((r.info.gt_class as u64).to_le_bytes());
            out.extend(r.info.original_size.0.to_le_bytes());
            out.extend(r.info.original_size.1.to_le_bytes());
            out.extend(u32_of(r.info.predictions.len()).to_le_bytes());
            for p in &r.info.predictions {
                out.extend((p.class as u64).to_le_bytes());
                out.push(p.probability.is_some() as u8);
                out.extend(p.probability.unwrap_or(0.0).to_bits().to_le_bytes());
            }
            out.push(r.info.cls.map_or(0, |c| 1 | (c.top1 as u8) << 1 | (c.top5 as u8) << 2));
            out.extend(u32_of(r.gt.len()).to_le_bytes());
            for b in r.gt.iter() {
                [b.x0, b.y0, b.x1, b.y1].iter().for_each(|v| out.extend(v.to_le_bytes()));
            }
            out.extend(u32_of(r.runs.len()).to_le_bytes());
            for run in r.runs.iter() {
                out.extend(run.first.to_le_bytes());
                run.bbox.iter().for_each(|v| out.extend(v.to_le_bytes()));
            }
        }
        out
    }

    /// Adds the images that [`Self::to_bytes`] wrote (a recorder of the same configuration).
    pub fn extend_from_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = Reader { bytes, at: 0 };
        while r.at < bytes.len() {
            let position = r.u64()? as usize;
            let id_len = r.u32()? as usize;
            let image_id = String::from_utf8(r.take(id_len)?.to_vec()).context("per-image bytes: an image id")?;
            let gt_class = r.u64()? as usize;
            let original_size = (r.u32()?, r.u32()?);
            let mut predictions = Vec::new();
            for _ in 0..r.u32()? {
                let class = r.u64()? as usize;
                let has = r.take(1)?[0] != 0;
                let p = f32::from_bits(r.u32()?);
                predictions.push(Prediction { class, probability: has.then_some(p) });
            }
            let c = r.take(1)?[0];
            let cls = (c & 1 != 0).then_some(ClsOutcome { top1: c & 2 != 0, top5: c & 4 != 0 });
            let mut gt = Vec::new();
            for _ in 0..r.u32()? {
                let v = [r.u32()?, r.u32()?, r.u32()?, r.u32()?].map(|v| v as i32);
                gt.push(BBox { x0: v[0], y0: v[1], x1: v[2], y1: v[3] });
            }
            let mut runs = Vec::new();
            for _ in 0..r.u32()? {
                let first = r.u16()?;
                runs.push(Run { first, bbox: [r.u16()?, r.u16()?, r.u16()?, r.u16()?] });
            }
            ensure!(!runs.is_empty(), "per-image bytes: an image without boxes");
            let info = ImageInfo { image_id, gt_class, original_size, predictions, cls };
            self.images.push(Recorded { position, info, gt: gt.into(), runs: runs.into() });
        }
        Ok(())
    }

    /// The rows at the v1 best threshold of `loc` (`best_threshold` of metrics.json), in
    /// split order.
    pub fn finish(mut self, loc: &LocalizationMetrics) -> Result<PerImageTable> {
        let thresholds = &loc.curves.thresholds;
        ensure!(thresholds.len() == self.n_thresholds, "per-image results: a sweep of another threshold count");
        let Some(best) = thresholds.iter().position(|&t| t == loc.best_threshold_v1) else {
            bail!("per-image results: best threshold {} is not a threshold of the sweep", loc.best_threshold_v1);
        };
        self.images.sort_by_key(|r| r.position);
        let rows = self
            .images
            .into_iter()
            .map(|r| {
                let run = r.runs[r.runs.partition_point(|run| run.first as usize <= best) - 1];
                let [x0, y0, x1, y1] = run.bbox.map(i32::from);
                let grid_box = BBox { x0, y0, x1, y1 };
                // The accumulator's own test on the same box, so the counts agree exactly.
                let iou = best_iou(std::slice::from_ref(&grid_box), &r.gt);
                let correct = iou_hit(iou, IOU_LOC);
                PerImageRow {
                    box_original: box_to_original(grid_box, r.info.original_size, self.image_size),
                    iou: (!r.gt.is_empty()).then_some(iou),
                    gt_known_loc: correct,
                    top1_loc: r.info.cls.map(|c| correct && c.top1),
                    top5_loc: r.info.cls.map(|c| correct && c.top5),
                    image_id: r.info.image_id,
                    gt_class: r.info.gt_class,
                    predictions: r.info.predictions,
                }
            })
            .collect();
        Ok(PerImageTable { rows })
    }
}

/// One row of `per_image.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct PerImageRow {
    pub image_id: String,
    pub gt_class: usize,
    /// Up to five, most likely first.
    pub predictions: Vec<Prediction>,
    /// The v1 box of the GT class's map at the best threshold, in original-image pixels.
    pub box_original: BBox,
    /// Its best IoU with a GT box, as scored (on the evaluation grid, GT boxes rescaled to
    /// it); `None` for an image without GT boxes.
    pub iou: Option<f64>,
    /// IoU >= 0.5.
    pub gt_known_loc: bool,
    /// Correct box and GT class in the top-1 / top-5 predictions; `None` without predictions.
    pub top1_loc: Option<bool>,
    pub top5_loc: Option<bool>,
}

/// The rows of `per_image.csv`, in split order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PerImageTable {
    pub rows: Vec<PerImageRow>,
}

/// The header of `per_image.csv`: predictions pred1..pred5 with their probabilities
/// (blank where unknown), the box in original pixels, its IoU and the 0/1 outcomes.
pub const PER_IMAGE_HEADER: &str = "image_id,gt_class,pred1,prob1,pred2,prob2,pred3,prob3,pred4,prob4,pred5,prob5,\
box_x0,box_y0,box_x1,box_y1,iou,gt_known_loc,top1_loc,top5_loc";

const TOP_K: usize = 5;

impl PerImageTable {
    /// The CSV text. Numbers print in their shortest exact form, so reading the file back
    /// gives the same values.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(PER_IMAGE_HEADER);
        out.push('\n');
        let flag = |b: bool| if b { "1" } else { "0" };
        for r in &self.rows {
            let _ = write!(out, "{},{}", csv_field(&r.image_id), r.gt_class);
            for k in 0..TOP_K {
                match r.predictions.get(k) {
                    Some(p) => {
                        let prob = p.probability.map(|v| v.to_string()).unwrap_or_default();
                        let _ = write!(out, ",{},{prob}", p.class);
                    }
                    None => out.push_str(",,"),
                }
            }
            let b = r.box_original;
            let _ = write!(out, ",{},{},{},{}", b.x0, b.y0, b.x1, b.y1);
            let _ = write!(out, ",{}", r.iou.map(|v| v.to_string()).unwrap_or_default());
            let _ = write!(out, ",{}", flag(r.gt_known_loc));
            for v in [r.top1_loc, r.top5_loc] {
                let _ = write!(out, ",{}", v.map(flag).unwrap_or(""));
            }
            out.push('\n');
        }
        out
    }

    /// Reads a `per_image.csv`; errors name the file and line.
    pub fn read(path: &Path) -> Result<PerImageTable> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        match lines.next() {
            Some((_, h)) if h.trim_end() == PER_IMAGE_HEADER => {}
            _ => bail!("{}: not a per_image.csv (expected the header `{PER_IMAGE_HEADER}`)", path.display()),
        }
        let rows = lines
            .map(|(i, line)| parse_row(line).with_context(|| format!("{}:{}", path.display(), i + 1)))
            .collect::<Result<_>>()?;
        Ok(PerImageTable { rows })
    }
}

/// A field quoted as RFC 4180 has it when it holds a comma or quote (image ids may).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The fields of one CSV line, quotes undone.
fn split_csv(line: &str) -> Result<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        let field = fields.last_mut().expect("one field at least");
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(String::new()),
            (_, c) => field.push(c),
        }
    }
    ensure!(!quoted, "a quoted field is not closed");
    Ok(fields)
}

fn parse_row(line: &str) -> Result<PerImageRow> {
    let f = split_csv(line)?;
    let n = PER_IMAGE_HEADER.split(',').count();
    ensure!(f.len() == n, "expected {n} fields, got {}", f.len());
    let name = |i: usize| PER_IMAGE_HEADER.split(',').nth(i).unwrap_or_default();
    let num = |i: usize| -> Result<i64> { f[i].trim().parse().with_context(|| format!("{}: `{}`", name(i), f[i])) };
    let opt = |i: usize| (!f[i].trim().is_empty()).then(|| f[i].trim());
    let flag = |i: usize| -> Result<Option<bool>> {
        match opt(i) {
            None => Ok(None),
            Some("1") => Ok(Some(true)),
            Some("0") => Ok(Some(false)),
            Some(v) => bail!("{}: `{v}`, expected 0 or 1", name(i)),
        }
    };
    let mut predictions = Vec::new();
    for k in 0..TOP_K {
        let (c, p) = (2 + 2 * k, 3 + 2 * k);
        if opt(c).is_none() {
            break;
        }
        let class = usize::try_from(num(c)?).with_context(|| format!("{}: `{}`", name(c), f[c]))?;
        let probability =
            opt(p).map(|v| v.parse::<f32>().with_context(|| format!("{}: `{v}`", name(p)))).transpose()?;
        predictions.push(Prediction { class, probability });
    }
    let coord =
        |i: usize| -> Result<i32> { i32::try_from(num(i)?).with_context(|| format!("{}: out of range", name(i))) };
    Ok(PerImageRow {
        image_id: f[0].clone(),
        gt_class: usize::try_from(num(1)?).with_context(|| format!("gt_class: `{}`", f[1]))?,
        predictions,
        box_original: BBox { x0: coord(12)?, y0: coord(13)?, x1: coord(14)?, y1: coord(15)? },
        iou: opt(16).map(|v| v.parse::<f64>().with_context(|| format!("iou: `{v}`"))).transpose()?,
        gt_known_loc: flag(17)?.context("gt_known_loc: empty, expected 0 or 1")?,
        top1_loc: flag(18)?,
        top5_loc: flag(19)?,
    })
}

/// Reads what [`PerImageRecorder::to_bytes`] wrote, failing on a short buffer.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let Some(s) = self.bytes.get(self.at..self.at + n) else {
            bail!("per-image bytes: cut short at byte {} of {}", self.at, self.bytes.len());
        };
        self.at += n;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localize::quantize;
    use crate::metrics::{BoxAccumulator, BoxEvalConfig};

    fn cfg() -> BoxEvalConfig {
        BoxEvalConfig {
            thresholds: vec![0.0, 0.25, 0.5, 0.75],
            iou_thresholds: vec![30, 50, 70],
            multi_contour: true,
            fixed_threshold: 0.5,
        }
    }

    /// A 6x6 map with a `side`-pixel blob at level 9 in the top-left corner and a 1-pixel
    /// halo at level 3 around it.
    fn blob(side: usize) -> Vec<f64> {
        (0..36)
            .map(|i| {
                let (x, y) = (i % 6, i / 6);
                match x.max(y) {
                    m if m < side => 1.0,
                    m if m == side => 3.0 / 9.0,
                    _ => 0.0,
                }
            })
            .collect()
    }

    fn info(id: &str, cls: Option<ClsOutcome>) -> ImageInfo {
        let predictions =
            vec![Prediction { class: 2, probability: Some(0.75) }, Prediction { class: 0, probability: None }];
        ImageInfo { image_id: id.into(), gt_class: 2, original_size: (12, 12), predictions, cls }
    }

    /// Rows agree with the accumulator: the fraction of correct rows is gt_known_loc and
    /// top1_loc exactly, whichever thread recorded which image.
    #[test]
    fn rows_count_what_the_accumulator_counts() {
        let c = cfg();
        let gt = [BBox::new(0, 0, 2, 2)];
        let (mut acc_a, mut acc_b) = (BoxAccumulator::new(&c).unwrap(), BoxAccumulator::new(&c).unwrap());
        let (mut rec_a, mut rec_b) = (PerImageRecorder::new(4, 6).unwrap(), PerImageRecorder::new(4, 6).unwrap());
        let top = |top1| Some(ClsOutcome { top1, top5: true });
        let images = [(blob(2), top(true)), (blob(4), top(true)), (blob(2), top(false)), (vec![0.0; 36], top(true))];
        for (i, (map, cls)) in images.iter().enumerate().rev() {
            let (acc, rec) = if i % 2 == 0 { (&mut acc_a, &mut rec_a) } else { (&mut acc_b, &mut rec_b) };
            let scored = acc.score(&quantize(map), 6, 6, &gt);
            acc.add_scored(&scored, *cls);
            rec.record(i, info(&format!("img{i}"), *cls), &gt, &scored);
        }
        acc_a.merge(&acc_b);
        rec_a.merge(rec_b);
        let m = acc_a.finish();
        let table = rec_a.finish(&m).unwrap();
        let ids: Vec<&str> = table.rows.iter().map(|r| r.image_id.as_str()).collect();
        assert_eq!(ids, ["img0", "img1", "img2", "img3"]);
        let pct = |k: usize| k as f64 * 100.0 / 4.0;
        let count = |f: fn(&PerImageRow) -> bool| table.rows.iter().filter(|r| f(r)).count();
        assert_eq!(pct(count(|r| r.gt_known_loc)), m.gt_known_loc);
        assert_eq!(pct(count(|r| r.top1_loc == Some(true))), m.top1_loc.unwrap());
        assert_eq!(pct(count(|r| r.top5_loc == Some(true))), m.top5_loc.unwrap());
        // At t = 0 the blob plus halo is the box; the 2-pixel blob's (0,0,3,3) has IoU 9/16
        // with GT (0,0,2,2): correct. Boxes come back at twice the size (12 px originals).
        assert_eq!(m.best_threshold_v1, 0.0);
        assert_eq!(table.rows[0].iou, Some(9.0 / 16.0));
        assert_eq!(table.rows[0].box_original, BBox::new(0, 0, 6, 6));
        assert!(table.rows[0].gt_known_loc && table.rows[0].top1_loc == Some(true));
        assert!(!table.rows[1].gt_known_loc);
        assert_eq!(table.rows[2].top1_loc, Some(false));
        // An all-zero map has no contour: the (0,0,0,0) box, as the official evaluator.
        assert_eq!(table.rows[3].box_original, BBox::ZERO);
        assert_eq!(table.rows[3].iou, Some(1.0 / 9.0));
    }

    /// Another process's recorder, sent as bytes, gives the rows it would have given
    /// itself, bit for bit; a cut buffer is an error, not a panic.
    #[test]
    fn recorders_travel_as_bytes() {
        let c = cfg();
        let gt = [BBox::new(0, 0, 2, 2), BBox::new(1, 1, 5, 4)];
        let mut acc = BoxAccumulator::new(&c).unwrap();
        let (mut whole, mut sent) = (PerImageRecorder::new(4, 6).unwrap(), PerImageRecorder::new(4, 6).unwrap());
        let cls = [None, Some(ClsOutcome { top1: false, top5: true }), Some(ClsOutcome { top1: true, top5: true })];
        for (i, map) in [blob(2), blob(4), vec![0.0; 36]].iter().enumerate() {
            let scored = acc.score(&quantize(map), 6, 6, &gt);
            acc.add_scored(&scored, cls[i]);
            let mut inf = info(&format!("dir/é{i}.jpg"), cls[i]);
            inf.predictions[0].probability = Some(0.1 + i as f32 / 3.0);
            whole.record(i, inf.clone(), &gt, &scored);
            sent.record(i, inf, &gt, &scored);
        }
        let bytes = sent.to_bytes();
        let mut received = PerImageRecorder::new(4, 6).unwrap();
        received.extend_from_bytes(&bytes).unwrap();
        let m = acc.finish();
        assert_eq!(whole.finish(&m).unwrap().to_csv(), received.finish(&m).unwrap().to_csv());
        let mut cut = PerImageRecorder::new(4, 6).unwrap();
        let err = cut.extend_from_bytes(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
    }

    /// The row's box is the one the best threshold (as metrics.json names it) gave.
    #[test]
    fn the_box_is_the_best_thresholds() {
        let c = BoxEvalConfig { iou_thresholds: vec![50], ..cfg() };
        let mut acc = BoxAccumulator::new(&c).unwrap();
        let mut rec = PerImageRecorder::new(4, 6).unwrap();
        let gt = [BBox::new(0, 0, 1, 1)];
        let scored = acc.score(&quantize(&blob(2)), 6, 6, &gt);
        // Two runs: the blob with its halo (t = 0, 0.25), then the blob alone (0.5, 0.75).
        let boxes: Vec<BBox> = scored.v1_boxes().collect();
        assert_eq!(boxes, [BBox::new(0, 0, 3, 3), BBox::new(0, 0, 3, 3), BBox::new(0, 0, 2, 2), BBox::new(0, 0, 2, 2)]);
        acc.add_scored(&scored, None);
        rec.record(0, info("a", None), &gt, &scored);
        assert_eq!(rec.images[0].runs.len(), 2);
        let mut m = acc.finish();
        m.best_threshold_v1 = 0.5;
        let row = &rec.clone().finish(&m).unwrap().rows[0];
        assert_eq!(row.box_original, BBox::new(0, 0, 4, 4));
        assert_eq!(row.iou, Some(4.0 / 9.0));
        assert_eq!((row.top1_loc, row.top5_loc), (None, None));
        m.best_threshold_v1 = 0.3;
        assert!(rec.finish(&m).unwrap_err().to_string().contains("best threshold 0.3"));
    }

    #[test]
    fn csv_round_trips_with_blanks_and_quoted_ids() {
        let row = |id: &str, predictions: Vec<Prediction>, iou, top1| PerImageRow {
            image_id: id.into(),
            gt_class: 3,
            predictions,
            box_original: BBox::new(1, 2, 30, 40),
            iou,
            gt_known_loc: iou.is_some_and(|v| v >= 0.5),
            top1_loc: top1,
            top5_loc: top1,
        };
        let five: Vec<Prediction> =
            (0..5).map(|k| Prediction { class: 4 - k, probability: Some(1.0 / (k as f32 + 3.0)) }).collect();
        let table = PerImageTable {
            rows: vec![
                row("dir/a.jpg", five, Some(2.0 / 3.0), Some(true)),
                row("odd, \"name\".jpg", vec![Prediction { class: 1, probability: None }], Some(0.1), Some(false)),
                row("c.jpg", vec![], None, None),
            ],
        };
        let text = table.to_csv();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], PER_IMAGE_HEADER);
        assert_eq!(lines[2], "\"odd, \"\"name\"\".jpg\",3,1,,,,,,,,,,1,2,30,40,0.1,0,0,0");
        assert_eq!(lines[3], "c.jpg,3,,,,,,,,,,,1,2,30,40,,0,,");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("per_image.csv");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(PerImageTable::read(&path).unwrap(), table);
    }

    #[test]
    fn bad_files_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("per_image.csv");
        let good = "a.jpg,0,,,,,,,,,,,1,2,3,4,0.5,1,,";
        for (text, want) in [
            ("image_id,iou\n".to_string(), "not a per_image.csv"),
            (format!("{PER_IMAGE_HEADER}\n{good}\na.jpg,0\n"), ":3: expected 20 fields, got 2"),
            (format!("{PER_IMAGE_HEADER}\n{}\n", good.replace("0.5", "x")), "iou: `x`"),
            (format!("{PER_IMAGE_HEADER}\n{}\n", good.replace(",1,,", ",yes,,")), "gt_known_loc: `yes`"),
            (format!("{PER_IMAGE_HEADER}\n\"a.jpg,0\n"), "not closed"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", PerImageTable::read(&path).unwrap_err());
            assert!(err.contains(want), "expected `{want}` in `{err}`");
        }
    }

    #[test]
    fn sizes_beyond_16_bits_are_refused() {
        assert!(PerImageRecorder::new(100, 65536).is_ok());
        assert!(PerImageRecorder::new(100, 65537).unwrap_err().to_string().contains("image_size 65537"));
        assert!(PerImageRecorder::new(70_000, 224).is_err());
    }
}
