//! The CPU mirrors of the specialised kernels against the general ones: the tiled scatter against
//! the gather, the row-blocked kernels against the per-output ones, on random geometries.

use super::common::*;
use wgpool::cpu::reference;
use wgpool::{Element, InputShape, Layout, PoolParams, PoolSpec, f16};

fn check_mirrors<T: Element>(spec: &PoolSpec, rng: &mut Rng) {
    let g = spec.validate().unwrap();
    let name = format!("{spec:?}");
    let input: Vec<T> = nasty_values(rng, g.input_len());
    let mut values = vec![T::ZERO; g.output_len()];
    let mut indices = vec![0u32; g.output_len()];
    reference::max_pool_forward(&g, &input, &mut values, &mut indices);
    let grad: Vec<T> = gradients(rng, g.output_len());
    let mut gather = vec![T::ZERO; g.input_len()];
    assert_eq!(reference::max_pool_backward(&g, &grad, &indices, &mut gather), 0, "{name}");
    if g.tiles() {
        let mut scatter = vec![T::from_f32(f32::NAN); g.input_len()];
        assert_eq!(reference::max_pool_backward_tiled(&g, &grad, &indices, &mut scatter), 0, "{name}");
        assert_bits_eq("tiled grad_input", &name, &scatter, &gather);
    }
    if let Some(_tile) = reference::shared_tile(&g, true) {
        let mut shared_values = vec![T::from_f32(f32::NAN); g.output_len()];
        let mut shared_indices = vec![7u32; g.output_len()];
        reference::max_pool_forward_shared(&g, &input, &mut shared_values, &mut shared_indices);
        assert_bits_eq("shared values", &name, &shared_values, &values);
        assert_eq!(shared_indices, indices, "{name}: shared indices");
    }
    if reference::shared_tile(&g, false).is_some() {
        let mut shared_gi = vec![T::from_f32(f32::NAN); g.input_len()];
        assert_eq!(reference::max_pool_backward_shared(&g, &grad, &indices, &mut shared_gi), 0, "{name}");
        assert_bits_eq("shared grad_input", &name, &shared_gi, &gather);
        // Invalid indices are counted like the general gather counts them.
        let mut bad = indices.clone();
        let n = bad.len();
        for k in [0, n / 2, n - 1] {
            bad[k] = bad[k].wrapping_add(1 + k as u32 % 3);
        }
        let mut scratch = vec![T::ZERO; g.input_len()];
        let want = reference::max_pool_backward(&g, &grad, &bad, &mut scratch);
        assert_eq!(reference::max_pool_backward_shared(&g, &grad, &bad, &mut scratch), want, "{name}: invalid count");
    }
    if reference::gather_rows_eligible(&g) {
        // Blocks of two rows (the default where the input has two) and of one.
        for rows in 1..=reference::gather_block_rows(&g) {
            let mut rows_gi = vec![T::from_f32(f32::NAN); g.input_len()];
            assert_eq!(reference::max_pool_backward_rows(&g, rows, &grad, &indices, &mut rows_gi), 0, "{name}");
            assert_bits_eq(&format!("row-block gather grad_input, {rows} rows"), &name, &rows_gi, &gather);
            let mut bad = indices.clone();
            let n = bad.len();
            for k in [0, n / 3, n - 1] {
                bad[k] = bad[k].wrapping_add(2 + k as u32 % 5);
            }
            let mut scratch = vec![T::ZERO; g.input_len()];
            let want = reference::max_pool_backward(&g, &grad, &bad, &mut scratch);
            let got = reference::max_pool_backward_rows(&g, rows, &grad, &bad, &mut scratch);
            assert_eq!(got, want, "{name}: invalid count, {rows} rows");
        }
    }
    if reference::rows_eligible(&g, 4) {
        let mut rows_values = vec![T::from_f32(f32::NAN); g.output_len()];
        let mut rows_indices = vec![7u32; g.output_len()];
        reference::max_pool_forward_rows(&g, &input, &mut rows_values, &mut rows_indices);
        assert_bits_eq("rows values", &name, &rows_values, &values);
        assert_eq!(rows_indices, indices, "{name}: rows indices");
    }
    if reference::cells_eligible(&g) {
        let mut cells_gi = vec![T::from_f32(f32::NAN); g.input_len()];
        assert_eq!(reference::max_pool_backward_cells(&g, &grad, &indices, &mut cells_gi), 0, "{name}");
        assert_bits_eq("cell gather grad_input", &name, &cells_gi, &gather);
        let mut bad = indices.clone();
        let n = bad.len();
        for k in [0, n / 3, n / 2 + 1, n - 1] {
            bad[k] = bad[k].wrapping_add(1 + k as u32 % 4);
        }
        let mut scratch = vec![T::ZERO; g.input_len()];
        let want = reference::max_pool_backward(&g, &grad, &bad, &mut scratch);
        assert_eq!(reference::max_pool_backward_cells(&g, &grad, &bad, &mut scratch), want, "{name}: invalid count");
    }
    if reference::span_eligible(&g) {
        let mut span_values = vec![T::from_f32(f32::NAN); g.output_len()];
        let mut span_indices = vec![7u32; g.output_len()];
        reference::max_pool_forward_span(&g, &input, &mut span_values, &mut span_indices);
        assert_bits_eq("span values", &name, &span_values, &values);
        assert_eq!(span_indices, indices, "{name}: span indices");
    }
    if g.tiles() && reference::rows_eligible(&g, 2) {
        let mut rows_gi = vec![T::from_f32(f32::NAN); g.input_len()];
        assert_eq!(reference::max_pool_backward_tiled_rows(&g, &grad, &indices, &mut rows_gi), 0, "{name}");
        assert_bits_eq("rows grad_input", &name, &rows_gi, &gather);
        // One bad index in a block is counted once.
        let mut bad = indices.clone();
        bad[0] = u32::MAX - 1;
        let mut scratch = vec![T::ZERO; g.input_len()];
        assert_eq!(reference::max_pool_backward_tiled_rows(&g, &grad, &bad, &mut scratch), 1, "{name}");
    }
}

/// Random geometries whose W axis is k2 s2 (so the row-blocked kernels apply) plus general ones.
fn rows_spec(rng: &mut Rng) -> PoolSpec {
    let rank = rng.range(1, 3);
    let mut spatial = vec![];
    let mut kernel = vec![];
    let mut stride = vec![];
    let mut padding = vec![];
    let mut dilation = vec![];
    for axis in 0..rank {
        if axis + 1 == rank {
            spatial.push(4 * rng.range(1, 5));
            kernel.push(2);
            stride.push(2);
            padding.push(0);
            dilation.push(1);
        } else {
            let k = rng.range(1, 3);
            spatial.push(rng.range(1, 7));
            kernel.push(k);
            stride.push(if rng.chance(0.5) { k } else { rng.range(1, 3) });
            padding.push(rng.range(0, k / 2));
            dilation.push(if rng.chance(0.2) { 2 } else { 1 });
        }
    }
    let params = PoolParams::new(kernel).stride(stride).padding(padding).dilation(dilation).ceil_mode(rng.chance(0.5));
    PoolSpec::new(InputShape::new(rng.range(1, 2), rng.range(1, 3), spatial), params)
}

/// Random channels-first geometries for the span kernel: widths divisible by 4 on both sides,
/// W windows of every kind whose four-window span fits four items.
fn span_spec(rng: &mut Rng) -> Option<PoolSpec> {
    let k = rng.range(1, 5);
    let stride = rng.range(1, 4);
    let padding = rng.range(0, k / 2);
    let dilation = if rng.chance(0.3) { 2 } else { 1 };
    let ceil_mode = rng.chance(0.5);
    // Output widths of 4 or 8: try input widths until one gives them.
    let width = (1..=12).map(|q| 4 * q).find(|&w| {
        let spec = PoolSpec::new(
            InputShape::new(1, 1, [w]),
            PoolParams::new([k]).stride([stride]).padding([padding]).dilation([dilation]).ceil_mode(ceil_mode),
        );
        spec.validate().is_ok_and(|g| g.axes[2].output.is_multiple_of(4) && rng.chance(0.5))
    })?;
    let kh = rng.range(1, 3);
    let params = PoolParams::new([kh, k])
        .stride([rng.range(1, 2), stride])
        .padding([rng.range(0, kh / 2), padding])
        .dilation([1, dilation])
        .ceil_mode(ceil_mode);
    let spec = PoolSpec::new(InputShape::nchw(rng.range(1, 2), rng.range(1, 3), rng.range(1, 6), width), params);
    spec.validate().is_ok_and(|g| reference::span_eligible(&g)).then_some(spec)
}

#[test]
fn cell_mirror_equals_the_general_one() {
    let mut rng = Rng::new(23);
    let mut ran = 0;
    while ran < 150 {
        let mut spec = random_spec(&mut rng, 9);
        spec.layout = Layout::ChannelsLast;
        spec.input.channels = 4 * rng.range(1, 3);
        let Ok(g) = spec.validate() else { continue };
        if g.tiles() {
            continue;
        }
        assert!(reference::cells_eligible(&g), "{spec:?}");
        check_mirrors::<f32>(&spec, &mut rng);
        if ran % 5 == 0 {
            check_mirrors::<f16>(&spec, &mut rng);
        }
        ran += 1;
    }
}

#[test]
fn span_mirror_equals_the_general_one() {
    let mut rng = Rng::new(22);
    let mut ran = 0;
    for i in 0..2000 {
        let Some(spec) = span_spec(&mut rng) else { continue };
        check_mirrors::<f32>(&spec, &mut rng);
        if i % 4 == 0 {
            check_mirrors::<f16>(&spec, &mut rng);
        }
        ran += 1;
    }
    assert!(ran >= 200, "only {ran} span geometries");
    // Windows of 2^32 − 4 rows, mostly padding: only the real taps are visited (all of them
    // would take minutes here; the shader's loop over them gave −inf on llvmpipe).
    let spec = PoolSpec::new(
        InputShape::nchw(1, 2, 4, 8),
        PoolParams::new([u32::MAX as usize - 3, 3]).stride([1, 1]).padding([(1 << 31) - 2, 1]),
    );
    assert!(reference::span_eligible(&spec.validate().unwrap()));
    check_mirrors::<f32>(&spec, &mut rng);
}

#[test]
fn specialised_mirrors_equal_the_general_ones() {
    let mut rng = Rng::new(21);
    for i in 0..300 {
        let spec = if i % 2 == 0 { rows_spec(&mut rng) } else { random_spec(&mut rng, 8) };
        if spec.validate().is_err() {
            continue;
        }
        check_mirrors::<f32>(&spec, &mut rng);
        if i % 5 == 0 {
            check_mirrors::<f16>(&spec, &mut rng);
        }
    }
    // Channels-last with one channel has one lane, like channels-first.
    let spec = PoolSpec::new(InputShape::nchw(2, 1, 4, 16), PoolParams::new([2, 2])).layout(Layout::ChannelsLast);
    check_mirrors::<f32>(&spec, &mut rng);
}
