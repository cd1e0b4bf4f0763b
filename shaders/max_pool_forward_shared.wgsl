// Max-pool forward for overlapping windows on channels-first tensors whose D axis is trivial
// (1-D and 2-D problems): a workgroup computes a TILE_OH x TILE_OW tile of outputs of one plane
// from a tile of the input that it first copies into workgroup memory with coalesced loads, so
// each input element is read from device memory about once instead of once per window holding
// it. Per output it is exactly the computation of max_pool_forward.wgsl.
// CPU mirror: src/cpu/max_pool_forward_shared.rs.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<T>;
@group(0) @binding(2) var<storage, read_write> values: array<T>;
@group(0) @binding(3) var<storage, read_write> indices: array<u32>;

// Outputs per workgroup (TILE_OH * TILE_OW == WORKGROUP_SIZE) and the input rectangle they read.
override TILE_OH: u32 = 8u;
override TILE_OW: u32 = 32u;
override TILE_IH: u32 = (TILE_OH - 1u) * S_H + DIL_H * (K_H - 1u) + 1u;
override TILE_IW: u32 = (TILE_OW - 1u) * S_W + DIL_W * (K_W - 1u) + 1u;

// The host checks TILE_IH * TILE_IW <= SHARED_CAPACITY.
const SHARED_CAPACITY: u32 = 2048u;
var<workgroup> tile: array<T, SHARED_CAPACITY>;

@compute @workgroup_size(256)
fn max_pool_forward_shared(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(num_workgroups) workgroups: vec3<u32>,
) {
    // One workgroup per tile; params.counts.x tiles in this chunk.
    let w = workgroup.y * workgroups.x + workgroup.x;
    if w >= params.counts.x {
        return;
    }
    let tiles_w = (OUT_W + TILE_OW - 1u) / TILE_OW;
    let tiles_h = (OUT_H + TILE_OH - 1u) / TILE_OH;
    let tw = w % tiles_w;
    let th = (w / tiles_w) % tiles_h;
    // A plane of a group, and (with a trivial D axis) its depth slice: od == id.
    let slice = w / (tiles_w * tiles_h);
    let input_base = params.bases.x + slice * (IN_H * IN_W);
    // Padded coordinates (input coordinate + padding) of the tile's first row and column.
    let h0 = th * TILE_OH * S_H;
    let w0 = tw * TILE_OW * S_W;
    for (var i = local; i < TILE_IH * TILE_IW; i += WORKGROUP_SIZE) {
        let zh = h0 + i / TILE_IW;
        let zw = w0 + i % TILE_IW;
        var v = T(0.0);
        if zh >= P_H && zh < IN_H + P_H && zw >= P_W && zw < IN_W + P_W {
            v = input[input_base + (zh - P_H) * IN_W + zw - P_W];
        }
        tile[i] = v;
    }
    workgroupBarrier();

    let ly = local / TILE_OW;
    let lx = local % TILE_OW;
    let oh = th * TILE_OH + ly;
    let ow = tw * TILE_OW + lx;
    if oh >= OUT_H || ow >= OUT_W {
        return;
    }
    let depth = (slice % IN_D) * (IN_H * IN_W);
    var best = T(0.0);
    var arg = NO_INDEX;
    var found = false;
    for (var kh = 0u; kh < K_H; kh++) {
        let zh = oh * S_H + kh * DIL_H;
        if zh < P_H || zh >= IN_H + P_H {
            continue;
        }
        for (var kw = 0u; kw < K_W; kw++) {
            let zw = ow * S_W + kw * DIL_W;
            if zw < P_W || zw >= IN_W + P_W {
                continue;
            }
            let v = tile[(zh - h0) * TILE_IW + zw - w0];
            let pos = depth + (zh - P_H) * IN_W + zw - P_W;
            // PyTorch's rule: ties keep the first maximum, NaN wins and the last NaN stays.
            let take = !found || v > best || is_nan(v);
            best = select(best, v, take);
            arg = select(arg, pos, take);
            found = true;
        }
    }
    if !found {
        best = params.constants.z;
    }
    let t = slice * (OUT_H * OUT_W) + oh * OUT_W + ow;
    values[params.bases.y + t] = best;
    // Not in a values-only pass (inference), which binds a placeholder here.
    if WRITE_INDICES {
        indices[params.bases.z + t] = arg;
    }
}
