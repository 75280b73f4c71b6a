"""Texts on which configs/tokenizer/mistral-v1/tokenizer.json must give sentencepiece's ids (tokenizer.model.v1).

- GOLDEN_TEXTS: hand-picked, the hard cases first named in the comments; they go into the Java golden
  (make_goldens.py tokenizer) with random_texts(GOLDEN_RANDOM, seed=GOLDEN_SEED).
- corpus(): everything convert_tokenizer.py and interop/tests/test_tokenizer.py compare, 20k+ texts: the golden texts,
  every message of data/samples/*.jsonl, the template golden conversations as mistral-common and ChatML render them,
  substrings cut at random places, runs of spaces, tabs and newlines of every length up to 300, and random texts.

random_texts draws from a fixed word list and fixed Unicode ranges (no file is read), so the golden stays the same
when the sample data changes. Deterministic: random.Random(seed).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

GOLDEN_TEXTS = [
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
    "ALL CAPS AND MiXeD CaSe",
    "a",
    "",
    # sentencepiece puts its dummy-prefix "▁" in front of a leading space too; HF's Metaspace did not.
    " leading space",
    "  two leading spaces",
    "   three leading spaces",
    " ",
    "   ",
    "\nleading newline",
    "\tleading tab",
    " \n space, then a newline",
    # Runs of spaces: sentencepiece scores every whitespace-only piece -1e9 and so merges them last, leftmost first.
    "double  space inside",
    "many     spaces     inside",
    "a" + " " * 17 + "b",
    "x" + " " * 40,
    " " * 33,
    "Sentence one.  Sentence two.   Three.",
    "    indented code\n        deeper\n            deepest\n",
    "class A:\n    def f(self):\n        return {\n            'k': [1,  2,   3],\n        }\n",
    "tabs\tinside\t\tand\t\t\ttrailing\t",
    "\n\n\nthree newlines first",
    "CRLF\r\n\r\nand back\r",
    # Special and template tokens typed as text: sentencepiece never matches <s>, </s>, <unk> in text.
    "<s> and </s> written as text",
    "<s>",
    "</s>",
    "<unk>",
    "text</s>",
    "Why does my output end with </s>?",
    "<s>[INST] hi [/INST] hello</s>",
    "[INST] literal [/INST] and [/INST] alone",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<0x0A> typed as text, and ▁ (U+2581) typed as text",
    # Scripts, emoji sequences, and characters with no piece (byte fallback).
    "السلام عليكم ورحمة الله",
    "שָׁלוֹם עוֹלָם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "👩\u200d👩\u200d👧\u200d👦 family, 🏳\ufe0f\u200d🌈 flag, ❤\ufe0f heart",
    "𠀀𠀁𪚥 rare CJK",
    "private use \ue000\uf8ff",
    "controls \x00\x07\x1b[0m end",
    "zero\u200bwidth and non\u00a0breaking\u3000spaces",
    "e\u0301 vs é",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and \ufffd",
]

GOLDEN_RANDOM = 300
GOLDEN_SEED = 4

_WORDS = sorted({w for t in GOLDEN_TEXTS for w in t.split() if w}) + [
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "with", "as", "was", "on", "be", "at", "by", "this",
    "def", "return", "import", "class", "self", "None", "True", "print(", ")", "{", "}", "[", "]", "=>", "->", "==",
    "//", "/*", "*/", "#", "```", "```python", "**bold**", "_italics_", "- item", "1.", "|", "---", "$x^2$",
]
_RANGES = [
    (0x20, 0x7E), (0x20, 0x7E), (0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
    (0x590, 0x5FF), (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x2000, 0x206F), (0x2580, 0x259F),
    (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xF8FF), (0xFFF0, 0xFFFD), (0x0, 0x1F),
    (0x10000, 0x1007F), (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF),
]
_SPACES = [" ", "  ", "   ", "    ", "\t", "\n", "\r\n", "\n\n", " \n", "\u00a0", "\u3000", "▁", "        "]
_MARKERS = ["<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<|im_start|>", "<|im_end|>", "<<SYS>>", "<0x0A>", "<pad>"]


def random_text(rng: random.Random) -> str:
    """Words, whitespace runs (up to 40 spaces), special-token spellings and random code points, mixed."""
    parts = []
    for _ in range(rng.randrange(1, 30)):
        r = rng.random()
        if r < 0.45:
            parts.append(rng.choice(_WORDS))
        elif r < 0.65:
            run = rng.choice(_SPACES) * rng.randrange(1, 4)
            parts.append(run if rng.random() < 0.8 else " " * rng.randrange(1, 41))
        elif r < 0.75:
            parts.append(rng.choice(_MARKERS))
        else:
            lo, hi = rng.choice(_RANGES)
            # Surrogates cannot be encoded as UTF-8, so they never reach a tokenizer.
            parts.append("".join(chr(c) for c in (rng.randrange(lo, hi + 1) for _ in range(rng.randrange(1, 8)))
                                 if not 0xD800 <= c <= 0xDFFF))
    kind = rng.randrange(4)
    text = ("" if kind == 0 else " ").join(parts)
    if kind == 2:
        text = " " * rng.randrange(1, 5) + text
    elif kind == 3:
        text += " " * rng.randrange(1, 5)
    return text


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [random_text(rng) for _ in range(n)]


def sample_texts() -> list[str]:
    """Every prompt and message content in data/samples/*.jsonl."""
    out = []
    for path in sorted((REPO / "data" / "samples").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if isinstance(record.get("prompt"), str):
                out.append(record["prompt"])
            for key in ("messages", "chosen", "rejected"):
                out += [m["content"] for m in record.get(key, []) if isinstance(m.get("content"), str)]
    return out


def conversation_texts() -> list[str]:
    """The template goldens' messages, each user turn as mistral-common wraps it, and each whole ChatML rendering."""
    import make_template_goldens as tg

    out = []
    for _, messages in tg.CONVERSATIONS:
        out += [m["content"] for m in messages]
        system = "".join(m["content"] for m in messages if m["role"] == "system")
        users = [m["content"] for m in messages if m["role"] == "user"]
        out += [f"[INST] {system + chr(10) * 2 + u if system and i == 0 else u} [/INST]" for i, u in enumerate(users)]
        out.append("".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages))
    return out


def whitespace_runs(longest: int = 300) -> list[str]:
    out = []
    for n in range(longest + 1):
        out += [" " * n, "a" + " " * n + "b", "\n" + " " * n + "x", "x" + " " * n, "\t" * (n % 20) + " " * n + "\n"]
    return out


def corpus(n_random: int = 20_000, n_cuts: int = 5_000, seed: int = 0) -> list[str]:
    base = GOLDEN_TEXTS + sample_texts() + conversation_texts()
    rng = random.Random(seed)
    cuts = []
    for _ in range(n_cuts):
        text = rng.choice(base)
        start = rng.randrange(len(text) + 1)
        cuts.append(text[start : rng.randrange(start, min(len(text), start + 300) + 1)])
    return base + cuts + whitespace_runs() + random_texts(n_random, seed)
