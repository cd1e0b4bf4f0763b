//! `wgpool forward`: values and argmax indices of an `.npy` tensor.

use std::path::PathBuf;

use wgpool::npy::{self, Values};

use super::{CliResult, DeviceArg, Engine, PoolArgs, check_distinct, output_dims, write_outputs};

/// `wgpool forward INPUT.npy --kernel K ... --values OUT.npy [--indices IDX.npy]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The input tensor (float32 or float16 .npy of rank 3, 4 or 5, in --layout order).
    #[arg(value_name = "INPUT.npy")]
    pub input: PathBuf,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceArg::Gpu)]
    pub device: DeviceArg,
    /// Output: the pooled values (same dtype as the input, --layout order).
    #[arg(long, value_name = "OUT.npy")]
    pub values: PathBuf,
    /// Output: the argmax indices (int64, flat inside each (n, c) plane; -1 for a window of
    /// padding only), --layout order. Without it, a values-only pass (for inference: the same
    /// values, fewer bytes to move).
    #[arg(long, value_name = "IDX.npy")]
    pub indices: Option<PathBuf>,
}

/// Reads, checks, computes, then writes both outputs (or neither).
pub fn run(args: Args) -> CliResult {
    if let Some(indices) = &args.indices {
        check_distinct(&[("--values", &args.values), ("--indices", indices)])?;
    }
    let (dims, input) = npy::read_values_file(&args.input)?;
    let spec = args.pool.spec(&dims, &format!("the input {}", args.input.display()))?;
    let out = output_dims(&spec)?;
    let engine = Engine::new(args.device)?;
    let Some(indices_path) = args.indices else {
        let values = match input {
            Values::F32(x) => npy::encode_values(&out, &engine.forward_values(&spec, &x)?)?,
            Values::F16(x) => npy::encode_values(&out, &engine.forward_values(&spec, &x)?)?,
        };
        return write_outputs(vec![(args.values, values)]);
    };
    let (values, indices) = match input {
        Values::F32(x) => {
            let p = engine.forward(&spec, &x)?;
            (npy::encode_values(&out, &p.values)?, p.indices)
        }
        Values::F16(x) => {
            let p = engine.forward(&spec, &x)?;
            (npy::encode_values(&out, &p.values)?, p.indices)
        }
    };
    let indices = npy::encode_indices(&out, &indices)?;
    write_outputs(vec![(args.values, values), (indices_path, indices)])
}
