"""`mixtune export-gguf --type q4_k_m` (and the other k-quant mixes) read by the reference tools.

- gguf's GGUFReader reads every file, and gguf.quants' dequantization of each tensor (Q2_K ... Q6_K, Q4_0, Q5_0,
  Q5_1, Q8_0) is within its type's step of the f32 export's values: the bytes mean what ggml means by them.
- q4_1, q5_0, q5_1 and llama-quantize's own options (--pure, --output-tensor-type, --token-embedding-type,
  --leave-output-tensor; make_gguf_kquant_goldens.OPTION_CASES), with any --threads: the same file as llama-quantize's
  where it is built (skipped otherwise), and dequantized within a step of the f32 export.
- Where llama.cpp's llama-quantize is built ($LLAMA_CPP_BUILD, default ~/.cache/mixtune/llama.cpp-build, made by
  interop/build_llama_quantize.sh), its output from the f32 export equals mixtune's file byte for byte; without the
  build that test is skipped (a clean clone has none), and trainer's ExportGgufKQuantTest holds the committed golden.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader
from gguf.quants import dequantize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import make_gguf_kquant_goldens as goldens  # noqa: E402

MIXTUNE = goldens.MIXTUNE
TYPES = goldens.FILE_TYPES
QUANTIZE = goldens.LLAMA_CPP_BUILD / "bin" / "llama-quantize"
# the largest error of a dequantized value, as a share of its tensor's largest magnitude
STEP = {"Q2_K": 0.5, "Q3_K": 0.3, "Q4_0": 0.15, "Q4_1": 0.15, "F16": 0.001, "Q4_K": 0.15, "Q5_0": 0.08, "Q5_K": 0.08, "Q5_1": 0.08, "Q6_K": 0.04,
        "Q8_0": 0.01}


def mixtune(*args) -> None:
    cmd = [str(MIXTUNE), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("gguf-kquants")
    mixtune("init-model", "--preset", "tiny-mistral", "--out", work / "tiny-mistral", "--dtype", "fp32")
    goldens.write_wide("wide-mixtral", work / "wide-mixtral")
    for model in ("tiny-mistral", "wide-mixtral"):
        for kind in ["f32", *TYPES]:
            mixtune("export-gguf", "--model", work / model, "--out", work / f"{model}-{kind}.gguf", "--type", kind)
    return work


@pytest.mark.parametrize("model", ["tiny-mistral", "wide-mixtral"])
@pytest.mark.parametrize("kind", TYPES)
def test_dequantized_tensors_are_the_f32_exports_within_a_step(exported, model, kind):
    f32 = {t.name: np.asarray(t.data) for t in GGUFReader(exported / f"{model}-f32.gguf").tensors}
    reader = GGUFReader(exported / f"{model}-{kind}.gguf")
    assert int(reader.fields["general.file_type"].contents()) == goldens_file_type(kind)
    assert {t.name for t in reader.tensors} == set(f32)
    assert within_a_step(f32, reader) > 0


def within_a_step(f32: dict, reader: GGUFReader) -> int:
    """Asserts every tensor F32 as in the f32 export or dequantized within its type's step of it; returns how many
    were quantized."""
    quantized = 0
    for tensor in reader.tensors:
        expected = f32[tensor.name]
        if tensor.tensor_type.name == "F32":
            np.testing.assert_array_equal(np.asarray(tensor.data), expected, err_msg=tensor.name)
            continue
        values = dequantize(np.asarray(tensor.data), tensor.tensor_type).reshape(expected.shape)
        error = np.max(np.abs(values - expected)) / np.max(np.abs(expected))
        assert error <= STEP[tensor.tensor_type.name], f"{tensor.name} {tensor.tensor_type.name}: {error}"
        quantized += 1
    return quantized


def goldens_file_type(kind: str) -> int:
    return {"q4_1": 3, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16,
            "q5_k_m": 17, "q6_k": 18}[kind]


@pytest.mark.skipif(not QUANTIZE.is_file(), reason=f"llama.cpp's llama-quantize is not built at {QUANTIZE} (make it "
                    "with interop/build_llama_quantize.sh, or set LLAMA_CPP_BUILD); trainer's ExportGgufKQuantTest "
                    "compares the committed golden instead")
@pytest.mark.parametrize("model", ["tiny-mistral", "wide-mixtral"])
@pytest.mark.parametrize("kind", TYPES)
def test_llama_quantize_of_the_f32_export_is_the_same_file(exported, model, kind):
    reference = exported / f"{model}-{kind}-llama-quantize.gguf"
    subprocess.run([str(QUANTIZE), str(exported / f"{model}-f32.gguf"), str(reference), kind.upper(), "2"],
                   check=True, capture_output=True)
    assert (exported / f"{model}-{kind}.gguf").read_bytes() == reference.read_bytes()


@pytest.fixture(scope="module")
def option_exports(tmp_path_factory) -> Path:
    """export-gguf of each OPTION_CASES case (on 1 to 3 encoding threads), beside each preset's f32 export."""
    work = tmp_path_factory.mktemp("gguf-options")
    for preset in sorted({case[0] for case in goldens.OPTION_CASES}):
        if preset in goldens.WIDE:
            goldens.write_wide(preset, work / preset)
        else:
            mixtune("init-model", "--preset", preset, "--out", work / preset, "--dtype", "fp32")
        mixtune("export-gguf", "--model", work / preset, "--out", work / f"{preset}-f32.gguf", "--type", "f32")
    for i, (preset, kind, options) in enumerate(goldens.OPTION_CASES):
        mixtune("export-gguf", "--model", work / preset, "--out", work / f"case{i}.gguf", "--type", kind, *options,
                "--threads", str(1 + i % 3))
    return work


@pytest.mark.parametrize("case", range(len(goldens.OPTION_CASES)))
def test_option_cases_dequantize_to_the_f32_export_within_a_step(option_exports, case):
    preset, kind, options = goldens.OPTION_CASES[case]
    f32 = {t.name: np.asarray(t.data) for t in GGUFReader(option_exports / f"{preset}-f32.gguf").tensors}
    reader = GGUFReader(option_exports / f"case{case}.gguf")
    assert int(reader.fields["general.file_type"].contents()) == goldens_file_type(kind)
    assert within_a_step(f32, reader) > 0


@pytest.mark.skipif(not QUANTIZE.is_file(), reason=f"llama.cpp's llama-quantize is not built at {QUANTIZE} (make it "
                    "with interop/build_llama_quantize.sh, or set LLAMA_CPP_BUILD); trainer's ExportGgufKQuantTest "
                    "compares the committed golden instead")
@pytest.mark.parametrize("case", range(len(goldens.OPTION_CASES)))
def test_llama_quantize_with_the_same_options_writes_the_same_file(option_exports, case):
    preset, kind, options = goldens.OPTION_CASES[case]
    reference = option_exports / f"case{case}-llama-quantize.gguf"
    subprocess.run([str(QUANTIZE), *options, str(option_exports / f"{preset}-f32.gguf"), str(reference), kind.upper(),
                    "2"], check=True, capture_output=True)
    assert (option_exports / f"case{case}.gguf").read_bytes() == reference.read_bytes()
