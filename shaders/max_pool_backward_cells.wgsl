// Max-pool backward (gather) on cells of up to 2×2 adjacent positions, for channels-last tensors
// with a multiple of 4 channels (compiled at lane width 4): one invocation computes four adjacent
// channels at every position of its cell, visiting each window that reaches the cell once —
// loading its indices and gradients once for all the cell's positions — instead of once per
// position. The positions of a cell share their windows: case B (3×3/2) visits 4 windows for a
// cell of 4 positions, against 9 for the same positions one by one. Per element it is exactly the
// computation of max_pool_backward.wgsl: the same windows in the same order, the same sums, NaN
// bits and anchor validation (plain sums first, NaN bits in a second pass where a NaN turned up).
// CPU mirror: src/cpu/max_pool_backward_cells.rs.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad_output: array<V>;
@group(0) @binding(2) var<storage, read> indices: array<I>;
@group(0) @binding(3) var<storage, read_write> grad_input: array<V>;
// [params.bases.w]: the number of invalid indices seen (the host clears it before the pass).
@group(0) @binding(4) var<storage, read_write> invalid_count: array<atomic<u32>>;

// Rows and columns of a cell (the host's choice: 2 each where the input has them), cells of a
// slice (the last ones may reach past the input: their positions there are neither summed nor
// stored), and the most windows that reach a cell on H and W.
override CELL_H: u32 = 1u;
override CELL_W: u32 = 1u;
override CELLS_H: u32 = (IN_H + CELL_H - 1u) / CELL_H;
override CELLS_W: u32 = (IN_W + CELL_W - 1u) / CELL_W;
override CELL_WINDOWS_H: u32 = (CELL_H - 1u + DIL_H * (K_H - 1u)) / S_H + 1u;
override CELL_WINDOWS_W: u32 = (CELL_W - 1u + DIL_W * (K_W - 1u)) / S_W + 1u;

// The sums of a cell's positions (per element: see max_pool_backward.wgsl's `Gathered`).
struct CellSums {
    acc00: V,
    nan00: V,
    has_nan00: B,
    acc01: V,
    nan01: V,
    has_nan01: B,
    acc10: V,
    nan10: V,
    has_nan10: B,
    acc11: V,
    nan11: V,
    has_nan11: B,
    invalid: u32,
}

// A cell: its first position in the plane, which of its other positions are real, where its
// lane's gradients and indices start, its corner and last real row and column, and its windows.
struct Cell {
    p00: u32,
    column1: bool,
    row1: bool,
    output_base: u32,
    index_base: u32,
    id: u32,
    ih: u32,
    ih_last: u32,
    iw: u32,
    iw_last: u32,
    d: vec2<u32>,
    h: vec2<u32>,
    w: vec2<u32>,
}

// The cell's windows in output order, each loaded once for all its positions. `exact` and
// `validate` as in max_pool_backward.wgsl's `gather` (validation: of the windows the cell
// anchors; the plain pass sets `has_nan00` for the whole cell where any of its windows has a NaN
// gradient).
fn cell_sums(exact: bool, validate: bool, c: Cell) -> CellSums {
    // Separate variables: pointer arguments must name whole variables.
    var acc00 = V(0.0);
    var nan00 = V(0.0);
    var has_nan00 = B(false);
    var acc01 = V(0.0);
    var nan01 = V(0.0);
    var has_nan01 = B(false);
    var acc10 = V(0.0);
    var nan10 = V(0.0);
    var has_nan10 = B(false);
    var acc11 = V(0.0);
    var nan11 = V(0.0);
    var has_nan11 = B(false);
    var invalid = 0u;
    for (var jd = 0u; jd < CAND_D; jd++) {
        let od = c.d.x + jd;
        if od > c.d.y {
            break;
        }
        for (var jh = 0u; jh < CELL_WINDOWS_H; jh++) {
            let oh = c.h.x + jh;
            if oh > c.h.y {
                break;
            }
            for (var jw = 0u; jw < CELL_WINDOWS_W; jw++) {
                let ow = c.w.x + jw;
                if ow > c.w.y {
                    break;
                }
                let o = ((od * OUT_H + oh) * OUT_W + ow) * LANES;
                let index = indices[c.index_base + o];
                // A lane takes this window only if its element is in the window's span, which
                // the equality implies for valid indices (invalid ones are counted below).
                let hit00 = index == I(c.p00);
                let hit01 = (index == I(c.p00 + 1u)) & B(c.column1);
                let hit10 = (index == I(c.p00 + IN_W)) & B(c.row1);
                let hit11 = (index == I(c.p00 + IN_W + 1u)) & B(c.column1 && c.row1);
                if !exact {
                    // The plain pass loads every window's gradient with its index, without a
                    // branch: the two loads go out together instead of one after the other.
                    let g = grad_output[c.output_base + o];
                    acc00 = acc00 + select(V(0.0), g, hit00);
                    acc01 = acc01 + select(V(0.0), g, hit01);
                    acc10 = acc10 + select(V(0.0), g, hit10);
                    acc11 = acc11 + select(V(0.0), g, hit11);
                    // One flag for the cell will do, hit or not: any NaN gradient among its
                    // windows sends it to the second pass.
                    has_nan00 = has_nan00 | is_nan(g);
                } else if any(hit00 | hit01 | hit10 | hit11) {
                    let g = grad_output[c.output_base + o];
                    add_hits(&acc00, &nan00, &has_nan00, hit00, g);
                    add_hits(&acc01, &nan01, &has_nan01, hit01, g);
                    add_hits(&acc10, &nan10, &has_nan10, hit10, g);
                    add_hits(&acc11, &nan11, &has_nan11, hit11, g);
                }
                if validate {
                    let a_w = anchor(axis_w(), ow);
                    let a_h = anchor(axis_h(), oh);
                    if a_w >= c.iw && a_w <= c.iw_last && a_h >= c.ih && a_h <= c.ih_last && c.id == anchor(axis_d(), od) {
                        invalid += count_false(index_valid(od, oh, ow, index));
                    }
                }
            }
        }
    }
    return CellSums(
        acc00, nan00, has_nan00, acc01, nan01, has_nan01, acc10, nan10, has_nan10, acc11, nan11, has_nan11, invalid,
    );
}

// The plain pass (with validation) of a fixed-cover cell (see `FIXED_COVER` in common.wgsl):
// `cell_sums(false, true, c)`, testing only the position-window pairs that can meet. Windows are
// numbered from the cell's first reaching one on each axis without clamping; those before the
// first or after the last output are skipped (no `continue`: loops without one are unrolled,
// which the fixed tests need).
fn cell_sums_fixed(c: Cell) -> CellSums {
    var acc00 = V(0.0);
    var acc01 = V(0.0);
    var acc10 = V(0.0);
    var acc11 = V(0.0);
    var has_nan = B(false);
    var invalid = 0u;
    for (var jd = 0u; jd < CAND_D; jd++) {
        let od = c.d.x + jd;
        if od > c.d.y {
            break;
        }
        for (var jh = 0u; jh < CELL_WINDOWS_H; jh++) {
            let wh = fixed_window(axis_h(), c.ih, jh);
            let oh = wh.x;
            let h0 = fixed_covers(axis_h(), jh, 0u);
            let h1 = CELL_H > 1u && fixed_covers(axis_h(), jh, 1u);
            // Whether the cell anchors this row of windows (and this slice: `anchor` on D).
            let anchors_dh = fixed_anchors(axis_h(), c.ih, jh, c.ih_last - c.ih) && c.id == anchor(axis_d(), od);
            for (var jw = 0u; jw < CELL_WINDOWS_W; jw++) {
                let ww = fixed_window(axis_w(), c.iw, jw);
                let ow = ww.x;
                let reaches = fixed_reaches(axis_h(), jh, CELL_H) && fixed_reaches(axis_w(), jw, CELL_W);
                if reaches && wh.y == 1u && ww.y == 1u {
                    let w0 = fixed_covers(axis_w(), jw, 0u);
                    let w1 = CELL_W > 1u && fixed_covers(axis_w(), jw, 1u);
                    let o = ((od * OUT_H + oh) * OUT_W + ow) * LANES;
                    let index = indices[c.index_base + o];
                    let g = grad_output[c.output_base + o];
                    has_nan = has_nan | is_nan(g);
                    if h0 && w0 {
                        acc00 = acc00 + select(V(0.0), g, index == I(c.p00));
                    }
                    if h0 && w1 {
                        acc01 = acc01 + select(V(0.0), g, (index == I(c.p00 + 1u)) & B(c.column1));
                    }
                    if h1 && w0 {
                        acc10 = acc10 + select(V(0.0), g, (index == I(c.p00 + IN_W)) & B(c.row1));
                    }
                    if h1 && w1 {
                        let hit11 = (index == I(c.p00 + IN_W + 1u)) & B(c.column1 && c.row1);
                        acc11 = acc11 + select(V(0.0), g, hit11);
                    }
                    if anchors_dh && fixed_anchors(axis_w(), c.iw, jw, c.iw_last - c.iw) {
                        invalid += count_false(fixed_index_valid(od, oh, ow, index));
                    }
                }
            }
        }
    }
    let no = V(0.0);
    let clear = B(false);
    return CellSums(acc00, no, has_nan, acc01, no, clear, acc10, no, clear, acc11, no, clear, invalid);
}

@compute @workgroup_size(256)
fn max_pool_backward_cells(
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
    let iw = (q % CELLS_W) * CELL_W;
    q = q / CELLS_W;
    let ih = (q % CELLS_H) * CELL_H;
    q = q / CELLS_H;
    let id = q % IN_D;
    let group = q / IN_D;
    // The cell's last real row and column, and which of its positions are real.
    let ih_last = min(ih + CELL_H - 1u, IN_H - 1u);
    let iw_last = min(iw + CELL_W - 1u, IN_W - 1u);
    let column1 = iw_last > iw;
    let row1 = ih_last > ih;
    // Plane positions of the cell: (ih, iw), (ih, iw + 1), (ih + 1, iw), (ih + 1, iw + 1).
    let p00 = (id * IN_H + ih) * IN_W + iw;
    let c = Cell(
        p00,
        column1,
        row1,
        params.bases.x + group * (OUT_D * OUT_H * OUT_W) * LANES + lane,
        params.bases.z + group * (OUT_D * OUT_H * OUT_W) * LANES + lane,
        id,
        ih,
        ih_last,
        iw,
        iw_last,
        candidate_windows(axis_d(), id),
        vec2<u32>(first_window(axis_h(), ih), last_window(axis_h(), ih_last)),
        vec2<u32>(first_window(axis_w(), iw), last_window(axis_w(), iw_last)),
    );
    var r: CellSums;
    if FIXED_COVER && !SINGLE_PASS {
        r = cell_sums_fixed(c);
    } else {
        r = cell_sums(SINGLE_PASS, true, c);
    }
    if r.invalid != 0u {
        atomicAdd(&invalid_count[params.bases.w], r.invalid);
    }
    if !SINGLE_PASS && any(r.has_nan00 | is_nan(r.acc00) | is_nan(r.acc01) | is_nan(r.acc10) | is_nan(r.acc11)) {
        // (The second pass does not count: the first one has.)
        r = cell_sums(true, false, c);
    }
    // Element (position p, lane) of the group: (group · plane + p) · LANES + lane.
    let out = params.bases.y + (group * (IN_D * IN_H * IN_W) + p00) * LANES + lane;
    grad_input[out] = settle(r.acc00, r.nan00, r.has_nan00);
    if column1 {
        grad_input[out + LANES] = settle(r.acc01, r.nan01, r.has_nan01);
    }
    if row1 {
        grad_input[out + IN_W * LANES] = settle(r.acc10, r.nan10, r.has_nan10);
    }
    if column1 && row1 {
        grad_input[out + (IN_W + 1u) * LANES] = settle(r.acc11, r.nan11, r.has_nan11);
    }
}
