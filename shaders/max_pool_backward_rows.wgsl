// Max-pool backward (gather) on row blocks, for channels-first tensors whose width is divisible
// by 4: one invocation computes four adjacent elements of BLOCK_ROWS adjacent grad_input rows and
// stores each row's four with one 16-byte write. It visits each window that reaches the block
// once — loading its index and gradient once for all the block's elements — instead of once per
// element, which is what makes the general gather slow when windows overlap. Two rows (the
// default where the input has them) share their windows' rows: case B (3×3/2) visits 6 windows
// for 8 elements, against 3 for the even rows' 4 and 6 for the odd rows' 4 with one row. Per
// element it is exactly the computation of max_pool_backward.wgsl: the same windows in the same
// order, the same sums, NaN bits and anchor validation (plain sums first, NaN bits in a second
// pass where a NaN turned up).
// CPU mirror: src/cpu/max_pool_backward_rows.rs.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<T>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read_write> grad_input: array<vec4<T>>;
// [params.bases.w]: the number of invalid indices seen (the host clears it before the pass).
@group(0) @binding(4) var<storage, read_write> invalid_count: array<atomic<u32>>;

// The most windows along W that reach a block of four elements.
override BLOCK_WINDOWS_W: u32 = (3u + DIL_W * (K_W - 1u)) / S_W + 1u;
// Rows of a block (1 or 2, the host's choice), blocks of rows of a slice (the last one may reach
// past the input: its rows there are neither summed nor stored), and the most windows along H
// that reach a block's rows.
override BLOCK_ROWS: u32 = 1u;
override ROW_BLOCKS: u32 = (IN_H + BLOCK_ROWS - 1u) / BLOCK_ROWS;
override BLOCK_WINDOWS_H: u32 = (BLOCK_ROWS - 1u + DIL_H * (K_H - 1u)) / S_H + 1u;

// The sums of a block's two rows (per element: see max_pool_backward.wgsl's `Gathered`).
struct BlockSums {
    acc0: vec4<T>,
    nan0: vec4<T>,
    has_nan0: vec4<bool>,
    acc1: vec4<T>,
    nan1: vec4<T>,
    has_nan1: vec4<bool>,
    invalid: u32,
}

// A block: its first element's plane position per lane, whether row 1 is real, its corner and
// last real row, and its windows.
struct Block {
    pos: vec4<u32>,
    second: vec4<bool>,
    output_base: u32,
    id: u32,
    ih: u32,
    ih_last: u32,
    iw: u32,
    d: vec2<u32>,
    h: vec2<u32>,
    w: vec2<u32>,
}

// The block's windows in output order, each loaded once for all its elements. `exact` and
// `validate` as in max_pool_backward.wgsl's `gather` (validation: of the windows the block
// anchors; the plain pass sets `has_nan0.x` where any of the block's windows has a NaN gradient).
fn block_sums(exact: bool, validate: bool, b: Block) -> BlockSums {
    // Separate variables: pointer arguments must name whole variables.
    var acc0 = vec4<T>(0.0);
    var nan0 = vec4<T>(0.0);
    var has_nan0 = vec4<bool>(false);
    var acc1 = vec4<T>(0.0);
    var nan1 = vec4<T>(0.0);
    var has_nan1 = vec4<bool>(false);
    var invalid = 0u;
    for (var jd = 0u; jd < CAND_D; jd++) {
        let od = b.d.x + jd;
        if od > b.d.y {
            break;
        }
        for (var jh = 0u; jh < BLOCK_WINDOWS_H; jh++) {
            let oh = b.h.x + jh;
            if oh > b.h.y {
                break;
            }
            for (var jw = 0u; jw < BLOCK_WINDOWS_W; jw++) {
                let ow = b.w.x + jw;
                if ow > b.w.y {
                    break;
                }
                let o = b.output_base + (od * OUT_H + oh) * OUT_W + ow;
                let index = indices[params.bases.z + o];
                // A lane takes this window only if its element is in the window's span, which
                // the equality implies for valid indices (invalid ones are counted below).
                let hit0 = vec4<u32>(index) == b.pos;
                let hit1 = (vec4<u32>(index) == b.pos + vec4<u32>(IN_W)) & b.second;
                if !exact {
                    // The plain pass loads every window's gradient with its index, without a
                    // branch: the two loads go out together instead of one after the other.
                    let g = grad_output[params.bases.x + o];
                    acc0 = acc0 + select(vec4<T>(0.0), vec4<T>(g), hit0);
                    acc1 = acc1 + select(vec4<T>(0.0), vec4<T>(g), hit1);
                    // One flag for the block, hit or not: any NaN gradient among its windows
                    // sends it to the second pass (one test per window, not sixteen operations;
                    // `is_nan` of the scalar: this kernel is built at lane width 1, V = T).
                    has_nan0.x = has_nan0.x | is_nan(g);
                } else if any(hit0 | hit1) {
                    let g = vec4<T>(grad_output[params.bases.x + o]);
                    add_hits(&acc0, &nan0, &has_nan0, hit0, g);
                    add_hits(&acc1, &nan1, &has_nan1, hit1, g);
                }
                if validate {
                    let a = anchor(axis_w(), ow);
                    let a_h = anchor(axis_h(), oh);
                    if a >= b.iw && a < b.iw + 4u && a_h >= b.ih && a_h <= b.ih_last && b.id == anchor(axis_d(), od) {
                        invalid += select(1u, 0u, index_valid(od, oh, ow, index));
                    }
                }
            }
        }
    }
    return BlockSums(acc0, nan0, has_nan0, acc1, nan1, has_nan1, invalid);
}

// The plain pass (with validation) of a fixed-cover block: `block_sums(false, true, b)`, testing
// only the element-window pairs that can meet (one statement per element: a vector with
// constant-false lanes would still add in them). Windows are numbered from the block's first
// reaching one on each axis without clamping; those before the first or after the last output
// are skipped.
fn block_sums_fixed(b: Block) -> BlockSums {
    var acc0 = vec4<T>(0.0);
    var acc1 = vec4<T>(0.0);
    var has_nan = false;
    var invalid = 0u;
    // Row 1 takes part only where it is real.
    let pos1 = b.pos + vec4<u32>(IN_W);
    let second = b.second.x;
    for (var jd = 0u; jd < CAND_D; jd++) {
        let od = b.d.x + jd;
        if od > b.d.y {
            break;
        }
        // (No `continue` in these loops: loops without one are unrolled, which the fixed tests
        // need.)
        for (var jh = 0u; jh < BLOCK_WINDOWS_H; jh++) {
            let wh = fixed_window(axis_h(), b.ih, jh);
            let oh = wh.x;
            // Rows 0 and 1 of the block in this window.
            let h0 = fixed_covers(axis_h(), jh, 0u);
            let h1 = BLOCK_ROWS > 1u && fixed_covers(axis_h(), jh, 1u);
            // Whether the block anchors this row of windows (and this slice: `anchor` on D).
            let anchors_dh = fixed_anchors(axis_h(), b.ih, jh, b.ih_last - b.ih) && b.id == anchor(axis_d(), od);
            for (var jw = 0u; jw < BLOCK_WINDOWS_W; jw++) {
                let ww = fixed_window(axis_w(), b.iw, jw);
                let ow = ww.x;
                let reaches = fixed_reaches(axis_h(), jh, BLOCK_ROWS) && fixed_reaches(axis_w(), jw, 4u);
                if reaches && wh.y == 1u && ww.y == 1u {
                    let o = b.output_base + (od * OUT_H + oh) * OUT_W + ow;
                    let index = indices[params.bases.z + o];
                    let g = grad_output[params.bases.x + o];
                    has_nan = has_nan | is_nan(g);
                    // Columns 0..3 of the block in this window; each pair tested only if both.
                    let w0 = fixed_covers(axis_w(), jw, 0u);
                    let w1 = fixed_covers(axis_w(), jw, 1u);
                    let w2 = fixed_covers(axis_w(), jw, 2u);
                    let w3 = fixed_covers(axis_w(), jw, 3u);
                    if h0 && w0 {
                        acc0.x = acc0.x + select(T(0.0), g, index == b.pos.x);
                    }
                    if h0 && w1 {
                        acc0.y = acc0.y + select(T(0.0), g, index == b.pos.y);
                    }
                    if h0 && w2 {
                        acc0.z = acc0.z + select(T(0.0), g, index == b.pos.z);
                    }
                    if h0 && w3 {
                        acc0.w = acc0.w + select(T(0.0), g, index == b.pos.w);
                    }
                    if h1 && w0 {
                        acc1.x = acc1.x + select(T(0.0), g, index == pos1.x && second);
                    }
                    if h1 && w1 {
                        acc1.y = acc1.y + select(T(0.0), g, index == pos1.y && second);
                    }
                    if h1 && w2 {
                        acc1.z = acc1.z + select(T(0.0), g, index == pos1.z && second);
                    }
                    if h1 && w3 {
                        acc1.w = acc1.w + select(T(0.0), g, index == pos1.w && second);
                    }
                    if anchors_dh && fixed_anchors(axis_w(), b.iw, jw, 3u) {
                        invalid += select(1u, 0u, fixed_index_valid(od, oh, ow, index));
                    }
                }
            }
        }
    }
    let no = vec4<T>(0.0);
    return BlockSums(acc0, no, vec4<bool>(has_nan, false, false, false), acc1, no, vec4<bool>(false), invalid);
}

@compute @workgroup_size(256)
fn max_pool_backward_rows(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(num_workgroups) workgroups: vec3<u32>,
) {
    let t = invocation_index(workgroup, local, workgroups);
    if t >= params.counts.y {
        return;
    }
    let blocks = IN_W / 4u;
    let iw = (t % blocks) * 4u;
    var q = t / blocks;
    let ih = (q % ROW_BLOCKS) * BLOCK_ROWS;
    q = q / ROW_BLOCKS;
    let id = q % IN_D;
    let group = q / IN_D;
    // The block's last real row.
    let ih_last = min(ih + BLOCK_ROWS - 1u, IN_H - 1u);
    let b = Block(
        vec4<u32>((id * IN_H + ih) * IN_W + iw) + vec4<u32>(0u, 1u, 2u, 3u),
        // Row 1 takes nothing when the block has one row (or its second lies past the input).
        vec4<bool>(ih_last > ih),
        group * (OUT_D * OUT_H * OUT_W),
        id,
        ih,
        ih_last,
        iw,
        vec2<u32>(first_window(axis_d(), id), last_window(axis_d(), id)),
        vec2<u32>(first_window(axis_h(), ih), last_window(axis_h(), ih_last)),
        vec2<u32>(first_window(axis_w(), iw), last_window(axis_w(), iw + 3u)),
    );
    var r: BlockSums;
    if FIXED_COVER && !SINGLE_PASS {
        r = block_sums_fixed(b);
    } else {
        r = block_sums(SINGLE_PASS, true, b);
    }
    if r.invalid != 0u {
        atomicAdd(&invalid_count[params.bases.w], r.invalid);
    }
    if !SINGLE_PASS && any(r.has_nan0 | r.has_nan1 | is_nan4(r.acc0) | is_nan4(r.acc1)) {
        // (The second pass does not count: the first one has.)
        r = block_sums(true, false, b);
    }
    let item = ((group * IN_D + id) * IN_H + ih) * blocks + iw / 4u;
    grad_input[params.bases.y + item] = settle4(r.acc0, r.nan0, r.has_nan0);
    if ih_last > ih {
        grad_input[params.bases.y + item + blocks] = settle4(r.acc1, r.nan1, r.has_nan1);
    }
}
