"""Regenerates the committed goldens under model/src/test/resources/golden/ (see interop/GOLDENS.md).

Run: interop/.venv/bin/python interop/make_goldens.py [section ...]
Sections: tokenizer, mistral-fp32, mistral-bf16, mixtral-sharded, mixtral-fused, mistral-batch (default: all).
Deterministic: the checkpoints come from hf_models.SPECS (fixed seeds), the tokenizer from configs/tokenizer/.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import sentencepiece
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

import hf_models as hf

REPO = hf.repo_root()
GOLDEN = REPO / "model" / "src" / "test" / "resources" / "golden"
TOKENIZER_DIR = REPO / "configs" / "tokenizer" / "mistral-v1"

# Smallest top-1/top-2 gap (logits) and k-th/(k+1)-th router gap we accept: far above the 1e-4 parity tolerance, so
# that a correct port can never pick a different token or expert because of float rounding.
MIN_GAP = 1e-3

TOKENIZER_TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "Mixtral routes each token to 2 of its 8 experts.",
    "Wait... what?! (Really?) Yes; no: maybe -- \"quoted\" and 'single'.",
    "E-mail: someone@example.com, URL: https://example.org/path?q=1&r=2#frag",
    "Numbers: 0 1 12 123 1234 3.14159 -42 1e-5 1,000,000 and 50%.",
    "Dates like 2024-03-15 and times like 12:34:56.",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; i++) { sum += x[i]; }",
    "x = [1, 2, 3]\nprint(sum(x))",
    "if x:\n\tprint('tab indented')",
    "SELECT name FROM users WHERE id = 7;",
    "<html><body>Hi</body></html>",
    "Café, naïve, résumé, façade, jalapeño, Ångström.",
    "Die Größe des Straßenbahnwagens überrascht.",
    "¿Dónde está la biblioteca? ¡Aquí!",
    "Привет, как дела?",
    "Γειά σου Κόσμε",
    "中文分词测试：今天天气很好。",
    "日本語のテキストとカタカナ、ひらがな。",
    "한국어 문장입니다.",
    "مرحبا بالعالم",
    "Emoji: 😀🚀👍🏽 and symbols: © ® ™ € £ ¥ → ∑ √ ∞",
    "Line one\nLine two\n\nLine four",
    "Windows line\r\nending",
    "trailing space ",
    "trailing newline\n",
    " leading space",
    "  two leading spaces",
    "\nleading newline",
    "double  space inside",
    "many     spaces     inside",
    "ALL CAPS AND MiXeD CaSe",
    "a",
    "",
    "<s> and </s> written as text",
]


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
    if not (TOKENIZER_DIR / "tokenizer.json").exists():
        raise SystemExit(f"{TOKENIZER_DIR} is missing: run interop/convert_tokenizer.py first")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(TOKENIZER_DIR / "tokenizer.model"))
    fast = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    agree, differ = [], []
    for text in TOKENIZER_TEXTS:
        ids = [sp.bos_id()] + sp.encode(text)
        fast_ids = fast.encode(text).ids
        (agree if fast_ids == ids else differ).append({"text": text, "ids": ids, "fast_ids": fast_ids})
    out = GOLDEN / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    write_id_lists(out / "mistral-v1-ids.json", [{"text": e["text"], "ids": e["ids"]} for e in agree])
    print(f"tokenizer: {len(agree)} texts agree with sentencepiece, {len(differ)} differ (left out):")
    for e in differ:
        print(f"  {e['text']!r}\n    sentencepiece {e['ids']}\n    tokenizer.json {e['fast_ids']}")


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


SECTIONS = {
    "tokenizer": tokenizer_section,
    "mistral-fp32": lambda: (checkpoint_case("mistral-fp32"), check_window_matters("mistral-fp32")),
    "mistral-bf16": lambda: checkpoint_case("mistral-bf16"),
    "mixtral-sharded": lambda: checkpoint_case("mixtral-sharded"),
    "mixtral-fused": lambda: checkpoint_case("mixtral-fused"),
    "mistral-batch": batch_case,
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
