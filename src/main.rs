//! The `wgpool` command-line tool: a demo (no arguments), `info`, `forward` and `backward` on
//! `.npy` files. See `wgpool --help` and the README for the contract.
//!
//! Exit codes: 0 on success, 1 on bad input or a runtime error, 2 on a usage error (clap's own
//! code). The error message is always the last line on stderr; no output file is written on error.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    quiet_mesa_device_select();
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

/// Mesa's Vulkan device-select layer (an implicit layer that `mesa-vulkan-drivers` installs) asks
/// the Wayland compositor for its GPU when wgpu creates a Vulkan instance. Without
/// `XDG_RUNTIME_DIR` (a headless machine, a container, `ssh` without a login session) there is no
/// compositor to ask, and libwayland prints `error: XDG_RUNTIME_DIR is invalid or not set in the
/// environment.` on stderr, once per instance, on runs that succeed. The layer only reorders the
/// adapters: wgpu's power preference still picks a GPU over a software adapter, and the order
/// matters only between two GPUs of one kind (the layer puts the boot VGA one first; without it the
/// Vulkan loader's order stands, and `WGPU_ADAPTER_NAME` picks either). So here the layer is turned
/// off (`NODEVICE_SELECT=1`), unless the user has set any of the variables it reads
/// (`NODEVICE_SELECT`, `MESA_VK_DEVICE_SELECT`, `DRI_PRIME`) or a Wayland socket path that needs no
/// `XDG_RUNTIME_DIR` (an absolute `WAYLAND_DISPLAY`). Library users see the line from their own
/// programs: the README says how to silence it.
fn quiet_mesa_device_select() {
    let unset = |name: &str| std::env::var_os(name).is_none();
    let absolute_wayland = std::env::var_os("WAYLAND_DISPLAY").is_some_and(|d| d.to_string_lossy().starts_with('/'));
    if unset("XDG_RUNTIME_DIR")
        && !absolute_wayland
        && unset("NODEVICE_SELECT")
        && unset("MESA_VK_DEVICE_SELECT")
        && unset("DRI_PRIME")
    {
        // SAFETY: the first thing `main` does, before any other thread exists (no other thread
        // can read the environment while it changes).
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}
