//! TensorBoard event files, written synchronously with parts of tensorboard-rs (0.5.9).
//!
//! We do not use its `SummaryWriter`: it creates and writes the file on a background
//! thread where every error is an `expect` panic, and that panic then poisons the next
//! `add_scalar`/`flush`/`drop` on the training thread (its `add_image` is broken too).
//! Its sound parts we do use, on the calling thread: `record_writer::RecordWriter` for
//! the TFRecord framing and masked CRC32C (it returns `io::Result`), `summary::scalar`
//! and the `tensorboard-proto` `Event`/`Summary` types, serialized with
//! `protobuf::Message::write_to_bytes`. So I/O errors are caught here (warn once, then
//! no-op), and images are PNG bytes we encode ourselves.
//!
//! Checked with TensorBoard's own reader (tensorboard 2.21 + pillow from PyPI), on a file
//! with scalars and a non-square 6x4 RGB image; the same data also shows up under the
//! `images`/`scalars` plugins of `plugin_event_accumulator`, the path `tensorboard
//! --logdir` serves from:
//!
//! ```python
//! from tensorboard.backend.event_processing import event_accumulator
//! import io, PIL.Image
//! ea = event_accumulator.EventAccumulator("RUN_DIR/tb", size_guidance={'images': 0, 'scalars': 0})
//! ea.Reload()
//! print(ea.Tags())              # {'images': ['cams/0'], 'scalars': ['train/loss', 'val/maxboxacc'], ...}
//! for s in ea.Scalars("train/loss"): print(s.step, s.value)
//! print(ea.Scalars("val/maxboxacc"))
//! im = ea.Images("cams/0")[0]
//! p = PIL.Image.open(io.BytesIO(im.encoded_image_string))
//! print(im.step, im.width, im.height, p.size, p.mode, p.getpixel((5, 3)))   # 40 6 4 (6, 4) RGB ...
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use protobuf::{Message, RepeatedField};
use tensorboard_proto::event::{Event, SessionLog, SessionLog_SessionStatus};
use tensorboard_proto::summary::{Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Image, Summary_Value};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::{TensorShapeProto, TensorShapeProto_Dim};
use tensorboard_proto::types::DataType;
use tensorboard_rs::record_writer::RecordWriter;
use wsol_eval::metrics::Curves;

/// Unflushed events older than this are flushed on the next write, so a live
/// TensorBoard sees progress even if the caller never calls `flush`.
const AUTO_FLUSH: Duration = Duration::from_secs(2);

/// Logging sink for one run. Failures turn it into a no-op after one warning on stderr:
/// losing plots must never cost a training run.
pub struct TbWriter {
    inner: Option<Inner>,
}

struct Inner {
    path: PathBuf,
    out: RecordWriter<BufWriter<File>>,
    last_flush: Instant,
}

impl TbWriter {
    /// Creates `dir` and a fresh event file in it (never overwrites an existing one).
    pub fn new(dir: &Path) -> TbWriter {
        match Self::create(dir) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("warning: TensorBoard logging disabled: cannot create event file in {}: {e}", dir.display());
                Self::disabled()
            }
        }
    }

    pub fn disabled() -> TbWriter {
        TbWriter { inner: None }
    }

    fn create(dir: &Path) -> std::io::Result<TbWriter> {
        fs::create_dir_all(dir)?;
        let path = dir.join(event_file_name());
        let file = OpenOptions::new().write(true).create_new(true).open(&path)?;
        let mut w = Self::from_file(path, file);
        let mut first = Event::new();
        first.set_wall_time(wall_time());
        first.set_file_version("brain.Event:2".into());
        w.write_event(&first);
        w.flush();
        if w.inner.is_none() {
            return Err(std::io::Error::other("first write failed"));
        }
        Ok(w)
    }

    fn from_file(path: PathBuf, file: File) -> TbWriter {
        TbWriter {
            inner: Some(Inner { path, out: RecordWriter::new(BufWriter::new(file)), last_flush: Instant::now() }),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The event file being written, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.as_ref().map(|i| i.path.as_path())
    }

    pub fn add_scalar(&mut self, tag: &str, value: f32, step: usize) {
        if self.inner.is_none() {
            return;
        }
        self.write_summary(tensorboard_rs::summary::scalar(tag, value), step);
    }

    /// `png` must be a complete PNG file; width/height are what TensorBoard shows as
    /// the image size. The colorspace is taken from the PNG header.
    pub fn add_image_png(&mut self, tag: &str, png: &[u8], width: u32, height: u32, step: usize) {
        if self.inner.is_none() {
            return;
        }
        let mut img = Summary_Image::new();
        img.set_height(height as i32);
        img.set_width(width as i32);
        img.set_colorspace(png_colorspace(png));
        img.set_encoded_image_string(png.to_vec());
        let mut value = Summary_Value::new();
        value.set_tag(tag.to_string());
        value.set_image(img);
        let mut summary = Summary::new();
        summary.set_value(RepeatedField::from_vec(vec![value]));
        self.write_summary(summary, step);
    }

    /// A summary of plugin `plugin` whose metadata carries `content` (as TensorFlow writes
    /// them: with an empty float tensor as the value, which the HParams plugin expects).
    pub fn add_plugin_record(&mut self, tag: &str, plugin: &str, content: Vec<u8>, step: usize) {
        if self.inner.is_none() {
            return;
        }
        let mut data = SummaryMetadata_PluginData::new();
        data.set_plugin_name(plugin.to_string());
        data.set_content(content);
        let mut metadata = SummaryMetadata::new();
        metadata.set_plugin_data(data);
        let mut dim = TensorShapeProto_Dim::new();
        dim.set_size(0);
        let mut shape = TensorShapeProto::new();
        shape.set_dim(RepeatedField::from_vec(vec![dim]));
        let mut empty = TensorProto::new();
        empty.set_dtype(DataType::DT_FLOAT);
        empty.set_tensor_shape(shape);
        let mut value = Summary_Value::new();
        value.set_tag(tag.to_string());
        value.set_metadata(metadata);
        value.set_tensor(empty);
        let mut summary = Summary::new();
        summary.set_value(RepeatedField::from_vec(vec![value]));
        self.write_summary(summary, step);
    }

    /// A histogram of `values` (non-finite ones left out); nothing when none is finite.
    pub fn add_histogram(&mut self, tag: &str, values: &[f32], step: usize) {
        if self.inner.is_none() {
            return;
        }
        if let Some(h) = Histogram::of(values) {
            let summary = tensorboard_rs::summary::histogram_raw(
                tag,
                h.min,
                h.max,
                h.num,
                h.sum,
                h.sum_squares,
                &h.bucket_limit,
                &h.bucket,
            );
            self.write_summary(summary, step);
        }
    }

    /// Marks a resumed run: TensorBoard's reader drops every event of this run directory
    /// with a step >= `step` written before this marker (its purge of orphaned data after a
    /// restart, as PyTorch's `SummaryWriter(purge_step=...)` uses), so steps logged after
    /// the last checkpoint by a killed run do not appear twice.
    pub fn restart_at(&mut self, step: usize) {
        let mut log = SessionLog::new();
        log.set_status(SessionLog_SessionStatus::START);
        let mut event = Event::new();
        event.set_wall_time(wall_time());
        event.set_step(step as i64);
        event.set_session_log(log);
        self.write_event(&event);
        self.flush();
    }

    pub fn flush(&mut self) {
        if let Some(inner) = &mut self.inner {
            inner.last_flush = Instant::now();
            if let Err(e) = inner.out.flush() {
                self.fail(e);
            }
        }
    }

    fn write_summary(&mut self, summary: Summary, step: usize) {
        let mut event = Event::new();
        event.set_wall_time(wall_time());
        event.set_step(step as i64);
        event.set_summary(summary);
        self.write_event(&event);
    }

    fn write_event(&mut self, event: &Event) {
        let Some(inner) = &mut self.inner else { return };
        let written = event
            .write_to_bytes()
            .map_err(|e| std::io::Error::other(format!("protobuf encoding: {e}")))
            .and_then(|bytes| inner.out.write(&bytes));
        if let Err(e) = written {
            return self.fail(e);
        }
        if inner.last_flush.elapsed() >= AUTO_FLUSH {
            self.flush();
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        if let Some(inner) = self.inner.take() {
            eprintln!("warning: TensorBoard logging stopped: cannot write {}: {e}", inner.path.display());
            // Dropping the BufWriter inside retries the flush and ignores errors; that is fine here.
        }
    }
}

impl Drop for TbWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

/// TensorBoard's `HistogramProto`: `bucket[k]` counts the values up to `bucket_limit[k]`
/// (and above the limit before it).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub min: f64,
    pub max: f64,
    pub num: f64,
    pub sum: f64,
    pub sum_squares: f64,
    pub bucket_limit: Vec<f64>,
    pub bucket: Vec<f64>,
}

/// Buckets of a histogram, as `tf.summary.histogram` uses by default.
pub const HISTOGRAM_BUCKETS: usize = 30;

impl Histogram {
    /// [`HISTOGRAM_BUCKETS`] equal-width buckets from the smallest to the largest finite
    /// value (one bucket when all are equal); `None` when no value is finite.
    pub fn of(values: &[f32]) -> Option<Histogram> {
        // Weights and gradients are finite (a non-finite loss skips the update), so the
        // fast pass assumes it; a NaN or infinity shows in its sums and takes the filtered one.
        let (min, max, sum, sum_squares) = match moments(values) {
            m @ (_, _, s, q) if s.is_finite() && q.is_finite() => m,
            _ => {
                let finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
                moments(&finite)
            }
        };
        if min > max {
            return None;
        }
        let n = if max > min { HISTOGRAM_BUCKETS } else { 1 };
        let scale = if max > min { n as f32 / (max - min) } else { 0.0 };
        // Neighbouring values mostly fall in one bucket: counting them in one table would
        // make each increment wait for the last, so LANES tables take turns.
        const LANES: usize = 4;
        let mut counts = vec![[0u64; LANES]; n];
        let mut count = |lane: usize, v: f32| {
            if v.is_finite() {
                // Rounding at a bucket's edge may move a value to its neighbour: harmless.
                let k = ((v - min) * scale) as usize;
                counts[k.min(n - 1)][lane] += 1;
            }
        };
        let chunks = values.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for (lane, &v) in c.iter().enumerate() {
                count(lane, v);
            }
        }
        for &v in rest {
            count(0, v);
        }
        let bucket: Vec<f64> = counts.iter().map(|c| c.iter().sum::<u64>() as f64).collect();
        let (min, max) = (min as f64, max as f64);
        let width = (max - min) / n as f64;
        let mut bucket_limit: Vec<f64> = (1..=n).map(|k| min + width * k as f64).collect();
        bucket_limit[n - 1] = max;
        let num = bucket.iter().sum();
        Some(Histogram { min, max, num, sum, sum_squares, bucket_limit, bucket })
    }
}

/// Smallest and largest value (NaN ignored; +inf/-inf when empty), sum and sum of squares
/// (in f64), over independent lanes so that the compiler can vectorize the pass.
fn moments(values: &[f32]) -> (f32, f32, f64, f64) {
    const LANES: usize = 8;
    let (mut lo, mut hi) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
    let (mut sum, mut squares) = ([0f64; LANES], [0f64; LANES]);
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let v = c[i];
            lo[i] = lo[i].min(v);
            hi[i] = hi[i].max(v);
            sum[i] += v as f64;
            squares[i] += v as f64 * v as f64;
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        lo[i] = lo[i].min(v);
        hi[i] = hi[i].max(v);
        sum[i] += v as f64;
        squares[i] += v as f64 * v as f64;
    }
    let min = lo.iter().copied().fold(f32::INFINITY, f32::min);
    let max = hi.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (min, max, sum.iter().sum(), squares.iter().sum())
}

/// Whether an event file in `dir` holds a summary tagged `tag` among its first records,
/// where a run writes its HParams records (so a resumed run does not write them twice).
pub fn dir_has_early_tag(dir: &Path, tag: &str) -> bool {
    let Ok(entries) = fs::read_dir(dir) else { return false };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tfevents"))
        .any(|e| first_records(&e.path(), 8).iter().any(|r| r.windows(tag.len()).any(|w| w == tag.as_bytes())))
}

/// Up to `n` records of a TFRecord file, fewer where it ends or is cut short.
fn first_records(path: &Path, n: usize) -> Vec<Vec<u8>> {
    use std::io::Read;
    let Ok(file) = File::open(path) else { return Vec::new() };
    let mut r = std::io::BufReader::new(file);
    let mut out = Vec::new();
    while out.len() < n {
        // Framing: u64 length, its masked CRC (u32), the data, the data's masked CRC (u32).
        let mut head = [0u8; 12];
        if r.read_exact(&mut head).is_err() {
            break;
        }
        let len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if len > 64 << 20 {
            break;
        }
        let mut data = vec![0u8; len as usize + 4];
        if r.read_exact(&mut data).is_err() {
            break;
        }
        data.truncate(len as usize);
        out.push(data);
    }
    out
}

/// Per-IoU box accuracies of one evaluation as TensorBoard scalars: each configured IoU
/// `d` gives `maxboxacc_v1_iou<d>` (largest contour, best threshold) and
/// `maxboxacc_v2_iou<d>` (the contours MaxBoxAccV2 keeps: all with `multi_contour`, else
/// the largest), so `maxboxacc_v2_iou<d>` is metrics.json's `maxboxacc_by_iou[d]`.
pub fn box_accuracy_scalars(curves: &Curves, ious: &[u32], multi_contour: bool) -> Vec<(String, f64)> {
    let best = |row: &[f64]| row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let v2_rows = if multi_contour { &curves.all } else { &curves.largest };
    let mut out = Vec::new();
    for (version, rows) in [("v1", &curves.largest), ("v2", v2_rows)] {
        for &d in ious {
            if let Some(k) = curves.iou_thresholds.iter().position(|&x| x == d) {
                out.push((format!("maxboxacc_{version}_iou{d}"), best(&rows[k])));
            }
        }
    }
    out
}

/// `events.out.tfevents.<secs>.<host>.<pid>.<seq>` as TensorFlow and tensorboard-rs name
/// them; TensorBoard only needs "tfevents" in the name and reads files in name order.
/// The sequence number keeps two writers of one process apart within the same second.
fn event_file_name() -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("events.out.tfevents.{secs:010}.{}.{}.{seq}", hostname(), std::process::id())
}

/// Without a libc/gethostname dependency: the kernel's name, then the environment.
fn hostname() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String =
        raw.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

fn wall_time() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// TensorBoard's `Summary.Image.colorspace` (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) from
/// the PNG IHDR color type; RGB when the bytes are not a PNG we understand.
fn png_colorspace(png: &[u8]) -> i32 {
    if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
        return 3;
    }
    match png.get(25) {
        Some(0) => 1,
        Some(4) => 2,
        Some(6) => 4,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorboard_rs::masked_crc32c::{crc32c, masked_crc32c};

    /// Reads TFRecords back, checking both CRCs of each.
    fn read_records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut p = 0;
        while p < bytes.len() {
            let len_bytes = &bytes[p..p + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[p + 8..p + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(len_bytes), "length crc");
            let data = &bytes[p + 12..p + 12 + len];
            let crc = u32::from_le_bytes(bytes[p + 12 + len..p + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(data), "data crc");
            out.push(data.to_vec());
            p += 16 + len;
        }
        out
    }

    #[derive(Debug, Clone, Copy)]
    enum Field<'a> {
        Varint(u64),
        Fixed64(u64),
        Fixed32(u32),
        Bytes(&'a [u8]),
    }

    fn varint(b: &[u8], p: &mut usize) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[*p];
            *p += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    fn fields(b: &[u8]) -> Vec<(u32, Field<'_>)> {
        let mut out = Vec::new();
        let mut p = 0;
        while p < b.len() {
            let key = varint(b, &mut p);
            let f = match key & 7 {
                0 => Field::Varint(varint(b, &mut p)),
                1 => {
                    p += 8;
                    Field::Fixed64(u64::from_le_bytes(b[p - 8..p].try_into().unwrap()))
                }
                5 => {
                    p += 4;
                    Field::Fixed32(u32::from_le_bytes(b[p - 4..p].try_into().unwrap()))
                }
                2 => {
                    let n = varint(b, &mut p) as usize;
                    p += n;
                    Field::Bytes(&b[p - n..p])
                }
                t => panic!("wire type {t}"),
            };
            out.push(((key >> 3) as u32, f));
        }
        out
    }

    fn get<'a>(fs: &[(u32, Field<'a>)], n: u32) -> Option<Field<'a>> {
        fs.iter().find(|(k, _)| *k == n).map(|(_, f)| *f)
    }

    fn bytes<'a>(fs: &[(u32, Field<'a>)], n: u32) -> &'a [u8] {
        match get(fs, n) {
            Some(Field::Bytes(b)) => b,
            f => panic!("field {n}: {f:?}"),
        }
    }

    fn tiny_png(w: u32, h: u32) -> Vec<u8> {
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7) as u8).collect();
        crate::report::encode_png_rgb(&rgb, w, h).unwrap()
    }

    #[test]
    fn crc32c_known_vector() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn writes_scalars_and_image_that_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let png = tiny_png(5, 3);
        let path = {
            let mut w = TbWriter::new(&dir.path().join("tb"));
            assert!(w.is_enabled());
            w.add_scalar("train/loss", 2.5, 0);
            w.add_scalar("train/loss", 1.25, 10);
            w.add_scalar("val/acc", 0.75, 10);
            w.add_image_png("cams/0", &png, 5, 3, 10);
            w.flush();
            w.path().unwrap().to_path_buf()
        };
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("events.out.tfevents."), "{name}");

        let records = read_records(&fs::read(&path).unwrap());
        assert_eq!(records.len(), 5);
        assert_eq!(bytes(&fields(&records[0]), 3), b"brain.Event:2");

        let mut scalars = Vec::new();
        let mut images = Vec::new();
        for r in &records[1..] {
            let ev = fields(r);
            assert!(matches!(get(&ev, 1), Some(Field::Fixed64(t)) if f64::from_bits(t) > 1.0e9));
            let step = match get(&ev, 2) {
                Some(Field::Varint(s)) => s,
                _ => 0,
            };
            let value = fields(bytes(&fields(bytes(&ev, 5)), 1));
            let tag = String::from_utf8(bytes(&value, 1).to_vec()).unwrap();
            match get(&value, 2) {
                Some(Field::Fixed32(x)) => scalars.push((tag, step, f32::from_bits(x))),
                _ => {
                    let img = fields(bytes(&value, 4));
                    let num = |n| match get(&img, n) {
                        Some(Field::Varint(v)) => v,
                        f => panic!("{f:?}"),
                    };
                    images.push((tag, step, num(1), num(2), num(3), bytes(&img, 4).to_vec()));
                }
            }
        }
        assert_eq!(
            scalars,
            vec![("train/loss".into(), 0, 2.5), ("train/loss".into(), 10, 1.25), ("val/acc".into(), 10, 0.75)]
        );
        assert_eq!(images, vec![("cams/0".into(), 10, 3, 5, 3, png)]);
    }

    #[test]
    fn box_accuracy_scalars_are_each_curves_best() {
        let curves = Curves {
            thresholds: vec![0.0, 0.5],
            iou_thresholds: vec![30, 70, 50],
            largest: vec![vec![80.0, 90.0], vec![10.0, 5.0], vec![60.0, 40.0]],
            all: vec![vec![85.0, 95.0], vec![20.0, 30.0], vec![70.0, 65.0]],
            top1_loc: None,
            top5_loc: None,
        };
        let tags = |multi| box_accuracy_scalars(&curves, &[30, 70], multi);
        assert_eq!(
            tags(true),
            [
                ("maxboxacc_v1_iou30".to_string(), 90.0),
                ("maxboxacc_v1_iou70".to_string(), 10.0),
                ("maxboxacc_v2_iou30".to_string(), 95.0),
                ("maxboxacc_v2_iou70".to_string(), 30.0),
            ]
        );
        // Without multi_contour, MaxBoxAccV2 keeps the largest contour too.
        assert_eq!(tags(false)[3], ("maxboxacc_v2_iou70".to_string(), 10.0));
    }

    #[test]
    fn restart_marker_is_a_session_start_at_its_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TbWriter::new(dir.path());
        w.restart_at(42);
        let records = read_records(&fs::read(w.path().unwrap()).unwrap());
        let ev = fields(&records[1]);
        assert!(matches!(get(&ev, 2), Some(Field::Varint(42))));
        // Event.session_log (7) with status START (1).
        assert!(matches!(get(&fields(bytes(&ev, 7)), 1), Some(Field::Varint(1))));
    }

    #[test]
    fn histogram_buckets_count_every_finite_value() {
        let h = Histogram::of(&[0.0, 3.0, 1.0, f32::NAN, 3.0, 1.5]).unwrap();
        assert_eq!((h.min, h.max, h.num, h.sum, h.sum_squares), (0.0, 3.0, 5.0, 8.5, 21.25));
        assert_eq!(h.bucket.len(), HISTOGRAM_BUCKETS);
        assert_eq!(h.bucket.iter().sum::<f64>(), 5.0);
        assert_eq!((h.bucket[0], h.bucket[10], h.bucket[15], h.bucket[29]), (1.0, 1.0, 1.0, 2.0));
        assert_eq!(h.bucket_limit[29], 3.0);
        assert!((h.bucket_limit[0] - 0.1).abs() < 1e-12);
        // All equal: one bucket; nothing finite: no histogram.
        let flat = Histogram::of(&[2.0; 4]).unwrap();
        assert_eq!((flat.bucket_limit, flat.bucket), (vec![2.0], vec![4.0]));
        assert!(Histogram::of(&[f32::INFINITY]).is_none() && Histogram::of(&[]).is_none());
        // Lanes and remainder, with non-finite values among them, agree with a plain pass.
        let mut v: Vec<f32> = (0..1003).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
        (v[7], v[500]) = (f32::NEG_INFINITY, f32::NAN);
        let finite: Vec<f64> = v.iter().filter(|x| x.is_finite()).map(|&x| x as f64).collect();
        let h = Histogram::of(&v).unwrap();
        assert_eq!((h.min, h.max, h.num), (-50.0, 50.0, 1001.0));
        assert_eq!((h.sum, h.sum_squares), (finite.iter().sum(), finite.iter().map(|x| x * x).sum()));
        assert_eq!(h.bucket.iter().sum::<f64>(), 1001.0);
    }

    #[test]
    fn plugin_records_carry_their_content_and_are_found_again() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!dir_has_early_tag(dir.path(), "_hparams_/session_start_info"));
        let path = {
            let mut w = TbWriter::new(dir.path());
            w.add_plugin_record("_hparams_/session_start_info", "hparams", vec![1, 2, 3], 0);
            w.add_histogram("weights/w", &[1.0, 2.0], 5);
            w.path().unwrap().to_path_buf()
        };
        assert!(dir_has_early_tag(dir.path(), "_hparams_/session_start_info"));
        assert!(!dir_has_early_tag(dir.path(), "_hparams_/experiment"));
        let records = read_records(&fs::read(path).unwrap());
        let value = fields(bytes(&fields(bytes(&fields(&records[1]), 5)), 1));
        assert_eq!(bytes(&value, 1), b"_hparams_/session_start_info");
        // Summary.Value.metadata (9): plugin_data (1) { plugin_name 1, content 2 }.
        let plugin = fields(bytes(&fields(bytes(&value, 9)), 1));
        assert_eq!((bytes(&plugin, 1), bytes(&plugin, 2)), (&b"hparams"[..], &[1u8, 2, 3][..]));
        // Summary.Value.tensor (8): dtype DT_FLOAT (1), shape [0].
        let tensor = fields(bytes(&value, 8));
        assert!(matches!(get(&tensor, 1), Some(Field::Varint(1))));
        // Summary.Value.histo (5) at step 5.
        let ev = fields(&records[2]);
        assert!(matches!(get(&ev, 2), Some(Field::Varint(5))));
        let histo = fields(bytes(&fields(bytes(&fields(bytes(&ev, 5)), 1)), 5));
        assert!(matches!(get(&histo, 3), Some(Field::Fixed64(n)) if f64::from_bits(n) == 2.0));
    }

    #[test]
    fn two_writers_in_one_dir_get_distinct_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = TbWriter::new(dir.path());
        let b = TbWriter::new(dir.path());
        assert_ne!(a.path(), b.path());
    }

    #[test]
    fn uncreatable_dir_gives_noop_writer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not_a_dir");
        fs::write(&file, b"x").unwrap();
        let mut w = TbWriter::new(&file.join("tb"));
        assert!(!w.is_enabled());
        w.add_scalar("a", 1.0, 1);
        w.add_image_png("b", &[], 0, 0, 1);
        w.flush();
    }

    #[test]
    fn write_error_disables_without_panic() {
        let Ok(full) = OpenOptions::new().write(true).open("/dev/full") else { return };
        let mut w = TbWriter::from_file("/dev/full".into(), full);
        w.add_scalar("a", 1.0, 1);
        w.flush();
        assert!(!w.is_enabled());
        w.add_scalar("a", 2.0, 2);
        w.flush();
    }
}
