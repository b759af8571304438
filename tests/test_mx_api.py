"""piquant.mx: the public API of the MX formats and NVFP4 — layouts and
array types for numpy and torch, the round trip, errors naming the argument."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import piquant.mx as pmx
from piquant_reference import mx as rmx

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("fmt", pmx.FORMATS)
def test_numpy_layout_and_round_trip(fmt):
    rng = np.random.default_rng(3)
    bs = 16 if fmt == "nvfp4" else 32
    x = rng.standard_normal((3, 4, 64)).astype(np.float32)
    m = pmx.quantize(x, fmt)
    assert (m.fmt, m.shape, m.block_size) == (fmt, x.shape, bs)
    assert m.scales.shape == (3, 4, 64 // bs)
    assert m.data.shape == ((3, 4, 32) if fmt in ("mxfp4", "nvfp4") else x.shape)
    want_dt = {"mxfp8_e4m3": ml_dtypes.float8_e4m3fn, "mxfp8_e5m2": ml_dtypes.float8_e5m2, "mxint8": np.int8}.get(fmt, np.uint8)
    assert m.data.dtype == np.dtype(want_dt)
    assert m.scales.dtype == (np.dtype(ml_dtypes.float8_e4m3fn) if fmt == "nvfp4" else np.uint8)
    data, scales = rmx.quantize(x, fmt, bs)
    np.testing.assert_array_equal(m.data.reshape(-1).view(np.uint8), data.view(np.uint8))
    back = pmx.dequantize(m)
    np.testing.assert_array_equal(back.reshape(-1), rmx.dequantize(data, scales, fmt, bs))
    assert back.shape == x.shape
    # a coarse bound on the error relative to each block's amax: the floor
    # rule saturates amaxes in [max, 2^(emax+1)) (12.5% for FP8), then half a step
    amax = np.abs(x).reshape(-1, bs).max(axis=1, keepdims=True)
    err = np.abs(back.reshape(-1, bs) - x.reshape(-1, bs)) / amax
    bound = {"mxfp4": 0.26, "nvfp4": 0.17, "mxfp6_e3m2": 0.14, "mxfp6_e2m3": 0.1, "mxfp8_e4m3": 0.13, "mxfp8_e5m2": 0.13, "mxint8": 0.02}
    assert err.max() < bound[fmt]


@pytest.mark.parametrize("fmt", pmx.FORMATS)
def test_torch_layout(fmt):
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    m = pmx.quantize(x, fmt, scale_mode="rceil" if fmt != "nvfp4" else "floor")
    assert isinstance(m.data, torch.Tensor) and isinstance(m.scales, torch.Tensor)
    assert m.scales.dtype == (torch.float8_e4m3fn if fmt == "nvfp4" else torch.float8_e8m0fnu)
    if fmt == "mxfp8_e4m3":
        assert m.data.dtype == torch.float8_e4m3fn
    back = pmx.dequantize(m, torch.bfloat16)
    assert back.dtype == torch.bfloat16 and back.shape == x.shape
    out = torch.empty(2, 64, dtype=torch.float32)
    assert pmx.dequantize(m, out=out) is out


def test_errors_name_the_argument():
    x = np.ones((2, 48), np.float32)
    with pytest.raises(ValueError, match="block size 32"):
        pmx.quantize(x, "mxfp4")
    with pytest.raises(ValueError, match="fmt"):
        pmx.quantize(x, "mxfp5")
    with pytest.raises(ValueError, match="scale_mode"):
        pmx.quantize(x, "mxfp8_e4m3", block_size=16, scale_mode="up")
    with pytest.raises(ValueError, match="block_size"):
        pmx.quantize(x, "nvfp4", block_size=32)
    with pytest.raises(ValueError, match="per_tensor_scale"):
        pmx.quantize(x, "mxfp8_e4m3", block_size=16, per_tensor_scale=2.0)


def test_stochastic_rounding_is_unbiased_and_keyed():
    # elements 1.25 in blocks whose amax is 4 (E2M1 grid 1, 1.5 around 1.25 after the scale 1)
    x = np.full((4000, 32), 1.25, np.float32)
    x[:, 0] = 4.0
    a = pmx.quantize(x, "mxfp4", round_mode="stochastic", seed=9)
    b = pmx.quantize(x, "mxfp4", round_mode="stochastic", seed=9)
    np.testing.assert_array_equal(a.data, b.data)
    v = pmx.dequantize(a)[:, 1:]
    assert set(np.unique(v)) == {1.0, 1.5}
    assert abs(v.mean() - 1.25) < 0.005
