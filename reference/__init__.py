"""piquant_reference: the specification of piquant's operations in plain numpy.

Every native kernel must produce bit-identical results to these functions
(docs/semantics.md states the same rules in prose). It is also piquant's
fallback backend when the native library cannot be loaded.

Float arrays are numpy float32, float64, float16, or ``ml_dtypes.bfloat16``;
a bfloat16 array may also be given as its raw ``uint16`` bits with
``float_dtype="bfloat16"`` (results are then raw bits too). Quantized data of
8 bits and more is an array of the matching numpy integer type; 2- and 4-bit
data is a flat ``uint8`` array of packed bytes, first element in the lowest
bits.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "QUANTIZED_DTYPES",
    "FLOAT_DTYPES",
    "qrange",
    "bits",
    "storage_dtype",
    "compute_dtype",
    "quantize",
    "dequantize",
    "fake_quantize",
    "compute_params",
    "layout",
    "minmax",
    "uniforms",
    "pack_bits",
    "unpack_bits",
    "bf16_bits_to_f32",
    "f32_to_bf16_bits",
]

FLOAT_DTYPES = ("float32", "bfloat16", "float16", "float64")
_BITS = {
    "uint2": 2, "int2": 2, "uint4": 4, "int4": 4, "uint8": 8, "int8": 8,
    "uint16": 16, "int16": 16, "uint32": 32, "int32": 32, "uint64": 64, "int64": 64,
}  # fmt: skip
QUANTIZED_DTYPES = tuple(_BITS)
_M64 = (1 << 64) - 1


class Params(NamedTuple):
    scale: np.floating  # float32, or float64 for float64 input
    zero_point: int


def bits(dtype: str) -> int:
    try:
        return _BITS[dtype]
    except KeyError:
        raise ValueError(f"dtype: expected one of {QUANTIZED_DTYPES}, got {dtype!r}") from None


def qrange(dtype: str) -> tuple[int, int]:
    """(qmin, qmax) of a quantized dtype."""
    b = bits(dtype)
    if dtype.startswith("u"):
        return 0, (1 << b) - 1
    return -(1 << (b - 1)), (1 << (b - 1)) - 1


def storage_dtype(dtype: str) -> np.dtype:
    """numpy dtype of the stored data (uint8 bytes for packed types)."""
    return np.dtype(np.uint8) if bits(dtype) < 8 else np.dtype(dtype)


def compute_dtype(float_dtype: str) -> type:
    """Arithmetic is done in float64 for float64 data, else in float32."""
    return np.float64 if float_dtype == "float64" else np.float32


# ---------------------------------------------------------------- floats


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


# ---------------------------------------------------------------- integers ↔ floats


def _nearest_float(v: int, c: type) -> np.floating:
    """The integer v rounded to the nearest float of type c, ties to even."""
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


def _check_params(kind: str, dtype: str, scale, zero_point: int) -> np.floating:
    """scale in the compute type, checked, and the zero point checked."""
    qmin, qmax = qrange(dtype)
    c = compute_dtype(kind)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        s = c(scale)
        inv = c(1) / s
    if not (np.isfinite(s) and s > 0 and np.isfinite(inv)):
        raise ValueError(f"scale: expected a finite number > 0 whose reciprocal is finite in {np.dtype(c).name}, got {scale!r}")
    if not qmin <= zero_point <= qmax:
        raise ValueError(f"zero_point: expected an integer in [{qmin}, {qmax}] for {dtype}, got {zero_point!r}")
    return s


def layout(shape: tuple[int, ...], axis: int | None = None, group_size: int | None = None) -> tuple[int, int, tuple[int, ...]]:
    """(count, inner, params_shape): element i (flat, row-major) uses parameter
    set (i // inner) % count. Per tensor: one set. ``axis=k``: one set per
    index along axis k (count = shape[k], inner = prod(shape[k+1:]), params
    shaped (shape[k],)). ``group_size=g``: one set per run of g elements along
    the last axis, which must be a multiple of g (count = numel / g, inner = g,
    params shaped shape[:-1] + (shape[-1] // g,))."""
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if axis is not None and group_size is not None:
        raise ValueError("axis, group_size: give one of them, not both")
    if axis is not None:
        if not shape or not -len(shape) <= axis < len(shape):
            raise ValueError(f"axis: expected an axis of a {len(shape)}-d array, got {axis}")
        k = axis % len(shape)
        return shape[k], int(np.prod(shape[k + 1 :], dtype=np.int64)) if k + 1 < len(shape) else 1, (shape[k],)
    if group_size is not None:
        if group_size < 1:
            raise ValueError(f"group_size: expected a positive integer, got {group_size}")
        if not shape or shape[-1] % group_size:
            last = shape[-1] if shape else "a 0-d array's"
            raise ValueError(f"group_size: the last axis ({last}) is not a multiple of group_size={group_size}")
        return n // group_size, group_size, shape[:-1] + (shape[-1] // group_size,)
    return 1, max(n, 1), ()


def _sets(kind: str, dtype: str, scale, zero_point, count: int) -> tuple[np.ndarray, list[int]]:
    """The checked scales (compute type) and zero points of `count` sets."""
    scales = np.asarray(scale).reshape(-1)
    zps = np.asarray(zero_point).reshape(-1)
    if scales.size != count or zps.size != count:
        raise ValueError(f"scale, zero_point: expected {count} values each, got {scales.size} and {zps.size}")
    zp_list = [int(z) for z in zps]
    checked = []
    for k in range(count):
        try:
            checked.append(_check_params(kind, dtype, scales[k].item(), zp_list[k]))
        except ValueError as e:
            raise ValueError(f"set {k}: {e}" if count > 1 else str(e)) from None
    return np.array(checked, compute_dtype(kind)), zp_list


def _expand(values: np.ndarray, count: int, inner: int, n: int) -> np.ndarray:
    """Per-set values repeated to one per element."""
    if count == 1:
        return np.broadcast_to(values[0], (n,))
    return values[(np.arange(n, dtype=np.int64) // inner) % count]


def _exact_u64(a: np.ndarray) -> np.ndarray:
    """Non-negative integer-valued floats below 2^64 as uint64, exactly."""
    a = a.astype(np.float64)  # exact for float32 too
    big = a >= 2.0**63
    low = np.where(big, a - 2.0**63, a).astype(np.int64).view(np.uint64)  # a - 2^63 is exact
    return low + (big.astype(np.uint64) << np.uint64(63))


def _saturate(r: np.ndarray, dtype: str, zero_points: list[int], inner: int) -> np.ndarray:
    """clamp(r + zero_point, qmin, qmax) for integer-valued floats r (NaN →
    zero_point), exactly, with element i's zero point zero_points[(i // inner)
    % count], as the stored integer type (packed types: int64)."""
    c = r.dtype.type
    qmin, qmax = qrange(dtype)
    count = len(zero_points)
    lo = _expand(np.array([_float_bound(qmin - z, c, up=True) for z in zero_points], c), count, inner, r.size)
    hi = _expand(np.array([_float_bound(qmax - z, c, up=False) for z in zero_points], c), count, inner, r.size)
    zp_bits = _expand(np.array([z & _M64 for z in zero_points], np.uint64), count, inner, r.size)
    over, under = r > hi, r < lo
    inside = np.where(over | under | np.isnan(r), c(0), r)  # |inside| < 2^64
    mag = _exact_u64(np.abs(inside))
    with np.errstate(over="ignore"):
        val = np.where(inside < 0, np.uint64(0) - mag, mag) + zp_bits  # mod 2^64
    val = np.where(over, np.uint64(qmax & _M64), np.where(under, np.uint64(qmin & _M64), val))
    if bits(dtype) < 8:
        return val.view(np.int64)
    st = storage_dtype(dtype)
    return val.astype(np.dtype(f"u{st.itemsize}")).view(st)  # truncation mod 2^bits


def _exact_difference(v: np.ndarray, zero_points: list[int], inner: int, c: type) -> np.ndarray:
    """float(v - zero_point) rounded to c, ties to even, for integer arrays v,
    with per-set zero points as in _saturate."""
    count = len(zero_points)
    if v.dtype.itemsize < 8:
        z = _expand(np.array(zero_points, np.int64), count, inner, v.size)
        d = v.astype(np.int64) - z  # exact: |d| < 2^33
        return d.astype(c)  # int64 → float conversion rounds to nearest, ties to even
    z = _expand(np.array([zp & _M64 for zp in zero_points], np.uint64), count, inner, v.size)
    u = v.view(np.uint64)
    ge = u >= z if v.dtype == np.uint64 else v >= z.view(np.int64)
    mag = np.where(ge, u - z, z - u)  # mod 2^64: the exact |v - zp|
    f = mag.astype(c)
    return np.where(ge, f, -f)


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


# ---------------------------------------------------------------- stochastic rounding


def _splitmix64(seed: int) -> int:
    z = (seed + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _lowbias32(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def uniforms(seed: int, n: int, c: type = np.float32, start: int = 0) -> np.ndarray:
    """The u ∈ [0, 1) of elements start … start+n-1 for a seed:
    k = SplitMix64(seed); K(i) = lo32(k) ^ lowbias32(hi32(i) ^ hi32(k));
    h = lowbias32((lo32(i) · 0x9E3779B1 mod 2^32) ^ K(i));
    float32: u = (h >> 8) · 2^-24; float64: u = h · 2^-32."""
    if not 0 <= seed <= _M64:
        raise ValueError(f"seed: expected an integer in [0, 2^64), got {seed!r}")
    k = _splitmix64(seed)
    i = np.arange(start, start + n, dtype=np.uint64)
    lo = (i & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    hi = (i >> np.uint64(32)).astype(np.uint32)
    key = np.uint32(k & 0xFFFFFFFF) ^ _lowbias32(hi ^ np.uint32(k >> 32))
    h = _lowbias32((lo * np.uint32(0x9E3779B1)) ^ key)
    if c is np.float64:
        return h.astype(np.float64) * 2.0**-32
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)


def _round(y: np.ndarray, round_mode: str, seed: int | None) -> np.ndarray:
    if round_mode == "nearest":
        return np.rint(y)  # half to even
    if round_mode != "stochastic":
        raise ValueError(f"round_mode: expected 'nearest' or 'stochastic', got {round_mode!r}")
    if seed is None:
        raise ValueError("seed: stochastic rounding in the reference needs an explicit seed")
    c = y.dtype.type
    with np.errstate(invalid="ignore"):
        fl = np.floor(y)
        up = uniforms(seed, y.size, c) < y - fl  # y - fl: one float operation in c
    return fl + np.where(up, c(1), c(0))


# ---------------------------------------------------------------- operations


def quantize(
    x: np.ndarray,
    dtype: str,
    scale,
    zero_point,
    *,
    round_mode: str = "nearest",
    seed: int | None = None,
    float_dtype: str | None = None,
    axis: int | None = None,
    group_size: int | None = None,
) -> np.ndarray:
    """q = clamp(round(c(x) · c(1 / c(scale))) + zero_point, qmin, qmax), c the
    compute type, the product one float operation in c, the clamp on exact
    integers; NaN → zero_point. round is half to even, or stochastic:
    floor(y) + (u < y - floor(y)) with u = uniforms(seed)[i], i the flat index.
    With ``axis`` or ``group_size``, scale and zero_point hold one value per
    set (see `layout`) and each element uses its set's. Results of 8 bits and
    more keep x's shape; 2/4-bit results are packed flat."""
    x = np.asarray(x)
    kind = _float_kind(x, float_dtype)
    count, inner, _ = layout(x.shape, axis, group_size)
    s, zps = _sets(kind, dtype, scale, zero_point, count)
    c = compute_dtype(kind)
    xc = _to_compute(x, kind)
    with np.errstate(over="ignore", invalid="ignore"):
        y = xc * _expand(c(1) / s, count, inner, xc.size)
    q = _saturate(_round(y, round_mode, seed), dtype, zps, inner)
    if bits(dtype) < 8:
        return pack_bits(q, bits(dtype))
    return q.reshape(x.shape)


def _values(q: np.ndarray, dtype: str, numel: int | None) -> np.ndarray:
    """Stored quantized data as an integer array of element values."""
    q = np.asarray(q)
    nb = bits(dtype)
    if nb < 8:
        n = (8 // nb) * q.size if numel is None else numel
        return unpack_bits(q, n, nb, signed=dtype.startswith("i"))
    return q.reshape(-1).view(storage_dtype(dtype))


def dequantize(
    q: np.ndarray,
    dtype: str,
    scale,
    zero_point,
    *,
    numel: int | None = None,
    out_dtype: str = "float32",
    out: np.ndarray | None = None,
    reduce: str = "set",
    shape: tuple[int, ...] | None = None,
    axis: int | None = None,
    group_size: int | None = None,
) -> np.ndarray:
    """x = c(q - zero_point) · c(scale) in the compute type c of out_dtype
    (q - zero_point exact, then rounded to nearest), rounded to out_dtype
    (set), or out = round(c(out) + x) (add). bfloat16 results are uint16 bits
    unless ``out`` is an ml_dtypes array. ``numel``: the element count of
    packed input (default: all fields). ``axis``/``group_size`` as in
    quantize, on the logical ``shape`` (default: flat). Returns a flat array
    unless ``out`` is given."""
    if out_dtype not in FLOAT_DTYPES:
        raise ValueError(f"out_dtype: expected one of {FLOAT_DTYPES}, got {out_dtype!r}")
    if reduce not in ("set", "add"):
        raise ValueError(f"reduce: expected 'set' or 'add', got {reduce!r}")
    v = _values(q, dtype, numel)
    count, inner, _ = layout((v.size,) if shape is None else shape, axis, group_size)
    s, zps = _sets(out_dtype, dtype, scale, zero_point, count)
    c = compute_dtype(out_dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        x = _exact_difference(v, zps, inner, c) * _expand(s, count, inner, v.size)
        if reduce == "add":
            if out is None:
                raise ValueError("out: reduce='add' needs the array to add into")
            x = _to_compute(out, out_dtype) + x
    res = _from_compute(x, out_dtype)
    if out is not None:
        out.reshape(-1)[...] = res.view(out.dtype)  # same width: raw bits or the float type itself
        return out
    return res


def fake_quantize(
    x: np.ndarray,
    dtype: str,
    scale,
    zero_point,
    *,
    round_mode: str = "nearest",
    seed: int | None = None,
    float_dtype: str | None = None,
    out: np.ndarray | None = None,
    reduce: str = "set",
    axis: int | None = None,
    group_size: int | None = None,
) -> np.ndarray:
    """dequantize(quantize(x)) into x's float type: by definition."""
    x = np.asarray(x)
    kind = _float_kind(x, float_dtype)
    grouping = {"axis": axis, "group_size": group_size}
    q = quantize(x, dtype, scale, zero_point, round_mode=round_mode, seed=seed, float_dtype=kind, **grouping)
    res = dequantize(q, dtype, scale, zero_point, numel=x.size, out_dtype=kind, out=out, reduce=reduce, shape=x.shape, **grouping)
    return res if out is not None else res.reshape(x.shape)


def minmax(x: np.ndarray, *, float_dtype: str | None = None) -> tuple[np.floating, np.floating]:
    """Smallest and largest non-NaN value in the compute type; (+inf, -inf) if there is none."""
    x = np.asarray(x)
    xf = _to_compute(x, _float_kind(x, float_dtype))
    xf = xf[~np.isnan(xf)]
    c = xf.dtype.type
    if xf.size == 0:
        return c(np.inf), c(-np.inf)
    return xf.min(), xf.max()


def compute_params(
    x: np.ndarray,
    dtype: str,
    symmetric: bool = False,
    *,
    float_dtype: str | None = None,
    axis: int | None = None,
    group_size: int | None = None,
) -> Params:
    """scale and zero_point as torch's MinMaxObserver computes them, in the
    compute type c (float32, or float64 for float64 input): the range
    [lo, hi] = [min(min(x), 0), max(max(x), 0)] ignoring NaN (no non-NaN
    value: lo = hi = 0); width = c(qmax - qmin) (rounded to nearest);
    affine: scale = max((hi - lo) / width, eps), zero_point = clamp(qmin - round_half_even(lo / scale), qmin, qmax);
    symmetric: scale = max(max(-lo, hi) / (width / 2), eps), zero_point = 0 for signed
    types and (qmin + qmax + 1) // 2 for unsigned ones; eps is c's machine
    epsilon. An infinite value, or a range whose width overflows, raises.
    With ``axis`` or ``group_size``, the same for each set's elements (see
    `layout`): arrays of the params shape, zero points int64 (uint64 for uint64)."""
    x = np.asarray(x)
    if axis is None and group_size is None:
        return _params_of(x, dtype, symmetric, float_dtype)
    count, inner, pshape = layout(x.shape, axis, group_size)
    sets = x.reshape(-1, count, inner) if x.size else np.empty((0, count, 1), x.dtype)
    scales, zps = [], []
    for k in range(count):
        try:
            p = _params_of(sets[:, k, :], dtype, symmetric, float_dtype)
        except ValueError as e:
            raise ValueError(f"set {k}: {e}") from None
        scales.append(p.scale)
        zps.append(p.zero_point)
    c = compute_dtype(_float_kind(x, float_dtype))
    zdt = np.uint64 if dtype == "uint64" else np.int64
    return Params(np.array(scales, c).reshape(pshape), np.array(zps, zdt).reshape(pshape))


def _params_of(x: np.ndarray, dtype: str, symmetric: bool, float_dtype: str | None) -> Params:
    x = np.asarray(x)
    qmin, qmax = qrange(dtype)
    mn, mx = minmax(x, float_dtype=float_dtype)
    c = mn.dtype.type
    if mn == -np.inf or mx == np.inf:
        raise ValueError("x: contains an infinite value; parameters need a finite range")
    if mn > mx:
        mn = mx = c(0)
    lo, hi = min(mn, c(0)), max(mx, c(0))
    width = _nearest_float(qmax - qmin, c)
    eps = np.finfo(c).eps
    with np.errstate(over="ignore"):
        if symmetric:
            scale = max(max(-lo, hi) / (width / c(2)), eps)
        else:
            scale = max((hi - lo) / width, eps)
    if not np.isfinite(scale):
        raise ValueError("x: its range (max - min) overflows float32")
    if symmetric:
        zp = 0 if qmin < 0 else (qmin + qmax + 1) // 2
    else:
        zp = min(max(qmin - int(np.rint(lo / scale)), qmin), qmax)
    return Params(c(scale), zp)
