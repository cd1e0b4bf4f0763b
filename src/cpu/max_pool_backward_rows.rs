//! CPU mirror of `shaders/max_pool_backward_rows.wgsl`: the gather on blocks of four adjacent
//! elements of one or two adjacent grad_input rows (`BLOCK_ROWS`; two, [`gather_block_rows`], by
//! default; channels-first, width divisible by 4). Each window reaching the block is visited once,
//! in output order, for all its elements; per element it is the computation of
//! `max_pool_backward.rs`. (The shader sums plainly first and tracks NaN bits in a second pass
//! where a NaN turned up; the CPU, whose additions follow IEEE rules, tracks them in its one pass:
//! the bits are the same.)

use super::max_pool_backward::{GradientSum, anchor, candidate_windows, index_valid};
use crate::element::Element;
use crate::params::Geometry;

/// Whether the row-block gather applies: one lane (channels-first) and a width divisible by 4.
pub fn gather_rows_eligible(g: &Geometry) -> bool {
    g.groups_and_lanes().1 == 1 && g.axes[2].input.is_multiple_of(4)
}

/// The most rows a block may have (`BLOCK_ROWS` in the shader), and the default: two where the
/// input has two rows or more. One row is the other choice.
pub fn gather_block_rows(g: &Geometry) -> usize {
    g.axes[1].input.min(2)
}

/// Whether blocks of `rows` × `columns` elements (row blocks: four columns; cells: see
/// `cell_size`) meet the windows at one phase, so that the shaders may fix at compile time which
/// elements each window can cover (`FIXED_COVER` in common.wgsl): dilation 1 on H and W, S_H
/// dividing `rows` and S_W dividing `columns`, and windows of at most
/// [`RANGED_TAPS_ABOVE`](crate::gpu::kernels::RANGED_TAPS_ABOVE) taps on H and W (the fixed
/// loops run over every window that may reach a block, and their `i32` window starts must not
/// wrap). The sums are the same either way; the CPU mirrors test every pair.
pub fn fixed_cover_applies(g: &Geometry, rows: usize, columns: usize) -> bool {
    let [_, h, w] = g.axes;
    let small = |a: &crate::params::Axis| a.kernel <= crate::gpu::kernels::RANGED_TAPS_ABOVE;
    h.dilation == 1
        && w.dilation == 1
        && small(&h)
        && small(&w)
        && rows.is_multiple_of(h.stride)
        && columns.is_multiple_of(w.stride)
}

/// Invocations for `groups` planes in blocks of `rows` rows (blocks of rows of every D slice, four
/// columns wide).
pub fn gather_rows_invocations(g: &Geometry, groups: usize, rows: usize) -> usize {
    let [ad, ah, aw] = g.axes;
    groups * ad.input * ah.input.div_ceil(rows) * (aw.input / 4)
}

/// One block of `rows` rows (1 or 2): writes its elements and returns the number of invalid
/// indices among the windows whose anchor lies in the block.
pub fn max_pool_backward_rows_invocation<T: Element>(
    g: &Geometry,
    rows: usize,
    grad_output: &[T],
    indices: &[u32],
    grad_input: &mut [T],
    t: usize,
) -> u64 {
    assert!((1..=2).contains(&rows), "blocks have 1 or 2 rows, not {rows}");
    let [ad, ah, aw] = g.axes;
    let blocks = aw.input / 4;
    let iw = (t % blocks) * 4;
    let q = t / blocks;
    let ih = (q % ah.input.div_ceil(rows)) * rows;
    let q = q / ah.input.div_ceil(rows);
    let id = q % ad.input;
    let group = q / ad.input;
    // The block's real rows.
    let ih_last = (ih + rows - 1).min(ah.input - 1);
    let first = (id * ah.input + ih) * aw.input + iw;
    let output_base = group * g.plane_out();

    let (d_lo, d_hi) = candidate_windows(&ad, id);
    let h_lo = candidate_windows(&ah, ih).0;
    let h_hi = candidate_windows(&ah, ih_last).1;
    let w_lo = candidate_windows(&aw, iw).0;
    let w_hi = candidate_windows(&aw, iw + 3).1;
    // sums[r][lane]: element (ih + r, iw + lane).
    let mut sums = [[GradientSum::default(); 4]; 2];
    let mut invalid = 0;
    for od in d_lo..=d_hi {
        for oh in h_lo..=h_hi {
            for ow in w_lo..=w_hi {
                let o = output_base + (od * ah.output + oh) * aw.output + ow;
                let index = indices[o];
                for (r, row) in sums.iter_mut().enumerate().take(ih_last - ih + 1) {
                    for (lane, sum) in row.iter_mut().enumerate() {
                        if index == (first + r * aw.input + lane) as u32 {
                            sum.add(grad_output[o]);
                        }
                    }
                }
                let a = anchor(&aw, ow);
                if (iw..iw + 4).contains(&a)
                    && (ih..=ih_last).contains(&anchor(&ah, oh))
                    && id == anchor(&ad, od)
                    && !index_valid(g, (od, oh, ow), index)
                {
                    invalid += 1;
                }
            }
        }
    }
    let base = group * g.plane_in() + first;
    for (r, row) in sums.iter().enumerate().take(ih_last - ih + 1) {
        for (lane, sum) in row.iter().enumerate() {
            grad_input[base + r * aw.input + lane] = sum.result();
        }
    }
    invalid
}

/// Backward pass on blocks of `rows` rows (1 or 2) for a geometry [`gather_rows_eligible`]
/// accepts; returns the number of invalid indices.
pub fn max_pool_backward_rows<T: Element>(
    g: &Geometry,
    rows: usize,
    grad_output: &[T],
    indices: &[u32],
    grad_input: &mut [T],
) -> u64 {
    let (groups, _) = g.groups_and_lanes();
    (0..gather_rows_invocations(g, groups, rows))
        .map(|t| max_pool_backward_rows_invocation(g, rows, grad_output, indices, grad_input, t))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Axis;
    use crate::{InputShape, PoolParams, PoolSpec};

    /// `fixed_first_start` of `shaders/common.wgsl`.
    fn fixed_first_start(a: &Axis) -> i64 {
        let s = a.stride as i64;
        let phi = (a.padding % a.stride) as i64;
        let n = phi - a.kernel as i64 + 1;
        let c = if n > 0 { (n + s - 1) / s } else { -((-n) / s) };
        c * s - phi
    }

    /// `fixed_window` of `shaders/common.wgsl`: window `j` of the block at `i`, if it exists.
    fn fixed_window(a: &Axis, i: usize, j: usize) -> Option<usize> {
        let z = (i + a.padding) as i64 + fixed_first_start(a) + (j * a.stride) as i64;
        let o = z.max(0) as usize / a.stride;
        (z >= 0 && o < a.output).then_some(o)
    }

    /// `fixed_covers` of `shaders/common.wgsl`: whether window `j` of a block covers its element
    /// `e`.
    fn fixed_covers(a: &Axis, j: usize, e: usize) -> bool {
        let start = fixed_first_start(a) + (j * a.stride) as i64;
        start <= e as i64 && (e as i64) < start + a.kernel as i64
    }

    /// `fixed_reaches` of `shaders/common.wgsl`: whether window `j` of a block of `size` reaches
    /// one of its elements.
    fn fixed_reaches(a: &Axis, j: usize, size: usize) -> bool {
        let start = fixed_first_start(a) + (j * a.stride) as i64;
        start < size as i64 && start + a.kernel as i64 > 0
    }

    /// `fixed_anchors` of `shaders/common.wgsl` (`last`: the block's last real element, relative).
    fn fixed_anchors(a: &Axis, i: usize, j: usize, last: usize) -> bool {
        let r = fixed_first_start(a) + (j * a.stride) as i64;
        if r >= 0 { r as usize <= last } else { i == 0 }
    }

    /// On every small 1-D geometry that the fixed-cover gathers take (dilation 1, the stride
    /// dividing the block), for blocks of 1, 2 and 4 elements: the block's fixed windows (in
    /// order, each once) include every window whose span reaches a real element of the block,
    /// `fixed_covers` says which of those elements each one spans, and the windows that
    /// `fixed_anchors` picks are exactly those whose `anchor` lies on one of them.
    #[test]
    fn fixed_windows_and_anchors_match_the_spans_and_anchors() {
        let mut checked = 0;
        for input in 1..=13 {
            for kernel in 1..=6 {
                for stride in [1, 2, 4] {
                    for padding in 0..=kernel / 2 {
                        for ceil_mode in [false, true] {
                            let params =
                                PoolParams::new([kernel]).stride([stride]).padding([padding]).ceil_mode(ceil_mode);
                            let Ok(g) = PoolSpec::new(InputShape::new(1, 1, [input]), params).validate() else {
                                continue;
                            };
                            let a = g.axes[2];
                            for size in [1, 2, 4].into_iter().filter(|s| s % stride == 0) {
                                // BLOCK_WINDOWS_W / CELL_WINDOWS_* at dilation 1.
                                let windows = (size - 1 + kernel - 1) / stride + 1;
                                for i in (0..input).step_by(size) {
                                    let last = (i + size - 1).min(input - 1) - i;
                                    let reach: Vec<usize> = (0..a.output)
                                        .filter(|&o| {
                                            let start = (o * stride) as i64 - padding as i64;
                                            start <= (i + last) as i64 && start + kernel as i64 > i as i64
                                        })
                                        .collect();
                                    let spans = |o: usize, x: usize| {
                                        let start = (o * stride) as i64 - padding as i64;
                                        start <= x as i64 && (x as i64) < start + kernel as i64
                                    };
                                    let fixed: Vec<(usize, usize)> =
                                        (0..windows).filter_map(|j| fixed_window(&a, i, j).map(|o| (j, o))).collect();
                                    let os: Vec<usize> = fixed.iter().map(|&(_, o)| o).collect();
                                    assert!(os.windows(2).all(|w| w[0] < w[1]), "{a:?} block {i} of {size}: {os:?}");
                                    assert!(reach.iter().all(|o| os.contains(o)), "{a:?} block {i} of {size}: {os:?}");
                                    // The windows the shaders load: those reaching the block's
                                    // `size` elements, real or not, a superset of `reach` (the
                                    // same where the block is whole).
                                    let loaded: Vec<usize> = fixed
                                        .iter()
                                        .filter(|&&(j, _)| fixed_reaches(&a, j, size))
                                        .map(|&(_, o)| o)
                                        .collect();
                                    assert!(
                                        reach.iter().all(|o| loaded.contains(o)),
                                        "{a:?} block {i} of {size}: {loaded:?}"
                                    );
                                    if last == size - 1 {
                                        assert_eq!(loaded, reach, "{a:?} block {i} of {size}: loaded windows");
                                    }
                                    for &(j, o) in &fixed {
                                        for e in 0..=last {
                                            let name = format!("{a:?} block {i} of {size}, window {o}, element {e}");
                                            assert_eq!(fixed_covers(&a, j, e), spans(o, i + e), "{name}");
                                        }
                                    }
                                    let anchored: Vec<usize> = (0..windows)
                                        .filter(|&j| fixed_window(&a, i, j).is_some() && fixed_anchors(&a, i, j, last))
                                        .map(|j| fixed_window(&a, i, j).unwrap())
                                        .collect();
                                    let want: Vec<usize> =
                                        (0..a.output).filter(|&o| (i..=i + last).contains(&anchor(&a, o))).collect();
                                    assert_eq!(anchored, want, "{a:?} block {i} of {size}: anchored windows");
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked} blocks");
    }
}
