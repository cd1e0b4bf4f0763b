//! Where the tasks write: a caller's buffer (`forward_into`, `backward_into`), or a vector the
//! allocating calls create without zeroing it first ([`fresh_vec`]), whose pieces each task
//! zeroes itself just before its kernels write them ([`Dest::ready`]), or, in the streaming
//! forwards, initialises by its streaming copies ([`Dest::stream_from`], counted through a
//! [`Tally`]).
//!
//! `vec![0.0; n]` gets `calloc`, which hands out fresh pages for nothing but clears reused heap
//! memory with one thread's `memset`, before any kernel runs: in a process that has freed large
//! buffers (glibc then keeps buffers of up to 32 MiB on its heap), that was most of the cost of
//! the small allocating calls. The kernels take `&mut [T]`, which must not point at
//! uninitialised memory, so each task still zeroes its piece first (unless it streams): in
//! parallel, and just before the kernels write the same lines, which then come from this core's
//! caches. (Buffers of 32 MiB or more still come from `calloc`, see [`CALLOC_FROM`].)
//!
//! The soundness of [`fresh_vec`] rests on two things this module alone controls: a fresh
//! piece can only be split (into disjoint parts) or consumed by [`Dest::ready`] or
//! [`Dest::stream_from`], which initialise it and count its elements once, and nothing outside
//! this module can build one (the variants are private, behind [`Dest::init`]).

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytemuck::Pod;

/// How much of a fresh piece the tasks zero and write at a time, in bytes, where they can cut
/// their work that finely (the forward, and the backward of windows that tile): small enough
/// that the kernels find the zeroed lines still in the core's L2. Measured on the development
/// machine (2-core Intel Xeon, 2026-12-07, runs alternating in one process), case C's allocating
/// channels-first backward: 5.2–7 ms with `calloc`; 3.2–3.7 ms zeroing each task's whole piece
/// (3 MB) first, a third of it in `memset`; 2.8–3.2 ms in steps of 8 KiB to 512 KiB (no clear
/// winner among them); 2.2–2.5 ms into a caller's buffer.
pub(super) const STEP: usize = 128 << 10;

/// Part of the memory a pass writes: a caller's buffer ([`Dest::init`]) or a piece of a
/// [`fresh_vec`].
pub(super) struct Dest<'a, T>(Piece<'a, T>);

/// Private, so that only [`fresh_vec`] makes fresh pieces.
enum Piece<'a, T> {
    /// Part of an initialised buffer.
    Init(&'a mut [T]),
    /// Part of a [`fresh_vec`]'s spare capacity, and that vector's count of initialised elements.
    Fresh(&'a mut [MaybeUninit<T>], &'a AtomicUsize),
}

impl<'a, T: Pod> Dest<'a, T> {
    /// A caller's buffer, written as it is.
    pub(super) fn init(buffer: &'a mut [T]) -> Self {
        Dest(Piece::Init(buffer))
    }

    pub(super) fn len(&self) -> usize {
        match &self.0 {
            Piece::Init(s) => s.len(),
            Piece::Fresh(s, _) => s.len(),
        }
    }

    /// Whether this is part of a [`fresh_vec`], which [`Dest::ready`] zeroes.
    pub(super) fn is_fresh(&self) -> bool {
        matches!(self.0, Piece::Fresh(..))
    }

    /// The first `mid` elements and the rest (panics if `mid > len`, like `split_at_mut`).
    pub(super) fn split_at(self, mid: usize) -> (Self, Self) {
        match self.0 {
            Piece::Init(s) => {
                let (a, b) = s.split_at_mut(mid);
                (Dest(Piece::Init(a)), Dest(Piece::Init(b)))
            }
            Piece::Fresh(s, done) => {
                let (a, b) = s.split_at_mut(mid);
                (Dest(Piece::Fresh(a, done)), Dest(Piece::Fresh(b, done)))
            }
        }
    }

    /// Consecutive pieces of the given lengths (panics if they add up to more than `len`).
    pub(super) fn split_lengths(self, lengths: impl IntoIterator<Item = usize>) -> Vec<Self> {
        let (mut rest, mut pieces) = (self, vec![]);
        for len in lengths {
            let (head, tail) = rest.split_at(len);
            pieces.push(head);
            rest = tail;
        }
        pieces
    }

    /// Consecutive pieces of `size` elements (the last one shorter), like `chunks_mut`.
    pub(super) fn chunks(self, size: usize) -> Vec<Self> {
        assert!(size > 0, "chunk size 0");
        let len = self.len();
        self.split_lengths((0..len).step_by(size).map(|start| size.min(len - start)))
    }

    /// The elements, for the kernels to overwrite: a fresh piece is zeroed first (in the calling
    /// task, so that its lines are in this core's caches when the kernels write them).
    pub(super) fn ready(self) -> &'a mut [T] {
        match self.0 {
            Piece::Init(s) => s,
            Piece::Fresh(s, done) => {
                s.fill(MaybeUninit::new(T::zeroed()));
                done.fetch_add(s.len(), Ordering::Relaxed);
                // SAFETY: every element of `s` was initialised on the line above, and
                // `MaybeUninit<T>` has the layout of `T`.
                unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
            }
        }
    }

    /// Writes `src` (of the piece's length) into the piece with streaming stores
    /// ([`super::stream::copy`]): a fresh piece is initialised by the copy itself, not zeroed
    /// first, and counted in `tally` (which adds it to its vector's count when it is dropped).
    /// Call [`super::stream::fence`] before the task ends.
    pub(super) fn stream_from(self, src: &[T], tally: &mut Tally<'a>) {
        match self.0 {
            Piece::Init(s) => super::stream::copy(s, src),
            Piece::Fresh(s, done) => {
                super::stream::copy_uninit(s, src);
                tally.add(done, s.len());
            }
        }
    }

    /// The same memory as elements of `U`, of the same size and alignment as `T`.
    pub(super) fn cast<U: Pod>(self) -> Dest<'a, U> {
        assert!(size_of::<T>() == size_of::<U>() && align_of::<T>() == align_of::<U>(), "cast to another layout");
        match self.0 {
            Piece::Init(s) => Dest(Piece::Init(bytemuck::cast_slice_mut(s))),
            // SAFETY: `MaybeUninit<T>` and `MaybeUninit<U>` have the same size and alignment
            // (asserted above), and any contents, initialised or not, are valid for both. The
            // count stays right: it counts elements, which keep their number.
            Piece::Fresh(s, done) => {
                Dest(Piece::Fresh(unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [MaybeUninit<U>]) }, done))
            }
        }
    }
}

/// A task's count of the fresh elements its streamed copies initialised, added to their vector's
/// count once, when it is dropped (or when a piece of another vector comes), instead of after
/// every copy: a locked add waits for the copy's streaming stores to reach memory. Case C's
/// allocating channels-first forward spent 18 % of its time on the `lock add` after each step's
/// copy (`perf`, development machine, 2-core AMD EPYC Zen 4, 2026-12-07).
///
/// Sound whatever the caller does: it only ever adds elements a copy has initialised, to the
/// count of the vector they belong to.
#[derive(Default)]
pub(super) struct Tally<'a> {
    count: Option<&'a AtomicUsize>,
    pending: usize,
}

impl<'a> Tally<'a> {
    fn add(&mut self, count: &'a AtomicUsize, n: usize) {
        if !self.count.is_some_and(|c| std::ptr::eq(c, count)) {
            self.flush();
            self.count = Some(count);
        }
        self.pending += n;
    }

    fn flush(&mut self) {
        if let Some(count) = self.count {
            count.fetch_add(std::mem::take(&mut self.pending), Ordering::Relaxed);
        }
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// From this size up, glibc's `malloc` always maps fresh pages (the threshold above which it
/// does, which grows as a process frees large buffers, stops at 32 MiB), and `calloc` hands
/// those out without clearing them: their pages fault in, zeroed by the kernel, where the
/// kernels first write them, in parallel. Zeroing them in the tasks as well only adds a pass:
/// case B channels-last backward took 25.6 ms instead of 20–21 (development machine, 2-core
/// Intel Xeon, 2026-12-07).
const CALLOC_FROM: usize = 32 << 20;

/// A vector of `n` elements that `write` writes through a fresh [`Dest`] over its spare
/// capacity, with what `write` returned. When `write` leaves a piece without
/// [`ready`](Dest::ready)ing or [streaming](Dest::stream_from) into it (the backward gives up on
/// invalid indices, and the vector is dropped), the whole vector is zeroed again, written pieces
/// included.
///
/// Vectors of [`CALLOC_FROM`] bytes or more are zeroed by `calloc` instead, and then written as
/// a caller's buffer (there, readied pieces keep what they were given).
pub(super) fn fresh_vec<T: Pod, R>(n: usize, write: impl FnOnce(Dest<'_, T>) -> R) -> (Vec<T>, R) {
    if n.saturating_mul(size_of::<T>()) >= CALLOC_FROM {
        let mut v = bytemuck::zeroed_vec(n);
        super::huge_pages(&v);
        let r = write(Dest::init(&mut v));
        return (v, r);
    }
    let mut v = Vec::with_capacity(n);
    let done = AtomicUsize::new(0);
    let spare = &mut v.spare_capacity_mut()[..n];
    super::huge_pages(spare);
    let r = write(Dest(Piece::Fresh(spare, &done)));
    if done.load(Ordering::Relaxed) != n {
        v.spare_capacity_mut()[..n].fill(MaybeUninit::new(T::zeroed()));
    }
    // SAFETY: the first `n` elements are initialised. The pieces `write` got are disjoint parts
    // of them (split from one `&mut`, and `ready` and `stream_from` consume their piece), and
    // each such piece initialised all of its elements before their number was added to `done`
    // (by `ready` itself, or by the `Tally` a streamed piece was counted in, when it flushed):
    // `done == n` means every element was. Otherwise the line above initialised them all.
    // (`write` has returned, so every borrow of the spare capacity has ended; a `Tally` borrows
    // `done` and flushes when dropped, so every tally has flushed, and every count is visible.)
    unsafe { v.set_len(n) };
    (v, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_pieces_are_zeroed_and_counted() {
        // Every piece readied: its writes stay, the rest of each piece is zero.
        let (v, r) = fresh_vec::<u32, _>(10, |d| {
            let mut total = 0;
            for (i, piece) in d.chunks(4).into_iter().enumerate() {
                let s = piece.ready();
                total += s.len();
                assert!(s.iter().all(|&x| x == 0), "a fresh piece is zeroed");
                s[0] = i as u32 + 1;
            }
            total
        });
        assert_eq!(r, 10);
        assert_eq!(v, [1, 0, 0, 0, 2, 0, 0, 0, 3, 0]);
        // A piece left alone: the whole vector is zeroed again.
        let (v, ()) = fresh_vec::<f32, _>(6, |d| {
            let (a, _b) = d.split_at(2);
            a.ready().fill(5.0);
        });
        assert_eq!(v, [0.0; 6]);
        // Through a cast, with an empty vector too.
        let (v, ()) = fresh_vec::<half::f16, _>(3, |d| d.cast::<u16>().ready().fill(0x3c00));
        assert_eq!(v, [half::f16::ONE; 3]);
        let (v, ()) = fresh_vec::<f32, _>(0, |d| assert!(d.chunks(3).is_empty()));
        assert!(v.is_empty());
    }

    #[test]
    fn streamed_pieces_are_counted_by_their_tally() {
        // Two vectors' pieces through one tally, alternating: each is counted whole (a count
        // left short would have zeroed that vector again).
        let src: Vec<u32> = (1..=10).collect();
        let (a, (b, ())) = fresh_vec::<u32, _>(10, |da| {
            fresh_vec::<u32, _>(10, |db| {
                let mut tally = Tally::default();
                for (i, (pa, pb)) in da.chunks(4).into_iter().zip(db.chunks(4)).enumerate() {
                    let n = pa.len();
                    pa.stream_from(&src[4 * i..][..n], &mut tally);
                    pb.stream_from(&src[10 - 4 * i - n..][..n], &mut tally);
                }
                super::super::stream::fence();
            })
        });
        assert_eq!(a, src);
        assert_eq!(b, [7, 8, 9, 10, 3, 4, 5, 6, 1, 2]);
        // Into a caller's buffer, the tally has nothing to count.
        let mut buf = [0u32; 3];
        Dest::init(&mut buf[..]).stream_from(&[4, 5, 6], &mut Tally::default());
        super::super::stream::fence();
        assert_eq!(buf, [4, 5, 6]);
    }

    #[test]
    fn init_pieces_are_the_buffer() {
        let mut buf = [7u32; 5];
        let pieces = Dest::init(&mut buf[..]).chunks(2);
        assert_eq!(pieces.iter().map(Dest::len).collect::<Vec<_>>(), [2, 2, 1]);
        for piece in pieces {
            let s = piece.ready();
            assert!(s.iter().all(|&x| x == 7), "a caller's buffer is not zeroed");
            s[0] = 1;
        }
        assert_eq!(buf, [1, 7, 1, 7, 1]);
    }
}
