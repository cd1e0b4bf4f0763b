pub mod common;

mod gpu_vs_cpu;
mod naga_translate;
