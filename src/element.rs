//! Element types: f32 everywhere, f16 where the adapter has `SHADER_F16`.

use half::f16;

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16 (`half::f16`).
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
    /// `f32` or `f16`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
}

/// A floating-point element type wgpool pools: `f32` or `half::f16`.
///
/// The operations are the ones the shaders use, with the same rounding: `add` rounds to the
/// element type after every addition (PyTorch's Half backward does the same). NaN results of the
/// backward sums are defined by [`Element::nan_result`] and [`Element::INDEFINITE`], not by the
/// hardware (GPUs canonicalise NaNs differently), so every device writes the same bits.
pub trait Element: bytemuck::Pod + PartialOrd + Send + Sync + std::fmt::Debug + sealed::Sealed + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// +0.0.
    const ZERO: Self;
    /// −∞.
    const NEG_INFINITY: Self;
    /// The NaN that `inf + -inf` gives in PyTorch's CPU backward sums: x86's default NaN
    /// (negative, quiet), converted to the element type.
    const INDEFINITE: Self;
    /// NaN test on the bits (the shaders test bits too: `x != x` is unreliable there).
    fn is_nan(self) -> bool;
    /// The NaN the backward writes where a NaN gradient `self` lands (`0 + g`): for f32 the
    /// gradient quieted with its payload kept (PyTorch's CPU on x86), for f16 the canonical quiet
    /// NaN 0x7e00 (PyTorch's CPU also keeps the sign there). Only meaningful for NaN inputs.
    fn nan_result(self) -> Self;
    /// `self + other`, rounded to the element type.
    fn add(self, other: Self) -> Self;
    /// Widening conversion.
    fn to_f32(self) -> f32;
    /// Narrowing conversion (round to nearest even).
    fn from_f32(v: f32) -> Self;
    /// The raw bits, widened to u32 (for bit-exact comparisons).
    fn to_bits_u32(self) -> u32;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    const ZERO: Self = 0.0;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    /// x86's default NaN, which `inf + -inf` gives.
    const INDEFINITE: Self = f32::from_bits(0xffc0_0000);
    #[inline(always)]
    fn is_nan(self) -> bool {
        (self.to_bits() & 0x7fff_ffff) > 0x7f80_0000
    }
    #[inline(always)]
    fn nan_result(self) -> Self {
        f32::from_bits(self.to_bits() | 0x0040_0000)
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self + other
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn to_bits_u32(self) -> u32 {
        self.to_bits()
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    const ZERO: Self = f16::ZERO;
    const NEG_INFINITY: Self = f16::NEG_INFINITY;
    /// x86's default NaN through c10's half conversion.
    const INDEFINITE: Self = f16::from_bits(0xfe00);
    #[inline(always)]
    fn is_nan(self) -> bool {
        (self.to_bits() & 0x7fff) > 0x7c00
    }
    /// The canonical quiet NaN. (PyTorch's CPU keeps the gradient's sign; naga cannot read the
    /// sign bit of an f16 in a shader, so a negative NaN gradient comes back positive here.)
    #[inline(always)]
    fn nan_result(self) -> Self {
        f16::from_bits(0x7e00)
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        // The exact sum of two binary16 values rounds correctly through binary32 (24 ≥ 2·11 + 2 bits).
        f16::from_f32(self.to_f32() + other.to_f32())
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[inline(always)]
    fn to_bits_u32(self) -> u32 {
        self.to_bits() as u32
    }
}
