//! wgpool in the browser: a WebAssembly module on wgpu's WebGPU backend.
//!
//! The page (`index.html`, `main.js`) creates a [`Demo`] with [`create_demo`], which opens a
//! `wgpool::Context` on the browser's WebGPU adapter, then runs forward and backward cases on
//! random data ([`Demo::run_case`]) and checks every value, index and gradient bit for bit against
//! `wgpool::cpu::reference`, compiled into the same module.
//!
//! Two ways to reach the GPU are exercised:
//! - `host`: [`wgpool::Context::forward_async`] / [`wgpool::Context::backward_async`], the
//!   host-slice API;
//! - `encoder`: [`wgpool::Context::record_forward`] / [`wgpool::Context::record_backward`] into
//!   this module's own command encoder and buffers, with its own error scopes.

mod cases;

use std::rc::Rc;

use cases::{Fill, Rng};
use js_sys::{Float32Array, Object, Promise, Reflect, Uint32Array};
use wasm_bindgen::prelude::*;
use wgpool::wgpu;
use wgpool::{
    BackwardBuffers, BufferRegion, Context, ContextOptions, DType, Element, ForwardBuffers, InputShape, Layout,
    NO_INDEX, PoolParams, PoolSpec, RecordOptions, cpu, f16,
};

/// Largest spatial size handed to `random_spec` (as in the native GPU tests' small cases).
const MAX_SPATIAL: usize = 7;

#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("wgpool-web panicked: {info}").into());
    }));
}

fn now_ms() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or(0.0)
}

fn obj(fields: Vec<(&str, JsValue)>) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        Reflect::set(&o, &JsValue::from_str(k), &v).expect("set a property of a fresh object");
    }
    o.into()
}

fn err_js(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

/// How a case reaches the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host = 0,
    Encoder = 1,
}

impl Mode {
    fn parse(s: &str) -> Result<Self, JsValue> {
        match s {
            "host" => Ok(Mode::Host),
            "encoder" => Ok(Mode::Encoder),
            other => Err(err_js(format!("unknown mode {other:?} (host or encoder)"))),
        }
    }
}

/// A wgpool context on the browser's adapter.
#[wasm_bindgen]
pub struct Demo {
    ctx: Rc<Context>,
}

/// Opens a `wgpool::Context` with default options (on wasm: the browser's WebGPU adapter).
#[wasm_bindgen(js_name = createDemo)]
pub async fn create_demo() -> Result<Demo, JsValue> {
    let ctx = Context::new_async(&ContextOptions::default()).await.map_err(err_js)?;
    Ok(Demo { ctx: Rc::new(ctx) })
}

#[wasm_bindgen]
impl Demo {
    /// The adapter as wgpu reports it, and what the device can do.
    pub fn adapter(&self) -> JsValue {
        let info = self.ctx.adapter_info();
        let limits = self.ctx.limits();
        obj(vec![
            ("name", info.name.clone().into()),
            ("backend", format!("{:?}", info.backend).into()),
            ("vendor", info.vendor.into()),
            ("device", info.device.into()),
            ("deviceType", format!("{:?}", info.device_type).into()),
            ("driver", info.driver.clone().into()),
            ("driverInfo", info.driver_info.clone().into()),
            ("describe", self.ctx.describe().into()),
            ("f16", self.ctx.supports(DType::F16).into()),
            ("timestamps", self.ctx.has_timestamps().into()),
            ("maxStorageBufferBindingSize", (limits.max_storage_buffer_binding_size as f64).into()),
            ("maxComputeWorkgroupsPerDimension", limits.max_compute_workgroups_per_dimension.into()),
        ])
    }

    /// The number of fixed edge cases (the first case indices).
    #[wasm_bindgen(js_name = edgeCases)]
    pub fn edge_cases(&self) -> u32 {
        cases::edge_cases().len() as u32
    }

    /// Runs case `index` of the suite seeded by `seed` in `dtype` (`f32`, `f16`) through `mode`
    /// (`host`, `encoder`). Resolves to a report object; rejects only if the case could not run.
    #[wasm_bindgen(js_name = runCase)]
    pub fn run_case(&self, index: u32, seed: u32, dtype: String, mode: String) -> Promise {
        let ctx = self.ctx.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mode = Mode::parse(&mode)?;
            // Each API and element type draws its own cases from the same space.
            let stream = (mode as u64) << 1 | (dtype == "f16") as u64;
            let mut rng = Rng::new((seed as u64) << 32 | stream << 24 | index as u64);
            let edges = cases::edge_cases();
            let (spec, fill) = match edges.get(index as usize) {
                Some(case) => case.clone(),
                None => {
                    let spec = cases::random_spec(&mut rng, MAX_SPATIAL);
                    let fill = if rng.chance(0.25) { Fill::Negative } else { Fill::Nasty };
                    (spec, fill)
                }
            };
            // Every third case also feeds backward a corrupted index, which must be counted.
            let corrupt = index % 3 == 2;
            let report = match dtype.as_str() {
                "f32" => run::<f32>(&ctx, &spec, fill, &mut rng, mode, corrupt).await,
                "f16" => run::<f16>(&ctx, &spec, fill, &mut rng, mode, corrupt).await,
                other => return Err(err_js(format!("unknown dtype {other:?}"))),
            };
            let (passed, message, timings) = match report {
                Ok(t) => (true, String::new(), t),
                Err((message, t)) => (false, message, t),
            };
            Ok(obj(vec![
                ("index", index.into()),
                ("dtype", dtype.into()),
                ("mode", format!("{mode:?}").to_lowercase().into()),
                ("spec", describe(&spec).into()),
                ("fill", fill.name().into()),
                ("corruptIndex", corrupt.into()),
                ("passed", passed.into()),
                ("message", message.into()),
                ("inputLen", (timings.input_len as u32).into()),
                ("outputLen", (timings.output_len as u32).into()),
                ("cpuMs", timings.cpu_ms.into()),
                ("forwardMs", timings.forward_ms.into()),
                ("backwardMs", timings.backward_ms.into()),
            ]))
        })
    }

    /// The picture of the page: a generated RGB image (channels-last, 1×H×W×3) max-pooled with
    /// ResNet's stem pool (kernel 3, stride 2, padding 1) on the GPU, checked against the CPU.
    #[wasm_bindgen(js_name = demoImage)]
    pub fn demo_image(&self, size: u32, mode: String) -> Promise {
        let ctx = self.ctx.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mode = Mode::parse(&mode)?;
            let (h, w) = (size as usize, size as usize);
            let spec =
                PoolSpec::new(InputShape::new(1, 3, [h, w]), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]))
                    .layout(Layout::ChannelsLast);
            let g = spec.validate().map_err(err_js)?;
            let input = picture(h, w);
            let t0 = now_ms();
            let (values, indices) = gpu_forward(&ctx, &spec, &input, mode).await.map_err(err_js)?;
            let ms = now_ms() - t0;
            let want = cpu::reference::forward(&spec, &input).map_err(err_js)?;
            let matches = bits_differ("values", &values, &want.values).is_none() && want.indices == indices;
            let out = g.output_shape().spatial;
            Ok(obj(vec![
                ("width", (w as u32).into()),
                ("height", (h as u32).into()),
                ("outWidth", (out[1] as u32).into()),
                ("outHeight", (out[0] as u32).into()),
                ("input", Float32Array::from(&input[..]).into()),
                ("pooled", Float32Array::from(&values[..]).into()),
                ("indices", Uint32Array::from(&indices[..]).into()),
                ("spec", describe(&spec).into()),
                ("ms", ms.into()),
                ("matches", matches.into()),
            ]))
        })
    }

    /// Times forward and backward on one larger problem (`runs` runs each after a warm-up).
    pub fn bench(&self, runs: u32, mode: String) -> Promise {
        let ctx = self.ctx.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mode = Mode::parse(&mode)?;
            let spec = PoolSpec::new(
                InputShape::nchw(1, 32, 128, 128),
                PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]),
            );
            let g = spec.validate().map_err(err_js)?;
            let mut rng = Rng::new(99);
            let input: Vec<f32> = cases::nasty_values(&mut rng, g.input_len());
            let grad: Vec<f32> = cases::gradients(&mut rng, g.output_len());
            let mut forward = vec![];
            let mut backward = vec![];
            let mut indices = vec![];
            for run in 0..=runs {
                let t0 = now_ms();
                let (_, idx) = gpu_forward(&ctx, &spec, &input, mode).await.map_err(err_js)?;
                let t1 = now_ms();
                gpu_backward(&ctx, &spec, &grad, &idx, mode).await.map_err(err_js)?;
                let t2 = now_ms();
                if run > 0 {
                    forward.push(t1 - t0);
                    backward.push(t2 - t1);
                }
                indices = idx;
            }
            let want = cpu::reference::forward(&spec, &input).map_err(err_js)?;
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
            };
            Ok(obj(vec![
                ("spec", describe(&spec).into()),
                ("elements", (g.input_len() as u32).into()),
                ("runs", runs.into()),
                ("forwardMs", median(&mut forward).into()),
                ("backwardMs", median(&mut backward).into()),
                ("indicesMatch", (want.indices == indices).into()),
            ]))
        })
    }
}

/// A spec in one line, in the layout's own dimension order.
fn describe(spec: &PoolSpec) -> String {
    let p = &spec.params;
    let fmt = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("×");
    let or = |v: &Vec<usize>, d: &str| if v.is_empty() { d.to_string() } else { fmt(v) };
    format!(
        "{}-D {} [{}] k{} s{} p{} d{}{}",
        spec.input.spatial.len(),
        spec.layout.name(),
        fmt(&spec.input.dims(spec.layout)),
        fmt(&p.kernel),
        or(&p.stride, "=k"),
        or(&p.padding, "0"),
        or(&p.dilation, "1"),
        if p.ceil_mode { " ceil" } else { "" }
    )
}

/// A picture with structure at every scale: soft colour gradients, rings and sparse bright dots
/// (which max pooling visibly grows), channels-last RGB in [0, 1].
fn picture(h: usize, w: usize) -> Vec<f32> {
    let mut rng = Rng::new(2024);
    let mut img = vec![0f32; h * w * 3];
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let r = ((fx - 0.5).powi(2) + (fy - 0.5).powi(2)).sqrt();
            let ring = 0.5 + 0.5 * (r * 40.0).cos();
            let px = &mut img[(y * w + x) * 3..][..3];
            px[0] = 0.15 + 0.35 * fx * ring;
            px[1] = 0.1 + 0.3 * fy * (1.0 - ring);
            px[2] = 0.25 + 0.25 * ring;
        }
    }
    for _ in 0..(h * w / 60) {
        let (y, x) = (rng.range(0, h - 1), rng.range(0, w - 1));
        let c = rng.range(0, 2);
        let px = &mut img[(y * w + x) * 3..][..3];
        px[c] = 1.0;
        px[(c + 1) % 3] = 0.6 + 0.4 * rng.unit();
    }
    img
}

/// Timings and sizes of one case.
#[derive(Default)]
struct Timings {
    input_len: usize,
    output_len: usize,
    cpu_ms: f64,
    forward_ms: f64,
    backward_ms: f64,
}

/// The first element whose bits differ, and how many differ, as a message.
fn bits_differ<T: Element>(what: &str, got: &[T], want: &[T]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{what}: length {} != {}", got.len(), want.len()));
    }
    let differ: Vec<usize> = (0..got.len()).filter(|&i| got[i].to_bits_u32() != want[i].to_bits_u32()).collect();
    differ.first().map(|&i| {
        format!(
            "{what}[{i}]: got {:?} (bits {:#x}), want {:?} (bits {:#x}); {} of {} differ",
            got[i],
            got[i].to_bits_u32(),
            want[i],
            want[i].to_bits_u32(),
            differ.len(),
            got.len()
        )
    })
}

fn indices_differ(got: &[u32], want: &[u32]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("indices: length {} != {}", got.len(), want.len()));
    }
    let differ: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    differ.first().map(|&i| {
        format!(
            "indices[{i}]: got {}, want {}; {} of {} differ",
            got[i] as i64 - if got[i] == NO_INDEX { 1 << 32 } else { 0 },
            want[i] as i64 - if want[i] == NO_INDEX { 1 << 32 } else { 0 },
            differ.len(),
            got.len()
        )
    })
}

type CaseResult = Result<Timings, (String, Timings)>;

/// Forward, then backward from the reference indices, then (if `corrupt`) backward from indices
/// with one entry no window can produce; all checked against the CPU reference.
async fn run<T: Element>(
    ctx: &Context,
    spec: &PoolSpec,
    fill: Fill,
    rng: &mut Rng,
    mode: Mode,
    corrupt: bool,
) -> CaseResult {
    let mut t = Timings::default();
    let g = match spec.validate() {
        Ok(g) => g,
        Err(e) => return Err((format!("invalid spec: {e}"), t)),
    };
    t.input_len = g.input_len();
    t.output_len = g.output_len();
    let input: Vec<T> = fill.values(rng, g.input_len());
    let grad: Vec<T> = cases::gradients(rng, g.output_len());

    let c0 = now_ms();
    let want = match cpu::reference::forward(spec, &input) {
        Ok(w) => w,
        Err(e) => return Err((format!("cpu forward: {e}"), t)),
    };
    let want_gi = match cpu::reference::backward(spec, &grad, &want.indices) {
        Ok(w) => w,
        Err(e) => return Err((format!("cpu backward: {e}"), t)),
    };
    t.cpu_ms = now_ms() - c0;

    let f0 = now_ms();
    let got = gpu_forward(ctx, spec, &input, mode).await;
    t.forward_ms = now_ms() - f0;
    let (values, indices) = match got {
        Ok(v) => v,
        Err(e) => return Err((format!("gpu forward: {e}"), t)),
    };
    if let Some(m) = bits_differ("values", &values, &want.values) {
        return Err((format!("forward {m}"), t));
    }
    if let Some(m) = indices_differ(&indices, &want.indices) {
        return Err((format!("forward {m}"), t));
    }

    let b0 = now_ms();
    let got = gpu_backward(ctx, spec, &grad, &want.indices, mode).await;
    t.backward_ms = now_ms() - b0;
    let gi = match got {
        Ok(gi) => gi,
        Err(e) => return Err((format!("gpu backward: {e}"), t)),
    };
    if let Some(m) = bits_differ("grad_input", &gi, &want_gi) {
        return Err((format!("backward {m}"), t));
    }

    if corrupt && g.output_len() > 0 {
        let mut bad = want.indices.clone();
        let at = rng.range(0, bad.len() - 1);
        // Past the plane: never a valid index (NO_INDEX may be valid for padding-only windows).
        bad[at] = g.plane_in() as u32 + rng.range(0, 5) as u32;
        let want_err = cpu::reference::backward(spec, &grad, &bad);
        let got = gpu_backward(ctx, spec, &grad, &bad, mode).await;
        match (got, want_err) {
            (Err(GpuError::Invalid(n)), Err(wgpool::Error::InvalidIndices { count })) if n == count => {}
            (got, want) => {
                return Err((
                    format!(
                        "backward with index {} at {at}: got {:?}, want {:?}",
                        bad[at],
                        got.map(|_| "a gradient"),
                        want.map(|_| "a gradient")
                    ),
                    t,
                ));
            }
        }
    }
    Ok(t)
}

/// A GPU-side failure.
#[derive(Debug)]
enum GpuError {
    /// The backward pass counted this many invalid indices.
    Invalid(u64),
    Other(String),
}

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuError::Invalid(n) => write!(f, "{n} invalid indices"),
            GpuError::Other(s) => f.write_str(s),
        }
    }
}

impl From<wgpool::Error> for GpuError {
    fn from(e: wgpool::Error) -> Self {
        match e {
            wgpool::Error::InvalidIndices { count } => GpuError::Invalid(count),
            other => GpuError::Other(other.to_string()),
        }
    }
}

async fn gpu_forward<T: Element>(
    ctx: &Context,
    spec: &PoolSpec,
    input: &[T],
    mode: Mode,
) -> Result<(Vec<T>, Vec<u32>), GpuError> {
    match mode {
        Mode::Host => {
            let out = ctx.forward_async(spec, input).await?;
            Ok((out.values, out.indices))
        }
        Mode::Encoder => encoder_forward(ctx, spec, input).await,
    }
}

async fn gpu_backward<T: Element>(
    ctx: &Context,
    spec: &PoolSpec,
    grad: &[T],
    indices: &[u32],
    mode: Mode,
) -> Result<Vec<T>, GpuError> {
    match mode {
        Mode::Host => Ok(ctx.backward_async(spec, grad, indices).await?),
        Mode::Encoder => encoder_backward(ctx, spec, grad, indices).await,
    }
}

// ---- The encoder level: this module's own buffers, encoder and error scopes. ----

/// Poison written into outputs first, so that elements a kernel fails to write show up.
const POISON: u32 = 0x7fa5_7fa5;

fn padded(bytes: usize) -> u64 {
    (bytes as u64).next_multiple_of(4).max(4)
}

fn new_buffer(ctx: &Context, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false })
}

fn upload(ctx: &Context, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    let size = padded(bytes.len());
    let buffer = new_buffer(ctx, label, size, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST);
    let mut data = bytes.to_vec();
    data.resize(size as usize, 0);
    ctx.queue().write_buffer(&buffer, 0, &data);
    buffer
}

fn poisoned_output(ctx: &Context, label: &str, size: u64) -> wgpu::Buffer {
    let buffer = new_buffer(
        ctx,
        label,
        size,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    );
    let poison = vec![POISON; (size / 4) as usize];
    ctx.queue().write_buffer(&buffer, 0, bytemuck::cast_slice(&poison));
    buffer
}

/// Records with `record` inside validation, out-of-memory and internal error scopes, submits,
/// and awaits the scopes (the browser answers them asynchronously).
async fn submit_scoped(
    ctx: &Context,
    record: impl FnOnce(&mut wgpu::CommandEncoder) -> wgpool::Result<()>,
) -> Result<(), GpuError> {
    let device = ctx.device();
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgpool-web") });
    let recorded = record(&mut encoder);
    if recorded.is_ok() {
        ctx.queue().submit([encoder.finish()]);
    }
    let pops = [internal.pop(), validation.pop(), oom.pop()];
    let mut first = None;
    for pop in pops {
        if let Some(e) = pop.await {
            first.get_or_insert(e.to_string());
        }
    }
    recorded?;
    match first {
        Some(e) => Err(GpuError::Other(format!("WebGPU error: {e}"))),
        None => Ok(()),
    }
}

async fn map_read(buffer: &wgpu::Buffer) -> Result<Vec<u8>, GpuError> {
    let slice = buffer.slice(..);
    let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = sender.send(r);
    });
    match receiver.receive().await {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(GpuError::Other(format!("map: {e}"))),
        None => return Err(GpuError::Other("map: callback dropped".into())),
    }
    let bytes = slice.get_mapped_range().map_err(|e| GpuError::Other(format!("mapped range: {e}")))?.to_vec();
    buffer.unmap();
    Ok(bytes)
}

async fn encoder_forward<T: Element>(
    ctx: &Context,
    spec: &PoolSpec,
    input: &[T],
) -> Result<(Vec<T>, Vec<u32>), GpuError> {
    let g = spec.validate()?;
    let n_out = g.output_len();
    let elem = T::DTYPE.size();
    let (val_bytes, idx_bytes) = (padded(n_out * elem), padded(n_out * 4));
    let input_buffer = upload(ctx, "input", bytemuck::cast_slice(input));
    let values = poisoned_output(ctx, "values", val_bytes);
    let indices = poisoned_output(ctx, "indices", idx_bytes);
    let staging =
        new_buffer(ctx, "readback", val_bytes + idx_bytes, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
    submit_scoped(ctx, |encoder| {
        let buffers =
            ForwardBuffers { input: (&input_buffer).into(), values: (&values).into(), indices: (&indices).into() };
        ctx.record_forward(encoder, spec, T::DTYPE, &buffers, RecordOptions::default())?;
        encoder.copy_buffer_to_buffer(&values, 0, &staging, 0, val_bytes);
        encoder.copy_buffer_to_buffer(&indices, 0, &staging, val_bytes, idx_bytes);
        Ok(())
    })
    .await?;
    let bytes = map_read(&staging).await?;
    for b in [input_buffer, values, indices, staging] {
        b.destroy();
    }
    let v = &bytes[..n_out * elem];
    let i = &bytes[val_bytes as usize..val_bytes as usize + n_out * 4];
    Ok((bytemuck::pod_collect_to_vec(v), bytemuck::pod_collect_to_vec(i)))
}

async fn encoder_backward<T: Element>(
    ctx: &Context,
    spec: &PoolSpec,
    grad: &[T],
    indices: &[u32],
) -> Result<Vec<T>, GpuError> {
    let g = spec.validate()?;
    let n_in = g.input_len();
    let elem = T::DTYPE.size();
    let gi_bytes = padded(n_in * elem);
    let grad_buffer = upload(ctx, "grad_output", bytemuck::cast_slice(grad));
    let indices_buffer = upload(ctx, "indices", bytemuck::cast_slice(indices));
    let grad_input = poisoned_output(ctx, "grad_input", gi_bytes);
    let counter = poisoned_output(ctx, "invalid_count", 4);
    let staging =
        new_buffer(ctx, "readback", gi_bytes + 4, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
    submit_scoped(ctx, |encoder| {
        let buffers = BackwardBuffers {
            grad_output: (&grad_buffer).into(),
            indices: (&indices_buffer).into(),
            grad_input: (&grad_input).into(),
            invalid_count: BufferRegion::new(&counter, 0),
        };
        ctx.record_backward(encoder, spec, T::DTYPE, &buffers, RecordOptions::default())?;
        encoder.copy_buffer_to_buffer(&grad_input, 0, &staging, 0, gi_bytes);
        encoder.copy_buffer_to_buffer(&counter, 0, &staging, gi_bytes, 4);
        Ok(())
    })
    .await?;
    let bytes = map_read(&staging).await?;
    for b in [grad_buffer, indices_buffer, grad_input, counter, staging] {
        b.destroy();
    }
    let invalid = u32::from_le_bytes(bytes[gi_bytes as usize..gi_bytes as usize + 4].try_into().expect("4 bytes"));
    if invalid > 0 {
        return Err(GpuError::Invalid(invalid as u64));
    }
    Ok(bytemuck::pod_collect_to_vec(&bytes[..n_in * elem]))
}
