//! GPU forward and backward over the performance cases, timed with GPU timestamps where the
//! adapter has them (wall time otherwise). `WGPOOL_BENCH_QUICK=1` (or a CPU-emulated adapter such
//! as lavapipe/llvmpipe) uses the small shapes of `wgpool::cases::quick()`.
//!
//! Throughput: the bytes a pass must move (`wgpool::bench::bytes_moved`), in decimal GB/s as
//! `wgpool bench` reports them. Each shape's own pipelines are compiled before its first pass
//! (`Prepared::new`); any iteration count criterion asks for works (`time_passes` reads the
//! timestamps back in sets).
//!
//! `cargo bench --bench gpu`; pick the adapter with `WGPU_BACKEND` / `WGPU_ADAPTER_NAME`.

use std::time::Duration;

use criterion::{Criterion, Throughput};
use wgpool::bench::{Direction, Prepared, bytes_moved, time_passes};
use wgpool::{Context, cases};

fn main() {
    let ctx = match Context::new() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("gpu bench: {e}");
            std::process::exit(1);
        }
    };
    let software = ctx.adapter_info().device_type == wgpool::wgpu::DeviceType::Cpu;
    let quick = software || std::env::var("WGPOOL_BENCH_QUICK").is_ok_and(|v| v == "1");
    eprintln!("gpu bench on {} ({})", ctx.describe(), if quick { "quick shapes" } else { "full shapes" });
    let mut criterion = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(if quick { 200 } else { 500 }))
        .measurement_time(Duration::from_secs(if quick { 1 } else { 3 }))
        .sample_size(if quick { 10 } else { 30 });
    let list = if quick { cases::quick() } else { cases::full() };
    for case in &list {
        for &layout in case.layouts {
            let spec = case.spec(layout);
            let prepared = match Prepared::new::<f32>(&ctx, &spec, 1) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("case {} {}: {e}", case.name, layout.name());
                    continue;
                }
            };
            let mut group = criterion.benchmark_group(format!("gpu/{}/{}", case.name, layout.name()));
            for direction in [Direction::Forward, Direction::Backward] {
                group.throughput(Throughput::BytesDecimal(bytes_moved(&prepared.geometry, 4, direction)));
                group.bench_function(direction.name(), |b| {
                    b.iter_custom(|iters| {
                        let timing = time_passes(&ctx, iters as usize, |e, o| prepared.record(&ctx, e, direction, o))
                            .expect("GPU pass");
                        Duration::from_secs_f64(timing.samples_ms.iter().sum::<f64>() / 1e3)
                    })
                });
            }
            group.finish();
        }
    }
    criterion.final_summary();
}
