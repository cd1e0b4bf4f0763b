// Max-pool forward, row-blocked fast path for channels-first tensors whose W axis has kernel 2,
// stride 2, no dilation, no padding and a width divisible by 8 (most k2s2 pooling): one invocation
// computes four adjacent outputs of a row from two 16-byte loads per window row and writes 16-byte
// values and indices. The D and H axes keep every option (padding, dilation, overlap, ceil_mode).
// Per output it is exactly the computation of max_pool_forward.wgsl.
// CPU mirror: src/cpu/max_pool_forward_rows.rs.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<vec4<T>>;
@group(0) @binding(2) var<storage, read_write> values: array<vec4<T>>;
@group(0) @binding(3) var<storage, read_write> indices: array<vec4<u32>>;

// Feeds one tap of the four windows: the update rule of max_pool_forward.wgsl, per lane.
fn take_tap(best: ptr<function, vec4<T>>, arg: ptr<function, vec4<u32>>, found: bool, v: vec4<T>, pos: vec4<u32>) {
    let take = vec4<bool>(!found) | (v > *best) | ((bitcast<vec4<u32>>(vec4<f32>(v)) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u));
    *best = select(*best, v, take);
    *arg = select(*arg, pos, take);
}

@compute @workgroup_size(256)
fn max_pool_forward_rows(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(num_workgroups) workgroups: vec3<u32>,
) {
    let t = invocation_index(workgroup, local, workgroups);
    if t >= params.counts.x {
        return;
    }
    let blocks = OUT_W / 4u;
    let ow = (t % blocks) * 4u;
    var q = t / blocks;
    let oh = q % OUT_H;
    q = q / OUT_H;
    let od = q % OUT_D;
    let group = q / OUT_D;
    // In units of vec4: planes and rows start on 16-byte boundaries (IN_W % 8 == 0).
    let input_base = params.bases.x + group * (IN_D * IN_H * IN_W / 4u);

    var best = vec4<T>(0.0);
    var arg = vec4<u32>(NO_INDEX);
    var found = false;
    for (var kd = 0u; kd < K_D; kd++) {
        let zd = od * S_D + kd * DIL_D;
        if zd < P_D || zd >= IN_D + P_D {
            continue;
        }
        for (var kh = 0u; kh < K_H; kh++) {
            let zh = oh * S_H + kh * DIL_H;
            if zh < P_H || zh >= IN_H + P_H {
                continue;
            }
            // Input columns 2*ow .. 2*ow + 7 of this row.
            let first = ((zd - P_D) * IN_H + zh - P_H) * IN_W + 2u * ow;
            let a = input[input_base + first / 4u];
            let b = input[input_base + first / 4u + 1u];
            let pos = vec4<u32>(first) + vec4<u32>(0u, 2u, 4u, 6u);
            take_tap(&best, &arg, found, vec4<T>(a.x, a.z, b.x, b.z), pos);
            found = true;
            take_tap(&best, &arg, found, vec4<T>(a.y, a.w, b.y, b.w), pos + vec4<u32>(1u));
        }
    }
    if !found {
        best = vec4<T>(params.constants.z);
    }
    values[params.bases.y + t] = best;
    // Not in a values-only pass (inference), which binds a placeholder here.
    if WRITE_INDICES {
        indices[params.bases.z + t] = arg;
    }
}
