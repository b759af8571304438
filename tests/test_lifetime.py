"""Context lifetime, fork and environment rules (issue 13; README, "Errors
and safety"). Every case runs in its own process group with a timeout, so a
hang fails its test (and is killed, forked children included) instead of
hanging the suite. Besides the reproducers, seeded generators make random
close/create/call interleavings over several threads and contexts, and
random fork patterns (inherited contexts used, closed, collected, replaced;
the default context; fork while another thread is mid-call; fork of a fork).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import ISAS

pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")

# Shared by the scripts: a deadline-bounded wait for a forked child, and
# inputs with their reference results.
PRELUDE = """
import gc, os, sys, threading, time, random
import numpy as np, piquant, piquant_reference as ref

def wait_child(pid, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "hung"

XS = [np.random.default_rng(k).standard_normal(n).astype(np.float32) for k, n in enumerate((1000, 70_000, 400_000, 3_000_000))]
WANT = [ref.quantize(x, "uint8", 0.02, 128) for x in XS]

def check(ctx, k=None, fast=False):
    k = random.randrange(len(XS)) if k is None else k
    if fast:
        out = np.empty(XS[k].size, np.uint8)
        got = piquant.quantize(XS[k], "uint8", scale=0.02, zero_point=128, out=out, ctx=ctx).data
    else:
        got = piquant.quantize(XS[k], "uint8", scale=0.02, zero_point=128, ctx=ctx).data
    if not np.array_equal(got, WANT[k]):
        raise AssertionError(f"wrong result for input {k}")
"""


def run_python(code: str, timeout: float = 60, **env: str | None) -> subprocess.CompletedProcess:
    """Runs PRELUDE + code (env: None unsets); a hang fails the test and
    kills the whole group."""
    environ = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    p = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True, env=environ)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        out = f"HUNG: killed after {timeout} s\n{out}"
    if out.startswith("HUNG"):
        pytest.fail(f"{out}\nstderr: {err[-3000:]}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def assert_ok(r: subprocess.CompletedProcess, last: str = "ok") -> None:
    assert r.returncode == 0 and r.stdout.strip().endswith(last), f"rc {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr[-3000:]}"


# ---------------------------------------------------------------- closing


@pytest.mark.parametrize("fast", [False, True], ids=["general", "fast-path"])
def test_close_while_another_thread_is_inside_a_call(fast):
    """The reproducer of issue 13 item 1, at several delays: close() waits
    for the call, which returns its full result (or raises RuntimeError if
    it started after close); a new Context may reuse the memory at once."""
    r = run_python(f"""
    x = np.random.default_rng(0).standard_normal(20_000_000).astype(np.float32)
    with piquant.Context(1) as c:
        want = piquant.quantize(x, "uint8", scale=0.05, zero_point=128, ctx=c).data
    finished = 0
    for delay in (0.0, 0.001, 0.003, 0.005, 0.01, 0.03):
        ctx = piquant.Context(2)
        outcome = []
        def call():
            out = np.empty(x.size, np.uint8) if {fast} else None
            try:
                outcome.append(piquant.quantize(x, "uint8", scale=0.05, zero_point=128, out=out, ctx=ctx).data)
            except RuntimeError as e:
                outcome.append(e)
        t = threading.Thread(target=call)
        t.start()
        time.sleep(delay)
        ctx.close()
        ctx2 = piquant.Context(2)
        t.join(15)
        assert not t.is_alive(), f"the call hung (delay {{delay}})"
        assert ctx.closed
        if isinstance(outcome[0], RuntimeError):
            assert "closed" in str(outcome[0]), outcome[0]
        else:
            assert np.array_equal(outcome[0], want), f"wrong result (delay {{delay}})"
            finished += 1
        check(ctx2)
        ctx2.close()
    print(finished, "ok")
    """, timeout=120)
    assert_ok(r)


def test_stale_handle_is_refused_not_reused():
    """A caller that read the handle before close (as every call does)
    gets PIQUANT_ERR_CLOSED, also once new contexts took the freed slot;
    destroying it again does nothing. Python turns the status into RuntimeError."""
    r = run_python("""
    import ctypes
    from piquant import _backend, _native
    lib = _backend.library()
    ctx = piquant.Context(2)
    stale = ctx._backend._ctx
    ctx.close()
    x, q = XS[1], np.empty(XS[1].size, np.uint8)
    others = [piquant.Context(2) for _ in range(3)]   # reuse the slot (and the memory)
    for attempt in range(2):
        status = lib.piquant_quantize(stale, x.ctypes.data, 0, q.ctypes.data, 20, x.size, 0.02, 128, 0, 0)
        assert status == 7, status
        assert b"ctx" in lib.piquant_last_error() and b"closed" in lib.piquant_last_error()
        try:
            _native.raise_status(lib, status)
        except RuntimeError:
            pass
        assert lib.piquant_context_num_threads(stale) == 0 and lib.piquant_context_isa(stale) == -1
        lib.piquant_context_destroy(stale)                # a second destroy: ignored
        for o in others:
            check(o)
    garbage = ctypes.c_void_p(0x7777_0000_1234)             # never a handle
    assert lib.piquant_quantize(garbage, x.ctypes.data, 0, q.ctypes.data, 20, x.size, 0.02, 128, 0, 0) == 1
    lib.piquant_context_destroy(garbage)
    for o in others:
        o.close()
    print("ok")
    """)
    assert_ok(r)


def test_every_call_on_a_closed_context_raises_runtime_error():
    r = run_python("""
    ctx = piquant.Context(2)
    x = XS[1]
    q = piquant.quantize(x, "uint8", ctx=ctx)
    ctx.close()
    ctx.close()                                      # twice is fine
    calls = {
        "quantize": lambda: piquant.quantize(x, "uint8", ctx=ctx),
        "out=": lambda: piquant.quantize(x, "uint8", scale=0.02, zero_point=128, out=np.empty(x.size, np.uint8), ctx=ctx),
        "dequantize": lambda: piquant.dequantize(q, ctx=ctx),
        "fake_quantize": lambda: piquant.fake_quantize(x, "int4", ctx=ctx),
        "per channel": lambda: piquant.quantize(x.reshape(100, -1), "int8", axis=0, ctx=ctx),
        "compute_params": lambda: piquant.compute_params(x, ctx=ctx),
        "gguf": lambda: piquant.gguf.quantize(x[:6400], "Q8_0", ctx=ctx),
        "num_threads": lambda: ctx.num_threads,
    }
    for name, call in calls.items():
        try:
            call()
        except RuntimeError as e:
            assert "closed" in str(e), (name, e)
        else:
            raise AssertionError(f"{name}: no error on a closed context")
    print("ok")
    """)
    assert_ok(r)


@pytest.mark.parametrize("seed", range(4))
def test_generated_close_create_call_interleavings(seed):
    """Random programs: four threads and three context slots; each thread
    makes random calls (fast and general paths, random sizes) on a random
    slot's context, and now and then closes a context, or replaces one with
    a new one, with random sleeps in between. Every call returns the
    reference result or raises RuntimeError because its context was closed;
    nothing hangs."""
    r = run_python(f"""
    random.seed({seed})
    slots = [piquant.Context(random.choice((1, 2, 3))) for _ in range(3)]
    stats = {{"ok": 0, "closed": 0}}
    errors = []
    def worker(k):
        rnd = random.Random({seed} * 100 + k)
        end = time.monotonic() + 1.5
        while time.monotonic() < end and not errors:
            i = rnd.randrange(len(slots))
            action = rnd.random()
            try:
                if action < 0.1:
                    slots[i].close()
                elif action < 0.2:
                    old = slots[i]
                    slots[i] = piquant.Context(rnd.choice((1, 2, 3)))
                    if rnd.random() < 0.5:
                        old.close()                      # else: garbage collected
                else:
                    check(slots[i], rnd.randrange(len(XS)), fast=rnd.random() < 0.5)
                    stats["ok"] += 1
            except RuntimeError as e:
                if "closed" not in str(e):
                    errors.append(repr(e))
                stats["closed"] += 1
            except Exception as e:
                errors.append(repr(e))
            if rnd.random() < 0.3:
                time.sleep(rnd.random() * 0.003)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors[:5]
    assert stats["ok"] > 20 and stats["closed"] > 0, stats
    for c in slots:
        c.close()
    print(stats, "ok")
    """, timeout=90)
    assert_ok(r)


# ---------------------------------------------------------------- fork


def test_new_context_in_forked_child():
    """The reproducer of issue 13 item 2: replacing (and so collecting) an
    inherited context in the child must not join the parent's threads."""
    r = run_python("""
    ctx = piquant.Context(2)
    check(ctx, 2)
    pid = os.fork()
    if pid == 0:
        ctx = piquant.Context(2)
        check(ctx, 2)
        print("replaced", flush=True)
        os._exit(0)
    print(wait_child(pid))
    check(ctx, 2)
    print("ok")
    """, timeout=60)
    assert_ok(r)
    assert r.stdout.split()[:2] == ["replaced", "0"], r.stdout


FORK_PATTERNS = """
import weakref
BUSY = None

def child_actions(rnd, mine, depth):
    # In a forked child, which holds the only references to `mine`: random
    # uses of what it inherited; 0 if all went well.
    threads = [c.num_threads for c in mine if not c.closed]
    assert threads == [1] * len(threads), threads       # the pools' threads are the parent's
    for _ in range(rnd.randrange(2, 7)):
        a = rnd.choice(("use", "use", "close", "collect", "replace", "default", "new", "fork"))
        i = rnd.randrange(len(mine)) if mine else None
        if a == "use" and mine:
            if mine[i].closed:
                try:
                    check(mine[i])
                    return 4
                except RuntimeError:
                    pass
            else:
                check(mine[i], fast=rnd.random() < 0.5)
        elif a == "close" and mine:
            mine[i].close()
        elif a in ("collect", "replace") and mine:
            gone = weakref.ref(mine[i])
            if a == "collect":
                mine.pop(i)
            else:
                mine[i] = piquant.Context(2)
                check(mine[i])
            gc.collect()
            if gone() is not None and id(gone()) != BUSY:   # a vanished thread's frame may hold that one
                return 5
        elif a == "default":
            check(None, fast=rnd.random() < 0.5)
            assert piquant.Context.get().num_threads >= 1
        elif a == "new":
            with piquant.Context(rnd.choice((1, 2))) as c:
                check(c)
        elif a == "fork" and depth < 2:
            code = fork_and_run(rnd, mine, depth + 1)
            if code != 0:
                return 10 + (code if isinstance(code, int) else 9)
    return 0

def fork_and_run(rnd, contexts, depth):
    # Forks; the child takes the contexts out of `contexts` (its copy of the
    # caller's list), so that collecting one really frees it.
    seed = rnd.random()
    pid = os.fork()
    if pid == 0:
        try:
            mine = list(contexts)
            contexts.clear()
            code = child_actions(random.Random(seed), mine, depth)
        except BaseException as e:
            print("child failed:", repr(e), file=sys.stderr, flush=True)
            code = 3
        os._exit(code)
    return wait_child(pid)
"""


@pytest.mark.parametrize("seed", range(4))
def test_generated_fork_patterns(seed):
    """Random fork patterns, eight per process: the parent makes 0 to 3
    contexts (and maybe the default one), maybe keeps a thread inside calls
    on one of them while it forks; the child (and a child's child) uses,
    closes, collects, replaces what it inherited, uses the default context
    and makes new ones. Every result is checked; the parent's contexts keep
    their threads and keep working after each fork."""
    r = run_python(FORK_PATTERNS + textwrap.dedent(f"""
    rnd = random.Random({seed})
    for pattern in range(8):
        sizes = [rnd.choice((1, 2, 3)) for _ in range(rnd.randrange(4))]
        contexts = [piquant.Context(n) for n in sizes]
        for j in range(len(contexts)):
            check(contexts[j])
        if rnd.random() < 0.5:
            check(None)
        busy, stop, BUSY = None, threading.Event(), None
        if contexts and rnd.random() < 0.5:
            j = rnd.randrange(len(contexts))
            BUSY = id(contexts[j])
            def load():
                while not stop.is_set():
                    check(contexts[j], 2)
            busy = threading.Thread(target=load)
            busy.start()
            time.sleep(rnd.random() * 0.01)
        code = fork_and_run(rnd, contexts, 0)
        stop.set()
        if busy:
            busy.join(20)
            assert not busy.is_alive()
        assert code == 0, f"pattern {{pattern}}: child exit {{code}}"
        for n, c in zip(sizes, contexts):
            assert c.num_threads == n, (c.num_threads, n)
            check(c, 2)
            c.close()
    print("ok")
    """), timeout=120)
    assert_ok(r)


def test_fork_while_another_thread_is_mid_call_then_close_in_child():
    """The hardest pattern, deterministically: the inherited context's pool
    was running a job (its lock held) when the fork came."""
    r = run_python("""
    ctx = piquant.Context(2)
    big = np.random.default_rng(1).standard_normal(30_000_000).astype(np.float32)
    stop = threading.Event()
    def load():
        while not stop.is_set():
            piquant.quantize(big, "uint8", scale=0.05, zero_point=128, ctx=ctx)
    t = threading.Thread(target=load)
    t.start()
    time.sleep(0.05)
    codes = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            check(ctx, 2)
            ok = ctx.num_threads == 1
            ctx.close()
            with piquant.Context(2) as fresh:
                check(fresh, 2)
                ok = ok and fresh.num_threads == 2
            os._exit(0 if ok else 3)
        codes.append(wait_child(pid))
        time.sleep(0.01)
    stop.set()
    t.join(20)
    print(codes)
    assert codes == [0, 0, 0], codes
    ctx.close()
    print("ok")
    """, timeout=90)
    assert_ok(r)


# ---------------------------------------------------------------- environment and arguments


def test_empty_environment_variable_means_default():
    """Unset, empty and blank are the same for every PIQUANT_* variable (the
    first three are read at each Context creation)."""
    r = run_python("""
    def made():
        c = piquant.Context()
        return c._backend.name, c.isa, c.num_threads
    want = made()
    for var in ("PIQUANT_ISA", "PIQUANT_NUM_THREADS", "PIQUANT_BACKEND"):
        for value in ("", "  ", "\\t"):
            os.environ[var] = value
            got = made()
            assert got == want, (var, value, got, want)
            del os.environ[var]
    print("ok")
    """)
    assert_ok(r)
    code = "print(piquant.info()['library'], 'ok')"
    assert run_python(code, PIQUANT_LIBRARY="  ").stdout == run_python(code, PIQUANT_LIBRARY=None).stdout


def test_environment_values_ignore_surrounding_white_space():
    r = run_python("info = piquant.info(); print(info['isa'], info['num_threads'], 'ok')", PIQUANT_ISA=" generic\t", PIQUANT_NUM_THREADS=" 3 ")
    assert_ok(r)
    assert r.stdout.split() == ["generic", "3", "ok"]


def test_piquant_library_that_is_not_piquant_is_a_clear_error():
    """Not an AttributeError from ctypes, and no silent fallback: an explicit
    library that does not load is an OSError naming PIQUANT_LIBRARY (unless
    the reference backend is asked for, which needs no library)."""
    import numpy._core._multiarray_umath as other_lib
    other = other_lib.__file__                           # a shared library, not piquant
    code = """
    try:
        piquant.quantize(XS[0], "uint8")
        print("no error")
    except OSError as e:
        print("OSError", "PIQUANT_LIBRARY" in str(e), "not a piquant library" in str(e), "ok")
    """
    for backend in ("", "native"):
        r = run_python(code, PIQUANT_LIBRARY=other, PIQUANT_BACKEND=backend)
        assert_ok(r)
        assert r.stdout.split() == ["OSError", "True", "True", "ok"], r.stdout + r.stderr[-2000:]
    missing = run_python(code, PIQUANT_LIBRARY=other + ".missing")
    assert missing.stdout.split() == ["OSError", "True", "False", "ok"], missing.stdout + missing.stderr[-2000:]
    ref_run = run_python("q = piquant.quantize(XS[0], 'uint8'); print(piquant.info()['backend'], 'ok')", PIQUANT_LIBRARY=other,
                         PIQUANT_BACKEND="reference")
    assert_ok(ref_run)
    assert ref_run.stdout.split() == ["reference", "ok"]


def test_context_arguments():
    r = run_python("""
    for n in (np.int64(2), np.int32(1), np.uint8(3), 2):
        with piquant.Context(n) as c:
            assert c.num_threads == int(n) and type(c.num_threads) is int
    bad = [(True, TypeError), (np.True_, TypeError), (2.0, TypeError), ("2", TypeError), (np.float64(2), TypeError),
           (0, ValueError), (np.int64(-1), ValueError), (np.int64(1025), ValueError)]
    for n, exc in bad:
        try:
            piquant.Context(n)
        except exc as e:
            assert "num_threads" in str(e), e
        else:
            raise AssertionError(f"num_threads={n!r} accepted")
    for isa in ("avx2\\x00junk", "generic\\x00", "", " generic", "GENERIC"):
        try:
            piquant.Context(1, isa=isa)
        except ValueError as e:
            assert "isa" in str(e), e
        else:
            raise AssertionError(f"isa={isa!r} accepted")
    with piquant.Context(1, isa="generic") as c:
        assert c.isa == "generic"
    print("ok")
    """)
    assert_ok(r)


def test_c_isa_strings():
    """The C side reads isa as a C string: exact names only; a long or
    non-UTF-8 name is refused with a (truncated) message, not a crash."""
    r = run_python("""
    import ctypes
    from piquant import _backend
    lib = _backend.library()
    h = ctypes.c_void_p()
    for name, ok in ((b"generic", True), (b"", False), (b"generic ", False), (b"\\xff\\xfe", False), (b"x" * 5000, False)):
        status = lib.piquant_context_create(1, name, ctypes.byref(h))
        assert (status == 0) == ok and (h.value is not None) == ok, (name[:20], status)
        if ok:
            lib.piquant_context_destroy(h)
        else:
            assert status == 4 and lib.piquant_last_error().startswith(b"isa: "), lib.piquant_last_error()[:80]
    print("ok")
    """, PIQUANT_ISA="bogus")
    assert_ok(r)
