#!/usr/bin/env bash
# One prepared run on a machine with a real GPU and no Rust toolchain (the project's lent
# H100/H200 machines): correctness on every adapter, then `wgpool bench` and PyTorch on the same
# card in the same call. Binaries are built beforehand on the development machine by
# benches/prepare_gpu_bin.sh (.gpu-bin/wgpool, .gpu-bin/tests, the loader packages in .gl/).
#
# Usage there: benches/gpu_machine.sh OUT_DIR [--cpu]   (Vulkan loader packages in .gl/, see README)
#   --cpu: last, the CPU path against PyTorch's CPU kernels on that machine's cores, alternating
#          case by case (`compare_torch.py --wgpool`, one round; about 2 minutes)
# Steps run in order of importance, each writing its own files under OUT_DIR, and each gets at
# most what is left of BUDGET_S seconds (default 540, under the device's 600 s per command), so a
# slow step costs the later ones, never the results already written.
set -u
deadline=$((SECONDS + ${BUDGET_S:-540}))
# Seconds for the next step: at most $1, at most what is left (at least 5).
left() { local l=$((deadline - SECONDS)); (( l > $1 )) && l=$1; (( l < 5 )) && l=5; echo $l; }
out=${1:-/tmp/wgpool-out}
cpu_side_by_side=${2:-}
mkdir -p "$out"
for f in .gl/*.deb; do dpkg -x "$f" / ; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export XDG_RUNTIME_DIR=/tmp
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
bin=.gpu-bin
chmod +x $bin/* 2>/dev/null
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
  $bin/wgpool info 2>&1 | tail -40
} > "$out/info.txt" 2>&1
cat "$out/info.txt"

echo "== correctness: GPU against the CPU reference and PyTorch golden data, every kernel variant, every adapter"
summary=$(mktemp -d)
WGPOOL_SUMMARY_DIR="$summary" timeout "$(left 150)" $bin/tests --test-threads 4 gpu_vs_cpu golden naga variants tensor > "$out/tests.txt" 2>&1
echo "GPU cases per adapter (adapter, ran, passed):" >> "$out/tests.txt"
cat "$summary"/*.tsv >> "$out/tests.txt" 2>/dev/null
grep -v "^test .* ok$" "$out/tests.txt" | tail -25

echo "== every kernel variant, GPU only (Vulkan)"
WGPU_BACKEND=vulkan timeout "$(left 120)" $bin/wgpool bench --variants --no-cpu --no-transfers \
  --json "$out/variants.json" > "$out/variants.txt" 2>&1
# The variant rows of B, D and E (below 85 % of the copy on the H100 in 2026-11), all in variants.txt.
grep -E "^(case|B|D|E) " "$out/variants.txt" | sed -n '/variant/,$p'

echo "== PyTorch on the same card (kernel times from torch.profiler, back to back, and per call with the launch)"
# Past --cuda-budget seconds of its CUDA part, compare_torch.py times the rest per call only (fast),
# so that it ends within the step's limit; 40 s for imports, CUDA's start and the last cases.
torch_s=$(left 150)
timeout "$torch_s" python3 benches/compare_torch.py --cuda-only --quiet-wait 0 --cuda-budget $(( torch_s > 60 ? torch_s - 40 : 20 )) \
  --json "$out/torch.json" > "$out/torch.txt" 2>&1 \
  || timeout "$(left 60)" python3 $bin/bench_torch_cuda.py >> "$out/torch.txt" 2>&1
tail -26 "$out/torch.txt"

echo "== wgpool bench (Vulkan): default kernels, CPU path, transfers, overhead, plot"
WGPU_BACKEND=vulkan timeout "$(left 150)" $bin/wgpool bench --json "$out/bench.json" --plot "$out/report.svg" > "$out/bench.txt" 2>&1
grep -v "^adapter\|^timing" "$out/bench.txt" | tail -35
if [ -s "$out/torch.json" ] && [ -s "$out/bench.json" ]; then
  echo "== wgpool against PyTorch, same card (ratios on PyTorch's kernel time where the profiler gave one)"
  timeout "$(left 30)" python3 benches/compare_torch.py --compare "$out/torch.json" "$out/bench.json" > "$out/compare_gpu.txt" 2>&1
  tail -30 "$out/compare_gpu.txt"
fi
echo "== case G alone in a fresh process"
WGPU_BACKEND=vulkan timeout "$(left 60)" $bin/wgpool bench --no-cpu --no-transfers --cases G --json "$out/bench_g.json" 2>&1 | grep -E "^(case|G) "
echo "== a new shape's first and second call, with the compile on a thread of its own"
WGPU_BACKEND=vulkan timeout "$(left 30)" $bin/wgpool bench --no-cpu --no-transfers --cases E --iterations 3 \
  --background-compiles 2>&1 | grep "first host-level"
echo "== demo (cargo run --release) on Vulkan, and on GL"
WGPU_BACKEND=vulkan timeout "$(left 30)" $bin/wgpool 2>&1 | tail -12
WGPU_BACKEND=gl timeout "$(left 30)" $bin/wgpool 2>&1 | tail -4

if [ "$cpu_side_by_side" = "--cpu" ]; then
  echo "== CPU path against PyTorch's CPU kernels on this machine (alternating, one round)"
  timeout "$(left 200)" python3 benches/compare_torch.py --wgpool $bin/wgpool --rounds 1 --runs 7 --no-cuda --quiet-wait 0 \
    --json "$out/cpu_side_by_side.json" > "$out/cpu_side_by_side.txt" 2>&1
  tail -19 "$out/cpu_side_by_side.txt"
fi
echo "== done in $SECONDS s"
