"""The committed 8-bit AdamW golden and quantization maps are what make_adamw8bit_goldens.py produces today: bitsandbytes'
AdamW(optim_bits=8) through its triton kernels under triton's interpreter. Run in a subprocess: the script sets
TRITON_INTERPRET before torch loads and registers CPU kernels for bitsandbytes' ops."""

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
import make_adamw8bit_goldens as golden  # noqa: E402


@pytest.mark.skipif(not (golden.BNB_SRC / "bitsandbytes" / "functional.py").is_file(),
                    reason="bitsandbytes source tree not found (BNB_SRC)")
def test_committed_adamw8bit_golden_reproduces(tmp_path):
    out = tmp_path / "adamw8bit.safetensors"
    subprocess.run([sys.executable, str(HERE / "make_adamw8bit_goldens.py"), str(out)], check=True)
    assert out.read_bytes() == golden.OUT.read_bytes()
    lines = [line for line in golden.MAPS.read_text().splitlines() if not line.startswith("#")]
    tensors = load_file(str(out))
    for line, name in zip(lines, ("qmap1", "qmap2")):
        bits = [struct.unpack("<I", struct.pack("<f", v))[0] for v in tensors[name].tolist()]
        assert line.split() == [f"{b:08x}" for b in bits]
