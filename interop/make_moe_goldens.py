"""Regenerates merging/src/test/resources/moe/ (see interop/GOLDENS.md, section "Mixture of experts"): three tiny
Mistral checkpoints (a base and two fine-tunes of it), a PEFT LoRA adapter on the first fine-tune, and the router
weights mergekit-moe's gate modes give them, computed here with transformers 5.18 (output_hidden_states) from
mergekit's formulas, written independently of mergekit's code and of the Java code:

- hidden (mergekit's default; mergekit/moe/router.py get_hidden_states with average=False): each prompt tokenized as
  tokenizer.bos_token + prompt without added special tokens, the batch left-padded with BOS as pad; per layer l the
  hidden state entering layer l (hidden_states[l], the embeddings for layer 0) at the last position, averaged over
  the prompts; positive minus negative; divided by its L2 norm (clamped at 1e-8). Run in float32 (mergekit loads the
  model in bfloat16).
- cheap_embed (get_cheap_embedding): the sum over every prompt's non-pad tokens of their embedding rows, divided by
  its norm; positive minus negative (each normalised), normalised again; the same vector for every layer.

Run: interop/.venv/bin/python interop/make_moe_goldens.py [out_dir]   (default: the committed golden directory)
Deterministic: weights from torch.Generator with fixed seeds.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "merging" / "src" / "test" / "resources" / "moe"  # not golden/: make_merge_goldens.py owns it

WORDS = ["the", "a", "patient", "doctor", "fever", "code", "function", "loop", "bug", "story", "dragon", "castle",
         "hello", "who", "are", "you", "write", "python", "heals", "brave", "knight", "compile", "error", "dose"]
VOCAB = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
TOKENIZER = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True} for t, i in list(VOCAB.items())[:3]],
    "normalizer": None,
    "pre_tokenizer": {"type": "Whitespace"},
    "post_processor": None,
    "decoder": None,
    "model": {"type": "WordLevel", "vocab": VOCAB, "unk_token": "<unk>"},
}
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
TOKENIZER_CONFIG = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                    "unk_token": "<unk>", "chat_template": CHAT_TEMPLATE}
CONFIG = dict(vocab_size=len(VOCAB), hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, head_dim=8, sliding_window=None, rope_theta=10000.0, rms_norm_eps=1e-5,
              tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, max_position_embeddings=64)
MODELS = {"base": 101, "expert1": 202, "expert2": 303}

# Each case: mergekit-moe's config (paths relative to this directory), gate vectors expected per layer.
CASES = [
    {"name": "hidden", "gate_mode": "hidden", "experts": [
        {"source_model": "expert1", "positive_prompts": ["doctor heals the patient", "fever dose"],
         "negative_prompts": ["write python code"]},
        {"source_model": "expert2", "positive_prompts": ["write a python function", "compile error bug loop"]},
        {"source_model": "base", "positive_prompts": ["the brave knight and the dragon"],
         "negative_prompts": ["hello who are you", "the patient"]}]},
    {"name": "cheap_embed", "gate_mode": "cheap_embed", "experts": [
        {"source_model": "expert1", "positive_prompts": ["doctor heals the patient", "fever dose"]},
        {"source_model": "expert2", "positive_prompts": ["write a python function", "compile error bug loop"],
         "negative_prompts": ["the story of a castle"]}]},
]


def build(seed: int) -> MistralForCausalLM:
    config = MistralConfig(**CONFIG)
    config._attn_implementation = "eager"
    model = MistralForCausalLM(config).float().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


def write_model(model: MistralForCausalLM, out: Path, tokenizer: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in sorted(model.state_dict().items())}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config = {k: config[k] for k in sorted(config) if k not in ("transformers_version", "_name_or_path")}
    config["architectures"] = ["MistralForCausalLM"]
    config["torch_dtype"] = "float32"
    config.pop("dtype", None)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer:
        (out / "tokenizer.json").write_text(json.dumps(TOKENIZER, indent=2) + "\n")
        (out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")


def tokenize(tokenizer, prompts: list[str]):
    """As mergekit-moe: BOS text in front, no added special tokens, left padding with BOS as the pad."""
    tokenizer.padding_side = "left"
    tokenizer.pad_token_id = tokenizer.bos_token_id
    return tokenizer([(tokenizer.bos_token or "") + p for p in prompts], return_tensors="pt", padding=True,
                     add_special_tokens=False)


def normalised(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(p=2, dim=-1, keepdim=True).clamp(min=1e-8)


def hidden_side(model, tokenizer, prompts: list[str]) -> torch.Tensor:
    """[layers, hidden]: per layer, the mean over prompts of the last position's state entering the layer."""
    batch = tokenize(tokenizer, prompts)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    states = torch.stack(out.hidden_states[:-1])  # [layers, batch, seq, hidden]: inputs of each layer
    last = states[:, :, -1, :].mean(dim=1)
    # The same without padding, one prompt at a time: RoPE is relative, so left padding changes nothing but rounding.
    alone = []
    for p in prompts:
        ids = tokenize(tokenizer, [p])["input_ids"]
        with torch.no_grad():
            o = model(input_ids=ids, output_hidden_states=True)
        alone.append(torch.stack(o.hidden_states[:-1])[:, 0, -1, :])
    assert torch.allclose(torch.stack(alone).mean(dim=0), last, atol=1e-5), "padding changed the hidden states"
    return last


def cheap_side(embed: torch.Tensor, tokenizer, prompts: list[str], layers: int) -> torch.Tensor:
    batch = tokenize(tokenizer, prompts)
    rows = embed[batch["input_ids"]] * batch["attention_mask"].unsqueeze(-1)
    return normalised(rows.sum(dim=(0, 1))).expand(layers, -1)


def gates(case, models, tokenizer) -> torch.Tensor:
    base = models["base"]
    layers = CONFIG["num_hidden_layers"]
    vectors = []
    for expert in case["experts"]:
        if case["gate_mode"] == "hidden":
            side = lambda prompts: hidden_side(base, tokenizer, prompts)  # noqa: E731
        else:
            side = lambda prompts: cheap_side(base.model.embed_tokens.weight.detach(), tokenizer, prompts,  # noqa: E731
                                              layers)
        v = side(expert["positive_prompts"])
        if expert.get("negative_prompts"):
            v = v - side(expert["negative_prompts"])
        vectors.append(normalised(v))
    return torch.stack(vectors, dim=1)  # [layers, experts, hidden]


def write_adapter(model: MistralForCausalLM, out: Path) -> dict[str, torch.Tensor]:
    """A LoRA on expert1's MLP (PEFT's random init); returns the weights merge_and_unload gives."""
    from peft import LoraConfig, get_peft_model

    import copy
    torch.manual_seed(404)
    lora = LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, target_modules=["gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(copy.deepcopy(model), lora)
    peft_model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)
    config = json.loads((out / "adapter_config.json").read_text())
    config["target_modules"] = sorted(config["target_modules"])  # PEFT writes a set, in no fixed order
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    merged = peft_model.merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items() if ".mlp." in k}


def main(out: Path) -> None:
    # One thread, as the other golden scripts: a forward's sums (the hidden gate rows) change in their last bits with
    # the thread count, and interop tests that ran before (make_dora_goldens, make_eval_goldens) leave it at 1.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _write(out)
    finally:
        torch.set_num_threads(threads)


def _write(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    models = {name: build(seed) for name, seed in MODELS.items()}
    for name, model in models.items():
        write_model(model, out / name, tokenizer=name == "base")
    # What AutoTokenizer loads from these files (its Mistral-format probe needs a package the venv lacks).
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(out / "base" / "tokenizer.json"),
                                        **{k: v for k, v in TOKENIZER_CONFIG.items() if k != "tokenizer_class"})
    expected: dict[str, torch.Tensor] = {}
    cases = []
    for case in CASES:
        g = gates(case, models, tokenizer)
        for layer in range(g.shape[0]):
            expected[f"{case['name']}.gate.{layer}"] = g[layer].contiguous()
        prompts = sorted({p for e in case["experts"] for k in ("positive_prompts", "negative_prompts")
                          for p in e.get(k) or []})
        ids = {p: tokenize(tokenizer, [p])["input_ids"][0].tolist() for p in prompts}
        cases.append(dict(case, prompt_ids=ids))
    for name, weight in write_adapter(models["expert1"], out / "lora").items():
        expected[f"expert1+lora.{name}"] = weight.contiguous()
    save_file(dict(sorted(expected.items())), out / "expected.safetensors", metadata={"format": "pt"})
    (out / "cases.json").write_text(json.dumps(cases, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN)
