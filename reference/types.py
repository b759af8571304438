"""docs/semantics.md, *Types*: the quantized and float types, the packing of
2- and 4-bit types, and widening to / narrowing from the compute type."""

from __future__ import annotations

import numpy as np

from . import float8

FLOAT_DTYPES = ("float32", "bfloat16", "float16", "float64")
_BITS = {
    "uint2": 2, "int2": 2, "uint4": 4, "int4": 4, "uint8": 8, "int8": 8,
    "uint16": 16, "int16": 16, "uint32": 32, "int32": 32, "uint64": 64, "int64": 64,
    "float8_e4m3fn": 8, "float8_e5m2": 8,
}  # fmt: skip
QUANTIZED_DTYPES = tuple(_BITS)
_M64 = (1 << 64) - 1
_FLOAT8 = float8.FORMATS


def bits(dtype: str) -> int:
    try:
        return _BITS[dtype]
    except KeyError:
        raise ValueError(f"dtype: expected one of {QUANTIZED_DTYPES}, got {dtype!r}") from None


def qrange(dtype: str) -> tuple[int, int]:
    """(qmin, qmax) of a quantized dtype; FP8 types have none, and (0, 0)
    holds their zero point to 0."""
    b = bits(dtype)
    if dtype in _FLOAT8:
        return 0, 0
    if dtype.startswith("u"):
        return 0, (1 << b) - 1
    return -(1 << (b - 1)), (1 << (b - 1)) - 1


def storage_dtype(dtype: str) -> np.dtype:
    """numpy dtype of the stored data (uint8 bytes for packed types)."""
    if dtype in _FLOAT8:
        return _FLOAT8[dtype].storage
    return np.dtype(np.uint8) if bits(dtype) < 8 else np.dtype(dtype)


def compute_dtype(float_dtype: str) -> type:
    """Arithmetic is done in float64 for float64 data, else in float32."""
    return np.float64 if float_dtype == "float64" else np.float32


# ---------------------------------------------------------------- packing


def pack_bits(q: np.ndarray, nbits: int) -> np.ndarray:
    """Pack nbits-wide values (2 or 4), 8/nbits per byte: element per·i + k
    goes to bits nbits·k … of byte i; unused fields of the last byte are 0."""
    per = 8 // nbits
    v = (np.asarray(q).reshape(-1).astype(np.int64) & ((1 << nbits) - 1)).astype(np.uint8)
    v = np.concatenate([v, np.zeros(-v.size % per, np.uint8)]).reshape(-1, per)
    out = np.zeros(v.shape[0], np.uint8)
    for k in range(per):
        out |= v[:, k] << np.uint8(nbits * k)
    return out


def unpack_bits(packed: np.ndarray, n: int, nbits: int, signed: bool) -> np.ndarray:
    """The first n packed values, as int64."""
    per = 8 // nbits
    b = np.asarray(packed, dtype=np.uint8).reshape(-1)
    fields = [(b >> np.uint8(nbits * k)) & np.uint8((1 << nbits) - 1) for k in range(per)]
    out = np.stack(fields, axis=1).reshape(-1)[:n].astype(np.int64)
    if signed:
        out = np.where(out >= 1 << (nbits - 1), out - (1 << nbits), out)
    return out


# ---------------------------------------------------------------- widening and narrowing


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) to float32, exactly."""
    return (np.asarray(b).astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 to bfloat16 bit patterns: round to nearest, ties to even; a NaN
    keeps its sign and top 7 payload bits and is made quiet (bit 6 set)."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    quiet = (b >> np.uint32(16)) | np.uint32(0x40)
    return np.where(np.isnan(x), quiet, rounded).astype(np.uint16)


def _float_kind(x: np.ndarray, float_dtype: str | None) -> str:
    if float_dtype is not None:
        if float_dtype not in FLOAT_DTYPES:
            raise ValueError(f"float_dtype: expected one of {FLOAT_DTYPES}, got {float_dtype!r}")
        return float_dtype
    name = x.dtype.name
    if name in FLOAT_DTYPES:
        return name
    raise TypeError(f"x: expected a float32, float64, float16 or bfloat16 array, got dtype {x.dtype}")


def _to_compute(x: np.ndarray, kind: str) -> np.ndarray:
    """Float data widened (exactly) to its compute type, flat."""
    x = np.asarray(x).reshape(-1)
    if kind == "bfloat16":
        return bf16_bits_to_f32(x.view(np.uint16))
    if kind == "float16":
        return x.view(np.float16).astype(np.float32)
    return x.view(compute_dtype(kind))


def _from_compute(v: np.ndarray, kind: str) -> np.ndarray:
    """Compute-type values rounded (ties to even) to the stored float type
    (bfloat16 as uint16 bits)."""
    if kind == "bfloat16":
        return f32_to_bf16_bits(v)
    if kind == "float16":
        with np.errstate(over="ignore"):
            return v.astype(np.float16)  # IEEE conversion: ties to even; NaN stays quiet NaN
    return v


def _nearest_float(v: int, c: type) -> np.floating:
    """c(v): the integer v rounded to the nearest float of type c, ties to even."""
    mant = np.finfo(c).nmant + 1
    a = abs(v)
    if a.bit_length() > mant:
        shift = a.bit_length() - mant
        a, rem = divmod(a, 1 << shift)
        half = 1 << (shift - 1)
        a = (a + (rem > half or (rem == half and a & 1))) << shift
    return c(-a if v < 0 else a)  # a has at most `mant` significant bits: exact


def _float_bound(v: int, c: type, up: bool) -> np.floating:
    """The smallest float of type c ≥ v (up) or the largest ≤ v."""
    f = _nearest_float(v, c)
    if up and int(f) < v:
        f = np.nextafter(f, c(np.inf))
    if not up and int(f) > v:
        f = np.nextafter(f, c(-np.inf))
    return f
