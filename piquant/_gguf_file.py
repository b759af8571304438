"""Whole GGUF model files: ``piquant.gguf.quantize_file`` and
``python -m piquant gguf quantize``, llama.cpp's quantizer (``llama-quantize``,
``llama_model_quantize``) rebuilt on piquant's kernels.

Each tensor gets the type llama.cpp's ``llama_tensor_get_type`` gives it for
the file type (src/llama-quant.cpp of the llama.cpp that llama-cpp-python
0.3.36 vendors), tensors are written in llama.cpp's order with the same bytes,
and the metadata is copied with ``general.quantization_version`` and
``general.file_type`` set. Tensors stream through in slabs of rows: memory
holds a slab, not the model.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import gguf as _gguf
from ._context import Context

# llama_ftype → the tensor type most tensors get (llama_ftype_get_default_type), for the
# file types whose every tensor type piquant can write.
FILE_TYPES = {
    "F32": (0, "F32"), "F16": (1, "F16"), "BF16": (32, "BF16"),
    "Q4_0": (2, "Q4_0"), "Q4_1": (3, "Q4_1"), "Q5_0": (8, "Q5_0"), "Q5_1": (9, "Q5_1"), "Q8_0": (7, "Q8_0"),
    "Q4_K_S": (14, "Q4_K"), "Q4_K_M": (15, "Q4_K"), "Q5_K_S": (16, "Q5_K"), "Q5_K_M": (17, "Q5_K"), "Q6_K": (18, "Q6_K"),
    "MXFP4_MOE": (38, "MXFP4"),
}
_BY_NUMBER = {number: name for name, (number, _) in FILE_TYPES.items()}
_FLOATS = ("F32", "F16", "BF16")
_SLAB = 1 << 24  # elements converted and quantized per call: all threads busy, 64 MB of float32 at most
_QNT_VERSION = 2  # GGML_QNT_VERSION
_SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
# llama.cpp's LLM_TYPE_70B: the one model size its rules name (block counts per architecture).
_70B_LAYERS = {"llama": 80, "deci": 80, "olmo": 80, "qwen2": 80, "jais2": 68}
_LAYER = re.compile(r"blk\.\s*([+-]?\d+)")  # sscanf(name, "blk.%d.", &layer): the final dot is not checked


class GGUFFileError(ValueError):
    """A source file piquant cannot quantize (not GGUF, truncated, a tensor it cannot convert)."""


def _file_type(ftype: Any) -> tuple[str, int, str]:
    """(name, llama_ftype number, default tensor type) of a name ("Q4_K_M"), a
    llama_ftype number or a gguf.LlamaFileType."""
    if isinstance(ftype, str):
        name = ftype.upper().removeprefix("MOSTLY_")
    elif isinstance(ftype, int) and not isinstance(ftype, bool):
        name = _BY_NUMBER.get(int(ftype), "")
    else:
        name = ""
    if name not in FILE_TYPES:
        raise ValueError(f"ftype: expected one of {', '.join(FILE_TYPES)} (or their llama_ftype numbers), got {ftype!r}")
    number, default = FILE_TYPES[name]
    return name, number, default


# --- which type each tensor gets: llama-quant.cpp's rules for the file types above ---

@dataclass
class _Model:
    """What llama.cpp's rules read from the metadata (its hparams)."""
    arch: str
    n_layer: int
    n_expert: int
    is_70b: bool


def _model(fields: dict[str, Any]) -> _Model:
    arch = fields.get("general.architecture")
    if not isinstance(arch, str):
        raise GGUFFileError("src: no general.architecture key: not a model file llama.cpp can quantize")
    n_layer = fields.get(f"{arch}.block_count")
    if not isinstance(n_layer, int):
        raise GGUFFileError(f"src: no {arch}.block_count key: not a model file llama.cpp can quantize")
    n_expert = fields.get(f"{arch}.expert_count", 0)
    n_head = fields.get(f"{arch}.attention.head_count", 0)
    n_head = n_head[0] if isinstance(n_head, list) and n_head else n_head
    n_head_kv = fields.get(f"{arch}.attention.head_count_kv", n_head)
    n_head_kv = n_head_kv[0] if isinstance(n_head_kv, list) and n_head_kv else n_head_kv
    is_70b = _70B_LAYERS.get(arch) == n_layer and (arch != "llama" or n_head != n_head_kv)
    return _Model(arch, n_layer, int(n_expert) if isinstance(n_expert, int) else 0, is_70b)


def _category(name: str) -> str:
    """tensor_get_category."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, category in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"), ("attn_v.weight", "attn_v"),
                           ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                           ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if part in name:
            return category
    return "other"


_KEEP_PARTS = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
    "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
    *(f"time_mix_{w}.weight" for w in ("first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2", "g1", "g2",
                                      "decay_w1", "decay_w2", "lerp_fused")),
    "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd",
    ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)
_KEEP_GLM5_NEXT = ("hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
                   "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight", "ssm_g_b.weight",
                   "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight", "attn_v_b.weight")


def _may_quantize(name: str, ne: tuple[int, ...], arch: str) -> bool:
    """tensor_allows_quantization (output tensor quantized, no --only-copy)."""
    if _n_dims(ne) < 2 or not name.endswith("weight") or name in ("position_embd.weight", "token_types.weight"):
        return False
    keep = _KEEP_PARTS + (_KEEP_GLM5_NEXT if arch == "glm5-next" else ())
    return not any(part in name for part in keep)


def _n_dims(ne: tuple[int, ...]) -> int:
    """ggml_n_dims: trailing dimensions of 1 do not count."""
    n = len(ne)
    while n > 1 and ne[n - 1] == 1:
        n -= 1
    return n


def _block(qtype: str) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[qtype]][0]


class _TypeRules:
    """llama_tensor_get_type over a file's tensors in llama.cpp's order (its
    counters of attn_v and ffn_down tensors make the answer depend on it)."""

    def __init__(self, ftype: str, default: str, model: _Model, names: list[str]) -> None:
        self.ftype, self.default, self.model = ftype, default, model
        categories = [_category(n) for n in names]
        self.n_attention_wv = sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in categories)
        self.tied_embeddings = "output" not in categories
        self.i_attention_wv = self.i_ffn_down = 0

    def choose(self, name: str, ne: tuple[int, ...], cur: str) -> str:
        if not _may_quantize(name, ne, self.model.arch):
            return cur
        if self.default in _FLOATS:
            return self.default
        return self._fallback(ne[0], self._rules(name, ne, _category(name)))

    @staticmethod
    def _fallback(ncols: int, qtype: str) -> str:
        """tensor_type_fallback: rows that are not whole blocks."""
        if ncols % _block(qtype) == 0:
            return qtype
        qtype = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}.get(qtype, qtype)
        return qtype if ncols % _block(qtype) == 0 else "F16"

    def _rules(self, name: str, ne: tuple[int, ...], category: str) -> str:
        ftype, model, new = self.ftype, self.model, self.default

        def more_bits(i: int, n: int) -> bool:  # use_more_bits
            return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2

        if model.arch == "glm5-next" and any(p in name for p in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
            return "Q8_0"
        if category == "output" or (self.tied_embeddings and category == "token_embd"):
            if ftype == "MXFP4_MOE" or model.arch == "falcon" or ne[0] % _block(new):
                return "Q8_0"
            return new if new == "Q8_0" else "Q6_K"
        if ftype == "MXFP4_MOE":
            expert = model.arch != "bailingmoe3" or category in ("ffn_up", "ffn_gate", "ffn_down")
            return "MXFP4" if len(ne) > 2 and ne[2] > 1 and expert else "Q8_0"
        if category in ("attn_v", "attn_qkv", "attn_kv_b"):
            if ftype in ("Q4_K_M", "Q5_K_M") and more_bits(self.i_attention_wv, self.n_attention_wv):
                new = "Q6_K"
            elif ftype == "Q4_K_S" and self.i_attention_wv < 4:
                new = "Q5_K"
            if model.is_70b and new == "Q4_K":
                new = "Q5_K"
            if model.n_expert == 8:
                new = "Q8_0"
            self.i_attention_wv += 1
        elif category == "attn_k":
            if model.n_expert == 8:
                new = "Q8_0"
        elif category == "ffn_down":
            i, n = self._layer(name, self.i_ffn_down)
            if ftype == "Q4_K_M":
                if model.arch == "falcon":
                    new = "Q6_K" if i < n // 16 else "Q5_K" if more_bits(i, n) else "Q4_K"
                elif more_bits(i, n):
                    new = "Q6_K"
            elif ftype == "Q5_K_M" and more_bits(i, n):
                new = "Q6_K"
            elif ftype == "Q4_K_S" and model.arch != "falcon" and i < n // 8:
                new = "Q5_K"
            self.i_ffn_down += 1
        elif category in ("ffn_gate", "ffn_up"):
            self._layer(name, 0)  # no rule for these file types, but llama.cpp still insists on a layer
        elif category == "attn_output" and model.arch != "falcon" and model.n_expert == 8 and ftype in ("Q4_K_S", "Q4_K_M"):
            new = "Q5_K"
        # llama.cpp's own attn_qkv branch is dead code (attn_qkv is attn_v-like above).
        return new

    def _layer(self, name: str, counter: int) -> tuple[int, int]:
        """layer_info: the counter, or for mixtures of experts the layer the name says."""
        if self.model.n_expert <= 1:
            return counter, self.model.n_layer
        m = _LAYER.match(name)
        if m is None:
            raise GGUFFileError(f"src: cannot tell the layer of tensor {name}")
        i = int(m.group(1))
        if not 0 <= i < self.model.n_layer:
            raise GGUFFileError(f"src: tensor {name}: layer {i} is not in [0, {self.model.n_layer})")
        return i, self.model.n_layer


def _order(name: str) -> tuple[int, str]:
    """llama_model_loader's weight_name_comparer: by layer (none first), then by name."""
    m = _LAYER.match(name)
    return (int(m.group(1)) if m else -1, name)


# --- converting one slab of rows ---

def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.view(np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def _f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """ggml_fp32_to_bf16_row_ref: round to nearest even; NaN kept quiet."""
    u = x.view(np.uint32)
    rounded = ((u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype(np.uint16)
    quiet = ((u >> np.uint32(16)) | np.uint32(64)).astype(np.uint16)
    return np.where((u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000), quiet, rounded)


def _quantizer(qtype: str, ctx: Context | None) -> Callable[[np.ndarray], np.ndarray]:
    """float rows (float32 or float16) → the bytes of qtype."""
    if qtype == "F32":
        return lambda x: x.astype(np.float32)
    if qtype == "F16":
        return lambda x: x.astype(np.float16)
    if qtype == "BF16":
        return lambda x: _f32_to_bf16(x.astype(np.float32))
    return lambda x: _gguf.quantize(x, qtype, ctx=ctx)


# --- the file ---

@dataclass
class _Tensor:
    name: str
    ne: tuple[int, ...]  # ggml order: row length first
    cur: str
    new: str
    rows: int
    data: np.ndarray  # the source (a memory map), one row per line

    @property
    def numel(self) -> int:
        return self.rows * self.ne[0]

    def out_bytes(self) -> int:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[self.new]]
        return self.ne[0] // block * size * self.rows


def _reader(src: Path) -> Any:
    from gguf import GGUFReader

    if not src.is_file():
        raise FileNotFoundError(f"src: no such file: {src}")
    with open(src, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFFileError(f"src: {src} is not a GGUF file (it does not start with 'GGUF')")
    try:
        return GGUFReader(src, "r")
    except Exception as e:  # the reader raises anything from ValueError to IndexError on damaged files
        raise GGUFFileError(f"src: {src} is not a valid GGUF file (truncated or damaged: {e})") from None


def _fields(reader: Any) -> dict[str, Any]:
    out = {}
    for key, field in reader.fields.items():
        if not key.startswith("GGUF."):
            try:
                out[key] = field.contents()
            except Exception as e:
                raise GGUFFileError(f"src: metadata key {key!r} cannot be read: {e}") from None
    return out


def _plan(reader: Any, ftype: str, default: str, fields: dict[str, Any]) -> list[_Tensor]:
    sources = sorted(reader.tensors, key=lambda t: _order(t.name))
    names = [t.name for t in sources]
    if len(set(names)) != len(names):
        raise GGUFFileError("src: a tensor name occurs twice")
    rules = _TypeRules(ftype, default, _model(fields), names)
    plan = []
    for t in sources:
        ne = tuple(int(d) for d in t.shape)
        cur = t.tensor_type.name
        new = rules.choose(t.name, ne, cur)
        if new != cur and cur not in _FLOATS:
            raise GGUFFileError(f"src: tensor {t.name} is {cur}; piquant quantizes F32, F16 and BF16 tensors, not requantizes {cur}")
        rows = int(np.prod(ne[1:], dtype=np.int64))
        plan.append(_Tensor(t.name, ne, cur, new, rows, t.data.reshape(rows, t.data.size // max(rows, 1))))
    return plan


def _slabs(t: _Tensor, ctx: Context | None) -> Iterator[tuple[np.ndarray, int]]:
    """(the output of a slab of rows, its elements), slab by slab."""
    step = max(1, _SLAB // max(1, t.ne[0]))
    if t.cur == t.new:
        for r in range(0, t.rows, step):
            yield t.data[r:r + step], min(step, t.rows - r) * t.ne[0]
        return
    quantize = _quantizer(t.new, ctx)
    for r in range(0, t.rows, step):
        x = np.asarray(t.data[r:r + step])
        x = _bf16_to_f32(x) if t.cur == "BF16" else x
        out = quantize(x)
        if not _valid(t.new, out):
            raise GGUFFileError(f"src: tensor {t.name} holds NaN or infinity, or values whose {t.new} scales overflow "
                                "float16 (llama.cpp refuses it too)")
        yield out, len(x) * t.ne[0]


# Where each block keeps its float16 scales (byte offsets), as ggml_validate_row_data checks them.
_SCALES = {"Q4_0": (0,), "Q5_0": (0,), "Q8_0": (0,), "Q6_K": (208,), "Q4_1": (0, 2), "Q5_1": (0, 2), "Q4_K": (0, 2), "Q5_K": (0, 2)}


def _valid(qtype: str, out: np.ndarray) -> bool:
    """ggml_validate_row_data, which llama.cpp runs on what it writes: no NaN
    or infinite float16 scale (or value, for the float types), no E8M0 of 0xFF.
    It reads the small output, not the input."""
    if qtype == "BF16":
        return not ((out.view(np.uint16) & 0x7FFF) >= 0x7F80).any()
    if qtype in _FLOATS:
        return bool(np.isfinite(out).all())
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    blocks = out.reshape(-1, GGML_QUANT_SIZES[GGMLQuantizationType[qtype]][1])
    if qtype == "MXFP4":
        return not (blocks[:, 0] == 0xFF).any()
    halves = (blocks[:, o] | (blocks[:, o + 1].astype(np.uint16) << 8) for o in _SCALES[qtype])
    return not any(((h & 0x7C00) == 0x7C00).any() for h in halves)


def quantize_file(src: Any, dst: Any, ftype: Any, *, threads: int | None = None, progress: bool = True,
                  force: bool = False) -> None:
    """Quantize the GGUF model file ``src`` (float32, float16 and bfloat16
    tensors) into ``dst`` as llama.cpp's quantizer does for the file type
    ``ftype`` ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "Q5_0", … or a
    llama_ftype number; see ``FILE_TYPES``): the same tensor types, order
    and bytes, every metadata key kept, ``general.file_type`` set.

    ``threads``: piquant's thread count (default: its default context's).
    ``progress``: tqdm bars on stderr, overall and per tensor. ``force``:
    replace an existing ``dst``. ``dst`` appears only when it is complete:
    on any error nothing is left behind.
    """
    name, number, default = _file_type(ftype)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads: expected a positive int or None, got {threads!r}")
    try:
        import gguf
    except ImportError:
        raise ImportError("quantize_file reads and writes GGUF files with the gguf package: pip install 'piquant[gguf]'") from None
    src, dst = Path(os.fspath(src)), Path(os.fspath(dst))
    if dst.exists() and not force:
        raise FileExistsError(f"dst: {dst} exists (pass force=True, or --force, to replace it)")
    if not dst.parent.is_dir():
        raise FileNotFoundError(f"dst: no such directory: {dst.parent}")
    reader = _reader(src)
    fields = _fields(reader)
    plan = _plan(reader, name, default, fields)
    with ExitStack() as stack:
        ctx = stack.enter_context(Context(threads)) if threads is not None else None
        # Beside dst, so that the rename is atomic; made with open(), not mkstemp, for the usual permissions.
        tmp = dst.parent / f".{dst.name}.{secrets.token_hex(4)}.part"
        open(tmp, "xb").close()
        try:
            writer = gguf.GGUFWriter(tmp, fields["general.architecture"])
            writer.data_alignment = reader.alignment
            kv = {}
            for key, field in reader.fields.items():
                if key.startswith("GGUF.") or key in _SPLIT_KEYS or key in ("general.quantization_version", "general.file_type"):
                    continue
                kind = field.types[0]
                sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
                kv[key] = gguf.GGUFValue(value=fields[key], type=kind, sub_type=sub)
            kv["general.quantization_version"] = gguf.GGUFValue(value=_QNT_VERSION, type=gguf.GGUFValueType.UINT32)
            kv["general.file_type"] = gguf.GGUFValue(value=number, type=gguf.GGUFValueType.UINT32)
            writer.kv_data[0] = kv
            for t in plan:
                qtype = gguf.GGMLQuantizationType[t.new]
                writer.add_tensor_info(t.name, tuple(reversed(t.ne)), np.dtype(np.float32), t.out_bytes(), raw_dtype=qtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            assert writer.fout is not None
            _write_tensors(writer.fout[0], plan, reader.alignment, ctx, progress)
            writer.close()
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _write_tensors(fout: Any, plan: list[_Tensor], align: int, ctx: Context | None, progress: bool) -> None:
    from tqdm import tqdm

    def pad() -> None:
        fout.write(b"\0" * (-fout.tell() % align))

    total = sum(t.numel for t in plan)
    with tqdm(total=total, unit="el", unit_scale=True, desc="model", disable=not progress, position=0, leave=True) as bar:
        for i, t in enumerate(plan):
            pad()
            desc = f"[{i + 1}/{len(plan)}] {t.name} {t.cur}→{t.new}"
            with tqdm(total=t.numel, unit="el", unit_scale=True, desc=desc, disable=not progress, position=1, leave=False) as tbar:
                for data, done in _slabs(t, ctx):
                    fout.write(np.ascontiguousarray(data).data)
                    tbar.update(done)
                    bar.update(done)
        pad()
