//! Non-temporal stores for outputs much larger than the caches.
//!
//! A regular store first reads its cache line in (a read for ownership), so an output that goes
//! straight to memory costs its size twice in bandwidth. Kernels whose outputs are large
//! ([`Plan::stream`](super::Plan)) compute a few output rows at a time ([`STEP_ELEMENTS`]) in a
//! small buffer, which stays in L1, and copy them out with [`copy`], which writes its aligned 16-byte blocks with SSE2's `movntdq`
//! on x86-64 (every x86-64 CPU has it) and a plain copy elsewhere. Measured on the development
//! machine (2-core AMD EPYC Zen 5, 2 threads, 2026-11-27): a kernel reading 822 MB and writing
//! 411 MB took 27.5 ms with regular stores and 22 ms with these.

use std::mem::MaybeUninit;

/// Passes that move at least this many bytes (input and outputs) stream their outputs: the
/// development machine's L3 (32 MiB), so that a regular store's line would be evicted before it
/// is read again anyway. By the whole pass, not its outputs alone (32 MiB of outputs before,
/// 2026-12-07): on the Zen 4 machine case C channels-first forward (26 MB in, 13 MB out) took
/// 0.75–0.92 ms streaming against 0.92–1.12 ms not, and the values-only pass over case A (26 MB
/// of values) 3.6–3.9 against 5.4–5.9 ms.
pub(super) const THRESHOLD: usize = 32 << 20;

/// The least number of outputs a streaming pass computes (whole output rows, at least one) before
/// copying them out with [`copy`]. Measured on the development machine (2-core AMD EPYC Zen 4,
/// 2026-12-07, builds alternating in separate processes, into a buffer, medians in ms): case A
/// channels-first forward (56-output rows) one row at a time 6.09–6.23, two rows 3.86–4.15,
/// three 4.97–5.03, four 4.40–4.78, six 4.23–4.31, thirteen 4.16–4.38; case G (112-output rows)
/// one row 29.2–31.5, two 30.2–31.4, six 31.6–34.0. (Rows are the unit the kernels write.)
pub(super) const STEP_ELEMENTS: usize = 112;

/// [`STEP_ELEMENTS`] for the short rows of `pairs_task` (case C channels-first forward, 28-output
/// rows, same machine and method, ms): 4 rows (112 outputs) 0.96–1.01, 512 outputs 0.78–0.85, 1024
/// 0.75–0.92, 2048 0.74–0.81; not streaming 0.92–1.12.
pub(super) const PAIRS_STEP_ELEMENTS: usize = 1024;

/// `dst.copy_from_slice(src)`, bypassing the caches where it can (see the module). Call
/// [`fence`] before the task ends.
#[inline]
pub(super) fn copy<T: bytemuck::Pod>(dst: &mut [T], src: &[T]) {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`, and `copy_uninit` writes only initialised
    // elements (those of `src`), so `dst` stays initialised.
    copy_uninit(unsafe { &mut *(dst as *mut [T] as *mut [MaybeUninit<T>]) }, src);
}

/// [`copy`] into memory that may be uninitialised (a fresh vector's spare capacity): every
/// element of `dst` is initialised afterwards.
#[inline]
pub(super) fn copy_uninit<T: bytemuck::Pod>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "stream::copy of unequal lengths");
    // SAFETY: `MaybeUninit<T>` is `size_of::<T>()` bytes that may be uninitialised, which is
    // what `MaybeUninit<u8>` elements are.
    let dst = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<MaybeUninit<u8>>(), size_of_val(dst)) };
    let src: &[u8] = bytemuck::cast_slice(src);
    let put = |d: &mut [MaybeUninit<u8>], s: &[u8]| {
        for (d, &s) in d.iter_mut().zip(s) {
            d.write(s);
        }
    };
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let head = dst.as_ptr().align_offset(16).min(dst.len());
        let ((dst_head, dst), (src_head, src)) = (dst.split_at_mut(head), src.split_at(head));
        put(dst_head, src_head);
        let ((blocks, dst_tail), (sources, src_tail)) = (dst.as_chunks_mut::<16>(), src.as_chunks::<16>());
        for (block, source) in blocks.iter_mut().zip(sources) {
            // SAFETY: `block` is 16 writable bytes at a 16-byte-aligned address (`head` aligned
            // the first one, and they are consecutive), `source` 16 readable bytes; SSE2 is part
            // of x86-64.
            unsafe { _mm_stream_si128(block.as_mut_ptr().cast::<__m128i>(), _mm_loadu_si128(source.as_ptr().cast())) }
        }
        put(dst_tail, src_tail);
    }
    #[cfg(not(target_arch = "x86_64"))]
    put(dst, src);
}

/// Orders the task's streaming stores before whatever follows (the end of the task, which
/// another thread may observe).
#[inline]
pub(super) fn fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86-64. (`sfence` has no other requirement.)
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_sfence()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_alignment_and_length() {
        let src: Vec<u32> = (0..200u32).map(|i| i.wrapping_mul(2654435761)).collect();
        for start in 0..8 {
            for len in [0, 1, 3, 4, 5, 8, 17, 64, 100, 150] {
                let mut dst = vec![0u32; 210];
                copy(&mut dst[start..start + len], &src[..len]);
                fence();
                assert_eq!(&dst[start..start + len], &src[..len], "start {start} len {len}");
                assert!(dst[..start].iter().chain(&dst[start + len..]).all(|&x| x == 0));
            }
        }
        let halves: Vec<half::f16> = (0..77).map(|i| half::f16::from_bits(i * 811)).collect();
        let mut dst = [half::f16::ZERO; 80];
        copy(&mut dst[3..], &halves);
        let bits = |v: &[half::f16]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&dst[3..]), bits(&halves));
    }
}
