// Max-pool forward with argmax: one invocation per output element (per four channels at width 4).
// CPU mirror: src/cpu/max_pool_forward.rs.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<V>;
@group(0) @binding(2) var<storage, read_write> values: array<V>;
@group(0) @binding(3) var<storage, read_write> indices: array<I>;

@compute @workgroup_size(256)
fn max_pool_forward(
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
    let input_base = params.bases.x + o.group * (IN_D * IN_H * IN_W) * LANES + o.lane;

    var best = V(0.0);
    var arg = I(NO_INDEX);
    var found = false;
    let taps_d = real_taps(axis_d(), o.d);
    let taps_h = real_taps(axis_h(), o.h);
    let taps_w = real_taps(axis_w(), o.w);
    for (var kd = taps_d.x; kd < taps_d.y; kd++) {
        // Coordinates carry +padding so that they stay unsigned.
        let zd = o.d * S_D + kd * DIL_D;
        if zd < P_D || zd >= IN_D + P_D {
            continue;
        }
        let id = zd - P_D;
        for (var kh = taps_h.x; kh < taps_h.y; kh++) {
            let zh = o.h * S_H + kh * DIL_H;
            if zh < P_H || zh >= IN_H + P_H {
                continue;
            }
            let ih = zh - P_H;
            for (var kw = taps_w.x; kw < taps_w.y; kw++) {
                let zw = o.w * S_W + kw * DIL_W;
                if zw < P_W || zw >= IN_W + P_W {
                    continue;
                }
                let pos = (id * IN_H + ih) * IN_W + zw - P_W;
                let v = input[input_base + pos * LANES];
                // PyTorch's rule: ties keep the first maximum, NaN wins and the last NaN stays.
                // The NaN bit test sits in the condition so that no compiler can turn this into fmax.
                let take = B(!found) | (v > best) | is_nan(v);
                best = select(best, v, take);
                arg = select(arg, I(pos), take);
                found = true;
            }
        }
    }
    // The value is re-read at the argmax so that value and index always agree, bit for bit.
    var value = V(params.constants.z);
    if found {
        value = load_lanes(input_base, arg);
    }
    values[params.bases.y + t] = value;
    // Not in a values-only pass (inference), which binds a placeholder here.
    if WRITE_INDICES {
        indices[params.bases.z + t] = arg;
    }
}
