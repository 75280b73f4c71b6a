"""How TRL 1.13 tokenizes and truncates preference pairs, written to
data-pipeline/src/test/resources/golden/preference/trl-tokenized.json for PreferenceGoldenTest (see interop/GOLDENS.md,
"Preference pairs").

Per pair and template (mistral: the Jinja mixtune writes for its built-in mistral template; chatml: the standard ChatML
of make_template_goldens.py; both on configs/tokenizer/mistral-v1), TRL's own code, no model:
- dpo: DPOTrainer._prepare_dataset (prompt_ids, chosen_ids, rejected_ids: conversational pairs through the chat
  template, string pairs as raw text with the tokenizer's BOS and EOS appended, the completion being everything after
  the prompt's ids) at max_length MAX_LENGTH, and the rows and completion mask DataCollatorForPreference makes of them
  with its default truncation_mode keep_start; a pair whose prompt alone reaches max_length is dropped ("kept": false);
- reward: RewardTrainer._prepare_dataset (chosen_ids, rejected_ids: each whole chat, or prompt + answer + EOS as
  text), and whether the pair survives its filter of sequences longer than max_length.

Run: interop/.venv/bin/python interop/make_preference_goldens.py
Deterministic: the pairs are written out below.
"""

from __future__ import annotations

import json
import sys
import tempfile
import types
import warnings
from pathlib import Path

import datasets
from datasets import Dataset

import hf_models as hf
import make_goldens as mg
from make_template_goldens import CHATML

OUT = hf.repo_root() / "data-pipeline" / "src" / "test" / "resources" / "golden" / "preference" / "trl-tokenized.json"
MAX_LENGTH = 48
# mixtune's built-in mistral template as the Jinja it writes into an adapter's tokenizer_config.json
# (MistralTemplate.JINJA), which is what TRL renders when it loads that tokenizer.
MISTRAL = ("{{ bos_token }}{% for message in messages %}"
           "{% if message['role'] == 'user' %}{{ '[INST] ' }}"
           "{% if loop.index0 == 1 and messages[0]['role'] == 'system' and messages[0]['content'] %}"
           "{{ messages[0]['content'] + '\n\n' }}{% endif %}{{ message['content'] + ' [/INST]' }}"
           "{% elif message['role'] == 'assistant' %}"
           "{% generation %}{{ ' ' + message['content'] + eos_token }}{% endgeneration %}"
           "{% endif %}{% endfor %}")

LONG_QUESTION = ("Please read this carefully: the quick brown fox jumps over the lazy dog near the river bank today. "
                 "Which animal jumps?")


def chat(question: str, answer: str, before: list | None = None) -> list:
    return [*(before or []), {"role": "user", "content": question}, {"role": "assistant", "content": answer}]


PAIRS = {  # name -> record as a data file holds it
    "conversational": {"chosen": chat("What is the capital of France?", "Paris is the capital of France."),
                       "rejected": chat("What is the capital of France?", "Lyon, I think.")},
    "short": {"chosen": chat("Hi", "Hello!"), "rejected": chat("Hi", "Go.")},
    "multi_turn": {"chosen": chat("And of Italy?", "Rome.", chat("Capital of France?", "Paris.")),
                   "rejected": chat("And of Italy?", "Milan, surely.", chat("Capital of France?", "Paris."))},
    # UltraFeedback-binarized's layout: the prompt also as a string, the answers as whole conversations.
    "ultrafeedback": {"prompt": "Name a prime number.", "chosen": chat("Name a prime number.", "Seven."),
                      "rejected": chat("Name a prime number.", "Nine is prime.")},
    # Long enough that keep_start cuts the completions at MAX_LENGTH, and the reward model drops the pair.
    "long_answers": {"chosen": chat(LONG_QUESTION, "The quick brown fox is the animal that jumps over the dog."),
                     "rejected": chat(LONG_QUESTION, "It is the lazy dog, sleeping by the river bank all day.")},
    # A prompt alone longer than MAX_LENGTH: both trainers drop it.
    "long_prompt": {"chosen": chat(LONG_QUESTION + " " + LONG_QUESTION, "The fox."),
                    "rejected": chat(LONG_QUESTION + " " + LONG_QUESTION, "The dog.")},
    # TRL's standard format: raw text.
    "standard": {"prompt": "Human: Say hi.\n\nAssistant:", "chosen": " Hi there!", "rejected": " Go away."},
    # Raw text whose prompt tokenizes differently alone than in front of the answer ("is" + "n't" is "isn't").
    "standard_merging": {"prompt": "The answer is", "chosen": "n't known.", "rejected": " forty-two."},
    "standard_long": {"prompt": "Tell me a story.", "chosen": " Once upon a time " + "there was a fox " * 8,
                      "rejected": " No."},
}
TEMPLATES = {"mistral": MISTRAL, "chatml": CHATML}


def tokenizer(template: str):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(hf.repo_root() / "configs/tokenizer/mistral-v1/tokenizer.json"),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.chat_template = template
    return tok


def trl_record(record: dict) -> dict:
    """UltraFeedback's string prompt beside message lists is one TRL cannot add to them (str + list): TRL reads such a
    pair without it (the alignment-handbook drops it too), its prompt being the messages before the last answer."""
    if isinstance(record["chosen"], list):
        return {k: v for k, v in record.items() if k != "prompt"}
    return record


def dpo_case(record: dict, tok, work: str) -> dict:
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    args = DPOConfig(output_dir=work, max_length=MAX_LENGTH, report_to=[], use_cpu=True)
    assert args.truncation_mode == "keep_start"
    trainer = types.SimpleNamespace(_tokenizer=tok)
    dataset = DPOTrainer._prepare_dataset(trainer, Dataset.from_list([trl_record(record)]), tok, args, "golden")
    if len(dataset) == 0:
        return {"kept": False}
    example = {k: dataset[0][k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
    collated = DataCollatorForPreference(pad_token_id=tok.eos_token_id, max_length=MAX_LENGTH,
                                         truncation_mode=args.truncation_mode)([example])
    rows = []
    for row in range(2):
        length = int(collated["attention_mask"][row].sum())
        rows.append({"input_ids": collated["input_ids"][row][:length].tolist(),
                     "completion_mask": collated["completion_mask"][row][:length].tolist()})
    return {"kept": True, **example, "chosen_row": rows[0], "rejected_row": rows[1]}


def reward_case(record: dict, tok, work: str) -> dict:
    from trl import RewardConfig, RewardTrainer

    args = RewardConfig(output_dir=work, max_length=MAX_LENGTH, report_to=[], use_cpu=True)
    record = trl_record(record)
    unfiltered = RewardTrainer._prepare_dataset(None, Dataset.from_list([record]), tok,
                                                RewardConfig(output_dir=work, max_length=None, report_to=[],
                                                             use_cpu=True), "golden")
    kept = len(RewardTrainer._prepare_dataset(None, Dataset.from_list([record]), tok, args, "golden")) == 1
    return {"kept": kept, "chosen_ids": unfiltered[0]["chosen_ids"], "rejected_ids": unfiltered[0]["rejected_ids"]}


def write_goldens(out: Path = OUT) -> None:
    datasets.disable_progress_bars()
    cases = []
    with tempfile.TemporaryDirectory() as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for template, jinja in TEMPLATES.items():
            tok = tokenizer(jinja)
            for name, record in PAIRS.items():
                if name.startswith("standard") and template != "mistral":
                    continue  # raw text: no template
                cases.append({"name": name, "template": template, "record": record,
                              "dpo": dpo_case(record, tok, work), "reward": reward_case(record, tok, work)})
    out.parent.mkdir(parents=True, exist_ok=True)
    mg.write_json(out, {"max_length": MAX_LENGTH, "pad_id": hf.EOS_ID, "cases": cases})


def main(argv: list[str]) -> None:
    if argv:
        raise SystemExit("make_preference_goldens.py takes no arguments")
    write_goldens()
    for case in json.loads(OUT.read_text())["cases"]:
        dpo, reward = case["dpo"], case["reward"]
        print(f"{case['template']:8} {case['name']:18} dpo kept {dpo['kept']!s:5} "
              + (f"prompt {len(dpo['prompt_ids'])} chosen {len(dpo['chosen_ids'])} rejected {len(dpo['rejected_ids'])}"
                 if dpo["kept"] else "") + f" | reward kept {reward['kept']}, {len(reward['chosen_ids'])} tokens")


if __name__ == "__main__":
    main(sys.argv[1:])
