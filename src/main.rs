//! The `wgpool` command-line tool: a demo (no arguments), `info`, `forward` and `backward` on
//! `.npy` files. See `wgpool --help` and the README for the contract.
//!
//! Exit codes: 0 on success, 1 on bad input or a runtime error, 2 on a usage error (clap's own
//! code). The error message is always the last line on stderr; no output file is written on error.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => return cli::usage_error(e),
    };
    // No panic is expected anywhere; if a bug (or a dependency) panics, still end with exit 1 and
    // the message as the last stderr line, never Rust's 101.
    // The default hook would print the panic (and a backtrace) before the message below.
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cli::run(args)));
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(failure)) => {
            eprintln!("error: {}", failure.one_line());
            ExitCode::from(1)
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            // `println!` panics when stdout is a closed pipe (`wgpool info | head`): the reader
            // has what it wanted, as with any Unix tool.
            if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
                return ExitCode::SUCCESS;
            }
            let failure = cli::Failure(format!("internal error (a bug in wgpool, please report it): {message}"));
            eprintln!("error: {}", failure.one_line());
            ExitCode::from(1)
        }
    }
}
