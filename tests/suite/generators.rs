//! Seeded generators of pooling problems and nasty data, shared by the native tests
//! (`tests/suite/common.rs`) and the browser test (`web/src/cases.rs` includes this file), so that
//! both explore the same parameter space.
#![allow(dead_code)]

use wgpool::{Element, InputShape, Layout, PoolParams, PoolSpec};

/// SplitMix64: small, seeded, reproducible.
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

/// Gradients with ±0, negatives, ±inf (so sums can meet inf + -inf) and NaNs with random signs
/// and payloads, quiet and signalling: their bits must come out as PyTorch's CPU writes them.
pub fn gradients<T: Element>(rng: &mut Rng, n: usize) -> Vec<T> {
    (0..n)
        .map(|_| {
            T::from_f32(match rng.range(0, 49) {
                0 => -0.0,
                1 => 0.0,
                2 => f32::NAN,
                3 => f32::from_bits(0x7f80_0000 | (rng.next_u64() as u32 & 0x807f_ffff) | 1),
                4 => f32::INFINITY,
                5 => f32::NEG_INFINITY,
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
