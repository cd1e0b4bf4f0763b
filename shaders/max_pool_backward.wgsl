// Max-pool backward, gather formulation: invocation t sums, in increasing output order, the
// gradients of the windows whose index names input element t (no float atomics, so the sum is
// deterministic and equal to the CPU's bit for bit). It also validates the index of every window
// whose anchor it is — the window's first real element, which every window has — using the index
// it has just loaded, so validation costs no extra memory traffic. The sums are plain additions;
// NaN bits are settled by a second pass, only where a NaN turned up (see `gather`).
// At width 4 an invocation handles four adjacent channels; each lane does the width-1 work.
// CPU mirror: src/cpu/max_pool_backward.rs.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<V>;
@group(0) @binding(2) var<storage, read> indices: array<I>;
@group(0) @binding(3) var<storage, read_write> grad_input: array<V>;
// [params.bases.w]: the number of invalid indices seen (the host clears it before the pass).
@group(0) @binding(4) var<storage, read_write> invalid_count: array<atomic<u32>>;

// What one invocation gathers for one element (per lane): the sum, the NaN PyTorch's CPU would
// have, whether it has one (the plain pass: whether any of its windows' gradients is NaN), and
// the invalid indices among the windows it anchors.
struct Gathered {
    acc: V,
    nan: V,
    has_nan: B,
    invalid: u32,
}

// Sums, in output order, the gradients of the windows wd × wh × ww whose index is `pos`, from
// +0.0 (so a lone -0.0 lands as +0.0, as PyTorch computes 0 + sum), and with `validate` counts
// the invalid indices of the windows this element anchors.
// - `exact` false: plain sums (the first pass), and `has_nan` set where any of the element's
//   windows has a NaN gradient, hit or not (one test per window, no mask) — a bit test on the
//   loaded value, which no compiler may fold, unlike a test of the sum under fast math. A sum
//   that is NaN without one came from inf + -inf. Either way the element takes the second pass
//   (which a NaN its windows did not pick costs, and changes nothing); everywhere else the plain
//   sum is the exact one.
// - `exact` true: NaN bits as PyTorch's CPU has them whatever the GPU does with NaNs — the first
//   NaN event decides (a NaN gradient: nan_result; inf + -inf: indefinite). The second pass, run
//   only by invocations where the first one met a NaN; or the only pass with SINGLE_PASS.
fn gather(exact: bool, validate: bool, pos: I, output_base: u32, index_base: u32, at: vec3<u32>, wd: vec2<u32>, wh: vec2<u32>,
    ww: vec2<u32>) -> Gathered {
    var r = Gathered(V(0.0), V(0.0), B(false), 0u);
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
                if !exact {
                    // The plain pass loads every window's gradient with its index, without a
                    // branch: the two loads go out together instead of one after the other.
                    let g = grad_output[output_base + o];
                    r.acc = r.acc + select(V(0.0), g, hit);
                    r.has_nan = r.has_nan | is_nan(g);
                } else if any(hit) {
                    let g = grad_output[output_base + o];
                    let g_nan = hit & is_nan(g);
                    // Adding +0.0 in the other lanes leaves them unchanged: acc is never -0.0.
                    let sum = r.acc + select(V(0.0), g, hit & !g_nan);
                    let event = !r.has_nan & (g_nan | is_nan(sum));
                    r.nan = select(r.nan, select(V(indefinite()), nan_result(g), g_nan), event);
                    r.has_nan = r.has_nan | event;
                    r.acc = sum;
                }
                if validate && all(at == vec3<u32>(anchor(axis_d(), od), anchor(axis_h(), oh), anchor(axis_w(), ow))) {
                    r.invalid += count_false(index_valid(od, oh, ow, index));
                }
            }
        }
    }
    return r;
}

// The windows on axis a whose anchor is coordinate i (see `anchor`): [x, y], empty if x > y.
// Coordinate 0 anchors every window that starts in the padding or at 0; any other coordinate
// the one window, if any, that starts there.
fn anchored_windows(a: Axis, i: u32) -> vec2<u32> {
    if i == 0u {
        return vec2<u32>(0u, min(div_mod(a.padding, a.stride, DIV_STRIDE + a.number).x, a.output - 1u));
    }
    let o = div_mod(i + a.padding, a.stride, DIV_STRIDE + a.number);
    if o.y != 0u || o.x >= a.output {
        return vec2<u32>(1u, 0u);
    }
    return o.xx;
}

// The invalid indices among the windows whose anchor is `at`: the count `gather` makes with
// `validate`, by a loop of its own. The generic kernel counts this way, because there the test
// inside the window loop, which the lanes of a CPU driver's vector take at different windows,
// costs two thirds of the pass; specialised kernels keep the test in the loop, which reuses the
// index it has just loaded.
fn count_invalid_anchored(at: vec3<u32>, index_base: u32) -> u32 {
    let wd = anchored_windows(axis_d(), at.x);
    let wh = anchored_windows(axis_h(), at.y);
    let ww = anchored_windows(axis_w(), at.z);
    var invalid = 0u;
    for (var od = wd.x; od <= wd.y; od++) {
        for (var oh = wh.x; oh <= wh.y; oh++) {
            for (var ow = ww.x; ow <= ww.y; ow++) {
                let index = indices[index_base + ((od * OUT_H + oh) * OUT_W + ow) * LANES];
                invalid += count_false(index_valid(od, oh, ow, index));
            }
        }
    }
    return invalid;
}

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
    let e = split_element(t, false);
    let lane = e.lane;
    let iw = e.w;
    let ih = e.h;
    let id = e.d;
    let group = e.group;
    let pos = I((id * IN_H + ih) * IN_W + iw);
    let output_base = params.bases.x + group * (OUT_D * OUT_H * OUT_W) * LANES + lane;
    let index_base = params.bases.z + group * (OUT_D * OUT_H * OUT_W) * LANES + lane;
    let at = vec3<u32>(id, ih, iw);
    let wd = candidate_windows(axis_d(), id);
    let wh = candidate_windows(axis_h(), ih);
    let ww = candidate_windows(axis_w(), iw);

    var r = gather(SINGLE_PASS, !GENERIC, pos, output_base, index_base, at, wd, wh, ww);
    if GENERIC {
        r.invalid = count_invalid_anchored(at, index_base);
    }
    if r.invalid != 0u {
        atomicAdd(&invalid_count[params.bases.w], r.invalid);
    }
    if !SINGLE_PASS && any(r.has_nan | is_nan(r.acc)) {
        // (The second pass does not count: the first one has.)
        r = gather(true, false, pos, output_base, index_base, at, wd, wh, ww);
    }
    grad_input[params.bases.y + t] = settle(r.acc, r.nan, r.has_nan);
}
