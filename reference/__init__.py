"""piquant_reference: the specification of piquant's operations in plain numpy.

Every native kernel must produce bit-identical results to these functions.
docs/semantics.md states the same rules in prose; the modules follow its
sections in order, so the two can be read side by side:

=================================================  ======================
docs/semantics.md                                  module
=================================================  ======================
Types                                              ``types``
Parameters; Per-channel and per-group parameters   ``parameters``
quantize (and its generator of stochastic rounding) ``quantize``
dequantize                                         ``dequantize``
fake_quantize                                      ``fake_quantize``
compute_params                                     ``compute_params``
FP8 types                                          ``float8``
MX block formats and NVFP4                         ``mx``
GGUF block formats                                 ``gguf``
GGUF K-quants                                      ``gguf_kquants``
=================================================  ======================

It is also piquant's fallback backend when the native library cannot be
loaded. Float arrays are numpy float32, float64, float16, or
``ml_dtypes.bfloat16``; a bfloat16 array may also be given as its raw
``uint16`` bits with ``float_dtype="bfloat16"`` (results are then raw bits
too). Quantized data of 8 bits and more is an array of the matching numpy
integer type; 2- and 4-bit data is a flat ``uint8`` array of packed bytes,
first element in the lowest bits.
"""

from __future__ import annotations

from . import float8, gguf, mx
from .compute_params import Params, compute_params, minmax
from .dequantize import _exact_difference, dequantize
from .fake_quantize import fake_quantize
from .parameters import layout
from .quantize import quantize, uniforms
from .types import (
    FLOAT_DTYPES,
    QUANTIZED_DTYPES,
    _float_bound,
    _nearest_float,
    bf16_bits_to_f32,
    bits,
    compute_dtype,
    f32_to_bf16_bits,
    pack_bits,
    qrange,
    storage_dtype,
    unpack_bits,
)

__all__ = [
    "FLOAT_DTYPES",
    "QUANTIZED_DTYPES",
    "bf16_bits_to_f32",
    "bits",
    "compute_dtype",
    "compute_params",
    "dequantize",
    "f32_to_bf16_bits",
    "fake_quantize",
    "layout",
    "minmax",
    "pack_bits",
    "qrange",
    "quantize",
    "storage_dtype",
    "uniforms",
    "unpack_bits",
]

# Not in __all__: the reference's own tests check these building blocks.
_ = (Params, float8, gguf, mx, _exact_difference, _float_bound, _nearest_float)
