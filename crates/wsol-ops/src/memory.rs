//! Memory: how the heap keeps freed blocks, huge pages, and buffers filled in parallel
//! without a zero fill first.

/// Tells glibc's allocator to keep freed blocks in the heap for reuse and never to trim
/// it. By default it returns large freed blocks (activations, im2col tiles) to the
/// kernel and faults them in again on the next step: on a 2-core machine page faults,
/// zeroing and TLB shootdowns took ~20% of a ResNet-18 training step. The mmap
/// threshold caps at 32 MB, so blocks above it (batch 16's stem activations, VGG's
/// first ones) are kept by turning mmap off for requests (`M_MMAP_MAX` 0; glibc still
/// maps what a thread's arena cannot hold): ResNet-18 at batch 16 +7%, VGG16 +4%,
/// peak memory unchanged (experiments/README.md). Returns whether glibc took it all.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called at start-up,
        // before any other thread exists.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_heap_settings() {
        assert!(keep_freed_memory());
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
