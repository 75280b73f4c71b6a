"""Tiny Mistral/Mixtral checkpoints built with transformers, and the reference numbers mixtune must reproduce.

Shared by make_goldens.py (committed goldens) and tests/ (fresh checkpoints for the CLI parity tests), so both
describe the same models. Every checkpoint is a function of its CheckpointSpec: same spec, same seed, same bytes.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
)

# How close a golden regenerated on this machine must be to the committed one. libtorch's CPU kernels take a different
# vector path per processor (AVX2, AVX-512, AVX-512 FP16), so the same pinned stack gives other last bits on another
# CPU: regenerated on an AVX-512 Xeon, the committed goldens differed by up to 2.6e-6 absolute in logits and
# gradients (4e-4 relative where the values are near 0), and fp16's loss gap to fp32 by 3e-6. Any drift of the stack
# or of a golden script is orders larger.
REGENERATED = dict(atol=1e-5, rtol=1e-4)
REGENERATED_SCALAR = dict(abs=1e-5, rel=1e-4)
# float16 goldens (a `fp16` in the file or key name) move by float16's own rounding: gradients by up to 3.1e-5 where
# the tensor's largest value is 3e-2 (0.1% of it), the loss gap to fp32 from 4.5e-5 to 2.9e-5. Held to 2 ulps of
# float16 relative to the tensor's (or number's) size, as the Java fp16 goldens are held to its largest value.
REGENERATED_FP16_OF_MAX = 2e-3
REGENERATED_FP16_SCALAR = dict(abs=1e-4, rel=2e-3)

# Small enough to commit, large enough to exercise GQA (4 query heads share 2 kv heads) and a non-square MLP.
TINY = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
)

EOS_ID = 2

# Linear weights at std 0.15 (instead of transformers' 0.02) so that attention is not uniform, logits spread over
# several units and the greedy argmax is separated by far more than the 1e-4 tolerance. The router gets a larger std
# so that top-2 expert choice is never a near tie that float rounding could flip between torch and DJL.
LINEAR_STD = 0.15
ROUTER_STD = 0.5
EMBED_STD = 1.0
NORM_JITTER = 0.1


@dataclass(frozen=True)
class CheckpointSpec:
    arch: str  # "mistral" or "mixtral"
    seed: int
    sliding_window: int | None
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    save_dtype: torch.dtype = torch.float32
    moe_layout: str | None = None  # mixtral only: "hub" (block_sparse_moe.experts.{j}.w1/w2/w3) or "fused"
    max_shard_size: str | None = None  # None: one model.safetensors
    num_local_experts: int = 4
    num_experts_per_tok: int = 2
    router_aux_loss_coef: float = 0.02
    intermediate_size: int = TINY["intermediate_size"]
    # Keys of TINY this case sets otherwise (head_dim, vocab_size, tie_word_embeddings), as a tuple of pairs so the
    # spec stays hashable.
    shape: tuple = ()


PROMPT_20 = [1, 5, 9, 300, 17, 42, 255, 3, 77, 128, 64, 500, 11, 23, 314, 159, 26, 53, 58, 97]
MAX_NEW_TOKENS = 12

SPECS: dict[str, CheckpointSpec] = {
    "mistral-fp32": CheckpointSpec(arch="mistral", seed=1238, sliding_window=8),
    "mistral-bf16": CheckpointSpec(
        arch="mistral", seed=2345, sliding_window=None, rms_norm_eps=1e-6, save_dtype=torch.bfloat16
    ),
    "mixtral-sharded": CheckpointSpec(
        arch="mixtral", seed=3456, sliding_window=8, moe_layout="hub", max_shard_size="400KB"
    ),
    "mixtral-fused": CheckpointSpec(
        arch="mixtral", seed=4567, sliding_window=None, rope_theta=1e6, moe_layout="fused"
    ),
    # Mistral-Nemo's shape: head_dim (24) is not hidden_size / num_attention_heads (16), so q_proj is [96, 64] and
    # o_proj [64, 96]; the lm_head tied to the embeddings (no lm_head.weight in the file), an odd vocabulary of 509
    # and a window of 5, shorter than the prompt and than the 12 tokens generated after it.
    "mistral-nemo-tied": CheckpointSpec(
        arch="mistral", seed=6789, sliding_window=5, rope_theta=1e6,
        shape=(("head_dim", 24), ("vocab_size", 509), ("tie_word_embeddings", True)),
    ),
}

# Base of the PEFT adapter goldens (lora/src/test/resources/golden/peft/base): Mixtral in the Hub layout, one file.
PEFT_BASE = CheckpointSpec(arch="mixtral", seed=5678, sliding_window=8, moe_layout="hub")


def make_config(spec: CheckpointSpec):
    common = dict(
        TINY,
        intermediate_size=spec.intermediate_size,
        sliding_window=spec.sliding_window,
        rope_theta=spec.rope_theta,
        rms_norm_eps=spec.rms_norm_eps,
        attn_implementation="eager",
    )
    common.update(dict(spec.shape))
    if spec.arch == "mistral":
        return MistralConfig(**common)
    if spec.arch == "mixtral":
        return MixtralConfig(
            **common,
            num_local_experts=spec.num_local_experts,
            num_experts_per_tok=spec.num_experts_per_tok,
            router_aux_loss_coef=spec.router_aux_loss_coef,
        )
    raise ValueError(f"unknown arch {spec.arch}")


@torch.no_grad()
def build_model(spec: CheckpointSpec) -> torch.nn.Module:
    """A float32 eval-mode model with seeded, deliberately large random weights."""
    torch.manual_seed(spec.seed)
    config = make_config(spec)
    model = (MistralForCausalLM if spec.arch == "mistral" else MixtralForCausalLM)(config)
    gen = torch.Generator().manual_seed(spec.seed)
    for name, param in sorted(model.named_parameters()):
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
        if name.endswith("norm.weight"):
            param.copy_(1.0 + NORM_JITTER * noise)
        elif "embed_tokens" in name:
            param.copy_(EMBED_STD * noise)
        elif name.endswith("mlp.gate.weight"):
            param.copy_(ROUTER_STD * noise)
        else:
            param.copy_(LINEAR_STD * noise)
    return model.float().eval()


def save_checkpoint(model: torch.nn.Module, spec: CheckpointSpec, out_dir: Path) -> None:
    """save_pretrained in the spec's dtype and sharding, then rewrite MoE tensors into the spec's layout if needed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kwargs = {} if spec.max_shard_size is None else {"max_shard_size": spec.max_shard_size}
    if spec.save_dtype == torch.float32:
        model.save_pretrained(out_dir, **kwargs)
    else:
        # Cast a copy: the caller's model stays float32.
        copy.deepcopy(model).to(spec.save_dtype).save_pretrained(out_dir, **kwargs)
    if spec.arch == "mixtral":
        written = moe_layout_of(read_tensors(out_dir))
        if written != spec.moe_layout:
            tensors = read_tensors(out_dir)
            tensors = to_fused(tensors) if spec.moe_layout == "fused" else to_hub(tensors)
            write_tensors(out_dir, tensors, spec.max_shard_size)


def load_reference(model_dir: Path) -> torch.nn.Module:
    """What transformers makes of a checkpoint on disk, upcast to float32 (bf16 files included)."""
    model, info = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise RuntimeError(f"transformers did not load {model_dir} cleanly: {problems}")
    return model.eval()


@torch.no_grad()
def prompt_forward(model, prompt_ids: list[int]) -> dict[str, torch.Tensor]:
    """logits [T, V] for a batch-1 prompt; for Mixtral also router_logits.{layer} [T, E] and aux_loss [1]."""
    ids = torch.tensor([prompt_ids])
    moe = model.config.model_type == "mixtral"
    extra = {"output_router_logits": True} if moe else {}
    out = model(input_ids=ids, use_cache=False, **extra)
    result = {"logits": out.logits[0].float().contiguous()}
    if moe:
        for layer, router in enumerate(out.router_logits):
            result[f"router_logits.{layer}"] = router.float().contiguous()
        result["aux_loss"] = out.aux_loss.float().reshape(1)
    return result


@torch.no_grad()
def greedy_cached(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt_ids])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=0,
    )
    return out[0, len(prompt_ids):].tolist()


@torch.no_grad()
def greedy_recompute(model, prompt_ids: list[int], max_new_tokens: int) -> tuple[list[int], float]:
    """Greedy decoding that reruns the whole sequence every step (no KV cache); also the smallest top-1/top-2 gap."""
    seq = list(prompt_ids)
    new, min_gap = [], float("inf")
    for _ in range(max_new_tokens):
        logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1]
        top = torch.topk(logits, 2).values
        min_gap = min(min_gap, float(top[0] - top[1]))
        nxt = int(torch.argmax(logits))
        new.append(nxt)
        seq.append(nxt)
        if nxt == EOS_ID:
            break
    return new, min_gap


def min_router_gap(router_logits: dict[str, torch.Tensor], top_k: int) -> float:
    """Smallest gap between the k-th and (k+1)-th router logit over all tokens and layers."""
    gaps = []
    for value in router_logits.values():
        top = torch.topk(value, top_k + 1, dim=-1).values
        gaps.append(float((top[:, top_k - 1] - top[:, top_k]).min()))
    return min(gaps)


@dataclass
class Reference:
    tensors: dict[str, torch.Tensor]  # logits, and router_logits.{i} / aux_loss for Mixtral
    new_ids: list[int]
    cached_new_ids: list[int]  # what HF's generate (with its KV cache) produced
    min_logit_gap: float
    min_router_gap: float | None


def reference(model_dir: Path, prompt_ids: list[int], max_new_tokens: int = MAX_NEW_TOKENS) -> Reference:
    """Reference numbers from the checkpoint as saved. The no-cache recompute is the greedy reference."""
    model = load_reference(model_dir)
    tensors = prompt_forward(model, prompt_ids)
    new_ids, gap = greedy_recompute(model, prompt_ids, max_new_tokens)
    cached = greedy_cached(model, prompt_ids, max_new_tokens)
    routers = {k: v for k, v in tensors.items() if k.startswith("router_logits.")}
    rgap = min_router_gap(routers, model.config.num_experts_per_tok) if routers else None
    return Reference(tensors, new_ids, cached, gap, rgap)


# ---- PEFT ----------------------------------------------------------------------------------------------------------

# PEFT 0.21 on transformers 5 turns Mixtral w1/w3 targets into one LoRA on the fused gate_up_proj (rank and alpha
# doubled through rank_pattern/alpha_pattern) and then warns that those very patterns matched no module. The warning
# comes for every Mixtral adapter that targets experts, also when the load is correct.
_FUSED_PATTERN_NOTICE = (
    r"The following (rank|alpha)_pattern keys did not match any targeted module and were ignored: "
    + re.escape(r"['.*\\.gate_up_proj']") + r"\.$"
)


def quiet_fused_pattern_notice() -> None:
    """Inside a warnings.catch_warnings block: drop the notice above, keep every other warning."""
    warnings.filterwarnings("ignore", message=_FUSED_PATTERN_NOTICE, category=RuntimeWarning)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def load_peft(model: torch.nn.Module, adapter_dir: Path) -> PeftModel:
    """PeftModel.from_pretrained in eval mode that raises unless every tensor of the adapter found its LoRA weight.

    from_pretrained only warns about missing adapter keys and says nothing about keys it could not place (it loads
    with strict=False), so the adapter is loaded a second time through load_adapter, whose result lists both.
    """
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("peft", "transformers")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_fused_pattern_notice()
            peft_model = PeftModel.from_pretrained(model, adapter_dir)
            probe = peft_model.load_adapter(adapter_dir, adapter_name="probe")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    peft_model.delete_adapter("probe")
    problems = [f"{w.category.__name__}: {w.message}" for w in caught]
    problems += [f"log {r.name}: {r.getMessage()}" for r in handler.records]
    if probe.missing_keys:
        problems.append(f"missing adapter keys: {probe.missing_keys}")
    if probe.unexpected_keys:
        problems.append(f"adapter keys that match no LoRA weight: {probe.unexpected_keys}")
    if problems:
        raise RuntimeError(f"PEFT did not load {adapter_dir} cleanly:\n" + "\n".join(problems))
    assert peft_model.active_adapters == ["default"], peft_model.active_adapters
    return peft_model.eval()


# ---- safetensors layout of Mixtral experts ------------------------------------------------------------------------
# transformers 5 keeps experts fused in memory (mlp.experts.gate_up_proj [E, 2I, H], gate rows first;
# mlp.experts.down_proj [E, H, I]; router mlp.gate.weight [E, H]) but its save_pretrained converts back to the Hub
# layout (block_sparse_moe.experts.{j}.w1 = gate [I, H], w3 = up [I, H], w2 = down [H, I]; block_sparse_moe.gate).


def moe_layout_of(tensors: dict[str, torch.Tensor]) -> str | None:
    if any(".block_sparse_moe." in k for k in tensors):
        return "hub"
    if any(k.endswith(".mlp.experts.gate_up_proj") for k in tensors):
        return "fused"
    return None


def _layers(tensors, marker):
    return sorted({int(k.split(".")[2]) for k in tensors if marker in k})


def to_fused(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {k: v for k, v in tensors.items() if ".block_sparse_moe." not in k}
    for i in _layers(tensors, ".block_sparse_moe."):
        pre = f"model.layers.{i}.block_sparse_moe"
        experts = sorted({int(k.split(".")[5]) for k in tensors if k.startswith(pre + ".experts.")})
        w = lambda j, n: tensors[f"{pre}.experts.{j}.{n}.weight"]  # noqa: E731
        out[f"model.layers.{i}.mlp.gate.weight"] = tensors[f"{pre}.gate.weight"]
        out[f"model.layers.{i}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([w(j, "w1"), w(j, "w3")], dim=0) for j in experts]
        )
        out[f"model.layers.{i}.mlp.experts.down_proj"] = torch.stack([w(j, "w2") for j in experts])
    return out


def to_hub(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {k: v for k, v in tensors.items() if ".mlp.gate.weight" not in k and ".mlp.experts." not in k}
    for i in _layers(tensors, ".mlp.experts."):
        pre = f"model.layers.{i}"
        gate_up = tensors[f"{pre}.mlp.experts.gate_up_proj"]
        down = tensors[f"{pre}.mlp.experts.down_proj"]
        inter = gate_up.shape[1] // 2
        out[f"{pre}.block_sparse_moe.gate.weight"] = tensors[f"{pre}.mlp.gate.weight"]
        for j in range(gate_up.shape[0]):
            out[f"{pre}.block_sparse_moe.experts.{j}.w1.weight"] = gate_up[j, :inter].contiguous()
            out[f"{pre}.block_sparse_moe.experts.{j}.w3.weight"] = gate_up[j, inter:].contiguous()
            out[f"{pre}.block_sparse_moe.experts.{j}.w2.weight"] = down[j].contiguous()
    return out


# ---- reading and writing (possibly sharded) checkpoints -----------------------------------------------------------


def safetensors_files(model_dir: Path) -> list[Path]:
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / n for n in names]
    return [model_dir / "model.safetensors"]


def read_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for f in safetensors_files(model_dir):
        tensors.update(load_file(f))
    return tensors


def _parse_size(size: str) -> int:
    units = {"KB": 1000, "MB": 1000**2, "GB": 1000**3}
    for unit, factor in units.items():
        if size.upper().endswith(unit):
            return int(float(size[: -len(unit)]) * factor)
    return int(size)


def write_tensors(model_dir: Path, tensors: dict[str, torch.Tensor], max_shard_size: str | None) -> None:
    """Replace the checkpoint's safetensors with `tensors`, sharded the way save_pretrained names shards."""
    model_dir = Path(model_dir)
    for f in safetensors_files(model_dir):
        f.unlink()
    (model_dir / "model.safetensors.index.json").unlink(missing_ok=True)
    meta = {"format": "pt"}
    if max_shard_size is None:
        save_file(tensors, model_dir / "model.safetensors", metadata=meta)
        return
    limit = _parse_size(max_shard_size)
    shards, current, size = [], {}, 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if current and size + nbytes > limit:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensors[name].contiguous()
        size += nbytes
    shards.append(current)
    weight_map, total = {}, 0
    for n, shard in enumerate(shards, start=1):
        fname = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, model_dir / fname, metadata=meta)
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def build_checkpoint(name: str, out_dir: Path) -> CheckpointSpec:
    spec = SPECS[name]
    save_checkpoint(build_model(spec), spec, out_dir)
    return spec


def repo_root() -> Path:
    return Path(os.path.dirname(os.path.abspath(__file__))).parent
