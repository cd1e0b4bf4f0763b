//! The `wgpool` binary and the `.npy` module: the command-line contract, end to end.
//!
//! Every test runs the real binary on files in a fresh temporary directory and compares what it
//! wrote with `wgpool::cpu::reference`, bit for bit. GPU tests pin the backend with
//! `WGPU_BACKEND` (`vulkan`: Mesa lavapipe, `gl`: Mesa llvmpipe) and fail, saying how to get one,
//! when that backend has no adapter.
#![cfg(feature = "cli")]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use wgpool::cpu::reference;
use wgpool::npy::{self, Values};
use wgpool::{Element, InputShape, Layout, NO_INDEX, PoolParams, PoolSpec, f16};

use super::common::{Rng, assert_bits_eq, gradients, nasty_values};

const BIN: &str = env!("CARGO_BIN_EXE_wgpool");

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wgpool-cli-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
    fn s(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }
    /// The file names in the directory, sorted.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read temp dir")
            .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a call runs: `--device cpu`, or `--device gpu` with the backend pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dev {
    Cpu,
    Vulkan,
    Gl,
}

impl Dev {
    fn name(self) -> &'static str {
        match self {
            Dev::Cpu => "cpu",
            Dev::Vulkan => "vulkan",
            Dev::Gl => "gl",
        }
    }
}

fn command(dev: Dev) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("WGPU_ADAPTER_NAME").env_remove("WGPU_POWER_PREF");
    match dev {
        Dev::Cpu => cmd.env_remove("WGPU_BACKEND"),
        Dev::Vulkan => cmd.env("WGPU_BACKEND", "vulkan"),
        Dev::Gl => cmd.env("WGPU_BACKEND", "gl"),
    };
    cmd
}

/// Runs a subcommand (`forward`/`backward` get `--device`).
fn run(dev: Dev, args: &[String]) -> Output {
    let mut cmd = command(dev);
    cmd.args(args);
    if matches!(args.first().map(String::as_str), Some("forward" | "backward")) {
        cmd.args(["--device", if dev == Dev::Cpu { "cpu" } else { "gpu" }]);
    }
    let out = cmd.output().expect("run the wgpool binary");
    assert_ne!(out.status.code(), Some(101), "wgpool panicked on {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn last_line(out: &Output) -> String {
    stderr(out).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().to_string()
}

/// Panics with how to get an adapter if the backend had none.
fn require_adapter(dev: Dev, out: &Output) {
    if dev != Dev::Cpu && stderr(out).contains("no GPU adapter found") {
        panic!(
            "WGPU_BACKEND={} found no GPU adapter, so the command-line GPU tests cannot run. \
             Install the software adapters: `apt-get install mesa-vulkan-drivers` (Vulkan lavapipe) and \
             Mesa's EGL/GL drivers (`libegl1 libgl1-mesa-dri`, llvmpipe). stderr:\n{}",
            dev.name(),
            stderr(out)
        );
    }
}

fn assert_ok(dev: Dev, out: &Output, what: &str) {
    require_adapter(dev, out);
    assert!(out.status.success(), "[{}] {what}: exit {:?}\n{}", dev.name(), out.status.code(), stderr(out));
}

/// Asserts exit code `code` with an `error: ...` last stderr line containing `needle`.
fn assert_fails(out: &Output, code: i32, needle: &str, what: &str) -> String {
    let last = last_line(out);
    assert_eq!(out.status.code(), Some(code), "{what}: exit code; stderr:\n{}", stderr(out));
    assert!(
        last.starts_with("error:"),
        "{what}: the last stderr line should be the error, got {last:?}; stderr:\n{}",
        stderr(out)
    );
    assert!(
        last.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: expected {needle:?} in the last stderr line {last:?}"
    );
    last
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn join(v: &[usize]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

/// The elements of `values` as `T` (which must be its dtype).
fn as_vec<T: Element>(values: Values) -> Vec<T> {
    assert_eq!(values.dtype(), T::DTYPE, "dtype of the file");
    match values {
        Values::F32(v) => bytemuck::cast_slice::<f32, T>(&v).to_vec(),
        Values::F16(v) => bytemuck::cast_slice::<f16, T>(&v).to_vec(),
    }
}

fn layout_flag(spec: &PoolSpec) -> &'static str {
    match (spec.layout, spec.input.spatial.len()) {
        (Layout::ChannelsFirst, _) => "ncx",
        (Layout::ChannelsLast, 1) => "nlc",
        (Layout::ChannelsLast, 2) => "nhwc",
        (Layout::ChannelsLast, _) => "ndhwc",
    }
}

/// The pooling flags of `spec` (with its layout).
fn pool_flags(spec: &PoolSpec) -> Vec<String> {
    let p = &spec.params;
    let mut f = strings(&["--kernel", &join(&p.kernel)]);
    for (flag, v) in [("--stride", &p.stride), ("--padding", &p.padding), ("--dilation", &p.dilation)] {
        if !v.is_empty() {
            f.push(flag.into());
            f.push(join(v));
        }
    }
    if p.ceil_mode {
        f.push("--ceil-mode".into());
    }
    f.push("--layout".into());
    f.push(layout_flag(spec).into());
    f
}

fn spec(batch: usize, channels: usize, spatial: &[usize], layout: Layout, params: PoolParams) -> PoolSpec {
    PoolSpec::new(InputShape::new(batch, channels, spatial), params).layout(layout)
}

/// The cases every device runs: 1-D, 2-D and 3-D, both layouts, padding, dilation, ceil_mode,
/// overlapping windows, and windows of padding only (index -1).
fn cases() -> Vec<PoolSpec> {
    let cf = Layout::ChannelsFirst;
    let cl = Layout::ChannelsLast;
    vec![
        spec(2, 3, &[11], cf, PoolParams::new([3]).stride([2]).padding([1]).ceil_mode(true)),
        // L = 1, k = 2, d = 2, p = 1: the only window holds padding only.
        spec(2, 3, &[1], cl, PoolParams::new([2]).dilation([2]).padding([1])),
        spec(1, 5, &[9], cl, PoolParams::new([3]).stride([1])),
        spec(
            2,
            3,
            &[7, 6],
            cf,
            PoolParams::new([3, 2]).stride([2, 1]).padding([1, 0]).dilation([1, 2]).ceil_mode(true),
        ),
        spec(2, 4, &[5, 7], cl, PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1])),
        // H = 1, k = 3, d = 2, p = 1, ceil_mode: the one window row holds padding only on H.
        spec(1, 2, &[1, 5], cf, PoolParams::new([3, 2]).dilation([2, 1]).padding([1, 0]).ceil_mode(true)),
        spec(1, 2, &[4, 5, 3], cf, PoolParams::new([2, 3, 2]).stride([1, 2, 2]).padding([1, 1, 0]).ceil_mode(true)),
        spec(2, 3, &[3, 4, 5], cl, PoolParams::new([2, 2, 2]).dilation([1, 2, 1])),
    ]
}

/// Writes `input`, runs forward and backward through the tool, and compares every file with
/// the reference. `T` is f32 or f16.
fn round_trip<T: Element>(dev: Dev, spec: &PoolSpec, seed: u64) {
    let dir = TempDir::new(&format!("rt-{}", dev.name()));
    let context = format!("{} {} {:?}", dev.name(), T::DTYPE.name(), spec);
    let mut rng = Rng::new(seed);
    let g = spec.validate().expect("valid case");
    let in_dims = spec.input.dims(spec.layout);
    let out_dims = g.output_shape().dims(spec.layout);
    let input: Vec<T> = nasty_values(&mut rng, g.input_len());
    npy::write_values_file(dir.path("x.npy"), &in_dims, &input).unwrap();

    let mut args = strings(&["forward", &dir.s("x.npy")]);
    args.extend(pool_flags(spec));
    args.extend(strings(&["--values", &dir.s("v.npy"), "--indices", &dir.s("i.npy")]));
    let out = run(dev, &args);
    assert_ok(dev, &out, &format!("forward {context}"));

    let want = reference::forward(spec, &input).unwrap();
    let (v_dims, values) = npy::read_values_file(dir.path("v.npy")).unwrap();
    let (i_dims, indices) = npy::read_indices_file(dir.path("i.npy")).unwrap();
    assert_eq!(v_dims, out_dims, "[{context}] values shape");
    assert_eq!(i_dims, out_dims, "[{context}] indices shape");
    let values: Vec<T> = as_vec(values);
    assert_eq!(values.len(), want.values.len());
    assert_bits_eq("values", &context, &values, &want.values);
    assert_eq!(indices, want.indices, "[{context}] indices");
    // The index file is int64 with -1 for "no index".
    match npy::read_array_file(dir.path("i.npy")).unwrap().data {
        npy::Data::I64(raw) => {
            for (r, &i) in raw.iter().zip(&want.indices) {
                assert_eq!(*r, if i == NO_INDEX { -1 } else { i as i64 });
            }
        }
        other => panic!("[{context}] indices written as {:?}", other.element()),
    }
    // Without --indices: a values-only pass, the same values, one file.
    let mut args = strings(&["forward", &dir.s("x.npy")]);
    args.extend(pool_flags(spec));
    args.extend(strings(&["--values", &dir.s("vo.npy")]));
    let out = run(dev, &args);
    assert_ok(dev, &out, &format!("forward without --indices {context}"));
    let (vo_dims, only) = npy::read_values_file(dir.path("vo.npy")).unwrap();
    assert_eq!(vo_dims, out_dims, "[{context}] values-only shape");
    assert_bits_eq("values only", &context, &as_vec::<T>(only), &want.values);
    assert_eq!(dir.listing(), ["i.npy", "v.npy", "vo.npy", "x.npy"], "[{context}] files");

    let grad_output: Vec<T> = gradients(&mut rng, g.output_len());
    npy::write_values_file(dir.path("go.npy"), &out_dims, &grad_output).unwrap();
    let mut args =
        strings(&["backward", &dir.s("go.npy"), "--indices", &dir.s("i.npy"), "--input-shape", &join(&in_dims)]);
    args.extend(pool_flags(spec));
    args.extend(strings(&["--grad-input", &dir.s("gi.npy")]));
    let out = run(dev, &args);
    assert_ok(dev, &out, &format!("backward {context}"));
    let want = reference::backward(spec, &grad_output, &want.indices).unwrap();
    let (gi_dims, grad_input) = npy::read_values_file(dir.path("gi.npy")).unwrap();
    assert_eq!(gi_dims, in_dims, "[{context}] grad_input shape");
    assert_eq!(grad_input.dtype(), T::DTYPE, "[{context}] grad_input dtype");
    let grad_input: Vec<T> = as_vec(grad_input);
    assert_bits_eq("grad_input", &context, &grad_input, &want);
    // Nothing but the inputs and outputs: no temporary file left behind.
    assert_eq!(dir.listing(), strings(&["gi.npy", "go.npy", "i.npy", "v.npy", "vo.npy", "x.npy"]));
}

fn round_trips(dev: Dev, f16_too: bool) {
    for (i, spec) in cases().iter().enumerate() {
        round_trip::<f32>(dev, spec, 100 + i as u64);
        if f16_too {
            round_trip::<f16>(dev, spec, 200 + i as u64);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Forward and backward through the tool, on every device
// ------------------------------------------------------------------------------------------------

#[test]
fn forward_backward_cpu_f32_f16() {
    round_trips(Dev::Cpu, true);
}

#[test]
fn forward_backward_vulkan_f32_f16() {
    round_trips(Dev::Vulkan, true);
}

#[test]
fn forward_backward_gl_f32() {
    round_trips(Dev::Gl, false);
}

#[test]
fn f16_on_gl_is_a_clear_error_and_writes_nothing() {
    let dir = TempDir::new("f16-gl");
    let x: Vec<f16> = (0..16).map(|i| f16::from_f32(i as f32)).collect();
    npy::write_values_file(dir.path("x.npy"), &[1, 1, 4, 4], &x).unwrap();
    let out = run(
        Dev::Gl,
        &strings(&[
            "forward",
            &dir.s("x.npy"),
            "--kernel",
            "2",
            "--values",
            &dir.s("v.npy"),
            "--indices",
            &dir.s("i.npy"),
        ]),
    );
    require_adapter(Dev::Gl, &out);
    assert_fails(&out, 1, "SHADER_F16", "f16 on GL");
    assert_eq!(dir.listing(), strings(&["x.npy"]));
}

/// A single number applies to every spatial axis and equals the spelled-out form.
#[test]
fn cli_single_number_broadcasts() {
    let dir = TempDir::new("broadcast");
    let mut rng = Rng::new(7);
    let s =
        spec(1, 2, &[3, 6, 5], Layout::ChannelsFirst, PoolParams::new([2, 2, 2]).stride([1, 1, 1]).padding([1, 1, 1]));
    let x: Vec<f32> = nasty_values(&mut rng, 2 * 3 * 6 * 5);
    npy::write_values_file(dir.path("x.npy"), &[1, 2, 3, 6, 5], &x).unwrap();
    let out = run(
        Dev::Cpu,
        &strings(&[
            "forward",
            &dir.s("x.npy"),
            "--kernel",
            "2",
            "--stride",
            "1",
            "--padding",
            "1",
            "--values",
            &dir.s("v.npy"),
            "--indices",
            &dir.s("i.npy"),
        ]),
    );
    assert_ok(Dev::Cpu, &out, "broadcast");
    let want = reference::forward(&s, &x).unwrap();
    let (_, v) = npy::read_values_file(dir.path("v.npy")).unwrap();
    let (_, i) = npy::read_indices_file(dir.path("i.npy")).unwrap();
    assert_bits_eq("values", "broadcast", &as_vec::<f32>(v), &want.values);
    assert_eq!(i, want.indices);
}

// ------------------------------------------------------------------------------------------------
// Index files: int64, int32, uint32, −1 forms, byte orders
// ------------------------------------------------------------------------------------------------

/// A `.npy` file from raw parts (for dtypes and malformed files the library does not write).
fn raw_npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
        if fortran { "True" } else { "False" }
    );
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(data);
    out
}

fn shape_text(dims: &[usize]) -> String {
    match dims {
        [d] => format!("({d},)"),
        _ => format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

/// Index files as int64 / int32 / uint32, little- and big-endian, with the −1 forms.
fn index_dtypes(dev: Dev) {
    let cases = [
        // Every window holds padding only: all indices are -1.
        spec(2, 3, &[1], Layout::ChannelsLast, PoolParams::new([2]).dilation([2]).padding([1])),
        spec(2, 3, &[6, 5], Layout::ChannelsFirst, PoolParams::new([3, 2]).stride([2, 1]).padding([1, 1])),
    ];
    for (n, s) in cases.iter().enumerate() {
        let dir = TempDir::new(&format!("idx-{}", dev.name()));
        let mut rng = Rng::new(40 + n as u64);
        let g = s.validate().unwrap();
        let in_dims = s.input.dims(s.layout);
        let out_dims = g.output_shape().dims(s.layout);
        let x: Vec<f32> = nasty_values(&mut rng, g.input_len());
        let fwd = reference::forward(s, &x).unwrap();
        if n == 0 {
            assert!(fwd.indices.iter().all(|&i| i == NO_INDEX));
        }
        let go: Vec<f32> = gradients(&mut rng, g.output_len());
        let want = reference::backward(s, &go, &fwd.indices).unwrap();
        npy::write_values_file(dir.path("go.npy"), &out_dims, &go).unwrap();
        let shape = shape_text(&out_dims);
        let files: Vec<(&str, Vec<u8>)> = vec![
            (
                "<i8",
                fwd.indices
                    .iter()
                    .flat_map(|&i| (if i == NO_INDEX { -1i64 } else { i as i64 }).to_le_bytes())
                    .collect(),
            ),
            (
                ">i8",
                fwd.indices
                    .iter()
                    .flat_map(|&i| (if i == NO_INDEX { -1i64 } else { i as i64 }).to_be_bytes())
                    .collect(),
            ),
            (
                "<i4",
                fwd.indices
                    .iter()
                    .flat_map(|&i| (if i == NO_INDEX { -1i32 } else { i as i32 }).to_le_bytes())
                    .collect(),
            ),
            (
                ">i4",
                fwd.indices
                    .iter()
                    .flat_map(|&i| (if i == NO_INDEX { -1i32 } else { i as i32 }).to_be_bytes())
                    .collect(),
            ),
            ("<u4", fwd.indices.iter().flat_map(|&i| i.to_le_bytes()).collect()),
            (">u4", fwd.indices.iter().flat_map(|&i| i.to_be_bytes()).collect()),
        ];
        for (descr, data) in files {
            std::fs::write(dir.path("idx.npy"), raw_npy(descr, false, &shape, &data)).unwrap();
            let _ = std::fs::remove_file(dir.path("gi.npy"));
            let mut args = strings(&[
                "backward",
                &dir.s("go.npy"),
                "--indices",
                &dir.s("idx.npy"),
                "--input-shape",
                &join(&in_dims),
            ]);
            args.extend(pool_flags(s));
            args.extend(strings(&["--grad-input", &dir.s("gi.npy")]));
            let out = run(dev, &args);
            assert_ok(dev, &out, &format!("backward with {descr} indices, case {n}"));
            let (_, gi) = npy::read_values_file(dir.path("gi.npy")).unwrap();
            assert_bits_eq("grad_input", &format!("{} {descr} case {n}", dev.name()), &as_vec::<f32>(gi), &want);
        }
    }
}

#[test]
fn cli_index_dtypes_cpu() {
    index_dtypes(Dev::Cpu);
}

#[test]
fn cli_index_dtypes_vulkan() {
    index_dtypes(Dev::Vulkan);
}

// ------------------------------------------------------------------------------------------------
// Bad input: exit 1 (2 for usage), the message last on stderr, no output, existing files untouched
// ------------------------------------------------------------------------------------------------

const SENTINEL: &[u8] = b"an existing file that must survive a failed call\n";

/// A directory with a valid 1×2×5×5 f32 input `x.npy`, a valid 1×2×2×2 grad_output `go.npy` and
/// indices `idx.npy` for kernel 2, and a pre-existing output `old.npy`.
fn error_fixture(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    let mut rng = Rng::new(99);
    let x: Vec<f32> = nasty_values(&mut rng, 50);
    npy::write_values_file(dir.path("x.npy"), &[1, 2, 5, 5], &x).unwrap();
    let s = spec(1, 2, &[5, 5], Layout::ChannelsFirst, PoolParams::new([2, 2]));
    let fwd = reference::forward(&s, &x).unwrap();
    npy::write_indices_file(dir.path("idx.npy"), &[1, 2, 2, 2], &fwd.indices).unwrap();
    let go: Vec<f32> = gradients(&mut rng, 8);
    npy::write_values_file(dir.path("go.npy"), &[1, 2, 2, 2], &go).unwrap();
    std::fs::write(dir.path("old.npy"), SENTINEL).unwrap();
    dir
}

/// Runs `args` (with `{dir}` replaced) in a fresh fixture and checks the failure contract.
fn check_failure(dev: Dev, code: i32, needle: &str, args: &[&str], setup: impl FnOnce(&TempDir)) {
    let dir = error_fixture("err");
    setup(&dir);
    let before = dir.listing();
    let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &dir.0.display().to_string())).collect();
    let out = run(dev, &args);
    require_adapter(dev, &out);
    assert_fails(&out, code, needle, &format!("[{}] {args:?}", dev.name()));
    assert_eq!(std::fs::read(dir.path("old.npy")).unwrap(), SENTINEL, "{args:?}: an existing output was modified");
    assert_eq!(dir.listing(), before, "{args:?}: files were created");
}

fn forward_args<'a>(input: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["forward", input];
    v.extend_from_slice(extra);
    v.extend_from_slice(&["--values", "{dir}/old.npy", "--indices", "{dir}/new_i.npy"]);
    v
}

fn backward_args<'a>(go: &'a str, idx: &'a str, shape: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["backward", go, "--indices", idx, "--input-shape", shape];
    v.extend_from_slice(extra);
    v.extend_from_slice(&["--grad-input", "{dir}/old.npy"]);
    v
}

fn write(dir: &TempDir, name: &str, bytes: &[u8]) {
    std::fs::write(dir.path(name), bytes).unwrap();
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

#[test]
fn cli_forward_bad_input_cpu() {
    let x = "{dir}/x.npy";
    let c = Dev::Cpu;
    let none = |_: &TempDir| {};
    check_failure(c, 1, "--kernel has 3 values", &forward_args(x, &["--kernel", "2,2,2"]), none);
    check_failure(
        c,
        1,
        "--stride has 2 values",
        &forward_args(x, &["--kernel", "2", "--stride", "1,1", "--layout", "ncx"]),
        |d| write(d, "x.npy", &npy::encode_values(&[1, 2, 5], &[0.0f32; 10]).unwrap()),
    );
    check_failure(c, 1, "pad should be smaller", &forward_args(x, &["--kernel", "3", "--padding", "2"]), none);
    check_failure(c, 1, "greater than zero", &forward_args(x, &["--kernel", "0"]), none);
    check_failure(c, 1, "too small", &forward_args(x, &["--kernel", "9"]), none);
    check_failure(c, 1, "--layout nlc", &forward_args(x, &["--kernel", "2", "--layout", "nlc"]), none);
    check_failure(c, 1, "--layout ndhwc", &forward_args(x, &["--kernel", "2", "--layout", "ndhwc"]), none);
    check_failure(c, 1, "cannot open", &forward_args("{dir}/missing.npy", &["--kernel", "2"]), none);
    check_failure(c, 1, "is a directory", &forward_args("{dir}", &["--kernel", "2"]), none);
    check_failure(c, 1, "not a .npy file", &forward_args(x, &["--kernel", "2"]), |d| {
        write(d, "x.npy", b"hello, world\n")
    });
    check_failure(c, 1, "truncated", &forward_args(x, &["--kernel", "2"]), |d| {
        let b = std::fs::read(d.path("x.npy")).unwrap();
        write(d, "x.npy", &b[..b.len() - 3]);
    });
    check_failure(c, 1, "truncated", &forward_args(x, &["--kernel", "2"]), |d| {
        let b = std::fs::read(d.path("x.npy")).unwrap();
        write(d, "x.npy", &b[..40]);
    });
    check_failure(c, 1, "trailing", &forward_args(x, &["--kernel", "2"]), |d| {
        let mut b = std::fs::read(d.path("x.npy")).unwrap();
        b.extend_from_slice(b"junk");
        write(d, "x.npy", &b);
    });
    // Headers claiming huge shapes: rejected from the header and the file length alone.
    check_failure(c, 1, "needs 40000000000000000 data bytes", &forward_args(x, &["--kernel", "2"]), |d| {
        write(d, "x.npy", &raw_npy("<f4", false, "(100000, 100000, 1000, 1000)", &f32_bytes(16)))
    });
    check_failure(c, 1, "more elements than this machine can address", &forward_args(x, &["--kernel", "2"]), |d| {
        write(d, "x.npy", &raw_npy("<f4", false, "(4294967296, 4294967296, 4294967296, 4)", &f32_bytes(16)))
    });
    check_failure(c, 1, "too large", &forward_args(x, &["--kernel", "2"]), |d| {
        write(d, "x.npy", &raw_npy("<f4", false, "(99999999999999999999999, 1, 1, 1)", &f32_bytes(16)))
    });
    check_failure(c, 1, "astype(np.float32)", &forward_args(x, &["--kernel", "2"]), |d| {
        let data: Vec<u8> = (0..50).flat_map(|i| (i as f64).to_le_bytes()).collect();
        write(d, "x.npy", &raw_npy("<f8", false, "(1, 2, 5, 5)", &data))
    });
    check_failure(c, 1, "float32 or float16", &forward_args(x, &["--kernel", "2"]), |d| {
        write(d, "x.npy", &raw_npy("<i8", false, "(1, 2, 5, 5)", &[0u8; 400]))
    });
    check_failure(c, 1, "not supported", &forward_args(x, &["--kernel", "2"]), |d| {
        write(d, "x.npy", &raw_npy("<i2", false, "(1, 2, 5, 5)", &[0u8; 100]))
    });
    check_failure(c, 1, "rank 3, 4 or 5", &forward_args(x, &["--kernel", "2"]), |d| {
        write(d, "x.npy", &npy::encode_values(&[5, 5], &[0.0f32; 25]).unwrap())
    });
    check_failure(c, 1, "rank 3, 4 or 5", &forward_args(x, &["--kernel", "2"]), |d| {
        write(d, "x.npy", &npy::encode_values(&[1, 1, 1, 2, 2, 2], &[0.0f32; 8]).unwrap())
    });
    check_failure(c, 1, "channels size must be non-zero", &forward_args(x, &["--kernel", "2"]), |d| {
        write(d, "x.npy", &npy::encode_values::<f32>(&[1, 0, 5, 5], &[]).unwrap())
    });
    check_failure(
        c,
        1,
        "same file",
        &["forward", x, "--kernel", "2", "--values", "{dir}/old.npy", "--indices", "{dir}/old.npy"],
        none,
    );
    // The indices cannot be written: the values (staged first) must not appear either.
    check_failure(
        c,
        1,
        "cannot create",
        &["forward", x, "--kernel", "2", "--values", "{dir}/new_v.npy", "--indices", "{dir}/no/such/dir/i.npy"],
        none,
    );
    check_failure(
        c,
        1,
        "cannot create",
        &["forward", x, "--kernel", "2", "--values", "{dir}/no/such/dir/v.npy", "--indices", "{dir}/old.npy"],
        none,
    );
    check_failure(
        c,
        1,
        "is a directory",
        &["forward", x, "--kernel", "2", "--values", "{dir}/new_v.npy", "--indices", "{dir}"],
        none,
    );
}

#[test]
fn cli_backward_bad_input_cpu() {
    let (go, idx) = ("{dir}/go.npy", "{dir}/idx.npy");
    let c = Dev::Cpu;
    let k2 = ["--kernel", "2"];
    let none = |_: &TempDir| {};
    check_failure(c, 1, "grad_output has shape [1, 2, 2, 3]", &backward_args(go, idx, "1,2,5,5", &k2), |d| {
        write(d, "go.npy", &npy::encode_values(&[1, 2, 2, 3], &[0.0f32; 12]).unwrap())
    });
    check_failure(c, 1, "indices has shape [2, 2, 2]", &backward_args(go, idx, "1,2,5,5", &k2), |d| {
        write(d, "idx.npy", &npy::encode_indices(&[2, 2, 2], &[0; 8]).unwrap())
    });
    check_failure(c, 1, "grad_output has shape", &backward_args(go, idx, "1,2,7,7", &k2), none);
    check_failure(c, 1, "cannot come from a forward pass", &backward_args(go, idx, "1,2,5,5", &k2), |d| {
        // Index 24 lies in the plane but outside the first window.
        write(d, "idx.npy", &npy::encode_indices(&[1, 2, 2, 2], &[24, 2, 10, 12, 0, 2, 10, 12]).unwrap())
    });
    check_failure(c, 1, "cannot come from a forward pass", &backward_args(go, idx, "1,2,5,5", &k2), |d| {
        write(d, "idx.npy", &npy::encode_indices(&[1, 2, 2, 2], &[NO_INDEX, 2, 10, 12, 0, 2, 10, 12]).unwrap())
    });
    check_failure(c, 1, "is -5", &backward_args(go, idx, "1,2,5,5", &k2), |d| {
        let data: Vec<u8> = [0i64, 2, 10, 12, -5, 2, 10, 12].iter().flat_map(|v| v.to_le_bytes()).collect();
        write(d, "idx.npy", &raw_npy("<i8", false, "(1, 2, 2, 2)", &data))
    });
    check_failure(c, 1, "is 4294967295", &backward_args(go, idx, "1,2,5,5", &k2), |d| {
        let data: Vec<u8> = [0i64, 2, 10, 12, 0xFFFF_FFFF, 2, 10, 12].iter().flat_map(|v| v.to_le_bytes()).collect();
        write(d, "idx.npy", &raw_npy("<i8", false, "(1, 2, 2, 2)", &data))
    });
    check_failure(c, 1, "is -2", &backward_args(go, idx, "1,2,5,5", &k2), |d| {
        let data: Vec<u8> = [0i32, 2, 10, 12, -2, 2, 10, 12].iter().flat_map(|v| v.to_le_bytes()).collect();
        write(d, "idx.npy", &raw_npy("<i4", false, "(1, 2, 2, 2)", &data))
    });
    check_failure(c, 1, "int64, int32 or uint32", &backward_args(go, idx, "1,2,5,5", &k2), |d| {
        write(d, "idx.npy", &npy::encode_values(&[1, 2, 2, 2], &[0.0f32; 8]).unwrap())
    });
    check_failure(c, 1, "astype(np.float32)", &backward_args(go, idx, "1,2,5,5", &k2), |d| {
        write(d, "go.npy", &raw_npy("<f8", false, "(1, 2, 2, 2)", &[0u8; 64]))
    });
    check_failure(
        c,
        1,
        "--layout nhwc",
        &backward_args(go, idx, "1,5,5", &["--kernel", "2", "--layout", "nhwc"]),
        none,
    );
    check_failure(c, 1, "rank 3, 4 or 5", &backward_args(go, idx, "2,5", &k2), none);
    check_failure(c, 1, "--kernel has 2 values", &backward_args(go, idx, "1,2,5,5,5", &["--kernel", "2,2"]), none);
    check_failure(
        c,
        1,
        "pad should be smaller",
        &backward_args(go, idx, "1,2,5,5", &["--kernel", "2", "--padding", "2"]),
        none,
    );
    check_failure(c, 1, "cannot open", &backward_args(go, "{dir}/missing.npy", "1,2,5,5", &k2), none);
    check_failure(c, 1, "truncated", &backward_args(go, idx, "1,2,5,5", &k2), |d| {
        let b = std::fs::read(d.path("idx.npy")).unwrap();
        write(d, "idx.npy", &b[..b.len() - 1]);
    });
    check_failure(
        c,
        1,
        "cannot create",
        &[
            "backward",
            go,
            "--indices",
            idx,
            "--input-shape",
            "1,2,5,5",
            "--kernel",
            "2",
            "--grad-input",
            "{dir}/nope/gi.npy",
        ],
        none,
    );
}

/// The GPU path fails the same way (validation before the device, invalid indices counted on it).
fn bad_input_gpu(dev: Dev) {
    let (go, idx, x) = ("{dir}/go.npy", "{dir}/idx.npy", "{dir}/x.npy");
    let k2 = ["--kernel", "2"];
    check_failure(dev, 1, "cannot come from a forward pass", &backward_args(go, idx, "1,2,5,5", &k2), |d| {
        write(d, "idx.npy", &npy::encode_indices(&[1, 2, 2, 2], &[24, 2, 10, 12, 0, 2, 10, 99]).unwrap())
    });
    check_failure(dev, 1, "pad should be smaller", &forward_args(x, &["--kernel", "3", "--padding", "2"]), |_| {});
    check_failure(dev, 1, "truncated", &forward_args(x, &["--kernel", "2"]), |d| {
        write(d, "x.npy", &raw_npy("<f4", false, "(100000, 100000, 1000, 1000)", &f32_bytes(16)))
    });
}

#[test]
fn cli_bad_input_vulkan() {
    bad_input_gpu(Dev::Vulkan);
}

#[test]
fn cli_bad_input_gl() {
    bad_input_gpu(Dev::Gl);
}

#[test]
fn cli_usage_errors_exit_2() {
    let x = "{dir}/x.npy";
    let c = Dev::Cpu;
    let none = |_: &TempDir| {};
    check_failure(c, 2, "--bogus", &forward_args(x, &["--kernel", "2", "--bogus"]), none);
    check_failure(c, 2, "invalid value 'abc'", &forward_args(x, &["--kernel", "abc"]), none);
    check_failure(c, 2, "invalid value", &forward_args(x, &["--kernel", "2,-1"]), none);
    check_failure(c, 2, "invalid value 'nchw'", &forward_args(x, &["--kernel", "2", "--layout", "nchw"]), none);
    check_failure(c, 2, "--kernel", &forward_args(x, &[]), none);
    check_failure(c, 2, "--values", &["forward", x, "--kernel", "2", "--indices", "{dir}/new_i.npy"], none);
    check_failure(
        c,
        2,
        "--input-shape",
        &["backward", "{dir}/go.npy", "--indices", "{dir}/idx.npy", "--kernel", "2", "--grad-input", "{dir}/old.npy"],
        none,
    );
    check_failure(c, 2, "frobnicate", &["frobnicate"], none);
    // `--device` is added by `run` for forward/backward; a bad one given here comes first.
    let dir = error_fixture("device");
    let out = command(Dev::Cpu)
        .args(["forward", &dir.s("x.npy"), "--kernel", "2", "--device", "tpu"])
        .args(["--values", &dir.s("v.npy"), "--indices", &dir.s("i.npy")])
        .output()
        .unwrap();
    assert_fails(&out, 2, "invalid value 'tpu'", "--device tpu");
    assert!(!dir.path("v.npy").exists());
}

#[test]
fn cli_success_replaces_existing_outputs() {
    let dir = error_fixture("replace");
    std::fs::write(dir.path("old_i.npy"), SENTINEL).unwrap();
    let out = run(
        Dev::Cpu,
        &strings(&[
            "forward",
            &dir.s("x.npy"),
            "--kernel",
            "2",
            "--values",
            &dir.s("old.npy"),
            "--indices",
            &dir.s("old_i.npy"),
        ]),
    );
    assert_ok(Dev::Cpu, &out, "forward over existing files");
    assert_eq!(npy::read_values_file(dir.path("old.npy")).unwrap().0, vec![1, 2, 2, 2]);
    assert_eq!(npy::read_indices_file(dir.path("old_i.npy")).unwrap().0, vec![1, 2, 2, 2]);
    assert_eq!(dir.listing(), strings(&["go.npy", "idx.npy", "old.npy", "old_i.npy", "x.npy"]));
}

/// Fortran-order and big-endian inputs give the same results as the plain C-order file.
#[test]
fn cli_fortran_and_big_endian_inputs() {
    let dir = TempDir::new("fortran");
    let mut rng = Rng::new(5);
    let x: Vec<f32> = nasty_values(&mut rng, 120);
    let s = spec(2, 3, &[4, 5], Layout::ChannelsFirst, PoolParams::new([2, 3]).stride([1, 2]).padding([1, 1]));
    let want = reference::forward(&s, &x).unwrap();
    // Column-major copy: element (a, b, c, d) at a + 2*(b + 3*(c + 4*d)).
    let mut fortran = vec![0f32; 120];
    for a in 0..2 {
        for b in 0..3 {
            for c in 0..4 {
                for d in 0..5 {
                    fortran[a + 2 * (b + 3 * (c + 4 * d))] = x[((a * 3 + b) * 4 + c) * 5 + d];
                }
            }
        }
    }
    let files = [
        (
            "f.npy",
            raw_npy("<f4", true, "(2, 3, 4, 5)", &fortran.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()),
        ),
        ("b.npy", raw_npy(">f4", false, "(2, 3, 4, 5)", &x.iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<_>>())),
        (
            "fb.npy",
            raw_npy(">f4", true, "(2, 3, 4, 5)", &fortran.iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<_>>()),
        ),
    ];
    for (name, bytes) in files {
        write(&dir, name, &bytes);
        let out = run(
            Dev::Cpu,
            &strings(&[
                "forward",
                &dir.s(name),
                "--kernel",
                "2,3",
                "--stride",
                "1,2",
                "--padding",
                "1",
                "--values",
                &dir.s("v.npy"),
                "--indices",
                &dir.s("i.npy"),
            ]),
        );
        assert_ok(Dev::Cpu, &out, name);
        let (shape, v) = npy::read_values_file(dir.path("v.npy")).unwrap();
        assert_eq!(shape, s.validate().unwrap().output_shape().dims(Layout::ChannelsFirst));
        assert_bits_eq("values", name, &as_vec::<f32>(v), &want.values);
        assert_eq!(npy::read_indices_file(dir.path("i.npy")).unwrap().1, want.indices, "{name}");
    }
}

// ------------------------------------------------------------------------------------------------
// info, help, version
// ------------------------------------------------------------------------------------------------

#[test]
fn cli_info_lists_adapters() {
    for dev in [Dev::Vulkan, Dev::Gl] {
        let out = run(dev, &strings(&["info"]));
        assert_ok(dev, &out, "info");
        let text = String::from_utf8_lossy(&out.stdout);
        require_adapter(dev, &Output { stderr: text.as_bytes().to_vec(), ..out.clone() });
        for needle in [
            "SHADER_F16",
            "TIMESTAMP_QUERY",
            "max_storage_buffer_binding_size",
            "device type",
            "driver",
            "default adapter",
        ] {
            assert!(text.contains(needle), "[{}] info lacks {needle:?}:\n{text}", dev.name());
        }
        let backend = if dev == Dev::Vulkan { "Vulkan" } else { "Gl" };
        assert!(text.contains(&format!("backend:       {backend}")), "{text}");
    }
}

/// Without `XDG_RUNTIME_DIR` (a headless machine), Mesa's Vulkan device-select layer made
/// libwayland print `error: XDG_RUNTIME_DIR is invalid ...` on runs that succeed; the tool turns
/// the layer off there (see `quiet_mesa_device_select` in `src/main.rs`), so stderr has no
/// `error:` line. (`.ci/run` installs the layer with `mesa-vulkan-drivers`.)
#[test]
fn cli_successful_runs_print_no_error_line_without_xdg_runtime_dir() {
    for dev in [Dev::Vulkan, Dev::Gl] {
        let mut cmd = command(dev);
        for name in ["XDG_RUNTIME_DIR", "WAYLAND_DISPLAY", "NODEVICE_SELECT", "MESA_VK_DEVICE_SELECT", "DRI_PRIME"] {
            cmd.env_remove(name);
        }
        let out = cmd.arg("info").output().expect("run the wgpool binary");
        assert_ok(dev, &out, "info without XDG_RUNTIME_DIR");
        require_adapter(dev, &Output { stderr: out.stdout.clone(), ..out.clone() });
        let text = stderr(&out);
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with("error:")),
            "[{}] a successful run printed an error line:\n{text}",
            dev.name()
        );
    }
}

#[test]
fn cli_info_without_adapter_exits_0_with_a_hint() {
    // No Metal on this platform: nothing is found.
    if cfg!(any(target_os = "macos", target_os = "ios")) {
        return;
    }
    let out = Command::new(BIN).arg("info").env("WGPU_BACKEND", "metal").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no GPU adapter found"), "{text}");
    assert!(text.contains("mesa-vulkan-drivers"), "{text}");
}

#[test]
fn cli_help_and_version_exit_0() {
    for args in [&["--help"][..], &["forward", "--help"], &["backward", "--help"], &["--version"]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
    let out = Command::new(BIN).args(["forward", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--kernel",
        "--stride",
        "--padding",
        "--dilation",
        "--ceil-mode",
        "--layout",
        "--device",
        "--values",
        "--indices",
    ] {
        assert!(text.contains(flag), "forward --help lacks {flag}");
    }
}

// ------------------------------------------------------------------------------------------------
// The .npy module
// ------------------------------------------------------------------------------------------------

mod npy_module {
    use super::*;

    #[test]
    fn cli_npy_round_trips() {
        let x = vec![1.5f32, -0.0, f32::NAN, f32::NEG_INFINITY, 3.0, 7.25];
        for shape in [vec![6], vec![2, 3], vec![1, 2, 3], vec![1, 1, 1, 2, 3]] {
            let bytes = npy::encode_values(&shape, &x).unwrap();
            assert_eq!((bytes.len() - 24) % 64, 0, "header padded to 64 bytes");
            let (s, v) = npy::read_values(&bytes).unwrap();
            assert_eq!(s, shape);
            assert_bits_eq("f32", "round trip", &as_vec::<f32>(v), &x);
        }
        let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let (s, v) = npy::read_values(&npy::encode_values(&[3, 2], &h).unwrap()).unwrap();
        assert_eq!(s, vec![3, 2]);
        assert_bits_eq("f16", "round trip", &as_vec::<f16>(v), &h);
        let idx = vec![0, 5, NO_INDEX, u32::MAX - 1];
        let bytes = npy::encode_indices(&[2, 2], &idx).unwrap();
        assert_eq!(npy::read_indices(&bytes).unwrap(), (vec![2, 2], idx.clone()));
        // Scalars and empty arrays.
        assert_eq!(npy::read_values(&npy::encode_values(&[], &[2.0f32]).unwrap()).unwrap().0, Vec::<usize>::new());
        assert_eq!(npy::read_values(&npy::encode_values::<f32>(&[0, 3], &[]).unwrap()).unwrap().0, vec![0, 3]);
        // Wrong lengths are refused.
        assert!(npy::encode_values(&[2, 2], &[1.0f32; 3]).is_err());
        assert!(npy::encode_indices(&[usize::MAX, 2], &[]).is_err());
    }

    #[test]
    fn cli_npy_agrees_with_npyz() {
        use npyz::WriterBuilder;
        // npyz reads what wgpool writes.
        let x: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let bytes = npy::encode_values(&[2, 3, 4], &x).unwrap();
        let file = npyz::NpyFile::new(&bytes[..]).unwrap();
        assert_eq!(file.shape(), &[2, 3, 4]);
        assert_eq!(file.into_vec::<f32>().unwrap(), x);
        let bytes = npy::encode_indices(&[4], &[3, NO_INDEX, 0, 9]).unwrap();
        assert_eq!(npyz::NpyFile::new(&bytes[..]).unwrap().into_vec::<i64>().unwrap(), vec![3, -1, 0, 9]);
        // wgpool reads what npyz writes: C and Fortran order, both byte orders.
        for (descr, order) in [
            ("<f4", npyz::Order::C),
            (">f4", npyz::Order::C),
            ("<f4", npyz::Order::Fortran),
            (">f4", npyz::Order::Fortran),
        ] {
            let mut buf = Vec::new();
            let mut w = npyz::WriteOptions::new()
                .dtype(npyz::DType::Plain(descr.parse().unwrap()))
                .shape(&[2, 3, 4])
                .order(order)
                .writer(&mut buf)
                .begin_nd()
                .unwrap();
            // npyz writes the elements in the order given; give column-major data for Fortran.
            let data: Vec<f32> = match order {
                npyz::Order::C => x.clone(),
                npyz::Order::Fortran => (0..24)
                    .map(|f| {
                        let (a, b, c) = (f % 2, f / 2 % 3, f / 6);
                        x[(a * 3 + b) * 4 + c]
                    })
                    .collect(),
            };
            w.extend(data).unwrap();
            w.finish().unwrap();
            let (shape, v) = npy::read_values(&buf).unwrap();
            assert_eq!(shape, vec![2, 3, 4], "{descr} {order:?}");
            assert_eq!(as_vec::<f32>(v), x, "{descr} {order:?}");
        }
    }

    #[test]
    fn cli_npy_fortran_order_is_transposed() {
        // (2, 3) Fortran: memory order a00 a10 a01 a11 a02 a12.
        let mem = [0i32, 3, 1, 4, 2, 5];
        let data: Vec<u8> = mem.iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = npy::read_array(&raw_npy("<i4", true, "(2, 3)", &data)).unwrap();
        assert_eq!(a.data, npy::Data::I32(vec![0, 1, 2, 3, 4, 5]));
        // 1-D and empty Fortran arrays are the same as C.
        let a = npy::read_array(&raw_npy("<i4", true, "(6,)", &data)).unwrap();
        assert_eq!(a.data, npy::Data::I32(mem.to_vec()));
        let a = npy::read_array(&raw_npy("<i4", true, "(0, 3)", &[])).unwrap();
        assert!(a.data.is_empty());
    }

    #[test]
    fn cli_npy_index_forms() {
        let i64s = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let ok = npy::read_indices(&raw_npy("<i8", false, "(3,)", &i64s(&[-1, 0, 0xFFFF_FFFE]))).unwrap();
        assert_eq!(ok.1, vec![NO_INDEX, 0, 0xFFFF_FFFE]);
        for bad in [-2i64, i64::MIN, 0xFFFF_FFFF, 1 << 40, i64::MAX] {
            let e = npy::read_indices(&raw_npy("<i8", false, "(2,)", &i64s(&[0, bad]))).unwrap_err();
            assert!(e.to_string().contains(&format!("element 1 is {bad}")), "{e}");
        }
        let u32s: Vec<u8> = [u32::MAX, 7].iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(npy::read_indices(&raw_npy(">u4", false, "(2,)", &u32s)).unwrap().1, vec![NO_INDEX, 7]);
        let i32s: Vec<u8> = [-1i32, i32::MAX].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            npy::read_indices(&raw_npy("<i4", false, "(2,)", &i32s)).unwrap().1,
            vec![NO_INDEX, i32::MAX as u32]
        );
        let e = npy::read_indices(&npy::encode_values(&[1], &[1.0f32]).unwrap()).unwrap_err();
        assert!(e.to_string().contains("int64, int32 or uint32"), "{e}");
    }

    #[test]
    fn cli_npy_malformed_headers_are_errors() {
        let good = npy::encode_values(&[1, 2], &[1.0f32, 2.0]).unwrap();
        let with_dict = |dict: &str, data: &[u8]| {
            let mut out = b"\x93NUMPY\x01\x00".to_vec();
            out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
            out.extend_from_slice(dict.as_bytes());
            out.extend_from_slice(data);
            out
        };
        let data = f32_bytes(2);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty file"),
            (b"PK\x03\x04".to_vec(), "not a .npy file"),
            (b"\x93NUMPY".to_vec(), "truncated"),
            (b"\x93NUMPY\x04\x00\x10\x00".to_vec(), "version 4.0"),
            (good[..20].to_vec(), "truncated .npy header"),
            (
                {
                    let mut g = good.clone();
                    g[8] = 0xff;
                    g[9] = 0xff;
                    g
                },
                "truncated .npy header",
            ),
            (
                {
                    let mut g = good.clone();
                    g[6] = 2;
                    g[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
                    g
                },
                "above the limit",
            ),
            (with_dict("{'descr': '<f4', 'fortran_order': False}\n", &data), "'shape' is missing"),
            (with_dict("{'descr': '<f4', 'shape': (2,)}\n", &data), "'fortran_order' is missing"),
            (with_dict("{'fortran_order': False, 'shape': (2,)}\n", &data), "'descr' is missing"),
            (
                with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}\n", &data),
                "unexpected key",
            ),
            (with_dict("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}\n", &data), "twice"),
            (with_dict("{'descr': '<f4', 'fortran_order': maybe, 'shape': (2,)}\n", &data), "True or False"),
            (with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}\n", &data), "negative"),
            (with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': 2}\n", &data), "tuple"),
            (with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x\n", &data), "after the dictionary"),
            (with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2,\n", &data), "not closed"),
            (with_dict("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}\n", &data), "structured"),
            (with_dict("{'descr': 'é', 'fortran_order': False, 'shape': (2,)}\n", &data), "invalid dtype"),
            (with_dict("{'descr': '<q9', 'fortran_order': False, 'shape': (2,)}\n", &data), "invalid dtype"),
            (with_dict("{'descr': '<f4\\n', 'fortran_order': False, 'shape': (2,)}\n", &data), "escape"),
            (with_dict("{'descr': '<c8', 'fortran_order': False, 'shape': (2,)}\n", &data), "not supported"),
            (with_dict("{'descr': '|O', 'fortran_order': False, 'shape': (2,)}\n", &data), "not supported"),
            (
                with_dict(
                    &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}\n", "1, ".repeat(65)),
                    &data,
                ),
                "more than 64",
            ),
            (raw_npy("<f4", false, "(3,)", &data), "truncated: shape [3]"),
            (raw_npy("<f4", false, "(1,)", &data), "trailing bytes"),
        ];
        for (bytes, needle) in cases {
            let e = npy::read_array(&bytes).expect_err(needle).to_string();
            assert!(e.contains(needle), "expected {needle:?} in {e:?}");
        }
        // Python 2's long integers and list shapes are accepted.
        let a = npy::read_array(&with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': [1L, 2L]}\n", &data))
            .unwrap();
        assert_eq!(a.shape, vec![1, 2]);
        // Version 2.0 and 3.0 headers.
        for version in [2u8, 3] {
            let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n";
            let mut b = vec![0x93, b'N', b'U', b'M', b'P', b'Y', version, 0];
            b.extend_from_slice(&(dict.len() as u32).to_le_bytes());
            b.extend_from_slice(dict.as_bytes());
            b.extend_from_slice(&data);
            assert_eq!(npy::read_array(&b).unwrap().data, npy::Data::F32(vec![0.0, 1.0]));
        }
    }

    #[test]
    fn cli_npy_huge_claims_are_refused_before_allocating() {
        // Each of these would need terabytes if the reader believed the header.
        for shape in
            ["(1099511627776,)", "(65536, 65536, 65536)", "(18446744073709551615,)", "(4294967296, 4294967296)"]
        {
            let bytes = raw_npy("<f4", false, shape, &f32_bytes(4));
            let e = npy::read_array(&bytes).unwrap_err().to_string();
            assert!(e.contains("truncated") || e.contains("address"), "{shape}: {e}");
            let h = npy::parse_header(&bytes);
            if let Ok(h) = h {
                assert!(h.data_len > bytes.len());
            }
        }
    }

    /// A small in-test fuzzer: mutated valid files never panic (the `cargo fuzz` target goes
    /// further).
    #[test]
    fn cli_npy_mutations_never_panic() {
        let mut rng = Rng::new(2024);
        let seeds: Vec<Vec<u8>> = vec![
            npy::encode_values(&[1, 2, 3, 2], &[1.0f32; 12]).unwrap(),
            npy::encode_values(&[3, 1], &[f16::ONE; 3]).unwrap(),
            npy::encode_indices(&[2, 2], &[1, 2, 3, NO_INDEX]).unwrap(),
            raw_npy(">i4", true, "(2, 3)", &[0xff; 24]),
        ];
        for _ in 0..20_000 {
            let mut b = seeds[rng.range(0, seeds.len() - 1)].clone();
            for _ in 0..rng.range(1, 4) {
                match rng.range(0, 4) {
                    0 => {
                        let i = rng.range(0, b.len() - 1);
                        b[i] = rng.next_u64() as u8;
                    }
                    1 if b.len() > 9 => {
                        // Mutate inside the header text.
                        let i = rng.range(8, 80.min(b.len() - 1));
                        b[i] = {
                            let palette = b"0123456789(),: '\"[]{}<>|fiuTFLe\n\\";
                            palette[rng.range(0, palette.len() - 1)]
                        };
                    }
                    2 => b.truncate(rng.range(0, b.len())),
                    3 => {
                        let i = rng.range(0, b.len());
                        b.insert(i, rng.next_u64() as u8);
                    }
                    _ => b.extend_from_slice(&[0; 4]),
                }
                if b.is_empty() {
                    break;
                }
            }
            if let Ok(a) = npy::read_array(&b) {
                let n: usize = a.shape.iter().product();
                assert_eq!(n, a.data.len());
            }
            let _ = npy::read_values(&b);
            let _ = npy::read_indices(&b);
        }
    }

    #[test]
    fn cli_npy_writes_are_atomic() {
        let dir = TempDir::new("atomic");
        let p = dir.path("a.npy");
        std::fs::write(&p, SENTINEL).unwrap();
        // An encoding error leaves the existing file alone.
        assert!(npy::write_values_file(&p, &[2, 2], &[1.0f32; 3]).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), SENTINEL);
        // A directory that does not exist: an error, nothing created.
        assert!(npy::write_values_file(dir.path("no/b.npy"), &[1], &[1.0f32]).is_err());
        // A staged file that is dropped leaves nothing behind.
        let staged = npy::StagedFile::write(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), SENTINEL);
        assert_eq!(dir.listing().len(), 2);
        drop(staged);
        assert_eq!(dir.listing(), strings(&["a.npy"]));
        // Success replaces.
        npy::write_values_file(&p, &[1], &[1.0f32]).unwrap();
        assert_eq!(npy::read_values_file(&p).unwrap().1, Values::F32(vec![1.0]));
        assert_eq!(dir.listing(), strings(&["a.npy"]));
        // Reading a directory or a missing file is an error.
        assert!(npy::read_values_file(&dir.0).is_err());
        assert!(npy::read_values_file(dir.path("missing.npy")).is_err());
    }
}

/// `wgpool bench-cpu` (no GPU): every selected case, layout, direction and variant once in its
/// JSON, with the bytes the library counts and sane times; bad selections are clear errors.
#[test]
fn cli_bench_cpu_json_and_errors() {
    use wgpool::bench::{Direction, bytes_moved};
    let out = run(Dev::Cpu, &strings(&["bench-cpu", "--quick", "--cases", "e,F3", "--runs", "2", "--json", "-"]));
    assert_ok(Dev::Cpu, &out, "bench-cpu --json -");
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |line: &str, key: &str| -> String {
        let rest =
            &line[line.find(&format!("\"{key}\": ")).unwrap_or_else(|| panic!("{key} in {line}")) + key.len() + 4..];
        rest[..rest.find([',', '}']).unwrap()].trim_matches('"').to_string()
    };
    let rows: Vec<&str> = text.lines().filter(|l| l.contains("\"case\"")).collect();
    let mut want = vec![];
    for case in wgpool::cases::quick().into_iter().filter(|c| ["E", "F3"].contains(&c.name)) {
        for &layout in case.layouts {
            let g = case.spec(layout).validate().unwrap();
            for d in [Direction::Forward, Direction::Backward] {
                for variant in ["alloc", "into"] {
                    want.push((case.name, layout.name(), d.name(), variant, bytes_moved(&g, 4, d)));
                }
            }
        }
    }
    assert_eq!(rows.len(), want.len(), "{text}");
    for (row, (case, layout, dir, variant, bytes)) in rows.iter().zip(want) {
        let got = (field(row, "case"), field(row, "layout"), field(row, "direction"), field(row, "variant"));
        assert_eq!(got, (case.into(), layout.into(), dir.into(), variant.into()), "{row}");
        assert_eq!(field(row, "bytes").parse::<u64>().unwrap(), bytes, "{row}");
        let (median, min) =
            (field(row, "median_ms").parse::<f64>().unwrap(), field(row, "min_ms").parse::<f64>().unwrap());
        assert!(min > 0.0 && min <= median && median < 10_000.0, "{row}");
    }
    let threads: usize =
        text.lines().find(|l| l.contains("\"threads\"")).map(|l| field(l, "threads")).unwrap().parse().unwrap();
    assert!(threads >= 1);
    // The table: a header and one line per case, layout and direction.
    let out = run(Dev::Cpu, &strings(&["bench-cpu", "--quick", "--cases", "F3", "--runs", "1"]));
    assert_ok(Dev::Cpu, &out, "bench-cpu table");
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(table.lines().filter(|l| l.starts_with("F3 ")).count(), 2, "{table}");
    // Bad selections.
    for (args, needle) in [
        (&["--cases", "Z"][..], "no case matches"),
        (&["--cases", "F3", "--layouts", "nxc"], "no case matches"),
        (&["--layouts", "nhwc"], "expected ncx or nxc"),
    ] {
        let out = run(Dev::Cpu, &strings(&[&["bench-cpu", "--quick", "--runs", "1"][..], args].concat()));
        assert_fails(&out, 1, needle, &format!("bench-cpu {args:?}"));
    }
    let out = run(Dev::Cpu, &strings(&["bench-cpu", "--runs", "0"]));
    assert_eq!(out.status.code(), Some(2), "--runs 0 is a usage error: {}", stderr(&out));
}

/// `wgpool bench --variants` on each software adapter (case E, quick shapes): every row names the
/// variant it timed, the backward rows time the other listed variants, the forward rows the
/// values-only pass, and the table of variants follows the main one.
#[test]
fn cli_bench_variants_and_values_only() {
    for dev in [Dev::Vulkan, Dev::Gl] {
        let dir = TempDir::new("bench-variants");
        let args = ["bench", "--quick", "--cases", "E", "--no-cpu", "--no-transfers", "--variants"];
        // (With the compiles on threads of their own: the timed passes are the same kernels.)
        let more = ["--iterations", "3", "--warmup-ms", "1", "--background-compiles", "--json", &dir.s("bench.json")];
        let out = run(dev, &strings(&[&args[..], &more[..]].concat()));
        assert_ok(dev, &out, "bench --variants");
        let table = String::from_utf8(out.stdout).unwrap();
        assert!(table.contains("kernel variants, same run"), "[{}] {table}", dev.name());
        let json = std::fs::read_to_string(dir.path("bench.json")).unwrap();
        let rows: Vec<&str> = json.lines().filter(|l| l.contains("\"case\"")).collect();
        assert_eq!(rows.len(), 4, "[{}] E: two layouts, two directions\n{json}", dev.name());
        let field = |row: &str, key: &str| -> String {
            let rest =
                &row[row.find(&format!("\"{key}\": ")).unwrap_or_else(|| panic!("{key} in {row}")) + key.len() + 4..];
            rest[..rest.find([',', '}']).unwrap()].trim_matches('"').to_string()
        };
        // What the run measured with: the copy's bytes as copied (the line and the JSON agree),
        // the passes and the warm-up.
        let top = |key: &str| -> String {
            let line =
                json.lines().find(|l| l.starts_with(&format!("  \"{key}\": "))).unwrap_or_else(|| panic!("{key}"));
            line.split(": ").nth(1).unwrap().trim_end_matches(',').to_string()
        };
        let copy_bytes: u64 = top("copy_bytes").parse().unwrap();
        assert!(copy_bytes > 0 && copy_bytes.is_multiple_of(16), "[{}] copy_bytes {copy_bytes}", dev.name());
        let copy_line = table.lines().find(|l| l.starts_with("vec4 copy:")).expect("vec4 copy line");
        assert!(
            copy_line.contains(&format!("{} MiB", copy_bytes >> 20)),
            "[{}] {copy_line} vs {copy_bytes}",
            dev.name()
        );
        assert_eq!((top("iterations").as_str(), top("warmup_ms").as_str()), ("3", "1"), "[{}]", dev.name());
        assert!(table.contains("%copy: GB/s over the vec4 copy's"), "[{}] the legend\n{table}", dev.name());
        // The per-call costs, the first calls on a new geometry among them.
        assert!(table.contains("first host-level call on a new geometry"), "[{}] {table}", dev.name());
        let overhead = json.lines().find(|l| l.contains("\"overhead_ms\"")).expect("overhead_ms");
        assert!(table.contains("Context::prepare of"), "[{}] {table}", dev.name());
        let keys = [
            "host",
            "encoder",
            "gpu",
            "first_forward",
            "first_backward",
            "second_forward",
            "second_backward",
            "prepare",
            "prepared_first",
            "repeat",
        ];
        for key in keys {
            let ms: f64 = field(overhead, key).parse().unwrap_or_else(|e| panic!("{key}: {e} in {overhead}"));
            assert!(ms > 0.0, "[{}] {key} in {overhead}", dev.name());
        }
        for row in &rows {
            let (layout, dir_name) = (field(row, "layout"), field(row, "direction"));
            let (values_ms, values_bytes) = (field(row, "gpu_values_ms"), field(row, "values_bytes"));
            if dir_name == "fwd" {
                assert!(values_ms.parse::<f64>().is_ok_and(|ms| ms > 0.0), "[{}] {row}", dev.name());
                assert!(values_bytes.parse::<u64>().is_ok_and(|b| b > 0), "[{}] {row}", dev.name());
            } else {
                // No values-only pass backward: neither its time nor its bytes.
                assert_eq!((values_ms.as_str(), values_bytes.as_str()), ("null", "null"), "[{}] {row}", dev.name());
            }
            // Channels-last E (512 channels, k2 s2): the four-channel scatter, then the others.
            if (layout.as_str(), dir_name.as_str()) == ("nxc", "bwd") {
                assert_eq!(field(row, "variant"), "backward_tiled x4", "[{}] {row}", dev.name());
                for name in ["backward_tiled", "backward_cells x4", "backward x4 single-pass"] {
                    let entry = format!("{{\"name\": \"{name}\", \"gpu_ms\": ");
                    let at = row.find(&entry).unwrap_or_else(|| panic!("[{}] {name} in {row}", dev.name()));
                    let ms: f64 = row[at + entry.len()..].split('}').next().unwrap().parse().unwrap();
                    assert!(ms > 0.0, "[{}] {name}: {ms} in {row}", dev.name());
                }
            }
        }
    }
}

/// Timed passes past what one query set holds (wgpu: 4,096 queries, two per pass): 2,100 tiny
/// forward passes on each adapter, every one with a time; `wgpool bench --iterations 0` is a usage
/// error.
#[test]
fn cli_bench_time_passes_beyond_one_query_set() {
    use wgpool::bench::{Direction, PASSES_PER_QUERY_SET, Prepared, TimeSource, time_passes};
    let spec = PoolSpec::new(InputShape::nchw(1, 2, 4, 4), PoolParams::new([2, 2]));
    // Over 2,048 passes (4,096 queries), and not a whole number of sets.
    let n = 2 * PASSES_PER_QUERY_SET + 52;
    assert!(n > 2048);
    for ctx in super::common::contexts() {
        let prepared = Prepared::new::<f32>(ctx, &spec, 1).unwrap();
        let timing = time_passes(ctx, n, |e, o| prepared.record(ctx, e, Direction::Forward, o))
            .unwrap_or_else(|e| panic!("[{}] {n} passes: {e}", ctx.describe()));
        assert_eq!(timing.samples_ms.len(), n, "[{}]", ctx.describe());
        assert_eq!(timing.source == TimeSource::Timestamps, ctx.has_timestamps(), "[{}]", ctx.describe());
        // A time each (ticks that ran backwards would wrap to a huge one).
        let bad = timing.samples_ms.iter().position(|t| !(t.is_finite() && (0.0..10_000.0).contains(t)));
        assert_eq!(bad, None, "[{}] {:?}", ctx.describe(), bad.map(|i| timing.samples_ms[i]));
        assert!(timing.median_ms().is_finite(), "[{}]", ctx.describe());
        // No passes, no samples.
        assert!(
            time_passes(ctx, 0, |e, o| prepared.record(ctx, e, Direction::Forward, o)).unwrap().samples_ms.is_empty()
        );
    }
    let out = run(Dev::Vulkan, &strings(&["bench", "--quick", "--iterations", "0"]));
    assert_eq!(out.status.code(), Some(2), "--iterations 0 is a usage error: {}", stderr(&out));
    assert!(stderr(&out).contains("--iterations"), "{}", stderr(&out));
}
