//! CPU mirror of `shaders/max_pool_backward.wgsl`: the gather formulation. One "invocation" per
//! input element sums, in increasing output order, the gradients of the windows that picked it,
//! and validates the index of every window it anchors (the window's first real element). No
//! atomics, so the order of the additions (and therefore every bit) is the same on the CPU and
//! the GPU. The shader adds plainly and visits the windows a second time, tracking PyTorch's NaN
//! bits, only where a NaN turned up (a NaN gradient in the windows, or a NaN sum); this mirror tracks
//! them in its one pass ([`GradientSum`]), as the shader's `single_pass` variant does. The bits
//! are the same: a second pass is the first pass's additions again.

use crate::element::Element;
use crate::params::{Axis, Geometry, NO_INDEX};

/// The range of output windows on one axis whose span contains input coordinate `i`
/// (empty when `lo > hi`). Windows span `[o·s − p, o·s − p + eff)`.
#[inline]
pub fn candidate_windows(a: &Axis, i: usize) -> (usize, usize) {
    let z = i + a.padding;
    let eff = a.effective_kernel();
    let lo = if z + 1 > eff { (z + 1 - eff).div_ceil(a.stride) } else { 0 };
    let hi = (z / a.stride).min(a.output - 1);
    (lo, hi)
}

/// The first real (non-padding) coordinate of window `o`'s span on axis `a`. Every window has
/// one (PyTorch's output size guarantees that each window starts inside the input or the left
/// padding), and exactly one input element is the anchor of a given window.
#[inline]
pub fn anchor(a: &Axis, o: usize) -> usize {
    (o * a.stride).max(a.padding) - a.padding
}

/// Whether window `o` on axis `a` contains a real (non-padding) tap.
#[inline]
pub fn window_has_real_tap(a: &Axis, o: usize) -> bool {
    let start = o * a.stride;
    // First tap at or after the left padding: kd ≥ ceil((p − start) / d).
    let first = if start < a.padding { (a.padding - start).div_ceil(a.dilation) } else { 0 };
    first < a.kernel && start + first * a.dilation < a.input + a.padding
}

/// The taps `[first, end)` of window `o` on axis `a` that fall on real elements (shader:
/// `real_taps`, which the GPU uses for large kernels; visiting only these gives the same taps in
/// the same order as visiting all `kernel` taps and skipping padding).
#[inline]
pub fn real_taps(a: &Axis, o: usize) -> std::ops::Range<usize> {
    let start = o * a.stride;
    let first = if start < a.padding { (a.padding - start).div_ceil(a.dilation) } else { 0 };
    let end =
        if start < a.input + a.padding { a.kernel.min((a.input + a.padding - start).div_ceil(a.dilation)) } else { 0 };
    first..end.max(first)
}

/// Whether input coordinate `i` is one of the taps of window `o` on axis `a`.
#[inline]
pub fn window_contains(a: &Axis, o: usize, i: usize) -> bool {
    let z = i + a.padding;
    let start = o * a.stride;
    if i >= a.input || z < start {
        return false;
    }
    let rel = z - start;
    rel.is_multiple_of(a.dilation) && rel / a.dilation < a.kernel
}

/// Whether window `(od, oh, ow)` may hold `index` after a forward pass with `g`: one of its real
/// taps, or −1 ([`NO_INDEX`]) where the window holds padding only.
pub fn index_valid(g: &Geometry, (od, oh, ow): (usize, usize, usize), index: u32) -> bool {
    let [ad, ah, aw] = g.axes;
    if index == NO_INDEX {
        return !(window_has_real_tap(&ad, od) && window_has_real_tap(&ah, oh) && window_has_real_tap(&aw, ow));
    }
    let index = index as usize;
    if index >= g.plane_in() {
        return false;
    }
    let iw = index % aw.input;
    let ih = (index / aw.input) % ah.input;
    let id = index / (aw.input * ah.input);
    window_contains(&ad, od, id) && window_contains(&ah, oh, ih) && window_contains(&aw, ow, iw)
}

/// `0 + g` as PyTorch's CPU backward computes it: −0.0 becomes +0.0 and a NaN becomes
/// [`Element::nan_result`] (shader: `gradient_term`).
#[inline]
pub fn gradient_term<T: Element>(g: T) -> T {
    if g.is_nan() {
        g.nan_result()
    } else if g == T::ZERO {
        T::ZERO
    } else {
        g
    }
}

/// A sum of gradients in output order, starting from +0.0, with PyTorch's CPU NaN bits whatever
/// the hardware does with NaNs: the first NaN event decides the result — a NaN gradient gives
/// its [`Element::nan_result`], `inf + -inf` gives [`Element::INDEFINITE`] (shader: the `acc`,
/// `nan`, `has_nan` variables of `max_pool_backward`).
#[derive(Debug, Clone, Copy)]
pub struct GradientSum<T> {
    acc: T,
    nan: Option<T>,
}

impl<T: Element> Default for GradientSum<T> {
    fn default() -> Self {
        Self { acc: T::ZERO, nan: None }
    }
}

impl<T: Element> GradientSum<T> {
    /// Adds one gradient.
    #[inline]
    pub fn add(&mut self, g: T) {
        if self.nan.is_some() {
            return;
        }
        if g.is_nan() {
            self.nan = Some(g.nan_result());
            return;
        }
        self.acc = self.acc.add(g);
        if self.acc.is_nan() {
            self.nan = Some(T::INDEFINITE);
        }
    }

    /// The sum (+0.0 where nothing or only zeros were added).
    #[inline]
    pub fn result(&self) -> T {
        match self.nan {
            Some(nan) => nan,
            None if self.acc == T::ZERO => T::ZERO,
            None => self.acc,
        }
    }
}

/// One input element: the sum of the gradients of every window whose index names it, in
/// increasing output order, starting from +0.0 (so a lone −0.0 gradient lands as +0.0, as in
/// PyTorch), and the number of invalid indices among the windows it anchors.
pub fn max_pool_backward_invocation<T: Element>(
    g: &Geometry,
    grad_output: &[T],
    indices: &[u32],
    t: usize,
) -> (T, u64) {
    let (_, lanes) = g.groups_and_lanes();
    let [ad, ah, aw] = g.axes;
    let lane = t % lanes;
    let q = t / lanes;
    let iw = q % aw.input;
    let q = q / aw.input;
    let ih = q % ah.input;
    let q = q / ah.input;
    let id = q % ad.input;
    let group = q / ad.input;
    let pos = ((id * ah.input + ih) * aw.input + iw) as u32;
    let output_base = group * g.plane_out() * lanes + lane;

    let (d_lo, d_hi) = candidate_windows(&ad, id);
    let (h_lo, h_hi) = candidate_windows(&ah, ih);
    let (w_lo, w_hi) = candidate_windows(&aw, iw);
    let mut sum = GradientSum::default();
    let mut invalid = 0;
    for od in d_lo..=d_hi {
        for oh in h_lo..=h_hi {
            for ow in w_lo..=w_hi {
                let o = output_base + ((od * ah.output + oh) * aw.output + ow) * lanes;
                let index = indices[o];
                if index == pos {
                    sum.add(grad_output[o]);
                }
                if id == anchor(&ad, od)
                    && ih == anchor(&ah, oh)
                    && iw == anchor(&aw, ow)
                    && !index_valid(g, (od, oh, ow), index)
                {
                    invalid += 1;
                }
            }
        }
    }
    (sum.result(), invalid)
}

/// Backward pass: fills `grad_input` and returns the number of invalid indices (the caller turns
/// a non-zero count into an error).
pub fn max_pool_backward<T: Element>(g: &Geometry, grad_output: &[T], indices: &[u32], grad_input: &mut [T]) -> u64 {
    let mut invalid = 0;
    for (t, gi) in grad_input.iter_mut().enumerate() {
        let (acc, bad) = max_pool_backward_invocation(g, grad_output, indices, t);
        *gi = acc;
        invalid += bad;
    }
    invalid
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InputShape, PoolParams, PoolSpec};

    /// `anchored_windows` of `shaders/max_pool_backward.wgsl` (the generic form's count of
    /// invalid indices): the windows on axis `a` whose anchor is coordinate `i`, `lo..=hi`.
    fn anchored_windows(a: &Axis, i: usize) -> (usize, usize) {
        if i == 0 {
            return (0, (a.padding / a.stride).min(a.output - 1));
        }
        let z = i + a.padding;
        if !z.is_multiple_of(a.stride) || z / a.stride >= a.output {
            return (1, 0);
        }
        (z / a.stride, z / a.stride)
    }

    /// The shader's formula names exactly the windows whose `anchor` is `i`, on every small
    /// 1-D geometry PyTorch accepts (more than a thousand).
    #[test]
    fn anchored_windows_are_those_with_that_anchor() {
        let mut checked = 0;
        for input in 1..=12 {
            for kernel in 1..=5 {
                for stride in 1..=4 {
                    for padding in 0..=kernel / 2 {
                        for dilation in 1..=3 {
                            for ceil_mode in [false, true] {
                                let params = PoolParams::new([kernel])
                                    .stride([stride])
                                    .padding([padding])
                                    .dilation([dilation])
                                    .ceil_mode(ceil_mode);
                                let Ok(g) = PoolSpec::new(InputShape::new(1, 1, [input]), params).validate() else {
                                    continue;
                                };
                                let a = g.axes[2];
                                // Every window has its anchor inside the input, so some
                                // element counts it.
                                assert!((0..a.output).all(|o| anchor(&a, o) < input), "{a:?}");
                                for i in 0..input {
                                    let want: Vec<usize> = (0..a.output).filter(|&o| anchor(&a, o) == i).collect();
                                    let (lo, hi) = anchored_windows(&a, i);
                                    assert_eq!((lo..=hi).collect::<Vec<_>>(), want, "{a:?} coordinate {i}");
                                }
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked} geometries");
    }
}
