//! CPU mirror of `shaders/max_pool_forward.wgsl`: one "invocation" per output element, the same
//! decode, the same window scan and the same update rule, written to be read side by side with
//! the shader. This is the reference every other path is checked against; keep it simple.

use super::max_pool_backward::real_taps;
use crate::element::Element;
use crate::params::{Geometry, NO_INDEX};

/// One output element: decode `t` into (group, output position, lane), scan its window in
/// row-major order and return `(value, index)`.
pub fn max_pool_forward_invocation<T: Element>(g: &Geometry, input: &[T], t: usize) -> (T, u32) {
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

    let mut best = T::NEG_INFINITY;
    let mut arg = NO_INDEX;
    let mut found = false;
    for kd in real_taps(&ad, od) {
        // Coordinates carry +padding so that they stay unsigned, as in the shader.
        let zd = od * ad.stride + kd * ad.dilation;
        if zd < ad.padding || zd >= ad.input + ad.padding {
            continue;
        }
        let id = zd - ad.padding;
        for kh in real_taps(&ah, oh) {
            let zh = oh * ah.stride + kh * ah.dilation;
            if zh < ah.padding || zh >= ah.input + ah.padding {
                continue;
            }
            let ih = zh - ah.padding;
            for kw in real_taps(&aw, ow) {
                let zw = ow * aw.stride + kw * aw.dilation;
                if zw < aw.padding || zw >= aw.input + aw.padding {
                    continue;
                }
                let iw = zw - aw.padding;
                let pos = (id * ah.input + ih) * aw.input + iw;
                let v = input[(input_base + pos) * lanes + lane];
                // PyTorch's rule: ties keep the first maximum, NaN wins and the last NaN stays.
                if !found || v > best || v.is_nan() {
                    best = v;
                    arg = pos as u32;
                    found = true;
                }
            }
        }
    }
    if found { (input[(input_base + arg as usize) * lanes + lane], arg) } else { (T::NEG_INFINITY, NO_INDEX) }
}

/// Forward pass over all outputs, in the physical layout of `g`.
pub fn max_pool_forward<T: Element>(g: &Geometry, input: &[T], values: &mut [T], indices: &mut [u32]) {
    for t in 0..g.output_len() {
        let (v, i) = max_pool_forward_invocation(g, input, t);
        values[t] = v;
        indices[t] = i;
    }
}
