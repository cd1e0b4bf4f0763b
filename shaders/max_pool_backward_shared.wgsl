// Max-pool backward (gather) for overlapping windows on channels-first tensors whose D axis is
// trivial (1-D and 2-D problems): a workgroup computes a TILE_IH x TILE_IW tile of grad_input of
// one plane. It first copies the indices and gradients of every window that reaches the tile
// into workgroup memory with coalesced loads, so each is read from device memory about once
// instead of once per input element of its window. Per element it is exactly the computation of
// max_pool_backward.wgsl: the same windows in the same order, the same sums and NaN bits, and the
// same anchor validation.
// CPU mirror: src/cpu/max_pool_backward_shared.rs.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<T>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read_write> grad_input: array<T>;
// [params.bases.w]: the number of invalid indices seen (the host clears it before the pass).
@group(0) @binding(4) var<storage, read_write> invalid_count: array<atomic<u32>>;

// Input elements per workgroup (TILE_IH * TILE_IW == WORKGROUP_SIZE) and the most windows that
// reach such a tile on each axis.
override TILE_IH: u32 = 8u;
override TILE_IW: u32 = 32u;
override WINDOWS_H: u32 = (TILE_IH + DIL_H * (K_H - 1u) - 1u) / S_H + 1u;
override WINDOWS_W: u32 = (TILE_IW + DIL_W * (K_W - 1u) - 1u) / S_W + 1u;

// The host checks WINDOWS_H * WINDOWS_W <= SHARED_CAPACITY.
const SHARED_CAPACITY: u32 = 1024u;
var<workgroup> tile_index: array<u32, SHARED_CAPACITY>;
var<workgroup> tile_grad: array<T, SHARED_CAPACITY>;

// Whether window (oh, ow) may hold `index` after a forward pass (the D axis is trivial).
fn index_valid_hw(oh: u32, ow: u32, index: u32) -> bool {
    if index == NO_INDEX {
        return !(window_has_real_tap(axis_h(), oh) && window_has_real_tap(axis_w(), ow));
    }
    let plane = IN_H * IN_W;
    let ih = (index % plane) / IN_W;
    let iw = index % IN_W;
    // The index must also lie in this window's depth slice, which the caller checks.
    return index < IN_D * plane && window_contains(axis_h(), oh, ih) && window_contains(axis_w(), ow, iw);
}

@compute @workgroup_size(256)
fn max_pool_backward_shared(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(num_workgroups) workgroups: vec3<u32>,
) {
    let w = workgroup.y * workgroups.x + workgroup.x;
    if w >= params.counts.x {
        return;
    }
    let tiles_w = (IN_W + TILE_IW - 1u) / TILE_IW;
    let tiles_h = (IN_H + TILE_IH - 1u) / TILE_IH;
    let tw = w % tiles_w;
    let th = (w / tiles_w) % tiles_h;
    let slice = w / (tiles_w * tiles_h);
    let output_base = slice * (OUT_H * OUT_W);
    // The windows reaching the tile start here.
    let oh0 = first_window(axis_h(), th * TILE_IH);
    let ow0 = first_window(axis_w(), tw * TILE_IW);
    for (var i = local; i < WINDOWS_H * WINDOWS_W; i += WORKGROUP_SIZE) {
        let oh = oh0 + i / WINDOWS_W;
        let ow = ow0 + i % WINDOWS_W;
        var index = NO_INDEX;
        var g = T(0.0);
        if oh < OUT_H && ow < OUT_W {
            let o = output_base + oh * OUT_W + ow;
            index = indices[params.bases.z + o];
            g = grad_output[params.bases.x + o];
        }
        tile_index[i] = index;
        tile_grad[i] = g;
    }
    workgroupBarrier();

    let ih = th * TILE_IH + local / TILE_IW;
    let iw = tw * TILE_IW + local % TILE_IW;
    if ih >= IN_H || iw >= IN_W {
        return;
    }
    let depth = (slice % IN_D) * (IN_H * IN_W);
    let pos = depth + ih * IN_W + iw;
    let wh = candidate_windows(axis_h(), ih);
    let ww = candidate_windows(axis_w(), iw);
    // The sum and NaN rules of max_pool_backward.wgsl, one lane.
    var acc = T(0.0);
    var nan = T(0.0);
    var has_nan = false;
    var invalid = 0u;
    for (var jh = 0u; jh < CAND_H; jh++) {
        let oh = wh.x + jh;
        if oh > wh.y {
            break;
        }
        for (var jw = 0u; jw < CAND_W; jw++) {
            let ow = ww.x + jw;
            if ow > ww.y {
                break;
            }
            let k = (oh - oh0) * WINDOWS_W + ow - ow0;
            let index = tile_index[k];
            if index == pos {
                let g = tile_grad[k];
                let g_nan = is_nan(g);
                let sum = acc + select(g, T(0.0), g_nan);
                let event = !has_nan & (g_nan | is_nan(sum));
                nan = select(nan, select(indefinite(), nan_result(g), g_nan), event);
                has_nan = has_nan | event;
                acc = sum;
            }
            if ih == anchor(axis_h(), oh) && iw == anchor(axis_w(), ow) {
                let in_slice = index == NO_INDEX || (index >= depth && index < depth + IN_H * IN_W);
                invalid += select(1u, 0u, in_slice && index_valid_hw(oh, ow, index));
            }
        }
    }
    if invalid != 0u {
        atomicAdd(&invalid_count[params.bases.w], invalid);
    }
    grad_input[params.bases.y + slice * (IN_H * IN_W) + ih * IN_W + iw] =
        select(select(acc, T(0.0), acc == T(0.0)), nan, has_nan);
}

