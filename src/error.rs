//! The one error type of the crate.

/// Everything that can go wrong in wgpool, as typed variants.
///
/// Bad input (parameters, shapes, indices, files) never panics: it comes back as one of these.
/// The enum derives `PartialEq` so that tests can compare errors directly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pooling parameter list does not have one entry per spatial axis.
    #[error("{param} has {found} entries but the input has {expected} spatial axes")]
    ParamRank {
        /// Which parameter (`kernel`, `stride`, `padding`, `dilation`).
        param: &'static str,
        /// The number of spatial axes of the input.
        expected: usize,
        /// The number of entries given.
        found: usize,
    },
    /// Kernel, stride or dilation is zero (PyTorch: "must be greater than zero").
    #[error("{param} must be greater than zero, but is 0 on spatial axis {axis}")]
    NotPositive {
        /// Which parameter.
        param: &'static str,
        /// Spatial axis (0-based).
        axis: usize,
    },
    /// Padding above half the kernel (PyTorch: "pad should be smaller than or equal to half of kernel size").
    #[error(
        "pad should be smaller than or equal to half of kernel size: padding {padding} > kernel {kernel} / 2 on spatial axis {axis}"
    )]
    PaddingTooLarge {
        /// Spatial axis (0-based).
        axis: usize,
        /// The padding given.
        padding: usize,
        /// The kernel size on that axis.
        kernel: usize,
    },
    /// The input does not have 1, 2 or 3 spatial axes (rank 3, 4 or 5, always batched).
    #[error("input must have rank 3, 4 or 5 (N, C and 1 to 3 spatial axes), got rank {rank}")]
    InputRank {
        /// The rank given.
        rank: usize,
    },
    /// A channel or spatial size is zero (only the batch may be empty).
    #[error("input {axis} size must be non-zero (only the batch may be empty), got shape {shape:?}")]
    ZeroSize {
        /// Name of the axis (`channels`, `spatial axis 0`, ...).
        axis: String,
        /// The logical (N, C, spatial...) shape.
        shape: Vec<usize>,
    },
    /// The output would have fewer than one element along a spatial axis.
    #[error(
        "output size is too small: spatial axis {axis} of size {input} gives output size {output} with these parameters"
    )]
    EmptyOutput {
        /// Spatial axis (0-based).
        axis: usize,
        /// Input size on that axis.
        input: usize,
        /// The computed output size (< 1).
        output: i64,
    },
    /// A size computation overflowed, or a quantity exceeds what the GPU can index with 32 bits.
    #[error("{what} is too large: {value} exceeds the limit of {limit}")]
    TooLarge {
        /// What overflowed.
        what: String,
        /// The size asked for (saturated at `u128::MAX`).
        value: u128,
        /// The largest value allowed.
        limit: u128,
    },
    /// A buffer or slice has the wrong number of elements or bytes.
    #[error("{what}: expected {expected}, got {found}")]
    ShapeMismatch {
        /// Which argument.
        what: String,
        /// The size required.
        expected: u64,
        /// The size given.
        found: u64,
    },
    /// Backward received indices that no forward pass with these parameters could produce.
    #[error(
        "{count} of the indices cannot come from a forward pass with these parameters (outside the plane, outside their own window, or -1 where the window holds real elements)"
    )]
    InvalidIndices {
        /// How many output positions had an invalid index.
        count: u64,
    },
    /// A GPU buffer offset does not meet an alignment requirement.
    #[error("{what} offset {offset} must be a multiple of {alignment}")]
    Misaligned {
        /// Which buffer.
        what: String,
        /// The offset given.
        offset: u64,
        /// The alignment required.
        alignment: u64,
    },
    /// A buffer lacks a usage flag the operation needs.
    #[error("{what} buffer lacks the usage {usage}")]
    BufferUsage {
        /// Which buffer.
        what: String,
        /// The missing usage flag(s).
        usage: String,
    },
    /// The element type is not available on this adapter (f16 without `SHADER_F16`).
    #[error(
        "{dtype} needs the {feature} feature, which adapter \"{adapter}\" ({backend}) does not offer; use f32 there"
    )]
    MissingFeature {
        /// The element type asked for.
        dtype: &'static str,
        /// The wgpu feature it needs.
        feature: &'static str,
        /// The adapter's name.
        adapter: String,
        /// The adapter's backend.
        backend: String,
    },
    /// One (n, c) plane (channels-last: one image) is larger than one storage binding.
    #[error(
        "one {unit} needs {bytes} bytes in one binding, above the device's max_storage_buffer_binding_size of {limit} bytes"
    )]
    BindingTooSmall {
        /// `plane` or `image`.
        unit: &'static str,
        /// Bytes one unit needs.
        bytes: u64,
        /// The device's binding limit.
        limit: u64,
    },
    /// A [`ContextOptions`](crate::ContextOptions) field has a value no device can work with.
    #[error("ContextOptions::{option} = {value}: {reason}")]
    InvalidOption {
        /// The field.
        option: &'static str,
        /// The value given.
        value: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// No GPU adapter was found.
    #[error(
        "no GPU adapter found{detail}. Install a software one: `apt-get install mesa-vulkan-drivers` (Vulkan lavapipe) or Mesa's EGL/llvmpipe for GL, and check WGPU_BACKEND / WGPU_ADAPTER_NAME"
    )]
    NoAdapter {
        /// What was asked for (for instance the `WGPU_ADAPTER_NAME` filter), or empty.
        detail: String,
    },
    /// The adapter refused to create a device.
    #[error("could not create a device on adapter \"{adapter}\": {reason}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's message.
        reason: String,
    },
    /// The device ran out of memory (or an allocation above its limits was asked for).
    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),
    /// A wgpu validation or internal error.
    #[error("GPU error: {0}")]
    Device(String),
    /// The device was lost; every later call on this context fails with this error.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// Waiting for the GPU took longer than the context's timeout.
    #[error("timed out after {millis} ms waiting for the GPU")]
    Timeout {
        /// The timeout that elapsed, in milliseconds.
        millis: u64,
    },
    /// Mapping a buffer for reading failed.
    #[error("could not map a GPU buffer for reading: {0}")]
    BufferMap(String),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// [`RecordOptions::variant`](crate::RecordOptions::variant) names a kernel variant that
    /// cannot run this problem over these buffers.
    #[error("kernel variant {variant} cannot run this {direction} pass; these can: {applicable}")]
    VariantNotApplicable {
        /// The variant asked for.
        variant: String,
        /// `forward` or `backward`.
        direction: String,
        /// The variants that can, comma-separated, the default first.
        applicable: String,
    },
    /// The data is in a form wgpool does not handle (for instance float64 `.npy` input).
    #[error("{0}")]
    Unsupported(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
