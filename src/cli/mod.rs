//! The command line: the subcommand enum, the flags shared by `forward` and `backward`, and the
//! plumbing every subcommand uses (errors, devices, writing outputs).
//!
//! One file per subcommand; a new one is a variant of [`Command`], a file with an `Args` struct
//! and a `run(args) -> CliResult`, and one arm in [`run`].

mod backward;
mod bench;
mod bench_cpu;
mod bench_plot;
mod demo;
mod forward;
mod info;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use wgpool::cpu::Pooled;
use wgpool::npy::StagedFile;
use wgpool::{Context, Element, Error, InputShape, Layout, PoolParams, PoolSpec};

/// Max pooling (forward with argmax indices, and backward) on any GPU through wgpu, bit-exact
/// with PyTorch. Without a subcommand: a demo on the default adapter.
#[derive(Debug, Parser)]
#[command(name = "wgpool", version, about, long_about = None)]
#[command(after_help = "\
Adapter selection follows wgpu: WGPU_BACKEND (vulkan, gl, metal, dx12), WGPU_ADAPTER_NAME \
(a substring of the adapter's name), WGPU_POWER_PREF (low, high).
Exit codes: 0 success, 1 bad input or runtime error, 2 usage error; the error message is the \
last line on stderr, and no output file is written on error.")]
pub struct Cli {
    /// What to do (nothing: run the demo).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the GPU adapters found (all backends unless WGPU_BACKEND says otherwise) with their
    /// backend, device type, driver, key limits and features.
    Info,
    /// Max-pool an .npy tensor: write the pooled values and the argmax indices (int64, -1 for a
    /// window of padding only).
    Forward(forward::Args),
    /// Route output gradients back to their argmax positions: write grad_input.
    Backward(backward::Args),
    /// Measure forward and backward on the performance cases: GPU time (timestamps), GB/s, % of
    /// the vec4-copy bandwidth, CPU time and speed-ups; `--json` and `--plot` for reports.
    Bench(bench::Args),
    /// Measure the CPU path alone on the performance cases (no GPU needed): allocating calls and
    /// calls into preallocated buffers; `--json` for tooling (`benches/compare_torch.py --wgpool`).
    BenchCpu(bench_cpu::Args),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> CliResult {
    match cli.command {
        None => demo::run(),
        Some(Command::Info) => info::run(),
        Some(Command::Forward(args)) => forward::run(args),
        Some(Command::Backward(args)) => backward::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::BenchCpu(args)) => bench_cpu::run(args),
    }
}

/// A failure to report: the message that ends up as the last line on stderr (exit code 1).
#[derive(Debug)]
pub struct Failure(pub String);

impl Failure {
    /// The message on one line (wgpu's messages can span several).
    pub fn one_line(&self) -> String {
        self.0.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure(e.to_string())
    }
}

/// What every subcommand returns.
pub type CliResult = Result<(), Failure>;

/// Reports a clap error: help and version go to stdout with exit 0; a usage error goes to
/// stderr, with its message moved to the last line, and exit code 2.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let code = u8::try_from(e.exit_code()).unwrap_or(2);
    let text = e.render().to_string();
    // clap's first paragraph is the message (possibly with indented continuation lines); the rest
    // is tips and usage. Print the rest first and the message last.
    let mut paragraphs = text.trim_end().splitn(2, "\n\n");
    let message = paragraphs.next().unwrap_or_default();
    if let Some(rest) = paragraphs.next() {
        eprintln!("{}\n", rest.trim_end());
    }
    // "error: the following required arguments were not provided:" + one indented line each.
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let head = lines.next().unwrap_or("invalid command line").to_string();
    let items: Vec<&str> = lines.collect();
    let message = if items.is_empty() { head } else { format!("{head} {}", items.join(", ")) };
    if message.starts_with("error:") {
        eprintln!("{message}");
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(code)
}

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The default GPU adapter (WGPU_BACKEND, WGPU_ADAPTER_NAME, WGPU_POWER_PREF choose it).
    Gpu,
    /// wgpool's CPU path.
    Cpu,
}

/// `--layout`: the physical order of every file of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// Channels first, any rank: (N, C, L), (N, C, H, W), (N, C, D, H, W).
    Ncx,
    /// Channels last, 1-D: (N, L, C).
    Nlc,
    /// Channels last, 2-D: (N, H, W, C).
    Nhwc,
    /// Channels last, 3-D: (N, D, H, W, C).
    Ndhwc,
}

impl LayoutArg {
    fn name(self) -> &'static str {
        match self {
            LayoutArg::Ncx => "ncx",
            LayoutArg::Nlc => "nlc",
            LayoutArg::Nhwc => "nhwc",
            LayoutArg::Ndhwc => "ndhwc",
        }
    }

    /// The layout for a tensor of `rank`, or an error if this layout is for another rank.
    fn resolve(self, rank: usize, what: &str) -> Result<Layout, Failure> {
        let (layout, wanted) = match self {
            LayoutArg::Ncx => return Ok(Layout::ChannelsFirst),
            LayoutArg::Nlc => (Layout::ChannelsLast, 3),
            LayoutArg::Nhwc => (Layout::ChannelsLast, 4),
            LayoutArg::Ndhwc => (Layout::ChannelsLast, 5),
        };
        if rank != wanted {
            let right = match rank {
                3 => " (use --layout nlc or ncx)",
                4 => " (use --layout nhwc or ncx)",
                5 => " (use --layout ndhwc or ncx)",
                _ => "",
            };
            return Err(Failure(format!(
                "--layout {} is for rank-{wanted} tensors ({}-D pooling), but {what} has rank {rank}{right}",
                self.name(),
                wanted - 2
            )));
        }
        Ok(layout)
    }
}

/// The pooling flags shared by `forward` and `backward`.
#[derive(Debug, Clone, clap::Args)]
pub struct PoolArgs {
    /// Window size: one number for every spatial axis, or one per axis.
    #[arg(long, value_delimiter = ',', required = true, value_name = "K[,K...]")]
    pub kernel: Vec<usize>,
    /// Step between windows (default: the kernel).
    #[arg(long, value_delimiter = ',', value_name = "S[,S...]")]
    pub stride: Vec<usize>,
    /// Implicit padding on both sides (default 0; at most kernel / 2). Padding is never selected.
    #[arg(long, value_delimiter = ',', value_name = "P[,P...]")]
    pub padding: Vec<usize>,
    /// Spacing between window taps (default 1).
    #[arg(long, value_delimiter = ',', value_name = "D[,D...]")]
    pub dilation: Vec<usize>,
    /// Round the output size up (with PyTorch's correction) instead of down.
    #[arg(long)]
    pub ceil_mode: bool,
    /// Physical order of every file of the call: ncx (channels first, any rank) or channels last
    /// matching the rank (nlc: rank 3, nhwc: rank 4, ndhwc: rank 5).
    #[arg(long, value_enum, default_value_t = LayoutArg::Ncx)]
    pub layout: LayoutArg,
}

/// One entry per spatial axis: a single number is repeated, nothing means the default.
fn per_axis(param: &'static str, given: &[usize], axes: usize) -> Result<Vec<usize>, Failure> {
    match given.len() {
        0 => Ok(vec![]),
        1 => Ok(vec![given[0]; axes]),
        n if n == axes => Ok(given.to_vec()),
        n => Err(Failure(format!(
            "--{param} has {n} values, but the input has {axes} spatial axes: give one value, or one per axis"
        ))),
    }
}

impl PoolArgs {
    /// The validated problem for an input of `dims` (in file order); `what` names where the dims
    /// come from, for messages.
    pub fn spec(&self, dims: &[usize], what: &str) -> Result<PoolSpec, Failure> {
        let rank = dims.len();
        if !(3..=5).contains(&rank) {
            return Err(Failure(format!("{what} has shape {dims:?}: {}", Error::InputRank { rank })));
        }
        let layout = self.layout.resolve(rank, what)?;
        let axes = rank - 2;
        let params = PoolParams::new(per_axis("kernel", &self.kernel, axes)?)
            .stride(per_axis("stride", &self.stride, axes)?)
            .padding(per_axis("padding", &self.padding, axes)?)
            .dilation(per_axis("dilation", &self.dilation, axes)?)
            .ceil_mode(self.ceil_mode);
        let spec = PoolSpec::new(InputShape::from_dims(dims, layout)?, params).layout(layout);
        spec.validate()?;
        Ok(spec)
    }

    /// The layout's flag name, for messages.
    pub fn layout_name(&self) -> &'static str {
        self.layout.name()
    }
}

/// The output shape of `spec` in its file order.
pub fn output_dims(spec: &PoolSpec) -> Result<Vec<usize>, Failure> {
    Ok(spec.validate()?.output_shape().dims(spec.layout))
}

/// Where the pooling runs.
pub enum Engine {
    /// The CPU path.
    Cpu,
    /// A GPU context on the default adapter.
    Gpu(Box<Context>),
}

impl Engine {
    /// The engine `--device` asks for (for the GPU: `Context::new()`, which follows the
    /// environment variables).
    pub fn new(device: DeviceArg) -> Result<Self, Failure> {
        Ok(match device {
            DeviceArg::Cpu => Engine::Cpu,
            DeviceArg::Gpu => Engine::Gpu(Box::new(Context::new()?)),
        })
    }

    /// Forward pass.
    pub fn forward<T: Element>(&self, spec: &PoolSpec, input: &[T]) -> Result<Pooled<T>, Failure> {
        Ok(match self {
            Engine::Cpu => wgpool::cpu::forward(spec, input)?,
            Engine::Gpu(ctx) => ctx.forward(spec, input)?,
        })
    }

    /// Values-only forward pass.
    pub fn forward_values<T: Element>(&self, spec: &PoolSpec, input: &[T]) -> Result<Vec<T>, Failure> {
        Ok(match self {
            Engine::Cpu => wgpool::cpu::forward_values(spec, input)?,
            Engine::Gpu(ctx) => ctx.forward_values(spec, input)?,
        })
    }

    /// Backward pass.
    pub fn backward<T: Element>(&self, spec: &PoolSpec, grad_output: &[T], indices: &[u32]) -> Result<Vec<T>, Failure> {
        Ok(match self {
            Engine::Cpu => wgpool::cpu::backward(spec, grad_output, indices)?,
            Engine::Gpu(ctx) => ctx.backward(spec, grad_output, indices)?,
        })
    }
}

/// Refuses two outputs that name the same file (the second would silently replace the first).
pub fn check_distinct(outputs: &[(&str, &Path)]) -> CliResult {
    let normal = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    for (i, (flag_a, a)) in outputs.iter().enumerate() {
        for (flag_b, b) in &outputs[i + 1..] {
            if normal(a) == normal(b) {
                return Err(Failure(format!("{flag_a} and {flag_b} name the same file {}", a.display())));
            }
        }
    }
    Ok(())
}

/// Writes every output or none: each goes to a temporary file first, and only when all are
/// written are they renamed into place. If a rename fails (which needs something to change the
/// directory meanwhile), the outputs already renamed are removed again, so no half set remains.
pub fn write_outputs(outputs: Vec<(PathBuf, Vec<u8>)>) -> CliResult {
    let mut staged = Vec::with_capacity(outputs.len());
    for (path, bytes) in &outputs {
        staged.push(StagedFile::write(path, bytes)?);
    }
    let mut done: Vec<PathBuf> = Vec::new();
    for file in staged {
        let dest = file.dest().to_path_buf();
        if let Err(e) = file.commit() {
            for path in &done {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
        done.push(dest);
    }
    Ok(())
}
