//! CPU mirror of `shaders/max_pool_backward_rows.wgsl`: the gather on blocks of four adjacent
//! elements of a grad_input row (channels-first, width divisible by 4). Each window reaching the
//! block is visited once, in output order, for all four elements; per element it is the
//! computation of `max_pool_backward.rs`.

use super::max_pool_backward::{GradientSum, anchor, candidate_windows, index_valid};
use crate::element::Element;
use crate::params::Geometry;

/// Whether the row-block gather applies: one lane (channels-first) and a width divisible by 4.
pub fn gather_rows_eligible(g: &Geometry) -> bool {
    g.groups_and_lanes().1 == 1 && g.axes[2].input.is_multiple_of(4)
}

/// One block of four elements: writes them and returns the number of invalid indices among the
/// windows whose anchor lies in the block.
pub fn max_pool_backward_rows_invocation<T: Element>(
    g: &Geometry,
    grad_output: &[T],
    indices: &[u32],
    grad_input: &mut [T],
    t: usize,
) -> u64 {
    let [ad, ah, aw] = g.axes;
    let blocks = aw.input / 4;
    let iw = (t % blocks) * 4;
    let q = t / blocks;
    let ih = q % ah.input;
    let q = q / ah.input;
    let id = q % ad.input;
    let group = q / ad.input;
    let first = (id * ah.input + ih) * aw.input + iw;
    let output_base = group * g.plane_out();

    let (d_lo, d_hi) = candidate_windows(&ad, id);
    let (h_lo, h_hi) = candidate_windows(&ah, ih);
    let w_lo = candidate_windows(&aw, iw).0;
    let w_hi = candidate_windows(&aw, iw + 3).1;
    let mut sums = [GradientSum::default(); 4];
    let mut invalid = 0;
    for od in d_lo..=d_hi {
        for oh in h_lo..=h_hi {
            for ow in w_lo..=w_hi {
                let o = output_base + (od * ah.output + oh) * aw.output + ow;
                let index = indices[o];
                for (lane, sum) in sums.iter_mut().enumerate() {
                    if index == (first + lane) as u32 {
                        sum.add(grad_output[o]);
                    }
                }
                let a = anchor(&aw, ow);
                if (iw..iw + 4).contains(&a)
                    && ih == anchor(&ah, oh)
                    && id == anchor(&ad, od)
                    && !index_valid(g, (od, oh, ow), index)
                {
                    invalid += 1;
                }
            }
        }
    }
    let base = group * g.plane_in() + first;
    for (lane, sum) in sums.iter().enumerate() {
        grad_input[base + lane] = sum.result();
    }
    invalid
}

/// Backward pass on row blocks for a geometry [`gather_rows_eligible`] accepts; returns the number
/// of invalid indices.
pub fn max_pool_backward_rows<T: Element>(
    g: &Geometry,
    grad_output: &[T],
    indices: &[u32],
    grad_input: &mut [T],
) -> u64 {
    (0..g.input_len() / 4).map(|t| max_pool_backward_rows_invocation(g, grad_output, indices, grad_input, t)).sum()
}
