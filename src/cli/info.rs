//! `wgpool info`: the adapters wgpu finds, with what matters for pooling.

use wgpool::{Context, ContextOptions, Error, wgpu};

use super::CliResult;

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 20 { format!("{bytes} bytes ({} MiB)", bytes >> 20) } else { format!("{bytes} bytes") }
}

/// Lists every adapter; always succeeds (no adapter is reported, with how to get one).
pub fn run() -> CliResult {
    println!(
        "wgpool {} (wgpu 30), backends searched: {}",
        env!("CARGO_PKG_VERSION"),
        match std::env::var("WGPU_BACKEND") {
            Ok(b) => format!("WGPU_BACKEND={b}"),
            Err(_) => "all (set WGPU_BACKEND to restrict)".to_string(),
        }
    );
    let adapters = wgpool::gpu::enumerate_adapters_blocking(&ContextOptions::default());
    if adapters.is_empty() {
        println!("{}", Error::NoAdapter { detail: String::new() });
        return Ok(());
    }
    println!("{} adapter(s) found:", adapters.len());
    for (i, adapter) in adapters.iter().enumerate() {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features();
        println!();
        println!("[{i}] {}", info.name);
        println!("    backend:       {:?}", info.backend);
        println!("    device type:   {:?}", info.device_type);
        println!("    vendor/device: {:#06x}/{:#06x}", info.vendor, info.device);
        println!(
            "    driver:        {} {}",
            if info.driver.is_empty() { "(unknown)" } else { &info.driver },
            info.driver_info
        );
        println!("    features:");
        println!("      SHADER_F16:      {} (f16 pooling)", yes_no(features.contains(wgpu::Features::SHADER_F16)));
        println!("      TIMESTAMP_QUERY: {} (GPU timings)", yes_no(features.contains(wgpu::Features::TIMESTAMP_QUERY)));
        println!("    limits:");
        println!("      max_storage_buffer_binding_size:     {}", mib(limits.max_storage_buffer_binding_size));
        println!("      max_buffer_size:                     {}", mib(limits.max_buffer_size));
        println!("      max_compute_workgroups_per_dimension: {}", limits.max_compute_workgroups_per_dimension);
        println!("      max_compute_invocations_per_workgroup: {}", limits.max_compute_invocations_per_workgroup);
        println!(
            "      max_compute_workgroup_size (x, y, z): ({}, {}, {})",
            limits.max_compute_workgroup_size_x,
            limits.max_compute_workgroup_size_y,
            limits.max_compute_workgroup_size_z
        );
        println!("      min_storage_buffer_offset_alignment: {}", limits.min_storage_buffer_offset_alignment);
        println!("      max_storage_buffers_per_shader_stage: {}", limits.max_storage_buffers_per_shader_stage);
    }
    println!();
    match Context::new() {
        Ok(ctx) => println!("default adapter (used by `--device gpu` and the demo): {}", ctx.describe()),
        Err(e) => println!("default adapter: none could be opened: {e}"),
    }
    Ok(())
}
