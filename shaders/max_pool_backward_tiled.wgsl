// Max-pool backward for windows that tile the input (kernel == stride, no dilation, every input
// element in exactly one window): scatter formulation. Invocation t reads output t's index and
// gradient once, writes the gradient to the argmax and +0.0 to the rest of its window, and
// validates the index on the way (it must be one of the window's real taps). Every input element
// is written exactly once, so no zero-fill pass and no atomics on floats are needed.
// At width 4 an invocation handles four adjacent channels; each lane does the width-1 work.
// CPU mirror: src/cpu/max_pool_backward_tiled.rs.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<V>;
@group(0) @binding(2) var<storage, read> indices: array<I>;
@group(0) @binding(3) var<storage, read_write> grad_input: array<V>;
// [params.bases.w]: the number of invalid indices seen (the host clears it before the pass).
@group(0) @binding(4) var<storage, read_write> invalid_count: array<atomic<u32>>;

@compute @workgroup_size(256)
fn max_pool_backward_tiled(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(num_workgroups) workgroups: vec3<u32>,
) {
    let t = invocation_index(workgroup, local, workgroups);
    if t >= params.counts.x {
        return;
    }
    // The output element: its lane, position (o.d, o.h, o.w) and group.
    let o = split_element(t, true);
    let input_base = params.bases.y + o.group * (IN_D * IN_H * IN_W) * LANES + o.lane;

    let index = indices[params.bases.z + t];
    // PyTorch computes 0 + g: a -0.0 gradient lands as +0.0, a NaN with PyTorch's bits.
    let gradient = gradient_term(grad_output[params.bases.x + t]);
    var matched = B(false);
    let taps_d = real_taps(axis_d(), o.d);
    let taps_h = real_taps(axis_h(), o.h);
    let taps_w = real_taps(axis_w(), o.w);
    for (var kd = taps_d.x; kd < taps_d.y; kd++) {
        let zd = o.d * S_D + kd;
        if zd < P_D || zd >= IN_D + P_D {
            continue;
        }
        let id = zd - P_D;
        for (var kh = taps_h.x; kh < taps_h.y; kh++) {
            let zh = o.h * S_H + kh;
            if zh < P_H || zh >= IN_H + P_H {
                continue;
            }
            let ih = zh - P_H;
            for (var kw = taps_w.x; kw < taps_w.y; kw++) {
                let zw = o.w * S_W + kw;
                if zw < P_W || zw >= IN_W + P_W {
                    continue;
                }
                let pos = (id * IN_H + ih) * IN_W + zw - P_W;
                let hit = index == I(pos);
                matched = matched | hit;
                grad_input[input_base + pos * LANES] = select(V(0.0), gradient, hit);
            }
        }
    }
    let invalid = count_false(matched);
    if invalid != 0u {
        atomicAdd(&invalid_count[params.bases.w], invalid);
    }
}
