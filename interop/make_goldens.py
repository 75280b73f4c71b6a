"""Regenerates the committed goldens under model/src/test/resources/golden/ and lora/src/test/resources/golden/peft/
(see interop/GOLDENS.md).

Run: interop/.venv/bin/python interop/make_goldens.py [section ...]
Sections: tokenizer, mistral-fp32, mistral-bf16, mixtral-sharded, mixtral-fused, mistral-nemo-tied, mistral-batch, peft
(default: all).
Deterministic: the checkpoints come from hf_models.SPECS (fixed seeds), the tokenizer from configs/tokenizer/.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import sentencepiece
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from tokenizers import Tokenizer

import hf_models as hf
import tokenizer_texts

REPO = hf.repo_root()
GOLDEN = REPO / "model" / "src" / "test" / "resources" / "golden"
TOKENIZER_DIR = REPO / "configs" / "tokenizer" / "mistral-v1"
PEFT_GOLDEN = REPO / "lora" / "src" / "test" / "resources" / "golden" / "peft"

# Smallest top-1/top-2 gap (logits) and k-th/(k+1)-th router gap we accept: far above the 1e-4 parity tolerance, so
# that a correct port can never pick a different token or expert because of float rounding.
MIN_GAP = 1e-3

def _dumps(obj, indent: str = "") -> str:
    """JSON with 2-space indents, but a list of numbers stays on one line."""
    inner = indent + "  "
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, list) and obj and any(isinstance(v, (list, dict)) for v in obj):
        return "[\n" + ",\n".join(inner + _dumps(v, inner) for v in obj) + "\n" + indent + "]"
    return json.dumps(obj, ensure_ascii=False)


def write_json(path: Path, obj) -> None:
    path.write_text(_dumps(obj) + "\n")


def write_id_lists(path: Path, entries: list[dict]) -> None:
    """One {"text", "ids"} object per line, so that diffs of the golden stay readable."""
    body = ",\n".join("  " + json.dumps(e, ensure_ascii=False) for e in entries)
    path.write_text("[\n" + body + "\n]\n")


def tokenizer_section() -> None:
    """sentencepiece's ids (with BOS) for tokenizer_texts.GOLDEN_TEXTS and a seeded sample of random texts; every one
    must also be what the tokenizers library gives on tokenizer.json, which is what mixtune's Java runs."""
    if not (TOKENIZER_DIR / "tokenizer.json").exists():
        raise SystemExit(f"{TOKENIZER_DIR} is missing: run interop/convert_tokenizer.py first")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(TOKENIZER_DIR / "tokenizer.model"))
    fast = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    texts = tokenizer_texts.GOLDEN_TEXTS + tokenizer_texts.random_texts(tokenizer_texts.GOLDEN_RANDOM,
                                                                        tokenizer_texts.GOLDEN_SEED)
    entries = [{"text": t, "ids": [sp.bos_id()] + sp.encode(t)} for t in texts]
    differ = [(e["text"], e["ids"], got) for e in entries if (got := fast.encode(e["text"]).ids) != e["ids"]]
    if differ:
        raise SystemExit("tokenizer.json differs from sentencepiece (run interop/convert_tokenizer.py):\n"
                         + "\n".join(f"  {t!r}\n    sentencepiece {a}\n    tokenizer.json {b}" for t, a, b in differ))
    out = GOLDEN / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    write_id_lists(out / "mistral-v1-ids.json", entries)
    print(f"tokenizer: {len(entries)} texts, tokenizer.json equals sentencepiece on all")


def check_reference(name: str, ref: hf.Reference) -> None:
    if ref.cached_new_ids != ref.new_ids:
        print(f"{name}: HF generate with KV cache gave {ref.cached_new_ids}, no-cache recompute {ref.new_ids};"
              " the recompute is the reference")
    if len(ref.new_ids) != hf.MAX_NEW_TOKENS or hf.EOS_ID in ref.new_ids:
        raise SystemExit(f"{name}: greedy hit EOS ({ref.new_ids}); pick another seed in hf_models.SPECS")
    if ref.min_logit_gap < MIN_GAP or (ref.min_router_gap is not None and ref.min_router_gap < MIN_GAP):
        raise SystemExit(f"{name}: argmax/top-k too close ({ref.min_logit_gap}, {ref.min_router_gap}); change seed")


def checkpoint_case(name: str) -> hf.Reference:
    out = GOLDEN / name
    if out.exists():
        shutil.rmtree(out)
    hf.build_checkpoint(name, out)
    ref = hf.reference(out, hf.PROMPT_20)
    check_reference(name, ref)
    write_json(out / "prompt.json", {"prompt_ids": hf.PROMPT_20, "max_new_tokens": hf.MAX_NEW_TOKENS})
    save_file(ref.tensors, out / "expected.safetensors")
    write_json(out / "greedy.json", {"new_ids": ref.new_ids})
    print(f"{name}: new_ids {ref.new_ids}, min logit gap {ref.min_logit_gap:.4f}"
          + ("" if ref.min_router_gap is None else f", min router gap {ref.min_router_gap:.4f}"))
    return ref


@torch.no_grad()
def check_window_matters(name: str) -> None:
    """The mistral-fp32 prompt must be longer than the window, or the golden would not test the window at all."""
    spec = hf.SPECS[name]
    model = hf.load_reference(GOLDEN / name)
    windowed = hf.prompt_forward(model, hf.PROMPT_20)["logits"]
    model.config.sliding_window = None  # read at forward time by the mask builder and the attention
    full = hf.prompt_forward(model, hf.PROMPT_20)["logits"]
    w = spec.sliding_window
    assert torch.allclose(windowed[:w], full[:w], atol=1e-6), "window changed positions inside the window"
    assert (windowed[w:] - full[w:]).abs().amax() > 1e-2, "window changed nothing: prompt too short?"


BATCH_ROWS = [
    # Two documents packed in one row: the second starts (BOS, position 0) at index 9.
    dict(ids=[1, 5, 9, 300, 17, 42, 255, 3, 77, 1, 7, 19, 200, 33, 401, 88], pad=0,
         positions=list(range(9)) + list(range(7))),
    # Left padding by 5 with pad id 0; pads get position 0.
    dict(ids=[1, 44, 91, 300, 12, 250, 6, 480, 71, 19, 333], pad=5, positions=list(range(11))),
]


@torch.no_grad()
def batch_case() -> None:
    name, checkpoint = "mistral-batch", "mistral-fp32"
    model = hf.load_reference(GOLDEN / checkpoint)
    input_ids = [[0] * r["pad"] + r["ids"] for r in BATCH_ROWS]
    mask = [[0] * r["pad"] + [1] * len(r["ids"]) for r in BATCH_ROWS]
    positions = [[0] * r["pad"] + r["positions"] for r in BATCH_ROWS]
    kwargs = dict(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(mask),
                  position_ids=torch.tensor(positions))
    logits = model(**kwargs, use_cache=False).logits.contiguous()
    assert torch.equal(logits, model(**kwargs).logits), "use_cache changed a plain forward"
    # Sanity: the left-padded row equals the same tokens run alone; the packed row's prefix equals its first document.
    alone = hf.prompt_forward(model, BATCH_ROWS[1]["ids"])["logits"]
    assert torch.allclose(logits[1, BATCH_ROWS[1]["pad"]:], alone, atol=1e-5)
    first_doc = hf.prompt_forward(model, BATCH_ROWS[0]["ids"][:9])["logits"]
    assert torch.allclose(logits[0, :9], first_doc, atol=1e-5)

    out = GOLDEN / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_json(out / "inputs.json", {
        "checkpoint": f"../{checkpoint}",
        "note": "Compare logits only where attention_mask is 1. position_ids only feed RoPE: the causal (and "
                "sliding-window, by index) mask spans the whole row, also across the position restart in row 0.",
        "pad_token_id": 0,
        "input_ids": input_ids,
        "attention_mask": mask,
        "position_ids": positions,
    })
    save_file({"logits": logits}, out / "expected.safetensors")
    print(f"{name}: logits {list(logits.shape)} from ../{checkpoint}")


# ---- PEFT adapters (lora/src/test/resources/golden/peft) -----------------------------------------------------------

PEFT_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
PEFT_SEEDS = {"peft-attention": 101, "peft-experts": 202, "peft-fused": 303}


def peft_lora(model, name: str, target_modules) -> torch.nn.Module:
    """PEFT's own random LoRA, r 4, alpha 8 (init_lora_weights=False draws B too, so the adapter is not a no-op)."""
    torch.manual_seed(PEFT_SEEDS[name])
    # save_pretrained records the base's name_or_path; a path relative to the adapter keeps the golden portable.
    model.name_or_path = "../base"
    config = LoraConfig(r=4, lora_alpha=8, target_modules=target_modules, init_lora_weights=False,
                        task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        hf.quiet_fused_pattern_notice()
        return get_peft_model(model, config)


def sort_target_modules(adapter_dir: Path) -> None:
    """PEFT keeps target_modules and target_parameters as sets, written in hash order; sorted, the file is stable."""
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    config["target_modules"] = sorted(config["target_modules"])
    if config.get("target_parameters"):
        config["target_parameters"] = sorted(config["target_parameters"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True))  # as PeftConfig.save_pretrained writes it


def save_peft_adapter(peft_model, out: Path) -> None:
    # save_embedding_layers=False: "auto" would look the relative base path up on the Hub.
    peft_model.save_pretrained(out, save_embedding_layers=False)
    (out / "README.md").unlink()  # PEFT's model card template, with nothing in it about the adapter
    sort_target_modules(out)


@torch.no_grad()
def split_fused_experts(peft_model, num_experts: int, intermediate: int, of=lambda weight: weight
                        ) -> dict[str, torch.Tensor]:
    """PEFT's LoRA on transformers 5's fused experts, cut into Hub per-expert w1/w3/w2 LoRAs; the router's LoRA dropped.

    PEFT keeps an expert stack's LoRA as A [E*r, in] (row e*r + k) and B [out, r*E] (column k*E + e). On gate_up_proj
    r is 2*4: ranks 0-3 feed w1 (the gate rows 0..I-1), ranks 4-7 w3 (the up rows). Loading per-expert files, PEFT
    rebuilds exactly this with B block-diagonal, so the blocks that mix w1 rows with w3 ranks are what the split drops.
    `of` maps each LoRA weight to the tensor to cut (make_sft_goldens.py passes `lambda w: w.grad`).
    """
    out = {}
    prefix = "base_model.model.model.layers"
    for i, layer in enumerate(peft_model.base_model.model.model.layers):
        attn = layer.self_attn
        for proj in PEFT_ATTENTION:
            lora = getattr(attn, proj)
            out[f"{prefix}.{i}.self_attn.{proj}.lora_A.weight"] = of(lora.lora_A["default"].weight).clone()
            out[f"{prefix}.{i}.self_attn.{proj}.lora_B.weight"] = of(lora.lora_B["default"].weight).clone()
        down, gate_up = layer.mlp.experts, layer.mlp.experts.base_layer
        assert (down.parameter_name, gate_up.parameter_name) == ("down_proj", "gate_up_proj")

        def per_expert(wrapper):
            a, b = of(wrapper.lora_A["default"].weight), of(wrapper.lora_B["default"].weight)
            return a.reshape(num_experts, -1, a.shape[-1]), b.reshape(b.shape[0], -1, num_experts).permute(2, 0, 1)

        a_gu, b_gu = per_expert(gate_up)  # [E, 8, H], [E, 2I, 8]
        a_dn, b_dn = per_expert(down)  # [E, 4, I], [E, H, 4]
        r = a_dn.shape[1]
        moe = f"{prefix}.{i}.block_sparse_moe.experts"
        for j in range(num_experts):
            pieces = {
                "w1": (a_gu[j, :r], b_gu[j, :intermediate, :r]),
                "w2": (a_dn[j], b_dn[j]),
                "w3": (a_gu[j, r:], b_gu[j, intermediate:, r:]),
            }
            for w, (a, b) in pieces.items():
                out[f"{moe}.{j}.{w}.lora_A.weight"] = a.contiguous().clone()
                out[f"{moe}.{j}.{w}.lora_B.weight"] = b.contiguous().clone()
    return dict(sorted(out.items()))


@torch.no_grad()
def check_fused_reload(made, loaded, intermediate: int) -> None:
    """PEFT's conversion of the per-expert file rebuilt the fused LoRA we split: A as drawn, B block-diagonal."""
    for made_layer, loaded_layer in zip(made.base_model.model.model.layers, loaded.base_model.model.model.layers):
        for path in ("experts", "experts.base_layer"):
            m, l_ = made_layer.mlp.get_submodule(path), loaded_layer.mlp.get_submodule(path)
            a, b = m.lora_A["default"].weight, m.lora_B["default"].weight.clone()
            if path == "experts.base_layer":
                r2, experts = a.shape[0] // m.num_experts, m.num_experts
                cols = torch.arange(b.shape[1]).reshape(r2, experts)  # column k*E + e
                b[:intermediate, cols[r2 // 2:].flatten()] = 0  # gate rows see only w1's ranks
                b[intermediate:, cols[:r2 // 2].flatten()] = 0  # up rows only w3's
            assert torch.equal(l_.lora_A["default"].weight, a), f"{path} lora_A"
            assert torch.equal(l_.lora_B["default"].weight, b), f"{path} lora_B"


def peft_section(out: Path = PEFT_GOLDEN) -> None:
    spec = hf.PEFT_BASE
    if out.exists():
        shutil.rmtree(out)
    base_dir = out / "base"
    hf.save_checkpoint(hf.build_model(spec), spec, base_dir)
    config = hf.load_reference(base_dir).config
    experts, inter = config.num_local_experts, config.intermediate_size

    made_attention = peft_lora(hf.load_reference(base_dir), "peft-attention", PEFT_ATTENTION)
    save_peft_adapter(made_attention, out / "peft-attention")

    # PEFT on transformers 5.18 saves expert LoRAs fused (mlp.experts.base_layer.lora_A ...): peft-fused is that file
    # as PEFT writes it, router included. The Hub per-expert file (peft-experts) is cut by hand from PEFT's own draw;
    # PEFT reads it back below, and only that reading gives the expected logits.
    made_fused = peft_lora(hf.load_reference(base_dir), "peft-fused", "all-linear")
    save_peft_adapter(made_fused, out / "peft-fused")

    made_experts = peft_lora(hf.load_reference(base_dir), "peft-experts", "all-linear")
    experts_dir = out / "peft-experts"
    experts_dir.mkdir()
    save_file(split_fused_experts(made_experts, experts, inter), experts_dir / "adapter_model.safetensors",
              metadata={"format": "pt"})
    LoraConfig(r=4, lora_alpha=8, target_modules=PEFT_ATTENTION + ["w1", "w2", "w3"], init_lora_weights=False,
               task_type="CAUSAL_LM", base_model_name_or_path="../base", inference_mode=True
               ).save_pretrained(experts_dir)
    sort_target_modules(experts_dir)

    expected, gaps = {}, {}
    for name in ["base", "peft-attention", "peft-experts", "peft-fused"]:
        model = hf.load_reference(base_dir)
        if name != "base":
            model = hf.load_peft(model, out / name)
        if name == "peft-experts":
            check_fused_reload(made_experts, model, inter)
        tensors = hf.prompt_forward(model, hf.PROMPT_20)
        routers = {k: v for k, v in tensors.items() if k.startswith("router_logits.")}
        gaps[name] = hf.min_router_gap(routers, config.num_experts_per_tok)
        if gaps[name] < MIN_GAP:
            raise SystemExit(f"peft {name}: top-2 experts nearly tied ({gaps[name]}); change a seed")
        expected[f"{name}.logits"] = tensors["logits"]
    for name in ["peft-attention", "peft-experts", "peft-fused"]:
        effect = float((expected[f"{name}.logits"] - expected["base.logits"]).abs().max())
        if effect < 100 * MIN_GAP:
            raise SystemExit(f"peft {name}: the adapter barely moves the logits ({effect})")
        print(f"peft {name}: max |logits - base| {effect:.3f}, min router gap {gaps[name]:.4f}")
    write_json(out / "prompt.json", {"prompt_ids": hf.PROMPT_20})
    save_file(expected, out / "expected.safetensors")


SECTIONS = {
    "tokenizer": tokenizer_section,
    "mistral-fp32": lambda: (checkpoint_case("mistral-fp32"), check_window_matters("mistral-fp32")),
    "mistral-bf16": lambda: checkpoint_case("mistral-bf16"),
    "mixtral-sharded": lambda: checkpoint_case("mixtral-sharded"),
    "mixtral-fused": lambda: checkpoint_case("mixtral-fused"),
    "mistral-nemo-tied": lambda: (checkpoint_case("mistral-nemo-tied"), check_window_matters("mistral-nemo-tied")),
    "mistral-batch": batch_case,
    "peft": peft_section,
}


def main(argv: list[str]) -> None:
    torch.use_deterministic_algorithms(True)
    unknown = [s for s in argv if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    for section in argv or list(SECTIONS):
        SECTIONS[section]()


if __name__ == "__main__":
    main(sys.argv[1:])
