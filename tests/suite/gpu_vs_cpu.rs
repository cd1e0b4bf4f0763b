//! GPU against the CPU reference, bit for bit, on every adapter found.

use super::common::*;
use wgpool::wgpu;
use wgpool::{
    BackwardBuffers, BufferRegion, Context, ContextOptions, DType, Element, Error, ForwardBuffers, InputShape, Layout,
    PoolParams, PoolSpec, RecordOptions, cpu, f16,
};

/// Forward and backward of `spec` on `ctx` against the CPU reference; returns the indices.
fn check_case<T: Element>(ctx: &Context, spec: &PoolSpec, input: &[T], grad_seed: u64) {
    let case = Case::start(ctx);
    let name = format!("{} {} {:?}", ctx.describe(), T::DTYPE.name(), spec);
    let want = cpu::reference::forward(spec, input).unwrap();
    let got = ctx.forward(spec, input).unwrap_or_else(|e| panic!("[{name}] forward: {e}"));
    assert_bits_eq("values", &name, &got.values, &want.values);
    assert_eq!(got.indices, want.indices, "[{name}] indices");
    let only = ctx.forward_values(spec, input).unwrap_or_else(|e| panic!("[{name}] forward_values: {e}"));
    assert_bits_eq("values only", &name, &only, &want.values);

    let grad_output = gradients::<T>(&mut Rng::new(grad_seed), want.values.len());
    let want_gi = cpu::reference::backward(spec, &grad_output, &want.indices).unwrap();
    let got_gi = ctx.backward(spec, &grad_output, &want.indices).unwrap_or_else(|e| panic!("[{name}] backward: {e}"));
    assert_bits_eq("grad_input", &name, &got_gi, &want_gi);
    case.pass();
}

fn random_cases<T: Element>(ctx: &Context, seed: u64, cases: usize) {
    let mut rng = Rng::new(seed);
    for i in 0..cases {
        let spec = random_spec(&mut rng, 9);
        let n = spec.input.numel().unwrap();
        let input: Vec<T> = if i % 5 == 4 { negative_values(&mut rng, n) } else { nasty_values(&mut rng, n) };
        check_case(ctx, &spec, &input, seed + i as u64);
    }
}

#[test]
fn random_f32_cases_match_the_cpu_reference_on_every_adapter() {
    for ctx in contexts() {
        random_cases::<f32>(ctx, 1, 120);
    }
}

/// Random problems through the generic kernels alone (`generic_calls` never reached): what the
/// first call on each new shape runs by default.
#[test]
fn random_cases_match_through_the_generic_kernels() {
    for base in contexts() {
        let ctx = context_with(base, ContextOptions { generic_calls: Some(u32::MAX), ..Default::default() });
        random_cases::<f32>(&ctx, 21, 40);
        if ctx.supports(DType::F16) {
            random_cases::<f16>(&ctx, 22, 20);
        }
        // At most a forward, a values-only forward, a gather and a scatter per element type and
        // lane width; and new shapes compile nothing more.
        let generic = ctx.cached_pipelines();
        assert!(generic <= 16, "[{}] {generic} pipelines: more than the generic ones", ctx.describe());
        random_cases::<f32>(&ctx, 23, 20);
        assert_eq!(ctx.cached_pipelines(), generic, "[{}] new shapes compiled pipelines", ctx.describe());
        // Sizes above 2^16, which the shaders' multiply-high splits into halves, and dilation.
        let mut rng = Rng::new(24);
        for spec in [
            PoolSpec::new(InputShape::new(1, 2, [140_001]), PoolParams::new([3]).stride([2]).padding([1])),
            PoolSpec::new(InputShape::new(1, 3, [2, 70_003]), PoolParams::new([2, 5]).stride([1, 3]).dilation([1, 2]))
                .layout(Layout::ChannelsLast),
        ] {
            let n = spec.input.numel().unwrap();
            check_case::<f32>(&ctx, &spec, &nasty_values(&mut rng, n), 25);
        }
    }
}

#[test]
fn f16_matches_the_cpu_reference_where_supported_and_is_refused_elsewhere() {
    let mut ran = 0;
    for ctx in contexts() {
        if ctx.supports(DType::F16) {
            random_cases::<f16>(ctx, 2, 60);
            ran += 1;
        } else {
            let case = Case::start(ctx);
            let spec = PoolSpec::new(InputShape::nchw(1, 1, 2, 2), PoolParams::new([2, 2]));
            let err = ctx.forward(&spec, &[f16::ONE; 4]).unwrap_err();
            assert!(matches!(err, Error::MissingFeature { feature: "SHADER_F16", .. }), "[{}] {err}", ctx.describe());
            assert!(err.to_string().contains("SHADER_F16"), "[{}] message: {err}", ctx.describe());
            case.pass();
        }
    }
    let vulkan = contexts().iter().any(|c| c.adapter_info().backend == wgpu::Backend::Vulkan);
    assert!(!vulkan || ran > 0, "a Vulkan adapter is present but none ran the f16 cases");
}

#[test]
fn hand_picked_corner_cases_match_on_every_adapter() {
    // (input shape, params, layout)
    let cases: Vec<(InputShape, PoolParams, Layout)> = vec![
        // ceil_mode with the correction: 5 wide, k2 s2 p1 -> 3 outputs.
        (InputShape::nchw(2, 3, 5, 5), PoolParams::new([2, 2]).padding([1, 1]).ceil_mode(true), Layout::ChannelsFirst),
        // Windows of padding only (dilation): index -1, value -inf.
        (InputShape::new(1, 2, [1]), PoolParams::new([2]).dilation([2]).padding([1]), Layout::ChannelsFirst),
        (
            InputShape::nchw(1, 2, 1, 4),
            PoolParams::new([3, 1]).dilation([2, 1]).padding([1, 0]).ceil_mode(true),
            Layout::ChannelsLast,
        ),
        // Overlapping ResNet stem pool, odd size.
        (InputShape::nchw(2, 4, 13, 11), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]), Layout::ChannelsFirst),
        (InputShape::nchw(2, 4, 13, 11), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]), Layout::ChannelsLast),
        // Stride above kernel: elements in no window get +0.
        (InputShape::nchw(1, 3, 9, 10), PoolParams::new([2, 2]).stride([3, 4]), Layout::ChannelsFirst),
        // Tiling windows (the scatter backward), 1-D, 2-D and 3-D, both layouts.
        (InputShape::new(2, 3, [16]), PoolParams::new([2]), Layout::ChannelsFirst),
        (InputShape::nchw(2, 3, 8, 6), PoolParams::new([2, 3]), Layout::ChannelsLast),
        (InputShape::new(2, 3, [4, 6, 4]), PoolParams::new([2, 2, 2]), Layout::ChannelsFirst),
        (
            InputShape::new(1, 5, [5, 3, 7]),
            PoolParams::new([2, 2, 2]).padding([1, 0, 1]).ceil_mode(true),
            Layout::ChannelsLast,
        ),
        // The row-blocked kernels (W axis k2 s2, width divisible by 8), 1-D, 2-D, 3-D, with
        // padding, dilation and overlap on the other axes.
        (InputShape::new(2, 3, [32]), PoolParams::new([2]), Layout::ChannelsFirst),
        (InputShape::new(2, 3, [12]), PoolParams::new([2]), Layout::ChannelsFirst),
        (InputShape::nchw(2, 3, 6, 12), PoolParams::new([2, 2]), Layout::ChannelsFirst),
        (InputShape::nchw(2, 3, 7, 16), PoolParams::new([2, 2]).ceil_mode(true), Layout::ChannelsFirst),
        (InputShape::nchw(2, 2, 9, 24), PoolParams::new([3, 2]).stride([2, 2]).padding([1, 0]), Layout::ChannelsFirst),
        (
            InputShape::new(1, 2, [5, 4, 8]),
            PoolParams::new([2, 2, 2]).dilation([2, 1, 1]).padding([1, 0, 0]),
            Layout::ChannelsFirst,
        ),
        (InputShape::new(1, 2, [4, 6, 16]), PoolParams::new([2, 2, 2]), Layout::ChannelsFirst),
        // The row-block gather (width divisible by 4, overlapping or gapped windows).
        (InputShape::nchw(2, 3, 9, 12), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]), Layout::ChannelsFirst),
        (InputShape::new(2, 3, [20]), PoolParams::new([3]).stride([1]).padding([1]), Layout::ChannelsFirst),
        (
            InputShape::new(1, 2, [4, 5, 8]),
            PoolParams::new([2, 3, 3]).stride([1, 2, 1]).padding([1, 1, 1]).dilation([1, 1, 2]),
            Layout::ChannelsFirst,
        ),
        (InputShape::nchw(1, 2, 7, 16), PoolParams::new([2, 2]).stride([3, 3]).ceil_mode(true), Layout::ChannelsFirst),
        // The span kernel (widths divisible by 4, W windows other than k2 s2 p0): the ResNet stem,
        // ceil_mode, dilation, windows wider than their stride with padding 2, 1-D and 3-D.
        (InputShape::nchw(2, 3, 9, 16), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]), Layout::ChannelsFirst),
        (
            InputShape::nchw(1, 2, 7, 16),
            PoolParams::new([2, 3]).stride([2, 2]).padding([1, 0]).ceil_mode(true),
            Layout::ChannelsFirst,
        ),
        (
            InputShape::nchw(1, 3, 5, 16),
            PoolParams::new([1, 2]).stride([1, 2]).padding([0, 1]).dilation([1, 2]),
            Layout::ChannelsFirst,
        ),
        (InputShape::new(2, 2, [32]), PoolParams::new([5]).stride([2]).padding([2]), Layout::ChannelsFirst),
        (InputShape::new(2, 2, [24]), PoolParams::new([3]).stride([3]), Layout::ChannelsFirst),
        (
            InputShape::new(1, 2, [4, 5, 16]),
            PoolParams::new([2, 3, 3]).stride([1, 2, 2]).padding([1, 1, 1]),
            Layout::ChannelsFirst,
        ),
        // Kernels above 64 taps: the loops visit only real taps (RANGED_TAPS).
        (InputShape::new(1, 2, [70]), PoolParams::new([100]).padding([50]), Layout::ChannelsFirst),
        (InputShape::nchw(1, 2, 5, 50), PoolParams::new([1, 80]).stride([1, 7]).padding([0, 40]), Layout::ChannelsLast),
        (InputShape::new(1, 3, [70]), PoolParams::new([100]).padding([40]), Layout::ChannelsFirst),
        // Kernel 1, stride 1: identity.
        (InputShape::nchw(1, 2, 3, 3), PoolParams::new([1, 1]), Layout::ChannelsFirst),
        // Large dilation and stride 1 on 3-D.
        (
            InputShape::new(1, 2, [5, 6, 7]),
            PoolParams::new([2, 3, 2]).stride([1, 1, 1]).dilation([3, 2, 2]).padding([1, 1, 1]),
            Layout::ChannelsLast,
        ),
    ];
    let mut rng = Rng::new(3);
    for base in contexts() {
        // The specialised kernels, then the generic ones that a shape's first calls run.
        let generic = context_with(base, ContextOptions { generic_calls: Some(u32::MAX), ..Default::default() });
        for ctx in [base, &generic] {
            for (shape, params, layout) in &cases {
                let spec = PoolSpec::new(shape.clone(), params.clone()).layout(*layout);
                let n = spec.input.numel().unwrap();
                check_case::<f32>(ctx, &spec, &nasty_values(&mut rng, n), 7);
                check_case::<f32>(ctx, &spec, &vec![f32::NEG_INFINITY; n], 8);
                check_case::<f32>(ctx, &spec, &vec![f32::NAN; n], 9);
                check_case::<f32>(ctx, &spec, &vec![-0.0; n], 10);
            }
        }
        // At most a forward, a values-only forward, a gather and a scatter per lane width and
        // per `RANGED_TAPS` (the kernels above 64 taps).
        let pipelines = generic.cached_pipelines();
        assert!(pipelines <= 16, "[{}] {pipelines} pipelines: more than the generic ones", generic.describe());
    }
}

#[test]
fn invalid_indices_are_counted_on_the_gpu_like_on_the_cpu() {
    let spec = PoolSpec::new(InputShape::nchw(2, 2, 6, 7), PoolParams::new([3, 2]).stride([2, 2]).padding([1, 1]));
    let tiled = PoolSpec::new(InputShape::nchw(2, 2, 6, 8), PoolParams::new([2, 2]));
    let mut rng = Rng::new(4);
    for ctx in contexts() {
        for spec in [&spec, &tiled] {
            let case = Case::start(ctx);
            let n = spec.input.numel().unwrap();
            let pooled = cpu::reference::forward(spec, &nasty_values::<f32>(&mut rng, n)).unwrap();
            let grad = gradients::<f32>(&mut rng, pooled.values.len());
            let plane = spec.validate().unwrap().plane_in() as u32;
            // Outside the plane, outside its window, and -1 where the window has real elements.
            for (bad, count) in
                [(vec![(0, plane)], 1), (vec![(1, pooled.indices[1] + 17), (5, 0)], 2), (vec![(3, u32::MAX)], 1)]
            {
                let mut indices = pooled.indices.clone();
                for &(at, v) in &bad {
                    indices[at] = v;
                }
                let want = cpu::reference::backward(spec, &grad, &indices).unwrap_err();
                let got = ctx.backward(spec, &grad, &indices).unwrap_err();
                assert_eq!(got, want, "[{}] {spec:?}", ctx.describe());
                assert_eq!(got, Error::InvalidIndices { count }, "[{}]", ctx.describe());
            }
            case.pass();
        }
        // The row-block gather (two rows a block, the last block of an odd height one row; also
        // over 3-D slices, where the row after a slice's last is the next slice's first) and the
        // cell gather (2×2 cells, channels-last, odd height and width): every window's index
        // spoiled in turn, so that each is counted once, by the block or cell holding its anchor,
        // whichever of its positions that is. The fixed-cover twins (which find the windows a
        // block anchors from its phase against the windows, `fixed_anchors`) also get every
        // window's index moved to each neighbour of its element (±1 column, ±1 row and both,
        // which cross a row's or a slice's end at the edges), and must count it once.
        let k3 = PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
        let rows = PoolSpec::new(InputShape::nchw(1, 2, 7, 8), k3.clone());
        let cells = PoolSpec::new(InputShape::nchw(1, 4, 7, 5), k3).layout(Layout::ChannelsLast);
        let slices = PoolSpec::new(
            InputShape::new(1, 1, [3, 5, 8]),
            PoolParams::new([2, 3, 3]).stride([1, 2, 2]).padding([1, 1, 1]),
        );
        assert!(cpu::reference::gather_rows_eligible(&rows.validate().unwrap()));
        for spec in [&rows, &cells, &slices] {
            let case = Case::start(ctx);
            let g = spec.validate().unwrap();
            let n = spec.input.numel().unwrap();
            let pooled = cpu::reference::forward(spec, &nasty_values::<f32>(&mut rng, n)).unwrap();
            let grad = gradients::<f32>(&mut rng, pooled.values.len());
            let fixed: Vec<_> = ctx.backward_variants(spec).unwrap().into_iter().filter(|v| v.fixed_cover).collect();
            assert!(!fixed.is_empty(), "[{}] {spec:?}: no fixed-cover gather", ctx.describe());
            let w = g.axes[2].input as u32;
            for at in 0..pooled.indices.len() {
                for (k, offset) in
                    [17, 1, 8, 1u32.wrapping_neg(), w, w.wrapping_neg(), w + 1, w - 1].into_iter().enumerate()
                {
                    let mut indices = pooled.indices.clone();
                    indices[at] = indices[at].wrapping_add(offset);
                    let want = cpu::reference::backward(spec, &grad, &indices);
                    let want_count = match &want {
                        Err(Error::InvalidIndices { count }) => *count,
                        _ => 0,
                    };
                    // The host level (the context's choice) with the first three offsets in turn.
                    if k == at % 3 {
                        let got = ctx.backward(spec, &grad, &indices);
                        assert_eq!(got.map(|_| ()), want.map(|_| ()), "[{}] {spec:?} output {at}", ctx.describe());
                    }
                    for &variant in &fixed {
                        let (_, count) = record_backward_counted(ctx, spec, &grad, &indices, Some(variant)).unwrap();
                        let name = format!("[{}] {variant} {spec:?} output {at} + {offset}", ctx.describe());
                        assert_eq!(count as u64, want_count, "{name}");
                    }
                }
            }
            case.pass();
        }
        // The generic gather and scatter, which count by a loop over the windows each element
        // anchors: every window's index spoiled in turn, with windows that start in the padding
        // (several of them anchored at coordinate 0: padding 2 over stride 1 or 2), dilation, 3-D
        // and four channels per invocation.
        let generic = context_with(ctx, ContextOptions { generic_calls: Some(u32::MAX), ..Default::default() });
        for spec in [
            PoolSpec::new(InputShape::new(1, 2, [9]), PoolParams::new([5]).stride([2]).padding([2])),
            PoolSpec::new(InputShape::nchw(1, 1, 5, 6), PoolParams::new([3, 5]).stride([1, 2]).padding([1, 2]))
                .layout(Layout::ChannelsLast),
            PoolSpec::new(InputShape::nchw(1, 4, 4, 5), PoolParams::new([3, 3]).padding([1, 1]).dilation([1, 2]))
                .layout(Layout::ChannelsLast),
            PoolSpec::new(
                InputShape::new(1, 1, [3, 4, 4]),
                PoolParams::new([2, 3, 2]).stride([2, 1, 2]).padding([1, 1, 1]),
            ),
            PoolSpec::new(InputShape::nchw(1, 2, 4, 6), PoolParams::new([2, 3]).stride([2, 3])),
        ] {
            let case = Case::start(&generic);
            let n = spec.input.numel().unwrap();
            let pooled = cpu::reference::forward(&spec, &nasty_values::<f32>(&mut rng, n)).unwrap();
            let grad = gradients::<f32>(&mut rng, pooled.values.len());
            for at in 0..pooled.indices.len() {
                let mut indices = pooled.indices.clone();
                indices[at] = indices[at].wrapping_add([17, 1, 8][at % 3]);
                let want = cpu::reference::backward(&spec, &grad, &indices);
                let got = generic.backward(&spec, &grad, &indices);
                assert_eq!(got.map(|_| ()), want.map(|_| ()), "[{}] {spec:?} output {at}", generic.describe());
            }
            case.pass();
        }
        assert!(generic.cached_pipelines() <= 6, "[{}] the generic kernels only", generic.describe());
    }
}

#[test]
fn empty_batch_gives_empty_outputs() {
    for ctx in contexts() {
        let case = Case::start(ctx);
        let spec = PoolSpec::new(InputShape::nchw(0, 3, 8, 8), PoolParams::new([2, 2]));
        let out = ctx.forward::<f32>(&spec, &[]).unwrap();
        assert!(out.values.is_empty() && out.indices.is_empty(), "[{}]", ctx.describe());
        assert!(ctx.backward::<f32>(&spec, &[], &[]).unwrap().is_empty(), "[{}]", ctx.describe());
        case.pass();
    }
}

/// Host-level calls reuse their pooled buffers (the upload staging too, mapped again after each
/// call): once warm, repeating a call allocates nothing more, and every repeat sees its own new
/// data.
fn repeat_host_calls<T: Element>(ctx: &Context, spec: &PoolSpec, rng: &mut Rng) {
    let name = format!("{} {} {spec:?}", ctx.describe(), T::DTYPE.name());
    let n = spec.input.numel().unwrap();
    let mut objects = None;
    let (_, staging_before) = ctx.pool_counts();
    let mut created = None;
    for round in 0..6 {
        let case = Case::start(ctx);
        let input: Vec<T> = nasty_values(rng, n);
        let want = cpu::reference::forward(spec, &input).unwrap();
        let got = ctx.forward(spec, &input).unwrap_or_else(|e| panic!("[{name}] round {round}: forward: {e}"));
        assert_bits_eq("values", &format!("{name} round {round}"), &got.values, &want.values);
        assert_eq!(got.indices, want.indices, "[{name}] round {round}: indices");
        let grad_output: Vec<T> = gradients(rng, want.values.len());
        let got_gi = ctx.backward(spec, &grad_output, &want.indices).unwrap();
        let want_gi = cpu::reference::backward(spec, &grad_output, &want.indices).unwrap();
        assert_bits_eq("grad_input", &format!("{name} round {round}"), &got_gi, &want_gi);
        let (made, staging) = ctx.pool_counts();
        if round == 0 {
            // One upload for the forward pass, two for the backward: each staging buffer is kept.
            assert_eq!(staging - staging_before, 3, "[{name}] staging buffers kept after the first round");
        }
        assert_eq!(*created.get_or_insert(made), made, "[{name}] round {round}: the pool created buffers again");
        // The first rounds may add bind groups: the pool hands out same-sized buffers in either
        // role (gradient or indices), and the bind groups are cached per buffer.
        if round >= 3 {
            let now = ctx.cached_objects();
            assert_eq!(*objects.get_or_insert(now), now, "[{name}] round {round}: cached objects grew");
        }
        case.pass();
    }
}

#[test]
fn repeated_host_calls_reuse_their_buffers_and_see_new_data() {
    let mut rng = Rng::new(77);
    for base in contexts() {
        // A context of its own: the shared ones serve other tests at the same time.
        let ctx = context_with(base, ContextOptions::default());
        let spec = PoolSpec::new(InputShape::nchw(2, 3, 9, 11), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]));
        repeat_host_calls::<f32>(&ctx, &spec, &mut rng);
        if ctx.supports(DType::F16) {
            // An odd number of f16: the upload is padded to whole words.
            let odd = PoolSpec::new(InputShape::nchw(1, 1, 5, 7), PoolParams::new([2, 2]).ceil_mode(true));
            repeat_host_calls::<f16>(&ctx, &odd, &mut rng);
        }
    }
}

#[test]
fn tensors_above_the_binding_limit_are_split_into_chunks() {
    let mut rng = Rng::new(5);
    for base in contexts() {
        // 1 KiB bindings: a few planes per chunk, so every pass runs several dispatches; each
        // problem through the specialised kernels and through the generic ones.
        for generic_calls in [Some(0), Some(u32::MAX)] {
            let options =
                ContextOptions { max_storage_buffer_binding_size: Some(1024), generic_calls, ..Default::default() };
            let ctx = context_with(base, options);
            assert_eq!(ctx.limits().max_storage_buffer_binding_size, 1024);
            for (shape, params, layout) in [
                (InputShape::nchw(3, 5, 7, 6), PoolParams::new([2, 2]), Layout::ChannelsFirst),
                (
                    InputShape::nchw(3, 5, 7, 6),
                    PoolParams::new([3, 2]).stride([1, 2]).padding([1, 1]),
                    Layout::ChannelsFirst,
                ),
                (InputShape::nchw(4, 3, 5, 6), PoolParams::new([2, 2]).ceil_mode(true), Layout::ChannelsLast),
                (InputShape::nchw(3, 5, 4, 16), PoolParams::new([2, 2]), Layout::ChannelsFirst),
                (InputShape::nchw(5, 2, 3, 4), PoolParams::new([3, 2]).padding([1, 0]), Layout::ChannelsLast),
                (
                    InputShape::new(5, 7, [33]),
                    PoolParams::new([3]).stride([2]).dilation([2]).padding([1]),
                    Layout::ChannelsFirst,
                ),
            ] {
                let spec = PoolSpec::new(shape, params).layout(layout);
                let n = spec.input.numel().unwrap();
                check_case::<f32>(&ctx, &spec, &nasty_values(&mut rng, n), 11);
            }
            if generic_calls == Some(0) {
                chunked_fixed_cover_gathers(&ctx, &mut rng);
            }
            // One plane bigger than a binding: a clear error naming the limit.
            let spec = PoolSpec::new(InputShape::nchw(1, 1, 32, 32), PoolParams::new([2, 2]));
            let err = ctx.forward(&spec, &vec![1.0f32; 1024]).unwrap_err();
            assert!(
                matches!(err, Error::BindingTooSmall { unit: "plane", limit: 1024, .. }),
                "[{}] {err}",
                ctx.describe()
            );
            assert!(err.to_string().contains("1024"), "{err}");
        }
    }
}

/// The fixed-cover gathers, forced, over several chunks (one dispatch each, counting into the
/// same counter): the gradient and the count of spoiled indices come out whole.
fn chunked_fixed_cover_gathers(ctx: &Context, rng: &mut Rng) {
    let k3 = PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
    for spec in [
        PoolSpec::new(InputShape::nchw(3, 5, 7, 8), k3.clone()),
        PoolSpec::new(InputShape::nchw(3, 4, 7, 5), k3.clone()).layout(Layout::ChannelsLast),
    ] {
        let case = Case::start(ctx);
        let g = spec.validate().unwrap();
        let pooled = cpu::reference::forward(&spec, &nasty_values::<f32>(rng, g.input_len())).unwrap();
        let grad = gradients::<f32>(rng, g.output_len());
        let want = cpu::reference::backward(&spec, &grad, &pooled.indices).unwrap();
        let mut bad = pooled.indices.clone();
        for i in (0..bad.len()).step_by(3) {
            bad[i] = bad[i].wrapping_add(1 + (i % 7) as u32);
        }
        let count = match cpu::reference::backward(&spec, &grad, &bad) {
            Err(Error::InvalidIndices { count }) => count,
            other => panic!("{spec:?}: the spoiled indices gave {other:?}"),
        };
        let fixed: Vec<_> = ctx.backward_variants(&spec).unwrap().into_iter().filter(|v| v.fixed_cover).collect();
        assert!(!fixed.is_empty(), "[{}] {spec:?}: no fixed-cover gather", ctx.describe());
        for variant in fixed {
            let name = format!("[{}] {variant} {spec:?}", ctx.describe());
            let (grad_input, counted) =
                record_backward_counted(ctx, &spec, &grad, &pooled.indices, Some(variant)).unwrap();
            assert_eq!(counted, 0, "{name}: valid indices counted");
            assert_bits_eq("grad_input", &name, &grad_input, &want);
            let (_, counted) = record_backward_counted(ctx, &spec, &grad, &bad, Some(variant)).unwrap();
            assert_eq!(counted as u64, count, "{name}: spoiled indices");
        }
        case.pass();
    }
}

#[test]
fn dispatches_beyond_the_per_dimension_limit_use_a_second_dimension() {
    let mut rng = Rng::new(6);
    for base in contexts() {
        // With at most 4 workgroups per dimension every kernel below needs a 2-D grid; the
        // specialised kernels, then the generic ones.
        for generic_calls in [Some(0), Some(u32::MAX)] {
            let options =
                ContextOptions { max_compute_workgroups_per_dimension: Some(4), generic_calls, ..Default::default() };
            let ctx = context_with(base, options);
            for (shape, params, layout) in [
                // Generic forward and gather backward (channels-last, C not a multiple of 4).
                (InputShape::nchw(2, 3, 20, 20), PoolParams::new([2, 2]).stride([1, 1]), Layout::ChannelsLast),
                // Workgroup-memory tiles (overlapping, channels-first).
                (InputShape::nchw(1, 2, 20, 20), PoolParams::new([2, 2]).stride([1, 1]), Layout::ChannelsFirst),
                // Row blocks (k2 s2, width divisible by 8) and the tiled scatter.
                (InputShape::nchw(2, 5, 16, 128), PoolParams::new([2, 2]), Layout::ChannelsFirst),
            ] {
                let spec = PoolSpec::new(shape, params).layout(layout);
                // The row kernels need four times fewer workgroups than one output per
                // invocation: the generic kernel cannot fit the last problem into 4 × 4
                // workgroups (a limit only a test sets; real ones allow 65,535 × 65,535), so the
                // row kernels run it even here.
                let n = spec.input.numel().unwrap();
                check_case::<f32>(&ctx, &spec, &nasty_values(&mut rng, n), 12);
            }
        }
    }
    // And once for real: more than 65,535 x 256 outputs in one plane.
    for ctx in contexts() {
        let spec = PoolSpec::new(InputShape::new(1, 1, [65_535 * 256 + 1000]), PoolParams::new([1]));
        let case = Case::start(ctx);
        let input: Vec<f32> = (0..spec.input.numel().unwrap()).map(|i| (i % 1013) as f32 - 500.0).collect();
        let out = ctx.forward(&spec, &input).unwrap();
        assert!(out.values == input, "[{}] identity pool over a 2-D grid", ctx.describe());
        assert!(out.indices.iter().enumerate().all(|(i, &x)| x as usize == i), "[{}] indices", ctx.describe());
        case.pass();
    }
}

/// The encoder level over caller-owned, poisoned buffers at non-zero offsets.
#[test]
fn encoder_level_over_caller_buffers_at_offsets() {
    let mut rng = Rng::new(7);
    for ctx in contexts() {
        let case = Case::start(ctx);
        let device = ctx.device();
        let spec = PoolSpec::new(
            InputShape::nchw(2, 3, 9, 7),
            PoolParams::new([3, 3]).stride([2, 1]).padding([1, 1]).ceil_mode(true),
        );
        let g = spec.validate().unwrap();
        let input: Vec<f32> = nasty_values(&mut rng, g.input_len());
        let poison = |bytes: u64, usage: wgpu::BufferUsages| {
            let data = vec![0xA5u8; bytes as usize];
            let b = device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: bytes,
                usage,
                mapped_at_creation: false,
            });
            ctx.queue().write_buffer(&b, 0, &data);
            b
        };
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        let (in_off, out_off, idx_off) = (12u64, 512u64, 36u64);
        let input_buf = poison(in_off + 4 * g.input_len() as u64, storage);
        ctx.queue().write_buffer(&input_buf, in_off, bytemuck::cast_slice(&input));
        // values and indices share one buffer.
        let out_buf = poison(out_off + 4 * g.output_len() as u64 + 64, storage);
        let idx_buf = poison(idx_off + 4 * g.output_len() as u64, storage);
        let grad_output: Vec<f32> = gradients(&mut rng, g.output_len());
        let go_buf = poison(4 * g.output_len() as u64, storage);
        ctx.queue().write_buffer(&go_buf, 0, bytemuck::cast_slice(&grad_output));
        let gi_off = 8u64;
        let gi_buf = poison(gi_off + 4 * g.input_len() as u64 + 4, storage);
        let counter_off = gi_off + 4 * g.input_len() as u64;

        let mut encoder = device.create_command_encoder(&Default::default());
        let fwd = ForwardBuffers {
            input: BufferRegion::new(&input_buf, in_off),
            values: BufferRegion::new(&out_buf, out_off),
            indices: BufferRegion::new(&idx_buf, idx_off),
        };
        ctx.record_forward(&mut encoder, &spec, DType::F32, &fwd, RecordOptions::default()).unwrap();
        let bwd = BackwardBuffers {
            grad_output: (&go_buf).into(),
            indices: BufferRegion::new(&idx_buf, idx_off),
            grad_input: BufferRegion::new(&gi_buf, gi_off),
            invalid_count: BufferRegion::new(&gi_buf, counter_off),
        };
        ctx.record_backward(&mut encoder, &spec, DType::F32, &bwd, RecordOptions::default()).unwrap();
        ctx.queue().submit([encoder.finish()]);

        let read = |buf: &wgpu::Buffer| -> Vec<u8> {
            let staging = device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: buf.size(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut e = device.create_command_encoder(&Default::default());
            e.copy_buffer_to_buffer(buf, 0, &staging, 0, buf.size());
            ctx.queue().submit([e.finish()]);
            staging.slice(..).map_async(wgpu::MapMode::Read, |r| r.unwrap());
            ctx.wait(None).unwrap();
            staging.slice(..).get_mapped_range().unwrap().to_vec()
        };
        let want = cpu::reference::forward(&spec, &input).unwrap();
        let want_gi = cpu::reference::backward(&spec, &grad_output, &want.indices).unwrap();
        let out_bytes = read(&out_buf);
        let values: Vec<f32> =
            bytemuck::pod_collect_to_vec(&out_bytes[out_off as usize..out_off as usize + 4 * g.output_len()]);
        // Bytes around the tensor stay untouched.
        assert!(
            out_bytes[..out_off as usize]
                .iter()
                .chain(&out_bytes[out_off as usize + 4 * g.output_len()..])
                .all(|&b| b == 0xA5),
            "[{}] wrote outside values",
            ctx.describe()
        );
        let idx_bytes = read(&idx_buf);
        let indices: Vec<u32> = bytemuck::pod_collect_to_vec(&idx_bytes[idx_off as usize..]);
        let gi_bytes = read(&gi_buf);
        let grad_input: Vec<f32> = bytemuck::pod_collect_to_vec(&gi_bytes[gi_off as usize..counter_off as usize]);
        let counter = u32::from_le_bytes(gi_bytes[counter_off as usize..counter_off as usize + 4].try_into().unwrap());
        let name = ctx.describe();
        assert_bits_eq("values", &name, &values, &want.values);
        assert_eq!(indices, want.indices, "[{name}] indices");
        assert_bits_eq("grad_input", &name, &grad_input, &want_gi);
        assert_eq!(counter, 0, "[{name}] invalid_count");
        assert!(gi_bytes[..gi_off as usize].iter().all(|&b| b == 0xA5), "[{name}] wrote before grad_input");

        // Bad buffers are refused before anything is recorded.
        let mut encoder = device.create_command_encoder(&Default::default());
        let small = poison(16, storage);
        let err = ctx.record_forward(
            &mut encoder,
            &spec,
            DType::F32,
            &ForwardBuffers { values: (&small).into(), ..fwd },
            RecordOptions::default(),
        );
        assert!(matches!(err, Err(Error::ShapeMismatch { .. })), "[{name}] {err:?}");
        let err = ctx.record_forward(
            &mut encoder,
            &spec,
            DType::F32,
            &ForwardBuffers { input: BufferRegion::new(&input_buf, 2), ..fwd },
            RecordOptions::default(),
        );
        assert!(matches!(err, Err(Error::Misaligned { .. })), "[{name}] {err:?}");
        let err = ctx.record_forward(
            &mut encoder,
            &spec,
            DType::F32,
            &ForwardBuffers { values: BufferRegion::new(&input_buf, 0), ..fwd },
            RecordOptions::default(),
        );
        assert!(matches!(err, Err(Error::BufferUsage { .. })), "[{name}] {err:?}");
        case.pass();
    }
}

/// Channels-last with C a multiple of 4 runs four channels per invocation, and channels-first
/// with a k2 s2 W axis four outputs of a row; the same cases with `scalar_only` run one element
/// per invocation. All must equal the reference.
#[test]
fn vector_kernels_match_the_scalar_ones() {
    let mut rng = Rng::new(8);
    for base in contexts() {
        let scalar = context_with(base, ContextOptions { scalar_only: true, ..Default::default() });
        // Channels-first cases the row-blocked kernels take.
        for (shape, params) in [
            (InputShape::nchw(3, 2, 6, 16), PoolParams::new([2, 2])),
            (InputShape::new(2, 2, [3, 4, 8]), PoolParams::new([1, 2, 2]).padding([0, 1, 0])),
            // ... and the span kernel.
            (InputShape::nchw(2, 3, 10, 24), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1])),
            (InputShape::new(3, 2, [32]), PoolParams::new([4]).stride([3]).padding([2]).ceil_mode(true)),
        ] {
            let spec = PoolSpec::new(shape, params);
            let g = spec.validate().unwrap();
            let (rows, span) =
                (wgpool::cpu::reference::rows_eligible(&g, 4), wgpool::cpu::reference::span_eligible(&g));
            assert!(rows || span, "{spec:?} is for neither row-blocked forward");
            let n = spec.input.numel().unwrap();
            let input = nasty_values::<f32>(&mut rng, n);
            check_case::<f32>(base, &spec, &input, 15);
            check_case::<f32>(&scalar, &spec, &input, 15);
        }
        for (shape, params) in [
            (InputShape::nchw(2, 8, 9, 7), PoolParams::new([2, 2])),
            (InputShape::nchw(2, 8, 8, 6), PoolParams::new([2, 3])),
            (InputShape::nchw(1, 12, 11, 9), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]).ceil_mode(true)),
            (InputShape::new(2, 4, [3, 5, 4]), PoolParams::new([2, 2, 2]).dilation([1, 2, 1]).padding([1, 1, 0])),
            (InputShape::new(3, 16, [17]), PoolParams::new([3]).stride([1]).padding([1])),
            (InputShape::new(1, 4, [1]), PoolParams::new([2]).dilation([2]).padding([1])),
        ] {
            let spec = PoolSpec::new(shape, params).layout(Layout::ChannelsLast);
            let n = spec.input.numel().unwrap();
            let input = nasty_values::<f32>(&mut rng, n);
            check_case::<f32>(base, &spec, &input, 13);
            check_case::<f32>(&scalar, &spec, &input, 13);
            if base.supports(DType::F16) {
                let input = nasty_values::<f16>(&mut rng, n);
                check_case::<f16>(base, &spec, &input, 14);
            }
        }
    }
}

/// The opt-in workgroup-memory kernels (`ContextOptions::workgroup_tiles`) against the reference
/// on random overlapping channels-first problems.
#[test]
fn workgroup_tile_kernels_match_the_reference() {
    let mut rng = Rng::new(9);
    for base in contexts() {
        let ctx = context_with(base, ContextOptions { workgroup_tiles: true, ..Default::default() });
        let mut ran = 0;
        while ran < 25 {
            let mut spec = random_spec(&mut rng, 12);
            spec.layout = Layout::ChannelsFirst;
            let g = spec.validate().unwrap();
            if g.non_overlapping() || wgpool::cpu::reference::shared_tile(&g, true).is_none() {
                continue;
            }
            let n = spec.input.numel().unwrap();
            check_case::<f32>(&ctx, &spec, &nasty_values(&mut rng, n), 16);
            ran += 1;
        }
    }
}
