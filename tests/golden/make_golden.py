#!/usr/bin/env python3
"""Generates tests/golden/max_pool.golden: max pooling cases computed by PyTorch on the CPU.

    python tests/golden/make_golden.py            # rewrites tests/golden/max_pool.golden
    python tests/golden/make_golden.py --check    # regenerates in memory and diffs (date ignored)

Needs `torch` and `numpy`. The output depends only on SEED and the PyTorch and numpy versions (the
header records them, and the date); tests/suite/golden.rs parses it (compiled in with include_str!).

What each case holds
--------------------
For max_pool{1,2,3}d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True) and its
backward (aten::max_pool{2,3}d_with_indices_backward, which autograd calls; 1-D goes through the
2-D kernel on an (N, C, 1, L) view, exactly as torch.nn.functional.max_pool1d does):

    case name=... dims=D layout=ncx|nxc dtype=f32|f16 shape=N,C,S.. out=N,C,O.. kernel=.. stride=..
         padding=.. dilation=.. ceil=0|1 notes=...
    input       <hex bits, physical order>
    grad_output <hex bits, physical order>
    values      <hex bits, physical order>
    indices     <decimal, physical order, -1 allowed>
    grad_input  <hex bits, physical order>

`shape`/`out` are logical (N, C, spatial...). The tensors are stored in the physical order of the
layout: ncx = (N, C, spatial...), nxc = (N, spatial..., C). Floats are written as their raw bit
patterns (8 hex digits for f32, 4 for f16), so NaN payloads, signed zeros and infinities survive.

Layouts
-------
Every case is computed on the channels-first tensor. For nxc cases the same logical data is also run
through PyTorch's channels-last kernels (`x.contiguous(memory_format=torch.channels_last)` or
`channels_last_3d`) and the two are compared; the stored tensors are the channels-first results
permuted to (N, spatial..., C). PyTorch has no channels-last 1-D format: nxc 1-D (NLC) cases are the
NCL results transposed.

Conventions converted from PyTorch's to wgpool's (the `notes` field says which case hit which)
------------------------------------------------------------------------------------------------
(a) padding_only=K: K windows hold padding only (possible with dilation, e.g. L=1, k=2, d=2, p=1).
    PyTorch returns -inf with an index computed from the clipped window start, which lies outside
    the plane or, worse, names an unrelated in-plane element (2-D H=2, W=1, k=(1,2), d=(1,2),
    p=(0,1) gives indices 1 and 2 in a plane of 2). Its own backward would then write the gradient
    out of bounds or to the wrong element. wgpool returns -inf with index -1 and its backward skips
    those outputs. Here: the index is set to -1 (the value is checked to be -inf), and the expected
    grad_input is PyTorch's backward run with the gradient of those outputs set to +0.0 and their
    index set to 0 (adding +0.0 never changes an accumulator that starts at +0.0, so the other sums
    keep PyTorch's bits and order).
(b) cl3d_index=K: PyTorch's CPU channels-last 3-D kernel drops the depth term of the index of
    windows whose real elements are all -inf (it reports the index of the window's first element in
    depth plane 0). wgpool returns the same index in every layout, so the expected indices (and the
    gradient that follows them) come from the channels-first computation of the same logical data.
    K counts the indices that differed. The script fails if the layouts differ in any other way.

Cross-checks the script makes before writing anything
-----------------------------------------------------
- channels-last forward/backward against channels-first (bitwise; see (b));
- the expected grad_input against an independent scatter in numpy (grad_input starts at +0.0;
  `grad_input[idx] += g` in increasing output order, rounding to the element type after every add:
  float32 for f32, float16 for f16) — this is what PyTorch's CPU kernels do, and it pins down the
  order of the sums;
- for cases without padding-only windows, the backward op against autograd's x.grad.

What the Rust test compares (see tests/suite/golden.rs)
-------------------------------------------------------
values: every bit, NaN payloads included (max pooling copies the input element; PyTorch's CPU
kernels preserve payloads, checked here for f32 and f16). indices: exactly. grad_input: every bit
except where the expected value is NaN, where only NaN-ness is compared: a NaN produced by
arithmetic (inf + -inf) or by adding two NaNs has a platform-dependent sign and payload (x86's
default NaN has the sign bit set, GPUs' does not; IEEE 754 leaves the choice of NaN operand open).
Gradient NaNs fed in are the positive quiet NaN (0x7fc00000 / 0x7e00).
"""

import argparse
import datetime
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SEED = 20240611
OUT = Path(__file__).with_name("max_pool.golden")

rng = np.random.default_rng(SEED)


# --------------------------------------------------------------------------------------------
# Geometry (PyTorch's rules, as in src/params.rs)


def out_size(i, k, s, p, d, ceil):
    eff = d * (k - 1) + 1
    num = i + 2 * p - eff + (s - 1 if ceil else 0)
    o = num // s + 1
    if ceil and (o - 1) * s >= i + p:
        o -= 1
    return o


def has_real_tap(i, k, s, p, d, o):
    """Whether window o on one axis holds at least one real (non-padding) element."""
    return any(0 <= o * s - p + t * d < i for t in range(k))


def valid(c):
    for a in range(c["dims"]):
        i, k, s, p, d = (c[x][a] for x in ("spatial", "kernel", "stride", "padding", "dilation"))
        if p > k // 2 or out_size(i, k, s, p, d, c["ceil"]) < 1:
            return False
    return True


def output_spatial(c):
    return [
        out_size(c["spatial"][a], c["kernel"][a], c["stride"][a], c["padding"][a], c["dilation"][a], c["ceil"])
        for a in range(c["dims"])
    ]


def padding_only_mask(c):
    """Boolean array over the logical output (N, C, O...): True where the window is padding only."""
    outs = output_spatial(c)
    per_axis = [
        np.array(
            [
                not has_real_tap(c["spatial"][a], c["kernel"][a], c["stride"][a], c["padding"][a], c["dilation"][a], o)
                for o in range(outs[a])
            ]
        )
        for a in range(c["dims"])
    ]
    mask = np.zeros(outs, dtype=bool)
    for a, m in enumerate(per_axis):
        shape = [1] * c["dims"]
        shape[a] = outs[a]
        mask = mask | m.reshape(shape)
    return np.broadcast_to(mask, [c["batch"], c["channels"]] + outs).copy()


# --------------------------------------------------------------------------------------------
# Inputs and gradients

NP = {"f32": np.float32, "f16": np.float16}
BITS = {"f32": np.uint32, "f16": np.uint16}
TORCH = {"f32": torch.float32, "f16": torch.float16}


def quiet_nan(dtype, negative, payload):
    if dtype == "f32":
        b = 0x7FC00000 | (payload & 0x3FFFFF) | (0x80000000 if negative else 0)
        return np.array([b], np.uint32).view(np.float32)[0]
    b = 0x7E00 | (payload & 0x1FF) | (0x8000 if negative else 0)
    return np.array([b], np.uint16).view(np.float16)[0]


def make_input(kind, n, dtype):
    t = NP[dtype]
    ninf, pinf = -np.inf, np.inf
    out = np.empty(n, dtype=t)
    for j in range(n):
        r = rng.integers(0, 100)
        if kind == "nasty":  # NaN with payloads and both signs, +-inf, +-0, ties, random
            if r < 4:
                v = quiet_nan(dtype, rng.integers(0, 4) == 0, int(rng.integers(1, 1 << 22)))
            elif r < 8:
                v = pinf
            elif r < 14:
                v = ninf
            elif r < 18:
                v = 0.0
            elif r < 22:
                v = -0.0
            elif r < 50:
                v = [1.0, -1.0, 0.5, -0.5, 2.0][rng.integers(0, 5)]
            else:
                v = (rng.random() - 0.7) * 8.0
        elif kind == "negative":  # all negative, distinct
            v = -1.0 - rng.random() * 100.0
        elif kind == "ties":  # few distinct values: many ties, +0/-0 ties
            v = [2.0, 1.0, 1.0, 0.0, -0.0, -0.0, -1.0][rng.integers(0, 7)]
        elif kind == "neginf":  # mostly -inf: windows of all -inf, NaN after -inf
            if r < 75:
                v = ninf
            elif r < 82:
                v = quiet_nan(dtype, rng.integers(0, 2) == 0, int(rng.integers(1, 1 << 22)))
            else:
                v = (rng.random() - 0.5) * 4.0
        elif kind == "allneginf":  # nearly all -inf: most windows hold -inf only
            if r < 93:
                v = ninf
            elif r < 96:
                v = quiet_nan(dtype, False, int(rng.integers(1, 1 << 22)))
            else:
                v = rng.standard_normal()
        elif kind == "normal":
            v = rng.standard_normal() * 3.0
        else:
            raise ValueError(kind)
        out[j] = t(v)
    return out


def make_grad(n, dtype, special):
    t = NP[dtype]
    g = (rng.standard_normal(n) * 2.0).astype(t)
    for j in range(n):
        r = rng.integers(0, 100)
        if r < 8:
            g[j] = t(-0.0)
        elif r < 12:
            g[j] = t(0.0)
        elif special and r < 15:
            g[j] = quiet_nan(dtype, False, 0)
        elif special and r < 18:
            g[j] = t(np.inf if rng.integers(0, 2) else -np.inf)
    return g


# --------------------------------------------------------------------------------------------
# PyTorch


def forward(c, x):
    k, s, p, d, ceil = c["kernel"], c["stride"], c["padding"], c["dilation"], c["ceil"]
    if c["dims"] == 1:
        return F.max_pool1d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)
    if c["dims"] == 2:
        return F.max_pool2d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)
    return F.max_pool3d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)


def backward(c, g, x, idx):
    k, s, p, d, ceil = c["kernel"], c["stride"], c["padding"], c["dilation"], c["ceil"]
    if c["dims"] == 1:  # what max_pool1d's autograd does: the 2-D kernel on (N, C, 1, L)
        gi = torch.ops.aten.max_pool2d_with_indices_backward(
            g.unsqueeze(-2), x.unsqueeze(-2), [1, k[0]], [1, s[0]], [0, p[0]], [1, d[0]], ceil, idx.unsqueeze(-2)
        )
        return gi.squeeze(-2)
    op = torch.ops.aten.max_pool2d_with_indices_backward if c["dims"] == 2 else torch.ops.aten.max_pool3d_with_indices_backward
    return op(g, x, k, s, p, d, ceil, idx)


def bits(a, dtype):
    return np.ascontiguousarray(a).view(BITS[dtype])


def same_bits_nan_aware(a, b, dtype):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    nan = np.isnan(a.astype(np.float32))
    return np.array_equal(nan, np.isnan(b.astype(np.float32))) and np.array_equal(bits(a, dtype)[~nan], bits(b, dtype)[~nan])


def scatter_reference(c, grad_output, indices, dtype):
    """grad_input = +0.0; grad_input[idx] += g in increasing output order, rounding every add."""
    t = NP[dtype]
    nc = c["batch"] * c["channels"]
    plane = int(np.prod(c["spatial"]))
    go = grad_output.reshape(nc, -1)
    ix = indices.reshape(nc, -1)
    gi = np.zeros((nc, plane), dtype=t)
    with np.errstate(all="ignore"):
        for q in range(nc):
            for o in range(go.shape[1]):
                if ix[q, o] >= 0:
                    gi[q, ix[q, o]] = t(gi[q, ix[q, o]] + go[q, o])
    return gi.reshape([c["batch"], c["channels"]] + list(c["spatial"]))


def memory_format(dims):
    return {2: torch.channels_last, 3: torch.channels_last_3d}.get(dims)


def to_physical(a, c):
    """Logical (N, C, S...) numpy array to the case's physical order."""
    if c["layout"] == "ncx":
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def compute(c):
    dtype = c["dtype"]
    shape = [c["batch"], c["channels"]] + list(c["spatial"])
    n = int(np.prod(shape))
    x_np = make_input(c["input_kind"], n, dtype).reshape(shape)
    if "input_override" in c:
        x_np = np.array(c["input_override"], dtype=NP[dtype]).reshape(shape)
    x = torch.from_numpy(x_np.copy())
    values, indices = forward(c, x)
    outs = output_spatial(c)
    assert list(values.shape) == shape[:2] + outs, (c["name"], values.shape, outs)
    m = values.numel()
    g_np = make_grad(m, dtype, c["grad_special"]).reshape(values.shape)
    if "grad_override" in c:
        g_np = np.array(c["grad_override"], dtype=NP[dtype]).reshape(values.shape)
    g = torch.from_numpy(g_np.copy())
    notes = []

    # (a) padding-only windows: -inf and index -1; their gradient goes nowhere.
    mask = padding_only_mask(c)
    pad_only = int(mask.sum())
    idx_np = indices.numpy().copy()
    if pad_only:
        assert np.all(np.isneginf(values.numpy().astype(np.float32)[mask])), c["name"]
        notes.append(f"padding_only={pad_only}")
    idx_np[mask] = -1
    g_fixed = g.clone()
    g_fixed[torch.from_numpy(mask)] = 0.0
    idx_fixed = indices.clone()
    idx_fixed[torch.from_numpy(mask)] = 0
    grad_input = backward(c, g_fixed, x, idx_fixed)

    # Cross-check: an independent scatter, rounding every add, in output order.
    mine = scatter_reference(c, g_np, idx_np, dtype)
    assert same_bits_nan_aware(grad_input.numpy(), mine, dtype), f"{c['name']}: PyTorch backward != ordered scatter"
    # Cross-check: the op is what autograd runs.
    if not pad_only:
        xa = x.clone().requires_grad_(True)
        va, _ = forward(c, xa)
        va.backward(g)
        assert same_bits_nan_aware(xa.grad.numpy(), grad_input.numpy(), dtype), f"{c['name']}: autograd differs"

    # Channels-last: PyTorch's own channels-last kernels on the same logical data.
    mf = memory_format(c["dims"]) if c["layout"] == "nxc" else None
    if mf is not None:
        xcl = x.contiguous(memory_format=mf)
        vcl, icl = forward(c, xcl)
        assert np.array_equal(bits(vcl.contiguous().numpy(), dtype), bits(values.numpy(), dtype)), f"{c['name']}: cl values"
        diff = (icl.contiguous().numpy() != indices.numpy()) & ~mask
        if diff.any():
            # (b) only the known defect is tolerated: 3-D, windows whose real elements are all -inf,
            # and the depth term missing from the index.
            assert c["dims"] == 3, f"{c['name']}: channels-last indices differ in {c['dims']}-D"
            vals = values.numpy().astype(np.float32)[diff]
            assert np.all(np.isneginf(vals)), f"{c['name']}: cl index differs where the max is not -inf"
            hw = c["spatial"][1] * c["spatial"][2]
            assert np.all(icl.numpy()[diff] == indices.numpy()[diff] % hw), f"{c['name']}: unexpected cl index"
            notes.append(f"cl3d_index={int(diff.sum())}")
        gcl = backward(c, g_fixed.contiguous(memory_format=mf), xcl, idx_fixed.contiguous(memory_format=mf))
        assert same_bits_nan_aware(gcl.contiguous().numpy(), grad_input.numpy(), dtype), f"{c['name']}: cl grad"

    return {
        "input": to_physical(x_np, c),
        "grad_output": to_physical(g_np, c),
        "values": to_physical(values.numpy(), c),
        "indices": to_physical(idx_np, c),
        "grad_input": to_physical(grad_input.numpy(), c),
        "out": outs,
        "notes": notes,
    }


# --------------------------------------------------------------------------------------------
# Cases


def case(name, dims, layout, dtype, shape, kernel, stride=None, padding=None, dilation=None, ceil=False, input_kind="nasty", grad_special=False, **extra):
    c = {
        "name": name,
        "dims": dims,
        "layout": layout,
        "dtype": dtype,
        "batch": shape[0],
        "channels": shape[1],
        "spatial": list(shape[2:]),
        "kernel": list(kernel),
        "stride": list(stride if stride is not None else kernel),
        "padding": list(padding if padding is not None else [0] * dims),
        "dilation": list(dilation if dilation is not None else [1] * dims),
        "ceil": bool(ceil),
        "input_kind": input_kind,
        "grad_special": grad_special,
    }
    c.update(extra)
    assert len(c["spatial"]) == dims and valid(c), name
    return c


def hand_picked():
    ninf = float("-inf")
    cs = [
        # ceil_mode with PyTorch's correction: 5 wide, k2 s2 p1 ceil -> 3 (not 4).
        case("ceil_correction_5x7", 2, "ncx", "f32", (2, 3, 5, 7), (2, 2), padding=(1, 1), ceil=True),
        case("ceil_correction_5x7_cl", 2, "nxc", "f32", (2, 3, 5, 7), (2, 2), padding=(1, 1), ceil=True),
        case("ceil_correction_1d", 1, "ncx", "f32", (1, 2, 5), (2,), padding=(1,), ceil=True),
        case("ceil_no_correction_3d", 3, "ncx", "f32", (1, 2, 5, 4, 3), (2, 3, 2), stride=(2, 2, 2), ceil=True),
        # Windows of padding only (dilation): (a).
        case("padding_only_1d_L1", 1, "ncx", "f32", (2, 3, 1), (2,), dilation=(2,), padding=(1,)),
        case("padding_only_1d_L1_nlc", 1, "nxc", "f32", (2, 3, 1), (2,), dilation=(2,), padding=(1,)),
        case("padding_only_2d_H1_ceil", 2, "ncx", "f32", (1, 2, 1, 4), (3, 1), dilation=(2, 1), padding=(1, 0), ceil=True),
        case("padding_only_2d_H1_ceil_cl", 2, "nxc", "f32", (1, 2, 1, 4), (3, 1), dilation=(2, 1), padding=(1, 0), ceil=True),
        # PyTorch's index for these lands inside the plane, on the wrong element.
        case("padding_only_2d_inplane_index", 2, "ncx", "f32", (1, 2, 2, 1), (1, 2), dilation=(1, 2), padding=(0, 1), grad_special=True),
        case("padding_only_3d", 3, "ncx", "f32", (1, 2, 1, 3, 2), (2, 2, 1), stride=(1, 2, 1), dilation=(2, 1, 1), padding=(1, 1, 0)),
        case("padding_only_3d_cl", 3, "nxc", "f32", (2, 2, 1, 3, 2), (2, 2, 1), stride=(1, 2, 1), dilation=(2, 1, 1), padding=(1, 1, 0), input_kind="neginf"),
        case("padding_only_f16", 2, "nxc", "f16", (1, 3, 1, 3), (3, 2), stride=(3, 1), dilation=(2, 2), padding=(1, 1), ceil=True),
        # PyTorch's channels-last 3-D all -inf defect: (b).
        case("all_neginf_3d_cl", 3, "nxc", "f32", (1, 2, 3, 3, 3), (2, 2, 2), stride=(1, 1, 1), input_kind="allneginf"),
        case("all_neginf_3d_cl_padded", 3, "nxc", "f32", (2, 3, 3, 4, 3), (3, 2, 3), stride=(2, 1, 2), padding=(1, 1, 1), input_kind="neginf"),
        case("all_neginf_3d_cl_f16", 3, "nxc", "f16", (1, 3, 4, 2, 3), (2, 2, 2), stride=(1, 1, 1), input_kind="neginf"),
        case("all_neginf_3d_ncx", 3, "ncx", "f32", (1, 2, 3, 3, 3), (2, 2, 2), stride=(1, 1, 1), input_kind="allneginf"),
        # Overlap (ResNet stem), stride > kernel, dilation; odd non-square sizes.
        case("resnet_stem_13x11", 2, "ncx", "f32", (2, 2, 13, 11), (3, 3), stride=(2, 2), padding=(1, 1), input_kind="ties"),
        case("resnet_stem_13x11_cl", 2, "nxc", "f32", (2, 2, 13, 11), (3, 3), stride=(2, 2), padding=(1, 1), input_kind="normal"),
        case("stride_above_kernel", 2, "ncx", "f32", (1, 3, 9, 10), (2, 2), stride=(3, 4)),
        case("stride_above_kernel_3d_cl", 3, "nxc", "f32", (1, 2, 5, 4, 7), (1, 2, 2), stride=(2, 3, 3)),
        case("dilated_overlap_1d", 1, "ncx", "f32", (2, 2, 23), (3,), stride=(1,), dilation=(3,), padding=(1,), grad_special=True),
        case("dilated_3d_cl", 3, "nxc", "f32", (1, 2, 5, 6, 4), (2, 3, 2), stride=(1, 1, 1), dilation=(3, 2, 2), padding=(1, 1, 1)),
        case("kernel1_identity", 2, "ncx", "f32", (1, 2, 3, 3), (1, 1)),
        case("all_negative_2d", 2, "ncx", "f32", (2, 2, 6, 7), (3, 2), stride=(2, 1), padding=(1, 1), input_kind="negative"),
        case("all_negative_3d_cl", 3, "nxc", "f32", (1, 3, 3, 4, 5), (2, 2, 3), stride=(1, 2, 1), padding=(1, 1, 1), input_kind="negative"),
        # Signed-zero ties: the first maximum wins, -0.0 stays -0.0 in values.
        case(
            "signed_zero_ties",
            2,
            "ncx",
            "f32",
            (1, 1, 2, 4),
            (2, 2),
            input_override=[-0.0, 0.0, 0.0, -0.0, 0.0, -0.0, -0.0, -0.0],
            grad_override=[-0.0, -0.0],
        ),
        # NaN: last NaN in scan order wins, payloads and signs kept.
        case("nan_heavy_2d_cl", 2, "nxc", "f32", (2, 3, 4, 5), (2, 3), stride=(1, 2), padding=(1, 1), input_kind="neginf", grad_special=True),
        # f16: summation order matters (each add rounds to f16): the peak at 3 is picked by four
        # windows with gradients 2048, 1, 1, 1 -> 2048 in f16 steps, 2052 if summed in f32.
        case(
            "f16_sum_order_1d",
            1,
            "ncx",
            "f16",
            (1, 1, 7),
            (4,),
            stride=(1,),
            input_override=[0.0, 1.0, 2.0, 9.0, 2.0, 1.0, 0.0],
            grad_override=[2048.0, 1.0, 1.0, 1.0],
        ),
        case("f16_overlap_2d", 2, "ncx", "f16", (2, 2, 7, 6), (3, 3), stride=(1, 1), padding=(1, 1), input_kind="ties"),
        case("f16_overlap_2d_cl", 2, "nxc", "f16", (2, 2, 7, 6), (3, 3), stride=(1, 1), padding=(1, 1), input_kind="ties"),
        case("f16_nasty_3d", 3, "ncx", "f16", (1, 2, 3, 4, 5), (2, 2, 2), stride=(1, 1, 2), padding=(1, 0, 1), ceil=True, grad_special=True),
    ]
    # f16 overflow in the sums: grads near the top of the range.
    cs.append(
        case(
            "f16_sum_overflow_1d_nlc",
            1,
            "nxc",
            "f16",
            (1, 2, 5),
            (3,),
            stride=(1,),
            padding=(1,),
            input_override=[0.0, 5.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            grad_override=[40000.0, 1.0, 30000.0, -2.0, 1000.0, 0.5, 0.25, 0.125, -0.0, ninf],
        )
    )
    return cs


def random_case(name, dims, layout, dtype):
    kinds = ["nasty", "nasty", "negative", "ties", "neginf", "normal"]
    max_size = {1: 24, 2: 9, 3: 5}[dims]
    while True:
        spatial, kernel, stride, padding, dilation = [], [], [], [], []
        for _ in range(dims):
            size = int(rng.integers(1, max_size + 1))
            k = int(rng.integers(1, min(4, size + 2) + 1))
            s = k if rng.random() < 0.3 else int(rng.integers(1, 4))
            d = int(rng.integers(2, 4)) if rng.random() < 0.25 else 1
            p = int(rng.integers(0, k // 2 + 1))
            spatial.append(size)
            kernel.append(k)
            stride.append(s)
            padding.append(p)
            dilation.append(d)
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *spatial)
        if shape[0] * shape[1] == 1 and rng.random() < 0.7:
            continue  # mostly N*C > 1
        if int(np.prod(shape)) > 240:
            continue
        c = dict(
            dims=dims,
            layout=layout,
            dtype=dtype,
            shape=shape,
            kernel=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            ceil=bool(rng.random() < 0.5),
            input_kind=kinds[int(rng.integers(0, len(kinds)))],
            grad_special=bool(rng.random() < 0.25),
        )
        trial = case(name, **c) if _valid_raw(c) else None
        if trial is not None:
            return trial


def _valid_raw(c):
    for a in range(c["dims"]):
        i, k, s, p, d = c["shape"][2 + a], c["kernel"][a], c["stride"][a], c["padding"][a], c["dilation"][a]
        if p > k // 2 or out_size(i, k, s, p, d, c["ceil"]) < 1:
            return False
    return True


def all_cases():
    cs = hand_picked()
    for dtype, per in (("f32", 8), ("f16", 3)):
        for dims in (1, 2, 3):
            for layout in ("ncx", "nxc"):
                for j in range(per):
                    cs.append(random_case(f"random_{dims}d_{layout}_{dtype}_{j}", dims, layout, dtype))
    return cs


# --------------------------------------------------------------------------------------------
# Output


def hexes(a, dtype):
    width = 8 if dtype == "f32" else 4
    return " ".join(f"{int(b):0{width}x}" for b in bits(a, dtype).ravel())


def features(c, r):
    """Which corners a case exercises (for the header summary)."""
    f = set()
    for a in range(c["dims"]):
        i, k, s, p, d = (c[x][a] for x in ("spatial", "kernel", "stride", "padding", "dilation"))
        eff = d * (k - 1) + 1
        f.add("overlap" if eff > s else ("gaps" if eff < s else "adjacent"))
        if p:
            f.add("padding")
        if d > 1:
            f.add("dilation")
        if c["ceil"]:
            naive = -(-(i + 2 * p - eff) // s) + 1
            if naive != out_size(i, k, s, p, d, True):
                f.add("ceil_correction")
            elif out_size(i, k, s, p, d, True) != out_size(i, k, s, p, d, False):
                f.add("ceil_extra_window")
    x = r["input"].astype(np.float32)
    if np.isnan(x).any():
        f.add("nan")
    if np.isinf(x).any():
        f.add("inf")
    if c["batch"] * c["channels"] > 1:
        f.add("nc>1")
    return f


def render(cases, results):
    lines = []
    counts = {}
    for c in cases:
        key = f"{c['dims']}-D {c['layout']} {c['dtype']}"
        counts[key] = counts.get(key, 0) + 1
    feats = {}
    for c, r in zip(cases, results):
        for f in features(c, r):
            feats[f] = feats.get(f, 0) + 1
    hit_a = [c["name"] for c, r in zip(cases, results) if any(n.startswith("padding_only") for n in r["notes"])]
    hit_b = [c["name"] for c, r in zip(cases, results) if any(n.startswith("cl3d_index") for n in r["notes"])]
    lines += [
        "# wgpool golden max-pooling data, generated by tests/golden/make_golden.py (do not edit by hand).",
        f"# torch {torch.__version__} (CPU kernels, capability {torch.backends.cpu.get_cpu_capability()}), numpy {np.__version__}, python {platform.python_version()}",
        f"# date {datetime.date.today().isoformat()}, seed {SEED}",
        "# Format and conventions: see the docstring of make_golden.py.",
        f"# {len(cases)} cases: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())),
        "# features (cases): " + ", ".join(f"{k} {v}" for k, v in sorted(feats.items())),
        "# (a) padding-only windows converted to (-inf, -1), no gradient: " + " ".join(hit_a),
        "# (b) channels-last 3-D all -inf index taken from channels-first: " + " ".join(hit_b),
        "",
    ]
    j = lambda v: ",".join(str(int(a)) for a in v)
    for c, r in zip(cases, results):
        dt = c["dtype"]
        lines.append(
            f"case name={c['name']} dims={c['dims']} layout={c['layout']} dtype={dt} "
            f"shape={j([c['batch'], c['channels']] + c['spatial'])} out={j([c['batch'], c['channels']] + r['out'])} "
            f"kernel={j(c['kernel'])} stride={j(c['stride'])} padding={j(c['padding'])} dilation={j(c['dilation'])} "
            f"ceil={int(c['ceil'])} notes={','.join(r['notes']) or '-'}"
        )
        lines.append("input " + hexes(r["input"], dt))
        lines.append("grad_output " + hexes(r["grad_output"], dt))
        lines.append("values " + hexes(r["values"], dt))
        lines.append("indices " + " ".join(str(int(v)) for v in r["indices"].ravel()))
        lines.append("grad_input " + hexes(r["grad_input"], dt))
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    args = ap.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    cases = all_cases()
    results = [compute(c) for c in cases]
    text = render(cases, results)
    if args.check:
        strip = lambda t: [l for l in t.splitlines() if not l.startswith("# date")]
        same = strip(OUT.read_text()) == strip(text)
        print("golden data " + ("matches" if same else "DIFFERS"))
        sys.exit(0 if same else 1)
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text)} bytes, {len(cases)} cases)")
    for l in text.splitlines()[:8]:
        print(l)


if __name__ == "__main__":
    main()
