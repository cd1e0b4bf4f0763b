//! PyTorch golden data: every case of `tests/golden/max_pool.golden` (written by
//! `tests/golden/make_golden.py`, which records the PyTorch version, date and seed) through the CPU
//! reference, the CPU fast path and the GPU on every adapter.
//!
//! What is compared (the script's docstring explains why):
//! - values: every bit, NaN payloads and signed zeros included;
//! - indices: exactly (`-1` in the file is [`NO_INDEX`]);
//! - grad_input: every bit, except that where PyTorch's gradient is NaN only NaN-ness is compared
//!   (the sign and payload of a NaN made by arithmetic are platform-dependent).
//!
//! The file already holds wgpool's conventions where they differ from PyTorch's: windows of padding
//! only give (−inf, −1) and no gradient (`notes=padding_only=K`), and the index of an all −inf
//! window is the same in every layout (`notes=cl3d_index=K`, where PyTorch's CPU channels-last 3-D
//! kernel drops the depth term).

use super::common::*;
use wgpool::{Context, DType, Element, InputShape, Layout, NO_INDEX, PoolParams, PoolSpec, cpu, f16};

const GOLDEN: &str = include_str!("../golden/max_pool.golden");

/// One case of the golden file; float tensors as raw bits in the case's physical layout.
#[derive(Debug, Clone)]
struct GoldenCase {
    name: String,
    dtype: DType,
    spec: PoolSpec,
    output_shape: Vec<usize>,
    notes: String,
    input: Vec<u32>,
    grad_output: Vec<u32>,
    values: Vec<u32>,
    indices: Vec<u32>,
    grad_input: Vec<u32>,
}

impl GoldenCase {
    fn describe(&self) -> String {
        let p = &self.spec.params;
        format!(
            "golden case {} ({}-D {} {}, shape {:?}, kernel {:?} stride {:?} padding {:?} dilation {:?} ceil {}, notes {})",
            self.name,
            self.spec.input.spatial.len(),
            self.spec.layout.name(),
            self.dtype.name(),
            self.spec.input.logical_dims(),
            p.kernel,
            p.stride,
            p.padding,
            p.dilation,
            p.ceil_mode,
            self.notes
        )
    }
}

fn parse_list(text: &str) -> Vec<usize> {
    text.split(',').map(|v| v.parse().unwrap_or_else(|_| panic!("bad number list {text:?}"))).collect()
}

fn parse_hex(line: &str, width: usize) -> Vec<u32> {
    line.split_ascii_whitespace()
        .map(|h| {
            assert_eq!(h.len(), width, "hex word {h:?} should have {width} digits");
            u32::from_str_radix(h, 16).unwrap_or_else(|_| panic!("bad hex {h:?}"))
        })
        .collect()
}

fn parse_golden(text: &str) -> Vec<GoldenCase> {
    let mut cases = vec![];
    let mut lines = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    while let Some(header) = lines.next() {
        let fields = header.strip_prefix("case ").unwrap_or_else(|| panic!("expected a `case` line, got {header:?}"));
        let field = |key: &str| -> &str {
            fields
                .split_ascii_whitespace()
                .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .unwrap_or_else(|| panic!("{header:?}: no field {key}"))
        };
        let dtype = match field("dtype") {
            "f32" => DType::F32,
            "f16" => DType::F16,
            other => panic!("{header:?}: dtype {other}"),
        };
        let layout = match field("layout") {
            "ncx" => Layout::ChannelsFirst,
            "nxc" => Layout::ChannelsLast,
            other => panic!("{header:?}: layout {other}"),
        };
        let shape = parse_list(field("shape"));
        let dims: usize = field("dims").parse().unwrap();
        assert_eq!(shape.len(), dims + 2, "{header:?}: shape rank");
        let params = PoolParams::new(parse_list(field("kernel")))
            .stride(parse_list(field("stride")))
            .padding(parse_list(field("padding")))
            .dilation(parse_list(field("dilation")))
            .ceil_mode(field("ceil") == "1");
        let spec = PoolSpec::new(InputShape::new(shape[0], shape[1], &shape[2..]), params).layout(layout);
        let width = 2 * dtype.size();
        let mut tensor = |key: &str| -> String {
            let line = lines.next().unwrap_or_else(|| panic!("{header:?}: file ends before {key}"));
            line.strip_prefix(key)
                .and_then(|r| r.strip_prefix(' ').or(if r.is_empty() { Some("") } else { None }))
                .unwrap_or_else(|| panic!("{header:?}: expected {key}, got {:.40}", line))
                .to_string()
        };
        let input = parse_hex(&tensor("input"), width);
        let grad_output = parse_hex(&tensor("grad_output"), width);
        let values = parse_hex(&tensor("values"), width);
        let indices = tensor("indices")
            .split_ascii_whitespace()
            .map(|v| match v.parse::<i64>().unwrap() {
                -1 => NO_INDEX,
                i => u32::try_from(i).expect("index in u32 range"),
            })
            .collect();
        let grad_input = parse_hex(&tensor("grad_input"), width);
        cases.push(GoldenCase {
            name: field("name").to_string(),
            dtype,
            spec,
            output_shape: parse_list(field("out")),
            notes: field("notes").to_string(),
            input,
            grad_output,
            values,
            indices,
            grad_input,
        });
    }
    cases
}

fn golden() -> &'static [GoldenCase] {
    static CASES: std::sync::OnceLock<Vec<GoldenCase>> = std::sync::OnceLock::new();
    CASES.get_or_init(|| parse_golden(GOLDEN))
}

/// Float types the golden file holds, built from their bit patterns.
trait FromBits: Element {
    fn from_bits_u32(bits: u32) -> Self;
}
impl FromBits for f32 {
    fn from_bits_u32(bits: u32) -> Self {
        f32::from_bits(bits)
    }
}
impl FromBits for f16 {
    fn from_bits_u32(bits: u32) -> Self {
        f16::from_bits(u16::try_from(bits).expect("f16 bits"))
    }
}

fn is_nan_bits(dtype: DType, bits: u32) -> bool {
    match dtype {
        DType::F32 => (bits & 0x7fff_ffff) > 0x7f80_0000,
        DType::F16 => (bits & 0x7fff) > 0x7c00,
    }
}

/// The first differing element, or None. With `nan_is_nan`, an expected NaN matches any NaN.
fn first_difference(dtype: DType, got: &[u32], want: &[u32], nan_is_nan: bool) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("length {} instead of {}", got.len(), want.len()));
    }
    let width = 2 * dtype.size();
    (0..got.len())
        .find(|&i| got[i] != want[i] && !(nan_is_nan && is_nan_bits(dtype, want[i]) && is_nan_bits(dtype, got[i])))
        .map(|i| {
            let differing = (0..got.len()).filter(|&j| got[j] != want[j]).count();
            format!(
                "[{i}] got {:#0w$x}, PyTorch {:#0w$x} ({differing} of {} elements differ)",
                got[i],
                want[i],
                got.len(),
                w = width + 2
            )
        })
}

/// Checks one path's results against a case; returns the mismatches.
fn check_results<T: Element>(
    c: &GoldenCase,
    forward: Result<cpu::Pooled<T>, wgpool::Error>,
    backward: Result<Vec<T>, wgpool::Error>,
) -> Vec<String> {
    let mut problems = vec![];
    match forward {
        Err(e) => problems.push(format!("forward failed: {e}")),
        Ok(out) => {
            let values: Vec<u32> = out.values.iter().map(|v| v.to_bits_u32()).collect();
            if let Some(d) = first_difference(c.dtype, &values, &c.values, false) {
                problems.push(format!("values {d}"));
            }
            if out.indices != c.indices {
                let i =
                    (0..out.indices.len().min(c.indices.len())).find(|&i| out.indices[i] != c.indices[i]).unwrap_or(0);
                problems.push(format!(
                    "indices [{i}] got {}, PyTorch {} (as i32: got {}, want {})",
                    out.indices.get(i).copied().unwrap_or(0),
                    c.indices.get(i).copied().unwrap_or(0),
                    out.indices.get(i).copied().unwrap_or(0) as i32,
                    c.indices.get(i).copied().unwrap_or(0) as i32
                ));
            }
        }
    }
    match backward {
        Err(e) => problems.push(format!("backward failed: {e}")),
        Ok(gi) => {
            let gi: Vec<u32> = gi.iter().map(|v| v.to_bits_u32()).collect();
            if let Some(d) = first_difference(c.dtype, &gi, &c.grad_input, true) {
                problems.push(format!("grad_input {d}"));
            }
        }
    }
    problems
}

fn tensors<T: FromBits>(c: &GoldenCase) -> (Vec<T>, Vec<T>) {
    let conv = |v: &[u32]| v.iter().map(|&b| T::from_bits_u32(b)).collect::<Vec<T>>();
    (conv(&c.input), conv(&c.grad_output))
}

#[derive(Clone, Copy, Debug)]
enum CpuPath {
    Reference,
    Fast,
}

fn run_cpu<T: FromBits>(c: &GoldenCase, path: CpuPath) -> Vec<String> {
    let (input, grad_output) = tensors::<T>(c);
    let (fwd, bwd) = match path {
        CpuPath::Reference => {
            (cpu::reference::forward(&c.spec, &input), cpu::reference::backward(&c.spec, &grad_output, &c.indices))
        }
        CpuPath::Fast => (cpu::forward(&c.spec, &input), cpu::backward(&c.spec, &grad_output, &c.indices)),
    };
    check_results(c, fwd, bwd)
}

fn run_gpu<T: FromBits>(ctx: &Context, c: &GoldenCase) -> Vec<String> {
    let (input, grad_output) = tensors::<T>(c);
    check_results(c, ctx.forward(&c.spec, &input), ctx.backward(&c.spec, &grad_output, &c.indices))
}

fn report(path: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} golden case(s) differ from PyTorch on {path}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn golden_file_covers_every_dimension_layout_and_dtype() {
    assert!(GOLDEN.lines().any(|l| l.starts_with("# torch ")), "the golden file must record the PyTorch version");
    let cases = golden();
    assert!(cases.len() >= 90, "only {} golden cases", cases.len());
    for dims in 1..=3 {
        for layout in [Layout::ChannelsFirst, Layout::ChannelsLast] {
            for dtype in [DType::F32, DType::F16] {
                let n = cases
                    .iter()
                    .filter(|c| c.spec.input.spatial.len() == dims && c.spec.layout == layout && c.dtype == dtype)
                    .count();
                assert!(n >= 3, "{dims}-D {} {}: {n} cases", layout.name(), dtype.name());
            }
        }
    }
    for note in ["padding_only=", "cl3d_index="] {
        assert!(cases.iter().any(|c| c.notes.contains(note)), "no case exercises {note}");
    }
    for c in cases {
        let g = c.spec.validate().unwrap_or_else(|e| panic!("{}: PyTorch accepted it, wgpool says {e}", c.describe()));
        assert_eq!(g.output_shape().logical_dims(), c.output_shape, "{}: output shape", c.describe());
        assert_eq!(c.input.len(), g.input_len(), "{}: input length", c.describe());
        assert_eq!(c.grad_input.len(), g.input_len(), "{}", c.describe());
        for (what, len) in
            [("values", c.values.len()), ("indices", c.indices.len()), ("grad_output", c.grad_output.len())]
        {
            assert_eq!(len, g.output_len(), "{}: {what} length", c.describe());
        }
        // The conversions the file claims are there: -1 exactly where the notes say.
        let minus_ones = c.indices.iter().filter(|&&i| i == NO_INDEX).count();
        let claimed =
            c.notes.split(',').find_map(|n| n.strip_prefix("padding_only=")).map_or(0, |k| k.parse::<usize>().unwrap());
        assert_eq!(minus_ones, claimed, "{}: -1 indices", c.describe());
    }
}

fn cpu_cases(path: CpuPath) {
    let failures: Vec<String> = golden()
        .iter()
        .flat_map(|c| {
            let problems = match c.dtype {
                DType::F32 => run_cpu::<f32>(c, path),
                DType::F16 => run_cpu::<f16>(c, path),
            };
            problems.into_iter().map(move |p| format!("[cpu {path:?}] {}: {p}", c.describe()))
        })
        .collect();
    report(&format!("the CPU ({path:?})"), failures);
}

#[test]
fn cpu_reference_matches_pytorch() {
    cpu_cases(CpuPath::Reference);
}

#[test]
fn cpu_fast_path_matches_pytorch() {
    cpu_cases(CpuPath::Fast);
}

#[test]
fn gpu_matches_pytorch_on_every_adapter() {
    let mut failures = vec![];
    let mut f16_runs = 0;
    for ctx in contexts() {
        for c in golden() {
            if c.dtype == DType::F16 && !ctx.supports(DType::F16) {
                continue; // the refusal itself is tested in gpu_vs_cpu
            }
            let case = Case::start(ctx);
            let problems = match c.dtype {
                DType::F32 => run_gpu::<f32>(ctx, c),
                DType::F16 => {
                    f16_runs += 1;
                    run_gpu::<f16>(ctx, c)
                }
            };
            if problems.is_empty() {
                case.pass();
            }
            failures.extend(problems.into_iter().map(|p| format!("[{}] {}: {p}", ctx.describe(), c.describe())));
        }
    }
    let f16_cases = golden().iter().filter(|c| c.dtype == DType::F16).count();
    let f16_adapters = contexts().iter().filter(|c| c.supports(DType::F16)).count();
    assert_eq!(f16_runs, f16_cases * f16_adapters, "f16 golden runs");
    report("the GPU", failures);
}
