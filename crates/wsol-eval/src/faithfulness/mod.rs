//! Faithfulness of a map to its classifier: how the class score reacts when the pixels
//! the map highlights are kept or removed. Model-free: a [`Plan`] says which perturbed
//! inputs one image needs and folds the class scores of those inputs (computed by the
//! caller's model) into the image's numbers; [`FaithfulnessAccumulator`] averages them.
//!
//! - Average Drop / Increase in Confidence (Chattopadhyay et al., WACV 2018), as
//!   torch-cam's `ClassificationMetric`: the input times the map; drop
//!   `relu(s - s') / (s + 1e-7)`, increase `s < s'`; in percent.
//! - Deletion / Insertion (Petsiuk et al., BMVC 2018, RISE), as torch-cam's
//!   `DeletionInsertionMetric`: pixels ranked by the map (ties by position), removed to
//!   (or restored from) a substrate in `steps` intervals, the areas under the score
//!   curves (trapezoids over the fraction removed).
//! - ROAD (Rong et al., ICML 2022), as pytorch-grad-cam's `ROADMostRelevantFirstAverage`
//!   and `ROADLeastRelevantFirstAverage`: the change of the score when the pixels above
//!   (below) each percentile are imputed ([`road`]), averaged over the percentiles.
//!
//! Scores are the softmax probability of the class the map is for; maps are at the input
//! size, in [0, 1].

pub mod road;

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A faithfulness metric as the config names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    AvgDrop,
    AvgIncrease,
    Deletion,
    Insertion,
    RoadMorf,
    RoadLerf,
}

impl Metric {
    pub const ALL: [Metric; 6] =
        [Metric::AvgDrop, Metric::AvgIncrease, Metric::Deletion, Metric::Insertion, Metric::RoadMorf, Metric::RoadLerf];

    /// Its name in configs (`eval.faithfulness`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::AvgDrop => "avg_drop",
            Metric::AvgIncrease => "avg_increase",
            Metric::Deletion => "deletion",
            Metric::Insertion => "insertion",
            Metric::RoadMorf => "road_morf",
            Metric::RoadLerf => "road_lerf",
        }
    }

    /// Its key in metrics.json.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Deletion => "deletion_auc",
            Metric::Insertion => "insertion_auc",
            m => m.name(),
        }
    }

    /// A config name: one metric, or `road` for both ROAD orders.
    pub fn parse_list(names: &[String]) -> Result<Vec<Metric>> {
        let mut out = Vec::new();
        for name in names {
            let found: Vec<Metric> = match name.as_str() {
                "road" => vec![Metric::RoadMorf, Metric::RoadLerf],
                n => Metric::ALL.iter().copied().filter(|m| m.name() == n).collect(),
            };
            if found.is_empty() {
                let choices: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).chain(["road"]).collect();
                bail!("eval.faithfulness: unknown metric `{name}`; expected some of: {}", choices.join(", "));
            }
            out.extend(found);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// What removed pixels become in Deletion / Insertion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Substrate {
    /// Zeros of the (normalized) input, torch-cam's default.
    Zero,
    /// The input blurred by a Gaussian of kernel 11 and sigma 5 (RISE's substrate), as
    /// torchvision's `gaussian_blur` (reflected borders).
    Blur,
}

#[derive(Clone, Debug)]
pub struct FaithfulnessConfig {
    pub metrics: Vec<Metric>,
    /// Deletion / Insertion intervals (at most; torch-cam's `steps`).
    pub steps: usize,
    pub substrate: Substrate,
    /// ROAD's percentiles, each in 1..=99.
    pub percentiles: Vec<u32>,
    /// ROAD's imputation noise (standard deviation; the reference's 0.01).
    pub road_noise: f32,
    /// Seeds the imputation noise, per image and step.
    pub seed: u64,
}

impl FaithfulnessConfig {
    pub fn validate(&self, image_size: usize) -> Result<()> {
        if self.steps == 0 || self.steps > image_size * image_size {
            bail!(
                "eval.faithfulness_steps: {}: expected 1..={} (at most one step per pixel)",
                self.steps,
                image_size * image_size
            );
        }
        if let Some(p) = self.percentiles.iter().find(|p| !(1..=99).contains(*p)) {
            bail!("eval.road_percentiles: {p}: expected percentiles in 1..=99");
        }
        let road = self.metrics.iter().any(|m| matches!(m, Metric::RoadMorf | Metric::RoadLerf));
        if road && self.percentiles.is_empty() {
            bail!("eval.road_percentiles: empty; ROAD needs at least one percentile (e.g. [10, 20, ..., 90])");
        }
        if self.substrate == Substrate::Blur && image_size <= BLUR_RADIUS {
            bail!("eval.faithfulness_substrate: blur needs images larger than {BLUR_RADIUS} pixels");
        }
        if !(self.road_noise >= 0.0 && self.road_noise.is_finite()) {
            bail!("eval.road_noise: {}: expected a finite value >= 0", self.road_noise);
        }
        Ok(())
    }
}

const BLUR_RADIUS: usize = 5;
const BLUR_SIGMA: f32 = 5.0;

/// One perturbed input of an image.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// The input times the map (Average Drop / Increase).
    Masked,
    /// Every pixel from the substrate: Deletion's last point and Insertion's first.
    AllSubstrate,
    /// The `count` top-ranked pixels from the substrate.
    Deleted(usize),
    /// Only the `count` top-ranked pixels from the input.
    Inserted(usize),
    /// ROAD at `percentiles[k]`, most (true) or least relevant first.
    Road(usize, bool),
}

/// The perturbed inputs one image needs and how their scores make its numbers.
pub struct Plan<'a> {
    cfg: &'a FaithfulnessConfig,
    image: &'a [f32],
    map: &'a [f32],
    c: usize,
    h: usize,
    w: usize,
    /// Seeds this image's ROAD noise.
    key: u64,
    jobs: Vec<Job>,
    /// Pixel counts of the Deletion / Insertion points (0 first, all pixels last).
    counts: Vec<usize>,
    /// Rank of each pixel by the map, highest first, ties by position.
    ranks: Vec<u32>,
    substrate: Vec<f32>,
}

impl<'a> Plan<'a> {
    /// `image`: `c` planes of `h` x `w` (the model's input); `map`: `h` x `w` in [0, 1];
    /// `key`: distinguishes the image (its index in the split) for the noise seed.
    pub fn new(
        cfg: &'a FaithfulnessConfig,
        image: &'a [f32],
        map: &'a [f32],
        c: usize,
        h: usize,
        w: usize,
        key: u64,
    ) -> Self {
        assert_eq!(image.len(), c * h * w);
        assert_eq!(map.len(), h * w);
        let has = |m: Metric| cfg.metrics.contains(&m);
        let mut jobs = Vec::new();
        if has(Metric::AvgDrop) || has(Metric::AvgIncrease) {
            jobs.push(Job::Masked);
        }
        let (mut counts, mut ranks, mut substrate) = (Vec::new(), Vec::new(), Vec::new());
        if has(Metric::Deletion) || has(Metric::Insertion) {
            let n = h * w;
            let step = n.div_ceil(cfg.steps);
            counts = (0..n).step_by(step).chain([n]).collect();
            let mut order: Vec<u32> = (0..n as u32).collect();
            // Stable, descending: equal values keep their position order.
            order.sort_by(|&a, &b| map[b as usize].total_cmp(&map[a as usize]));
            ranks = vec![0; n];
            order.iter().enumerate().for_each(|(r, &p)| ranks[p as usize] = r as u32);
            substrate = match cfg.substrate {
                Substrate::Zero => vec![0.0; image.len()],
                Substrate::Blur => blur(image, c, h, w),
            };
            jobs.push(Job::AllSubstrate);
            for &k in &counts[1..counts.len() - 1] {
                if has(Metric::Deletion) {
                    jobs.push(Job::Deleted(k));
                }
                if has(Metric::Insertion) {
                    jobs.push(Job::Inserted(k));
                }
            }
        }
        for (k, _) in cfg.percentiles.iter().enumerate() {
            if has(Metric::RoadMorf) {
                jobs.push(Job::Road(k, true));
            }
            if has(Metric::RoadLerf) {
                jobs.push(Job::Road(k, false));
            }
        }
        Plan { cfg, image, map, c, h, w, key, jobs, counts, ranks, substrate }
    }

    /// How many inputs the image needs scored.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Writes input `j` (`c * h * w` values) into `out`.
    pub fn input(&self, j: usize, out: &mut [f32]) {
        let plane = self.h * self.w;
        let pick = |out: &mut [f32], from_input: &dyn Fn(usize) -> bool| {
            for ch in 0..self.c {
                for p in 0..plane {
                    let i = ch * plane + p;
                    out[i] = if from_input(p) { self.image[i] } else { self.substrate[i] };
                }
            }
        };
        match self.jobs[j] {
            Job::Masked => {
                for ch in 0..self.c {
                    for p in 0..plane {
                        out[ch * plane + p] = self.map[p] * self.image[ch * plane + p];
                    }
                }
            }
            Job::AllSubstrate => out.copy_from_slice(&self.substrate),
            Job::Deleted(k) => pick(out, &|p| self.ranks[p] as usize >= k),
            Job::Inserted(k) => pick(out, &|p| (self.ranks[p] as usize) < k),
            Job::Road(k, most) => {
                out.copy_from_slice(self.image);
                let p = self.cfg.percentiles[k] as f64;
                let keep = road::kept(self.map, p, most);
                let stream = (self.key << 8) | ((k as u64) << 1) | most as u64;
                let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed);
                rng.set_stream(stream);
                let sd = self.cfg.road_noise;
                let mut noise =
                    || if sd == 0.0 { 0.0 } else { sd * Distribution::<f32>::sample(&StandardNormal, &mut rng) };
                road::impute(out, self.c, self.h, self.w, &keep, &mut noise);
            }
        }
    }

    /// The image's numbers from its class score on the unperturbed input (`base`) and on
    /// each planned input (`scores[j]` for input j).
    pub fn finish(&self, base: f32, scores: &[f32]) -> ImageFaithfulness {
        assert_eq!(scores.len(), self.jobs.len());
        let mut out = BTreeMap::new();
        let has = |m: Metric| self.cfg.metrics.contains(&m);
        let n_points = self.counts.len();
        let (mut deletion, mut insertion) = (vec![base; n_points], vec![base; n_points]);
        let (mut morf, mut lerf) = (Vec::new(), Vec::new());
        for (job, &s) in self.jobs.iter().zip(scores) {
            match *job {
                Job::Masked => {
                    out.insert(Metric::AvgDrop, ((base - s).max(0.0) / (base + 1e-7)) as f64 * 100.0);
                    out.insert(Metric::AvgIncrease, if base < s { 100.0 } else { 0.0 });
                }
                Job::AllSubstrate => {
                    deletion[n_points - 1] = s;
                    insertion[0] = s;
                }
                Job::Deleted(k) => deletion[self.counts.binary_search(&k).expect("a planned count")] = s,
                Job::Inserted(k) => insertion[self.counts.binary_search(&k).expect("a planned count")] = s,
                Job::Road(_, true) => morf.push(s - base),
                Job::Road(_, false) => lerf.push(s - base),
            }
        }
        if n_points > 0 {
            let total = (self.h * self.w) as f32;
            let fractions: Vec<f32> = self.counts.iter().map(|&k| k as f32 / total).collect();
            out.insert(Metric::Deletion, trapezoid(&deletion, &fractions) as f64);
            out.insert(Metric::Insertion, trapezoid(&insertion, &fractions) as f64);
        }
        let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        if !morf.is_empty() {
            out.insert(Metric::RoadMorf, mean(&morf));
        }
        if !lerf.is_empty() {
            out.insert(Metric::RoadLerf, mean(&lerf));
        }
        out.retain(|m, _| has(*m));
        ImageFaithfulness(out)
    }
}

/// `torch.trapezoid(y, x)` in float32.
fn trapezoid(y: &[f32], x: &[f32]) -> f32 {
    (1..y.len()).map(|i| (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2.0).sum()
}

/// torchvision's `gaussian_blur(img, [11, 11], [5, 5])`: a normalized Gaussian kernel in
/// float32, borders reflected (without repeating the edge), applied per plane. Separable
/// here (two 1-D passes), which only reorders the float32 sums.
pub fn blur(image: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let r = BLUR_RADIUS as isize;
    let pdf: Vec<f32> = (-r..=r).map(|i| (-0.5 * (i as f32 / BLUR_SIGMA).powi(2)).exp()).collect();
    let sum: f32 = pdf.iter().sum();
    let kernel: Vec<f32> = pdf.iter().map(|v| v / sum).collect();
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let i = if i < 0 { -i } else { i };
        (if i >= n { 2 * (n - 1) - i } else { i }) as usize
    };
    let plane = h * w;
    let mut out = vec![0.0f32; image.len()];
    let mut rows = vec![0.0f32; plane];
    for ch in 0..c {
        let src = &image[ch * plane..(ch + 1) * plane];
        for y in 0..h {
            for x in 0..w {
                rows[y * w + x] =
                    (-r..=r).map(|d| kernel[(d + r) as usize] * src[y * w + reflect(x as isize + d, w)]).sum();
            }
        }
        let dst = &mut out[ch * plane..(ch + 1) * plane];
        for y in 0..h {
            for x in 0..w {
                dst[y * w + x] =
                    (-r..=r).map(|d| kernel[(d + r) as usize] * rows[reflect(y as isize + d, h) * w + x]).sum();
            }
        }
    }
    out
}

/// One image's faithfulness numbers, by metric.
#[derive(Clone, Debug, Default)]
pub struct ImageFaithfulness(pub BTreeMap<Metric, f64>);

/// Sums of the per-image numbers; merge to combine image shards.
#[derive(Clone, Debug, Default)]
pub struct FaithfulnessAccumulator {
    sums: BTreeMap<Metric, f64>,
    count: u64,
    /// Perturbed inputs scored, for the cost per image.
    pub forwards: u64,
}

impl FaithfulnessAccumulator {
    pub fn add(&mut self, image: &ImageFaithfulness) {
        for (m, v) in &image.0 {
            *self.sums.entry(*m).or_default() += v;
        }
        self.count += 1;
    }

    pub fn merge(&mut self, other: &FaithfulnessAccumulator) {
        for (m, v) in &other.sums {
            *self.sums.entry(*m).or_default() += v;
        }
        self.count += other.count;
        self.forwards += other.forwards;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Means over the images, keyed as metrics.json (`avg_drop`, `deletion_auc`, ...),
    /// plus `road_combined` = (LeRF - MoRF) / 2 when both ROAD orders ran.
    pub fn finish(&self) -> BTreeMap<String, f64> {
        let n = self.count.max(1) as f64;
        let mut out: BTreeMap<String, f64> = self.sums.iter().map(|(m, s)| (m.key().to_string(), s / n)).collect();
        if let (Some(m), Some(l)) = (out.get("road_morf"), out.get("road_lerf")) {
            out.insert("road_combined".into(), (l - m) / 2.0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(metrics: Vec<Metric>) -> FaithfulnessConfig {
        FaithfulnessConfig {
            metrics,
            steps: 4,
            substrate: Substrate::Zero,
            percentiles: vec![50],
            road_noise: 0.0,
            seed: 1,
        }
    }

    #[test]
    fn names_parse_with_clear_errors() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Metric::parse_list(&names(&["road", "insertion"])).unwrap(),
            [Metric::Insertion, Metric::RoadMorf, Metric::RoadLerf]
        );
        let e = Metric::parse_list(&names(&["deletoin"])).unwrap_err().to_string();
        assert!(e.contains("`deletoin`") && e.contains("avg_drop, avg_increase, deletion"), "{e}");
        let bad = FaithfulnessConfig { steps: 0, ..cfg(vec![]) };
        assert!(bad.validate(8).unwrap_err().to_string().contains("faithfulness_steps"));
        let bad = FaithfulnessConfig { percentiles: vec![0, 100], ..cfg(vec![]) };
        assert!(bad.validate(8).unwrap_err().to_string().contains("road_percentiles: 0"));
    }

    #[test]
    fn deletion_and_insertion_follow_the_ranking() {
        // A 2x2 image; map ranks pixel 3, then 0 and 2 tied (0 first), then 1.
        let image = [1.0, 2.0, 3.0, 4.0];
        let map = [0.5, 0.1, 0.5, 0.9];
        let c = cfg(vec![Metric::Deletion, Metric::Insertion]);
        let plan = Plan::new(&c, &image, &map, 1, 2, 2, 0);
        let mut inputs = Vec::new();
        for j in 0..plan.len() {
            let mut out = [0.0; 4];
            plan.input(j, &mut out);
            inputs.push(out);
        }
        assert_eq!(inputs[0], [0.0; 4]); // all substrate
        assert_eq!(inputs[1], [1.0, 2.0, 3.0, 0.0]); // deleted 1
        assert_eq!(inputs[2], [0.0, 0.0, 0.0, 4.0]); // inserted 1
        assert_eq!(inputs[3], [0.0, 2.0, 3.0, 0.0]); // deleted 2: pixel 0 before pixel 2
        assert_eq!(inputs[5], [0.0, 2.0, 0.0, 0.0]); // deleted 3
                                                     // Scores: the sum of the input, so the curves are easy to check.
        let scores: Vec<f32> = inputs.iter().map(|x| x.iter().sum::<f32>() / 10.0).collect();
        let got = plan.finish(1.0, &scores);
        let del = [1.0f32, 0.6, 0.5, 0.2, 0.0];
        let ins = [0.0f32, 0.4, 0.5, 0.8, 1.0];
        let x = [0.0f32, 0.25, 0.5, 0.75, 1.0];
        assert_eq!(got.0[&Metric::Deletion], trapezoid(&del, &x) as f64);
        assert_eq!(got.0[&Metric::Insertion], trapezoid(&ins, &x) as f64);
    }

    #[test]
    fn average_drop_and_increase() {
        let c = cfg(vec![Metric::AvgDrop, Metric::AvgIncrease]);
        let plan = Plan::new(&c, &[1.0; 4], &[0.5; 4], 1, 2, 2, 0);
        let got = plan.finish(0.8, &[0.6]);
        assert!((got.0[&Metric::AvgDrop] - 25.0).abs() < 1e-4);
        assert_eq!(got.0[&Metric::AvgIncrease], 0.0);
        let got = plan.finish(0.5, &[0.6]);
        assert_eq!((got.0[&Metric::AvgDrop], got.0[&Metric::AvgIncrease]), (0.0, 100.0));
    }
}
