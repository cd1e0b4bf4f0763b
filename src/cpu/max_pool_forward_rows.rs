//! CPU mirror of `shaders/max_pool_forward_rows.wgsl`: four adjacent outputs of a row per
//! "invocation", for channels-first tensors whose W axis has kernel 2, stride 2, no dilation, no
//! padding and a width divisible by 8 ([`rows_eligible`] with blocks of 4). Per output it is the computation of `max_pool_forward.rs`
//! (the update rule on the same taps in the same order); the shader's value is the selected tap.

use crate::element::Element;
use crate::params::{Geometry, NO_INDEX};

/// Whether `g` qualifies for the row-blocked kernels with `block` outputs per invocation:
/// one lane (channels-first), W axis kernel 2, stride 2, no dilation or padding, and a width
/// divisible by `2 * block` (forward: blocks of 4; backward: blocks of 2).
pub fn rows_eligible(g: &Geometry, block: usize) -> bool {
    let w = g.axes[2];
    g.groups_and_lanes().1 == 1
        && w.kernel == 2
        && w.stride == 2
        && w.dilation == 1
        && w.padding == 0
        && w.input.is_multiple_of(2 * block)
}

/// One block of four outputs: returns their values and indices.
pub fn max_pool_forward_rows_invocation<T: Element>(g: &Geometry, input: &[T], t: usize) -> ([T; 4], [u32; 4]) {
    let [ad, ah, aw] = g.axes;
    let blocks = aw.output / 4;
    let ow = (t % blocks) * 4;
    let q = t / blocks;
    let oh = q % ah.output;
    let q = q / ah.output;
    let od = q % ad.output;
    let group = q / ad.output;
    let input_base = group * g.plane_in();

    let mut best = [T::ZERO; 4];
    let mut arg = [NO_INDEX; 4];
    let mut found = false;
    for kd in 0..ad.kernel {
        let zd = od * ad.stride + kd * ad.dilation;
        if zd < ad.padding || zd >= ad.input + ad.padding {
            continue;
        }
        for kh in 0..ah.kernel {
            let zh = oh * ah.stride + kh * ah.dilation;
            if zh < ah.padding || zh >= ah.input + ah.padding {
                continue;
            }
            let first = ((zd - ad.padding) * ah.input + zh - ah.padding) * aw.input + 2 * ow;
            for kw in 0..2 {
                for lane in 0..4 {
                    let pos = first + 2 * lane + kw;
                    let v = input[input_base + pos];
                    if !found || v > best[lane] || v.is_nan() {
                        best[lane] = v;
                        arg[lane] = pos as u32;
                    }
                }
                found = true;
            }
        }
    }
    if !found {
        best = [T::NEG_INFINITY; 4];
    }
    (best, arg)
}

/// Forward pass over all outputs for a geometry that [`rows_eligible`] accepts with blocks of 4.
pub fn max_pool_forward_rows<T: Element>(g: &Geometry, input: &[T], values: &mut [T], indices: &mut [u32]) {
    for t in 0..g.output_len() / 4 {
        let (v, i) = max_pool_forward_rows_invocation(g, input, t);
        values[4 * t..4 * t + 4].copy_from_slice(&v);
        indices[4 * t..4 * t + 4].copy_from_slice(&i);
    }
}
