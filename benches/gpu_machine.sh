#!/usr/bin/env bash
# One prepared run on a machine with a real GPU and no Rust toolchain (the project's lent
# H100/H200 machines): correctness on every adapter, then `wgpool bench` and PyTorch on the same
# card in the same call. Binaries are built beforehand on the development machine:
#
#   cargo build --release && cargo test --release --no-run   # then copy into .gpu-bin/:
#   .gpu-bin/wgpool  .gpu-bin/tests  (the integration-test binary)  .gpu-bin/golden/max_pool.golden
#
# Usage there: benches/gpu_machine.sh OUT_DIR   (Vulkan loader packages in .gl/, see README)
set -u
out=${1:-/tmp/wgpool-out}
mkdir -p "$out"
for f in .gl/*.deb; do dpkg -x "$f" / ; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
bin=.gpu-bin
chmod +x $bin/* 2>/dev/null
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
  $bin/wgpool info 2>&1 | tail -40
} > "$out/info.txt" 2>&1
cat "$out/info.txt"

echo "== correctness: GPU against the CPU reference and PyTorch golden data, every adapter"
mkdir -p "$out/summary"
WGPOOL_SUMMARY_DIR="$out/summary" timeout 240 $bin/tests --test-threads 4 gpu_vs_cpu golden naga 2>&1 | grep -v "^test .* ok$" | tail -25
cat "$out"/summary/*.tsv 2>/dev/null

echo "== wgpool bench (Vulkan, default kernels)"
WGPU_BACKEND=vulkan timeout 300 $bin/wgpool bench --json "$out/bench.json" --plot "$out/report.svg" 2>&1 | tail -30
echo "== wgpool bench, one element per invocation (channels-last cases only matter)"
WGPU_BACKEND=vulkan timeout 120 $bin/wgpool bench --scalar-only --no-cpu --no-transfers --cases A,B,C,E,G --json "$out/bench_scalar.json" 2>&1 | grep -E "nxc|copy"
echo "== PyTorch on the same card"
timeout 240 python3 benches/compare_torch.py --json "$out/torch.json" 2>&1 | tail -30
