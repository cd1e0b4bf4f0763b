//! Any shape and parameters (including huge values) through `PoolSpec::validate` and, where the
//! problem is tiny, the CPU forward and backward: a result or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgpool::{InputShape, Layout, PoolParams, PoolSpec, cpu};

/// Reads sizes from the fuzzer's bytes: small values most of the time, anything up to
/// `usize::MAX` sometimes.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map(|(b, r)| (*b, r)).unwrap_or((0, &[]));
        self.0 = rest;
        b
    }
    fn size(&mut self) -> usize {
        let tag = self.byte();
        match tag >> 5 {
            0..=4 => (tag & 0x1f) as usize % 9,
            5 => u16::from_le_bytes([self.byte(), self.byte()]) as usize,
            6 => u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()]) as usize,
            _ => {
                let mut b = [0u8; 8];
                b.iter_mut().for_each(|x| *x = self.byte());
                u64::from_le_bytes(b) as usize
            }
        }
    }
    fn list(&mut self) -> Vec<usize> {
        let n = (self.byte() % 5) as usize;
        (0..n).map(|_| self.size()).collect()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let flags = b.byte();
    let layout = if flags & 1 == 1 { Layout::ChannelsLast } else { Layout::ChannelsFirst };
    let rank = (b.byte() % 8) as usize;
    let dims: Vec<usize> = (0..rank).map(|_| b.size()).collect();
    let params =
        PoolParams::new(b.list()).stride(b.list()).padding(b.list()).dilation(b.list()).ceil_mode(flags & 2 == 2);
    let Ok(shape) = InputShape::from_dims(&dims, layout) else { return };
    let spec = PoolSpec::new(shape, params).layout(layout);
    let Ok(g) = spec.validate() else { return };
    // Geometry invariants the kernels rely on.
    assert!(g.plane_in() as u64 <= wgpool::MAX_PLANE_ELEMENTS);
    assert!(g.plane_out() as u64 <= wgpool::MAX_PLANE_ELEMENTS);
    assert!(g.input_len().checked_mul(8).is_some());
    if g.input_len() > 1 << 12 || g.output_len() > 1 << 12 {
        return;
    }
    // Every path scans all kernel taps of a window, real or padding: a valid kernel of 2^31 over
    // a 3-element input (padding 2^30, or ceil_mode with a stride as large) costs 2^31 steps per
    // output. Known and reported; skipped here so that the fuzzer keeps exploring.
    let taps: u128 = g.axes.iter().map(|a| a.kernel as u128).product();
    if taps.saturating_mul(g.output_len() as u128) > 1 << 20 {
        return;
    }
    let input: Vec<f32> = (0..g.input_len()).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
    let out = cpu::forward(&spec, &input).expect("a valid spec with the right input length");
    let reference = cpu::reference::forward(&spec, &input).expect("valid");
    assert_eq!(out.indices, reference.indices);
    let grad: Vec<f32> = vec![1.0; g.output_len()];
    let gi = cpu::backward(&spec, &grad, &out.indices).expect("indices from forward are valid");
    assert_eq!(gi.len(), g.input_len());
    // Indices from the fuzzer's bytes: a gradient or InvalidIndices, never a panic.
    let indices: Vec<u32> = (0..g.output_len()).map(|_| b.size() as u32).collect();
    let _ = cpu::backward(&spec, &grad, &indices);
});
