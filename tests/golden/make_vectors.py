"""Golden vectors from the numpy reference, for checking a library build on
any target (tests/golden/check.c reads them; tests/test_golden.py runs it
natively for every x86-64 variant and under qemu for aarch64).

    python tests/golden/make_vectors.py OUT.bin

Format (little-endian): b"PQGV", u32 count, then per case: u32 op (0
quantize, 1 dequantize, 2 fake_quantize), i32 float_type, i32 quant_type,
i32 round_mode, i32 reduce_op, u32 reserved, u64 numel, f64 scale, i64 zero
point (uint64's as bits), u64 seed, u64 in_bytes, u64 out_bytes, then the
input, the output's initial bytes, and the expected output.
"""

from __future__ import annotations

import struct
import sys

import numpy as np

import piquant_reference as ref
from piquant import DataType

FLOATS = {"float32": np.float32, "bfloat16": np.uint16, "float16": np.float16, "float64": np.float64}
HEAD = struct.Struct("<I4iIQdqQQQ")


def floats(rng, n: int, ftype: str, scale: float, qtype: str, zp: int) -> np.ndarray:
    """Grid values, ties, range edges, specials and random bit patterns, as the stored type."""
    c = np.float64 if ftype == "float64" else np.float32
    qmin, qmax = ref.qrange(qtype)
    x = (rng.standard_normal(n) * 30 * scale).astype(c)
    pool = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, 3e38, -3e38, 2.5 * scale, -2.5 * scale,
            (qmax - zp + 0.5) * scale, (qmin - zp - 0.5) * scale, 2.0**31 * scale, -(2.0**63) * scale]
    with np.errstate(over="ignore"):
        pool_arr = np.array(pool, np.float64).astype(c)
    k = min(n, pool_arr.size)
    x[:k] = pool_arr[:k]
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.where(rng.random(n) < 0.2, ((np.round(x / scale) + 0.5) * scale).astype(c), x)
    if ftype == "bfloat16":
        return ref.f32_to_bf16_bits(x)
    with np.errstate(over="ignore"):
        out = x.astype(FLOATS[ftype])
    if n > 8:
        bits = rng.integers(0, 2**63, n // 8, dtype=np.uint64).astype(np.dtype(f"u{out.dtype.itemsize}"))
        out.view(bits.dtype)[rng.integers(0, n, bits.size)] = bits
    return out


def main(path: str) -> None:
    rng = np.random.default_rng(20261127)
    cases = []
    for ftype in ref.FLOAT_DTYPES:
        for qtype in ref.QUANTIZED_DTYPES:
            fdt, qdt = DataType[{"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float64": "F64"}[ftype]], DataType[qtype.upper()]
            qmin, qmax = ref.qrange(qtype)
            for n in (1, 37, 1027):
                scale = float(rng.choice([0.25, 0.0371]))
                zp = int((qmin, qmax, int(rng.integers(qmin, qmax, endpoint=True, dtype=np.uint64 if qmin == 0 else np.int64)))[int(rng.integers(0, 3))])
                x = floats(rng, n, ftype, scale, qtype, zp)
                for mode, seed in (("nearest", 0), ("stochastic", int(rng.integers(0, 2**63)))):
                    q = ref.quantize(x, qtype, scale, zp, round_mode=mode, seed=seed, float_dtype=ftype)
                    out0 = np.full(q.nbytes, 0xAB, np.uint8)
                    cases.append((0, fdt, qdt, mode == "stochastic", 0, n, scale, zp, seed, x, out0, q))
                    for reduce in ("set", "add"):
                        start = floats(rng, n, ftype, 0.5, "uint8", 0)
                        want = start.copy()
                        ref.fake_quantize(x, qtype, scale, zp, round_mode=mode, seed=seed, float_dtype=ftype, out=want, reduce=reduce)
                        cases.append((2, fdt, qdt, mode == "stochastic", reduce == "add", n, scale, zp, seed, x, start, want))
                for reduce in ("set", "add"):
                    data = rng.integers(0, 256, q.nbytes, dtype=np.uint16).astype(np.uint8)
                    if ref.bits(qtype) < 8 and n * ref.bits(qtype) % 8:
                        data[-1] &= (1 << (n * ref.bits(qtype) % 8)) - 1
                    start = floats(rng, n, ftype, 0.5, "uint8", 0)
                    want = start.copy()
                    ref.dequantize(data.view(ref.storage_dtype(qtype)), qtype, scale, zp, numel=n, out_dtype=ftype, out=want, reduce=reduce)
                    cases.append((1, fdt, qdt, 0, reduce == "add", n, scale, zp, 0, data, start, want))
    with open(path, "wb") as f:
        f.write(b"PQGV" + struct.pack("<I", len(cases)))
        for op, fdt, qdt, mode, red, n, scale, zp, seed, inp, out0, want in cases:
            inb, outb, wantb = (np.ascontiguousarray(a).view(np.uint8).tobytes() for a in (inp, out0, want))
            assert len(outb) == len(wantb)
            raw_zp = zp - (1 << 64) if zp >= 1 << 63 else zp
            f.write(HEAD.pack(op, fdt.value, qdt.value, int(mode), int(red), 0, n, scale, raw_zp, seed, len(inb), len(outb)))
            f.write(inb + outb + wantb)
    print(len(cases))


if __name__ == "__main__":
    main(sys.argv[1])
