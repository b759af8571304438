"""`python -m piquant bench` runs end to end (a tiny matrix; no timing is asserted)."""

from __future__ import annotations

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
