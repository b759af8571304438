"""Inputs a hostile but realistic user passes (issue 13, items 3–5, 7, 9, 10):
views with storage offsets, negative views, a Quantized whose dtype does not
match its data, hostile ``shape=``, odd scale and zero point objects, special
torch layouts. Each call gives the reference's result or an exception that
names the argument, and leaves ``out=`` untouched when it raises. Cases that
could read out of bounds run in a subprocess, so that a crash fails a test
instead of killing the suite."""

from __future__ import annotations

import decimal
import fractions
import functools
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import piquant
import piquant_reference as ref
from piquant import DataType

warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")

PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
QTYPES = [dt.short_name for dt in DataType if dt.is_quantized]


def tensor_of(a: np.ndarray) -> torch.Tensor:
    """torch.from_numpy, which takes no ml_dtypes arrays: FP8 through its bytes."""
    if a.dtype.name.startswith("float8"):
        return torch.from_numpy(a.view(np.uint8)).view(getattr(torch, a.dtype.name))
    return torch.from_numpy(a)
TORCH_Q = {"quint8": torch.quint8, "qint8": torch.qint8, "qint32": torch.qint32, "quint4x2": torch.quint4x2, "quint2x4": torch.quint2x4}
TORCH_Q_TYPE = {"quint8": "uint8", "qint8": "int8", "qint32": "int32", "quint4x2": "uint4", "quint2x4": "uint2"}


def isolated(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter with this test directory importable."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def run_isolated(name: str) -> None:
    """Runs the generated cases of ``name`` (a function of this module) in a subprocess."""
    r = isolated(f"import warnings; warnings.simplefilter('ignore')\nimport test_hostile_inputs as t\nt.{name}()\nprint('passed')", timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("passed"), f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def raises_naming(exc: type[Exception], arg: str):
    """pytest.raises for an exception whose message starts by naming ``arg``."""
    return pytest.raises(exc, match="^" + re.escape(arg) + r"(\[\d+\])?: ")


def as_bytes(a) -> bytes:
    if isinstance(a, torch.Tensor):
        a = a.detach().contiguous().view(-1).view(torch.uint8).numpy() if a.numel() else np.empty(0, np.uint8)
    return np.ascontiguousarray(a).tobytes()


# ------------------------------------------------------------ item 3: a Quantized's dtype and its data


def test_a_quantized_wider_than_its_data_is_refused():
    q = piquant.Quantized(np.full(4, 7, np.uint8), DataType.INT64, (4,), 1.0, 0)
    with raises_naming(TypeError, "q.data"):
        piquant.dequantize(q)
    out = np.full(4, 5.0, np.float32)
    with raises_naming(TypeError, "q.data"):
        piquant.dequantize(q, out=out)
    assert (out == 5.0).all()


def test_a_quantized_wider_than_its_data_does_not_crash_at_20m_elements():
    r = isolated(
        "import numpy as np, piquant\n"
        "n = 20_000_000\n"
        "q = piquant.Quantized(np.full(n, 7, np.uint8), piquant.DataType.INT64, (n,), 1.0, 0)\n"
        "for kw in ({}, {'out': np.empty(n, np.float32)}):\n"
        "    try:\n        piquant.dequantize(q, **kw)\n    except TypeError as e:\n        assert str(e).startswith('q.data: '), e\n"
        "    else:\n        raise AssertionError('accepted')\n"
        "print('refused')"
    )
    assert r.returncode == 0 and r.stdout.strip() == "refused", r.stdout + r.stderr


def test_a_quantized_with_more_data_than_its_shape_is_refused_on_both_paths():
    q = piquant.Quantized(np.ones(8, np.uint8), DataType.UINT8, (4,), 1.0, 0)
    for out in (None, np.full(4, 5.0, np.float32), np.full(8, 5.0, np.float32)):
        with raises_naming(ValueError, "q.data"):
            piquant.dequantize(q, out=out)
        assert out is None or (out == 5.0).all()


def test_a_quantized_dtype_given_as_a_string_works_on_both_paths():
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    q = piquant.quantize(x, "int8", scale=0.01, zero_point=3)
    named = piquant.Quantized(q.data, "int8", q.shape, q.scale, q.zero_point)
    want = piquant.dequantize(q)
    assert np.array_equal(piquant.dequantize(named), want)
    out = np.empty((3, 4), np.float32)
    assert piquant.dequantize(named, out=out) is out and np.array_equal(out, want)
    with raises_naming(TypeError, "q.dtype"):
        piquant.dequantize(piquant.Quantized(q.data, "float32", q.shape, q.scale, q.zero_point))


def test_a_quantized_holding_a_torch_quantized_tensor_of_another_type_is_refused():
    x = torch.randn(4, 6)
    for qname, other in (("quint8", "int8"), ("quint4x2", "uint8"), ("quint4x2", "uint2"), ("qint32", "int64"), ("quint2x4", "uint4")):
        t = piquant.quantize(x, TORCH_Q[qname]).data
        same = piquant.Quantized(t, TORCH_Q_TYPE[qname], (4, 6), float(t.q_scale()), int(t.q_zero_point()))
        assert torch.equal(piquant.dequantize(same), piquant.dequantize(t))
        wrong = piquant.Quantized(t, other, (4, 6), float(t.q_scale()), 0)
        for out in (None, torch.full((4, 6), 5.0)):
            with raises_naming(TypeError, "q.data"):
                piquant.dequantize(wrong, out=out)
            assert out is None or bool((out == 5.0).all())


STORAGE = {"uint8": np.uint8, "int8": np.int8, "uint16": np.uint16, "int16": np.int16, "uint32": np.uint32, "int32": np.int32,
           "uint64": np.uint64, "int64": np.int64}


@settings(max_examples=300, deadline=None)
@given(
    qtype=st.sampled_from(QTYPES),
    data_type=st.sampled_from(list(STORAGE)),
    numel=st.integers(0, 40),
    extra=st.sampled_from([0, 0, 1, -1, 3, 64]),
    torch_data=st.booleans(),
    with_out=st.booleans(),
)
def mismatched_quantized_cases(qtype, data_type, numel, extra, torch_data, with_out):
    """Any storage dtype and length under any Quantized dtype and shape."""
    bits = ref.bits(qtype)
    count = max(0, (-(-numel * bits // 8) if bits < 8 else numel) + extra)
    rng = np.random.default_rng(numel * 131 + count)
    data = rng.integers(0, 256, count * np.dtype(STORAGE[data_type]).itemsize, dtype=np.uint16).astype(np.uint8).view(STORAGE[data_type])
    held = torch.from_numpy(data.copy()) if torch_data and data_type in ("uint8", "int8", "int16", "int32", "int64") else data
    q = piquant.Quantized(held, qtype, (numel,), 0.25, 0)
    storage_type = "uint8" if bits < 8 else qtype
    ok_count = -(-numel * bits // 8) if bits < 8 else numel
    out = None
    if with_out:
        out = torch.full((numel,), 5.0) if held is not data else np.full(numel, 5.0, np.float32)
    if data_type == storage_type and count == ok_count:
        got = piquant.dequantize(q, out=out)
        want = ref.dequantize(data, qtype, 0.25, 0, numel=numel)
        assert as_bytes(got) == as_bytes(want)
        return
    before = as_bytes(out) if out is not None else None
    exc = TypeError if data_type != storage_type else ValueError
    with raises_naming(exc, "q.data"):
        piquant.dequantize(q, out=out)
    assert out is None or as_bytes(out) == before


def test_mismatched_quantized_dtypes_generated_in_a_subprocess():
    run_isolated("mismatched_quantized_cases")


# ------------------------------------------------------------ item 4 and views with storage offsets


def packed_view_cases_torch(qname: str, rows: int, cols: int, start: int, stop: int) -> None:
    x = torch.randn(rows, cols)
    q = piquant.quantize(x, TORCH_Q[qname]).data
    full = piquant.dequantize(q)
    view = q[start:stop]
    bits = ref.bits(TORCH_Q_TYPE[qname])
    if view.numel() and start * cols * bits % 8:
        with raises_naming(ValueError, "q"):
            piquant.dequantize(view)
        return
    assert torch.equal(piquant.dequantize(view), full[start:stop])
    out = torch.full(tuple(view.shape), 5.0)
    assert torch.equal(piquant.dequantize(view, out=out), full[start:stop])
    # pi-quant's API reads the same bytes
    wrapped = piquant.quantize(x, TORCH_Q[qname])
    import piquant.torch as pt

    got = pt.dequantize(view, scale=wrapped.scale, zero_point=wrapped.zero_point, dtype=torch.float32)
    assert torch.equal(got, full[start:stop])


@PROFILE
@given(
    qname=st.sampled_from(list(TORCH_Q)),
    rows=st.integers(1, 9),
    cols=st.integers(1, 9),
    data=st.data(),
)
def row_slice_cases(qname, rows, cols, data):
    start = data.draw(st.integers(0, rows))
    stop = data.draw(st.integers(start, rows))
    packed_view_cases_torch(qname, rows, cols, start, stop)


def test_row_slices_of_torch_quantized_tensors_generated_in_a_subprocess():
    run_isolated("row_slice_cases")


def test_a_row_slice_of_a_packed_quantized_tensor_item_4():
    q = piquant.quantize(torch.randn(3, 4), torch.quint4x2).data
    full = piquant.dequantize(q)
    assert torch.equal(piquant.dequantize(q[1:]), full[1:])
    assert torch.equal(piquant.dequantize(piquant.Quantized(q[1:], DataType.UINT4, (2, 4), float(q.q_scale()), int(q.q_zero_point()))), full[1:])
    with raises_naming(ValueError, "q"):  # starts inside a byte
        piquant.dequantize(q.reshape(-1)[1:])
    with raises_naming(ValueError, "q"):  # torch cannot copy it, nor do we read it strided
        piquant.dequantize(q.t())


def test_a_row_slice_of_a_packed_quantized_tensor_at_16m_elements():
    r = isolated(
        "import warnings; warnings.simplefilter('ignore')\n"
        "import torch, piquant\n"
        "x = torch.randn(4, 4_000_000)\n"
        "q = piquant.quantize(x, torch.quint4x2).data\n"
        "full = piquant.dequantize(q)\n"
        "assert torch.equal(piquant.dequantize(q[1:]), full[1:])\n"
        "assert torch.equal(piquant.dequantize(q[3:]), full[3:])\n"
        "print('right')"
    )
    assert r.returncode == 0 and r.stdout.strip() == "right", r.stdout + r.stderr


@PROFILE
@given(
    lib=st.sampled_from(["numpy", "torch"]),
    ftype=st.sampled_from(["float32", "float64", "float16", "bfloat16"]),
    qtype=st.sampled_from(QTYPES),
    n=st.integers(0, 70),
    offset=st.integers(0, 9),
    tail=st.integers(0, 9),
)
def test_views_with_storage_offsets(lib, ftype, qtype, n, offset, tail):
    """Sliced float inputs, and out= as a slice of a larger array whose other
    bytes stay untouched; plain and packed types."""
    if lib == "numpy" and ftype == "bfloat16":
        ftype = "float32"
    rng = np.random.default_rng(n * 97 + offset * 7 + tail)
    base = (rng.standard_normal(offset + n + tail) * 3).astype(np.float32)
    xs = torch.from_numpy(base).to(getattr(torch, ftype)) if lib == "torch" else base.astype(ftype)
    x = xs[offset : offset + n]
    xr = x.float().numpy() if lib == "torch" and ftype == "bfloat16" else (x.numpy() if lib == "torch" else x)
    kw = {"float_dtype": "bfloat16"} if ftype == "bfloat16" else {}
    if ftype == "bfloat16":
        xr = ref.f32_to_bf16_bits(xr)
    want = ref.quantize(xr, qtype, 0.125, 0, **kw)
    storage_n = want.size
    storage = ref.storage_dtype(qtype)
    big = np.full(offset + storage_n + tail, 0x5A, storage)
    bigt = tensor_of(big.copy()) if lib == "torch" else big
    out = bigt[offset : offset + storage_n]
    before = as_bytes(bigt)
    got = piquant.quantize(x, qtype, scale=0.125, zero_point=0, out=out)
    assert as_bytes(got.data) == as_bytes(want)
    after = as_bytes(bigt)
    item = np.dtype(storage).itemsize
    assert after[: offset * item] == before[: offset * item] and after[(offset + storage_n) * item :] == before[(offset + storage_n) * item :]
    # and back, from a sliced copy of the integers
    qbig = bigt.clone() if lib == "torch" else big.copy()
    qv = qbig[offset : offset + storage_n]
    if ref.bits(qtype) < 8:
        back = piquant.dequantize(qv, scale=0.125, zero_point=0, qdtype=qtype, shape=(n,))
    else:
        back = piquant.dequantize(qv, scale=0.125, zero_point=0)
    assert as_bytes(back) == as_bytes(ref.dequantize(want, qtype, 0.125, 0, numel=n))


def test_a_resized_storage_is_refused_not_read():
    """A storage can be resized under its views (FSDP does): the byte length
    is checked, not assumed from the shape."""
    x = torch.ones(4)
    x.untyped_storage().resize_(0)
    with raises_naming(ValueError, "x"):
        piquant.quantize(x, "uint8", scale=1.0, zero_point=0)
    with raises_naming(ValueError, "x"):
        piquant.quantize(x, "uint8", scale=1.0, zero_point=0, out=torch.empty(4, dtype=torch.uint8))
    r = isolated(  # written past its storage, this would corrupt the heap
        "import torch, piquant\n"
        "for n in (1000, 10_000_000):\n"
        "    out = torch.empty(n, dtype=torch.uint8)\n"
        "    out.untyped_storage().resize_(16)\n"
        "    for fast in (True, False):\n"
        "        try:\n"
        "            piquant.quantize(torch.ones(n), 'uint8', scale=1.0 if fast else 1, zero_point=0, out=out)\n"
        "        except ValueError as e:\n"
        "            assert str(e).startswith('out: '), e\n"
        "        else:\n"
        "            raise AssertionError('accepted')\n"
        "print('refused')"
    )
    assert r.returncode == 0 and r.stdout.strip() == "refused", r.stdout + r.stderr


@pytest.mark.parametrize("arg", ["scale", "zero_point"])
@pytest.mark.parametrize("given", [True, False], ids=["used in place", "converted"])
def test_a_resized_storage_of_per_set_parameters_is_refused_not_read(arg, given):
    """Per-channel parameter tensors are read where they lie (when of the
    dtype and layout needed) or viewed by numpy (otherwise): a storage
    resized under them is refused by name either way, before either reads."""
    x = torch.ones(4, 8)
    params = {"scale": torch.full((4,), 0.5, dtype=torch.float32 if given else torch.float16),
              "zero_point": torch.zeros(4, dtype=torch.int64 if given else torch.int32)}
    piquant.quantize(x, "uint8", axis=0, **params)  # accepted as they are
    params[arg] = params[arg].clone()
    params[arg].untyped_storage().resize_(0 if arg == "scale" else 8)
    with raises_naming(ValueError, arg):
        piquant.quantize(x, "uint8", axis=0, **params)
    with raises_naming(ValueError, arg):
        piquant.dequantize(torch.zeros(4, 8, dtype=torch.uint8), axis=0, **params)
    strided = torch.full((4, 2), 0.5)[:, 0]  # a non-contiguous view: its span is 7 elements, not 4
    strided.untyped_storage().resize_(24)
    with raises_naming(ValueError, "scale"):
        piquant.quantize(x, "uint8", axis=0, scale=strided, zero_point=params["zero_point"] if arg == "scale" else torch.zeros(4))


# ------------------------------------------------------------ item 5: negative and conjugate bits


def test_negative_and_conjugate_views_are_read_as_their_values():
    imag = torch.tensor([1 + 2j]).conj().imag
    assert imag.is_neg()
    assert torch.equal(piquant.fake_quantize(imag, "int8", scale=0.1, zero_point=0), torch.tensor([-2.0]))
    neg = torch._neg_view(torch.arange(1.0, 5.0))
    assert piquant.quantize(neg, "int8", scale=0.1, zero_point=0).data.tolist() == [-10, -20, -30, -40]
    assert piquant.compute_params(neg, "int8") == piquant.compute_params(neg.resolve_neg(), "int8")
    out = torch.empty(4, dtype=torch.int8)
    assert piquant.quantize(neg, "int8", scale=0.1, zero_point=0, out=out).data.tolist() == [-10, -20, -30, -40]


def test_an_out_with_the_negative_bit_is_refused():
    out = torch._neg_view(torch.zeros(4))
    for call in (
        lambda: piquant.fake_quantize(torch.arange(1.0, 5.0), "int8", scale=0.1, zero_point=0, out=out),
        lambda: piquant.dequantize(torch.ones(4, dtype=torch.uint8), scale=1.0, zero_point=0, out=out),
        lambda: piquant.fake_quantize(out, "int8", scale=0.1, zero_point=0, out=out),
    ):
        with raises_naming(ValueError, "out"):
            call()
        assert out.resolve_neg().tolist() == [0.0] * 4
    iout = torch._neg_view(torch.zeros(4, dtype=torch.int8))
    with raises_naming(ValueError, "out"):
        piquant.quantize(torch.ones(4), "int8", scale=0.1, zero_point=0, out=iout)


def test_float8_tensors_with_the_negative_bit_are_refused():
    """torch cannot negate float8 tensors, so a lazily negated one can be neither read nor written."""
    neg = torch._neg_view(torch.zeros(4, dtype=torch.uint8).view(torch.float8_e4m3fn))
    with raises_naming(ValueError, "q"):
        piquant.dequantize(neg, scale=1.0)
    with raises_naming(ValueError, "out"):
        piquant.quantize(torch.ones(4), "float8_e4m3fn", scale=1.0, out=neg)


@PROFILE
@given(
    ftype=st.sampled_from(["float32", "float64", "float16", "bfloat16"]),
    qtype=st.sampled_from(QTYPES),
    n=st.integers(0, 50),
    op=st.sampled_from(["quantize", "quantize_out", "fake_quantize", "fake_quantize_out", "compute_params", "per_channel", "dequantize_out"]),
    via_conj=st.booleans(),
)
def test_negative_views_generated(ftype, qtype, n, op, via_conj):
    """Every call reads a negative view as its values, and refuses one as out."""
    rng = np.random.default_rng(n * 13 + len(op))
    plain = torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 4).to(getattr(torch, ftype))
    if via_conj and ftype in ("float32", "float64"):
        neg = torch.complex(torch.zeros_like(plain), -plain).conj().imag  # the imaginary part of a conjugate: the negative bit
    else:
        neg = torch._neg_view(-plain)
    assert neg.is_neg() and torch.equal(neg, plain)
    kw = dict(scale=0.0625, zero_point=0)
    if op == "quantize":
        assert as_bytes(piquant.quantize(neg, qtype, **kw).data) == as_bytes(piquant.quantize(plain, qtype, **kw).data)
    elif op == "quantize_out":
        want = piquant.quantize(plain, qtype, **kw).data
        out = torch.empty_like(want)
        assert as_bytes(piquant.quantize(neg, qtype, out=out, **kw).data) == as_bytes(want)
    elif op == "fake_quantize":
        assert as_bytes(piquant.fake_quantize(neg, qtype, **kw)) == as_bytes(piquant.fake_quantize(plain, qtype, **kw))
    elif op == "fake_quantize_out":
        out = torch.full_like(plain, 5.0)
        assert as_bytes(piquant.fake_quantize(neg, qtype, out=out, **kw)) == as_bytes(piquant.fake_quantize(plain, qtype, **kw))
        negout = torch._neg_view(torch.full_like(plain, 5.0))
        before = as_bytes(negout.resolve_neg())
        with raises_naming(ValueError, "out"):
            piquant.fake_quantize(plain, qtype, out=negout, **kw)
        assert as_bytes(negout.resolve_neg()) == before
    elif op == "compute_params":
        assert piquant.compute_params(neg, qtype) == piquant.compute_params(plain, qtype)
    elif op == "per_channel":
        x, xp = neg.reshape(1, n), plain.reshape(1, n)
        scales = torch._neg_view(torch.full((n,), -0.0625))
        zps = torch.zeros(n, dtype=torch.int64)
        got = piquant.quantize(x, qtype, scale=scales, zero_point=zps, axis=1)
        want = piquant.quantize(xp, qtype, scale=torch.full((n,), 0.0625), zero_point=zps, axis=1)
        assert as_bytes(got.data) == as_bytes(want.data)
    else:
        q = piquant.quantize(plain, qtype, **kw)
        negout = torch._neg_view(torch.full((n,), 5.0))
        with raises_naming(ValueError, "out"):
            piquant.dequantize(q, out=negout)
        assert negout.resolve_neg().tolist() == [-5.0] * n


# ------------------------------------------------------------ item 7: torch's version counter


def test_writing_out_bumps_the_version_so_backward_raises():
    for write in (
        lambda b: piquant.fake_quantize(torch.randn(4), "int8", scale=0.1, zero_point=0, out=b),
        lambda b: piquant.dequantize(torch.ones(4, dtype=torch.uint8), scale=1.0, zero_point=0, out=b),
        lambda b: piquant.fake_quantize(b, "int8", scale=0.1, zero_point=0, out=b),  # in place
        lambda b: piquant.dequantize(piquant.quantize(torch.randn(4), "uint8"), out=b),
    ):
        a = torch.randn(4, requires_grad=True)
        b = a.exp()  # exp's backward uses its output
        write(b.detach())
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            b.sum().backward()


@pytest.mark.parametrize("form", ["quantize", "fake_quantize", "dequantize", "dequantize_quantized", "gguf_quantize", "gguf_dequantize", "pi_quant"])
def test_every_written_tensor_has_a_new_version(form):
    import piquant.gguf
    import piquant.torch as pt

    x = torch.randn(64)
    calls = {
        "quantize": (torch.empty(64, dtype=torch.uint8), lambda o: piquant.quantize(x, "uint8", scale=0.1, zero_point=3, out=o)),
        "fake_quantize": (torch.empty(64), lambda o: piquant.fake_quantize(x, "uint8", scale=0.1, zero_point=3, out=o)),
        "dequantize": (torch.empty(64), lambda o: piquant.dequantize(torch.ones(64, dtype=torch.uint8), scale=0.1, zero_point=3, out=o)),
        "dequantize_quantized": (torch.empty(64), lambda o: piquant.dequantize(piquant.quantize(x, "uint4"), out=o)),
        "gguf_quantize": (torch.empty(34 * 2, dtype=torch.uint8), lambda o: piquant.gguf.quantize(x, "Q8_0", out=o)),
        "gguf_dequantize": (torch.empty(64), lambda o: piquant.gguf.dequantize(piquant.gguf.quantize(x, "Q8_0"), "Q8_0", out=o)),
        "pi_quant": (
            torch.zeros(64),
            lambda o: pt.dequantize(torch.ones(64, dtype=torch.uint8), scale=0.1, zero_point=3, dtype=torch.float32, out=o, reduce_op="add"),
        ),
    }
    out, call = calls[form]
    v = out._version
    call(out)
    assert out._version > v


# ------------------------------------------------------------ item 9: messages that name the argument

T4 = torch.arange(1.0, 5.0)


@pytest.mark.parametrize(
    "call, exc, arg",
    [
        (lambda: piquant.quantize(T4, "uint8", scale=np.array([0.5]), zero_point=0, out=torch.empty(4, dtype=torch.uint8)), TypeError, "scale"),
        (lambda: piquant.quantize(T4, "uint8", scale=[0.5], zero_point=0, out=torch.empty(4, dtype=torch.uint8)), TypeError, "scale"),
        (lambda: piquant.quantize(T4, "uint8", scale=np.array(0.5), zero_point=0), TypeError, "scale"),
        (lambda: piquant.quantize(T4, "uint8", scale=0.5, zero_point=np.array([0]), out=torch.empty(4, dtype=torch.uint8)), TypeError, "zero_point"),
        (lambda: piquant.quantize(T4, "uint8", scale=2**1100, zero_point=0), ValueError, "scale"),
        (lambda: piquant.quantize(T4.double(), "uint8", scale=2**1100, zero_point=0), ValueError, "scale"),
        (lambda: piquant.quantize(T4, "uint8", scale=-(2**1100), zero_point=0, out=torch.empty(4, dtype=torch.uint8)), ValueError, "scale"),
        (lambda: piquant.quantize(T4, "uint8", scale=0.5, zero_point=2**70), ValueError, "zero_point"),
        (lambda: piquant.quantize(T4, "uint8", scale=decimal.Decimal("0.5"), zero_point=0), TypeError, "scale"),
        (lambda: piquant.quantize(T4, "uint8", scale=True, zero_point=0), TypeError, "scale"),
        (lambda: piquant.quantize(T4, "uint8", scale=0.5, zero_point=True, out=torch.empty(4, dtype=torch.uint8)), TypeError, "zero_point"),
        (
            lambda: piquant.quantize(torch.ones(2, 3), "uint8", scale=torch.ones(2, device="meta"), zero_point=torch.zeros(2, dtype=torch.int64), axis=0),
            ValueError,
            "scale",
        ),
        (
            lambda: piquant.quantize(torch.ones(2, 3), "uint8", scale=torch.ones(2), zero_point=torch.zeros(2, device="meta", dtype=torch.int64), axis=0),
            ValueError,
            "zero_point",
        ),
        (lambda: piquant.quantize(torch.ones(2, 3), "uint8", scale=torch.ones(2).to_sparse(), zero_point=[0, 0], axis=0), TypeError, "scale"),
        (lambda: piquant.quantize(torch.ones(2, 3), "uint8", scale=torch.ones(2, dtype=torch.complex64), zero_point=[0, 0], axis=0), TypeError, "scale"),
        (lambda: piquant.quantize(torch.ones(2, 3), "uint8", scale=[1.0, True], zero_point=[0, 0], axis=0), TypeError, "scale"),
        (lambda: piquant.quantize(torch.ones(2, 3), "uint8", scale=[1.0, "x"], zero_point=[0, 0], axis=0), TypeError, "scale"),
        (lambda: piquant.quantize(torch.ones(2, 3), "uint8", scale=[[1.0], [2.0, 3.0]], zero_point=[0, 0], axis=0), TypeError, "scale"),
        (lambda: piquant.quantize(torch.ones(2, 3), "uint8", scale=[1.0, 2**1100], zero_point=[0, 0], axis=0), ValueError, "scale"),
        (lambda: piquant.quantize(np.ones((2, 3), np.float32), "uint64", scale=[1.0, 1.0], zero_point=[2**64 - 1, -1], axis=0), ValueError, "zero_point"),
        (lambda: piquant.quantize(np.ones((2, 3), np.float32), "uint64", scale=[1.0, 1.0], zero_point=[2**64, 0], axis=0), ValueError, "zero_point"),
        (lambda: piquant.quantize(np.ones((2, 3), np.float32), "uint8", scale=[1.0, 1.0], zero_point=[0, 1.5], axis=0), TypeError, "zero_point"),
        (lambda: piquant.dequantize(np.ones(6, np.uint8), scale=1.0, zero_point=0, shape="6"), TypeError, "shape"),
        (lambda: piquant.dequantize(np.ones(6, np.uint8), scale=1.0, zero_point=0, shape=(2, 3.0)), TypeError, "shape"),
        (lambda: piquant.dequantize(np.ones(6, np.uint8), scale=1.0, zero_point=0, shape=(-2, -3)), ValueError, "shape"),
        (lambda: piquant.dequantize(np.ones(6, np.uint8), scale=1.0, zero_point=0, shape=7), ValueError, "shape"),
        (lambda: piquant.dequantize(np.ones(6, np.uint8), scale=1.0, zero_point=0, shape=object()), TypeError, "shape"),
        (lambda: piquant.quantize(torch.ones(4).to_sparse(), "uint8", scale=1.0, zero_point=0), TypeError, "x"),
        (lambda: piquant.quantize(torch.ones(2, 2).to_sparse_csr(), "uint8", scale=1.0, zero_point=0), TypeError, "x"),
        (lambda: piquant.quantize(torch.ones(2, 2).to_mkldnn(), "uint8", scale=1.0, zero_point=0), TypeError, "x"),
        (lambda: piquant.quantize(torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]), "uint8", scale=1.0, zero_point=0), TypeError, "x"),
        (
            lambda: piquant.quantize(torch.nested.nested_tensor([torch.ones(2), torch.ones(3)], layout=torch.jagged), "uint8", scale=1.0, zero_point=0),
            TypeError,
            "x",
        ),
        (lambda: piquant.quantize(torch.ones(0).to_sparse(), "uint8", scale=1.0, zero_point=0), TypeError, "x"),
        (lambda: piquant.quantize(torch.ones(4).to_sparse(), "uint8", scale=1.0, zero_point=0, out=torch.empty(4, dtype=torch.uint8)), TypeError, "x"),
        (lambda: piquant.quantize(torch.ones(4), "uint8", scale=1.0, zero_point=0, out=torch.empty(4, dtype=torch.uint8).to_sparse()), TypeError, "out"),
        (lambda: piquant.fake_quantize(torch.ones(4), "uint8", scale=1.0, zero_point=0, out=torch.ones(2, 2).to_mkldnn()), TypeError, "out"),
        (lambda: piquant.compute_params(torch.ones(2, 2).to_sparse_csr()), TypeError, "x"),
        (lambda: piquant.dequantize(torch.ones(4, dtype=torch.uint8).to_sparse(), scale=1.0, zero_point=0), TypeError, "q"),
        (lambda: piquant.quantize(torch.ones(4, device="meta"), "uint8", scale=1.0, zero_point=0), ValueError, "x"),
    ],
)
def test_errors_name_the_argument(call, exc, arg):
    with raises_naming(exc, arg):
        call()


def test_a_zero_size_special_tensor_names_the_python_argument():
    x = torch.ones(4)
    x.untyped_storage().resize_(0)  # numel 4, data_ptr NULL
    for call, arg in (
        (lambda: piquant.quantize(x, "uint8", scale=1.0, zero_point=0), "x"),
        (lambda: piquant.compute_params(x), "x"),
        (lambda: piquant.fake_quantize(torch.ones(4), "uint8", scale=1.0, zero_point=0, out=x), "out"),
    ):
        with raises_naming(ValueError, arg):
            call()


def test_bfloat16_and_float16_per_channel_scale_tensors_are_read():
    x = torch.randn(3, 8)
    for sdt in (torch.bfloat16, torch.float16):
        s = torch.tensor([0.5, 0.25, 0.125], dtype=sdt)
        got = piquant.quantize(x, "int8", scale=s, zero_point=torch.zeros(3, dtype=torch.int64), axis=0)
        want = piquant.quantize(x, "int8", scale=s.float(), zero_point=torch.zeros(3, dtype=torch.int64), axis=0)
        assert torch.equal(got.data, want.data)
    import ml_dtypes

    s = np.array([0.5, 0.25, 0.125], ml_dtypes.bfloat16)
    got = piquant.quantize(x.numpy(), "int8", scale=s, zero_point=np.zeros(3, np.int64), axis=0)
    assert np.array_equal(got.data, piquant.quantize(x.numpy(), "int8", scale=s.astype(np.float32), zero_point=np.zeros(3, np.int64), axis=0).data)


def test_uint64_zero_points_near_2_64_in_a_list_are_exact():
    x = np.ones((3, 4), np.float32)
    zps = [2**64 - 1, 2**63 + 1, 5]
    q = piquant.quantize(x, "uint64", scale=[1.0, 1.0, 1.0], zero_point=zps, axis=0)
    assert q.zero_point.tolist() == zps
    assert q.data[:, 0].tolist() == [2**64 - 1, 2**63 + 2, 6]


def test_shape_as_an_integer_is_a_1d_shape():
    y = piquant.dequantize(np.arange(6, dtype=np.uint8), scale=1.0, zero_point=0, shape=6)
    assert y.shape == (6,) and y.tolist() == list(range(6))
    y = piquant.dequantize(np.arange(3, dtype=np.uint8), scale=1.0, zero_point=0, qdtype="uint4", shape=np.int64(5))
    assert y.shape == (5,)


# ------------------------------------------------------------ item 10: both call paths agree


def test_scale_true_after_one_is_refused_with_out():
    x, out = torch.arange(4.0), torch.zeros(4, dtype=torch.uint8)
    piquant.quantize(x, "uint8", scale=1.0, zero_point=0, out=out)
    out.zero_()
    with raises_naming(TypeError, "scale"):
        piquant.quantize(x, "uint8", scale=True, zero_point=0, out=out)
    assert out.tolist() == [0] * 4
    with raises_naming(TypeError, "scale"):
        piquant.quantize(x.numpy(), "uint8", scale=True, zero_point=0, out=out.numpy())


def test_empty_arrays_check_their_per_set_parameters():
    for lib in (np, torch):
        x = lib.ones((0, 3), dtype=lib.float32)
        with raises_naming(ValueError, "scale"):
            piquant.quantize(x, "uint8", scale=[-1.0, 1, 1], zero_point=[0, 0, 0], axis=1)
        with raises_naming(ValueError, "zero_point"):
            piquant.fake_quantize(x, "uint8", scale=[1.0, 1, 1], zero_point=[0, 0, 300], axis=1)
        q = lib.ones((0, 3), dtype=lib.uint8)
        with raises_naming(ValueError, "scale"):
            piquant.dequantize(q, scale=[1.0, 0.0, 1], zero_point=[0, 0, 0], axis=1)


def test_a_negative_shape_is_refused_with_out():
    out = np.full(4, 5.0, np.float32)
    with raises_naming(ValueError, "shape"):
        piquant.dequantize(np.ones(4, np.uint8), scale=1.0, zero_point=0, shape=(-2, -2), out=out)
    assert (out == 5.0).all()
    q = piquant.Quantized(np.ones(4, np.uint8), DataType.UINT8, (-2, -2), 1.0, 0)
    with raises_naming(ValueError, "q.shape"):
        piquant.dequantize(q, out=out)
    assert (out == 5.0).all()


# ------------------------------------------------------------ generated: hostile shape= and odd parameters


SHAPES = st.one_of(
    st.integers(-3, 40),
    st.lists(st.integers(-2, 8), max_size=3).map(tuple),
    st.lists(st.integers(0, 8), max_size=3),
    st.lists(st.integers(0, 8), max_size=3).map(lambda s: tuple(np.int64(d) for d in s)),
    st.sampled_from(["6", (2.0, 3), (True, 6), None, b"\x06", 6.0, np.array(6), np.array([2, 3]), torch.Size([6]), (2**70,), ((2, 3),)]),
)


def _shape_rule(shape):
    """The documented rule: an integer or a sequence of integers, none negative."""
    import numbers

    if shape is None:
        return "none"
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        dims = (int(shape),)
    elif isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__") or getattr(shape, "ndim", 1) == 0:
        return TypeError
    else:
        dims = tuple(shape)
    if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) for d in dims):
        return TypeError
    if any(d < 0 for d in dims):
        return ValueError
    return tuple(int(d) for d in dims)


@PROFILE
@given(shape=SHAPES, qtype=st.sampled_from(["uint8", "int16", "uint4", "int2"]), count=st.integers(0, 12), with_out=st.booleans())
def test_hostile_shapes(shape, qtype, count, with_out):
    bits = ref.bits(qtype)
    storage = ref.storage_dtype(qtype)
    data = (np.arange(count) % 200).astype(np.uint8).view(np.uint8).astype(storage)
    rule = _shape_rule(shape)
    if rule == "none":
        logical = (count * 8 // bits,) if bits < 8 else (count,)
    else:
        logical = rule if isinstance(rule, tuple) else None
    out = None
    if with_out:
        out = np.full(logical if logical is not None and np.prod(logical) < 10**6 else (3,), 5.0, np.float32)
    before = None if out is None else out.tobytes()
    kw = dict(scale=0.5, zero_point=0, qdtype=qtype, shape=shape, out=out)
    if rule in (TypeError, ValueError):
        with raises_naming(rule, "shape"):
            piquant.dequantize(data, **kw)
        assert out is None or out.tobytes() == before
        return
    numel = int(np.prod(logical))
    need = -(-numel * bits // 8) if bits < 8 else numel
    if need != count:
        with raises_naming(ValueError, "shape"):
            piquant.dequantize(data, **kw)
        assert out is None or out.tobytes() == before
        return
    got = piquant.dequantize(data, **kw)
    assert got.shape == logical
    assert as_bytes(got) == as_bytes(ref.dequantize(data, qtype, 0.5, 0, numel=numel))


ODD_SCALES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([np.float32(0.1), np.float16(0.5), np.float64(1e-300), np.longdouble(0.25), np.int8(3), np.uint64(2**63), np.bool_(True)]),
    st.sampled_from([np.array(0.5), np.array([0.5]), [0.5], (0.5,), torch.tensor(0.5), True, False, None, "0.5", 1j]),
    st.integers(-(2**1100), 2**1100),
    st.sampled_from([2**127, 2**128, 2**1023, 2**1024, 10**400]),
    st.fractions(min_value=fractions.Fraction(-10), max_value=fractions.Fraction(10)),
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=0, max_value=10),
)
ODD_ZERO_POINTS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([np.int8(-3), np.uint8(200), np.uint64(2**64 - 1), np.int64(-(2**63)), np.bool_(False), np.float64(1.0)]),
    st.sampled_from([np.array(3), np.array([3]), [3], True, 0.0, 3.0, "3", None, fractions.Fraction(3), decimal.Decimal(3)]),
)


def _param_rule(scale, zero_point, fdt: str, qtype: str, op: str):
    """What the documented rules make of (scale, zero_point), checked in that
    order: the pair used, "computed", or the exception and the argument it
    names. A scale is a real number (numbers.Real, not a bool), finite and
    > 0 with a finite reciprocal in the compute precision; a zero point an
    integer (numbers.Integral, not a bool) in the type's range."""
    import numbers

    if scale is None or zero_point is None:
        if scale is None and zero_point is None and op != "dequantize":
            return "computed"
        return ValueError, "scale, zero_point"
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        return TypeError, "scale"
    try:
        s = float(scale)
    except OverflowError:
        return ValueError, "scale"
    c = np.float64 if fdt == "float64" else np.float32
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ok = np.isfinite(c(s)) and c(s) > 0 and np.isfinite(c(1) / c(s))
    if not ok:
        return ValueError, "scale"
    if isinstance(zero_point, (bool, np.bool_)) or not isinstance(zero_point, numbers.Integral):
        return TypeError, "zero_point"
    lo, hi = ref.qrange(qtype)
    if not lo <= int(zero_point) <= hi:
        return ValueError, "zero_point"
    return s, int(zero_point)


@settings(max_examples=400, deadline=None)
@given(
    scale=ODD_SCALES,
    zero_point=ODD_ZERO_POINTS,
    fdt=st.sampled_from(["float32", "float64"]),
    qtype=st.sampled_from(["uint8", "int8", "int4", "uint64", "int64"]),
    lib=st.sampled_from(["numpy", "torch"]),
    op=st.sampled_from(["quantize", "fake_quantize", "dequantize"]),
    with_out=st.booleans(),
    warm=st.booleans(),
)
def test_odd_scale_and_zero_point_objects(scale, zero_point, fdt, qtype, lib, op, with_out, warm):
    """Each object either gives the reference's result (with float(scale) and
    int(zero_point)) or the documented exception naming the argument; out=
    stays untouched when the call raises. ``warm`` first runs the call with
    scale=1.0, the value True and 1 equal (a cache must not confuse them)."""
    x = np.linspace(-3, 3, 16).astype(fdt)
    xs = torch.from_numpy(x) if lib == "torch" else x
    rule = _param_rule(scale, zero_point, fdt, qtype, op)
    if op == "dequantize":
        q = ref.quantize(x, qtype, 0.5, 0)
        src = torch.from_numpy(q.copy()) if lib == "torch" else q
        out = None
        if with_out:
            o = np.full(16, 7.0, fdt)
            out = torch.from_numpy(o) if lib == "torch" else o
        kw = dict(qdtype=qtype, shape=(16,)) if ref.bits(qtype) < 8 else {}

        def call(s, z):
            return piquant.dequantize(src, fdt if out is None else None, scale=s, zero_point=z, out=out, **kw)

        def want(s, z):
            return ref.dequantize(q, qtype, s, z, numel=16, out_dtype=fdt)
    else:
        storage = ref.storage_dtype(qtype)
        if op == "quantize":
            n_out = -(-16 * ref.bits(qtype) // 8) if ref.bits(qtype) < 8 else 16
            out = None
            if with_out:
                o = np.full(n_out, 7, storage)
                out = torch.from_numpy(o) if xs is not x else o

            def call(s, z):
                return piquant.quantize(xs, qtype, scale=s, zero_point=z, out=out).data

            def want(s, z):
                return ref.quantize(x, qtype, s, z)
        else:
            out = None
            if with_out:
                o = np.full(16, 7.0, fdt)
                out = torch.from_numpy(o) if lib == "torch" else o

            def call(s, z):
                return piquant.fake_quantize(xs, qtype, scale=s, zero_point=z, out=out)

            def want(s, z):
                return ref.fake_quantize(x, qtype, s, z)
    if rule == "computed":
        return
    if warm:
        call(1.0, 1)
    before = None if out is None else as_bytes(out)
    if isinstance(rule, tuple) and isinstance(rule[0], type):
        exc, arg = rule
        with raises_naming(exc, arg):
            call(scale, zero_point)
        assert out is None or as_bytes(out) == before
        return
    got = call(scale, zero_point)
    assert as_bytes(got) == as_bytes(want(*rule))


# ------------------------------------------------------------ generated: float and numpy scalar parameters agree


def _outcome(call):
    """The result's bytes, or the exception and the argument it names (the
    rest of a message may quote the argument's repr, which differs)."""
    try:
        return "ok", as_bytes(call())
    except (TypeError, ValueError) as e:
        return type(e).__name__, str(e).split(":")[0]


@PROFILE
@given(
    lib=st.sampled_from(["numpy", "torch"]),
    ftype=st.sampled_from(["float32", "float64", "float16"]),
    qtype=st.sampled_from(QTYPES),
    n=st.integers(0, 40),
    op=st.sampled_from(["quantize", "fake_quantize", "dequantize_raw", "dequantize_quantized"]),
    scale=st.sampled_from([0.25, 1.0, 1e-30, -1.0, 0.0, float("inf"), float("nan"), 3e38]),
    zero_point=st.integers(-300, 300),
    hostile=st.sampled_from([None, "scale_true", "extra_data", "string_dtype", "short_out", "wrong_out_dtype", "neg_out", "readonly_out"]),
)
def test_float_and_numpy_scalar_parameters_agree(lib, ftype, qtype, n, op, scale, zero_point, hostile):
    """Every call with out= gives the same result or the same error whether its
    scale is a float or a numpy scalar of the same value (np.float64, a float
    subclass; np.float32 and np.float16, with a numpy integer zero point),
    which the checks convert before their cache; out= is untouched when it
    raises."""
    rng = np.random.default_rng(n * 31 + zero_point + 300)
    x = (rng.standard_normal(n) * 4).astype(ftype)
    xs = torch.from_numpy(x) if lib == "torch" else x
    bits = ref.bits(qtype)
    storage = ref.storage_dtype(qtype)
    n_q = -(-n * bits // 8) if bits < 8 else n
    if lib == "torch" and op != "fake_quantize" and storage == np.uint64:
        lib, xs = "numpy", x  # keep the pair of one kind
    wrap = tensor_of if lib == "torch" else (lambda a: a)

    def fresh_out():
        if op == "quantize":
            o = np.full(n_q + (hostile == "short_out"), 7, storage if hostile != "wrong_out_dtype" else np.int32 if storage != np.int32 else np.int16)
        else:
            o = np.full(n + (hostile == "short_out"), 7.0, ftype if hostile != "wrong_out_dtype" else np.float32 if ftype != "float32" else np.float64)
        if hostile == "readonly_out" and lib == "numpy":
            o.flags.writeable = False
        out = wrap(o)
        negatable = lib == "torch" and out.dtype in (torch.float16, torch.float32, torch.float64)  # torch cannot negate float8
        return torch._neg_view(out) if hostile == "neg_out" and negatable else out

    q = ref.quantize(x, qtype, 0.5, 0)
    data = wrap(q.copy()) if not (hostile == "extra_data") else wrap(np.concatenate([q, q[:1]]) if q.size else np.zeros(1, q.dtype))

    def call(s, z, out):
        if hostile == "scale_true":
            s = True
        if op == "quantize":
            return piquant.quantize(xs, qtype, scale=s, zero_point=z, out=out).data
        if op == "fake_quantize":
            return piquant.fake_quantize(xs, qtype, scale=s, zero_point=z, out=out)
        if op == "dequantize_raw":
            kw = dict(qdtype=qtype, shape=(n,)) if bits < 8 else {}
            return piquant.dequantize(data, scale=s, zero_point=z, out=out, **kw)
        dt = qtype if hostile == "string_dtype" else DataType[qtype.upper()]
        return piquant.dequantize(piquant.Quantized(data, dt, (n,), s, z), out=out)

    with np.errstate(over="ignore"):
        s32, s16 = np.float32(scale), np.float16(scale)
    z = zero_point
    pairs = [((scale, z), (np.float64(scale), z)), ((float(s32), z), (s32, np.int64(z))), ((float(s16), z), (s16, np.int16(z)))]
    for pair in pairs:
        results = []
        for s, zp in pair:
            out = fresh_out()
            before = as_bytes(out.resolve_neg() if isinstance(out, torch.Tensor) else out)
            results.append(_outcome(functools.partial(call, s, zp, out)))
            if results[-1][0] != "ok":
                assert as_bytes(out.resolve_neg() if isinstance(out, torch.Tensor) else out) == before, results[-1]
        assert results[0] == results[1], pair
