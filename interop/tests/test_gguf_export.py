"""`mixtune export-gguf` read by the reference tools: gguf's GGUFReader and gguf.quants, transformers 5.18's loader.

tiny-mistral (fp32) with a random rank-4 adapter on every linear layer is exported as f32, f16, q8_0 and q4_0.
- GGUFReader reads every file: arch llama, the converter's keys, the tensors and their types.
- Each quantized file's tensors are gguf.quants.quantize of the f32 file's, byte for byte.
- The f32 file's weights are PEFT's merge_and_unload of the adapter, Q and K rows in llama.cpp's order.
- transformers loads each export (`from_pretrained(dir, gguf_file=...)`, a LlamaForCausalLM) and gives the logits of
  the PEFT-merged model within the type's tolerance (measured: f32 8e-7, f16 2.8e-3, q8_0 3.5e-2, on logits of
  absmax 0.72; q4_0, a 4-bit quantization of a random model, is checked by its bytes alone).
- transformers' tokenizer from the GGUF has tokenizer.json's vocabulary, special tokens and chat template, and splits
  text as tokenizer.json does, except where transformers' GGUF loader is known to differ from Mistral's tokenizer.json
  (no BOS: it does not read tokenizer.ggml.add_bos_token; a text's leading spaces or \u2581; special tokens
  written in the text), the same for llama.cpp's converter's own file, which mixtune's equals byte for byte
  (trainer's ExportGgufTest).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import quantize
from peft import PeftModel
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_models as hf
from tokenizer_texts import GOLDEN_TEXTS, random_texts

MIXTUNE = hf.repo_root() / "bin" / "mixtune"
TYPES = ["f32", "f16", "q8_0", "q4_0"]
LOGITS_ATOL = {"f32": 1e-5, "f16": 1e-2, "q8_0": 1e-1}
# A 20-token prompt: inside tiny-mistral's sliding window of 64, which the llama architecture does not have.
PROMPT = hf.PROMPT_20


def mixtune(*args) -> None:
    cmd = [str(MIXTUNE), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, Path]:
    work = tmp_path_factory.mktemp("gguf")
    base = work / "tiny-mistral"
    adapter = work / "adapter"
    mixtune("init-model", "--preset", "tiny-mistral", "--out", base, "--dtype", "fp32")
    mixtune("init-adapter", "--model", base, "--out", adapter, "--r", "4", "--alpha", "8", "--targets", "all-linear",
            "--init", "random", "--seed", "0")
    for kind in TYPES:
        mixtune("export-gguf", "--model", base, "--adapter", adapter, "--out", work / f"model-{kind}.gguf",
                "--type", kind)
    return work, base, adapter


@pytest.fixture(scope="module")
def merged(exported) -> torch.nn.Module:
    _, base, adapter = exported
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter).merge_and_unload().eval()


def permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's Q/K row order: each head's [first half; second half] rows interleaved."""
    rows, columns = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, columns).swapaxes(1, 2).reshape(rows, columns)


@pytest.mark.parametrize("kind", TYPES)
def test_gguf_reader_reads_the_export(exported, kind):
    work, _, _ = exported
    reader = GGUFReader(work / f"model-{kind}.gguf")
    fields = reader.fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["general.file_type"].contents() == {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7}[kind]
    assert fields["llama.block_count"].contents() == 2
    assert fields["llama.attention.head_count_kv"].contents() == 2
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    assert len(fields["tokenizer.ggml.tokens"].contents()) == 32000
    assert fields["tokenizer.ggml.bos_token_id"].contents() == 1
    assert fields["tokenizer.ggml.add_bos_token"].contents() is True
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 21
    matrix = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}[kind]
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == matrix
    assert tensors["token_embd.weight"].tensor_type.name == matrix
    assert tensors["blk.1.ffn_norm.weight"].tensor_type.name == "F32"
    assert [int(n) for n in tensors["blk.0.attn_k.weight"].shape] == [64, 32]


@pytest.mark.parametrize("kind", ["f16", "q8_0", "q4_0"])
def test_quantized_tensors_are_gguf_quants_of_the_f32_export(exported, kind):
    work, _, _ = exported
    full = {t.name: t for t in GGUFReader(work / "model-f32.gguf").tensors}
    qtype = GGMLQuantizationType[kind.upper()]
    for tensor in GGUFReader(work / f"model-{kind}.gguf").tensors:
        values = np.asarray(full[tensor.name].data, dtype=np.float32)
        expected = values if tensor.tensor_type == GGMLQuantizationType.F32 else quantize(values, qtype)
        assert tensor.data.tobytes() == expected.tobytes(), tensor.name


def test_f32_export_holds_peft_merged_weights(exported, merged):
    work, _, _ = exported
    tensors = {t.name: np.asarray(t.data) for t in GGUFReader(work / "model-f32.gguf").tensors}
    state = {k: v.detach().numpy() for k, v in merged.state_dict().items()}
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for layer in range(2):
        for hf_name, gguf_name in names.items():
            weight = state[f"model.layers.{layer}.{hf_name}.weight"]
            if hf_name.endswith("q_proj"):
                weight = permute(weight, 4)
            elif hf_name.endswith("k_proj"):
                weight = permute(weight, 2)
            np.testing.assert_allclose(tensors[f"blk.{layer}.{gguf_name}.weight"], weight, rtol=1e-6, atol=1e-6,
                                       err_msg=f"layer {layer} {hf_name}")
    np.testing.assert_array_equal(tensors["token_embd.weight"], state["model.embed_tokens.weight"])
    np.testing.assert_array_equal(tensors["output.weight"], state["lm_head.weight"])
    np.testing.assert_array_equal(tensors["output_norm.weight"], state["model.norm.weight"])


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0"])
def test_transformers_loads_the_export_with_the_merged_models_logits(exported, merged, kind):
    work, _, _ = exported
    model = AutoModelForCausalLM.from_pretrained(work, gguf_file=f"model-{kind}.gguf", dtype=torch.float32).eval()
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        expected = merged(ids).logits
        actual = model(ids).logits
    assert type(model).__name__ == "LlamaForCausalLM"
    difference = (actual - expected).abs().max().item()
    assert difference <= LOGITS_ATOL[kind], f"{kind}: logits differ by {difference}"


def test_transformers_tokenizer_from_the_gguf_is_the_models(exported):
    work, base, _ = exported
    from_gguf = AutoTokenizer.from_pretrained(work, gguf_file="model-f32.gguf")
    reference = Tokenizer.from_file(str(base / "tokenizer.json"))
    assert from_gguf.convert_ids_to_tokens(list(range(32000))) == [reference.id_to_token(i) for i in range(32000)]
    assert (from_gguf.bos_token, from_gguf.eos_token, from_gguf.unk_token) == ("<s>", "</s>", "<unk>")
    assert from_gguf.chat_template == json.loads((base / "tokenizer_config.json").read_text())["chat_template"]
    # transformers' GGUF loader's own differences from Mistral's tokenizer.json (see the module's doc)
    texts = [t.lstrip().lstrip("\u2581").lstrip() for t in GOLDEN_TEXTS + random_texts(300, seed=7)
             if not any(special in t for special in ("<s>", "</s>", "<unk>"))]
    texts = [t for t in texts if t]
    assert len(texts) > 230
    for text in texts:
        assert from_gguf(text, add_special_tokens=False).input_ids == reference.encode(
            text, add_special_tokens=False).ids, repr(text)
