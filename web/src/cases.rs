//! The random parameter space of the native GPU tests (`tests/suite/common.rs`), plus fixed edge
//! cases, for the browser.

use wgpool::{Element, InputShape, Layout, PoolParams, PoolSpec};

#[path = "../../tests/suite/generators.rs"]
mod generators;
pub use generators::{Rng, gradients, nasty_values, negative_values, random_spec};

/// What fills the input of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// [`nasty_values`].
    Nasty,
    /// [`negative_values`].
    Negative,
    /// Every element −inf (windows of −inf pick their first real element).
    NegInf,
    /// Only +0.0 and −0.0 (ties: the first wins).
    SignedZeros,
}

impl Fill {
    pub fn name(self) -> &'static str {
        match self {
            Fill::Nasty => "nasty",
            Fill::Negative => "negative",
            Fill::NegInf => "all -inf",
            Fill::SignedZeros => "±0 ties",
        }
    }

    pub fn values<T: Element>(self, rng: &mut Rng, n: usize) -> Vec<T> {
        match self {
            Fill::Nasty => nasty_values(rng, n),
            Fill::Negative => negative_values(rng, n),
            Fill::NegInf => vec![T::NEG_INFINITY; n],
            Fill::SignedZeros => (0..n).map(|_| T::from_f32(if rng.chance(0.5) { -0.0 } else { 0.0 })).collect(),
        }
    }
}

/// Fixed cases that the random ones hit only by chance: windows of padding only (index −1),
/// PyTorch's ceil correction, all −inf, signed-zero ties, the tiled backward kernel, 3-D
/// channels-last with overlap.
pub fn edge_cases() -> Vec<(PoolSpec, Fill)> {
    let spec = |spatial: &[usize], params: PoolParams, layout: Layout| {
        PoolSpec::new(InputShape::new(2, 3, spatial.to_vec()), params).layout(layout)
    };
    let (first, last) = (Layout::ChannelsFirst, Layout::ChannelsLast);
    vec![
        // L = 1, k = 2, d = 2, p = 1: the only window holds padding only.
        (spec(&[1], PoolParams::new([2]).padding([1]).dilation([2]), first), Fill::Nasty),
        // H = 1 with k = 2, d = 2, p = 1: padding-only windows in 2-D, channels-last.
        (spec(&[1, 5], PoolParams::new([2, 2]).stride([1, 1]).padding([1, 1]).dilation([2, 1]), last), Fill::Nasty),
        // in = 5, k = 2, s = 2, p = 1, ceil: 3 outputs, not 4.
        (spec(&[5, 5], PoolParams::new([2, 2]).padding([1, 1]).ceil_mode(true), first), Fill::Nasty),
        (spec(&[6, 7], PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]), first), Fill::NegInf),
        (spec(&[6, 7], PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]), last), Fill::SignedZeros),
        // Windows that tile the input exactly: the scatter backward kernel.
        (spec(&[4, 6], PoolParams::new([2, 2]), first), Fill::Nasty),
        (spec(&[2, 4, 6], PoolParams::new([2, 2, 3]), last), Fill::Nasty),
        // 3-D channels-last, overlapping, dilated, ceil.
        (
            spec(
                &[4, 5, 6],
                PoolParams::new([2, 3, 2]).stride([1, 2, 1]).padding([1, 1, 0]).dilation([1, 1, 2]).ceil_mode(true),
                last,
            ),
            Fill::Nasty,
        ),
        // Stride larger than the kernel: elements in no window get their zero gradient.
        (spec(&[9], PoolParams::new([2]).stride([3]), first), Fill::Negative),
    ]
}
