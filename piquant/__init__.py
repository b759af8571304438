"""piquant: fast multithreaded CPU quantization kernels (Zig), for numpy and torch.

    import piquant
    q = piquant.quantize(x, "uint4")          # params computed, result packed
    y = piquant.dequantize(q)                  # back to float32, same shape

``axis=``/``group_size=`` give per-channel/per-group parameters;
``piquant.gguf`` reads and writes llama.cpp's GGUF blocks (Q8_0, Q4_0, Q4_1, Q5_0,
Q5_1, MXFP4, and the K-quants Q4_K, Q5_K, Q6_K).

Also offers pi-quant's API (``Context``, ``RoundMode``, ``ReduceOp``,
``DataType``, ``piquant.torch``) so code written for it runs unchanged.
"""

from __future__ import annotations

from typing import Any

from . import _backend, gguf
from ._api import Quantized, QuantParams, compute_params, dequantize, fake_quantize, quantize
from ._context import Context, ReduceOp, RoundMode
from ._dtypes import DataType

__version__ = "0.1.0"

__all__ = [
    "Context",
    "DataType",
    "QuantParams",
    "Quantized",
    "ReduceOp",
    "RoundMode",
    "compute_params",
    "dequantize",
    "fake_quantize",
    "gguf",
    "info",
    "quantize",
]


def info(ctx: Context | None = None) -> dict[str, Any]:
    """What piquant runs on: version, backend, selected and available ISA
    variants, thread count and the library's path."""
    ctx = ctx or Context.get()
    return {
        "version": __version__,
        "backend": ctx.backend.name,
        "isa": ctx.isa,
        "available_isas": _backend.available_isas(),
        "num_threads": ctx.num_threads,
        "library": _backend.library_path(),
    }


def __getattr__(name: str) -> Any:
    # pi-quant exposes its torch helpers as piquant.torch; import lazily so
    # that importing piquant never imports torch.
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'piquant' has no attribute {name!r}")
