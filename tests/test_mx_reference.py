"""piquant_reference.mx against torchao 0.18's `to_mx`, `to_dtype` and
`nvfp4_quantize`, bit for bit, on random and adversarial finite blocks
(all-zero, denormal, amax on either side of every power of two, ties of
each element format, values at and past the element maximum), float32 and
bfloat16 inputs, both scale rules."""

from __future__ import annotations

import contextlib
import io
import os
import warnings

import ml_dtypes
import numpy as np
import pytest

import piquant_reference as ref
from piquant_reference import mx

torch = pytest.importorskip("torch")


def _import_torchao():
    """torchao without its messages: it prints about native libraries it
    cannot load, and torch logs pytree warnings as it is imported."""
    os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from torchao.prototype.mx_formats import constants, mx_tensor, nvfp4_tensor
            from torchao.prototype.mx_formats.config import ScaleCalculationMode
        except ImportError:
            return None
    return constants, mx_tensor, nvfp4_tensor, ScaleCalculationMode


_ao = _import_torchao()
pytestmark = pytest.mark.skipif(_ao is None, reason="torchao 0.18 (the test extra) is not installed")


def _elem(fmt: str):
    constants = _ao[0]
    return {"mxfp8_e4m3": torch.float8_e4m3fn, "mxfp8_e5m2": torch.float8_e5m2, "mxfp6_e2m3": constants.DTYPE_FP6_E2M3,
            "mxfp6_e3m2": constants.DTYPE_FP6_E3M2, "mxfp4": torch.float4_e2m1fn_x2}[fmt]


MX = ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4")


def element_grid(fmt: str) -> np.ndarray:
    e = mx.ELEMENTS[fmt]
    codes = np.arange(1 << (e.bits - 1), dtype=np.uint8)
    v = mx._decode(codes, fmt).astype(np.float64)
    return np.unique(v[np.isfinite(v)])


def adversarial_blocks(rng, fmt: str, rows: int, block: int) -> np.ndarray:
    """Rows of blocks: random magnitudes over the float32 range; blocks of
    zeros, of denormals, with amax a few ulps either side of a power of two
    (where the shared exponent changes), of element-grid values and
    their ties scaled by a power of two, and of ties and their float32
    neighbours in blocks whose amax is the format's max, scaled by a power
    of two (so the elements are exactly those values: the binade edges,
    the subnormal/normal boundary, round-ups into the next binade)."""
    g = element_grid(fmt)
    mids = (g[1:] + g[:-1]) / 2
    out = []
    for _ in range(rows):
        kind = rng.integers(0, 7)
        if kind == 0:
            b = rng.standard_normal(block) * np.exp2(rng.integers(-60, 60))
        elif kind == 1:
            b = np.zeros(block)
            b[rng.integers(0, block, 3)] = rng.choice([-0.0, 0.0], 3)
        elif kind == 2:
            b = rng.standard_normal(block) * 1e-40
        elif kind == 3:
            p = np.float32(np.exp2(rng.integers(-126, 127)))
            top = np.float32(p)
            for _ in range(int(rng.integers(0, 4))):
                top = np.nextafter(top, np.float32(np.inf) if rng.random() < 0.5 else np.float32(0))
            b = rng.uniform(-1, 1, block) * float(top)
            b[rng.integers(0, block)] = float(top) * rng.choice([-1, 1])
        elif kind == 4:
            k = float(np.exp2(rng.integers(-30, 30)))
            b = rng.choice(np.concatenate([g, mids, -g, -mids]), block) * k
        elif kind == 5:
            e = mx.ELEMENTS[fmt]
            k = float(np.exp2(rng.integers(-30, 30)))
            b = rng.choice([e.max, e.max * 1.01, -e.max, e.max + (g[-1] - g[-2]) / 2, 1.0, 0.5], block) * k
        else:
            m32 = mids.astype(np.float32)
            pool = np.concatenate([g, mids, np.nextafter(m32, np.float32(np.inf)), np.nextafter(m32, np.float32(0))]).astype(np.float64)
            k = float(np.exp2(rng.integers(-30, 30)))
            b = rng.choice(np.concatenate([pool, -pool]), block)
            b[rng.integers(0, block)] = mx.ELEMENTS[fmt].max * rng.choice([-1, 1])
            b = b * k
        out.append(b)
    with np.errstate(over="ignore"):
        return np.array(out, np.float64).astype(np.float32).reshape(rows, block)


def as_input(x: np.ndarray, ftype: str):
    """numpy input for the reference and the same values as a torch tensor."""
    if ftype == "bfloat16":
        xb = ref.f32_to_bf16_bits(x).view(ml_dtypes.bfloat16)
        return xb, torch.from_numpy(xb.view(np.uint16).copy()).view(torch.bfloat16)
    return x, torch.from_numpy(x.copy())


@pytest.mark.parametrize("ftype", ("float32", "bfloat16"))
@pytest.mark.parametrize("mode", ("floor", "rceil"))
@pytest.mark.parametrize("fmt", MX)
def test_to_mx_and_to_dtype(rng, fmt, mode, ftype):
    _, mx_tensor, _, Mode = _ao
    sm = Mode.FLOOR if mode == "floor" else Mode.RCEIL
    for block in (32, 16):
        x = adversarial_blocks(rng, fmt, 600, block).reshape(20, -1)
        xr, xt = as_input(x, ftype)
        s, d = mx_tensor.to_mx(xt, _elem(fmt), block, sm)
        data, scales = mx.quantize(xr, fmt, block, mode)
        np.testing.assert_array_equal(scales, s.view(torch.uint8).numpy().reshape(-1), err_msg=f"scales, block {block}")
        np.testing.assert_array_equal(data.view(np.uint8), d.view(torch.uint8).numpy().reshape(-1), err_msg=f"data, block {block}")
        for target in (torch.float32, torch.bfloat16):
            back = mx_tensor.to_dtype(d, s, _elem(fmt), block, target)
            mine = mx.dequantize(data, scales, fmt, block)
            if target is torch.bfloat16:
                mine = ref.f32_to_bf16_bits(mine)
                back = back.view(torch.uint16)
            else:
                mine = mine.view(np.uint32)
                back = back.view(torch.int32)
            np.testing.assert_array_equal(mine.view(back.numpy().dtype), back.numpy().reshape(-1), err_msg=f"to_dtype {target}")


def test_rceil_near_every_power_of_two():
    """RCEIL's exponent is ceil(log2(amax / max)) with log2 rounded to
    float32: checked on the 64 floats either side of every power of two."""
    _, mx_tensor, _, Mode = _ao
    p = np.exp2(np.arange(-126, 127, dtype=np.float64)).astype(np.float32)
    steps = np.arange(-64, 65)
    a = (p.view(np.uint32)[:, None].astype(np.int64) + steps[None, :]).astype(np.uint32).view(np.float32).reshape(-1)
    x = np.zeros((a.size, 32), np.float32)
    x[:, 5] = a
    for fmt in MX:
        s, _ = mx_tensor.to_mx(torch.from_numpy(x), _elem(fmt), 32, Mode.RCEIL)
        _, scales = mx.quantize(x, fmt, 32, "rceil")
        np.testing.assert_array_equal(scales, s.view(torch.uint8).numpy().reshape(-1), err_msg=fmt)
        s, _ = mx_tensor.to_mx(torch.from_numpy(x), _elem(fmt), 32, Mode.FLOOR)
        _, scales = mx.quantize(x, fmt, 32, "floor")
        np.testing.assert_array_equal(scales, s.view(torch.uint8).numpy().reshape(-1), err_msg=fmt)


@pytest.mark.parametrize("ftype", ("float32", "bfloat16"))
def test_nvfp4(rng, ftype):
    nvfp4 = _ao[2]
    x = adversarial_blocks(rng, "nvfp4", 800, 16).reshape(40, -1)
    xr, xt = as_input(x, ftype)
    for per_tensor in (None, float(np.float32(np.abs(x).max() / (448 * 6))), 0.37):
        pt = None if per_tensor is None else torch.tensor(per_tensor, dtype=torch.float32)
        s, d = nvfp4.nvfp4_quantize(xt, 16, pt)
        data, scales = mx.quantize(xr, "nvfp4", 16, per_tensor_scale=per_tensor)
        np.testing.assert_array_equal(scales.view(np.uint8), s.view(torch.uint8).numpy().reshape(-1), err_msg=f"scales {per_tensor}")
        np.testing.assert_array_equal(data, d.view(torch.uint8).numpy().reshape(-1), err_msg=f"data {per_tensor}")


def test_mxint8_values():
    """MXINT8 (OCP): int8 k stands for k · 2^-6, shared exponent
    floor(log2 amax) (emax 0), nearest even, saturating to [-128, 127]."""
    x = np.zeros(32, np.float32)
    x[:6] = [1.5, -1.0, 1 / 128, 3 / 128, -2.0, 1.99]
    data, scales = mx.quantize(x, "mxint8", 32, "floor")
    assert scales[0] == 127 + 1  # amax 2 = 2^1
    # y = x / 2: 0.75 → 48, -0.5 → -32, 2^-8 → 0.25 → 0, 3·2^-8 → 0.75 → 1 (0.75 rounds to 1), -1 → -64, 0.995 → 63.68 → 64
    assert list(data[:6]) == [48, -32, 0, 1, -64, 64]
    np.testing.assert_array_equal(mx.dequantize(data, scales, "mxint8")[:6], np.array([48, -32, 0, 1, -64, 64], np.float32) / 32)
