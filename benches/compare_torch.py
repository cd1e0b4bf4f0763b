#!/usr/bin/env python3
"""PyTorch on wgpool's performance cases, on this machine: max pooling forward (with indices) and
backward, float32, CPU always and CUDA where available. Prints a table, writes JSON (--json), and
puts wgpool's own criterion medians next to PyTorch's (--criterion target/criterion).

    python3 benches/compare_torch.py [--quick] [--cases A,B] [--threads 1,2] [--runs 15]
                                     [--json out.json] [--criterion target/criterion]
                                     [--wgpool target/release/wgpool --rounds 3]
                                     [--no-cuda] [--cuda-only] [--cuda-budget 110]
                                     [--wgpool-gpu bench.json]
    python3 benches/compare_torch.py --compare torch.json bench.json   # no measurement

The cases are those of `wgpool::cases::full()` and, with --quick, `wgpool::cases::quick()`
(src/cases.rs). The two lists are kept in sync BY HAND: change one, change the other.

CPU (perf_counter, warm-up then median of --runs, each case after waiting for the other processes
of the machine to go quiet): four variants per case, layout and thread count:
  fwd      F.max_poolNd(x, k, s, p, return_indices=True)             allocates its outputs
  fwd_out  aten.max_poolNd_with_indices.out(..., out=, indices=)       preallocated outputs
  bwd      aten.max_poolNd_with_indices_backward(gO, x, ..., idx)      allocates grad_input
  bwd_out  aten.max_poolNd_with_indices_backward.grad_input(..., grad_input=)
wgpool's `cpu::forward` / `cpu::backward` allocate, so `fwd` / `bwd` are the like-for-like
columns; the `_out` ones are PyTorch without allocation (and its page faults). 1-D runs the way
PyTorch runs it on the CPU: the 2-D kernel on (N, C, 1, L).

Side by side in one run (--wgpool BIN): for every case and layout, PyTorch's four variants, then
`BIN bench-cpu --cases X --layouts L --json -` (wgpool's CPU path: `alloc`, and `into` preallocated
buffers), alternating, --rounds times over all the cases; then, per case and direction, each side's
best layout (and PyTorch's best thread count), medians over the rounds, their ratio, and the range
of the ratio within single rounds. A shared machine's bandwidth drifts by 2x over minutes: only
such alternating runs give ratios worth quoting.

CUDA: `fwd` and `bwd` (the allocating calls), plus the device-to-device copy bandwidth of a 1 GiB
tensor (read + write), each timed three ways (after a warm-up):
  kernel    GPU time per call: the sum of the device durations of the CUDA kernels (and memsets,
            memcpys) that the call launched, from torch.profiler (CUPTI), median over 20 calls.
            Launch, dispatcher and allocator time are not in it; gaps between a call's kernels are
            not either. This is what compares with wgpool's GPU timestamps around its pass.
  b2b       100 calls back to back between two CUDA events, the interval over 100, median of 5:
            the kernel time where kernels take longer than their launches (the host keeps the
            stream busy), else the rate at which the host launches them.
  per call  CUDA events around one call on an idle stream, median of 50 (as
            perf/bench_torch_cuda.py): launch included, so for small kernels (C, D, E, F3 on an
            H100: ~0.03 ms for a few microseconds of memory traffic) it is PyTorch's launch overhead.
Per call and b2b are measured first for everything, the profiler after (CUPTI once attached could
slow launches). If the profiler fails (or records no device activity), `kernel` falls back to
`b2b`, and that to `per call`; the table and the JSON say which (`kernel_source`). After
--cuda-budget seconds of the CUDA part, no b2b or profiler timing starts any more (`per call` only),
so that the script stays within the time benches/gpu_machine.sh gives it.

Against wgpool on the GPU (--wgpool-gpu FILE, or --compare TORCH_JSON BENCH_JSON without measuring):
the rows of `wgpool bench --json FILE` next to PyTorch's, ratio = PyTorch / wgpool (> 1: wgpool
faster) on the `kernel` time where there is one (its source is shown), and on `per call` too.

Bytes (GB/s): PyTorch's GB/s here count the int64 indices it moves: forward = input read + values
written + indices (8 B) written; backward = grad_out read + indices (8 B) read + grad_input
written. wgpool counts its u32 indices (4 B), so the two sides' GB/s differ for the same time; the
side-by-side tables compare times, not GB/s.

JSON: {"machine": {...}, "quick", "results": [{"device", "threads", "case", "layout", "direction",
"variant", "median_ms", "min_ms", "bytes", "elements"}...], "cuda_copy_GBps": ...}; layout is
"ncx" (channels-first) or "nxc" (channels-last), as wgpool names them; elements: the input's. CUDA
rows: median_ms / min_ms are `per call` (launch included, as in earlier files, which lack the
rest), plus "kernel_ms", "kernel_min_ms" (the `kernel` column: min null where the calls' activities
could not be told apart), "kernel_source" (what kernel_ms is: "profiler", or the "b2b" or "per call"
timing that stood in for it), "kernels_per_call" (device activities per call; profiler only, else
null), "b2b_ms" (null where not measured).
"""
import argparse, datetime, json, os, platform, statistics as st, subprocess, sys, time

import torch
import torch.nn.functional as F

aten = torch.ops.aten

# name: (spatial rank, logical shape (N, C, *spatial), kernel, stride, padding, layouts)
# Keep in sync with src/cases.rs (full()).
FULL = {
    "A": (2, (32, 64, 112, 112), 2, 2, 0, ("ncx", "nxc")),
    "B": (2, (32, 64, 112, 112), 3, 2, 1, ("ncx", "nxc")),
    "C": (2, (8, 256, 56, 56), 2, 2, 0, ("ncx", "nxc")),
    "D": (2, (1, 3, 1024, 1024), 2, 2, 0, ("ncx", "nxc")),
    "E": (2, (16, 512, 14, 14), 2, 2, 0, ("ncx", "nxc")),
    "F1": (1, (32, 64, 4096), 2, 2, 0, ("ncx",)),
    "F3": (3, (4, 32, 32, 32, 32), 2, 2, 0, ("ncx",)),
    "G": (2, (64, 64, 224, 224), 2, 2, 0, ("ncx", "nxc")),
}


def quick_cases():
    """src/cases.rs quick(): batch 1, D at 256x256, G with 16 channels."""
    q = {}
    for name, (rank, shape, k, s, p, layouts) in FULL.items():
        shape = (1,) + shape[1:]
        if name == "D":
            shape = shape[:2] + (256, 256)
        if name == "G":
            shape = (shape[0], 16) + shape[2:]
        q[name] = (rank, shape, k, s, p, layouts)
    return q


def read_busy_jiffies():
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:]]
    return sum(v[:8]) - v[3] - v[4]  # all but idle and iowait


def own_jiffies():
    t = os.times()
    return (t.user + t.system) * os.sysconf("SC_CLK_TCK")


def foreign_cores(fn):
    """Runs fn(); returns (its result, cores used by other processes meanwhile)."""
    if not os.path.exists("/proc/stat"):
        return fn(), float("nan")
    b0, o0, w0 = read_busy_jiffies(), own_jiffies(), time.time()
    r = fn()
    dt = max(time.time() - w0, 1e-3)
    return r, ((read_busy_jiffies() - b0) - (own_jiffies() - o0)) / os.sysconf("SC_CLK_TCK") / dt


def wait_quiet(max_wait, thresh=0.15):
    """Waits (up to max_wait s) until other processes use fewer than thresh cores over 1 s."""
    if max_wait <= 0 or not os.path.exists("/proc/stat"):
        return float("nan")
    t_end = time.time() + max_wait
    while True:
        _, foreign = foreign_cores(lambda: time.sleep(1.0))
        if foreign < thresh or time.time() > t_end:
            return foreign


def bench_cpu(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return st.median(ts) * 1e3, min(ts) * 1e3


def events_ms(fn, calls):
    """`calls` calls of `fn` between two CUDA events on the current stream, then a synchronize:
    the interval over `calls`, in ms."""
    a = torch.cuda.Event(enable_timing=True)
    b = torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(calls):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / calls


def bench_cuda(fn, reps=50, warm=5):
    """`per call`: CUDA events around one call on an idle stream, so the interval starts before
    Python, the dispatcher, the allocator and the launch do their work: launch included.
    (median, min) in ms."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = [events_ms(fn, 1) for _ in range(reps)]
    return st.median(ts), min(ts)


def bench_cuda_b2b(fn, calls=100, repeats=5):
    """`b2b`: `calls` calls back to back between two CUDA events, the interval over `calls`;
    (median, min) over `repeats` in ms. Launch costs hide behind the kernels only where the kernels
    take longer than the launches."""
    fn()
    torch.cuda.synchronize()
    ts = [events_ms(fn, calls) for _ in range(repeats)]
    return st.median(ts), min(ts)


def device_activity(events):
    """(start_us, duration_us, name) of the device-side events (kernels, memsets, memcpys) of a
    torch.profiler run, in time order; user annotations (ranges, not work) left out."""
    cuda = torch.autograd.DeviceType.CUDA
    out = []
    for e in events:
        if e.device_type != cuda or getattr(e, "is_user_annotation", False):
            continue
        # Synchronisation records (off by default; their spans are waits, not work).
        kind = str(getattr(e, "activity_type", None) or "").lower()
        if "sync" in kind or "annotation" in kind or "Synchronize" in e.name or e.name.startswith("Stream Wait"):
            continue
        start, end = e.time_range.start, e.time_range.end
        if end > start:
            out.append((start, end - start, e.name))
    out.sort()
    return out


def per_call_ms(activity, calls):
    """From `calls` calls' device activity: (median, min) ms of each call's summed durations and the
    activities per call, when every call launched the same number (the activity falls into `calls`
    groups in time order, the calls having been synchronised one by one); else the mean, NaN, and
    the average count. Raises ValueError where there is none."""
    if not activity or calls <= 0:
        raise ValueError("no device activity recorded")
    n = len(activity)
    if n % calls == 0:
        k = n // calls
        sums = [sum(d for _, d, _ in activity[i * k:(i + 1) * k]) / 1e3 for i in range(calls)]
        return st.median(sums), min(sums), k
    return sum(d for _, d, _ in activity) / 1e3 / calls, float("nan"), n / calls


def bench_cuda_kernels(fn, calls=20):
    """`kernel`: torch.profiler (CUDA activity through CUPTI) over `calls` calls, each followed by
    a synchronize; (median, min, activities per call, their names) in ms. Raises on any failure,
    or where the profiler saw no device activity (CUPTI unavailable, for instance)."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
            torch.cuda.synchronize()
    activity = device_activity(prof.events())
    med, mn, k = per_call_ms(activity, calls)
    names = sorted({name for _, _, name in activity})
    return med, mn, k, names


class CudaTimer:
    """The three CUDA timings of a callable, in two passes over everything: `host` (per call,
    then b2b), then `kernels` (the profiler), so that no timing on the host side runs after a
    profiler session (CUPTI left attached could slow launches). The profiler and b2b timings may
    fail: the next one stands in, and a note says so; the per-call one may not. After `budget`
    seconds from creation, neither b2b nor the profiler runs any more."""

    def __init__(self, budget):
        self.t0, self.budget = time.time(), budget
        self.profiler_error = None  # the first failure turns the profiler off for the rest
        self.notes = []
        self.over_budget = False

    def note(self, text):
        if text not in self.notes:
            self.notes.append(text)
            print(f"note: {text}", flush=True)

    def in_budget(self, label, what):
        if time.time() - self.t0 <= self.budget:
            return True
        if not self.over_budget:
            self.over_budget = True
            self.note(f"past --cuda-budget {self.budget:.0f} s: no {what} from {label} on")
        return False

    def host(self, fn, label):
        """Per call and b2b; `kernel` set to the best stand-in so far."""
        r = {"b2b_ms": None, "kernels_per_call": None, "kernel_source": "per call"}
        r["median_ms"], r["min_ms"] = bench_cuda(fn)
        r["kernel_ms"], r["kernel_min_ms"] = r["median_ms"], r["min_ms"]
        if self.in_budget(label, "b2b or profiler timings"):
            try:
                r["b2b_ms"], b2b_min = bench_cuda_b2b(fn)
                r["kernel_ms"], r["kernel_min_ms"], r["kernel_source"] = r["b2b_ms"], b2b_min, "b2b"
            except Exception as e:  # noqa: BLE001 - any failure: keep what was measured, say so
                self.note(f"b2b timing failed at {label} ({type(e).__name__}: {e}); `per call` stands in")
        return r

    def kernels(self, fn, label, r):
        """The profiler's kernel time into `r` (from `host`), where it works."""
        if self.profiler_error is not None or not self.in_budget(label, "b2b or profiler timings"):
            return r
        try:
            med, mn, k, _ = bench_cuda_kernels(fn)
            r["kernel_ms"], r["kernel_min_ms"], r["kernels_per_call"] = med, mn, k
            r["kernel_source"] = "profiler"
        except Exception as e:  # noqa: BLE001
            self.profiler_error = f"{type(e).__name__}: {e}"
            self.note(f"torch.profiler kernel times failed at {label} ({self.profiler_error}); "
                      f"`{r['kernel_source']}` stands in for `kernel` from there on")
        return r


def setup(case, layout, device):
    """The four callables of one case and layout, checked against each other."""
    rank, shape, k, s, p, _ = case
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float32, device=device)
    if layout == "nxc":
        x = x.contiguous(memory_format=torch.channels_last if rank == 2 else torch.channels_last_3d)
    if rank == 1:
        xin, kk, ss, pp = x.unsqueeze(-2), [1, k], [1, s], [0, p]
        fwd_op, bwd_op = aten.max_pool2d_with_indices, aten.max_pool2d_with_indices_backward
        user = lambda: F.max_pool1d(x, k, s, p, return_indices=True)
    else:
        xin, kk, ss, pp = x, [k] * rank, [s] * rank, [p] * rank
        fwd_op = aten.max_pool2d_with_indices if rank == 2 else aten.max_pool3d_with_indices
        bwd_op = aten.max_pool2d_with_indices_backward if rank == 2 else aten.max_pool3d_with_indices_backward
        pool = F.max_pool2d if rank == 2 else F.max_pool3d
        user = lambda: pool(x, k, s, p, return_indices=True)
    dd = [1] * len(kk)
    out, idx = fwd_op(xin, kk, ss, pp, dd, False)
    ou, iu = user()
    assert torch.equal(ou.reshape(out.shape), out) and torch.equal(iu.reshape(idx.shape), idx)
    out_buf, idx_buf = torch.empty_like(out), torch.empty_like(idx)
    g = torch.randn_like(out)
    gin_buf = torch.empty_like(xin)
    fns = {
        "fwd": user,
        "fwd_out": lambda: fwd_op.out(xin, kk, ss, pp, dd, False, out=out_buf, indices=idx_buf),
        "bwd": lambda: bwd_op(g, xin, kk, ss, pp, dd, False, idx),
        "bwd_out": lambda: bwd_op.grad_input(g, xin, kk, ss, pp, dd, False, idx, grad_input=gin_buf),
    }
    if device == "cpu":
        fns["fwd_out"]()
        assert torch.equal(out_buf, out) and torch.equal(idx_buf, idx)
        ref = fns["bwd"]()
        fns["bwd_out"]()
        assert torch.equal(ref, gin_buf)
    else:
        del fns["fwd_out"], fns["bwd_out"]  # CUDA: the allocating calls, as in perf/bench_torch_cuda.py
    nin, nout = xin.numel(), out.numel()
    bytes_ = {"fwd": nin * 4 + nout * 12, "bwd": nout * 12 + nin * 4}
    return fns, bytes_, nin


def criterion_median_ms(root, case, layout, direction, quick):
    """wgpool's criterion median for cpu[-quick]/<case>/<layout>/<direction>, or None."""
    group = f"{'cpu-quick' if quick else 'cpu'}_{case}_{layout}"
    path = os.path.join(root, group, direction, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"] / 1e6
    except (OSError, KeyError, ValueError):
        return None


def side_by_side(cases, results, rounds):
    """Best against best, per case and direction, from the alternating runs: each side's fastest
    layout (and PyTorch's fastest thread count) by its median over the rounds."""
    def pick(device, variant, name, d, rnd=None):
        rs = [r for r in results if (r["device"], r["variant"], r["case"], r["direction"]) == (device, variant, name, d)
              and (rnd is None or r.get("round") == rnd)]
        keys = {(r["layout"], r["threads"]) for r in rs}
        meds = {k: st.median(r["median_ms"] for r in rs if (r["layout"], r["threads"]) == k) for k in keys}
        k = min(meds, key=meds.get)
        return meds[k], f"{k[0]}" + ("" if device == "wgpool-cpu" else f" {k[1]}T")

    print(f"\nSide by side, alternating runs, medians over {rounds} round(s) (ms); each side's best layout "
          f"(PyTorch: and thread count); ratio = PyTorch / wgpool (> 1: wgpool faster); 'rounds': the "
          f"ratio's range within single rounds")
    print(f"{'case':4} {'dir':3} | {'wgpool into':>16} {'torch .out':>19} {'ratio':>6} {'rounds':>11} | "
          f"{'wgpool alloc':>16} {'torch alloc':>19} {'ratio':>6} {'rounds':>11}")
    for name in cases:
        for d in ("fwd", "bwd"):
            cols = []
            for ours_v, theirs_v in (("into", "out"), ("alloc", "alloc")):
                (o, ol), (t, tl) = pick("wgpool-cpu", ours_v, name, d), pick("cpu", theirs_v, name, d)
                per = [pick("cpu", theirs_v, name, d, r)[0] / pick("wgpool-cpu", ours_v, name, d, r)[0]
                       for r in range(rounds)]
                cols.append(f"{o:9.3f} {ol:6} {t:9.3f} {tl:9} {t / o:6.2f} {min(per):5.2f}-{max(per):<5.2f}")
            print(f"{name:4} {d:3} | {cols[0]} | {cols[1]}", flush=True)


def compare_gpu(torch_results, bench, source):
    """wgpool's GPU rows (`wgpool bench --json`) next to PyTorch's CUDA ones: ratio = PyTorch /
    wgpool (> 1: wgpool faster), on PyTorch's `kernel` time where it has one (else on what stood
    in, shown in `src`), and on `per call` (launch included)."""
    cuda = {(r["case"], r["layout"], r["direction"]): r for r in torch_results if r.get("device") == "cuda"}
    adapter = bench.get("adapter", {})
    print(f"\nwgpool on the GPU ({source}: {adapter.get('name', '?')}, {adapter.get('backend', '?')}) next to "
          f"PyTorch CUDA, ms; ratio = PyTorch / wgpool (> 1: wgpool faster); src = what PyTorch's time is "
          f"(kernel: profiler kernel sum; b2b: back to back; per call: launch included)")
    print(f"{'case':4} {'lay':4} {'dir':3} | {'wgpool':>9} {'source':>10} | {'torch':>9} {'src':>8} {'ratio':>6} | "
          f"{'per call':>9} {'ratio':>6}")
    shown = 0
    for row in bench.get("rows", []):
        key = (row["case"], row["layout"], row["direction"])
        t = cuda.get(key)
        if t is None or not row.get("gpu_ms"):
            continue
        if t.get("elements") is not None and row.get("elements") is not None and t["elements"] != row["elements"]:
            print(f"{key[0]:4} {key[1]:4} {key[2]:3} | shapes differ ({row['elements']} against {t['elements']} "
                  f"elements: --quick on one side only?)")
            continue
        ours = row["gpu_ms"]
        kernel, src = t.get("kernel_ms"), t.get("kernel_source")
        if kernel is None:  # files written before the kernel column
            kernel, src = t["median_ms"], "per call"
        src = "kernel" if src == "profiler" else src
        print(f"{key[0]:4} {key[1]:4} {key[2]:3} | {ours:9.4f} {row.get('gpu_source', '?'):>10} | {kernel:9.4f} "
              f"{src:>8} {kernel / ours:6.2f} | {t['median_ms']:9.4f} {t['median_ms'] / ours:6.2f}", flush=True)
        shown += 1
    if not shown:
        print("(no row in common)")


def json_safe(x):
    """`x` with every NaN or infinite float replaced by None: bare NaN is not JSON (jq and serde
    reject it; only Python's own json module reads it)."""
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def machine_info():
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the small shapes of wgpool::cases::quick()")
    ap.add_argument("--cases", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--threads", default="", help="CPU thread counts, e.g. 1,2 (default: torch's)")
    ap.add_argument("--runs", type=int, default=15, help="CPU timed runs per measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--quiet-wait", type=float, default=60.0,
                    help="max seconds to wait for the machine to go quiet before each CPU case (0: never)")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--criterion", default="", help="criterion directory of `cargo bench --bench cpu`")
    ap.add_argument("--wgpool", default="", help="wgpool binary: alternate its `bench-cpu` with PyTorch, case by case")
    ap.add_argument("--rounds", type=int, default=1, help="with --wgpool: rounds over all the cases")
    ap.add_argument("--no-cuda", action="store_true")
    ap.add_argument("--cuda-only", action="store_true")
    ap.add_argument("--cuda-budget", type=float, default=110.0,
                    help="seconds of the CUDA part after which only the `per call` timing is taken")
    ap.add_argument("--wgpool-gpu", default="", metavar="BENCH_JSON",
                    help="`wgpool bench --json` output: its GPU rows next to PyTorch's CUDA ones, with ratios")
    ap.add_argument("--compare", nargs=2, metavar=("TORCH_JSON", "BENCH_JSON"),
                    help="no measurement: this script's --json output next to `wgpool bench --json`'s")
    a = ap.parse_args()

    if a.compare:
        with open(a.compare[0]) as f:
            theirs = json.load(f)
        with open(a.compare[1]) as f:
            bench = json.load(f)
        compare_gpu(theirs.get("results", []), bench, a.compare[1])
        return

    cases = quick_cases() if a.quick else dict(FULL)
    if a.cases:
        unknown = [c for c in a.cases.split(",") if c not in cases]
        if unknown:
            sys.exit(f"unknown case(s) {unknown}; known: {list(cases)}")
        cases = {c: cases[c] for c in a.cases.split(",")}
    info = machine_info()
    print(f"torch {info['torch']} ({info['torch_cpu_capability']}), CPU {info['cpu_model']} "
          f"x{info['cpu_count']}, {info['date']}, {'quick' if a.quick else 'full'} shapes", flush=True)
    results = []

    def record(device, threads, case, layout, direction, variant, med, mn, nbytes, foreign=None, rnd=None, **extra):
        r = dict(device=device, threads=threads, case=case, layout=layout, direction=direction,
                 variant=variant, median_ms=med, min_ms=mn, bytes=nbytes, **extra)
        if foreign is not None:
            r["foreign_cores"] = foreign
        if rnd is not None:
            r["round"] = rnd
        results.append(r)

    def run_wgpool(name, layout, rnd):
        cmd = [a.wgpool, "bench-cpu", "--cases", name, "--layouts", layout, "--runs", str(a.runs), "--json", "-"]
        if a.quick:
            cmd.append("--quick")
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        for r in out["rows"]:
            record("wgpool-cpu", out["threads"], name, layout, r["direction"], r["variant"], r["median_ms"],
                   r["min_ms"], r["bytes"], rnd=rnd)
        get = lambda d, v: next(r["median_ms"] for r in out["rows"] if (r["direction"], r["variant"]) == (d, v))
        print(f"{name:4} {'wgp':>3} {layout:4} | {get('fwd', 'alloc'):9.3f} {get('fwd', 'into'):9.3f} | "
              f"{get('bwd', 'alloc'):9.3f} {get('bwd', 'into'):9.3f} | (wgpool, {out['threads']} threads; "
              f"into = preallocated)", flush=True)

    if not a.cuda_only:
        threads = [int(t) for t in a.threads.split(",")] if a.threads else [torch.get_num_threads()]
        print(f"\nCPU, median of {a.runs} (ms; GB/s with int64 indices)")
        print(f"{'case':4} {'thr':>3} {'lay':4} | {'fwd':>9} {'fwd_out':>9} | {'bwd':>9} {'bwd_out':>9} | foreign")
        def run_torch(name, case, layout, nt, rnd):
            torch.set_num_threads(nt)
            fns, nbytes, nin = setup(case, layout, "cpu")
            wait_quiet(a.quiet_wait)
            res, foreign = foreign_cores(lambda: {k: bench_cpu(f, a.warmup, a.runs) for k, f in fns.items()})
            for k, (med, mn) in res.items():
                d = k.split("_")[0]
                record("cpu", nt, name, layout, d, "out" if k.endswith("_out") else "alloc",
                       med, mn, nbytes[d], foreign, rnd, elements=nin)
            print(f"{name:4} {nt:>3} {layout:4} | {res['fwd'][0]:9.3f} {res['fwd_out'][0]:9.3f} | "
                  f"{res['bwd'][0]:9.3f} {res['bwd_out'][0]:9.3f} | {foreign:5.2f}", flush=True)

        with torch.no_grad():
            if a.wgpool:
                # Alternating: every case and layout, PyTorch then wgpool, round after round.
                for rnd in range(a.rounds):
                    print(f"-- round {rnd + 1} of {a.rounds}")
                    for name, case in cases.items():
                        for layout in case[5]:
                            for nt in threads:
                                run_torch(name, case, layout, nt, rnd)
                            run_wgpool(name, layout, rnd)
            else:
                for nt in threads:
                    for name, case in cases.items():
                        for layout in case[5]:
                            run_torch(name, case, layout, nt, None)

    copy_gbps = None
    if torch.cuda.is_available() and not a.no_cuda:
        timer = CudaTimer(a.cuda_budget)
        x = torch.empty(1 << 28, dtype=torch.float32, device="cuda").uniform_()  # 1 GiB
        y = torch.empty_like(x)
        copy = lambda: y.copy_(x)
        # Pass 1, host side: per call and b2b, everything. Pass 2: the profiler, everything.
        timed = {"copy": timer.host(copy, "the copy")}
        for name, case in cases.items():
            for layout in case[5]:
                fns, nbytes, nin = setup(case, layout, "cuda")
                for k, f in fns.items():
                    timed[(name, layout, k)] = timer.host(f, f"{name} {layout} {k}")
                del fns
                torch.cuda.empty_cache()
        c = timer.kernels(copy, "the copy", timed["copy"])
        t = c["kernel_ms"]
        copy_gbps = 2 * x.numel() * 4 / t / 1e6
        del x, y, copy
        torch.cuda.empty_cache()
        print(f"\nCUDA {info['cuda_device']}, cudnn {info['cudnn']}: copy 1 GiB {t:.3f} ms ({c['kernel_source']}; "
              f"per call {c['median_ms']:.3f} ms), {copy_gbps:.0f} GB/s read+write")
        print("ms; kernel: GPU time per call, its CUDA kernels' device durations summed (torch.profiler; what "
              "compares with wgpool's timestamps);\nb2b: 100 calls back to back / 100; per call: one call between "
              "events, launch included; src: what stood in for kernel (pc: per call); GB/s: from kernel, int64 indices")
        print(f"{'case':4} {'lay':4} | {'fwd kernel':>10} {'b2b':>8} {'per call':>8} {'GB/s':>6} {'src':>3} | "
              f"{'bwd kernel':>10} {'b2b':>8} {'per call':>8} {'GB/s':>6} {'src':>3}")
        short = {"profiler": "", "b2b": "b2b", "per call": "pc"}
        fmt = lambda v: f"{v:8.4f}" if v is not None else f"{'-':>8}"
        for name, case in cases.items():
            for layout in case[5]:
                fns, nbytes, nin = setup(case, layout, "cuda")
                cols = []
                for k, f in fns.items():
                    r = timer.kernels(f, f"{name} {layout} {k}", timed[(name, layout, k)])
                    record("cuda", None, name, layout, k, "alloc", r["median_ms"], r["min_ms"], nbytes[k],
                           elements=nin, **{f: v for f, v in r.items() if f not in ("median_ms", "min_ms")})
                    cols.append(f"{r['kernel_ms']:10.4f} {fmt(r['b2b_ms'])} {r['median_ms']:8.4f} "
                                f"{nbytes[k] / r['kernel_ms'] / 1e6:6.0f} {short[r['kernel_source']]:>3}")
                print(f"{name:4} {layout:4} | {' | '.join(cols)}", flush=True)
                del fns
                torch.cuda.empty_cache()
        if timer.notes:
            print("notes: " + "; ".join(timer.notes))

    if a.criterion:
        cpu = [r for r in results if r["device"] == "cpu"]
        print(f"\nwgpool (criterion median, {a.criterion}) next to PyTorch CPU, ms; 'best' = PyTorch's fastest "
              f"allocating call (any layout, thread count), like wgpool's; ratio = best / wgpool (> 1: wgpool faster)")
        print(f"{'case':4} {'lay':4} {'dir':3} | {'wgpool':>9} | "
              + " | ".join(f"{'torch ' + str(t) + 'T':>10} {'out':>9}" for t in sorted({r['threads'] for r in cpu}))
              + f" | {'best':>9} {'ratio':>6}")
        for name, case in cases.items():
            for layout in case[5]:
                for d in ("fwd", "bwd"):
                    ours = criterion_median_ms(a.criterion, name, layout, d, a.quick)
                    cols, best = [], None
                    for t in sorted({r["threads"] for r in cpu}):
                        get = lambda v: next((r["median_ms"] for r in cpu if (r["case"], r["layout"], r["direction"],
                                              r["variant"], r["threads"]) == (name, layout, d, v, t)), None)
                        cols.append(f"{get('alloc') or float('nan'):10.3f} {get('out') or float('nan'):9.3f}")
                    same = [r["median_ms"] for r in cpu if r["case"] == name and r["direction"] == d and r["variant"] == "alloc"]
                    best = min(same) if same else None
                    ratio = best / ours if (best and ours) else float("nan")
                    print(f"{name:4} {layout:4} {d:3} | {ours if ours else float('nan'):9.3f} | " + " | ".join(cols)
                          + f" | {best or float('nan'):9.3f} {ratio:6.2f}")

    if a.wgpool and not a.cuda_only:
        side_by_side(cases, results, a.rounds)

    if a.json:
        with open(a.json, "w") as f:
            out = {"machine": info, "quick": a.quick, "cuda_copy_GBps": copy_gbps, "results": results}
            json.dump(json_safe(out), f, indent=1, allow_nan=False)
        print(f"\nwrote {a.json}")

    if a.wgpool_gpu:
        try:
            with open(a.wgpool_gpu) as f:
                bench = json.load(f)
            compare_gpu(results, bench, a.wgpool_gpu)
        except (OSError, ValueError, KeyError) as e:
            print(f"\n--wgpool-gpu {a.wgpool_gpu}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
