"""Regenerates the GGUF k-quant goldens from llama.cpp's own build (see interop/GOLDENS.md):

- merging/src/test/resources/gguf/kquants.json: ggml's ggml_quantize_chunk (libggml-base, no imatrix: the
  quantize_row_*_ref functions of ggml/src/ggml-quants.c) of fixed float32 rows to Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and
  Q2_K ... Q6_K, the bytes as hex (GgmlKQuantsTest);
- trainer/src/test/resources/golden/gguf/llama-quantize.json: llama-quantize (no imatrix) of `mixtune export-gguf
  --type f32` of four checkpoints to the k-quant mixes and q4_1/q5_0/q5_1, some with llama-quantize's --pure,
  --output-tensor-type, --token-embedding-type, --leave-output-tensor: every tensor's name, type and sha256, the
  metadata keys in order, and the whole file's size and sha256 (ExportGgufKQuantTest).

Run: interop/.venv/bin/python interop/make_gguf_kquant_goldens.py
Needs llama.cpp built in $LLAMA_CPP_BUILD (default ~/.cache/mixtune/llama.cpp-build), with bin/llama-quantize and
bin/libggml-base.so: interop/build_llama_quantize.sh builds it from a llama.cpp source tree outside the repository.
Builds mixtune (bin/mixtune) for init-model and export-gguf. Deterministic: the presets are seeded.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from make_gguf_goldens import describe, write

REPO = Path(__file__).resolve().parent.parent
MIXTUNE = REPO / "bin" / "mixtune"
BLOCKS_OUT = REPO / "merging" / "src" / "test" / "resources" / "gguf" / "kquants.json"
FILES_OUT = REPO / "trainer" / "src" / "test" / "resources" / "golden" / "gguf" / "llama-quantize.json"
LLAMA_CPP_BUILD = Path(os.environ.get("LLAMA_CPP_BUILD",
                                      Path.home() / ".cache" / "mixtune" / "llama.cpp-build")).expanduser()

# ggml.h's ggml_type ids
GGML_TYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}
# (preset, init-model dtype) x llama-quantize's type names, as `mixtune export-gguf --type` takes them. The tiny
# presets' rows (64, 128, 192 values) are not whole 256-value super-blocks, so llama-quantize falls back to Q5_0, Q5_1
# and Q8_0 on every matrix; the "wide" checkpoints below have rows of 256 and 512 and get the k-quants themselves.
PRESETS = [("tiny-mistral", "fp32"), ("tiny-mixtral", "bf16")]
FILE_TYPES = ["q4_k_m", "q5_k_m", "q6_k", "q4_k_s", "q5_k_s", "q3_k_m", "q3_k_s", "q3_k_l", "q2_k"]
# on the tiny presets, the mixes that reach each fallback (Q5_0, Q5_1, Q8_0, Q4_0): their files take half the test time
TINY_FILE_TYPES = ["q4_k_m", "q5_k_m", "q6_k", "q3_k_m"]
# llama-quantize's legacy file types (their rules: the output matrix Q6_K or Q8_0, Mixtral-8x's attn_v/attn_k Q8_0) and
# its own options (tools/quantize/quantize.cpp: --pure, --output-tensor-type, --token-embedding-type,
# --leave-output-tensor), as `mixtune export-gguf` takes them: (preset, file type, options), after the cases above
OPTION_CASES = [
    ("tiny-mistral", "q4_1", []), ("tiny-mistral", "q5_0", []), ("tiny-mistral", "q5_1", []),
    ("tiny-mistral", "q4_k_m", ["--token-embedding-type", "q8_0", "--output-tensor-type", "f16"]),
    ("wide-mistral", "q4_1", []), ("wide-mistral", "q5_0", []), ("wide-mistral", "q5_1", []),
    ("wide-mistral", "q4_k_m", ["--pure"]),
    ("wide-mistral", "q4_k_m", ["--leave-output-tensor"]),
    ("wide-mistral", "q2_k", ["--output-tensor-type", "q8_0", "--token-embedding-type", "q4_K"]),
    ("wide-mistral", "q6_k", ["--output-tensor-type", "f16", "--token-embedding-type", "f32"]),
    ("wide-mistral", "q5_k_m", ["--pure", "--output-tensor-type", "q4_0", "--leave-output-tensor"]),
    ("wide-mixtral", "q5_1", []),
    ("wide-mixtral", "q4_k_m", ["--pure"]),
    ("wide-mixtral", "q3_k_m", ["--token-embedding-type", "q5_1", "--leave-output-tensor"]),
]
TOKENIZER = REPO / "configs" / "tokenizer" / "mistral-v1"
# Checkpoints with k-quant-sized rows and weights from an integer hash (wide_weights), which ExportGgufKQuantTest
# writes again in Java, value for value; wide-mixtral has Mixtral-8x7B's 8 experts (llama-quantize's n_expert == 8
# rules). Vocabulary 512: the bundled tokenizer cut to it, as the converter and export-gguf cut a longer one.
WIDE = {
    "wide-mistral": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 256,
                     "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 512, "rms_norm_eps": 1e-05,
                     "rope_theta": 10000.0, "sliding_window": None, "max_position_embeddings": 4096,
                     "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2},
    "wide-mixtral": {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 256,
                     "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 512, "rms_norm_eps": 1e-05,
                     "rope_theta": 1000000.0, "sliding_window": None, "max_position_embeddings": 4096,
                     "tie_word_embeddings": False, "num_local_experts": 8, "num_experts_per_tok": 2,
                     "router_aux_loss_coef": 0.02, "bos_token_id": 1, "eos_token_id": 2},
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def block_inputs() -> list[tuple[str, np.ndarray]]:
    """Rows of whole 256-value super-blocks: random ones, and rows built to meet the quantizers' edge cases."""
    rng = np.random.default_rng(0)
    f = np.float32
    cases = [
        ("normal", rng.standard_normal(256 * 4).astype(f) * f(0.02)),
        ("wide", (rng.standard_normal(256 * 2) * np.exp(rng.uniform(-12, 6, 256 * 2))).astype(f)),
        ("zeros", np.zeros(256, dtype=f)),
        ("constant", np.full(256, 0.37, dtype=f)),
        ("negative-constant", np.full(256, -1.25, dtype=f)),
        ("negative-only", -np.abs(rng.standard_normal(256)).astype(f)),
        ("positive-only", (np.abs(rng.standard_normal(256)) + 3).astype(f)),
        # one huge value per 32-group among small ones, and a row of 1e8 next to 1e-8
        ("spikes", np.where(np.arange(256) % 32 == 5, f(1e4), rng.standard_normal(256).astype(f) * f(1e-3))
         .astype(f)),
        ("huge-range", (np.sign(rng.standard_normal(256)) * np.exp(rng.uniform(np.log(1e-8), np.log(1e8), 256)))
         .astype(f)),
        # below GROUP_MAX_EPS (1e-15): Q6_K's all-zero block; q4_K/q5_K still fit them
        ("tiny", (rng.standard_normal(256) * 1e-17).astype(f)),
        # integer levels and their halves (nearest_int's ties to even, roundf's away from zero)
        ("levels", (np.arange(256) % 64 - 32).astype(f) * f(0.5)),
        # one group all zero, the next one constant, in one super-block
        ("zero-groups", np.concatenate([np.zeros(32), np.full(32, 2.0), rng.standard_normal(192)]).astype(f)),
        ("fp16-subnormal-scales", (rng.standard_normal(256) * 1e-6).astype(f)),
    ]
    for _, values in cases:
        assert values.size % 256 == 0 and values.dtype == np.float32
    return cases


def ggml_base() -> ctypes.CDLL:
    library = LLAMA_CPP_BUILD / "bin" / "libggml-base.so"
    if not library.is_file():
        sys.exit(f"{library} not found: build llama.cpp with interop/build_llama_quantize.sh (or set LLAMA_CPP_BUILD)")
    lib = ctypes.CDLL(str(library))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


def make_blocks() -> dict:
    lib = ggml_base()
    out = []
    for name, values in block_inputs():
        entry = {"name": name, "values": [float(v) for v in values]}
        src = np.ascontiguousarray(values)
        for type_name, type_id in GGML_TYPES.items():
            dst = ctypes.create_string_buffer(values.size * 4)
            # one row of all the values, no imatrix: what llama-quantize does per row chunk
            size = lib.ggml_quantize_chunk(type_id, src.ctypes.data, dst, 0, 1, values.size, None)
            entry[type_name] = dst.raw[:size].hex()
        out.append(entry)
    return {"ggml": "libggml-base of " + snapshot(), "cases": out}


def snapshot() -> str:
    marker = LLAMA_CPP_BUILD / "SNAPSHOT"
    return marker.read_text().strip() if marker.is_file() else os.environ.get("LLAMA_CPP_COMMIT", "unknown")


def wide_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The checkpoint's tensors in Hugging Face names (Mixtral: the Hub's block_sparse_moe layout)."""
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    d = config["head_dim"]
    q, kv = config["num_attention_heads"] * d, config["num_key_value_heads"] * d
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q)})
        if config["model_type"] == "mixtral":
            shapes[p + "block_sparse_moe.gate.weight"] = (config["num_local_experts"], h)
            for e in range(config["num_local_experts"]):
                shapes.update({p + f"block_sparse_moe.experts.{e}.w1.weight": (i, h),
                               p + f"block_sparse_moe.experts.{e}.w2.weight": (h, i),
                               p + f"block_sparse_moe.experts.{e}.w3.weight": (i, h)})
        else:
            shapes.update({p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                           p + "mlp.down_proj.weight": (h, i)})
    return shapes


def wide_weights(t: int, shape: tuple[int, ...]) -> np.ndarray:
    """Tensor t (its index among the names sorted) from an integer hash, exact in float32 in numpy and Java alike:
    u = (i * 2654435761 + (t + 1) * 1013904223) mod 2^32 of the flat index i, (u >> 8) / 2^24 - 0.5; a matrix's row r
    scaled by 2^-(r mod 5), and zero where r mod 7 is 3; a vector 1 + that / 4."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.uint64)
    u = (i * np.uint64(2654435761) + np.uint64((t + 1) * 1013904223)) & np.uint64(0xFFFFFFFF)
    v = (u >> np.uint64(8)).astype(np.float32) * np.float32(2.0 ** -24) - np.float32(0.5)
    if len(shape) == 1:
        return (np.float32(1) + v * np.float32(0.25)).astype(np.float32)
    rows = (np.arange(n) // shape[-1]) % shape[-2] if len(shape) == 2 else np.arange(n) // shape[-1]
    scale = (np.float32(1) / (np.uint64(1) << (rows % 5).astype(np.uint64)).astype(np.float32)).astype(np.float32)
    v = np.where(rows % 7 == 3, np.float32(0), v * scale).astype(np.float32)
    return v.reshape(shape)


def write_wide(name: str, out: Path) -> None:
    from safetensors.numpy import save_file

    config = WIDE[name]
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    shapes = wide_shapes(config)
    save_file({n: wide_weights(t, shapes[n]) for t, n in enumerate(sorted(shapes))}, str(out / "model.safetensors"))
    for file in sorted(TOKENIZER.iterdir()):
        (out / file.name).write_bytes(file.read_bytes())


def run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def quantized(quantize: Path, work: Path, preset: str, dtype: str, file_type: str, options: list[str]) -> dict:
    """llama-quantize (its options first) of the preset's f32 export, described as ExportGgufKQuantTest reads it."""
    suffix = "".join("-" + o.lstrip("-").lower() for o in options)
    target = work / preset / f"{file_type}{suffix}.gguf"
    run(quantize, *options, work / preset / "f32.gguf", target, file_type.upper(), "2")
    described = describe(target)
    entry = {"name": f"{preset}-{dtype}-{file_type}{suffix}", "preset": preset, "dtype": dtype,
             "seed": None if preset in WIDE else 0, "type": file_type}
    if options:
        entry["options"] = options
    entry.update({"file_size": described["file_size"], "file_sha256": described["file_sha256"],
                  "metadata_keys": [m["key"] for m in described["metadata"]],
                  "tensors": [{k: t[k] for k in ("name", "type", "sha256")} for t in described["tensors"]]})
    return entry


def make_files(work: Path) -> dict:
    quantize = LLAMA_CPP_BUILD / "bin" / "llama-quantize"
    if not quantize.is_file():
        sys.exit(f"{quantize} not found: build it with interop/build_llama_quantize.sh (or set LLAMA_CPP_BUILD)")
    out = []
    dtypes = {}
    for preset, dtype in PRESETS + [(name, "fp32") for name in WIDE]:
        dtypes[preset] = dtype
        model = work / preset / preset
        if preset in WIDE:
            write_wide(preset, model)
        else:
            run(MIXTUNE, "init-model", "--preset", preset, "--out", model, "--dtype", dtype)
        f32 = work / preset / "f32.gguf"
        run(MIXTUNE, "export-gguf", "--model", model, "--out", f32, "--type", "f32")
        for file_type in FILE_TYPES if preset in WIDE else TINY_FILE_TYPES:
            out.append(quantized(quantize, work, preset, dtype, file_type, []))
    for preset, file_type, options in OPTION_CASES:
        out.append(quantized(quantize, work, preset, dtypes[preset], file_type, options))
    # the wide checkpoints as ExportGgufKQuantTest writes them: config.json and the tensors in name order
    checkpoints = {name: {"config": config, "tensors": [[n, list(shape)] for n, shape in
                                                       sorted(wide_shapes(config).items())]}
                   for name, config in WIDE.items()}
    return {"tool": "llama.cpp llama-quantize (no imatrix) of mixtune export-gguf --type f32", "snapshot": snapshot(),
            "checkpoints": checkpoints, "cases": out}


def main() -> None:
    write(BLOCKS_OUT, make_blocks())
    if "--blocks-only" in sys.argv:
        return
    with tempfile.TemporaryDirectory(prefix="gguf-kquant-goldens-") as work:
        write(FILES_OUT, make_files(Path(work)))


if __name__ == "__main__":
    main()
