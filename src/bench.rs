//! Measuring wgpool: GPU passes timed with timestamp queries (wall time where the adapter has
//! none), the vec4-copy bandwidth ceiling, per-call overhead and the CPU path. Used by
//! `cargo bench --bench gpu` and `wgpool bench`.
//!
//! Data is random (seeded) and never all zeros; indices for backward come from a real forward pass.

use std::time::{Duration, Instant};

use crate::element::Element;
use crate::error::{Error, Result};
use crate::gpu::{BackwardBuffers, Context, ForwardBuffers, RecordOptions, Variant};
use crate::params::{Geometry, PoolSpec};

/// Forward or backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Values and indices from the input.
    Forward,
    /// Input gradient from the output gradient and indices.
    Backward,
}

impl Direction {
    /// `fwd` or `bwd`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Forward => "fwd",
            Direction::Backward => "bwd",
        }
    }
}

/// The bytes a pass must move at least: forward reads the input and writes values and u32
/// indices; backward reads gradients and indices and writes the input gradient.
pub fn bytes_moved(g: &Geometry, elem: usize, direction: Direction) -> u64 {
    let (inp, out) = (g.input_len() as u64, g.output_len() as u64);
    match direction {
        Direction::Forward => inp * elem as u64 + out * (elem as u64 + 4),
        Direction::Backward => out * (elem as u64 + 4) + inp * elem as u64,
    }
}

/// The bytes a values-only forward pass must move: the input read, the values written.
pub fn bytes_moved_values(g: &Geometry, elem: usize) -> u64 {
    (g.input_len() + g.output_len()) as u64 * elem as u64
}

/// Where a time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// GPU timestamps written at the start and end of the compute pass.
    Timestamps,
    /// Host wall time around submit and wait (adapters without `TIMESTAMP_QUERY`).
    Wall,
}

/// Samples of one measurement, in milliseconds.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Every sample.
    pub samples_ms: Vec<f64>,
    /// How they were taken.
    pub source: TimeSource,
}

impl Timing {
    /// The median sample.
    pub fn median_ms(&self) -> f64 {
        median(&self.samples_ms)
    }
}

/// The median of `samples` (NaN if empty).
pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

/// Seeded data in [-4, 4) (xorshift; no zeros runs, no ramps).
pub fn random_data<T: Element>(n: usize, seed: u64) -> Vec<T> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            T::from_f32(((x >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0)
        })
        .collect()
}

const STORAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_DST).union(wgpu::BufferUsages::COPY_SRC);

fn storage_buffer(ctx: &Context, label: &str, bytes: u64) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.next_multiple_of(4).max(4),
        usage: STORAGE,
        mapped_at_creation: false,
    })
}

/// Passes whose timestamps one query set holds: two queries each, within wgpu's limit of
/// [`wgpu::QUERY_SET_MAX_QUERIES`] (4096) per set.
pub const PASSES_PER_QUERY_SET: usize = 1024;

/// Records `iterations` passes with `record` and returns their GPU times.
///
/// With timestamps, each pass writes two into a query set of [`PASSES_PER_QUERY_SET`] passes,
/// reused: every [`PASSES_PER_QUERY_SET`] passes its ticks are resolved and read back, so any
/// number of passes works. Without, each pass is submitted alone and timed on the host.
/// No passes: no samples (and no GPU work).
pub fn time_passes(
    ctx: &Context,
    iterations: usize,
    mut record: impl FnMut(&mut wgpu::CommandEncoder, RecordOptions<'_>) -> Result<()>,
) -> Result<Timing> {
    let device = ctx.device();
    if !ctx.has_timestamps() {
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let mut encoder = device.create_command_encoder(&Default::default());
            record(&mut encoder, RecordOptions::default())?;
            let start = Instant::now();
            let submission = ctx.queue().submit([encoder.finish()]);
            ctx.wait(Some(submission))?;
            samples.push(start.elapsed().as_secs_f64() * 1e3);
        }
        return Ok(Timing { samples_ms: samples, source: TimeSource::Wall });
    }
    if iterations == 0 {
        return Ok(Timing { samples_ms: vec![], source: TimeSource::Timestamps });
    }
    let per_set = iterations.min(PASSES_PER_QUERY_SET);
    let count = 2 * per_set as u32;
    let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("wgpool bench"),
        ty: wgpu::QueryType::Timestamp,
        count,
    });
    let bytes = 8 * count as u64;
    let resolve = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgpool timestamps"),
        size: bytes,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgpool timestamps readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let period_ns = ctx.queue().get_timestamp_period() as f64;
    let mut samples = Vec::with_capacity(iterations);
    // Batches of passes per submission keep host overhead out of the GPU's way.
    const BATCH: usize = 10;
    for set_first in (0..iterations).step_by(per_set) {
        let passes = (iterations - set_first).min(per_set);
        for first in (0..passes).step_by(BATCH) {
            let mut encoder = device.create_command_encoder(&Default::default());
            for i in first..(first + BATCH).min(passes) {
                let writes = wgpu::ComputePassTimestampWrites {
                    query_set: &queries,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                };
                record(&mut encoder, RecordOptions { timestamp_writes: Some(writes), ..Default::default() })?;
            }
            ctx.queue().submit([encoder.finish()]);
        }
        // The set's ticks, read back before the next passes write it again.
        let used = 2 * passes as u32;
        let mut encoder = device.create_command_encoder(&Default::default());
        encoder.resolve_query_set(&queries, 0..used, &resolve, 0);
        encoder.copy_buffer_to_buffer(&resolve, 0, &readback, 0, 8 * used as u64);
        let submission = ctx.queue().submit([encoder.finish()]);
        let slice = readback.slice(..8 * used as u64);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        ctx.wait(Some(submission))?;
        let ticks: Vec<u64> = {
            let view = slice.get_mapped_range().map_err(|e| Error::BufferMap(e.to_string()))?;
            bytemuck::pod_collect_to_vec(&view)
        };
        readback.unmap();
        samples.extend(ticks.chunks(2).map(|t| t[1].wrapping_sub(t[0]) as f64 * period_ns / 1e6));
    }
    Ok(Timing { samples_ms: samples, source: TimeSource::Timestamps })
}

/// Device-resident tensors of one problem: input, values, indices, output gradient, input
/// gradient and the invalid-index counter, filled with random data and real indices.
pub struct Prepared {
    /// The problem.
    pub spec: PoolSpec,
    /// Its geometry.
    pub geometry: Geometry,
    input: wgpu::Buffer,
    values: wgpu::Buffer,
    indices: wgpu::Buffer,
    grad_output: wgpu::Buffer,
    grad_input: wgpu::Buffer,
    counter: wgpu::Buffer,
    dtype: crate::DType,
}

impl Prepared {
    /// Uploads random data for `spec` and runs one forward pass so that `indices` are real.
    ///
    /// The pipelines that `spec`'s forward and backward passes pick are compiled first
    /// ([`Context::prepare`]), so that every timed pass runs them, never the generic kernels
    /// that stand in for them at a shape's first calls, nor while a compile is still under way on
    /// another thread ([`ContextOptions::background_compiles`](crate::ContextOptions::background_compiles)).
    pub fn new<T: Element>(ctx: &Context, spec: &PoolSpec, seed: u64) -> Result<Self> {
        let g = spec.validate()?;
        ctx.prepare(std::slice::from_ref(spec), T::DTYPE)?;
        let elem = T::DTYPE.size() as u64;
        let input = storage_buffer(ctx, "bench input", g.input_len() as u64 * elem);
        let values = storage_buffer(ctx, "bench values", g.output_len() as u64 * elem);
        let indices = storage_buffer(ctx, "bench indices", g.output_len() as u64 * 4);
        let grad_output = storage_buffer(ctx, "bench grad_output", g.output_len() as u64 * elem);
        let grad_input = storage_buffer(ctx, "bench grad_input", g.input_len() as u64 * elem);
        let counter = storage_buffer(ctx, "bench counter", 4);
        let write = |buffer: &wgpu::Buffer, data: Vec<T>| {
            let bytes: &[u8] = bytemuck::cast_slice(&data);
            let whole = bytes.len() / 4 * 4;
            ctx.queue().write_buffer(buffer, 0, &bytes[..whole]);
            if whole < bytes.len() {
                let mut tail = [0u8; 4];
                tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
                ctx.queue().write_buffer(buffer, whole as u64, &tail);
            }
        };
        write(&input, random_data::<T>(g.input_len(), seed));
        write(&grad_output, random_data::<T>(g.output_len(), seed + 1));
        let prepared = Self {
            spec: spec.clone(),
            geometry: g,
            input,
            values,
            indices,
            grad_output,
            grad_input,
            counter,
            dtype: T::DTYPE,
        };
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        prepared.record(ctx, &mut encoder, Direction::Forward, RecordOptions::default())?;
        let submission = ctx.queue().submit([encoder.finish()]);
        ctx.wait(Some(submission))?;
        Ok(prepared)
    }

    /// Records one pass over the prepared buffers.
    pub fn record(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        direction: Direction,
        options: RecordOptions<'_>,
    ) -> Result<()> {
        match direction {
            Direction::Forward => {
                let buffers = ForwardBuffers {
                    input: (&self.input).into(),
                    values: (&self.values).into(),
                    indices: (&self.indices).into(),
                };
                ctx.record_forward(encoder, &self.spec, self.dtype, &buffers, options)
            }
            Direction::Backward => {
                let buffers = BackwardBuffers {
                    grad_output: (&self.grad_output).into(),
                    indices: (&self.indices).into(),
                    grad_input: (&self.grad_input).into(),
                    invalid_count: (&self.counter).into(),
                };
                ctx.record_backward(encoder, &self.spec, self.dtype, &buffers, options)
            }
        }
    }

    /// Times `iterations` values-only forward passes ([`Context::record_forward_values`]) after
    /// at least `warmup` of GPU work on the same pass (their pipeline compiled first:
    /// [`Context::prepare_values`]).
    pub fn time_values(&self, ctx: &Context, warmup: Duration, iterations: usize) -> Result<Timing> {
        ctx.prepare_values(std::slice::from_ref(&self.spec), self.dtype)?;
        let record = |e: &mut wgpu::CommandEncoder, o: RecordOptions<'_>| {
            ctx.record_forward_values(e, &self.spec, self.dtype, (&self.input).into(), (&self.values).into(), o)
        };
        warm_up(ctx, warmup, record)?;
        time_passes(ctx, iterations, record)
    }

    /// Times `iterations` passes after at least `warmup` of GPU work on the same pass (so that
    /// the clocks are up and the caches hold what they hold in steady state).
    pub fn time(&self, ctx: &Context, direction: Direction, warmup: Duration, iterations: usize) -> Result<Timing> {
        self.time_variant(ctx, direction, None, warmup, iterations)
    }

    /// [`Prepared::time`] with `variant` forced ([`RecordOptions::variant`]; `None`: the
    /// context's choice).
    pub fn time_variant(
        &self,
        ctx: &Context,
        direction: Direction,
        variant: Option<Variant>,
        warmup: Duration,
        iterations: usize,
    ) -> Result<Timing> {
        let record = |e: &mut wgpu::CommandEncoder, o: RecordOptions<'_>| {
            self.record(ctx, e, direction, RecordOptions { variant, ..o })
        };
        warm_up(ctx, warmup, record)?;
        time_passes(ctx, iterations, record)
    }
}

/// Runs batches of `record` until their GPU time (wall time without timestamps) adds up to
/// `budget`, or four times that in wall time has passed.
pub fn warm_up(
    ctx: &Context,
    budget: Duration,
    mut record: impl FnMut(&mut wgpu::CommandEncoder, RecordOptions<'_>) -> Result<()>,
) -> Result<()> {
    let start = Instant::now();
    let mut gpu_ms = 0.0;
    let mut batch = 4;
    while gpu_ms < budget.as_secs_f64() * 1e3 && start.elapsed() < 4 * budget {
        gpu_ms += time_passes(ctx, batch, &mut record)?.samples_ms.iter().sum::<f64>();
        batch = (batch * 2).min(200);
    }
    Ok(())
}

/// The bytes [`copy_bandwidth`] copies when asked for `bytes`: a multiple of 16, at most the
/// adapter's largest storage binding.
pub fn copy_bytes(ctx: &Context, bytes: u64) -> u64 {
    bytes.next_multiple_of(16).min(ctx.limits().max_storage_buffer_binding_size / 16 * 16)
}

/// The bandwidth (bytes read + written per second, in GB/s) of the vec4 copy kernel
/// (`shaders/copy_vec4.wgsl`) over `bytes` bytes ([`copy_bytes`] of them): the ceiling for a
/// wgpu kernel on this adapter.
pub fn copy_bandwidth(ctx: &Context, bytes: u64, iterations: usize) -> Result<(f64, Timing)> {
    let device = ctx.device();
    let bytes = copy_bytes(ctx, bytes);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("copy_vec4"),
        source: wgpu::ShaderSource::Wgsl(include_str!("../shaders/copy_vec4.wgsl").into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("copy_vec4"),
        layout: None,
        module: &module,
        entry_point: Some("copy_vec4"),
        compilation_options: Default::default(),
        cache: None,
    });
    let source = storage_buffer(ctx, "copy source", bytes);
    let destination = storage_buffer(ctx, "copy destination", bytes);
    let data: Vec<f32> = random_data(1 << 20, 7);
    for offset in (0..bytes).step_by(4 << 20) {
        let len = (bytes - offset).min(4 << 20);
        ctx.queue().write_buffer(&source, offset, &bytemuck::cast_slice(&data)[..len as usize]);
    }
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("copy_vec4"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: source.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: destination.as_entire_binding() },
        ],
    });
    let (x, y) = crate::gpu::dispatch_size(bytes / 16, ctx.limits().max_compute_workgroups_per_dimension)?;
    let mut record = |encoder: &mut wgpu::CommandEncoder, options: RecordOptions<'_>| {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("copy_vec4"),
            timestamp_writes: options.timestamp_writes,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(x, y, 1);
        Ok(())
    };
    warm_up(ctx, Duration::from_millis(300), &mut record)?;
    let timing = time_passes(ctx, iterations, &mut record)?;
    Ok((2.0 * bytes as f64 / (timing.median_ms() * 1e6), timing))
}

/// Median wall time of `f` over `iterations` calls (after one warm-up call), in milliseconds.
pub fn time_wall<R>(iterations: usize, mut f: impl FnMut() -> Result<R>) -> Result<Timing> {
    f()?;
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Timing { samples_ms: samples, source: TimeSource::Wall })
}

/// Runs `f` until `budget` has passed (at least `min` times) and returns the wall-time samples.
pub fn time_for<R>(budget: Duration, min: usize, mut f: impl FnMut() -> Result<R>) -> Result<Timing> {
    f()?;
    let start = Instant::now();
    let mut samples = vec![];
    while samples.len() < min || start.elapsed() < budget {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Timing { samples_ms: samples, source: TimeSource::Wall })
}
