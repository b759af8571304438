"""Finds and loads libpiquant with ctypes; every C signature is declared here."""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from pathlib import Path
from typing import Any

_NAMES = {"win32": "piquant.dll", "darwin": "libpiquant.dylib"}
LIBRARY_NAME = _NAMES.get(sys.platform, "libpiquant.so")

c_size = ctypes.c_size_t
c_int = ctypes.c_int
c_void_p = ctypes.c_void_p
c_char_p = ctypes.c_char_p
c_double = ctypes.c_double
c_int64 = ctypes.c_int64
c_uint64 = ctypes.c_uint64


# The structs of piquant.h; enums are C ints, data pointers c_void_p (addresses
# are passed as ints). tests/test_abi_declarations.py checks them against the header.
class MinMax(ctypes.Structure):
    """piquant_minmax_result."""

    _fields_ = [("min", c_double), ("max", c_double)]


class GroupParams(ctypes.Structure):
    """piquant_params."""

    _fields_ = [("scales", c_void_p), ("zero_points", c_void_p), ("count", c_size), ("inner", c_size), ("scale_type", c_int)]


class Call(ctypes.Structure):
    """piquant_call: one call of piquant_execute."""

    _fields_ = [
        ("op", ctypes.c_int32),
        ("float_type", ctypes.c_int32),
        ("quant_type", ctypes.c_int32),
        ("round_mode", ctypes.c_int32),
        ("reduce_op", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
        ("in_", c_void_p),  # C's `in`, a Python keyword
        ("out", c_void_p),
        ("numel", c_size),
        ("scale", c_double),
        ("zero_point", c_int64),
        ("seed", c_uint64),
        ("params", GroupParams),  # per channel or group if params.count != 0
    ]


_STRUCTS: dict[str, type[ctypes.Structure]] = {"piquant_minmax_result": MinMax, "piquant_params": GroupParams, "piquant_call": Call}


def scalar_fields(s: type[ctypes.Structure], base: int = 0) -> list[tuple[str, int, Any]]:
    """(dotted name, offset, ctypes type) of each scalar in a Structure, nested
    Structures flattened, in order."""
    fields: Any = s._fields_
    out = []
    for name, t in fields:
        offset = base + getattr(s, name).offset
        if issubclass(t, ctypes.Structure):
            out += [(f"{name}.{n}", o, u) for n, o, u in scalar_fields(t, offset)]
        else:
            out.append((name, offset, t))
    return out


def packer(s: type[ctypes.Structure], zeroed: str | None = None) -> struct.Struct:
    """A struct.Struct with the layout of a Structure (native alignment, as C
    lays it out; nested Structures flattened: their fields are packed in
    place, one value each): pack_into a buffer costs less than setting the
    fields one by one (benchmarks/call_costs.py). The fields of the nested
    Structure named ``zeroed`` are left out and packed as zero bytes (each
    value passed costs)."""
    fmt = "@"
    for name, offset, t in scalar_fields(s):
        pad = offset - struct.calcsize(fmt)  # what C puts before the field beyond its alignment
        if zeroed is not None and name.startswith(zeroed + "."):
            fmt += f"{pad + ctypes.sizeof(t)}x"
        else:
            fmt += f"{pad}x{t._type_}" if pad else t._type_
    return struct.Struct(f"{fmt}{ctypes.sizeof(s) - struct.calcsize(fmt)}x")  # with the trailing padding


_SIGNATURES = {
    "piquant_abi_version": (ctypes.c_uint32, []),
    "piquant_version": (c_char_p, []),
    "piquant_last_error": (c_char_p, []),
    "piquant_isa_name": (c_char_p, [c_int]),
    "piquant_isa_mask": (ctypes.c_uint32, []),
    "piquant_best_isa": (c_int, []),
    "piquant_default_num_threads": (c_size, []),
    "piquant_context_create": (c_int, [c_size, c_char_p, ctypes.POINTER(c_void_p)]),
    "piquant_context_destroy": (None, [c_void_p]),
    "piquant_context_num_threads": (c_size, [c_void_p]),
    "piquant_context_isa": (c_int, [c_void_p]),
    "piquant_quantize": (c_int, [c_void_p, c_void_p, c_int, c_void_p, c_int, c_size, c_double, c_int64, c_int, c_uint64]),
    "piquant_dequantize": (c_int, [c_void_p, c_void_p, c_int, c_void_p, c_int, c_size, c_double, c_int64, c_int]),
    "piquant_fake_quantize": (
        c_int,
        [c_void_p, c_void_p, c_int, c_void_p, c_size, c_int, c_double, c_int64, c_int, c_uint64, c_int],
    ),
    "piquant_quantize_grouped": (c_int, [c_void_p, c_void_p, c_int, c_void_p, c_int, c_size, ctypes.POINTER(GroupParams), c_int, c_uint64]),
    "piquant_dequantize_grouped": (c_int, [c_void_p, c_void_p, c_int, c_void_p, c_int, c_size, ctypes.POINTER(GroupParams), c_int]),
    "piquant_fake_quantize_grouped": (
        c_int,
        [c_void_p, c_void_p, c_int, c_void_p, c_size, c_int, ctypes.POINTER(GroupParams), c_int, c_uint64, c_int],
    ),
    "piquant_compute_params_grouped": (
        c_int,
        [c_void_p, c_void_p, c_int, c_size, c_int, c_int, c_size, c_size, c_void_p, c_int, c_void_p],
    ),
    "piquant_gguf_block_bytes": (c_size, [c_int]),
    "piquant_gguf_quantize": (c_int, [c_void_p, c_void_p, c_int, c_void_p, c_int, c_size]),
    "piquant_gguf_dequantize": (c_int, [c_void_p, c_void_p, c_int, c_void_p, c_int, c_size]),
    "piquant_mx_quantize": (
        c_int,
        [c_void_p, c_void_p, c_int, c_void_p, c_void_p, c_size, c_size, c_int, c_size, c_int, c_int, c_uint64, c_void_p],
    ),
    "piquant_mx_dequantize": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p, c_int, c_size, c_size, c_int, c_size, c_void_p]),
    "piquant_execute": (c_int, [c_void_p, c_void_p]),  # a Call, as the bytes packer(Call) packs
    "piquant_stream": (c_int, [c_void_p, c_void_p, c_void_p, c_size]),
    "piquant_minmax": (c_int, [c_void_p, c_void_p, c_int, c_size, ctypes.POINTER(MinMax)]),
    "piquant_compute_params": (
        c_int,
        [c_void_p, c_void_p, c_int, c_size, c_int, c_int, ctypes.POINTER(c_double), ctypes.POINTER(c_int64)],
    ),
}

ABI_VERSION = 4


def explicit_path() -> Path | None:
    """PIQUANT_LIBRARY, unless unset or blank (the rule of every PIQUANT_* variable)."""
    value = os.environ.get("PIQUANT_LIBRARY", "").strip()
    return Path(value) if value else None


def candidates() -> list[Path]:
    """Where the library may be: PIQUANT_LIBRARY if set (then only there:
    e.g. a ReleaseSafe build for the tests), else inside the installed
    package, then the in-tree development build (``python -m ziglang build``)."""
    explicit = explicit_path()
    if explicit:
        return [explicit]
    here = Path(__file__).resolve().parent
    build_dir = "bin" if sys.platform == "win32" else "lib"  # where zig build installs a DLL
    return [here / LIBRARY_NAME, here.parent / "zig-out" / build_dir / LIBRARY_NAME]


def load() -> tuple[ctypes.CDLL, Path]:
    """The loaded library and its path; OSError if none loads (naming
    PIQUANT_LIBRARY when it chose the file)."""
    errors = []
    for path in candidates():
        if not path.exists():
            continue
        try:
            lib = ctypes.CDLL(os.fspath(path))
        except OSError as e:
            errors.append(f"{path}: {e}")
            continue
        missing = [name for name in _SIGNATURES if not hasattr(lib, name)]
        if missing:
            errors.append(f"{path}: not a piquant library (no {missing[0]})")
            continue
        for name, (res, args) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
        if lib.piquant_abi_version() != ABI_VERSION:
            errors.append(f"{path}: ABI version {lib.piquant_abi_version()}, expected {ABI_VERSION}")
            continue
        return lib, path
    tried = "; ".join(errors) or "not found in " + ", ".join(map(str, candidates()))
    source = "PIQUANT_LIBRARY" if explicit_path() else "libpiquant"
    raise OSError(f"{source} could not be loaded ({tried})")


def holding_gil(lib: ctypes.CDLL, name: str) -> Any:
    """``lib``'s function ``name``, declared as above, called without
    releasing the GIL (ctypes.PyDLL; the same loaded library): releasing and
    retaking it costs ~1.6k instructions (callgrind), more than the work of a
    small call, and holding it for a short one delays no other thread long."""
    fn = getattr(ctypes.PyDLL(lib._name), name)
    fn.restype, fn.argtypes = _SIGNATURES[name]
    return fn


# Status codes of zig/include/piquant.h → Python exceptions.
_EXCEPTIONS: dict[int, type[Exception]] = {
    1: ValueError,
    2: TypeError,
    3: ValueError,
    4: ValueError,
    5: MemoryError,
    6: NotImplementedError,
    7: RuntimeError,  # the context was closed
}


# The C names of per-set parameters, as the Python arguments are called.
_ARG_NAMES = (("params.scales[", "scale["), ("params.zero_points[", "zero_point["))


def raise_status(lib: ctypes.CDLL, status: int) -> None:
    msg = lib.piquant_last_error().decode("utf-8", "replace")
    for c_name, py_name in _ARG_NAMES:
        if msg.startswith(c_name):
            msg = py_name + msg[len(c_name) :]
    raise _EXCEPTIONS.get(status, RuntimeError)(msg)
