"""Whole-file quantization: piquant.gguf.quantize_file against llama.cpp's
quantizer (llama_cpp.llama_model_quantize, llama-cpp-python built as in
.ci/run) with the same thread count, side by side in one process run, on a
synthetic float16 llama model of a few hundred MB. Both outputs are checked
equal byte for byte.

    python benchmarks/bench_gguf_file.py [--types Q8_0 Q4_0 Q4_K_M] [--threads 2] [--layers 4] [--repeat 3]

Prints the median seconds of each and the ratio (llama.cpp / piquant: above 1
means piquant is faster).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np

import piquant
from piquant._gguf_file import FILE_TYPES


def write_model(path: Path, layers: int, embd: int, ff: int, vocab: int) -> None:
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(4096)
    w.add_embedding_length(embd)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(embd // 128)
    w.add_head_count_kv(embd // 512)
    w.add_rope_dimension_count(128)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    # The writer keeps every tensor until it writes them: the model is built in memory once.
    shapes = {"token_embd.weight": (vocab, embd), "output.weight": (vocab, embd)}
    for i in range(layers):
        p = f"blk.{i}."
        shapes |= {p + "attn_q.weight": (embd, embd), p + "attn_k.weight": (embd // 4, embd), p + "attn_v.weight": (embd // 4, embd),
                   p + "attn_output.weight": (embd, embd), p + "ffn_gate.weight": (ff, embd), p + "ffn_up.weight": (ff, embd),
                   p + "ffn_down.weight": (embd, ff)}
        w.add_tensor(p + "attn_norm.weight", np.ones(embd, np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(embd, np.float32))
    w.add_tensor("output_norm.weight", np.ones(embd, np.float32))
    for name, shape in shapes.items():
        w.add_tensor(name, (rng.standard_normal(shape, np.float32) * np.float32(0.02)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", nargs="+", default=["Q8_0", "Q4_0"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--embd", type=int, default=2048)
    ap.add_argument("--ff", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import llama_cpp

    quiet = llama_cpp.llama_log_callback(lambda *a: None)  # kept alive: llama.cpp calls it until the end
    llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
    with tempfile.TemporaryDirectory(dir=".") as d:
        src, ours, theirs = Path(d) / "f16.gguf", Path(d) / "piquant.gguf", Path(d) / "llama.gguf"
        write_model(src, args.layers, args.embd, args.ff, args.vocab)
        print(f"model: {src.stat().st_size / 2**20:.0f} MiB float16, threads {args.threads}, {piquant.info()['isa']}")
        for ftype in args.types:
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = FILE_TYPES[ftype][0]
            params.nthread = args.threads
            t_ours, t_theirs = [], []
            for _ in range(args.repeat):
                t = time.perf_counter()
                assert llama_cpp.llama_model_quantize(str(src).encode(), str(theirs).encode(), ctypes.byref(params)) == 0
                t_theirs.append(time.perf_counter() - t)
                t = time.perf_counter()
                piquant.gguf.quantize_file(src, ours, ftype, threads=args.threads, progress=False, force=True)
                t_ours.append(time.perf_counter() - t)
            assert ours.read_bytes() == theirs.read_bytes(), f"{ftype}: the files differ"
            a, b = statistics.median(t_ours), statistics.median(t_theirs)
            print(f"{ftype:7s} piquant {a:7.3f} s   llama_model_quantize {b:7.3f} s   ratio {b / a:5.2f}×   (same bytes)")


if __name__ == "__main__":
    main()
