// Max-pool backward, row-blocked fast path of max_pool_backward_tiled.wgsl for channels-first
// tensors whose windows tile the input and whose W axis has kernel 2, stride 2, no padding and a
// width divisible by 4: one invocation handles two adjacent outputs of a row, with 8-byte loads of
// indices and gradients and one 16-byte store per window row, so that every store of a subgroup
// covers whole memory sectors. Per output it is exactly the computation of
// max_pool_backward_tiled.wgsl.
// CPU mirror: src/cpu/max_pool_backward_tiled_rows.rs.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<vec2<T>>;
@group(0) @binding(2) var<storage, read> indices: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read_write> grad_input: array<vec4<T>>;
// [params.bases.w]: the number of invalid indices seen (the host clears it before the pass).
@group(0) @binding(4) var<storage, read_write> invalid_count: array<atomic<u32>>;

@compute @workgroup_size(256)
fn max_pool_backward_tiled_rows(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(num_workgroups) workgroups: vec3<u32>,
) {
    let t = invocation_index(workgroup, local, workgroups);
    if t >= params.counts.x {
        return;
    }
    let blocks = OUT_W / 2u;
    let ow = (t % blocks) * 2u;
    var q = t / blocks;
    let oh = q % OUT_H;
    q = q / OUT_H;
    let od = q % OUT_D;
    let group = q / OUT_D;
    // In units of vec4: planes and rows start on 16-byte boundaries (IN_W % 4 == 0).
    let input_base = params.bases.y + group * (IN_D * IN_H * IN_W / 4u);

    let index = indices[params.bases.z + t];
    // PyTorch computes 0 + g: a -0.0 gradient lands as +0.0, a NaN with PyTorch's bits.
    let gradient = gradient_term4(vec4<T>(grad_output[params.bases.x + t], vec2<T>(0.0))).xy;
    var matched = vec2<bool>(false);
    for (var kd = 0u; kd < K_D; kd++) {
        let zd = od * S_D + kd;
        if zd < P_D || zd >= IN_D + P_D {
            continue;
        }
        for (var kh = 0u; kh < K_H; kh++) {
            let zh = oh * S_H + kh;
            if zh < P_H || zh >= IN_H + P_H {
                continue;
            }
            // Input columns 2*ow .. 2*ow + 3 of this row: the two windows side by side.
            let first = ((zd - P_D) * IN_H + zh - P_H) * IN_W + 2u * ow;
            let left = vec2<u32>(first, first + 2u);
            let hit_left = index == left;
            let hit_right = index == left + vec2<u32>(1u);
            matched = matched | hit_left | hit_right;
            let g_left = select(vec2<T>(0.0), gradient, hit_left);
            let g_right = select(vec2<T>(0.0), gradient, hit_right);
            grad_input[input_base + first / 4u] = vec4<T>(g_left.x, g_right.x, g_left.y, g_right.y);
        }
    }
    let missed = select(vec2<u32>(1u), vec2<u32>(0u), matched);
    let invalid = missed.x + missed.y;
    if invalid != 0u {
        atomicAdd(&invalid_count[params.bases.w], invalid);
    }
}
