//! Data-parallel training: which rank this process is, and the few collectives the
//! trainer and the evaluator need (sums of flat buffers, broadcast from rank 0, barrier,
//! gather of bytes to rank 0), each timed by a watchdog ([`Watched`]).
//!
//! Engines are the ones clusters already run, never a transport of our own: [`Local`]
//! (one process, the default) and MPI (`mpi.rs`, cargo feature `mpi`, started by
//! `mpirun` / `srun`). Another engine (NCCL) is one more file implementing
//! [`Collective`] and one more arm in [`launch`].

#[cfg(feature = "mpi")]
mod mpi;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{backprop::GradStore, Tensor, Var};

/// A communicator of `world` processes. Every rank must make the same calls in the same
/// order with the same buffer lengths (MPI's rule): the trainer only calls these where
/// every rank reaches them.
pub trait Collective {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// The engine, for logs: `local`, `mpi`.
    fn engine(&self) -> &'static str;
    /// Element-wise sum over the ranks, in place, on every rank.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()>;
    /// [`Collective::all_reduce_sum_f32`] in f64 (batch-norm statistics across ranks).
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Element-wise sum of counts: exact, so sharded metrics equal unsharded ones.
    fn all_reduce_sum_u64(&self, buf: &mut [u64]) -> Result<()>;
    /// Every rank's bytes (any length) to rank 0, in rank order: `Some` there, `None`
    /// on the others.
    fn gather_bytes(&self, mine: &[u8]) -> Result<Option<Vec<Vec<u8>>>>;
    /// Rank 0's values into every rank's `buf` (same length everywhere).
    fn broadcast_f32(&self, buf: &mut [f32]) -> Result<()>;
    fn broadcast_u64(&self, buf: &mut [u64]) -> Result<()>;
    fn barrier(&self) -> Result<()>;
    /// Ends every rank of the job now (an error only this rank saw: the others may be
    /// waiting in a collective and would never return).
    fn abort(&self, code: i32) -> !;

    fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Element-wise mean over the ranks, in place.
    fn all_reduce_mean_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce_sum_f32(buf)?;
        let n = self.world() as f32;
        buf.iter_mut().for_each(|v| *v /= n);
        Ok(())
    }
}

/// One process: every collective is the identity.
pub struct Local;

impl Collective for Local {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn engine(&self) -> &'static str {
        "local"
    }
    fn all_reduce_sum_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_u64(&self, _: &mut [u64]) -> Result<()> {
        Ok(())
    }
    fn gather_bytes(&self, mine: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        Ok(Some(vec![mine.to_vec()]))
    }
    fn broadcast_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast_u64(&self, _: &mut [u64]) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// An error every rank reached together (a set-up check all of them made): each rank
/// reports it and ends normally, with no abort racing the others' messages.
#[derive(Debug)]
pub struct Agreed(pub String);

impl std::fmt::Display for Agreed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Agreed {}

/// Launcher variables naming the world size: Open MPI's, PMI's (MPICH's Hydra, Slurm),
/// PMIx's, and torchrun's.
const WORLD_VARS: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "WORLD_SIZE"];

/// `(variable, value)` of the first launcher variable that says more than one process.
fn launched_world() -> Option<(&'static str, usize)> {
    WORLD_VARS.iter().find_map(|&v| {
        let n = std::env::var(v).ok()?.trim().parse::<usize>().ok()?;
        (n > 1).then_some((v, n))
    })
}

/// Launcher variables naming this process's rank on its machine: torchrun's, Open MPI's,
/// Slurm's, MPICH Hydra's.
const LOCAL_RANK_VARS: [&str; 4] = ["LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"];

/// `(variable, value)` of the first local-rank variable `env` has (it reads one: the
/// process environment, or a test's); one that is not a number is an error naming it.
pub fn local_rank(env: impl Fn(&str) -> Option<String>) -> Result<Option<(&'static str, usize)>> {
    for var in LOCAL_RANK_VARS {
        if let Some(v) = env(var) {
            let r = v
                .trim()
                .parse::<usize>()
                .map_err(|_| anyhow::anyhow!("{var}={v}: expected the process's rank on its machine (0, 1, ...)"))?;
            return Ok(Some((var, r)));
        }
    }
    Ok(None)
}

/// The communicator this process belongs to: MPI's when a launcher started several
/// processes and the `mpi` feature is built, [`Local`] when started alone. Started by a
/// launcher without an engine that can join it, it fails (on every rank, since each one
/// sees the same variables) instead of running N unaware copies.
pub fn launch() -> Result<Box<dyn Collective>> {
    let Some((var, n)) = launched_world() else { return Ok(Box::new(Local)) };
    #[cfg(feature = "mpi")]
    if var != "WORLD_SIZE" || std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() {
        let limit = collective_timeout()?;
        let (c, multiple) = mpi::Mpi::init()?;
        check_torchrun_vars(c.as_ref())?;
        return match limit {
            Some(limit) => Watched::wrap(c, limit, move |code| mpi::abort_job(code, multiple)),
            None => Ok(c),
        };
    }
    if var == "WORLD_SIZE" {
        bail!(
            "WORLD_SIZE={n} asks for {n} processes, but torchrun-style rendezvous (MASTER_ADDR/MASTER_PORT) needs an engine this build does not have (NCCL is not implemented); start the ranks with `mpirun -np {n}` or `srun` from a build with `--features mpi`"
        );
    }
    bail!(
        "started as one of {n} processes ({var}={n}), but this wsol was built without MPI: rebuild with `cargo build --release --features mpi` (needs Open MPI or MPICH, see README \"More than one machine\")"
    )
}

/// Seconds a collective may wait for the other ranks before the job is ended
/// (`WSOL_COLLECTIVE_TIMEOUT`; 0 waits forever).
pub const TIMEOUT_VAR: &str = "WSOL_COLLECTIVE_TIMEOUT";
/// PyTorch's default process-group timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The collective timeout of [`TIMEOUT_VAR`]: `None` when disabled.
pub fn collective_timeout() -> Result<Option<Duration>> {
    let Ok(v) = std::env::var(TIMEOUT_VAR) else { return Ok(Some(DEFAULT_TIMEOUT)) };
    match v.trim().parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(s) if s > 0.0 && s.is_finite() => Ok(Some(Duration::from_secs_f64(s))),
        _ => bail!("{TIMEOUT_VAR}={v}: expected seconds (a positive number, or 0 for no timeout)"),
    }
}

/// A communicator whose collectives are timed by a watchdog thread: one that waits
/// longer than the limit (a rank that lives but hangs, or lags far behind) prints which
/// rank and collective and ends the whole job. MPI has no such timeout, and a rank that
/// died is the launcher's to notice; a live but hung one would hold the others forever.
pub struct Watched {
    inner: Box<dyn Collective>,
    watch: Arc<Watch>,
}

/// The collective in progress on the main thread, if any: (its name, when it began).
struct Watch {
    armed: Mutex<Option<(&'static str, Instant)>>,
    wake: Condvar,
}

impl Watched {
    /// `inner` timed at `limit`; `abort` ends every rank of the job (from the watchdog's
    /// thread).
    pub fn wrap(
        inner: Box<dyn Collective>,
        limit: Duration,
        abort: impl Fn(i32) -> std::convert::Infallible + Send + 'static,
    ) -> Result<Box<dyn Collective>> {
        let watch = Arc::new(Watch { armed: Mutex::new(None), wake: Condvar::new() });
        let (w, rank) = (watch.clone(), inner.rank());
        std::thread::Builder::new()
            .name("wsol-collective-watchdog".into())
            .spawn(move || {
                let mut armed = w.armed.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let state = *armed;
                    armed = match state {
                        None => w.wake.wait(armed).unwrap_or_else(|e| e.into_inner()),
                        Some((what, since)) if since.elapsed() >= limit => {
                            // Unlocked first: the main thread may still come back to disarm.
                            drop(armed);
                            let line = format!(
                                "error: rank {rank}: collective `{what}` waited {:.1} s for the other ranks ({TIMEOUT_VAR}={}): a rank is hung or far behind; ending every rank of the job\n",
                                since.elapsed().as_secs_f64(),
                                limit.as_secs_f64()
                            );
                            // One write, so the line does not interleave with another rank's.
                            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                            match abort(TIMEOUT_EXIT_CODE) {}
                        }
                        Some((_, since)) => {
                            let left = limit.saturating_sub(since.elapsed());
                            w.wake.wait_timeout(armed, left).unwrap_or_else(|e| e.into_inner()).0
                        }
                    };
                }
            })
            .context("cannot start the collective-timeout watchdog thread")?;
        Ok(Box::new(Watched { inner, watch }))
    }

    fn timed<T>(&self, what: &'static str, f: impl FnOnce(&dyn Collective) -> T) -> T {
        self.set(Some((what, Instant::now())));
        let out = f(self.inner.as_ref());
        self.set(None);
        out
    }

    fn set(&self, state: Option<(&'static str, Instant)>) {
        *self.watch.armed.lock().unwrap_or_else(|e| e.into_inner()) = state;
        if state.is_some() {
            self.watch.wake.notify_one();
        }
    }
}

/// Exit status of a job ended by the collective timeout.
pub const TIMEOUT_EXIT_CODE: i32 = 3;

impl Collective for Watched {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world(&self) -> usize {
        self.inner.world()
    }
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.timed("all_reduce_sum_f32", |c| c.all_reduce_sum_f32(buf))
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.timed("all_reduce_sum_f64", |c| c.all_reduce_sum_f64(buf))
    }
    fn all_reduce_sum_u64(&self, buf: &mut [u64]) -> Result<()> {
        self.timed("all_reduce_sum_u64", |c| c.all_reduce_sum_u64(buf))
    }
    fn gather_bytes(&self, mine: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        self.timed("gather_bytes", |c| c.gather_bytes(mine))
    }
    fn broadcast_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.timed("broadcast_f32", |c| c.broadcast_f32(buf))
    }
    fn broadcast_u64(&self, buf: &mut [u64]) -> Result<()> {
        self.timed("broadcast_u64", |c| c.broadcast_u64(buf))
    }
    fn barrier(&self) -> Result<()> {
        self.timed("barrier", |c| c.barrier())
    }
    fn abort(&self, code: i32) -> ! {
        self.inner.abort(code)
    }
}

/// Test hook: `WSOL_TEST_STALL_RANK=R` makes rank R sleep for an hour before each
/// training step (a live but hung rank), for the collective-timeout test.
pub fn test_stall(c: &dyn Collective) {
    if std::env::var("WSOL_TEST_STALL_RANK").ok().and_then(|v| v.trim().parse::<usize>().ok()) == Some(c.rank()) {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// torchrun's `RANK` / `WORLD_SIZE`, when set beside an MPI launch, must agree with it.
#[cfg(feature = "mpi")]
fn check_torchrun_vars(c: &dyn Collective) -> Result<()> {
    for (var, want) in [("RANK", c.rank()), ("WORLD_SIZE", c.world())] {
        if let Ok(v) = std::env::var(var) {
            if v.trim().parse::<usize>().ok() != Some(want) {
                bail!("{var}={v} disagrees with the MPI launch (expected {want}); unset it or start the ranks one way");
            }
        }
    }
    Ok(())
}

/// Every rank learns whether any rank failed at a step they all reach, so that all fail
/// together (each with a message) instead of the healthy ones waiting forever in the
/// next collective.
pub fn agree<T>(c: &dyn Collective, what: &str, result: Result<T>) -> Result<T> {
    if c.world() == 1 {
        return result;
    }
    let mut failed = vec![0u64; c.world()];
    failed[c.rank()] = result.is_err() as u64;
    c.all_reduce_sum_u64(&mut failed)?;
    let ranks: Vec<String> = failed.iter().enumerate().filter(|(_, &f)| f > 0).map(|(r, _)| r.to_string()).collect();
    match result {
        Err(e) => Err(Agreed(format!("rank {}: {what}: {}", c.rank(), crate::error::message(&e))).into()),
        Ok(_) if !ranks.is_empty() => Err(Agreed(format!(
            "rank {}: {what} failed on rank {} (its message is above); every rank stops",
            c.rank(),
            ranks.join(", ")
        ))
        .into()),
        Ok(v) => Ok(v),
    }
}

/// Fails on every rank unless all ranks resolved the same config (hash of the resolved
/// YAML): ranks that train different things would still exchange gradients.
pub fn check_same_config(c: &dyn Collective, resolved_yaml: &str) -> Result<()> {
    if c.world() == 1 {
        return Ok(());
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(resolved_yaml.as_bytes());
    let mine: Vec<u64> = digest.chunks(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
    let mut root = mine.clone();
    c.broadcast_u64(&mut root)?;
    let result = match root == mine {
        true => Ok(()),
        false => Err(anyhow::anyhow!(
            "the resolved config differs from rank 0's (sha256 {:016x}… vs {:016x}…): start every rank with the same --config file contents and --set overrides",
            mine[0].swap_bytes(),
            root[0].swap_bytes()
        )),
    };
    agree(c, "config check", result)
}

/// Rank 0's string (a run directory) on every rank.
pub fn broadcast_string(c: &dyn Collective, s: &str) -> Result<String> {
    if c.world() == 1 {
        return Ok(s.to_string());
    }
    let mut len = [s.len() as u64];
    c.broadcast_u64(&mut len)?;
    let mut words = vec![0u64; (len[0] as usize).div_ceil(8)];
    if c.is_root() {
        for (w, chunk) in words.iter_mut().zip(s.as_bytes().chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
    }
    c.broadcast_u64(&mut words)?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).take(len[0] as usize).collect();
    Ok(String::from_utf8(bytes)?)
}

/// Rank 0's values of the given parameters on every rank (start of training: the same
/// initial weights everywhere whatever each rank's initializer drew).
pub fn broadcast_params(c: &dyn Collective, params: &[(String, Var)]) -> Result<()> {
    if c.world() == 1 {
        return Ok(());
    }
    for chunk in buckets(params.iter().map(|(_, v)| v.elem_count())) {
        let mut buf = Vec::with_capacity(chunk.iter().map(|&i| params[i].1.elem_count()).sum());
        for &i in &chunk {
            buf.extend(params[i].1.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        c.broadcast_f32(&mut buf)?;
        let mut at = 0;
        for &i in &chunk {
            let v = &params[i].1;
            let n = v.elem_count();
            v.set(&Tensor::from_slice(&buf[at..at + n], v.dims(), v.device())?)?;
            at += n;
        }
    }
    Ok(())
}

/// Batch-norm statistics summed over the ranks of a communicator (wsol-ops'
/// synchronized batch norm).
struct BnStats<'a>(&'a dyn Collective);

impl wsol_ops::batch_norm::StatsReducer for BnStats<'_> {
    fn sum(&self, buf: &mut [f64]) -> candle_core::Result<()> {
        self.0.all_reduce_sum_f64(buf).map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
    }
}

/// Runs `f` with training-mode batch norm synchronized over `dist`'s ranks (`None`: per
/// process, unchanged).
pub fn synced_bn<R>(dist: Option<&dyn Collective>, f: impl FnOnce() -> R) -> R {
    match dist {
        Some(c) => wsol_ops::batch_norm::with_synced_stats(&BnStats(c), f),
        None => f(),
    }
}

/// Elements per all-reduce call: a few large calls per step (latency amortized), each
/// small enough that the extra copy stays a few tens of MB.
const BUCKET_ELEMS: usize = 4 << 20;

/// Consecutive index groups whose sizes add up to about [`BUCKET_ELEMS`].
fn buckets(sizes: impl Iterator<Item = usize>) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new()];
    let mut filled = 0;
    for (i, n) in sizes.enumerate() {
        if filled > 0 && filled + n > BUCKET_ELEMS {
            out.push(Vec::new());
            filled = 0;
        }
        out.last_mut().expect("one bucket").push(i);
        filled += n;
    }
    out
}

/// Replaces each rank's gradients (means over its `local` images) by the mean over the
/// whole global batch of `total` images: sum over ranks of `local/total * grad`, by
/// bucketed all-reduce. A parameter gets a gradient when any rank has one, so the set
/// the optimizer updates is the single process's. Returns the time spent.
pub fn average_gradients(
    c: &dyn Collective,
    params: &[&Var],
    grads: &mut GradStore,
    local: usize,
    total: usize,
) -> Result<Duration> {
    let started = Instant::now();
    let weight = local as f64 / total as f64;
    let sizes: Vec<usize> = params.iter().map(|v| v.elem_count()).collect();
    let groups = buckets(sizes.iter().copied());
    let last = groups.len() - 1;
    for (g, chunk) in groups.iter().enumerate() {
        let len: usize = chunk.iter().map(|&i| sizes[i]).sum();
        // The last bucket also carries one has-gradient flag per parameter.
        let flags = if g == last { params.len() } else { 0 };
        let mut buf = vec![0f32; len + flags];
        let mut at = 0;
        for &i in chunk {
            if let Some(grad) = grads.get(params[i]) {
                let scaled = (grad * weight)?.flatten_all()?.to_vec1::<f32>()?;
                buf[at..at + sizes[i]].copy_from_slice(&scaled);
            }
            at += sizes[i];
        }
        if g == last {
            for (k, v) in params.iter().enumerate() {
                buf[len + k] = grads.get(v).is_some() as u8 as f32;
            }
        }
        c.all_reduce_sum_f32(&mut buf)?;
        let mut at = 0;
        for &i in chunk {
            let v = params[i];
            grads.insert(v.as_tensor(), Tensor::from_slice(&buf[at..at + sizes[i]], v.dims(), v.device())?);
            at += sizes[i];
        }
        if g == last {
            for (k, v) in params.iter().enumerate() {
                if buf[len + k] == 0.0 {
                    grads.remove(v.as_tensor());
                }
            }
        }
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_group_consecutive_parameters_up_to_the_limit() {
        assert_eq!(buckets([3, 4, 5].into_iter()), vec![vec![0, 1, 2]]);
        let big = BUCKET_ELEMS;
        assert_eq!(buckets([big, 1, big - 1, 2].into_iter()), vec![vec![0], vec![1, 2], vec![3]]);
        // A parameter larger than a bucket goes alone.
        assert_eq!(buckets([1, 2 * big, 1].into_iter()), vec![vec![0], vec![1], vec![2]]);
    }

    /// A collective that outlasts the limit calls the abort (from the watchdog thread)
    /// with the timeout's exit code; quick ones never do.
    #[test]
    fn the_watchdog_ends_a_collective_that_waits_too_long() {
        struct Slow(Duration);
        impl Collective for Slow {
            fn rank(&self) -> usize {
                0
            }
            fn world(&self) -> usize {
                2
            }
            fn engine(&self) -> &'static str {
                "slow"
            }
            fn all_reduce_sum_f32(&self, _: &mut [f32]) -> Result<()> {
                std::thread::sleep(self.0);
                Ok(())
            }
            fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<()> {
                Ok(())
            }
            fn all_reduce_sum_u64(&self, _: &mut [u64]) -> Result<()> {
                Ok(())
            }
            fn gather_bytes(&self, _: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
                Ok(None)
            }
            fn broadcast_f32(&self, _: &mut [f32]) -> Result<()> {
                Ok(())
            }
            fn broadcast_u64(&self, _: &mut [u64]) -> Result<()> {
                Ok(())
            }
            fn barrier(&self) -> Result<()> {
                Ok(())
            }
            fn abort(&self, code: i32) -> ! {
                panic!("abort {code}")
            }
        }
        let watched = |sleep: Duration| {
            let (tx, rx) = std::sync::mpsc::channel();
            let abort = move |code| {
                tx.send(code).unwrap();
                loop {
                    std::thread::park();
                }
            };
            let c = Watched::wrap(Box::new(Slow(sleep)), Duration::from_millis(100), abort).unwrap();
            (c, rx)
        };
        let (quick, rx) = watched(Duration::ZERO);
        for _ in 0..20 {
            quick.all_reduce_sum_f32(&mut [1.0]).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(rx.try_recv().is_err(), "quick collectives are never ended");
        let (slow, rx) = watched(Duration::from_millis(600));
        slow.all_reduce_sum_f32(&mut [1.0]).unwrap();
        assert_eq!(rx.try_recv(), Ok(TIMEOUT_EXIT_CODE));
    }

    #[test]
    fn local_collectives_are_the_identity() {
        let c = Local;
        let mut v = vec![1.5f32, -2.0];
        c.all_reduce_mean_f32(&mut v).unwrap();
        assert_eq!(v, [1.5, -2.0]);
        assert!(agree(&c, "x", Err::<(), _>(anyhow::anyhow!("boom"))).is_err());
        assert_eq!(broadcast_string(&c, "runs/a").unwrap(), "runs/a");
    }
}
