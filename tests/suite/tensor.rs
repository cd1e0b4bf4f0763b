//! GPU-resident tensors: round trips, forward_tensor / backward_tensor against the CPU reference
//! bit for bit on every adapter, caller buffers at offsets, typed errors, the GPU-side counter.

use super::common::*;
use wgpool::wgpu;
use wgpool::{
    BackwardTensors, Context, DType, Element, Error, GpuTensor, InputShape, InvalidCount, Layout, NO_INDEX, PoolParams,
    PoolSpec, PooledTensors, cpu, f16,
};

const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

fn caller_buffer(ctx: &Context, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("caller"),
        size,
        usage,
        mapped_at_creation: false,
    })
}

/// Fills a caller buffer with 0x7fa5 halves, a NaN pattern no kernel writes, so unwritten
/// elements show up.
fn poison(ctx: &Context, buffer: &wgpu::Buffer) {
    let words = vec![0x7fa5_7fa5u32; (buffer.size() / 4) as usize];
    ctx.queue().write_buffer(buffer, 0, bytemuck::cast_slice(&words));
}

#[test]
fn tensors_round_trip_every_element_type_length_and_offset() {
    for ctx in contexts() {
        let case = Case::start(ctx);
        let name = ctx.describe();
        let mut rng = Rng::new(11);
        for len in [1usize, 2, 3, 7, 64, 1001] {
            let shape = InputShape::new(1, 1, [len]);
            let f32s: Vec<f32> = nasty_values(&mut rng, len);
            let t = GpuTensor::upload(ctx, shape.clone(), Layout::ChannelsFirst, &f32s).unwrap();
            assert_bits_eq("f32 round trip", &name, &t.download(ctx).unwrap(), &f32s);
            // f16 is only bytes here: it round-trips on adapters without SHADER_F16 as well.
            let f16s: Vec<f16> = nasty_values(&mut rng, len);
            let t = GpuTensor::upload(ctx, shape.clone(), Layout::ChannelsLast, &f16s).unwrap();
            assert_eq!(t.dtype(), DType::F16);
            assert_bits_eq("f16 round trip", &name, &t.download(ctx).unwrap(), &f16s);
            let u32s: Vec<u32> = (0..len as u32).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
            let t = GpuTensor::upload(ctx, shape, Layout::ChannelsFirst, &u32s).unwrap();
            assert_eq!(t.download(ctx).unwrap(), u32s, "[{name}] u32 round trip");
        }

        // Odd-length f16 tensors side by side at 2-byte offsets in one caller buffer: each download
        // sees only its own elements.
        let buffer = caller_buffer(ctx, 64, USAGE);
        let halves: Vec<f16> = (0..32).map(|i| f16::from_f32(i as f32)).collect();
        ctx.queue().write_buffer(&buffer, 0, bytemuck::cast_slice(&halves));
        for (offset, len) in [(0u64, 3usize), (6, 5), (16, 1), (34, 7), (62, 1)] {
            let t = GpuTensor::<f16>::from_buffer(&buffer, offset, InputShape::new(1, 1, [len]), Layout::ChannelsFirst)
                .unwrap();
            let first = offset as usize / 2;
            assert_eq!(t.download(ctx).unwrap(), halves[first..first + len], "[{name}] f16 at offset {offset}");
        }

        // write() into a caller buffer at an offset leaves the neighbours alone.
        let buffer = caller_buffer(ctx, 1024, USAGE);
        let shape = InputShape::nchw(1, 2, 3, 4);
        let before = GpuTensor::<f32>::from_buffer(&buffer, 0, shape.clone(), Layout::ChannelsFirst).unwrap();
        let middle = GpuTensor::<f32>::from_buffer(&buffer, 96, shape.clone(), Layout::ChannelsFirst).unwrap();
        let after = GpuTensor::<f32>::from_buffer(&buffer, 192, shape, Layout::ChannelsFirst).unwrap();
        before.write(ctx, &[1.0; 24]).unwrap();
        after.write(ctx, &[3.0; 24]).unwrap();
        let data: Vec<f32> = (0..24).map(|i| i as f32 - 7.5).collect();
        middle.write(ctx, &data).unwrap();
        assert_eq!(middle.download(ctx).unwrap(), data, "[{name}] middle");
        assert_eq!(before.download(ctx).unwrap(), [1.0; 24], "[{name}] before");
        assert_eq!(after.download(ctx).unwrap(), [3.0; 24], "[{name}] after");
        assert_eq!((middle.offset(), middle.len(), middle.size_bytes()), (96, 24, 96));

        // Empty tensors (an empty batch) need no GPU work.
        let empty = GpuTensor::<f32>::upload(ctx, InputShape::nchw(0, 3, 4, 4), Layout::ChannelsLast, &[]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.download(ctx).unwrap(), Vec::<f32>::new());
        case.pass();
    }
}

/// Writes from `ContextOptions::staged_writes_from` on go through the context's pooled staging
/// buffers and a submission of their own: they must keep `queue.write_buffer`'s order against
/// small writes (and, from 0 bytes, against each other), touch nothing beyond their tensor (an
/// odd f16 tail's pad half aside), and show new data every time.
#[test]
fn large_writes_are_staged_in_order_and_in_place() {
    for (base, from) in contexts().iter().flat_map(|c| [(c, 1usize << 20), (c, 0)]) {
        let ctx = &context_with(base, wgpool::ContextOptions { staged_writes_from: Some(from), ..Default::default() });
        let case = Case::start(ctx);
        let name = format!("{} staged from {from} bytes", ctx.describe());
        let mut rng = Rng::new(23);
        // An odd number of f16 just above 1 MiB, at offset 256 of a poisoned caller buffer.
        let len = (1 << 19) + 1;
        let bytes = 256 + 2 * len as u64 + 4 + 256;
        let buffer = caller_buffer(ctx, bytes.next_multiple_of(4), USAGE);
        poison(ctx, &buffer);
        let big =
            GpuTensor::<f16>::from_buffer(&buffer, 256, InputShape::new(1, 1, [len]), Layout::ChannelsFirst).unwrap();
        // A small tensor inside the big one: its writes take `queue.write_buffer`.
        let small =
            GpuTensor::<f16>::from_buffer(&buffer, 512, InputShape::new(1, 1, [4]), Layout::ChannelsFirst).unwrap();
        let whole = GpuTensor::<u32>::from_buffer(
            &buffer,
            0,
            InputShape::new(1, 1, [(buffer.size() / 4) as usize]),
            Layout::ChannelsFirst,
        )
        .unwrap();
        let mut created = None;
        for round in 0..3 {
            let context = format!("[{name}] round {round}");
            let a: Vec<f16> = nasty_values(&mut rng, len);
            let b: Vec<f16> = nasty_values(&mut rng, 4);
            // Big then small: the small write lands last.
            let (_, staging_before) = ctx.pool_counts();
            big.write(ctx, &a).unwrap();
            if round == 0 {
                assert_eq!(
                    ctx.pool_counts().1,
                    staging_before + 1,
                    "{context}: the big write's staging buffer is kept"
                );
            }
            small.write(ctx, &b).unwrap();
            let mut want = a.clone();
            want[128..132].copy_from_slice(&b);
            assert_bits_eq("big then small", &context, &big.download(ctx).unwrap(), &want);
            // Small then big: the big write lands last.
            let c: Vec<f16> = nasty_values(&mut rng, 4);
            let d: Vec<f16> = nasty_values(&mut rng, len);
            small.write(ctx, &c).unwrap();
            big.write(ctx, &d).unwrap();
            assert_bits_eq("small then big", &context, &big.download(ctx).unwrap(), &d);
            // An empty write, here into the poison before the tensor, writes nothing.
            let empty =
                GpuTensor::<f16>::from_buffer(&buffer, 128, InputShape::new(0, 1, [4]), Layout::ChannelsFirst).unwrap();
            empty.write(ctx, &[]).unwrap();
            // Around the tensor: poison, and the zero pad half after its odd last element.
            let words = whole.download(ctx).unwrap();
            assert!(words[..64].iter().all(|&w| w == 0x7fa5_7fa5), "{context}: before the tensor");
            let end = (256 + 2 * len) / 4;
            assert_eq!(words[end] >> 16, 0, "{context}: the pad half after the last element");
            assert!(words[end + 1..].iter().all(|&w| w == 0x7fa5_7fa5), "{context}: after the tensor");
            // From the second round on, every staging and readback buffer comes from the pool.
            let made = ctx.pool_counts().0;
            assert_eq!(*created.get_or_insert(made), made, "{context}: the pool created buffers again");
        }
        // A large upload into a tensor of its own, f32.
        let f32s: Vec<f32> = nasty_values(&mut rng, (1 << 18) + 3);
        let t = GpuTensor::upload(ctx, InputShape::new(1, 1, [f32s.len()]), Layout::ChannelsFirst, &f32s).unwrap();
        assert_bits_eq("large upload", &name, &t.download(ctx).unwrap(), &f32s);
        case.pass();
    }
}

/// Forward and backward of `spec` through tensors wgpool allocates, against the CPU reference.
fn check_allocated<T: Element>(ctx: &Context, spec: &PoolSpec, input: &[T], grad_seed: u64) {
    let case = Case::start(ctx);
    let name = format!("{} {} {:?}", ctx.describe(), T::DTYPE.name(), spec);
    let want = cpu::reference::forward(spec, input).unwrap();
    let input_tensor = GpuTensor::upload(ctx, spec.input.clone(), spec.layout, input).unwrap();
    let pooled = ctx.forward_tensor(spec, &input_tensor).unwrap_or_else(|e| panic!("[{name}] forward: {e}"));
    assert_eq!(pooled.values.shape(), &spec.validate().unwrap().output_shape(), "[{name}] values shape");
    assert_eq!(pooled.indices.layout(), spec.layout, "[{name}] indices layout");

    let grad_output = gradients::<T>(&mut Rng::new(grad_seed), want.values.len());
    let want_gi = cpu::reference::backward(spec, &grad_output, &want.indices).unwrap();
    let grad_tensor = GpuTensor::upload(ctx, pooled.values.shape().clone(), spec.layout, &grad_output).unwrap();
    // The indices go from forward to backward without leaving the GPU.
    let backward = ctx.backward_tensor(spec, &grad_tensor, &pooled.indices).unwrap();
    backward.invalid_count.read(ctx).unwrap_or_else(|e| panic!("[{name}] invalid count: {e}"));
    assert_bits_eq("values", &name, &pooled.values.download(ctx).unwrap(), &want.values);
    assert_eq!(pooled.indices.download(ctx).unwrap(), want.indices, "[{name}] indices");
    assert_bits_eq("grad_input", &name, &backward.grad_input.download(ctx).unwrap(), &want_gi);
    // Values only: the same values, in a new tensor of the output shape.
    let values = ctx.forward_values_tensor(spec, &input_tensor).unwrap_or_else(|e| panic!("[{name}] values: {e}"));
    assert_eq!((values.shape(), values.layout()), (pooled.values.shape(), spec.layout), "[{name}] values-only shape");
    assert_bits_eq("values-only values", &name, &values.download(ctx).unwrap(), &want.values);
    case.pass();
}

/// The same through caller buffers: every tensor at an offset that is a multiple of 4 bytes but
/// not of 16 in one of three shared, poisoned buffers (reads, forward's writes, backward's writes:
/// one dispatch cannot read and write one buffer), forward and backward recorded into one encoder
/// and submitted once.
fn check_caller_buffers<T: Element>(ctx: &Context, spec: &PoolSpec, input: &[T], grad_seed: u64) {
    let case = Case::start(ctx);
    let name = format!("{} {} {:?} (caller buffers)", ctx.describe(), T::DTYPE.name(), spec);
    let g = spec.validate().unwrap();
    let out = g.output_shape();
    let elem = std::mem::size_of::<T>() as u64;
    let want = cpu::reference::forward(spec, input).unwrap();
    let grad_output = gradients::<T>(&mut Rng::new(grad_seed), want.values.len());
    let want_gi = cpu::reference::backward(spec, &grad_output, &want.indices).unwrap();

    let slot = |bytes: u64| bytes.next_multiple_of(256) + 256;
    let (in_bytes, out_bytes, idx_bytes) =
        (g.input_len() as u64 * elem, g.output_len() as u64 * elem, g.output_len() as u64 * 4);
    let reads = caller_buffer(ctx, slot(in_bytes) + slot(out_bytes), USAGE);
    let forward_writes = caller_buffer(ctx, slot(out_bytes) + slot(idx_bytes), USAGE);
    let backward_writes = caller_buffer(ctx, slot(in_bytes) + 256, USAGE);
    let values_only_writes = caller_buffer(ctx, slot(out_bytes) + 256, USAGE);
    poison(ctx, &forward_writes);
    poison(ctx, &backward_writes);
    poison(ctx, &values_only_writes);
    let input_t = GpuTensor::<T>::from_buffer(&reads, 4, spec.input.clone(), spec.layout).unwrap();
    let grad_t = GpuTensor::<T>::from_buffer(&reads, slot(in_bytes) + 8, out.clone(), spec.layout).unwrap();
    input_t.write(ctx, input).unwrap();
    grad_t.write(ctx, &grad_output).unwrap();
    let pooled = PooledTensors {
        values: GpuTensor::from_buffer(&forward_writes, 12, out.clone(), spec.layout).unwrap(),
        indices: GpuTensor::from_buffer(&forward_writes, slot(out_bytes) + 4, out, spec.layout).unwrap(),
    };
    let backward = BackwardTensors {
        grad_input: GpuTensor::from_buffer(&backward_writes, 8, spec.input.clone(), spec.layout).unwrap(),
        invalid_count: InvalidCount::from_buffer(&backward_writes, slot(in_bytes) + 4).unwrap(),
    };

    let values_only = GpuTensor::<T>::from_buffer(&values_only_writes, 20, g.output_shape(), spec.layout).unwrap();

    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    ctx.record_forward_tensor_into(&mut encoder, spec, &input_t, &pooled).unwrap();
    ctx.record_backward_tensor_into(&mut encoder, spec, &grad_t, &pooled.indices, &backward).unwrap();
    ctx.record_forward_values_tensor_into(&mut encoder, spec, &input_t, &values_only).unwrap();
    ctx.queue().submit([encoder.finish()]);

    backward.check(ctx).unwrap_or_else(|e| panic!("[{name}] invalid count: {e}"));
    assert_bits_eq("values", &name, &pooled.values.download(ctx).unwrap(), &want.values);
    assert_eq!(pooled.indices.download(ctx).unwrap(), want.indices, "[{name}] indices");
    assert_bits_eq("grad_input", &name, &backward.grad_input.download(ctx).unwrap(), &want_gi);
    assert_bits_eq("values-only values", &name, &values_only.download(ctx).unwrap(), &want.values);
    // The values-only pass wrote its values and nothing around them.
    let whole = GpuTensor::<u32>::from_buffer(
        &values_only_writes,
        0,
        InputShape::new(1, 1, [(values_only_writes.size() / 4) as usize]),
        Layout::ChannelsFirst,
    )
    .unwrap()
    .download(ctx)
    .unwrap();
    let (first, last) = (20 / 4, (20 + out_bytes).div_ceil(4) as usize);
    let mut outside = whole.iter().enumerate().filter(|&(i, _)| i < first || i >= last);
    if let Some((i, w)) = outside.find(|&(_, &w)| w != 0x7fa5_7fa5) {
        panic!("[{name}] values-only pass wrote word {i} ({w:#x}) outside its values");
    }
    case.pass();
}

fn random_cases<T: Element>(ctx: &Context, seed: u64, cases: usize) {
    let mut rng = Rng::new(seed);
    for i in 0..cases {
        let spec = random_spec(&mut rng, 9);
        let n = spec.input.numel().unwrap();
        let input: Vec<T> = if i % 5 == 4 { negative_values(&mut rng, n) } else { nasty_values(&mut rng, n) };
        if i % 2 == 0 {
            check_allocated(ctx, &spec, &input, seed + i as u64);
        } else {
            check_caller_buffers(ctx, &spec, &input, seed + i as u64);
        }
    }
}

#[test]
fn tensor_passes_match_the_cpu_reference_on_every_adapter() {
    for ctx in contexts() {
        random_cases::<f32>(ctx, 21, 40);
        if ctx.supports(DType::F16) {
            random_cases::<f16>(ctx, 22, 20);
        }
    }
}

#[test]
fn a_training_step_stays_on_the_gpu_with_reused_tensors() {
    // ResNet-stem pooling, channels-last, three steps through the same tensors, one submission
    // per step, one download at the end.
    let spec = PoolSpec::new(InputShape::nchw(2, 8, 13, 11), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]))
        .layout(Layout::ChannelsLast);
    let n = spec.input.numel().unwrap();
    for ctx in contexts() {
        let case = Case::start(ctx);
        let name = ctx.describe();
        let input = GpuTensor::<f32>::zeros(ctx, spec.input.clone(), spec.layout).unwrap();
        let pooled = PooledTensors::allocate(ctx, &spec).unwrap();
        let grad_output = GpuTensor::zeros(ctx, pooled.values.shape().clone(), spec.layout).unwrap();
        let backward = BackwardTensors::allocate(ctx, &spec).unwrap();
        let mut rng = Rng::new(5);
        let mut last = None;
        for _ in 0..3 {
            let data: Vec<f32> = nasty_values(&mut rng, n);
            let grads: Vec<f32> = gradients(&mut rng, pooled.values.len());
            input.write(ctx, &data).unwrap();
            grad_output.write(ctx, &grads).unwrap();
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            ctx.record_forward_tensor_into(&mut encoder, &spec, &input, &pooled).unwrap();
            // Reading and writing different buffers: backward may follow forward in one encoder.
            ctx.record_backward_tensor_into(&mut encoder, &spec, &grad_output, &pooled.indices, &backward).unwrap();
            ctx.queue().submit([encoder.finish()]);
            last = Some((data, grads));
        }
        let (data, grads) = last.unwrap();
        let want = cpu::reference::forward(&spec, &data).unwrap();
        let want_gi = cpu::reference::backward(&spec, &grads, &want.indices).unwrap();
        let grad_input = backward.check(ctx).unwrap().download(ctx).unwrap();
        assert_bits_eq("grad_input", &name, &grad_input, &want_gi);
        assert_bits_eq("values", &name, &pooled.values.download(ctx).unwrap(), &want.values);
        case.pass();
    }
}

#[test]
fn invalid_indices_are_counted_on_the_gpu_and_cleared_by_the_next_pass() {
    let spec = PoolSpec::new(InputShape::nchw(1, 2, 4, 4), PoolParams::new([2, 2]));
    let out = spec.validate().unwrap().output_shape();
    for ctx in contexts() {
        let case = Case::start(ctx);
        let name = ctx.describe();
        let grad_output = GpuTensor::upload(ctx, out.clone(), spec.layout, &[1.0f32; 8]).unwrap();
        // Plane index 16 is outside the 4×4 plane, 2 is outside its window, -1 is not allowed
        // where the window holds real elements; the rest are right.
        let bad = [0u32, 16, 2, NO_INDEX, 0, 2, 8, 10];
        let indices = GpuTensor::upload(ctx, out.clone(), spec.layout, &bad).unwrap();
        let backward = ctx.backward_tensor(&spec, &grad_output, &indices).unwrap();
        assert_eq!(backward.invalid_count.read(ctx), Err(Error::InvalidIndices { count: 3 }), "[{name}]");
        assert_eq!(backward.check(ctx).unwrap_err(), Error::InvalidIndices { count: 3 }, "[{name}]");
        // The CPU reference agrees on the count.
        assert_eq!(cpu::reference::backward(&spec, &[1.0f32; 8], &bad), Err(Error::InvalidIndices { count: 3 }));

        // The same counter, reused with valid indices, reads zero again.
        let good = [0u32, 2, 8, 10, 0, 2, 8, 10];
        indices.write(ctx, &good).unwrap();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        ctx.record_backward_tensor_into(&mut encoder, &spec, &grad_output, &indices, &backward).unwrap();
        ctx.queue().submit([encoder.finish()]);
        backward.invalid_count.read(ctx).unwrap_or_else(|e| panic!("[{name}] {e}"));
        let grad_input = backward.grad_input.download(ctx).unwrap();
        assert_eq!(grad_input, cpu::reference::backward(&spec, &[1.0f32; 8], &good).unwrap(), "[{name}]");
        case.pass();
    }
}

#[test]
fn mismatched_tensors_give_typed_errors() {
    let spec = PoolSpec::new(InputShape::nchw(1, 3, 8, 8), PoolParams::new([2, 2]));
    let out = spec.validate().unwrap().output_shape();
    for ctx in contexts() {
        let case = Case::start(ctx);
        let name = ctx.describe();
        let upload = |shape: InputShape, layout: Layout| {
            let n = shape.numel().unwrap();
            GpuTensor::<f32>::upload(ctx, shape, layout, &vec![0.0; n]).unwrap()
        };

        // Wrong spatial size, rank, batch and layout of the input.
        let err = ctx.forward_tensor(&spec, &upload(InputShape::nchw(1, 3, 8, 9), Layout::ChannelsFirst)).unwrap_err();
        assert!(
            matches!(&err, Error::ShapeMismatch { what, expected: 8, found: 9 } if what.starts_with("input dimension 3")),
            "[{name}] {err}"
        );
        let err = ctx.forward_tensor(&spec, &upload(InputShape::new(1, 3, [8, 8, 1]), Layout::ChannelsFirst));
        assert!(matches!(err, Err(Error::ShapeMismatch { expected: 4, found: 5, .. })), "[{name}] {err:?}");
        let err = ctx.forward_tensor(&spec, &upload(InputShape::nchw(2, 3, 8, 8), Layout::ChannelsFirst));
        assert!(matches!(err, Err(Error::ShapeMismatch { expected: 1, found: 2, .. })), "[{name}] {err:?}");
        let err = ctx.forward_tensor(&spec, &upload(spec.input.clone(), Layout::ChannelsLast)).unwrap_err();
        assert!(
            matches!(&err, Error::ShapeMismatch { what, expected: 1, found: 3 } if what.contains("channels-last")),
            "[{name}] {err}"
        );

        // Backward: gradients of the input's shape instead of the output's; outputs of the wrong shape.
        let indices = GpuTensor::<u32>::zeros(ctx, out.clone(), spec.layout).unwrap();
        let err = ctx.backward_tensor(&spec, &upload(spec.input.clone(), spec.layout), &indices).unwrap_err();
        assert!(
            matches!(&err, Error::ShapeMismatch { what, expected: 4, found: 8 } if what.starts_with("grad_output")),
            "[{name}] {err}"
        );
        let wrong_indices = GpuTensor::<u32>::zeros(ctx, InputShape::nchw(1, 2, 4, 4), spec.layout).unwrap();
        let err = ctx.backward_tensor(&spec, &upload(out.clone(), spec.layout), &wrong_indices).unwrap_err();
        assert!(matches!(&err, Error::ShapeMismatch { what, .. } if what.starts_with("indices")), "[{name}] {err}");
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        let wrong_outputs = PooledTensors::<f32>::allocate(
            ctx,
            &PoolSpec::new(InputShape::nchw(1, 3, 8, 8), PoolParams::new([4, 4])), // 2×2 outputs, not 4×4
        )
        .unwrap();
        let err = ctx
            .record_forward_tensor_into(&mut encoder, &spec, &upload(spec.input.clone(), spec.layout), &wrong_outputs)
            .unwrap_err();
        assert!(matches!(&err, Error::ShapeMismatch { what, .. } if what.starts_with("values")), "[{name}] {err}");
        let err = ctx
            .record_forward_values_tensor_into(
                &mut encoder,
                &spec,
                &upload(spec.input.clone(), spec.layout),
                &wrong_outputs.values,
            )
            .unwrap_err();
        assert!(matches!(&err, Error::ShapeMismatch { what, .. } if what.starts_with("values")), "[{name}] {err}");
        let err = ctx.forward_values_tensor(&spec, &upload(InputShape::nchw(1, 3, 8, 9), spec.layout)).unwrap_err();
        assert!(matches!(&err, Error::ShapeMismatch { what, .. } if what.starts_with("input")), "[{name}] {err}");

        // An invalid spec is reported as such before any tensor is looked at.
        let bad_spec = PoolSpec::new(InputShape::nchw(1, 3, 8, 8), PoolParams::new([2]));
        let err = ctx.forward_tensor(&bad_spec, &upload(spec.input.clone(), spec.layout)).unwrap_err();
        assert_eq!(err, Error::ParamRank { param: "kernel", expected: 2, found: 1 }, "[{name}]");

        // Host data of the wrong length.
        let err = GpuTensor::<f32>::upload(ctx, spec.input.clone(), spec.layout, &[0.0; 10]).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { expected: 192, found: 10, .. }), "[{name}] {err}");
        let err = upload(out.clone(), spec.layout).write(ctx, &[0.0; 3]).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { expected: 48, found: 3, .. }), "[{name}] {err}");

        // Caller buffers: alignment, size, usage.
        let buffer = caller_buffer(ctx, 64, USAGE);
        let shape = InputShape::nchw(1, 1, 2, 2);
        assert_eq!(
            GpuTensor::<f32>::from_buffer(&buffer, 2, shape.clone(), Layout::ChannelsFirst).unwrap_err(),
            Error::Misaligned { what: "f32 tensor".into(), offset: 2, alignment: 4 }
        );
        let err = GpuTensor::<f32>::from_buffer(&buffer, 52, shape.clone(), Layout::ChannelsFirst).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { expected: 68, found: 64, .. }), "[{name}] {err}");
        let half = GpuTensor::<f16>::from_buffer(&buffer, 2, shape.clone(), Layout::ChannelsFirst).unwrap();
        assert_eq!(
            half.write(ctx, &[f16::ONE; 4]).unwrap_err(),
            Error::Misaligned { what: "f16 tensor (write)".into(), offset: 2, alignment: 4 }
        );
        let uniform = caller_buffer(ctx, 64, wgpu::BufferUsages::UNIFORM);
        assert!(matches!(
            GpuTensor::<f32>::from_buffer(&uniform, 0, shape.clone(), Layout::ChannelsFirst),
            Err(Error::BufferUsage { .. })
        ));
        let no_copy = caller_buffer(ctx, 64, wgpu::BufferUsages::STORAGE);
        let t = GpuTensor::<f32>::from_buffer(&no_copy, 0, shape, Layout::ChannelsFirst).unwrap();
        assert_eq!(
            t.download(ctx).unwrap_err(),
            Error::BufferUsage { what: "tensor (download)".into(), usage: "COPY_SRC".into() }
        );
        assert!(matches!(InvalidCount::from_buffer(&no_copy, 0), Err(Error::BufferUsage { .. })));
        assert!(matches!(InvalidCount::from_buffer(&buffer, 62), Err(Error::Misaligned { .. })));

        // The record-level checks still apply: one buffer read and written by a dispatch.
        let shared = caller_buffer(ctx, 4096, USAGE);
        let input = GpuTensor::<f32>::from_buffer(&shared, 0, spec.input.clone(), spec.layout).unwrap();
        let outputs = PooledTensors {
            values: GpuTensor::from_buffer(&shared, 1024, out.clone(), spec.layout).unwrap(),
            indices: GpuTensor::from_buffer(&shared, 2048, out.clone(), spec.layout).unwrap(),
        };
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        let err = ctx.record_forward_tensor_into(&mut encoder, &spec, &input, &outputs).unwrap_err();
        assert!(matches!(err, Error::BufferUsage { .. }), "[{name}] {err}");

        // f16 without SHADER_F16.
        if !ctx.supports(DType::F16) {
            let input = GpuTensor::<f16>::zeros(ctx, spec.input.clone(), spec.layout).unwrap();
            let err = ctx.forward_tensor(&spec, &input).unwrap_err();
            assert!(matches!(err, Error::MissingFeature { feature: "SHADER_F16", .. }), "[{name}] {err}");
        }
        case.pass();
    }
}

/// The futures are `Send` on native targets, so multi-threaded executors can run them.
#[allow(dead_code)]
fn futures_are_send(ctx: &Context, spec: &PoolSpec, t: &GpuTensor<f32>, i: &GpuTensor<u32>, b: &BackwardTensors<f32>) {
    fn send<F: std::future::Future + Send>(_: F) {}
    send(GpuTensor::<f32>::upload_async(ctx, spec.input.clone(), spec.layout, &[]));
    send(GpuTensor::<f32>::zeros_async(ctx, spec.input.clone(), spec.layout));
    send(t.download_async(ctx));
    send(ctx.forward_tensor_async(spec, t));
    send(ctx.forward_values_tensor_async(spec, t));
    send(ctx.backward_tensor_async(spec, t, i));
    send(PooledTensors::<f32>::allocate_async(ctx, spec));
    send(BackwardTensors::<f32>::allocate_async(ctx, spec));
    send(b.check_async(ctx));
    send(InvalidCount::new_async(ctx));
}

#[test]
fn async_forms_work_under_any_executor() {
    let spec = PoolSpec::new(InputShape::new(2, 3, [10]), PoolParams::new([3]).stride([2]).padding([1]));
    let data: Vec<f32> = (0..60).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
    for ctx in contexts() {
        let case = Case::start(ctx);
        let got = pollster::block_on(async {
            let input = GpuTensor::upload_async(ctx, spec.input.clone(), spec.layout, &data).await?;
            let pooled = ctx.forward_tensor_async(&spec, &input).await?;
            let grad = GpuTensor::upload_async(ctx, pooled.values.shape().clone(), spec.layout, &[1.0f32; 30]).await?;
            let backward = ctx.backward_tensor_async(&spec, &grad, &pooled.indices).await?;
            let grad_input = backward.check_async(ctx).await?.download_async(ctx).await?;
            Ok::<_, Error>((pooled.values.download_async(ctx).await?, grad_input))
        })
        .unwrap();
        let want = cpu::reference::forward(&spec, &data).unwrap();
        assert_eq!(got.0, want.values, "[{}]", ctx.describe());
        assert_eq!(got.1, cpu::reference::backward(&spec, &[1.0f32; 30], &want.indices).unwrap());
        case.pass();
    }
}

/// The bytes wgpu's allocator holds once the GPU is idle and the buffers dropped so far are
/// freed; `None` where the backend has no allocator report (GL).
fn allocated_bytes(ctx: &Context) -> Option<u64> {
    ctx.wait(None).unwrap();
    let _ = ctx.device().poll(wgpu::PollType::wait_indefinitely());
    ctx.device().generate_allocator_report().map(|r| r.total_allocated_bytes)
}

/// A bind group keeps the buffers it binds alive: the bind-group cache must not keep the memory
/// of tensors the caller dropped beyond its budget, and must still serve repeated passes over the
/// same tensors.
#[test]
fn dropped_tensors_are_not_kept_alive_by_the_bind_group_cache() {
    const MIB: u64 = 1 << 20;
    let budget = 4 * MIB;
    // 1 MiB of input, 256 KiB each of values and indices: 1.5 MiB bound per pass.
    let spec = PoolSpec::new(InputShape::nchw(1, 4, 256, 256), PoolParams::new([2, 2]));
    let data: Vec<f32> = (0..1 << 18).map(|i| (i % 1013) as f32).collect();
    let want = cpu::reference::forward(&spec, &data).unwrap().values;
    let step = |ctx: &Context| {
        let input = GpuTensor::upload(ctx, spec.input.clone(), spec.layout, &data).unwrap();
        let pooled = ctx.forward_tensor(&spec, &input).unwrap();
        assert_eq!(pooled.values.download(ctx).unwrap(), want, "[{}]", ctx.describe());
    };
    for base in contexts() {
        let options = wgpool::ContextOptions { bind_group_cache_bytes: Some(budget), ..Default::default() };
        let ctx = &context_with(base, options);
        let case = Case::start(ctx);
        let name = ctx.describe();
        // Pipelines and the download's pooled readback buffer, then a clean cache.
        step(ctx);
        ctx.clear_caches();
        let before = allocated_bytes(ctx);
        // 24 steps, each over new tensors dropped at its end: 36 MiB bound in all.
        for _ in 0..24 {
            step(ctx);
        }
        let after = allocated_bytes(ctx);
        // At most the budget and the last pass's bind group (kept even above the budget), plus
        // the pool's readback buffer (256 KiB) and 1 MiB of slack for wgpu.
        if let (Some(before), Some(after)) = (before, after) {
            let growth = after.saturating_sub(before);
            assert!(
                growth <= budget + 3 * MIB,
                "[{name}] dropped tensors stay allocated: {growth} bytes more after 24 steps (budget {budget})"
            );
        }
        // A uniform buffer, the pool's readback buffer and at most three bind groups.
        assert!(ctx.cached_objects() <= 5, "[{name}] {} cached objects", ctx.cached_objects());

        // Passes over the same tensors still find their bind groups.
        let input = GpuTensor::upload(ctx, spec.input.clone(), spec.layout, &data).unwrap();
        let outputs = PooledTensors::<f32>::allocate(ctx, &spec).unwrap();
        let mut objects = None;
        for round in 0..3 {
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            ctx.record_forward_tensor_into(&mut encoder, &spec, &input, &outputs).unwrap();
            ctx.queue().submit([encoder.finish()]);
            let now = ctx.cached_objects();
            assert_eq!(*objects.get_or_insert(now), now, "[{name}] round {round}: a new bind group");
        }
        assert_eq!(outputs.values.download(ctx).unwrap(), want, "[{name}]");
        // What stays after clear_caches is what the context holds for good.
        drop((input, outputs));
        ctx.clear_caches();
        if let (Some(before), Some(cleared)) = (before, allocated_bytes(ctx)) {
            assert!(cleared <= before + MIB, "[{name}] {cleared} bytes after clear_caches, {before} before the steps");
        }
        case.pass();
    }
}

/// A `write` the device refuses (its buffer destroyed) returns its own error, through
/// `queue.write_buffer` and through a staged copy alike, and no later call inherits it; nor does
/// any call fail because of an error outside wgpool's calls, which `take_uncaptured_error` keeps.
#[test]
fn a_refused_write_fails_itself_and_no_other_call() {
    let spec = PoolSpec::new(InputShape::new(1, 2, [8]), PoolParams::new([2]));
    let data: Vec<f32> = (0..16).map(|i| ((i * 5) % 16) as f32).collect();
    let want = cpu::reference::forward(&spec, &data).unwrap();
    for base in contexts() {
        // Writes of 256 bytes and more are staged; a context of its own, whose uncaptured errors
        // only this test makes.
        let options = wgpool::ContextOptions { staged_writes_from: Some(256), ..Default::default() };
        let ctx = &context_with(base, options);
        let case = Case::start(ctx);
        let name = ctx.describe();
        for len in [4usize, 64] {
            let what = format!("[{name}] {} bytes", 4 * len);
            let buffer = caller_buffer(ctx, 256, USAGE);
            let t =
                GpuTensor::<f32>::from_buffer(&buffer, 0, InputShape::new(1, 1, [len]), Layout::ChannelsFirst).unwrap();
            t.write(ctx, &vec![1.0; len]).unwrap();
            buffer.destroy();
            let err = t.write(ctx, &vec![2.0; len]).unwrap_err();
            assert!(matches!(&err, Error::Device(m) if m.contains("destroyed")), "{what}: {err}");
            // Later calls, host-level and tensor-level, are fine.
            assert_eq!(ctx.forward(&spec, &data).unwrap(), want, "{what}");
            let input = GpuTensor::upload(ctx, spec.input.clone(), spec.layout, &data).unwrap();
            let pooled = ctx.forward_tensor(&spec, &input).unwrap();
            assert_eq!(pooled.values.download(ctx).unwrap(), want.values, "{what}");
        }
        assert_eq!(ctx.take_uncaptured_error(), None, "[{name}] the refused writes reported elsewhere");

        // The caller's own refused write, outside any wgpool call: kept, and failing no call.
        let buffer = caller_buffer(ctx, 256, USAGE);
        buffer.destroy();
        ctx.queue().write_buffer(&buffer, 0, &[0u8; 4]);
        assert_eq!(ctx.forward(&spec, &data).unwrap(), want, "[{name}]");
        let t = GpuTensor::upload(ctx, spec.input.clone(), spec.layout, &data).unwrap();
        assert_eq!(t.download(ctx).unwrap(), data, "[{name}]");
        let err = ctx.take_uncaptured_error();
        assert!(matches!(&err, Some(Error::Device(m)) if m.contains("destroyed")), "[{name}] {err:?}");
        assert_eq!(ctx.take_uncaptured_error(), None, "[{name}] taken once");
        case.pass();
    }
}

/// `max_compute_workgroups_per_dimension: Some(0)` would leave no dispatch possible (every
/// pass divided by it): refused when the context is made.
#[test]
fn zero_workgroups_per_dimension_is_refused_at_creation() {
    let options = wgpool::ContextOptions { max_compute_workgroups_per_dimension: Some(0), ..Default::default() };
    for ctx in contexts() {
        let case = Case::start(ctx);
        let adapters = wgpool::gpu::enumerate_adapters_blocking(&wgpool::ContextOptions {
            backends: Some(ctx.adapter_info().backend.into()),
            ..Default::default()
        });
        let adapter = adapters.iter().find(|a| a.get_info().name == ctx.adapter_info().name).unwrap();
        let err = pollster::block_on(Context::from_adapter(adapter, &options)).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidOption { option: "max_compute_workgroups_per_dimension", .. }),
            "[{}] {err}",
            ctx.describe()
        );
        // The smallest cap that can run anything still makes a context.
        let one = wgpool::ContextOptions { max_compute_workgroups_per_dimension: Some(1), ..Default::default() };
        let small = pollster::block_on(Context::from_adapter(adapter, &one)).unwrap();
        assert_eq!(small.limits().max_compute_workgroups_per_dimension, 1);
        let spec = PoolSpec::new(InputShape::new(1, 1, [4]), PoolParams::new([2]));
        assert_eq!(small.forward(&spec, &[1.0f32, 3.0, 2.0, 0.0]).unwrap().values, [3.0, 2.0]);
        case.pass();
    }
}

/// Sizes whose bytes or end offset overflow a u64 are refused as too large, not wrapped around
/// (in release builds) into a small size that passes the buffer's check.
#[test]
fn from_buffer_refuses_sizes_that_overflow() {
    for ctx in contexts() {
        let case = Case::start(ctx);
        let name = ctx.describe();
        let buffer = caller_buffer(ctx, 256, USAGE);
        let cf = Layout::ChannelsFirst;
        // 2^62 f32: 2^64 bytes.
        let err = GpuTensor::<f32>::from_buffer(&buffer, 0, InputShape::new(1, 1, [1 << 62]), cf).unwrap_err();
        assert!(matches!(err, Error::TooLarge { value, .. } if value == 1 << 64), "[{name}] {err}");
        let err = GpuTensor::<u32>::from_buffer(&buffer, 0, InputShape::new(4, 1, [1 << 61]), cf).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "[{name}] {err}");
        // One f16 at u64::MAX - 3: its 4-byte-rounded end is 2^64.
        let err = GpuTensor::<f16>::from_buffer(&buffer, u64::MAX - 3, InputShape::new(1, 1, [1]), cf).unwrap_err();
        assert!(matches!(err, Error::TooLarge { value, .. } if value == 1 << 64), "[{name}] {err}");
        let err = GpuTensor::<f32>::from_buffer(&buffer, u64::MAX - 3, InputShape::new(1, 1, [1]), cf).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "[{name}] {err}");
        // Large but representable: the buffer is too small.
        let err = GpuTensor::<f32>::from_buffer(&buffer, 0, InputShape::new(1, 1, [1 << 40]), cf).unwrap_err();
        assert!(
            matches!(err, Error::ShapeMismatch { expected, found: 256, .. } if expected == 4 << 40),
            "[{name}] {err}"
        );
        let err = GpuTensor::<f16>::from_buffer(&buffer, u64::MAX - 7, InputShape::new(1, 1, [1]), cf).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { expected, .. } if expected == u64::MAX - 3), "[{name}] {err}");
        // Allocated tensors: 2^63 − 1 f16 are 2^64 − 2 bytes, whose rounding up to whole words
        // overflows (it once wrapped to a 4-byte buffer).
        let huge = InputShape::new(1, 1, [(1 << 63) - 1]);
        let err = GpuTensor::<f16>::zeros(ctx, huge, cf).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "[{name}] {err}");
        case.pass();
    }
}

/// An empty tensor covers no bytes: it may sit at the very end of a buffer, and writes, downloads
/// and passes over it work.
#[test]
fn empty_tensors_need_no_bytes() {
    let spec = PoolSpec::new(InputShape::new(0, 1, [4]), PoolParams::new([2]));
    let out = spec.validate().unwrap().output_shape();
    for ctx in contexts() {
        let case = Case::start(ctx);
        let name = ctx.describe();
        let cf = Layout::ChannelsFirst;
        let buffers: Vec<wgpu::Buffer> = (0..4).map(|_| caller_buffer(ctx, 256, USAGE)).collect();
        let at_end = |i: usize, shape: &InputShape| GpuTensor::<f32>::from_buffer(&buffers[i], 256, shape.clone(), cf);
        let input = at_end(0, &spec.input).unwrap_or_else(|e| panic!("[{name}] {e}"));
        assert_eq!(input.size_bytes(), 0);
        input.write(ctx, &[]).unwrap();
        assert_eq!(input.download(ctx).unwrap(), Vec::<f32>::new(), "[{name}]");
        // f16 and u32 too, and f16 at a 2-byte offset; past the end is still refused.
        GpuTensor::<f16>::from_buffer(&buffers[0], 254, spec.input.clone(), cf).unwrap();
        GpuTensor::<u32>::from_buffer(&buffers[0], 256, spec.input.clone(), cf).unwrap();
        let err = GpuTensor::<f32>::from_buffer(&buffers[0], 260, spec.input.clone(), cf).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { expected: 260, found: 256, .. }), "[{name}] {err}");

        // Passes: into new tensors, and into empty ones at the ends of caller buffers.
        let pooled = ctx.forward_tensor(&spec, &input).unwrap();
        assert!(pooled.values.download(ctx).unwrap().is_empty() && pooled.indices.download(ctx).unwrap().is_empty());
        let outputs = PooledTensors {
            values: at_end(1, &out).unwrap(),
            indices: GpuTensor::<u32>::from_buffer(&buffers[2], 256, out.clone(), cf).unwrap(),
        };
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        ctx.record_forward_tensor_into(&mut encoder, &spec, &input, &outputs).unwrap();
        ctx.queue().submit([encoder.finish()]);
        let backward = ctx.backward_tensor(&spec, &outputs.values, &outputs.indices).unwrap();
        assert!(backward.check(ctx).unwrap().download(ctx).unwrap().is_empty(), "[{name}]");
        let into = BackwardTensors {
            grad_input: at_end(3, &spec.input).unwrap(),
            invalid_count: InvalidCount::new(ctx).unwrap(),
        };
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        ctx.record_backward_tensor_into(&mut encoder, &spec, &outputs.values, &outputs.indices, &into).unwrap();
        ctx.queue().submit([encoder.finish()]);
        into.invalid_count.read(ctx).unwrap_or_else(|e| panic!("[{name}] {e}"));
        case.pass();
    }
}
