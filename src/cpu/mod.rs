//! The CPU path: the same operations and parameter types as the GPU path.
//!
//! - [`forward`] / [`backward`]: the fast path (multi-threaded with the default `parallel`
//!   feature), bit-exact with the reference; [`forward_values`] without the indices.
//! - [`mod@reference`]: the simple mirror of the shaders, file for file
//!   (`max_pool_forward.rs` ↔ `shaders/max_pool_forward.wgsl`, `max_pool_backward.rs` ↔
//!   `shaders/max_pool_backward.wgsl`, `max_pool_backward_tiled.rs` ↔
//!   `shaders/max_pool_backward_tiled.wgsl`, the row-blocked `*_rows.rs` ↔ `shaders/*_rows.wgsl`
//!   and `max_pool_forward_span.rs` ↔ `shaders/max_pool_forward_span.wgsl`,
//!   `max_pool_backward_cells.rs` ↔ `shaders/max_pool_backward_cells.wgsl`, and the workgroup-memory tiles `*_shared.rs` ↔ `shaders/*_shared.wgsl`).
//!   Every other result is checked against it.

mod fast;
mod max_pool_backward;
mod max_pool_backward_cells;
mod max_pool_backward_rows;
mod max_pool_backward_shared;
mod max_pool_backward_tiled;
mod max_pool_backward_tiled_rows;
mod max_pool_forward;
mod max_pool_forward_rows;
mod max_pool_forward_shared;
mod max_pool_forward_span;

pub use fast::{backward_into, forward_into, forward_values, forward_values_into};
pub use max_pool_backward::{
    GradientSum, anchor, candidate_windows, gradient_term, index_valid, real_taps, window_contains, window_has_real_tap,
};

use crate::element::Element;
use crate::error::{Error, Result};
use crate::params::{Geometry, PoolSpec};

/// Values and argmax indices of a forward pass, in the layout of the spec.
///
/// Indices are u32 positions inside the (n, c) plane; [`crate::NO_INDEX`] (`u32::MAX`) stands for
/// PyTorch-style −1 (a window holding padding only).
#[derive(Debug, Clone, PartialEq)]
pub struct Pooled<T> {
    /// The pooled values.
    pub values: Vec<T>,
    /// The argmax index of every window.
    pub indices: Vec<u32>,
}

pub(crate) fn check_len(what: &str, expected: usize, found: usize) -> Result<()> {
    if expected != found {
        return Err(Error::ShapeMismatch {
            what: format!("{what} length (elements)"),
            expected: expected as u64,
            found: found as u64,
        });
    }
    Ok(())
}

/// The simple reference implementation that mirrors the shaders.
pub mod reference {
    pub use super::max_pool_backward::{max_pool_backward, max_pool_backward_invocation};
    pub use super::max_pool_backward_cells::{
        cell_size, cells_eligible, cells_invocations, max_pool_backward_cells, max_pool_backward_cells_invocation,
    };
    pub use super::max_pool_backward_rows::{
        fixed_cover_applies, gather_block_rows, gather_rows_eligible, gather_rows_invocations, max_pool_backward_rows,
        max_pool_backward_rows_invocation,
    };
    pub use super::max_pool_backward_shared::{
        backward_shared_workgroups, max_pool_backward_shared, max_pool_backward_shared_workgroup,
    };
    pub use super::max_pool_backward_tiled::{max_pool_backward_tiled, max_pool_backward_tiled_invocation};
    pub use super::max_pool_backward_tiled_rows::{
        max_pool_backward_tiled_rows, max_pool_backward_tiled_rows_invocation,
    };
    pub use super::max_pool_forward::{max_pool_forward, max_pool_forward_invocation};
    pub use super::max_pool_forward_rows::{max_pool_forward_rows, max_pool_forward_rows_invocation, rows_eligible};
    pub use super::max_pool_forward_shared::{
        BACKWARD_SHARED_CAPACITY, FORWARD_SHARED_CAPACITY, backward_window_tile, forward_input_tile,
        forward_shared_workgroups, max_pool_forward_shared, max_pool_forward_shared_workgroup, shared_tile,
    };
    pub use super::max_pool_forward_span::{
        max_pool_forward_span, max_pool_forward_span_invocation, span_eligible, span_items,
    };
    use super::*;

    /// Forward pass (values and indices) on the CPU, one output at a time.
    pub fn forward<T: Element>(spec: &PoolSpec, input: &[T]) -> Result<Pooled<T>> {
        let g = spec.validate()?;
        check_len("input", g.input_len(), input.len())?;
        let mut out = Pooled { values: vec![T::ZERO; g.output_len()], indices: vec![0; g.output_len()] };
        max_pool_forward(&g, input, &mut out.values, &mut out.indices);
        Ok(out)
    }

    /// Backward pass on the CPU: the input gradient, or [`Error::InvalidIndices`].
    pub fn backward<T: Element>(spec: &PoolSpec, grad_output: &[T], indices: &[u32]) -> Result<Vec<T>> {
        let g = spec.validate()?;
        check_backward_lens(&g, grad_output.len(), indices.len())?;
        let mut grad_input = vec![T::ZERO; g.input_len()];
        let invalid = max_pool_backward(&g, grad_output, indices, &mut grad_input);
        if invalid > 0 {
            return Err(Error::InvalidIndices { count: invalid });
        }
        Ok(grad_input)
    }
}

pub(crate) fn check_backward_lens(g: &Geometry, grad_output: usize, indices: usize) -> Result<()> {
    check_len("grad_output", g.output_len(), grad_output)?;
    check_len("indices", g.output_len(), indices)
}

/// Forward pass on the CPU.
///
/// ```
/// use wgpool::{cpu, InputShape, PoolParams, PoolSpec};
/// let spec = PoolSpec::new(InputShape::nchw(1, 1, 2, 4), PoolParams::new([2, 2]));
/// let out = cpu::forward(&spec, &[1.0f32, 5.0, 2.0, 2.0, 3.0, f32::NAN, 2.0, 7.0]).unwrap();
/// assert!(out.values[0].is_nan() && out.indices[0] == 5); // NaN wins
/// assert_eq!((out.values[1], out.indices[1]), (7.0, 7));
/// ```
pub fn forward<T: Element>(spec: &PoolSpec, input: &[T]) -> Result<Pooled<T>> {
    fast::forward(spec, input)
}

/// Backward pass on the CPU: `grad_input[n, c, idx] += grad_output` in output order.
///
/// ```
/// use wgpool::{cpu, InputShape, PoolParams, PoolSpec};
/// let spec = PoolSpec::new(InputShape::nchw(1, 1, 1, 4), PoolParams::new([1, 2]).stride([1, 1]));
/// // Three overlapping windows; element 1 is the max of the first two.
/// let gi = cpu::backward(&spec, &[1.0f32, 2.0, 4.0], &[1, 1, 3]).unwrap();
/// assert_eq!(gi, vec![0.0, 3.0, 0.0, 4.0]);
/// assert!(cpu::backward(&spec, &[1.0f32, 2.0, 4.0], &[1, 0, 3]).is_err()); // 0 is outside window 1
/// ```
pub fn backward<T: Element>(spec: &PoolSpec, grad_output: &[T], indices: &[u32]) -> Result<Vec<T>> {
    fast::backward(spec, grad_output, indices)
}
