//! Backward kernels.
//!
//! - [`tiled`]: windows tile the input. Each output writes its window (`gradient_term(g)` at its
//!   index, +0.0 at the other taps: the reference's gather gives exactly this, as one window
//!   reaches each element) and counts its index as invalid when it names none of its taps.
//!   Short channels-first rows of 2-tap windows that tile exactly go by chunks of outputs
//!   instead ([`tiled_pairs_task`]).
//! - Channels-first with undilated W windows, each with a real tap: [`checked_scatter`] adds every
//!   gradient to the element its index names, in increasing output order (the order of the
//!   reference's sums), checking each index on the way.
//! - Channels-last with a multiple of 8 channels, each window with a real tap: [`scatter`] adds
//!   the gradients vectorised across the channels, each element's first term stored rather than
//!   added to a zeroed buffer, and counts the indices that hit none of their window's taps on the
//!   way ([`scatter_lanes_task`], [`checked_lanes_eligible`]).
//! - Otherwise [`validate`] counts the invalid indices (an index is valid when it names one of its
//!   window's real taps, or is −1 for a window of padding only: the reference's `index_valid`),
//!   and, when there are none, [`scatter`] adds the gradients like [`checked_scatter`].

use super::dest::{Dest, STEP};
use super::forward::PAIRS;
use super::lane::Lane;
use super::{Isa, Plan, RowCursor, even_ranges, multiversion, run_tasks, taps, task_count, window_range};
use crate::NO_INDEX;
use crate::cpu::gradient_term;
use crate::params::Geometry;

/// Returns the number of invalid indices; `grad_input` is complete when it is 0.
pub(super) fn run<T: Lane>(g: &Geometry, p: &Plan, go: &[T], idx: &[u32], gi: Dest<T>) -> u64 {
    if gi.len() == 0 {
        return 0; // an empty batch
    }
    if g.tiles() {
        return tiled(p, go, idx, gi);
    }
    if checked_scatter_eligible(p) {
        return checked_scatter(p, go, idx, gi);
    }
    if checked_lanes_eligible(p) {
        return scatter(p, go, idx, gi);
    }
    let invalid = validate(p, idx);
    if invalid == 0 {
        scatter(p, go, idx, gi); // (its count is not the reference's here)
    }
    invalid
}

fn bytes<T: Lane>(go: &[T], gi: &Dest<T>) -> usize {
    (go.len() + gi.len()) * size_of::<T>() + go.len() * 4
}

/// Per-task buffers.
struct Scratch<T> {
    /// Tap offsets and positions of a window.
    taps: Vec<(usize, u32)>,
    /// Plane positions of the first taps of a window's rows.
    firsts: Vec<u32>,
    /// `gradient_term(g)` for the current output row.
    gz: Vec<T>,
    /// Whether each output of the row matched a tap.
    hit: Vec<u8>,
    /// Padded copies of a short row's interior (see [`Isa::unit`]): indices, gradients, hits and the
    /// input row.
    pad_idx: Vec<u32>,
    pad_gz: Vec<T>,
    pad_hit: Vec<u8>,
    pad_row: Vec<T>,
}

impl<T> Scratch<T> {
    fn new() -> Self {
        Scratch {
            taps: vec![],
            firsts: vec![],
            gz: vec![],
            hit: vec![],
            pad_idx: vec![],
            pad_gz: vec![],
            pad_hit: vec![],
            pad_row: vec![],
        }
    }
}

#[inline(always)]
fn misses<H: Copy + Default + PartialEq>(hit: &[H]) -> u64 {
    hit.iter().filter(|&&h| h == H::default()).count() as u64
}

/// Tiling windows: tasks are ranges of output units; a unit's windows cover a contiguous block of
/// input units that no other unit's windows touch.
fn tiled<T: Lane>(p: &Plan, go: &[T], idx: &[u32], gi: Dest<T>) -> u64 {
    let u = p.units();
    let a = u.axis;
    let out_units = p.groups * a.output;
    // First input unit of output unit v's window (windows tile: the next one starts where it ends).
    let in_start = |v: usize| {
        if v == out_units {
            p.groups * a.input
        } else {
            v / a.output * a.input + (v % a.output * a.stride).saturating_sub(a.padding)
        }
    };
    let ranges: Vec<_> = even_ranges(out_units, task_count(bytes(go, &gi), out_units)).collect();
    // A fresh vector's piece is zeroed and written a few output units at a time (see `dest::STEP`).
    let step = if gi.is_fresh() { (STEP / (a.kernel * u.in_len * size_of::<T>())).max(1) } else { out_units };
    let pieces = gi.split_lengths(ranges.iter().map(|r| (in_start(r.end) - in_start(r.start)) * u.in_len));
    // Rows of up to 64 outputs: measured on the development machine (2 threads, AVX2 build,
    // 2026-11-27, alternating runs), case C channels-first (28 outputs a row) 2.0 → 1.0 ms, E (7)
    // 1.4 → 0.46 ms, F3 (16, 3-D) 1.04 → 0.7 ms, A (56) 5.9 → 5.3 ms; but D (512) 0.22 → 0.5 ms
    // and G (112) 57 → 115 ms, whose long rows stream better one input row at a time.
    let pair_rows = p.lanes == 1
        && p.exact_tiling()
        && p.w.kernel == 2
        && p.w.output <= 64
        && (p.d.kernel == 1 || p.w.output >= PAIRS);
    run_tasks(ranges.into_iter().zip(pieces).collect(), |(range, mut gi)| {
        let mut invalid = 0;
        for v in range.clone().step_by(step) {
            let v_end = (v + step).min(range.end);
            let (piece, rest) = gi.split_at((in_start(v_end) - in_start(v)) * u.in_len);
            let (e0, piece) = (in_start(v) * u.in_len, piece.ready());
            let (first, end) = (v * u.out_rows, v_end * u.out_rows);
            invalid += if pair_rows {
                tiled_pairs_task::dispatch(p.isa, p, first, end, go, idx, piece, e0)
            } else {
                tiled_task::dispatch(p.isa, p, first, end, go, idx, piece, e0)
            };
            gi = rest;
        }
        invalid
    })
}

multiversion!(tiled_pairs_task<T>(p: &Plan, first: usize, end: usize, go: &[T], idx: &[u32], gi: &mut [T], e0: usize) -> u64);

/// Output rows `first..end` of a channels-first geometry whose windows tile the input exactly,
/// with 2-tap W windows (`gi` starts at element `e0` of `grad_input`): each row in chunks of
/// [`PAIRS`] outputs (8 for shorter rows), every input row of the chunk's windows written in one
/// pass (the gradient term at the tap the index names, +0.0 at the others). As in the forward's
/// `pairs_task`, the last chunk of a row ends at its end, overlapping the previous one (the same
/// values again, counted once), and in 2-D a row shorter than a chunk writes past its input rows
/// into later ones, which later rows (or the chunk's own later input rows) overwrite. (Not in
/// 3-D, where the rows past a window's first D slice belong to earlier outputs.) Where a chunk
/// would reach past `gi` or the outputs, the windows go one by one.
#[inline(always)]
fn tiled_pairs_task<T: Lane>(
    p: &Plan,
    first: usize,
    end: usize,
    go: &[T],
    idx: &[u32],
    gi: &mut [T],
    e0: usize,
) -> u64 {
    // Rows shorter than a chunk compute its outputs past the row for nothing: 8-output chunks
    // for them (case E channels-first backward, 7-output rows: 0.276–0.288 → 0.242–0.254 ms on
    // the development machine, 2 threads, in-process alternation, 2026-11-27).
    if p.w.output < PAIRS {
        tiled_pairs_rows::<T, 8>(p, first, end, go, idx, gi, e0)
    } else {
        tiled_pairs_rows::<T, PAIRS>(p, first, end, go, idx, gi, e0)
    }
}

/// [`tiled_pairs_task`] with chunks of `N` outputs.
#[inline(always)]
fn tiled_pairs_rows<T: Lane, const N: usize>(
    p: &Plan,
    first: usize,
    end: usize,
    go: &[T],
    idx: &[u32],
    gi: &mut [T],
    e0: usize,
) -> u64 {
    let (d, h, w) = (&p.d, &p.h, &p.w);
    // The first tap of each input row of a window, from the window's first tap, in plane positions
    // (increasing).
    let rows: Vec<u32> =
        (0..d.kernel).flat_map(|kd| (0..h.kernel).map(move |kh| ((kd * h.input + kh) * w.input) as u32)).collect();
    let last_row = *rows.last().expect("a window has a tap") as usize;
    let ow_n = w.output;
    let mut invalid = 0;
    for r in first..end {
        let (oh, od, group) = (r % h.output, r / h.output % d.output, r / h.output / d.output);
        // The element of plane position 0, from the start of `gi` (possibly before it).
        let plane = (group * p.plane_in).wrapping_sub(e0);
        let start = ((od * d.kernel * h.input + oh * h.kernel) * w.input) as u32;
        let out = r * ow_n;
        // Outputs `..done` of the row are counted.
        let (mut s, mut done) = (0usize, 0usize);
        while s < ow_n {
            if s + N > ow_n && ow_n >= N {
                s = ow_n - N;
            }
            let e_first = plane.wrapping_add(start as usize + 2 * s);
            if out + s + N <= idx.len() && e_first + last_row + 2 * N <= gi.len() {
                let i: &[u32; N] = idx[out + s..].first_chunk().expect("checked above");
                let g: &[T; N] = go[out + s..].first_chunk().expect("checked above");
                // A loop, not `g.map(Lane::term)`: `array::map` was not inlined, so it ran in
                // the baseline build, and the 32-byte loads of its result stalled on its 16-byte
                // stores. Measured on the development machine (2 threads, alternating runs,
                // 2026-11-27): F3 backward 0.53–0.61 → 0.41–0.46 ms, C 1.10 → 0.86, E 0.48 → 0.37.
                // Element `2j + k` of a chunk's input row is tap `k` of output `j`, at plane
                // position `q0 + 2j + k`. Each output's gradient term, and its index less its
                // element's offset, are laid out once per element, so that each input row is
                // one comparison with `q0` and one select per element, without interleaving
                // the two taps' results row after row: case F3 backward 4–10 % faster (ratios of
                // medians in one process, alternating, 2026-12-07; C 0–4 %, E 1–2 % slower).
                let mut gz = [[T::ZERO; 2]; N];
                let mut rel = [[0u32; 2]; N];
                for j in 0..N {
                    let t = g[j].term();
                    gz[j] = [t, t];
                    let q = i[j].wrapping_sub(2 * j as u32);
                    rel[j] = [q, q.wrapping_sub(1)];
                }
                // 1 in the elements an output's index named (u32 lanes, like the indices: bytes
                // made LLVM pack and unpack the masks).
                let mut hits = [[0u32; 2]; N];
                for &row in &rows {
                    let q0 = start + row + 2 * s as u32;
                    let dst = &mut gi[e_first + row as usize..];
                    let dst: &mut [[T; 2]; N] = dst.as_chunks_mut::<2>().0.first_chunk_mut().expect("checked above");
                    let (dst, rel, gz) = (dst.as_flattened_mut(), rel.as_flattened(), gz.as_flattened());
                    let hits = hits.as_flattened_mut();
                    for e in 0..2 * N {
                        let m = rel[e] == q0;
                        dst[e] = T::pick(m, gz[e], T::ZERO);
                        hits[e] |= m as u32;
                    }
                }
                // 1 for the outputs whose index matched no tap.
                let mut miss = [0u32; N];
                for j in 0..N {
                    miss[j] = ((hits[j][0] | hits[j][1]) == 0) as u32;
                }
                invalid += miss[done.saturating_sub(s)..N.min(ow_n - s)].iter().map(|&m| m as u64).sum::<u64>();
            } else {
                for o in s.max(done)..(s + N).min(ow_n) {
                    let (i, gz) = (idx[out + o], go[out + o].term());
                    let mut hit = false;
                    for &row in &rows {
                        for k in 0..2 {
                            let q = start + row + (2 * o + k) as u32;
                            let m = i == q;
                            gi[plane.wrapping_add(q as usize)] = T::pick(m, gz, T::ZERO);
                            hit |= m;
                        }
                    }
                    invalid += !hit as u64;
                }
            }
            done = (s + N).min(ow_n);
            s += N;
        }
    }
    invalid
}

multiversion!(tiled_task<T>(p: &Plan, first: usize, end: usize, go: &[T], idx: &[u32], gi: &mut [T], e0: usize) -> u64);

/// Output rows `first..end` of a tiled geometry; `gi` starts at element `e0` of `grad_input`.
#[inline(always)]
fn tiled_task<T: Lane>(p: &Plan, first: usize, end: usize, go: &[T], idx: &[u32], gi: &mut [T], e0: usize) -> u64 {
    let row_len = p.out_row_len();
    let mut s = Scratch::new();
    let mut invalid = 0;
    let mut cursor = RowCursor::new(p, first..end);
    while let Some(r) = cursor.advance() {
        let rows = &cursor.rows[..];
        let (go, idx) = (&go[r * row_len..][..row_len], &idx[r * row_len..][..row_len]);
        // A few channels: too little to vectorise across one window's channels (case D
        // channels-last, SSE2: 1.0 ms instead of 3.8 ms), so zeros, then one write per output;
        // except for 2 to 4 channels of 2- or 3-tap windows, whose fixed kernel vectorises
        // across the outputs instead: case D channels-last 0.95 → 0.23–0.25 ms (2 threads,
        // in-process alternation, 2026-11-27).
        invalid += if p.lanes > 1 && p.lanes < 8 && !(p.lanes <= 4 && matches!(p.w.kernel, 2 | 3)) {
            tiled_row_points(p, rows, go, idx, gi, e0)
        } else {
            tiled_row(p, rows, go, idx, gi, e0, &mut s)
        };
    }
    invalid
}

/// One output row of a tiled geometry (`lanes` is 1 for channels-first): every input row of the
/// row's windows, element by element, edge windows first, then the interior: [`tiled_fixed`]
/// across `ow` for channels-first `k2` and `k3`, per-tap passes over the channels otherwise.
#[inline(always)]
fn tiled_row<T: Lane>(
    p: &Plan,
    rows: &[(usize, u32)],
    go: &[T],
    idx: &[u32],
    gi: &mut [T],
    e0: usize,
    s: &mut Scratch<T>,
) -> u64 {
    let (w, c) = (&p.w, p.lanes);
    s.gz.clear();
    s.gz.extend(go.iter().map(|&g| g.term()));
    s.hit.clear();
    s.hit.resize(go.len(), 0);
    let (gz, hit) = (&s.gz[..], &mut s.hit[..]);
    let (lo, hi) = (p.w_lo, p.w_hi);
    let start = lo * w.stride - w.padding;
    let n = hi - lo;
    let pad = n.next_multiple_of(p.unit);
    let padded = c == 1 && matches!(w.kernel, 2 | 3) && n < 64 && pad != n;
    // Register blocks of channels, except for many channels, which go tap by tap over all of
    // them: measured on the development machine (2 threads, 2026-11-27, four alternations), case
    // C channels-last (256 channels) 1.19–1.29 → 1.03–1.18 ms, E (512) 140–169 → 105–167 µs.
    let blocked = c > 4 && c % 4 == 0 && c < 128;
    if padded {
        // Outputs past the interior match nothing (an index that no position has).
        s.pad_idx.clear();
        s.pad_idx.extend_from_slice(&idx[lo..hi]);
        s.pad_idx.resize(pad, NO_INDEX);
        s.pad_gz.clear();
        s.pad_gz.extend_from_slice(&gz[lo..hi]);
        s.pad_gz.resize(pad, T::ZERO);
        s.pad_hit.clear();
        s.pad_hit.resize(pad, 0);
        s.pad_row.resize(pad * w.kernel, T::ZERO);
    }
    for &(off, pos) in rows {
        let row = &mut gi[off - e0..][..w.input * c];
        for o in (0..lo).chain(hi..w.output) {
            let (k0, k1) = taps(w, o);
            for k in k0..k1 {
                let iw = o * w.stride + k - w.padding;
                let q = pos + iw as u32;
                for l in 0..c {
                    let h = idx[o * c + l] == q;
                    row[iw * c + l] = T::pick(h, gz[o * c + l], T::ZERO);
                    hit[o * c + l] |= h as u8;
                }
            }
        }
        if lo == hi || blocked {
            continue; // no interior, or blocked below
        }
        let (row, pos) = (&mut row[start * c..], pos + start as u32);
        if padded {
            let (buf, pidx, pgz, phit) = (&mut s.pad_row[..], &s.pad_idx[..], &s.pad_gz[..], &mut s.pad_hit[..]);
            match w.kernel {
                2 => tiled_fixed::<T, 2>(buf, pos, pidx, pgz, phit),
                _ => tiled_fixed::<T, 3>(buf, pos, pidx, pgz, phit),
            }
            row[..n * w.kernel].copy_from_slice(&buf[..n * w.kernel]);
            continue;
        }
        let (idx, gz, hit) = (&idx[lo * c..hi * c], &gz[lo * c..hi * c], &mut hit[lo * c..hi * c]);
        match (w.kernel, c) {
            (2, 1) => tiled_fixed::<T, 2>(row, pos, idx, gz, hit),
            (3, 1) => tiled_fixed::<T, 3>(row, pos, idx, gz, hit),
            (2, 2) => tiled_fixed_lanes::<T, 2, 2>(row, pos, idx, gz, hit),
            (2, 3) => tiled_fixed_lanes::<T, 2, 3>(row, pos, idx, gz, hit),
            (2, 4) => tiled_fixed_lanes::<T, 2, 4>(row, pos, idx, gz, hit),
            (3, 2) => tiled_fixed_lanes::<T, 3, 2>(row, pos, idx, gz, hit),
            (3, 3) => tiled_fixed_lanes::<T, 3, 3>(row, pos, idx, gz, hit),
            (3, 4) => tiled_fixed_lanes::<T, 3, 4>(row, pos, idx, gz, hit),
            // The hits of these windows are found after the rows ([`tiled_hits`]).
            (k, _) => {
                for (o, (idx, gz)) in idx.chunks_exact(c).zip(gz.chunks_exact(c)).enumerate() {
                    for kw in 0..k {
                        let q = pos + (o * k + kw) as u32;
                        let dst = &mut row[(o * k + kw) * c..][..c];
                        for ((d, &i), &g) in dst.iter_mut().zip(idx).zip(gz) {
                            *d = T::pick(i == q, g, T::ZERO);
                        }
                    }
                }
            }
        }
    }
    // The interior went through the tap passes of the match's last arm above.
    let tap_passes = !(padded || blocked || (c <= 4 && matches!(w.kernel, 2 | 3)));
    if lo < hi && tap_passes {
        let (idx, hit) = (&idx[lo * c..hi * c], &mut hit[lo * c..hi * c]);
        let first = |r: usize| rows[r].1 + start as u32;
        // Arrays of the usual row counts, so that the test over the rows unrolls.
        match rows.len() {
            1 => tiled_hits(&[first(0)], w.kernel, c, idx, hit),
            2 => tiled_hits(&[first(0), first(1)], w.kernel, c, idx, hit),
            3 => tiled_hits(&[first(0), first(1), first(2)], w.kernel, c, idx, hit),
            n => {
                s.firsts.clear();
                s.firsts.extend((0..n).map(first));
                tiled_hits(&s.firsts, w.kernel, c, idx, hit)
            }
        }
    }
    if padded {
        for (h, &p) in hit[lo..hi].iter_mut().zip(&s.pad_hit) {
            *h |= p;
        }
    }
    if lo < hi && blocked {
        // Every tap of the first interior window: its offset in `gi` and its plane position.
        s.taps.clear();
        for &(off, pos) in rows {
            s.taps.extend((0..w.kernel).map(|k| (off - e0 + (start + k) * c, pos + (start + k) as u32)));
        }
        let (idx, gz, hit) = (&idx[lo * c..hi * c], &gz[lo * c..hi * c], &mut hit[lo * c..hi * c]);
        match c % 16 {
            0 => tiled_blocked::<T, 16>(gi, &s.taps, w.stride, c, idx, gz, hit),
            8 => tiled_blocked::<T, 8>(gi, &s.taps, w.stride, c, idx, gz, hit),
            _ => tiled_blocked::<T, 4>(gi, &s.taps, w.stride, c, idx, gz, hit),
        }
    }
    misses(hit)
}

/// The hits of interior tiled windows of `k` taps a row, `c` channels each, whose input rows
/// start at plane positions `firsts` (the first interior window's first tap in each row, window
/// `lo` of the row, whose hits are `hit[0]`): an index hits when it lies in the window's span
/// of one of its rows (one range test a row; windows that tile are undilated). Measured on the development machine (2-core Intel Xeon, 2026-12-07,
/// `wgpool bench-cpu` alternating with the previous build, four rounds), against or-ing each
/// tap's comparison into the hits in the tap passes (a load and a store of the hits per tap,
/// which `perf` put at 45 % of case E's time): case E channels-last backward (512 channels,
/// into a buffer) 0.38–0.42 → 0.29–0.35 ms, C (256) 2.7–3.1 → 2.0–2.3 ms.
#[inline(always)]
fn tiled_hits(firsts: &[u32], k: usize, c: usize, idx: &[u32], hit: &mut [u8]) {
    for (o, (idx, hit)) in idx.chunks_exact(c).zip(hit.chunks_exact_mut(c)).enumerate() {
        let shift = (o * k) as u32;
        for (h, &i) in hit.iter_mut().zip(idx) {
            *h |= firsts.iter().fold(0, |a, &q| a | (i.wrapping_sub(q + shift) < k as u32) as u8);
        }
    }
}

/// Interior channels-last tiled windows, `L` channels at a time: a block's indices and gradients
/// stay in registers while every tap of the window is written. `taps`: the offset in `gi` and the
/// plane position of every tap of the first window; window `o` is `o·stride` positions further.
#[inline(always)]
fn tiled_blocked<T: Lane, const L: usize>(
    gi: &mut [T],
    taps: &[(usize, u32)],
    stride: usize,
    c: usize,
    idx: &[u32],
    gz: &[T],
    hit: &mut [u8],
) {
    for (o, ((idx, gz), hit)) in idx.chunks_exact(c).zip(gz.chunks_exact(c)).zip(hit.chunks_exact_mut(c)).enumerate() {
        let (shift, q) = (o * stride * c, (o * stride) as u32);
        let blocks = idx.as_chunks::<L>().0.iter().zip(gz.as_chunks::<L>().0).zip(hit.as_chunks_mut::<L>().0);
        for (b, ((i, g), h)) in blocks.enumerate() {
            let mut any = [0u8; L];
            for &(off, pos) in taps {
                let dst = gi[off + shift + b * L..].first_chunk_mut::<L>().expect("tap inside the block");
                for (((d, &i), &g), a) in dst.iter_mut().zip(i).zip(g).zip(any.iter_mut()) {
                    let m = i == pos + q;
                    *d = T::pick(m, g, T::ZERO);
                    *a |= m as u8;
                }
            }
            for (h, a) in h.iter_mut().zip(any) {
                *h |= a;
            }
        }
    }
}

/// One output row of a tiled geometry, as +0.0 everywhere and then one write per output, at its
/// index when that is one of its window's taps: cheaper than comparing every tap, lane by lane,
/// when the channels are few.
#[inline(always)]
fn tiled_row_points<T: Lane>(p: &Plan, rows: &[(usize, u32)], go: &[T], idx: &[u32], gi: &mut [T], e0: usize) -> u64 {
    let (w, c) = (&p.w, p.lanes);
    for &(off, _) in rows {
        gi[off - e0..][..w.input * c].fill(T::ZERO);
    }
    let mut invalid = 0;
    for (o, (go, idx)) in go.chunks_exact(c).zip(idx.chunks_exact(c)).enumerate() {
        let (k0, k1) = p.w_taps(o);
        // The window's real W coordinates (tiled: stride = kernel, no dilation).
        let (lo, hi) = ((o * w.stride + k0 - w.padding) as u32, (o * w.stride + k1 - w.padding) as u32);
        for (l, (&g, &i)) in go.iter().zip(idx).enumerate() {
            // The rows are in increasing plane position: the index can only be in the last one
            // that starts at or before it (chosen without a branch: either row is as likely).
            let (mut off, mut pos) = rows[0];
            for &row in &rows[1..] {
                (off, pos) = std::hint::select_unpredictable(i >= row.1, row, (off, pos));
            }
            let iw = i.wrapping_sub(pos);
            if (lo..hi).contains(&iw) {
                gi[off - e0 + iw as usize * c + l] = gradient_term(g);
            } else {
                invalid += 1;
            }
        }
    }
    invalid
}

/// Interior of a channels-first tiled row with kernel (and stride) `K`: output `o` writes
/// `row[o·K..o·K + K]`.
#[inline(always)]
fn tiled_fixed<T: Lane, const K: usize>(row: &mut [T], pos: u32, idx: &[u32], gz: &[T], hit: &mut [u8]) {
    let n = idx.len();
    let windows = &mut row.as_chunks_mut::<K>().0[..n];
    for (o, (((win, &i), &g), h)) in windows.iter_mut().zip(idx).zip(gz).zip(hit.iter_mut()).enumerate() {
        let q = pos.wrapping_add((o * K) as u32); // past the plane in padded rows
        let mut any = 0;
        for (k, tap) in win.iter_mut().enumerate() {
            let m = i == q.wrapping_add(k as u32);
            *tap = T::pick(m, g, T::ZERO);
            any |= m as u8;
        }
        *h |= any;
    }
}

/// [`tiled_fixed`] for `C` channels-last lanes: output `o`, lane `l` writes
/// `row[(o·K + k)·C + l]` for every tap `k`; unrolled over taps and lanes so that LLVM
/// vectorises across the outputs.
#[inline(always)]
fn tiled_fixed_lanes<T: Lane, const K: usize, const C: usize>(
    row: &mut [T],
    pos: u32,
    idx: &[u32],
    gz: &[T],
    hit: &mut [u8],
) {
    let n = idx.len() / C;
    let windows = &mut row.as_chunks_mut::<C>().0.as_chunks_mut::<K>().0[..n];
    let (idx, gz, hit) =
        (&idx.as_chunks::<C>().0[..n], &gz.as_chunks::<C>().0[..n], &mut hit.as_chunks_mut::<C>().0[..n]);
    for (o, (((win, i), g), h)) in windows.iter_mut().zip(idx).zip(gz).zip(hit.iter_mut()).enumerate() {
        let q = pos.wrapping_add((o * K) as u32);
        for l in 0..C {
            let mut any = 0;
            for (k, tap) in win.iter_mut().enumerate() {
                let m = i[l] == q.wrapping_add(k as u32);
                tap[l] = T::pick(m, g[l], T::ZERO);
                any |= m as u8;
            }
            h[l] |= any;
        }
    }
}

/// The number of invalid indices, by output rows.
fn validate(p: &Plan, idx: &[u32]) -> u64 {
    let rows = p.out_rows();
    let row_len = p.out_row_len();
    let ranges: Vec<_> = even_ranges(rows, task_count(idx.len() * 4, rows)).collect();
    run_tasks(ranges, |range| validate_task::dispatch::<f32>(p.isa, p, range.start, range.end, idx, row_len))
}

// (The element type is unused: `multiversion!` declares functions generic over one.)
multiversion!(validate_task<T>(p: &Plan, first: usize, end: usize, idx: &[u32], row_len: usize) -> u64);

/// Invalid indices of output rows `first..end`.
#[inline(always)]
fn validate_task<T: Lane>(p: &Plan, first: usize, end: usize, idx: &[u32], row_len: usize) -> u64 {
    // Whether each output matched a tap (u32 lanes, like the indices: case B channels-last
    // backward 5.46–5.52 → 4.93–4.98 ms against bytes, 2026-11-27).
    let mut hit: Vec<u32> = vec![];
    let mut invalid = 0;
    let mut cursor = RowCursor::new(p, first..end);
    while let Some(r) = cursor.advance() {
        let rows = &cursor.rows[..];
        let idx = &idx[r * row_len..][..row_len];
        invalid += if p.lanes == 1 {
            validate_row_channels_first(p, rows, idx, &mut hit)
        } else {
            validate_row_channels_last(p, rows, idx, &mut hit)
        };
    }
    invalid
}

#[inline(always)]
fn not_padding_only(idx: &[u32]) -> u64 {
    idx.iter().filter(|&&i| i != NO_INDEX).count() as u64
}

#[inline(always)]
fn validate_row_channels_first(p: &Plan, rows: &[(usize, u32)], idx: &[u32], hit: &mut Vec<u32>) -> u64 {
    let w = &p.w;
    if rows.is_empty() {
        return not_padding_only(idx);
    }
    let mut invalid = 0;
    for o in (0..p.w_lo).chain(p.w_hi..w.output) {
        let (k0, k1) = taps(w, o);
        let i = idx[o];
        let valid = if k0 == k1 {
            i == NO_INDEX
        } else {
            let tap = |&(_, pos): &(usize, u32)| {
                (k0..k1).any(|k| i == pos + (o * w.stride + k * w.dilation - w.padding) as u32)
            };
            rows.iter().any(tap)
        };
        invalid += !valid as u64;
    }
    // No interior outputs (windows wider than the row): the edge loop above checked them all.
    if p.w_hi == p.w_lo {
        return invalid;
    }
    hit.clear();
    hit.resize(p.w_hi - p.w_lo, 0);
    let idx = &idx[p.w_lo..p.w_hi];
    let start = p.w_lo * w.stride - w.padding;
    for &(_, pos) in rows {
        if w.dilation == 1 {
            // The taps of a row are `w.kernel` consecutive positions: one range test.
            let mut q = pos + start as u32;
            for (h, &i) in hit.iter_mut().zip(idx) {
                *h |= (i.wrapping_sub(q) < w.kernel as u32) as u32;
                q = q.wrapping_add(w.stride as u32);
            }
            continue;
        }
        for k in 0..w.kernel {
            let mut q = pos + (start + k * w.dilation) as u32;
            for (h, &i) in hit.iter_mut().zip(idx) {
                *h |= (i == q) as u32;
                q = q.wrapping_add(w.stride as u32);
            }
        }
    }
    invalid + misses(hit)
}

#[inline(always)]
fn validate_row_channels_last(p: &Plan, rows: &[(usize, u32)], idx: &[u32], hit: &mut Vec<u32>) -> u64 {
    let (w, c) = (&p.w, p.lanes);
    let mut invalid = 0;
    hit.resize(c, 0);
    for (o, idx) in idx.chunks_exact(c).enumerate() {
        let (k0, k1) = p.w_taps(o);
        if k0 == k1 || rows.is_empty() {
            invalid += not_padding_only(idx);
            continue;
        }
        hit.fill(0);
        for &(_, pos) in rows {
            if w.dilation == 1 {
                // The real taps of a row are consecutive positions: one range test.
                let (q, span) = (pos + (o * w.stride + k0 - w.padding) as u32, (k1 - k0) as u32);
                for (h, &i) in hit.iter_mut().zip(idx) {
                    *h |= (i.wrapping_sub(q) < span) as u32;
                }
                continue;
            }
            for k in k0..k1 {
                let q = pos + (o * w.stride + k * w.dilation - w.padding) as u32;
                for (h, &i) in hit.iter_mut().zip(idx) {
                    *h |= (i == q) as u32;
                }
            }
        }
        invalid += misses(hit);
    }
    invalid
}

multiversion!(scatter_lanes_task<T>(p: &Plan, first: usize, end: usize, go: &[T], idx: &[u32], gi: &mut [T], e0: usize) -> u64);

/// [`scatter`]'s task for channels-last data with a multiple of 8 channels, vectorised across
/// the channels: output rows `first..end`, in order; every output position adds, for each tap of
/// its window inside `gi` (which starts at element `e0`), its gradients to the channels whose
/// index is that tap (a masked add over 8 or 16 channels at a time). An element takes at most one
/// gradient from each output, in increasing output order: the reference's sums. The first window
/// to reach a position stores its terms (and +0.0 in the channels it does not take) instead of
/// adding them, so that only the positions no window reaches are zeroed first: case B
/// channels-last backward 6.3–6.7 → 5.1 ms on the development machine (2 threads, alternating
/// runs, 2026-11-27), the zero fill and the read of the zeroed lines gone.
#[inline(always)]
fn scatter_lanes_task<T: Lane>(
    p: &Plan,
    first: usize,
    end: usize,
    go: &[T],
    idx: &[u32],
    gi: &mut [T],
    e0: usize,
) -> u64 {
    if p.lanes.is_multiple_of(16) {
        scatter_lanes::<T, 16>(p, first, end, go, idx, gi, e0)
    } else {
        scatter_lanes::<T, 8>(p, first, end, go, idx, gi, e0)
    }
}

/// Returns the number of indices, among the outputs whose first real input row lies in `gi`,
/// that name none of their window's real taps: where [`checked_lanes_eligible`], the reference's
/// count (each output is counted by exactly one task), with no [`validate`] pass before.
#[inline(always)]
fn scatter_lanes<T: Lane, const L: usize>(
    p: &Plan,
    first: usize,
    end: usize,
    go: &[T],
    idx: &[u32],
    gi: &mut [T],
    e0: usize,
) -> u64 {
    let (d, h, w, c) = (&p.d, &p.h, &p.w, p.lanes);
    let row_len = p.out_row_len();
    // The first window (in output order) that has each input coordinate as a tap, per axis: an
    // element's first gradient term is stored, not added (the reference's sum starts from +0.0,
    // and +0.0 + g is `gradient_term(g)`), so `gi` needs no zeroing except at the positions that
    // no window reaches.
    let (first_d, first_h, first_w) = (first_taps(d), first_taps(h), first_taps(w));
    let row_elems = w.input * c;
    let gaps: Vec<usize> = (0..w.input).filter(|&iw| first_w[iw] == NONE).collect();
    for (row, block) in gi.chunks_exact_mut(row_elems).enumerate() {
        let rho = e0 / row_elems + row; // (group, id, ih)
        let (ih, id) = (rho % h.input, rho / h.input % d.input);
        if first_d[id] == NONE || first_h[ih] == NONE {
            block.fill(T::ZERO);
            continue;
        }
        for &iw in &gaps {
            block[iw * c..][..c].fill(T::ZERO);
        }
    }
    let len = gi.len();
    let mut invalid = 0;
    // The current window's real taps in scan order: their element offset in `gi` (`NONE` for
    // input rows outside this task's block, which belong to another task: compared, not
    // written), plane position, and whether this window is the tap's first.
    let mut window: Vec<(usize, u32, bool)> = Vec::with_capacity(p.d.kernel * h.kernel * w.kernel);
    let mut cursor = RowCursor::new(p, first..end);
    while let Some(r) = cursor.advance() {
        let (oh, od) = (r % h.output, r / h.output % d.output);
        // This task counts the outputs whose first real row it owns.
        let counts = cursor.rows.first().is_some_and(|&(top, _)| (e0..e0 + len).contains(&top));
        let (go, idx) = (&go[r * row_len..][..row_len], &idx[r * row_len..][..row_len]);
        for (ow, (go, idx)) in go.chunks_exact(c).zip(idx.chunks_exact(c)).enumerate() {
            let (k0, k1) = p.w_taps(ow);
            window.clear();
            for &(off, pos) in &cursor.rows {
                let inside = off >= e0 && off < e0 + len;
                let row = pos as usize / w.input;
                let first_row = first_h[row % h.input] == oh && first_d[row / h.input] == od;
                for k in k0..k1 {
                    let iw = ow * w.stride + k * w.dilation - w.padding;
                    let dst = if inside { off - e0 + iw * c } else { NONE };
                    window.push((dst, pos + iw as u32, first_row && first_w[iw] == ow));
                }
            }
            // One block of channels at a time, through all the window's taps: its indices,
            // gradients and hits stay in registers.
            for (b, (i, g)) in idx.as_chunks::<L>().0.iter().zip(go.as_chunks::<L>().0).enumerate() {
                let (i, g) = (*i, *g);
                let mut hit = [0u32; L];
                for &(dst, q, first) in &window {
                    for l in 0..L {
                        hit[l] |= (i[l] == q) as u32;
                    }
                    if dst == NONE {
                        continue;
                    }
                    let d = gi[dst + b * L..].first_chunk_mut::<L>().expect("tap inside the block");
                    // Whole blocks in registers (LLVM otherwise vectorises across the blocks,
                    // with gathers and scatters).
                    let mut v = *d;
                    for l in 0..L {
                        let sum = if first { T::ZERO } else { v[l] };
                        v[l] = T::pick(i[l] == q, accumulate(sum, g[l]), sum);
                    }
                    *d = v;
                }
                if counts {
                    invalid += hit.iter().filter(|&&h| h == 0).count() as u64;
                }
            }
        }
    }
    invalid
}

/// No window: see [`first_taps`].
const NONE: usize = usize::MAX;

/// For every input coordinate of axis `a`, the first output window that has it as a tap, or
/// [`NONE`].
fn first_taps(a: &crate::params::Axis) -> Vec<usize> {
    let mut first = vec![NONE; a.input];
    for o in (0..a.output).rev() {
        for k in 0..a.kernel {
            if let Some(i) = (o * a.stride + k * a.dilation).checked_sub(a.padding).filter(|&i| i < a.input) {
                first[i] = o;
            }
        }
    }
    first
}

/// A block of `grad_input` zeroed lazily, a little ahead of the element asked for: the scatter's
/// targets advance with the outputs, so every element is zeroed just before its first update.
struct Zeroed<'a, T> {
    gi: &'a mut [T],
    /// `gi[..done]` is zeroed.
    done: usize,
}

impl<T: Lane> Zeroed<'_, T> {
    /// Elements zeroed past the one asked for (16 KiB of f32).
    const AHEAD: usize = 4096;

    #[inline]
    fn get_mut(&mut self, e: usize) -> Option<&mut T> {
        if e >= self.done && e < self.gi.len() {
            let end = (e + Self::AHEAD).min(self.gi.len());
            self.gi[self.done..end].fill(T::ZERO);
            self.done = end;
        }
        self.gi.get_mut(e)
    }

    /// Zeroes what no update reached.
    fn finish(self) {
        self.gi[self.done..].fill(T::ZERO);
    }
}

/// One step of the reference's `GradientSum` (a sum in output order from +0.0 whose first NaN
/// event decides a NaN result), with the whole state in the stored value: a NaN there is final.
/// Without branches, so that it vectorises (the scalar scatter measured the same either way:
/// case B channels-first backward 9.73 and 9.67 ms).
#[inline(always)]
fn accumulate<T: Lane>(sum: T, g: T) -> T {
    let s = sum.add(g);
    let r = T::pick(s.is_nan(), T::INDEFINITE, s);
    let r = T::pick(g.is_nan(), g.nan_result(), r);
    T::pick(sum.is_nan(), sum, r)
}

/// Adds every gradient to the element its (valid) index names, in increasing output order. Tasks
/// own contiguous ranges of input units and walk every output unit whose windows can reach them.
///
/// Each task zeroes its block (channels-last in lanes: where no window reaches), even when the
/// caller's buffer is zero already: on fresh `calloc`
/// pages the scatter's read-modify-write would otherwise fault every page twice (a read fault
/// mapping the shared zero page, then a copy-on-write fault), which costs far more (case B: 215 ms
/// instead of 11 ms on the development machine) than writing the block once. It zeroes just ahead
/// of the writes ([`Zeroed`]), so that they find the lines in cache.
///
/// Returns what [`scatter_lanes`] counts (channels-last with a multiple of 8 channels), else 0.
fn scatter<T: Lane>(p: &Plan, go: &[T], idx: &[u32], gi: Dest<T>) -> u64 {
    let u = p.units();
    let a = u.axis;
    let c = p.lanes;
    input_unit_tasks(p, go, gi, |v_lo, v_hi, gi, e0| {
        // Channels-last, 8 or 16 channels at a time: case B channels-last backward 10.3 → 8.0–8.7 ms
        // on the development machine (2 threads, alternating runs, 2026-11-27).
        if c.is_multiple_of(8) {
            let rows = (v_lo * u.out_rows, (v_hi * u.out_rows).max(v_lo * u.out_rows));
            return scatter_lanes_task::dispatch(p.isa, p, rows.0, rows.1, go, idx, gi, e0);
        }
        let mut gi = Zeroed { gi, done: 0 };
        for v in v_lo..v_hi {
            let base = v / a.output * p.plane_in;
            let (go, idx) = (&go[v * u.out_len..][..u.out_len], &idx[v * u.out_len..][..u.out_len]);
            if c == 1 {
                for (&g, &i) in go.iter().zip(idx) {
                    if i != NO_INDEX
                        && let Some(x) = (base + i as usize).checked_sub(e0).and_then(|e| gi.get_mut(e))
                    {
                        *x = accumulate(*x, g);
                    }
                }
            } else {
                for (go, idx) in go.chunks_exact(c).zip(idx.chunks_exact(c)) {
                    for (lane, (&g, &i)) in go.iter().zip(idx).enumerate() {
                        if i != NO_INDEX
                            && let Some(x) =
                                ((base + i as usize) * c + lane).checked_sub(e0).and_then(|e| gi.get_mut(e))
                        {
                            *x = accumulate(*x, g);
                        }
                    }
                }
            }
        }
        gi.finish();
        0
    })
}

/// Cuts `gi` into tasks of contiguous input units (see [`Plan::units`]) and runs
/// `task(v_lo, v_hi, gi, e0)` for each on its piece of `gi`, which starts at element `e0`:
/// output units `v_lo..v_hi` are those whose windows can reach the piece. Returns the sum of what
/// the tasks return.
fn input_unit_tasks<T: Lane>(
    p: &Plan,
    go: &[T],
    gi: Dest<T>,
    task: impl Fn(usize, usize, &mut [T], usize) -> u64 + Sync + Send,
) -> u64 {
    let u = p.units();
    let a = u.axis;
    let in_units = p.groups * a.input;
    let ranges: Vec<_> = even_ranges(in_units, task_count(bytes(go, &gi), in_units)).collect();
    let pieces = gi.split_lengths(ranges.iter().map(|r| r.len() * u.in_len));
    run_tasks(ranges.into_iter().zip(pieces).collect(), |(range, gi)| {
        // A fresh vector's piece is zeroed here, whole, and then again just ahead of the adds
        // (the scatters walk outputs, not steps of the piece); only vectors below 32 MiB are
        // fresh, and the first zeroing is that task's own, in parallel, unlike `calloc`'s.
        let gi = gi.ready();
        let (first, last) = (range.start, range.end - 1);
        let v_lo = first / a.input * a.output + window_range(&a, first % a.input).0;
        let v_hi = last / a.input * a.output + window_range(&a, last % a.input).1 + 1;
        task(v_lo, v_hi, gi, range.start * u.in_len)
    })
}

/// Whether every window has a real tap on every axis (so that −1 is never a valid index, and an
/// index is valid exactly when it is one of the window's real taps).
fn every_window_real(p: &Plan) -> bool {
    let real = |t: &[(usize, usize)]| t.iter().all(|&(k0, k1)| k0 < k1);
    real(&p.d_taps)
        && real(&p.h_taps)
        && (0..p.w.output).all(|o| {
            let (k0, k1) = p.w_taps(o);
            k0 < k1
        })
}

/// Whether [`checked_scatter`] applies: channels-first, undilated W windows, and a real tap on
/// every axis in every window.
pub(super) fn checked_scatter_eligible(p: &Plan) -> bool {
    p.lanes == 1 && p.w.dilation == 1 && every_window_real(p)
}

/// Whether [`scatter`] counts the invalid indices itself, with no [`validate`] pass first:
/// channels-last with a multiple of 8 channels ([`scatter_lanes`], which compares every index
/// with every real tap of its window anyway), and a real tap on every axis in every window.
/// Measured on the development machine (2-core AMD EPYC Zen 4, 2026-12-07): the validation pass
/// was a quarter of case B channels-last backward's time (`perf`: 15 % of the samples against
/// 46 % for the scatter); without it, and with the scatter's loops turned block by block (a
/// block's indices, gradients and hits in registers through all the window's taps), case B
/// channels-last backward into a buffer took 6.4–6.9 ms instead of 7.9–9.1 (AVX-512) and 7.5–9.3
/// instead of 12.8–15.4 (AVX2), three alternations in separate processes.
pub(super) fn checked_lanes_eligible(p: &Plan) -> bool {
    p.lanes > 1 && p.lanes.is_multiple_of(8) && every_window_real(p)
}

/// [`scatter`] for channels-first data, with the indices checked on the way instead of in a
/// [`validate`] pass first ([`checked_scatter_row`]). Tasks own contiguous ranges of input units
/// and walk the output rows whose windows reach them; each output row is counted by the task that
/// owns its first real input row. Returns the number of invalid indices; `gi` holds garbage
/// (but only writes inside it) when that is not 0. Case B channels-first backward 11.5 →
/// 6.1–6.5 ms against the validation pass and [`scatter`] (development machine, 2 threads,
/// alternating with PyTorch's 7.0–7.4 ms, 2026-11-27).
fn checked_scatter<T: Lane>(p: &Plan, go: &[T], idx: &[u32], gi: Dest<T>) -> u64 {
    let u = p.units();
    input_unit_tasks(p, go, gi, |v_lo, v_hi, gi, e0| {
        let rows = (v_lo * u.out_rows, (v_hi * u.out_rows).max(v_lo * u.out_rows));
        checked_scatter_task::dispatch(p.isa, p, rows.0, rows.1, go, idx, gi, e0)
    })
}

multiversion!(checked_scatter_task<T>(p: &Plan, first: usize, end: usize, go: &[T], idx: &[u32], gi: &mut [T], e0: usize) -> u64);

/// [`checked_scatter`]'s task: output rows `first..end` in order; `gi` starts at element `e0`.
/// Each row first zeroes what of its input rows this task has not zeroed yet (so that the adds
/// find their lines in cache, and fresh `calloc` pages fault once, see [`scatter`]).
#[inline(always)]
fn checked_scatter_task<T: Lane>(
    p: &Plan,
    first: usize,
    end: usize,
    go: &[T],
    idx: &[u32],
    gi: &mut [T],
    e0: usize,
) -> u64 {
    let row_len = p.out_row_len();
    let len = gi.len();
    let (mut done, mut invalid) = (0, 0);
    let mut pos = Vec::with_capacity(8);
    let mut cursor = RowCursor::new(p, first..end);
    while let Some(r) = cursor.advance() {
        let rows = &cursor.rows[..];
        let (Some(&(top, top_pos)), Some(&(bottom, _))) = (rows.first(), rows.last()) else {
            unreachable!("checked_scatter_eligible: every window has a real row");
        };
        let reach = (bottom + p.w.input).saturating_sub(e0).min(len);
        if reach > done {
            gi[done..reach].fill(T::ZERO);
            done = reach;
        }
        // `gi` position of plane position 0 (wrapping below `e0`).
        let base = (top - top_pos as usize).wrapping_sub(e0);
        let (go, idx) = (&go[r * row_len..][..row_len], &idx[r * row_len..][..row_len]);
        let bad = match *rows {
            [(_, a)] => checked_scatter_row(p, &[a], base, go, idx, gi),
            [(_, a), (_, b)] => checked_scatter_row(p, &[a, b], base, go, idx, gi),
            [(_, a), (_, b), (_, c)] => checked_scatter_row(p, &[a, b, c], base, go, idx, gi),
            _ => {
                pos.clear();
                pos.extend(rows.iter().map(|&(_, q)| q));
                checked_scatter_row(p, &pos, base, go, idx, gi)
            }
        };
        if (e0..e0 + len).contains(&top) {
            invalid += bad;
        }
    }
    gi[done..].fill(T::ZERO);
    invalid
}

/// One output row of [`checked_scatter_task`], whose real input rows start at plane positions
/// `rows`: each index is valid when it is one of its window's real taps (a range test per row,
/// the W taps being consecutive), and each valid index inside `gi` takes its gradient. Returns
/// the number of invalid indices.
#[inline(always)]
fn checked_scatter_row<T: Lane>(p: &Plan, rows: &[u32], base: usize, go: &[T], idx: &[u32], gi: &mut [T]) -> u64 {
    let w = &p.w;
    let mut bad = 0;
    let mut one = |i: u32, g: T, first_tap: u32, taps: u32| {
        // Without branches on the rows: which row holds the index is random, and a branch per
        // row mispredicts.
        let ok = rows.iter().fold(0, |hit, &q| hit | (i.wrapping_sub(q.wrapping_add(first_tap)) < taps) as u32);
        bad += (ok ^ 1) as u64;
        let e = std::hint::select_unpredictable(ok != 0, base.wrapping_add(i as usize), usize::MAX);
        if let Some(x) = gi.get_mut(e) {
            // The sum's NaN rules only when a NaN is about ([`accumulate`] agrees otherwise).
            let s = x.add(g);
            *x = if s.is_nan() { accumulate(*x, g) } else { s };
        }
    };
    let edge = |o: usize| {
        let (k0, k1) = taps(w, o);
        ((o * w.stride + k0 - w.padding) as u32, (k1 - k0) as u32)
    };
    for o in 0..p.w_lo {
        let (t, n) = edge(o);
        one(idx[o], go[o], t, n);
    }
    // (No interior when the windows are wider than the row: then `w_lo·s` may lie in the padding.)
    let mut t = (p.w_lo * w.stride).wrapping_sub(w.padding) as u32;
    for (&i, &g) in idx[p.w_lo..p.w_hi].iter().zip(&go[p.w_lo..p.w_hi]) {
        one(i, g, t, w.kernel as u32);
        t = t.wrapping_add(w.stride as u32);
    }
    for o in p.w_hi..w.output {
        let (t, n) = edge(o);
        one(idx[o], go[o], t, n);
    }
    bad
}
