"""Regenerates merging/src/test/resources/gguf/llama-quantize-types.json (LlamaQuantizeTypesTest; interop/GOLDENS.md):
the type llama-quantize (no imatrix) gives every tensor of real-size llama/Mistral/Mixtral f32 GGUF files, for each
k-quant mix mixtune writes, read from `llama-quantize --dry-run`; and llama-quantize-options.json: the same for
q4_1, q5_0, q5_1 and with llama-quantize's --pure, --output-tensor-type, --token-embedding-type, --leave-output-tensor.

The files have the shapes of Mistral-7B, Mixtral-8x7B, Llama-2-70B, ... and no data: only their header is written, the
rest of each file is a sparse hole (the dry run reads no tensor data), so a 280 GB model takes a few KiB of disk.
Run: interop/.venv/bin/python interop/make_llama_quantize_types_golden.py
Needs $LLAMA_CPP_BUILD/bin/llama-quantize (interop/build_llama_quantize.sh).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import gguf
import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "merging" / "src" / "test" / "resources" / "gguf" / "llama-quantize-types.json"
OPTIONS_OUT = REPO / "merging" / "src" / "test" / "resources" / "gguf" / "llama-quantize-options.json"
LLAMA_CPP_BUILD = Path(os.environ.get("LLAMA_CPP_BUILD",
                                      Path.home() / ".cache" / "mixtune" / "llama.cpp-build")).expanduser()
FILE_TYPES = ["q4_k_m", "q5_k_m", "q6_k", "q4_k_s", "q5_k_s", "q3_k_m", "q3_k_s", "q3_k_l", "q2_k"]
# (file type, llama-quantize options) for llama-quantize-options.json
VARIANTS = [
    ("q4_1", []), ("q5_0", []), ("q5_1", []),
    ("q4_k_m", ["--pure"]), ("q2_k", ["--pure"]), ("q5_0", ["--pure"]),
    ("q4_k_m", ["--leave-output-tensor"]),
    ("q4_k_m", ["--output-tensor-type", "q8_0"]),
    ("q3_k_m", ["--token-embedding-type", "q4_K"]),
    ("q6_k", ["--output-tensor-type", "f16", "--token-embedding-type", "q8_0"]),
    ("q5_k_m", ["--pure", "--output-tensor-type", "q6_K", "--leave-output-tensor"]),
]
# name: layers, experts, heads, kv heads, hidden, head_dim, ffn, vocab, tied
MODELS = {
    "mistral-7b": dict(layers=32, experts=0, heads=32, kv=8, hidden=4096, head_dim=128, ffn=14336, vocab=32000),
    "mixtral-8x7b": dict(layers=32, experts=8, heads=32, kv=8, hidden=4096, head_dim=128, ffn=14336, vocab=32000),
    "mixtral-8x22b": dict(layers=56, experts=8, heads=48, kv=8, hidden=6144, head_dim=128, ffn=16384, vocab=32768),
    "mistral-nemo-12b": dict(layers=40, experts=0, heads=32, kv=8, hidden=5120, head_dim=128, ffn=14336,
                             vocab=131072),
    "llama-2-70b": dict(layers=80, experts=0, heads=64, kv=8, hidden=8192, head_dim=128, ffn=28672, vocab=32000),
    # tied embeddings, no GQA, rows of 3200 and 8640 values (not whole super-blocks: the fallbacks), 26 layers
    "open-llama-3b-tied": dict(layers=26, experts=0, heads=32, kv=32, hidden=3200, head_dim=100, ffn=8640,
                               vocab=32000, tied=True),
    # 4 experts (not Mixtral's 8), GQA 2, a vocabulary of odd size, 12 layers
    "moe-4x-gqa2": dict(layers=12, experts=4, heads=16, kv=8, hidden=2048, head_dim=128, ffn=5632, vocab=32001),
}


def tensors(m: dict) -> list[tuple[str, tuple[int, ...]]]:
    """convert_hf_to_gguf.py's tensor names and numpy shapes for a llama-architecture model."""
    hidden, q, kv = m["hidden"], m["heads"] * m["head_dim"], m["kv"] * m["head_dim"]
    out = [("token_embd.weight", (m["vocab"], hidden)), ("output_norm.weight", (hidden,))]
    if not m.get("tied"):
        out.append(("output.weight", (m["vocab"], hidden)))
    for i in range(m["layers"]):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", (hidden,)), (p + "ffn_norm.weight", (hidden,)),
                (p + "attn_q.weight", (q, hidden)), (p + "attn_k.weight", (kv, hidden)),
                (p + "attn_v.weight", (kv, hidden)), (p + "attn_output.weight", (hidden, q))]
        e, f = m["experts"], m["ffn"]
        if e:
            out += [(p + "ffn_gate_inp.weight", (e, hidden)), (p + "ffn_gate_exps.weight", (e, f, hidden)),
                    (p + "ffn_up_exps.weight", (e, f, hidden)), (p + "ffn_down_exps.weight", (e, hidden, f))]
        else:
            out += [(p + "ffn_gate.weight", (f, hidden)), (p + "ffn_up.weight", (f, hidden)),
                    (p + "ffn_down.weight", (hidden, f))]
    return out


def write_header(path: Path, m: dict) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(4096)
    w.add_embedding_length(m["hidden"])
    w.add_block_count(m["layers"])
    w.add_feed_forward_length(m["ffn"])
    w.add_rope_dimension_count(m["head_dim"])
    w.add_head_count(m["heads"])
    w.add_head_count_kv(m["kv"])
    w.add_key_length(m["head_dim"])
    w.add_value_length(m["head_dim"])
    w.add_layer_norm_rms_eps(1e-5)
    if m["experts"]:
        w.add_expert_count(m["experts"])
        w.add_expert_used_count(2)
    w.add_file_type(0)
    w.add_vocab_size(m["vocab"])
    total = 0
    for name, shape in tensors(m):
        nbytes = int(np.prod(shape)) * 4
        w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes)
        total += -(-nbytes // 32) * 32
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size + 32 + total)  # a hole: the dry run maps the file and reads no tensor data


def dry_run(path: Path, file_type: str, options: list[str] = ()) -> dict[str, str]:
    result = subprocess.run([str(LLAMA_CPP_BUILD / "bin" / "llama-quantize"), "--dry-run", *options, str(path),
                             file_type.upper(), "1"], check=True, capture_output=True, text=True,
                            env={**os.environ, "LD_LIBRARY_PATH": str(LLAMA_CPP_BUILD / "bin")})
    types = {}
    for line in (result.stdout + result.stderr).splitlines():
        match = re.match(r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[.*\], type =\s+(\S+),.*?(?:\((\S+)\))?$", line)
        if match:
            types[match.group(1)] = (match.group(3) or match.group(2)).upper()
    return types


def golden() -> dict:
    """The golden's content, from fresh dry runs."""
    models = {}
    with tempfile.TemporaryDirectory() as work:
        for name, m in MODELS.items():
            path = Path(work) / f"{name}.gguf"
            write_header(path, m)
            by_type = {t: dry_run(path, t) for t in FILE_TYPES}
            order = list(by_type[FILE_TYPES[0]])
            shapes = dict(tensors(m))
            assert sorted(order) == sorted(shapes), name
            models[name] = {
                "layers": m["layers"], "experts": m["experts"], "heads": m["heads"], "kv_heads": m["kv"],
                "tensors": [[t, list(shapes[t])] for t in order],
                "types": {t: " ".join(by_type[t][n] for n in order) for t in FILE_TYPES},
            }
            path.unlink()
    snapshot = (LLAMA_CPP_BUILD / "SNAPSHOT").read_text().strip() if (LLAMA_CPP_BUILD / "SNAPSHOT").exists() else "?"
    return {"llama_cpp": snapshot, "models": models}


def options_golden(variants_run=None, key=None) -> dict:
    """llama-quantize-options.json's content: each model's types for each of VARIANTS, from fresh dry runs. A variant
    that gives a tensor a type its rows are not whole blocks of is left out for that model: the dry run prints it, but
    llama-quantize's real run fails there (no fallback after --pure or a type option), as export-gguf refuses it.
    make_gguf_imatrix_goldens.py passes its own variants, and how a variant is named in the file (key)."""
    variants_run = VARIANTS if variants_run is None else variants_run
    key = key or (lambda file_type, options: " ".join([file_type, *options]))
    models = {}
    with tempfile.TemporaryDirectory() as work:
        for name, m in MODELS.items():
            path = Path(work) / f"{name}.gguf"
            write_header(path, m)
            shapes = dict(tensors(m))
            variants = {}
            for file_type, options in variants_run:
                types = dry_run(path, file_type, options)
                if any(shapes[t][-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[types[t]]][0]
                       for t in types):
                    continue
                order = list(types)
                assert sorted(order) == sorted(shapes), name
                variants[key(file_type, options)] = " ".join(types[n] for n in order)
            models[name] = {
                "layers": m["layers"], "experts": m["experts"], "heads": m["heads"], "kv_heads": m["kv"],
                "tensors": [[t, list(shapes[t])] for t in order], "types": variants,
            }
            path.unlink()
    snapshot = (LLAMA_CPP_BUILD / "SNAPSHOT").read_text().strip() if (LLAMA_CPP_BUILD / "SNAPSHOT").exists() else "?"
    return {"llama_cpp": snapshot, "models": models}


def main() -> None:
    OUT.write_text(json.dumps(golden(), indent=1) + "\n")
    print(f"wrote {OUT}")
    OPTIONS_OUT.write_text(json.dumps(options_golden(), indent=1) + "\n")
    print(f"wrote {OPTIONS_OUT}")


if __name__ == "__main__":
    main()
