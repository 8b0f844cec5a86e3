//! Memory: how the heap keeps freed blocks, huge pages, and buffers filled in parallel
//! without a zero fill first.

use std::mem::MaybeUninit;

/// Tells glibc's allocator to keep freed blocks in the heap for reuse and never to trim
/// it. By default it returns large freed blocks (activations, im2col tiles) to the
/// kernel and faults them in again on the next step: on a 2-core machine page faults,
/// zeroing and TLB shootdowns took ~20% of a ResNet-18 training step. The mmap
/// threshold caps at 32 MB, so blocks above it (batch 16's stem activations, VGG's
/// first ones) are kept by turning mmap off for requests (`M_MMAP_MAX` 0; glibc still
/// maps what a thread's arena cannot hold): ResNet-18 at batch 16 +7%, VGG16 +4%,
/// peak memory unchanged (experiments/log/2026-11-27-cpu-training-speed-sessions-11-14.md). Returns whether glibc took it all.
///
/// # Safety
///
/// No other thread may run while it does: call it first thing in `main`, before any
/// thread (rayon's pool included) is started. glibc's `mallopt` is MT-Unsafe: it writes
/// process-wide parameters that other threads' allocations read unsynchronized.
pub unsafe fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters, and the caller promises
        // that no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Asks Linux for 2 MB pages under a fresh allocation larger than the heap keeps (VGG's
/// 100 MB activations): with transparent huge pages on `madvise`, each 4 KB page of a
/// new mmapped block otherwise costs a fault on first write. Call it before writing.
pub fn advise_huge_pages(buf: &mut [std::mem::MaybeUninit<f32>]) {
    #[cfg(target_os = "linux")]
    if buf.len() * 4 >= 32 << 20 {
        const HUGE: usize = 2 << 20;
        let start = (buf.as_mut_ptr() as usize).next_multiple_of(HUGE);
        let end = (buf.as_mut_ptr() as usize + buf.len() * 4) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside `buf`; the advice changes no contents.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// `n` floats made in parallel, chunk `k` (of `chunk` floats; the last may be shorter)
/// from the values of `fill(k)`, with no zero fill first: on the CPU training ops that
/// fill was a whole extra pass over each activation they return. Panics if `fill(k)`
/// yields fewer values than its chunk holds.
pub fn par_vec<I: Iterator<Item = f32>>(n: usize, chunk: usize, fill: impl Fn(usize) -> I + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(n);
    let out = &mut v.spare_capacity_mut()[..n];
    advise_huge_pages(out);
    out.par_chunks_mut(chunk.max(1)).enumerate().for_each(|(k, out)| {
        let written = out.iter_mut().zip(fill(k)).map(|(o, v)| o.write(v)).count();
        assert_eq!(written, out.len(), "par_vec: chunk {k} short of values");
    });
    // SAFETY: every chunk wrote all of its elements (checked above).
    unsafe { v.set_len(n) };
    v
}

/// `n` floats made in parallel, chunk `k` (of `chunk` floats; the last may be shorter)
/// written by `fill(k, out)`, which must write every element of `out` (a loop the
/// compiler can vectorize, which [`par_vec`]'s iterators are not).
///
/// # Safety
/// `fill(k, out)` writes every element of `out`: the Vec is returned as initialized.
pub unsafe fn par_fill(n: usize, chunk: usize, fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(n);
    let out = &mut v.spare_capacity_mut()[..n];
    advise_huge_pages(out);
    out.par_chunks_mut(chunk.max(1)).enumerate().for_each(|(k, out)| fill(k, out));
    // SAFETY: every fill wrote all of its chunk (the caller's contract), and the chunks
    // cover the n elements.
    unsafe { v.set_len(n) };
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_heap_settings() {
        // Other tests run on other threads here, so the call is made in a child process
        // of this binary that runs this test alone.
        const CHILD: &str = "WSOL_OPS_MALLOPT_CHILD";
        let name = "memory::tests::glibc_takes_the_heap_settings";
        if std::env::var_os(CHILD).is_some() {
            // SAFETY: the child runs this one test on one test thread; libtest's main
            // thread only waits for its result meanwhile.
            assert!(unsafe { keep_freed_memory() });
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("1 passed"), "{out:?}");
    }

    /// Autoref specialization: `is_safe` resolves to `Safe`'s when the function can be
    /// called without `unsafe` (safe fn items implement `Fn`), else to `Any`'s.
    #[test]
    #[allow(clippy::needless_borrow)] // the borrow is what selects the trait
    fn keep_freed_memory_needs_an_unsafe_call() {
        struct Probe<F>(F);
        trait Safe {
            fn is_safe(&self) -> bool {
                true
            }
        }
        impl<F: Fn() -> bool> Safe for Probe<F> {}
        trait Any {
            fn is_safe(&self) -> bool {
                false
            }
        }
        impl<F> Any for &Probe<F> {}
        assert!((&Probe(|| true)).is_safe(), "the probe tells a safe fn");
        assert!(!(&Probe(keep_freed_memory)).is_safe(), "its soundness depends on the caller");
    }

    #[test]
    fn par_vec_writes_every_chunk_in_place() {
        let v = par_vec(10, 4, |k| (0..4).map(move |i| (k * 4 + i) as f32));
        assert_eq!(v, (0..10).map(|i| i as f32).collect::<Vec<_>>());
    }

    #[test]
    #[should_panic(expected = "short of values")]
    fn par_vec_refuses_a_short_chunk() {
        par_vec(8, 4, |k| (0..if k == 1 { 3 } else { 4 }).map(|i| i as f32));
    }
}
