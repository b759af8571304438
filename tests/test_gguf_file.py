"""piquant.gguf.quantize_file and ``python -m piquant gguf quantize`` against
llama.cpp's own whole-file quantizer, ``llama_cpp.llama_model_quantize``
(llama-cpp-python 0.3.36 built without FMA contraction, see .ci/run): a small
llama-architecture model of random weights (float32, float16 and bfloat16
tensors, rows of 256 and rows that are not, so every fallback runs) must come
out as the same file, byte for byte, for every file type piquant offers; and
bad input gets a one-line error, a non-zero exit and no DST.

llama-cpp-python is skipped where it is missing unless PIQUANT_REQUIRE_TOOLS=1
(as in .ci/run), which makes its absence a failure."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import piquant  # noqa: E402
from piquant._gguf_file import FILE_TYPES  # noqa: E402

N_LAYER = 8  # use_more_bits picks layers 0, 3, 6 and 7 of 8
N_EMBD, N_FF, N_VOCAB = 256, 288, 320  # ffn_down rows of 288: whole blocks of 32, not of 256


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        if os.environ.get("PIQUANT_REQUIRE_TOOLS"):
            pytest.fail("llama-cpp-python is required (PIQUANT_REQUIRE_TOOLS is set) but not installed")
        pytest.skip("llama-cpp-python is not installed (see .ci/run for the build without FMA contraction)")
    return llama_cpp


def _bf16(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bits, rounded to nearest even."""
    u = x.astype(np.float32).view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def write_model(path: Path, *, seed: int = 0, extra: dict[str, tuple[np.ndarray, object]] | None = None, tied: bool = False) -> None:
    """A llama model as convert_hf_to_gguf.py would write it, random weights."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("piquant test model")
    w.add_context_length(128)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(4)
    w.add_head_count_kv(1)
    w.add_rope_dimension_count(64)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(N_VOCAB)
    w.add_array("test.floats", [0.5, -1.25])
    w.add_string("test.unicode", "naïve — ✓")

    def weight(*shape: int) -> np.ndarray:
        scale = rng.lognormal(0, 1, size=(shape[0], 1)).astype(np.float32) * np.float32(0.02)
        return (rng.standard_normal(shape).astype(np.float32) * scale).astype(np.float32)

    w.add_tensor("token_embd.weight", weight(N_VOCAB, N_EMBD).astype(np.float16))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
    if not tied:
        w.add_tensor("output.weight", weight(N_VOCAB, N_EMBD))
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", 1 + weight(1, N_EMBD)[0])
        q = weight(N_EMBD, N_EMBD)
        if i == 1:
            w.add_tensor(p + "attn_q.weight", _bf16(q), raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor(p + "attn_q.weight", q)
        w.add_tensor(p + "attn_k.weight", weight(64, N_EMBD))
        w.add_tensor(p + "attn_v.weight", weight(64, N_EMBD).astype(np.float16))
        w.add_tensor(p + "attn_output.weight", weight(N_EMBD, N_EMBD))
        w.add_tensor(p + "ffn_norm.weight", 1 + weight(1, N_EMBD)[0])
        w.add_tensor(p + "ffn_gate.weight", weight(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_up.weight", weight(N_FF, N_EMBD).astype(np.float16))
        w.add_tensor(p + "ffn_down.weight", weight(N_EMBD, N_FF))
    # A 3-D stack of 4 experts: MXFP4 in MXFP4_MOE files.
    w.add_tensor("blk.0.ffn_up_exps.weight", np.stack([weight(64, N_EMBD) for _ in range(4)]))
    # Rows of 100: not whole blocks of any type, so F16 in every quantized file type.
    w.add_tensor("blk.0.odd_rows.weight", weight(8, 100))
    for name, (data, raw_dtype) in (extra or {}).items():
        w.add_tensor(name, data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model-f32.gguf"
    write_model(path)
    return path


def llama_quantize(llama_cpp, src: Path, dst: Path, ftype: int, threads: int = 2) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0


def tensors(path: Path) -> list[tuple[str, str, tuple[int, ...], bytes]]:
    r = gguf.GGUFReader(path)
    return [(t.name, t.tensor_type.name, tuple(int(d) for d in t.shape), t.data.tobytes()) for t in r.tensors]


@pytest.mark.parametrize("ftype", list(FILE_TYPES))
def test_same_file_as_llama_cpp(model, tmp_path, ftype):
    llama_cpp = _llama_cpp()
    ours, theirs = tmp_path / "piquant.gguf", tmp_path / "llama.gguf"
    llama_quantize(llama_cpp, model, theirs, FILE_TYPES[ftype][0])
    piquant.gguf.quantize_file(model, ours, ftype, threads=2, progress=False)
    got, want = tensors(ours), tensors(theirs)
    assert [t[:3] for t in got] == [t[:3] for t in want]  # names, order, types, shapes
    for g, e in zip(got, want):
        assert g[3] == e[3], f"{g[0]} ({g[1]}): bytes differ"
    assert ours.read_bytes() == theirs.read_bytes()  # metadata and layout too


def test_type_choices_q4_k_m(model, tmp_path):
    """llama.cpp's Q4_K_M rules, written out: Q6_K for output and for attn_v/ffn_down
    of layers 0, 3, 6, 7 of 8 (use_more_bits); ffn_down rows of 288 fall back from
    Q4_K to Q5_0 and from Q6_K to Q8_0; rows of 100 to F16; norms stay F32."""
    dst = tmp_path / "q4km.gguf"
    piquant.gguf.quantize_file(model, dst, "Q4_K_M", progress=False)
    types = {name: t for name, t, _, _ in tensors(dst)}
    more = {0, 3, 6, 7}
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"
    assert types["output_norm.weight"] == "F32" and types["blk.0.odd_rows.weight"] == "F16"
    assert types["blk.0.ffn_up_exps.weight"] == "Q4_K"
    for i in range(N_LAYER):
        assert types[f"blk.{i}.attn_v.weight"] == ("Q6_K" if i in more else "Q4_K")
        assert types[f"blk.{i}.ffn_down.weight"] == ("Q8_0" if i in more else "Q5_0")
        assert types[f"blk.{i}.attn_q.weight"] == types[f"blk.{i}.ffn_up.weight"] == "Q4_K"
    r = gguf.GGUFReader(dst)
    assert r.fields["general.file_type"].contents() == 15
    assert r.fields["general.quantization_version"].contents() == 2
    assert r.fields["test.unicode"].contents() == "naïve — ✓" and r.fields["test.floats"].contents() == [0.5, -1.25]


def test_mxfp4_moe_types(model, tmp_path):
    """MXFP4_MOE: MXFP4 for stacks of experts, Q8_0 for every other quantized tensor."""
    piquant.gguf.quantize_file(model, tmp_path / "q.gguf", "MXFP4_MOE", progress=False)
    types = {n: t for n, t, _, _ in tensors(tmp_path / "q.gguf")}
    assert types.pop("blk.0.ffn_up_exps.weight") == "MXFP4" and types.pop("blk.0.odd_rows.weight") == "F16"
    assert {t for n, t in types.items() if not n.endswith("norm.weight")} == {"Q8_0"}


def test_tied_embeddings(tmp_path):
    """Without output.weight, token_embd is the output and gets its type (Q6_K)."""
    src = tmp_path / "tied.gguf"
    write_model(src, tied=True)
    piquant.gguf.quantize_file(src, tmp_path / "q.gguf", "Q4_K_M", progress=False)
    assert {n: t for n, t, _, _ in tensors(tmp_path / "q.gguf")}["token_embd.weight"] == "Q6_K"


def test_quantized_values_dequantize_close(model, tmp_path):
    dst = tmp_path / "q8.gguf"
    piquant.gguf.quantize_file(model, dst, "Q8_0", progress=False)
    src = {t.name: t for t in gguf.GGUFReader(model).tensors}
    for t in gguf.GGUFReader(dst).tensors:
        if t.tensor_type.name == "Q8_0":
            s = src[t.name]
            x = s.data.view(np.uint16).astype(np.uint32) << 16 if s.tensor_type.name == "BF16" else s.data
            x = np.asarray(x.view(np.float32) if x.dtype == np.uint32 else x, np.float32).reshape(-1)
            y = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1)
            assert np.abs(x - y).max() <= np.abs(x).max() / 127


def cli(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(piquant.__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "piquant", "gguf", "quantize", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_writes_the_file(model, tmp_path):
    dst = tmp_path / "out.gguf"
    r = cli(model, dst, "--type", "q8_0", "--threads", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    want = tmp_path / "want.gguf"
    piquant.gguf.quantize_file(model, want, "Q8_0", progress=False)
    assert dst.read_bytes() == want.read_bytes()
    assert set(os.listdir(tmp_path)) == {"out.gguf", "want.gguf"}  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert dst.stat().st_mode & 0o777 == 0o666 & ~umask  # the permissions of any new file


def _assert_clean_failure(r: subprocess.CompletedProcess, dst: Path, *words: str) -> None:
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m piquant gguf quantize: error: "), r.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert "Traceback" not in r.stderr
    assert not [p for p in dst.parent.iterdir() if p.name.startswith(dst.name) or p.name.startswith("." + dst.name)]


def test_cli_not_gguf(tmp_path):
    src = tmp_path / "src.gguf"
    src.write_bytes(b"PK\x03\x04 not a gguf file")
    _assert_clean_failure(cli(src, tmp_path / "dst.gguf", "--type", "Q4_K_M"), tmp_path / "dst.gguf", "not a GGUF file")


def test_cli_missing_src(tmp_path):
    _assert_clean_failure(cli(tmp_path / "none.gguf", tmp_path / "dst.gguf", "--type", "Q4_K_M"), tmp_path / "dst.gguf", "no such file")


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_cli_truncated(model, tmp_path, keep):
    src = tmp_path / "cut.gguf"
    data = model.read_bytes()
    src.write_bytes(data[: int(len(data) * keep)])
    _assert_clean_failure(cli(src, tmp_path / "dst.gguf", "--type", "Q8_0"), tmp_path / "dst.gguf", "truncated")


def test_cli_unknown_type(model, tmp_path):
    _assert_clean_failure(cli(model, tmp_path / "dst.gguf", "--type", "Q3_K_M"), tmp_path / "dst.gguf", "ftype", "Q4_K_M")


def test_cli_requantize_refused(tmp_path):
    src = tmp_path / "q.gguf"
    blocks = gguf.quants.quantize(np.ones((4, 256), np.float32), gguf.GGMLQuantizationType.Q8_0)
    write_model(src, extra={"blk.1.quantized.weight": (blocks, gguf.GGMLQuantizationType.Q8_0)})
    _assert_clean_failure(cli(src, tmp_path / "dst.gguf", "--type", "Q4_0"), tmp_path / "dst.gguf", "blk.1.quantized.weight", "Q8_0")
    # Where the tensor keeps its type it is copied.
    assert cli(src, tmp_path / "dst.gguf", "--type", "Q8_0", "--no-progress").returncode == 0


def test_cli_nan_refused(tmp_path):
    src = tmp_path / "nan.gguf"
    x = np.ones((4, 256), np.float32)
    x[2, 7] = np.nan
    write_model(src, extra={"blk.2.bad.weight": (x, None)})
    _assert_clean_failure(cli(src, tmp_path / "dst.gguf", "--type", "Q4_0"), tmp_path / "dst.gguf", "blk.2.bad.weight", "NaN")
    x[2, 7] = 1e6  # finite, but its Q4_0 scale overflows float16: refused as llama.cpp refuses it
    write_model(src, extra={"blk.2.bad.weight": (x, None)})
    _assert_clean_failure(cli(src, tmp_path / "dst.gguf", "--type", "Q4_0"), tmp_path / "dst.gguf", "blk.2.bad.weight", "float16")


def test_cli_existing_dst(model, tmp_path):
    dst = tmp_path / "dst.gguf"
    dst.write_bytes(b"keep me")
    r = cli(model, dst, "--type", "Q8_0")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--force" in r.stderr
    assert dst.read_bytes() == b"keep me"
    assert cli(model, dst, "--type", "Q8_0", "--force", "--no-progress").returncode == 0
    assert dst.read_bytes()[:4] == b"GGUF"


def test_function_errors(model, tmp_path):
    with pytest.raises(ValueError, match="ftype"):
        piquant.gguf.quantize_file(model, tmp_path / "x.gguf", "Q9_Z")
    with pytest.raises(ValueError, match="threads"):
        piquant.gguf.quantize_file(model, tmp_path / "x.gguf", "Q8_0", threads=0)
    with pytest.raises(FileExistsError, match="dst"):
        piquant.gguf.quantize_file(model, model, "Q8_0")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e6])
def test_refusals_agree_with_llama_cpp(tmp_path, bad):
    """What piquant refuses (non-finite scales), llama.cpp refuses too; and 1e5, whose Q8_0 scale fits float16, both take."""
    llama_cpp = _llama_cpp()
    x = np.ones((4, 256), np.float32)
    x[2, 7] = bad
    src = tmp_path / "bad.gguf"
    write_model(src, extra={"blk.2.bad.weight": (x, None)})
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = FILE_TYPES["Q4_0"][0], 2
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(tmp_path / "llama.gguf").encode(), ctypes.byref(params)) != 0
    with pytest.raises(ValueError, match=r"blk\.2\.bad\.weight"):
        piquant.gguf.quantize_file(src, tmp_path / "piquant.gguf", "Q4_0", progress=False)
    x[2, 7] = 1e5
    write_model(src, extra={"blk.2.bad.weight": (x, None)})
    llama_quantize(llama_cpp, src, tmp_path / "llama8.gguf", FILE_TYPES["Q8_0"][0])
    piquant.gguf.quantize_file(src, tmp_path / "piquant8.gguf", "Q8_0", progress=False)
    assert (tmp_path / "llama8.gguf").read_bytes() == (tmp_path / "piquant8.gguf").read_bytes()
