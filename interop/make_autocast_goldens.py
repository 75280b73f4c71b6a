"""Writes golden/mistral-fp32/autocast_fp16.safetensors (see interop/GOLDENS.md): the prompt's logits of the
mistral-fp32 checkpoint as QLoRA training runs it in fp16 on a GPU, which compute_dtype fp16 follows.

PEFT's prepare_model_for_kbit_training leaves every parameter that is not 4-bit in float32 (embeddings, norms,
lm_head); the Trainer's fp16 then runs the forward under autocast, so the linear layers and the attention matmuls
compute in float16 while the embedding output, the norms and the residual sums stay float32. Here the linear layers
are float32 too and autocast rounds their weights to float16 at each matmul: the values bitsandbytes' Linear4bit
would multiply by after dequantizing into its float16 compute_dtype.

Run: interop/.venv/bin/python interop/make_autocast_goldens.py
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

import hf_models as hf

GOLDEN = hf.repo_root() / "model" / "src" / "test" / "resources" / "golden" / "mistral-fp32"


def autocast_logits(model_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt's logits [20, vocab] under autocast fp16 (as float32), and in plain float32."""
    model = hf.load_reference(model_dir)
    prompt = json.loads((GOLDEN / "prompt.json").read_text())["prompt_ids"]
    ids = torch.tensor([prompt])
    with torch.no_grad():
        float32 = model(ids).logits[0].float()
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(ids, output_hidden_states=True)
    assert out.logits.dtype == torch.float16, out.logits.dtype
    # The residual stream after each layer stays float32 (the last hidden state is the final norm's output).
    assert all(h.dtype == torch.float32 for h in out.hidden_states[:-1]), [h.dtype for h in out.hidden_states]
    return out.logits[0].float().contiguous(), float32


def main() -> None:
    logits, float32 = autocast_logits(GOLDEN)
    print(f"autocast fp16 logits off fp32 by {(logits - float32).abs().max().item():.3g} "
          f"at scale {float32.abs().max().item():.3g}")
    save_file({"logits": logits}, GOLDEN / "autocast_fp16.safetensors")


if __name__ == "__main__":
    main()
