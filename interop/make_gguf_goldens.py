"""Regenerates the GGUF goldens from the reference tools themselves (see interop/GOLDENS.md):

- merging/src/test/resources/gguf/quants.json: gguf.quants.quantize (the gguf package, pinned in
  requirements.txt) of fixed float32 arrays to F16, Q8_0 and Q4_0, the bytes as hex (GgufQuantsTest);
- trainer/src/test/resources/golden/gguf/converter.json: what llama.cpp's convert_hf_to_gguf.py writes for mixtune's
  tiny presets (tiny-mistral with a LoRA adapter folded in by `mixtune merge-adapter`, tiny-mixtral in bf16): every
  metadata key with its type and value (arrays by count, first values and sha256), every tensor's name, ggml shape,
  type, offset and sha256, and the whole file's sha256 (GgufExportTest).

Run: interop/.venv/bin/python interop/make_gguf_goldens.py
Needs llama.cpp's converter (convert_hf_to_gguf.py with its conversion/ package and gguf-py/) in $LLAMA_CPP_SRC,
default ~/.cache/mixtune/llama.cpp; it is read, never copied into the repository (MIT). Builds mixtune (bin/mixtune)
for init-model, init-adapter and merge-adapter. Deterministic: the presets and the adapter are seeded.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType

REPO = Path(__file__).resolve().parent.parent
MIXTUNE = REPO / "bin" / "mixtune"
QUANTS_OUT = REPO / "merging" / "src" / "test" / "resources" / "gguf" / "quants.json"
CONVERTER_OUT = REPO / "trainer" / "src" / "test" / "resources" / "golden" / "gguf" / "converter.json"
LLAMA_CPP_SRC = Path(os.environ.get("LLAMA_CPP_SRC", Path.home() / ".cache" / "mixtune" / "llama.cpp")).expanduser()

FETCH_HINT = """\
llama.cpp's converter not found in {src} (set LLAMA_CPP_SRC to override).
Export convert_hf_to_gguf.py, conversion/ and gguf-py/ of a llama.cpp checkout outside the repository, for example:
  mkdir -p ~/.cache/mixtune/llama.cpp
  git --git-dir=/work/.mirror/<owner>+llama.cpp/repo archive HEAD convert_hf_to_gguf.py conversion gguf-py \\
      | tar -x -C ~/.cache/mixtune/llama.cpp
or: git clone https://github.com/ggml-org/llama.cpp ~/.cache/mixtune/llama.cpp
(interop/GOLDENS.md names the snapshot the committed golden came from)."""

# The adapter folded into tiny-mistral: every linear layer, rank 4, random (seeded) so the merge changes every weight.
ADAPTER_ARGS = ["--r", "4", "--alpha", "8", "--targets", "all-linear", "--init", "random", "--seed", "0"]

# Tokenizer files as a Hub instruct model carries them (Mistral-7B-Instruct-v0.2's tokenizer_config.json keys: the
# added_tokens_decoder, add_bos_token/add_eos_token, a pad token), with what exercises the rest of the converter's
# reading: a user-defined added token over a piece (written with spaces for its U+2581), add_prefix_space, and the
# chat template in chat_template.jinja (tokenizer_config.json has none). Written over the preset's files.
HUB_STYLE_FILES = {
    "tokenizer_config.json": json.dumps({
        "add_bos_token": True,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            "0": {"content": "<unk>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                  "special": True},
            "1": {"content": "<s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                  "special": True},
            "2": {"content": "</s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                  "special": True},
            "31998": {"content": "<|tool|>", "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": False},
            "31999": {"content": "\u2581[CALL]", "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": False},
        },
        "additional_special_tokens": [],
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": True,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "</s>",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }, indent=2, ensure_ascii=False) + "\n",
    "chat_template.jinja": "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }}"
                           " [/INST]{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}",
}

# (case name, preset, init-model dtype, with adapter, --outtype, files written over the preset's)
CASES = [
    ("tiny-mistral-adapter-f32", "tiny-mistral", "fp32", True, "f32", None),
    ("tiny-mistral-adapter-f16", "tiny-mistral", "fp32", True, "f16", None),
    ("tiny-mistral-adapter-q8_0", "tiny-mistral", "fp32", True, "q8_0", None),
    ("tiny-mixtral-bf16-f16", "tiny-mixtral", "bf16", False, "f16", None),
    ("tiny-mixtral-bf16-q8_0", "tiny-mixtral", "bf16", False, "q8_0", None),
    ("tiny-mistral-hub-tokenizer-q8_0", "tiny-mistral", "bf16", False, "q8_0", HUB_STYLE_FILES),
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# gguf.quants goldens


def quant_inputs() -> list[tuple[str, np.ndarray]]:
    """Arrays of whole 32-value blocks: random ones, and blocks built to meet each quantizer's edge cases."""
    rng = np.random.default_rng(0)
    cases = [
        ("normal", rng.standard_normal(32 * 8).astype(np.float32) * np.float32(0.02)),
        ("wide", (rng.standard_normal(32 * 4) * np.exp(rng.uniform(-12, 6, 32 * 4))).astype(np.float32)),
        ("zeros", np.zeros(64, dtype=np.float32)),
    ]
    # Q8_0 ties: with amax 127 the scale is 1 and each x.5 meets roundf's half-away-from-zero rounding.
    ties = np.array([127, -127] + [k + 0.5 for k in range(-15, 15)], dtype=np.float32)
    cases.append(("halves", ties))
    # Q4_0: the largest magnitude negative (d > 0), ties of magnitude (the first wins), and -8..7 exactly.
    q4 = np.array([-8, 8] + list(range(-8, 8)) + [3.5, -3.5, 0.25, -0.25, 7.9, -7.9, 0, 1e-3, -1e-3, 2, 4, 6, 5, 1],
                  dtype=np.float32)
    cases.append(("q4-edges", q4))
    # fp16 edges: subnormals, the largest finite half, ties to even, overflow
    f16 = np.array([65504, 65519.99, 65520, -65536, 6.0e-8, 3.0e-8, 2.98e-8, 1e-10, 2049, 2051, 0.1, -0.0, 1e4, 5.96e-8,
                    6.1035e-05, 6.1e-05] + [1 / 3] * 16, dtype=np.float32)
    cases.append(("f16-edges", f16))
    for _, values in cases:
        assert values.size % 32 == 0 and values.dtype == np.float32
    return cases


def make_quants() -> dict:
    out = []
    for name, values in quant_inputs():
        entry = {"name": name, "values": [float(v) for v in values]}
        for qtype in (GGMLQuantizationType.F16, GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_0):
            entry[qtype.name] = gguf.quants.quantize(values.reshape(-1, 32), qtype).tobytes().hex()
        out.append(entry)
    return {"gguf": gguf_version(), "cases": out}


def gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")


# ---------------------------------------------------------------------------------------------------------------------
# converter goldens


def run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, stdout=subprocess.DEVNULL)


def field_entry(field) -> dict:
    """A metadata key as the golden stores it: its type name and value; an array by count, head and sha256 of its
    elements as GGUF encodes them (strings: uint64 length + UTF-8; numbers: little-endian)."""
    kind = field.types[0]
    if kind == GGUFValueType.ARRAY:
        element = field.types[1]
        values = field.contents()
        if element == GGUFValueType.STRING:
            blob = b"".join(len(s.encode()).to_bytes(8, "little") + s.encode() for s in values)
        elif element == GGUFValueType.FLOAT32:
            blob = np.array(values, dtype="<f4").tobytes()
        elif element == GGUFValueType.INT32:
            blob = np.array(values, dtype="<i4").tobytes()
        else:
            raise ValueError(f"{field.name}: array of {element.name}")
        return {"type": f"ARRAY[{element.name}]", "count": len(values), "head": list(values[:8]),
                "sha256": sha256(blob)}
    value = field.contents()
    if kind == GGUFValueType.FLOAT32:
        value = float(np.float32(value))
    return {"type": kind.name, "value": value}


def describe(path: Path) -> dict:
    reader = GGUFReader(path)
    metadata = []
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        metadata.append({"key": name, **field_entry(field)})
    tensors = []
    for tensor in reader.tensors:
        tensors.append({"name": tensor.name, "type": tensor.tensor_type.name,
                        "shape": [int(n) for n in tensor.shape], "offset": int(tensor.data_offset),
                        "sha256": sha256(tensor.data.tobytes())})
    data = path.read_bytes()
    return {"file_size": len(data), "file_sha256": sha256(data), "metadata": metadata, "tensors": tensors}


def converter_commit() -> str:
    marker = LLAMA_CPP_SRC / "SNAPSHOT"
    return marker.read_text().strip() if marker.is_file() else os.environ.get("LLAMA_CPP_COMMIT", "unknown")


def make_converter(work: Path) -> dict:
    if not (LLAMA_CPP_SRC / "convert_hf_to_gguf.py").is_file():
        sys.exit(FETCH_HINT.format(src=LLAMA_CPP_SRC))
    out = []
    for name, preset, dtype, with_adapter, outtype, files in CASES:
        case_dir = work / name
        base = case_dir / "base" / preset
        run(MIXTUNE, "init-model", "--preset", preset, "--out", base, "--dtype", dtype)
        for file, content in (files or {}).items():
            (base / file).write_text(content, encoding="utf-8")
        model = base
        if with_adapter:
            adapter = case_dir / "adapter"
            run(MIXTUNE, "init-adapter", "--model", base, "--out", adapter, *ADAPTER_ARGS)
            # the converter reads a checkpoint: merge-adapter's, in a folder named as the base (general.name)
            model = case_dir / "merged" / preset
            run(MIXTUNE, "merge-adapter", "--model", base, "--adapter", adapter, "--out", model, "--dtype", "fp32")
        gguf_file = case_dir / f"{name}.gguf"
        env = dict(os.environ)
        env.pop("NO_LOCAL_GGUF", None)
        subprocess.run([sys.executable, str(LLAMA_CPP_SRC / "convert_hf_to_gguf.py"), str(model), "--outfile",
                        str(gguf_file), "--outtype", outtype], check=True, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        entry = {"name": name, "preset": preset, "dtype": dtype, "seed": 0,
                 "adapter": ADAPTER_ARGS if with_adapter else None, "outtype": outtype, "files": files}
        entry.update(describe(gguf_file))
        out.append(entry)
    return {"converter": "llama.cpp convert_hf_to_gguf.py", "snapshot": converter_commit(), "gguf": gguf_version(),
            "cases": out}


def write(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes)")


def main() -> None:
    write(QUANTS_OUT, make_quants())
    if "--quants-only" in sys.argv:
        return
    with tempfile.TemporaryDirectory(prefix="gguf-goldens-") as work:
        write(CONVERTER_OUT, make_converter(Path(work)))


if __name__ == "__main__":
    main()
