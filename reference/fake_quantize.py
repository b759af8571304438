"""docs/semantics.md, *fake_quantize*: dequantize(quantize(x)), by definition."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .dequantize import dequantize
from .quantize import quantize
from .types import _float_kind


def fake_quantize(
    x: np.ndarray,
    dtype: str,
    scale: npt.ArrayLike,
    zero_point: npt.ArrayLike,
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
