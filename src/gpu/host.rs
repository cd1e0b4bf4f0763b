//! The host-slice level: upload, record, submit, read back.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::record::{BackwardBuffers, BufferRegion, ForwardBuffers, RecordOptions};
use super::{Context, scope_error};
use crate::cpu::{Pooled, check_backward_lens, check_len};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::params::PoolSpec;

/// Buffers kept between calls (host-level passes, tensor downloads, large tensor writes), reused
/// when a later call needs the same size and usage; oldest first out beyond [`POOL_BYTES`].
#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<PoolBuffer>>,
    /// Buffers created by the pool, for tests of reuse.
    created: AtomicU64,
}

/// A buffer of the pool; upload staging buffers carry the state of their map for writing.
pub(crate) struct PoolBuffer {
    buffer: wgpu::Buffer,
    map: Option<Arc<AtomicU8>>,
}

/// States of an upload staging buffer's map.
const MAP_PENDING: u8 = 0;
const MAP_DONE: u8 = 1;
const MAP_FAILED: u8 = 2;

impl From<wgpu::Buffer> for PoolBuffer {
    fn from(buffer: wgpu::Buffer) -> Self {
        Self { buffer, map: None }
    }
}

impl PoolBuffer {
    fn mapped(&self) -> bool {
        self.map.as_ref().is_some_and(|m| m.load(Ordering::Acquire) == MAP_DONE)
    }
}

/// Bytes of idle buffers the pool keeps at most: enough for every buffer of a host-level call on
/// a 100 MB input (case A or B: input, its staging, outputs, readback; 307 MB), so that
/// repeating such a call allocates nothing. [`Context::clear_caches`] releases them.
const POOL_BYTES: u64 = 512 << 20;

impl BufferPool {
    fn take(&self, device: &wgpu::Device, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) =
            free.iter().position(|b| b.map.is_none() && b.buffer.size() == size && b.buffer.usage() == usage)
        {
            return free.remove(i).buffer;
        }
        drop(free);
        self.created.fetch_add(1, Ordering::Relaxed);
        device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false })
    }

    /// An upload staging buffer of `size` bytes, mapped for writing: a pooled one whose map (see
    /// [`Context::remap_uploads`]) has completed, else a new one mapped at creation.
    fn take_mapped(&self, device: &wgpu::Device, size: u64) -> PoolBuffer {
        let fits = |b: &PoolBuffer| b.map.is_some() && b.buffer.size() == size;
        for polled in [false, true] {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            // A failed map leaves its buffer unmapped, so it cannot be written: it goes.
            free.retain(|b| b.map.as_ref().is_none_or(|m| m.load(Ordering::Acquire) != MAP_FAILED));
            if let Some(i) = free.iter().position(|b| fits(b) && b.mapped()) {
                return free.remove(i);
            }
            let pending = free.iter().any(fits);
            drop(free);
            if polled || !pending {
                break;
            }
            // The map completes in the device's maintenance, which another thread may not have
            // run yet.
            let _ = device.poll(wgpu::PollType::Poll);
        }
        self.created.fetch_add(1, Ordering::Relaxed);
        let usage = UPLOAD;
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpool upload"),
            size,
            usage,
            mapped_at_creation: true,
        });
        PoolBuffer { buffer, map: Some(Arc::new(AtomicU8::new(MAP_DONE))) }
    }

    fn give_back(&self, buffers: Vec<PoolBuffer>) {
        // A buffer beyond the whole budget is not kept (nor does it push the others out).
        let (buffers, too_large): (Vec<_>, Vec<_>) = buffers.into_iter().partition(|b| b.buffer.size() <= POOL_BYTES);
        drop(too_large);
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.extend(buffers);
        // Oldest first out (`take` keeps the order), until the idle bytes fit the budget.
        let mut bytes: u64 = free.iter().map(|b| b.buffer.size()).sum();
        let mut evict = 0;
        while bytes > POOL_BYTES {
            bytes -= free[evict].buffer.size();
            evict += 1;
        }
        let evicted: Vec<_> = free.drain(..evict).collect();
        // Released after the lock.
        drop(free);
        drop(evicted);
    }

    pub fn clear(&self) {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn len(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Buffers created so far, and the upload staging buffers among those kept now.
    pub fn counts(&self) -> (u64, usize) {
        let staging = self.free.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|b| b.map.is_some()).count();
        (self.created.load(Ordering::Relaxed), staging)
    }
}

/// Poison written into outputs before a run when [`super::ContextOptions::poison_outputs`] is set:
/// a NaN payload (as f32) / two NaNs (as f16) / an impossible index, all 0x7fa5_7fa5.
const POISON: u32 = 0x7fa5_7fa5;

const STORAGE_IN: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_DST);
const STORAGE_OUT: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);
const READBACK: wgpu::BufferUsages = wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);
/// Staging for uploads: written through a mapping, then copied into a storage buffer on the GPU.
const UPLOAD: wgpu::BufferUsages = wgpu::BufferUsages::MAP_WRITE.union(wgpu::BufferUsages::COPY_SRC);

fn padded_bytes(elements: usize, elem: usize) -> u64 {
    ((elements * elem) as u64).next_multiple_of(4).max(4)
}

impl Context {
    fn check_buffer_sizes(&self, sizes: &[u64]) -> Result<()> {
        for &size in sizes {
            if size > self.limits.max_buffer_size {
                return Err(Error::TooLarge {
                    what: "GPU buffer (bytes)".into(),
                    value: size as u128,
                    limit: self.limits.max_buffer_size as u128,
                });
            }
        }
        Ok(())
    }

    /// A storage buffer holding `data`, zero-padded to 4 bytes, written before the commands
    /// recorded into `encoder` after this (see [`Context::stage`]); the staging buffer comes
    /// back too where one was used, for [`Context::remap_uploads`] and the pool.
    fn upload<T: bytemuck::Pod>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        label: &str,
        data: &[T],
    ) -> Result<(wgpu::Buffer, Option<PoolBuffer>)> {
        let size = padded_bytes(data.len(), std::mem::size_of::<T>());
        let buffer = self.pool.take(&self.device, label, size, STORAGE_IN);
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if cfg!(target_arch = "wasm32") {
            self.write_words(&buffer, 0, bytes);
            return Ok((buffer, None));
        }
        let staging = self.stage(encoder, bytes, &buffer, 0)?;
        Ok((buffer, Some(staging)))
    }

    /// Records a copy of `bytes`, zero-padded to whole 4-byte words, into `dst` at `offset`
    /// (a multiple of 4), through a pooled staging buffer mapped for writing.
    ///
    /// `queue.write_buffer` makes wgpu allocate a staging buffer on every call: for a large write
    /// on Vulkan a memory block of its own, which the OS then faults in (lavapipe: 26–50 MB
    /// cost the same either way, 100 MB three times as much), and on GL a new GL buffer. The staging buffer returned goes to [`Context::remap_uploads`] once the
    /// copy is submitted, then back to the pool. In the browser, `writeBuffer` manages its own
    /// staging, so [`Context::write_words`] is used there.
    fn stage(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        bytes: &[u8],
        dst: &wgpu::Buffer,
        offset: u64,
    ) -> Result<PoolBuffer> {
        let size = padded_bytes(bytes.len(), 1);
        let staging = self.pool.take_mapped(&self.device, size);
        {
            let mut view =
                staging.buffer.slice(..).get_mapped_range_mut().map_err(|e| Error::BufferMap(e.to_string()))?;
            let (mut head, mut tail) = view.slice(..).split_at(bytes.len());
            head.copy_from_slice(bytes);
            tail.fill(0);
        }
        staging.buffer.unmap();
        encoder.copy_buffer_to_buffer(&staging.buffer, 0, dst, offset, size);
        Ok(staging)
    }

    /// `queue.write_buffer` of `bytes` into `dst` at `offset`, in whole 4-byte words: a last
    /// partial word is padded with zeros.
    fn write_words(&self, dst: &wgpu::Buffer, offset: u64, bytes: &[u8]) {
        let whole = bytes.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(dst, offset, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue.write_buffer(dst, offset + whole as u64, &tail);
        }
    }

    /// Writes `bytes` (zero-padded to whole words) into `dst` at `offset` (a multiple of 4)
    /// without waiting: they land before the next submission on the queue, after every earlier
    /// one. Large writes (see [`super::ContextOptions::staged_writes_from`]) go through a pooled
    /// staging buffer and a submission of their own; smaller ones through `queue.write_buffer`,
    /// which batches them into the next submission. Either way a write the device refuses is
    /// this call's error, except in the browser, where a `queue.write_buffer`'s goes to the
    /// device's error handler (see [`Context::take_uncaptured_error`]).
    pub(crate) fn write_bytes(&self, dst: &wgpu::Buffer, offset: u64, bytes: &[u8]) -> Result<()> {
        self.check_usable()?;
        if bytes.is_empty() {
            return Ok(());
        }
        #[cfg(not(target_arch = "wasm32"))]
        if bytes.len() >= self.staged_writes_from() {
            self.check_buffer_sizes(&[padded_bytes(bytes.len(), 1)])?;
            let (staging, _) =
                pollster::block_on(self.submit_scoped(|encoder| self.stage(encoder, bytes, dst, offset)))?;
            // The staging buffer goes back with its map pending; the pool hands it out again
            // once the copy has run and the map has completed.
            self.remap_uploads(std::slice::from_ref(&staging));
            self.pool.give_back(vec![staging]);
            return Ok(());
        }
        // In scopes: outside them, an error (a destroyed buffer) would reach the device's
        // handler, and this call would report success.
        #[cfg(not(target_arch = "wasm32"))]
        return self.scoped_now(|| self.write_words(dst, offset, bytes));
        #[cfg(target_arch = "wasm32")]
        {
            self.write_words(dst, offset, bytes);
            Ok(())
        }
    }

    /// See [`super::ContextOptions::staged_writes_from`].
    #[cfg(not(target_arch = "wasm32"))]
    fn staged_writes_from(&self) -> usize {
        self.options.staged_writes_from.unwrap_or(match self.info.backend {
            wgpu::Backend::Gl | wgpu::Backend::Metal => 1 << 20,
            _ => 32 << 20,
        })
    }

    /// Copies `size` bytes of `buffer` from `start` (both multiples of 4) into a pooled readback
    /// buffer after everything submitted before, maps it and hands the bytes to `take`.
    pub(crate) async fn read_region<R>(
        &self,
        buffer: &wgpu::Buffer,
        start: u64,
        size: u64,
        take: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        debug_assert!(start.is_multiple_of(4) && size.is_multiple_of(4) && size > 0, "whole words: {start}, {size}");
        self.check_usable()?;
        self.check_buffer_sizes(&[size])?;
        let (staging, submission) = self
            .submit_scoped(|encoder| {
                let staging = self.pool.take(&self.device, "wgpool readback", size, READBACK);
                encoder.copy_buffer_to_buffer(buffer, start, &staging, 0, size);
                Ok(staging)
            })
            .await?;
        let out = self.read_back(&staging, size as usize, submission, take).await?;
        // See `forward_host`: only a successful call's buffers are reused.
        self.pool.give_back(vec![staging.into()]);
        Ok(out)
    }

    /// Maps the upload staging buffers among `buffers` for writing again. The map completes with
    /// the submission that reads them (in the first device poll after it: a host-level call's
    /// wait for its results, or any later call's), so that the pool hands them out ready to
    /// write.
    fn remap_uploads(&self, buffers: &[PoolBuffer]) {
        for (b, map) in buffers.iter().filter_map(|b| Some((&b.buffer, b.map.as_ref()?))) {
            map.store(MAP_PENDING, Ordering::Release);
            let map = map.clone();
            b.slice(..).map_async(wgpu::MapMode::Write, move |r| {
                map.store(if r.is_ok() { MAP_DONE } else { MAP_FAILED }, Ordering::Release);
            });
        }
    }

    fn output(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        let buffer = self.pool.take(&self.device, label, bytes, STORAGE_OUT);
        if self.options.poison_outputs {
            let poison: Vec<u32> = vec![POISON; (bytes / 4) as usize];
            self.queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&poison));
        }
        buffer
    }

    /// Runs `record` (which creates and fills the call's buffers and records into the encoder)
    /// inside error scopes, submits, and returns what `record` returned with the submission.
    ///
    /// Every buffer creation, write and recording of a host-level call happens in here, so that a
    /// wgpu error (out of memory, validation, an invalid buffer on a lost device) comes back as an
    /// [`Error`] and never reaches the device's uncaptured-error handler (which panics on a device
    /// the caller made). The maps and unmaps of pooled buffers happen outside: the pool's states
    /// (a buffer is handed out only idle, unmapped or mapped as the call needs) rule out their
    /// validation errors, and a lost device's are dropped by wgpu.
    pub(crate) async fn submit_scoped<R>(
        &self,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<R>,
    ) -> Result<(R, wgpu::SubmissionIndex)> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgpool") });
        let recorded = record(&mut encoder);
        let submission = recorded.map(|r| (r, self.queue.submit([encoder.finish()])));
        let errors = [internal.pop(), validation.pop(), oom.pop()];
        for e in errors {
            if let Some(e) = e.await {
                return Err(self.lost_or(scope_error(e)));
            }
        }
        // A pooled staging buffer whose mapping died with the device fails in `record`; the
        // caller's own mistakes (shapes, sizes) come back as they are, at once.
        // An error wgpu reported outside any scope belongs to other work (another thread's, the
        // caller's own): it stays for `Context::take_uncaptured_error` and fails nothing here.
        submission.map_err(|e| match e {
            Error::BufferMap(_) | Error::Device(_) => self.lost_or(e),
            e => e,
        })
    }

    /// Runs `work` inside error scopes and returns its GPU errors (first the internal, then
    /// validation, then out-of-memory ones), as [`Context::submit_scoped`] does for a
    /// submission. Native only: there the scopes answer at once, while in the browser they
    /// answer through the event loop, which a synchronous caller cannot wait for.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn scoped_now<R>(&self, work: impl FnOnce() -> R) -> Result<R> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let out = work();
        // Popped innermost first, all of them, before any error returns.
        let errors = [internal.pop(), validation.pop(), oom.pop()].map(pollster::block_on);
        match errors.into_iter().flatten().next() {
            Some(e) => Err(self.lost_or(scope_error(e))),
            None => Ok(out),
        }
    }

    /// `e`, or [`Error::DeviceLost`] where the device turns out to be gone: then every object is
    /// invalid and every map fails, and the caller should hear that, not which object failed.
    /// Polls first, which runs the device-lost callback if wgpu has not reported the loss yet;
    /// and since another thread's poll (the caller's, or the background compiles') may have
    /// taken that callback an instant before running it, looks again for up to 20 ms (an error
    /// path only: a healthy device's error comes back that much later).
    pub(crate) fn lost_or(&self, e: Error) -> Error {
        #[cfg(not(target_arch = "wasm32"))]
        for _ in 0..20 {
            let _ = self.device.poll(wgpu::PollType::Poll);
            if let Err(lost) = self.check_usable() {
                return lost;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        match self.check_usable() {
            Err(lost) => lost,
            Ok(()) => e,
        }
    }

    /// The result of a map callback once the submission that uses the buffer has finished.
    ///
    /// The callback normally ran inside [`Context::wait`]; when another thread's poll collected it,
    /// it runs on that thread a moment later. Polls until it arrives, but never past the context's
    /// timeout or a lost device, so that a callback that never comes is an error, not a hang.
    #[cfg(not(target_arch = "wasm32"))]
    fn mapped<F: std::future::Future>(&self, future: F) -> Result<F::Output> {
        use std::task::{Context as TaskContext, Poll, Waker};
        let start = std::time::Instant::now();
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut TaskContext::from_waker(Waker::noop())) {
                return Ok(out);
            }
            let _ = self.device.poll(wgpu::PollType::Poll);
            self.check_usable()?;
            if let Some(timeout) = self.options.timeout
                && start.elapsed() > timeout
            {
                return Err(Error::Timeout { millis: timeout.as_millis() as u64 });
            }
            std::thread::yield_now();
        }
    }

    /// Maps `staging` and hands its first `len` bytes to `take`, which copies out what it needs
    /// (straight into the caller's vectors: one copy, not a byte vector first and then typed
    /// ones); then unmaps it.
    pub(crate) async fn read_back<R>(
        &self,
        staging: &wgpu::Buffer,
        len: usize,
        submission: wgpu::SubmissionIndex,
        take: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let slice = staging.slice(..);
        let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = sender.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        let received = {
            self.wait(Some(submission))?;
            self.mapped(receiver.receive())?
        };
        #[cfg(target_arch = "wasm32")]
        let received = {
            let _ = submission;
            receiver.receive().await
        };
        match received {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(self.lost_or(Error::BufferMap(e.to_string()))),
            None => return Err(self.lost_or(Error::BufferMap("the map callback was dropped".into()))),
        }
        let data = {
            let view = slice.get_mapped_range().map_err(|e| self.lost_or(Error::BufferMap(e.to_string())))?;
            take(&view[..len])
        };
        staging.unmap();
        Ok(data)
    }

    /// Forward pass from a host slice: values and indices (u32, `u32::MAX` for −1). Blocking.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward<T: Element>(&self, spec: &PoolSpec, input: &[T]) -> Result<Pooled<T>> {
        pollster::block_on(self.forward_async(spec, input))
    }

    /// Forward pass from a host slice.
    ///
    /// On native targets the future blocks inside `device.poll` while the GPU works; in the browser
    /// it yields to the event loop.
    pub async fn forward_async<T: Element>(&self, spec: &PoolSpec, input: &[T]) -> Result<Pooled<T>> {
        let (values, indices) = self.forward_host(spec, input, true).await?;
        Ok(Pooled { values, indices })
    }

    /// Values-only forward pass from a host slice (inference: no indices; see
    /// [`Context::record_forward_values`]). Blocking.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_values<T: Element>(&self, spec: &PoolSpec, input: &[T]) -> Result<Vec<T>> {
        pollster::block_on(self.forward_values_async(spec, input))
    }

    /// Values-only forward pass from a host slice (see [`Context::forward_async`] for how the
    /// future waits).
    pub async fn forward_values_async<T: Element>(&self, spec: &PoolSpec, input: &[T]) -> Result<Vec<T>> {
        Ok(self.forward_host(spec, input, false).await?.0)
    }

    /// The host-level forward pass: the values, and the indices where `with_indices` (else an
    /// empty vector, and the values-only pass).
    async fn forward_host<T: Element>(
        &self,
        spec: &PoolSpec,
        input: &[T],
        with_indices: bool,
    ) -> Result<(Vec<T>, Vec<u32>)> {
        self.check_usable()?;
        let g = spec.validate()?;
        self.check_dtype(T::DTYPE)?;
        check_len("input", g.input_len(), input.len())?;
        let n_out = g.output_len();
        if n_out == 0 {
            return Ok((vec![], vec![]));
        }
        let elem = T::DTYPE.size();
        let (in_bytes, val_bytes) = (padded_bytes(input.len(), elem), padded_bytes(n_out, elem));
        let idx_bytes = if with_indices { padded_bytes(n_out, 4) } else { 0 };
        self.check_buffer_sizes(&[in_bytes, val_bytes + idx_bytes])?;
        let (buffers, submission) = self
            .submit_scoped(|encoder| {
                let (input_buffer, input_staging) = self.upload(encoder, "wgpool input", input)?;
                let values = self.output("wgpool values", val_bytes);
                let staging = self.pool.take(&self.device, "wgpool readback", val_bytes + idx_bytes, READBACK);
                let (input_region, values_region) = ((&input_buffer).into(), (&values).into());
                let mut buffers: Vec<PoolBuffer> = input_staging.into_iter().collect();
                if with_indices {
                    let indices = self.output("wgpool indices", idx_bytes);
                    let regions =
                        ForwardBuffers { input: input_region, values: values_region, indices: (&indices).into() };
                    self.record_forward(encoder, spec, T::DTYPE, &regions, RecordOptions::default())?;
                    encoder.copy_buffer_to_buffer(&indices, 0, &staging, val_bytes, idx_bytes);
                    buffers.push(indices.into());
                } else {
                    let options = RecordOptions::default();
                    self.record_forward_values(encoder, spec, T::DTYPE, input_region, values_region, options)?;
                }
                encoder.copy_buffer_to_buffer(&values, 0, &staging, 0, val_bytes);
                buffers.extend([input_buffer, values, staging].map(PoolBuffer::from));
                Ok(buffers)
            })
            .await?;
        self.remap_uploads(&buffers);
        let staging = &buffers.last().expect("the staging buffer is last").buffer;
        let val_at = val_bytes as usize;
        let outputs = self
            .read_back(staging, (val_bytes + idx_bytes) as usize, submission, |bytes| {
                let values: Vec<T> = pod_vec(&bytes[..n_out * elem]);
                let indices: Vec<u32> = if with_indices { pod_vec(&bytes[val_at..val_at + n_out * 4]) } else { vec![] };
                (values, indices)
            })
            .await?;
        // Only now back to the pool: the buffers of a failed call may still be in use or mapped (a
        // timeout), so they are dropped, never reused.
        self.pool.give_back(buffers);
        Ok(outputs)
    }

    /// Backward pass from host slices: the input gradient, or [`Error::InvalidIndices`]. Blocking.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn backward<T: Element>(&self, spec: &PoolSpec, grad_output: &[T], indices: &[u32]) -> Result<Vec<T>> {
        pollster::block_on(self.backward_async(spec, grad_output, indices))
    }

    /// Backward pass from host slices (see [`Context::forward_async`] for how the future waits).
    pub async fn backward_async<T: Element>(
        &self,
        spec: &PoolSpec,
        grad_output: &[T],
        indices: &[u32],
    ) -> Result<Vec<T>> {
        self.check_usable()?;
        let g = spec.validate()?;
        self.check_dtype(T::DTYPE)?;
        check_backward_lens(&g, grad_output.len(), indices.len())?;
        let n_in = g.input_len();
        if n_in == 0 {
            return Ok(vec![]);
        }
        let elem = T::DTYPE.size();
        let (go_bytes, idx_bytes, gi_bytes) =
            (padded_bytes(grad_output.len(), elem), padded_bytes(indices.len(), 4), padded_bytes(n_in, elem));
        // grad_input and the counter share one buffer; the counter sits at an aligned offset after it.
        let counter_offset = gi_bytes.next_multiple_of(self.limits.min_storage_buffer_offset_alignment as u64);
        let out_bytes = counter_offset + 4;
        self.check_buffer_sizes(&[go_bytes, idx_bytes, out_bytes])?;
        let (buffers, submission) = self
            .submit_scoped(|encoder| {
                let (grad_output_buffer, go_staging) = self.upload(encoder, "wgpool grad_output", grad_output)?;
                let (indices_buffer, idx_staging) = self.upload(encoder, "wgpool indices", indices)?;
                let grad_input = self.output("wgpool grad_input", out_bytes);
                let staging = self.pool.take(&self.device, "wgpool readback", out_bytes, READBACK);
                let buffers = BackwardBuffers {
                    grad_output: (&grad_output_buffer).into(),
                    indices: (&indices_buffer).into(),
                    grad_input: (&grad_input).into(),
                    invalid_count: BufferRegion::new(&grad_input, counter_offset),
                };
                self.record_backward(encoder, spec, T::DTYPE, &buffers, RecordOptions::default())?;
                encoder.copy_buffer_to_buffer(&grad_input, 0, &staging, 0, out_bytes);
                let mut buffers =
                    Vec::from([staging, grad_output_buffer, indices_buffer, grad_input].map(PoolBuffer::from));
                buffers.extend(go_staging.into_iter().chain(idx_staging));
                Ok(buffers)
            })
            .await?;
        self.remap_uploads(&buffers);
        let counter_at = counter_offset as usize;
        let result = self
            .read_back(&buffers[0].buffer, out_bytes as usize, submission, |bytes| {
                let invalid = u32::from_le_bytes(bytes[counter_at..counter_at + 4].try_into().expect("4 bytes"));
                // The gradient is copied out only when it is complete.
                if invalid > 0 {
                    Err(Error::InvalidIndices { count: invalid as u64 })
                } else {
                    Ok(pod_vec(&bytes[..n_in * elem]))
                }
            })
            .await?;
        // See `forward_host`: only a successful call's buffers are reused.
        self.pool.give_back(buffers);
        result
    }
}

/// `bytes` as a vector of `U`, in one copy: a cast where the bytes are aligned for `U` (wgpu
/// aligns mappings to `wgpu::MAP_ALIGNMENT`, 8 bytes, and the regions start at multiples of 4),
/// element by element otherwise.
pub(crate) fn pod_vec<U: bytemuck::Pod>(bytes: &[u8]) -> Vec<U> {
    match bytemuck::try_cast_slice::<u8, U>(bytes) {
        Ok(elements) => elements.to_vec(),
        Err(_) => bytemuck::pod_collect_to_vec(bytes),
    }
}
