#!/usr/bin/env bash
# Prepares, on the development machine, what benches/gpu_machine.sh needs on a lent GPU machine
# that has no Rust toolchain and no network:
#   .gpu-bin/wgpool   the release tool (bench, demo, info)
#   .gpu-bin/tests    the release integration-test binary (GPU correctness, every adapter)
#   .gpu-bin/bench_torch_cuda.py   PyTorch's anchor script (fallback for compare_torch.py)
#   .gl/*.deb         the Vulkan and EGL loader packages (../shared/gpu/get-loader-debs.sh)
# Both folders are ignored by git (.git/info/exclude). The binaries run unchanged there (glibc
# 2.39 there, older here). It checks that the carried tree stays under the 64 MiB limit and
# prints the device call to make:
#   command: benches/gpu_machine.sh $OUT [--cpu]      carry: [".gl", ".gpu-bin"]
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
for d in /.gpu-bin/ /.gl/; do
  grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude
done

cargo build --release --quiet
# The integration-test executable: the `tests` target of a release test build.
tests=$(cargo test --release --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "tests" and m.get("executable"):
        print(m["executable"])
')
[[ -n $tests ]] || { echo "no release integration-test binary found" >&2; exit 1; }

rm -rf .gpu-bin
mkdir -p .gpu-bin
cp target/release/wgpool .gpu-bin/wgpool
cp "$tests" .gpu-bin/tests
strip .gpu-bin/wgpool .gpu-bin/tests 2>/dev/null || true
if [[ -f ../shared/perf/bench_torch_cuda.py ]]; then
  cp ../shared/perf/bench_torch_cuda.py .gpu-bin/
fi
if ! ls .gl/*.deb >/dev/null 2>&1; then
  ../shared/gpu/get-loader-debs.sh
fi

# The carried tree: tracked and untracked-but-not-ignored files, plus the two folders.
# Summed over every file: xargs may split the list into several `du` runs, and `du -c | tail -1`
# would keep only the last run's total. (Files listed but deleted are skipped.)
tree_kb=$(git ls-files -co --exclude-standard -z | xargs -0 -r du -k 2>/dev/null | awk '{s += $1} END {print s + 0}')
carry_kb=$(du -sk .gpu-bin .gl | awk '{s += $1} END {print s}')
total_mb=$(( (tree_kb + carry_kb) / 1024 ))
ls -la .gpu-bin .gl
echo "carried tree: about ${total_mb} MiB of the 64 MiB allowed (working tree $((tree_kb / 1024)) MiB, .gpu-bin + .gl $((carry_kb / 1024)) MiB)"
if (( total_mb >= 64 )); then
  echo "too large to carry" >&2
  exit 1
fi
echo 'device call: command "benches/gpu_machine.sh $OUT --cpu", carry [".gl", ".gpu-bin"]'
