"""The reference's GGUF block formats (piquant_reference.gguf, the spec for
issue 6's native kernels) match the `gguf` package's numpy implementation
byte for byte, on random and adversarial data."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf import quants  # noqa: E402

from piquant_reference import gguf as ref_gguf  # noqa: E402


def adversarial(rng) -> np.ndarray:
    x = (rng.standard_normal((16, 128)) * rng.choice([1e-30, 1e-3, 1.0, 1e4])).astype(np.float32)
    x[0, :32] = 0                                        # all-zero block: d = 0
    x[1, :32] = np.arange(32, dtype=np.float32) - 15.5   # halves everywhere
    x[2, :32] = 1.0                                      # constant block
    x[3, :32] = -7.0
    x[3, 5] = 7.0                                        # equal magnitudes, sign decides Q4_0's d
    x[4, :32] = np.float32(65504.0) * rng.choice([-1, 1], 32)  # float16's largest
    x[5, :32] = rng.standard_normal(32).astype(np.float32) * 1e-7  # d below float16's normal range
    x[6, 7] = np.float32(2.5)
    return x


@pytest.mark.parametrize("fmt", ["Q8_0", "Q4_0", "Q4_1"])
def test_bytes_and_values_match_the_gguf_package(rng, fmt):
    qtype = getattr(T, fmt)
    for trial in range(10):
        x = adversarial(rng) if trial % 2 else (rng.standard_normal((8, 256)) * 3).astype(np.float32)
        ours = ref_gguf.quantize(x, fmt)
        theirs = quants.quantize(x, qtype).reshape(-1, ref_gguf.FORMATS[fmt])
        assert np.array_equal(ours, theirs), (trial, np.argwhere(ours != theirs)[:4])
        back = ref_gguf.dequantize(ours, fmt)
        assert np.array_equal(back.view(np.uint32), quants.dequantize(theirs, qtype).reshape(-1).view(np.uint32))


def test_half_precision_inputs_widen_exactly(rng):
    x = (rng.standard_normal(256) * 2).astype(np.float16)
    assert np.array_equal(ref_gguf.quantize(x, "Q8_0"), ref_gguf.quantize(x.astype(np.float32), "Q8_0"))
    with pytest.raises(ValueError, match="multiple of the block size"):
        ref_gguf.quantize(np.ones(33, np.float32), "Q8_0")
    with pytest.raises(ValueError, match="fmt"):
        ref_gguf.quantize(np.ones(32, np.float32), "Q5_K")
