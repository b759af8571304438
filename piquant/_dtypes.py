"""piquant's element types and how names, numpy dtypes and torch dtypes map to them."""

from __future__ import annotations

from enum import Enum, unique
from typing import Any

import numpy as np

try:  # numpy has no bfloat16 of its own
    import ml_dtypes

    _NP_BF16: np.dtype | None = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    _NP_BF16 = None


@unique
class DataType(Enum):
    """Element types; values are the C ABI's ``piquant_dtype``."""

    F32 = 0
    BF16 = 1
    F16 = 2
    F64 = 3
    UINT2 = 16
    INT2 = 17
    UINT4 = 18
    INT4 = 19
    UINT8 = 20
    INT8 = 21
    UINT16 = 22
    INT16 = 23
    UINT32 = 24
    INT32 = 25
    UINT64 = 26
    INT64 = 27
    FLOAT8_E4M3FN = 28
    FLOAT8_E5M2 = 29

    # Members are singletons that compare by identity; Enum's default hash
    # (of the name, in Python) made every dict lookup by DataType slow.
    __hash__ = object.__hash__

    # Each property reads an attribute set once below: an Enum member hashes
    # slowly as a dict key, and these are read on every call.
    @property
    def bit_size(self) -> int:
        return self._bits  # type: ignore[attr-defined]

    @property
    def is_quantized(self) -> bool:
        return self._value_ >= 16

    @property
    def is_dequantized(self) -> bool:
        return self._value_ < 16

    @property
    def is_signed(self) -> bool:
        """Of the integer types (FP8 codes are raw bytes)."""
        return 16 <= self._value_ < 28 and self._value_ & 1 == 1

    @property
    def is_float8(self) -> bool:
        """FP8 types quantize with a scale alone: their zero point is 0."""
        return self._value_ in (28, 29)

    @property
    def stride(self) -> int:
        """Bytes per element, 0 for packed sub-byte types (pi-quant's meaning)."""
        return self._bits >> 3  # type: ignore[attr-defined]

    @property
    def is_packed(self) -> bool:
        return self._bits < 8  # type: ignore[attr-defined]

    @property
    def qmin(self) -> int:
        return self._qmin  # type: ignore[attr-defined]

    @property
    def qmax(self) -> int:
        return self._qmax  # type: ignore[attr-defined]

    @property
    def short_name(self) -> str:
        """The name used in strings and by piquant_reference, e.g. ``"uint4"``."""
        return _NAMES[self]

    def nbytes(self, numel: int) -> int:
        return (numel * self._bits + 7) // 8  # type: ignore[attr-defined]

    def raw_zero_point(self, zero_point: int) -> int:
        """The C ABI's int64 form of a zero point: uint64's travel as their bits."""
        return zero_point - (1 << 64) if zero_point >= 1 << 63 else zero_point

    def zero_point_from_raw(self, raw: int) -> int:
        """The zero point an ABI int64 stands for (see raw_zero_point)."""
        return raw + (1 << 64) if raw < 0 and self is DataType.UINT64 else raw


_NAMES = {
    DataType.F32: "float32",
    DataType.BF16: "bfloat16",
    DataType.F16: "float16",
    DataType.F64: "float64",
} | {dt: dt.name.lower() for dt in DataType if dt.value >= 16}
_BITS = {DataType.F32: 32, DataType.BF16: 16, DataType.F16: 16, DataType.F64: 64} | {
    dt: 8 if dt.is_float8 else int("".join(ch for ch in dt.name if ch.isdigit())) for dt in DataType if dt.value >= 16
}
for _dt in DataType:
    _dt._bits = _BITS[_dt]  # type: ignore[attr-defined]
    _signed = _dt.is_signed
    _dt._qmin = -(1 << (_dt._bits - 1)) if _signed else 0  # type: ignore[attr-defined]
    _dt._qmax = 0 if _dt.is_float8 else (1 << (_dt._bits - 1)) - 1 if _signed else (1 << _dt._bits) - 1  # type: ignore[attr-defined]
del _dt, _signed
_BY_NAME = {v: k for k, v in _NAMES.items()} | {
    "f32": DataType.F32,
    "bf16": DataType.BF16,
    "f16": DataType.F16,
    "half": DataType.F16,
    "f64": DataType.F64,
    "double": DataType.F64,
    "quint8": DataType.UINT8,
    "qint8": DataType.INT8,
    "qint32": DataType.INT32,
    "quint4x2": DataType.UINT4,
    "quint2x4": DataType.UINT2,
}

# numpy storage dtypes of each type's data.
_NP_STORAGE: dict[DataType, np.dtype] = {
    dt: np.dtype(np.uint8) if dt.is_packed else np.dtype(dt.short_name) for dt in DataType if dt is not DataType.BF16 and not dt.is_float8
}
if _NP_BF16 is not None:
    _NP_STORAGE[DataType.BF16] = _NP_BF16
    _NP_STORAGE[DataType.FLOAT8_E4M3FN] = np.dtype(ml_dtypes.float8_e4m3fn)
    _NP_STORAGE[DataType.FLOAT8_E5M2] = np.dtype(ml_dtypes.float8_e5m2)

_torch_map: dict[Any, DataType] | None = None

# torch's quantized tensor types and the piquant type of their elements.
TORCH_QUANTIZED = {"quint8": DataType.UINT8, "qint8": DataType.INT8, "qint32": DataType.INT32,
                   "quint4x2": DataType.UINT4, "quint2x4": DataType.UINT2}  # fmt: skip
# The torch dtypes among them, filled with the torch map (resolving any torch dtype does).
TORCH_QUANTIZED_TYPES: set[Any] = set()


def torch_dtype_map() -> dict[Any, DataType]:
    """torch dtype → DataType; built on first use so that importing piquant
    never imports torch."""
    global _torch_map
    if _torch_map is None:
        import torch

        _torch_map = {torch.float32: DataType.F32, torch.bfloat16: DataType.BF16, torch.float16: DataType.F16, torch.float64: DataType.F64}
        for dt in DataType:
            if dt.is_quantized and not dt.is_packed and hasattr(torch, dt.short_name):
                _torch_map[getattr(torch, dt.short_name)] = dt
        for name, dt in TORCH_QUANTIZED.items():
            if hasattr(torch, name):
                _torch_map[getattr(torch, name)] = dt
                TORCH_QUANTIZED_TYPES.add(getattr(torch, name))
    return _torch_map


def resolve(dtype: Any, arg: str, *, quantized: bool | None = None) -> DataType:
    """DataType for a name, DataType, numpy dtype or torch dtype; ``arg`` names
    the argument in errors. ``quantized`` restricts to one side."""
    try:  # the objects users pass, resolved once
        dt: DataType | None = _RESOLVED.get(dtype)
    except TypeError:  # unhashable
        dt = None
    if dt is None:
        dt = _resolve(dtype)
        if dt is not None and len(_RESOLVED) < 256:
            _RESOLVED[dtype] = dt
    if dt is None or (quantized is not None and (dt._value_ >= 16) != quantized):  # dt.is_quantized, without a property's frame
        side = {True: "a quantized type (uint2 … int64, float8_e4m3fn, float8_e5m2)", False: "a float type (float32, bfloat16, float16, float64)"}
        expected = side.get(quantized, "a piquant dtype") if quantized is not None else "a piquant dtype"
        raise TypeError(f"{arg}: expected {expected}, got {dtype!r}")
    return dt


# What resolve has resolved: names, members, numpy and torch dtypes as passed.
_RESOLVED: dict[Any, DataType] = {dt: dt for dt in DataType}


def _resolve(dtype: Any) -> DataType | None:
    if isinstance(dtype, DataType):
        return dtype
    if isinstance(dtype, str):
        return _BY_NAME.get(dtype.lower())
    if type(dtype).__module__ == "torch":
        return torch_dtype_map().get(dtype)
    try:
        npd = np.dtype(dtype)
    except TypeError:
        return None
    return next((k for k, v in _NP_STORAGE.items() if v == npd and not k.is_packed), None)


def has_numpy_bfloat16() -> bool:
    return _NP_BF16 is not None


def numpy_storage(dt: DataType) -> np.dtype:
    try:
        return _NP_STORAGE[dt]
    except KeyError:
        raise TypeError(f"{dt.short_name} numpy arrays need the ml_dtypes package (pip install ml_dtypes)") from None
