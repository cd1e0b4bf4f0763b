//! wgpool inside a pipeline of your own: your device and queue, your buffers, your encoder.
//!
//! One command encoder holds four compute passes and one submission runs them all:
//!
//! 1. `relu` (this example's own WGSL): `y = max(x, 0)`;
//! 2. wgpool's max-pool forward over `y`: values and argmax indices;
//! 3. wgpool's max-pool backward: routes `grad_values` to the argmax positions;
//! 4. `relu_backward` (this example's own WGSL): `grad_x = grad_y · [x > 0]`.
//!
//! Then the results are read back once and checked bit for bit against `wgpool::cpu`.
//!
//! ```text
//! cargo run --example custom_pipeline
//! WGPU_BACKEND=vulkan cargo run --example custom_pipeline   # e.g. on lavapipe
//! ```

use wgpool::wgpu;
use wgpool::{BackwardBuffers, BufferRegion, Context, DType, ForwardBuffers, InputShape, PoolParams, PoolSpec};

/// The caller's own kernels: ReLU and its backward, bounds-guarded, 64 invocations a workgroup.
const RELU_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> grad_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad_x: array<f32>;

@compute @workgroup_size(64)
fn relu(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&y) {
        y[id.x] = select(0.0, x[id.x], x[id.x] > 0.0);
    }
}

@compute @workgroup_size(64)
fn relu_backward(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&grad_x) {
        grad_x[id.x] = select(0.0, grad_y[id.x], x[id.x] > 0.0);
    }
}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // --- Your application's device, created without wgpool. ---
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))?;
    println!("adapter: {:?}/{}", adapter.get_info().backend, adapter.get_info().name);

    // wgpool shares it (wgpu devices and queues are cheap handles).
    let pool = Context::from_device(device.clone(), queue.clone());

    // ResNet's stem pool on a 2×3×16×16 activation: kernel 3, stride 2, padding 1 (overlapping
    // windows, so the backward pass adds gradients up).
    let spec = PoolSpec::new(InputShape::nchw(2, 3, 16, 16), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]));
    let g = spec.validate()?;
    let (n_in, n_out) = (g.input_len(), g.output_len());
    let x = pseudo_random(n_in, 1);
    let grad_values = pseudo_random(n_out, 2);

    // --- Your buffers. wgpool needs STORAGE on every one it binds. ---
    let storage = |label: &str, elements: usize, extra: wgpu::BufferUsages| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (elements * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | extra,
            mapped_at_creation: false,
        })
    };
    use wgpu::BufferUsages as U;
    let x_buf = storage("x", n_in, U::COPY_DST);
    let y_buf = storage("y = relu(x)", n_in, U::empty());
    let values = storage("pooled values", n_out, U::COPY_SRC);
    let indices = storage("argmax indices", n_out, U::COPY_SRC);
    let grad_values_buf = storage("grad of values", n_out, U::COPY_DST);
    let grad_y = storage("grad of y", n_in, U::empty());
    let grad_x = storage("grad of x", n_in, U::COPY_SRC);
    // The backward pass clears and counts into this u32 (it needs COPY_DST).
    let invalid_count = storage("invalid index count", 1, U::COPY_DST | U::COPY_SRC);
    queue.write_buffer(&x_buf, 0, bytemuck::cast_slice(&x));
    queue.write_buffer(&grad_values_buf, 0, bytemuck::cast_slice(&grad_values));

    // --- Your pipelines (automatic layouts: each entry point binds what it uses). ---
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("relu"),
        source: wgpu::ShaderSource::Wgsl(RELU_WGSL.into()),
    });
    let pipeline = |entry_point: &str| {
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry_point),
            layout: None,
            module: &module,
            entry_point: Some(entry_point),
            compilation_options: Default::default(),
            cache: None,
        })
    };
    let (relu, relu_backward) = (pipeline("relu"), pipeline("relu_backward"));
    let bind = |pipeline: &wgpu::ComputePipeline, entries: &[(u32, &wgpu::Buffer)]| {
        let entries: Vec<_> = entries
            .iter()
            .map(|&(binding, buffer)| wgpu::BindGroupEntry { binding, resource: buffer.as_entire_binding() })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    };
    let relu_bind = bind(&relu, &[(0, &x_buf), (1, &y_buf)]);
    let relu_backward_bind = bind(&relu_backward, &[(0, &x_buf), (2, &grad_y), (3, &grad_x)]);
    let workgroups = (n_in as u32).div_ceil(64);

    // --- One encoder: your pass, wgpool's two passes, your pass, the copies back. ---
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&relu);
        pass.set_bind_group(0, &relu_bind, &[]);
        pass.dispatch_workgroups(workgroups, 1, 1);
    }
    let forward = ForwardBuffers { input: (&y_buf).into(), values: (&values).into(), indices: (&indices).into() };
    pool.record_forward(&mut encoder, &spec, DType::F32, &forward, Default::default())?;
    let backward = BackwardBuffers {
        grad_output: (&grad_values_buf).into(),
        indices: (&indices).into(),
        grad_input: (&grad_y).into(),
        invalid_count: BufferRegion::new(&invalid_count, 0),
    };
    pool.record_backward(&mut encoder, &spec, DType::F32, &backward, Default::default())?;
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&relu_backward);
        pass.set_bind_group(0, &relu_backward_bind, &[]);
        pass.dispatch_workgroups(workgroups, 1, 1);
    }
    // Everything we want to look at, side by side in one staging buffer.
    let parts = [(&values, n_out), (&indices, n_out), (&grad_x, n_in), (&invalid_count, 1)];
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: parts.iter().map(|&(_, n)| n as u64 * 4).sum(),
        usage: U::MAP_READ | U::COPY_DST,
        mapped_at_creation: false,
    });
    let mut offset = 0;
    for &(buffer, n) in &parts {
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, offset, n as u64 * 4);
        offset += n as u64 * 4;
    }
    queue.submit([encoder.finish()]);

    // --- Read back once. ---
    staging.slice(..).map_async(wgpu::MapMode::Read, |result| result.expect("map the readback buffer"));
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let words: Vec<u32> = bytemuck::cast_slice(&staging.slice(..).get_mapped_range()?).to_vec();
    staging.unmap();
    let (got_values, rest) = words.split_at(n_out);
    let (got_indices, rest) = rest.split_at(n_out);
    let (got_grad_x, rest) = rest.split_at(n_in);
    assert_eq!(rest[0], 0, "the backward pass met invalid indices");

    // --- The same on the CPU. ---
    let y: Vec<f32> = x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect();
    let want = wgpool::cpu::forward(&spec, &y)?;
    let want_grad_y = wgpool::cpu::backward(&spec, &grad_values, &want.indices)?;
    let want_grad_x: Vec<f32> = x.iter().zip(&want_grad_y).map(|(&v, &g)| if v > 0.0 { g } else { 0.0 }).collect();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    assert_eq!(got_values, bits(&want.values), "pooled values");
    assert_eq!(got_indices, want.indices, "argmax indices");
    assert_eq!(got_grad_x, bits(&want_grad_x), "grad of x");

    println!("relu → max_pool2d(3, stride 2, padding 1) → backward → relu backward, one submission:");
    println!("  {:?} → values {:?}", spec.input.logical_dims(), g.output_shape().logical_dims());
    println!("  first values   {:?}", &want.values[..6]);
    println!("  first indices  {:?}", &want.indices[..6]);
    println!("  grad of x: {} of {} elements non-zero", want_grad_x.iter().filter(|&&v| v != 0.0).count(), n_in);
    println!("all equal to wgpool::cpu, bit for bit");
    Ok(())
}

/// Deterministic values in [-1, 1) (a 64-bit LCG's high bits), without a dependency.
fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}
