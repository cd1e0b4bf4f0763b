//! CPU mirror of `shaders/max_pool_backward_tiled_rows.wgsl`: the scatter backward for tiling
//! windows, two adjacent outputs of a row per "invocation", for geometries that
//! [`super::max_pool_forward_rows::rows_eligible`] accepts with blocks of 2. Per output it is the
//! computation of `max_pool_backward_tiled.rs`.

use super::max_pool_backward::gradient_term;
use crate::element::Element;
use crate::params::Geometry;

/// One block of two outputs: writes their windows; returns how many of the two indices named
/// none of their window's taps.
pub fn max_pool_backward_tiled_rows_invocation<T: Element>(
    g: &Geometry,
    grad_output: &[T],
    indices: &[u32],
    grad_input: &mut [T],
    t: usize,
) -> u64 {
    let [ad, ah, aw] = g.axes;
    let blocks = aw.output / 2;
    let ow = (t % blocks) * 2;
    let q = t / blocks;
    let oh = q % ah.output;
    let q = q / ah.output;
    let od = q % ad.output;
    let group = q / ad.output;
    let input_base = group * g.plane_in();

    let index: [u32; 2] = std::array::from_fn(|lane| indices[2 * t + lane]);
    // PyTorch computes 0 + g: a -0.0 gradient lands as +0.0, a NaN with PyTorch's bits.
    let gradient: [T; 2] = std::array::from_fn(|lane| gradient_term(grad_output[2 * t + lane]));
    let mut matched = [false; 2];
    for kd in 0..ad.kernel {
        let zd = od * ad.stride + kd;
        if zd < ad.padding || zd >= ad.input + ad.padding {
            continue;
        }
        for kh in 0..ah.kernel {
            let zh = oh * ah.stride + kh;
            if zh < ah.padding || zh >= ah.input + ah.padding {
                continue;
            }
            let first = ((zd - ad.padding) * ah.input + zh - ah.padding) * aw.input + 2 * ow;
            for lane in 0..2 {
                for kw in 0..2 {
                    let pos = first + 2 * lane + kw;
                    let hit = index[lane] == pos as u32;
                    matched[lane] |= hit;
                    grad_input[input_base + pos] = if hit { gradient[lane] } else { T::ZERO };
                }
            }
        }
    }
    matched.iter().filter(|m| !**m).count() as u64
}

/// Backward pass over all outputs for a tiling geometry the row-blocked kernels accept; returns
/// the number of invalid indices.
pub fn max_pool_backward_tiled_rows<T: Element>(
    g: &Geometry,
    grad_output: &[T],
    indices: &[u32],
    grad_input: &mut [T],
) -> u64 {
    (0..g.output_len() / 2)
        .map(|t| max_pool_backward_tiled_rows_invocation(g, grad_output, indices, grad_input, t))
        .sum()
}
