// Max-pool backward, gather formulation: invocation t sums, in increasing output order, the
// gradients of the windows whose index names input element t (no float atomics, so the sum is
// deterministic and equal to the CPU's bit for bit). It also validates the index of every window
// whose anchor it is — the window's first real element, which every window has — using the index
// it has just loaded, so validation costs no extra memory traffic.
// At width 4 an invocation handles four adjacent channels; each lane does the width-1 work.
// CPU mirror: src/cpu/max_pool_backward.rs.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<V>;
@group(0) @binding(2) var<storage, read> indices: array<I>;
@group(0) @binding(3) var<storage, read_write> grad_input: array<V>;
// [params.bases.w]: the number of invalid indices seen (the host clears it before the pass).
@group(0) @binding(4) var<storage, read_write> invalid_count: array<atomic<u32>>;

@compute @workgroup_size(256)
fn max_pool_backward(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(num_workgroups) workgroups: vec3<u32>,
) {
    let t = invocation_index(workgroup, local, workgroups);
    if t >= params.counts.y {
        return;
    }
    let lane = t % LANES;
    var q = t / LANES;
    let iw = q % IN_W;
    q = q / IN_W;
    let ih = q % IN_H;
    q = q / IN_H;
    let id = q % IN_D;
    let group = q / IN_D;
    let pos = I((id * IN_H + ih) * IN_W + iw);
    let output_base = params.bases.x + group * (OUT_D * OUT_H * OUT_W) * LANES + lane;
    let index_base = params.bases.z + group * (OUT_D * OUT_H * OUT_W) * LANES + lane;

    let wd = candidate_windows(axis_d(), id);
    let wh = candidate_windows(axis_h(), ih);
    let ww = candidate_windows(axis_w(), iw);
    // The sum of the gradients that land here, in output order, from +0.0 (so a lone -0.0 lands
    // as +0.0, as PyTorch computes 0 + sum). NaN bits follow PyTorch's CPU whatever the GPU does
    // with NaNs: the first NaN event decides (a NaN gradient: nan_result; inf + -inf: indefinite).
    var acc = V(0.0);
    var nan = V(0.0);
    var has_nan = B(false);
    var invalid = 0u;
    // Windows wd.x ..= wd.y (at most CAND_D of them), and likewise on H and W, in output order.
    for (var jd = 0u; jd < CAND_D; jd++) {
        let od = wd.x + jd;
        if od > wd.y {
            break;
        }
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
                let o = ((od * OUT_H + oh) * OUT_W + ow) * LANES;
                let index = indices[index_base + o];
                let hit = index == pos;
                if any(hit) {
                    let g = grad_output[output_base + o];
                    let g_nan = hit & is_nan(g);
                    // Adding +0.0 in the other lanes leaves them unchanged: acc is never -0.0.
                    let sum = acc + select(V(0.0), g, hit & !g_nan);
                    let event = !has_nan & (g_nan | is_nan(sum));
                    nan = select(nan, select(V(indefinite()), nan_result(g), g_nan), event);
                    has_nan = has_nan | event;
                    acc = sum;
                }
                if id == anchor(axis_d(), od) && ih == anchor(axis_h(), oh) && iw == anchor(axis_w(), ow) {
                    invalid += count_false(index_valid(od, oh, ow, index));
                }
            }
        }
    }
    if invalid != 0u {
        atomicAdd(&invalid_count[params.bases.w], invalid);
    }
    // A compiler that drops the +0.0 start would leave a -0.0 here; PyTorch has +0.0.
    grad_input[params.bases.y + t] = select(select(acc, V(0.0), acc == V(0.0)), nan, has_nan);
}
