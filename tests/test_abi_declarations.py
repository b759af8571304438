"""The ctypes declarations of piquant/_native.py against zig/include/piquant.h:
every function (name, return type, argument types in order) and every struct
(field names, types, order; sizes and offsets as a C compiler lays them out).

Types are compared as this platform's ABI sees them (ctypes.c_size_t is
c_uint64 on LP64). A pointer argument may be declared c_void_p (addresses
passed as ints) or a POINTER to the matching type; `const char *` is c_char_p.
"""

from __future__ import annotations

import ctypes
import functools
import keyword
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from piquant import _native

HEADER = Path(__file__).resolve().parents[1] / "zig" / "include" / "piquant.h"

SCALARS: dict[str, Any] = {
    "void": None,
    "int": ctypes.c_int,
    "double": ctypes.c_double,
    "size_t": ctypes.c_size_t,
    "int32_t": ctypes.c_int32,
    "uint32_t": ctypes.c_uint32,
    "int64_t": ctypes.c_int64,
    "uint64_t": ctypes.c_uint64,
}


class Header:
    """The declarations of a C header, parsed as far as piquant.h needs."""

    def __init__(self, text: str) -> None:
        text = re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)
        text = re.sub(r"^\s*#[^\n]*", " ", text, flags=re.M)
        self.enums = set(re.findall(r"typedef\s+enum\s+\w+\s*\{[^}]*\}\s*(\w+)\s*;", text))
        self.opaque = set(re.findall(r"typedef\s+struct\s+\w+\s+(\w+)\s*;", text))
        self.structs: dict[str, list[tuple[str, str]]] = {}
        for body, name in re.findall(r"typedef\s+struct\s+\w+\s*\{([^}]*)\}\s*(\w+)\s*;", text):
            self.structs[name] = [self._decl(d) for d in body.split(";") if d.strip()]
        rest = re.sub(r"typedef[^;{]*(\{[^}]*\})?[^;]*;", " ", text)
        rest = re.sub(r'extern\s+"C"\s*\{|\}', " ", rest)
        self.functions: dict[str, tuple[str, list[str]]] = {}
        for ret, name, args in re.findall(r"([\w\s\*]+?)\s*\b(\w+)\s*\(([^)]*)\)\s*;", rest):
            params = [] if args.strip() in ("", "void") else [self._decl(a)[1] for a in args.split(",")]
            self.functions[name] = (" ".join(ret.split()), params)

    @staticmethod
    def _decl(d: str) -> tuple[str, str]:
        """(name, type) of a declaration such as `const void *in`."""
        d = " ".join(d.replace("*", " * ").split())
        m = re.fullmatch(r"(.*?)\s*(\w+)", d)
        assert m, d
        return m.group(2), m.group(1).replace(" *", "*")


def mismatch(h: Header, c_type: str, declared: Any, structs: dict[str, Any], result: bool = False) -> str | None:
    """Why the ctypes type `declared` does not pass or return the C type, or None."""
    base = c_type.replace("const ", "").strip()
    stars = base.count("*")
    base = base.replace("*", "").strip()
    if stars == 0:
        want = ctypes.c_int if base in h.enums else SCALARS.get(base, structs.get(base, "?"))
        ok = declared is want
    elif base == "char" and stars == 1:
        want, ok = ctypes.c_char_p, declared is ctypes.c_char_p
    else:
        # A pointer: c_void_p (an address), or a POINTER to what it points to.
        pointee = base + "*" * (stars - 1)
        want = "c_void_p or POINTER(" + pointee + ")"
        ok = declared is ctypes.c_void_p and not result
        if not ok and isinstance(declared, type) and issubclass(declared, ctypes._Pointer):
            if stars == 1 and base in h.opaque:
                ok = False  # an opaque handle is a c_void_p
            else:
                ok = mismatch(h, pointee, declared._type_, structs) is None
    if ok:
        return None
    return f"{c_type}: declared {getattr(declared, '__name__', declared)}, expected {getattr(want, '__name__', want)}"


def check(header: Header, signatures: dict[str, tuple[Any, list[Any]]], structs: dict[str, type]) -> list[str]:
    """Every disagreement between the header and the declarations."""
    problems = [f"{name}: in piquant.h, not declared in _native._SIGNATURES" for name in sorted(header.functions.keys() - signatures.keys())]
    problems += [f"{name}: declared in _native._SIGNATURES, not in piquant.h" for name in sorted(signatures.keys() - header.functions.keys())]
    for name in sorted(header.functions.keys() & signatures.keys()):
        (c_ret, c_args), (res, args) = header.functions[name], signatures[name]
        if (why := mismatch(header, c_ret, res, structs, result=True)) is not None:
            problems.append(f"{name} returns {why}")
        if len(c_args) != len(args):
            problems.append(f"{name}: {len(c_args)} arguments in piquant.h, {len(args)} declared")
            continue
        for i, (c_arg, arg) in enumerate(zip(c_args, args)):
            if (why := mismatch(header, c_arg, arg, structs)) is not None:
                problems.append(f"{name} argument {i}: {why}")
    for name in sorted(header.structs.keys() ^ structs.keys()):
        where = "piquant.h" if name in header.structs else "_native._STRUCTS"
        problems.append(f"struct {name}: only in {where}")
    for name in sorted(header.structs.keys() & structs.keys()):
        c_fields = header.structs[name]
        fields = structs[name]._fields_
        c_names = [f + "_" if keyword.iskeyword(f) else f for f, _ in c_fields]
        if c_names != [f[0] for f in fields]:
            problems.append(f"struct {name}: fields {c_names} in piquant.h, {[f[0] for f in fields]} declared")
            continue
        for (f, c_type), (_, t) in zip(c_fields, fields):
            if (why := mismatch(header, c_type, t, structs)) is not None:
                problems.append(f"struct {name}.{f}: {why}")
    return problems


HEADER_DECLS = Header(HEADER.read_text())


def test_header_is_parsed():
    """The parser sees what is there (a parser that found nothing would agree with anything)."""
    h = HEADER_DECLS
    assert len(h.functions) >= 25 and {"piquant_execute", "piquant_quantize", "piquant_context_destroy"} <= h.functions.keys()
    assert h.functions["piquant_quantize"] == (
        "int",
        ["piquant_context*", "const void*", "piquant_dtype", "void*", "piquant_dtype", "size_t", "double", "int64_t", "piquant_round_mode", "uint64_t"],
    )
    assert h.functions["piquant_context_create"] == ("int", ["size_t", "const char*", "piquant_context**"])
    assert h.structs["piquant_call"][6] == ("in", "const void*") and h.structs["piquant_call"][12] == ("params", "piquant_params")
    assert {"piquant_dtype", "piquant_status", "piquant_op"} <= h.enums and "piquant_context" in h.opaque


def test_declarations_match_the_header():
    assert check(HEADER_DECLS, _native._SIGNATURES, _native._STRUCTS) == []


def test_abi_version_matches_the_header():
    m = re.search(r"#define\s+PIQUANT_ABI_VERSION\s+(\d+)", HEADER.read_text())
    assert m and int(m.group(1)) == _native.ABI_VERSION


def _with(sigs: dict, name: str, ret: Any = None, args: list | None = None) -> dict:
    changed = dict(sigs)
    r, a = changed[name]
    changed[name] = (r if ret is None else ret, a if args is None else args)
    return changed


def test_the_check_finds_wrong_declarations():
    """Each kind of mistake is reported (the check can fail)."""
    sigs, structs = _native._SIGNATURES, _native._STRUCTS
    q = sigs["piquant_quantize"][1]
    swapped = q[:6] + [q[7], q[6]] + q[8:]  # scale and zero_point exchanged
    cases = {
        "piquant_quantize argument 6": _with(sigs, "piquant_quantize", args=swapped),
        "piquant_quantize: 10 arguments in piquant.h, 9 declared": _with(sigs, "piquant_quantize", args=q[:-1]),
        "piquant_version returns": _with(sigs, "piquant_version", ret=ctypes.c_void_p),
        "piquant_context_destroy returns": _with(sigs, "piquant_context_destroy", ret=ctypes.c_int),
        "piquant_minmax argument 4": _with(sigs, "piquant_minmax", args=sigs["piquant_minmax"][1][:4] + [ctypes.POINTER(_native.GroupParams)]),
        "piquant_context_create argument 2": _with(sigs, "piquant_context_create", args=[ctypes.c_size_t, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]),
        "piquant_stream: in piquant.h, not declared": {k: v for k, v in sigs.items() if k != "piquant_stream"},
        "piquant_nonexistent: declared": {**sigs, "piquant_nonexistent": (ctypes.c_int, [])},
    }
    for expected, wrong in cases.items():
        problems = check(HEADER_DECLS, wrong, structs)
        assert any(p.startswith(expected) for p in problems), (expected, problems)

    class Reordered(ctypes.Structure):
        _fields_ = [f for f in _native.Call._fields_ if f[0] != "scale"] + [("scale", ctypes.c_double)]

    class Narrow(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32 if n == "count" else t) for n, t in _native.GroupParams._fields_]

    assert any("struct piquant_call: fields" in p for p in check(HEADER_DECLS, sigs, {**structs, "piquant_call": Reordered}))
    assert any(p.startswith("struct piquant_params.count") for p in check(HEADER_DECLS, sigs, {**structs, "piquant_params": Narrow}))
    assert any("only in piquant.h" in p for p in check(HEADER_DECLS, sigs, {k: v for k, v in structs.items() if k != "piquant_call"}))


def _c_layout(tmp_path: Path) -> dict[str, int]:
    """sizeof and offsetof of every struct and field, and sizeof of every
    enum, as the C compiler lays them out: {"struct", "struct.field", "enum": bytes}."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        if os.environ.get("PIQUANT_REQUIRE_TOOLS"):
            pytest.fail("a C compiler (cc) is required (PIQUANT_REQUIRE_TOOLS is set)")
        pytest.skip("no C compiler (cc) to lay out piquant.h's structs")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "piquant.h"', "int main(void) {"]
    for name, fields in HEADER_DECLS.structs.items():
        lines.append(f'    printf("{name} %zu\\n", sizeof({name}));')
        lines += [f'    printf("{name}.{f} %zu\\n", offsetof({name}, {f}));' for f, _ in fields]
    lines += [f'    printf("{name} %zu\\n", sizeof({name}));' for name in sorted(HEADER_DECLS.enums)]
    lines += ["    return 0;", "}"]
    src, exe = tmp_path / "layout.c", tmp_path / "layout"
    src.write_text("\n".join(lines) + "\n")
    subprocess.run([cc, "-std=c99", "-I", str(HEADER.parent), str(src), "-o", str(exe)], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_struct_layout_matches_the_c_compiler(tmp_path):
    layout = _c_layout(tmp_path)
    for name, fields in HEADER_DECLS.structs.items():
        s = _native._STRUCTS[name]
        assert ctypes.sizeof(s) == layout[name], name
        for f, _ in fields:
            attr = f + "_" if keyword.iskeyword(f) else f
            assert getattr(s, attr).offset == layout[f"{name}.{f}"], f"{name}.{f}"
    for name in HEADER_DECLS.enums:  # declared as c_int
        assert layout[name] == ctypes.sizeof(ctypes.c_int), name

    class Packed(ctypes.Structure):  # a wrong layout is seen
        _pack_ = 1
        _fields_ = _native.GroupParams._fields_

    assert ctypes.sizeof(Packed) != layout["piquant_params"]


def test_packer_lays_out_what_the_structure_reads(tmp_path):
    """_native.packer(S) packs the bytes S reads field by field (those of a
    nested struct in place), at the size C gives S."""
    layout = _c_layout(tmp_path)
    for name, s in _native._STRUCTS.items():
        p = _native.packer(s)
        assert p.size == ctypes.sizeof(s) == layout[name], name
        fields = _native.scalar_fields(s)
        values = [(k + 1) * 1.5 if t is ctypes.c_double else (k + 1) * 0x0101 for k, (_, _, t) in enumerate(fields)]
        buf = bytearray(p.size)
        p.pack_into(buf, 0, *values)
        view = s.from_buffer(buf)
        assert [functools.reduce(getattr, f.split("."), view) for f, _, _ in fields] == values, name
    assert [f for f, _, _ in _native.scalar_fields(_native.Call)][-2:] == ["params.inner", "params.scale_type"]


def test_packer_zeroes_the_nested_struct_it_leaves_out():
    """packer(Call, zeroed="params") (the per-tensor call) packs the other
    fields where Call reads them and zero bytes over params, whatever was
    in the buffer before."""
    full, per_tensor = _native.packer(_native.Call), _native.packer(_native.Call, zeroed="params")
    assert per_tensor.size == full.size == ctypes.sizeof(_native.Call)
    fields = _native.scalar_fields(_native.Call)
    kept = [f for f, _, _ in fields if not f.startswith("params.")]
    values = [(k + 1) * 1.5 if t is ctypes.c_double else (k + 1) * 0x0101 for k, (f, _, t) in enumerate(fields) if f in kept]
    buf = bytearray(b"\xff" * per_tensor.size)
    per_tensor.pack_into(buf, 0, *values)
    view = _native.Call.from_buffer(buf)
    got = {f: functools.reduce(getattr, f.split("."), view) for f, _, _ in fields}
    assert [got[f] for f in kept] == values
    assert all(got[f] in (0, None) for f, _, _ in fields if f.startswith("params."))
    assert per_tensor.pack(*values) == full.pack(*[dict(zip(kept, values)).get(f, 0) for f, _, _ in fields])
