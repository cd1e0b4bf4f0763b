//! GPU-resident tensors: [`GpuTensor`], and forward and backward passes that take and return them
//! without a trip through host memory.
//!
//! A [`GpuTensor`] is a wgpu buffer, a byte offset into it, a logical [`InputShape`] and a
//! [`Layout`]; its element type is the type parameter (`f32`, [`f16`](crate::f16), or `u32` for
//! indices), so handing a values tensor to a parameter that wants indices does not compile.
//! [`Context::forward_tensor`] returns the values and indices as tensors that
//! [`Context::backward_tensor`] takes directly; the count of invalid indices stays on the GPU in an
//! [`InvalidCount`] until the caller chooses to read it. A training step therefore uploads once,
//! downloads once (or never), and keeps everything in between on the device.
//!
//! Every function that waits for something has an `_async` form (what runs in the browser) and a
//! blocking form (native only, [`pollster`] underneath). The `record_*` functions record into a
//! caller's `CommandEncoder` and wait for nothing.

use std::fmt::Debug;
use std::marker::PhantomData;

use crate::element::{DType, Element};
use crate::error::{Error, Result};
use crate::gpu::{BackwardBuffers, BufferRegion, Context, ForwardBuffers, RecordOptions, scope_error};
use crate::params::{InputShape, Layout, PoolSpec};

/// Usages of the buffers wgpool allocates for tensors: bindable, uploadable, downloadable.
const TENSOR_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);
/// wgpu's copy granularity (`wgpu::COPY_BUFFER_ALIGNMENT`).
const COPY_ALIGN: u64 = wgpu::COPY_BUFFER_ALIGNMENT;

mod sealed {
    pub trait Sealed {}
    impl<T: crate::Element> Sealed for T {}
    impl Sealed for u32 {}
}

/// An element type a [`GpuTensor`] can hold: the pooled element types `f32` and
/// [`f16`](crate::f16), and `u32` for argmax indices.
pub trait TensorElement: bytemuck::Pod + Send + Sync + Debug + sealed::Sealed + 'static {
    /// `f32`, `f16` or `u32`, for messages.
    const NAME: &'static str;
}

/// Every [`Element`] (`f32`, [`f16`](crate::f16)): what [`Context::forward_tensor`] pools.
impl<T: Element> TensorElement for T {
    const NAME: &'static str = match T::DTYPE {
        DType::F32 => "f32",
        DType::F16 => "f16",
    };
}
impl TensorElement for u32 {
    const NAME: &'static str = "u32";
}

/// A tensor in GPU memory: a wgpu buffer, the byte offset where the tensor starts, its logical
/// shape and its layout. The element type `T` is `f32`, [`f16`](crate::f16) or `u32` (indices).
///
/// Tensors that wgpool allocates ([`GpuTensor::upload`], [`GpuTensor::zeros`],
/// [`Context::forward_tensor`], ...) own their buffer; [`GpuTensor::from_buffer`] shares a buffer of
/// the caller's (a `wgpu::Buffer` is a reference-counted handle, so the memory lives as long as
/// either side holds it). Cloning a tensor shares the buffer too; it never copies the data.
///
/// The tensor occupies `offset .. offset + len · size_of::<T>()` of its buffer, rounded outwards
/// to multiples of 4 bytes (wgpu copies and the shaders' bindings work on whole 4-byte words): an
/// `f16` tensor of odd length also covers the 2 bytes after its last element.
///
/// Every function that waits for something comes in two forms: `name_async` returns a future
/// (what runs in the browser, and what async code awaits) and `name` blocks on it with
/// [`pollster`] (native targets only). Functions that only record into a `CommandEncoder` wait for
/// nothing and have one form.
///
/// ```
/// # fn main() -> Result<(), wgpool::Error> {
/// use wgpool::{Context, GpuTensor, InputShape, Layout};
/// let ctx = Context::new()?;
/// let shape = InputShape::nchw(1, 2, 2, 2);
/// let data: Vec<f32> = (0..8).map(|i| i as f32).collect();
/// let tensor = GpuTensor::upload(&ctx, shape, Layout::ChannelsFirst, &data)?;
/// assert_eq!(tensor.dims(), vec![1, 2, 2, 2]);
/// assert_eq!(tensor.download(&ctx)?, data);
/// # Ok(()) }
/// ```
///
/// The element type is part of the tensor's type, so pooled values cannot pass for indices:
///
/// ```compile_fail
/// # fn main() -> Result<(), wgpool::Error> {
/// # use wgpool::{Context, GpuTensor, InputShape, PoolParams, PoolSpec};
/// # let ctx = Context::new()?;
/// # let spec = PoolSpec::new(InputShape::nchw(1, 1, 2, 2), PoolParams::new([2, 2]));
/// # let input = GpuTensor::upload(&ctx, spec.input.clone(), spec.layout, &[0.0f32; 4])?;
/// let pooled = ctx.forward_tensor(&spec, &input)?;
/// ctx.backward_tensor(&spec, &pooled.values, &pooled.values)?; // expected `GpuTensor<u32>`
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct GpuTensor<T: TensorElement> {
    buffer: wgpu::Buffer,
    offset: u64,
    shape: InputShape,
    layout: Layout,
    len: usize,
    element: PhantomData<T>,
}

impl<T: TensorElement> GpuTensor<T> {
    /// Wraps a region of a caller's buffer, which needs `STORAGE` usage (plus `COPY_DST` to
    /// [`write`](GpuTensor::write) it and `COPY_SRC` to [`download`](GpuTensor::download) it).
    ///
    /// `offset` must be a multiple of the element size, and the buffer must hold the tensor's
    /// 4-byte-rounded span (see [`GpuTensor`]; an empty tensor needs no bytes, only an offset
    /// no greater than the buffer's size); otherwise [`Error::Misaligned`] or
    /// [`Error::ShapeMismatch`]. A shape whose bytes, or whose span's end, do not fit in a
    /// `u64` is [`Error::TooLarge`].
    ///
    /// ```
    /// # fn main() -> Result<(), wgpool::Error> {
    /// use wgpool::{Context, GpuTensor, InputShape, Layout, wgpu};
    /// let ctx = Context::new()?;
    /// // One buffer of the caller's holding two 1×1×2×2 tensors, the second at byte 256.
    /// let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
    ///     label: Some("my activations"),
    ///     size: 512,
    ///     usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
    ///     mapped_at_creation: false,
    /// });
    /// let second = GpuTensor::<f32>::from_buffer(&buffer, 256, InputShape::nchw(1, 1, 2, 2), Layout::ChannelsFirst)?;
    /// second.write(&ctx, &[1.0, 2.0, 3.0, 4.0])?;
    /// assert_eq!(second.download(&ctx)?, [1.0, 2.0, 3.0, 4.0]);
    /// assert!(GpuTensor::<f32>::from_buffer(&buffer, 2, InputShape::nchw(1, 1, 2, 2), Layout::ChannelsFirst).is_err());
    /// # Ok(()) }
    /// ```
    pub fn from_buffer(buffer: &wgpu::Buffer, offset: u64, shape: InputShape, layout: Layout) -> Result<Self> {
        let len = shape.numel()?;
        // Checked here, so that `size_bytes` never overflows for any tensor (the allocating
        // constructors check it through `tensor_bytes`).
        data_bytes::<T>(len)?;
        let tensor = Self { buffer: buffer.clone(), offset, shape, layout, len, element: PhantomData };
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::BufferUsage { what: "tensor".into(), usage: "STORAGE".into() });
        }
        let elem = std::mem::size_of::<T>() as u64;
        if !offset.is_multiple_of(elem) {
            return Err(Error::Misaligned { what: format!("{} tensor", T::NAME), offset, alignment: elem });
        }
        let (_, end) = tensor.span()?;
        if end > buffer.size() {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "buffer size in bytes for a {} tensor of dims {:?} at offset {offset} (rounded up to 4)",
                    T::NAME,
                    tensor.dims()
                ),
                expected: end,
                found: buffer.size(),
            });
        }
        Ok(tensor)
    }

    /// Blocking [`GpuTensor::zeros_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn zeros(ctx: &Context, shape: InputShape, layout: Layout) -> Result<Self> {
        pollster::block_on(Self::zeros_async(ctx, shape, layout))
    }

    /// A new tensor of zeros in a buffer of its own (`STORAGE | COPY_SRC | COPY_DST`).
    ///
    /// Allocation failures come back as [`Error::OutOfMemory`] or [`Error::TooLarge`]; the future
    /// waits for nothing else.
    pub async fn zeros_async(ctx: &Context, shape: InputShape, layout: Layout) -> Result<Self> {
        Self::allocate(ctx, shape, layout, Scopes::Await).await
    }

    async fn allocate(ctx: &Context, shape: InputShape, layout: Layout, scopes: Scopes) -> Result<Self> {
        let len = shape.numel()?;
        let buffer = create_buffer(ctx, "wgpool tensor", tensor_bytes::<T>(len)?, TENSOR_USAGE, scopes).await?;
        Ok(Self { buffer, offset: 0, shape, layout, len, element: PhantomData })
    }

    /// Blocking [`GpuTensor::upload_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn upload(ctx: &Context, shape: InputShape, layout: Layout, data: &[T]) -> Result<Self> {
        pollster::block_on(Self::upload_async(ctx, shape, layout, data))
    }

    /// A new tensor holding `data` (in `layout` order) in a buffer of its own.
    ///
    /// The data is copied into staging memory before the future completes (`data` may be
    /// dropped at once) and reaches the buffer ahead of any later submission on the context's
    /// queue, as with [`GpuTensor::write`]. The future never waits for the GPU: allocation
    /// errors are [`Error::OutOfMemory`], the errors of a staged write those of
    /// [`GpuTensor::write`], and a wrong `data.len()` is [`Error::ShapeMismatch`].
    pub async fn upload_async(ctx: &Context, shape: InputShape, layout: Layout, data: &[T]) -> Result<Self> {
        let len = shape.numel()?;
        check_len("upload data length (elements)", len, data.len())?;
        let tensor = Self::zeros_async(ctx, shape, layout).await?;
        tensor.write_unchecked(ctx, data)?;
        Ok(tensor)
    }

    /// Overwrites the tensor with `data` (in its layout's order); the buffer needs `COPY_DST`
    /// usage and the offset must be a multiple of 4.
    ///
    /// The write is staged at once and lands before the next submission on the context's queue,
    /// after every earlier one, so it waits for nothing. This is how a training loop refills one
    /// input tensor step after step. From
    /// [`ContextOptions::staged_writes_from`](crate::ContextOptions::staged_writes_from) bytes
    /// (on native targets) the data goes through one of the context's pooled staging buffers,
    /// reused from write to write, and a copy submitted at once; smaller writes through
    /// `queue.write_buffer`. An odd-length `f16` tensor gets zeros in the 2 bytes after its last
    /// element (whole 4-byte words are written).
    ///
    /// Errors: a lost device is [`Error::DeviceLost`]. A write that the device refuses (for
    /// instance into a destroyed buffer) is [`Error::OutOfMemory`] or [`Error::Device`], this
    /// call's and no other's; in the browser, though, the errors of a `queue.write_buffer` write
    /// go to the device's error handler (see [`Context::take_uncaptured_error`]), since its
    /// error scopes answer only through the event loop.
    pub fn write(&self, ctx: &Context, data: &[T]) -> Result<()> {
        check_len("write data length (elements)", self.len, data.len())?;
        if !self.buffer.usage().contains(wgpu::BufferUsages::COPY_DST) {
            return Err(Error::BufferUsage { what: "tensor (write)".into(), usage: "COPY_DST".into() });
        }
        if !self.offset.is_multiple_of(COPY_ALIGN) {
            return Err(Error::Misaligned {
                what: format!("{} tensor (write)", T::NAME),
                offset: self.offset,
                alignment: COPY_ALIGN,
            });
        }
        self.write_unchecked(ctx, data)
    }

    /// Writes `data` at the tensor's offset in whole 4-byte words: an odd `f16` tail is padded
    /// with zeros.
    fn write_unchecked(&self, ctx: &Context, data: &[T]) -> Result<()> {
        ctx.write_bytes(&self.buffer, self.offset, bytemuck::cast_slice(data))
    }

    /// Blocking [`GpuTensor::download_async`]: waits for the GPU (with the context's timeout).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn download(&self, ctx: &Context) -> Result<Vec<T>> {
        pollster::block_on(self.download_async(ctx))
    }

    /// Copies the tensor to host memory, in its layout's order. The buffer needs `COPY_SRC`.
    ///
    /// The copy is submitted after everything submitted before it, so it sees the results of
    /// earlier passes. On native targets the future blocks inside `device.poll` while the GPU
    /// works (up to the context's timeout, then [`Error::Timeout`]); in the browser it yields to
    /// the event loop until `map_async` completes. The readback buffer is the context's, kept in
    /// its buffer pool for the next download of that size (see [`Context::clear_caches`]).
    pub async fn download_async(&self, ctx: &Context) -> Result<Vec<T>> {
        if self.len == 0 {
            return Ok(vec![]);
        }
        if !self.buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
            return Err(Error::BufferUsage { what: "tensor (download)".into(), usage: "COPY_SRC".into() });
        }
        let (start, end) = self.span()?;
        let first = (self.offset - start) as usize;
        let len = self.len * std::mem::size_of::<T>();
        ctx.read_region(&self.buffer, start, end - start, |bytes| crate::gpu::pod_vec(&bytes[first..first + len])).await
    }

    /// The buffer (shared with every clone of this tensor).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    /// Byte offset of the first element in [`GpuTensor::buffer`].
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// The buffer and offset, for the encoder-level API ([`Context::record_forward`], ...).
    pub fn region(&self) -> BufferRegion<'_> {
        BufferRegion::new(&self.buffer, self.offset)
    }
    /// The tensor's bytes (rounded up to 4) as a binding for a bind group of your own kernels.
    /// An empty tensor's binding has 4 bytes (wgpu has no empty bindings), which its buffer
    /// must hold after the offset for the bind group to be valid.
    ///
    /// Storage bindings must start at a multiple of the device's
    /// `min_storage_buffer_offset_alignment` (256 on most devices): tensors wgpool allocates
    /// start at 0; for [`GpuTensor::from_buffer`] tensors that is the caller's choice of offset.
    pub fn binding(&self) -> wgpu::BufferBinding<'_> {
        let size = self.size_bytes().next_multiple_of(COPY_ALIGN).max(COPY_ALIGN);
        wgpu::BufferBinding { buffer: &self.buffer, offset: self.offset, size: wgpu::BufferSize::new(size) }
    }
    /// The logical shape (N, C, spatial...).
    pub fn shape(&self) -> &InputShape {
        &self.shape
    }
    /// The physical layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// The dimensions in memory order (e.g. `[N, H, W, C]` for a channels-last 2-D tensor).
    pub fn dims(&self) -> Vec<usize> {
        self.shape.dims(self.layout)
    }
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the tensor has no elements (an empty batch).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Bytes of data (without the rounding to 4 of [`GpuTensor`]'s span).
    pub fn size_bytes(&self) -> u64 {
        // Every constructor has checked that this product fits.
        self.len as u64 * std::mem::size_of::<T>() as u64
    }

    /// The 4-byte-aligned byte range the tensor covers; empty at the offset for an empty
    /// tensor, which covers no bytes.
    fn span(&self) -> Result<(u64, u64)> {
        let bytes = self.size_bytes();
        if bytes == 0 {
            return Ok((self.offset, self.offset));
        }
        let start = self.offset / COPY_ALIGN * COPY_ALIGN;
        let end = self.offset.checked_add(bytes).and_then(|e| e.checked_next_multiple_of(COPY_ALIGN));
        let end = end.ok_or_else(|| Error::TooLarge {
            what: format!("{} tensor end offset (rounded up to 4)", T::NAME),
            value: (self.offset as u128 + bytes as u128).next_multiple_of(COPY_ALIGN as u128),
            limit: u64::MAX as u128,
        })?;
        Ok((start, end))
    }
}

impl<T: Element> GpuTensor<T> {
    /// The element type, [`DType::F32`] or [`DType::F16`].
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }
}

/// The outputs of a forward pass on the GPU: pooled values and argmax indices, in the spec's
/// layout and output shape ([`crate::NO_INDEX`] for a window of padding only).
#[derive(Debug, Clone)]
pub struct PooledTensors<T: Element> {
    /// The pooled values.
    pub values: GpuTensor<T>,
    /// The argmax of every window, as a position inside its (n, c) plane; what
    /// [`Context::backward_tensor`] takes.
    pub indices: GpuTensor<u32>,
}

impl<T: Element> PooledTensors<T> {
    /// Blocking [`PooledTensors::allocate_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn allocate(ctx: &Context, spec: &PoolSpec) -> Result<Self> {
        pollster::block_on(Self::allocate_async(ctx, spec))
    }

    /// Output tensors for `spec` (zeros), to reuse with [`Context::record_forward_tensor_into`]
    /// step after step.
    pub async fn allocate_async(ctx: &Context, spec: &PoolSpec) -> Result<Self> {
        Self::allocate_with(ctx, spec, Scopes::Await).await
    }

    async fn allocate_with(ctx: &Context, spec: &PoolSpec, scopes: Scopes) -> Result<Self> {
        let out = spec.validate()?.output_shape();
        Ok(Self {
            values: GpuTensor::allocate(ctx, out.clone(), spec.layout, scopes).await?,
            indices: GpuTensor::allocate(ctx, out, spec.layout, scopes).await?,
        })
    }
}

/// The outputs of a backward pass on the GPU: the input gradient and the GPU-side count of
/// invalid indices that tells whether it can be used.
#[derive(Debug, Clone)]
pub struct BackwardTensors<T: Element> {
    /// The gradient of the input, in the spec's input shape and layout. Meaningless when
    /// [`BackwardTensors::invalid_count`] reports invalid indices.
    pub grad_input: GpuTensor<T>,
    /// The number of invalid indices the pass met, still on the GPU.
    pub invalid_count: InvalidCount,
}

impl<T: Element> BackwardTensors<T> {
    /// Blocking [`BackwardTensors::allocate_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn allocate(ctx: &Context, spec: &PoolSpec) -> Result<Self> {
        pollster::block_on(Self::allocate_async(ctx, spec))
    }

    /// Output tensors for `spec`, to reuse with [`Context::record_backward_tensor_into`].
    pub async fn allocate_async(ctx: &Context, spec: &PoolSpec) -> Result<Self> {
        Self::allocate_with(ctx, spec, Scopes::Await).await
    }

    async fn allocate_with(ctx: &Context, spec: &PoolSpec, scopes: Scopes) -> Result<Self> {
        spec.validate()?;
        Ok(Self {
            grad_input: GpuTensor::allocate(ctx, spec.input.clone(), spec.layout, scopes).await?,
            invalid_count: InvalidCount::allocate(ctx, scopes).await?,
        })
    }

    /// Blocking [`BackwardTensors::check_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn check(&self, ctx: &Context) -> Result<&GpuTensor<T>> {
        pollster::block_on(self.check_async(ctx))
    }

    /// Reads the invalid-index count ([`InvalidCount::read_async`]) and returns the input
    /// gradient if it is zero, [`Error::InvalidIndices`] otherwise.
    pub async fn check_async(&self, ctx: &Context) -> Result<&GpuTensor<T>> {
        self.invalid_count.read_async(ctx).await?;
        Ok(&self.grad_input)
    }
}

/// A u32 on the GPU that a backward pass sets to the number of indices no forward pass could
/// have produced; non-zero means the pass's input gradient must not be used.
///
/// The count stays on the device until [`InvalidCount::read`] fetches it, so a training step can
/// run backward, the optimizer and the next forward without waiting, and check later (for
/// instance once per epoch, with a counter per step).
///
/// ```
/// # fn main() -> Result<(), wgpool::Error> {
/// use wgpool::{Context, Error, GpuTensor, InputShape, PoolParams, PoolSpec};
/// let ctx = Context::new()?;
/// let spec = PoolSpec::new(InputShape::nchw(1, 1, 2, 2), PoolParams::new([2, 2]));
/// let grad_output = GpuTensor::upload(&ctx, InputShape::nchw(1, 1, 1, 1), spec.layout, &[1.0f32])?;
/// // Index 7 lies outside the 2×2 plane: no forward pass writes it.
/// let indices = GpuTensor::upload(&ctx, InputShape::nchw(1, 1, 1, 1), spec.layout, &[7u32])?;
/// let backward = ctx.backward_tensor(&spec, &grad_output, &indices)?; // does not wait
/// assert_eq!(backward.invalid_count.read(&ctx), Err(Error::InvalidIndices { count: 1 }));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct InvalidCount {
    buffer: wgpu::Buffer,
    offset: u64,
}

impl InvalidCount {
    /// Blocking [`InvalidCount::new_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(ctx: &Context) -> Result<Self> {
        pollster::block_on(Self::new_async(ctx))
    }

    /// A counter in a 4-byte buffer of its own (zero until a backward pass writes it).
    pub async fn new_async(ctx: &Context) -> Result<Self> {
        Self::allocate(ctx, Scopes::Await).await
    }

    async fn allocate(ctx: &Context, scopes: Scopes) -> Result<Self> {
        Ok(Self { buffer: create_buffer(ctx, "wgpool invalid_count", 4, TENSOR_USAGE, scopes).await?, offset: 0 })
    }

    /// A counter at `offset` (a multiple of 4) in a caller's buffer with `STORAGE | COPY_DST`
    /// usage (and `COPY_SRC` to [`read`](InvalidCount::read) it).
    pub fn from_buffer(buffer: &wgpu::Buffer, offset: u64) -> Result<Self> {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        if !buffer.usage().contains(usage) {
            return Err(Error::BufferUsage { what: "invalid_count".into(), usage: "STORAGE | COPY_DST".into() });
        }
        if !offset.is_multiple_of(4) {
            return Err(Error::Misaligned { what: "invalid_count".into(), offset, alignment: 4 });
        }
        if offset.saturating_add(4) > buffer.size() {
            return Err(Error::ShapeMismatch {
                what: format!("invalid_count buffer size in bytes (offset {offset} + 4)"),
                expected: offset.saturating_add(4),
                found: buffer.size(),
            });
        }
        Ok(Self { buffer: buffer.clone(), offset })
    }

    /// The buffer and offset, for [`BackwardBuffers::invalid_count`].
    pub fn region(&self) -> BufferRegion<'_> {
        BufferRegion::new(&self.buffer, self.offset)
    }

    /// Blocking [`InvalidCount::read_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(&self, ctx: &Context) -> Result<()> {
        pollster::block_on(self.read_async(ctx))
    }

    /// Fetches the count (after the work submitted so far): `Ok(())` for zero,
    /// [`Error::InvalidIndices`] otherwise. Waits like [`GpuTensor::download_async`].
    pub async fn read_async(&self, ctx: &Context) -> Result<()> {
        if !self.buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
            return Err(Error::BufferUsage { what: "invalid_count (read)".into(), usage: "COPY_SRC".into() });
        }
        let count =
            ctx.read_region(&self.buffer, self.offset, 4, |b| u32::from_le_bytes(b[..4].try_into().expect("4 bytes")));
        match count.await? {
            0 => Ok(()),
            count => Err(Error::InvalidIndices { count: count as u64 }),
        }
    }
}

impl Context {
    /// Records a forward pass over `input` into `encoder`, into new output tensors.
    ///
    /// Nothing is submitted: the outputs hold the results once the caller submits `encoder`.
    /// Validates like [`Context::record_forward_tensor_into`].
    ///
    /// Forward and backward in one submission, between passes of your own:
    ///
    /// ```
    /// # fn main() -> Result<(), wgpool::Error> {
    /// use wgpool::{Context, GpuTensor, InputShape, PoolParams, PoolSpec};
    /// let ctx = Context::new()?;
    /// let spec = PoolSpec::new(InputShape::nchw(1, 1, 2, 2), PoolParams::new([2, 2]));
    /// let input = GpuTensor::upload(&ctx, spec.input.clone(), spec.layout, &[1.0f32, 3.0, 2.0, 0.0])?;
    /// let grad_output = GpuTensor::upload(&ctx, InputShape::nchw(1, 1, 1, 1), spec.layout, &[0.5f32])?;
    ///
    /// let mut encoder = ctx.device().create_command_encoder(&Default::default());
    /// // ... your passes ...
    /// let pooled = ctx.record_forward_tensor(&mut encoder, &spec, &input)?;
    /// let backward = ctx.record_backward_tensor(&mut encoder, &spec, &grad_output, &pooled.indices)?;
    /// // ... more of your passes, reading backward.grad_input ...
    /// ctx.queue().submit([encoder.finish()]);
    ///
    /// assert_eq!(backward.check(&ctx)?.download(&ctx)?, [0.0, 0.5, 0.0, 0.0]);
    /// # Ok(()) }
    /// ```
    pub fn record_forward_tensor<T: Element>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        spec: &PoolSpec,
        input: &GpuTensor<T>,
    ) -> Result<PooledTensors<T>> {
        self.check_forward_input(spec, input)?;
        let outputs = allocate_now(PooledTensors::allocate_with(self, spec, Scopes::SYNC))?;
        self.record_forward_tensor_into(encoder, spec, input, &outputs)?;
        Ok(outputs)
    }

    /// Records a forward pass over `input` into `encoder`, writing `outputs` (for instance from
    /// [`PooledTensors::allocate`], reused every step: the bind groups are cached per buffer, so
    /// reusing tensors makes repeated steps create no GPU objects).
    ///
    /// Every tensor's shape and layout must match `spec` (input: `spec.input`; outputs: the
    /// output shape), else [`Error::ShapeMismatch`]; `f16` needs `SHADER_F16`
    /// ([`Error::MissingFeature`]); and the buffers must satisfy [`Context::record_forward`].
    /// On error nothing is recorded.
    pub fn record_forward_tensor_into<T: Element>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        spec: &PoolSpec,
        input: &GpuTensor<T>,
        outputs: &PooledTensors<T>,
    ) -> Result<()> {
        let out = self.check_forward_input(spec, input)?;
        check_tensor("values", &outputs.values, &out, spec.layout)?;
        check_tensor("indices", &outputs.indices, &out, spec.layout)?;
        let buffers = ForwardBuffers {
            input: input.region(),
            values: outputs.values.region(),
            indices: outputs.indices.region(),
        };
        self.record_forward(encoder, spec, T::DTYPE, &buffers, RecordOptions::default())
    }

    /// Blocking [`Context::forward_tensor_async`].
    ///
    /// ```
    /// # fn main() -> Result<(), wgpool::Error> {
    /// use wgpool::{Context, GpuTensor, InputShape, PoolParams, PoolSpec};
    /// let ctx = Context::new()?;
    /// let spec = PoolSpec::new(InputShape::nchw(1, 1, 2, 2), PoolParams::new([2, 2]));
    /// let input = GpuTensor::upload(&ctx, spec.input.clone(), spec.layout, &[1.0f32, 3.0, 3.0, -1.0])?;
    /// let pooled = ctx.forward_tensor(&spec, &input)?;
    /// assert_eq!(pooled.values.download(&ctx)?, [3.0]);
    /// assert_eq!(pooled.indices.download(&ctx)?, [1]); // ties keep the first maximum
    /// # Ok(()) }
    /// ```
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_tensor<T: Element>(&self, spec: &PoolSpec, input: &GpuTensor<T>) -> Result<PooledTensors<T>> {
        pollster::block_on(self.forward_tensor_async(spec, input))
    }

    /// Runs a forward pass over `input` into new output tensors and submits it.
    ///
    /// The future completes once the work is submitted (it waits for wgpu's error scopes, not for
    /// the GPU): download the outputs, or hand them to [`Context::backward_tensor`], when needed.
    pub async fn forward_tensor_async<T: Element>(
        &self,
        spec: &PoolSpec,
        input: &GpuTensor<T>,
    ) -> Result<PooledTensors<T>> {
        self.check_forward_input(spec, input)?;
        let outputs = PooledTensors::allocate_async(self, spec).await?;
        self.submit_scoped(|encoder| self.record_forward_tensor_into(encoder, spec, input, &outputs)).await?;
        Ok(outputs)
    }

    /// Records a values-only forward pass over `input` into `encoder`, into a new values tensor:
    /// the pooled values without the argmax indices, for inference, where no backward pass
    /// follows (see [`Context::record_forward_values`]).
    ///
    /// Nothing is submitted. Validates like [`Context::record_forward_values_tensor_into`].
    ///
    /// ```
    /// # fn main() -> Result<(), wgpool::Error> {
    /// use wgpool::{Context, GpuTensor, InputShape, PoolParams, PoolSpec};
    /// let ctx = Context::new()?;
    /// let spec = PoolSpec::new(InputShape::nchw(1, 1, 2, 4), PoolParams::new([2, 2]));
    /// let input = GpuTensor::upload(&ctx, spec.input.clone(), spec.layout, &[0.0f32, 5.0, 1.0, 2.0, 4.0, 1.0, 9.0, 3.0])?;
    /// let mut encoder = ctx.device().create_command_encoder(&Default::default());
    /// let values = ctx.record_forward_values_tensor(&mut encoder, &spec, &input)?;
    /// ctx.queue().submit([encoder.finish()]);
    /// assert_eq!(values.download(&ctx)?, [5.0, 9.0]);
    /// # Ok(()) }
    /// ```
    pub fn record_forward_values_tensor<T: Element>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        spec: &PoolSpec,
        input: &GpuTensor<T>,
    ) -> Result<GpuTensor<T>> {
        let out = self.check_forward_input(spec, input)?;
        let values = allocate_now(GpuTensor::allocate(self, out, spec.layout, Scopes::SYNC))?;
        self.record_forward_values_tensor_into(encoder, spec, input, &values)?;
        Ok(values)
    }

    /// Records a values-only forward pass over `input` into `encoder`, writing `values` (reuse it
    /// step after step, as with [`Context::record_forward_tensor_into`]).
    ///
    /// `values` must have the spec's output shape and layout, else [`Error::ShapeMismatch`];
    /// otherwise as [`Context::record_forward_values`]. On error nothing is recorded.
    pub fn record_forward_values_tensor_into<T: Element>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        spec: &PoolSpec,
        input: &GpuTensor<T>,
        values: &GpuTensor<T>,
    ) -> Result<()> {
        let out = self.check_forward_input(spec, input)?;
        check_tensor("values", values, &out, spec.layout)?;
        self.record_forward_values(encoder, spec, T::DTYPE, input.region(), values.region(), RecordOptions::default())
    }

    /// Blocking [`Context::forward_values_tensor_async`].
    ///
    /// ```
    /// # fn main() -> Result<(), wgpool::Error> {
    /// use wgpool::{Context, GpuTensor, InputShape, PoolParams, PoolSpec};
    /// let ctx = Context::new()?;
    /// let spec = PoolSpec::new(InputShape::new(1, 1, [4]), PoolParams::new([2]));
    /// let input = GpuTensor::upload(&ctx, spec.input.clone(), spec.layout, &[4.0f32, 1.0, 2.0, 8.0])?;
    /// assert_eq!(ctx.forward_values_tensor(&spec, &input)?.download(&ctx)?, [4.0, 8.0]);
    /// # Ok(()) }
    /// ```
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_values_tensor<T: Element>(&self, spec: &PoolSpec, input: &GpuTensor<T>) -> Result<GpuTensor<T>> {
        pollster::block_on(self.forward_values_tensor_async(spec, input))
    }

    /// Runs a values-only forward pass over `input` into a new values tensor and submits it;
    /// completes once submitted, like [`Context::forward_tensor_async`].
    pub async fn forward_values_tensor_async<T: Element>(
        &self,
        spec: &PoolSpec,
        input: &GpuTensor<T>,
    ) -> Result<GpuTensor<T>> {
        let out = self.check_forward_input(spec, input)?;
        let values = GpuTensor::allocate(self, out, spec.layout, Scopes::Await).await?;
        self.submit_scoped(|encoder| self.record_forward_values_tensor_into(encoder, spec, input, &values)).await?;
        Ok(values)
    }

    /// Records a backward pass into `encoder`, into a new input gradient and counter.
    ///
    /// Nothing is submitted. Validates like [`Context::record_backward_tensor_into`].
    pub fn record_backward_tensor<T: Element>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        spec: &PoolSpec,
        grad_output: &GpuTensor<T>,
        indices: &GpuTensor<u32>,
    ) -> Result<BackwardTensors<T>> {
        self.check_backward_inputs(spec, grad_output, indices)?;
        let outputs = allocate_now(BackwardTensors::allocate_with(self, spec, Scopes::SYNC))?;
        self.record_backward_tensor_into(encoder, spec, grad_output, indices, &outputs)?;
        Ok(outputs)
    }

    /// Records a backward pass into `encoder`, writing every element of `outputs.grad_input` and
    /// the count of invalid indices into `outputs.invalid_count` (cleared first).
    ///
    /// `grad_output` and `indices` must have the spec's output shape and layout, `grad_input` the
    /// input shape, else [`Error::ShapeMismatch`]; otherwise as [`Context::record_backward`].
    pub fn record_backward_tensor_into<T: Element>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        spec: &PoolSpec,
        grad_output: &GpuTensor<T>,
        indices: &GpuTensor<u32>,
        outputs: &BackwardTensors<T>,
    ) -> Result<()> {
        self.check_backward_inputs(spec, grad_output, indices)?;
        check_tensor("grad_input", &outputs.grad_input, &spec.input, spec.layout)?;
        let buffers = BackwardBuffers {
            grad_output: grad_output.region(),
            indices: indices.region(),
            grad_input: outputs.grad_input.region(),
            invalid_count: outputs.invalid_count.region(),
        };
        self.record_backward(encoder, spec, T::DTYPE, &buffers, RecordOptions::default())
    }

    /// Blocking [`Context::backward_tensor_async`].
    ///
    /// ```
    /// # fn main() -> Result<(), wgpool::Error> {
    /// use wgpool::{Context, GpuTensor, InputShape, PoolParams, PoolSpec};
    /// let ctx = Context::new()?;
    /// let spec = PoolSpec::new(InputShape::nchw(1, 1, 2, 4), PoolParams::new([2, 2]));
    /// let input = GpuTensor::upload(&ctx, spec.input.clone(), spec.layout, &[0.0f32, 5.0, 1.0, 2.0, 4.0, 1.0, 9.0, 3.0])?;
    /// let pooled = ctx.forward_tensor(&spec, &input)?;
    /// let grad_output = GpuTensor::upload(&ctx, pooled.values.shape().clone(), spec.layout, &[10.0f32, 20.0])?;
    /// let backward = ctx.backward_tensor(&spec, &grad_output, &pooled.indices)?;
    /// // Each gradient lands on its window's maximum (5.0 at 1, 9.0 at 6); after one wait:
    /// let grad_input = backward.check(&ctx)?.download(&ctx)?;
    /// assert_eq!(grad_input, [0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 20.0, 0.0]);
    /// # Ok(()) }
    /// ```
    #[cfg(not(target_arch = "wasm32"))]
    pub fn backward_tensor<T: Element>(
        &self,
        spec: &PoolSpec,
        grad_output: &GpuTensor<T>,
        indices: &GpuTensor<u32>,
    ) -> Result<BackwardTensors<T>> {
        pollster::block_on(self.backward_tensor_async(spec, grad_output, indices))
    }

    /// Runs a backward pass into a new input gradient and submits it; the invalid-index count
    /// stays on the GPU ([`BackwardTensors::invalid_count`]). Completes once submitted, like
    /// [`Context::forward_tensor_async`].
    ///
    /// A whole step in async code (any executor; here `pollster`):
    ///
    /// ```
    /// use wgpool::{Context, ContextOptions, GpuTensor, InputShape, PoolParams, PoolSpec};
    /// # fn main() -> Result<(), wgpool::Error> {
    /// pollster::block_on(async {
    ///     let ctx = Context::new_async(&ContextOptions::default()).await?;
    ///     let spec = PoolSpec::new(InputShape::new(1, 1, [4]), PoolParams::new([2]));
    ///     let input = GpuTensor::upload_async(&ctx, spec.input.clone(), spec.layout, &[4.0f32, 1.0, 2.0, 8.0]).await?;
    ///     let pooled = ctx.forward_tensor_async(&spec, &input).await?;
    ///     let ones = GpuTensor::upload_async(&ctx, InputShape::new(1, 1, [2]), spec.layout, &[1.0f32; 2]).await?;
    ///     let backward = ctx.backward_tensor_async(&spec, &ones, &pooled.indices).await?;
    ///     let grad_input = backward.check_async(&ctx).await?.download_async(&ctx).await?;
    ///     assert_eq!(grad_input, [1.0, 0.0, 0.0, 1.0]);
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub async fn backward_tensor_async<T: Element>(
        &self,
        spec: &PoolSpec,
        grad_output: &GpuTensor<T>,
        indices: &GpuTensor<u32>,
    ) -> Result<BackwardTensors<T>> {
        self.check_backward_inputs(spec, grad_output, indices)?;
        let outputs = BackwardTensors::allocate_async(self, spec).await?;
        self.submit_scoped(|encoder| self.record_backward_tensor_into(encoder, spec, grad_output, indices, &outputs))
            .await?;
        Ok(outputs)
    }

    /// Validates `spec`, the element type and the input tensor; returns the output shape.
    fn check_forward_input<T: Element>(&self, spec: &PoolSpec, input: &GpuTensor<T>) -> Result<InputShape> {
        let g = spec.validate()?;
        self.check_dtype(T::DTYPE)?;
        check_tensor("input", input, &spec.input, spec.layout)?;
        Ok(g.output_shape())
    }

    fn check_backward_inputs<T: Element>(
        &self,
        spec: &PoolSpec,
        grad_output: &GpuTensor<T>,
        indices: &GpuTensor<u32>,
    ) -> Result<()> {
        let out = spec.validate()?.output_shape();
        self.check_dtype(T::DTYPE)?;
        check_tensor("grad_output", grad_output, &out, spec.layout)?;
        check_tensor("indices", indices, &out, spec.layout)
    }
}

/// Checks that `tensor` has the layout and logical shape a pass wants.
fn check_tensor<T: TensorElement>(what: &str, tensor: &GpuTensor<T>, want: &InputShape, layout: Layout) -> Result<()> {
    if tensor.layout != layout {
        // Where the channel dimension sits in memory order is what the two layouts disagree on.
        let channel_dim = |l: Layout, rank: usize| match l {
            Layout::ChannelsFirst => 1,
            Layout::ChannelsLast => rank - 1,
        };
        return Err(Error::ShapeMismatch {
            what: format!(
                "{what} layout: the tensor is {} ({}) but the spec is {} ({}); position of the channel dimension",
                layout_name(tensor.layout),
                tensor.layout.name(),
                layout_name(layout),
                layout.name()
            ),
            expected: channel_dim(layout, want.spatial.len() + 2) as u64,
            found: channel_dim(tensor.layout, tensor.shape.spatial.len() + 2) as u64,
        });
    }
    let (found, expected) = (tensor.dims(), want.dims(layout));
    if found.len() != expected.len() {
        return Err(Error::ShapeMismatch {
            what: format!("{what} rank (dims {found:?}, the spec wants {expected:?})"),
            expected: expected.len() as u64,
            found: found.len() as u64,
        });
    }
    if let Some(i) = (0..found.len()).find(|&i| found[i] != expected[i]) {
        return Err(Error::ShapeMismatch {
            what: format!("{what} dimension {i} (dims {found:?}, the spec wants {expected:?})"),
            expected: expected[i] as u64,
            found: found[i] as u64,
        });
    }
    Ok(())
}

fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::ChannelsFirst => "channels-first",
        Layout::ChannelsLast => "channels-last",
    }
}

fn check_len(what: &str, expected: usize, found: usize) -> Result<()> {
    if expected != found {
        return Err(Error::ShapeMismatch { what: what.into(), expected: expected as u64, found: found as u64 });
    }
    Ok(())
}

/// Bytes of data of `len` elements, or [`Error::TooLarge`] where they do not fit in a `u64`.
fn data_bytes<T: TensorElement>(len: usize) -> Result<u64> {
    let elem = std::mem::size_of::<T>() as u64;
    (len as u64).checked_mul(elem).ok_or_else(|| Error::TooLarge {
        what: format!("{} tensor (bytes)", T::NAME),
        value: len as u128 * elem as u128,
        limit: u64::MAX as u128,
    })
}

/// Buffer bytes for `len` elements: [`data_bytes`] rounded up to 4, at least 4 (empty tensors
/// included). The rounding may overflow too (f16: 2^63 − 1 elements).
fn tensor_bytes<T: TensorElement>(len: usize) -> Result<u64> {
    let bytes = data_bytes::<T>(len)?;
    bytes.checked_next_multiple_of(COPY_ALIGN).map(|b| b.max(COPY_ALIGN)).ok_or_else(|| Error::TooLarge {
        what: format!("{} tensor (bytes, rounded up to 4)", T::NAME),
        value: (bytes as u128).next_multiple_of(COPY_ALIGN as u128),
        limit: u64::MAX as u128,
    })
}

/// Whether an allocation waits for wgpu's error scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scopes {
    /// Await the scopes: allocation errors come back as [`Error`]s.
    Await,
    /// Skip them: errors go to the device's error handler (the browser's scopes only answer
    /// through the event loop, which a synchronous `record_*` call cannot wait for).
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    Skip,
}

impl Scopes {
    /// What the synchronous `record_*_tensor` allocations use: native scopes answer at once.
    #[cfg(not(target_arch = "wasm32"))]
    const SYNC: Scopes = Scopes::Await;
    #[cfg(target_arch = "wasm32")]
    const SYNC: Scopes = Scopes::Skip;
}

/// Runs an allocation future with [`Scopes::SYNC`] to its end: it never waits for the GPU.
fn allocate_now<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    #[cfg(not(target_arch = "wasm32"))]
    return pollster::block_on(future);
    #[cfg(target_arch = "wasm32")]
    {
        use std::task::{Context as TaskContext, Poll, Waker};
        let mut future = std::pin::pin!(future);
        match future.as_mut().poll(&mut TaskContext::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => unreachable!("allocations without error scopes complete at once"),
        }
    }
}

/// Creates a buffer, turning allocation and validation errors into [`Error`]s where `scopes` says.
async fn create_buffer(
    ctx: &Context,
    label: &str,
    size: u64,
    usage: wgpu::BufferUsages,
    scopes: Scopes,
) -> Result<wgpu::Buffer> {
    let max = ctx.limits().max_buffer_size;
    if size > max {
        return Err(Error::TooLarge { what: "GPU buffer (bytes)".into(), value: size as u128, limit: max as u128 });
    }
    ctx.check_usable()?;
    let device = ctx.device();
    let descriptor = wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false };
    if scopes == Scopes::Skip {
        return Ok(device.create_buffer(&descriptor));
    }
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let buffer = device.create_buffer(&descriptor);
    let errors = [validation.pop(), oom.pop()];
    for error in errors {
        if let Some(e) = error.await {
            return Err(scope_error(e));
        }
    }
    Ok(buffer)
}
