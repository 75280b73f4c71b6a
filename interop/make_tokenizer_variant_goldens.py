"""The tokenizer.json layouts Hub Mistral checkpoints ship, run by the tokenizers library (0.23), as goldens for
TextTokenizerVariantsTest: model/src/test/resources/golden/tokenizer/variants.json.

Run: interop/.venv/bin/python interop/make_tokenizer_variant_goldens.py
Each variant is configs/tokenizer/mistral-v1/tokenizer.json (mixtune's bundled v1 vocabulary and merges) with its
normalizer, pre_tokenizer, decoder and added_tokens replaced by those of a Hub layout: Mistral-7B-v0.1's original file
(a Prepend + Replace normalizer, <unk> <s> </s> special), the Metaspace pre-tokenizer transformers' converter writes
today (prepend_scheme "first", and "always" as Llama 2 files have it), and v0.3's control tokens ([INST], [/INST],
[TOOL_CALLS], ... special). The Java test lays the same overlay over the same file, so the vocabulary is not copied.
One more variant has a tokenizer of its own, golden/tokenizer/tekken-style.json: a byte-level BPE with Mistral-Nemo's
(tekken's) Split regex and no word-start prefix, trained here on tokenizer_texts to 700 tokens (small enough to commit).

Per variant: `texts` (user text: ids with every special token left as text, transformers' split_special_tokens=True,
which mixtune's encode does), `templates` (a template's own strings: ids with special tokens matched, which mixtune's
encode(control(s)) gives), `decodes` (ids -> decode(skip_special_tokens=True)) and `joins` (encode(a + b) for the
continuation rule: mixtune's encode(a) + encodeContinuation(b)).

golden/tokenizer/no-bos.json: for a model whose tokenizer has no BOS (tokenizer_config.json's bos_token null), the
text a prompt or a standard-format pair gives: encode(text) with tokenizer.json's post-processor, as transformers'
tokenizer(text) runs it (special tokens in text kept as text), on each variant: the bundled TemplateProcessing writes
<s> in front, tekken-style has no post-processor and writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

import hf_models as hf
import tokenizer_texts

REPO = hf.repo_root()
BUNDLED = REPO / "configs" / "tokenizer" / "mistral-v1" / "tokenizer.json"
OUT = REPO / "model" / "src" / "test" / "resources" / "golden" / "tokenizer" / "variants.json"
NO_BOS_OUT = OUT.parent / "no-bos.json"
TEKKEN_STYLE = OUT.parent / "tekken-style.json"
# The pre-tokenizer regex of Mistral-Nemo-Instruct-2407's tokenizer.json.
TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
                r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|"
                r"\s+(?!\S)|\s+")


def special(token_id: int, content: str) -> dict:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


MISTRAL_SPECIALS = [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")]
V3_CONTROL = ["[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
              "[/TOOL_RESULTS]"]
LEGACY_NORMALIZER = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                         {"type": "Replace", "pattern": {"String": " "},
                                                          "content": "▁"}]}
SENTENCEPIECE_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}


def metaspace(scheme: str) -> dict:
    return {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": False}


# The Metaspace decoder transformers' LlamaConverter writes with legacy=False.
METASPACE_DECODER = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}

VARIANTS = {
    "hub-v0.1-legacy": {"normalizer": LEGACY_NORMALIZER, "pre_tokenizer": None, "decoder": SENTENCEPIECE_DECODER,
                        "added_tokens": MISTRAL_SPECIALS},
    "metaspace-first": {"normalizer": None, "pre_tokenizer": metaspace("first"), "decoder": METASPACE_DECODER,
                        "added_tokens": MISTRAL_SPECIALS},
    "metaspace-always": {"normalizer": None, "pre_tokenizer": metaspace("always"), "decoder": SENTENCEPIECE_DECODER,
                         "added_tokens": MISTRAL_SPECIALS},
    # v0.3's control tokens; here past the v1 vocabulary (32000...), as added tokens of a fine-tune are.
    "v0.3-control-tokens": {"normalizer": None, "pre_tokenizer": metaspace("first"), "decoder": METASPACE_DECODER,
                            "added_tokens": MISTRAL_SPECIALS + [special(32000 + i, c) for i, c in
                                                                enumerate(V3_CONTROL)]},
}

SPELLINGS = ["<s>", "</s>", "<unk>", "Why does my output end with </s>?", "<s>[INST] hi [/INST] ok</s>",
             "[INST]", "a</s>b<s>c", " </s> ", "</s></s>", "[TOOL_CALLS] [{\"name\": \"f\"}]", " [INST]x"]
TEMPLATES = ["<s>[INST] What is 2+2? [/INST]", "<s>[INST] hi [/INST] ok</s>", "</s>[INST] again [/INST]",
             "<s>[INST]  two spaces [/INST]", "[AVAILABLE_TOOLS] [] [/AVAILABLE_TOOLS][INST] q [/INST]",
             "[TOOL_CALLS] [] </s>", "[INST]\nline\n[/INST]", "<s> <s>", "x<s>y"]
JOINS = [("[INST] hi", " [/INST]"), ("Hello", " world"), ("a", "\n\nb"), ("code:", "\n    x = 1"), ("a", "\nb"),
         ("<|im_end|>", "\n<|im_start|>assistant\n"),
         ("<s>", "text"), ("é", " t\u00e9")]


def train_tekken_style(out: Path = TEKKEN_STYLE) -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(TEKKEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"] + V3_CONTROL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(tokenizer_texts.GOLDEN_TEXTS + tokenizer_texts.random_texts(200, 9), trainer)
    out.write_text(tok.to_str() + "\n")


def main(out: Path = OUT) -> None:
    bundled = json.loads(BUNDLED.read_text())
    texts = SPELLINGS + tokenizer_texts.GOLDEN_TEXTS
    tekken_style = out.parent / TEKKEN_STYLE.name
    train_tekken_style(tekken_style)
    variants = []
    for name, overlay in list(VARIANTS.items()) + [("tekken-style", None)]:
        tok = Tokenizer.from_str(json.dumps(dict(bundled, **overlay)) if overlay else tekken_style.read_text())
        tok.post_processor = None

        def encode(text: str, split_special: bool) -> list[int]:
            tok.encode_special_tokens = split_special
            return tok.encode(text, add_special_tokens=False).ids

        decode_inputs = [encode(t, False) for t in TEMPLATES] + [
            [1, 22557, 28808, 2], [0, 415], [271, 32001, 271], [28705, 243, 162, 155, 131], [243, 162], [13, 13]]
        decode_inputs = [ids for ids in decode_inputs if all(i < tok.get_vocab_size(True) for i in ids)]
        variants.append({
            "name": name,
            **({"overlay": overlay} if overlay else {"tokenizer": TEKKEN_STYLE.name}),
            "texts": [{"text": t, "ids": encode(t, True)} for t in texts],
            "templates": [{"text": t, "ids": encode(t, False)} for t in TEMPLATES],
            "decodes": [{"ids": ids, "text": tok.decode(ids, skip_special_tokens=True)} for ids in decode_inputs],
            "joins": [{"first": a, "second": b, "ids": encode(a + b, True)} for a, b in JOINS],
        })
    out.write_text(json.dumps(variants, ensure_ascii=False, indent=1) + "\n")
    print(f"{out}: {len(variants)} variants, {out.stat().st_size} bytes")
    write_no_bos(bundled, tekken_style, out.parent / NO_BOS_OUT.name)


def write_no_bos(bundled: dict, tekken_style: Path, out: Path = NO_BOS_OUT) -> None:
    texts = SPELLINGS + tokenizer_texts.GOLDEN_TEXTS[:20] + [""]
    rows = []
    for name, overlay in list(VARIANTS.items()) + [("tekken-style", None)]:
        tok = Tokenizer.from_str(json.dumps(dict(bundled, **overlay)) if overlay else tekken_style.read_text())
        tok.encode_special_tokens = True  # text stays text
        rows.append({"name": name, "post_processor": tok.post_processor is not None,
                     "texts": [{"text": t, "ids": tok.encode(t, add_special_tokens=True).ids} for t in texts]})
    out.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    print(f"{out}: {len(rows)} variants without BOS, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
