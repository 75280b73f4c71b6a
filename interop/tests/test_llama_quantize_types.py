"""llama-quantize's per-tensor k-quant types on real model shapes (Mistral-7B ... Llama-2-70B), from `--dry-run` on
header-only sparse files (the k-quant mixes; and q4_1, q5_0, q5_1 and llama-quantize's options): where llama.cpp's llama-quantize is built ($LLAMA_CPP_BUILD, interop/build_llama_quantize.sh),
a fresh run equals the committed golden that merging's LlamaQuantizeTypesTest holds mixtune to; skipped otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import make_llama_quantize_types_golden as types_golden  # noqa: E402

QUANTIZE = types_golden.LLAMA_CPP_BUILD / "bin" / "llama-quantize"
NEEDS_BUILD = pytest.mark.skipif(not QUANTIZE.is_file(), reason=f"llama.cpp's llama-quantize is not built at {QUANTIZE} "
                                 "(make it with interop/build_llama_quantize.sh, or set LLAMA_CPP_BUILD); merging's "
                                 "LlamaQuantizeTypesTest compares the committed golden instead")


@NEEDS_BUILD
def test_dry_run_types_equal_the_committed_golden():
    committed = json.loads(types_golden.OUT.read_text())
    assert types_golden.golden()["models"] == committed["models"]


@NEEDS_BUILD
def test_dry_run_types_with_options_equal_the_committed_golden():
    committed = json.loads(types_golden.OPTIONS_OUT.read_text())
    assert types_golden.options_golden()["models"] == committed["models"]
