//! Throughput of the box evaluation engine (`prepare_quantized` +
//! `BoxAccumulator::add_quantized`, the path of `wsol eval` and `wsol eval-cams`) on
//! random smooth 224x224 maps. Run: `cargo bench --bench eval` (WSOL_BENCH_MAPS=N,
//! default 5000; WSOL_BENCH_ROUNDS=R timed passes per setting, default 3, the median
//! shown). Maps come from a pool of at most 256 distinct ones so memory stays small;
//! their contents, not their number, set the cost per map.
//!
//! Side by side with the official evaluator on the same maps: `WSOL_BENCH_DUMP=DIR`
//! writes the pool to `DIR/maps.npy` and `DIR/boxes.npy`, which
//! `scripts/bench_official_eval.py` scores with wsolevaluation's own code; pass its
//! ms/map as `WSOL_BENCH_OFFICIAL_MS=<100 thr>,<1000 thr>` for the ratio column
//! (default: 6.6,58, measured on our 2-core dev box, see experiments/log/2026-11-26-evaluator-speed.md). The
//! ratio is per core: the official evaluator's ms/map over ours times the threads used.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use wsol_eval::localize::{cam_thresholds, prepare_map, prepare_quantized, BBox};
use wsol_eval::metrics::{BoxAccumulator, BoxEvalConfig, PxapAccumulator};

const SIZE: usize = 224;
const POOL: usize = 256;

/// A sum of 1-4 Gaussian blobs, and a GT box around the strongest one.
fn random_map(rng: &mut ChaCha8Rng) -> (Vec<f32>, BBox) {
    let mut m = vec![0f32; SIZE * SIZE];
    let mut best = (0.0, BBox::ZERO);
    for _ in 0..rng.random_range(1..=4) {
        let (cx, cy) = (rng.random_range(0.0..SIZE as f32), rng.random_range(0.0..SIZE as f32));
        let (sx, sy) = (rng.random_range(6.0..50.0f32), rng.random_range(6.0..50.0f32));
        let a = rng.random_range(0.3..1.0f32);
        for y in 0..SIZE {
            let dy = (y as f32 - cy) / sy;
            for x in 0..SIZE {
                let dx = (x as f32 - cx) / sx;
                m[y * SIZE + x] += a * (-0.5 * (dx * dx + dy * dy)).exp();
            }
        }
        if a > best.0 {
            let c = |v: f32| (v.max(0.0) as i32).min(SIZE as i32 - 1);
            best = (a, BBox::new(c(cx - 1.5 * sx), c(cy - 1.5 * sy), c(cx + 1.5 * sx), c(cy + 1.5 * sy)));
        }
    }
    (m, best.1)
}

fn main() {
    let n: usize = std::env::var("WSOL_BENCH_MAPS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    let mut rng = ChaCha8Rng::seed_from_u64(2020);
    let pool: Vec<(Vec<f32>, BBox)> = (0..POOL.min(n)).map(|_| random_map(&mut rng)).collect();
    let rounds: usize = std::env::var("WSOL_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let threads = rayon::current_num_threads();
    println!("{n} maps ({} distinct), {SIZE}x{SIZE}, rayon threads: {threads}, median of {rounds} rounds", pool.len());
    if let Ok(dir) = std::env::var("WSOL_BENCH_DUMP") {
        dump(&pool, std::path::Path::new(&dir));
    }
    let official: Vec<f64> = std::env::var("WSOL_BENCH_OFFICIAL_MS")
        .ok()
        .map(|v| {
            v.split(',').map(|x| x.trim().parse().expect("WSOL_BENCH_OFFICIAL_MS: two numbers, e.g. 6.6,58")).collect()
        })
        .unwrap_or_else(|| vec![6.6, 58.0]);
    assert_eq!(official.len(), 2, "WSOL_BENCH_OFFICIAL_MS: ms/map at 100 and at 1000 thresholds");
    println!(
        "{:<8} {:<9} {:<8} {:>10} {:>9} {:>16}",
        "thresh", "contours", "threads", "maps/s", "ms/map", "x official/core"
    );
    for (interval, official_ms) in [(0.01, official[0]), (0.001, official[1])] {
        for multi_contour in [false, true] {
            let cfg = BoxEvalConfig {
                thresholds: cam_thresholds(interval).unwrap(),
                iou_thresholds: vec![30, 50, 70],
                multi_contour,
                fixed_threshold: 0.2,
            };
            let one = |acc: &mut BoxAccumulator, i: usize| {
                let (raw, gt) = &pool[i % pool.len()];
                let q = prepare_quantized(raw, SIZE, SIZE, SIZE);
                acc.add_quantized(&q, SIZE, SIZE, std::slice::from_ref(gt), None);
            };
            for parallel in [false, true] {
                // Median of the rounds: this box's speed drifts by 10-15% from minute to minute.
                let mut round_ms: Vec<f64> = (0..rounds)
                    .map(|_| {
                        let t0 = Instant::now();
                        let acc = if parallel {
                            (0..n)
                                .into_par_iter()
                                .fold(
                                    || BoxAccumulator::new(&cfg).unwrap(),
                                    |mut a, i| {
                                        one(&mut a, i);
                                        a
                                    },
                                )
                                .reduce(
                                    || BoxAccumulator::new(&cfg).unwrap(),
                                    |mut a, b| {
                                        a.merge(&b);
                                        a
                                    },
                                )
                        } else {
                            let mut a = BoxAccumulator::new(&cfg).unwrap();
                            (0..n).for_each(|i| one(&mut a, i));
                            a
                        };
                        let ms = t0.elapsed().as_secs_f64() * 1e3 / n as f64;
                        std::hint::black_box(acc.finish().maxboxacc);
                        ms
                    })
                    .collect();
                round_ms.sort_by(f64::total_cmp);
                let ms = round_ms[rounds / 2];
                let used = if parallel { threads } else { 1 };
                println!(
                    "{:<8} {:<9} {:<8} {:>10.0} {:>9.3} {:>15.1}x",
                    cfg.thresholds.len(),
                    if multi_contour { "all" } else { "largest" },
                    used,
                    1e3 / ms,
                    ms,
                    official_ms / (ms * used as f64)
                );
            }
        }
    }
    // The shared first step alone (min-max and quantization), for where time goes.
    let t0 = Instant::now();
    for i in 0..n {
        std::hint::black_box(prepare_quantized(&pool[i % pool.len()].0, SIZE, SIZE, SIZE));
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("prepare_quantized only, 1 thread: {:>8.0} maps/s {:>8.3} ms/map", n as f64 / secs, secs * 1e3 / n as f64);
    // PxAP histograms for comparison (a random mask: the map above 0.5 shifted by 20 px).
    for interval in [0.01, 0.001] {
        let thresholds = cam_thresholds(interval).unwrap();
        let masks: Vec<Vec<u8>> = pool
            .iter()
            .map(|(m, _)| (0..SIZE * SIZE).map(|i| (m[(i + 20) % (SIZE * SIZE)] > 0.5) as u8).collect())
            .collect();
        let t0 = Instant::now();
        let mut acc = PxapAccumulator::new(&thresholds).unwrap();
        for i in 0..n {
            let map = prepare_map(&pool[i % pool.len()].0, SIZE, SIZE, SIZE);
            acc.add(&map, &masks[i % pool.len()]);
        }
        let secs = t0.elapsed().as_secs_f64();
        std::hint::black_box(acc.finish().ok());
        println!(
            "pxap {:<4} thresholds, 1 thread: {:>8.0} maps/s {:>8.3} ms/map",
            thresholds.len(),
            n as f64 / secs,
            secs * 1e3 / n as f64
        );
    }
}

/// The pool as `maps.npy` (float32, [n, 224, 224]) and `boxes.npy` (int32, [n, 4]: x0, y0,
/// x1, y1) for `scripts/bench_official_eval.py`.
fn dump(pool: &[(Vec<f32>, BBox)], dir: &std::path::Path) {
    use npyz::WriterBuilder;
    fn write<T: npyz::AutoSerialize>(path: std::path::PathBuf, shape: &[u64], data: impl Iterator<Item = T>) {
        let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(file).begin_nd().unwrap();
        w.extend(data).unwrap();
        w.finish().unwrap();
    }
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let n = pool.len() as u64;
    write(dir.join("maps.npy"), &[n, SIZE as u64, SIZE as u64], pool.iter().flat_map(|(m, _)| m.iter().copied()));
    write(dir.join("boxes.npy"), &[n, 4], pool.iter().flat_map(|(_, b)| [b.x0, b.y0, b.x1, b.y1]));
    println!("wrote {n} maps to {}", dir.display());
}
