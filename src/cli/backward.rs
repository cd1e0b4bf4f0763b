//! `wgpool backward`: grad_input from grad_output and the forward pass's indices.

use std::path::{Path, PathBuf};

use wgpool::npy::{self, Values};

use super::{CliResult, DeviceArg, Engine, Failure, PoolArgs, output_dims, write_outputs};

/// `wgpool backward GRAD_OUTPUT.npy --indices IDX.npy --input-shape N,C,H,W ... --grad-input OUT.npy`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The output gradient (float32 or float16 .npy, shaped like the forward values).
    #[arg(value_name = "GRAD_OUTPUT.npy")]
    pub grad_output: PathBuf,
    /// The forward pass's indices (int64, int32 or uint32; -1 / 0xFFFFFFFF for "no index").
    #[arg(long, value_name = "IDX.npy")]
    pub indices: PathBuf,
    /// The forward input's shape, in --layout order (e.g. N,C,H,W or N,H,W,C).
    #[arg(long, value_delimiter = ',', required = true, value_name = "N,C,...")]
    pub input_shape: Vec<usize>,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceArg::Gpu)]
    pub device: DeviceArg,
    /// Output: the input gradient (same dtype as grad_output, --input-shape).
    #[arg(long, value_name = "OUT.npy")]
    pub grad_input: PathBuf,
}

fn check_shape(what: &str, path: &Path, found: &[usize], want: &[usize], args: &Args) -> CliResult {
    if found != want {
        return Err(Failure(format!(
            "{}: {what} has shape {found:?}, but --input-shape {:?} with these parameters gives an output of shape {want:?} (layout {})",
            path.display(),
            args.input_shape,
            args.pool.layout_name()
        )));
    }
    Ok(())
}

/// Reads, checks, computes, then writes grad_input.
pub fn run(args: Args) -> CliResult {
    let spec = args.pool.spec(&args.input_shape, "--input-shape")?;
    let out = output_dims(&spec)?;
    let (go_dims, grad_output) = npy::read_values_file(&args.grad_output)?;
    check_shape("grad_output", &args.grad_output, &go_dims, &out, &args)?;
    let (idx_dims, indices) = npy::read_indices_file(&args.indices)?;
    check_shape("indices", &args.indices, &idx_dims, &out, &args)?;
    let engine = Engine::new(args.device)?;
    let grad_input = match grad_output {
        Values::F32(g) => npy::encode_values(&args.input_shape, &engine.backward(&spec, &g, &indices)?)?,
        Values::F16(g) => npy::encode_values(&args.input_shape, &engine.backward(&spec, &g, &indices)?)?,
    };
    write_outputs(vec![(args.grad_input, grad_input)])
}
