//! The fast CPU path: the results of [`super::reference`], bit for bit, from kernels that
//! vectorise and (with the `parallel` feature) run on rayon's thread pool.
//!
//! - Forward: tasks are ranges of output rows `(group, od, oh)`. A row's windows share their
//!   input rows (the real `(kd, kh)` taps), so the kernels keep the reference's window scan (the
//!   first real tap, then `v > best || isnan(v)` for every later tap, in row-major order) but run
//!   it for a whole row at once, one pass per input row: across `ow` in channels-first (fixed
//!   kernels for `k2 s2` and `k3 s2`, strided passes otherwise), across `(ow, c)` for a few
//!   channels, across the contiguous channels otherwise (in register blocks of 16, 8 or 4
//!   channels, prefetching large inputs ahead). Windows cut by padding at either end of a row go
//!   through a scalar scan. Selects
//!   are done on the bits (see `lane.rs`). Short exactly tiled `k2 s2` rows go by two-row
//!   chunks of 16 outputs instead (`forward::pairs_task`), and exactly tiled channels-first rows
//!   of large passes are written with non-temporal stores, a few rows at a time ([`stream`]).
//! - Backward, windows that tile the input (`k == s`, no dilation): every output writes its whole
//!   window (`gradient_term(g)` at its index, +0.0 elsewhere: what the reference's gather gives
//!   when one window reaches each element) and checks its index on the way; no zero fill, no
//!   second pass. Few channels write zeros, then one element per output; short channels-first
//!   rows of 2-tap windows go by chunks of 16 outputs (`backward::tiled_pairs_task`).
//! - Backward, any other geometry: a vectorised pass validates every index against its window's
//!   taps (the reference's count), then a scatter adds every gradient to its input element in
//!   increasing output order, as the reference's gather sums them (with its NaN rules). The
//!   scatter is split by input rows, not outputs: each task owns a contiguous block of
//!   `grad_input` and walks, in order, every output whose window can reach that block, keeping the
//!   hits inside it. No atomics, and the order of the additions is the reference's.
//!
//! Element `(group, pos, lane)` lives at `(group * plane + pos) * lanes + lane` (see
//! [`Geometry::groups_and_lanes`]): channels-first rows are `ow`-contiguous, channels-last rows
//! are `(ow, c)`-contiguous, and both share the row bookkeeping here.
//!
//! The kernels are plain, safe slice code that LLVM vectorises. On x86-64 each task body is also
//! compiled for AVX2 and for AVX-512 and picked at run time ([`multiversion!`], [`Isa`]): the
//! call of those `#[target_feature]` builds, after `is_x86_feature_detected!`, is one of the five
//! `unsafe` uses of the CPU path (the others: `madvise` for huge pages in [`huge_pages`], the
//! non-temporal stores of [`stream`], the prefetch hints of [`lane::prefetch`], and the
//! allocating calls' vectors below 32 MiB, which the tasks zero themselves instead of `calloc`,
//! in [`dest`]). It is there because it measurably matters against PyTorch, whose CPU kernels
//! use AVX2 or AVX-512 where they can: on the development machine (2-core AMD EPYC, AVX-512)
//! AVX2 took case C channels-last forward from 2.5 ms to 1.2 ms, E channels-last from 0.14 to
//! 0.08 ms, G channels-last from 51 to 32 ms; AVX-512 helps some channels-last cases
//! and hurts some channels-first ones (see [`Isa::for_geometry`]). `WGPOOL_CPU_ISA=baseline`,
//! `avx2` or `avx512` caps the choice, for comparisons.

mod backward;
mod dest;
mod forward;
mod lane;
mod stream;

use half::f16;

use dest::{Dest, fresh_vec};

use super::{Pooled, check_backward_lens, check_len};
use crate::element::{DType, Element};
use crate::error::{Error, Result};
use crate::params::{Axis, Geometry, PoolSpec};

/// Forward pass: values and argmax indices, in the layout of `spec`.
pub fn forward<T: Element>(spec: &PoolSpec, input: &[T]) -> Result<Pooled<T>> {
    let g = spec.validate()?;
    check_len("input", g.input_len(), input.len())?;
    let isa = Isa::for_geometry(&g);
    let (values, indices) = fresh_vec(g.output_len(), |values| {
        fresh_vec(g.output_len(), |indices| run_forward(&g, input, values, Some(indices), isa)).0
    });
    Ok(Pooled { values, indices })
}

/// Values-only forward pass (inference: no indices): the values of
/// [`forward`](crate::cpu::forward), bit for bit, without writing the indices out (each task
/// keeps them in a small buffer of its own).
pub fn forward_values<T: Element>(spec: &PoolSpec, input: &[T]) -> Result<Vec<T>> {
    let g = spec.validate()?;
    check_len("input", g.input_len(), input.len())?;
    let isa = Isa::for_geometry(&g);
    Ok(fresh_vec(g.output_len(), |values| run_forward(&g, input, values, None, isa)).0)
}

/// [`forward_values`] into a caller-provided buffer (every element is overwritten).
pub fn forward_values_into<T: Element>(spec: &PoolSpec, input: &[T], values: &mut [T]) -> Result<()> {
    let g = spec.validate()?;
    check_len("input", g.input_len(), input.len())?;
    check_len("values", g.output_len(), values.len())?;
    run_forward(&g, input, Dest::init(values), None, Isa::for_geometry(&g));
    Ok(())
}

/// Forward pass into caller-provided buffers (every element is overwritten).
pub fn forward_into<T: Element>(spec: &PoolSpec, input: &[T], values: &mut [T], indices: &mut [u32]) -> Result<()> {
    let g = spec.validate()?;
    check_len("input", g.input_len(), input.len())?;
    check_len("values", g.output_len(), values.len())?;
    check_len("indices", g.output_len(), indices.len())?;
    run_forward(&g, input, Dest::init(values), Some(Dest::init(indices)), Isa::for_geometry(&g));
    Ok(())
}

/// Backward pass: the input gradient, or [`Error::InvalidIndices`] with the reference's count.
pub fn backward<T: Element>(spec: &PoolSpec, grad_output: &[T], indices: &[u32]) -> Result<Vec<T>> {
    let g = spec.validate()?;
    check_backward_lens(&g, grad_output.len(), indices.len())?;
    let isa = Isa::for_geometry(&g);
    match fresh_vec(g.input_len(), |grad_input| run_backward(&g, grad_output, indices, grad_input, isa)) {
        (grad_input, 0) => Ok(grad_input),
        (_, count) => Err(Error::InvalidIndices { count }),
    }
}

/// Backward pass into a caller-provided buffer (every element is overwritten; on
/// [`Error::InvalidIndices`] its contents are unspecified).
pub fn backward_into<T: Element>(
    spec: &PoolSpec,
    grad_output: &[T],
    indices: &[u32],
    grad_input: &mut [T],
) -> Result<()> {
    let g = spec.validate()?;
    check_backward_lens(&g, grad_output.len(), indices.len())?;
    check_len("grad_input", g.input_len(), grad_input.len())?;
    match run_backward(&g, grad_output, indices, Dest::init(grad_input), Isa::for_geometry(&g)) {
        0 => Ok(()),
        count => Err(Error::InvalidIndices { count }),
    }
}

/// Dispatches on the element type: the kernels are written for [`lane::Lane`], which `Element`
/// (sealed, f32 or f16) cannot name, so the slices are reinterpreted as what they are.
/// `indices` `None`: values only.
fn run_forward<T: Element>(g: &Geometry, input: &[T], values: Dest<T>, indices: Option<Dest<u32>>, isa: Isa) {
    use bytemuck::cast_slice;
    // Nothing to compute (an empty batch): no plan, whose tables grow with the plane.
    if g.output_len() == 0 {
        return;
    }
    let mut p = Plan::new(g, isa);
    // Measured on the development machine (2 threads, 2026-11-27, alternating runs): streaming
    // took case A channels-first forward from 3.75 to 3.13 ms and G from 37.5 to 33.5 ms, but
    // made F1 (one input row per output row) 1.16 → 1.37 ms, B (overlapping) 6.0 → 6.8 ms,
    // and channels-last G 38 → 50 ms, A 4.1 → 4.5 ms: only exactly tiled channels-first windows
    // of several input rows stream.
    // Into a fresh vector too, whose pieces the streaming copies initialise (no zeroing first,
    // [`dest::Dest::stream_from`]): case A channels-first allocating forward 6.96–7.21 → 3.55–3.76 ms,
    // as fast as into a caller's buffer (development machine, 2-core AMD EPYC Zen 4, 2026-12-07,
    // three alternations in separate processes); case C's (the short rows of `forward::pairs_task`)
    // 0.94–1.48 → 1.00–1.16 ms, six alternations of seven, and 1.0 → 0.83 ms once the copies'
    // count was kept per task ([`dest::Tally`]). (Zeroing each step first and then streaming had
    // been slower than not streaming: 15.1–15.8 against 13.3–13.5 ms on a 2-core Intel Xeon.)
    let rows_per_window = g.axes[0].kernel * g.axes[1].kernel;
    p.values_only = indices.is_none();
    let out_bytes = values.len() * (size_of::<T>() + if p.values_only { 0 } else { 4 });
    // By the bytes of the whole pass, not of its outputs alone ([`stream::THRESHOLD`]).
    p.stream = p.lanes == 1 && p.exact_tiling() && rows_per_window > 1 && streams(size_of_val(input) + out_bytes);
    // Measured on the development machine (2 threads, 2026-11-27, runs alternating in one
    // process): prefetching 2 KiB ahead took channels-last case A forward 3.85 → 3.26 ms, B 4.97
    // → 3.89, C 1.03 → 0.82, G 37.1 → 35.3 (1.5–3 KiB all gained), but E (6.4 MB input, mostly
    // cached) 0.084 → 0.096, and channels-first rows lost (A 3.73 → 4.45 ms): the hardware's
    // prefetchers follow those.
    if p.lanes > 1 && prefetches(size_of_val(input)) {
        p.prefetch = PREFETCH_AHEAD;
    }
    match T::DTYPE {
        DType::F32 => forward::run::<f32>(&p, cast_slice(input), values.cast(), indices),
        DType::F16 => forward::run::<f16>(&p, cast_slice(input), values.cast(), indices),
    }
}

/// Returns the number of invalid indices.
fn run_backward<T: Element>(g: &Geometry, grad_output: &[T], indices: &[u32], grad_input: Dest<T>, isa: Isa) -> u64 {
    use bytemuck::cast_slice;
    if g.input_len() == 0 {
        return 0;
    }
    // (Streaming the tiled backward's rows, as the forward does, made case G channels-first
    // backward 52 → 95 ms on the development machine, 2026-11-27; it does not stream.)
    let p = Plan::new(g, isa);
    match T::DTYPE {
        DType::F32 => backward::run::<f32>(g, &p, cast_slice(grad_output), indices, grad_input.cast()),
        DType::F16 => backward::run::<f16>(g, &p, cast_slice(grad_output), indices, grad_input.cast()),
    }
}

/// How far ahead the channels-last forward kernels prefetch their input rows, in bytes.
const PREFETCH_AHEAD: usize = 2048;
/// Inputs smaller than this are not prefetched (they are mostly in the caches already).
const PREFETCH_MIN_INPUT: usize = 8 << 20;

/// Whether the channels-last forward prefetches an input of `bytes` (the unit tests force it).
fn prefetches(bytes: usize) -> bool {
    #[cfg(test)]
    if tests::FORCE_PREFETCH.get() {
        return true;
    }
    bytes >= PREFETCH_MIN_INPUT
}

/// Whether a pass that moves `bytes` (input and outputs) writes its outputs with non-temporal
/// stores ([`stream::THRESHOLD`]; the unit tests lower it).
fn streams(bytes: usize) -> bool {
    #[cfg(test)]
    if let Some(threshold) = tests::STREAM_THRESHOLD.get() {
        return bytes >= threshold;
    }
    bytes >= stream::THRESHOLD
}

/// Asks Linux to back a large fresh allocation with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`, which systems in the default `madvise` mode need), so that its
/// pages fault in 2 MiB at a time instead of 4 KiB: on the development machine (a VM, where a
/// fault costs about 0.3–0.8 ms per MB) case A's allocating forward went from 20 to 7 ms and
/// backward from 32 to 7 ms, 2026-11-27. Nothing anywhere else.
fn huge_pages<T>(v: &[T]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let (start, bytes) = (v.as_ptr() as usize, size_of_val(v));
        if bytes < 8 << 20 {
            return;
        }
        let first = start.next_multiple_of(PAGE);
        let len = (start + bytes - first) / PAGE * PAGE;
        // SAFETY: `first..first + len` is whole pages inside `v`'s allocation; MADV_HUGEPAGE only
        // changes how the kernel backs them, not their contents. An error (no THP in this kernel)
        // leaves everything as it was.
        unsafe {
            libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// The instruction set the kernels are compiled for, chosen at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// The build's target (SSE2 on a default x86-64 build).
    Baseline,
    /// x86-64 with AVX2, FMA, BMI1/2, LZCNT and POPCNT.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// The above plus AVX-512 F, BW, DQ and VL (512-bit vectors and mask registers).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The best the running CPU has (`WGPOOL_CPU_ISA=baseline|avx2|avx512` caps it, for
    /// comparisons).
    fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let cap = std::env::var("WGPOOL_CPU_ISA").ok();
            let all = Isa::available();
            let capped = all.iter().rposition(|isa| cap.as_deref() == Some(isa.name()));
            all[capped.unwrap_or(all.len() - 1)]
        })
    }

    /// The build for `g`: the best the CPU has, except that channels-first data gets the AVX2
    /// build where the CPU has AVX-512, unless `WGPOOL_CPU_ISA=avx512` asks for it. Measured on
    /// the development machine (2-core AMD EPYC Zen 5, 2 threads, 2026-11-27, alternating runs):
    /// AVX-512 took channels-last case D forward from 0.44 to 0.23 ms and B backward from 12.6 to
    /// 10.1 ms, but channels-first F3 forward from 0.75 to 1.0–1.3 ms (its 16-output rows:
    /// one 512-bit vector, where LLVM's 512-bit loop wants two), and was within the noise on the
    /// other channels-first cases.
    fn for_geometry(g: &Geometry) -> Isa {
        let isa = Isa::detect();
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512
            && g.groups_and_lanes().1 == 1
            && std::env::var("WGPOOL_CPU_ISA").ok().as_deref() != Some("avx512")
        {
            return Isa::Avx2;
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = g;
        isa
    }

    /// Every instruction set this CPU can run, from the least to the most capable.
    fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut all = vec![Isa::Baseline];
        #[cfg(target_arch = "x86_64")]
        {
            use std::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("bmi1") && has!("bmi2") && has!("lzcnt") && has!("popcnt") {
                all.push(Isa::Avx2);
                // `avx512f` implies `f16c` to the compiler: a VM that hides F16C gets the AVX2 build.
                if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") && has!("f16c") {
                    all.push(Isa::Avx512);
                }
            }
        }
        all
    }

    fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512",
        }
    }

    /// Outputs one iteration of the vectorised loops takes (f32: 4 lanes, unrolled twice, for
    /// SSE2; 8 lanes, twice, for AVX2; 16 for AVX-512, where 32 made 16-output rows take a padded
    /// copy and case F3 backward 1.0 → 1.7 ms). Short channels-first rows are padded to a
    /// multiple of it, so that no output goes through a loop's scalar remainder, whose selects
    /// LLVM turns into branches (mispredicted half the time on random data): case E
    /// channels-first forward went from 1.3 ms to 0.8 ms that way (SSE2).
    fn unit(self) -> usize {
        match self {
            Isa::Baseline => 8,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 16,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 16,
        }
    }
}

/// Declares the AVX2 and AVX-512 builds of a task function and `<name>::dispatch(isa, args...)`, which runs
/// the build for `isa`. The function and everything it calls must be `#[inline(always)]`: a
/// `#[target_feature]` function compiles what is inlined into it for its features, nothing else.
macro_rules! multiversion {
    ($name:ident<$t:ident>($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
            #[allow(clippy::too_many_arguments)]
            fn avx2<$t: Lane>($($arg: $ty),*) -> $ret {
                super::$name::<$t>($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,popcnt,avx512f,avx512bw,avx512dq,avx512vl")]
            #[allow(clippy::too_many_arguments)]
            fn avx512<$t: Lane>($($arg: $ty),*) -> $ret {
                super::$name::<$t>($($arg),*)
            }

            #[inline]
            #[allow(clippy::too_many_arguments)]
            pub(super) fn dispatch<$t: Lane>(isa: Isa, $($arg: $ty),*) -> $ret {
                match isa {
                    // SAFETY: `Isa::Avx2` comes from `Isa::detect`, which found every feature
                    // `avx2` is compiled for on the running CPU.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { avx2::<$t>($($arg),*) },
                    // SAFETY: as above, for every feature `avx512` is compiled for.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { avx512::<$t>($($arg),*) },
                    Isa::Baseline => super::$name::<$t>($($arg),*),
                }
            }
        }
    };
}
use multiversion;

/// The real taps of window `o` on axis `a`: kernel offsets `k0..k1` (empty when `k0 == k1`).
/// Tap `k` reads input coordinate `o·s + k·d − p`.
#[inline(always)]
fn taps(a: &Axis, o: usize) -> (usize, usize) {
    let start = o * a.stride;
    let k0 = if start >= a.padding { 0 } else { (a.padding - start).div_ceil(a.dilation) };
    let end = a.input + a.padding;
    let k1 = if start >= end { 0 } else { (end - start).div_ceil(a.dilation).min(a.kernel) };
    (k0, k1.max(k0))
}

/// The output windows on axis `a` whose span holds input coordinate `i`: `lo..=hi`, empty when
/// `lo > hi` (the reference's `candidate_windows`).
#[inline]
fn window_range(a: &Axis, i: usize) -> (usize, usize) {
    let z = i + a.padding;
    let eff = a.effective_kernel();
    let lo = if z + 1 > eff { (z + 1 - eff).div_ceil(a.stride) } else { 0 };
    (lo, (z / a.stride).min(a.output - 1))
}

/// The resolved geometry in the form the kernels use.
#[derive(Debug, Clone)]
struct Plan {
    lanes: usize,
    groups: usize,
    d: Axis,
    h: Axis,
    w: Axis,
    plane_in: usize,
    /// Outputs `w_lo..w_hi` of a row have all their W taps inside the input ("interior").
    w_lo: usize,
    w_hi: usize,
    /// [`taps`] of every output coordinate of D and H.
    d_taps: Vec<(usize, usize)>,
    h_taps: Vec<(usize, usize)>,
    /// The instruction set of the kernels, and its [`Isa::unit`].
    isa: Isa,
    unit: usize,
    /// Whether the kernels that can write their outputs with non-temporal stores do
    /// ([`stream`]), into a caller's buffer or a fresh vector; set by the passes from their size.
    stream: bool,
    /// A values-only forward: the indices go to a small buffer per task and are dropped.
    values_only: bool,
    /// How many bytes ahead of the window being computed the kernels that prefetch their input
    /// ([`lane::prefetch`]) do so; 0: they do not. Set by the forward pass.
    prefetch: usize,
}

impl Plan {
    fn new(g: &Geometry, isa: Isa) -> Self {
        let (groups, lanes) = g.groups_and_lanes();
        let [d, h, w] = g.axes;
        let w_lo = w.padding.div_ceil(w.stride).min(w.output);
        let reach = (w.kernel - 1) * w.dilation; // last tap of a window, from its first
        let w_hi = if w.input + w.padding > reach {
            ((w.input + w.padding - 1 - reach) / w.stride + 1).min(w.output)
        } else {
            0
        };
        let table = |a: &Axis| (0..a.output).map(|o| taps(a, o)).collect();
        Plan {
            lanes,
            groups,
            d,
            h,
            w,
            plane_in: g.plane_in(),
            w_lo,
            w_hi: w_hi.max(w_lo),
            d_taps: table(&d),
            h_taps: table(&h),
            isa,
            unit: isa.unit(),
            stream: false,
            values_only: false,
            prefetch: 0,
        }
    }

    /// Whether the windows tile the input exactly: no padding, and every window whole.
    fn exact_tiling(&self) -> bool {
        [&self.d, &self.h, &self.w]
            .iter()
            .all(|a| a.padding == 0 && a.dilation == 1 && a.kernel == a.stride && a.output * a.kernel == a.input)
    }

    /// Output rows `(group, od, oh)`.
    fn out_rows(&self) -> usize {
        self.groups * self.d.output * self.h.output
    }

    /// Elements of one output row.
    fn out_row_len(&self) -> usize {
        self.w.output * self.lanes
    }

    /// The real taps of W window `o`, without a division for interior windows.
    #[inline(always)]
    fn w_taps(&self, o: usize) -> (usize, usize) {
        if (self.w_lo..self.w_hi).contains(&o) { (0, self.w.kernel) } else { taps(&self.w, o) }
    }

    /// The axis the backward pass splits `grad_input` along: D if it has more than one input or
    /// output coordinate, else H. Every axis before it has one input and one output coordinate,
    /// so a unit `(group, i)` of that axis is a contiguous block of the input, and a unit
    /// `(group, o)` a contiguous block of the output.
    fn units(&self) -> Units {
        let (axis, in_len, out_len) = if self.d.input > 1 || self.d.output > 1 {
            (self.d, self.h.input * self.w.input, self.h.output * self.w.output)
        } else {
            (self.h, self.w.input, self.w.output)
        };
        Units { axis, in_len: in_len * self.lanes, out_len: out_len * self.lanes, out_rows: out_len / self.w.output }
    }
}

/// Walks output rows `(group, od, oh)` in order, listing the real input rows of each (see
/// [`RowCursor::rows`]). A cursor rather than a closure-taking loop, so that the kernels stay in
/// the body of the multiversioned task functions (closures would be compiled separately, for the
/// baseline target only).
struct RowCursor<'p> {
    p: &'p Plan,
    next: usize,
    end: usize,
    group: usize,
    od: usize,
    oh: usize,
    /// The element offset in the input and the plane position of the first element of each real
    /// input row of the current output row, in the reference's scan order (kd, then kh).
    rows: Vec<(usize, u32)>,
}

impl<'p> RowCursor<'p> {
    #[inline(always)]
    fn new(p: &'p Plan, range: std::ops::Range<usize>) -> Self {
        let (d, h) = (&p.d, &p.h);
        let (oh, od, group) =
            (range.start % h.output, range.start / h.output % d.output, range.start / h.output / d.output);
        RowCursor { p, next: range.start, end: range.end, group, od, oh, rows: Vec::with_capacity(d.kernel * h.kernel) }
    }

    /// Moves to the next output row and returns its number, [`RowCursor::rows`] listing its
    /// input rows.
    #[inline(always)]
    fn advance(&mut self) -> Option<usize> {
        if self.next == self.end {
            return None;
        }
        let r = self.next;
        let (p, d, h, w) = (self.p, &self.p.d, &self.p.h, &self.p.w);
        let (od, oh, group) = (self.od, self.oh, self.group);
        self.rows.clear();
        let ((d0, d1), (h0, h1)) = (p.d_taps[od], p.h_taps[oh]);
        for kd in d0..d1 {
            let id = od * d.stride + kd * d.dilation - d.padding;
            for kh in h0..h1 {
                let ih = oh * h.stride + kh * h.dilation - h.padding;
                let pos = (id * h.input + ih) * w.input;
                self.rows.push(((group * p.plane_in + pos) * p.lanes, pos as u32));
            }
        }
        self.next += 1;
        self.oh += 1;
        if self.oh == h.output {
            self.oh = 0;
            self.od += 1;
            if self.od == d.output {
                self.od = 0;
                self.group += 1;
            }
        }
        Some(r)
    }
}

/// See [`Plan::units`].
#[derive(Debug, Clone, Copy)]
struct Units {
    axis: Axis,
    /// Elements of one input unit.
    in_len: usize,
    /// Elements of one output unit.
    out_len: usize,
    /// Output rows of one output unit.
    out_rows: usize,
}

/// How many tasks to cut `bytes` of work into: one per 128 KiB, at most four per thread (rayon
/// balances them), at most `max`.
fn task_count(bytes: usize, max: usize) -> usize {
    #[cfg(feature = "parallel")]
    let threads = rayon::current_num_threads();
    #[cfg(not(feature = "parallel"))]
    let threads = 1;
    if threads <= 1 { 1 } else { (bytes >> 17).clamp(1, 4 * threads).min(max.max(1)) }
}

/// Runs every task (on rayon's pool with the `parallel` feature) and sums what they return.
fn run_tasks<I: Send>(tasks: Vec<I>, f: impl Fn(I) -> u64 + Sync + Send) -> u64 {
    #[cfg(feature = "parallel")]
    if tasks.len() > 1 {
        use rayon::prelude::*;
        return tasks.into_par_iter().map(f).sum();
    }
    tasks.into_iter().map(f).sum()
}

/// `0..n` cut into `parts` nearly equal consecutive ranges (none empty when `parts <= n`).
fn even_ranges(n: usize, parts: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts).map(move |i| i * n / parts..(i + 1) * n / parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// `run_forward` with `isa` over poisoned outputs against the reference's `want`.
    /// Runs the forward three times: as it chooses, then prefetching whatever the input's size,
    /// then into fresh vectors (as the allocating `forward` does).
    fn assert_forward(g: &Geometry, input: &[f32], want: &Pooled<f32>, isa: Isa, context: &str) {
        for force in [false, true] {
            FORCE_PREFETCH.set(force);
            let (mut values, mut indices) = (vec![f32::NAN; g.output_len()], vec![7; g.output_len()]);
            run_forward(g, input, Dest::init(&mut values), Some(Dest::init(&mut indices)), isa);
            // Values only, into a poisoned buffer.
            let mut only = vec![f32::NAN; g.output_len()];
            run_forward(g, input, Dest::init(&mut only), None, isa);
            FORCE_PREFETCH.set(false);
            assert_eq!(bits(&values), bits(&want.values), "{context}, prefetch forced: {force}");
            assert_eq!(indices, want.indices, "{context}, prefetch forced: {force}");
            assert_eq!(bits(&only), bits(&want.values), "{context}, values only, prefetch forced: {force}");
        }
        let n = g.output_len();
        let (values, indices) = fresh_vec(n, |v| fresh_vec(n, |i| run_forward(g, input, v, Some(i), isa)).0);
        assert_eq!(bits(&values), bits(&want.values), "{context}, fresh vectors");
        assert_eq!(indices, want.indices, "{context}, fresh vectors");
        let (only, ()) = fresh_vec(n, |v| run_forward(g, input, v, None, isa));
        assert_eq!(bits(&only), bits(&want.values), "{context}, values only, fresh vector");
    }

    /// `run_backward` with `isa` into a poisoned buffer, and again into a fresh vector (as the
    /// allocating `backward` does), which must agree: the count, and the bits when it is 0.
    /// Returns the first result and the count.
    fn backward_twice(g: &Geometry, grad: &[f32], idx: &[u32], isa: Isa, context: &str) -> (Vec<f32>, u64) {
        let mut gi = vec![f32::NAN; g.input_len()];
        let invalid = run_backward(g, grad, idx, Dest::init(&mut gi), isa);
        let (fresh, fresh_invalid) = fresh_vec(g.input_len(), |d| run_backward(g, grad, idx, d, isa));
        assert_eq!(fresh_invalid, invalid, "{context}, fresh vector");
        if invalid == 0 {
            assert_eq!(bits(&fresh), bits(&gi), "{context}, fresh vector");
        }
        (gi, invalid)
    }

    /// A seeded generator of numbers in `0..n` (an LCG), for the random test data.
    fn numbers(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        }
    }

    thread_local! {
        /// Replaces [`stream::THRESHOLD`] on this thread.
        pub(super) static STREAM_THRESHOLD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
        /// Makes the forward prefetch whatever its input's size, on this thread.
        pub(super) static FORCE_PREFETCH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    use crate::params::InputShape;
    use crate::params::PoolParams;

    #[test]
    fn taps_match_the_reference_scan() {
        for input in 1..7 {
            for kernel in 1..5 {
                for stride in 1..4 {
                    for dilation in 1..4 {
                        for padding in 0..=kernel / 2 {
                            for ceil in [false, true] {
                                let spec = PoolSpec::new(
                                    InputShape::new(1, 1, [input]),
                                    PoolParams::new([kernel])
                                        .stride([stride])
                                        .padding([padding])
                                        .dilation([dilation])
                                        .ceil_mode(ceil),
                                );
                                let Ok(g) = spec.validate() else { continue };
                                let a = g.axes[2];
                                for o in 0..a.output {
                                    let want: Vec<usize> = (0..kernel)
                                        .filter(|k| {
                                            let z = o * stride + k * dilation;
                                            z >= padding && z < input + padding
                                        })
                                        .collect();
                                    let (k0, k1) = taps(&a, o);
                                    assert_eq!((k0..k1).collect::<Vec<_>>(), want, "{a:?} o={o}");
                                }
                                let p = Plan::new(&g, Isa::Baseline);
                                for o in 0..a.output {
                                    let interior = taps(&a, o) == (0, kernel);
                                    assert_eq!(interior, (p.w_lo..p.w_hi).contains(&o), "{a:?} o={o}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The `_into` variants overwrite whatever the buffers held (the scatter zeroes its blocks),
    /// and the allocating calls, which write into vectors that no one zeroed first (see
    /// `dest.rs`), give the same results, and the same count of spoiled indices. Small enough
    /// for Miri (about 3 minutes): `MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-ignore-leaks" cargo
    /// +nightly miri test --lib -- buffers dest` (stacked borrows flags crossbeam-epoch, under
    /// rayon; rayon's threads outlive the test).
    #[test]
    fn into_and_allocating_variants_fill_their_buffers() {
        use crate::params::Layout;
        let k2 = PoolParams::new([2, 2]);
        let overlapping = PoolParams::new([3, 3]).stride([1, 2]).padding([1, 1]);
        for (c, params) in [(1, k2.clone()), (3, k2.clone()), (16, k2), (1, overlapping.clone()), (5, overlapping)] {
            for layout in [Layout::ChannelsFirst, Layout::ChannelsLast] {
                let spec = PoolSpec::new(InputShape::new(2, c, [10, 14]), params.clone()).layout(layout);
                let g = spec.validate().unwrap();
                let input: Vec<f32> = (0..g.input_len()).map(|i| ((i * 7919) % 1013) as f32 - 500.0).collect();
                let want = super::super::reference::forward(&spec, &input).unwrap();
                let (mut values, mut indices) = (vec![f32::NAN; g.output_len()], vec![7; g.output_len()]);
                forward_into(&spec, &input, &mut values, &mut indices).unwrap();
                assert_eq!((values.clone(), indices.clone()), (want.values, want.indices), "{spec:?}");
                let want = super::super::reference::backward(&spec, &values, &indices).unwrap();
                let mut grad_input = vec![f32::NAN; g.input_len()];
                backward_into(&spec, &values, &indices, &mut grad_input).unwrap();
                assert_eq!(grad_input, want, "{spec:?}");
                let pooled = forward(&spec, &input).unwrap();
                assert_eq!((&pooled.values, &pooled.indices), (&values, &indices), "{spec:?}");
                assert_eq!(backward(&spec, &values, &indices).unwrap(), want, "{spec:?}");
                let mut spoiled = indices.clone();
                spoiled[g.output_len() / 2] = u32::MAX - 1;
                let want = super::super::reference::backward(&spec, &values, &spoiled).unwrap_err();
                assert_eq!(backward(&spec, &values, &spoiled).unwrap_err().to_string(), want.to_string(), "{spec:?}");
            }
        }
    }

    /// Both builds of the kernels (baseline and, where the CPU has it, AVX2) against the
    /// reference on random geometries; the integration tests only reach the detected one.
    #[test]
    fn every_isa_matches_the_reference() {
        use crate::params::Layout;
        let mut next = numbers(0x1234_5678_9abc_def0u64);
        for case in 0..300 {
            let rank = 1 + next(3);
            let k: Vec<usize> = (0..rank).map(|_| 1 + next(3)).collect();
            let params = PoolParams::new(k.clone())
                .stride((0..rank).map(|_| 1 + next(3)).collect::<Vec<_>>())
                .padding(k.iter().map(|&k| next(k / 2 + 1)).collect::<Vec<_>>())
                .dilation((0..rank).map(|_| 1 + next(2)).collect::<Vec<_>>())
                .ceil_mode(next(2) == 1);
            let spatial: Vec<usize> = (0..rank).map(|_| 1 + next([40, 24, 10][rank - 1])).collect();
            let channels = [1, 3, 8, 16, 20][next(5)];
            let layout = if case % 2 == 0 { Layout::ChannelsFirst } else { Layout::ChannelsLast };
            let spec = PoolSpec::new(InputShape::new(1 + next(2), channels, spatial), params).layout(layout);
            let Ok(g) = spec.validate() else { continue };
            let input: Vec<f32> = (0..g.input_len())
                .map(|_| match next(20) {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 => -0.0,
                    _ => next(7) as f32 - 3.0,
                })
                .collect();
            let want = super::super::reference::forward(&spec, &input).unwrap();
            let grad_output: Vec<f32> = (0..g.output_len()).map(|_| next(9) as f32 - 4.0).collect();
            let want_gi = super::super::reference::backward(&spec, &grad_output, &want.indices).unwrap();
            for isa in Isa::available() {
                assert_forward(&g, &input, &want, isa, &format!("{isa:?} {spec:?}"));
                let (grad_input, invalid) =
                    backward_twice(&g, &grad_output, &want.indices, isa, &format!("{isa:?} {spec:?}"));
                assert_eq!(invalid, 0, "{isa:?} {spec:?}");
                assert_eq!(bits(&grad_input), bits(&want_gi), "{isa:?} {spec:?}");
            }
        }
    }

    /// The short-row kernels (`pairs_task` forward, `tiled_pairs_task` backward) and the
    /// streaming forward rows on exactly tiled shapes around their chunk widths and thresholds,
    /// over several tasks (the chunks that run past a row, and the one-by-one windows at the end of
    /// a task), with ties, NaNs and infinities, and spoiled indices.
    #[test]
    fn short_rows_match_the_reference() {
        let mut next = numbers(0x0dd_ba11u64);
        let mut specs = vec![];
        for ow in [1, 2, 7, 8, 15, 16, 17, 28, 31, 32, 33, 64, 65] {
            for (oh, groups) in [(1, 3), (3, 6000 / ow + 1), (5, 2)] {
                specs.push(PoolSpec::new(InputShape::new(1, groups, [2 * oh, 2 * ow]), PoolParams::new([2, 2])));
            }
            for (od, oh, groups) in [(2, 2, 1500 / ow + 1), (1, 3, 2)] {
                let shape = InputShape::new(1, groups, [2 * od, 2 * oh, 2 * ow]);
                specs.push(PoolSpec::new(shape, PoolParams::new([2, 2, 2])));
                // 1-tap D windows: the 2-D kernels, one (group, d) slice at a time.
                let shape = InputShape::new(1, groups, [3 * od, 2 * oh, 2 * ow]);
                specs.push(PoolSpec::new(shape, PoolParams::new([1, 2, 2])));
            }
        }
        // Every spec twice: the second time, the forward streams its rows whatever their size.
        let specs = specs.iter().map(|s| (s, None)).chain(specs.iter().map(|s| (s, Some(0))));
        for (spec, stream_threshold) in specs {
            STREAM_THRESHOLD.set(stream_threshold);
            let g = spec.validate().unwrap();
            let input: Vec<f32> = (0..g.input_len())
                .map(|_| match next(12) {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 => -0.0,
                    _ => next(4) as f32,
                })
                .collect();
            let want = super::super::reference::forward(spec, &input).unwrap();
            for isa in Isa::available() {
                assert_forward(&g, &input, &want, isa, &format!("{isa:?} {spec:?}"));
                let grad: Vec<f32> = input[..g.output_len()].to_vec();
                let mut spoiled = want.indices.clone();
                for _ in 0..next(3) {
                    let t = next(spoiled.len());
                    spoiled[t] = [crate::NO_INDEX, spoiled[t] ^ 1, spoiled[t] + 2][next(3)];
                }
                for idx in [&want.indices, &spoiled] {
                    let reference = super::super::reference::backward(spec, &grad, idx);
                    let (gi, invalid) = backward_twice(&g, &grad, idx, isa, &format!("{isa:?} {spec:?}"));
                    match reference {
                        Ok(want_gi) => {
                            assert_eq!(invalid, 0, "{isa:?} {spec:?}");
                            assert_eq!(bits(&gi), bits(&want_gi), "{isa:?} {spec:?}");
                        }
                        Err(Error::InvalidIndices { count }) => assert_eq!(invalid, count, "{isa:?} {spec:?}"),
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
    }

    /// The scatters that check the indices on the way, channels-first (`checked_scatter`) and
    /// channels-last with a multiple of 8 channels (`scatter_lanes`, 8- and 16-channel blocks; the
    /// others go through the validation pass): 1-, 2- and 3-D overlapping windows (one to nine
    /// real input rows per output row, dilated H, edge windows with fewer taps, ceil_mode), over
    /// several tasks, with NaN, ±inf and −0.0 gradients and indices spoiled in every way a range
    /// test can miss: −1, a neighbour in the row, the next row, past the plane, and an element of
    /// another task's rows.
    #[test]
    fn checked_scatter_matches_the_reference() {
        let mut next = numbers(0x05ca_77e2_u64);
        let k3 = PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
        let specs = [
            PoolSpec::new(InputShape::new(2, 40, [30, 36]), k3.clone()),
            PoolSpec::new(InputShape::new(1, 70, [17, 23]), k3.clone().ceil_mode(true)),
            PoolSpec::new(InputShape::new(1, 9, [12, 40]), PoolParams::new([2, 3]).stride([1, 1])),
            PoolSpec::new(InputShape::new(1, 30, [21, 26]), k3.clone().dilation([2, 1])),
            PoolSpec::new(InputShape::new(3, 64, [300]), PoolParams::new([3]).stride([2]).padding([1])),
            PoolSpec::new(
                InputShape::new(1, 8, [9, 10, 12]),
                PoolParams::new([3, 3, 3]).stride([2, 2, 2]).padding([1, 1, 1]),
            ),
            PoolSpec::new(InputShape::new(2, 48, [13, 18]), k3.clone().dilation([1, 2])),
        ];
        let layouts = [crate::params::Layout::ChannelsFirst, crate::params::Layout::ChannelsLast];
        let specs = specs.iter().flat_map(|s| layouts.map(|l| s.clone().layout(l)));
        let mut checked_lanes = 0;
        for spec in &specs.collect::<Vec<_>>() {
            let g = spec.validate().unwrap();
            let plan = Plan::new(&g, Isa::Baseline);
            if spec.layout == crate::params::Layout::ChannelsFirst {
                let eligible = super::backward::checked_scatter_eligible(&plan);
                assert_eq!(eligible, spec.params.dilation.last().is_none_or(|&d| d == 1), "{spec:?}");
            } else {
                let eligible = super::backward::checked_lanes_eligible(&plan);
                assert_eq!(eligible, spec.input.channels % 8 == 0, "{spec:?}");
                checked_lanes += eligible as usize;
            }
            let input: Vec<f32> = (0..g.input_len()).map(|_| next(5) as f32 - 2.0).collect();
            let want = super::super::reference::forward(spec, &input).unwrap();
            let grad: Vec<f32> = (0..g.output_len())
                .map(|_| match next(16) {
                    0 => f32::NAN,
                    1 => f32::from_bits(0xff80_0001),
                    2 => f32::INFINITY,
                    3 => f32::NEG_INFINITY,
                    4 => -0.0,
                    _ => next(9) as f32 * 0.375 - 1.5,
                })
                .collect();
            let plane = g.plane_in() as u32;
            let row = g.axes[2].input as u32;
            // Spoils 1–6: a few indices, one way each; 7: every eighth index, all ways (so that
            // output rows on the tasks' boundaries, walked by two tasks, are spoiled too).
            for spoil in 0..=7 {
                let mut idx = want.indices.clone();
                let targets: Vec<usize> = match spoil {
                    0 => vec![],
                    7 => (0..idx.len()).filter(|_| next(8) == 0).collect(),
                    _ => (0..1 + next(4)).map(|_| next(idx.len())).collect(),
                };
                for t in targets {
                    idx[t] = match if spoil == 7 { 1 + next(6) } else { spoil } {
                        1 => crate::NO_INDEX,
                        2 => idx[t] ^ 1,
                        3 => idx[t].wrapping_add(3),
                        4 => idx[t].wrapping_add(row),
                        5 => plane + next(3) as u32,
                        _ => next(plane as usize) as u32,
                    };
                }
                let reference = super::super::reference::backward(spec, &grad, &idx);
                for isa in Isa::available() {
                    let (gi, invalid) = backward_twice(&g, &grad, &idx, isa, &format!("{isa:?} {spec:?}"));
                    match &reference {
                        Ok(want_gi) => {
                            assert_eq!(invalid, 0, "{isa:?} {spec:?} spoil {spoil}");
                            assert_eq!(bits(&gi), bits(want_gi), "{isa:?} {spec:?}");
                        }
                        Err(Error::InvalidIndices { count }) => {
                            assert_eq!(invalid, *count, "{isa:?} {spec:?} spoil {spoil}")
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
        assert_eq!(checked_lanes, 4, "channels-last specs through the checking scatter");
    }

    /// Channels-last rows of many channels (register blocks forward, tap-by-tap tiled backward,
    /// the scatter across channels), on both sides of their thresholds.
    #[test]
    fn many_channels_match_the_reference() {
        use crate::params::Layout;
        let mut next = numbers(0xc4a_77e1u64);
        let k2 = PoolParams::new([2, 2]);
        let k3 = PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
        for (channels, width, params) in
            [(128, 32, k2.clone()), (136, 33, k3.clone()), (128, 31, k3), (124, 32, k2.clone()), (128, 30, k2)]
        {
            let spec = PoolSpec::new(InputShape::new(2, channels, [5, width]), params).layout(Layout::ChannelsLast);
            let g = spec.validate().unwrap();
            let input: Vec<f32> = (0..g.input_len())
                .map(|_| match next(12) {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    _ => next(4) as f32 - 1.0,
                })
                .collect();
            let want = super::super::reference::forward(&spec, &input).unwrap();
            for isa in Isa::available() {
                assert_forward(&g, &input, &want, isa, &format!("{isa:?} {spec:?}"));
                // Backward: tiled rows tap by tap over all channels, or the scatter across them.
                let grad: Vec<f32> = (0..g.output_len()).map(|_| [1.0, -0.0, f32::INFINITY, 2.5][next(4)]).collect();
                let want_gi = super::super::reference::backward(&spec, &grad, &want.indices).unwrap();
                let (gi, invalid) = backward_twice(&g, &grad, &want.indices, isa, &format!("{isa:?} {spec:?}"));
                assert_eq!(invalid, 0, "{isa:?} {spec:?}");
                assert_eq!(bits(&gi), bits(&want_gi), "{isa:?} {spec:?}");
            }
        }
    }

    /// The hits of tiled windows that go through the tap passes (many channels, or channels-first
    /// windows of 1 or 4 taps a row: one range test per window row, `tiled_hits`) against the
    /// reference's count, with indices spoiled next to their windows' spans: 1, 2, 3 and 4 input
    /// rows per output row, edge windows cut by padding, every build.
    #[test]
    fn tiled_hits_count_like_the_reference() {
        use crate::params::Layout;
        let mut next = numbers(0x0711_1ed5_u64);
        let (last, first) = (Layout::ChannelsLast, Layout::ChannelsFirst);
        let specs = [
            (last, PoolSpec::new(InputShape::new(2, 128, [6, 32]), PoolParams::new([2, 2]))),
            (last, PoolSpec::new(InputShape::new(1, 130, [5, 9]), PoolParams::new([2, 2]).padding([1, 1]))),
            (last, PoolSpec::new(InputShape::new(1, 128, [33]), PoolParams::new([2]).padding([1]))),
            (last, PoolSpec::new(InputShape::new(1, 128, [4, 4, 6]), PoolParams::new([2, 2, 2]))),
            (last, PoolSpec::new(InputShape::new(1, 132, [5, 8]), PoolParams::new([3, 3]).padding([1, 1]))),
            (first, PoolSpec::new(InputShape::new(2, 3, [8, 16]), PoolParams::new([4, 4]))),
            (first, PoolSpec::new(InputShape::new(2, 3, [7, 10]), PoolParams::new([1, 1]))),
        ];
        for (layout, spec) in specs {
            let spec = spec.layout(layout);
            let g = spec.validate().unwrap();
            assert!(g.tiles(), "{spec:?}");
            let input: Vec<f32> = (0..g.input_len()).map(|_| next(5) as f32 - 2.0).collect();
            let want = super::super::reference::forward(&spec, &input).unwrap();
            let grad: Vec<f32> = (0..g.output_len()).map(|_| next(9) as f32 - 4.0).collect();
            let row = g.axes[2].input as u32;
            for round in 0..12 {
                let mut idx = want.indices.clone();
                for _ in 0..1 + next(4) {
                    let e = next(idx.len());
                    let i = idx[e];
                    idx[e] = match round % 8 {
                        0 => i.wrapping_add(1),
                        1 => i.wrapping_sub(1),
                        2 => i.wrapping_add(2),
                        3 => i.wrapping_add(row),
                        4 => i.wrapping_sub(row),
                        5 => crate::NO_INDEX,
                        6 => i ^ 1,
                        _ => next(g.axes.iter().map(|a| a.input).product::<usize>() + 2) as u32,
                    };
                }
                let reference = super::super::reference::backward(&spec, &grad, &idx);
                for isa in Isa::available() {
                    let context = format!("{isa:?} {spec:?} round {round}");
                    let (gi, invalid) = backward_twice(&g, &grad, &idx, isa, &context);
                    match &reference {
                        Ok(want_gi) => {
                            assert_eq!(invalid, 0, "{context}");
                            assert_eq!(bits(&gi), bits(want_gi), "{context}");
                        }
                        Err(Error::InvalidIndices { count }) => assert_eq!(invalid, *count, "{context}"),
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
    }

    #[test]
    fn even_ranges_cover() {
        for n in 0..20 {
            for parts in 1..8 {
                let r: Vec<_> = even_ranges(n, parts).collect();
                assert_eq!(r.first().unwrap().start, 0);
                assert_eq!(r.last().unwrap().end, n);
                assert!(r.windows(2).all(|w| w[0].end == w[1].start));
            }
        }
    }
}
