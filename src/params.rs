//! Pooling parameters, shapes and the resolved geometry shared by the CPU and GPU paths.
//!
//! The number of spatial axes (1, 2 or 3) enters the crate here and only here:
//! [`PoolSpec::validate`] turns any rank into a [`Geometry`] of exactly three axes by
//! prepending unit axes (size 1, kernel 1, stride 1, no padding), so every kernel, CPU and GPU,
//! is written once for three axes.

use crate::error::{Error, Result};

/// The index value for a window that holds padding only (PyTorch would write an index outside the
/// plane; wgpool writes −1, which is `u32::MAX` in the 32-bit index buffers).
pub const NO_INDEX: u32 = u32::MAX;

/// The largest number of elements one (n, c) plane may have: indices are u32 and
/// [`NO_INDEX`] is reserved.
pub const MAX_PLANE_ELEMENTS: u64 = u32::MAX as u64 - 1;

/// Physical order of a tensor in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// N, C, spatial... (PyTorch's default contiguous layout: NCL, NCHW, NCDHW).
    #[default]
    ChannelsFirst,
    /// N, spatial..., C (PyTorch's `channels_last`: NLC, NHWC, NDHWC).
    ChannelsLast,
}

impl Layout {
    /// A short name (`ncx` or `nxc`).
    pub fn name(self) -> &'static str {
        match self {
            Layout::ChannelsFirst => "ncx",
            Layout::ChannelsLast => "nxc",
        }
    }
}

/// The logical shape of a pooling input: batch, channels and 1 to 3 spatial sizes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InputShape {
    /// N (may be 0).
    pub batch: usize,
    /// C.
    pub channels: usize,
    /// L, (H, W) or (D, H, W).
    pub spatial: Vec<usize>,
}

impl InputShape {
    /// A shape from its parts.
    pub fn new(batch: usize, channels: usize, spatial: impl Into<Vec<usize>>) -> Self {
        Self { batch, channels, spatial: spatial.into() }
    }

    /// An NCHW shape.
    pub fn nchw(n: usize, c: usize, h: usize, w: usize) -> Self {
        Self::new(n, c, [h, w])
    }

    /// A shape from the dimensions of a tensor stored in `layout` (e.g. `[N, H, W, C]` for
    /// channels-last 2-D). Rank must be 3, 4 or 5.
    pub fn from_dims(dims: &[usize], layout: Layout) -> Result<Self> {
        if !(3..=5).contains(&dims.len()) {
            return Err(Error::InputRank { rank: dims.len() });
        }
        Ok(match layout {
            Layout::ChannelsFirst => Self::new(dims[0], dims[1], &dims[2..]),
            Layout::ChannelsLast => Self::new(dims[0], dims[dims.len() - 1], &dims[1..dims.len() - 1]),
        })
    }

    /// The dimensions in `layout` order (the inverse of [`InputShape::from_dims`]).
    pub fn dims(&self, layout: Layout) -> Vec<usize> {
        let mut d = vec![self.batch];
        match layout {
            Layout::ChannelsFirst => {
                d.push(self.channels);
                d.extend(&self.spatial);
            }
            Layout::ChannelsLast => {
                d.extend(&self.spatial);
                d.push(self.channels);
            }
        }
        d
    }

    /// Logical dims (N, C, spatial...).
    pub fn logical_dims(&self) -> Vec<usize> {
        self.dims(Layout::ChannelsFirst)
    }

    /// The number of elements, checked.
    pub fn numel(&self) -> Result<usize> {
        checked_product(&self.logical_dims(), "tensor element count")
    }
}

/// Multiplies sizes, returning [`Error::TooLarge`] on overflow.
pub(crate) fn checked_product(dims: &[usize], what: &str) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| Error::TooLarge {
        what: what.to_string(),
        value: dims.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128)),
        limit: usize::MAX as u128,
    })
}

/// Max-pooling parameters, one entry per spatial axis, with PyTorch's meaning.
///
/// ```
/// use wgpool::PoolParams;
/// // ResNet's stem pool: kernel 3, stride 2, padding 1 on H and W.
/// let p = PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
/// assert!(p.validate(2).is_ok());
/// assert!(PoolParams::new([2, 2]).padding([2, 0]).validate(2).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolParams {
    /// Window size per axis (≥ 1).
    pub kernel: Vec<usize>,
    /// Step per axis (≥ 1); empty means "same as kernel" (PyTorch's default).
    pub stride: Vec<usize>,
    /// Implicit padding per axis (≤ kernel / 2); empty means 0. Padding is never selected.
    pub padding: Vec<usize>,
    /// Spacing between window taps per axis (≥ 1); empty means 1.
    pub dilation: Vec<usize>,
    /// Use ceil instead of floor for the output size (with PyTorch's correction).
    pub ceil_mode: bool,
}

impl PoolParams {
    /// Parameters with the given kernel and PyTorch's defaults for the rest.
    pub fn new(kernel: impl Into<Vec<usize>>) -> Self {
        Self { kernel: kernel.into(), stride: vec![], padding: vec![], dilation: vec![], ceil_mode: false }
    }
    /// Sets the stride.
    pub fn stride(mut self, stride: impl Into<Vec<usize>>) -> Self {
        self.stride = stride.into();
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, padding: impl Into<Vec<usize>>) -> Self {
        self.padding = padding.into();
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, dilation: impl Into<Vec<usize>>) -> Self {
        self.dilation = dilation.into();
        self
    }
    /// Sets `ceil_mode`.
    pub fn ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.ceil_mode = ceil_mode;
        self
    }

    /// The stride, padding and dilation with defaults filled in, after checking the lengths.
    fn resolved(&self, rank: usize) -> Result<[Vec<usize>; 4]> {
        let fill = |v: &Vec<usize>, name: &'static str, default: &[usize]| -> Result<Vec<usize>> {
            match v.len() {
                0 => Ok(default.to_vec()),
                n if n == rank => Ok(v.clone()),
                n => Err(Error::ParamRank { param: name, expected: rank, found: n }),
            }
        };
        let kernel = fill(&self.kernel, "kernel", &[])?;
        if kernel.len() != rank {
            return Err(Error::ParamRank { param: "kernel", expected: rank, found: self.kernel.len() });
        }
        let stride = fill(&self.stride, "stride", &kernel)?;
        let padding = fill(&self.padding, "padding", &vec![0; rank])?;
        let dilation = fill(&self.dilation, "dilation", &vec![1; rank])?;
        Ok([kernel, stride, padding, dilation])
    }

    /// Checks the parameters for an input with `spatial_rank` spatial axes, as PyTorch does
    /// (1 to 3 spatial axes, else [`Error::InputRank`] with the input's rank `spatial_rank + 2`;
    /// lengths, positivity, padding ≤ kernel / 2). Output-size checks need the input shape:
    /// see [`PoolSpec::validate`].
    pub fn validate(&self, spatial_rank: usize) -> Result<()> {
        // PyTorch's max_pool is 1-D to 3-D: without this, rank 0 (every list empty) and rank 4
        // (every list of 4) would pass, since the lengths agree.
        if !(1..=3).contains(&spatial_rank) {
            return Err(Error::InputRank { rank: spatial_rank.saturating_add(2) });
        }
        let [kernel, stride, padding, dilation] = self.resolved(spatial_rank)?;
        for axis in 0..spatial_rank {
            for (name, v) in [("kernel", kernel[axis]), ("stride", stride[axis]), ("dilation", dilation[axis])] {
                if v == 0 {
                    return Err(Error::NotPositive { param: name, axis });
                }
            }
            if padding[axis] > kernel[axis] / 2 {
                return Err(Error::PaddingTooLarge { axis, padding: padding[axis], kernel: kernel[axis] });
            }
        }
        Ok(())
    }
}

/// PyTorch's output size for one axis (`pooling_output_shape`); `None` for a stride of 0.
///
/// The size may be 0 or negative: such parameters are invalid for this input, which
/// [`PoolSpec::validate`] reports as [`Error::EmptyOutput`].
pub fn output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<i128> {
    let (i, k, s, p, d) = (input as i128, kernel as i128, stride as i128, padding as i128, dilation as i128);
    if s == 0 {
        return None;
    }
    // Saturating: a kernel and dilation whose product overflows even i128 reach past any input
    // (the output size is then below 1, an error), and must not overflow here.
    let eff = d.saturating_mul(k - 1).saturating_add(1);
    let num = i + 2 * p - eff + if ceil_mode { s - 1 } else { 0 };
    let mut out = num.div_euclid(s) + 1;
    if ceil_mode && (out - 1) * s >= i + p {
        out -= 1;
    }
    Some(out)
}

/// A complete pooling problem: input shape, layout and parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolSpec {
    /// The input's logical shape.
    pub input: InputShape,
    /// The physical layout of every tensor of the call (input, values, indices, gradients).
    pub layout: Layout,
    /// The pooling parameters.
    pub params: PoolParams,
}

impl PoolSpec {
    /// A channels-first spec.
    pub fn new(input: InputShape, params: PoolParams) -> Self {
        Self { input, layout: Layout::ChannelsFirst, params }
    }

    /// Sets the layout.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Validates everything PyTorch validates (plus 32-bit plane indexing) and resolves the problem
    /// into three-axis [`Geometry`].
    ///
    /// ```
    /// use wgpool::{InputShape, PoolParams, PoolSpec};
    /// let spec = PoolSpec::new(InputShape::nchw(1, 1, 5, 5), PoolParams::new([2, 2]).padding([1, 1]).ceil_mode(true));
    /// let g = spec.validate().unwrap();
    /// assert_eq!(g.output_shape().spatial, vec![3, 3]); // PyTorch's ceil correction (Burn gets 4)
    /// ```
    pub fn validate(&self) -> Result<Geometry> {
        let rank = self.input.spatial.len();
        if !(1..=3).contains(&rank) {
            return Err(Error::InputRank { rank: rank + 2 });
        }
        self.params.validate(rank)?;
        let [kernel, stride, padding, dilation] = self.params.resolved(rank)?;
        let shape = self.input.logical_dims();
        if self.input.channels == 0 {
            return Err(Error::ZeroSize { axis: "channels".into(), shape });
        }
        if let Some(axis) = self.input.spatial.iter().position(|&s| s == 0) {
            return Err(Error::ZeroSize { axis: format!("spatial axis {axis}"), shape });
        }
        let mut axes = [Axis::UNIT; 3];
        for a in 0..rank {
            let out = output_size(
                self.input.spatial[a],
                kernel[a],
                stride[a],
                padding[a],
                dilation[a],
                self.params.ceil_mode,
            )
            .expect("stride validated");
            if out < 1 {
                let output = out.max(i64::MIN as i128) as i64;
                return Err(Error::EmptyOutput { axis: a, input: self.input.spatial[a], output });
            }
            // An input of usize::MAX can give 2^64 outputs: more than any axis may have.
            let output = u32::try_from(out).map_err(|_| Error::TooLarge {
                what: format!("output size on spatial axis {a}"),
                value: out as u128,
                limit: u32::MAX as u128,
            })? as usize;
            let axis = Axis {
                input: self.input.spatial[a],
                output,
                kernel: kernel[a],
                stride: stride[a],
                padding: padding[a],
                dilation: dilation[a],
            };
            // The kernels take kernel, stride and dilation as u32 constants. (Larger values can be
            // valid for PyTorch, with one output or a kernel of 1, but are refused here as on the GPU.)
            for (param, v) in [("kernel", axis.kernel), ("stride", axis.stride), ("dilation", axis.dilation)] {
                if v as u128 > u32::MAX as u128 {
                    return Err(Error::TooLarge {
                        what: format!("{param} on spatial axis {a}"),
                        value: v as u128,
                        limit: u32::MAX as u128,
                    });
                }
            }
            // Every quantity the kernels compute in u32 (`o * s + k * d`, `in + p`) must fit.
            let reach =
                (axis.output as u128 - 1) * axis.stride as u128 + (axis.kernel as u128 - 1) * axis.dilation as u128;
            let span = reach.max(axis.input as u128 + axis.padding as u128);
            if span > u32::MAX as u128 {
                return Err(Error::TooLarge {
                    what: format!("window reach on spatial axis {a}"),
                    value: span,
                    limit: u32::MAX as u128,
                });
            }
            axes[3 - rank + a] = axis;
        }
        let geometry = Geometry {
            spatial_rank: rank,
            layout: self.layout,
            batch: self.input.batch,
            channels: self.input.channels,
            axes,
        };
        // Plane sizes must fit the u32 index, and whole tensors must fit usize.
        for (what, plane) in [("input plane", geometry.plane_in_u128()), ("output plane", geometry.plane_out_u128())] {
            if plane > MAX_PLANE_ELEMENTS as u128 {
                return Err(Error::TooLarge {
                    what: format!("{what} (elements per (n, c) plane, indexed with u32)"),
                    value: plane,
                    limit: MAX_PLANE_ELEMENTS as u128,
                });
            }
        }
        for (what, plane) in [("input tensor", geometry.plane_in_u128()), ("output tensor", geometry.plane_out_u128())]
        {
            // An empty batch still needs one image to be addressable (the GPU path computes
            // per-image byte counts), so the batch counts as at least 1 here.
            let batch = geometry.batch.max(1) as u128;
            let total = plane.saturating_mul(batch).saturating_mul(geometry.channels as u128);
            // Byte counts (up to 8 bytes per element in .npy) must fit usize as well.
            if total.saturating_mul(8) > usize::MAX as u128 {
                return Err(Error::TooLarge {
                    what: format!("{what} element count"),
                    value: total,
                    limit: usize::MAX as u128 / 8,
                });
            }
        }
        Ok(geometry)
    }
}

/// One spatial axis of a resolved problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Axis {
    /// Input size.
    pub input: usize,
    /// Output size.
    pub output: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
}

impl Axis {
    /// The unit axis that pads 1-D and 2-D problems to three axes.
    pub const UNIT: Axis = Axis { input: 1, output: 1, kernel: 1, stride: 1, padding: 0, dilation: 1 };

    /// The dilated window extent `d·(k−1)+1`.
    pub fn effective_kernel(&self) -> usize {
        self.dilation * (self.kernel - 1) + 1
    }

    /// Whether no two windows share an input element on this axis.
    pub fn non_overlapping(&self) -> bool {
        self.effective_kernel() <= self.stride
    }

    /// Whether the windows tile the axis exactly: contiguous windows (dilation 1), kernel ==
    /// stride, and every input element inside some window, so each input element lies in exactly
    /// one window.
    pub fn tiles(&self) -> bool {
        self.dilation == 1 && self.kernel == self.stride && self.output * self.stride >= self.input + self.padding
    }
}

/// A validated problem over exactly three spatial axes (unit axes first for 1-D and 2-D).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// 1, 2 or 3: the number of spatial axes the user asked for.
    pub spatial_rank: usize,
    /// Physical layout.
    pub layout: Layout,
    /// N.
    pub batch: usize,
    /// C.
    pub channels: usize,
    /// (D, H, W) axes; the leading `3 - spatial_rank` are [`Axis::UNIT`].
    pub axes: [Axis; 3],
}

impl Geometry {
    fn plane_in_u128(&self) -> u128 {
        self.axes.iter().map(|a| a.input as u128).product()
    }
    fn plane_out_u128(&self) -> u128 {
        self.axes.iter().map(|a| a.output as u128).product()
    }
    /// Elements of one input (n, c) plane (D·H·W).
    pub fn plane_in(&self) -> usize {
        self.axes.iter().map(|a| a.input).product()
    }
    /// Elements of one output (n, c) plane.
    pub fn plane_out(&self) -> usize {
        self.axes.iter().map(|a| a.output).product()
    }
    /// Number of input elements.
    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.plane_in()
    }
    /// Number of output elements (values and indices each).
    pub fn output_len(&self) -> usize {
        self.batch * self.channels * self.plane_out()
    }
    /// The logical output shape.
    pub fn output_shape(&self) -> InputShape {
        InputShape::new(
            self.batch,
            self.channels,
            self.axes[3 - self.spatial_rank..].iter().map(|a| a.output).collect::<Vec<_>>(),
        )
    }
    /// The logical input shape.
    pub fn input_shape(&self) -> InputShape {
        InputShape::new(
            self.batch,
            self.channels,
            self.axes[3 - self.spatial_rank..].iter().map(|a| a.input).collect::<Vec<_>>(),
        )
    }
    /// The number of independent groups and the lanes inside each: channels-first has
    /// N·C groups (planes) of one lane; channels-last has N groups (images) of C lanes.
    /// Element `(group, spatial position, lane)` lives at `(group * plane + position) * lanes + lane`.
    pub fn groups_and_lanes(&self) -> (usize, usize) {
        match self.layout {
            Layout::ChannelsFirst => (self.batch * self.channels, 1),
            Layout::ChannelsLast => (self.batch, self.channels),
        }
    }
    /// Whether no input element lies in two windows.
    pub fn non_overlapping(&self) -> bool {
        self.axes.iter().all(Axis::non_overlapping)
    }
    /// Whether every input element lies in exactly one window.
    pub fn tiles(&self) -> bool {
        self.axes.iter().all(Axis::tiles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_matches_pytorch_examples() {
        // in=5, k=2, s=2, p=1, ceil -> 3 (the last window would start in the right padding).
        assert_eq!(output_size(5, 2, 2, 1, 1, true), Some(3));
        assert_eq!(output_size(5, 2, 2, 0, 1, true), Some(3));
        assert_eq!(output_size(5, 2, 2, 0, 1, false), Some(2));
        assert_eq!(output_size(112, 3, 2, 1, 1, false), Some(56));
        assert_eq!(output_size(1, 3, 1, 1, 2, false), Some(-1));
        assert_eq!(output_size(1, 3, 3, 1, 2, true), Some(1)); // padding only: taps at -1, 1, 3
        assert_eq!(output_size(2, 5, 1, 0, 1, false), Some(-2));
    }

    #[test]
    fn validate_reports_typed_errors() {
        let spec = |p: PoolParams| PoolSpec::new(InputShape::nchw(1, 1, 4, 4), p).validate();
        assert_eq!(spec(PoolParams::new([2])), Err(Error::ParamRank { param: "kernel", expected: 2, found: 1 }));
        assert_eq!(spec(PoolParams::new([2, 0])), Err(Error::NotPositive { param: "kernel", axis: 1 }));
        assert_eq!(spec(PoolParams::new([2, 2]).stride([1, 0])), Err(Error::NotPositive { param: "stride", axis: 1 }));
        assert_eq!(
            spec(PoolParams::new([3, 3]).padding([2, 1])),
            Err(Error::PaddingTooLarge { axis: 0, padding: 2, kernel: 3 })
        );
        assert_eq!(spec(PoolParams::new([5, 2])), Err(Error::EmptyOutput { axis: 0, input: 4, output: 0 }));
        let zero = PoolSpec::new(InputShape::nchw(1, 0, 4, 4), PoolParams::new([2, 2])).validate();
        assert!(matches!(zero, Err(Error::ZeroSize { .. })));
        let empty_batch = PoolSpec::new(InputShape::nchw(0, 3, 4, 4), PoolParams::new([2, 2])).validate().unwrap();
        assert_eq!(empty_batch.output_len(), 0);
    }

    #[test]
    fn params_validate_only_one_to_three_spatial_axes() {
        // The lengths agree with the rank, so only the rank check refuses these.
        assert_eq!(PoolParams::new([0usize; 0]).validate(0), Err(Error::InputRank { rank: 2 }));
        assert_eq!(PoolParams::new([2; 4]).validate(4), Err(Error::InputRank { rank: 6 }));
        assert_eq!(PoolParams::new([2; 4]).validate(usize::MAX), Err(Error::InputRank { rank: usize::MAX }));
        for rank in 1..=3 {
            assert_eq!(PoolParams::new(vec![2; rank]).validate(rank), Ok(()));
        }
    }

    #[test]
    fn layouts_round_trip_dims() {
        let s = InputShape::new(2, 3, [4, 5, 6]);
        for layout in [Layout::ChannelsFirst, Layout::ChannelsLast] {
            assert_eq!(InputShape::from_dims(&s.dims(layout), layout).unwrap(), s);
        }
        assert_eq!(s.dims(Layout::ChannelsLast), vec![2, 4, 5, 6, 3]);
    }
}
