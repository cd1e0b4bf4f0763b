//! `wgpool bench`: the performance cases as a table (GPU time from timestamps, GB/s, % of the
//! vec4-copy bandwidth measured in the same run, CPU time, GPU/CPU speed-ups with and without the
//! host↔device transfers), the per-call overhead, `--json` for tooling and `--plot` for a report.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use wgpool::bench::{
    Direction, Prepared, TimeSource, Timing, bytes_moved, bytes_moved_values, copy_bandwidth, copy_bytes, random_data,
    time_for, time_wall,
};
use wgpool::cases::{self, BenchCase};
use wgpool::{Context, ContextOptions, InputShape, Layout, PoolParams, PoolSpec, cpu};

use super::{CliResult, Failure};

/// `wgpool bench` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Small shapes (the default on software adapters such as lavapipe and llvmpipe).
    #[arg(long)]
    pub quick: bool,
    /// Full-size shapes even on a software adapter.
    #[arg(long, conflicts_with = "quick")]
    pub full: bool,
    /// Only these cases (comma-separated names: A,B,C,D,E,F1,F3,G).
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<String>,
    /// Timed GPU passes per case and direction (any number: timestamps are read back in sets).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
    /// Skip the CPU path (and the GPU/CPU speed-ups).
    #[arg(long)]
    pub no_cpu: bool,
    /// Skip the host-level (upload + pass + readback) GPU timings.
    #[arg(long)]
    pub no_transfers: bool,
    /// One element per invocation everywhere (turns off the row-blocked and four-channel kernels).
    #[arg(long)]
    pub scalar_only: bool,
    /// Also time every case with one element per invocation, interleaved with the default
    /// kernels (a `scalar ms` column).
    #[arg(long, conflicts_with = "scalar_only")]
    pub compare_scalar: bool,
    /// Also time every other kernel variant that applies to each case and direction
    /// (`Context::forward_variants` / `backward_variants`), right after the default on the same
    /// buffers: a second table, and `other_variants` in the JSON (`variant` names the default).
    #[arg(long)]
    pub variants: bool,
    /// Compile new shapes' pipelines on a thread of their own
    /// (`ContextOptions::background_compiles`): the first-call line then shows whether the
    /// second call still waits for a compile.
    #[arg(long)]
    pub background_compiles: bool,
    /// Cap the workgroups per dispatch dimension (forces 2-D grids; for experiments).
    #[arg(long, value_name = "N")]
    pub max_workgroups_per_dimension: Option<u32>,
    /// wgpu memory hints for the device: `performance` (default), `memory`, or a sub-allocation
    /// block size in MiB (for experiments with large tensors).
    #[arg(long, value_name = "HINT")]
    pub memory_hints: Option<String>,
    /// GPU warm-up per case and direction, in milliseconds of GPU work.
    #[arg(long, default_value_t = 40)]
    pub warmup_ms: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also draw throughput against tensor size (GPU and CPU, forward and backward) as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// One measured row.
#[derive(Debug, Clone)]
pub struct Row {
    /// Case name.
    pub case: String,
    /// `ncx` or `nxc`.
    pub layout: &'static str,
    /// `fwd` or `bwd`.
    pub direction: &'static str,
    /// Input elements.
    pub elements: usize,
    /// Bytes the pass must move.
    pub bytes: u64,
    /// GPU pass, median ms.
    pub gpu_ms: f64,
    /// The same pass with one element per invocation, median ms (`--compare-scalar`).
    pub gpu_scalar_ms: Option<f64>,
    /// Forward rows: the values-only pass (no indices), median ms.
    pub gpu_values_ms: Option<f64>,
    /// Forward rows: the bytes the values-only pass must move.
    pub values_bytes: Option<u64>,
    /// `timestamps` or `wall`.
    pub gpu_source: &'static str,
    /// The kernel variant the context chose (what `gpu_ms` timed).
    pub variant: String,
    /// The other variants that apply, with their median ms (`--variants`).
    pub other_variants: Vec<(String, f64)>,
    /// Host slice → host vector on the GPU, median ms (upload, pass, readback).
    pub gpu_host_ms: Option<f64>,
    /// CPU path, median ms.
    pub cpu_ms: Option<f64>,
}

impl Row {
    fn gbps(&self) -> f64 {
        self.bytes as f64 / (self.gpu_ms * 1e6)
    }
}

fn selected(args: &Args, software: bool) -> Vec<BenchCase> {
    let quick = args.quick || (software && !args.full);
    let list = if quick { cases::quick() } else { cases::full() };
    list.into_iter()
        .filter(|c| args.cases.is_empty() || args.cases.iter().any(|n| n.eq_ignore_ascii_case(c.name)))
        .collect()
}

/// Runs the benchmark: every GPU measurement first, back to back on a warm GPU, then the CPU and
/// host-level ones (long CPU phases in between would let the GPU clock down).
pub fn run(args: Args) -> CliResult {
    let memory_hints = match args.memory_hints.as_deref() {
        None | Some("performance") => None,
        Some("memory") => Some(wgpool::wgpu::MemoryHints::MemoryUsage),
        Some(mib) => {
            let bytes = mib
                .parse::<u64>()
                .map_err(|_| Failure(format!("--memory-hints {mib}: expected performance, memory or a size in MiB")))?
                << 20;
            Some(wgpool::wgpu::MemoryHints::Manual { suballocated_device_memory_block_size: bytes..bytes + 1 })
        }
    };
    let options = |scalar_only| ContextOptions {
        scalar_only,
        max_compute_workgroups_per_dimension: args.max_workgroups_per_dimension,
        memory_hints: memory_hints.clone(),
        background_compiles: args.background_compiles,
        ..Default::default()
    };
    let ctx = Context::with_options(&options(args.scalar_only))?;
    let scalar_ctx = if args.compare_scalar { Some(Context::with_options(&options(true))?) } else { None };
    let software = ctx.adapter_info().device_type == wgpool::wgpu::DeviceType::Cpu;
    let list = selected(&args, software);
    if list.is_empty() {
        return Err(Failure(format!("no case matches --cases {}", args.cases.join(","))));
    }
    let info = ctx.adapter_info();
    println!(
        "adapter: {:?} {} ({:?}, driver {} {})",
        info.backend, info.name, info.device_type, info.driver, info.driver_info
    );
    println!("timing: {}", if ctx.has_timestamps() { "GPU timestamps" } else { "wall time (no TIMESTAMP_QUERY)" });
    let iterations = args.iterations as usize;
    // What the copy moves: the size asked for, within the adapter's largest storage binding.
    let copy_bytes = copy_bytes(&ctx, if software { 64 << 20 } else { 256 << 20 });
    let (copy_gbps, _) = copy_bandwidth(&ctx, copy_bytes, iterations.max(20))?;
    println!("vec4 copy: {copy_gbps:.0} GB/s (read + write, {})", mib(copy_bytes));

    let total: u64 = list.iter().map(|c| c.layouts.len() as u64 * 2).sum();
    let progress = indicatif::ProgressBar::new(2 * total).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let warmup = Duration::from_millis(args.warmup_ms);
    let mut rows = vec![];
    // GPU phase.
    for case in &list {
        for &layout in case.layouts {
            let spec = case.spec(layout);
            progress.set_message(format!("GPU {} {}", case.name, layout.name()));
            let prepared = Prepared::new::<f32>(&ctx, &spec, 1)?;
            let scalar = match &scalar_ctx {
                Some(s) => Some((s, Prepared::new::<f32>(s, &spec, 1)?)),
                None => None,
            };
            let g = prepared.geometry;
            for direction in [Direction::Forward, Direction::Backward] {
                let listed = match direction {
                    Direction::Forward => ctx.forward_variants(&spec)?,
                    Direction::Backward => ctx.backward_variants(&spec)?,
                };
                let gpu_ms = prepared.time(&ctx, direction, warmup, iterations)?.median_ms();
                let mut other_variants = vec![];
                if args.variants {
                    for &v in &listed[1..] {
                        let ms = prepared.time_variant(&ctx, direction, Some(v), warmup, iterations)?.median_ms();
                        other_variants.push((v.name(), ms));
                    }
                }
                let gpu_values_ms = match direction {
                    Direction::Forward => Some(prepared.time_values(&ctx, warmup, iterations)?.median_ms()),
                    Direction::Backward => None,
                };
                let gpu_scalar_ms = match &scalar {
                    Some((s, p)) => Some(p.time(s, direction, warmup, iterations)?.median_ms()),
                    None => None,
                };
                rows.push(Row {
                    case: case.name.to_string(),
                    layout: layout.name(),
                    direction: direction.name(),
                    elements: g.input_len(),
                    bytes: bytes_moved(&g, 4, direction),
                    gpu_ms,
                    gpu_scalar_ms,
                    gpu_values_ms,
                    values_bytes: gpu_values_ms.map(|_| bytes_moved_values(&g, 4)),
                    gpu_source: if ctx.has_timestamps() { "timestamps" } else { "wall" },
                    variant: listed[0].name(),
                    other_variants,
                    gpu_host_ms: None,
                    cpu_ms: None,
                });
                progress.inc(1);
            }
        }
    }
    drop(scalar_ctx);
    let overhead = measure_overhead(&ctx)?;
    // CPU and host-level phase.
    if !(args.no_cpu && args.no_transfers) {
        let budget = Duration::from_millis(if software { 200 } else { 400 });
        let mut row = rows.iter_mut();
        for case in &list {
            for &layout in case.layouts {
                let spec = case.spec(layout);
                progress.set_message(format!("CPU {} {}", case.name, layout.name()));
                let g = spec.validate()?;
                let input: Vec<f32> = random_data(g.input_len(), 1);
                let grad_output: Vec<f32> = random_data(g.output_len(), 2);
                let indices = cpu::forward(&spec, &input)?.indices;
                for direction in [Direction::Forward, Direction::Backward] {
                    let r = row.next().ok_or_else(|| Failure("internal: rows out of step".into()))?;
                    if !args.no_transfers {
                        r.gpu_host_ms = Some(
                            match direction {
                                Direction::Forward => time_for(budget, 3, || ctx.forward(&spec, &input).map(|_| ()))?,
                                Direction::Backward => {
                                    time_for(budget, 3, || ctx.backward(&spec, &grad_output, &indices).map(|_| ()))?
                                }
                            }
                            .median_ms(),
                        );
                    }
                    if !args.no_cpu {
                        r.cpu_ms = Some(
                            match direction {
                                Direction::Forward => time_for(budget, 3, || cpu::forward(&spec, &input).map(|_| ()))?,
                                Direction::Backward => {
                                    time_for(budget, 3, || cpu::backward(&spec, &grad_output, &indices).map(|_| ()))?
                                }
                            }
                            .median_ms(),
                        );
                    }
                    progress.inc(1);
                }
            }
        }
    }
    progress.finish_and_clear();
    print!("{}", table(&rows, copy_gbps));
    println!("{}", legend(copy_bytes));
    if args.variants {
        print!("{}", variants_table(&rows, copy_gbps));
    }
    println!(
        "per-call overhead, 1x16x32x32 k2 forward: host level {:.3} ms (upload, pass, readback); encoder level {:.3} ms (record, submit, wait); GPU pass {:.4} ms",
        overhead.host_ms, overhead.encoder_ms, overhead.gpu_ms
    );
    println!(
        "first host-level call on a new geometry (1x16xHxW k3 s2 p1, generic kernels; median of {NEW_GEOMETRIES}): forward {:.2} ms, backward {:.2} ms; the second (compiles the shape's pipelines): forward {:.2} ms, backward {:.2} ms",
        overhead.first_forward_ms, overhead.first_backward_ms, overhead.second_forward_ms, overhead.second_backward_ms
    );
    println!(
        "Context::prepare of {NEW_GEOMETRIES} other new geometries {:.1} ms (shader modules already built); then their first forward + backward {:.2} ms (new buffer sizes included), repeated {:.2} ms (medians)",
        overhead.prepare_ms, overhead.prepared_first_ms, overhead.repeat_ms
    );
    if let Some(path) = &args.json {
        let run = RunInfo { copy_gbps, copy_bytes, iterations, warmup_ms: args.warmup_ms };
        let text = json(ctx.adapter_info(), &run, &rows, &overhead);
        wgpool::npy::write_file_atomic(path, text.as_bytes())?;
    }
    if let Some(path) = &args.plot {
        super::bench_plot::draw(&ctx, path, software, args.no_cpu)?;
        println!("plot written to {}", path.display());
    }
    Ok(())
}

/// Per-call costs on a tiny tensor.
pub struct Overhead {
    /// `Context::forward` (host slice in, host vectors out), median ms.
    pub host_ms: f64,
    /// Record into an encoder, submit, wait, median ms (cached pipeline and bind group).
    pub encoder_ms: f64,
    /// The GPU time of the same pass, median ms.
    pub gpu_ms: f64,
    /// `Context::forward` on a geometry the context has not seen (so it runs the generic
    /// kernel, already compiled), median ms over [`NEW_GEOMETRIES`] geometries.
    pub first_forward_ms: f64,
    /// `Context::backward` right after, the first on that geometry, median ms.
    pub first_backward_ms: f64,
    /// The second `Context::forward` on each of those geometries (it compiles the geometry's
    /// specialised pipeline), median ms.
    pub second_forward_ms: f64,
    /// The second `Context::backward`, median ms.
    pub second_backward_ms: f64,
    /// `Context::prepare` of [`NEW_GEOMETRIES`] other new geometries, ms in all.
    pub prepare_ms: f64,
    /// The first forward and backward on a prepared geometry, median ms of their sum.
    pub prepared_first_ms: f64,
    /// The same forward and backward repeated, median ms of their sum.
    pub repeat_ms: f64,
}

/// Geometries the first-call measurement takes.
const NEW_GEOMETRIES: usize = 5;

fn measure_overhead(ctx: &Context) -> Result<Overhead, Failure> {
    let spec = PoolSpec::new(InputShape::nchw(1, 16, 32, 32), PoolParams::new([2, 2]));
    let input: Vec<f32> = random_data(spec.input.numel()?, 3);
    let host_ms = time_wall(50, || ctx.forward(&spec, &input))?.median_ms();
    // The generic kernels, compiled here if nothing compiled them before: the first calls below
    // measure a new shape, not a new context.
    let pooled = ctx.forward(&spec, &input)?;
    ctx.backward(&spec, &pooled.values, &pooled.indices)?;
    let prepared = Prepared::new::<f32>(ctx, &spec, 3)?;
    let encoder_ms = time_wall(50, || {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        prepared.record(ctx, &mut encoder, Direction::Forward, Default::default())?;
        let submission = ctx.queue().submit([encoder.finish()]);
        ctx.wait(Some(submission))
    })?
    .median_ms();
    let gpu_ms = prepared.time(ctx, Direction::Forward, Duration::from_millis(20), 50)?.median_ms();
    // Sizes that no case uses, each new to this context: the first calls compile pipelines. The
    // widths change from run to run (by the clock), so that the driver's on-disk shader cache
    // (Mesa's, NVIDIA's) has most likely not seen them either: this is the first call on a shape
    // the machine has never run.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    // Multiples of 4, as most widths are: the row kernels apply. At most 1,064, so that no shape
    // has more than 1 Mi elements (on a CPU adapter, backward passes over 2 Mi skip the generic
    // kernels).
    let width = 44 + 4 * (nanos as usize % 256);
    let params = PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
    let specs: Vec<PoolSpec> = (0..2 * NEW_GEOMETRIES)
        .map(|i| PoolSpec::new(InputShape::nchw(1, 16, 37 + 2 * i, width), params.clone()))
        .collect();
    // Forward and backward wall times of one call on each spec.
    let calls = |specs: &[PoolSpec]| -> Result<(Vec<f64>, Vec<f64>), Failure> {
        let (mut forward, mut backward) = (vec![], vec![]);
        for (i, spec) in specs.iter().enumerate() {
            let input: Vec<f32> = random_data(spec.input.numel()?, 5 + i as u64);
            let start = Instant::now();
            let pooled = ctx.forward(spec, &input)?;
            forward.push(start.elapsed().as_secs_f64() * 1e3);
            let start = Instant::now();
            ctx.backward(spec, &pooled.values, &pooled.indices)?;
            backward.push(start.elapsed().as_secs_f64() * 1e3);
        }
        Ok((forward, backward))
    };
    let median = |v: Vec<f64>| Timing { samples_ms: v, source: TimeSource::Wall }.median_ms();
    let both = |(f, b): (Vec<f64>, Vec<f64>)| median(f.iter().zip(&b).map(|(f, b)| f + b).collect());
    let (unprepared, others) = specs.split_at(NEW_GEOMETRIES);
    let (first_forward, first_backward) = calls(unprepared)?;
    let (second_forward, second_backward) = calls(unprepared)?;
    let start = Instant::now();
    ctx.prepare(others, wgpool::DType::F32)?;
    let prepare_ms = start.elapsed().as_secs_f64() * 1e3;
    let prepared_first_ms = both(calls(others)?);
    let repeat_ms = both(calls(others)?);
    Ok(Overhead {
        host_ms,
        encoder_ms,
        gpu_ms,
        first_forward_ms: median(first_forward),
        first_backward_ms: median(first_backward),
        second_forward_ms: median(second_forward),
        second_backward_ms: median(second_backward),
        prepare_ms,
        prepared_first_ms,
        repeat_ms,
    })
}

/// `n` bytes in MiB, with decimals where it is not a whole number of them.
fn mib(n: u64) -> String {
    if n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

/// What the table's columns compare with, printed under it.
pub fn legend(copy_bytes: u64) -> String {
    format!(
        "%copy: GB/s over the vec4 copy's ({} each way, from memory). Each row repeats its passes on the same\n\
         buffers: where its bytes fit the GPU's last-level cache (an H100's L2: 50 MB), they may run from that\n\
         cache, and %copy is then not a DRAM efficiency (it can exceed 100%).",
        mib(copy_bytes)
    )
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "-".into())
}

/// The results as a text table.
pub fn table(rows: &[Row], copy_gbps: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<4} {:<4} {:<3} {:>11} {:>9} {:>7} {:>6} {:>14} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "case",
        "lay",
        "dir",
        "elements",
        "gpu ms",
        "GB/s",
        "%copy",
        "vals ms (%cp)",
        "scalar ms",
        "cpu ms",
        "gpu+io ms",
        "cpu/gpu",
        "cpu/gpuio"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<4} {:<4} {:<3} {:>11} {:>9.4} {:>7.0} {:>5.0}% {:>14} {:>9} {:>9} {:>9} {:>8} {:>9}",
            r.case,
            r.layout,
            r.direction,
            r.elements,
            r.gpu_ms,
            r.gbps(),
            100.0 * r.gbps() / copy_gbps,
            r.gpu_values_ms
                .zip(r.values_bytes)
                .map(|(ms, bytes)| format!("{ms:.4} ({:.0}%)", 100.0 * bytes as f64 / (ms * 1e6) / copy_gbps))
                .unwrap_or_else(|| "-".into()),
            opt(r.gpu_scalar_ms, 4),
            opt(r.cpu_ms, 3),
            opt(r.gpu_host_ms, 3),
            opt(r.cpu_ms.map(|c| c / r.gpu_ms), 1),
            opt(r.cpu_ms.zip(r.gpu_host_ms).map(|(c, h)| c / h), 2),
        );
    }
    s
}

/// Every variant of every row (`--variants`): the default first, then the others, each with
/// its time, % of the copy bandwidth and the default's time over its time (above 1: faster than
/// the default).
pub fn variants_table(rows: &[Row], copy_gbps: f64) -> String {
    let mut s = String::from("kernel variants, same run (* = the context's choice):\n");
    let _ = writeln!(
        s,
        "{:<4} {:<4} {:<3} {:<32} {:>9} {:>6} {:>8}",
        "case", "lay", "dir", "variant", "gpu ms", "%copy", "dflt/var"
    );
    for r in rows {
        let all = std::iter::once((format!("{}*", r.variant), r.gpu_ms))
            .chain(r.other_variants.iter().map(|(n, ms)| (n.clone(), *ms)));
        for (name, ms) in all {
            let _ = writeln!(
                s,
                "{:<4} {:<4} {:<3} {:<32} {:>9.4} {:>5.0}% {:>8.2}",
                r.case,
                r.layout,
                r.direction,
                name,
                ms,
                100.0 * r.bytes as f64 / (ms * 1e6) / copy_gbps,
                r.gpu_ms / ms
            );
        }
    }
    s
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite()).map(|v| format!("{v}")).unwrap_or_else(|| "null".into())
}

/// What a run measured with, for its JSON.
pub struct RunInfo {
    /// The vec4 copy's bandwidth, GB/s (read + write).
    pub copy_gbps: f64,
    /// The bytes that copy moved each way (the size asked for, within the binding limit).
    pub copy_bytes: u64,
    /// Timed GPU passes per case, direction and variant.
    pub iterations: usize,
    /// GPU warm-up before each of those timings, ms of GPU work.
    pub warmup_ms: u64,
}

/// The results as JSON (no serde: a flat, stable schema). Rows: `values_bytes` goes with
/// `gpu_values_ms` (forward rows; both null on backward rows).
pub fn json(info: &wgpool::wgpu::AdapterInfo, run: &RunInfo, rows: &[Row], overhead: &Overhead) -> String {
    let copy_gbps = run.copy_gbps;
    let mut s = String::from("{\n");
    let _ = writeln!(
        s,
        "  \"adapter\": {{\"name\": {}, \"backend\": {}, \"device_type\": {}, \"driver\": {}, \"driver_info\": {}}},",
        json_str(&info.name),
        json_str(&format!("{:?}", info.backend)),
        json_str(&format!("{:?}", info.device_type)),
        json_str(&info.driver),
        json_str(&info.driver_info)
    );
    let _ = writeln!(s, "  \"copy_gbps\": {},", json_num(Some(copy_gbps)));
    let _ = writeln!(s, "  \"copy_bytes\": {},", run.copy_bytes);
    let _ = writeln!(s, "  \"iterations\": {},", run.iterations);
    let _ = writeln!(s, "  \"warmup_ms\": {},", run.warmup_ms);
    let _ = writeln!(
        s,
        "  \"overhead_ms\": {{\"host\": {}, \"encoder\": {}, \"gpu\": {}, \"first_forward\": {}, \"first_backward\": {}, \"second_forward\": {}, \"second_backward\": {}, \"prepare\": {}, \"prepared_first\": {}, \"repeat\": {}}},",
        json_num(Some(overhead.host_ms)),
        json_num(Some(overhead.encoder_ms)),
        json_num(Some(overhead.gpu_ms)),
        json_num(Some(overhead.first_forward_ms)),
        json_num(Some(overhead.first_backward_ms)),
        json_num(Some(overhead.second_forward_ms)),
        json_num(Some(overhead.second_backward_ms)),
        json_num(Some(overhead.prepare_ms)),
        json_num(Some(overhead.prepared_first_ms)),
        json_num(Some(overhead.repeat_ms))
    );
    s.push_str("  \"rows\": [\n");
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(
            s,
            "    {{\"case\": {}, \"layout\": {}, \"direction\": {}, \"elements\": {}, \"bytes\": {}, \"gpu_ms\": {}, \"gpu_scalar_ms\": {}, \"gpu_values_ms\": {}, \"values_bytes\": {}, \"gpu_source\": {}, \"gbps\": {}, \"copy_fraction\": {}, \"gpu_host_ms\": {}, \"cpu_ms\": {}, \"variant\": {}, \"other_variants\": [{}]}}",
            json_str(&r.case),
            json_str(r.layout),
            json_str(r.direction),
            r.elements,
            r.bytes,
            json_num(Some(r.gpu_ms)),
            json_num(r.gpu_scalar_ms),
            json_num(r.gpu_values_ms),
            r.values_bytes.map_or_else(|| "null".into(), |b| b.to_string()),
            json_str(r.gpu_source),
            json_num(Some(r.gbps())),
            json_num(Some(r.gbps() / copy_gbps)),
            json_num(r.gpu_host_ms),
            json_num(r.cpu_ms),
            json_str(&r.variant),
            r.other_variants
                .iter()
                .map(|(n, ms)| format!("{{\"name\": {}, \"gpu_ms\": {}}}", json_str(n), json_num(Some(*ms))))
                .collect::<Vec<_>>()
                .join(", ")
        );
        s.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    s.push_str("  ]\n}\n");
    s
}

/// The layouts a case is measured in, for the plot's sweep.
pub fn sweep_specs(software: bool) -> Vec<PoolSpec> {
    let batches: &[usize] = if software { &[1, 2, 4, 8] } else { &[1, 2, 4, 8, 16, 32, 64] };
    batches
        .iter()
        .map(|&n| {
            PoolSpec::new(InputShape::nchw(n, 64, 112, 112), PoolParams::new([2, 2])).layout(Layout::ChannelsFirst)
        })
        .collect()
}
