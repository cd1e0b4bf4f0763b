// Shared by every wgpool kernel (the host puts it after the element-type header and before the
// kernel; see src/gpu/kernels.rs).
//
// The host puts a header in front (see `src/gpu/kernels.rs`) that declares the element type `T`
// (`f32`, or `f16` with `enable f16;`) and the lane vector types of the invocation:
// - width 1: `V = T`, `I = u32`, `B = bool`, `VF = f32` — one element per invocation;
// - width 4: `V = vec4<T>`, `I = vec4<u32>`, `B = vec4<bool>`, `VF = vec4<f32>` — four adjacent
//   channels of a channels-last tensor per invocation (16-byte loads and stores). Every lane does
//   exactly the width-1 computation; the kernels are written once for both widths with `select`.
// `count_false(b: B) -> u32`, `nan_result(V)`, `nan_result4(vec4<T>)` and `indefinite() -> T`
// (PyTorch's CPU NaN bits for backward sums, see `Element::nan_result`) come from the header too.
//
// Geometry is always three spatial axes (D, H, W); 1-D and 2-D problems arrive with unit axes in
// front. It is given as pipeline-override constants, so every pipeline is specialised to its
// shape: divisions by sizes become multiplications and the window loops unroll. Element
// (group, spatial position, lane) of a tensor lives at `(group * plane + position) * LANES + lane`:
// channels-first has one lane per (n, c) plane, channels-last has C lanes per image, so one kernel
// serves both layouts.

override LANES: u32 = 1u;
override IN_D: u32 = 1u;
override IN_H: u32 = 1u;
override IN_W: u32 = 1u;
override OUT_D: u32 = 1u;
override OUT_H: u32 = 1u;
override OUT_W: u32 = 1u;
override K_D: u32 = 1u;
override K_H: u32 = 1u;
override K_W: u32 = 1u;
override S_D: u32 = 1u;
override S_H: u32 = 1u;
override S_W: u32 = 1u;
override P_D: u32 = 0u;
override P_H: u32 = 0u;
override P_W: u32 = 0u;
override DIL_D: u32 = 1u;
override DIL_H: u32 = 1u;
override DIL_W: u32 = 1u;
// Whether window loops visit only the real taps ([first, end) from `real_taps`) instead of all
// K taps with a skip for padding: the host sets it for kernels so large (a window of 2^31 taps
// over 3 elements is valid) that scanning the padding would take seconds. Off, the loops have
// constant trip counts and unroll.
override RANGED_TAPS: bool = false;
// For the forward kernels: whether they write the indices (off for a values-only pass, which
// binds a placeholder buffer there).
override WRITE_INDICES: bool = true;
// For the gathers with a NaN pass (max_pool_backward, _rows, _cells): whether their one pass over
// the windows tracks PyTorch's NaN bits (the `single_pass` variant, for comparisons) instead of
// plain sums and a second pass where a NaN turned up. Other kernels ignore it.
override SINGLE_PASS: bool = false;
// The most windows that share one input element on each axis, ceil(eff / stride): constant trip
// counts let the backward's window loops unroll.
override CAND_D: u32 = 1u;
override CAND_H: u32 = 1u;
override CAND_W: u32 = 1u;

// One spatial axis (mirrors `params::Axis`).
struct Axis {
    input: u32,
    output: u32,
    kernel: u32,
    stride: u32,
    padding: u32,
    dilation: u32,
}

fn axis_d() -> Axis {
    return Axis(IN_D, OUT_D, K_D, S_D, P_D, DIL_D);
}
fn axis_h() -> Axis {
    return Axis(IN_H, OUT_H, K_H, S_H, P_H, DIL_H);
}
fn axis_w() -> Axis {
    return Axis(IN_W, OUT_W, K_W, S_W, P_W, DIL_W);
}

// What changes between the chunks of one call, and the constants WGSL cannot spell.
struct Params {
    // x: output elements in this chunk, y: input elements in this chunk, z, w: unused.
    counts: vec4<u32>,
    // Element offsets inside the bindings (bindings start at an aligned byte offset):
    // x: input / grad_output, y: values / grad_input, z: indices, w: the invalid-index counter.
    bases: vec4<u32>,
    // x: the NaN a NaN gradient gives (f16), y: the NaN inf + -inf gives (PyTorch's CPU bits, see
    // the header's `indefinite`), z: -inf, w: unused. WGSL cannot spell -inf or NaN as literals,
    // and browsers reject even bitcast constants of them.
    constants: vec4<T>,
}

const NO_INDEX: u32 = 0xffffffffu;
const WORKGROUP_SIZE: u32 = 256u;

// NaN test on the bits, per lane: `x != x` compiles to an ordered compare on some backends and
// `max()` is backend-defined for NaN.
fn is_nan(v: V) -> B {
    return (bitcast<I>(VF(v)) & I(0x7fffffffu)) > I(0x7f800000u);
}

// `is_nan` on four elements, whatever the lane width.
fn is_nan4(v: vec4<T>) -> vec4<bool> {
    return (bitcast<vec4<u32>>(vec4<f32>(v)) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u);
}

// Dispatches above 65,535 workgroups use a 2-D grid of workgroups.
fn invocation_index(workgroup: vec3<u32>, local: u32, workgroups: vec3<u32>) -> u32 {
    return (workgroup.y * workgroups.x + workgroup.x) * WORKGROUP_SIZE + local;
}

// Whether window o on axis a has a real (non-padding) tap.
fn window_has_real_tap(a: Axis, o: u32) -> bool {
    let start = o * a.stride;
    var first = 0u;
    if start < a.padding {
        first = (a.padding - start + a.dilation - 1u) / a.dilation;
    }
    return first < a.kernel && start + first * a.dilation < a.input + a.padding;
}

// Whether input coordinate i (per lane) is one of the taps of window o on axis a.
fn window_contains(a: Axis, o: u32, i: I) -> B {
    let z = i + a.padding;
    let start = o * a.stride;
    // `rel` wraps where z < start; that lane is already false.
    let rel = z - start;
    return (i < I(a.input)) & (z >= I(start)) & (rel % a.dilation == I(0u)) & (rel / a.dilation < I(a.kernel));
}

// `0 + g` as PyTorch's CPU backward computes it: -0.0 becomes +0.0, a NaN gets PyTorch's bits.
fn gradient_term(g: V) -> V {
    return select(select(g, V(0.0), g == V(0.0)), nan_result(g), is_nan(g));
}

fn gradient_term4(g: vec4<T>) -> vec4<T> {
    let nan = (bitcast<vec4<u32>>(vec4<f32>(g)) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u);
    return select(select(g, vec4<T>(0.0), g == vec4<T>(0.0)), nan_result4(g), nan);
}

// The taps [x, y) of window o on axis a to visit: all K of them, or with RANGED_TAPS only those
// on real elements (the same taps in the same order; the loop bodies skip padding either way).
fn real_taps(a: Axis, o: u32) -> vec2<u32> {
    if !RANGED_TAPS {
        return vec2<u32>(0u, a.kernel);
    }
    let start = o * a.stride;
    var first = 0u;
    if start < a.padding {
        first = div_ceil(a.padding - start, a.dilation);
    }
    var end = 0u;
    if start < a.input + a.padding {
        end = min(a.kernel, div_ceil(a.input + a.padding - start, a.dilation));
    }
    return vec2<u32>(first, max(first, end));
}

// ceil(x / d) without overflowing near u32::MAX.
fn div_ceil(x: u32, d: u32) -> u32 {
    return x / d + select(0u, 1u, x % d != 0u);
}

// The first window whose span reaches input coordinate i on axis a (windows span
// [o*s - p, o*s - p + eff)).
fn first_window(a: Axis, i: u32) -> u32 {
    let z = i + a.padding;
    let eff = a.dilation * (a.kernel - 1u) + 1u;
    if z + 1u > eff {
        return (z + 1u - eff + a.stride - 1u) / a.stride;
    }
    return 0u;
}

// The last window whose span starts at or before input coordinate i on axis a.
fn last_window(a: Axis, i: u32) -> u32 {
    return min((i + a.padding) / a.stride, a.output - 1u);
}

// The output windows on axis a whose span contains input coordinate i: [x, y], empty if x > y.
fn candidate_windows(a: Axis, i: u32) -> vec2<u32> {
    return vec2<u32>(first_window(a, i), last_window(a, i));
}

// The first real (non-padding) coordinate of window o's span on axis a: every window has one, and
// the invocation that owns it validates the window's index.
fn anchor(a: Axis, o: u32) -> u32 {
    return max(o * a.stride, a.padding) - a.padding;
}

// Per lane: whether window (od, oh, ow) may hold `index` after a forward pass with this geometry.
fn index_valid(od: u32, oh: u32, ow: u32, index: I) -> B {
    // -1 only where the window holds padding only.
    let padding_only = !(window_has_real_tap(axis_d(), od) && window_has_real_tap(axis_h(), oh) && window_has_real_tap(axis_w(), ow));
    let iw = index % IN_W;
    let ih = (index / IN_W) % IN_H;
    let id = index / (IN_W * IN_H);
    let inside = (index < I(IN_D * IN_H * IN_W)) & window_contains(axis_d(), od, id) & window_contains(axis_h(), oh, ih)
        & window_contains(axis_w(), ow, iw);
    return select(inside, B(padding_only), index == I(NO_INDEX));
}

// An element's gradient from its sum: PyTorch's +0.0 start restored (a compiler that drops the
// +0.0 start would leave a -0.0; PyTorch has +0.0), or the NaN the tracking chose.
fn settle(acc: V, nan: V, has_nan: B) -> V {
    return select(select(acc, V(0.0), acc == V(0.0)), nan, has_nan);
}

// `settle` on four elements, whatever the lane width.
fn settle4(acc: vec4<T>, nan: vec4<T>, has_nan: vec4<bool>) -> vec4<T> {
    return select(select(acc, vec4<T>(0.0), acc == vec4<T>(0.0)), nan, has_nan);
}

// Adds the gradient `g` to the lanes of an element sum that `hit` selects: the sum and NaN rules
// of max_pool_backward.wgsl, four lanes (the row-block and cell gathers).
fn add_hits(acc: ptr<function, vec4<T>>, nan: ptr<function, vec4<T>>, has_nan: ptr<function, vec4<bool>>,
    hit: vec4<bool>, g: vec4<T>) {
    let g_nan = hit & is_nan4(g);
    let sum = *acc + select(vec4<T>(0.0), g, hit & !g_nan);
    let event = !*has_nan & (g_nan | is_nan4(sum));
    *nan = select(*nan, select(vec4<T>(indefinite()), nan_result4(g), g_nan), event);
    *has_nan = *has_nan | event;
    *acc = sum;
}
