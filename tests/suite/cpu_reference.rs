//! The CPU reference against hand-worked cases (the numbers are worked out in the comments), and
//! `PoolSpec::validate` against PyTorch's rules. Every case also runs through the public fast path
//! (`cpu::forward` / `cpu::backward`), which must agree bit for bit.

use super::common::assert_bits_eq;
use wgpool::{
    Element, Error, InputShape, Layout, MAX_PLANE_ELEMENTS, NO_INDEX, PoolParams, PoolSpec, cpu, f16, output_size,
};

/// Forward through the reference and the fast path; they must agree; returns the reference's.
fn forward<T: Element>(spec: &PoolSpec, input: &[T]) -> cpu::Pooled<T> {
    let reference = cpu::reference::forward(spec, input).unwrap();
    let fast = cpu::forward(spec, input).unwrap();
    assert_bits_eq("fast values", &format!("{spec:?}"), &fast.values, &reference.values);
    assert_eq!(fast.indices, reference.indices, "fast indices {spec:?}");
    reference
}

/// Backward through the reference and the fast path; they must agree (result or error).
fn backward<T: Element>(spec: &PoolSpec, grad_output: &[T], indices: &[u32]) -> wgpool::Result<Vec<T>> {
    let reference = cpu::reference::backward(spec, grad_output, indices);
    let fast = cpu::backward(spec, grad_output, indices);
    match (&reference, &fast) {
        (Ok(r), Ok(f)) => assert_bits_eq("fast grad_input", &format!("{spec:?}"), f, r),
        _ => assert_eq!(fast, reference, "fast path error {spec:?}"),
    }
    reference
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn one_d(batch: usize, channels: usize, length: usize, params: PoolParams) -> PoolSpec {
    PoolSpec::new(InputShape::new(batch, channels, [length]), params)
}

#[test]
fn ties_keep_the_first_maximum_in_a_4x4() {
    // 1×1×4×4, flat index h*4 + w:
    //   row 0:  1  3 |  2  2      indices  0  1 |  2  3
    //   row 1:  3  0 |  2  1               4  5 |  6  7
    //   row 2:  5  5 | -1 -2               8  9 | 10 11
    //   row 3:  4  5 | -3 -1              12 13 | 14 15
    let x = [1.0f32, 3.0, 2.0, 2.0, 3.0, 0.0, 2.0, 1.0, 5.0, 5.0, -1.0, -2.0, 4.0, 5.0, -3.0, -1.0];
    // k2 s2: {1,3,3,0} -> 3 first at 1; {2,2,2,1} -> 2 at 2; {5,5,4,5} -> 5 at 8;
    // {-1,-2,-3,-1} -> -1 at 10.
    let spec = PoolSpec::new(InputShape::nchw(1, 1, 4, 4), PoolParams::new([2, 2]));
    let out = forward(&spec, &x);
    assert_eq!(out.values, vec![3.0, 2.0, 5.0, -1.0]);
    assert_eq!(out.indices, vec![1, 2, 8, 10]);
    // Non-overlapping backward: gradient at the argmax, +0 elsewhere.
    let gi = backward(&spec, &[1.0f32, 2.0, 3.0, 4.0], &out.indices).unwrap();
    let mut want = [0.0f32; 16];
    want[1] = 1.0;
    want[2] = 2.0;
    want[8] = 3.0;
    want[10] = 4.0;
    assert_eq!(bits(&gi), bits(&want));

    // k2 s1 (overlapping), 3×3 outputs:
    //   (0,0) {1,3,3,0} -> 3@1    (0,1) {3,2,0,2} -> 3@1    (0,2) {2,2,2,1}   -> 2@2
    //   (1,0) {3,0,5,5} -> 5@8    (1,1) {0,2,5,-1} -> 5@9   (1,2) {2,1,-1,-2} -> 2@6
    //   (2,0) {5,5,4,5} -> 5@8    (2,1) {5,-1,5,-3} -> 5@9  (2,2) {-1,-2,-3,-1} -> -1@10
    let spec = PoolSpec::new(InputShape::nchw(1, 1, 4, 4), PoolParams::new([2, 2]).stride([1, 1]));
    let out = forward(&spec, &x);
    assert_eq!(out.values, vec![3.0, 3.0, 2.0, 5.0, 5.0, 2.0, 5.0, 5.0, -1.0]);
    assert_eq!(out.indices, vec![1, 1, 2, 8, 9, 6, 8, 9, 10]);
    // grad_output 1..9: gi[1] = 1+2, gi[2] = 3, gi[8] = 4+7, gi[9] = 5+8, gi[6] = 6, gi[10] = 9.
    let go: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let gi = backward(&spec, &go, &out.indices).unwrap();
    let mut want = [0.0f32; 16];
    want[1] = 3.0;
    want[2] = 3.0;
    want[6] = 6.0;
    want[8] = 11.0;
    want[9] = 13.0;
    want[10] = 9.0;
    assert_eq!(bits(&gi), bits(&want));
}

#[test]
fn nan_wins_and_the_last_nan_stays() {
    let nan_a = f32::from_bits(0x7fc0_0abc);
    let nan_b = f32::from_bits(0xffc0_1234);
    // [NaN_a, 1, NaN_b, 5], k4: NaN_a at 0, 1 does not replace it, NaN_b at 2 does (isnan), 5 does
    // not (5 > NaN is false) -> NaN_b, index 2, payload and sign kept.
    let spec = one_d(1, 1, 4, PoolParams::new([4]));
    let out = forward(&spec, &[nan_a, 1.0, nan_b, 5.0]);
    assert_eq!((out.values[0].to_bits(), out.indices[0]), (0xffc0_1234, 2));
    // [1, NaN_a, 7], k3: NaN at 1 beats 1; 7 > NaN is false -> NaN_a at 1.
    let spec = one_d(1, 1, 3, PoolParams::new([3]));
    let out = forward(&spec, &[1.0, nan_a, 7.0]);
    assert_eq!((out.values[0].to_bits(), out.indices[0]), (0x7fc0_0abc, 1));
    // [-inf, NaN_b, +inf], k3: NaN_b at 1, +inf does not replace it.
    let out = forward(&spec, &[f32::NEG_INFINITY, nan_b, f32::INFINITY]);
    assert_eq!((out.values[0].to_bits(), out.indices[0]), (0xffc0_1234, 1));
    // f16 too: [NaN(0x7e05), 2, NaN(0xfe01)] -> 0xfe01 at 2.
    let h = |b: u16| f16::from_bits(b);
    let out = forward(&spec, &[h(0x7e05), f16::from_f32(2.0), h(0xfe01)]);
    assert_eq!((out.values[0].to_bits(), out.indices[0]), (0xfe01, 2));
}

#[test]
fn signed_zeros_tie_and_the_first_wins() {
    // [-0, +0] k2: +0 > -0 is false -> -0.0 at 0. [+0, -0] -> +0.0 at 0.
    let spec = one_d(1, 2, 2, PoolParams::new([2]));
    let out = forward(&spec, &[-0.0f32, 0.0, 0.0, -0.0]);
    assert_eq!(bits(&out.values), vec![0x8000_0000, 0x0000_0000]);
    assert_eq!(out.indices, vec![0, 0]);
    // -1, -0, +0, -0 in one window: -0 beats -1 at 1, +0 ties -> -0.0 at 1.
    let spec = one_d(1, 1, 4, PoolParams::new([4]));
    let out = forward(&spec, &[-1.0f32, -0.0, 0.0, -0.0]);
    assert_eq!((out.values[0].to_bits(), out.indices[0]), (0x8000_0000, 1));
}

#[test]
fn ceil_mode_keeps_pytorchs_correction() {
    // L=5, k2 s2 p1, ceil: ceil((5+2-2)/2)+1 = 4, but the 4th window would start at 3·2-1 = 5,
    // in the right padding ((4-1)·2 >= 5+1), so PyTorch drops it: 3 windows
    // {pad,0}, {1,2}, {3,4}.
    assert_eq!(output_size(5, 2, 2, 1, 1, true), Some(3));
    let spec = one_d(1, 1, 5, PoolParams::new([2]).padding([1]).ceil_mode(true));
    let out = forward(&spec, &[1.0f32, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(out.values, vec![1.0, 3.0, 5.0]);
    assert_eq!(out.indices, vec![0, 2, 4]);
    // L=5, k2 s2 p0: floor gives 2 windows; ceil gives 3, the last one {4} partly outside.
    let spec = one_d(1, 1, 5, PoolParams::new([2]).ceil_mode(true));
    let out = forward(&spec, &[1.0f32, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(out.values, vec![2.0, 4.0, 5.0]);
    assert_eq!(out.indices, vec![1, 3, 4]);
    let spec = one_d(1, 1, 5, PoolParams::new([2]));
    assert_eq!(forward(&spec, &[1.0f32, 2.0, 3.0, 4.0, 5.0]).indices, vec![1, 3]);
    // 2-D, 5×5: 3×3 outputs, the corner windows hold one element each.
    let spec = PoolSpec::new(InputShape::nchw(1, 1, 5, 5), PoolParams::new([2, 2]).padding([1, 1]).ceil_mode(true));
    assert_eq!(spec.validate().unwrap().output_shape().spatial, vec![3, 3]);
    let x: Vec<f32> = (0..25).map(|v| -(v as f32)).collect();
    // All negative and decreasing: each window's max is its first real element.
    // Row starts 0, 1, 3 (rows {0}, {1,2}, {3,4}); same for columns.
    assert_eq!(forward(&spec, &x).indices, vec![0, 1, 3, 5, 6, 8, 15, 16, 18]);
}

#[test]
fn windows_of_padding_only_give_minus_inf_and_no_index() {
    // L=1, k2 d2 p1: one window with taps at -1 and 1, both outside: (-inf, -1).
    let spec = one_d(1, 2, 1, PoolParams::new([2]).dilation([2]).padding([1]));
    let out = forward(&spec, &[7.0f32, f32::NAN]);
    assert_eq!(out.values, vec![f32::NEG_INFINITY; 2]);
    assert_eq!(out.indices, vec![NO_INDEX; 2]);
    // Backward: the -1 windows contribute nothing; -1 is valid there.
    let gi = backward(&spec, &[5.0f32, f32::NAN], &out.indices).unwrap();
    assert_eq!(bits(&gi), vec![0, 0]);
    // Any real index is outside those windows: 0 is not one of their taps.
    assert_eq!(backward(&spec, &[5.0f32, 1.0], &[NO_INDEX, 0]), Err(Error::InvalidIndices { count: 1 }));

    // 2-D H=1, W=4, k(3,1) d(2,1) p(1,0) s(3,1) ceil: H has one window with taps -1, 1, 3, all
    // outside the single row, so all 4 outputs are padding only.
    let spec = PoolSpec::new(
        InputShape::nchw(1, 2, 1, 4),
        PoolParams::new([3, 1]).dilation([2, 1]).padding([1, 0]).ceil_mode(true),
    )
    .layout(Layout::ChannelsLast);
    assert_eq!(spec.validate().unwrap().output_shape().spatial, vec![1, 4]);
    let out = forward(&spec, &[1.0f32; 8]);
    assert_eq!(out.values, vec![f32::NEG_INFINITY; 8]);
    assert_eq!(out.indices, vec![NO_INDEX; 8]);

    // H=2, W=1, k(1,2) d(1,2) p(0,1): on W the only window has taps -1 and 1, both outside.
    // (PyTorch reports indices 1 and 2 here: 1 lies inside the plane, on the wrong element.)
    let spec = PoolSpec::new(InputShape::nchw(1, 1, 2, 1), PoolParams::new([1, 2]).dilation([1, 2]).padding([0, 1]));
    let out = forward(&spec, &[3.0f32, 4.0]);
    assert_eq!(out.indices, vec![NO_INDEX; 2]);
    assert_eq!(backward(&spec, &[1.0f32, 1.0], &[1, 2]), Err(Error::InvalidIndices { count: 2 }));
}

#[test]
fn all_minus_inf_windows_report_their_first_element_in_every_layout() {
    // 1×C×2×2×2 of -inf, k(1,2,2) s1: one window per depth plane, each all -inf; the index is the
    // window's first real element: 0 and 4 (= d·H·W). PyTorch's CPU channels-last 3-D kernel
    // gives 0 and 0 (depth term dropped); wgpool must not.
    for layout in [Layout::ChannelsFirst, Layout::ChannelsLast] {
        let spec = PoolSpec::new(InputShape::new(1, 2, [2, 2, 2]), PoolParams::new([1, 2, 2])).layout(layout);
        let out = forward(&spec, &[f32::NEG_INFINITY; 16]);
        assert_eq!(out.values, vec![f32::NEG_INFINITY; 4]);
        let want = match layout {
            Layout::ChannelsFirst => vec![0, 4, 0, 4], // (c, d)
            Layout::ChannelsLast => vec![0, 0, 4, 4],  // (d, c)
        };
        assert_eq!(out.indices, want, "{layout:?}");
    }
    // With padding the first real element is not the window's first tap: L=3, k3 p1, all -inf:
    // windows {pad,0,1} -> 0, {0,1,2} -> 0, {1,2,pad} -> 1.
    let spec = one_d(1, 1, 3, PoolParams::new([3]).stride([1]).padding([1]));
    assert_eq!(forward(&spec, &[f32::NEG_INFINITY; 3]).indices, vec![0, 0, 1]);
}

#[test]
fn channels_last_reads_each_channel_separately() {
    // Logical channel 0 = [[1,3],[2,0]], channel 1 = [[4,-1],[4,9]], stored NHWC:
    // (0,0):1,4  (0,1):3,-1  (1,0):2,4  (1,1):0,9. k2 -> channel 0: 3 at 1; channel 1: 9 at 3.
    let spec = PoolSpec::new(InputShape::nchw(1, 2, 2, 2), PoolParams::new([2, 2])).layout(Layout::ChannelsLast);
    let out = forward(&spec, &[1.0f32, 4.0, 3.0, -1.0, 2.0, 4.0, 0.0, 9.0]);
    assert_eq!(out.values, vec![3.0, 9.0]);
    assert_eq!(out.indices, vec![1, 3]);
    let gi = backward(&spec, &[10.0f32, 20.0], &out.indices).unwrap();
    assert_eq!(gi, vec![0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 20.0]);
}

#[test]
fn overlapping_backward_sums_in_output_order() {
    // L=3 [0, 9, 0], k3 s1 p1: windows {pad,0,1}, {0,1,2}, {1,2,pad} all pick 9 at 1.
    let spec = one_d(1, 1, 3, PoolParams::new([3]).stride([1]).padding([1]));
    let out = forward(&spec, &[0.0f32, 9.0, 0.0]);
    assert_eq!(out.indices, vec![1, 1, 1]);
    // grad_output [1, 1e8, -1e8]: in output order ((0 + 1) + 1e8) + -1e8: 1e8 + 1 rounds back to
    // 1e8 (the f32 spacing there is 8), so the sum is 0. Reversed it would be 1.
    let gi = backward(&spec, &[1.0f32, 1e8, -1e8], &out.indices).unwrap();
    assert_eq!(bits(&gi), vec![0, 0, 0]);
    // [1e8, -1e8, 1] in order: 0 + 1 = 1.
    let gi = backward(&spec, &[1e8f32, -1e8, 1.0], &out.indices).unwrap();
    assert_eq!(gi, vec![0.0, 1.0, 0.0]);
}

#[test]
fn a_minus_zero_gradient_lands_as_plus_zero() {
    // PyTorch computes grad_input = 0 + Σ g, and +0 + -0 = +0.
    // Tiling windows (k == s), overlapping windows and f16.
    let tiled = one_d(1, 1, 4, PoolParams::new([2]));
    let out = forward(&tiled, &[1.0f32, 2.0, 4.0, 3.0]);
    assert_eq!(out.indices, vec![1, 2]);
    let gi = backward(&tiled, &[-0.0f32, -0.0], &out.indices).unwrap();
    assert_eq!(bits(&gi), vec![0; 4]);
    let overlap = one_d(1, 1, 3, PoolParams::new([2]).stride([1]));
    let out = forward(&overlap, &[1.0f32, 5.0, 2.0]);
    assert_eq!(out.indices, vec![1, 1]);
    let gi = backward(&overlap, &[-0.0f32, -0.0], &out.indices).unwrap();
    assert_eq!(bits(&gi), vec![0; 3]);
    let gi = backward(&tiled, &[f16::NEG_ZERO, f16::NEG_ZERO], &[1, 2]).unwrap();
    assert!(gi.iter().all(|g| g.to_bits() == 0), "{gi:?}");
    // Gradients travel bit for bit otherwise (NaN payload, -inf).
    let nan = f32::from_bits(0x7fc0_0042);
    let gi = backward(&tiled, &[nan, f32::NEG_INFINITY], &[1, 2]).unwrap();
    assert_eq!(bits(&gi), vec![0, 0x7fc0_0042, 0xff80_0000, 0]);
}

#[test]
fn stride_above_kernel_leaves_zeros_between_windows() {
    // L=7, k2 s3: floor((7-2)/3)+1 = 2 windows {0,1}, {3,4}; elements 2, 5, 6 are in none.
    let spec = one_d(1, 1, 7, PoolParams::new([2]).stride([3]));
    let out = forward(&spec, &[1.0f32, 5.0, 9.0, 2.0, 7.0, 9.0, 9.0]);
    assert_eq!(out.values, vec![5.0, 7.0]);
    assert_eq!(out.indices, vec![1, 4]);
    let gi = backward(&spec, &[10.0f32, 20.0], &out.indices).unwrap();
    assert_eq!(bits(&gi), bits(&[0.0, 10.0, 0.0, 0.0, 20.0, 0.0, 0.0]));
}

#[test]
fn invalid_indices_are_counted() {
    // L=6, k2 s2, N·C = 2: windows {0,1}, {2,3}, {4,5} per plane.
    let spec = one_d(1, 2, 6, PoolParams::new([2]));
    let go = [1.0f32; 6];
    assert!(backward(&spec, &go, &[1, 3, 5, 0, 2, 4]).is_ok());
    for (indices, count) in [
        // 6 is outside the plane (not the next plane's 0).
        ([1, 3, 6, 0, 2, 4], 1),
        // 1 is in the plane but outside window 1.
        ([1, 1, 5, 0, 2, 4], 1),
        // 2 outside window 0, 0 outside window 1, -1 where the window has real elements.
        ([2, 0, NO_INDEX, 0, 2, 4], 3),
        // Everything wrong, both planes.
        ([7, 7, 7, NO_INDEX, u32::MAX - 1, 0], 6),
    ] {
        assert_eq!(backward(&spec, &go, &indices), Err(Error::InvalidIndices { count }), "{indices:?}");
    }
    // 2-D 2×4, k2 s2: window (0,0) holds 0, 1, 4, 5; index 2 is in the plane and on the window's
    // rows but in the next window's columns; 8 is the plane size.
    let spec = PoolSpec::new(InputShape::nchw(1, 1, 2, 4), PoolParams::new([2, 2]));
    assert!(backward(&spec, &[1.0f32, 1.0], &[4, 7]).is_ok());
    assert_eq!(backward(&spec, &[1.0f32, 1.0], &[2, 8]), Err(Error::InvalidIndices { count: 2 }));
    // Dilation: L=4, k2 d2 s2: eff 3, floor((4-3)/2)+1 = 1 window with taps {0, 2}; 1 lies
    // inside its span but between its taps.
    let spec = one_d(1, 1, 4, PoolParams::new([2]).stride([2]).dilation([2]));
    assert!(backward(&spec, &[1.0f32], &[2]).is_ok());
    assert_eq!(backward(&spec, &[1.0f32], &[1]), Err(Error::InvalidIndices { count: 1 }));
    // Wrong lengths are a shape error, not an index error.
    assert!(matches!(backward(&spec, &[1.0f32, 2.0], &[2]), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(cpu::reference::forward(&spec, &[1.0f32; 3]), Err(Error::ShapeMismatch { .. })));
}

#[test]
fn validate_follows_pytorchs_rules() {
    let v = |shape: InputShape, p: PoolParams| PoolSpec::new(shape, p).validate().map(|_| ());
    let x44 = || InputShape::nchw(1, 1, 4, 4);
    // Zero kernel / stride / dilation (PyTorch: "stride should not be zero", "dilation should be
    // greater than zero"; a zero kernel reaches PyTorch as a zero default stride).
    assert_eq!(v(x44(), PoolParams::new([2, 0])), Err(Error::NotPositive { param: "kernel", axis: 1 }));
    assert_eq!(v(x44(), PoolParams::new([2, 2]).stride([0, 1])), Err(Error::NotPositive { param: "stride", axis: 0 }));
    assert_eq!(
        v(x44(), PoolParams::new([2, 2]).dilation([1, 0])),
        Err(Error::NotPositive { param: "dilation", axis: 1 })
    );
    // Padding: at most kernel / 2 on the raw kernel, even with dilation (k3 d2 p2 is refused by
    // PyTorch although the dilated window is 5 wide); k2 p1 and k4 p2 are fine.
    assert_eq!(
        v(x44(), PoolParams::new([3, 3]).dilation([2, 2]).padding([1, 2])),
        Err(Error::PaddingTooLarge { axis: 1, padding: 2, kernel: 3 })
    );
    assert_eq!(
        v(x44(), PoolParams::new([1, 2]).padding([1, 0])),
        Err(Error::PaddingTooLarge { axis: 0, padding: 1, kernel: 1 })
    );
    assert!(v(x44(), PoolParams::new([2, 2]).padding([1, 1])).is_ok());
    assert!(v(x44(), PoolParams::new([4, 4]).padding([2, 2])).is_ok());
    // Output size below 1: H=4, k5 -> floor((4-5)/5)+1 = 0 (PyTorch: "Output size is too small").
    assert_eq!(v(x44(), PoolParams::new([5, 2])), Err(Error::EmptyOutput { axis: 0, input: 4, output: 0 }));
    // L=2, k5 s1 -> floor((2-5)/1)+1 = -2.
    assert_eq!(
        v(InputShape::new(1, 1, [2]), PoolParams::new([5]).stride([1])),
        Err(Error::EmptyOutput { axis: 0, input: 2, output: -2 })
    );
    // Dilation counts: L=4, k3 d2 -> eff 5 > 4 -> 0.
    assert_eq!(
        v(InputShape::new(1, 1, [4]), PoolParams::new([3]).dilation([2])),
        Err(Error::EmptyOutput { axis: 0, input: 4, output: 0 })
    );
    // Zero channels or spatial size are refused; only the batch may be empty.
    assert_eq!(
        v(InputShape::nchw(1, 0, 4, 4), PoolParams::new([2, 2])),
        Err(Error::ZeroSize { axis: "channels".into(), shape: vec![1, 0, 4, 4] })
    );
    assert_eq!(
        v(InputShape::new(2, 3, [4, 0, 4]), PoolParams::new([2, 2, 2])),
        Err(Error::ZeroSize { axis: "spatial axis 1".into(), shape: vec![2, 3, 4, 0, 4] })
    );
    // Rank: always batched, 1 to 3 spatial axes.
    assert_eq!(
        v(InputShape::new(1, 1, Vec::<usize>::new()), PoolParams::new(Vec::<usize>::new())),
        Err(Error::InputRank { rank: 2 })
    );
    assert_eq!(
        v(InputShape::new(1, 1, [2, 2, 2, 2]), PoolParams::new([1, 1, 1, 1])),
        Err(Error::InputRank { rank: 6 })
    );
    assert_eq!(InputShape::from_dims(&[3, 4], Layout::ChannelsFirst), Err(Error::InputRank { rank: 2 }));
    assert_eq!(InputShape::from_dims(&[1, 2, 3, 4, 5, 6], Layout::ChannelsLast), Err(Error::InputRank { rank: 6 }));
    // One entry per spatial axis (PyTorch: "kernel_size must either be a single int, or a tuple of
    // two ints"; wgpool's PoolParams takes per-axis lists, so a single entry is a mismatch too).
    assert_eq!(v(x44(), PoolParams::new([2, 2, 2])), Err(Error::ParamRank { param: "kernel", expected: 2, found: 3 }));
    assert_eq!(
        v(x44(), PoolParams::new([2, 2]).stride([1])),
        Err(Error::ParamRank { param: "stride", expected: 2, found: 1 })
    );
    assert_eq!(
        v(x44(), PoolParams::new([2, 2]).padding([0, 0, 0])),
        Err(Error::ParamRank { param: "padding", expected: 2, found: 3 })
    );
    assert_eq!(
        v(InputShape::new(1, 1, [4, 4, 4]), PoolParams::new([2, 2, 2]).dilation([1, 1])),
        Err(Error::ParamRank { param: "dilation", expected: 3, found: 2 })
    );
    // Beyond PyTorch: planes must be indexable with u32 (NO_INDEX reserved).
    let limit = MAX_PLANE_ELEMENTS as usize;
    assert!(v(InputShape::new(1, 1, [limit]), PoolParams::new([1])).is_ok());
    assert!(matches!(v(InputShape::new(1, 1, [limit + 1]), PoolParams::new([1])), Err(Error::TooLarge { .. })));
    assert!(matches!(
        v(InputShape::new(1, 1, [1 << 16, 1 << 16, 1]), PoolParams::new([1, 1, 1])),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(InputShape::new(usize::MAX, 2, [2]).numel(), Err(Error::TooLarge { .. })));
}

#[test]
fn an_empty_batch_gives_empty_outputs() {
    for (spatial, kernel, layout) in [
        (vec![5], vec![2], Layout::ChannelsFirst),
        (vec![5, 4], vec![2, 2], Layout::ChannelsLast),
        (vec![3, 3, 3], vec![2, 2, 2], Layout::ChannelsFirst),
    ] {
        let spec = PoolSpec::new(InputShape::new(0, 3, spatial), PoolParams::new(kernel)).layout(layout);
        let out = forward::<f32>(&spec, &[]);
        assert!(out.values.is_empty() && out.indices.is_empty(), "{spec:?}");
        assert!(backward::<f32>(&spec, &[], &[]).unwrap().is_empty(), "{spec:?}");
        let out = forward::<f16>(&spec, &[]);
        assert!(out.values.is_empty(), "{spec:?}");
    }
}

#[test]
fn f16_backward_rounds_after_every_add() {
    // [0, 1, 2, 9, 2, 1, 0], k4 s1: all four windows pick 9 at 3. grad_output [2048, 1, 1, 1]:
    // in f16 steps 2048 + 1 = 2049 is a tie between 2048 and 2050 and rounds to even (2048), and
    // so on: 2048 (0x6800). Summing in f32 and rounding once would give 2051 -> 2052 (0x6802).
    // PyTorch's Half backward gives 0x6800 (golden case f16_sum_order_1d).
    let h = |v: f32| f16::from_f32(v);
    let spec = one_d(1, 1, 7, PoolParams::new([4]).stride([1]));
    let x: Vec<f16> = [0.0, 1.0, 2.0, 9.0, 2.0, 1.0, 0.0].map(h).to_vec();
    let out = forward(&spec, &x);
    assert_eq!(out.indices, vec![3; 4]);
    let gi = backward(&spec, &[h(2048.0), h(1.0), h(1.0), h(1.0)], &out.indices).unwrap();
    assert_eq!(gi[3].to_bits(), 0x6800);
    assert!(gi.iter().enumerate().all(|(i, g)| i == 3 || g.to_bits() == 0));
    // The order is the output order: [1, 1, 1, 2048] gives 1, 2, 3, then 2051 -> 2052.
    let gi = backward(&spec, &[h(1.0), h(1.0), h(1.0), h(2048.0)], &out.indices).unwrap();
    assert_eq!(gi[3].to_bits(), 0x6802);
    // Overflow in the middle of the sum: 40000 + 30000 = 70000 > 65504 -> +inf, and it stays.
    let gi = backward(&spec, &[h(40000.0), h(30000.0), h(-30000.0), h(0.0)], &out.indices).unwrap();
    assert_eq!(gi[3], f16::INFINITY);
}
