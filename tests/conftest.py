from __future__ import annotations

import zlib

import numpy as np
import pytest

import piquant
import piquant_reference as ref
from piquant import _backend

ISAS = _backend.available_isas()
THREADS = (1, 2, 3)


@pytest.fixture(scope="session")
def contexts():
    """One context per (ISA variant this CPU runs, thread count)."""
    made: dict[tuple[str, int], piquant.Context] = {}

    def get(isa: str, threads: int) -> piquant.Context:
        if (isa, threads) not in made:
            made[(isa, threads)] = piquant.Context(threads, isa=isa)
        return made[(isa, threads)]

    yield get
    for ctx in made.values():
        ctx.close()


@pytest.fixture
def rng(request):
    # A seed per test, stable across runs, so a failure reproduces.
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def random_quantized(rng, n: int, qtype: str) -> np.ndarray:
    """Stored data of n elements: every bit pattern, packed fields included."""
    st = ref.storage_dtype(qtype)
    nbytes = -(-n * ref.bits(qtype) // 8)
    data = rng.integers(0, 256, nbytes, dtype=np.uint16).astype(np.uint8)
    if ref.bits(qtype) < 8:
        used = n * ref.bits(qtype) % 8
        if used:
            data[-1] &= (1 << used) - 1
        return data
    return data.view(st)


def as_bytes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)
