//! The random parameter space of the native GPU tests (`tests/suite/common.rs`), plus fixed edge
//! cases, for the browser.

use wgpool::{Element, InputShape, Layout, PoolParams, PoolSpec};

/// SplitMix64: small, seeded, reproducible (the same generator as the native tests).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Values with NaN (several payloads and signs), ±inf, ±0, ties from a small palette, negatives.
pub fn nasty_values<T: Element>(rng: &mut Rng, n: usize) -> Vec<T> {
    let palette = [1.0f32, -1.0, 0.5, -0.5, 2.0];
    (0..n)
        .map(|_| {
            let r = rng.range(0, 99);
            let v = match r {
                0..=2 => f32::from_bits(0x7fc0_0000 | (rng.next_u64() as u32 & 0x3f_ffff)),
                3 => f32::from_bits(0xffc0_0001),
                4..=6 => f32::INFINITY,
                7..=11 => f32::NEG_INFINITY,
                12..=14 => 0.0,
                15..=17 => -0.0,
                18..=45 => palette[rng.range(0, palette.len() - 1)],
                _ => (rng.unit() - 0.7) * 8.0,
            };
            T::from_f32(v)
        })
        .collect()
}

/// Plain random values, all negative (windows of all-negative values must still pick the max).
pub fn negative_values<T: Element>(rng: &mut Rng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f32(-1.0 - rng.unit() * 100.0)).collect()
}

/// Gradients with ±0, negatives and a few NaN/inf (they must travel bit for bit).
pub fn gradients<T: Element>(rng: &mut Rng, n: usize) -> Vec<T> {
    (0..n)
        .map(|_| {
            T::from_f32(match rng.range(0, 49) {
                0 => -0.0,
                1 => 0.0,
                2 => f32::NAN,
                3 => f32::INFINITY,
                _ => (rng.unit() - 0.5) * 4.0,
            })
        })
        .collect()
}

/// A random pooling problem: 1 to 3 spatial axes, non-square, padding, dilation, ceil_mode,
/// overlapping and non-overlapping windows, either layout. Always valid.
pub fn random_spec(rng: &mut Rng, max_spatial: usize) -> PoolSpec {
    loop {
        let rank = rng.range(1, 3);
        let layout = if rng.chance(0.4) { Layout::ChannelsLast } else { Layout::ChannelsFirst };
        let batch = rng.range(1, 3);
        let channels = rng.range(1, 5);
        let mut spatial = vec![];
        let mut kernel = vec![];
        let mut stride = vec![];
        let mut padding = vec![];
        let mut dilation = vec![];
        let per_axis = match rank {
            1 => max_spatial * 3,
            2 => max_spatial,
            _ => max_spatial / 2 + 2,
        };
        for _ in 0..rank {
            let size = rng.range(1, per_axis);
            let k = rng.range(1, 4.min(size + 2));
            let s = if rng.chance(0.3) { k } else { rng.range(1, 3) };
            let d = if rng.chance(0.25) { rng.range(2, 3) } else { 1 };
            let p = rng.range(0, k / 2);
            spatial.push(size);
            kernel.push(k);
            stride.push(s);
            padding.push(p);
            dilation.push(d);
        }
        let params =
            PoolParams::new(kernel).stride(stride).padding(padding).dilation(dilation).ceil_mode(rng.chance(0.5));
        let spec = PoolSpec::new(InputShape::new(batch, channels, spatial), params).layout(layout);
        if spec.validate().is_ok() {
            return spec;
        }
    }
}

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
