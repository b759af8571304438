"""Hardening: the C ABI under AddressSanitizer/LeakSanitizer, valgrind and a
bounded libFuzzer run; the Python API from many threads, across fork, with
failing calls mixed in, and with stable memory. Crashes happen in
subprocesses, so a crash fails a test instead of killing the suite.

The C tools (gcc's ASan, valgrind, clang's libFuzzer) are skipped where
they are missing unless PIQUANT_REQUIRE_TOOLS=1 (as in .ci/run), which
makes a missing tool a failure. PIQUANT_LEAK_CYCLES (default 100,000) and
PIQUANT_FUZZ_SECONDS (default 10) size the runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import piquant
import piquant_reference as ref
from conftest import ISAS
from piquant import _backend

pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")

ROOT = Path(__file__).resolve().parents[1]
LIB = Path(_backend.library_path() or "")
INCLUDE = ROOT / "zig" / "include"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("PIQUANT_REQUIRE_TOOLS"):
            pytest.fail(f"{name} is required (PIQUANT_REQUIRE_TOOLS is set) but not installed")
        pytest.skip(f"{name} is not installed")
    return path


def build_c(tmp_path: Path, compiler: str, source: str, *flags: str) -> Path:
    exe = tmp_path / Path(source).stem
    subprocess.run(
        [compiler, "-std=c99", "-Wall", "-Wextra", "-O1", "-g", *flags, f"-I{INCLUDE}", str(ROOT / source),
         f"-L{LIB.parent}", "-lpiquant", f"-Wl,-rpath,{LIB.parent}", "-lm", "-o", str(exe)],
        check=True, capture_output=True, text=True,
    )
    return exe


def test_c_suite_under_address_and_leak_sanitizer(tmp_path):
    exe = build_c(tmp_path, tool("gcc"), "tests/c/abi_test.c", "-pedantic", "-Werror", "-fsanitize=address,undefined", "-fno-omit-frame-pointer")
    cycles = os.environ.get("PIQUANT_LEAK_CYCLES", "100000")
    r = subprocess.run([str(exe), cycles], capture_output=True, text=True, timeout=900,
                       env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "halt_on_error=1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ok: 0 failures, {cycles} cycles" in r.stdout


def test_c_suite_and_example_under_valgrind(tmp_path):
    valgrind = tool("valgrind")
    for source, args in (("tests/c/abi_test.c", ["300"]), ("examples/quantize.c", [])):
        exe = build_c(tmp_path, tool("gcc"), source)
        flags = ["--error-exitcode=99", "--child-silent-after-fork=yes", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect"]
        r = subprocess.run([valgrind, *flags, str(exe), *args], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{source}: {r.stdout}{r.stderr[-3000:]}"
        assert "ERROR SUMMARY: 0 errors" in r.stderr


def test_bounded_fuzzing_of_the_c_abi(tmp_path):
    """libFuzzer against the loaded library (CI: the ReleaseSafe build, whose
    safety checks turn undefined behaviour into a crash). Buffers end at a
    guard page, so an overrun by one byte crashes too."""
    exe = tmp_path / "fuzz_abi"
    subprocess.run(
        [tool("clang"), "-O1", "-g", "-fsanitize=fuzzer", f"-I{INCLUDE}", str(ROOT / "tests/c/fuzz_abi.c"),
         f"-L{LIB.parent}", "-lpiquant", f"-Wl,-rpath,{LIB.parent}", "-o", str(exe)],
        check=True, capture_output=True, text=True,
    )
    seconds = os.environ.get("PIQUANT_FUZZ_SECONDS", "10")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    r = subprocess.run([str(exe), f"-max_total_time={seconds}", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1", str(corpus)],
                       capture_output=True, text=True, timeout=int(seconds) + 300)
    assert r.returncode == 0, r.stderr[-4000:]
    runs = [line for line in r.stderr.splitlines() if "number_of_executed_units" in line]
    assert runs and int(runs[0].split()[-1]) > 1000, r.stderr[-2000:]
    print(runs[0])


# ---------------------------------------------------------------- Python


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "call",
    [
        "piquant.quantize(np.float32(1.5), 'uint8', scale=1.0, zero_point=0)",
        "piquant.quantize(np.empty((0, 3), np.float32), 'uint8', scale=1.0, zero_point=0)",
        "piquant.quantize(np.ones(3, np.float32), 'uint8', scale=1.0, zero_point=0, out=np.empty((), np.uint8))",
        "piquant.dequantize(np.ones(5, np.uint8), scale=1e-45, zero_point=0)",
        "piquant.quantize(np.ones(3, np.float32), 'int64', scale=1e-300, zero_point=2**63)",
        "piquant.Context(num_threads=10**9)",
        "piquant.quantize(object(), 'uint8')",
        "piquant.quantize(np.ones(3, np.float32), 'uint8', scale=1.0, zero_point=0, ctx=piquant.Context(1).__class__.__new__(piquant.Context))",
    ],
)
def test_bad_calls_raise_and_the_process_lives(call):
    """Each call either works or raises a Python exception: never a crash."""
    r = run_python(f"import numpy as np, piquant\ntry:\n    {call}\nexcept Exception as e:\n    print('raised', type(e).__name__, e)\nprint('alive')")
    assert r.returncode == 0 and r.stdout.strip().endswith("alive"), r.stdout + r.stderr


def test_zero_d_and_empty_arrays_work():
    q = piquant.quantize(np.array(1.5, np.float32), "uint8", scale=0.5, zero_point=0)
    assert q.shape == () and int(q.data) == 3 and float(q.dequantize()) == 1.5
    e = piquant.quantize(np.empty((0, 4), np.float32), "int4", scale=1.0, zero_point=0)
    assert e.shape == (0, 4) and e.data.size == 0 and piquant.dequantize(e).shape == (0, 4)


def test_many_threads_one_context_and_many_contexts(rng):
    shared = piquant.Context(2)
    xs = [(rng.standard_normal(50_000 + 17 * k) * 3).astype(np.float32) for k in range(8)]
    want = [ref.quantize(x, "int4", 0.1, 0, round_mode="stochastic", seed=k) for k, x in enumerate(xs)]
    errors: list[str] = []

    def worker(k: int) -> None:
        ctx = shared if k % 2 else piquant.Context(1 + k % 3)
        try:
            for _ in range(20):
                got = piquant.quantize(xs[k], "int4", scale=0.1, zero_point=0, round_mode="stochastic", seed=k, ctx=ctx)
                if not np.array_equal(got.data, want[k]):
                    errors.append(f"thread {k}: wrong result")
                    return
                try:  # a failing call in between must not wedge the pool
                    piquant.quantize(xs[k], "int4", scale=0.1, zero_point=99, ctx=ctx)
                except ValueError:
                    pass
        finally:
            if ctx is not shared:
                ctx.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    shared.close()


def test_contexts_created_and_destroyed_under_load():
    x = np.random.default_rng(1).standard_normal(200_000).astype(np.float32)
    want = ref.quantize(x, "uint8", 0.02, 128)
    stop = threading.Event()
    bad: list[str] = []

    def load() -> None:
        while not stop.is_set():
            if not np.array_equal(piquant.quantize(x, "uint8", scale=0.02, zero_point=128).data, want):
                bad.append("wrong result under churn")

    t = threading.Thread(target=load)
    t.start()
    for k in range(200):
        with piquant.Context(1 + k % 4) as ctx:
            assert np.array_equal(piquant.quantize(x, "uint8", scale=0.02, zero_point=128, ctx=ctx).data, want)
    stop.set()
    t.join(timeout=60)
    assert not t.is_alive() and not bad


def test_the_gil_is_released_during_native_calls():
    """While one thread is inside a long native call, another thread runs
    Python: it could not if the call held the GIL."""
    x = np.random.default_rng(2).standard_normal(20_000_000).astype(np.float32)
    out = np.empty(x.size, np.uint8)
    ctx = piquant.Context(1)
    ticks: list[float] = []
    done = threading.Event()

    def spin() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.01)
    start = time.perf_counter()
    piquant.quantize(x, "uint8", scale=0.01, zero_point=128, out=out, round_mode="stochastic", ctx=ctx)
    end = time.perf_counter()
    done.set()
    t.join()
    inside = [s for s in ticks if start + 0.002 < s < end - 0.002]
    assert end - start > 0.01, "the call was too short to tell"
    assert len(inside) > 100, f"{len(inside)} ticks of the other thread during a {end - start:.3f} s call"


def test_fork_child_can_use_piquant():
    """Rule (README): after fork, a child may use the contexts it inherited —
    their pools have no threads in the child, so calls run on the calling
    thread alone — or create new ones."""
    code = """
import os, numpy as np, piquant, piquant_reference as ref
x = np.random.default_rng(3).standard_normal(300_000).astype(np.float32)
want = ref.quantize(x, "uint8", 0.02, 128)
assert np.array_equal(piquant.quantize(x, "uint8", scale=0.02, zero_point=128).data, want)  # pool started
pid = os.fork()
if pid == 0:
    ok = np.array_equal(piquant.quantize(x, "uint8", scale=0.02, zero_point=128).data, want)
    with piquant.Context(2) as ctx:
        ok = ok and np.array_equal(piquant.quantize(x, "uint8", scale=0.02, zero_point=128, ctx=ctx).data, want)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
"""
    r = run_python(code, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "child 0", r.stdout + r.stderr


def test_resident_memory_is_stable_across_calls():
    code = """
import resource, numpy as np, piquant
x = np.random.default_rng(4).standard_normal(4096).astype(np.float32)
big = np.random.default_rng(5).standard_normal(2_000_000).astype(np.float32)
out, y = np.empty(4096, np.uint8), np.empty(4096, np.float32)
def calls(k):
    for _ in range(k):
        q = piquant.quantize(x, "uint8", scale=0.01, zero_point=128, out=out)
        piquant.dequantize(q, out=y)
        piquant.quantize(x, "int4")                      # the general path, new results
    for _ in range(k // 1000):
        piquant.fake_quantize(big, "uint8", round_mode="stochastic")
calls(2000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
calls(50000)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""
    r = run_python(code, timeout=300)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) < 2 << 20, f"peak RSS grew by {int(r.stdout)} bytes over 50,000 rounds of calls"


def test_more_than_2_pow_31_elements():
    """Element counts and indices are 64-bit end to end. The input is 8.6 GB
    of never-written (zero-page) memory, so only the 2.1 GB output is real."""
    code = """
import numpy as np, piquant
n = 2**31 + 100
x = np.zeros(n, np.float32)          # calloc'd: reading maps the shared zero page
x[-1] = 1.0
x[2**31 - 1] = -1.0
out = np.empty(n, np.uint8)
piquant.quantize(x, "uint8", scale=0.5, zero_point=7, out=out)
print(int(out[0]), int(out[2**31 - 1]), int(out[2**31]), int(out[-1]), int(out[-2]))
"""
    r = run_python(code, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["7", "5", "7", "9", "7"]
