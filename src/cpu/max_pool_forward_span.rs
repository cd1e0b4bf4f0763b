//! CPU mirror of `shaders/max_pool_forward_span.wgsl`: four adjacent outputs of a row per
//! "invocation", for channels-first tensors whose W windows the row kernel does not take
//! ([`span_eligible`]), from the 16-byte items that cover the four windows' span of input
//! columns. Per output it is the computation of `max_pool_forward.rs` (the update rule on the same
//! taps in the same order); the shader's value is the selected tap.

use super::max_pool_backward::real_taps;
use super::max_pool_forward_rows::rows_eligible;
use crate::element::Element;
use crate::params::{Axis, Geometry, NO_INDEX};

/// Items (of four elements) that cover the span of four adjacent W windows, from the span's
/// offset in its first item (`SPAN_ITEMS` in the shader).
pub fn span_items(w: &Axis) -> usize {
    let shift = 4 * w.padding.div_ceil(4) - w.padding;
    (shift + 3 * w.stride + w.dilation * (w.kernel - 1) + 4) / 4
}

/// Whether `g` goes to the span kernel: one lane (channels-first), input and output widths
/// divisible by 4, the span of four windows within four items, and not a geometry that the row
/// kernel ([`rows_eligible`] with blocks of 4) takes.
pub fn span_eligible(g: &Geometry) -> bool {
    let w = g.axes[2];
    g.groups_and_lanes().1 == 1
        && w.input.is_multiple_of(4)
        && w.output.is_multiple_of(4)
        && span_items(&w) <= 4
        && !rows_eligible(g, 4)
}

/// One block of four outputs: returns their values and indices.
pub fn max_pool_forward_span_invocation<T: Element>(g: &Geometry, input: &[T], t: usize) -> ([T; 4], [u32; 4]) {
    let [ad, ah, aw] = g.axes;
    let pad_items = aw.padding.div_ceil(4);
    let shift = 4 * pad_items - aw.padding;
    let row_items = aw.input / 4;
    let blocks = aw.output / 4;
    let b = t % blocks;
    let q = t / blocks;
    let oh = q % ah.output;
    let q = q / ah.output;
    let od = q % ad.output;
    let group = q / ad.output;
    let input_base = group * g.plane_in();

    let mut best = [T::ZERO; 4];
    let mut arg = [NO_INDEX; 4];
    let mut found = [false; 4];
    // The real taps only, as the shader does for windows of more than 64 taps (the same taps in
    // the same order).
    for kd in real_taps(&ad, od) {
        let zd = od * ad.stride + kd * ad.dilation;
        if zd < ad.padding || zd >= ad.input + ad.padding {
            continue;
        }
        for kh in real_taps(&ah, oh) {
            let zh = oh * ah.stride + kh * ah.dilation;
            if zh < ah.padding || zh >= ah.input + ah.padding {
                continue;
            }
            let row = (zd - ad.padding) * ah.input + zh - ah.padding;
            // The span's items, clamped to the row (only padding taps fall past its ends).
            let mut span = [[T::ZERO; 4]; 4];
            for (j, item) in span.iter_mut().enumerate().take(span_items(&aw)) {
                let i = (b * aw.stride + j).clamp(pad_items, pad_items + row_items - 1) - pad_items;
                let start = input_base + (row * row_items + i) * 4;
                item.copy_from_slice(&input[start..start + 4]);
            }
            for kw in 0..aw.kernel {
                for lane in 0..4 {
                    let zw = (4 * b + lane) * aw.stride + kw * aw.dilation;
                    if zw < aw.padding || zw >= aw.input + aw.padding {
                        continue;
                    }
                    let e = shift + kw * aw.dilation + lane * aw.stride;
                    let v = span[e / 4][e % 4];
                    if !found[lane] || v > best[lane] || v.is_nan() {
                        best[lane] = v;
                        arg[lane] = (row * aw.input + zw - aw.padding) as u32;
                    }
                    found[lane] = true;
                }
            }
        }
    }
    for lane in 0..4 {
        if !found[lane] {
            best[lane] = T::NEG_INFINITY;
        }
    }
    (best, arg)
}

/// Forward pass over all outputs for a geometry that [`span_eligible`] accepts.
pub fn max_pool_forward_span<T: Element>(g: &Geometry, input: &[T], values: &mut [T], indices: &mut [u32]) {
    for t in 0..g.output_len() / 4 {
        let (v, i) = max_pool_forward_span_invocation(g, input, t);
        values[4 * t..4 * t + 4].copy_from_slice(&v);
        indices[4 * t..4 * t + 4].copy_from_slice(&i);
    }
}
