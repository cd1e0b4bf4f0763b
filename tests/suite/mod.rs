pub mod common;
pub mod generators;

mod cli;
mod cpu_fast;
mod cpu_reference;
mod golden;
mod gpu_vs_cpu;
mod mirrors;
mod naga_translate;
mod npy_corpus;
mod robustness;
mod soak;
mod tensor;
mod variants;
