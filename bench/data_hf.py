"""DataPipelineBenchmark's throughput figure done the Hugging Face way: datasets.load_dataset("json") then .map building
the mistral template turn by turn (BOS, "[INST] user [/INST]" untrained, assistant + EOS trained; the system prompt in
front of the first user turn) with the tokenizers library on the same tokenizer.json, samples cut at max_seq_len.

Usage: data_hf.py CHATS_JSONL [conversations, default 20000] [max_seq_len, default 4096]
Prints one line per variant: per-example map (one encode per piece, like mixtune) and batched map (encode_batch over
a batch's pieces, which the tokenizers library runs on all cores).
"""

import sys
import tempfile
import time
from pathlib import Path

import datasets
from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parent.parent
TOKENIZER = REPO / "configs" / "tokenizer" / "mistral-v1" / "tokenizer.json"
BOS, EOS, IGNORE = 1, 2, -100


def segments(messages):
    """(text, trained) per piece, as MistralTemplate builds them."""
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    out = []
    for i in range(0, len(turns), 2):
        user = turns[i]["content"]
        if i == 0 and system:
            user = system + "\n\n" + user
        out.append((f"[INST] {user} [/INST]", False))
        out.append((turns[i + 1]["content"], True))
    return out


def assemble(pieces, max_len):
    ids, labels = [BOS], [IGNORE]
    for piece, trained in pieces:
        piece = piece + [EOS] if trained else piece
        ids += piece
        labels += piece if trained else [IGNORE] * len(piece)
    return {"input_ids": ids[:max_len], "labels": labels[:max_len]}


def main():
    chats = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "data" / "samples" / "chats.jsonl")
    target = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    max_len = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    datasets.disable_caching()
    datasets.disable_progress_bars()

    def per_example(example):
        return assemble([(tokenizer.encode(text, add_special_tokens=False).ids, trained)
                         for text, trained in segments(example["messages"])], max_len)

    def batched(batch):
        pieces = [segments(m) for m in batch["messages"]]
        encoded = iter(tokenizer.encode_batch([text for conv in pieces for text, _ in conv], add_special_tokens=False))
        rows = [assemble([(next(encoded).ids, trained) for _, trained in conv], max_len) for conv in pieces]
        return {"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"] for r in rows]}

    lines = [line for line in chats.read_text().splitlines() if line.strip()]
    copies = -(-target // len(lines))
    with tempfile.TemporaryDirectory() as work:
        repeated = Path(work) / "chats-repeated.jsonl"
        repeated.write_text("\n".join(lines * copies) + "\n")
        size = repeated.stat().st_size / 1e6
        for name, kwargs in [("per-example map", {}), ("batched map (encode_batch)", {"batched": True})]:
            start = time.perf_counter()
            dataset = datasets.load_dataset("json", data_files=str(repeated), split="train",
                                            cache_dir=str(Path(work) / f"cache-{len(kwargs)}"))
            loaded = time.perf_counter()
            function = batched if kwargs else per_example
            tokenized = dataset.map(function, remove_columns=dataset.column_names, **kwargs)
            end = time.perf_counter()
            tokens = sum(len(ids) for ids in tokenized["input_ids"])
            seconds = end - start
            print(f"datasets {name}: {len(tokenized):,} conversations, {size:.1f} MB: load_dataset "
                  f"{loaded - start:.2f} s + map {end - loaded:.2f} s = {seconds:.2f} s, "
                  f"{len(tokenized) / seconds:,.0f} conversations/s, {tokens / seconds:,.0f} tokens/s "
                  f"({tokens:,} tokens)")


if __name__ == "__main__":
    main()
