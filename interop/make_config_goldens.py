"""What transformers 5.18 makes of config.json files: model/src/test/resources/golden/configs/resolved.json.

Run: interop/.venv/bin/python interop/make_config_goldens.py
Each case is a config.json (the Hub's files of Mistral-7B v0.1/v0.2/v0.3, Mixtral-8x7B-Instruct-v0.1 and
Mistral-Nemo-Instruct-2407 as published, one written by transformers 5, and files that leave keys out) and the values
MistralConfig/MixtralConfig.from_dict resolve it to; ModelConfigHfParityTest reads each file with ModelConfig and
compares. A list eos_token_id is kept as transformers keeps it; mixtune takes its first id as the EOS.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import MistralConfig, MixtralConfig

import hf_models as hf

OUT = hf.repo_root() / "model" / "src" / "test" / "resources" / "golden" / "configs" / "resolved.json"

MISTRAL_7B_V01 = {
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
    "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000,
}
MISTRAL_7B_INSTRUCT_V02 = dict(MISTRAL_7B_V01, rope_theta=1000000.0, sliding_window=None,
                               transformers_version="4.36.0")
MISTRAL_7B_V03 = dict(MISTRAL_7B_INSTRUCT_V02, vocab_size=32768, transformers_version="4.42.0.dev0")
MIXTRAL_8X7B_INSTRUCT_V01 = {
    "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mixtral", "num_attention_heads": 32, "num_experts_per_tok": 2,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": False,
    "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.36.0.dev0",
    "use_cache": True, "vocab_size": 32000,
}
MISTRAL_NEMO_INSTRUCT_2407 = {
    "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 1024000, "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 40,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.43.0.dev0",
    "use_cache": True, "vocab_size": 131072,
}
# Only the keys that have no sensible default: everything else is transformers' default for the model type.
BARE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 16,
        "vocab_size": 512}

CASES = {
    "mistral-7b-v0.1": MISTRAL_7B_V01,
    "mistral-7b-instruct-v0.2": MISTRAL_7B_INSTRUCT_V02,
    "mistral-7b-v0.3": MISTRAL_7B_V03,
    "mixtral-8x7b-instruct-v0.1": MIXTRAL_8X7B_INSTRUCT_V01,
    "mistral-nemo-instruct-2407": MISTRAL_NEMO_INSTRUCT_2407,
    # What transformers 5 writes: dtype for torch_dtype, rope_parameters for rope_theta.
    "mistral-transformers-5": MistralConfig(**BARE, rope_parameters={"rope_type": "default", "rope_theta": 5e5},
                                            sliding_window=None, tie_word_embeddings=True).to_dict(),
    "mistral-bare": dict(BARE, model_type="mistral"),
    "mixtral-bare": dict(BARE, model_type="mixtral"),
    "mistral-null-window": dict(BARE, model_type="mistral", sliding_window=None),
    "mistral-eos-list": dict(BARE, model_type="mistral", eos_token_id=[2, 7]),
    "mistral-rope-scaling-null": dict(BARE, model_type="mistral", rope_scaling=None, rope_theta=2e4),
}


def resolve(config: dict) -> dict:
    cls = MistralConfig if config["model_type"] == "mistral" else MixtralConfig
    c = cls.from_dict(dict(config))
    moe = config["model_type"] == "mixtral"
    return {
        "model_type": c.model_type,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        # MixtralAttention: getattr(config, "head_dim", None) or hidden_size // num_attention_heads
        "head_dim": getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        "vocab_size": c.vocab_size,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_parameters["rope_theta"],
        "rope_type": c.rope_parameters["rope_type"],
        "sliding_window": c.sliding_window,
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings,
        "num_local_experts": c.num_local_experts if moe else 0,
        "num_experts_per_tok": c.num_experts_per_tok if moe else 0,
        "router_aux_loss_coef": c.router_aux_loss_coef if moe else 0.0,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
    }


def main(out: Path = OUT) -> None:
    logging.disable(logging.WARNING)
    cases = [{"name": name, "config": config, "transformers": resolve(config)} for name, config in CASES.items()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(cases, indent=1) + "\n")
    for case in cases:
        print(case["name"], case["transformers"])


if __name__ == "__main__":
    main()
