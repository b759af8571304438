"""The reference's own building blocks checked against exact Python integer
arithmetic, so that the oracle of the differential tests is itself right."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import piquant_reference as ref
from piquant_reference import _exact_difference, _float_bound, _nearest_float


def nearest_exact(v: int, c: type) -> float:
    """Round-to-nearest-even of an integer to float type c, from first principles."""
    mant = np.finfo(c).nmant + 1
    if v == 0:
        return 0.0
    e = abs(v).bit_length() - mant
    if e <= 0:
        return float(v)
    q = Fraction(v, 2**e)
    r = round(q)  # Python's round: half to even
    return float(r * 2**e)


ADVERSARIAL = [0, 1, -1, 2**24 - 1, 2**24 + 1, 2**24 + 3, 2**25 + 2, 2**31 - 1, -(2**31), 2**32 - 1, 2**53 + 1,
               2**53 + 3, 2**63 - 1, -(2**63), 2**64 - 1, -(2**64 - 1), 2**64 - 2**39, 2**64 - 2**40 + 1]  # fmt: skip


@pytest.mark.parametrize("c", [np.float32, np.float64])
def test_nearest_float_and_bounds(rng, c):
    values = ADVERSARIAL + [int(v) for v in rng.integers(-(2**63), 2**63 - 1, 2000, dtype=np.int64)]
    for v in values:
        assert float(_nearest_float(v, c)) == nearest_exact(v, c), v
        lo, hi = _float_bound(v, c, up=True), _float_bound(v, c, up=False)
        assert int(hi) <= v <= int(lo)
        assert Fraction(float(np.nextafter(hi, c(np.inf)))) > v and Fraction(float(np.nextafter(lo, c(-np.inf)))) < v


@pytest.mark.parametrize("c", [np.float32, np.float64])
@pytest.mark.parametrize("qtype", ["uint64", "int64", "uint32", "int32", "int16"])
def test_exact_difference_rounds_once(rng, c, qtype):
    qmin, qmax = ref.qrange(qtype)
    st = ref.storage_dtype(qtype)
    vals = [qmin, qmax, qmin + 1, qmax - 1] + [int(v) for v in rng.integers(qmin, qmax, 500, endpoint=True, dtype=np.uint64 if qmin == 0 else np.int64)]
    for zp in (qmin, qmax, 0 if qmin < 0 else 1, vals[-1]):
        got = _exact_difference(np.array(vals, dtype=st), [zp], len(vals), c)
        want = [nearest_exact(v - zp, c) for v in vals]
        assert [float(g) for g in got] == want, zp


def test_saturation_of_wide_types():
    x = np.array([2.0**64, 2.0**63, -(2.0**63), -(2.0**64), 1.5, 2.5, np.nan, np.inf, -np.inf], dtype=np.float64)
    assert list(ref.quantize(x, "uint64", 1.0, 0).astype(object)) == [2**64 - 1, 2**63, 0, 0, 2, 2, 0, 2**64 - 1, 0]
    assert list(ref.quantize(x, "int64", 1.0, 0)) == [2**63 - 1, 2**63 - 1, -(2**63), -(2**63), 2, 2, 0, 2**63 - 1, -(2**63)]
    # float32 inputs just below 2^31 and at it, into int32 with a zero point.
    y = np.array([2.0**31 - 128, 2.0**31, -(2.0**31)], dtype=np.float32)
    assert list(ref.quantize(y, "int32", 1.0, -5)) == [2**31 - 128 - 5, 2**31 - 5, -(2**31)]


@pytest.mark.parametrize("nbits", [2, 4])
def test_pack_unpack_round_trip(rng, nbits):
    for n in (0, 1, 3, 4, 5, 17):
        v = rng.integers(-(1 << (nbits - 1)), 1 << (nbits - 1), n)
        packed = ref.pack_bits(v, nbits)
        assert packed.size == -(-n * nbits // 8)
        assert np.array_equal(ref.unpack_bits(packed, n, nbits, signed=True), v)
    assert ref.pack_bits([1, 2, 3, 0, 1], 2).tolist() == [0b00111001, 0b01]
