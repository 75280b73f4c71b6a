"""Regenerates the GGUF importance-matrix goldens from llama.cpp's own build (see interop/GOLDENS.md):

- merging/src/test/resources/gguf/kquants-imatrix.json: libggml-base's ggml_quantize_chunk WITH an importance matrix
  (ggml-quants.c's quantize_row_q4_0_impl ... quantize_row_q6_K_impl, quantize_iq4_nl / quantize_iq4_xs) of
  make_gguf_kquant_goldens' fixed rows, cut into one or two rows, with seeded random positive column weights (and a
  row of weights with zeros), and IQ4_NL / IQ4_XS without one; the bytes as hex (GgmlWeightedQuantsTest);
- trainer/src/test/resources/golden/gguf/llama-quantize-imatrix.json: llama-quantize with --imatrix (GGUF and legacy
  .dat files written here: random positive sums, a few entries left out, per-expert counts on the 3-D experts, one
  expert with count 0), --tensor-type / --tensor-type-file, and the iq4_nl, iq4_xs and q2_k_s types, of `mixtune
  export-gguf --type f32` of make_gguf_kquant_goldens' wide checkpoints and tiny-mistral; every tensor's name, type
  and sha256, the metadata keys in order, the whole file's size and sha256, and the imatrix files themselves under
  trainer/src/test/resources/golden/gguf/imatrix/ (ExportGgufImatrixTest);
- merging/src/test/resources/gguf/llama-quantize-imatrix-types.json: `llama-quantize --dry-run` of
  make_llama_quantize_types_golden's real-size model headers for TYPE_VARIANTS (iq4_nl, iq4_xs, q2_k_s, and q5_0,
  iq4 and q2_k_s with an --imatrix, whose rules differ; --tensor-type with and without --pure and the type options),
  as that script's options golden (LlamaQuantizeTypesTest).

Run: LLAMA_CPP_BUILD=DIR interop/.venv/bin/python interop/make_gguf_imatrix_goldens.py
Needs what make_gguf_kquant_goldens.py needs (bin/llama-quantize, bin/libggml-base.so, bin/mixtune). Deterministic.
"""

from __future__ import annotations

import ctypes
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import make_gguf_kquant_goldens as kq
from make_gguf_goldens import describe, write

REPO = kq.REPO
BLOCKS_OUT = REPO / "merging" / "src" / "test" / "resources" / "gguf" / "kquants-imatrix.json"
FILES_OUT = REPO / "trainer" / "src" / "test" / "resources" / "golden" / "gguf" / "llama-quantize-imatrix.json"
IMATRIX_DIR = REPO / "trainer" / "src" / "test" / "resources" / "golden" / "gguf" / "imatrix"
# llama-quantize runs in trainer/ (where the Java test runs) and is given the files relative to it: it writes the path
# as given into quantize.imatrix.file, so both tools must be given the same string
RUN_DIR = REPO / "trainer"
RELATIVE = "src/test/resources/golden/gguf/imatrix/"
TYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14,
         "IQ4_NL": 20, "IQ4_XS": 23}
# (preset, imatrix file or None, file type, options after --type): the imatrix is passed as --imatrix FILE
CASES = [
    ("wide-mistral", "wide-mistral.imatrix.gguf", "q4_k_m", []),
    ("wide-mistral", "wide-mistral.full.imatrix.gguf", "q2_k_s", []),
    ("wide-mistral", "wide-mistral.imatrix.gguf", "q3_k_l", []),
    ("wide-mistral", "wide-mistral.imatrix.dat", "q4_1", []),
    ("wide-mistral", "wide-mistral.imatrix.dat", "q5_0", []),
    ("wide-mistral", "wide-mistral.imatrix.dat", "q2_k", []),
    ("wide-mistral", None, "iq4_nl", []),
    ("wide-mistral", None, "iq4_xs", []),
    ("wide-mistral", "wide-mistral.imatrix.gguf", "iq4_xs", []),
    ("wide-mixtral", "wide-mixtral.imatrix.gguf", "q3_k_m", []),
    ("wide-mixtral", "wide-mixtral.full.imatrix.gguf", "q2_k_s", []),
    ("tiny-mistral", None, "q2_k_s", []),
    ("wide-mixtral", "wide-mixtral.imatrix.dat", "q4_k_s", []),
    ("wide-mixtral", None, "iq4_xs", []),
    ("tiny-mistral", "tiny-mistral.imatrix.gguf", "q3_k_m", []),
    ("tiny-mistral", None, "iq4_xs", []),
    ("wide-mistral", None, "q4_k_m", ["--tensor-type", "attn_v=q8_0", "--tensor-type", "ffn_(up|gate)=q5_k"]),
    ("wide-mistral", "wide-mistral.imatrix.gguf", "q5_k_m", ["--tensor-type", "blk\\.1\\.=iq4_nl",
                                                              "--tensor-type", "blk\\.=q4_0"]),
    ("wide-mixtral", None, "q4_k_m", ["--tensor-type-file", RELATIVE + "tensor-types.txt", "--tensor-type",
                                      "exps=q6_K"]),
]
# cases llama-quantize refuses (exit 1): a q2_k_s tensor without its entry, q2_k_s without an imatrix, an imatrix of
# another model (entries of another size)
REFUSED = [
    ("wide-mistral", "wide-mistral.imatrix.gguf", "q2_k_s", []),
    ("wide-mistral", None, "q2_k_s", []),
    ("wide-mistral", "tiny-mistral.imatrix.gguf", "q4_k_m", []),
]
# (file type, options) for the dry runs; FILE stands for an imatrix (any: a dry run only asks whether there is one)
TYPE_VARIANTS = [
    ("iq4_nl", []), ("iq4_xs", []), ("q2_k_s", []),
    ("q5_0", ["--imatrix", "FILE"]), ("iq4_nl", ["--imatrix", "FILE"]), ("iq4_xs", ["--imatrix", "FILE"]),
    ("q2_k_s", ["--imatrix", "FILE"]),
    ("q4_k_m", ["--tensor-type", "attn_v=q8_0", "--tensor-type", "ffn_down=q5_k"]),
    ("q3_k_m", ["--tensor-type", "blk\\.(1|2)\\.=q6_k"]),
    ("q4_k_m", ["--pure", "--tensor-type", "attn_v=q8_0"]),
    ("q4_k_m", ["--output-tensor-type", "q8_0", "--tensor-type", "output=q4_0", "--tensor-type", "token_embd=q5_0"]),
]
TYPES_OUT = REPO / "merging" / "src" / "test" / "resources" / "gguf" / "llama-quantize-imatrix-types.json"
TENSOR_TYPES_FILE = "ffn_down_exps=q3_k\nattn_q=Q5_1  output=q8_0\n"


def block_cases() -> list[tuple[str, np.ndarray, int]]:
    """make_gguf_kquant_goldens' rows; those of 1024 values as two rows of 512, the others one row."""
    out = []
    for name, values in kq.block_inputs():
        out.append((name, values, 512 if values.size >= 1024 else values.size))
    return out


def make_blocks() -> dict:
    lib = kq.ggml_base()
    rng = np.random.default_rng(7)
    cases = []
    for name, values, n_per_row in block_cases():
        nrows = values.size // n_per_row
        weights = np.exp(rng.uniform(-3, 3, n_per_row)).astype(np.float32)
        if name == "levels":
            weights[::5] = 0  # a column never activated
        entry = {"name": name, "n_per_row": n_per_row, "values": [float(v) for v in values],
                 "imatrix": [float(w) for w in weights]}
        src = np.ascontiguousarray(values)
        for type_name, type_id in TYPES.items():
            for key, qw in ((type_name, weights), (type_name + "/none", None)):
                if qw is None and not type_name.startswith("IQ4"):
                    continue  # without an imatrix the k-quants are kquants.json's
                dst = ctypes.create_string_buffer(values.size * 4)
                size = lib.ggml_quantize_chunk(type_id, src.ctypes.data, dst, 0, nrows, n_per_row,
                                               None if qw is None else np.ascontiguousarray(qw).ctypes.data)
                entry[key] = dst.raw[:size].hex()
        cases.append(entry)
    return {"ggml": "libggml-base of " + kq.snapshot(), "cases": cases}


def imatrix_entries(f32: Path, seed: int, complete: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per tensor llama-imatrix would record (the matrices but token_embd, norms and the router): in_sum2 sums
    [nmat, ne0] positive and counts [nmat]; every fifth one left out (a missing entry), one expert with count 0."""
    from gguf import GGUFReader

    rng = np.random.default_rng(seed)
    entries = {}
    for i, tensor in enumerate(GGUFReader(f32).tensors):
        name = tensor.name
        shape = list(np.asarray(tensor.data).shape)
        if len(shape) < 2 or name == "token_embd.weight" or "_norm" in name or "ffn_gate_inp" in name:
            continue
        if i % 5 == 2 and not complete:
            continue
        nmat = shape[0] if len(shape) == 3 else 1
        ne0 = shape[-1]
        counts = rng.integers(1, 2000, nmat).astype(np.float32)
        if nmat > 1:
            counts[3] = 0
        sums = (np.exp(rng.uniform(-2, 4, (nmat, ne0))) * counts[:, None]).astype(np.float32)
        entries[name] = (sums, counts)
    return entries


def write_gguf_imatrix(entries: dict, path: Path) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="imatrix")  # gguf-py always writes general.architecture
    writer.add_string("general.type", "imatrix")
    writer.add_array("imatrix.datasets", ["wiki.train.raw"])
    writer.add_uint32("imatrix.chunk_count", 42)
    writer.add_uint32("imatrix.chunk_size", 512)
    for name, (sums, counts) in entries.items():
        writer.add_tensor(name + ".in_sum2", sums)
        writer.add_tensor(name + ".counts", counts.reshape(-1, 1))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_legacy_imatrix(entries: dict, path: Path) -> None:
    """The .dat layout: legacy sums hold (sum / count) * ncall per value, ncall the chunks (here the counts' max)."""
    out = bytearray(struct.pack("<i", len(entries)))
    for name, (sums, counts) in entries.items():
        ncall = int(counts.max())
        flat = sums.reshape(-1)
        out += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", ncall, flat.size)
        out += flat.astype("<f4").tobytes()
    dataset = b"legacy.txt"
    out += struct.pack("<ii", 17, len(dataset)) + dataset
    path.write_bytes(bytes(out))


def make_files(work: Path) -> dict:
    quantize = kq.LLAMA_CPP_BUILD / "bin" / "llama-quantize"
    if not quantize.is_file():
        sys.exit(f"{quantize} not found: build it with interop/build_llama_quantize.sh (or set LLAMA_CPP_BUILD)")
    IMATRIX_DIR.mkdir(parents=True, exist_ok=True)
    (IMATRIX_DIR / "tensor-types.txt").write_text(TENSOR_TYPES_FILE)
    for seed, preset in enumerate(["wide-mistral", "wide-mixtral", "tiny-mistral"]):
        model = work / preset / preset
        if preset in kq.WIDE:
            kq.write_wide(preset, model)
        else:
            kq.run(kq.MIXTUNE, "init-model", "--preset", preset, "--out", model, "--dtype", "fp32")
        kq.run(kq.MIXTUNE, "export-gguf", "--model", model, "--out", work / preset / "f32.gguf", "--type", "f32")
        entries = imatrix_entries(work / preset / "f32.gguf", seed, False)
        write_gguf_imatrix(entries, IMATRIX_DIR / f"{preset}.imatrix.gguf")
        if preset != "tiny-mistral":
            write_gguf_imatrix(imatrix_entries(work / preset / "f32.gguf", seed, True),
                               IMATRIX_DIR / f"{preset}.full.imatrix.gguf")
        if preset != "tiny-mistral":
            write_legacy_imatrix(entries, IMATRIX_DIR / f"{preset}.imatrix.dat")
    out = []
    for i, (preset, imatrix, file_type, options) in enumerate(CASES):
        args = ([] if imatrix is None else ["--imatrix", RELATIVE + imatrix]) + options
        target = work / f"case{i}.gguf"
        subprocess.run([str(quantize), *args, str(work / preset / "f32.gguf"), str(target), file_type.upper(), "2"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=RUN_DIR)
        described = describe(target)
        entry = {"name": f"{preset}-{file_type}-{i}", "preset": preset, "dtype": "fp32",
                 "seed": None if preset in kq.WIDE else 0, "type": file_type, "options": args,
                 "file_size": described["file_size"], "file_sha256": described["file_sha256"],
                 "metadata": [m for m in described["metadata"] if m["key"].startswith("quantize.")],
                 "metadata_keys": [m["key"] for m in described["metadata"]],
                 "tensors": [{k: t[k] for k in ("name", "type", "sha256")} for t in described["tensors"]]}
        out.append(entry)
    refused = []
    for preset, imatrix, file_type, options in REFUSED:
        args = ([] if imatrix is None else ["--imatrix", RELATIVE + imatrix]) + options
        proc = subprocess.run([str(quantize), *args, str(work / preset / "f32.gguf"), str(work / "refused.gguf"),
                               file_type.upper(), "2"], capture_output=True, text=True, cwd=RUN_DIR)
        assert proc.returncode != 0, (preset, imatrix, file_type)
        error = [line for line in (proc.stdout + proc.stderr).splitlines() if "failed to quantize:" in line]
        refused.append({"preset": preset, "type": file_type, "options": args, "llama_quantize_error": error[-1]})
    checkpoints = {name: {"config": config, "tensors": [[n, list(shape)] for n, shape in
                                                       sorted(kq.wide_shapes(config).items())]}
                   for name, config in kq.WIDE.items()}
    return {"tool": "llama.cpp llama-quantize --imatrix / --tensor-type of mixtune export-gguf --type f32, run in "
            "trainer/ with the files of golden/gguf/imatrix", "snapshot": kq.snapshot(), "checkpoints": checkpoints, "cases": out,
            "refused": refused}


def make_types() -> dict:
    import make_llama_quantize_types_golden as types

    imatrix = str(IMATRIX_DIR / "tiny-mistral.imatrix.gguf")
    variants = [(t, [imatrix if o == "FILE" else o for o in options]) for t, options in TYPE_VARIANTS]
    return types.options_golden(variants, lambda t, options: " ".join([t, *options]).replace(imatrix, "FILE"))


def main() -> None:
    write(BLOCKS_OUT, make_blocks())
    if "--blocks-only" in sys.argv:
        return
    write(TYPES_OUT, make_types())
    with tempfile.TemporaryDirectory(prefix="gguf-imatrix-goldens-") as work:
        write(FILES_OUT, make_files(Path(work)))


if __name__ == "__main__":
    main()
