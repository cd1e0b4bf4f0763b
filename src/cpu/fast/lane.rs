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
