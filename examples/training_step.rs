//! A training loop that never leaves the GPU: gradient descent on an input `x` so that
//! `max_pool2d(x, 2)` matches a target, with `GpuTensor`s from wgpool and two small kernels of
//! the caller's own (the loss gradient and the SGD update).
//!
//! Per step, one submission: forward (into reused tensors) → `grad = values − target` →
//! backward (the indices go straight from forward to backward) → `x −= lr · grad_x`.
//! Nothing is read back except the loss every few steps and, at the end, the GPU-side count of
//! invalid indices. A CPU replay of the same loop with `wgpool::cpu` must end with the same `x`,
//! bit for bit (lr is a power of two, so `x − lr·g` rounds once, fused or not).
//!
//! ```text
//! cargo run --example training_step
//! ```

use wgpool::wgpu;
use wgpool::{BackwardTensors, Context, DType, GpuTensor, InputShape, PoolParams, PoolSpec, PooledTensors};

const KERNELS_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// out = a − b: the gradient of ½‖values − target‖² with respect to the values.
@compute @workgroup_size(64)
fn loss_grad(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&out) {
        out[id.x] = a[id.x] - b[id.x];
    }
}

// out −= 0.5 · a: the SGD step on x, with a = grad_x.
@compute @workgroup_size(64)
fn sgd(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&out) {
        out[id.x] = out[id.x] - 0.5 * a[id.x];
    }
}
"#;
const LEARNING_RATE: f32 = 0.5;
const STEPS: usize = 40;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new()?;
    let device = ctx.device();
    println!("adapter: {}", ctx.describe());

    let spec = PoolSpec::new(InputShape::nchw(4, 8, 32, 32), PoolParams::new([2, 2]));
    let out_shape = spec.validate()?.output_shape();
    let x0 = pseudo_random(spec.input.numel()?, 1);
    let target = pseudo_random(out_shape.numel()?, 2);

    // Everything the loop touches, allocated once, and wgpool's pipelines for this shape compiled
    // before the first step rather than in it.
    ctx.prepare(std::slice::from_ref(&spec), DType::F32)?;
    let x = GpuTensor::upload(&ctx, spec.input.clone(), spec.layout, &x0)?;
    let target_t = GpuTensor::upload(&ctx, out_shape.clone(), spec.layout, &target)?;
    let grad_values = GpuTensor::<f32>::zeros(&ctx, out_shape, spec.layout)?;
    let pooled = PooledTensors::<f32>::allocate(&ctx, &spec)?;
    let backward = BackwardTensors::<f32>::allocate(&ctx, &spec)?;

    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("loss and sgd"),
        source: wgpu::ShaderSource::Wgsl(KERNELS_WGSL.into()),
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
    let (loss_grad, sgd) = (pipeline("loss_grad"), pipeline("sgd"));
    let bind = |pipeline: &wgpu::ComputePipeline, entries: &[(u32, &GpuTensor<f32>)]| {
        let entries: Vec<_> = entries
            .iter()
            .map(|&(binding_index, t)| wgpu::BindGroupEntry {
                binding: binding_index,
                resource: wgpu::BindingResource::Buffer(t.binding()),
            })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    };
    let loss_grad_bind = bind(&loss_grad, &[(0, &pooled.values), (1, &target_t), (2, &grad_values)]);
    let sgd_bind = bind(&sgd, &[(0, &backward.grad_input), (2, &x)]);
    let dispatch = |encoder: &mut wgpu::CommandEncoder,
                    pipeline: &wgpu::ComputePipeline,
                    bind_group: &wgpu::BindGroup,
                    len: usize| {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups((len as u32).div_ceil(64), 1, 1);
    };

    for step in 0..=STEPS {
        let mut encoder = device.create_command_encoder(&Default::default());
        ctx.record_forward_tensor_into(&mut encoder, &spec, &x, &pooled)?;
        if step < STEPS {
            dispatch(&mut encoder, &loss_grad, &loss_grad_bind, grad_values.len());
            ctx.record_backward_tensor_into(&mut encoder, &spec, &grad_values, &pooled.indices, &backward)?;
            dispatch(&mut encoder, &sgd, &sgd_bind, x.len());
        }
        ctx.queue().submit([encoder.finish()]);
        if step % 10 == 0 {
            // The only readback inside the loop: values from this step's forward pass.
            let values = pooled.values.download(&ctx)?;
            println!("step {step:2}: loss {:.6}", loss(&values, &target));
        }
    }
    // One check of the GPU-side counter for the whole run would do; the last pass is enough here
    // because every pass used indices fresh from forward.
    backward.invalid_count.read(&ctx)?;
    let x_gpu = x.download(&ctx)?;

    // The same loop on the CPU.
    let mut x_cpu = x0;
    for _ in 0..STEPS {
        let forward = wgpool::cpu::forward(&spec, &x_cpu)?;
        let grad: Vec<f32> = forward.values.iter().zip(&target).map(|(v, t)| v - t).collect();
        let grad_x = wgpool::cpu::backward(&spec, &grad, &forward.indices)?;
        x_cpu.iter_mut().zip(&grad_x).for_each(|(x, g)| *x -= LEARNING_RATE * g);
    }
    assert!(x_gpu.iter().zip(&x_cpu).all(|(a, b)| a.to_bits() == b.to_bits()), "GPU and CPU runs differ");
    println!("{STEPS} steps on the GPU end with the same x as on the CPU, bit for bit");
    Ok(())
}

fn loss(values: &[f32], target: &[f32]) -> f64 {
    values.iter().zip(target).map(|(&v, &t)| 0.5 * ((v - t) as f64).powi(2)).sum::<f64>() / values.len() as f64
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
