"""`mixtune export-gguf` with llama-quantize's --imatrix, --tensor-type / --tensor-type-file and the q2_k_s, iq4_nl and
iq4_xs types (make_gguf_imatrix_goldens.CASES, imatrix files in GGUF and legacy .dat form with missing entries and
per-expert counts), read by the reference tools:

- gguf's GGUFReader reads every file, and gguf.quants' dequantization of each tensor is within its type's step of the
  f32 export's values;
- where llama.cpp's llama-quantize is built ($LLAMA_CPP_BUILD, interop/build_llama_quantize.sh), its output with the
  same options from the same f32 export, run in trainer/ with the same relative paths (it writes the imatrix path as
  given into quantize.imatrix.file), is the same file byte for byte, and what it refuses (make_gguf_imatrix_goldens.
  REFUSED) export-gguf refuses with exit 2; without the build those comparisons are skipped (a clean clone has none)
  and trainer's ExportGgufImatrixTest holds the committed golden.
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
import make_gguf_imatrix_goldens as goldens  # noqa: E402
import make_gguf_kquant_goldens as kq  # noqa: E402

QUANTIZE = kq.LLAMA_CPP_BUILD / "bin" / "llama-quantize"
STEP = {"Q2_K": 0.5, "Q3_K": 0.3, "Q4_0": 0.15, "Q4_1": 0.15, "F16": 0.001, "Q4_K": 0.15, "Q5_0": 0.08, "Q5_K": 0.08,
        "Q5_1": 0.08, "Q6_K": 0.04, "Q8_0": 0.01, "IQ4_NL": 0.15, "IQ4_XS": 0.15}
NOT_BUILT = (f"llama.cpp's llama-quantize is not built at {QUANTIZE} (make it with interop/build_llama_quantize.sh, or "
             "set LLAMA_CPP_BUILD); trainer's ExportGgufImatrixTest compares the committed golden instead")


def run(*args, cwd=goldens.RUN_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """Each preset's f32 export, and export-gguf of each case (on 1 to 3 encoding threads)."""
    work = tmp_path_factory.mktemp("gguf-imatrix")
    for preset in sorted({case[0] for case in goldens.CASES}):
        if preset in kq.WIDE:
            kq.write_wide(preset, work / preset)
        else:
            assert run(kq.MIXTUNE, "init-model", "--preset", preset, "--out", work / preset,
                       "--dtype", "fp32").returncode == 0
        assert run(kq.MIXTUNE, "export-gguf", "--model", work / preset, "--out", work / f"{preset}-f32.gguf",
                   "--type", "f32").returncode == 0
    for i, (preset, imatrix, kind, options) in enumerate(goldens.CASES):
        args = ([] if imatrix is None else ["--imatrix", goldens.RELATIVE + imatrix]) + options
        proc = run(kq.MIXTUNE, "export-gguf", "--model", work / preset, "--out", work / f"case{i}.gguf", "--type",
                   kind, *args, "--threads", str(1 + i % 3))
        assert proc.returncode == 0, proc.stderr
    return work


@pytest.mark.parametrize("case", range(len(goldens.CASES)))
def test_dequantized_tensors_are_the_f32_export_within_a_step(exported, case):
    preset = goldens.CASES[case][0]
    f32 = {t.name: np.asarray(t.data) for t in GGUFReader(exported / f"{preset}-f32.gguf").tensors}
    quantized = 0
    for tensor in GGUFReader(exported / f"case{case}.gguf").tensors:
        expected = f32[tensor.name]
        if tensor.tensor_type.name == "F32":
            np.testing.assert_array_equal(np.asarray(tensor.data), expected, err_msg=tensor.name)
            continue
        values = dequantize(np.asarray(tensor.data), tensor.tensor_type).reshape(expected.shape)
        imatrix = goldens.CASES[case][1]
        if imatrix is not None and imatrix.endswith(".dat") and values.ndim == 3:
            # the expert whose count is 0 has sums of 0: a legacy file gives it weights 0 (sums / ncall), where
            # llama-quantize's weighted search has no error to minimise (a GGUF file gives it weights 1)
            values, expected = np.delete(values, 3, axis=0), np.delete(expected, 3, axis=0)
        error = np.max(np.abs(values - expected)) / np.max(np.abs(expected))
        # twice the unweighted bound: an imatrix trades the largest error for the weighted one
        assert error <= 2 * STEP[tensor.tensor_type.name], f"{tensor.name} {tensor.tensor_type.name}: {error}"
        quantized += 1
    assert quantized > 0


@pytest.mark.skipif(not QUANTIZE.is_file(), reason=NOT_BUILT)
@pytest.mark.parametrize("case", range(len(goldens.CASES)))
def test_llama_quantize_with_the_same_options_writes_the_same_file(exported, case):
    preset, imatrix, kind, options = goldens.CASES[case]
    args = ([] if imatrix is None else ["--imatrix", goldens.RELATIVE + imatrix]) + options
    reference = exported / f"case{case}-llama-quantize.gguf"
    proc = run(QUANTIZE, *args, exported / f"{preset}-f32.gguf", reference, kind.upper(), "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (exported / f"case{case}.gguf").read_bytes() == reference.read_bytes()


@pytest.mark.skipif(not QUANTIZE.is_file(), reason=NOT_BUILT)
@pytest.mark.parametrize("case", range(len(goldens.REFUSED)))
def test_what_llama_quantize_refuses_is_refused(exported, case):
    preset, imatrix, kind, options = goldens.REFUSED[case]
    args = ([] if imatrix is None else ["--imatrix", goldens.RELATIVE + imatrix]) + options
    # llama-quantize fails (exit 1), where it fails in its main loop after writing part of its output (measured)
    assert run(QUANTIZE, *args, exported / f"{preset}-f32.gguf", exported / f"refused{case}-llama-quantize.gguf",
               kind.upper(), "2").returncode != 0
    out = exported / f"refused{case}.gguf"
    proc = run(kq.MIXTUNE, "export-gguf", "--model", exported / preset, "--out", out, "--type", kind, *args)
    assert proc.returncode == 2, proc.stderr
    assert "imatrix" in proc.stderr, proc.stderr
    assert not out.exists()
