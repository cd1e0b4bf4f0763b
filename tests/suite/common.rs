//! Shared test helpers: a seeded generator, nasty inputs, adapters, bit comparisons.
#![allow(dead_code)]

use std::sync::OnceLock;

use wgpool::{Context, ContextOptions, Element};

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
