//! CPU mirror of `shaders/max_pool_backward_shared.wgsl`: workgroups that copy the indices and
//! gradients of every window reaching a tile of the input into "workgroup memory" and gather from
//! there, for overlapping windows on channels-first tensors with a trivial D axis. Per element it
//! is the computation of `max_pool_backward.rs` (same windows, same order, same sums and NaN bits,
//! same anchor validation).

use super::max_pool_backward::{GradientSum, anchor, candidate_windows, window_contains, window_has_real_tap};
use super::max_pool_forward_shared::{backward_window_tile, shared_tile};
use crate::element::Element;
use crate::params::{Geometry, NO_INDEX};

/// The number of workgroups the backward kernel runs over `groups` (planes).
pub fn backward_shared_workgroups(g: &Geometry, groups: usize, [ih, iw]: [usize; 2]) -> usize {
    let [ad, ah, aw] = g.axes;
    groups * ad.input * ah.input.div_ceil(ih) * aw.input.div_ceil(iw)
}

/// One workgroup `w`: loads its windows and computes its tile of `grad_input`; returns the number
/// of invalid indices among the windows its elements anchor.
pub fn max_pool_backward_shared_workgroup<T: Element>(
    g: &Geometry,
    grad_output: &[T],
    indices: &[u32],
    grad_input: &mut [T],
    tile_size: [usize; 2],
    w: usize,
) -> u64 {
    let [ad, ah, aw] = g.axes;
    let [tile_ih, tile_iw] = tile_size;
    let [windows_h, windows_w] = backward_window_tile(g, tile_size);
    let tiles_w = aw.input.div_ceil(tile_iw);
    let tiles_h = ah.input.div_ceil(tile_ih);
    let tw = w % tiles_w;
    let th = (w / tiles_w) % tiles_h;
    let slice = w / (tiles_w * tiles_h);
    let output_base = slice * ah.output * aw.output;
    let oh0 = candidate_windows(&ah, th * tile_ih).0;
    let ow0 = candidate_windows(&aw, tw * tile_iw).0;
    // Workgroup memory: windows outside the output hold (NO_INDEX, 0) and are never candidates.
    let (tile_index, tile_grad): (Vec<u32>, Vec<T>) = (0..windows_h * windows_w)
        .map(|i| {
            let (oh, ow) = (oh0 + i / windows_w, ow0 + i % windows_w);
            if oh < ah.output && ow < aw.output {
                let o = output_base + oh * aw.output + ow;
                (indices[o], grad_output[o])
            } else {
                (NO_INDEX, T::ZERO)
            }
        })
        .unzip();
    let plane = ah.input * aw.input;
    let mut invalid = 0;
    for local in 0..tile_ih * tile_iw {
        let (ih, iw) = (th * tile_ih + local / tile_iw, tw * tile_iw + local % tile_iw);
        if ih >= ah.input || iw >= aw.input {
            continue;
        }
        let depth = (slice % ad.input) * plane;
        let pos = (depth + ih * aw.input + iw) as u32;
        let (h_lo, h_hi) = candidate_windows(&ah, ih);
        let (w_lo, w_hi) = candidate_windows(&aw, iw);
        let mut sum = GradientSum::default();
        for oh in h_lo..=h_hi {
            for ow in w_lo..=w_hi {
                let k = (oh - oh0) * windows_w + ow - ow0;
                let index = tile_index[k];
                if index == pos {
                    sum.add(tile_grad[k]);
                }
                if ih == anchor(&ah, oh) && iw == anchor(&aw, ow) {
                    let valid = if index == NO_INDEX {
                        !(window_has_real_tap(&ah, oh) && window_has_real_tap(&aw, ow))
                    } else {
                        let i = index as usize;
                        i >= depth
                            && i < depth + plane
                            && window_contains(&ah, oh, (i % plane) / aw.input)
                            && window_contains(&aw, ow, i % aw.input)
                    };
                    invalid += u64::from(!valid);
                }
            }
        }
        grad_input[slice * plane + ih * aw.input + iw] = sum.result();
    }
    invalid
}

/// Backward pass with the shared-memory tiles (for a geometry that [`shared_tile`] accepts);
/// returns the number of invalid indices.
pub fn max_pool_backward_shared<T: Element>(
    g: &Geometry,
    grad_output: &[T],
    indices: &[u32],
    grad_input: &mut [T],
) -> u64 {
    let tile = shared_tile(g, false).expect("geometry accepted by shared_tile");
    (0..backward_shared_workgroups(g, g.groups_and_lanes().0, tile))
        .map(|w| max_pool_backward_shared_workgroup(g, grad_output, indices, grad_input, tile, w))
        .sum()
}
