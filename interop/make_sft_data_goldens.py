"""How TRL 1.13's SFTTrainer tokenizes language-modeling ({"text"}) and prompt-completion ({"prompt", "completion"})
records, written to data-pipeline/src/test/resources/golden/sft-data/trl-prepared.json for SftRecordGoldenTest (see
interop/GOLDENS.md, "SFT text and prompt-completion records").

Per record and template (mistral: the Jinja mixtune writes for its built-in mistral template; chatml: the standard
ChatML of make_template_goldens.py; both on configs/tokenizer/mistral-v1), TRL's own code, no model:
- unpacked: SFTTrainer._prepare_dataset with packing off at max_length MAX_LENGTH (EOS appended to a text or a standard
  completion, tokenized, labels from the completion mask, truncated keep_start, a record left with no trained token
  dropped): input_ids and labels, or "kept": false;
- packed: _prepare_dataset with packing on (its default strategy bfd, which truncates what overflows a row, keep_start)
  and DataCollatorForLanguageModeling(padding_free=True) on the packed row, as mixtune packs: input_ids, labels
  (-100 at each sequence's first token) and position_ids. Each record is packed alone, so the row is that record.
A standard record (string prompt, or a text) is tokenized as raw text, no template: it is written for mistral only.

Also PACKED_OUT (trl-packed.json, SftRecordGoldenTest): TRL's other packing strategies on whole datasets at
PACK_LENGTH, so that records overflow a row. Per dataset (the texts, the standard prompt-completions, the conversational
ones on each template) and strategy (bfd_split, wrapped): _prepare_dataset with packing on, each packed row and its
seq_lengths, collated as SFTTrainer collates that strategy (bfd_split padding-free: labels -100 at each sequence's first
token, positions from seq_lengths; wrapped not padding-free, its positions as the collator's return_position_ids gives
them: 0.. across the row). And "many": 1,002 short texts, only the rows' lengths, where datasets.map's batches of 1,000
examples show (each batch is packed on its own).

And BFD_OUT (trl-bfd.json, PackingStrategyBfdTest): TRL's default strategy bfd, best fit decreasing, on samples of given
lengths whose tokens name the sample and the position (sample i's token t is i * 1000 + t, every token trained):
pack_dataset(strategy="bfd"), which SFTTrainer._prepare_dataset calls, then the padding-free collator on each row.
Cases where first fit packs otherwise ([1, 5, 4, 7] in rows of 10: first fit [7, 1] [5, 4], best fit [7] [5, 4, 1]),
ties among lengths and among rows' free space, samples longer than a row (truncated keep_start), 1,002 samples
(only each row's samples) across datasets.map's batches of 1,000, and empty samples (left out).

Run: interop/.venv/bin/python interop/make_sft_data_goldens.py
Deterministic: the records are written out below.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import types
import warnings
from pathlib import Path

import datasets
from datasets import Dataset

import hf_models as hf
import make_goldens as mg
from make_preference_goldens import MISTRAL, tokenizer
from make_template_goldens import CHATML

OUT = hf.repo_root() / "data-pipeline" / "src" / "test" / "resources" / "golden" / "sft-data" / "trl-prepared.json"
MAX_LENGTH = 64
PACKED_OUT = OUT.with_name("trl-packed.json")
PACK_LENGTH = 24
STRATEGIES = ("bfd_split", "wrapped")
BFD_OUT = OUT.with_name("trl-bfd.json")

STORY = ("Once upon a time a small fox lived at the edge of a quiet forest. Every morning it walked to the river, "
         "drank, and watched the herons fish. In the evening it came home, curled up under an old oak and slept "
         "until the owls began to call.")

RECORDS = {  # name -> record as a data file holds it
    # language modeling: loss on every token, EOS appended
    "text": {"text": "The quick brown fox jumps over the lazy dog."},
    "text_unicode": {"text": "Grüße aus Zürich — 東京 は 晴れ 🌤️ ünïcödé"},
    # longer than MAX_LENGTH: keep_start cuts it, EOS and all
    "text_long": {"text": STORY + " " + STORY},
    # already ends with the EOS string: TRL appends none, the tokenizer reads "</s>" as EOS
    "text_with_eos": {"text": "Done.</s>"},
    # prompt-completion, standard: prompt and prompt + completion + EOS as raw text, loss on the completion
    "standard": {"prompt": "The capital of France is", "completion": " Paris."},
    # the prompt's last token merges with the completion's first ("is" + "n't"): TRL masks len(prompt ids) tokens
    "standard_merging": {"prompt": "The answer is", "completion": "n't known."},
    "standard_long": {"prompt": "Continue the story: ", "completion": STORY},
    "standard_long_prompt": {"prompt": STORY + " " + STORY, "completion": " The end."},
    # prompt-completion, conversational: through the chat template, the prompt with the generation prompt
    "conversational": {"prompt": [{"role": "user", "content": "What is the capital of France?"}],
                       "completion": [{"role": "assistant", "content": "Paris."}]},
    "conversational_system": {"prompt": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Capital of Italy?"}],
                              "completion": [{"role": "assistant", "content": "Rome."}]},
    "conversational_multi_turn": {"prompt": [{"role": "user", "content": "Capital of France?"},
                                             {"role": "assistant", "content": "Paris."},
                                             {"role": "user", "content": "And of Spain — ¿sí?"}],
                                  "completion": [{"role": "assistant", "content": "Madrid."}]},
    "conversational_long": {"prompt": [{"role": "user", "content": "Tell me a story."}],
                            "completion": [{"role": "assistant", "content": STORY}]},
}
TEMPLATES = {"mistral": MISTRAL, "chatml": CHATML}


def prepare(record: dict, tok, work: str, packing: bool) -> dict:
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    args = SFTConfig(output_dir=work, max_length=MAX_LENGTH, packing=packing, report_to=[], use_cpu=True)
    assert args.truncation_mode == "keep_start" and args.packing_strategy == "bfd"
    assert args.dataset_text_field == "text" and args.completion_only_loss is None
    # SFTTrainer.__init__'s default: completion-only loss exactly when the records have a prompt and a completion
    trainer = types.SimpleNamespace(_tokenizer=tok, chat_template=None,
                                    completion_only_loss="prompt" in record and "completion" in record)
    dataset = SFTTrainer._prepare_dataset(trainer, Dataset.from_list([record]), tok, args, packing, None, "golden")
    if len(dataset) == 0:
        return {"kept": False}
    if not packing:
        return {"kept": True, "input_ids": dataset[0]["input_ids"], "labels": dataset[0]["labels"]}
    collated = DataCollatorForLanguageModeling(pad_token_id=tok.eos_token_id, padding_free=True)([dataset[0]])
    return {"kept": True, "input_ids": collated["input_ids"][0].tolist(), "labels": collated["labels"][0].tolist(),
            "position_ids": collated["position_ids"][0].tolist()}


def write_goldens(out: Path = OUT) -> None:
    datasets.disable_progress_bars()
    cases = []
    with tempfile.TemporaryDirectory() as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for template, jinja in TEMPLATES.items():
            tok = tokenizer(jinja)
            for name, record in RECORDS.items():
                if not name.startswith("conversational") and template != "mistral":
                    continue  # raw text: no template
                cases.append({"name": name, "template": template, "record": record,
                              "unpacked": prepare(record, tok, work, False),
                              "packed": prepare(record, tok, work, True)})
    out.parent.mkdir(parents=True, exist_ok=True)
    mg.write_json(out, {"max_length": MAX_LENGTH, "pad_id": hf.EOS_ID, "cases": cases})


def pack(records: list[dict], tok, work: str, strategy: str, rows_only: bool = False) -> dict:
    """TRL's own packing of the records as one dataset, each row collated as SFTTrainer collates the strategy."""
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    args = SFTConfig(output_dir=work, max_length=PACK_LENGTH, packing=True, packing_strategy=strategy, report_to=[],
                     use_cpu=True)
    assert not args.shuffle_dataset and args.dataset_num_proc is None
    trainer = types.SimpleNamespace(_tokenizer=tok, chat_template=None,
                                    completion_only_loss="prompt" in records[0] and "completion" in records[0])
    dataset = SFTTrainer._prepare_dataset(trainer, Dataset.from_list(records), tok, args, True, None, "golden")
    if rows_only:
        return {"row_lengths": [len(row["input_ids"]) for row in dataset]}
    # SFTTrainer.__init__: padding-free for bfd and bfd_split, not for wrapped
    padding_free = strategy in {"bfd", "bfd_split"}
    collator = DataCollatorForLanguageModeling(pad_token_id=tok.eos_token_id, padding_free=padding_free,
                                               return_position_ids=not padding_free)
    rows = []
    for row in dataset:
        collated = collator([row])
        out = {"input_ids": collated["input_ids"][0].tolist(), "labels": collated["labels"][0].tolist(),
               "position_ids": collated["position_ids"][0].tolist()}
        if "seq_lengths" in row:
            out["seq_lengths"] = row["seq_lengths"]
        rows.append(out)
    return {"rows": rows}


MANY = 1002


def many_text(i: int) -> str:
    """The i-th of the "many" texts (SftRecordGoldenTest writes them alike)."""
    return f"Note {i}: " + "ab " * (i % 9)


def write_packed_goldens(out: Path = PACKED_OUT) -> None:
    datasets.disable_progress_bars()
    groups = [("texts", "mistral", [n for n in RECORDS if n.startswith("text")]),
              ("standard", "mistral", [n for n in RECORDS if n.startswith("standard")])]
    groups += [("conversational", t, [n for n in RECORDS if n.startswith("conversational")]) for t in TEMPLATES]
    many = [{"text": many_text(i)} for i in range(MANY)]
    cases = []
    with tempfile.TemporaryDirectory() as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, template, names in groups:
            tok = tokenizer(TEMPLATES[template])
            for strategy in STRATEGIES:
                cases.append({"name": name, "template": template, "strategy": strategy, "records": names,
                              **pack([RECORDS[n] for n in names], tok, work, strategy)})
        tok = tokenizer(MISTRAL)
        for strategy in STRATEGIES:
            cases.append({"name": "many", "template": "mistral", "strategy": strategy, "records": len(many),
                          **pack(many, tok, work, strategy, rows_only=True)})
    out.parent.mkdir(parents=True, exist_ok=True)
    mg.write_json(out, {"max_length": PACK_LENGTH, "pad_id": hf.EOS_ID, "records": RECORDS, "cases": cases})


def bfd_lengths() -> dict[str, tuple[int, list[int]]]:
    """Case name -> (row length, the samples' lengths)."""
    rng = random.Random(20261208)
    return {
        "smallest": (10, [1, 5, 4, 7]),
        # equal lengths keep their order; rows with equal free space are filled in the order they came to it
        "ties": (8, [3, 3, 3, 3, 4, 4, 2, 2, 6, 1, 1, 5]),
        "overlong": (10, [12, 3, 10, 25, 7, 2, 4]),
        "random": (64, [rng.randint(1, 64) for _ in range(120)]),
        "many": (32, [rng.randint(1, 32) for _ in range(1002)]),
        # empty samples: _pack_bfd filters them out before it bins (none has a row)
        "empty": (6, [2, 0, 4, 0, 6, 3, 3, 0, 1]),
    }


def bfd_sample(index: int, length: int) -> list[int]:
    """Sample index's tokens (PackingStrategyBfdTest writes them alike)."""
    return [index * 1000 + t for t in range(length)]


def write_bfd_goldens(out: Path = BFD_OUT) -> None:
    from trl import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    datasets.disable_progress_bars()
    collator = DataCollatorForLanguageModeling(pad_token_id=hf.EOS_ID, padding_free=True)
    cases = []
    for name, (length, lengths) in bfd_lengths().items():
        ids = [bfd_sample(i, n) for i, n in enumerate(lengths)]
        dataset = Dataset.from_dict({"input_ids": ids})
        packed = pack_dataset(dataset, length, strategy="bfd")  # as SFTTrainer._prepare_dataset calls it
        rows = []
        for row in packed:
            starts = [sum(row["seq_lengths"][:k]) for k in range(len(row["seq_lengths"]))]
            out_row = {"samples": [row["input_ids"][s] // 1000 for s in starts], "seq_lengths": row["seq_lengths"]}
            if name != "many":
                collated = collator([row])
                out_row.update(input_ids=collated["input_ids"][0].tolist(), labels=collated["labels"][0].tolist(),
                               position_ids=collated["position_ids"][0].tolist())
            rows.append(out_row)
        cases.append({"name": name, "max_length": length, "lengths": lengths, "rows": rows})
    out.parent.mkdir(parents=True, exist_ok=True)
    mg.write_json(out, {"cases": cases})


def main(argv: list[str]) -> None:
    if argv:
        raise SystemExit("make_sft_data_goldens.py takes no arguments")
    write_goldens()
    write_packed_goldens()
    write_bfd_goldens()
    for case in json.loads(BFD_OUT.read_text())["cases"]:
        print(f"bfd {case['name']:9} samples={len(case['lengths'])} rows={len(case['rows'])}")
    print(f"wrote {BFD_OUT}")
    for case in json.loads(PACKED_OUT.read_text())["cases"]:
        rows = case.get("rows")
        lengths = [len(r["input_ids"]) for r in rows] if rows else case["row_lengths"]
        print(f"{case['template']:8} {case['name']:15} {case['strategy']:9} rows={len(lengths)} "
              f"tokens={sum(lengths)}")
    print(f"wrote {PACKED_OUT}")
    for case in json.loads(OUT.read_text())["cases"]:
        unpacked = case["unpacked"]
        trained = sum(label != -100 for label in unpacked.get("labels", []))
        print(f"{case['template']:8} {case['name']:26} kept={unpacked['kept']!s:5} "
              f"tokens={len(unpacked.get('input_ids', []))} trained={trained}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(sys.argv[1:])
