"""`python -m piquant bench` runs end to end (a tiny matrix; no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import ISAS

pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")


def bench(tmp_path, *rows: str) -> tuple[subprocess.CompletedProcess, dict]:
    """`python -m piquant bench` on 64 and 4,096 elements for the rows named, without pi-quant."""
    r = subprocess.run(
        [sys.executable, "-m", "piquant", "bench", "--sizes", "64", "4096", "--rows", *rows, "--no-pi-quant", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return r, json.loads((tmp_path / "bench.json").read_text())


def test_bench_command_writes_table_json_and_names_what_it_skipped(tmp_path):
    r, report = bench(tmp_path, "f32→uint8", "compute_params")
    rows = {(x["row"], x["n"]) for x in report["results"]}
    assert ("quantize f32→uint8", 64) in rows and ("compute_params f32", 4096) in rows
    for res in report["results"]:
        assert res["seconds"]["piquant"] > 0 and res["roofline_efficiency"] > 0
        assert "torch" in res["seconds"] or "torch" in res["skipped"]
        assert "reference" in res["seconds"]
    assert report["skipped_peers"]["pi-quant"] == "--no-pi-quant"
    assert "skipped pi-quant: --no-pi-quant" in r.stdout
    assert "quantize f32→uint8 stochastic" in r.stdout and "÷ torch" in r.stdout
    assert (tmp_path / "bench.png").exists() or "chart skipped" in r.stdout


def test_bench_group_wise_and_gguf_rows_with_their_peers(tmp_path):
    _, report = bench(tmp_path, "g=", "gguf")
    got = {(x["row"], x["n"]): x for x in report["results"]}
    assert ("quantize f32→int4 g=128", 64) not in got  # 64 elements hold no whole group of 128
    assert "torchao" in got[("quantize f32→int4 g=32", 4096)]["seconds"]
    assert "gguf" in got[("gguf f32→Q4_0", 64)]["seconds"] and "reference" in got[("gguf Q8_0→f32", 4096)]["seconds"]
    assert "torch has no group-wise or GGUF quantization" in got[("gguf f32→Q8_0", 4096)]["skipped"]["torch"]
    assert ("gguf f32→Q4_K", 64) not in got  # no whole super-block of 256
    assert "reference" in got[("gguf f32→Q6_K", 4096)]["seconds"] and "gguf" in got[("gguf Q4_K→f32", 4096)]["seconds"]
    assert "cannot quantize the K-quants" in got[("gguf f32→Q5_K", 4096)]["skipped"]["gguf"]
    if importlib.util.find_spec("ggml") is not None:  # llama.cpp's C reference quantizer
        assert "ggml" in got[("gguf f32→Q4_K", 4096)]["seconds"] and "ggml" in got[("gguf f32→MXFP4", 64)]["seconds"]


def test_bench_mx_rows_beside_torchao(tmp_path):
    r, report = bench(tmp_path, "mx f32")
    got = {(x["row"], x["n"]): x for x in report["results"]}
    for fmt in ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "nvfp4"):
        assert "torchao" in got[(f"mx f32→{fmt}", 4096)]["seconds"], fmt
        assert "reference" in got[(f"mx f32→{fmt}", 64)]["seconds"], fmt
    assert "no MXINT8" in got[("mx f32→mxint8", 4096)]["skipped"]["torchao"]
    noise = [line for line in r.stderr.splitlines() if not line.startswith("[")]
    assert noise == []  # neither torchao's messages nor torch's pytree warnings
    assert "Skipping import of cpp extensions" not in r.stdout


def test_bench_call_rows_beside_torch_and_clean_output(tmp_path):
    """Every call row at 64 and 4,096 elements, timed beside its equivalent;
    nothing but the progress lines on stderr (no peer warnings or log lines)."""
    from piquant._bench_calls import CALLS

    r, report = bench(tmp_path, "calls")
    assert report["results"] == []  # "calls" names no row of the matrix
    got = {(c["call"], c["n"]): c for c in report["calls"]}
    assert set(got) == {(c.name, n) for c in CALLS for n in (64, 4096)}
    for c in got.values():
        assert c["skipped"] is None, c
        assert c["seconds"]["piquant"] > 0 and c["seconds"]["beside"] > 0
    assert got[('quantize(t, "uint8", scale=s, zero_point=zp, out=o)', 64)]["goal"] == 0.6
    assert "call rows" in r.stdout and "torch.quantize_per_tensor(t, s, zp, quint8)" in r.stdout
    noise = [line for line in r.stderr.splitlines() if not line.startswith("[")]
    assert noise == []
    assert r.stdout.count("deprecated") == 1  # torch's warning, said once as a note


def test_quiet_peers_silences_expected_warnings_and_shows_others():
    import warnings

    from piquant._bench import quiet_peers

    notes: dict[str, str] = {}
    with pytest.warns(UserWarning, match="something else"):
        with quiet_peers(notes):
            warnings.warn("torch.quantize_per_tensor and other quantized tensor creation functions are deprecated", UserWarning, stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert "deprecated" in notes["torch"]


def test_rows_on_torch_memory_run_only_on_large_arrays_allocated_by_torch():
    """pi-quant's rows again on torch-allocated arrays (no huge pages), above 1,048,576 elements."""
    import numpy as np
    import torch

    from piquant._bench import ROWS, TORCH_MEMORY_MIN, Inputs, piquant_fn

    rows = {r.name: r for r in ROWS if r.memory == "torch"}
    assert set(rows) == {"quantize f32→uint8 [torch memory]", "quantize bf16→uint8 [torch memory]", "dequantize uint8→f32 [torch memory]",
                         "dequantize uint8→f32 add [torch memory]", "dequantize uint8→bf16 [torch memory]"}
    assert not any(r.fits(TORCH_MEMORY_MIN) for r in rows.values()) and all(r.fits(27_264_000) for r in rows.values())
    x32 = np.linspace(-1, 1, 4096, dtype=np.float32)
    inp = Inputs(rows["dequantize uint8→f32 [torch memory]"], x32, torch)
    assert isinstance(inp.x, torch.Tensor) and not np.shares_memory(inp.x.numpy(), x32)
    assert isinstance(inp.float_out(), torch.Tensor)
    piquant_fn(inp, __import__("piquant").Context.get())()


def test_kernel_profile_times_every_row_on_every_variant_this_cpu_runs():
    """benchmarks/kernel_profile.py (issue 15's profile table) builds its C driver against the
    loaded library and fills one cell per (row, variant); counts need valgrind, so they are off here."""
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "kernel_profile.py"
    r = subprocess.run([sys.executable, str(script), "--no-count", "--n", "4096", "--reps", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr
    table = [line for line in r.stdout.splitlines() if line.startswith("| ") and not line.startswith(("| row", "| ---"))]
    rows = _kernel_profile_rows(script)
    assert [line.strip("|").split("|")[0].strip() for line in table] == list(rows)
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 2 + len(ISAS)
        for cell in cells[1:-1]:
            assert float(cell.split("·")[1]) > 0


def _kernel_profile_rows(script) -> tuple[str, ...]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("kernel_profile", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ROWS


def test_kernel_profile_rows_filter_picks_rows_by_name():
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "kernel_profile.py"
    r = subprocess.run([sys.executable, str(script), "--no-count", "--n", "4096", "--reps", "3", "--rows", "mx_f32_mxint8", "i8"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    names = [line.strip("|").split("|")[0].strip() for line in r.stdout.splitlines()
             if line.startswith("| ") and not line.startswith(("| row", "| ---"))]
    assert names == ["quantize_f32_i8", "mx_f32_mxint8"]


@pytest.mark.skipif("avx512f" not in ISAS, reason="the minimal kernels are AVX-512")
def test_memory_bound_times_piquant_beside_the_minimal_kernels():
    """benchmarks/memory_bound.py (issue 15's bounds at 27M) builds its OpenMP kernels and times
    every cell of both rows; pi-quant's only where the bench installed it."""
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "memory_bound.py"
    r = subprocess.run([sys.executable, str(script), "--n", "65536", "--rounds", "1", "--memory", "torch"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows: dict[str, dict[str, str]] = {}
    cells: dict[str, str] = {}
    for line in r.stdout.splitlines()[1:]:
        if line.startswith("  "):
            cells[line[2:32].strip()] = line[32:]
        else:
            cells = rows[line] = {}
    assert {k: set(v) for k, v in rows.items()} == {
        "float32 → uint8": {"piquant", "pi-quant 4.1.0", "read the input only", "minimal, non-temporal stores",
                            "minimal, ordinary stores"},
        "uint8 → float32, added": {"piquant", "pi-quant 4.1.0", "minimal"}}
    for cells in rows.values():
        assert cells["piquant"].endswith("1.000")
        for name, cell in cells.items():
            if name == "pi-quant 4.1.0" and "not installed" in cell:
                continue
            assert float(cell.split("ms")[0]) > 0, (name, cell)

    bad = subprocess.run([sys.executable, str(script), "--n", "100"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--n must be a positive multiple of 64, got 100" in bad.stderr
