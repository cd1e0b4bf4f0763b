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
// shape: divisions by sizes become multiplications and the window loops unroll. (A shape's first
// calls run a generic form of max_pool_forward, _backward or _backward_tiled instead, which reads
// them from `params.geometry`: one pipeline for every shape, compiled once.) Element
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

// True only in the generic forms of max_pool_forward, _backward and _backward_tiled (see
// `generic_shader_source` in src/gpu/kernels.rs), where the geometry above is private variables
// loaded from `params.geometry`: divisions by its sizes then go through the divisors' magic
// numbers in `params.divisors` (`div_mod`), because CPU drivers split a vector division by a
// variable into one division per lane. Specialised pipelines divide by constants, which their
// compilers turn into multiplications themselves.
override GENERIC: bool = false;

// Slots of `params.divisors` (the host's `GENERIC_DIVISORS` lists the same, in this order).
const DIV_LANES: u32 = 0u;
const DIV_IN_W: u32 = 1u;
const DIV_IN_H: u32 = 2u;
const DIV_IN_D: u32 = 3u;
const DIV_OUT_W: u32 = 4u;
const DIV_OUT_H: u32 = 5u;
const DIV_OUT_D: u32 = 6u;
// Then the strides (D, H, W), then the dilations.
const DIV_STRIDE: u32 = 7u;
const DIV_DILATION: u32 = 10u;

// One spatial axis (mirrors `params::Axis`), and its number (D 0, H 1, W 2) for its divisors.
struct Axis {
    input: u32,
    output: u32,
    kernel: u32,
    stride: u32,
    padding: u32,
    dilation: u32,
    number: u32,
}

fn axis_d() -> Axis {
    return Axis(IN_D, OUT_D, K_D, S_D, P_D, DIL_D, 0u);
}
fn axis_h() -> Axis {
    return Axis(IN_H, OUT_H, K_H, S_H, P_H, DIL_H, 1u);
}
fn axis_w() -> Axis {
    return Axis(IN_W, OUT_W, K_W, S_W, P_W, DIL_W, 2u);
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
    // The geometry, for the generic forms (max_pool_forward, _backward, _backward_tiled), in which
    // the geometry constants above are private variables loaded from here (see
    // `generic_shader_source` in src/gpu/kernels.rs). Specialised pipelines ignore it.
    geometry: array<vec4<u32>, 6>,
    // For the generic form: per slot (DIV_*), the magic numbers (m, l) of that divisor in x, y.
    divisors: array<vec4<u32>, 13>,
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

// The high 32 bits of a * b.
fn mulhi(a: u32, b: u32) -> u32 {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let mid = ((a0 * b0) >> 16u) + ((a1 * b0) & 0xffffu) + ((a0 * b1) & 0xffffu);
    return a1 * b1 + ((a1 * b0) >> 16u) + ((a0 * b1) >> 16u) + (mid >> 16u);
}

// `mulhi` per lane.
fn mulhi_lanes(a: I, b: u32) -> I {
    let a0 = a & I(0xffffu);
    let a1 = a >> I(16u);
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let mid = ((a0 * b0) >> I(16u)) + ((a1 * b0) & I(0xffffu)) + ((a0 * b1) & I(0xffffu));
    return a1 * b1 + ((a1 * b0) >> I(16u)) + ((a0 * b1) >> I(16u)) + (mid >> I(16u));
}

// x / d from d's magic numbers (m, l) (Granlund and Montgomery: l = ceil(log2 d),
// m = floor(2^32 (2^l - d) / d) + 1), exact for every u32 x. Mirrors `kernels::magic_div`.
fn magic_div(x: u32, magic: vec4<u32>) -> u32 {
    let t = mulhi(x, magic.x);
    let s = min(magic.y, 1u);
    return (t + ((x - t) >> s)) >> (magic.y - s);
}

// `magic_div` per lane.
fn magic_div_lanes(x: I, magic: vec4<u32>) -> I {
    let t = mulhi_lanes(x, magic.x);
    let s = min(magic.y, 1u);
    return (t + ((x - t) >> I(s))) >> I(magic.y - s);
}

// (x / d, x % d) for the geometry size d in divisor slot `slot`: by the constant in a specialised
// pipeline, through the slot's magic numbers in the generic one.
fn div_mod(x: u32, d: u32, slot: u32) -> vec2<u32> {
    if GENERIC {
        let q = magic_div(x, params.divisors[slot]);
        return vec2<u32>(q, x - q * d);
    }
    return vec2<u32>(x / d, x % d);
}

// `div_mod` per lane.
struct LanesDivMod {
    q: I,
    r: I,
}

fn div_mod_lanes(x: I, d: u32, slot: u32) -> LanesDivMod {
    if GENERIC {
        let q = magic_div_lanes(x, params.divisors[slot]);
        return LanesDivMod(q, x - q * d);
    }
    return LanesDivMod(x / d, x % d);
}

// Element t of a tensor of groups × D × H × W positions × LANES lanes, on the input's sizes
// (`output` false) or the output's: its lane, w, h, d and group. (Divisions: see `div_mod`.)
struct Element {
    lane: u32,
    w: u32,
    h: u32,
    d: u32,
    group: u32,
}

fn split_element(t: u32, output: bool) -> Element {
    // The W, H and D divisor slots follow one another, the output's after the input's.
    let slot = select(DIV_IN_W, DIV_OUT_W, output);
    let by_lane = div_mod(t, LANES, DIV_LANES);
    let by_w = div_mod(by_lane.x, select(IN_W, OUT_W, output), slot);
    let by_h = div_mod(by_w.x, select(IN_H, OUT_H, output), slot + 1u);
    let by_d = div_mod(by_h.x, select(IN_D, OUT_D, output), slot + 2u);
    return Element(by_lane.y, by_w.y, by_h.y, by_d.y, by_d.x);
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
    let rel = div_mod_lanes(z - start, a.dilation, DIV_DILATION + a.number);
    return (i < I(a.input)) & (z >= I(start)) & (rel.r == I(0u)) & (rel.q < I(a.kernel));
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

// Fixed cover, for the row-block and cell gathers (the host sets it where dilation is 1 on H and
// W and the strides divide the block's rows and columns): every block starts at the same phase
// against the windows, so which of its elements each of its windows can cover is known when the
// pipeline is compiled, and the plain pass tests only those pairs (case B, 3×3/2: 18 of the 48
// that a row block of 2 × 4 elements and its 6 windows make; 9 of the 16 of a 2 × 2 cell and its
// 4). The same windows in the same order per element, so the same sums.
override FIXED_COVER: bool = false;

// On axis a of a fixed-cover block (dilation 1, the block's first element at a multiple of the
// stride s): where the first window that reaches the block starts, relative to the block's first
// element. With φ = padding mod s, that window is c = ceil((φ − k + 1) / s) windows after the one
// the block's first element would start, so it starts c·s − φ from it.
fn fixed_first_start(a: Axis) -> i32 {
    let s = i32(a.stride);
    let phi = i32(a.padding % a.stride);
    let n = phi - i32(a.kernel) + 1;
    let c = select(-((-n) / s), (n + s - 1) / s, n > 0);
    return c * s - phi;
}

// Whether the block's j-th window on axis a covers the block's element e on it (all constants
// once the loops are unrolled: the driver folds it).
fn fixed_covers(a: Axis, j: u32, e: u32) -> bool {
    let start = fixed_first_start(a) + i32(j * a.stride);
    return start <= i32(e) && i32(e) < start + i32(a.kernel);
}

// Whether the block's j-th window on axis a reaches one of the block's `size` elements there (a
// constant once the loops are unrolled). The window counts BLOCK_WINDOWS_* and CELL_WINDOWS_*
// hold for every phase, so at some phases the last one lies past the block (k2 s2: a 2 × 2 cell
// meets one window, not the four the counts allow): its index and gradient are not loaded.
fn fixed_reaches(a: Axis, j: u32, size: u32) -> bool {
    let start = fixed_first_start(a) + i32(j * a.stride);
    return start < i32(size) && start + i32(a.kernel) > 0;
}

// Whether a fixed-cover block whose first element is at coordinate i on axis a anchors its j-th
// window there (see `anchor`), without computing the anchor: the window's start relative to the
// block, r, is known when the pipeline is compiled. At r ≥ 0 the anchor is the start itself,
// which must fall on one of the block's real elements (`last`: its last real one, relative);
// before the block, the anchor is either coordinate 0 (a window starting in the padding), which
// is the block at i = 0's, or an element of an earlier block.
fn fixed_anchors(a: Axis, i: u32, j: u32, last: u32) -> bool {
    let r = fixed_first_start(a) + i32(j * a.stride);
    return select(i == 0u, u32(r) <= last, r >= 0);
}

// `index_valid` for the fixed-cover blocks (dilation 1 on H and W) where D has dilation 1 too.
// With dilation 1 on every axis and padding ≤ kernel / 2 every window has a real tap, so −1 is
// never valid, and coordinate x is one of window o's taps when x + p − o·s < k (u32, wrapping),
// one comparison per axis.
fn fixed_index_valid(od: u32, oh: u32, ow: u32, index: I) -> B {
    if DIL_D != 1u {
        return index_valid(od, oh, ow, index);
    }
    let iw = index % IN_W;
    let rows = index / IN_W;
    let ih = rows % IN_H;
    let id = rows / IN_H;
    let w = iw + I(P_W - ow * S_W) < I(K_W);
    let h = ih + I(P_H - oh * S_H) < I(K_H);
    let d = id + I(P_D - od * S_D) < I(K_D);
    return (index < I(IN_D * IN_H * IN_W)) & w & h & d;
}

// The j-th window on axis a of a fixed-cover block whose first element is at coordinate i,
// numbered from the first that reaches the block without clamping: its index, and 1 if it exists
// (from the first output to the last), else 0.
fn fixed_window(a: Axis, i: u32, j: u32) -> vec2<u32> {
    // The window's start plus the padding: o · stride, negative before the first window.
    let z = i32(i + a.padding) + fixed_first_start(a) + i32(j * a.stride);
    let o = u32(max(z, 0)) / a.stride;
    return vec2<u32>(o, select(0u, 1u, z >= 0 && o < a.output));
}

// The first window whose span reaches input coordinate i on axis a (windows span
// [o*s - p, o*s - p + eff)).
fn first_window(a: Axis, i: u32) -> u32 {
    let z = i + a.padding;
    let eff = a.dilation * (a.kernel - 1u) + 1u;
    if z + 1u > eff {
        return div_mod(z + 1u - eff + a.stride - 1u, a.stride, DIV_STRIDE + a.number).x;
    }
    return 0u;
}

// The last window whose span starts at or before input coordinate i on axis a.
fn last_window(a: Axis, i: u32) -> u32 {
    return min(div_mod(i + a.padding, a.stride, DIV_STRIDE + a.number).x, a.output - 1u);
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
    var iw: I;
    var ih: I;
    var id: I;
    if GENERIC {
        let w = div_mod_lanes(index, IN_W, DIV_IN_W);
        let h = div_mod_lanes(w.q, IN_H, DIV_IN_H);
        iw = w.r;
        ih = h.r;
        id = h.q;
    } else {
        iw = index % IN_W;
        ih = (index / IN_W) % IN_H;
        id = index / (IN_W * IN_H);
    }
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
