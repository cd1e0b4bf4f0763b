//! Shared test helpers: a seeded generator, nasty inputs, adapters, bit comparisons, a backward
//! pass recorded over the test's own buffers.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use wgpool::wgpu;
use wgpool::{
    BackwardBuffers, BufferRegion, Context, ContextOptions, Element, Error, PoolSpec, RecordOptions, Variant,
};

pub use super::generators::*;

/// Compares bit patterns; the message names the first differing element.
pub fn assert_bits_eq<T: Element>(what: &str, context: &str, got: &[T], want: &[T]) {
    assert_eq!(got.len(), want.len(), "[{context}] {what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits_u32() != want[i].to_bits_u32()) {
        panic!(
            "[{context}] {what}[{i}]: got {:?} (bits {:#x}), want {:?} (bits {:#x})",
            got[i],
            got[i].to_bits_u32(),
            want[i],
            want[i].to_bits_u32()
        );
    }
}

/// One context per adapter found, created once for the whole test binary.
///
/// `WGPU_BACKEND` restricts the backends as usual. No adapter: panics with how to get one.
pub fn contexts() -> &'static [Context] {
    static CONTEXTS: OnceLock<Vec<Context>> = OnceLock::new();
    CONTEXTS.get_or_init(|| {
        // Every pass runs the variant the context picks, specialised (the generic kernels that
        // stand in for it at a shape's first calls have tests of their own).
        let options = ContextOptions { poison_outputs: true, generic_calls: Some(0), ..Default::default() };
        let adapters = wgpool::gpu::enumerate_adapters_blocking(&options);
        let contexts: Vec<Context> = adapters
            .iter()
            .filter_map(|a| match pollster::block_on(Context::from_adapter(a, &options)) {
                Ok(ctx) => Some(ctx),
                Err(e) => {
                    eprintln!("skipping adapter {:?}/{}: {e}", a.get_info().backend, a.get_info().name);
                    None
                }
            })
            .collect();
        assert!(
            !contexts.is_empty(),
            "no GPU adapter found: the GPU tests need one. Install a software adapter: `apt-get install mesa-vulkan-drivers` \
             (Vulkan lavapipe) and Mesa's EGL (llvmpipe, GL); WGPU_BACKEND={:?}",
            std::env::var("WGPU_BACKEND").ok()
        );
        contexts
    })
}

/// Creates a context like `base` but with `options` (same adapter); `generic_calls` unset is
/// `Some(0)` (every pass specialised), as in [`contexts`].
pub fn context_with(base: &Context, options: ContextOptions) -> Context {
    let name = base.adapter_info().name.clone();
    let backend = base.adapter_info().backend;
    let adapters = wgpool::gpu::enumerate_adapters_blocking(&ContextOptions {
        backends: Some(backend.into()),
        ..Default::default()
    });
    let adapter = adapters.iter().find(|a| a.get_info().name == name).expect("same adapter again");
    let options = ContextOptions { poison_outputs: true, generic_calls: options.generic_calls.or(Some(0)), ..options };
    pollster::block_on(Context::from_adapter(adapter, &options)).unwrap()
}

/// Counts GPU cases per adapter: `ran` when created, `passed` by [`Case::pass`]. The totals go to
/// `$WGPOOL_SUMMARY_DIR/gpu-cases-<pid>.tsv` (adapter, ran, passed) for `.ci/run` to print.
pub struct Case(String);

impl Case {
    pub fn start(ctx: &Context) -> Self {
        tally(&ctx.describe(), 1, 0);
        Case(ctx.describe())
    }
    pub fn pass(self) {
        tally(&self.0, 0, 1);
    }
}

fn tally(adapter: &str, ran: usize, passed: usize) {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    static COUNTS: Mutex<BTreeMap<String, (usize, usize)>> = Mutex::new(BTreeMap::new());
    let mut counts = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let entry = counts.entry(adapter.to_string()).or_default();
    entry.0 += ran;
    entry.1 += passed;
    if let Ok(dir) = std::env::var("WGPOOL_SUMMARY_DIR") {
        let text: String = counts.iter().map(|(k, (r, p))| format!("{k}\t{r}\t{p}\n")).collect();
        let _ = std::fs::write(format!("{dir}/gpu-cases-{}.tsv", std::process::id()), text);
    }
}

/// Runs `f` inside validation and internal error scopes on this thread and returns the first wgpu
/// error caught: a call that wgpool accepted must not make wgpu complain.
pub fn wgpu_errors<R>(ctx: &Context, f: impl FnOnce() -> R) -> (R, Option<wgpu::Error>) {
    let validation = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
    let internal = ctx.device().push_error_scope(wgpu::ErrorFilter::Internal);
    let r = f();
    let errors = [internal.pop(), validation.pop()];
    let e = errors.into_iter().find_map(pollster::block_on);
    (r, e)
}

/// `data`'s bytes, padded to a whole number of 4-byte words (at least one).
pub fn padded_bytes<T: bytemuck::Pod>(data: &[T]) -> Vec<u8> {
    let mut b = bytemuck::cast_slice::<T, u8>(data).to_vec();
    b.resize(b.len().next_multiple_of(4).max(4), 0);
    b
}

/// Reads `size` bytes of `buffer` (which needs `COPY_SRC`) back to the host.
pub fn read_buffer(ctx: &Context, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Vec<u8> {
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device().create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
    let submission = ctx.queue().submit([encoder.finish()]);
    let (sender, receiver) = mpsc::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = sender.send(r);
    });
    ctx.wait(Some(submission)).expect("wait for a readback");
    receiver.recv_timeout(Duration::from_secs(60)).expect("map callback").expect("map");
    let bytes = staging.slice(..).get_mapped_range().expect("mapped range").to_vec();
    staging.unmap();
    bytes
}

/// `record_backward` over buffers of the test's own, with the counter at an offset inside a
/// buffer of its own that starts out holding garbage, `variant` forced (`None`: the context's
/// choice): the gradient and the counter it wrote.
pub fn record_backward_counted<T: Element>(
    ctx: &Context,
    spec: &PoolSpec,
    grad_output: &[T],
    indices: &[u32],
    variant: Option<Variant>,
) -> Result<(Vec<T>, u32), Error> {
    use wgpu::util::DeviceExt;
    let g = spec.validate()?;
    let device = ctx.device();
    let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    let init = |label, contents: &[u8]| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents, usage: storage })
    };
    let go = init("test grad_output", &padded_bytes(grad_output));
    let idx = init("test indices", &padded_bytes(indices));
    let gi_bytes = padded_bytes(&vec![T::ZERO; g.input_len()]);
    let gi = init("test grad_input", &vec![0xA5; gi_bytes.len()]);
    let counter = init("test counter", &[0xEE; 272]);
    let buffers = BackwardBuffers {
        grad_output: (&go).into(),
        indices: (&idx).into(),
        grad_input: (&gi).into(),
        invalid_count: BufferRegion::new(&counter, 260),
    };
    let (recorded, error) = wgpu_errors(ctx, || {
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        let r = ctx.record_backward(
            &mut encoder,
            spec,
            T::DTYPE,
            &buffers,
            RecordOptions { variant, ..Default::default() },
        );
        r.map(|()| ctx.queue().submit([encoder.finish()]))
    });
    assert!(error.is_none(), "[{}] {spec:?}: wgpu error: {error:?}", ctx.describe());
    let submission = recorded?;
    ctx.wait(Some(submission))?;
    let grad: Vec<T> = bytemuck::pod_collect_to_vec(
        &read_buffer(ctx, &gi, 0, gi_bytes.len() as u64)[..g.input_len() * T::DTYPE.size()],
    );
    let count = u32::from_le_bytes(read_buffer(ctx, &counter, 260, 4).try_into().unwrap());
    Ok((grad, count))
}
