//! CPU mirror of `shaders/max_pool_backward_cells.wgsl`: the gather on cells of up to 2×2
//! adjacent positions, four channels at a time (channels-last with a multiple of 4 channels). Each
//! window reaching the cell is visited once, in output order, for all the cell's positions; per
//! element it is the computation of `max_pool_backward.rs` (whose notes on the shader's second,
//! NaN-tracking pass apply here too).

use super::max_pool_backward::{GradientSum, anchor, candidate_windows, index_valid};
use crate::element::Element;
use crate::params::Geometry;

/// Whether the cell gather applies: several lanes (channels-last), a multiple of 4 of them.
pub fn cells_eligible(g: &Geometry) -> bool {
    let lanes = g.groups_and_lanes().1;
    lanes > 1 && lanes.is_multiple_of(4)
}

/// Rows and columns of a cell (`CELL_H`, `CELL_W` in the shader): two each where the input has
/// them.
pub fn cell_size(g: &Geometry) -> [usize; 2] {
    [g.axes[1].input.min(2), g.axes[2].input.min(2)]
}

/// Invocations for `groups` images (cells of every D slice, times four-channel lanes).
pub fn cells_invocations(g: &Geometry, groups: usize) -> usize {
    let [ad, ah, aw] = g.axes;
    let [ch, cw] = cell_size(g);
    groups * ad.input * ah.input.div_ceil(ch) * aw.input.div_ceil(cw) * (g.groups_and_lanes().1 / 4)
}

/// One cell, four channels: writes their elements and returns the number of invalid indices among
/// the windows whose anchor lies in the cell (per channel).
pub fn max_pool_backward_cells_invocation<T: Element>(
    g: &Geometry,
    grad_output: &[T],
    indices: &[u32],
    grad_input: &mut [T],
    t: usize,
) -> u64 {
    let [ad, ah, aw] = g.axes;
    let lanes = g.groups_and_lanes().1;
    let [ch, cw] = cell_size(g);
    let quad = t % (lanes / 4);
    let q = t / (lanes / 4);
    let iw = (q % aw.input.div_ceil(cw)) * cw;
    let q = q / aw.input.div_ceil(cw);
    let ih = (q % ah.input.div_ceil(ch)) * ch;
    let q = q / ah.input.div_ceil(ch);
    let id = q % ad.input;
    let group = q / ad.input;
    let (ih_last, iw_last) = ((ih + ch - 1).min(ah.input - 1), (iw + cw - 1).min(aw.input - 1));
    // The cell's real positions, in the shader's order (00, 01, 10, 11), as plane positions.
    let p00 = (id * ah.input + ih) * aw.input + iw;
    let positions: Vec<usize> = [(0, 0), (0, 1), (1, 0), (1, 1)]
        .iter()
        .filter(|&&(r, c)| ih + r <= ih_last && iw + c <= iw_last)
        .map(|&(r, c)| p00 + r * aw.input + c)
        .collect();
    let out_plane = g.plane_out();

    let (d_lo, d_hi) = candidate_windows(&ad, id);
    let h_lo = candidate_windows(&ah, ih).0;
    let h_hi = candidate_windows(&ah, ih_last).1;
    let w_lo = candidate_windows(&aw, iw).0;
    let w_hi = candidate_windows(&aw, iw_last).1;
    // sums[position][lane]
    let mut sums = vec![[GradientSum::default(); 4]; positions.len()];
    let mut invalid = 0;
    for od in d_lo..=d_hi {
        for oh in h_lo..=h_hi {
            for ow in w_lo..=w_hi {
                let o = (od * ah.output + oh) * aw.output + ow;
                let anchored = (iw..=iw_last).contains(&anchor(&aw, ow))
                    && (ih..=ih_last).contains(&anchor(&ah, oh))
                    && id == anchor(&ad, od);
                for lane in 0..4 {
                    let e = (group * out_plane + o) * lanes + 4 * quad + lane;
                    let index = indices[e];
                    for (sum, &p) in sums.iter_mut().zip(&positions) {
                        if index == p as u32 {
                            sum[lane].add(grad_output[e]);
                        }
                    }
                    if anchored && !index_valid(g, (od, oh, ow), index) {
                        invalid += 1;
                    }
                }
            }
        }
    }
    for (sum, &p) in sums.iter().zip(&positions) {
        for (lane, s) in sum.iter().enumerate() {
            grad_input[(group * g.plane_in() + p) * lanes + 4 * quad + lane] = s.result();
        }
    }
    invalid
}

/// Backward pass on cells for a geometry [`cells_eligible`] accepts; returns the number of
/// invalid indices.
pub fn max_pool_backward_cells<T: Element>(
    g: &Geometry,
    grad_output: &[T],
    indices: &[u32],
    grad_input: &mut [T],
) -> u64 {
    let (groups, _) = g.groups_and_lanes();
    (0..cells_invocations(g, groups))
        .map(|t| max_pool_backward_cells_invocation(g, grad_output, indices, grad_input, t))
        .sum()
}
