"""Golden for mixtune's 8-bit AdamW: trainer/src/test/resources/golden/adamw8bit/adamw8bit.safetensors.

Run: interop/.venv/bin/python interop/make_adamw8bit_goldens.py [out.safetensors]

bitsandbytes' own optimizer, `bnb.optim.AdamW(params, optim_bits=8)` as transformers' Trainer builds it for
adamw_bnb_8bit / adamw_8bit / paged_adamw_8bit (trainer_optimizer.py _get_bitsandbytes_optimizer: betas, eps, lr and
weight_decay from the TrainingArguments, is_paged for the paged name), steps fixed float32 parameters on the CPU.
bitsandbytes has no CPU build here (its source tree at $BNB_SRC, default ~/.cache/mixtune/bitsandbytes, is imported
as pure Python), so its two update ops, `optimizer_update_8bit_blockwise` and `optimizer_update_32bit`, are
registered for the CPU as its triton backend's kernels (backends/triton/kernels_optim.py
optimizer_update_8bit_blockwise_impl, optimizer_update_32bit_impl), which triton's interpreter (TRITON_INTERPRET=1,
triton 3.8.0) runs on CPU tensors with numpy's float32 arithmetic.

Parameters: "big" (2 x 2098 = 4196 elements: 8-bit state, 17 blocks of 256, the last of 100) in a group at lr x 16
(LoRA+'s lora_B group), "small" (8 x 64 = 512 < min_8bit_size 4096: float32 state and the 32-bit update) at lr;
weight decay 0.1; 5 steps, each at its own lr, with gradients drawn from a fixed seed at scales 1, 1, 0.01, 10, 1
(the absmax of a block rises and falls); in big's group a second parameter, "zero" (16 x 256 = 4096, exactly
min_8bit_size: 8-bit state), whose gradient is all zero at step 1 (a lora_A's while lora_B is zero) and in its first
block at every step (absmax 0, so requantizing divides 0 by 0), drawn from a generator of its own. The file keeps the two dynamic maps (qmap1 signed, qmap2 unsigned), the
initial values, each step's lr and gradients, and after each step the parameters, the codes (uint8) and absmax of the
big and zero ones and the float32 moments of the small one. AdamW8bitGoldenTest runs mixtune's AdamW8bit on the same values.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
MAPS = REPO / "trainer" / "src" / "main" / "resources" / "io" / "mixtune" / "trainer" / "optim" / "bnb_dynamic_maps.txt"
OUT = REPO / "trainer" / "src" / "test" / "resources" / "golden" / "adamw8bit" / "adamw8bit.safetensors"
BNB_SRC = Path(os.environ.get("BNB_SRC", Path.home() / ".cache" / "mixtune" / "bitsandbytes")).expanduser()

LR = 1.0e-3
LR_RATIO = 16.0
LRS = [LR, 2 * LR, 1.5 * LR, LR, 0.5 * LR]
SCALES = [1.0, 1.0, 0.01, 10.0, 1.0]
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 0.1


def import_bitsandbytes():
    if not (BNB_SRC / "bitsandbytes" / "functional.py").is_file():
        sys.exit(f"bitsandbytes source not found in {BNB_SRC} (set BNB_SRC); see interop/make_nf4_goldens.py")
    sys.path.insert(0, str(BNB_SRC))
    import bitsandbytes
    from bitsandbytes._ops import register_kernel
    from bitsandbytes.backends.triton import kernels_optim

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # replacing the CPU backend's registration is the point
        register_kernel("bitsandbytes::optimizer_update_8bit_blockwise", "cpu")(
            lambda optimizer_name, *args, **kwargs: kernels_optim.optimizer_update_8bit_blockwise_impl(
                optimizer_name, *args, **kwargs))
        register_kernel("bitsandbytes::optimizer_update_32bit", "cpu")(
            lambda optimizer_name, *args, **kwargs: kernels_optim.optimizer_update_32bit_impl(
                optimizer_name, *args, **kwargs))
    return bitsandbytes


def write_maps(signed: torch.Tensor, unsigned: torch.Tensor) -> None:
    """The maps mixtune's AdamW8bit reads (create_dynamic_map's torch.linspace is not worth reproducing in Java)."""
    lines = ["# bitsandbytes functional.create_dynamic_map(signed=True), then (signed=False): float32 bits, hex.",
             "# Written by interop/make_adamw8bit_goldens.py."]
    for values in (signed, unsigned):
        lines.append(" ".join(f"{b & 0xFFFFFFFF:08x}" for b in values.view(torch.int32).tolist()))
    MAPS.parent.mkdir(parents=True, exist_ok=True)
    MAPS.write_text("\n".join(lines) + "\n")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    bnb = import_bitsandbytes()
    generator = torch.Generator().manual_seed(0)
    big = torch.nn.Parameter(torch.randn(2, 2098, generator=generator) * 0.1)
    small = torch.nn.Parameter(torch.randn(8, 64, generator=generator) * 0.1)
    # A second parameter in big's group, drawn from a generator of its own so that big's and small's values stay those
    # of the first five steps: 4096 elements, exactly min_8bit_size (8-bit state), whose gradient is zero at step 1
    # (a lora_A's while lora_B is still zero) and whose first block's stays zero (absmax 0: 0 / 0 in requantizing).
    zero_generator = torch.Generator().manual_seed(1)
    zero = torch.nn.Parameter(torch.randn(16, 256, generator=zero_generator) * 0.1)
    optimizer = bnb.optim.AdamW([{"params": [big, zero], "lr": LR * LR_RATIO}, {"params": [small], "lr": LR}],
                                lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY, optim_bits=8, is_paged=False)
    tensors = {"big.initial": big.detach().clone(), "small.initial": small.detach().clone(),
               "zero.initial": zero.detach().clone()}
    for step, (lr, scale) in enumerate(zip(LRS, SCALES), start=1):
        optimizer.param_groups[0]["lr"] = lr * LR_RATIO
        optimizer.param_groups[1]["lr"] = lr
        big.grad = torch.randn(big.shape, generator=generator) * scale
        small.grad = torch.randn(small.shape, generator=generator) * scale
        zero.grad = torch.randn(zero.shape, generator=zero_generator) * scale
        zero.grad[0] = 0.0
        if step == 1:
            zero.grad.zero_()
        tensors[f"zero.grad.{step}"] = zero.grad.clone()
        tensors[f"big.grad.{step}"] = big.grad.clone()
        tensors[f"small.grad.{step}"] = small.grad.clone()
        tensors[f"lr.{step}"] = torch.tensor([lr], dtype=torch.float64)
        optimizer.step()
        state = optimizer.state[big]
        assert state["state1"].dtype == torch.uint8 and optimizer.state[small]["state1"].dtype == torch.float32
        tensors[f"big.{step}"] = big.detach().clone()
        for key in ("state1", "state2", "absmax1", "absmax2"):
            tensors[f"big.{key}.{step}"] = state[key].clone()
        for key in ("state1", "state2"):
            tensors[f"small.{key}.{step}"] = optimizer.state[small][key].clone()
        tensors[f"small.{step}"] = small.detach().clone()
        assert optimizer.state[zero]["state1"].dtype == torch.uint8 and optimizer.state[zero]["absmax1"][0] == 0
        tensors[f"zero.{step}"] = zero.detach().clone()
        for key in ("state1", "state2", "absmax1", "absmax2"):
            tensors[f"zero.{key}.{step}"] = optimizer.state[zero][key].clone()
    tensors["qmap1"] = optimizer.state[big]["qmap1"].clone()
    tensors["qmap2"] = optimizer.state[big]["qmap2"].clone()
    out.parent.mkdir(parents=True, exist_ok=True)
    if len(sys.argv) <= 1:
        write_maps(tensors["qmap1"], tensors["qmap2"])
    # No metadata: safetensors writes its keys in hash order, and the file must regenerate byte for byte.
    tensors["hyper"] = torch.tensor([LR_RATIO, BETAS[0], BETAS[1], EPS, WEIGHT_DECAY, len(LRS)], dtype=torch.float64)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out))
    print(f"wrote {out} ({out.stat().st_size} bytes) from bitsandbytes {bnb.__version__} ({BNB_SRC}), "
          f"triton interpreter, torch {torch.__version__}")


if __name__ == "__main__":
    main()
