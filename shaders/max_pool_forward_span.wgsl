// Max-pool forward, W-blocked for channels-first tensors whose W windows the row kernel
// (max_pool_forward_rows.wgsl, k2 s2) does not take: overlapping, padded, dilated or gapped. One
// invocation computes four adjacent outputs of a row: per window row it loads the 16-byte items
// that cover the four windows' span of input columns (at most four items: SPAN_ITEMS), then takes
// every tap from those registers. Against one invocation per output, that is a quarter of the
// load instructions, each a whole 16 bytes (case B, k3 s2 p1: 3 loads per row of four windows
// instead of 12 strided 4-byte ones). Widths divisible by 4 on both sides (16-byte rows and
// blocks); the D and H axes keep every option. Per output it is exactly the computation of
// max_pool_forward.wgsl: the same taps in the same order, the same update rule; the value is the
// selected tap's.
// CPU mirror: src/cpu/max_pool_forward_span.rs.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<vec4<T>>;
@group(0) @binding(2) var<storage, read_write> values: array<vec4<T>>;
@group(0) @binding(3) var<storage, read_write> indices: array<vec4<u32>>;

// A row as if padded on the left by PAD_ITEMS whole items: the span of block b starts in padded
// item b·S_W, at column SPAN_SHIFT of it.
override PAD_ITEMS: u32 = (P_W + 3u) / 4u;
override SPAN_SHIFT: u32 = 4u * PAD_ITEMS - P_W;
// Items of a row, and items that cover the span of four windows (3·S_W + DIL_W·(K_W − 1) + 1
// columns from SPAN_SHIFT); the host makes sure that this is at most 4.
override ROW_ITEMS: u32 = IN_W / 4u;
override SPAN_ITEMS: u32 = (SPAN_SHIFT + 3u * S_W + DIL_W * (K_W - 1u) + 4u) / 4u;

@compute @workgroup_size(256)
fn max_pool_forward_span(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(num_workgroups) workgroups: vec3<u32>,
) {
    let t = invocation_index(workgroup, local, workgroups);
    if t >= params.counts.x {
        return;
    }
    let blocks = OUT_W / 4u;
    let b = t % blocks;
    var q = t / blocks;
    let oh = q % OUT_H;
    q = q / OUT_H;
    let od = q % OUT_D;
    let group = q / OUT_D;
    let input_base = params.bases.x + group * (IN_D * IN_H * ROW_ITEMS);
    // Per lane: the padded column of tap 0, and whether each tap is a real column.
    let ow = vec4<u32>(4u * b) + vec4<u32>(0u, 1u, 2u, 3u);

    var best = vec4<T>(0.0);
    var arg = vec4<u32>(NO_INDEX);
    var found = vec4<bool>(false);
    // D and H windows of more than RANGED_TAPS_ABOVE taps visit only their real taps (the same
    // ones in the same order).
    let taps_d = real_taps(axis_d(), od);
    let taps_h = real_taps(axis_h(), oh);
    for (var kd = taps_d.x; kd < taps_d.y; kd++) {
        let zd = od * S_D + kd * DIL_D;
        if zd < P_D || zd >= IN_D + P_D {
            continue;
        }
        for (var kh = taps_h.x; kh < taps_h.y; kh++) {
            let zh = oh * S_H + kh * DIL_H;
            if zh < P_H || zh >= IN_H + P_H {
                continue;
            }
            let row = (zd - P_D) * IN_H + zh - P_H;
            // Items past either end of the row are clamped to it: only padding taps fall there,
            // and those are skipped.
            var span: array<vec4<T>, 4>;
            for (var j = 0u; j < SPAN_ITEMS; j++) {
                let item = clamp(b * S_W + j, PAD_ITEMS, PAD_ITEMS + ROW_ITEMS - 1u) - PAD_ITEMS;
                span[j] = input[input_base + row * ROW_ITEMS + item];
            }
            for (var kw = 0u; kw < K_W; kw++) {
                let zw = ow * S_W + vec4<u32>(kw * DIL_W);
                let real = (zw >= vec4<u32>(P_W)) & (zw < vec4<u32>(IN_W + P_W));
                // Column of the tap in the span, per lane.
                let e = vec4<u32>(SPAN_SHIFT + kw * DIL_W) + vec4<u32>(0u, 1u, 2u, 3u) * S_W;
                let v = vec4<T>(span[e.x / 4u][e.x % 4u], span[e.y / 4u][e.y % 4u], span[e.z / 4u][e.z % 4u],
                    span[e.w / 4u][e.w % 4u]);
                // PyTorch's rule, per lane: ties keep the first maximum, NaN wins and the last NaN
                // stays; padding taps are skipped.
                let take = real & (!found | (v > best) | is_nan4(v));
                best = select(best, v, take);
                arg = select(arg, vec4<u32>(row * IN_W) + zw - vec4<u32>(P_W), take);
                found = found | real;
            }
        }
    }
    values[params.bases.y + t] = select(vec4<T>(params.constants.z), best, found);
    // Not in a values-only pass (inference), which binds a placeholder here.
    if WRITE_INDICES {
        indices[params.bases.z + t] = arg;
    }
}
