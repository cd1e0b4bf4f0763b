#!/usr/bin/env python3
"""Writes the seed corpus of the `npy_read` fuzz target: fuzz/corpus/npy_read/.

Standard library only (no NumPy needed). `valid_*` files decode; `tests/suite/npy_corpus.rs`
checks their shape and elements, computed the same way as here. `bad_*` files must be refused
with an error (never a panic). Files the fuzzer adds (hash names) only need to not panic.

    python3 fuzz/make_corpus.py
"""

import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "npy_read")


def header(dict_text, version=(1, 0), pad=True):
    """Magic, version, length and dictionary text (bytes), padded like NumPy when `pad`."""
    text = dict_text.encode("latin-1") if isinstance(dict_text, str) else dict_text
    len_bytes = 2 if version[0] == 1 else 4
    if pad:
        total = 6 + 2 + len_bytes + len(text) + 1
        text = text + b" " * ((64 - total % 64) % 64) + b"\n"
    out = b"\x93NUMPY" + bytes(version)
    out += struct.pack("<H" if len_bytes == 2 else "<I", len(text))
    return out + text


def npy(descr, shape, data, fortran=False, version=(1, 0)):
    dims = "(%d,)" % shape[0] if len(shape) == 1 else "(%s)" % ", ".join(str(d) for d in shape)
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, "True" if fortran else "False", dims)
    return header(d, version) + data


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def floats(n):
    """The f32/f16 values every valid float file holds: 0.5 * i - 1 in C order."""
    return [0.5 * i - 1.0 for i in range(n)]


def c_to_fortran(values, shape):
    """Column-major order of row-major `values`."""
    if len(shape) < 2:
        return list(values)
    out = [None] * len(values)
    strides_c = [numel(shape[k + 1:]) for k in range(len(shape))]
    strides_f = [numel(shape[:k]) for k in range(len(shape))]
    for i, v in enumerate(values):
        idx = [(i // strides_c[k]) % shape[k] for k in range(len(shape))]
        out[sum(idx[k] * strides_f[k] for k in range(len(shape)))] = v
    return out


def pack(fmt, values):
    return b"".join(struct.pack(fmt, v) for v in values)


def main():
    os.makedirs(OUT, exist_ok=True)
    files = {}

    # ---- valid: floats in both byte orders and both memory orders, every rank we meet ----
    for name, descr, fmt, shape, fortran in [
        ("valid_f4_1x2x3", "<f4", "<f", (1, 2, 3), False),
        ("valid_f4_be_2x3", ">f4", ">f", (2, 3), False),
        ("valid_f4_fortran_2x3", "<f4", "<f", (2, 3), True),
        ("valid_f4_fortran_be_2x3x4", ">f4", ">f", (2, 3, 4), True),
        ("valid_f4_fortran_1d_5", "<f4", "<f", (5,), True),
        ("valid_f4_nchw_1x2x4x4", "<f4", "<f", (1, 2, 4, 4), False),
        ("valid_f4_ncdhw_1x1x2x2x3", "<f4", "<f", (1, 1, 2, 2, 3), False),
        ("valid_f4_scalar", "<f4", "<f", (), False),
        ("valid_f4_empty_0x3", "<f4", "<f", (0, 3), False),
        ("valid_f4_empty_fortran_3x0", "<f4", "<f", (3, 0), True),
        ("valid_f2_3", "<f2", "<e", (3,), False),
        ("valid_f2_be_fortran_3x2", ">f2", ">e", (3, 2), True),
    ]:
        values = floats(numel(shape))
        stored = c_to_fortran(values, shape) if fortran else values
        files[name] = npy(descr, shape, pack(fmt, stored), fortran)
    # NumPy writes '<' or '>' for multi-byte types, but '=' (native order) is a valid descr too.
    files["native_eq_f4_1x3"] = npy("=f4", (1, 3), pack("=f", floats(3)))
    files["valid_f4_v2_2"] = npy("<f4", (2,), pack("<f", floats(2)), version=(2, 0))
    files["valid_f4_v3_2"] = npy("<f4", (2,), pack("<f", floats(2)), version=(3, 0))
    # Header spellings NumPy (or Python 2) wrote: list shape with L suffixes, double quotes,
    # other key order, no trailing comma, tabs, no padding.
    two = pack("<f", floats(2))
    files["valid_f4_py2_long"] = header("{'descr': '<f4', 'fortran_order': False, 'shape': [1L, 2L]}") + two
    files["valid_f4_double_quotes"] = header('{"descr": "<f4", "fortran_order": False, "shape": (1, 2)}') + two
    files["valid_f4_key_order"] = header("{'shape': (1, 2), 'fortran_order': False, 'descr': '<f4'}") + two
    files["valid_f4_tabs"] = header("{\t'descr':\t'<f4',\t'fortran_order':False,'shape':(1,2),}") + two
    files["valid_f4_unpadded"] = header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2)}", pad=False) + two
    # NaN payloads, infinities and signed zeros travel bit for bit.
    files["valid_f4_specials_6"] = npy(
        "<f4", (6,), struct.pack("<6I", 0x7FC00001, 0xFFC00000, 0x7F800000, 0xFF800000, 0x80000000, 0x7F800001)
    )
    # ---- valid index files (read_indices maps -1 / 0xFFFFFFFF to NO_INDEX) ----
    files["valid_i8_idx_2x2"] = npy("<i8", (2, 2), pack("<q", [0, -1, 5, 4294967294]))
    files["valid_i8_be_idx_3"] = npy(">i8", (3,), pack(">q", [7, -1, 0]))
    files["valid_i4_idx_3"] = npy("<i4", (3,), pack("<i", [-1, 2147483647, 3]))
    files["valid_i4_be_fortran_idx_2x2"] = npy(">i4", (2, 2), pack(">i", c_to_fortran([1, 2, 3, -1], (2, 2))), True)
    files["valid_u4_idx_3"] = npy("<u4", (3,), pack("<I", [4294967295, 1, 2]))
    files["valid_u4_be_idx_2"] = npy(">u4", (2,), pack(">I", [4294967295, 9]))
    # Decodes, but the indices are out of range (read_indices refuses them).
    files["valid_i8_out_of_range_3"] = npy("<i8", (3,), pack("<q", [0, -2, 1 << 40]))
    # An empty array whose other dims are huge: zero elements, so nothing to allocate.
    files["valid_f4_zero_huge"] = npy("<f4", (0, 18446744073709551615, 18446744073709551615), b"")

    # ---- malformed: every layer of the format ----
    good = files["valid_f4_1x2x3"]
    files["bad_empty"] = b""
    files["bad_magic_zip"] = b"PK\x03\x04" + good[4:]
    files["bad_magic_truncated"] = b"\x93NUM"
    files["bad_no_version"] = b"\x93NUMPY"
    files["bad_version_4_0"] = b"\x93NUMPY\x04\x00" + good[8:]
    files["bad_version_1_1"] = b"\x93NUMPY\x01\x01" + good[8:]
    files["bad_header_len_truncated"] = good[:9]
    files["bad_header_len_ffff"] = good[:8] + b"\xff\xff" + good[10:]
    files["bad_header_truncated"] = good[:40]
    files["bad_v2_header_len_4g"] = b"\x93NUMPY\x02\x00\xff\xff\xff\xff" + good[10:]
    files["bad_v2_header_len_past_end"] = b"\x93NUMPY\x02\x00\x00\x00\x01\x00" + good[10:]
    files["bad_v3_invalid_utf8"] = header(b"{'descr': '<f4\xff', 'fortran_order': False, 'shape': (1,), }", (3, 0)) + two[:4]
    files["bad_v3_utf8_descr"] = header("{'descr': '<f4é', 'fortran_order': False, 'shape': (1,), }".encode(), (3, 0)) + two[:4]
    files["bad_v1_latin1_descr"] = header(b"{'descr': '\xe9', 'fortran_order': False, 'shape': (1,), }") + two[:4]
    files["bad_v1_latin1_key"] = header(b"{'d\xe9scr': '<f4', 'fortran_order': False, 'shape': (1,), }") + two[:4]
    files["bad_nul_in_header"] = header(b"{'descr': '<f4',\x00 'fortran_order': False, 'shape': (1,), }") + two[:4]
    files["bad_not_a_dict"] = header("['<f4', False, (1,)]") + two[:4]
    files["bad_missing_shape"] = header("{'descr': '<f4', 'fortran_order': False}") + two
    files["bad_missing_descr"] = header("{'fortran_order': False, 'shape': (2,)}") + two
    files["bad_missing_fortran"] = header("{'descr': '<f4', 'shape': (2,)}") + two
    files["bad_extra_key"] = header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}") + two
    files["bad_duplicate_key"] = header("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}") + two
    files["bad_fortran_maybe"] = header("{'descr': '<f4', 'fortran_order': maybe, 'shape': (2,)}") + two
    files["bad_fortran_int"] = header("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}") + two
    files["bad_negative_dim"] = header("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}") + two
    files["bad_shape_int"] = header("{'descr': '<f4', 'fortran_order': False, 'shape': 2}") + two
    files["bad_shape_float"] = header("{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}") + two
    files["bad_shape_not_closed"] = header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,") + two
    files["bad_shape_mixed_brackets"] = header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,]}") + two
    files["bad_shape_double_comma"] = header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,,)}") + two
    files["bad_shape_L_only"] = header("{'descr': '<f4', 'fortran_order': False, 'shape': (L,)}") + two
    files["bad_dict_not_closed"] = header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)") + two
    files["bad_after_dict"] = header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x") + two
    files["bad_unterminated_string"] = header("{'descr: '<f4, 'fortran_order': False, 'shape': (2,)}") + two
    files["bad_structured_descr"] = header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}") + two
    files["bad_descr_escape"] = header("{'descr': '<f4\\n', 'fortran_order': False, 'shape': (2,)}") + two
    for descr in ["<f8", ">f8", "<c8", "|O", "<i2", "<u8", "|b1", "|u1", "<M8[ns]", "<U4", "|S4", "f", "",
                  "<f16", "<f3", "<q9", "<" + "f" * 40]:
        marks = {"<": "le_", ">": "be_", "|": "na_"}
        safe = "".join(marks.get(c, c if c.isalnum() else "_") for c in descr) or "none"
        files["bad_descr_" + safe] = npy(descr, (2,), pack("<d", [1.0, 2.0]))
    files["bad_65_dims"] = header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % ", ".join(["1"] * 65)) + two[:4]
    files["bad_truncated_data"] = good[:-3]
    files["bad_trailing_data"] = good + b"junk"
    files["bad_huge_1tb"] = npy("<f4", (1 << 40,), two)
    files["bad_huge_3d"] = npy("<f4", (65536, 65536, 65536), two)
    files["bad_huge_numel_overflow"] = npy("<f4", (1 << 32, 1 << 32, 1 << 32, 4), two)
    files["bad_huge_bytes_overflow"] = npy("<i8", ((1 << 62) - 1,), two)
    files["bad_huge_digits"] = header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}") + two
    files["bad_huge_fortran"] = npy("<f4", (1 << 20, 1 << 20), two, fortran=True)
    files["bad_huge_then_zero"] = npy("<f4", (1 << 63, 1 << 63, 0), b"")
    files["bad_header_only"] = npy("<f4", (4, 4), b"")

    for name, data in sorted(files.items()):
        with open(os.path.join(OUT, name + ".npy"), "wb") as f:
            f.write(data)
    print("wrote %d files to %s" % (len(files), OUT))


if __name__ == "__main__":
    main()
