//! Soak: thousands of forward/backward rounds with varying shapes on every adapter, showing that
//! GPU-side objects and process memory stay flat (no leak).
//!
//! The rounds run in a child process (this test binary, re-run with only [`soak_child`]), so that
//! the resident set size measures the soak alone and not the tests running beside it. Per adapter,
//! after a warm-up that meets every shape once, it samples
//! - `Context::cached_objects()` (uniform buffers, bind groups, pooled buffers),
//! - wgpu's allocator report where the backend has one (Vulkan: live allocations and bytes),
//! - the process's resident set (`VmRSS` from `/proc/self/status`),
//!
//! and again at the end, and asserts that each grew by less than a small bound. wgpu's
//! `Device::get_internal_counters()` reports only zeros without wgpu's `counters` feature (which
//! wgpool does not enable), so it is printed but not relied on.
//!
//! CI runs a short soak (`WGPOOL_SOAK_ROUNDS`, default 2000 rounds per adapter, a second or two each on lavapipe and llvmpipe);
//! the long one is opt-in: `WGPOOL_SOAK_ROUNDS=20000 cargo test --test tests -- soak --nocapture`.

use std::process::Command;
use std::time::Instant;

use wgpool::cpu::reference;
use wgpool::{Context, ContextOptions, DType, Element, Error, PoolSpec, f16};

use super::common::{Case, Rng, assert_bits_eq, gradients, nasty_values, random_spec};

const DEFAULT_ROUNDS: usize = 2000;

fn rounds() -> usize {
    std::env::var("WGPOOL_SOAK_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_ROUNDS)
}

/// The resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// What is sampled after the warm-up and at the end.
#[derive(Debug, Clone, Copy)]
struct Sample {
    objects: usize,
    rss: u64,
    /// Live allocations and their bytes, where the backend reports them.
    allocations: Option<(usize, u64)>,
}

/// Samples after dropping the caches and letting wgpu free what they held, so that the GPU
/// allocations counted are those nothing in wgpool should still hold (plus pipelines).
fn sample(ctx: &Context) -> Sample {
    let objects = ctx.cached_objects();
    ctx.clear_caches();
    ctx.wait(None).expect("wait for the GPU");
    let _ = ctx.device().poll(wgpool::wgpu::PollType::wait_indefinitely());
    let report = ctx.device().generate_allocator_report();
    Sample { objects, rss: rss_bytes(), allocations: report.map(|r| (r.allocations.len(), r.total_allocated_bytes)) }
}

/// One round: forward and backward of `spec` (batch `batch`) in `T`, checked against the
/// reference; every fourth round also a refused call of each kind.
fn round<T: Element>(ctx: &Context, spec: &PoolSpec, rng: &mut Rng, n: usize) {
    let g = spec.validate().expect("valid");
    let context = format!("[{}] soak round {n} {} {spec:?}", ctx.describe(), T::DTYPE.name());
    let x: Vec<T> = nasty_values(rng, g.input_len());
    let got = ctx.forward(spec, &x).unwrap_or_else(|e| panic!("{context}: forward: {e}"));
    let want = reference::forward(spec, &x).unwrap();
    assert_bits_eq("values", &context, &got.values, &want.values);
    assert_eq!(got.indices, want.indices, "{context}: indices");
    let go: Vec<T> = gradients(rng, g.output_len());
    let gi = ctx.backward(spec, &go, &got.indices).unwrap_or_else(|e| panic!("{context}: backward: {e}"));
    assert_bits_eq("grad_input", &context, &gi, &reference::backward(spec, &go, &want.indices).unwrap());
    if n % 4 == 3 {
        // Refusals (before and after the GPU ran) must not leak either.
        let mut bad = got.indices.clone();
        bad[0] = u32::MAX - 1;
        assert_eq!(ctx.backward(spec, &go, &bad), Err(Error::InvalidIndices { count: 1 }), "{context}");
        assert!(matches!(ctx.forward(spec, &x[1..]), Err(Error::ShapeMismatch { .. })), "{context}");
    }
}

fn soak(ctx: &Context, rounds: usize) {
    let name = ctx.describe();
    let mut rng = Rng::new(0x50a4);
    // 12 geometries × 3 batch sizes, f32 and (where the adapter has it) f16: 72 problems.
    let mut specs: Vec<PoolSpec> = Vec::new();
    for _ in 0..12 {
        let spec = random_spec(&mut rng, 10);
        for batch in 1..=3 {
            let mut s = spec.clone();
            s.input.batch = batch;
            specs.push(s);
        }
    }
    let f16_too = ctx.supports(DType::F16);
    let run = |spec: &PoolSpec, rng: &mut Rng, n: usize, half: bool| {
        if half { round::<f16>(ctx, spec, rng, n) } else { round::<f32>(ctx, spec, rng, n) }
    };
    // Warm-up: every problem once (uniforms, bind groups, pooled buffers, and pipelines: the
    // library's defaults run each geometry's first pass, batch 1, through the generic kernels and
    // compile its own pipelines at the second, batch 2).
    for (n, spec) in specs.iter().enumerate() {
        for half in [false, true] {
            if !half || f16_too {
                run(spec, &mut rng, n, half);
            }
        }
    }
    let before = sample(ctx);
    let counters = ctx.device().get_internal_counters();
    let start = Instant::now();
    // The most cached objects seen in the first and in the second half of the rounds.
    let mut most = [before.objects, 0];
    for n in 0..rounds {
        let case = Case::start(ctx);
        let spec = &specs[rng.range(0, specs.len() - 1)];
        let half = f16_too && rng.chance(0.3);
        run(spec, &mut rng, n, half);
        let half = usize::from(2 * n >= rounds);
        most[half] = most[half].max(ctx.cached_objects());
        case.pass();
    }
    let elapsed = start.elapsed();
    let after = sample(ctx);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "soak [{name}]: {rounds} rounds in {elapsed:.2?}; cached objects {} -> {} (at most {} / {} in each half); \
         RSS {:.1} -> {:.1} MiB; allocator {:?} -> {:?}; wgpu hal buffers counter {} (zero without wgpu's `counters` feature)",
        before.objects,
        after.objects,
        most[0],
        most[1],
        mib(before.rss),
        mib(after.rss),
        before.allocations,
        after.allocations,
        counters.hal.buffers.read(),
    );
    // The uniform and bind-group caches hold up to 64 entries each (the uniform one is emptied
    // when full, the bind-group one drops its least recently used entries, also past its byte
    // budget), so their count cycles or levels off; the buffer pool met every problem in the
    // warm-up. Flat means: no more objects in the second half than in the first.
    assert!(
        most[1] <= most[0] + 8,
        "[{name}] cached GPU objects keep growing: at most {} in the first half, {} in the second",
        most[0],
        most[1]
    );
    // With the caches dropped, what remains is what the context holds for good (pipelines):
    // the same count before and after, give or take wgpu's own bookkeeping.
    if let (Some((n0, b0)), Some((n1, b1))) = (before.allocations, after.allocations) {
        assert!(n1 <= n0 + 8, "[{name}] live GPU allocations grew from {n0} to {n1}");
        assert!(b1 <= b0 + (1 << 20), "[{name}] GPU memory grew from {b0} to {b1} bytes");
    }
    // Process memory: a leak of even one small buffer per round would pass this bound only for a
    // short soak; the long soak makes it plain.
    let growth = after.rss.saturating_sub(before.rss);
    let allowed = (16u64 << 20) + before.rss / 10;
    assert!(
        growth <= allowed,
        "[{name}] resident memory grew by {:.1} MiB over {rounds} rounds (allowed {:.1} MiB)",
        mib(growth),
        mib(allowed)
    );
}

/// The soak itself, on every adapter. Run in a process of its own by
/// [`soak_forward_backward_memory_stays_flat`]; ignored when the suite runs (other tests would
/// disturb its memory readings).
#[test]
#[ignore = "run in a child process by soak_forward_backward_memory_stays_flat"]
fn soak_child() {
    let options = ContextOptions::default();
    let adapters = wgpool::gpu::enumerate_adapters_blocking(&options);
    assert!(!adapters.is_empty(), "no GPU adapter (WGPU_BACKEND={:?})", std::env::var("WGPU_BACKEND").ok());
    let rounds = rounds();
    for adapter in &adapters {
        let ctx = pollster::block_on(Context::from_adapter(adapter, &options)).expect("context");
        soak(&ctx, rounds);
    }
}

/// Thousands of rounds (with `WGPOOL_SOAK_ROUNDS`) of forward and backward with varying shapes:
/// GPU objects, GPU memory and process memory stay flat.
#[test]
fn soak_forward_backward_memory_stays_flat() {
    let exe = std::env::current_exe().expect("the test binary");
    let start = Instant::now();
    let out = Command::new(exe)
        .args(["--exact", "suite::soak::soak_child", "--ignored", "--nocapture", "--test-threads=1"])
        .output()
        .expect("run the soak in a child process");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stderr.lines().filter(|l| l.starts_with("soak [")) {
        eprintln!("{line}");
    }
    assert!(out.status.success(), "the soak failed ({:?}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the soak did not run:\n{stdout}\n{stderr}");
    eprintln!("soak: {} rounds per adapter in {:.2?}", rounds(), start.elapsed());
}
