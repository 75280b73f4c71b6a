"""Regenerates lora/src/test/resources/golden/nf4/expected.safetensors from bitsandbytes itself (see README there).

Run: interop/.venv/bin/python interop/make_nf4_goldens.py
Needs the bitsandbytes source tree (pure Python; its "default" backend runs NF4 on CPU without the compiled library)
in $BNB_SRC, default ~/.cache/mixtune/bitsandbytes. Deterministic: every case draws from its own fixed seed.

Every tensor below comes out of bitsandbytes' public functions (quantize_4bit, dequantize_4bit, get_4bit_type,
create_dynamic_map); this script only builds the inputs and stores what bitsandbytes returns.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "lora" / "src" / "test" / "resources" / "golden" / "nf4"
BNB_SRC = Path(os.environ.get("BNB_SRC", Path.home() / ".cache" / "mixtune" / "bitsandbytes")).expanduser()
BLOCKSIZE = 64

FETCH_HINT = """\
bitsandbytes source not found in {src} (set BNB_SRC to override).
It is not installed from pip here; export its source tree outside the repository, for example:
  mkdir -p ~/.cache/mixtune/bitsandbytes
  git --git-dir=/work/.mirror/bitsandbytes-foundation+bitsandbytes/repo archive HEAD | tar -x -C ~/.cache/mixtune/bitsandbytes
or: git clone https://github.com/bitsandbytes-foundation/bitsandbytes ~/.cache/mixtune/bitsandbytes
(check out the commit named in lora/src/test/resources/golden/nf4/README.md to reproduce the file bit for bit)."""


def import_bitsandbytes():
    if not (BNB_SRC / "bitsandbytes" / "functional.py").is_file():
        sys.exit(FETCH_HINT.format(src=BNB_SRC))
    sys.path.insert(0, str(BNB_SRC))
    import bitsandbytes
    import bitsandbytes.functional as bnb_f

    return bitsandbytes, bnb_f


def normal(shape: tuple[int, ...], std: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float32) * std


def ties_block(nf4_code: torch.Tensor) -> torch.Tensor:
    """One block whose absmax is exactly 1.0, so bitsandbytes' scale 1/absmax is 1.0 and each value meets the
    quantization bounds unchanged: the 15 bounds (computed as bitsandbytes does, in fp32), their negatives, the 16 code
    values, and the float right above each bound."""
    bounds = (nf4_code[:-1] + nf4_code[1:]) / 2
    above = torch.nextafter(bounds, torch.full_like(bounds, 2.0))
    values = torch.cat([torch.tensor([1.0]), bounds, -bounds, nf4_code, above, torch.tensor([-0.0, 0.5])])
    assert values.numel() == BLOCKSIZE and values.abs().max().item() == 1.0 and values[0].item() == 1.0
    return values


def zeros_then_normal() -> torch.Tensor:
    x = torch.zeros(2, BLOCKSIZE)
    x[1] = normal((BLOCKSIZE,), 1.0, seed=5)
    return x


def with_outliers() -> torch.Tensor:
    x = normal((4, BLOCKSIZE), 1.0, seed=6)
    for row, (col, value) in enumerate([(3, 50.0), (17, -50.0), (40, 50.0), (63, -50.0)]):
        x[row, col] = value
    return x


def bf16_source() -> torch.Tensor:
    return normal((32, BLOCKSIZE), 0.02, seed=7).to(torch.bfloat16).to(torch.float32)


def cases(nf4_code: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "small": normal((16, 24), 0.02, seed=1),
        "tail": normal((7, 13), 1.0, seed=2),
        "large": normal((256, 130), 1.0, seed=3),
        "ties": ties_block(nf4_code),
        "zeros": zeros_then_normal(),
        "outliers": with_outliers(),
        "bf16_source": bf16_source(),
    }


def quantize_case(bnb_f, name: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    n = x.numel()
    blocks = -(-n // BLOCKSIZE)
    packed, plain = bnb_f.quantize_4bit(x, blocksize=BLOCKSIZE, compress_statistics=False, quant_type="nf4")
    packed_nested, nested = bnb_f.quantize_4bit(x, blocksize=BLOCKSIZE, compress_statistics=True, quant_type="nf4")
    if not torch.equal(packed, packed_nested):
        raise AssertionError(f"{name}: packed bytes differ between compress_statistics False and True")
    out = {
        f"{name}.input": x,
        f"{name}.packed": packed.reshape(-1),
        f"{name}.absmax": plain.absmax,
        f"{name}.dequantized_plain": bnb_f.dequantize_4bit(packed, plain),
        f"{name}.qabsmax": nested.absmax,
        f"{name}.offset": nested.offset.reshape(1),
        f"{name}.absmax2": nested.state2.absmax,
        f"{name}.dequantized": bnb_f.dequantize_4bit(packed_nested, nested),
    }
    expected = {
        "input": (torch.float32, list(x.shape)),
        "packed": (torch.uint8, [(n + 1) // 2]),
        "absmax": (torch.float32, [blocks]),
        "dequantized_plain": (torch.float32, list(x.shape)),
        "qabsmax": (torch.uint8, [blocks]),
        "offset": (torch.float32, [1]),
        "absmax2": (torch.float32, [-(-blocks // 256)]),
        "dequantized": (torch.float32, list(x.shape)),
    }
    for key, (dtype, shape) in expected.items():
        t = out[f"{name}.{key}"]
        if t.dtype != dtype or list(t.shape) != shape:
            raise AssertionError(f"{name}.{key}: got {t.dtype} {list(t.shape)}, expected {dtype} {shape}")
    return {k: v.contiguous() for k, v in out.items()}


def check_ties(tensors: dict[str, torch.Tensor], nf4_code: torch.Tensor) -> None:
    """bucketize(right=False): a value equal to a bound goes to the lower code, the next float up to the upper one."""
    packed = tensors["ties.packed"]
    q = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1).long()
    x = tensors["ties.input"]
    bounds = (nf4_code[:-1] + nf4_code[1:]) / 2
    for i in range(15):
        assert q[1 + i].item() == i, f"bound {i} should quantize to code {i}, got {q[1 + i].item()}"
        assert q[47 + i].item() == i + 1, f"next float above bound {i} should quantize to code {i + 1}"
    for i in range(16):
        assert q[31 + i].item() == i, f"code value {i} should quantize to itself"
    assert torch.equal(x[1:16], bounds)


def main() -> None:
    bitsandbytes, bnb_f = import_bitsandbytes()
    torch.manual_seed(0)
    nf4_code = bnb_f.get_4bit_type("nf4", device="cpu")
    dynamic_map = bnb_f.create_dynamic_map()
    tensors = {"nf4_code": nf4_code.contiguous(), "dynamic_map": dynamic_map.contiguous()}
    for name, x in cases(nf4_code).items():
        tensors.update(quantize_case(bnb_f, name, x))
    check_ties(tensors, nf4_code)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / "expected.safetensors"
    # One key only: safetensors writes a multi-key metadata map in random order, and the file should be byte-stable.
    metadata = {"generator": f"bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__}, blocksize {BLOCKSIZE}"}
    save_file(tensors, path, metadata=metadata)

    reloaded = load_file(path)
    assert reloaded.keys() == tensors.keys()
    assert all(torch.equal(reloaded[k], tensors[k]) for k in tensors)
    print(f"wrote {path.relative_to(REPO)}: {len(tensors)} tensors, {path.stat().st_size} bytes; "
          f"bitsandbytes {bitsandbytes.__version__} from {BNB_SRC}, torch {torch.__version__}")
    print("packed bytes identical for compress_statistics=False and True in every case")


if __name__ == "__main__":
    main()
