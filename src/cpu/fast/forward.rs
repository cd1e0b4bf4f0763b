//! Forward kernels: one output row `(group, od, oh)` at a time, many outputs per instruction.
//!
//! Every kernel applies the reference's rule in the reference's order: the first real tap of a
//! window is taken unconditionally, then every later tap, in row-major order, replaces the best
//! when `v > best || isnan(v)`. The value written is the best itself, which is the input element
//! at the index written (the reference writes `input[arg]`: the same bits).

use super::dest::{Dest, STEP, Tally};
use super::lane::{Lane, pick_u32, prefetch};
use super::{Isa, Plan, RowCursor, multiversion, run_tasks, stream, taps, task_count};
use crate::NO_INDEX;
use crate::params::Axis;

/// Every output row; `indices` `None`: values only (each task's indices go to a buffer of its own,
/// a step of rows at a time, or to `task`'s staging buffer when it streams, and are dropped).
pub(super) fn run<T: Lane>(p: &Plan, input: &[T], values: Dest<T>, indices: Option<Dest<u32>>) {
    let row_len = p.out_row_len();
    if values.len() == 0 {
        return;
    }
    let rows = p.out_rows();
    let index_bytes = if indices.is_some() { 4 } else { 0 };
    let bytes = size_of_val(input) + values.len() * (size_of::<T>() + index_bytes);
    let per_task = rows.div_ceil(task_count(bytes, rows));
    // Short rows only: measured on the development machine (2 threads, AVX2 build, 2026-11-27),
    // case E (7 outputs a row) 0.77 → 0.19 ms, C (28) 1.2 → 0.75 ms; A (56) within the noise;
    // D (512) 0.18 → 0.19–0.25 ms, G (112) 38 → 50 ms (the row-by-row passes stream better).
    let pairs =
        p.lanes == 1 && p.exact_tiling() && (p.d.kernel, p.h.kernel, p.w.kernel) == (1, 2, 2) && p.w.output <= 32;
    // Short rows that stream: a few rows at a time are computed into a staging buffer and
    // copied out here (`task` streams its own rows).
    let stream_pairs = pairs && p.stream;
    // Not streaming, a fresh vector's piece is zeroed and written a few rows at a time (see
    // `dest::STEP`), and so are the values of a values-only pass, so that the dropped indices
    // stay in the caches.
    let step = if stream_pairs {
        stream::PAIRS_STEP_ELEMENTS.div_ceil(row_len)
    } else if !p.stream && (values.is_fresh() || indices.is_none()) {
        (STEP / (row_len * (size_of::<T>() + 4))).max(1)
    } else {
        per_task
    };
    let value_pieces = values.chunks(per_task * row_len);
    let index_pieces: Vec<Option<Dest<u32>>> = match indices {
        Some(indices) => indices.chunks(per_task * row_len).into_iter().map(Some).collect(),
        None => value_pieces.iter().map(|_| None).collect(),
    };
    let tasks: Vec<_> = value_pieces.into_iter().zip(index_pieces).enumerate().collect();
    run_tasks(tasks, |(t, (mut values, mut indices))| {
        let mut first = t * per_task;
        let mut dropped = vec![];
        let (mut staged_v, mut staged_i) = (vec![], vec![]);
        let (mut tally_v, mut tally_i) = (Tally::default(), Tally::default());
        while values.len() > 0 {
            let n = (step * row_len).min(values.len());
            let (v, rest) = values.split_at(n);
            let i = indices.take().map(|piece| {
                let (i, rest_i) = piece.split_at(n);
                indices = Some(rest_i);
                i
            });
            if stream_pairs {
                // Streamed straight into the pieces (a fresh one is not zeroed first).
                staged_v.resize(n, T::ZERO);
                staged_i.resize(n, 0);
                pairs_task::dispatch(p.isa, p, input, first, &mut staged_v, &mut staged_i);
                v.stream_from(&staged_v, &mut tally_v);
                if let Some(i) = i {
                    i.stream_from(&staged_i, &mut tally_i);
                }
            } else if p.stream {
                // `task` streams into the pieces itself (values only: the indices stay staged).
                task::dispatch(p.isa, p, input, first, v, i.unwrap_or_else(|| Dest::init(&mut [])));
            } else {
                let v = v.ready();
                let i = match i {
                    Some(i) => i.ready(),
                    None => {
                        dropped.resize(n, 0);
                        &mut dropped[..]
                    }
                };
                if pairs {
                    pairs_task::dispatch(p.isa, p, input, first, v, i);
                } else {
                    task::dispatch(p.isa, p, input, first, Dest::init(v), Dest::init(i));
                }
            }
            (values, first) = (rest, first + step);
        }
        if stream_pairs {
            stream::fence();
        }
        0
    });
}

multiversion!(pairs_task<T>(p: &Plan, x: &[T], first: usize, values: &mut [T], indices: &mut [u32]) -> ());

/// Output rows `first..` of channels-first 2×2 windows of stride 2 that tile the input exactly:
/// each row in chunks of [`PAIRS`] outputs, read from its two input rows in one pass. A row
/// shorter than a chunk writes past its end, into the next rows' outputs, which are written
/// later (in order); the last chunks of a row end at its end (overlapping the previous chunk,
/// with the same results); where a chunk would reach past the input or the outputs, the windows
/// go one by one.
#[inline(always)]
fn pairs_task<T: Lane>(p: &Plan, x: &[T], first: usize, values: &mut [T], indices: &mut [u32]) {
    let (w, ow_n, oh_n) = (p.w.input, p.w.output, p.h.output);
    // The D axis has 1-tap windows of stride 1: each (group, od) is a plane of its own, at `hw`
    // elements from the previous one.
    let hw = p.h.input * w;
    for r in 0..values.len() / ow_n {
        let (slice, oh) = ((first + r) / oh_n, (first + r) % oh_n);
        let base = slice * hw + 2 * oh * w;
        let pos = ((slice % p.d.input) * hw + 2 * oh * w) as u32;
        let out = r * ow_n;
        let mut s = 0;
        while s < ow_n {
            if s + PAIRS > ow_n && ow_n >= PAIRS {
                s = ow_n - PAIRS;
            }
            if base + w + 2 * (s + PAIRS) <= x.len() && out + s + PAIRS <= values.len() {
                let (r0, r1) = (&x[base + 2 * s..], &x[base + w + 2 * s..]);
                let (v, i) = (&mut values[out + s..], &mut indices[out + s..]);
                pairs_chunk::<T>(r0, r1, pos + 2 * s as u32, w as u32, v, i);
            } else {
                for o in s..(s + PAIRS).min(ow_n) {
                    let (e, q) = (base + 2 * o, pos + 2 * o as u32);
                    let (mut best, mut arg) = (x[e], q);
                    for (e, t) in [(e + 1, q + 1), (e + w, q + w as u32), (e + w + 1, q + w as u32 + 1)] {
                        if x[e].take(best) {
                            (best, arg) = (x[e], t);
                        }
                    }
                    (values[out + o], indices[out + o]) = (best, arg);
                }
            }
            s += PAIRS;
        }
    }
}

/// Outputs one [`pairs_chunk`] computes (and one chunk of the backward's `tiled_pairs_task`).
pub(super) const PAIRS: usize = 16;

/// [`PAIRS`] windows: taps `r0[2j]`, `r0[2j + 1]`, `r1[2j]`, `r1[2j + 1]` (plane positions
/// `pos + 2j`, `+ 1`, `+ w`, `+ w + 1`), in the reference's scan order.
#[inline(always)]
fn pairs_chunk<T: Lane>(r0: &[T], r1: &[T], pos: u32, w: u32, v: &mut [T], i: &mut [u32]) {
    let a: &[[T; 2]; PAIRS] = r0.as_chunks::<2>().0.first_chunk().expect("checked by the caller");
    let b: &[[T; 2]; PAIRS] = r1.as_chunks::<2>().0.first_chunk().expect("checked by the caller");
    let v: &mut [T; PAIRS] = v.first_chunk_mut().expect("checked by the caller");
    let i: &mut [u32; PAIRS] = i.first_chunk_mut().expect("checked by the caller");
    for j in 0..PAIRS {
        let q = pos.wrapping_add(2 * j as u32);
        let (mut best, mut arg) = (a[j][0], q);
        for (x, t) in [(a[j][1], q.wrapping_add(1)), (b[j][0], q.wrapping_add(w)), (b[j][1], q.wrapping_add(w + 1))] {
            let take = x.take(best);
            best = T::pick(take, x, best);
            arg = pick_u32(take, t, arg);
        }
        (v[j], i[j]) = (best, arg);
    }
}

multiversion!(task<T>(p: &Plan, x: &[T], first: usize, values: Dest<'_, T>, indices: Dest<'_, u32>) -> ());

/// Output rows `first..` (as many as `values` holds). Streaming ([`Plan`]'s `stream`), `values`
/// and `indices` (unused in a values-only pass) are written only by streaming copies, so a fresh
/// piece is not zeroed first.
#[inline(always)]
fn task<T: Lane>(p: &Plan, x: &[T], first: usize, values: Dest<'_, T>, indices: Dest<'_, u32>) {
    let row_len = p.out_row_len();
    let end = first + values.len() / row_len;
    let mut s = Scratch::default();
    let mut cursor = RowCursor::new(p, first..end);
    if !p.stream {
        let (values, indices) = (values.ready(), indices.ready());
        while let Some(r) = cursor.advance() {
            let (v, i) =
                (&mut values[(r - first) * row_len..][..row_len], &mut indices[(r - first) * row_len..][..row_len]);
            row(p, x, &cursor.rows, v, i, &mut s);
        }
        return;
    }
    // A few rows at a time are computed here (in L1), then written out past the caches
    // ([`stream::STEP_ELEMENTS`]).
    let step = stream::STEP_ELEMENTS.div_ceil(row_len);
    let (mut staged_v, mut staged_i) = (vec![T::ZERO; step * row_len], vec![0; step * row_len]);
    let (mut values, mut indices) = (values, indices);
    let (mut tally_v, mut tally_i) = (Tally::default(), Tally::default());
    let mut staged_from = first;
    while let Some(r) = cursor.advance() {
        let k = r - staged_from;
        let (v, i) = (&mut staged_v[k * row_len..][..row_len], &mut staged_i[k * row_len..][..row_len]);
        row(p, x, &cursor.rows, v, i, &mut s);
        if k + 1 == step || r + 1 == end {
            let n = (k + 1) * row_len;
            let (v, rest) = values.split_at(n);
            v.stream_from(&staged_v[..n], &mut tally_v);
            values = rest;
            if !p.values_only {
                let (i, rest) = indices.split_at(n);
                i.stream_from(&staged_i[..n], &mut tally_i);
                indices = rest;
            }
            staged_from = r + 1;
        }
    }
    // Once per task: a row left out would otherwise come back zeroed (see `dest::fresh_vec`).
    assert!(values.len() == 0 && (p.values_only || indices.len() == 0), "every row is streamed out");
    stream::fence();
}

/// One output row, whose input rows are `rows`.
#[inline(always)]
fn row<T: Lane>(p: &Plan, x: &[T], rows: &[(usize, u32)], v: &mut [T], i: &mut [u32], s: &mut Scratch<T>) {
    if rows.is_empty() {
        v.fill(T::NEG_INFINITY);
        i.fill(NO_INDEX);
    } else if p.lanes == 1 {
        row_channels_first(p, x, rows, v, i, s);
    } else {
        row_channels_last(p, x, rows, v, i, &mut s.taps);
    }
}

/// Per-task buffers.
struct Scratch<T> {
    /// Tap offsets and positions of a window.
    taps: Vec<(usize, u32)>,
    /// A padded copy of a row's interior outputs.
    vals: Vec<T>,
    idx: Vec<u32>,
    /// The even and odd elements of an input row (see [`k3s2`]).
    even: Vec<T>,
    odd: Vec<T>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Scratch { taps: vec![], vals: vec![], idx: vec![], even: vec![], odd: vec![] }
    }
}

/// One channels-first output row: edge windows one by one, then the interior, one pass over the
/// outputs per input row (the outputs hold the running best; they stay in L1).
#[inline(always)]
fn row_channels_first<T: Lane>(
    p: &Plan,
    x: &[T],
    rows: &[(usize, u32)],
    vals: &mut [T],
    idx: &mut [u32],
    s: &mut Scratch<T>,
) {
    let w = &p.w;
    for o in (0..p.w_lo).chain(p.w_hi..w.output) {
        (vals[o], idx[o]) = window(p, x, rows, o);
    }
    if p.w_hi == p.w_lo {
        return;
    }
    let (vals, idx) = (&mut vals[p.w_lo..p.w_hi], &mut idx[p.w_lo..p.w_hi]);
    // Input coordinate of the first tap of the first interior window.
    let start = p.w_lo * w.stride - w.padding;
    let n = vals.len();
    // Short rows: shorter than one iteration of the vectorised loops, or `k3 s2` rows (whose
    // loop's remainder costs more) of fewer than 64 outputs.
    let k3s2 = (w.kernel, w.stride, w.dilation) == (3, 2, 1);
    if n % p.unit != 0 && (n < p.unit || (k3s2 && n < 64)) {
        // Short row: run the fixed kernel over a padded copy (the extra outputs read past the
        // row, never past the input, and are dropped); rows too close to the end of the input
        // for that take the exact path below. Not for other rows of a few iterations: measured
        // on the development machine (2-core AMD EPYC Zen 4, AVX2 build, 2026-12-07, alternating
        // processes), case A channels-first forward (56-output rows) took 7.5–7.8 ms into a
        // buffer with the copy, 5.5–5.9 ms without; case B (`k3 s2`, 55 interior outputs) 8.0–8.3
        // ms with it, 15.7–15.9 ms without; E (7) the same either way on AVX2, 0.50–0.56 against
        // 0.55–0.58 ms on SSE2.
        let pad = n.next_multiple_of(p.unit);
        s.vals.resize(pad, T::ZERO);
        s.idx.resize(pad, 0);
        let mut all = true;
        for (j, &(off, pos)) in rows.iter().enumerate() {
            let (row, pos) = (&x[off + start..], pos + start as u32);
            let (vals, idx) = (&mut s.vals[..pad], &mut s.idx[..pad]);
            all &= fixed_cf(w, j == 0, row, pos, vals, idx, &mut s.even, &mut s.odd) == pad;
        }
        if all {
            vals.copy_from_slice(&s.vals[..n]);
            idx.copy_from_slice(&s.idx[..n]);
            return;
        }
    }
    for (j, &(off, pos)) in rows.iter().enumerate() {
        let (row, pos) = (&x[off + start..], pos + start as u32);
        let done = fixed_cf(w, j == 0, row, pos, vals, idx, &mut s.even, &mut s.odd);
        let skip = done * w.stride;
        strided(w, &row[skip..], pos + skip as u32, j == 0, &mut vals[done..], &mut idx[done..]);
    }
}

/// The fixed channels-first kernels: [`k3s2`] for `k3 s2` (which LLVM does not vectorise as
/// [`fixed`] for AVX2), [`fixed_any`] otherwise. Returns how many outputs it took.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fixed_cf<T: Lane>(
    w: &Axis,
    first: bool,
    row: &[T],
    pos: u32,
    vals: &mut [T],
    idx: &mut [u32],
    even: &mut Vec<T>,
    odd: &mut Vec<T>,
) -> usize {
    if (w.kernel, w.stride, w.dilation) == (3, 2, 1) {
        if first {
            k3s2::<T, true>(row, pos, vals, idx, even, odd)
        } else {
            k3s2::<T, false>(row, pos, vals, idx, even, odd)
        }
    } else {
        fixed_any(w, 1, first, row, pos, vals, idx)
    }
}

/// One input row's taps for interior `k3 s2` windows: the row is split into its even and odd
/// elements first, so that taps `2o`, `2o + 1`, `2o + 2` are `even[o]`, `odd[o]`, `even[o + 1]`,
/// three contiguous streams. Returns how many outputs it took (fewer when `row` ends early).
#[inline(always)]
fn k3s2<T: Lane, const FIRST: bool>(
    row: &[T],
    pos: u32,
    vals: &mut [T],
    idx: &mut [u32],
    even: &mut Vec<T>,
    odd: &mut Vec<T>,
) -> usize {
    let n = vals.len().min(row.len().saturating_sub(1) / 2);
    if n == 0 {
        return 0;
    }
    let idx = &mut idx[..n];
    even.resize(n + 1, T::ZERO);
    odd.resize(n, T::ZERO);
    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(&row.as_chunks::<2>().0[..n]) {
        (*e, *o) = (pair[0], pair[1]);
    }
    even[n] = row[2 * n];
    let taps = even[..n].iter().zip(&odd[..n]).zip(&even[1..=n]);
    for (o, ((v, i), ((&x0, &x1), &x2))) in vals.iter_mut().zip(idx.iter_mut()).zip(taps).enumerate() {
        let q = pos.wrapping_add(2 * o as u32); // past the plane in padded rows
        let (mut best, mut arg) = if FIRST { (x0, q) } else { (*v, *i) };
        for (k, x) in [x0, x1, x2].into_iter().enumerate().skip(FIRST as usize) {
            let t = x.take(best);
            best = T::pick(t, x, best);
            arg = pick_u32(t, q.wrapping_add(k as u32), arg);
        }
        (*v, *i) = (best, arg);
    }
    n
}

/// The reference's scan of one window (any taps cut by padding), channels-first.
#[inline(always)]
fn window<T: Lane>(p: &Plan, x: &[T], rows: &[(usize, u32)], o: usize) -> (T, u32) {
    let w = &p.w;
    let (k0, k1) = taps(w, o);
    let (mut best, mut arg, mut found) = (T::NEG_INFINITY, NO_INDEX, false);
    for &(off, pos) in rows {
        for k in k0..k1 {
            let iw = o * w.stride + k * w.dilation - w.padding;
            let v = x[off + iw];
            if !found || v.take(best) {
                (best, arg, found) = (v, pos + iw as u32, true);
            }
        }
    }
    (best, arg)
}

/// [`fixed`] for the W kernels and channel counts it is instantiated for (`lanes` is 1 for
/// channels-first); returns 0 (nothing done) for the others.
#[inline(always)]
fn fixed_any<T: Lane>(
    w: &Axis,
    lanes: usize,
    first: bool,
    row: &[T],
    pos: u32,
    vals: &mut [T],
    idx: &mut [u32],
) -> usize {
    #[inline(always)]
    fn go<T: Lane, const K: usize, const S: usize, const C: usize>(
        first: bool,
        row: &[T],
        pos: u32,
        vals: &mut [T],
        idx: &mut [u32],
    ) -> usize {
        let (row, vals, idx) = (row.as_chunks::<C>().0, vals.as_chunks_mut::<C>().0, idx.as_chunks_mut::<C>().0);
        if first {
            fixed::<T, K, S, C, true>(row, pos, vals, idx)
        } else {
            fixed::<T, K, S, C, false>(row, pos, vals, idx)
        }
    }
    if w.dilation != 1 {
        return 0;
    }
    match (w.kernel, w.stride, lanes) {
        (2, 2, 1) => go::<T, 2, 2, 1>(first, row, pos, vals, idx),
        (2, 2, 2) => go::<T, 2, 2, 2>(first, row, pos, vals, idx),
        (2, 2, 3) => go::<T, 2, 2, 3>(first, row, pos, vals, idx),
        (2, 2, 4) => go::<T, 2, 2, 4>(first, row, pos, vals, idx),
        (3, 2, 1) => go::<T, 3, 2, 1>(first, row, pos, vals, idx),
        (3, 2, 2) => go::<T, 3, 2, 2>(first, row, pos, vals, idx),
        (3, 2, 3) => go::<T, 3, 2, 3>(first, row, pos, vals, idx),
        (3, 2, 4) => go::<T, 3, 2, 4>(first, row, pos, vals, idx),
        _ => 0,
    }
}

/// One input row's taps for interior windows with a `K`-tap, stride-`S`, undilated W axis
/// (`K <= 2S`) and `C` lanes: `row[o·S + k][c]` is tap `k` of output `(o, c)`, at plane
/// position `pos + o·S + k`. `FIRST`: the row is the window's first, whose first tap starts the
/// scan. Unrolled over taps and lanes so that LLVM vectorises across `o` (the stride-`S` loads
/// become interleaved loads). `row` may run past the row's end (never read); returns how many
/// outputs it took (all, unless `row` ends within a chunk of the last ones).
#[inline(always)]
fn fixed<T: Lane, const K: usize, const S: usize, const C: usize, const FIRST: bool>(
    row: &[[T; C]],
    pos: u32,
    vals: &mut [[T; C]],
    idx: &mut [[u32; C]],
) -> usize {
    // Taps k < S of output o are chunk o of `row`; taps S <= k < 2S are chunk o of `row[S..]`.
    let n = vals.len().min(if K > S { row.len().saturating_sub(S) / S } else { row.len() / S });
    let a = &row.as_chunks::<S>().0[..n];
    let b = if K > S { &row[S.min(row.len())..].as_chunks::<S>().0[..n] } else { a };
    for (o, (((v, i), ca), cb)) in vals.iter_mut().zip(idx.iter_mut()).zip(a).zip(b).enumerate() {
        let q = pos.wrapping_add((o * S) as u32); // past the plane in padded rows
        for c in 0..C {
            let (mut best, mut arg) = if FIRST { (ca[0][c], q) } else { (v[c], i[c]) };
            for k in FIRST as usize..K {
                let x = if k < S { ca[k][c] } else { cb[k - S][c] };
                let t = x.take(best);
                best = T::pick(t, x, best);
                arg = pick_u32(t, q.wrapping_add(k as u32), arg);
            }
            (v[c], i[c]) = (best, arg);
        }
    }
    n
}

/// One input row's taps for interior windows, any W kernel: one pass per tap. `row[o·s + k·d]`
/// is tap `k` of output `o`.
#[inline(always)]
fn strided<T: Lane>(w: &Axis, row: &[T], pos: u32, first_row: bool, vals: &mut [T], idx: &mut [u32]) {
    if vals.is_empty() {
        return;
    }
    let step = w.stride as u32;
    for k in 0..w.kernel {
        let first = k * w.dilation;
        let src = row[first..].iter().step_by(w.stride);
        let mut q = pos + first as u32;
        let out = vals.iter_mut().zip(idx.iter_mut()).zip(src);
        if first_row && k == 0 {
            for ((b, a), &v) in out {
                (*b, *a) = (v, q);
                q = q.wrapping_add(step);
            }
        } else {
            for ((b, a), &v) in out {
                let t = v.take(*b);
                *b = T::pick(t, v, *b);
                *a = pick_u32(t, q, *a);
                q = q.wrapping_add(step);
            }
        }
    }
}

/// One tap over the contiguous channels of an output position: the first tap of the window
/// copies, the others update.
#[inline(always)]
fn lanes<T: Lane>(first: bool, src: &[T], pos: u32, v: &mut [T], i: &mut [u32]) {
    if first {
        v.copy_from_slice(src);
        i.fill(pos);
    } else {
        for ((b, a), &s) in v.iter_mut().zip(i.iter_mut()).zip(src) {
            let t = s.take(*b);
            *b = T::pick(t, s, *b);
            *a = pick_u32(t, pos, *a);
        }
    }
}

/// One channels-last output row: edge windows one by one; the interior with [`fixed`] for up to
/// four channels, [`blocked`] for channel counts that are a multiple of 4, one pass over the
/// contiguous channels per tap otherwise.
#[inline(always)]
fn row_channels_last<T: Lane>(
    p: &Plan,
    x: &[T],
    rows: &[(usize, u32)],
    vals: &mut [T],
    idx: &mut [u32],
    taps_scratch: &mut Vec<(usize, u32)>,
) {
    let (w, c) = (&p.w, p.lanes);
    for o in (0..p.w_lo).chain(p.w_hi..w.output) {
        let (v, i) = (&mut vals[o * c..][..c], &mut idx[o * c..][..c]);
        let (k0, k1) = taps(w, o);
        if k0 == k1 {
            v.fill(T::NEG_INFINITY);
            i.fill(NO_INDEX);
            continue;
        }
        for (j, &(off, pos)) in rows.iter().enumerate() {
            for k in k0..k1 {
                let iw = o * w.stride + k * w.dilation - w.padding;
                lanes(j == 0 && k == k0, &x[off + iw * c..][..c], pos + iw as u32, v, i);
            }
        }
    }
    if p.w_hi == p.w_lo {
        return;
    }
    let (vals, idx) = (&mut vals[p.w_lo * c..p.w_hi * c], &mut idx[p.w_lo * c..p.w_hi * c]);
    let start = p.w_lo * w.stride - w.padding;
    if c > 4 && c % 4 == 0 {
        // Every tap of the first interior window, in scan order.
        taps_scratch.clear();
        for &(off, pos) in rows {
            taps_scratch.extend((0..w.kernel).map(|k| {
                let iw = start + k * w.dilation;
                (off + iw * c, pos + iw as u32)
            }));
        }
        // Windows between the one computed and the one prefetched. (A window-by-window kernel
        // for many channels, tap by tap over all of them, was faster for case C channels-last
        // without the prefetch, 1.31 → 0.85 ms; with it, these register blocks are: 0.59–0.74 →
        // 0.44–0.48 ms in one process, 0.63–0.84 → 0.52–0.71 ms in alternating processes, and
        // 0.059 → 0.048 ms on C with batch 1, 2026-11-27.)
        let ahead = p.prefetch.div_ceil(w.stride * c * size_of::<T>());
        match c % 16 {
            0 => blocked_taps::<T, 16>(x, taps_scratch, w.stride, c, ahead, vals, idx),
            8 => blocked_taps::<T, 8>(x, taps_scratch, w.stride, c, ahead, vals, idx),
            _ => blocked_taps::<T, 4>(x, taps_scratch, w.stride, c, ahead, vals, idx),
        }
        return;
    }
    for (j, &(off, pos)) in rows.iter().enumerate() {
        let (row, pos) = (&x[(off + start * c)..], pos + start as u32);
        let done = fixed_any(w, c, j == 0, row, pos, vals, idx);
        for (o, (v, i)) in vals.chunks_exact_mut(c).zip(idx.chunks_exact_mut(c)).enumerate().skip(done) {
            for k in 0..w.kernel {
                let iw = o * w.stride + k * w.dilation;
                lanes(j == 0 && k == 0, &row[iw * c..][..c], pos + iw as u32, v, i);
            }
        }
    }
}

/// [`blocked`] with the taps in a fixed-size array for the common window sizes (2×2 and 3×3), so
/// that the tap loop unrolls (one bounds check and one offset load per tap instead of a loop over
/// a slice): case C channels-last forward 0.416–0.575 → 0.393–0.542 ms on the development machine
/// (2 threads, three in-process alternations, 6 % each time, 2026-11-27); A, B, E and G unchanged.
#[inline(always)]
fn blocked_taps<T: Lane, const L: usize>(
    x: &[T],
    taps: &[(usize, u32)],
    stride: usize,
    c: usize,
    ahead: usize,
    vals: &mut [T],
    idx: &mut [u32],
) {
    match taps.len() {
        4 => blocked::<T, L>(x, <&[_; 4]>::try_from(taps).expect("4 taps"), stride, c, ahead, vals, idx),
        9 => blocked::<T, L>(x, <&[_; 9]>::try_from(taps).expect("9 taps"), stride, c, ahead, vals, idx),
        _ => blocked::<T, L>(x, taps, stride, c, ahead, vals, idx),
    }
}

/// Interior channels-last windows, `L` channels at a time (`c` a multiple of `L`): the best
/// values and indices of a block stay in registers across all the window's taps. `taps` are the
/// element offset and plane position of every tap of the first window, in scan order; window
/// `o` is `o·stride` positions further. `ahead` > 0: the taps of window `o + ahead` are
/// prefetched while window `o` is computed.
#[inline(always)]
fn blocked<T: Lane, const L: usize>(
    x: &[T],
    taps: impl AsRef<[(usize, u32)]> + Copy,
    stride: usize,
    c: usize,
    ahead: usize,
    vals: &mut [T],
    idx: &mut [u32],
) {
    let taps = taps.as_ref();
    let Some((&(off0, pos0), rest)) = taps.split_first() else { return };
    for (o, (v, i)) in vals.chunks_exact_mut(c).zip(idx.chunks_exact_mut(c)).enumerate() {
        let (shift, q) = (o * stride * c, (o * stride) as u32);
        if ahead > 0 {
            for &(off, _) in taps {
                prefetch(x, off + shift + ahead * stride * c, c);
            }
        }
        for (b, (vb, ib)) in v.as_chunks_mut::<L>().0.iter_mut().zip(i.as_chunks_mut::<L>().0).enumerate() {
            let l0 = shift + b * L;
            let mut best = *x[off0 + l0..].first_chunk::<L>().expect("tap inside the input");
            let mut arg = [pos0 + q; L];
            for &(off, pos) in rest {
                let src = x[off + l0..].first_chunk::<L>().expect("tap inside the input");
                for ((bv, a), &s) in best.iter_mut().zip(arg.iter_mut()).zip(src) {
                    let t = s.take(*bv);
                    *bv = T::pick(t, s, *bv);
                    *a = pick_u32(t, pos + q, *a);
                }
            }
            (*vb, *ib) = (best, arg);
        }
    }
}
