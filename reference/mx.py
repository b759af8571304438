"""docs/semantics.md, *MX block formats and NVFP4*: OCP microscaling
(MXFP8, MXFP6, MXFP4, MXINT8) with an E8M0 scale per block, and NVFP4
(FP4 elements, E4M3 block scales of 16, an optional float32 per-tensor
scale). Layouts are torchao's (`to_mx`, `nvfp4_quantize`): scales of shape
``x.shape[:-1] + (n // block_size,)``; FP8 elements as float8 codes, FP6
one code per byte (low 6 bits), FP4 two codes per byte (first element in
the low nibble), MXINT8 int8."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .float8 import encode_minifloat
from .gguf import _blocks
from .quantize import _round


class Element(NamedTuple):
    mbits: int
    emin: int
    max: float
    emax: int  # exponent of the largest power of two in the format
    bits: int
    nan: int | None  # code of NaN without the sign (FP8), else None
    inf: int | None


ELEMENTS = {
    "mxfp8_e4m3": Element(3, -6, 448.0, 8, 8, 0x7F, None),
    "mxfp8_e5m2": Element(2, -14, 57344.0, 15, 8, 0x7F, 0x7C),
    "mxfp6_e2m3": Element(3, 0, 7.5, 2, 6, None, None),
    "mxfp6_e3m2": Element(2, -2, 28.0, 4, 6, None, None),
    "mxfp4": Element(1, 0, 6.0, 2, 4, None, None),
    "nvfp4": Element(1, 0, 6.0, 2, 4, None, None),
}
MXINT8_EMAX = 0  # int8 k stands for k · 2^-6: largest power of two 2^0
FORMATS = (*ELEMENTS, "mxint8")
F32_MIN_NORMAL = np.float32(2.0**-126)
E4M3_TINY = np.float32(2.0**-6)


def _elements(y: np.ndarray, fmt: str, round_mode: str, seed: int | None) -> np.ndarray:
    """Element codes of float32 values y (already divided by the scale)."""
    if fmt == "mxint8":
        with np.errstate(invalid="ignore", over="ignore"):
            t = np.where(np.isnan(y), np.float32(0), y) * np.float32(64)
            r = _round(np.clip(t, np.float32(-128), np.float32(127)), round_mode, seed)
        return r.astype(np.int8)
    e = ELEMENTS[fmt]
    return encode_minifloat(y, e.mbits, e.emin, e.max, 0 if e.nan is None else e.nan, e.bits - 1, lambda t: _round(t, round_mode, seed))


def _decode(codes: np.ndarray, fmt: str) -> np.ndarray:
    """float32 values of element codes (exact)."""
    if fmt == "mxint8":
        return codes.astype(np.int8).astype(np.float32) * np.float32(2.0**-6)
    e = ELEMENTS[fmt]
    c = codes.astype(np.int64)
    mag = c & ((1 << (e.bits - 1)) - 1)
    field = mag >> e.mbits
    frac = mag & ((1 << e.mbits) - 1)
    ex = np.maximum(field - 1, 0) + e.emin
    r = np.where(field == 0, frac, frac + (1 << e.mbits))
    v = np.ldexp(r.astype(np.float64), ex - e.mbits).astype(np.float32)
    if e.inf is not None:
        v = np.where(mag == e.inf, np.float32(np.inf), v)
        v = np.where(mag > e.inf, np.float32(np.nan), v)
    elif e.nan is not None:
        v = np.where(mag == e.nan, np.float32(np.nan), v)
    return np.where((c >> (e.bits - 1)) & 1 == 1, -v, v).astype(np.float32)


def _emax(fmt: str) -> int:
    return MXINT8_EMAX if fmt == "mxint8" else ELEMENTS[fmt].emax


def _amax(b: np.ndarray) -> np.ndarray:
    """max |x| of each block, NaN if the block holds one (torch.amax)."""
    with np.errstate(invalid="ignore"):
        return np.abs(b).max(axis=1, initial=np.float32(0))


def _scale_floor(amax: np.ndarray, fmt: str) -> np.ndarray:
    """OCP: the biased exponent of amax (0 for zero and subnormal amax,
    255 for ±inf) minus emax, clamped to [0, 255]; 255 for a NaN amax."""
    exp = ((amax.view(np.uint32) >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int64) - 127
    biased = np.clip(exp - _emax(fmt), -127, 128) + 127
    return np.where(np.isnan(amax), 255, biased).astype(np.uint8)


def _scale_rceil(amax: np.ndarray, fmt: str) -> np.ndarray:
    """NVIDIA / torchao: ceil(log2(amax / max)) + 127, log2 rounded to
    float32, clamped to [0, 254]; 254 for ±inf amax, 255 for NaN."""
    top = np.float32(127.0 / 64 if fmt == "mxint8" else ELEMENTS[fmt].max)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = (amax / top).astype(np.float32)
        lg = np.log2(d.astype(np.float64)).astype(np.float32)
        e = np.clip(np.ceil(np.where(np.isfinite(lg) | (lg == -np.inf), lg, 0)), -127, 127) + 127
    e = np.where(np.isinf(d), 254, e)
    return np.where(np.isnan(d), 255, e).astype(np.uint8)


def _e8m0(scales: np.ndarray) -> np.ndarray:
    """2^(s - 127) as float32 (2^-127 subnormal), NaN for 255."""
    s = scales.astype(np.int64)
    with np.errstate(over="ignore"):  # 2^128 for 255, replaced
        v = np.ldexp(np.float64(1), s - 127).astype(np.float32)
    return np.where(s == 255, np.float32(np.nan), v)


def _signed_nans(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """p = a · b (or a / b) with each NaN given the sign the spec gives it:
    a's if a is NaN, else b's if b is NaN, else set (inf · 0, inf / inf:
    x86's default NaN). numpy's loops may return either operand's NaN, and
    machines differ in their default NaN."""
    nan = np.isnan(p)
    if not nan.any():
        return p
    a, b = np.broadcast_arrays(a, b)
    sign = np.where(np.isnan(a), np.signbit(a), np.where(np.isnan(b), np.signbit(b), True))
    return np.where(nan, np.where(sign, -np.float32(np.nan), np.float32(np.nan)), p).astype(np.float32)


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    if bits == 4:
        c = codes.reshape(-1, 2)
        return (c[:, 0] | (c[:, 1] << np.uint8(4))).astype(np.uint8)
    return codes.astype(np.uint8) if bits == 6 else codes


def _unpack(data: np.ndarray, bits: int) -> np.ndarray:
    d = np.asarray(data).reshape(-1).view(np.uint8) if np.asarray(data).dtype.itemsize == 1 else np.asarray(data).reshape(-1)
    if bits == 4:
        return np.stack([d & np.uint8(15), d >> np.uint8(4)], axis=1).reshape(-1)
    return d


def quantize(x: np.ndarray, fmt: str, block_size: int = 32, scale_mode: str = "floor", round_mode: str = "nearest",
             seed: int | None = None, per_tensor_scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(data, scales) of x: data flat codes (FP4 packed two per byte, FP6
    one per byte, FP8 as uint8 codes, MXINT8 int8), scales uint8 (E8M0;
    NVFP4: E4M3 codes), one per block of the last axis."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt: expected one of {FORMATS}, got {fmt!r}")
    if fmt == "nvfp4":
        return _quantize_nvfp4(x, block_size, round_mode, seed, per_tensor_scale)
    b = _blocks(x, block_size)
    amax = _amax(b)
    scales = _scale_floor(amax, fmt) if scale_mode == "floor" else _scale_rceil(amax, fmt)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if scale_mode == "floor":
            # torchao divides by max(2^(s - 127), 2^-126); MXINT8 (not in
            # torchao) by 2^(s - 127) as OCP does; for 255, by inf
            least = np.float32(0) if fmt == "mxint8" else F32_MIN_NORMAL
            sf = np.where(scales == 255, np.float32(np.inf), np.maximum(_e8m0(scales), least))
            y = _signed_nans((b / sf[:, None]).astype(np.float32), b, sf[:, None])
        else:
            # multiplies by 2^(127 - s) (1 for s = 0; 2^-127 for 254; NaN for 255)
            s = scales.astype(np.int64)
            r = np.where(s == 0, np.float32(1), np.ldexp(np.float64(1), 127 - s).astype(np.float32))
            r = np.where(s == 254, np.float32(2.0**-127), r)
            r = np.where(s == 255, np.float32(np.nan), r)
            y = _signed_nans((b * r[:, None]).astype(np.float32), b, r[:, None])
    codes = _elements(y.reshape(-1), fmt, round_mode, seed)
    bits = 8 if fmt == "mxint8" else ELEMENTS[fmt].bits
    return _pack(codes, bits), scales


def _quantize_nvfp4(x: np.ndarray, block_size: int, round_mode: str, seed: int | None, per_tensor_scale: float | None) -> tuple[np.ndarray, np.ndarray]:
    from .float8 import encode

    if block_size != 16:
        raise ValueError(f"block_size: NVFP4 blocks are 16 elements, got {block_size}")
    b = _blocks(x, 16)
    amax = _amax(b)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        block_scale = (amax / np.float32(6)).astype(np.float32)
        if per_tensor_scale is not None:
            p = np.float32(per_tensor_scale)
            block_scale = (block_scale / p).astype(np.float32)
        clamped = np.minimum(np.maximum(block_scale, E4M3_TINY), np.float32(448))
        clamped = np.where(np.isnan(block_scale), block_scale, clamped)
        s8 = encode(clamped, "float8_e4m3fn", np.rint)
        sf = _decode_e4m3(s8)
        if per_tensor_scale is None:
            r = (np.float32(1) / sf).astype(np.float32)
        else:
            r = ((np.float32(1) / p) / sf).astype(np.float32)
        y = _signed_nans((b * r[:, None]).astype(np.float32), b, r[:, None])
    codes = _elements(y.reshape(-1), "nvfp4", round_mode, seed)
    return _pack(codes, 4), s8


def _decode_e4m3(codes: np.ndarray) -> np.ndarray:
    from .float8 import decode

    return decode(codes, "float8_e4m3fn")


def dequantize(data: np.ndarray, scales: np.ndarray, fmt: str, block_size: int = 32, per_tensor_scale: float | None = None) -> np.ndarray:
    """float32 values, flat: element · block scale in float32 (NVFP4: the
    E4M3 scale, times the per-tensor scale first if given)."""
    bits = 8 if fmt == "mxint8" else ELEMENTS[fmt].bits
    codes = _unpack(data, bits)
    v = _decode(codes, fmt).reshape(-1, block_size)
    s = np.asarray(scales).reshape(-1).view(np.uint8)
    if fmt == "nvfp4":
        sf = _decode_e4m3(s)
        if per_tensor_scale is not None:
            with np.errstate(over="ignore"):
                sf = (sf * np.float32(per_tensor_scale)).astype(np.float32)
    else:
        sf = _e8m0(s)
    with np.errstate(invalid="ignore", over="ignore"):
        return _signed_nans((v * sf[:, None]).astype(np.float32), v, sf[:, None]).reshape(-1)
