//! The GPU path: a [`Context`] holding a wgpu device, the compiled kernels and small caches.
//!
//! Two levels:
//! - [`Context::record_forward`] / [`Context::record_backward`] record into a caller's
//!   `CommandEncoder` over caller-owned buffers; the data never leaves the GPU.
//! - [`Context::forward`] / [`Context::backward`] (and their `_async` forms) take host slices and
//!   return host vectors.

mod host;
pub mod kernels;
mod record;

pub(crate) use host::pod_vec;
pub use kernels::{Kernel, LaneWidth, Variant};
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use record::dispatch_size;
pub use record::{BackwardBuffers, BufferRegion, ForwardBuffers, RecordOptions};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::element::DType;
use crate::error::{Error, Result};
use kernels::Kernels;

/// How a [`Context`] picks and creates its device.
///
/// Unset fields follow wgpu's own conventions: `WGPU_BACKEND` (e.g. `vulkan`, `gl`, `metal`,
/// `dx12`), `WGPU_ADAPTER_NAME` (a case-insensitive substring of the adapter's name) and
/// `WGPU_POWER_PREF` (`low` or `high`).
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    /// Backends to look at; `None`: `WGPU_BACKEND`, else all.
    pub backends: Option<wgpu::Backends>,
    /// Adapter name filter; `None`: `WGPU_ADAPTER_NAME`, else any.
    pub adapter_name: Option<String>,
    /// Power preference; `None`: `WGPU_POWER_PREF`, else the default.
    pub power_preference: Option<wgpu::PowerPreference>,
    /// Caps the storage-binding size below the adapter's (to exercise chunking on small devices).
    pub max_storage_buffer_binding_size: Option<u64>,
    /// Caps the buffer size below the adapter's.
    pub max_buffer_size: Option<u64>,
    /// Caps the workgroups per dispatch dimension below the adapter's (to exercise 2-D grids).
    /// `Some(0)`, which leaves no dispatch possible, is [`Error::InvalidOption`].
    pub max_compute_workgroups_per_dimension: Option<u32>,
    /// wgpu's memory-allocation hints for the device; `None`: [`DEFAULT_MEMORY_HINTS`].
    pub memory_hints: Option<wgpu::MemoryHints>,
    /// Longest wait for the GPU before [`Error::Timeout`]; `None` waits as long as it takes.
    pub timeout: Option<Duration>,
    /// One element per invocation everywhere (turns off the 4-channel channels-last kernels; for
    /// benchmarks and tests).
    pub scalar_only: bool,
    /// Use the workgroup-memory tile kernels for overlapping channels-first windows
    /// (`max_pool_*_shared.wgsl`). Off by default: on an H100 they were slower than the kernels
    /// that read through the caches (case B forward 0.18 ms against 0.098 ms); kept for GPUs
    /// with smaller caches.
    pub workgroup_tiles: bool,
    /// Fill host-level output buffers with a poison pattern before every run, so that elements a
    /// kernel fails to write show up (for tests; costs a write per output).
    pub poison_outputs: bool,
    /// [`GpuTensor::write`](crate::GpuTensor::write)s and uploads of at least this many bytes go
    /// through one of the context's pooled staging buffers and a submission of their own;
    /// smaller ones through `queue.write_buffer`, which allocates a staging buffer per call and
    /// batches the copy into the next submission. `None`: 1 MiB on GL and Metal (where wgpu
    /// creates a new buffer for each `write_buffer`), 32 MiB elsewhere (Vulkan and DX12
    /// sub-allocate smaller staging buffers from memory blocks they keep). Ignored in the
    /// browser, where `writeBuffer` manages its own staging.
    pub staged_writes_from: Option<usize>,
    /// How many passes on a shape whose pipeline is not compiled yet run the generic kernel
    /// ([`Variant::generic`](kernels::Variant::generic): geometry from the uniform, one pipeline
    /// per element type and lane width for every shape) before the pass that compiles the
    /// shape's own, specialised pipeline. `None`: [`DEFAULT_GENERIC_CALLS`]. `Some(0)`: every
    /// shape compiles its pipeline at its first pass. `Some(u32::MAX)`: no shape ever compiles
    /// its own (a few pipelines in all, each pass slower: on lavapipe 1.3–2.8 times the same
    /// kernel specialised, up to 9 times the default variant, for case B's backward). Shapes
    /// made ready with [`Context::prepare`] and forced variants ([`RecordOptions::variant`])
    /// skip the generic kernel, and so do, on CPU adapters (lavapipe, llvmpipe), passes over
    /// more than 4 Mi input elements forward and 2 Mi backward, where the generic kernels would
    /// cost more than the compile they save.
    pub generic_calls: Option<u32>,
    /// Compile a shape's specialised pipelines on a thread of their own, queued by the last of
    /// its [`ContextOptions::generic_calls`] passes (with the default, its first; never with
    /// `Some(u32::MAX)` or `Some(0)`), and run each once on nothing (for drivers that compile
    /// at the first dispatch) before any pass may take it; the shape's passes run the generic
    /// kernels meanwhile, so that no call waits for a compile. One thread works off the queue
    /// (at most 32 compiles; a shape that finds it full, or whose compile fails or outlasts
    /// [`ContextOptions::timeout`], compiles at its next pass as without this option). Off by
    /// default. Meant for drivers that compile at pipeline creation (NVIDIA, AMD and Intel on
    /// Vulkan, Metal, DX12; unmeasured). On lavapipe, whose queue thread compiles at the first
    /// dispatch, it moves the wait instead: with the caller pausing 200 ms between calls, a new
    /// shape's second call took 8–11 ms instead of 112–133, but its first 43–84 ms instead of
    /// 9–21 (the thread's warm-up dispatch queues ahead of the caller's backward); back to back,
    /// the two calls took about as long together either way. Ignored in the browser (no
    /// threads).
    pub background_compiles: bool,
    /// The most bytes of buffers that the context's cached bind groups keep alive; `None`:
    /// [`DEFAULT_BIND_GROUP_CACHE_BYTES`]. A bind group holds the buffers it binds, so a cached
    /// one keeps a tensor's memory after the caller drops the tensor; beyond this budget (or 64
    /// bind groups) the least recently used ones are dropped. Repeated passes over the same
    /// buffers find their bind groups as long as those buffers fit the budget together; the
    /// most recently used bind group is kept even alone above it, so the memory held is at most
    /// the budget or one pass's buffers, whichever is larger. [`Context::clear_caches`] drops
    /// them all.
    pub bind_group_cache_bytes: Option<u64>,
}

/// [`ContextOptions::bind_group_cache_bytes`] by default: room for the buffers of a 2×2,
/// stride-2 forward and backward pass over an 80 MB input (input and input gradient, two
/// outputs and two gradients of a quarter each: 240 MB), so that a training loop over those
/// creates no bind groups. Case A or B (103 MB input) binds 154 MB per pass: repeating one
/// pass stays cached, alternating forward and backward (308 MB) creates each pass's bind
/// groups again, which costs far less than the pass.
pub const DEFAULT_BIND_GROUP_CACHE_BYTES: u64 = 256 << 20;

/// [`ContextOptions::generic_calls`] by default: a shape's first pass runs the generic kernel,
/// its second compiles its own pipeline. A shape seen once (input sizes that keep changing)
/// compiles nothing; one seen often pays its compile at its second call instead of its first.
pub const DEFAULT_GENERIC_CALLS: u32 = 1;

impl ContextOptions {
    fn resolved_backends(&self) -> wgpu::Backends {
        self.backends.unwrap_or_else(|| wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all()))
    }
}

/// Lists the adapters on the backends that `options` (or `WGPU_BACKEND`) selects.
pub async fn enumerate_adapters(options: &ContextOptions) -> Vec<wgpu::Adapter> {
    let instance = new_instance(options);
    instance.enumerate_adapters(options.resolved_backends()).await
}

/// Blocking [`enumerate_adapters`].
#[cfg(not(target_arch = "wasm32"))]
pub fn enumerate_adapters_blocking(options: &ContextOptions) -> Vec<wgpu::Adapter> {
    pollster::block_on(enumerate_adapters(options))
}

fn new_instance(options: &ContextOptions) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = options.resolved_backends();
    wgpu::Instance::new(desc)
}

/// The memory hints of the devices wgpool creates: sub-allocation blocks of 256 MiB from the
/// start (gpu-allocator's largest). Measured on an H100 (Vulkan, 2026-11-27), after the other
/// benchmark cases had allocated and freed their buffers, case G (a 822 MB input) ran forward in
/// 0.72 ms with wgpu's default `Performance` hints (blocks growing from 128 MiB) and in 0.41 ms
/// with these; the other cases were unaffected.
pub const DEFAULT_MEMORY_HINTS: wgpu::MemoryHints =
    wgpu::MemoryHints::Manual { suballocated_device_memory_block_size: (256 << 20)..(256 << 20) };

/// State shared with wgpu's callbacks.
#[derive(Debug, Default)]
struct DeviceState {
    lost: Mutex<Option<String>>,
    uncaptured: Mutex<Option<Error>>,
}

/// A wgpu device and queue with wgpool's kernels, ready to pool.
///
/// `Context` is `Send + Sync`: one context can serve many threads at once.
///
/// ```no_run
/// # fn main() -> Result<(), wgpool::Error> {
/// use wgpool::{Context, InputShape, PoolParams, PoolSpec};
/// let ctx = Context::new()?;
/// let spec = PoolSpec::new(InputShape::nchw(1, 1, 4, 4), PoolParams::new([2, 2]));
/// let input: Vec<f32> = (0..16).map(|i| (i * 7 % 16) as f32).collect();
/// let out = ctx.forward(&spec, &input)?;
/// let grad_input = ctx.backward(&spec, &[1.0f32; 4], &out.indices)?;
/// assert_eq!(grad_input.iter().sum::<f32>(), 4.0);
/// # Ok(()) }
/// ```
pub struct Context {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    kernels: Arc<Kernels>,
    state: Arc<DeviceState>,
    caches: record::Caches,
    pool: host::BufferPool,
    options: ContextOptions,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("adapter", &self.info.name).field("backend", &self.info.backend).finish()
    }
}

impl Context {
    /// Creates a context on the default adapter (see [`ContextOptions`] for the environment
    /// variables that choose it). Blocking.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        Self::with_options(&ContextOptions::default())
    }

    /// Blocking [`Context::new_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_options(options: &ContextOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(options))
    }

    /// Creates a context on the adapter that `options` and the environment select.
    pub async fn new_async(options: &ContextOptions) -> Result<Self> {
        let instance = new_instance(options);
        let name = options.adapter_name.clone().or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
        let adapter = match name {
            Some(name) => {
                let wanted = name.to_lowercase();
                let adapters = instance.enumerate_adapters(options.resolved_backends()).await;
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&wanted))
                    .ok_or_else(|| Error::NoAdapter { detail: format!(" whose name contains \"{name}\"") })?
            }
            None => {
                let power_preference =
                    options.power_preference.or_else(wgpu::PowerPreference::from_env).unwrap_or_default();
                instance
                    .request_adapter(&wgpu::RequestAdapterOptions { power_preference, ..Default::default() })
                    .await
                    .map_err(|e| Error::NoAdapter { detail: format!(" ({e})") })?
            }
        };
        Self::from_adapter(&adapter, options).await
    }

    /// Creates a context on `adapter`, requesting the adapter's own limits (capped by
    /// `options`) and `SHADER_F16` where the adapter has it.
    pub async fn from_adapter(adapter: &wgpu::Adapter, options: &ContextOptions) -> Result<Self> {
        if options.max_compute_workgroups_per_dimension == Some(0) {
            // Every pass divides its workgroups among dimensions of at most this many.
            return Err(Error::InvalidOption {
                option: "max_compute_workgroups_per_dimension",
                value: "Some(0)".into(),
                reason: "no dispatch can run with 0 workgroups per dimension; the cap must be at least 1",
            });
        }
        let info = adapter.get_info();
        let mut limits = adapter.limits();
        if let Some(cap) = options.max_storage_buffer_binding_size {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(cap);
        }
        if let Some(cap) = options.max_compute_workgroups_per_dimension {
            limits.max_compute_workgroups_per_dimension = limits.max_compute_workgroups_per_dimension.min(cap);
        }
        if let Some(cap) = options.max_buffer_size {
            limits.max_buffer_size = limits.max_buffer_size.min(cap);
        }
        let wanted = wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY;
        let features = adapter.features() & wanted;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpool"),
                required_features: features,
                required_limits: limits,
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: options.memory_hints.clone().unwrap_or(DEFAULT_MEMORY_HINTS),
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice { adapter: info.name.clone(), reason: e.to_string() })?;
        let state = Arc::new(DeviceState::default());
        // Our own device: record errors instead of wgpu's default panic (the first since
        // `take_uncaptured_error`: later ones tend to follow from it), and remember a loss.
        let s = state.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            s.uncaptured.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| scope_error(e));
        }));
        let s = state.clone();
        device.set_device_lost_callback(move |reason, message| {
            *s.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{reason:?}: {message}"));
        });
        Ok(Self::build(device, queue, info, state, options.clone()))
    }

    /// Wraps a caller's device and queue. wgpool leaves the device's error handler and
    /// device-lost callback alone; errors in its own calls still come back as [`Error`]s.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        Self::build(device, queue, info, Arc::new(DeviceState::default()), ContextOptions::default())
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        state: Arc<DeviceState>,
        options: ContextOptions,
    ) -> Self {
        let kernels = Arc::new(Kernels::new(&device));
        let limits = device.limits();
        Self {
            device,
            queue,
            info,
            limits,
            kernels,
            state,
            caches: record::Caches::default(),
            pool: host::BufferPool::default(),
            options,
        }
    }

    /// The device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }
    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
    /// The adapter's name, backend, driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }
    /// The device's limits (the adapter's own unless capped by [`ContextOptions`]).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }
    /// `"backend/adapter name"`, for messages.
    pub fn describe(&self) -> String {
        format!("{:?}/{}", self.info.backend, self.info.name)
    }
    /// Whether `dtype` can be pooled on this device.
    pub fn supports(&self, dtype: DType) -> bool {
        match dtype {
            DType::F32 => true,
            DType::F16 => self.device.features().contains(wgpu::Features::SHADER_F16),
        }
    }
    /// Whether the device can write timestamps around compute passes.
    pub fn has_timestamps(&self) -> bool {
        self.device.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Drops cached uniform buffers, bind groups and the buffer pool (pipelines stay): the
    /// buffers that host-level calls, tensor downloads and large tensor writes keep for reuse.
    pub fn clear_caches(&self) {
        self.caches.clear();
        self.pool.clear();
    }

    /// The number of cached GPU objects (uniform buffers, bind groups, pooled buffers), for leak tests.
    pub fn cached_objects(&self) -> usize {
        self.caches.len() + self.pool.len()
    }

    /// Buffers the context's buffer pool has created so far, and the upload staging buffers it
    /// keeps now (for tests of reuse).
    #[doc(hidden)]
    pub fn pool_counts(&self) -> (u64, usize) {
        self.pool.counts()
    }

    /// The number of compiled pipelines in the cache: one per kernel variant, element type and
    /// geometry seen (the batch does not count), so a training loop's steps add none, plus the
    /// few generic ones that shapes' first passes ran, which no new shape adds to (see
    /// [`ContextOptions::generic_calls`]).
    pub fn cached_pipelines(&self) -> usize {
        self.kernels.pipelines()
    }

    pub(crate) fn check_usable(&self) -> Result<()> {
        if let Some(reason) = self.state.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(Error::DeviceLost(reason));
        }
        Ok(())
    }

    pub(crate) fn check_dtype(&self, dtype: DType) -> Result<()> {
        if self.supports(dtype) {
            Ok(())
        } else {
            Err(Error::MissingFeature {
                dtype: dtype.name(),
                feature: "SHADER_F16",
                adapter: self.info.name.clone(),
                backend: format!("{:?}", self.info.backend),
            })
        }
    }

    /// Blocks until the GPU has finished `submission` (or the context's timeout elapses).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self, submission: Option<wgpu::SubmissionIndex>) -> Result<()> {
        let poll = wgpu::PollType::Wait { submission_index: submission, timeout: self.options.timeout };
        match self.device.poll(poll) {
            Ok(_) => self.check_usable(),
            Err(wgpu::PollError::Timeout) => {
                Err(Error::Timeout { millis: self.options.timeout.map(|t| t.as_millis() as u64).unwrap_or(0) })
            }
            // A destroyed device reports its loss from wgpu's maintenance, which a failed wait
            // skips: `lost_or` runs it, so that this and every later call says `DeviceLost`.
            Err(e) => Err(self.lost_or(Error::Device(e.to_string()))),
        }
    }

    /// Takes (and clears) the first error wgpu reported outside any error scope since the last
    /// call of this: an error of no wgpool call, which all run their GPU work inside error
    /// scopes and return their own errors. What remains comes from work outside them: the
    /// caller's own on [`Context::device`] and [`Context::queue`], recordings into the caller's
    /// encoders ([`Context::record_forward`], ...; a bind group or pipeline the device
    /// refuses), and in the browser the writes of [`GpuTensor::write`](crate::GpuTensor::write)
    /// and [`GpuTensor::upload_async`](crate::GpuTensor::upload_async), which cannot wait
    /// there for an error scope. No wgpool call fails because of it.
    ///
    /// Always `None` on a context from [`Context::from_device`], whose device keeps the
    /// caller's error handler.
    pub fn take_uncaptured_error(&self) -> Option<Error> {
        self.state.uncaptured.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Turns the errors of a popped error scope into an [`Error`].
pub(crate) fn scope_error(e: wgpu::Error) -> Error {
    match e {
        wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
        other => Error::Device(other.to_string()),
    }
}
