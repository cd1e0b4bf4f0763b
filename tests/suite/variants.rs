//! Every kernel variant a context lists for a problem (`Context::forward_variants`,
//! `backward_variants`), forced through `RecordOptions::variant`, against the CPU reference bit
//! for bit, into poisoned outputs, on every adapter (the forward ones also values-only); and
//! forcing one that does not apply is an error that records nothing.

use std::collections::BTreeSet;

use super::common::*;
use wgpool::gpu::{Kernel, LaneWidth, Variant};
use wgpool::{
    BackwardBuffers, BackwardTensors, Context, ContextOptions, DType, Element, Error, ForwardBuffers, GpuTensor,
    InputShape, Layout, PoolParams, PoolSpec, PooledTensors, RecordOptions, cpu, f16,
};

/// Problems that between them make every kernel variant apply.
fn fixed_specs() -> Vec<PoolSpec> {
    let k3 = PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
    vec![
        // k2 s2 channels-first: forward rows, tiled rows, both row-block gathers.
        PoolSpec::new(InputShape::nchw(2, 3, 6, 16), PoolParams::new([2, 2])),
        // The ResNet stem, channels-first: span forward, workgroup tiles, row-block gathers;
        // odd height (the last two-row block has one real row).
        PoolSpec::new(InputShape::nchw(2, 3, 9, 16), k3.clone()),
        // ... channels-last with C % 4 == 0: four-channel forward, cell and four-channel gathers.
        PoolSpec::new(InputShape::nchw(2, 8, 7, 5), k3.clone()).layout(Layout::ChannelsLast),
        // Tiling channels-last: the four-channel scatter and the gathers on tiles.
        PoolSpec::new(InputShape::nchw(2, 4, 6, 8), PoolParams::new([2, 2])).layout(Layout::ChannelsLast),
        // 1-D, one row (one-row gather blocks only), ceil_mode.
        PoolSpec::new(InputShape::new(2, 3, [20]), PoolParams::new([3]).stride([2]).padding([1]).ceil_mode(true)),
        // 3-D with dilation and padding.
        PoolSpec::new(
            InputShape::new(1, 2, [4, 5, 8]),
            PoolParams::new([2, 3, 3]).stride([1, 2, 1]).padding([1, 1, 1]).dilation([1, 1, 2]),
        ),
        // Fixed-cover gathers at other phases: windows overlapping by two (k4 s2 p2); stride 1
        // (one- and two-row blocks, odd height); no padding with ceil_mode; wide windows (k5
        // s2 p2); windows with gaps between them (k3 s4 along W); 3-D.
        PoolSpec::new(InputShape::nchw(1, 2, 7, 8), PoolParams::new([4, 4]).stride([2, 2]).padding([2, 2])),
        PoolSpec::new(InputShape::nchw(2, 1, 5, 12), PoolParams::new([3, 3]).stride([1, 1]).padding([1, 1])),
        PoolSpec::new(InputShape::nchw(1, 2, 10, 12), PoolParams::new([3, 3]).stride([2, 2]).ceil_mode(true)),
        PoolSpec::new(InputShape::nchw(1, 1, 9, 16), PoolParams::new([5, 5]).stride([2, 2]).padding([2, 2])),
        PoolSpec::new(InputShape::nchw(1, 2, 6, 16), PoolParams::new([3, 3]).stride([2, 4]).padding([1, 1])),
        PoolSpec::new(
            InputShape::new(1, 2, [3, 6, 8]),
            PoolParams::new([2, 3, 3]).stride([1, 2, 2]).padding([0, 1, 1]),
        ),
        // Windows of 2^32 − 4 rows, mostly padding: the ranged tap loops (and no fixed cover,
        // whose window numbering is in i32).
        PoolSpec::new(
            InputShape::nchw(1, 1, 4, 4),
            PoolParams::new([u32::MAX as usize - 3, 1]).stride([1, 1]).padding([(1 << 31) - 2, 0]),
        ),
        // ... and fixed-cover cells (channels-last): stride 1, windows overlapping by two, no
        // padding with ceil_mode, 3-D.
        PoolSpec::new(InputShape::nchw(1, 4, 6, 7), PoolParams::new([3, 3]).stride([1, 1]).padding([1, 1]))
            .layout(Layout::ChannelsLast),
        PoolSpec::new(InputShape::nchw(1, 8, 5, 6), PoolParams::new([4, 4]).stride([2, 2]).padding([2, 2]))
            .layout(Layout::ChannelsLast),
        PoolSpec::new(InputShape::nchw(2, 4, 7, 9), PoolParams::new([3, 3]).stride([2, 2]).ceil_mode(true))
            .layout(Layout::ChannelsLast),
        PoolSpec::new(
            InputShape::new(1, 4, [3, 5, 6]),
            PoolParams::new([2, 3, 3]).stride([1, 2, 2]).padding([1, 1, 1]),
        )
        .layout(Layout::ChannelsLast),
    ]
}

/// Whether the kernel counts invalid indices the way the general gather does (once per window
/// whose anchor its invocation holds); the scatter kernels count per output or per block.
fn counts_like_the_gather(kernel: Kernel) -> bool {
    !matches!(kernel, Kernel::BackwardTiled | Kernel::BackwardTiledRows)
}

/// `n` elements of a signalling-NaN pattern that varies along the buffer (no kernel writes
/// signalling NaNs with these payloads).
fn poison<T: Element>(n: usize) -> Vec<T> {
    let words: Vec<u32> = (0..(n * std::mem::size_of::<T>()).div_ceil(4))
        .map(|i| 0x7d2a_7fa5 ^ ((i as u32 & 0x3f) * 0x0001_0001))
        .collect();
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    bytemuck::pod_collect_to_vec::<u8, T>(&bytes[..n * std::mem::size_of::<T>()])
}

fn poison_f32(n: usize) -> Vec<f32> {
    poison(n)
}

fn forced(variant: Variant) -> RecordOptions<'static> {
    RecordOptions { variant: Some(variant), ..Default::default() }
}

/// Records and submits one pass of `spec` in f32 (`forward`, else backward) over tensors of its
/// own, with `variant` forced (`None`: the context's choice); returns the pipelines compiled by
/// then. (The data does not matter: what is compiled does.)
fn record_pass(ctx: &Context, spec: &PoolSpec, forward: bool, variant: Option<Variant>) -> usize {
    let g = spec.validate().unwrap();
    let input = GpuTensor::upload(ctx, spec.input.clone(), spec.layout, &vec![1f32; g.input_len()]).unwrap();
    let pooled = PooledTensors::<f32>::allocate(ctx, spec).unwrap();
    let back = BackwardTensors::<f32>::allocate(ctx, spec).unwrap();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let options = RecordOptions { variant, ..Default::default() };
    if forward {
        let buffers =
            ForwardBuffers { input: input.region(), values: pooled.values.region(), indices: pooled.indices.region() };
        ctx.record_forward(&mut encoder, spec, DType::F32, &buffers, options).unwrap();
    } else {
        let buffers = BackwardBuffers {
            grad_output: pooled.values.region(),
            indices: pooled.indices.region(),
            grad_input: back.grad_input.region(),
            invalid_count: back.invalid_count.region(),
        };
        ctx.record_backward(&mut encoder, spec, DType::F32, &buffers, options).unwrap();
    }
    ctx.queue().submit([encoder.finish()]);
    ctx.cached_pipelines()
}

/// Runs every listed variant of `spec` on `ctx` in element type `T` and compares; returns the
/// variants run.
fn check_variants<T: Element>(ctx: &Context, spec: &PoolSpec, rng: &mut Rng) -> Vec<Variant> {
    let g = spec.validate().unwrap();
    let n = g.input_len();
    let input_data = nasty_values::<T>(rng, n);
    let want = cpu::reference::forward(spec, &input_data).unwrap();
    let grad_data = gradients::<T>(rng, want.values.len());
    let want_gi = cpu::reference::backward(spec, &grad_data, &want.indices).unwrap();
    let out_shape = g.output_shape();
    let input = GpuTensor::upload(ctx, spec.input.clone(), spec.layout, &input_data).unwrap();
    let grad_output = GpuTensor::upload(ctx, out_shape.clone(), spec.layout, &grad_data).unwrap();
    let indices = GpuTensor::upload(ctx, out_shape, spec.layout, &want.indices).unwrap();
    // Three spoiled indices: outside the plane, shifted, and -1 in a real window.
    let mut bad_data = want.indices.clone();
    let m = bad_data.len();
    bad_data[0] = g.plane_in() as u32;
    bad_data[m / 2] = bad_data[m / 2].wrapping_add(5);
    bad_data[m - 1] = u32::MAX;
    let mut scratch = vec![T::ZERO; n];
    let bad_count = cpu::reference::max_pool_backward(&g, &grad_data, &bad_data, &mut scratch);
    assert!(bad_count > 0, "{spec:?}: the spoiled indices must be invalid");
    let bad = GpuTensor::upload(ctx, indices.shape().clone(), spec.layout, &bad_data).unwrap();
    let pooled = PooledTensors::<T>::allocate(ctx, spec).unwrap();
    let back = BackwardTensors::<T>::allocate(ctx, spec).unwrap();

    let forward = ctx.forward_variants(spec).unwrap();
    let backward = ctx.backward_variants(spec).unwrap();
    for &variant in &forward {
        let name = format!("{} {} {variant} {spec:?}", ctx.describe(), T::DTYPE.name());
        pooled.values.write(ctx, &poison::<T>(m)).unwrap();
        pooled.indices.write(ctx, &vec![0xdead_beef; m]).unwrap();
        let buffers =
            ForwardBuffers { input: input.region(), values: pooled.values.region(), indices: pooled.indices.region() };
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        ctx.record_forward(&mut encoder, spec, T::DTYPE, &buffers, forced(variant))
            .unwrap_or_else(|e| panic!("[{name}] forward: {e}"));
        ctx.queue().submit([encoder.finish()]);
        assert_bits_eq("values", &name, &pooled.values.download(ctx).unwrap(), &want.values);
        assert_eq!(pooled.indices.download(ctx).unwrap(), want.indices, "[{name}] indices");
        // Values only: the same values, and the indices buffer untouched.
        pooled.values.write(ctx, &poison::<T>(m)).unwrap();
        pooled.indices.write(ctx, &vec![0xdead_beef; m]).unwrap();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        let (input, values) = (input.region(), pooled.values.region());
        ctx.record_forward_values(&mut encoder, spec, T::DTYPE, input, values, forced(variant))
            .unwrap_or_else(|e| panic!("[{name}] forward values: {e}"));
        ctx.queue().submit([encoder.finish()]);
        assert_bits_eq("values only", &name, &pooled.values.download(ctx).unwrap(), &want.values);
        assert_eq!(pooled.indices.download(ctx).unwrap(), vec![0xdead_beef; m], "[{name}] indices, values only");
    }
    for &variant in &backward {
        let name = format!("{} {} {variant} {spec:?}", ctx.describe(), T::DTYPE.name());
        for (idx, count) in [(&indices, 0), (&bad, bad_count)] {
            back.grad_input.write(ctx, &poison::<T>(n)).unwrap();
            let buffers = BackwardBuffers {
                grad_output: grad_output.region(),
                indices: idx.region(),
                grad_input: back.grad_input.region(),
                invalid_count: back.invalid_count.region(),
            };
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            ctx.record_backward(&mut encoder, spec, T::DTYPE, &buffers, forced(variant))
                .unwrap_or_else(|e| panic!("[{name}] backward: {e}"));
            ctx.queue().submit([encoder.finish()]);
            let got = match back.invalid_count.read(ctx) {
                Ok(()) => 0,
                Err(Error::InvalidIndices { count }) => count,
                Err(e) => panic!("[{name}] reading the count: {e}"),
            };
            if count == 0 {
                assert_eq!(got, 0, "[{name}] invalid count of valid indices");
                assert_bits_eq("grad_input", &name, &back.grad_input.download(ctx).unwrap(), &want_gi);
            } else if counts_like_the_gather(variant.kernel) {
                assert_eq!(got, count, "[{name}] invalid count of spoiled indices");
            } else {
                assert!(got > 0, "[{name}] spoiled indices not counted");
            }
        }
    }
    forward.into_iter().chain(backward).collect()
}

#[test]
fn every_listed_variant_matches_the_reference_on_every_adapter() {
    let mut rng = Rng::new(31);
    for ctx in contexts() {
        let mut seen = BTreeSet::new();
        for spec in fixed_specs() {
            let case = Case::start(ctx);
            for v in check_variants::<f32>(ctx, &spec, &mut rng) {
                seen.insert(format!("{v}"));
            }
            // f16 where the adapter has it: its NaN results are a constant, not the hardware's.
            if ctx.supports(DType::F16) {
                check_variants::<f16>(ctx, &spec, &mut rng);
            }
            case.pass();
        }
        // Every kernel ran, and both gather block heights.
        for kernel in Kernel::ALL {
            let name = Variant::new(kernel, LaneWidth::One).name();
            assert!(
                seen.iter().any(|s| s.split([' ', '/']).next() == Some(&*name)),
                "[{}] no fixed problem lists {name}; seen: {seen:?}",
                ctx.describe()
            );
        }
        for name in [
            "backward_rows/2rows",
            "backward_rows/2rows fixed",
            "backward_rows fixed",
            "backward_cells x4 fixed",
            "backward_rows",
            "backward_cells x4",
            "backward x4",
            "forward x4",
            "backward_rows/2rows single-pass",
            "backward_rows single-pass",
            "backward_cells x4 single-pass",
            "backward x4 single-pass",
            "backward single-pass",
            "forward generic",
            "forward x4 generic",
            "backward generic",
            "backward x4 generic",
            "backward_tiled generic",
            "backward_tiled x4 generic",
        ] {
            assert!(seen.contains(name), "[{}] {name} never ran; seen: {seen:?}", ctx.describe());
        }
        for _ in 0..12 {
            let spec = random_spec(&mut rng, 9);
            let case = Case::start(ctx);
            check_variants::<f32>(ctx, &spec, &mut rng);
            case.pass();
        }
    }
}

#[test]
fn the_first_listed_variant_is_the_default_and_options_reorder_the_list() {
    let stem = PoolSpec::new(InputShape::nchw(2, 3, 9, 16), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]));
    let names = |list: Vec<Variant>| list.iter().map(Variant::name).collect::<Vec<_>>();
    for base in contexts() {
        let case = Case::start(base);
        let who = base.describe();
        assert_eq!(
            names(base.forward_variants(&stem).unwrap()),
            ["forward_span", "forward", "forward_shared", "forward generic"],
            "[{who}]"
        );
        assert_eq!(
            names(base.backward_variants(&stem).unwrap()),
            [
                "backward_rows/2rows",
                "backward_rows/2rows fixed",
                "backward_rows/2rows single-pass",
                "backward_rows",
                "backward_rows single-pass",
                "backward",
                "backward single-pass",
                "backward_shared",
                "backward generic"
            ],
            "[{who}]"
        );
        let tiles = context_with(base, ContextOptions { workgroup_tiles: true, ..Default::default() });
        assert_eq!(tiles.forward_variants(&stem).unwrap()[0].name(), "forward_shared", "[{who}]");
        assert_eq!(tiles.backward_variants(&stem).unwrap()[0].name(), "backward_shared", "[{who}]");
        let scalar = context_with(base, ContextOptions { scalar_only: true, ..Default::default() });
        assert_eq!(names(scalar.forward_variants(&stem).unwrap()), ["forward", "forward generic"], "[{who}]");
        assert_eq!(names(scalar.backward_variants(&stem).unwrap()), ["backward", "backward generic"], "[{who}]");
        let tiled = PoolSpec::new(InputShape::nchw(2, 4, 6, 8), PoolParams::new([2, 2])).layout(Layout::ChannelsLast);
        assert_eq!(
            names(scalar.backward_variants(&tiled).unwrap()),
            ["backward_tiled", "backward_tiled generic"],
            "[{who}]"
        );
        assert_eq!(
            names(base.backward_variants(&tiled).unwrap()),
            [
                "backward_tiled x4",
                "backward_tiled",
                "backward_cells x4",
                "backward_cells x4 fixed",
                "backward_cells x4 single-pass",
                "backward x4",
                "backward x4 single-pass",
                "backward",
                "backward single-pass",
                "backward_tiled x4 generic",
                "backward_tiled generic"
            ],
            "[{who}]"
        );
        case.pass();
    }
}

/// The first pass recorded without a forced variant runs the generic stand-in of the first one
/// listed, the second pass that first one: forcing either after it compiles no new pipeline,
/// forcing another does, and later passes compile nothing.
#[test]
fn unforced_passes_run_the_first_listed_variant() {
    let k3 = PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
    let stem = PoolSpec::new(InputShape::nchw(1, 2, 9, 16), k3.clone());
    let nhwc = PoolSpec::new(InputShape::nchw(1, 4, 9, 16), k3).layout(Layout::ChannelsLast);
    for base in contexts() {
        let case = Case::start(base);
        for spec in [&stem, &nhwc] {
            for forward in [true, false] {
                // A context of its own: an empty pipeline cache; the library's default tiers.
                let options =
                    ContextOptions { generic_calls: Some(wgpool::gpu::DEFAULT_GENERIC_CALLS), ..Default::default() };
                let ctx = context_with(base, options);
                let who = format!("{} {} {spec:?}", ctx.describe(), if forward { "forward" } else { "backward" });
                let list = if forward { ctx.forward_variants(spec) } else { ctx.backward_variants(spec) }.unwrap();
                assert!(list.len() >= 2, "[{who}] {list:?}");
                let record = |variant: Option<Variant>| record_pass(&ctx, spec, forward, variant);
                let stand_in = list[0].generic();
                assert!(list.contains(&stand_in), "[{who}] {stand_in} is not listed: {list:?}");
                assert_eq!(record(None), 1, "[{who}] the first unforced pass");
                assert_eq!(record(Some(stand_in)), 1, "[{who}] {stand_in} is not what the first pass ran");
                assert_eq!(record(None), 2, "[{who}] the second unforced pass compiled nothing");
                assert_eq!(record(Some(list[0])), 2, "[{who}] {} is not what the second pass ran", list[0]);
                assert_eq!(record(Some(list[1])), 3, "[{who}] {} compiled nothing new", list[1]);
                assert_eq!(record(None), 3, "[{who}] a third unforced pass compiled something");
            }
        }
        case.pass();
    }
}

/// `Context::prepare` compiles what the calls on those shapes then use: the calls compile
/// nothing more, host level and tensor level, whatever the batch; bad input is a typed error that
/// compiles nothing.
#[test]
fn prepared_shapes_compile_nothing_at_their_first_call() {
    let k3 = PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
    let specs = [
        PoolSpec::new(InputShape::nchw(1, 2, 9, 16), k3.clone()),
        PoolSpec::new(InputShape::nchw(2, 4, 9, 16), k3).layout(Layout::ChannelsLast),
        PoolSpec::new(InputShape::new(3, 5, [12]), PoolParams::new([2]).ceil_mode(true)),
        PoolSpec::new(InputShape::new(1, 2, [4, 6, 5]), PoolParams::new([2, 2, 2])),
    ];
    let mut rng = Rng::new(31);
    for base in contexts() {
        let case = Case::start(base);
        // A context of its own: an empty pipeline cache.
        let ctx = context_with(base, ContextOptions::default());
        let who = ctx.describe();
        // Refusals first: nothing compiled.
        let bad = PoolSpec::new(InputShape::nchw(1, 1, 8, 8), PoolParams::new([2, 2]).padding([2, 2]));
        let refused = ctx.prepare(&[specs[0].clone(), bad], DType::F32);
        assert!(matches!(refused, Err(Error::PaddingTooLarge { .. })), "[{who}] {refused:?}");
        if !ctx.supports(DType::F16) {
            assert!(matches!(ctx.prepare(&specs, DType::F16), Err(Error::MissingFeature { .. })), "[{who}]");
        }
        assert_eq!(ctx.cached_pipelines(), 0, "[{who}] a refused prepare compiled something");

        ctx.prepare(&[], DType::F32).unwrap();
        assert_eq!(ctx.cached_pipelines(), 0, "[{who}] nothing to prepare");
        // Every spec twice, the second time with another batch: the same pipelines.
        let twice: Vec<PoolSpec> = specs
            .iter()
            .flat_map(|s| {
                let mut other = s.clone();
                other.input.batch += 2;
                [s.clone(), other]
            })
            .collect();
        ctx.prepare(&twice, DType::F32).unwrap();
        assert_eq!(ctx.cached_pipelines(), 2 * specs.len(), "[{who}] a forward and a backward pipeline per shape");
        ctx.prepare_values(&specs, DType::F32).unwrap();
        let prepared = ctx.cached_pipelines();
        assert_eq!(prepared, 3 * specs.len(), "[{who}] and a values-only forward");
        for spec in &specs {
            // Another batch: the same geometry, the same pipelines.
            let mut spec = spec.clone();
            spec.input.batch += 1;
            let n = spec.input.numel().unwrap();
            let x: Vec<f32> = nasty_values(&mut rng, n);
            let want = cpu::reference::forward(&spec, &x).unwrap();
            let got = ctx.forward(&spec, &x).unwrap();
            assert_bits_eq("values", &format!("{who} {spec:?}"), &got.values, &want.values);
            let only = ctx.forward_values(&spec, &x).unwrap();
            assert_bits_eq("values only", &format!("{who} {spec:?}"), &only, &want.values);
            let grad: Vec<f32> = gradients(&mut rng, want.values.len());
            let gi = ctx.backward(&spec, &grad, &want.indices).unwrap();
            let want_gi = cpu::reference::backward(&spec, &grad, &want.indices).unwrap();
            assert_bits_eq("grad_input", &format!("{who} {spec:?}"), &gi, &want_gi);
            let tensor = GpuTensor::upload(&ctx, spec.input.clone(), spec.layout, &x).unwrap();
            let pooled = ctx.forward_tensor(&spec, &tensor).unwrap();
            ctx.backward_tensor(&spec, &pooled.values, &pooled.indices).unwrap();
            assert_eq!(ctx.cached_pipelines(), prepared, "[{who}] {spec:?}: a call compiled a pipeline");
        }
        case.pass();
    }
}

#[test]
fn forcing_a_variant_that_does_not_apply_is_an_error_and_records_nothing() {
    let k3 = PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
    let nhwc = PoolSpec::new(InputShape::nchw(1, 4, 4, 8), PoolParams::new([2, 2])).layout(Layout::ChannelsLast);
    let nchw6 = PoolSpec::new(InputShape::nchw(1, 2, 4, 6), k3.clone());
    let nchw8 = PoolSpec::new(InputShape::nchw(1, 2, 4, 8), k3);
    let rows = |block_rows| Variant { block_rows, ..Variant::new(Kernel::BackwardRows, LaneWidth::One) };
    let single = |kernel, width| Variant { single_pass: true, ..Variant::new(kernel, width) };
    for ctx in contexts() {
        let case = Case::start(ctx);
        let scalar = context_with(ctx, ContextOptions { scalar_only: true, ..Default::default() });
        let cases: [(&Context, &PoolSpec, bool, Variant); 8] = [
            // Channels-last has no row kernels.
            (ctx, &nhwc, true, Variant::new(Kernel::ForwardRows, LaneWidth::One)),
            // A width of 6 is no multiple of 4.
            (ctx, &nchw6, false, rows(2)),
            // Channels-first has no four-channel kernels.
            (ctx, &nchw6, false, Variant::new(Kernel::BackwardCells, LaneWidth::Four)),
            // Blocks of 3 rows do not exist.
            (ctx, &nchw8, false, rows(3)),
            // Overlapping windows do not tile.
            (ctx, &nchw8, false, Variant::new(Kernel::BackwardTiled, LaneWidth::One)),
            // Only the gathers have a single-pass form.
            (ctx, &nhwc, true, single(Kernel::Forward, LaneWidth::Four)),
            // scalar_only leaves one element per invocation, without the single-pass twin.
            (&scalar, &nhwc, true, Variant::new(Kernel::Forward, LaneWidth::Four)),
            (&scalar, &nchw8, false, single(Kernel::Backward, LaneWidth::One)),
        ];
        for (c, spec, forward, variant) in cases {
            let who = format!("{} {variant} {spec:?}", c.describe());
            let g = spec.validate().unwrap();
            let out_shape = g.output_shape();
            let (n, m) = (g.input_len(), g.output_len());
            let a = GpuTensor::upload(c, spec.input.clone(), spec.layout, &poison_f32(n)).unwrap();
            let b = GpuTensor::upload(c, out_shape.clone(), spec.layout, &poison_f32(m)).unwrap();
            let x = GpuTensor::upload(c, out_shape, spec.layout, &vec![0xdead_beef_u32; m]).unwrap();
            let counter = wgpool::InvalidCount::new(c).unwrap();
            c.queue().write_buffer(counter.region().buffer, counter.region().offset, &7u32.to_le_bytes());
            let mut encoder = c.device().create_command_encoder(&Default::default());
            let err = if forward {
                let buffers = ForwardBuffers { input: a.region(), values: b.region(), indices: x.region() };
                c.record_forward(&mut encoder, spec, DType::F32, &buffers, forced(variant)).unwrap_err()
            } else {
                let buffers = BackwardBuffers {
                    grad_output: b.region(),
                    indices: x.region(),
                    grad_input: a.region(),
                    invalid_count: counter.region(),
                };
                c.record_backward(&mut encoder, spec, DType::F32, &buffers, forced(variant)).unwrap_err()
            };
            match &err {
                Error::VariantNotApplicable { variant: v, direction, applicable } => {
                    assert_eq!(v, &variant.name(), "[{who}]");
                    assert_eq!(direction, if forward { "forward" } else { "backward" }, "[{who}]");
                    let list = if forward { c.forward_variants(spec) } else { c.backward_variants(spec) };
                    let names: Vec<String> = list.unwrap().iter().map(Variant::name).collect();
                    assert!(!names.contains(&variant.name()), "[{who}] listed: {names:?}");
                    assert_eq!(applicable, &names.join(", "), "[{who}]");
                }
                other => panic!("[{who}] expected VariantNotApplicable, got {other:?}"),
            }
            assert!(err.to_string().contains(&variant.name()), "[{who}] message: {err}");
            // Nothing was recorded: no pass wrote the outputs, no clear reset the counter.
            c.queue().submit([encoder.finish()]);
            assert_bits_eq("input/grad_input", &who, &a.download(c).unwrap(), &poison_f32(n));
            assert_bits_eq("values/grad_output", &who, &b.download(c).unwrap(), &poison_f32(m));
            assert_eq!(x.download(c).unwrap(), vec![0xdead_beef_u32; m], "[{who}] indices");
            assert_eq!(counter.read(c), Err(Error::InvalidIndices { count: 7 }), "[{who}] counter");
        }
        case.pass();
    }
}

/// A shape's first passes run the generic kernels: one forward and one backward pipeline (one per
/// formulation: gather, and scatter for windows that tile) serve every shape, bit for bit the reference's, into poisoned outputs; the pass after
/// `generic_calls` of them compiles the shape's own pipelines, and later passes compile nothing.
/// `Some(0)` compiles at the first pass.
#[test]
fn first_passes_share_the_generic_pipelines_then_specialise() {
    let specs = [
        PoolSpec::new(InputShape::nchw(1, 3, 9, 16), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1])),
        PoolSpec::new(InputShape::nchw(2, 2, 7, 5), PoolParams::new([2, 2])),
        PoolSpec::new(InputShape::nchw(2, 3, 6, 5), PoolParams::new([2, 3]).ceil_mode(true))
            .layout(Layout::ChannelsLast),
        PoolSpec::new(InputShape::new(2, 3, [20]), PoolParams::new([3]).stride([2]).padding([1]).ceil_mode(true)),
        PoolSpec::new(
            InputShape::new(1, 2, [4, 5, 8]),
            PoolParams::new([2, 3, 3]).stride([1, 2, 1]).padding([1, 1, 1]).dilation([1, 1, 2]),
        ),
    ];
    // The distinct generic pipelines that the first passes on `specs` run.
    let stand_ins = |ctx: &Context, specs: &[PoolSpec]| {
        let firsts =
            specs.iter().flat_map(|s| [ctx.forward_variants(s).unwrap()[0], ctx.backward_variants(s).unwrap()[0]]);
        firsts.map(Variant::generic).collect::<std::collections::HashSet<_>>().len()
    };
    let mut rng = Rng::new(41);
    for base in contexts() {
        assert_eq!(stand_ins(base, &specs), 3, "[{}] forward, gather, scatter", base.describe());
        for generic_calls in [Some(wgpool::gpu::DEFAULT_GENERIC_CALLS), Some(0), Some(2)] {
            let case = Case::start(base);
            let ctx = context_with(base, ContextOptions { generic_calls, ..Default::default() });
            let who = format!("{} generic_calls {generic_calls:?}", ctx.describe());
            let generic_passes = generic_calls.unwrap() as usize;
            for round in 0..generic_passes + 2 {
                for (i, spec) in specs.iter().enumerate() {
                    let n = spec.input.numel().unwrap();
                    let x: Vec<f32> = nasty_values(&mut rng, n);
                    let want = cpu::reference::forward(spec, &x).unwrap();
                    let got = ctx.forward(spec, &x).unwrap();
                    let name = format!("{who} round {round} {spec:?}");
                    assert_bits_eq("values", &name, &got.values, &want.values);
                    assert_eq!(got.indices, want.indices, "[{name}] indices");
                    let grad: Vec<f32> = gradients(&mut rng, want.values.len());
                    let gi = ctx.backward(spec, &grad, &want.indices).unwrap();
                    let want_gi = cpu::reference::backward(spec, &grad, &want.indices).unwrap();
                    assert_bits_eq("grad_input", &name, &gi, &want_gi);
                    // The generic stand-ins met so far (the forward, the gather, the scatter for
                    // windows that tile), then a forward and a backward pipeline per shape
                    // specialised so far.
                    let met = if round == 0 { &specs[..=i] } else { &specs[..] };
                    let generic = if generic_passes > 0 { stand_ins(&ctx, met) } else { 0 };
                    let specialised = match round.cmp(&generic_passes) {
                        std::cmp::Ordering::Less => 0,
                        std::cmp::Ordering::Equal => 2 * (i + 1),
                        std::cmp::Ordering::Greater => 2 * specs.len(),
                    };
                    assert_eq!(ctx.cached_pipelines(), generic + specialised, "[{name}] pipelines");
                }
            }
            case.pass();
        }
    }
}

/// On a CPU adapter a backward pass over more than 2 Mi input elements skips the generic kernel
/// (there it would cost more than the compile); elsewhere every size takes it.
#[test]
fn large_first_passes_on_cpu_adapters_compile_their_pipelines() {
    let spec = PoolSpec::new(InputShape::nchw(1, 1, 1024, 2060), PoolParams::new([3, 3]).stride([2, 2]));
    let n = spec.input.numel().unwrap();
    assert!(n > 1 << 21);
    let mut rng = Rng::new(43);
    for base in contexts() {
        let case = Case::start(base);
        let options = ContextOptions { generic_calls: Some(wgpool::gpu::DEFAULT_GENERIC_CALLS), ..Default::default() };
        let ctx = context_with(base, options);
        let who = ctx.describe();
        let x: Vec<f32> = nasty_values(&mut rng, n);
        let want = cpu::reference::forward(&spec, &x).unwrap();
        let got = ctx.forward(&spec, &x).unwrap();
        assert_bits_eq("values", &who, &got.values, &want.values);
        assert_eq!(ctx.cached_pipelines(), 1, "[{who}] the forward pass");
        let grad: Vec<f32> = gradients(&mut rng, want.values.len());
        let gi = ctx.backward(&spec, &grad, &want.indices).unwrap();
        assert_bits_eq("grad_input", &who, &gi, &cpu::reference::backward(&spec, &grad, &want.indices).unwrap());
        assert_eq!(ctx.cached_pipelines(), 2, "[{who}] the backward pass");
        // Forcing the context's choice compiles nothing where that is what ran (CPU adapters),
        // and its specialised pipeline where the generic one ran.
        let chosen = ctx.backward_variants(&spec).unwrap()[0];
        let compiled = record_pass(&ctx, &spec, false, Some(chosen));
        let cpu_adapter = ctx.adapter_info().device_type == wgpool::wgpu::DeviceType::Cpu;
        assert_eq!(compiled, if cpu_adapter { 2 } else { 3 }, "[{who}] {chosen} forced");
        case.pass();
    }
}

/// With `background_compiles`, a shape's first pass runs the generic kernel and starts the
/// compile of its own pipeline on another thread: that pipeline turns up with no further pass,
/// it is the one the context picks (forcing it compiles nothing), and every pass before and
/// after gives the reference's bits.
#[test]
fn background_compiles_bring_the_specialised_pipeline_without_a_pass() {
    let k3 = PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
    let specs = [
        PoolSpec::new(InputShape::nchw(1, 3, 9, 16), k3.clone()),
        PoolSpec::new(InputShape::nchw(2, 8, 7, 5), k3).layout(Layout::ChannelsLast),
    ];
    let mut rng = Rng::new(47);
    for base in contexts() {
        let case = Case::start(base);
        let options = ContextOptions { generic_calls: Some(1), background_compiles: true, ..Default::default() };
        let ctx = context_with(base, options);
        let who = ctx.describe();
        for spec in &specs {
            let n = spec.input.numel().unwrap();
            let x: Vec<f32> = nasty_values(&mut rng, n);
            let want = cpu::reference::forward(spec, &x).unwrap();
            let before = ctx.cached_pipelines();
            let got = ctx.forward(spec, &x).unwrap();
            assert_bits_eq("values", &format!("{who} {spec:?}"), &got.values, &want.values);
            // The generic forward at this spec's lane width (new for each: one channel, then
            // four), then the specialised one from the thread, with no pass in between.
            let generic = 1;
            let start = std::time::Instant::now();
            while ctx.cached_pipelines() < before + generic + 1 {
                assert!(start.elapsed().as_secs() < 60, "[{who}] {spec:?}: no pipeline from the thread");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let compiled = ctx.cached_pipelines();
            assert_eq!(compiled, before + generic + 1, "[{who}] {spec:?}");
            // What the thread compiled is what the context picks: forcing it compiles nothing.
            let chosen = ctx.forward_variants(spec).unwrap()[0];
            let forced_pass = record_pass(&ctx, spec, true, Some(chosen));
            assert_eq!(forced_pass, compiled, "[{who}] {spec:?}: {chosen} was not what the thread compiled");
            let again = ctx.forward(spec, &x).unwrap();
            assert_bits_eq("values again", &format!("{who} {spec:?}"), &again.values, &want.values);
            assert_eq!(again.indices, want.indices, "[{who}] {spec:?}");
            assert_eq!(ctx.cached_pipelines(), compiled, "[{who}] {spec:?}: a later pass compiled");
        }
        // The thread starts at the last of a shape's generic passes, not before, and never
        // where no pass is the last.
        let spec = PoolSpec::new(InputShape::nchw(1, 2, 11, 13), PoolParams::new([2, 3]).stride([2, 2]));
        let x: Vec<f32> = nasty_values(&mut rng, spec.input.numel().unwrap());
        for generic_calls in [2, u32::MAX] {
            let options =
                ContextOptions { generic_calls: Some(generic_calls), background_compiles: true, ..Default::default() };
            let ctx = context_with(base, options);
            ctx.forward(&spec, &x).unwrap();
            let generic = ctx.cached_pipelines();
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert_eq!(
                ctx.cached_pipelines(),
                generic,
                "[{who}] generic_calls {generic_calls}: compiled after one pass"
            );
            ctx.forward(&spec, &x).unwrap();
            if generic_calls == u32::MAX {
                std::thread::sleep(std::time::Duration::from_millis(300));
                assert_eq!(ctx.cached_pipelines(), generic, "[{who}] generic_calls u32::MAX: compiled");
                continue;
            }
            let start = std::time::Instant::now();
            while ctx.cached_pipelines() == generic {
                assert!(start.elapsed().as_secs() < 60, "[{who}] generic_calls 2: no pipeline from the thread");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert_eq!(ctx.cached_pipelines(), generic + 1, "[{who}] generic_calls 2");
        }
        case.pass();
    }
}
