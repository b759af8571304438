"""The numpy array header read (_arrays._head) and its fallback through
numpy's API (_arrays._flags, used where the layout probe fails) give the
same addresses, accept the same arrays and refuse the same ones."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import piquant
from piquant import _arrays


@pytest.fixture(params=["header", "fallback"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "header":
        if _arrays._memory is None:
            pytest.fail("the layout probe failed on this CPython build: the header path is not taken")
    else:
        monkeypatch.setattr(_arrays, "_memory", None)
    return str(request.param)


def _arrays_to_read() -> list[np.ndarray]:
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    ro = x.copy()
    ro.flags.writeable = False
    return [x, x[1:], ro, x[:, ::2], x.T, np.empty(0, np.float32), np.ones((), np.float32)]


def test_read_gives_the_address_and_values(path: str) -> None:
    for a in _arrays_to_read():
        array, kind, ptr, _, shape, numel = _arrays.read(a, "x", quantized=False)
        assert kind == _arrays.NUMPY and shape == a.shape and numel == a.size
        assert array.flags.c_contiguous and np.array_equal(array, a)
        assert ptr == array.ctypes.data
        if a.flags.c_contiguous:
            assert array is a  # read where it lies, not copied


def test_empty_and_address(path: str) -> None:
    a, ptr = _arrays.empty(_arrays.NUMPY, (3, 5), piquant.DataType.UINT8)
    assert ptr == a.ctypes.data and a.shape == (3, 5) and a.dtype == np.uint8
    b = np.arange(10, dtype=np.float64)
    assert _arrays.address(b, "scale") == b.ctypes.data


def test_out_is_refused_or_written_alike(path: str) -> None:
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    ok = np.zeros(16, np.uint8)
    q = piquant.quantize(x, "uint8", scale=0.01, zero_point=128, out=ok)
    assert q.data is ok and ok.any()
    ro = np.zeros(16, np.uint8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out: the array is read-only"):
        piquant.quantize(x, "uint8", scale=0.01, zero_point=128, out=ro)
    with pytest.raises(ValueError, match="out: expected a C-contiguous array"):
        piquant.quantize(x, "uint8", scale=0.01, zero_point=128, out=np.zeros(32, np.uint8)[::2])
    empty = np.zeros(0, np.uint8)
    assert piquant.quantize(x[:0], "uint8", scale=0.01, zero_point=128, out=empty).data is empty


def test_a_write_into_shared_broadcast_memory_warns(path: str) -> None:
    """numpy warns when memory np.broadcast_arrays shares is written; so
    does an out= write into it, on either path."""
    x = np.ones((1, 4), np.float32)
    _, shared = np.broadcast_arrays(x, np.zeros(4, np.float32))  # a (1, 4) view: C-contiguous, writable, warns on write
    assert shared.flags.c_contiguous
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        piquant.fake_quantize(x, "uint8", scale=0.5, zero_point=0, out=shared)
    assert any(issubclass(w.category, FutureWarning) for w in caught), [str(w.message) for w in caught]
    assert shared.tolist() == [[1.0] * 4]
