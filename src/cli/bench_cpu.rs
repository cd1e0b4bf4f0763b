//! `wgpool bench-cpu`: the CPU path alone on the performance cases (no GPU needed): median wall
//! time of the allocating calls (`cpu::forward`, `cpu::backward`) and of the calls into
//! preallocated buffers (`forward_into`, `backward_into`), with `--json` for tooling.
//! `benches/compare_torch.py --wgpool target/release/wgpool` runs it case by case, alternating
//! with PyTorch, so that both sides see the same state of a shared machine. Like PyTorch's
//! process there, it allocates and frees one large buffer before measuring (see [`run`]).

use std::fmt::Write as _;
use std::path::PathBuf;

use wgpool::bench::{Direction, bytes_moved, random_data, time_wall};
use wgpool::cases::{self, BenchCase};
use wgpool::{Layout, cpu};

use super::{CliResult, Failure};

/// `wgpool bench-cpu` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The small shapes of the quick mode.
    #[arg(long)]
    pub quick: bool,
    /// Only these cases (comma-separated names: A,B,C,D,E,F1,F3,G).
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<String>,
    /// Only these layouts (comma-separated: ncx for channels-first, nxc for channels-last).
    #[arg(long, value_delimiter = ',')]
    pub layouts: Vec<String>,
    /// Timed calls per measurement (after one warm-up call).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Also write the results as JSON to this file (`-`: standard output, instead of the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// One measurement.
struct Row {
    case: &'static str,
    layout: &'static str,
    direction: &'static str,
    /// `alloc` (the call allocates its outputs) or `into` (preallocated outputs).
    variant: &'static str,
    median_ms: f64,
    min_ms: f64,
    bytes: u64,
}

fn selected(args: &Args) -> Result<Vec<(BenchCase, Layout)>, Failure> {
    for l in &args.layouts {
        if !["ncx", "nxc"].contains(&l.as_str()) {
            return Err(Failure(format!("--layouts {l}: expected ncx or nxc")));
        }
    }
    let list = if args.quick { cases::quick() } else { cases::full() };
    let chosen: Vec<_> = list
        .into_iter()
        .filter(|c| args.cases.is_empty() || args.cases.iter().any(|n| n.eq_ignore_ascii_case(c.name)))
        .flat_map(|c| c.layouts.iter().map(move |&l| (c.clone(), l)))
        .filter(|(_, l)| args.layouts.is_empty() || args.layouts.iter().any(|n| n == l.name()))
        .collect();
    if chosen.is_empty() {
        return Err(Failure(format!(
            "no case matches --cases {} --layouts {}",
            args.cases.join(","),
            args.layouts.join(",")
        )));
    }
    Ok(chosen)
}

/// Runs the benchmark.
pub fn run(args: Args) -> CliResult {
    let chosen = selected(&args)?;
    let runs = args.runs as usize;
    // glibc's malloc maps buffers above a threshold afresh, faulting their pages in on every
    // call and returning them on every free, and raises that threshold (up to 32 MiB) when a
    // process frees a large buffer. A process that has freed a large tensor, as PyTorch's has by
    // the time `compare_torch.py` measures it, reuses its heap instead. One such buffer first
    // puts this process in the same state: on the development machine, case C's first
    // allocating forward went from 5.7 to 1.0 ms (2026-11-27).
    drop(std::hint::black_box(vec![1u8; 31 << 20]));
    let mut rows = vec![];
    for (case, layout) in &chosen {
        let spec = case.spec(*layout);
        let g = spec.validate()?;
        // Random data (never zeros); backward's indices from a real forward pass.
        let input: Vec<f32> = random_data(g.input_len(), 1);
        let grad_output: Vec<f32> = random_data(g.output_len(), 2);
        let indices = cpu::forward(&spec, &input)?.indices;
        let (mut values, mut out_indices) = (vec![0f32; g.output_len()], vec![0u32; g.output_len()]);
        let mut grad_input = vec![0f32; g.input_len()];
        let mut push = |direction: Direction, variant, t: wgpool::bench::Timing| {
            rows.push(Row {
                case: case.name,
                layout: layout.name(),
                direction: direction.name(),
                variant,
                median_ms: t.median_ms(),
                min_ms: t.samples_ms.iter().copied().fold(f64::INFINITY, f64::min),
                bytes: bytes_moved(&g, 4, direction),
            })
        };
        push(Direction::Forward, "alloc", time_wall(runs, || cpu::forward(&spec, &input))?);
        push(
            Direction::Forward,
            "into",
            time_wall(runs, || cpu::forward_into(&spec, &input, &mut values, &mut out_indices))?,
        );
        push(Direction::Backward, "alloc", time_wall(runs, || cpu::backward(&spec, &grad_output, &indices))?);
        push(
            Direction::Backward,
            "into",
            time_wall(runs, || cpu::backward_into(&spec, &grad_output, &indices, &mut grad_input))?,
        );
    }
    #[cfg(feature = "parallel")]
    let threads = rayon::current_num_threads();
    #[cfg(not(feature = "parallel"))]
    let threads = 1;
    match args.json.as_deref() {
        Some(path) if path.as_os_str() == "-" => print!("{}", json(threads, args.quick, &rows)),
        other => {
            print!("{}", table(threads, runs, &rows));
            if let Some(path) = other {
                wgpool::npy::write_file_atomic(path, json(threads, args.quick, &rows).as_bytes())?;
            }
        }
    }
    Ok(())
}

fn table(threads: usize, runs: usize, rows: &[Row]) -> String {
    let mut s = format!(
        "wgpool CPU path, {threads} thread(s), median of {runs} calls (ms); GB/s: bytes that must move, u32 indices\n"
    );
    let _ = writeln!(s, "{:4} {:4} {:3} | {:>9} {:>9} | {:>7}", "case", "lay", "dir", "alloc", "into", "GB/s");
    for pair in rows.chunks(2) {
        let [alloc, into] = pair else { continue };
        let _ = writeln!(
            s,
            "{:4} {:4} {:3} | {:9.3} {:9.3} | {:7.1}",
            alloc.case,
            alloc.layout,
            alloc.direction,
            alloc.median_ms,
            into.median_ms,
            into.bytes as f64 / (into.median_ms * 1e6)
        );
    }
    s
}

/// The results as JSON (a flat, stable schema, like `wgpool bench --json`).
fn json(threads: usize, quick: bool, rows: &[Row]) -> String {
    let mut s = format!("{{\n  \"threads\": {threads},\n  \"quick\": {quick},\n  \"rows\": [\n");
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(
            s,
            "    {{\"case\": \"{}\", \"layout\": \"{}\", \"direction\": \"{}\", \"variant\": \"{}\", \"median_ms\": {}, \"min_ms\": {}, \"bytes\": {}}}",
            r.case, r.layout, r.direction, r.variant, r.median_ms, r.min_ms, r.bytes
        );
        s.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    s.push_str("  ]\n}\n");
    s
}
