"""llama.cpp / GGUF block formats Q8_0, Q4_0 and Q4_1, as specified by
ggml-quants.c and mirrored by the `gguf` package's numpy code — the spec for
piquant's native kernels of these formats (issue 6).

Blocks of 32 float32 values (float16/bfloat16 inputs are widened exactly);
`d` and `m` are stored as IEEE float16 (round to nearest even), but the
quantization itself uses the unrounded float32 `d`:

- Q8_0 (34 bytes): d = max|x| / 127; q = round_half_away(x · (1/d)) (0 if d = 0);
  bytes: f16(d), 32 × int8 q.
- Q4_0 (18 bytes): v = the element of largest magnitude (first on ties);
  d = v / -8; q = clip(trunc(x · (1/d) + 8.5), 0, 15) (1/d = 0 if d = 0);
  bytes: f16(d), then 16 bytes: byte j = q[j] | q[j + 16] << 4.
- Q4_1 (20 bytes): d = (max - min) / 15; q = clip(trunc((x - min) · (1/d) + 0.5), 0, 15);
  bytes: f16(d), f16(min), then the nibbles as Q4_0.

All arithmetic is float32, one operation at a time. Dequantization:
Q8_0 x = f32(d) · q; Q4_0 x = f32(d) · (q - 8); Q4_1 x = f32(d) · q + f32(m).
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
FORMATS = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}  # bytes per block


def _blocks(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.name == "bfloat16":
        x = (x.view(np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)
    x = x.astype(np.float32).reshape(-1)
    if x.size % BLOCK:
        raise ValueError(f"x: {x.size} elements is not a multiple of the block size {BLOCK}")
    return x.reshape(-1, BLOCK)


def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def _nibbles(q: np.ndarray) -> np.ndarray:
    return (q[:, :16] | (q[:, 16:] << np.uint8(4))).astype(np.uint8)


def quantize(x: np.ndarray, fmt: str) -> np.ndarray:
    """The GGUF bytes of x (a multiple of 32 elements), shape (blocks, bytes per block)."""
    b = _blocks(x)
    if fmt == "Q8_0":
        d = (np.abs(b).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
        v = b * _inverse(d)
        # round half away from zero, exactly: floor(|v|) + (frac(|v|) >= 0.5)
        a = np.abs(v)
        q = np.sign(v) * (np.floor(a) + np.floor(np.float32(2) * (a - np.floor(a))))
        return np.concatenate([d.astype(np.float16).view(np.uint8), q.astype(np.int8).view(np.uint8)], axis=1)
    if fmt == "Q4_0":
        i = np.abs(b).argmax(axis=1)[:, None]
        d = (np.take_along_axis(b, i, axis=1) / np.float32(-8)).astype(np.float32)
        q = np.trunc(b * _inverse(d) + np.float32(8.5)).astype(np.float32)
        q = np.clip(q, 0, 15).astype(np.uint8)  # x·(1/d) is in [-8, 8], so q is in [0, 16] before the clip
        return np.concatenate([d.astype(np.float16).view(np.uint8), _nibbles(q)], axis=1)
    if fmt == "Q4_1":
        mx, mn = b.max(axis=1, keepdims=True), b.min(axis=1, keepdims=True)
        d = ((mx - mn) / np.float32(15)).astype(np.float32)
        q = np.clip(np.trunc((b - mn) * _inverse(d) + np.float32(0.5)).astype(np.uint8), 0, 15)
        return np.concatenate([d.astype(np.float16).view(np.uint8), mn.astype(np.float16).view(np.uint8), _nibbles(q)], axis=1)
    raise ValueError(f"fmt: expected one of {tuple(FORMATS)}, got {fmt!r}")


def dequantize(blocks: np.ndarray, fmt: str) -> np.ndarray:
    """float32 values of GGUF blocks (any shape whose last axis is the block bytes), flat."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt: expected one of {tuple(FORMATS)}, got {fmt!r}")
    b = np.asarray(blocks, np.uint8).reshape(-1, FORMATS[fmt])
    d = b[:, :2].copy().view(np.float16).astype(np.float32)
    if fmt == "Q8_0":
        return (d * b[:, 2:].view(np.int8).astype(np.float32)).reshape(-1)
    nib = b[:, 2:] if fmt == "Q4_0" else b[:, 4:]
    q = np.concatenate([nib & np.uint8(0x0F), nib >> np.uint8(4)], axis=1)
    if fmt == "Q4_0":
        return (d * (q.astype(np.int8) - np.int8(8)).astype(np.float32)).reshape(-1)
    m = b[:, 2:4].copy().view(np.float16).astype(np.float32)
    return (d * q.astype(np.float32) + m).reshape(-1)
