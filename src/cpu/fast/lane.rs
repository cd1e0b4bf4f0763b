//! Branch-free element operations for the fast kernels.
//!
//! The kernels select with bit masks instead of `if`: written as `if t { v } else { best }` over
//! slices, LLVM tends to turn the select back into a branch around a store, which neither
//! vectorises nor predicts well on random data. Selecting on the bits cannot change a value, so
//! the results stay bit-identical to the reference's `if`.

use half::f16;

use crate::element::Element;

/// An element type the fast kernels handle: [`Element`] plus the forward update rule and a
/// branch-free select.
pub(crate) trait Lane: Element {
    /// PyTorch's update rule `v > best || isnan(v)`, with the same answer as the reference's
    /// `PartialOrd` comparison and [`Element::is_nan`].
    fn take(self, best: Self) -> bool;
    /// `if t { a } else { b }`, on the bits.
    fn pick(t: bool, a: Self, b: Self) -> Self;
    /// [`gradient_term`](crate::cpu::gradient_term) without branches (so that it vectorises).
    fn term(self) -> Self;
}

/// Asks the CPU to fetch `x[from..from + len]` (what of it lies inside `x`) into its caches: a
/// hint, which changes no value. The channels-last forward kernels read a few input rows at
/// once, jumping between them, which the hardware's prefetchers follow less well than one stream.
#[inline(always)]
pub(crate) fn prefetch<T>(x: &[T], from: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let end = (from + len).min(x.len());
        let mut e = from;
        while e < end {
            // SAFETY: `e` is inside `x`; a prefetch reads nothing into the program and cannot
            // fault (SSE, which has it, is part of x86-64).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().add(e).cast()) };
            e += 64 / size_of::<T>();
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, from, len);
}

/// `if t { a } else { b }` for u32, on the bits.
#[inline(always)]
pub(crate) fn pick_u32(t: bool, a: u32, b: u32) -> u32 {
    let m = (t as u32).wrapping_neg();
    (a & m) | (b & !m)
}

impl Lane for f32 {
    #[inline(always)]
    fn take(self, best: Self) -> bool {
        (self > best) | self.is_nan()
    }
    #[inline(always)]
    fn pick(t: bool, a: Self, b: Self) -> Self {
        f32::from_bits(pick_u32(t, a.to_bits(), b.to_bits()))
    }
    #[inline(always)]
    fn term(self) -> Self {
        let (b, magnitude) = (self.to_bits(), self.to_bits() & 0x7fff_ffff);
        let kept = pick_u32(magnitude == 0, 0, b); // −0 → +0
        f32::from_bits(pick_u32(magnitude > 0x7f80_0000, b | 0x0040_0000, kept))
    }
}

/// An order-preserving integer key of a non-NaN binary16 value: −0 and +0 both map to 0.
#[inline(always)]
fn key16(bits: u16) -> i32 {
    let magnitude = (bits & 0x7fff) as i32;
    let sign = ((bits as i16) >> 15) as i32; // 0 or −1
    (magnitude ^ sign) - sign
}

impl Lane for f16 {
    /// `half`'s `>` branches on the signs; this is the same comparison on integer keys (a NaN on
    /// either side makes `>` false, as in `half`).
    #[inline(always)]
    fn take(self, best: Self) -> bool {
        let (v, b) = (self.to_bits(), best.to_bits());
        let v_nan = (v & 0x7fff) > 0x7c00;
        let b_nan = (b & 0x7fff) > 0x7c00;
        v_nan | (!b_nan & (key16(v) > key16(b)))
    }
    #[inline(always)]
    fn pick(t: bool, a: Self, b: Self) -> Self {
        let m = (t as u16).wrapping_neg();
        f16::from_bits((a.to_bits() & m) | (b.to_bits() & !m))
    }
    #[inline(always)]
    fn term(self) -> Self {
        let magnitude = self.to_bits() & 0x7fff;
        let kept = f16::pick(magnitude == 0, f16::ZERO, self);
        f16::pick(magnitude > 0x7c00, f16::from_bits(0x7e00), kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f16 rule against the reference's (`PartialOrd` + bit-tested NaN) on every pair of a
    /// set of special and ordinary values.
    #[test]
    fn f16_take_matches_partial_ord() {
        let mut values: Vec<u16> = vec![0x0000, 0x8000, 0x0001, 0x8001, 0x3c00, 0xbc00, 0x7bff, 0xfbff];
        values.extend([0x7c00, 0xfc00, 0x7c01, 0xfc01, 0x7e00, 0xfe00, 0x7fff, 0x3555, 0xb555]);
        for &v in &values {
            for &b in &values {
                let (v, b) = (f16::from_bits(v), f16::from_bits(b));
                let want = v > b || Element::is_nan(v);
                assert_eq!(v.take(b), want, "{v:?} vs {b:?}");
                let (vf, bf) = (v.to_f32(), b.to_f32());
                assert_eq!(vf.take(bf), vf > bf || vf.is_nan(), "{vf:?} vs {bf:?}");
            }
        }
    }

    /// The branch-free gradient term against the reference's, on special and ordinary values.
    #[test]
    fn term_matches_gradient_term() {
        use crate::cpu::gradient_term;
        let bits32 =
            [0u32, 0x8000_0000, 1, 0x8000_0001, 0x3f80_0000, 0xbf80_0000, 0x7f7f_ffff, 0x7f80_0000, 0xff80_0000];
        let nans32 = [0x7f80_0001u32, 0xff80_0001, 0x7fc0_0000, 0xffc0_1234, 0x7fff_ffff];
        for b in bits32.into_iter().chain(nans32) {
            let v = f32::from_bits(b);
            assert_eq!(v.term().to_bits(), gradient_term(v).to_bits(), "{b:#x}");
        }
        let bits16 = [0u16, 0x8000, 1, 0x8001, 0x3c00, 0xbc00, 0x7bff, 0x7c00, 0xfc00, 0x7c01, 0xfc01, 0x7e00, 0xffff];
        for b in bits16 {
            let v = f16::from_bits(b);
            assert_eq!(v.term().to_bits(), gradient_term(v).to_bits(), "{b:#x}");
        }
    }

    #[test]
    fn pick_selects_bits() {
        let nan = f32::from_bits(0x7fc0_1234);
        assert_eq!(f32::pick(true, nan, 1.0).to_bits(), 0x7fc0_1234);
        assert_eq!(f32::pick(false, nan, -0.0).to_bits(), 0x8000_0000);
        assert_eq!(pick_u32(true, 7, 9), 7);
        assert_eq!(pick_u32(false, 7, 9), 9);
        assert_eq!(f16::pick(false, f16::ONE, f16::NEG_ZERO).to_bits(), 0x8000);
    }
}
