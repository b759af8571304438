from __future__ import annotations

import numpy as np
import pytest

import piquant
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
    return np.random.default_rng(abs(hash(request.node.nodeid)) % (2**32))
