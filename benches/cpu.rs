//! CPU forward and backward (`wgpool::cpu`, the fast path) over the performance cases, wall time
//! of the public calls as users make them: `fwd`/`bwd` allocate (and free) their outputs,
//! `fwd_into`/`bwd_into` write into preallocated buffers (like PyTorch's `.out` variants).
//!
//! ```text
//! cargo bench --bench cpu                      # wgpool::cases::full()
//! WGPOOL_BENCH_QUICK=1 cargo bench --bench cpu # wgpool::cases::quick(), ids cpu-quick/...
//! cargo bench --bench cpu -- 'cpu/A/'          # one case (criterion filter)
//! ```
//!
//! Throughput is the bytes that must move: forward reads the input and writes values and u32
//! indices; backward reads the output gradient and the indices and writes the input gradient.
//! Criterion reports it in decimal GB/s (`Throughput::BytesDecimal`), as `wgpool bench` does.
//! Data is random (seeded SplitMix64, never zeros); backward's indices come from a real forward
//! pass. Threads: rayon's default (one per core; `RAYON_NUM_THREADS` to change).
//! `benches/compare_torch.py --criterion target/criterion` puts these medians next to PyTorch's.
//!
//! On Linux, large fresh allocations fault their pages in one by one, which can cost more than the
//! pooling itself (see the report of issue 4); `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` makes
//! glibc's malloc ask for transparent huge pages.

use std::time::Duration;

use criterion::{Criterion, Throughput};
use wgpool::{PoolSpec, cases, cpu};

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (−2, 2), never 0.
    fn value(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 22) as f32 - 2.0
    }
    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }
}

fn main() {
    let quick = std::env::var("WGPOOL_BENCH_QUICK").is_ok_and(|v| v == "1");
    #[cfg(feature = "parallel")]
    let threads = rayon::current_num_threads();
    #[cfg(not(feature = "parallel"))]
    let threads = 1;
    eprintln!("cpu bench: {} shapes, {threads} thread(s)", if quick { "quick" } else { "full" });
    let mut criterion = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(if quick { 200 } else { 500 }))
        .measurement_time(Duration::from_secs(if quick { 1 } else { 3 }))
        .sample_size(10);
    for case in if quick { cases::quick() } else { cases::full() } {
        for &layout in case.layouts {
            let spec: PoolSpec = case.spec(layout);
            let g = spec.validate().expect("bench case");
            let (n_in, n_out) = (g.input_len() as u64, g.output_len() as u64);
            // Quick shapes get their own ids, so that criterion never compares them with full ones.
            let prefix = if quick { "cpu-quick" } else { "cpu" };
            let mut group = criterion.benchmark_group(format!("{prefix}/{}/{}", case.name, layout.name()));
            // Data is made on first use: criterion runs a closure only when its id passes the filter.
            let mut rng = Rng(0x5eed);
            let mut input = None;
            group.throughput(Throughput::BytesDecimal(n_in * 4 + n_out * 8));
            group.bench_function("fwd", |b| {
                let input = input.get_or_insert_with(|| rng.values(g.input_len()));
                b.iter(|| cpu::forward(&spec, input).unwrap())
            });
            group.bench_function("fwd_into", |b| {
                let input = input.get_or_insert_with(|| rng.values(g.input_len()));
                let (mut values, mut indices) = (vec![0.0f32; g.output_len()], vec![0u32; g.output_len()]);
                b.iter(|| cpu::forward_into(&spec, input, &mut values, &mut indices).unwrap())
            });
            let mut data = None;
            group.throughput(Throughput::BytesDecimal(n_out * 8 + n_in * 4));
            group.bench_function("bwd", |b| {
                let (grad_output, indices) = data.get_or_insert_with(|| {
                    // The input is only needed for the indices: free it (case G: 822 MB).
                    let x = input.take().unwrap_or_else(|| rng.values(g.input_len()));
                    let indices = cpu::forward(&spec, &x).unwrap().indices;
                    (rng.values(g.output_len()), indices)
                });
                b.iter(|| cpu::backward(&spec, grad_output, indices).unwrap())
            });
            group.bench_function("bwd_into", |b| {
                let (grad_output, indices) = data.get_or_insert_with(|| {
                    let x = input.take().unwrap_or_else(|| rng.values(g.input_len()));
                    let indices = cpu::forward(&spec, &x).unwrap().indices;
                    (rng.values(g.output_len()), indices)
                });
                let mut grad_input = vec![0.0f32; g.input_len()];
                b.iter(|| cpu::backward_into(&spec, grad_output, indices, &mut grad_input).unwrap())
            });
            group.finish();
        }
    }
    criterion.final_summary();
}
