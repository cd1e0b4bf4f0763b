//! Robustness (issue 6): every bad input is a typed error, never a panic, a hang or a huge
//! allocation, on the CPU and on every GPU adapter alike.
//!
//! - Random, including absurd, shapes and parameters: the CPU path, the reference and every
//!   adapter (host slices and the encoder level) return the same result or the same typed error;
//!   huge shapes are refused quickly and without allocating (a counting allocator watches).
//! - Indices no forward pass could have produced: `InvalidIndices` with the same count on the CPU,
//!   the reference, the GPU host level and the counter that `record_backward` writes.
//! - Device faults: over-limit requests, a destroyed device, a timeout; the context stays usable
//!   after the first and the third, and every call after the second fails fast.
//! - One context shared by several threads; the public types are `Send + Sync`.
//! - Malformed files and flags through the real binary, on the CPU, Vulkan and GL.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wgpool::cpu::{self, reference};
use wgpool::wgpu;
use wgpool::{
    BackwardBuffers, Context, ContextOptions, DType, Element, Error, ForwardBuffers, Geometry, InputShape, Layout,
    NO_INDEX, PoolParams, PoolSpec, RecordOptions, Variant, f16,
};

use super::common::{
    Case, Rng, assert_bits_eq, contexts, gradients, nasty_values, random_spec, record_backward_counted, wgpu_errors,
};

// ------------------------------------------------------------------------------------------------
// Send + Sync, at compile time
// ------------------------------------------------------------------------------------------------

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Context>();
    send_sync::<ContextOptions>();
    send_sync::<PoolSpec>();
    send_sync::<PoolParams>();
    send_sync::<InputShape>();
    send_sync::<Geometry>();
    send_sync::<Error>();
    send_sync::<cpu::Pooled<f32>>();
    send_sync::<cpu::Pooled<f16>>();
    send_sync::<ForwardBuffers<'static>>();
    send_sync::<BackwardBuffers<'static>>();
    send_sync::<RecordOptions<'static>>();
};

// ------------------------------------------------------------------------------------------------
// Helpers: a counting allocator, panics as failures, timing
// ------------------------------------------------------------------------------------------------

/// A global allocator that records, per thread, the largest single allocation and the total
/// bytes asked for, so that a test can tell that a refused call allocated (almost) nothing. Linux
/// hands out untouched memory lazily, so an allocation of gigabytes would otherwise go unnoticed.
pub(crate) mod alloc_probe {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Probe;

    thread_local! {
        static LARGEST: Cell<usize> = const { Cell::new(0) };
        static TOTAL: Cell<usize> = const { Cell::new(0) };
    }

    fn note(size: usize) {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        let _ = TOTAL.try_with(|t| t.set(t.get().saturating_add(size)));
    }

    // SAFETY: every call is forwarded unchanged to the system allocator.
    unsafe impl GlobalAlloc for Probe {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: Probe = Probe;

    /// What one call cost on this thread.
    #[derive(Debug, Clone, Copy)]
    pub struct Cost {
        /// The largest single allocation (bytes).
        pub largest: usize,
        /// All bytes allocated.
        pub total: usize,
        /// Wall time.
        pub elapsed: std::time::Duration,
    }

    /// Runs `f`, returning its result and what it allocated on this thread.
    pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Cost) {
        LARGEST.with(|l| l.set(0));
        TOTAL.with(|t| t.set(0));
        let start = std::time::Instant::now();
        let r = f();
        let elapsed = start.elapsed();
        (r, Cost { largest: LARGEST.with(Cell::get), total: TOTAL.with(Cell::get), elapsed })
    }
}

use alloc_probe::{Cost, measure};

/// A refused call must not allocate more than this (error messages and small vectors only)...
const REFUSAL_BYTES: usize = 1 << 20;
/// ...nor take longer than this (generous: debug build, busy machine).
const REFUSAL_TIME: Duration = Duration::from_secs(2);

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

/// Runs `f`, turning a panic into a test failure that names the call and the problem.
fn no_panic<R>(what: &str, context: &dyn std::fmt::Debug, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => panic!("{what} panicked on {context:?}: {}", panic_text(&*p)),
    }
}

/// Asserts that a refused (or empty) call was cheap: little memory, little time.
fn assert_cheap(what: &str, context: &dyn std::fmt::Debug, cost: Cost) {
    assert!(
        cost.largest <= REFUSAL_BYTES && cost.elapsed <= REFUSAL_TIME,
        "{what} on {context:?} allocated {} bytes at once ({} in all) in {:?}: too much for a call that is \
         refused or has nothing to compute",
        cost.largest,
        cost.total,
        cost.elapsed
    );
}

/// Asserts that a computed call allocated in proportion to its tensors (8 bytes per element,
/// a few times over), not to its planes' sizes or the parameters.
fn assert_proportional(what: &str, context: &dyn std::fmt::Debug, cost: Cost, validated: &Result<Geometry, Error>) {
    if let Ok(g) = validated {
        let bound = 64 * (g.input_len() + g.output_len()) + REFUSAL_BYTES;
        assert!(
            cost.largest <= bound,
            "{what} on {context:?} allocated {} bytes at once for {} + {} elements",
            cost.largest,
            g.input_len(),
            g.output_len()
        );
    }
}

/// Errors only the GPU may add to the CPU's result: device limits.
fn device_limit(e: &Error) -> bool {
    matches!(e, Error::TooLarge { .. } | Error::BindingTooSmall { .. } | Error::OutOfMemory(_))
}

// ------------------------------------------------------------------------------------------------
// 1. Random and absurd shapes and parameters
// ------------------------------------------------------------------------------------------------

/// A size from the whole range: small most of the time, sometimes at or past a boundary of u32
/// and usize.
fn absurd(rng: &mut Rng) -> usize {
    match rng.range(0, 11) {
        0 => 0,
        1 => u32::MAX as usize - rng.range(0, 2),
        2 => u32::MAX as usize + rng.range(1, 2),
        3 => (1 << 31) + rng.range(0, 1),
        4 => 1 << rng.range(16, 62),
        5 => usize::MAX - rng.range(0, 2),
        6 => usize::MAX / rng.range(2, 9),
        7 => rng.next_u64() as usize,
        8 => 65_536 + rng.range(0, 1),
        _ => rng.range(7, 300),
    }
}

/// A parameter list: usually one entry per axis, sometimes empty (the default) or of another
/// length; entries small, zero or absurd.
fn param_list(rng: &mut Rng, rank: usize, lo: usize, hi: usize) -> Vec<usize> {
    let len = match rng.range(0, 11) {
        0..=1 => 0,
        2 => rng.range(0, 5),
        _ => rank,
    };
    (0..len)
        .map(|_| match rng.range(0, 19) {
            0 => 0,
            1..=2 => absurd(rng),
            _ => rng.range(lo, hi),
        })
        .collect()
}

/// A random problem: mostly plausible, often invalid, sometimes absurd (huge sizes, overflowing
/// products, mismatched lengths, wrong ranks). `None` when the dims' rank was refused by
/// [`InputShape::from_dims`] (checked here to be `InputRank`).
fn absurd_spec(rng: &mut Rng) -> Option<PoolSpec> {
    let layout = if rng.chance(0.35) { Layout::ChannelsLast } else { Layout::ChannelsFirst };
    let dim = |rng: &mut Rng, lo: usize, hi: usize| if rng.chance(0.06) { absurd(rng) } else { rng.range(lo, hi) };
    let mode = rng.range(0, 19);
    let input = if mode == 0 {
        // Spatial ranks 0, 4 and 5 straight into the struct: validate must refuse them itself.
        let spatial = (0..[0, 4, 5][rng.range(0, 2)]).map(|_| dim(rng, 1, 6)).collect::<Vec<_>>();
        InputShape::new(dim(rng, 0, 3), dim(rng, 1, 4), spatial)
    } else {
        // Ranks 0 to 7 through from_dims (3 to 5 most of the time).
        let rank = match mode {
            1 => rng.range(0, 2),
            2 => rng.range(6, 7),
            _ => rng.range(3, 5),
        };
        let dims: Vec<usize> = (0..rank)
            .map(|i| {
                let batch = i == 0;
                let channel = match layout {
                    Layout::ChannelsFirst => i == 1,
                    Layout::ChannelsLast => i + 1 == rank,
                };
                if batch {
                    dim(rng, 0, 3)
                } else if channel {
                    dim(rng, 1, 5)
                } else {
                    dim(rng, 1, 9)
                }
            })
            .collect();
        match InputShape::from_dims(&dims, layout) {
            Ok(s) => s,
            Err(e) => {
                assert_eq!(e, Error::InputRank { rank }, "from_dims({dims:?})");
                return None;
            }
        }
    };
    let rank = input.spatial.len().max(1);
    let widest = if rng.chance(0.3) { 9 } else { 4 };
    let mut kernel = param_list(rng, rank, 1, widest);
    if kernel.is_empty() && rng.chance(0.8) {
        kernel = (0..rank).map(|_| rng.range(1, 3)).collect();
    }
    // Padding up to half the kernel (the largest PyTorch allows) half of the time: windows much
    // wider than the input.
    let mut padding = param_list(rng, rank, 0, 1);
    if padding.len() == kernel.len() && rng.chance(0.5) {
        padding = kernel.iter().map(|&k| if k < 1 << 20 { rng.range(0, k / 2) } else { k / 2 }).collect();
    }
    let params = PoolParams::new(kernel)
        .stride(param_list(rng, rank, 1, 3))
        .padding(padding)
        .dilation(param_list(rng, rank, 1, 3))
        .ceil_mode(rng.chance(0.5));
    Some(PoolSpec::new(input, params).layout(layout))
}

/// Hand-written absurd problems, with the error each must give.
fn absurd_table() -> Vec<(PoolSpec, Option<&'static str>)> {
    let m = usize::MAX;
    let cf = |b, c, s: &[usize], p: PoolParams| PoolSpec::new(InputShape::new(b, c, s), p);
    vec![
        // A plane of 2^32 elements: u32 indexing can't address it.
        (cf(1, 1, &[65_536, 65_536], PoolParams::new([1, 1])), Some("input plane")),
        (cf(1, 1, &[1 << 32], PoolParams::new([1])), Some("too large")),
        (cf(1, 1, &[1 << 16, 1 << 8, 1 << 8], PoolParams::new([1, 1, 1])), Some("input plane")),
        // One element below the limit: valid, but no host slice of that size exists here.
        (cf(1, 1, &[65_535, 65_536], PoolParams::new([65_535, 65_536])), None),
        (cf(1, 1, &[65_535, 65_537], PoolParams::new([65_535, 65_537])), Some("input plane")),
        // Whole tensors past usize (with 8 bytes per element).
        (cf(1 << 40, 1 << 30, &[4], PoolParams::new([2])), Some("tensor")),
        (cf(m, m, &[1, 1], PoolParams::new([1, 1])), Some("tensor")),
        (cf(m, 1, &[1], PoolParams::new([1])), Some("tensor")),
        // Kernel and dilation whose product overflows every integer type.
        (cf(1, 1, &[5], PoolParams::new([m]).dilation([m])), Some("output size is too small")),
        (cf(1, 1, &[5], PoolParams::new([m]).dilation([m]).padding([m / 2]).ceil_mode(true)), Some("")),
        (cf(1, 1, &[m], PoolParams::new([m]).dilation([m]).padding([m / 2]).stride([m])), Some("")),
        (cf(1, 1, &[5, 5], PoolParams::new([m, 2]).stride([1, m]).padding([m / 2, 1])), Some("")),
        // Window reach past u32 (kernel 2^31 + 1, dilation 2): one output, unaddressable taps.
        (
            cf(1, 1, &[(1 << 31) + 1], PoolParams::new([(1 << 31) + 1]).dilation([2]).padding([1 << 30])),
            Some("window reach"),
        ),
        (cf(1, 1, &[5], PoolParams::new([(1 << 32) + 1]).padding([1 << 31])), Some("kernel on spatial axis 0")),
        // Strides and dilations past u32: PyTorch gives one output (or ignores the dilation of a
        // kernel of 1), wgpool refuses them on both paths (the kernels take u32 constants).
        (cf(1, 1, &[5], PoolParams::new([2]).stride([m])), Some("stride on spatial axis 0")),
        (cf(1, 1, &[5], PoolParams::new([2]).stride([1 << 32])), Some("stride on spatial axis 0")),
        (cf(1, 1, &[5], PoolParams::new([2]).stride([u32::MAX as usize])), None),
        (cf(1, 1, &[5], PoolParams::new([1]).dilation([1 << 32])), Some("dilation on spatial axis 0")),
        (cf(1, 1, &[5], PoolParams::new([2]).dilation([m])), Some("output size is too small")),
        (cf(2, 3, &[4, 4], PoolParams::new([2, 2]).stride([m, m]).ceil_mode(true)), Some("stride")),
        // Kernel 2^32 with an input and padding that make it valid for PyTorch.
        (cf(1, 1, &[1 << 31], PoolParams::new([1 << 32]).padding([(1 << 31) - 1])), Some("kernel on spatial axis 0")),
        // Zeros and mismatched lengths.
        (cf(1, 0, &[4], PoolParams::new([2])), Some("channels")),
        (cf(1, 1, &[4, 0], PoolParams::new([2, 2])), Some("spatial axis 1")),
        (cf(1, 1, &[4], PoolParams::new([0])), Some("greater than zero")),
        (cf(1, 1, &[4], PoolParams::new([2]).stride([0])), Some("greater than zero")),
        (cf(1, 1, &[4], PoolParams::new([2]).dilation([0])), Some("greater than zero")),
        (cf(1, 1, &[4], PoolParams::new(Vec::<usize>::new())), Some("kernel has 0 entries")),
        (cf(1, 1, &[4], PoolParams::new([2, 2])), Some("kernel has 2 entries")),
        (cf(1, 1, &[4], PoolParams::new([2]).stride([1, 1, 1])), Some("stride has 3")),
        (cf(1, 1, &[4, 4], PoolParams::new([2, 2]).padding([1])), Some("padding has 1")),
        (cf(1, 1, &[4, 4, 4], PoolParams::new([2, 2, 2]).dilation([1, 1, 1, 1])), Some("dilation has 4")),
        (cf(1, 1, &[], PoolParams::new(Vec::<usize>::new())), Some("rank 3, 4 or 5")),
        (cf(1, 1, &[2, 2, 2, 2], PoolParams::new([1, 1, 1, 1])), Some("rank 3, 4 or 5")),
        (cf(1, 1, &[4], PoolParams::new([3]).padding([m])), Some("pad should be smaller")),
        (cf(0, 1, &[4], PoolParams::new([2])), None),
        // An input of usize::MAX elements gives 2^64 outputs (once truncated to 0 by a cast).
        (cf(3, 1, &[m], PoolParams::new([6]).stride([1]).padding([3]).ceil_mode(true)), Some("output size")),
        (cf(1, 1, &[m], PoolParams::new([1])), Some("too large")),
        // An empty batch of images too large to address.
        (cf(0, m / 6, &[8, 9, 6], PoolParams::new([3, 4, 4])).layout(Layout::ChannelsLast), Some("tensor")),
        (cf(0, m / 6, &[8, 9, 6], PoolParams::new([3, 4, 4])), Some("tensor")),
        (cf(0, 1 << 20, &[1 << 16], PoolParams::new([2])), None),
    ]
}

/// A length near `n`: usually `n`, sometimes off by one or empty.
fn perturb(rng: &mut Rng, n: usize) -> usize {
    match rng.range(0, 9) {
        0 => n + 1,
        1 => n.saturating_sub(1),
        2 => 0,
        _ => n,
    }
}

/// A short length (at most 17) that is not `n`, so that a valid but huge problem is refused.
fn short_len(rng: &mut Rng, n: usize) -> usize {
    let l = rng.range(0, 16);
    if l == n { l + 1 } else { l }
}

/// Index slices to feed backward: the forward pass's, a corrupted copy, or random values.
fn indices_for(rng: &mut Rng, forward: Option<&[u32]>, len: usize) -> Vec<u32> {
    match forward {
        Some(f) if f.len() == len && rng.chance(0.7) => {
            let mut v = f.to_vec();
            if rng.chance(0.3) && !v.is_empty() {
                let i = rng.range(0, v.len() - 1);
                v[i] = [NO_INDEX, NO_INDEX - 1, 0, rng.next_u64() as u32][rng.range(0, 3)];
            }
            v
        }
        _ => (0..len).map(|_| if rng.chance(0.8) { rng.range(0, 40) as u32 } else { rng.next_u64() as u32 }).collect(),
    }
}

/// Buffers for the encoder level, allocated once per adapter, smaller than most problems.
struct TinyBuffers {
    a: wgpu::Buffer,
    b: wgpu::Buffer,
    c: wgpu::Buffer,
    d: wgpu::Buffer,
}

const TINY: u64 = 64;

impl TinyBuffers {
    fn new(ctx: &Context) -> Self {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        let make = |label| {
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: TINY,
                usage,
                mapped_at_creation: false,
            })
        };
        Self { a: make("tiny a"), b: make("tiny b"), c: make("tiny c"), d: make("tiny d") }
    }
}

/// Statistics of the property test, printed at the end.
#[derive(Debug, Default)]
struct Stats {
    cases: usize,
    rank_refused: usize,
    invalid: usize,
    valid_computed: usize,
    valid_refused_for_length: usize,
    gpu_computed: usize,
    gpu_device_limit: usize,
    record_ok: usize,
    record_err: usize,
}

/// The GPU runs every refused case, but (pipelines are compiled per geometry, slowly on software
/// adapters) only this many computed ones per adapter and element type.
const GPU_COMPUTED_PER_ADAPTER: usize = 40;

/// One problem through every path. `exact`: the right lengths and the forward's own indices
/// (otherwise lengths and indices are often perturbed).
fn check_case<T: Element>(
    rng: &mut Rng,
    spec: &PoolSpec,
    exact: bool,
    expect: Option<Option<&str>>,
    gpus: &[(&Context, TinyBuffers)],
    stats: &mut Stats,
) {
    stats.cases += 1;
    let context = format!("{} {spec:?}", T::DTYPE.name());
    if std::env::var_os("WGPOOL_TRACE").is_some() {
        eprintln!("case {}: exact {exact} {context}", stats.cases);
    }
    let validated = no_panic("validate", &context, || spec.validate());
    match (expect, &validated) {
        (Some(None), Err(e)) => panic!("{context}: expected success, got {e}"),
        (Some(Some(needle)), Ok(_)) => panic!("{context}: expected an error containing {needle:?}"),
        (Some(Some(needle)), Err(e)) => assert!(e.to_string().contains(needle), "{context}: {e} lacks {needle:?}"),
        _ => {}
    }
    // Small enough to compute. Windows of millions of taps are left out: every path scans all
    // taps of a window, padding included (see `robustness_huge_window_over_tiny_input`).
    let small = matches!(&validated, Ok(g) if g.input_len() <= 1 << 12 && g.output_len() <= 1 << 12
        && window_taps(g).saturating_mul(g.output_len() as u128) <= 1 << 20);
    if validated.is_err() {
        stats.invalid += 1;
    }

    // Forward: the fast path and the reference agree, and refusals are cheap.
    let n_in = match &validated {
        Ok(g) if small && exact => g.input_len(),
        Ok(g) if small => perturb(rng, g.input_len()),
        Ok(g) => short_len(rng, g.input_len()),
        Err(_) => rng.range(0, 16),
    };
    let input: Vec<T> = nasty_values(rng, n_in);
    let (cpu_fwd, cost) = measure(|| no_panic("cpu::forward", &context, || cpu::forward(spec, &input)));
    let ref_fwd = no_panic("reference::forward", &context, || reference::forward(spec, &input));
    match (&validated, &cpu_fwd) {
        (Err(e), r) => assert_eq!(r.as_ref().err(), Some(e), "{context}: cpu::forward"),
        (Ok(g), Err(e)) => {
            assert_ne!(n_in, g.input_len(), "{context}: cpu::forward refused a valid call: {e}");
            assert!(matches!(e, Error::ShapeMismatch { .. }), "{context}: {e}");
            stats.valid_refused_for_length += 1;
        }
        (Ok(g), Ok(out)) => {
            assert_eq!(out.values.len(), g.output_len(), "{context}");
            stats.valid_computed += 1;
        }
    }
    match (&cpu_fwd, &ref_fwd) {
        (Ok(a), Ok(b)) => {
            assert_bits_eq("values", &context, &a.values, &b.values);
            assert_eq!(a.indices, b.indices, "{context}: indices");
        }
        (a, b) => assert_eq!(a.as_ref().err(), b.as_ref().err(), "{context}: fast vs reference"),
    }
    if cpu_fwd.is_err() {
        assert_cheap("cpu::forward", &context, cost);
    } else {
        assert_proportional("cpu::forward", &context, cost, &validated);
    }

    // Backward, with the forward's indices, corrupted ones or random ones.
    let (n_go, n_idx) = match &validated {
        Ok(g) if small && exact => (g.output_len(), g.output_len()),
        Ok(g) if small => (perturb(rng, g.output_len()), perturb(rng, g.output_len())),
        // A valid problem too large to compute (a tiny output can have a huge grad_input).
        Ok(g) => (short_len(rng, g.output_len()), short_len(rng, g.output_len())),
        Err(_) => (rng.range(0, 16), rng.range(0, 16)),
    };
    let grad: Vec<T> = gradients(rng, n_go);
    let indices = match &cpu_fwd {
        Ok(fwd) if exact => fwd.indices.clone(),
        fwd => indices_for(rng, fwd.as_ref().ok().map(|p| &p.indices[..]), n_idx),
    };
    let (cpu_bwd, cost) = measure(|| no_panic("cpu::backward", &context, || cpu::backward(spec, &grad, &indices)));
    let ref_bwd = no_panic("reference::backward", &context, || reference::backward(spec, &grad, &indices));
    match (&cpu_bwd, &ref_bwd) {
        (Ok(a), Ok(b)) => assert_bits_eq("grad_input", &context, a, b),
        (a, b) => assert_eq!(a.as_ref().err(), b.as_ref().err(), "{context}: backward fast vs reference"),
    }
    if let Err(e) = &validated {
        assert_eq!(cpu_bwd.as_ref().err(), Some(e), "{context}: cpu::backward");
    }
    if cpu_bwd.is_err() && !matches!(cpu_bwd, Err(Error::InvalidIndices { .. })) {
        assert_cheap("cpu::backward", &context, cost);
    } else {
        assert_proportional("cpu::backward", &context, cost, &validated);
    }

    for (ctx, tiny) in gpus {
        let gpu = format!("[{}] {context}", ctx.describe());
        let computes = cpu_fwd.is_ok() || cpu_bwd.is_ok();
        if computes && (!small || stats.gpu_computed >= GPU_COMPUTED_PER_ADAPTER * gpus.len()) {
            continue;
        }
        let case = Case::start(ctx);
        let supported = ctx.supports(T::DTYPE);
        // Same result or same error; the GPU may add device-limit errors and, for f16 where the
        // adapter lacks it, MissingFeature once the spec is valid.
        let agree = |what: &str, cpu: Result<(), &Error>, gpu_r: Result<(), &Error>| match (cpu, gpu_r) {
            (_, Err(Error::MissingFeature { .. })) if !supported && validated.is_ok() => false,
            (Err(c), Err(g)) => {
                assert_eq!(c, g, "{gpu}: {what}: the CPU and the GPU disagree");
                false
            }
            (Ok(()), Err(g)) if device_limit(g) => true,
            (c, g) => {
                assert_eq!(c.err(), g.err(), "{gpu}: {what}: the CPU and the GPU disagree");
                false
            }
        };
        let (gpu_fwd, cost) = measure(|| no_panic("Context::forward", &gpu, || ctx.forward(spec, &input)));
        if agree("forward", cpu_fwd.as_ref().map(|_| ()), gpu_fwd.as_ref().map(|_| ())) {
            stats.gpu_device_limit += 1;
        }
        if let (Ok(c), Ok(g)) = (&cpu_fwd, &gpu_fwd) {
            assert_bits_eq("values", &gpu, &g.values, &c.values);
            assert_eq!(g.indices, c.indices, "{gpu}: indices");
            stats.gpu_computed += 1;
        }
        if gpu_fwd.is_err() {
            assert_cheap("Context::forward", &gpu, cost);
        }
        let (gpu_bwd, cost) = measure(|| no_panic("Context::backward", &gpu, || ctx.backward(spec, &grad, &indices)));
        if agree("backward", cpu_bwd.as_ref().map(|_| ()), gpu_bwd.as_ref().map(|_| ())) {
            stats.gpu_device_limit += 1;
        }
        if let (Ok(c), Ok(g)) = (&cpu_bwd, &gpu_bwd) {
            assert_bits_eq("grad_input", &gpu, g, c);
        }
        if gpu_bwd.is_err() && !matches!(gpu_bwd, Err(Error::InvalidIndices { .. })) {
            assert_cheap("Context::backward", &gpu, cost);
        }

        // The encoder level over buffers smaller than most problems: the same validation errors,
        // then ShapeMismatch for the buffers, and no wgpu error for anything it accepts.
        let mut encoder = ctx.device().create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        let fwd_buffers =
            ForwardBuffers { input: (&tiny.a).into(), values: (&tiny.b).into(), indices: (&tiny.c).into() };
        let bwd_buffers = BackwardBuffers {
            grad_output: (&tiny.a).into(),
            indices: (&tiny.b).into(),
            grad_input: (&tiny.c).into(),
            invalid_count: (&tiny.d).into(),
        };
        let ((rf, rb), wgpu_error) = wgpu_errors(ctx, || {
            let rf = no_panic("record_forward", &gpu, || {
                ctx.record_forward(&mut encoder, spec, T::DTYPE, &fwd_buffers, RecordOptions::default())
            });
            let rb = no_panic("record_backward", &gpu, || {
                ctx.record_backward(&mut encoder, spec, T::DTYPE, &bwd_buffers, RecordOptions::default())
            });
            (rf, rb)
        });
        drop(encoder);
        assert!(wgpu_error.is_none(), "{gpu}: wgpu complained about what wgpool recorded: {wgpu_error:?}");
        for (what, r) in [("record_forward", &rf), ("record_backward", &rb)] {
            match (&validated, r) {
                (Err(e), r) => assert_eq!(r.as_ref().err(), Some(e), "{gpu}: {what}"),
                (Ok(_), Ok(())) => stats.record_ok += 1,
                (Ok(_), Err(Error::MissingFeature { .. })) if !supported => stats.record_err += 1,
                (Ok(_), Err(e)) => {
                    assert!(matches!(e, Error::ShapeMismatch { .. }) || device_limit(e), "{gpu}: {what}: {e}");
                    stats.record_err += 1;
                }
            }
        }
        case.pass();
    }
}

/// Kernel taps per window (padding included).
fn window_taps(g: &Geometry) -> u128 {
    g.axes.iter().map(|a| a.kernel as u128).product()
}

/// `WGPOOL_ROBUSTNESS_SEED` and `WGPOOL_ROBUSTNESS_CASES` replace the fixed seed and count (to
/// explore further: `WGPOOL_ROBUSTNESS_SEED=$RANDOM WGPOOL_ROBUSTNESS_CASES=100000`).
fn random_cases<T: Element>(seed: u64, count: usize) -> Stats {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seed = env("WGPOOL_ROBUSTNESS_SEED").map_or(seed, |s| s ^ seed);
    let count = env("WGPOOL_ROBUSTNESS_CASES").map_or(count, |c| c as usize);
    let gpus: Vec<(&Context, TinyBuffers)> = contexts().iter().map(|c| (c, TinyBuffers::new(c))).collect();
    let mut stats = Stats::default();
    let mut rng = Rng::new(seed);
    for (spec, expect) in absurd_table() {
        check_case::<T>(&mut rng, &spec, true, Some(expect), &gpus, &mut stats);
        check_case::<T>(&mut rng, &spec, false, Some(expect), &gpus, &mut stats);
    }
    for _ in 0..count {
        match absurd_spec(&mut rng) {
            Some(spec) => {
                let exact = rng.chance(0.3);
                check_case::<T>(&mut rng, &spec, exact, None, &gpus, &mut stats)
            }
            None => stats.rank_refused += 1,
        }
    }
    stats
}

/// Thousands of random, often absurd problems: no panic, a result or a typed error, the same on
/// the CPU (fast and reference) and on every adapter (host slices and encoder level).
#[test]
fn robustness_random_problems_f32() {
    let start = Instant::now();
    let stats = random_cases::<f32>(0x6006, 3000);
    eprintln!("robustness f32: {stats:?} in {:?}", start.elapsed());
    assert!(stats.invalid > 1000 && stats.valid_computed > 300, "{stats:?}");
}

#[test]
fn robustness_random_problems_f16() {
    let start = Instant::now();
    let stats = random_cases::<f16>(0x6016, 1000);
    eprintln!("robustness f16: {stats:?} in {:?}", start.elapsed());
    assert!(stats.invalid > 300 && stats.valid_computed > 100, "{stats:?}");
}

/// Windows wider than the input (every output's window reaches into the padding on both sides):
/// found by the `pool_params` fuzz target and by the random problems above with other seeds. The
/// CPU fast path's backward index check panics on them (`attempt to subtract with overflow` in
/// `src/cpu/fast/backward.rs`, `validate_row_channels_first`, when no output of a row is
/// "interior": `w_lo == w_hi`).
#[test]
fn robustness_windows_wider_than_the_input() {
    let gpus: Vec<(&Context, TinyBuffers)> = contexts().iter().map(|c| (c, TinyBuffers::new(c))).collect();
    let mut stats = Stats::default();
    let mut rng = Rng::new(0x71de);
    let cf = |b, c, s: &[usize], p: PoolParams| PoolSpec::new(InputShape::new(b, c, s), p);
    let mut specs = vec![
        cf(1, 7, &[1], PoolParams::new([7]).stride([1]).padding([3]).ceil_mode(true)),
        cf(3, 4, &[6], PoolParams::new([4]).stride([1]).padding([2]).dilation([3])),
        cf(1, 2, &[2, 3], PoolParams::new([5, 7]).stride([1, 2]).padding([2, 3])),
        cf(2, 3, &[1, 1, 2], PoolParams::new([3, 3, 9]).padding([1, 1, 4]).ceil_mode(true)),
    ];
    specs.extend(specs.clone().into_iter().map(|s| s.layout(Layout::ChannelsLast)));
    for spec in &specs {
        check_case::<f32>(&mut rng, spec, true, Some(None), &gpus, &mut stats);
    }
}

/// An empty batch whose planes hold millions of elements: an empty result at once, without
/// allocating anything for the planes. Found by the `pool_params` fuzz target: the CPU fast path
/// builds per-axis tables of every output coordinate before it looks at the batch (25 GB, and an
/// abort, for a depth of 1.57e9; 256 MiB here).
#[test]
fn robustness_empty_batch_allocates_nothing() {
    for layout in [Layout::ChannelsFirst, Layout::ChannelsLast] {
        let spec = PoolSpec::new(InputShape::new(0, 2, [1 << 24, 2, 1]), PoolParams::new([1, 1, 1])).layout(layout);
        let context = format!("{spec:?}");
        let (r, cost) = measure(|| cpu::forward::<f32>(&spec, &[]));
        assert_eq!(r.map(|p| p.values.len()), Ok(0), "{context}");
        assert_cheap("cpu::forward of an empty batch", &context, cost);
        let (r, cost) = measure(|| cpu::backward::<f32>(&spec, &[], &[]));
        assert_eq!(r.map(|g| g.len()), Ok(0), "{context}");
        assert_cheap("cpu::backward of an empty batch", &context, cost);
        for ctx in contexts() {
            let case = Case::start(ctx);
            let gpu = format!("[{}] {context}", ctx.describe());
            let (r, cost) = measure(|| ctx.forward::<f32>(&spec, &[]));
            assert_eq!(r.map(|p| p.values.len()), Ok(0), "{gpu}");
            assert_cheap("Context::forward of an empty batch", &gpu, cost);
            let (r, cost) = measure(|| ctx.backward::<f32>(&spec, &[], &[]));
            assert_eq!(r.map(|g| g.len()), Ok(0), "{gpu}");
            assert_cheap("Context::backward of an empty batch", &gpu, cost);
            case.pass();
        }
    }
}

/// A valid window of 2^31 taps over a 3-element input (padding 2^30, as PyTorch allows) has
/// three real taps: every path must visit only those (the shaders do for kernels above 64 taps,
/// `RANGED_TAPS`), not ~2^31 steps per output, which would trip a desktop GPU's watchdog.
#[test]
fn robustness_huge_window_over_tiny_input() {
    let k = 1usize << 31;
    let spec = PoolSpec::new(InputShape::new(1, 1, [3]), PoolParams::new([k]).padding([k / 2]));
    let g = spec.validate().expect("valid for PyTorch and for wgpool");
    assert_eq!(g.output_len(), 1);
    let x = [1.0f32, 3.0, 2.0];
    let out = within("cpu::forward over a 2^31 window", Duration::from_secs(2), move || cpu::forward(&spec, &x));
    assert_eq!(out.unwrap().indices, vec![1]);
    for ctx in contexts() {
        let spec = PoolSpec::new(InputShape::new(1, 1, [3]), PoolParams::new([k]).padding([k / 2]));
        let start = Instant::now();
        assert_eq!(ctx.forward(&spec, &x).unwrap().indices, vec![1], "[{}]", ctx.describe());
        assert!(start.elapsed() < Duration::from_secs(2), "[{}] took {:?}", ctx.describe(), start.elapsed());
    }
}

// ------------------------------------------------------------------------------------------------
// 2. Indices no forward pass could have produced
// ------------------------------------------------------------------------------------------------

/// The window `(od, oh, ow)` of output element `e` (in the spec's layout).
fn window_of(g: &Geometry, e: usize) -> (usize, usize, usize) {
    let (_, lanes) = g.groups_and_lanes();
    let pos = (e / lanes) % g.plane_out();
    let [_, ah, aw] = g.axes;
    (pos / (aw.output * ah.output), (pos / aw.output) % ah.output, pos % aw.output)
}

/// Problems covering every backward kernel: overlapping windows with padding (gather),
/// tiling windows (tiled, row-blocked tiled), four channels per invocation, windows of padding
/// only (where −1 is the one valid index), elements in no window.
fn index_specs() -> Vec<PoolSpec> {
    let cf = Layout::ChannelsFirst;
    let cl = Layout::ChannelsLast;
    let s = |b, c, sp: &[usize], l, p| PoolSpec::new(InputShape::new(b, c, sp), p).layout(l);
    vec![
        s(2, 3, &[7, 6], cf, PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1])),
        s(1, 2, &[4, 16], cf, PoolParams::new([2, 2])),
        s(2, 3, &[6, 5], cf, PoolParams::new([2, 2]).ceil_mode(true)),
        s(1, 8, &[5, 6], cl, PoolParams::new([2, 2]).stride([1, 2])),
        s(2, 3, &[1], cl, PoolParams::new([2]).dilation([2]).padding([1])),
        s(1, 2, &[1, 5], cf, PoolParams::new([3, 2]).dilation([2, 1]).padding([1, 0]).ceil_mode(true)),
        s(1, 2, &[4, 5, 7], cf, PoolParams::new([2, 1, 2]).stride([3, 2, 3]).padding([1, 0, 0])),
        s(2, 1, &[9], cf, PoolParams::new([3]).dilation([2]).stride([1])),
        // Fixed-cover gathers, which find the windows a block anchors from its phase against the
        // windows (`fixed_anchors` in common.wgsl): two-row blocks with an odd height (the last
        // block one row), overlapping windows on D, 2×2 cells with partial ones, and ceil_mode's
        // windows past the input.
        s(1, 2, &[5, 8], cf, PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1])),
        s(1, 2, &[3, 4, 8], cf, PoolParams::new([2, 3, 3]).stride([1, 2, 2]).padding([1, 1, 1])),
        s(1, 8, &[5, 7], cl, PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1])),
        s(2, 1, &[6, 8], cf, PoolParams::new([3, 2]).stride([2, 2]).ceil_mode(true)),
    ]
}

/// Corrupts about a fifth of `indices` in every way a forward pass cannot produce; returns the
/// number of output positions left invalid (checked with `cpu::index_valid`).
fn corrupt(rng: &mut Rng, g: &Geometry, indices: &mut [u32]) -> u64 {
    let plane = g.plane_in() as u64;
    for (e, index) in indices.iter_mut().enumerate() {
        if !rng.chance(0.2) {
            continue;
        }
        let window = window_of(g, e);
        *index = match rng.range(0, 5) {
            // Outside the plane, including "negative" values other than −1.
            0 => (plane + rng.range(0, 1000) as u64).min(u32::MAX as u64 - 1) as u32,
            1 => [u32::MAX - 1, 0x8000_0000, u32::MAX - 7, -2i32 as u32][rng.range(0, 3)],
            // −1, valid only where the window holds padding only.
            2 => NO_INDEX,
            // Inside the plane but outside the window (when the plane has such a position).
            _ => {
                let mut p = rng.range(0, plane as usize - 1) as u32;
                for _ in 0..64 {
                    if !cpu::index_valid(g, window, p) {
                        break;
                    }
                    p = rng.range(0, plane as usize - 1) as u32;
                }
                p
            }
        };
    }
    (0..indices.len()).filter(|&e| !cpu::index_valid(g, window_of(g, e), indices[e])).count() as u64
}

/// The context's choice (`None`), then the fixed-cover gathers where they apply: they find the
/// windows each block anchors from its phase (`fixed_anchors` in common.wgsl), not by `anchor`.
fn counted_variants(ctx: &Context, spec: &PoolSpec) -> Vec<Option<Variant>> {
    let fixed = ctx.backward_variants(spec).unwrap().into_iter().filter(|v| v.fixed_cover).map(Some);
    std::iter::once(None).chain(fixed).collect()
}

fn invalid_indices<T: Element>(seed: u64) {
    let mut rng = Rng::new(seed);
    for (n, spec) in index_specs().iter().enumerate() {
        let g = spec.validate().unwrap();
        let context = format!("{} case {n} {spec:?}", T::DTYPE.name());
        let input: Vec<T> = nasty_values(&mut rng, g.input_len());
        let grad: Vec<T> = gradients(&mut rng, g.output_len());
        let fwd = reference::forward(spec, &input).unwrap();
        let want = reference::backward(spec, &grad, &fwd.indices).unwrap();
        for round in 0..4 {
            let mut bad = fwd.indices.clone();
            let count = corrupt(&mut rng, &g, &mut bad);
            if count == 0 {
                continue;
            }
            let context = format!("{context} round {round}");
            let expect = Err(Error::InvalidIndices { count });
            assert_eq!(reference::backward(spec, &grad, &bad), expect, "{context}: reference");
            assert_eq!(cpu::backward(spec, &grad, &bad), expect, "{context}: cpu");
            for ctx in contexts().iter().filter(|c| c.supports(T::DTYPE)) {
                let case = Case::start(ctx);
                let gpu = format!("[{}] {context}", ctx.describe());
                assert_eq!(ctx.backward(spec, &grad, &bad), expect, "{gpu}: host level");
                for variant in counted_variants(ctx, spec) {
                    let (_, counted) =
                        record_backward_counted(ctx, spec, &grad, &bad, variant).expect("record_backward");
                    assert_eq!(counted as u64, count, "{gpu} {variant:?}: the counter record_backward wrote");
                }
                case.pass();
            }
        }
        // Wrong lengths: the same ShapeMismatch everywhere, before anything runs.
        for (go_len, idx_len) in [(g.output_len(), g.output_len() + 1), (g.output_len() - 1, g.output_len()), (0, 0)] {
            let want_err = cpu::backward(spec, &grad[..go_len.min(grad.len())], &vec![0; idx_len]);
            assert!(matches!(want_err, Err(Error::ShapeMismatch { .. })), "{context}: {want_err:?}");
            for ctx in contexts().iter().filter(|c| c.supports(T::DTYPE)) {
                let got = ctx.backward(spec, &grad[..go_len.min(grad.len())], &vec![0; idx_len]);
                assert_eq!(got, want_err, "[{}] {context}: lengths {go_len}, {idx_len}", ctx.describe());
            }
        }
        // The valid indices still give the reference's gradient, and a zero count.
        for ctx in contexts().iter().filter(|c| c.supports(T::DTYPE)) {
            let case = Case::start(ctx);
            let gpu = format!("[{}] {context}", ctx.describe());
            for variant in counted_variants(ctx, spec) {
                let (grad_input, counted) = record_backward_counted(ctx, spec, &grad, &fwd.indices, variant).unwrap();
                assert_eq!(counted, 0, "{gpu} {variant:?}: counter for valid indices");
                assert_bits_eq("grad_input", &format!("{gpu} {variant:?}"), &grad_input, &want);
            }
            assert_bits_eq("grad_input", &gpu, &ctx.backward(spec, &grad, &fwd.indices).unwrap(), &want);
            case.pass();
        }
    }
    // The fixed-cover gathers did run.
    for ctx in contexts().iter().filter(|c| c.supports(T::DTYPE)) {
        let fixed = index_specs().iter().filter(|s| counted_variants(ctx, s).len() > 1).count();
        assert!(fixed >= 3, "[{}] only {fixed} problems with fixed-cover gathers", ctx.describe());
    }
}

/// Impossible indices: `InvalidIndices` with the same count from the reference, the CPU, the
/// GPU host level and the counter of `record_backward` (counted in the same pass).
#[test]
fn robustness_invalid_indices_f32() {
    invalid_indices::<f32>(61);
}

#[test]
fn robustness_invalid_indices_f16() {
    invalid_indices::<f16>(62);
}

// ------------------------------------------------------------------------------------------------
// 4. Device faults and load
// ------------------------------------------------------------------------------------------------

/// The adapters `WGPU_BACKEND` selects, each with a context of the test's own.
fn own_contexts(options: &ContextOptions) -> Vec<Context> {
    wgpool::gpu::enumerate_adapters_blocking(options)
        .iter()
        .filter_map(|a| pollster::block_on(Context::from_adapter(a, options)).ok())
        .collect()
}

/// Runs `f` on a thread of its own and fails (instead of hanging the suite) if it takes longer
/// than `limit`.
fn within<R: Send + 'static>(what: &str, limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(catch_unwind(AssertUnwindSafe(f)));
    });
    match receiver.recv_timeout(limit) {
        Ok(Ok(r)) => r,
        Ok(Err(p)) => panic!("{what} panicked: {}", panic_text(&*p)),
        Err(_) => panic!("{what} did not return within {limit:?} (a hang)"),
    }
}

fn small_problem() -> (PoolSpec, Vec<f32>, Vec<f32>) {
    let spec = PoolSpec::new(InputShape::nchw(2, 3, 7, 6), PoolParams::new([3, 2]).stride([2, 1]).padding([1, 1]));
    let g = spec.validate().unwrap();
    let mut rng = Rng::new(404);
    (spec, nasty_values(&mut rng, g.input_len()), gradients(&mut rng, g.output_len()))
}

/// Checks that `ctx` computes `small_problem` right.
fn assert_works(ctx: &Context, what: &str) {
    let (spec, x, go) = small_problem();
    let want = reference::forward(&spec, &x).unwrap();
    let got = ctx.forward(&spec, &x).unwrap_or_else(|e| panic!("[{}] {what}: forward: {e}", ctx.describe()));
    assert_bits_eq("values", &format!("[{}] {what}", ctx.describe()), &got.values, &want.values);
    assert_eq!(got.indices, want.indices);
    let gi = ctx
        .backward(&spec, &go, &want.indices)
        .unwrap_or_else(|e| panic!("[{}] {what}: backward: {e}", ctx.describe()));
    assert_bits_eq("grad_input", what, &gi, &reference::backward(&spec, &go, &want.indices).unwrap());
}

/// Requests above the device's limits are refused before anything is allocated, and the same
/// context serves the next call.
#[test]
fn robustness_over_limit_requests_leave_the_context_usable() {
    let caps = ContextOptions {
        max_buffer_size: Some(1 << 20),
        max_storage_buffer_binding_size: Some(16 << 10),
        ..Default::default()
    };
    let contexts = own_contexts(&caps);
    assert!(!contexts.is_empty(), "no adapter");
    for ctx in &contexts {
        let case = Case::start(ctx);
        let name = ctx.describe();
        assert_eq!(ctx.limits().max_buffer_size, 1 << 20, "[{name}] the cap is the device's limit");
        // 1 MiB + 4 bytes of input: one buffer above max_buffer_size.
        let big = PoolSpec::new(InputShape::nchw(1, 1, 1, (1 << 18) + 1), PoolParams::new([1, 2]));
        let x = vec![1.0f32; (1 << 18) + 1];
        let (r, cost) = measure(|| ctx.forward(&big, &x));
        assert!(
            matches!(&r, Err(Error::TooLarge { what, .. }) if what.contains("GPU buffer")),
            "[{name}] forward above max_buffer_size: {r:?}"
        );
        assert_cheap("forward above max_buffer_size", &name, cost);
        assert_works(ctx, "after a forward above max_buffer_size");
        // grad_input of 4 MiB for a grad_output of 256 KiB.
        let spec = PoolSpec::new(InputShape::nchw(1, 1, 1024, 1024), PoolParams::new([2, 2]));
        let go = vec![1.0f32; 512 * 512];
        let idx = vec![0u32; 512 * 512];
        let (r, cost) = measure(|| ctx.backward(&spec, &go, &idx));
        assert!(matches!(r, Err(Error::TooLarge { .. })), "[{name}] backward above max_buffer_size: {r:?}");
        assert_cheap("backward above max_buffer_size", &name, cost);
        assert_works(ctx, "after a backward above max_buffer_size");
        // One plane of 64 KiB cannot be bound in 16 KiB...
        let spec = PoolSpec::new(InputShape::nchw(1, 1, 128, 128), PoolParams::new([2, 2]));
        let x = vec![0.5f32; 128 * 128];
        let r = ctx.forward(&spec, &x);
        assert!(matches!(r, Err(Error::BindingTooSmall { unit: "plane", .. })), "[{name}] {r:?}");
        let spec = spec.layout(Layout::ChannelsLast);
        let r = ctx.forward(&spec, &x);
        assert!(matches!(r, Err(Error::BindingTooSmall { unit: "image", .. })), "[{name}] {r:?}");
        assert_works(ctx, "after BindingTooSmall");
        // ...but many small planes are split into chunks that fit, with the right results.
        let spec =
            PoolSpec::new(InputShape::nchw(3, 7, 20, 20), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]));
        let x: Vec<f32> = nasty_values(&mut Rng::new(5), 3 * 7 * 400);
        let got = ctx.forward(&spec, &x).unwrap();
        let want = reference::forward(&spec, &x).unwrap();
        assert_bits_eq("values", &name, &got.values, &want.values);
        assert_eq!(got.indices, want.indices, "[{name}] chunked indices");
        case.pass();
    }
}

/// A destroyed device: every later call is an error at once (`DeviceLost` on a context wgpool
/// created), never a hang or a panic, including on a device the caller made (whose default
/// error handler panics on any error that escapes wgpool's error scopes).
#[test]
fn robustness_lost_device_fails_fast() {
    let options = ContextOptions::default();
    for adapter in wgpool::gpu::enumerate_adapters_blocking(&options) {
        let info = adapter.get_info();
        let name = format!("{:?}/{}", info.backend, info.name);
        let ctx = pollster::block_on(Context::from_adapter(&adapter, &options)).expect("context");
        let case = Case::start(&ctx);
        assert_works(&ctx, "before the loss");
        let kept = buffer_for_after_the_loss(&ctx);
        ctx.device().destroy();
        assert_device_lost_at_once(ctx, &name, kept);
        // A device of the caller's own (wgpu's default handler panics on uncaptured errors).
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
        let ctx = Context::from_device(device, queue);
        assert_works(&ctx, "a caller's device");
        ctx.device().destroy();
        let n = name.clone();
        within(&format!("[{name}] calls after destroying a caller's device"), Duration::from_secs(60), move || {
            let (spec, x, go) = small_problem();
            for round in 0..3 {
                let f = ctx.forward(&spec, &x);
                let b = ctx.backward(&spec, &go, &vec![0; go.len()]);
                assert!(f.is_err() && b.is_err(), "[{n}] round {round}: {f:?} {b:?}");
            }
        });
        case.pass();
    }
}

/// A device destroyed after calls whose pooled staging buffers have been mapped again (the
/// caller polled, or the background thread of `background_compiles` did), and while that thread
/// may still be compiling: later calls say `DeviceLost` at once, not that a staging buffer's
/// mapping failed, and nothing hangs.
#[test]
fn robustness_lost_device_after_polls_and_background_compiles() {
    for background_compiles in [false, true] {
        let options = ContextOptions { background_compiles, ..Default::default() };
        for adapter in wgpool::gpu::enumerate_adapters_blocking(&options) {
            let ctx = pollster::block_on(Context::from_adapter(&adapter, &options)).expect("context");
            let case = Case::start(&ctx);
            let name = format!("{} background_compiles {background_compiles}", ctx.describe());
            // A new shape's first passes run the generic kernels (and queue its own pipelines).
            let (spec, x, go) = small_problem();
            let out = ctx.forward(&spec, &x).unwrap();
            ctx.backward(&spec, &go, &out.indices).unwrap();
            let kept = buffer_for_after_the_loss(&ctx);
            if !background_compiles {
                // The uploads' staging buffers finish mapping again.
                ctx.device().poll(wgpu::PollType::Wait { submission_index: None, timeout: None }).unwrap();
            }
            // With background compiles, the thread may still be polling while the calls below run.
            ctx.device().destroy();
            assert_device_lost_at_once(ctx, &name, kept);
            case.pass();
        }
    }
}

/// A buffer made before the loss, for [`assert_device_lost_at_once`]'s encoder-level calls.
fn buffer_for_after_the_loss(ctx: &Context) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("made before the loss"),
        size: 4096,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// On `ctx`, whose device wgpool created and which has just been destroyed: three rounds of host
/// and encoder-level calls and a wait on `small_problem`, each `DeviceLost` within 5 s.
fn assert_device_lost_at_once(ctx: Context, name: &str, kept: wgpu::Buffer) {
    let n = name.to_string();
    within(&format!("[{name}] calls after destroy"), Duration::from_secs(60), move || {
        let (spec, x, go) = small_problem();
        let idx = reference::forward(&spec, &x).unwrap().indices;
        for round in 0..3 {
            let start = Instant::now();
            let f = ctx.forward(&spec, &x);
            let b = ctx.backward(&spec, &go, &idx);
            let mut encoder = ctx.device().create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
            let buffers = ForwardBuffers { input: (&kept).into(), values: (&kept).into(), indices: (&kept).into() };
            let r = ctx.record_forward(&mut encoder, &spec, DType::F32, &buffers, RecordOptions::default());
            let w = ctx.wait(None);
            for (what, e) in [("forward", f.err()), ("backward", b.err()), ("record_forward", r.err())] {
                assert!(matches!(e, Some(Error::DeviceLost(_))), "[{n}] round {round}: {what} after destroy: {e:?}");
            }
            assert!(matches!(w, Err(Error::DeviceLost(_))), "[{n}] wait after destroy: {w:?}");
            assert!(start.elapsed() < Duration::from_secs(5), "[{n}] slow: {:?}", start.elapsed());
            // Give a background thread time to poll between rounds.
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

/// `ContextOptions::timeout`: a wait longer than the timeout is `Error::Timeout`, and the context
/// recovers once the GPU has finished. How long the GPU takes is not under the test's control:
/// on lavapipe (Vulkan) a pass over 256 K elements always outlasts a 1 ns timeout; wgpu's GL
/// backend waits inside the submission on llvmpipe, so there the same call simply succeeds.
#[test]
fn robustness_timeout_is_an_error_and_the_context_recovers() {
    let options = ContextOptions { timeout: Some(Duration::from_nanos(1)), ..Default::default() };
    let big = PoolSpec::new(InputShape::nchw(1, 2, 256, 512), PoolParams::new([3, 3]).stride([1, 1]).padding([1, 1]));
    let x: Vec<f32> = nasty_values(&mut Rng::new(9), 2 * 256 * 512);
    let want = reference::forward(&big, &x).unwrap();
    for ctx in own_contexts(&options) {
        let case = Case::start(&ctx);
        let name = ctx.describe();
        let mut timeouts = 0;
        for _ in 0..3 {
            match ctx.forward(&big, &x) {
                Ok(out) => {
                    assert_bits_eq("values", &name, &out.values, &want.values);
                    assert_eq!(out.indices, want.indices);
                }
                Err(Error::Timeout { .. }) => timeouts += 1,
                Err(e) => panic!("[{name}] a timed wait: {e}"),
            }
        }
        // The context serves later calls once the GPU caught up.
        let (spec, small_x, _) = small_problem();
        let small_want = reference::forward(&spec, &small_x).unwrap();
        let start = Instant::now();
        let recovered = loop {
            match ctx.forward(&spec, &small_x) {
                Ok(out) => break out,
                Err(Error::Timeout { .. }) if start.elapsed() < Duration::from_secs(60) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("[{name}] after {timeouts} timeouts the context fails: {e}"),
            }
        };
        assert_bits_eq("values", &name, &recovered.values, &small_want.values);
        eprintln!("[{name}] timeout: {timeouts} of 3 big calls timed out; recovered in {:?}", start.elapsed());
        let software_vulkan = ctx.adapter_info().backend == wgpu::Backend::Vulkan
            && ctx.adapter_info().device_type == wgpu::DeviceType::Cpu;
        if software_vulkan {
            assert!(timeouts > 0, "[{name}] a 1 ns timeout never fired on a pass of 256 K elements");
        }
        case.pass();
    }
}

/// One context, many threads, different problems at once: every result equals the reference.
/// Through the specialised kernels, then with the defaults' generic first passes and compiles
/// on the background thread, so that passes meet pipelines while they are queued, compiled and
/// published.
#[test]
fn robustness_one_context_many_threads() {
    let mut rng = Rng::new(77);
    let specs: Vec<PoolSpec> = (0..6).map(|_| random_spec(&mut rng, 12)).collect();
    let tiered = ContextOptions { generic_calls: Some(1), background_compiles: true, ..Default::default() };
    let tiered: Vec<Context> =
        contexts().iter().map(|base| super::common::context_with(base, tiered.clone())).collect();
    for ctx in contexts().iter().chain(&tiered) {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for thread in 0..6usize {
                let specs = &specs;
                scope.spawn(move || {
                    let mut rng = Rng::new(1000 + thread as u64);
                    for round in 0..8 {
                        let case = Case::start(ctx);
                        let spec = &specs[(thread + round) % specs.len()];
                        let g = spec.validate().unwrap();
                        let context = format!("[{}] thread {thread} round {round} {spec:?}", ctx.describe());
                        let x: Vec<f32> = nasty_values(&mut rng, g.input_len());
                        let want = reference::forward(spec, &x).unwrap();
                        let got = ctx.forward(spec, &x).unwrap_or_else(|e| panic!("{context}: {e}"));
                        assert_bits_eq("values", &context, &got.values, &want.values);
                        assert_eq!(got.indices, want.indices, "{context}");
                        let go: Vec<f32> = gradients(&mut rng, g.output_len());
                        let gi = ctx.backward(spec, &go, &got.indices).unwrap_or_else(|e| panic!("{context}: {e}"));
                        assert_bits_eq(
                            "grad_input",
                            &context,
                            &gi,
                            &reference::backward(spec, &go, &want.indices).unwrap(),
                        );
                        if round % 3 == 2 {
                            // An error in one thread leaves the others alone.
                            let mut bad = got.indices.clone();
                            bad[0] = u32::MAX - 1;
                            assert_eq!(
                                ctx.backward(spec, &go, &bad),
                                Err(Error::InvalidIndices { count: 1 }),
                                "{context}"
                            );
                        }
                        case.pass();
                    }
                });
            }
        });
        eprintln!("[{}] 6 threads x 8 rounds in {:?}", ctx.describe(), start.elapsed());
    }
}

// ------------------------------------------------------------------------------------------------
// 6. Malformed files and parameters through the real binary
// ------------------------------------------------------------------------------------------------

/// What `tests/suite/cli.rs` does not cover: absurd numbers in the flags, headers of every
/// version with bad bytes, index files no forward pass wrote, on `--device cpu` and on
/// `--device gpu` with `WGPU_BACKEND=vulkan` and `gl`. Each call must exit non-zero (1, or 2 for
/// a flag clap cannot parse) with an `error: ...` last line, without a panic, without creating a
/// file and without touching an existing one.
#[cfg(feature = "cli")]
mod tool {
    use std::path::PathBuf;
    use std::process::{Command, Output};
    use std::sync::atomic::{AtomicU64, Ordering};

    use wgpool::cpu::reference;
    use wgpool::npy;
    use wgpool::{InputShape, PoolParams, PoolSpec};

    const BIN: &str = env!("CARGO_BIN_EXE_wgpool");
    const SENTINEL: &[u8] = b"an existing output that a failed call must leave alone\n";

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("wgpool-robustness-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn listing(&self) -> Vec<String> {
            let mut v: Vec<String> =
                std::fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
            v.sort();
            v
        }
        fn write(&self, name: &str, bytes: &[u8]) {
            std::fs::write(self.0.join(name), bytes).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A 1×2×5×5 input, its kernel-2 indices and a grad_output, and an existing `old.npy`.
    fn fixture() -> TempDir {
        let dir = TempDir::new();
        let x: Vec<f32> = (0..50).map(|i| ((i * 7) % 11) as f32).collect();
        let spec = PoolSpec::new(InputShape::nchw(1, 2, 5, 5), PoolParams::new([2, 2]));
        let idx = reference::forward(&spec, &x).unwrap().indices;
        dir.write("x.npy", &npy::encode_values(&[1, 2, 5, 5], &x).unwrap());
        dir.write("idx.npy", &npy::encode_indices(&[1, 2, 2, 2], &idx).unwrap());
        dir.write("go.npy", &npy::encode_values(&[1, 2, 2, 2], &[1.0f32; 8]).unwrap());
        dir.write("old.npy", SENTINEL);
        dir
    }

    /// A `.npy` file from a raw dictionary (bytes) and data, in format `version`.
    fn raw(version: u8, dict: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY".to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(dict);
        out.extend_from_slice(data);
        out
    }

    fn dict(descr: &str, fortran: bool, shape: &str) -> Vec<u8> {
        let f = if fortran { "True" } else { "False" };
        format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}\n").into_bytes()
    }

    fn le<T: bytemuck::Pod>(v: &[T]) -> Vec<u8> {
        bytemuck::cast_slice(v).to_vec()
    }

    type Setup = fn(&TempDir);

    /// (exit code, message fragment, arguments with `{dir}`, setup).
    fn cases() -> Vec<(i32, &'static str, Vec<&'static str>, Setup)> {
        let fwd = |extra: &[&'static str]| {
            let mut v = vec!["forward", "{dir}/x.npy"];
            v.extend_from_slice(extra);
            v.extend_from_slice(&["--values", "{dir}/old.npy", "--indices", "{dir}/new_i.npy"]);
            v
        };
        let bwd = |shape: &'static str, extra: &[&'static str]| {
            let mut v = vec!["backward", "{dir}/go.npy", "--indices", "{dir}/idx.npy", "--input-shape", shape];
            v.extend_from_slice(extra);
            v.extend_from_slice(&["--grad-input", "{dir}/old.npy"]);
            v
        };
        let none: Setup = |_| {};
        let k2 = ["--kernel", "2"];
        vec![
            // Absurd numbers in the flags.
            (
                1,
                "output size is too small",
                fwd(&["--kernel", "18446744073709551615", "--dilation", "18446744073709551615"]),
                none,
            ),
            (1, "output size is too small", fwd(&["--kernel", "2", "--dilation", "4294967296"]), none),
            (1, "kernel on spatial axis", fwd(&["--kernel", "4294967297", "--padding", "2147483648"]), none),
            (1, "stride on spatial axis 0 is too large", fwd(&["--kernel", "2", "--stride", "4294967296"]), none),
            (2, "invalid value", fwd(&["--kernel", "2", "--stride", "18446744073709551616"]), none),
            (1, "--padding has 3 values", fwd(&["--kernel", "2,2", "--padding", "1,1,1"]), none),
            (1, "too large", bwd("4294967296,4294967296,4294967296,2", &k2), none),
            (1, "input plane", bwd("1,1,65536,65536", &["--kernel", "1"]), none),
            (1, "output size on spatial axis 0", bwd("1,1,18446744073709551615", &["--kernel", "1"]), none),
            (1, "grad_output has shape", bwd("0,2,5,5", &k2), none),
            (1, "rank 3, 4 or 5", bwd("1,2,5,5,5,5,5", &k2), none),
            // Headers of every version with bad bytes.
            (1, "above the limit", fwd(&k2), |d| {
                d.write(
                    "x.npy",
                    &raw(2, &[b' '; 16], &[])
                        .iter()
                        .enumerate()
                        .map(|(i, &b)| if (8..12).contains(&i) { 0xff } else { b })
                        .collect::<Vec<_>>(),
                )
            }),
            (1, "not valid UTF-8", fwd(&k2), |d| {
                d.write(
                    "x.npy",
                    &raw(3, b"{'descr': '<f4\xff', 'fortran_order': False, 'shape': (1, 2, 5, 5), }\n", &[0; 200]),
                )
            }),
            (1, "invalid dtype", fwd(&k2), |d| {
                d.write(
                    "x.npy",
                    &raw(1, b"{'descr': '\xe9', 'fortran_order': False, 'shape': (1, 2, 5, 5), }\n", &[0; 200]),
                )
            }),
            (1, "bad .npy header", fwd(&k2), |d| {
                d.write(
                    "x.npy",
                    &raw(1, b"{'descr': '<f4',\x00 'fortran_order': False, 'shape': (1, 2, 5, 5), }\n", &[0; 200]),
                )
            }),
            (1, "more than 64", fwd(&k2), |d| {
                d.write(
                    "x.npy",
                    &raw(
                        1,
                        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}\n", "1, ".repeat(65))
                            .as_bytes(),
                        &[0; 4],
                    ),
                )
            }),
            (1, "empty file", fwd(&k2), |d| d.write("x.npy", b"")),
            (1, "float32 or float16", fwd(&k2), |d| {
                d.write("x.npy", &raw(1, &dict("<u4", false, "(1, 2, 5, 5)"), &[0; 200]))
            }),
            (1, "rank 3, 4 or 5", fwd(&k2), |d| d.write("x.npy", &raw(1, &dict("<f4", false, "()"), &[0; 4]))),
            (1, "truncated", fwd(&k2), |d| d.write("x.npy", &raw(1, &dict(">f4", true, "(1, 2, 5, 5)"), &[0; 199]))),
            (1, "too large", fwd(&k2), |d| {
                d.write("x.npy", &raw(1, &dict("<f4", false, "(0, 18446744073709551615, 18446744073709551615)"), &[]))
            }),
            (1, "channels size must be non-zero", fwd(&["--kernel", "2", "--layout", "nhwc"]), |d| {
                d.write("x.npy", &raw(1, &dict("<f4", false, "(1, 5, 5, 0)"), &[]))
            }),
            // Index and gradient files no forward pass wrote.
            (1, "cannot come from a forward pass", bwd("1,2,5,5", &k2), |d| {
                d.write(
                    "idx.npy",
                    &raw(1, &dict("<u4", false, "(1, 2, 2, 2)"), &le(&[0xFFFF_FFFEu32, 2, 10, 12, 0, 2, 10, 12])),
                )
            }),
            (1, "cannot come from a forward pass", bwd("1,2,5,5", &k2), |d| {
                d.write("idx.npy", &raw(1, &dict("<i8", false, "(1, 2, 2, 2)"), &le(&[-1i64; 8])))
            }),
            (1, "cannot come from a forward pass", bwd("1,2,5,5", &k2), |d| {
                d.write("idx.npy", &raw(1, &dict(">i4", true, "(1, 2, 2, 2)"), &[0u8; 32]))
            }),
            (1, "astype(np.float32)", bwd("1,2,5,5", &k2), |d| {
                d.write("go.npy", &raw(1, &dict(">f8", false, "(1, 2, 2, 2)"), &[0; 64]))
            }),
            (1, "int64, int32 or uint32", bwd("1,2,5,5", &k2), |d| {
                d.write("idx.npy", &raw(1, &dict("<f2", false, "(1, 2, 2, 2)"), &[0; 16]))
            }),
            (1, "indices has shape", bwd("1,2,5,5", &k2), |d| {
                d.write("idx.npy", &raw(1, &dict("<i4", true, "(2, 2, 2, 1)"), &[0; 32]))
            }),
            (1, "is a directory", bwd("1,2,5,5", &k2), |d| {
                std::fs::create_dir(d.0.join("idx.npy"))
                    .map(|_| ())
                    .or_else(|_| {
                        std::fs::remove_file(d.0.join("idx.npy")).and_then(|_| std::fs::create_dir(d.0.join("idx.npy")))
                    })
                    .unwrap()
            }),
        ]
    }

    fn run_all(backend: Option<&str>) {
        let device = if backend.is_some() { "gpu" } else { "cpu" };
        for (code, needle, args, setup) in cases() {
            let dir = fixture();
            setup(&dir);
            let before = dir.listing();
            let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &dir.0.display().to_string())).collect();
            let mut cmd = Command::new(BIN);
            cmd.args(&args).args(["--device", device]).env_remove("WGPU_ADAPTER_NAME");
            match backend {
                Some(b) => cmd.env("WGPU_BACKEND", b),
                None => cmd.env_remove("WGPU_BACKEND"),
            };
            let out: Output = cmd.output().expect("run wgpool");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let what = format!("[{device} {backend:?}] {args:?}");
            assert!(
                !stderr.contains("no GPU adapter found"),
                "{what}: no adapter for WGPU_BACKEND={backend:?}:\n{stderr}"
            );
            assert!(!stderr.contains("panicked"), "{what}: wgpool panicked:\n{stderr}");
            assert_eq!(out.status.code(), Some(code), "{what}: exit code; stderr:\n{stderr}");
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
            assert!(last.starts_with("error:"), "{what}: the last line is not the error: {last:?}");
            assert!(last.contains(needle), "{what}: {last:?} lacks {needle:?}");
            assert_eq!(std::fs::read(dir.0.join("old.npy")).unwrap(), SENTINEL, "{what}: old.npy was modified");
            assert_eq!(dir.listing(), before, "{what}: files were created");
            assert!(out.stdout.is_empty(), "{what}: wrote to stdout");
        }
    }

    #[test]
    fn robustness_tool_refuses_malformed_input_cpu() {
        run_all(None);
    }

    #[test]
    fn robustness_tool_refuses_malformed_input_vulkan() {
        run_all(Some("vulkan"));
    }

    #[test]
    fn robustness_tool_refuses_malformed_input_gl() {
        run_all(Some("gl"));
    }
}
