from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import pytest

import piquant
import piquant_reference as ref
from piquant import _backend

ISAS = _backend.available_isas()
THREADS = (1, 2, 3)

NP_FLOAT = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def in_float_type(x: np.ndarray, ftype: str, rng: np.random.Generator) -> np.ndarray:
    """float32 ``x`` in ``ftype`` (bfloat16 rounded as the reference does);
    beyond 64 elements, one in 32 overwritten with raw bit patterns (NaN
    payloads, denormals, infinities)."""
    if ftype == "bfloat16":
        x = ref.f32_to_bf16_bits(x).view(ml_dtypes.bfloat16)
    else:
        with np.errstate(over="ignore"):
            x = x.astype(NP_FLOAT[ftype])
    n = x.size
    if n > 64:
        width = x.dtype.itemsize
        bits = rng.integers(0, 2**63, n // 32, dtype=np.uint64).astype(np.dtype(f"u{width}"))
        x.view(bits.dtype)[rng.integers(0, n, bits.size)] = bits
    return x


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


def at_offset(x: np.ndarray, offset: int) -> np.ndarray:
    """A copy of x whose data starts `offset` elements past a 64-byte boundary."""
    raw = np.empty(x.nbytes + 64 + offset * x.itemsize, np.uint8)
    start = -raw.ctypes.data % 64 + offset * x.itemsize
    y = raw[start : start + x.nbytes].view(x.dtype)
    y[...] = x
    return y
