//! # wgpool
//!
//! Max pooling on any GPU through [wgpu]: forward with argmax indices and backward, for 1-D, 2-D
//! and 3-D inputs in channels-first or channels-last layout, in f32 (and f16 where the adapter has
//! `SHADER_F16`), with exactly PyTorch's values, indices and gradients — NaN, ties, padding,
//! dilation and `ceil_mode` included.
//!
//! - [`PoolSpec`] describes a problem (input shape, [`Layout`], [`PoolParams`]) and validates it
//!   the way PyTorch does.
//! - [`Context`] runs it on a GPU: [`Context::record_forward`] / [`Context::record_backward`]
//!   record into your `CommandEncoder` over your buffers; [`Context::forward`] /
//!   [`Context::backward`] go from host slices to host vectors (`_async` forms for the browser
//!   and async code).
//! - [`GpuTensor`] keeps data on the GPU: [`Context::forward_tensor`] returns values and indices
//!   that [`Context::backward_tensor`] takes directly, with the invalid-index count left on the
//!   device ([`InvalidCount`]) until you read it; the `record_*_tensor` forms record into your
//!   encoder.
//! - [`cpu`] runs the same operations on the CPU; [`cpu::reference`] mirrors the shaders and is
//!   the reference every result is checked against.
//!
//! ```
//! use wgpool::{cpu, InputShape, PoolParams, PoolSpec};
//! // torch.nn.functional.max_pool2d(x, 2, return_indices=True) on a 1×1×2×2 input:
//! let spec = PoolSpec::new(InputShape::nchw(1, 1, 2, 2), PoolParams::new([2, 2]));
//! let out = cpu::forward(&spec, &[1.0f32, 3.0, 3.0, -1.0]).unwrap();
//! assert_eq!((out.values[0], out.indices[0]), (3.0, 1)); // ties keep the first maximum
//! ```
//!
//! [wgpu]: https://wgpu.rs

#![deny(missing_docs)]

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod cases;
pub mod cpu;
mod element;
mod error;
pub mod gpu;
#[cfg(feature = "cli")]
pub mod npy;
mod params;
mod tensor;

pub use element::{DType, Element};
pub use error::{Error, Result};
pub use gpu::{
    BackwardBuffers, BufferRegion, Context, ContextOptions, ForwardBuffers, Kernel, LaneWidth, RecordOptions, Variant,
};
pub use params::{Axis, Geometry, InputShape, Layout, MAX_PLANE_ELEMENTS, NO_INDEX, PoolParams, PoolSpec, output_size};
pub use tensor::{BackwardTensors, GpuTensor, InvalidCount, PooledTensors, TensorElement};

/// Re-export of the `half` crate's `f16`, the element type of half-precision tensors.
pub use half::f16;
/// Re-export of the wgpu version wgpool is built against.
pub use wgpu;
