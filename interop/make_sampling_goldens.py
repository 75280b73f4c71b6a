"""Golden for mixtune's token choice: model/src/test/resources/golden/sampling/warpers.json (see interop/GOLDENS.md).

Run: interop/.venv/bin/python interop/make_sampling_goldens.py [out.json]

Fixed logits (seeded, float32, vocab 120), the ids seen so far, and per case what transformers 5.18's `generate` does to
them before it takes the argmax or samples: a model's `generation_config` (as generation_config.json would set it) and
the caller's kwargs merged by `_prepare_generation_config` (unset values take `_get_default_generation_params`, top_k
50 included), then the processors and warpers `_get_logits_processor` builds, in its order, applied to the logits.
`scores` holds the result, null where a token was removed (-inf). The Java test (TokenSamplerGoldenTest) compares
mixtune's processing with it: the same kept tokens, the same scores.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import GenerationConfig, MistralConfig, MistralForCausalLM
from transformers.generation.logits_process import LogitsProcessorList

import hf_models as hf

OUT = hf.repo_root() / "model" / "src" / "test" / "resources" / "golden" / "sampling" / "warpers.json"
VOCAB = 120

# (name, generation_config.json values, generate() kwargs)
CASES = [
    ("defaults-sampled", {}, {"do_sample": True}),
    ("temperature-top-p", {}, {"do_sample": True, "temperature": 0.7, "top_p": 0.95}),
    ("top-k-ties", {}, {"do_sample": True, "top_k": 20}),
    ("top-k-off", {}, {"do_sample": True, "top_k": 0, "top_p": 0.9}),
    ("all-warpers", {}, {"do_sample": True, "temperature": 1.3, "top_k": 10, "top_p": 0.8, "min_p": 0.05}),
    ("file-defaults", {"do_sample": True, "temperature": 0.6, "top_p": 0.9}, {}),
    ("file-top-k-overridden", {"do_sample": True, "top_k": 5}, {"top_k": 30, "temperature": 2.0}),
    ("greedy-repetition-penalty", {}, {"do_sample": False, "repetition_penalty": 1.3}),
    ("sampled-repetition-penalty", {"repetition_penalty": 1.2}, {"do_sample": True, "temperature": 0.8, "top_k": 20,
                                                                  "min_p": 0.1}),
    ("min-p-only", {}, {"do_sample": True, "top_k": 0, "min_p": 0.2}),
]


def processed(model, file_values, kwargs, context, logits):
    model.generation_config = GenerationConfig(**file_values)
    config, _ = model._prepare_generation_config(None, **kwargs)
    processors = model._get_logits_processor(generation_config=config, input_ids_seq_length=context.shape[1],
                                             encoder_input_ids=context, logits_processor=LogitsProcessorList(),
                                             device="cpu")
    settings = {key: getattr(config, key) for key in
                ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty")}
    return processors(context, logits.clone())[0], settings, [type(p).__name__ for p in processors]


def write(out: Path) -> None:
    torch.manual_seed(20261206)
    torch.set_num_threads(1)
    model = MistralForCausalLM(MistralConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    logits = (torch.randn(1, VOCAB) * 1.5).float()
    # ties at top-k 20's boundary: the 21st and 22nd most likely tokens get the 20th's score, so top-k keeps 22 (no
    # case's top-p or min-p cut falls among them: torch.sort orders ties its own way)
    ranked = logits[0].argsort(descending=True)
    logits[0, ranked[20]] = logits[0, ranked[19]]
    logits[0, ranked[21]] = logits[0, ranked[19]]
    context = torch.tensor([[1, 5, 7, 7, 30, 64, 119]])
    cases = []
    for name, file_values, kwargs in CASES:
        scores, settings, applied = processed(model, file_values, kwargs, context, logits)
        cases.append({
            "name": name,
            "generation_config": file_values,
            "kwargs": kwargs,
            "settings": settings,
            "processors": applied,
            "scores": [None if s == float("-inf") else s for s in scores.tolist()],
        })
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"logits": logits[0].tolist(), "context_ids": context[0].tolist(), "cases": cases}
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
