//! The encoder level: record forward and backward passes over caller-owned buffers.

use std::collections::HashMap;
use std::sync::Mutex;
#[cfg(not(target_arch = "wasm32"))]
use std::sync::atomic::Ordering;

use super::Context;
use super::kernels::{Kernel, LaneWidth, ParamsUniform, Variant, WORKGROUP_SIZE};
use crate::element::DType;
use crate::error::{Error, Result};
use crate::params::{Geometry, PoolSpec};

/// A tensor inside a caller's buffer: the buffer and the byte offset where the tensor starts.
///
/// The offset must be a multiple of the element size (4 for indices and counters); the buffer must
/// hold the tensor's bytes rounded up to a multiple of 4 after the offset.
#[derive(Debug, Clone, Copy)]
pub struct BufferRegion<'a> {
    /// The buffer (needs `STORAGE` usage).
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of the first element.
    pub offset: u64,
}

impl<'a> BufferRegion<'a> {
    /// A region at `offset` bytes into `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer, offset: u64) -> Self {
        Self { buffer, offset }
    }
}

impl<'a> From<&'a wgpu::Buffer> for BufferRegion<'a> {
    fn from(buffer: &'a wgpu::Buffer) -> Self {
        Self { buffer, offset: 0 }
    }
}

/// The buffers of a forward pass.
#[derive(Debug, Clone, Copy)]
pub struct ForwardBuffers<'a> {
    /// Input, read.
    pub input: BufferRegion<'a>,
    /// Pooled values, written.
    pub values: BufferRegion<'a>,
    /// Argmax indices (u32 per output; `u32::MAX` for −1), written.
    pub indices: BufferRegion<'a>,
}

/// The buffers of a backward pass.
#[derive(Debug, Clone, Copy)]
pub struct BackwardBuffers<'a> {
    /// Gradient of the outputs, read.
    pub grad_output: BufferRegion<'a>,
    /// Argmax indices from the forward pass, read.
    pub indices: BufferRegion<'a>,
    /// Gradient of the input, written (every element).
    pub grad_input: BufferRegion<'a>,
    /// One u32 that receives the number of invalid indices (needs `STORAGE | COPY_DST`; cleared
    /// by the recorded commands). Non-zero means `grad_input` must not be used.
    pub invalid_count: BufferRegion<'a>,
}

/// Options for one recorded pass.
#[derive(Debug, Default)]
pub struct RecordOptions<'a> {
    /// Timestamps written at the start and end of the compute pass (needs `TIMESTAMP_QUERY`).
    pub timestamp_writes: Option<wgpu::ComputePassTimestampWrites<'a>>,
    /// The kernel variant to run instead of the context's choice: one of those
    /// [`Context::forward_variants`] / [`Context::backward_variants`] list for the problem, else
    /// [`Error::VariantNotApplicable`]. `None`: the context's choice (the first listed).
    pub variant: Option<Variant>,
}

/// One tensor's binding for one chunk.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Binding {
    buffer: wgpu::Buffer,
    offset: u64,
    size: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct BindKey {
    kernel: Kernel,
    params: ParamsUniform,
    bindings: Vec<Binding>,
}

/// Uniform buffers and bind groups, cached by content: a call repeated with the same buffers and
/// shape creates nothing.
#[derive(Default)]
pub(crate) struct Caches {
    uniforms: Mutex<HashMap<ParamsUniform, wgpu::Buffer>>,
    bind_groups: Mutex<BindGroups>,
    /// What a values-only forward binds where the indices would go (16 bytes, never accessed).
    placeholder: std::sync::OnceLock<wgpu::Buffer>,
}

/// Most entries per cache. A full uniform cache is emptied (its buffers are a few hundred bytes
/// each); a full bind-group cache drops its least recently used entry.
const CACHE_LIMIT: usize = 64;

impl Caches {
    pub fn clear(&self) {
        self.uniforms.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.bind_groups.lock().unwrap_or_else(|p| p.into_inner()) = BindGroups::default();
    }
    pub fn len(&self) -> usize {
        self.uniforms.lock().unwrap_or_else(|p| p.into_inner()).len()
            + self.bind_groups.lock().unwrap_or_else(|p| p.into_inner()).entries.len()
    }
}

fn cached<K: std::hash::Hash + Eq, V: Clone>(map: &Mutex<HashMap<K, V>>, key: K, make: impl FnOnce() -> V) -> V {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = map.get(&key) {
        return v.clone();
    }
    if map.len() >= CACHE_LIMIT {
        map.clear();
    }
    map.entry(key).or_insert_with(make).clone()
}

/// The bind-group cache, least recently used out first.
///
/// A bind group keeps every buffer it binds alive, so a cached one would keep the memory of a
/// tensor the caller has dropped (a new input every step: a new bind group every step). Hence
/// the budget on the bytes of the distinct buffers the entries bind
/// ([`ContextOptions::bind_group_cache_bytes`](super::ContextOptions::bind_group_cache_bytes)),
/// besides [`CACHE_LIMIT`]. The most recently used entry always stays, even alone above the
/// budget: its buffers are those of the pass being recorded, and a loop over tensors that large
/// still finds its bind group.
#[derive(Default)]
struct BindGroups {
    entries: HashMap<BindKey, BindEntry>,
    /// Every buffer some entry binds, with the number of entries that bind it.
    buffers: HashMap<wgpu::Buffer, usize>,
    /// The total size of the buffers in `buffers`.
    bytes: u64,
    /// Counts lookups; an entry's `used` is the count at its last lookup.
    clock: u64,
}

struct BindEntry {
    group: wgpu::BindGroup,
    used: u64,
}

impl BindGroups {
    fn get(&mut self, key: &BindKey) -> Option<wgpu::BindGroup> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|e| {
            e.used = clock;
            e.group.clone()
        })
    }

    /// Adds `group` as the most recently used entry, then drops the least recently used ones
    /// until at most [`CACHE_LIMIT`] entries and `budget` bytes remain (or only this one).
    fn insert(&mut self, key: BindKey, group: wgpu::BindGroup, budget: u64) {
        for buffer in distinct_buffers(&key) {
            let count = self.buffers.entry(buffer.clone()).or_insert(0);
            if *count == 0 {
                self.bytes += buffer.size();
            }
            *count += 1;
        }
        self.clock += 1;
        self.entries.insert(key, BindEntry { group, used: self.clock });
        while self.entries.len() > 1 && (self.entries.len() > CACHE_LIMIT || self.bytes > budget) {
            let oldest = self.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.remove(&oldest);
            }
        }
    }

    fn remove(&mut self, key: &BindKey) {
        if self.entries.remove(key).is_none() {
            return;
        }
        for buffer in distinct_buffers(key) {
            if let Some(count) = self.buffers.get_mut(buffer) {
                *count -= 1;
                if *count == 0 {
                    self.buffers.remove(buffer);
                    self.bytes -= buffer.size();
                }
            }
        }
    }
}

/// The buffers `key` binds, each once (a backward pass may bind grad_input and its counter in
/// one buffer).
fn distinct_buffers(key: &BindKey) -> impl Iterator<Item = &wgpu::Buffer> {
    let bindings = &key.bindings;
    bindings
        .iter()
        .enumerate()
        .filter(|&(i, b)| bindings[..i].iter().all(|earlier| earlier.buffer != b.buffer))
        .map(|(_, b)| &b.buffer)
}

/// The most input elements of a forward and of a backward pass that the generic kernels run on a
/// CPU adapter (Mesa's lavapipe, llvmpipe): there they cost several times the specialised ones
/// per element (the backward about 5 times), so that above these sizes compiling the shape's
/// pipeline costs less. Measured with lavapipe and llvmpipe on 2 cores (BENCHMARKS.md): a new
/// shape's first backward over 0.8 M elements took 33–38 ms generic against 76–165 ms compiling
/// (break-even near 2.4 M on lavapipe); over 6.4 M, 267–271 ms against 87–95. GPUs run either
/// kernel in a fraction of a compile, so there every size takes the generic kernels.
const GENERIC_LIMITS_ON_CPU: [usize; 2] = [1 << 22, 1 << 21];

/// One tensor of a pass, as the planner sees it.
struct TensorArg<'a> {
    what: &'static str,
    region: BufferRegion<'a>,
    /// Bytes per group (plane or image).
    group_bytes: u64,
    elem: u64,
}

/// A run of whole groups that fits one binding per tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub first_group: usize,
    pub groups: usize,
}

/// Largest element count one dispatch addresses (keeps every u32 index expression in range).
const MAX_CHUNK_ELEMENTS: u64 = 1 << 31;

/// Splits `groups` into chunks whose every binding (with alignment slack) fits `binding_limit`.
pub(crate) fn plan_chunks(
    groups: usize,
    group_bytes: &[(u64, u64)],
    binding_limit: u64,
    alignment: u64,
    unit: &'static str,
) -> Result<Vec<Chunk>> {
    // Slack: a binding starts up to `alignment - 1` bytes before its data and ends up to 3 after.
    let usable = binding_limit.saturating_sub(alignment + 4);
    let mut per_chunk = u64::MAX;
    for &(bytes, elem) in group_bytes {
        if bytes == 0 {
            continue;
        }
        if bytes > usable {
            return Err(Error::BindingTooSmall { unit, bytes, limit: binding_limit });
        }
        per_chunk = per_chunk.min(usable / bytes).min(MAX_CHUNK_ELEMENTS / (bytes / elem).max(1));
    }
    if per_chunk == 0 {
        return Err(Error::TooLarge {
            what: format!("elements per {unit}"),
            value: u128::MAX,
            limit: MAX_CHUNK_ELEMENTS as u128,
        });
    }
    let per_chunk = per_chunk.min(groups as u64).max(1) as usize;
    Ok((0..groups)
        .step_by(per_chunk)
        .map(|first| Chunk { first_group: first, groups: per_chunk.min(groups - first) })
        .collect())
}

/// Workgroups per row of a 2-D grid. Measured on an H100 (Vulkan, 2026-11-27): case G forward
/// (50,176 workgroups) took 0.72 ms as one row and 0.41 ms as 13 rows of 3,860; grids of up to
/// 6,272 workgroups ran equally fast either way.
const ROW_WORKGROUPS: u64 = 4096;

/// Workgroup counts `(x, y)` for `workgroups` workgroups: one row up to [`ROW_WORKGROUPS`], then
/// a 2-D grid of rows as even as possible (few idle workgroups in the last row), wider rows only
/// when the per-dimension limit requires.
pub(crate) fn dispatch_grid(workgroups: u64, max_per_dimension: u32) -> Result<(u32, u32)> {
    let workgroups = workgroups.max(1);
    let max = max_per_dimension as u64;
    if max == 0 {
        // A caller's device (`Context::from_device`) reporting no workgroups per dimension: no
        // dispatch fits (a context wgpool creates refuses such a cap up front).
        return Err(Error::TooLarge { what: "dispatch (workgroups)".into(), value: workgroups as u128, limit: 0 });
    }
    let mut y = workgroups.div_ceil(ROW_WORKGROUPS.min(max));
    if y > max {
        y = workgroups.div_ceil(max);
    }
    if y > max {
        return Err(Error::TooLarge {
            what: "dispatch (workgroups)".into(),
            value: workgroups as u128,
            limit: (max as u128).pow(2),
        });
    }
    Ok((workgroups.div_ceil(y) as u32, y as u32))
}

/// [`dispatch_grid`] for one invocation per item.
pub(crate) fn dispatch_size(invocations: u64, max_per_dimension: u32) -> Result<(u32, u32)> {
    dispatch_grid(invocations.div_ceil(WORKGROUP_SIZE as u64), max_per_dimension)
}

impl Context {
    fn check_region(&self, t: &TensorArg<'_>, total_bytes: u64) -> Result<()> {
        let usage = t.region.buffer.usage();
        if !usage.contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::BufferUsage { what: t.what.into(), usage: "STORAGE".into() });
        }
        let align = t.elem.max(if t.elem == 2 { 2 } else { 4 });
        if !t.region.offset.is_multiple_of(align) {
            return Err(Error::Misaligned { what: t.what.into(), offset: t.region.offset, alignment: align });
        }
        let needed = t.region.offset.checked_add(total_bytes.next_multiple_of(4)).ok_or_else(|| Error::TooLarge {
            what: format!("{} end offset", t.what),
            value: u128::MAX,
            limit: u64::MAX as u128,
        })?;
        if needed > t.region.buffer.size() {
            return Err(Error::ShapeMismatch {
                what: format!("{} buffer size in bytes (offset + data rounded up to 4)", t.what),
                expected: needed,
                found: t.region.buffer.size(),
            });
        }
        Ok(())
    }

    /// Binding and base (in units of `width` elements) of `chunk`'s part of tensor `t`.
    /// The binding of [`Caches::placeholder`], created on first use.
    fn placeholder(&self) -> Binding {
        let buffer = self.caches.placeholder.get_or_init(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpool placeholder"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        });
        Binding { buffer: buffer.clone(), offset: 0, size: 16 }
    }

    fn binding(&self, t: &TensorArg<'_>, chunk: Chunk, width: u64) -> (Binding, u32) {
        let alignment = self.limits.min_storage_buffer_offset_alignment as u64;
        let start = t.region.offset + chunk.first_group as u64 * t.group_bytes;
        let end = start + chunk.groups as u64 * t.group_bytes;
        let aligned = start - start % alignment;
        let size = (end.next_multiple_of(4) - aligned).max(4);
        (
            Binding { buffer: t.region.buffer.clone(), offset: aligned, size },
            ((start - aligned) / (t.elem * width)) as u32,
        )
    }

    /// Whether the row-blocked `kernel` applies: a geometry it takes ([`Kernel::takes`]) and every
    /// tensor on a boundary of the vectors the kernel reads it with ([`Kernel::items`]; `None`:
    /// tensors assumed on 16-byte boundaries).
    fn rows(kernel: Kernel, g: &Geometry, tensors: Option<&[TensorArg<'_>]>) -> bool {
        kernel.takes(g)
            && tensors.is_none_or(|ts| {
                ts.iter().zip(kernel.items()).all(|(t, items)| t.region.offset.is_multiple_of(items * t.elem))
            })
    }

    /// Whether four channels per invocation apply: channels-last, C a multiple of 4 and every
    /// tensor on a 4-element boundary (`None`: assumed).
    fn four_lanes(g: &Geometry, tensors: Option<&[TensorArg<'_>]>) -> bool {
        g.layout == crate::Layout::ChannelsLast
            && g.channels.is_multiple_of(4)
            && tensors.is_none_or(|ts| ts.iter().all(|t| t.region.offset.is_multiple_of(4 * t.elem)))
    }

    /// Whether the workgroup-memory kernels apply: overlapping windows with a tile that fits
    /// ([`shared_tile`](crate::cpu::reference::shared_tile): one lane, trivial D axis).
    fn shared_applies(g: &Geometry, forward: bool) -> bool {
        !g.non_overlapping() && crate::cpu::reference::shared_tile(g, forward).is_some()
    }

    /// The variants that can run a forward pass of `g`, the default first: the workgroup-memory
    /// tiles where [`ContextOptions::workgroup_tiles`](super::ContextOptions::workgroup_tiles)
    /// asks for them, the row-blocked kernels, the four-channel kernel, one element per
    /// invocation, and the tiles last where not asked for.
    /// [`ContextOptions::scalar_only`](super::ContextOptions::scalar_only) leaves only the last.
    fn forward_candidates(&self, g: &Geometry, tensors: Option<&[TensorArg<'_>]>) -> Vec<Variant> {
        let one = |kernel| Variant::new(kernel, LaneWidth::One);
        if self.options.scalar_only {
            return Self::with_generic(vec![one(Kernel::Forward)]);
        }
        let shared = Self::shared_applies(g, true);
        let tiles_first = self.options.workgroup_tiles;
        let mut list = vec![];
        if shared && tiles_first {
            list.push(one(Kernel::ForwardShared));
        }
        for kernel in [Kernel::ForwardRows, Kernel::ForwardSpan] {
            if Self::rows(kernel, g, tensors) {
                list.push(one(kernel));
            }
        }
        if Self::four_lanes(g, tensors) {
            list.push(Variant::new(Kernel::Forward, LaneWidth::Four));
        }
        list.push(one(Kernel::Forward));
        if shared && !tiles_first {
            list.push(one(Kernel::ForwardShared));
        }
        Self::with_generic(list)
    }

    /// `list` and then the generic forms of its first entry's stand-in, four channels first
    /// where those apply: what a shape's first calls run (listed for tests and comparisons).
    fn with_generic(mut list: Vec<Variant>) -> Vec<Variant> {
        let stand_in = list[0].generic();
        if stand_in.width == LaneWidth::Four {
            list.push(stand_in);
        }
        list.push(Variant { width: LaneWidth::One, ..stand_in });
        list
    }

    /// The variants that can run a backward pass of `g`, the default first. Tiling windows: the
    /// scatter kernels (two outputs of a row, four channels, one element), then the gathers.
    /// Other windows: the workgroup-memory gather where asked for, the row-block gather (two
    /// rows where the input has them, then one), the cell and four-channel gathers, one element
    /// per invocation, the workgroup-memory gather last where not asked for. Each gather with
    /// plain sums is followed by its [`Variant::single_pass`] twin.
    /// [`ContextOptions::scalar_only`](super::ContextOptions::scalar_only) leaves one element per
    /// invocation only.
    fn backward_candidates(&self, g: &Geometry, tensors: Option<&[TensorArg<'_>]>) -> Vec<Variant> {
        let one = |kernel| Variant::new(kernel, LaneWidth::One);
        let four = |kernel| Variant::new(kernel, LaneWidth::Four);
        let tiles = g.tiles();
        if self.options.scalar_only {
            return Self::with_generic(vec![one(if tiles { Kernel::BackwardTiled } else { Kernel::Backward })]);
        }
        let four_lanes = Self::four_lanes(g, tensors);
        let shared = Self::shared_applies(g, false);
        let tiles_first = self.options.workgroup_tiles;
        let mut list = vec![];
        if tiles {
            if Self::rows(Kernel::BackwardTiledRows, g, tensors) {
                list.push(one(Kernel::BackwardTiledRows));
            }
            if four_lanes {
                list.push(four(Kernel::BackwardTiled));
            }
            list.push(one(Kernel::BackwardTiled));
        } else if shared && tiles_first {
            list.push(one(Kernel::BackwardShared));
        }
        if Self::rows(Kernel::BackwardRows, g, tensors) {
            let most = crate::cpu::reference::gather_block_rows(g) as u32;
            list.extend((1..=most).rev().map(|block_rows| Variant { block_rows, ..one(Kernel::BackwardRows) }));
        }
        if four_lanes {
            list.extend([four(Kernel::BackwardCells), four(Kernel::Backward)]);
        }
        list.push(one(Kernel::Backward));
        // Each gather's fixed-cover twin (where it applies), then its single-pass twin, right
        // after it.
        let list = list.into_iter().flat_map(|v| {
            let fixed = match v.kernel {
                Kernel::BackwardRows => crate::cpu::reference::fixed_cover_applies(g, v.block_rows as usize, 4),
                Kernel::BackwardCells => {
                    let [rows, columns] = crate::cpu::reference::cell_size(g);
                    crate::cpu::reference::fixed_cover_applies(g, rows, columns)
                }
                _ => false,
            }
            .then_some(Variant { fixed_cover: true, ..v });
            let twin = v.kernel.has_nan_pass().then_some(Variant { single_pass: true, ..v });
            std::iter::once(v).chain(fixed).chain(twin)
        });
        let mut list: Vec<Variant> = list.collect();
        if shared && !tiles_first {
            list.push(one(Kernel::BackwardShared));
        }
        Self::with_generic(list)
    }

    /// What a pass runs: a forced variant as it is, else `chosen` or, in a shape's first
    /// [`ContextOptions::generic_calls`](super::ContextOptions::generic_calls) passes while its
    /// pipeline is not compiled, `chosen`'s generic stand-in.
    /// On a CPU adapter, only passes up to [`GENERIC_LIMITS_ON_CPU`] elements; anywhere, only
    /// passes whose one-element-per-invocation grid fits the device's workgroup limits. With
    /// [`ContextOptions::background_compiles`](super::ContextOptions::background_compiles), the
    /// last of a shape's generic passes queues the compile of `chosen` for another thread.
    fn tiered(&self, chosen: Variant, forced: bool, dtype: DType, g: &Geometry, write_indices: bool) -> Variant {
        if forced {
            return chosen;
        }
        if self.adapter_info().device_type == wgpu::DeviceType::Cpu {
            let [forward, backward] = GENERIC_LIMITS_ON_CPU;
            if g.input_len() > if chosen.kernel.is_backward() { backward } else { forward } {
                return chosen;
            }
        }
        // The generic kernels take one item per invocation where `chosen` may take a block: the
        // whole problem's grid (a bound on each chunk's) must fit, or `chosen` runs.
        let generic = chosen.generic();
        let items = if generic.kernel == Kernel::Backward { g.input_len() } else { g.output_len() };
        let invocations = items as u64 / generic.width.get() as u64;
        if dispatch_size(invocations, self.limits.max_compute_workgroups_per_dimension).is_err() {
            return chosen;
        }
        let generic_calls = self.options.generic_calls.unwrap_or(super::DEFAULT_GENERIC_CALLS);
        let (ran, last) = self.kernels.tiered(chosen, dtype, g, write_indices, generic_calls);
        #[cfg(not(target_arch = "wasm32"))]
        if last && self.options.background_compiles {
            self.kernels.compile_in_background(
                &self.device,
                &self.queue,
                self.options.timeout,
                chosen,
                dtype,
                g,
                write_indices,
            );
        }
        #[cfg(target_arch = "wasm32")]
        let _ = last;
        ran
    }

    /// `options.variant` if it is among `candidates`, else the first candidate.
    fn choose(candidates: &[Variant], forced: Option<Variant>, direction: &str) -> Result<Variant> {
        match forced {
            None => Ok(candidates[0]),
            Some(v) if candidates.contains(&v) => Ok(v),
            Some(v) => Err(Error::VariantNotApplicable {
                variant: v.name(),
                direction: direction.into(),
                applicable: candidates.iter().map(Variant::name).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// The uniform buffer holding `params`, cached. A new one is cached only once its creation and
    /// write went through (natively, where error scopes answer at once): one the device refused
    /// (out of memory) would otherwise stay cached, and later passes with the same parameters
    /// would read zeros from it, i.e. do nothing.
    fn uniform(&self, params: ParamsUniform) -> Result<wgpu::Buffer> {
        let make = || super::kernels::params_buffer(&self.device, &self.queue, "wgpool params", &params);
        #[cfg(not(target_arch = "wasm32"))]
        {
            if let Some(b) = self.caches.uniforms.lock().unwrap_or_else(|p| p.into_inner()).get(&params) {
                return Ok(b.clone());
            }
            let buffer = self.scoped_now(make)?;
            Ok(cached(&self.caches.uniforms, params, || buffer))
        }
        #[cfg(target_arch = "wasm32")]
        Ok(cached(&self.caches.uniforms, params, make))
    }

    fn bind_group(&self, kernel: Kernel, params: ParamsUniform, bindings: Vec<Binding>) -> Result<wgpu::BindGroup> {
        let key = BindKey { kernel, params, bindings };
        // Before the bind-group lock: `Caches::len` takes the uniform lock first.
        let uniform = self.uniform(params)?;
        let mut cache = self.caches.bind_groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(group) = cache.get(&key) {
            return Ok(group);
        }
        // Created under the lock, so that threads missing the same key make one bind group; and
        // natively in error scopes, so that one the device refused is not cached (see `uniform`).
        let create = || {
            let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
            for (i, b) in key.bindings.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &b.buffer,
                        offset: b.offset,
                        size: wgpu::BufferSize::new(b.size),
                    }),
                });
            }
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(kernel.entry_point()),
                layout: self.kernels.bind_group_layout(kernel),
                entries: &entries,
            })
        };
        #[cfg(not(target_arch = "wasm32"))]
        let group = self.scoped_now(create)?;
        #[cfg(target_arch = "wasm32")]
        let group = create();
        let budget = self.options.bind_group_cache_bytes.unwrap_or(super::DEFAULT_BIND_GROUP_CACHE_BYTES);
        cache.insert(key, group.clone(), budget);
        Ok(group)
    }

    fn check_aliasing(reads: &[&TensorArg<'_>], writes: &[&TensorArg<'_>]) -> Result<()> {
        for w in writes {
            for r in reads {
                if w.region.buffer == r.region.buffer {
                    return Err(Error::BufferUsage {
                        what: format!("{} (the same buffer as {})", w.what, r.what),
                        usage:
                            "a buffer of its own: one dispatch cannot read a buffer as read-only storage and write it"
                                .into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Records a forward pass (values and indices) into `encoder`.
    ///
    /// Validates the spec, the element type and every buffer first; on error nothing is recorded.
    /// Tensors larger than one storage binding are split into chunks of whole planes
    /// (channels-last: whole images), all in one compute pass.
    pub fn record_forward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        spec: &PoolSpec,
        dtype: DType,
        buffers: &ForwardBuffers<'_>,
        options: RecordOptions<'_>,
    ) -> Result<()> {
        self.record_forward_pass(encoder, spec, dtype, buffers.input, buffers.values, Some(buffers.indices), options)
    }

    /// Records a values-only forward pass into `encoder`: the pooled values without the indices,
    /// for inference, where no backward pass follows (it moves a sixth to a quarter fewer bytes
    /// than [`Context::record_forward`] for windows of stride 2; PyTorch has no such pass). The
    /// same kernels, variants and validation as [`Context::record_forward`]; the values are the
    /// same bits.
    pub fn record_forward_values(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        spec: &PoolSpec,
        dtype: DType,
        input: BufferRegion<'_>,
        values: BufferRegion<'_>,
        options: RecordOptions<'_>,
    ) -> Result<()> {
        self.record_forward_pass(encoder, spec, dtype, input, values, None, options)
    }

    /// [`Context::record_forward`], or without `indices` [`Context::record_forward_values`].
    #[allow(clippy::too_many_arguments)]
    fn record_forward_pass(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        spec: &PoolSpec,
        dtype: DType,
        input: BufferRegion<'_>,
        values: BufferRegion<'_>,
        indices: Option<BufferRegion<'_>>,
        options: RecordOptions<'_>,
    ) -> Result<()> {
        self.check_usable()?;
        let g = spec.validate()?;
        self.check_dtype(dtype)?;
        let (groups, lanes) = g.groups_and_lanes();
        let elem = dtype.size() as u64;
        let in_group = (g.plane_in() * lanes) as u64;
        let out_group = (g.plane_out() * lanes) as u64;
        let mut tensors = vec![
            TensorArg { what: "input", region: input, group_bytes: in_group * elem, elem },
            TensorArg { what: "values", region: values, group_bytes: out_group * elem, elem },
        ];
        if let Some(region) = indices {
            tensors.push(TensorArg { what: "indices", region, group_bytes: out_group * 4, elem: 4 });
        }
        for t in &tensors {
            self.check_region(t, t.group_bytes * groups as u64)?;
        }
        let writes: Vec<&TensorArg<'_>> = tensors[1..].iter().collect();
        Self::check_aliasing(&[&tensors[0]], &writes)?;
        let variant = Self::choose(&self.forward_candidates(&g, Some(&tensors)), options.variant, "forward")?;
        if groups == 0 {
            return Ok(());
        }
        let chunks = self.plan(&g, &tensors)?;
        // After the checks of the buffers and of the chunk plan: a call they fail counts no pass.
        let variant = self.tiered(variant, options.variant.is_some(), dtype, &g, indices.is_some());
        let Variant { kernel, width, .. } = variant;
        let shared = if kernel.is_shared() { crate::cpu::reference::shared_tile(&g, true) } else { None };
        // Elements per array item of each binding: the unit of binding bases.
        let items = if kernel.is_rows() { kernel.items() } else { [width.get() as u64; 3] };
        let w = items[1];
        let pipeline = self.kernels.pipeline(&self.device, variant, dtype, &g, indices.is_some());
        // Only generic pipelines read these; specialised ones get zeros, computed for nothing.
        let (geometry, divisors) =
            if variant.generic { super::kernels::generic_uniform(width, &g) } else { Default::default() };
        let mut dispatches = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let (b_in, base_in) = self.binding(&tensors[0], chunk, items[0]);
            let (b_val, base_val) = self.binding(&tensors[1], chunk, items[1]);
            let (b_idx, base_idx) = match tensors.get(2) {
                Some(t) => self.binding(t, chunk, items[2]),
                None => (self.placeholder(), 0),
            };
            // Invocations: one per item of values (shared: one workgroup per tile, counted in x).
            let outputs = chunk.groups as u64 * out_group / w;
            let tiles =
                shared.map(|tile| crate::cpu::reference::forward_shared_workgroups(&g, chunk.groups, tile) as u64);
            let params = ParamsUniform {
                counts: [tiles.unwrap_or(outputs) as u32, (chunk.groups as u64 * in_group / items[0]) as u32, 0, 0],
                bases: [base_in, base_val, base_idx, 0],
                constants: super::kernels::constants(dtype),
                geometry,
                divisors,
            };
            let bind_group = self.bind_group(kernel, params, vec![b_in, b_val, b_idx])?;
            let max = self.limits.max_compute_workgroups_per_dimension;
            let grid = match tiles {
                Some(tiles) => dispatch_grid(tiles, max)?,
                None => dispatch_size(outputs, max)?,
            };
            dispatches.push((bind_group, grid));
        }
        self.encode_pass(encoder, kernel, &pipeline, &dispatches, options);
        Ok(())
    }

    /// The kernel variants that can run a forward pass of `spec`, the one
    /// [`Context::record_forward`] picks first (for buffers whose offsets are multiples of 16
    /// bytes; other offsets can rule out the blocked kernels). Every variant gives the same bits;
    /// force one with [`RecordOptions::variant`].
    ///
    /// ```
    /// # fn main() -> Result<(), wgpool::Error> {
    /// use wgpool::{Context, InputShape, PoolParams, PoolSpec};
    /// let ctx = Context::new()?;
    /// let spec = PoolSpec::new(InputShape::nchw(1, 2, 8, 8), PoolParams::new([2, 2]));
    /// let names: Vec<String> = ctx.forward_variants(&spec)?.iter().map(|v| v.name()).collect();
    /// assert_eq!(names, ["forward_rows", "forward", "forward generic"]);
    /// # Ok(()) }
    /// ```
    pub fn forward_variants(&self, spec: &PoolSpec) -> Result<Vec<Variant>> {
        Ok(self.forward_candidates(&spec.validate()?, None))
    }

    /// The kernel variants that can run a backward pass of `spec`, the one
    /// [`Context::record_backward`] picks first; as [`Context::forward_variants`].
    pub fn backward_variants(&self, spec: &PoolSpec) -> Result<Vec<Variant>> {
        Ok(self.backward_candidates(&spec.validate()?, None))
    }

    /// Compiles ahead the pipelines that forward passes (with indices) and backward passes of
    /// `specs` in `dtype` will use, several at a time on as many threads as the machine has
    /// cores, so that the first calls on those shapes do not pay for most of that (what is left
    /// is mainly new buffer sizes).
    ///
    /// Pipelines are specialised to each geometry (the batch aside). A shape's first pass runs
    /// a slower generic kernel and its second compiles the shape's own pipeline (see
    /// [`ContextOptions::generic_calls`](super::ContextOptions::generic_calls)): tens of
    /// milliseconds each on many drivers (`wgpool bench` measures it). Prepared shapes run
    /// their own pipelines from the first pass. The variants are those that [`Context::forward_variants`] and
    /// [`Context::backward_variants`] list first (buffers on 16-byte boundaries, as every buffer
    /// wgpool allocates). Each is then dispatched once with nothing to do, and the call waits for
    /// that: drivers that compile at the first dispatch (Mesa's software ones) do it here too.
    /// At most 256 pipelines stay cached (a full cache is emptied), so preparing more than 128
    /// shapes, or many more over time, loses the earlier ones.
    ///
    /// ```
    /// # fn main() -> Result<(), wgpool::Error> {
    /// use wgpool::{Context, DType, InputShape, PoolParams, PoolSpec};
    /// let ctx = Context::new()?;
    /// let specs: Vec<PoolSpec> = [224, 160, 96]
    ///     .map(|side| PoolSpec::new(InputShape::nchw(1, 64, side, side), PoolParams::new([3, 3]).stride([2, 2])))
    ///     .into();
    /// ctx.prepare(&specs, DType::F32)?;
    /// assert_eq!(ctx.cached_pipelines(), 6); // a forward and a backward pipeline per shape
    /// # Ok(()) }
    /// ```
    #[cfg(not(target_arch = "wasm32"))]
    pub fn prepare(&self, specs: &[PoolSpec], dtype: DType) -> Result<()> {
        self.prepare_passes(specs, dtype, true)
    }

    /// Like [`Context::prepare`], for values-only forward passes
    /// ([`Context::forward_values`], [`Context::record_forward_values`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn prepare_values(&self, specs: &[PoolSpec], dtype: DType) -> Result<()> {
        self.prepare_passes(specs, dtype, false)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn prepare_passes(&self, specs: &[PoolSpec], dtype: DType, with_indices: bool) -> Result<()> {
        self.check_usable()?;
        self.check_dtype(dtype)?;
        // (variant, geometry, write_indices) per pipeline, every spec checked before any work,
        // each pipeline once (specs that differ in the batch only share theirs).
        let mut jobs: Vec<(Variant, Geometry, bool)> = vec![];
        for spec in specs {
            let g = spec.validate()?;
            let mut add = |job: (Variant, Geometry, bool)| {
                let same = |(v, h, w): &(Variant, Geometry, bool)| {
                    (*v, h.axes, h.groups_and_lanes().1, *w) == (job.0, job.1.axes, job.1.groups_and_lanes().1, job.2)
                };
                if !jobs.iter().any(same) {
                    jobs.push(job);
                }
            };
            add((self.forward_candidates(&g, None)[0], g, with_indices));
            if with_indices {
                add((self.backward_candidates(&g, None)[0], g, true));
            }
        }
        if jobs.is_empty() {
            return Ok(());
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs.len());
        // Each worker compiles the jobs it takes and hands back their pipelines, which the
        // warm-up then runs (looking them up again could miss: a full cache is emptied).
        let compile = || -> Result<Vec<(Kernel, wgpu::ComputePipeline)>> {
            // Error scopes are per thread: each worker catches its own compilation errors.
            let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
            let mut compiled = vec![];
            while let Some((variant, g, write_indices)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                compiled
                    .push((variant.kernel, self.kernels.pipeline(&self.device, *variant, dtype, g, *write_indices)));
            }
            // Popped innermost first, all of them, before any error returns.
            let errors = [internal.pop(), validation.pop(), oom.pop()].map(pollster::block_on);
            match errors.into_iter().flatten().next() {
                Some(e) => Err(super::scope_error(e)),
                None => Ok(compiled),
            }
        };
        let pipelines = std::thread::scope(|s| {
            let workers: Vec<_> = (1..threads).map(|_| s.spawn(compile)).collect();
            let mut all = compile()?;
            for worker in workers {
                all.extend(worker.join().expect("a pipeline compile panicked")?);
            }
            Ok::<_, Error>(all)
        })?;
        self.warm_up(&pipelines, dtype)
    }

    /// Runs each of `pipelines` once on one workgroup with nothing to do (counts of 0, tiny
    /// buffers) and waits: some drivers (Mesa's lavapipe and llvmpipe) compile a shader's machine
    /// code at its first dispatch, not when the pipeline is created.
    #[cfg(not(target_arch = "wasm32"))]
    fn warm_up(&self, pipelines: &[(Kernel, wgpu::ComputePipeline)], dtype: DType) -> Result<()> {
        let record = |encoder: &mut wgpu::CommandEncoder| {
            self.kernels.record_warm_up(&self.device, &self.queue, encoder, pipelines, dtype);
            Ok(())
        };
        let ((), submission) = pollster::block_on(self.submit_scoped(record))?;
        self.wait(Some(submission))
    }

    /// Records a backward pass into `encoder`: clears `invalid_count`, then writes every element
    /// of `grad_input` and counts the indices no forward pass could have produced.
    ///
    /// A non-zero count means the indices were invalid and `grad_input` must not be used; the
    /// host-level [`Context::backward`] turns it into [`Error::InvalidIndices`]. The count is a
    /// `u32` that wraps: only a pass with 2^32 invalid indices or more (over 16 GiB of them) could
    /// read a wrong count, and only an exact multiple of 2^32 of them could read 0.
    pub fn record_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        spec: &PoolSpec,
        dtype: DType,
        buffers: &BackwardBuffers<'_>,
        options: RecordOptions<'_>,
    ) -> Result<()> {
        self.check_usable()?;
        let g = spec.validate()?;
        self.check_dtype(dtype)?;
        let (groups, lanes) = g.groups_and_lanes();
        let elem = dtype.size() as u64;
        let in_group = (g.plane_in() * lanes) as u64;
        let out_group = (g.plane_out() * lanes) as u64;
        let tensors = [
            TensorArg { what: "grad_output", region: buffers.grad_output, group_bytes: out_group * elem, elem },
            TensorArg { what: "indices", region: buffers.indices, group_bytes: out_group * 4, elem: 4 },
            TensorArg { what: "grad_input", region: buffers.grad_input, group_bytes: in_group * elem, elem },
        ];
        for t in &tensors {
            self.check_region(t, t.group_bytes * groups as u64)?;
        }
        let counter = TensorArg { what: "invalid_count", region: buffers.invalid_count, group_bytes: 0, elem: 4 };
        self.check_region(&counter, 4)?;
        if !counter.region.buffer.usage().contains(wgpu::BufferUsages::COPY_DST) {
            return Err(Error::BufferUsage { what: "invalid_count".into(), usage: "COPY_DST".into() });
        }
        Self::check_aliasing(&[&tensors[0], &tensors[1]], &[&tensors[2], &counter])?;
        if tensors[2].region.buffer == counter.region.buffer {
            let gi = (tensors[2].region.offset, tensors[2].region.offset + in_group * elem * groups as u64);
            if counter.region.offset + 4 > gi.0 && counter.region.offset < gi.1 {
                return Err(Error::BufferUsage {
                    what: "invalid_count (overlaps grad_input)".into(),
                    usage: "a region of its own".into(),
                });
            }
        }
        let variant = Self::choose(&self.backward_candidates(&g, Some(&tensors)), options.variant, "backward")?;
        // Nothing is recorded until every check has passed: the counter's clear goes in with the
        // pass.
        if groups == 0 {
            encoder.clear_buffer(counter.region.buffer, counter.region.offset, Some(4));
            return Ok(());
        }
        let chunks = self.plan(&g, &tensors)?;
        // After the checks of the buffers and of the chunk plan: a call they fail counts no pass.
        let variant = self.tiered(variant, options.variant.is_some(), dtype, &g, true);
        let Variant { kernel, width, block_rows, .. } = variant;
        let shared = if kernel.is_shared() { crate::cpu::reference::shared_tile(&g, false) } else { None };
        let items = if kernel.is_rows() { kernel.items() } else { [width.get() as u64; 3] };
        let pipeline = self.kernels.pipeline(&self.device, variant, dtype, &g, true);
        // Only generic pipelines read these; specialised ones get zeros, computed for nothing.
        let (geometry, divisors) =
            if variant.generic { super::kernels::generic_uniform(width, &g) } else { Default::default() };
        let mut dispatches = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let (b_go, base_go) = self.binding(&tensors[0], chunk, items[0]);
            let (b_idx, base_idx) = self.binding(&tensors[1], chunk, items[1]);
            let (b_gi, base_gi) = self.binding(&tensors[2], chunk, items[2]);
            let counter_chunk = Chunk { first_group: 0, groups: 1 };
            let (b_cnt, base_cnt) = self.binding(&TensorArg { group_bytes: 4, ..counter }, counter_chunk, 1);
            // Invocations: one per item of grad_output (scatter) or grad_input (gather).
            let outputs = chunk.groups as u64 * out_group / items[0];
            let inputs = match kernel {
                Kernel::BackwardRows => {
                    crate::cpu::reference::gather_rows_invocations(&g, chunk.groups, block_rows as usize) as u64
                }
                Kernel::BackwardCells => crate::cpu::reference::cells_invocations(&g, chunk.groups) as u64,
                _ => chunk.groups as u64 * in_group / items[2],
            };
            let params = ParamsUniform {
                counts: [outputs as u32, inputs as u32, 0, 0],
                bases: [base_go, base_gi, base_idx, base_cnt],
                constants: super::kernels::constants(dtype),
                geometry,
                divisors,
            };
            let max = self.limits.max_compute_workgroups_per_dimension;
            let bind_group;
            let grid = match shared {
                Some(tile) => {
                    let tiles = crate::cpu::reference::backward_shared_workgroups(&g, chunk.groups, tile) as u64;
                    bind_group = self.bind_group(
                        kernel,
                        ParamsUniform { counts: [tiles as u32, 0, 0, 0], ..params },
                        vec![b_go, b_idx, b_gi, b_cnt],
                    )?;
                    dispatch_grid(tiles, max)?
                }
                None => {
                    // The gathers run one invocation per grad_input item (block, cell); the
                    // scatters one per grad_output item.
                    let gather = matches!(kernel, Kernel::Backward | Kernel::BackwardRows | Kernel::BackwardCells);
                    let invocations = if gather { inputs } else { outputs };
                    bind_group = self.bind_group(kernel, params, vec![b_go, b_idx, b_gi, b_cnt])?;
                    dispatch_size(invocations, max)?
                }
            };
            dispatches.push((bind_group, grid));
        }
        encoder.clear_buffer(counter.region.buffer, counter.region.offset, Some(4));
        self.encode_pass(encoder, kernel, &pipeline, &dispatches, options);
        Ok(())
    }

    fn plan(&self, g: &Geometry, tensors: &[TensorArg<'_>]) -> Result<Vec<Chunk>> {
        let (groups, _) = g.groups_and_lanes();
        let unit = match g.layout {
            crate::Layout::ChannelsFirst => "plane",
            crate::Layout::ChannelsLast => "image",
        };
        let sizes: Vec<(u64, u64)> = tensors.iter().map(|t| (t.group_bytes, t.elem)).collect();
        plan_chunks(
            groups,
            &sizes,
            self.limits.max_storage_buffer_binding_size,
            self.limits.min_storage_buffer_offset_alignment as u64,
            unit,
        )
    }

    fn encode_pass(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        kernel: Kernel,
        pipeline: &wgpu::ComputePipeline,
        dispatches: &[(wgpu::BindGroup, (u32, u32))],
        options: RecordOptions<'_>,
    ) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(kernel.entry_point()),
            timestamp_writes: options.timestamp_writes,
        });
        pass.set_pipeline(pipeline);
        for (bind_group, (x, y)) in dispatches {
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(*x, *y, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_all_groups_and_respect_the_limit() {
        let chunks = plan_chunks(10, &[(1000, 4), (250, 4)], 4096, 256, "plane").unwrap();
        assert_eq!(chunks.iter().map(|c| c.groups).sum::<usize>(), 10);
        assert!(chunks.iter().all(|c| c.groups as u64 * 1000 + 260 <= 4096));
        assert_eq!(chunks[0], Chunk { first_group: 0, groups: 3 });
        assert_eq!(
            plan_chunks(1, &[(5000, 4)], 4096, 256, "image"),
            Err(Error::BindingTooSmall { unit: "image", bytes: 5000, limit: 4096 })
        );
    }

    #[test]
    fn dispatch_uses_a_second_dimension_beyond_the_limit() {
        assert_eq!(dispatch_size(256 * 4096, 65535).unwrap(), (4096, 1));
        assert_eq!(dispatch_size(256 * 4097, 65535).unwrap(), (2049, 2));
        assert_eq!(dispatch_size(256 * 50_176, 65535).unwrap(), (3860, 13));
        assert_eq!(dispatch_size(256 * (65536 * 4096 + 1), 65535).unwrap(), (65521, 4097));
        assert_eq!(dispatch_size(256 * 60, 8).unwrap(), (8, 8));
        assert!(matches!(dispatch_size(256 * 65, 8), Err(Error::TooLarge { .. })));
        assert_eq!(dispatch_size(1, 65535).unwrap(), (1, 1));
    }

    #[test]
    fn no_dispatch_fits_zero_workgroups_per_dimension() {
        assert!(matches!(dispatch_grid(1, 0), Err(Error::TooLarge { limit: 0, .. })));
        assert!(matches!(dispatch_size(1, 0), Err(Error::TooLarge { limit: 0, .. })));
    }
}
