//! CPU mirror of `shaders/max_pool_backward_tiled.wgsl`: the scatter formulation for windows that
//! tile the input (kernel == stride, no dilation, every element in exactly one window). One
//! "invocation" per output writes its whole window: the gradient at the argmax, +0.0 elsewhere.
//! It must agree bit for bit with the gather formulation in `max_pool_backward.rs`.

use super::max_pool_backward::{gradient_term, real_taps};
use crate::element::Element;
use crate::params::Geometry;

/// One output element: writes its window into `grad_input`; returns whether the index named one of
/// the window's real taps.
pub fn max_pool_backward_tiled_invocation<T: Element>(
    g: &Geometry,
    grad_output: &[T],
    indices: &[u32],
    grad_input: &mut [T],
    t: usize,
) -> bool {
    let (_, lanes) = g.groups_and_lanes();
    let [ad, ah, aw] = g.axes;
    let lane = t % lanes;
    let q = t / lanes;
    let ow = q % aw.output;
    let q = q / aw.output;
    let oh = q % ah.output;
    let q = q / ah.output;
    let od = q % ad.output;
    let group = q / ad.output;
    let input_base = group * g.plane_in();

    let index = indices[t];
    // PyTorch computes 0 + g: a -0.0 gradient lands as +0.0, a NaN with PyTorch's bits.
    let gradient = gradient_term(grad_output[t]);
    let mut matched = false;
    for kd in real_taps(&ad, od) {
        let zd = od * ad.stride + kd;
        if zd < ad.padding || zd >= ad.input + ad.padding {
            continue;
        }
        let id = zd - ad.padding;
        for kh in real_taps(&ah, oh) {
            let zh = oh * ah.stride + kh;
            if zh < ah.padding || zh >= ah.input + ah.padding {
                continue;
            }
            let ih = zh - ah.padding;
            for kw in real_taps(&aw, ow) {
                let zw = ow * aw.stride + kw;
                if zw < aw.padding || zw >= aw.input + aw.padding {
                    continue;
                }
                let pos = (id * ah.input + ih) * aw.input + (zw - aw.padding);
                let mut v = T::ZERO;
                if pos as u32 == index {
                    v = gradient;
                    matched = true;
                }
                grad_input[(input_base + pos) * lanes + lane] = v;
            }
        }
    }
    matched
}

/// Backward pass over all outputs for a tiling geometry (see [`Geometry::tiles`], dilation 1);
/// returns the number of invalid indices.
pub fn max_pool_backward_tiled<T: Element>(
    g: &Geometry,
    grad_output: &[T],
    indices: &[u32],
    grad_input: &mut [T],
) -> u64 {
    debug_assert!(g.tiles() && g.axes.iter().all(|a| a.dilation == 1));
    (0..g.output_len()).filter(|&t| !max_pool_backward_tiled_invocation(g, grad_output, indices, grad_input, t)).count()
        as u64
}
