"""docs/semantics.md, *GGUF block formats (llama.cpp)*: Q8_0, Q4_0, Q4_1,
Q5_0, Q5_1 and MXFP4 (blocks of 32; the K-quants are ``gguf_kquants``), which the section specifies (ggml-quants.c's formulas, and what they leave
open: NaN, infinities, signed zeros)."""

from __future__ import annotations

import numpy as np

BLOCK = 32
FORMATS = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "MXFP4": 17}  # bytes per block
FP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)  # E2M1 values, doubled


def _blocks(x: np.ndarray, block: int = BLOCK) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.name == "bfloat16":
        x = (x.view(np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)
    with np.errstate(over="ignore"):
        x = x.astype(np.float32).reshape(-1)  # float64: rounded to nearest
    if x.size % block:
        raise ValueError(f"x: {x.size} elements is not a multiple of the block size {block}")
    return x.reshape(-1, block)


def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def _nibbles(q: np.ndarray) -> np.ndarray:
    return (q[:, :16] | (q[:, 16:] << np.uint8(4))).astype(np.uint8)


def _fifth_bits(q: np.ndarray) -> np.ndarray:
    """Bit 4 of code i as bit i of a little-endian uint32."""
    bits = (q >> np.uint8(4)).astype(np.uint32) << np.arange(BLOCK, dtype=np.uint32)
    return np.bitwise_or.reduce(bits, axis=1, keepdims=True).astype("<u4").view(np.uint8)


def _codes(w: np.ndarray, top: int = 15) -> np.ndarray:
    """clip(trunc(w), 0, top) for finite w, 0 otherwise."""
    with np.errstate(invalid="ignore"):
        c = np.clip(np.trunc(np.maximum(w, np.float32(0))), 0, top)
    return np.where(np.isfinite(w), c, 0).astype(np.uint8)


def _first_nan(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which blocks hold a NaN, and each block's first NaN (0 where none)."""
    nan = np.isnan(b)
    return nan.any(axis=1, keepdims=True), np.take_along_axis(b, nan.argmax(axis=1)[:, None], axis=1)


def _signed_zero(v: np.ndarray, b: np.ndarray, negative: bool) -> np.ndarray:
    """A zero max/min given its sign by the rule of the spec (IEEE 754-2019 maximum/minimum)."""
    holds = (np.signbit(b) == negative) & (b == 0)
    zero = np.where(holds.any(axis=1, keepdims=True), np.float32(-0.0 if negative else 0.0), np.float32(0.0 if negative else -0.0))
    return np.where(v == 0, zero, v).astype(np.float32)


def _e8m0_half(e: np.ndarray) -> np.ndarray:
    """2^(e - 128) as float32, the two smallest subnormal."""
    e = e.astype(np.uint32)
    return np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23)).view(np.float32)


def _mxfp4_exponent(amax: np.ndarray) -> np.ndarray:
    """uint8(floor(log2(amax)) - 2 + 127) for amax > 0, else 0: log2 rounded
    to float32, the cast the low byte of an int32 truncation (0 beyond int32)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.floor(np.log2(amax.astype(np.float64)).astype(np.float32)) - np.float32(2) + np.float32(127)
        t = np.where((amax > 0) & (np.abs(t) < 2.0**31), t, 0)
    return (t.astype(np.int64) & 0xFF).astype(np.uint8)


def quantize(x: np.ndarray, fmt: str) -> np.ndarray:
    """The GGUF bytes of x (a multiple of 32 elements), shape (blocks, bytes per block)."""
    b = _blocks(x)
    has_nan, first_nan = _first_nan(b)
    with np.errstate(invalid="ignore", over="ignore"):
        if fmt == "Q8_0":
            amax = np.where(has_nan, np.abs(first_nan), np.abs(b).max(axis=1, keepdims=True))
            d = (amax / np.float32(127)).astype(np.float32)
            v = b * _inverse(d)
            # round half away from zero, exactly: floor(|v|) + (frac(|v|) >= 0.5)
            a = np.abs(v)
            q = np.sign(v) * (np.floor(a) + np.floor(np.float32(2) * (a - np.floor(a))))
            q = np.where(np.isfinite(v), q, 0)
            return np.concatenate([d.astype(np.float16).view(np.uint8), q.astype(np.int8).view(np.uint8)], axis=1)
        if fmt == "MXFP4":
            amax = np.where(has_nan, np.abs(first_nan), np.abs(b).max(axis=1, keepdims=True))
            e = _mxfp4_exponent(amax)
            q = np.abs(_e8m0_half(e)[:, :, None] * FP4 - b[:, :, None]).argmin(axis=2).astype(np.uint8)  # the first nearest
            return np.concatenate([e, _nibbles(q)], axis=1)
        if fmt in ("Q4_0", "Q5_0"):
            half = 8 if fmt == "Q4_0" else 16
            i = np.abs(b).argmax(axis=1)[:, None]  # the first NaN, if any
            d = (np.take_along_axis(b, i, axis=1) / np.float32(-half)).astype(np.float32)
            q = _codes(b * _inverse(d) + np.float32(half + 0.5), 2 * half - 1)
            high = [_fifth_bits(q)] if fmt == "Q5_0" else []
            return np.concatenate([d.astype(np.float16).view(np.uint8), *high, _nibbles(q & np.uint8(15))], axis=1)
        if fmt in ("Q4_1", "Q5_1"):
            top = 15 if fmt == "Q4_1" else 31
            mx = np.where(has_nan, first_nan, _signed_zero(b.max(axis=1, keepdims=True), b, negative=False))
            mn = np.where(has_nan, first_nan, _signed_zero(b.min(axis=1, keepdims=True), b, negative=True))
            d = ((mx - mn) / np.float32(top)).astype(np.float32)
            q = _codes((b - mn) * _inverse(d) + np.float32(0.5), top)
            high = [_fifth_bits(q)] if fmt == "Q5_1" else []
            return np.concatenate([d.astype(np.float16).view(np.uint8), mn.astype(np.float16).view(np.uint8), *high,
                                   _nibbles(q & np.uint8(15))], axis=1)
    raise ValueError(f"fmt: expected one of {tuple(FORMATS)}, got {fmt!r}")


def dequantize(blocks: np.ndarray, fmt: str) -> np.ndarray:
    """float32 values of GGUF blocks (any shape whose last axis is the block bytes), flat."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt: expected one of {tuple(FORMATS)}, got {fmt!r}")
    b = np.asarray(blocks, np.uint8).reshape(-1, FORMATS[fmt])
    if fmt == "MXFP4":
        q = np.concatenate([b[:, 1:] & np.uint8(0x0F), b[:, 1:] >> np.uint8(4)], axis=1)
        with np.errstate(over="ignore"):  # 2^127 · 12
            return (_e8m0_half(b[:, :1]) * FP4[q]).reshape(-1)
    d = b[:, :2].copy().view(np.float16).astype(np.float32)
    if fmt == "Q8_0":
        return (d * b[:, 2:].view(np.int8).astype(np.float32)).reshape(-1)
    nib = b[:, -16:]
    q = np.concatenate([nib & np.uint8(0x0F), nib >> np.uint8(4)], axis=1)
    if fmt in ("Q5_0", "Q5_1"):
        qh = b[:, -20:-16].copy().view("<u4")
        q |= (((qh >> np.arange(BLOCK, dtype=np.uint32)) & np.uint32(1)) << np.uint32(4)).astype(np.uint8)
    with np.errstate(invalid="ignore"):  # inf · 0
        if fmt in ("Q4_0", "Q5_0"):
            return (d * (q.astype(np.int8) - np.int8(8 if fmt == "Q4_0" else 16)).astype(np.float32)).reshape(-1)
        m = b[:, 2:4].copy().view(np.float16).astype(np.float32)
        p = d * q.astype(np.float32)
        return np.where(np.isnan(p), p, p + m).reshape(-1)  # both NaN: d·q's NaN
