// Max-pool backward (gather) on cells of up to 2×2 adjacent positions, for channels-last tensors
// with a multiple of 4 channels (compiled at lane width 4): one invocation computes four adjacent
// channels at every position of its cell, visiting each window that reaches the cell once —
// loading its indices and gradients once for all the cell's positions — instead of once per
// position. The positions of a cell share their windows: case B (3×3/2) visits 4 windows for a
// cell of 4 positions, against 9 for the same positions one by one. Per element it is exactly the
// computation of max_pool_backward.wgsl: the same windows in the same order, the same sums, NaN
// bits and anchor validation.
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

// One element sum per lane, PyTorch's +0.0 start restored, or its NaN.
fn result(acc: V, nan: V, has_nan: B) -> V {
    // A compiler that drops the +0.0 start would leave a -0.0 here; PyTorch has +0.0.
    return select(select(acc, V(0.0), acc == V(0.0)), nan, has_nan);
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
    let output_base = params.bases.x + group * (OUT_D * OUT_H * OUT_W) * LANES + lane;
    let index_base = params.bases.z + group * (OUT_D * OUT_H * OUT_W) * LANES + lane;

    let wd = candidate_windows(axis_d(), id);
    let h_lo = first_window(axis_h(), ih);
    let h_hi = last_window(axis_h(), ih_last);
    let w_lo = first_window(axis_w(), iw);
    let w_hi = last_window(axis_w(), iw_last);
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
        let od = wd.x + jd;
        if od > wd.y {
            break;
        }
        for (var jh = 0u; jh < CELL_WINDOWS_H; jh++) {
            let oh = h_lo + jh;
            if oh > h_hi {
                break;
            }
            for (var jw = 0u; jw < CELL_WINDOWS_W; jw++) {
                let ow = w_lo + jw;
                if ow > w_hi {
                    break;
                }
                let o = ((od * OUT_H + oh) * OUT_W + ow) * LANES;
                let index = indices[index_base + o];
                // A lane takes this window only if its element is in the window's span, which
                // the equality implies for valid indices (invalid ones are counted below).
                let hit00 = index == I(p00);
                let hit01 = (index == I(p00 + 1u)) & B(column1);
                let hit10 = (index == I(p00 + IN_W)) & B(row1);
                let hit11 = (index == I(p00 + IN_W + 1u)) & B(column1 && row1);
                if any(hit00 | hit01 | hit10 | hit11) {
                    let g = grad_output[output_base + o];
                    add_hits(&acc00, &nan00, &has_nan00, hit00, g);
                    add_hits(&acc01, &nan01, &has_nan01, hit01, g);
                    add_hits(&acc10, &nan10, &has_nan10, hit10, g);
                    add_hits(&acc11, &nan11, &has_nan11, hit11, g);
                }
                let a_w = anchor(axis_w(), ow);
                let a_h = anchor(axis_h(), oh);
                if a_w >= iw && a_w <= iw_last && a_h >= ih && a_h <= ih_last && id == anchor(axis_d(), od) {
                    invalid += count_false(index_valid(od, oh, ow, index));
                }
            }
        }
    }
    if invalid != 0u {
        atomicAdd(&invalid_count[params.bases.w], invalid);
    }
    // Element (position p, lane) of the group: (group · plane + p) · LANES + lane.
    let out = params.bases.y + (group * (IN_D * IN_H * IN_W) + p00) * LANES + lane;
    grad_input[out] = result(acc00, nan00, has_nan00);
    if column1 {
        grad_input[out + LANES] = result(acc01, nan01, has_nan01);
    }
    if row1 {
        grad_input[out + IN_W * LANES] = result(acc10, nan10, has_nan10);
    }
    if column1 && row1 {
        grad_input[out + (IN_W + 1u) * LANES] = result(acc11, nan11, has_nan11);
    }
}
