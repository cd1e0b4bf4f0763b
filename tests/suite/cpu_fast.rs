//! The fast CPU path (`cpu::forward` / `cpu::backward`) against `cpu::reference`, bit for bit:
//! random geometries with nasty values, then larger problems that go through the threaded tasks
//! and every special kernel (k2 s2 and k3 s2 rows, channels-last, 1-D, 3-D, tiled and overlapping
//! backward, f16), and the invalid-index counts.

use super::common::{Rng, assert_bits_eq, gradients, nasty_values, negative_values, random_spec};
use wgpool::{Element, Error, InputShape, Layout, NO_INDEX, PoolParams, PoolSpec, cpu, f16};

/// Forward and backward through both paths on `input`; returns the reference's forward.
fn check<T: Element>(spec: &PoolSpec, input: &[T], rng: &mut Rng) -> cpu::Pooled<T> {
    let context = format!("{spec:?}");
    let want = cpu::reference::forward(spec, input).unwrap();
    let got = cpu::forward(spec, input).unwrap();
    assert_bits_eq("values", &context, &got.values, &want.values);
    assert_eq!(got.indices, want.indices, "indices [{context}]");
    // Values only: allocating, and into a poisoned buffer.
    assert_bits_eq("values only", &context, &cpu::forward_values(spec, input).unwrap(), &want.values);
    let mut only = vec![T::from_f32(f32::NAN); want.values.len()];
    cpu::forward_values_into(spec, input, &mut only).unwrap();
    assert_bits_eq("values only, into", &context, &only, &want.values);

    let grad_output = gradients::<T>(rng, want.values.len());
    let want_gi = cpu::reference::backward(spec, &grad_output, &want.indices).unwrap();
    let got_gi = cpu::backward(spec, &grad_output, &want.indices).unwrap();
    assert_bits_eq("grad_input", &context, &got_gi, &want_gi);
    want
}

/// Backward with some indices spoiled: the same error (count) or the same gradient.
fn check_spoiled<T: Element>(spec: &PoolSpec, indices: &[u32], rng: &mut Rng) {
    let g = spec.validate().unwrap();
    let plane = g.plane_in() as u32;
    let mut bad = indices.to_vec();
    for _ in 0..rng.range(1, 4) {
        if bad.is_empty() {
            return;
        }
        let t = rng.range(0, bad.len() - 1);
        bad[t] = match rng.range(0, 4) {
            0 => NO_INDEX,
            1 => plane + rng.range(0, 3) as u32,
            2 => rng.range(0, plane as usize - 1) as u32,
            3 => bad[t].wrapping_add(1),
            _ => bad[t].wrapping_sub(1),
        };
    }
    let grad_output = gradients::<T>(rng, bad.len());
    let want = cpu::reference::backward(spec, &grad_output, &bad);
    let got = cpu::backward(spec, &grad_output, &bad);
    match (&got, &want) {
        (Ok(got), Ok(want)) => assert_bits_eq("grad_input (spoiled indices)", &format!("{spec:?}"), got, want),
        _ => assert_eq!(got, want, "{spec:?}"),
    }
}

fn random_geometries<T: Element>(seed: u64, count: usize) {
    let mut rng = Rng::new(seed);
    for case in 0..count {
        let spec = random_spec(&mut rng, 12);
        let n = spec.input.numel().unwrap();
        let input = if case % 4 == 3 { negative_values::<T>(&mut rng, n) } else { nasty_values::<T>(&mut rng, n) };
        let out = check(&spec, &input, &mut rng);
        check_spoiled::<T>(&spec, &out.indices, &mut rng);
    }
}

#[test]
fn random_geometries_f32() {
    random_geometries::<f32>(41, 600);
}

#[test]
fn random_geometries_f16() {
    random_geometries::<f16>(42, 300);
}

/// Random geometries with more channels and batch, so channels-last rows are long and the
/// problems are cut into several tasks.
#[test]
fn random_wider_geometries() {
    let mut rng = Rng::new(43);
    for _ in 0..40 {
        let mut spec = random_spec(&mut rng, 20);
        spec.input.channels = rng.range(8, 40);
        spec.input.batch = rng.range(1, 4);
        let n = spec.input.numel().unwrap();
        if n > 400_000 {
            continue;
        }
        let input = nasty_values::<f32>(&mut rng, n);
        let out = check(&spec, &input, &mut rng);
        check_spoiled::<f32>(&spec, &out.indices, &mut rng);
    }
}

fn spec(n: usize, c: usize, spatial: &[usize], params: PoolParams, layout: Layout) -> PoolSpec {
    PoolSpec::new(InputShape::new(n, c, spatial), params).layout(layout)
}

/// Larger problems through every special path, in both layouts and both element types.
#[test]
fn large_special_paths() {
    let k2 = |r: usize| PoolParams::new(vec![2; r]);
    let k3s2p1 = |r: usize| PoolParams::new(vec![3; r]).stride(vec![2; r]).padding(vec![1; r]);
    let cases = [
        // k2 s2 rows (2-D, even and odd sizes, ceil_mode's partial windows)
        (2, 8, vec![64, 66], k2(2)),
        (1, 3, vec![255, 257], k2(2)),
        (2, 4, vec![63, 65], k2(2).ceil_mode(true)),
        // k3 s2 p1 (the ResNet stem), overlapping
        (2, 8, vec![56, 58], k3s2p1(2)),
        (1, 5, vec![101, 99], k3s2p1(2).ceil_mode(true)),
        // 1-D and 3-D
        (4, 16, vec![4099], k2(1)),
        (2, 8, vec![3001], k3s2p1(1)),
        (2, 4, vec![16, 18, 20], k2(3)),
        (1, 4, vec![17, 19, 21], k3s2p1(3)),
        // one large plane: the backward splits inside it
        (1, 1, vec![300, 310], PoolParams::new([3, 3]).stride([1, 1])),
        (1, 1, vec![40, 41, 42], k3s2p1(3).dilation([1, 2, 1])),
        // stride above the kernel, dilation, a big kernel
        (2, 6, vec![90, 91], PoolParams::new([2, 3]).stride([3, 4]).dilation([2, 1])),
        (1, 7, vec![80, 70], PoolParams::new([5, 4]).stride([2, 3]).padding([2, 1]).dilation([1, 3])),
        (3, 5, vec![60, 60], PoolParams::new([4, 4]).padding([2, 2]).ceil_mode(true)),
    ];
    let mut rng = Rng::new(44);
    for (n, c, spatial, params) in cases {
        for layout in [Layout::ChannelsFirst, Layout::ChannelsLast] {
            let spec = spec(n, c, &spatial, params.clone(), layout);
            let count = spec.input.numel().unwrap();
            let input = nasty_values::<f32>(&mut rng, count);
            check(&spec, &input, &mut rng);
            let input = negative_values::<f32>(&mut rng, count);
            let out = check(&spec, &input, &mut rng);
            check_spoiled::<f32>(&spec, &out.indices, &mut rng);
            if count <= 70_000 {
                let input = nasty_values::<f16>(&mut rng, count);
                check(&spec, &input, &mut rng);
            }
        }
    }
}

/// Channels-last with many channels (the vectorised channel loops) and a wide k2 s2 f16 problem.
#[test]
fn large_channels_last_and_f16() {
    let mut rng = Rng::new(45);
    for (spatial, params) in [
        (vec![28, 30], PoolParams::new([2, 2])),
        (vec![29, 27], PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1])),
        (vec![10, 11, 12], PoolParams::new([2, 2, 2])),
    ] {
        let spec = spec(2, 67, &spatial, params, Layout::ChannelsLast);
        let input = nasty_values::<f32>(&mut rng, spec.input.numel().unwrap());
        check(&spec, &input, &mut rng);
    }
    let spec = spec(2, 16, &[96, 100], PoolParams::new([2, 2]), Layout::ChannelsFirst);
    let input = nasty_values::<f16>(&mut rng, spec.input.numel().unwrap());
    check(&spec, &input, &mut rng);
}

/// Windows of padding only (dilation) give (−inf, −1), and −1 is valid exactly there.
#[test]
fn padding_only_windows() {
    let mut rng = Rng::new(46);
    for layout in [Layout::ChannelsFirst, Layout::ChannelsLast] {
        // Length 1, k2 d2 p1: window 0 holds padding only.
        let s = spec(2, 3, &[1], PoolParams::new([2]).dilation([2]).padding([1]), layout);
        let out = check(&s, &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &mut rng);
        assert!(out.indices.contains(&NO_INDEX));
        // H = 1 with k3 d2 p1 in 2-D, a long W.
        let s = spec(1, 4, &[1, 51], PoolParams::new([3, 2]).dilation([2, 1]).padding([1, 0]).ceil_mode(true), layout);
        let input = nasty_values::<f32>(&mut rng, s.input.numel().unwrap());
        let out = check(&s, &input, &mut rng);
        check_spoiled::<f32>(&s, &out.indices, &mut rng);
    }
}

#[test]
fn errors_match_the_reference() {
    let s = spec(1, 1, &[4, 4], PoolParams::new([2, 2]), Layout::ChannelsFirst);
    let e = cpu::forward(&s, &[0.0f32; 15]).unwrap_err();
    assert_eq!(Err::<(), _>(e), cpu::reference::forward(&s, &[0.0f32; 15]).map(|_| ()));
    let e = cpu::backward(&s, &[0.0f32; 4], &[0; 3]).unwrap_err();
    assert_eq!(Err::<(), _>(e), cpu::reference::backward(&s, &[0.0f32; 4], &[0; 3]).map(|_| ()));
    let bad = spec(1, 1, &[4, 4], PoolParams::new([2, 2]).padding([2, 0]), Layout::ChannelsFirst);
    assert_eq!(
        cpu::forward(&bad, &[0.0f32; 16]).unwrap_err(),
        cpu::reference::forward(&bad, &[0.0f32; 16]).unwrap_err()
    );
    // Every index wrong: the count is the number of outputs.
    let gi = cpu::backward(&s, &[1.0f32; 4], &[NO_INDEX; 4]);
    assert_eq!(gi, Err(Error::InvalidIndices { count: 4 }));
    // Values only: the same checks and errors.
    assert_eq!(cpu::forward_values(&s, &[0.0f32; 15]).unwrap_err(), cpu::forward(&s, &[0.0f32; 15]).unwrap_err());
    let e = cpu::forward_values_into(&s, &[0.0f32; 16], &mut [0.0f32; 3]).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { expected: 4, found: 3, .. }), "{e}");
    // Empty batch.
    let empty = spec(0, 3, &[4, 4], PoolParams::new([3, 3]).stride([1, 1]), Layout::ChannelsLast);
    assert_eq!(cpu::forward::<f32>(&empty, &[]).unwrap().values.len(), 0);
    assert_eq!(cpu::forward_values::<f32>(&empty, &[]).unwrap().len(), 0);
    assert_eq!(cpu::backward::<f32>(&empty, &[], &[]).unwrap().len(), 0);
}

/// Overlapping sums with infinities and NaNs in every order: the reference's NaN rules (first
/// NaN event wins, `inf + -inf` gives the indefinite NaN) through the scatter, and the same
/// gradients through a tiling geometry.
#[test]
fn nan_and_infinite_sums() {
    fn run<T: Element>() {
        let specials = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::from_bits(0xffa0_0001), 1.5, -0.0, 0.0];
        for layout in [Layout::ChannelsFirst, Layout::ChannelsLast] {
            // L = 3, k3 s1 p1: three windows, all containing element 1.
            let s = spec(1, 2, &[3], PoolParams::new([3]).stride([1]).padding([1]), layout);
            for a in specials {
                for b in specials {
                    for c in specials {
                        let go: Vec<T> = [a, b, c, c, b, a].iter().map(|&v| T::from_f32(v)).collect();
                        let want = cpu::reference::backward(&s, &go, &[1; 6]).unwrap();
                        let got = cpu::backward(&s, &go, &[1; 6]).unwrap();
                        assert_bits_eq("grad_input", &format!("{a} {b} {c} {s:?}"), &got, &want);
                    }
                }
            }
            let tiled = spec(1, 7, &[2], PoolParams::new([2]), layout);
            let go: Vec<T> = specials.iter().map(|&v| T::from_f32(v)).collect();
            let idx = vec![1; 7];
            let got = cpu::backward(&tiled, &go, &idx).unwrap();
            assert_bits_eq("grad_input", "tiled", &got, &cpu::reference::backward(&tiled, &go, &idx).unwrap());
        }
    }
    run::<f32>();
    run::<f16>();
}
