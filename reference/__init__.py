"""piquant_reference: the specification of piquant's operations in plain numpy.

Every native kernel must produce bit-identical results to these functions
(docs/semantics.md states the same rules in prose). It is also piquant's
fallback backend when the native library cannot be loaded.

Float inputs are numpy arrays of float32, or of ``ml_dtypes.bfloat16``; a
bfloat16 array may also be given as its raw ``uint16`` bits with
``float_dtype="bfloat16"``. Quantized 4-bit data is a flat ``uint8`` array of
packed bytes, first element in the low nibble.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "QUANTIZED_DTYPES",
    "FLOAT_DTYPES",
    "qrange",
    "quantize",
    "dequantize",
    "compute_params",
    "minmax",
    "pack_nibbles",
    "unpack_nibbles",
    "bf16_bits_to_f32",
    "f32_to_bf16_bits",
]

FLOAT_DTYPES = ("float32", "bfloat16")
_RANGES = {"uint4": (0, 15), "int4": (-8, 7), "uint8": (0, 255), "int8": (-128, 127)}
QUANTIZED_DTYPES = tuple(_RANGES)
_STORAGE = {"uint8": np.uint8, "int8": np.int8, "uint4": np.uint8, "int4": np.uint8}


class Params(NamedTuple):
    scale: np.float32
    zero_point: int


def qrange(dtype: str) -> tuple[int, int]:
    """(qmin, qmax) of a quantized dtype."""
    try:
        return _RANGES[dtype]
    except KeyError:
        raise ValueError(f"dtype: expected one of {QUANTIZED_DTYPES}, got {dtype!r}") from None


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) to float32, exactly."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


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
    if x.dtype == np.float32:
        return "float32"
    if x.dtype.name == "bfloat16":
        return "bfloat16"
    raise TypeError(f"x: expected a float32 or bfloat16 array, got dtype {x.dtype}")


def _to_f32(x: np.ndarray, float_dtype: str | None = None) -> np.ndarray:
    x = np.asarray(x)
    if _float_kind(x, float_dtype) == "bfloat16":
        return bf16_bits_to_f32(x.view(np.uint16))
    return x


def _check_params(dtype: str, scale, zero_point: int) -> np.float32:
    qmin, qmax = qrange(dtype)
    with np.errstate(over="ignore", divide="ignore"):
        s = np.float32(scale)
        inv = np.float32(1) / s
    if not (np.isfinite(s) and s > 0 and np.isfinite(inv)):
        raise ValueError(f"scale: expected a finite float32 > 0 with a finite reciprocal, got {scale!r}")
    if not qmin <= zero_point <= qmax:
        raise ValueError(f"zero_point: expected an integer in [{qmin}, {qmax}] for {dtype}, got {zero_point!r}")
    return s


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """Pack 4-bit values two per byte, element 2i in the low nibble of byte i,
    2i+1 in the high nibble; an odd count leaves the last high nibble 0."""
    q = (np.asarray(q).ravel().astype(np.int64) & 0xF).astype(np.uint8)
    if q.size % 2:
        q = np.concatenate([q, np.zeros(1, np.uint8)])
    return q[0::2] | (q[1::2] << np.uint8(4))


def unpack_nibbles(packed: np.ndarray, n: int, signed: bool) -> np.ndarray:
    """The first n 4-bit values of a packed array, as int32."""
    b = np.asarray(packed, dtype=np.uint8).ravel()
    out = np.empty(2 * b.size, dtype=np.int32)
    out[0::2] = b & 0xF
    out[1::2] = b >> 4
    out = out[:n]
    if signed:
        out = np.where(out >= 8, out - 16, out)
    return out


def quantize(x: np.ndarray, dtype: str, scale, zero_point: int, *, float_dtype: str | None = None) -> np.ndarray:
    """q = clamp(round_half_even(f32(x) * inv_scale) + zero_point, qmin, qmax)
    with inv_scale = float32(1 / float32(scale)) and the product in float32;
    NaN → zero_point. 8-bit results keep x's shape; 4-bit results are packed
    flat."""
    s = _check_params(dtype, scale, zero_point)
    inv = np.float32(1) / s
    qmin, qmax = qrange(dtype)
    xf = _to_f32(x, float_dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        r = np.rint(xf * inv)  # rint: half to even, in float32
    # Clamp before adding the zero point, so that no value leaves the integers.
    r = np.clip(r, np.float32(qmin - zero_point), np.float32(qmax - zero_point))
    r = np.where(np.isnan(r), np.float32(0), r)
    q = r.astype(np.int64) + zero_point
    if dtype in ("uint4", "int4"):
        return pack_nibbles(q)
    return q.astype(_STORAGE[dtype]).reshape(np.shape(x))


def dequantize(
    q: np.ndarray,
    dtype: str,
    scale,
    zero_point: int,
    *,
    numel: int | None = None,
    out_dtype: str = "float32",
    out: np.ndarray | None = None,
    reduce: str = "set",
) -> np.ndarray:
    """x = f32(q - zero_point) * scale in float32, rounded to out_dtype (set),
    or out = round(f32(out) + x) (add). bfloat16 results are uint16 bits.
    ``numel`` is the element count of packed 4-bit input (default: all)."""
    s = _check_params(dtype, scale, zero_point)
    if out_dtype not in FLOAT_DTYPES:
        raise ValueError(f"out_dtype: expected one of {FLOAT_DTYPES}, got {out_dtype!r}")
    if reduce not in ("set", "add"):
        raise ValueError(f"reduce: expected 'set' or 'add', got {reduce!r}")
    q = np.asarray(q)
    if dtype in ("uint4", "int4"):
        n = 2 * q.size if numel is None else numel
        v = unpack_nibbles(q, n, signed=dtype == "int4")
    else:
        v = q.ravel().astype(np.int32)
    with np.errstate(over="ignore", invalid="ignore"):
        x = (v - np.int32(zero_point)).astype(np.float32) * s
        if reduce == "add":
            if out is None:
                raise ValueError("out: reduce='add' needs the array to add into")
            acc = out.ravel() if out_dtype == "float32" else bf16_bits_to_f32(out.view(np.uint16).ravel())
            x = acc + x
    res = x if out_dtype == "float32" else f32_to_bf16_bits(x)
    if out is not None:
        out.reshape(-1)[...] = res.view(out.dtype) if out_dtype == "bfloat16" else res
        return out
    return res


def minmax(x: np.ndarray, *, float_dtype: str | None = None) -> tuple[np.float32, np.float32]:
    """Smallest and largest non-NaN value; (+inf, -inf) if there is none."""
    xf = _to_f32(x, float_dtype).ravel()
    xf = xf[~np.isnan(xf)]
    if xf.size == 0:
        return np.float32(np.inf), np.float32(-np.inf)
    return xf.min(), xf.max()


def compute_params(x: np.ndarray, dtype: str, symmetric: bool = False, *, float_dtype: str | None = None) -> Params:
    """scale and zero_point as torch's MinMaxObserver computes them, all in
    float32: the range [lo, hi] = [min(min(x), 0), max(max(x), 0)] ignoring
    NaN (an input with no non-NaN value has lo = hi = 0);
    affine: scale = (hi - lo) / (qmax - qmin), zero_point = clamp(qmin - round_half_even(lo / scale));
    symmetric: scale = max(-lo, hi) / ((qmax - qmin) / 2), zero_point = 0 for signed
    types and (qmin + qmax + 1) // 2 for unsigned ones; scale is at least
    float32 eps. An infinite value, or a range whose width overflows, raises."""
    qmin, qmax = qrange(dtype)
    mn, mx = minmax(x, float_dtype=float_dtype)
    if mn == -np.inf or mx == np.inf:
        raise ValueError("x: contains an infinite value; parameters need a finite range")
    if mn > mx:
        mn = mx = np.float32(0)
    lo, hi = min(mn, np.float32(0)), max(mx, np.float32(0))
    eps = np.finfo(np.float32).eps
    with np.errstate(over="ignore"):
        if symmetric:
            scale = max(max(-lo, hi) / np.float32((qmax - qmin) / 2), eps)
            zp = 0 if qmin < 0 else (qmin + qmax + 1) // 2
        else:
            scale = max((hi - lo) / np.float32(qmax - qmin), eps)
            zp = None
    if not np.isfinite(scale):
        raise ValueError("x: its range (max - min) overflows float32")
    if zp is None:
        zp = int(np.clip(qmin - int(np.rint(lo / scale)), qmin, qmax))
    return Params(np.float32(scale), zp)
