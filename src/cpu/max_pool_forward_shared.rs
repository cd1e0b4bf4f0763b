//! CPU mirror of `shaders/max_pool_forward_shared.wgsl`: workgroups that copy a tile of the input
//! into "workgroup memory" and compute a tile of outputs from it, for overlapping windows on
//! channels-first tensors with a trivial D axis. Per output it is the computation of
//! `max_pool_forward.rs`.

use crate::element::Element;
use crate::params::{Axis, Geometry, NO_INDEX};

/// Elements of workgroup memory the forward tile may use (`SHARED_CAPACITY` in the shader).
pub const FORWARD_SHARED_CAPACITY: usize = 2048;
/// Windows of workgroup memory the backward tile may use (`SHARED_CAPACITY` in the shader).
pub const BACKWARD_SHARED_CAPACITY: usize = 1024;

/// Whether the D axis only carries slices (kernel 1, stride 1, no padding or dilation).
fn trivial_depth(a: &Axis) -> bool {
    a.kernel == 1 && a.stride == 1 && a.dilation == 1 && a.padding == 0
}

/// The tile `[rows, columns]` of one workgroup (256 threads) of the shared-memory kernels, if they
/// apply to `g`: one lane (channels-first), a trivial D axis, and a tile that fits workgroup
/// memory. `forward` tiles outputs; backward tiles inputs. 1-D problems use one row of 256.
pub fn shared_tile(g: &Geometry, forward: bool) -> Option<[usize; 2]> {
    let [ad, ah, _] = g.axes;
    if g.groups_and_lanes().1 != 1 || !trivial_depth(&ad) {
        return None;
    }
    let rows_unit = if forward { ah.output == 1 } else { ah.input == 1 };
    let tile = if rows_unit { [1, 256] } else { [8, 32] };
    let fits = if forward {
        let [ih, iw] = forward_input_tile(g, tile);
        ih * iw <= FORWARD_SHARED_CAPACITY
    } else {
        let [wh, ww] = backward_window_tile(g, tile);
        wh * ww <= BACKWARD_SHARED_CAPACITY
    };
    fits.then_some(tile)
}

/// The input rectangle a forward tile of `tile` outputs reads.
pub fn forward_input_tile(g: &Geometry, [oh, ow]: [usize; 2]) -> [usize; 2] {
    let [_, ah, aw] = g.axes;
    [(oh - 1) * ah.stride + ah.effective_kernel(), (ow - 1) * aw.stride + aw.effective_kernel()]
}

/// The most windows per axis that reach a backward tile of `tile` input elements.
pub fn backward_window_tile(g: &Geometry, [ih, iw]: [usize; 2]) -> [usize; 2] {
    let [_, ah, aw] = g.axes;
    [(ih + ah.effective_kernel() - 2) / ah.stride + 1, (iw + aw.effective_kernel() - 2) / aw.stride + 1]
}

/// The number of workgroups the forward kernel runs over `groups` (planes).
pub fn forward_shared_workgroups(g: &Geometry, groups: usize, [oh, ow]: [usize; 2]) -> usize {
    let [ad, ah, aw] = g.axes;
    groups * ad.input * ah.output.div_ceil(oh) * aw.output.div_ceil(ow)
}

/// One workgroup `w`: loads its input tile and computes its outputs.
pub fn max_pool_forward_shared_workgroup<T: Element>(
    g: &Geometry,
    input: &[T],
    values: &mut [T],
    indices: &mut [u32],
    tile_size: [usize; 2],
    w: usize,
) {
    let [ad, ah, aw] = g.axes;
    let [tile_oh, tile_ow] = tile_size;
    let [tile_ih, tile_iw] = forward_input_tile(g, tile_size);
    let tiles_w = aw.output.div_ceil(tile_ow);
    let tiles_h = ah.output.div_ceil(tile_oh);
    let tw = w % tiles_w;
    let th = (w / tiles_w) % tiles_h;
    let slice = w / (tiles_w * tiles_h);
    let input_base = slice * ah.input * aw.input;
    let (h0, w0) = (th * tile_oh * ah.stride, tw * tile_ow * aw.stride);
    // Workgroup memory: padding positions are loaded as zero and never read.
    let tile: Vec<T> = (0..tile_ih * tile_iw)
        .map(|i| {
            let (zh, zw) = (h0 + i / tile_iw, w0 + i % tile_iw);
            let inside =
                zh >= ah.padding && zh < ah.input + ah.padding && zw >= aw.padding && zw < aw.input + aw.padding;
            if inside { input[input_base + (zh - ah.padding) * aw.input + zw - aw.padding] } else { T::ZERO }
        })
        .collect();
    for local in 0..tile_oh * tile_ow {
        let (oh, ow) = (th * tile_oh + local / tile_ow, tw * tile_ow + local % tile_ow);
        if oh >= ah.output || ow >= aw.output {
            continue;
        }
        let depth = (slice % ad.input) * ah.input * aw.input;
        let mut best = T::ZERO;
        let mut arg = NO_INDEX;
        let mut found = false;
        for kh in 0..ah.kernel {
            let zh = oh * ah.stride + kh * ah.dilation;
            if zh < ah.padding || zh >= ah.input + ah.padding {
                continue;
            }
            for kw in 0..aw.kernel {
                let zw = ow * aw.stride + kw * aw.dilation;
                if zw < aw.padding || zw >= aw.input + aw.padding {
                    continue;
                }
                let v = tile[(zh - h0) * tile_iw + zw - w0];
                let pos = depth + (zh - ah.padding) * aw.input + zw - aw.padding;
                if !found || v > best || v.is_nan() {
                    best = v;
                    arg = pos as u32;
                }
                found = true;
            }
        }
        let t = slice * ah.output * aw.output + oh * aw.output + ow;
        values[t] = if found { best } else { T::NEG_INFINITY };
        indices[t] = arg;
    }
}

/// Forward pass over all outputs with the shared-memory tiles (for a geometry that
/// [`shared_tile`] accepts).
pub fn max_pool_forward_shared<T: Element>(g: &Geometry, input: &[T], values: &mut [T], indices: &mut [u32]) {
    let tile = shared_tile(g, true).expect("geometry accepted by shared_tile");
    for w in 0..forward_shared_workgroups(g, g.groups_and_lanes().0, tile) {
        max_pool_forward_shared_workgroup(g, input, values, indices, tile, w);
    }
}
