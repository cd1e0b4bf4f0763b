//! `wgpool` without arguments: a ResNet-sized max pool on the default adapter, forward and
//! backward, checked bit for bit against the CPU path, with wall timings of both.

use std::time::{Duration, Instant};

use wgpool::{Context, Element, InputShape, PoolParams, PoolSpec, cpu};

use super::{CliResult, Failure};

/// ResNet-50's stem pool on a batch of 8: 8×64×112×112, kernel 3, stride 2, padding 1.
const SHAPE: [usize; 4] = [8, 64, 112, 112];

/// SplitMix64, seeded: the same input on every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) + 1) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box–Muller), rounded to 1/64 so that windows also hold exact ties.
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        let z = (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos();
        (z * 64.0).round() / 64.0
    }
}

fn ms(d: Duration) -> String {
    format!("{:9.1} ms", d.as_secs_f64() * 1e3)
}

/// The first element whose bits differ, if any, and how many differ.
fn compare<T: Element>(gpu: &[T], cpu: &[T]) -> Option<(usize, usize)> {
    if gpu.len() != cpu.len() {
        return Some((0, gpu.len().max(cpu.len())));
    }
    let mut first = None;
    let mut count = 0;
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        if g.to_bits_u32() != c.to_bits_u32() {
            first.get_or_insert(i);
            count += 1;
        }
    }
    first.map(|f| (f, count))
}

fn compare_indices(gpu: &[u32], cpu: &[u32]) -> Option<(usize, usize)> {
    if gpu.len() != cpu.len() {
        return Some((0, gpu.len().max(cpu.len())));
    }
    let mut first = None;
    let mut count = 0;
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        if g != c {
            first.get_or_insert(i);
            count += 1;
        }
    }
    first.map(|f| (f, count))
}

/// Runs `f` `runs` times: the first result, the first call's time and the fastest later call's.
fn timed<R>(runs: usize, mut f: impl FnMut() -> Result<R, Failure>) -> Result<(R, Duration, Duration), Failure> {
    let start = Instant::now();
    let result = f()?;
    let first = start.elapsed();
    let mut best = first;
    for i in 1..runs {
        let start = Instant::now();
        f()?;
        let t = start.elapsed();
        best = if i == 1 { t } else { best.min(t) };
    }
    Ok((result, first, best))
}

/// The demo.
pub fn run() -> CliResult {
    let [n, c, h, w] = SHAPE;
    let spec = PoolSpec::new(InputShape::nchw(n, c, h, w), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]));
    let geometry = spec.validate()?;
    println!(
        "wgpool demo: max_pool2d(kernel=3, stride=2, padding=1) on a {n}x{c}x{h}x{w} float32 NCHW tensor \
         ({:.1} M elements -> {:.1} M outputs), forward with indices and backward",
        geometry.input_len() as f64 / 1e6,
        geometry.output_len() as f64 / 1e6
    );
    let start = Instant::now();
    let ctx = Context::new()?;
    let info = ctx.adapter_info();
    let driver = [info.driver.trim(), info.driver_info.trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "adapter: {:?} / {} ({:?}, driver: {}), opened in {}",
        info.backend,
        info.name,
        info.device_type,
        if driver.is_empty() { "unknown" } else { &driver },
        ms(start.elapsed()).trim_start()
    );

    let mut rng = Rng(2024);
    let input: Vec<f32> = (0..geometry.input_len()).map(|_| rng.normal()).collect();
    let grad_output: Vec<f32> = (0..geometry.output_len()).map(|_| rng.normal()).collect();

    const RUNS: usize = 3;
    let (gpu_fwd, gpu_fwd_first, gpu_fwd_best) = timed(RUNS, || Ok(ctx.forward(&spec, &input)?))?;
    let (cpu_fwd, cpu_fwd_first, _) = timed(1, || Ok(cpu::forward(&spec, &input)?))?;
    // Backward from the CPU's indices, so that both paths get the same input even if forward differs.
    let (gpu_bwd, gpu_bwd_first, gpu_bwd_best) =
        timed(RUNS, || Ok(ctx.backward(&spec, &grad_output, &cpu_fwd.indices)?))?;
    let (cpu_bwd, cpu_bwd_first, _) = timed(1, || Ok(cpu::backward(&spec, &grad_output, &cpu_fwd.indices)?))?;

    println!();
    println!("             GPU first call   GPU best of next {}   CPU", RUNS - 1);
    println!("  forward    {}     {}          {}", ms(gpu_fwd_first), ms(gpu_fwd_best), ms(cpu_fwd_first));
    println!("  backward   {}     {}          {}", ms(gpu_bwd_first), ms(gpu_bwd_best), ms(cpu_bwd_first));
    println!("  (GPU times are wall times of host-slice calls: upload, kernels and read-back)");
    println!();

    let checks = [
        ("forward values", compare(&gpu_fwd.values, &cpu_fwd.values)),
        ("forward indices", compare_indices(&gpu_fwd.indices, &cpu_fwd.indices)),
        ("backward grad_input", compare(&gpu_bwd, &cpu_bwd)),
    ];
    let mut failed = Vec::new();
    for (what, result) in checks {
        match result {
            None => println!("  {what:<20} GPU == CPU, bit for bit"),
            Some((first, count)) => {
                println!("  {what:<20} MISMATCH: {count} elements differ, the first at {first}");
                failed.push(what);
            }
        }
    }
    if !failed.is_empty() {
        // Say which side is wrong: the reference mirrors the shaders one output at a time.
        let ref_fwd = cpu::reference::forward(&spec, &input)?;
        let ref_bwd = cpu::reference::backward(&spec, &grad_output, &cpu_fwd.indices)?;
        println!();
        println!("  against cpu::reference (the shader mirror every path is tested against):");
        for (what, gpu_diff, cpu_diff) in [
            ("forward values", compare(&gpu_fwd.values, &ref_fwd.values), compare(&cpu_fwd.values, &ref_fwd.values)),
            (
                "forward indices",
                compare_indices(&gpu_fwd.indices, &ref_fwd.indices),
                compare_indices(&cpu_fwd.indices, &ref_fwd.indices),
            ),
            ("backward grad_input", compare(&gpu_bwd, &ref_bwd), compare(&cpu_bwd, &ref_bwd)),
        ] {
            let verdict = |d: Option<(usize, usize)>| match d {
                None => "matches".to_string(),
                Some((first, count)) => format!("{count} differ (first at {first})"),
            };
            println!("  {what:<20} GPU {}, CPU path {}", verdict(gpu_diff), verdict(cpu_diff));
        }
        return Err(Failure(format!(
            "the GPU results differ from the CPU path on {} ({})",
            ctx.describe(),
            failed.join(", ")
        )));
    }
    println!();
    println!("ok: {} matches the CPU path bit for bit", ctx.describe());
    Ok(())
}
