"""The committed preference tokenization golden (data-pipeline/src/test/resources/golden/preference) is what
make_preference_goldens.py produces today from TRL's own DPOTrainer and RewardTrainer dataset preparation."""

import json

import make_preference_goldens as pref


def test_committed_preference_golden_reproduces(tmp_path):
    fresh = tmp_path / "trl-tokenized.json"
    pref.write_goldens(fresh)
    assert json.loads(fresh.read_text()) == json.loads(pref.OUT.read_text())


def test_preference_golden_covers_what_it_is_for():
    golden = json.loads(pref.OUT.read_text())
    cases = {(c["template"], c["name"]): c for c in golden["cases"]}
    newline = 13  # ChatML's "\n" after <|im_end|>: the last completion token, trained by DPO, read by the reward model
    assert cases["chatml", "short"]["dpo"]["chosen_ids"][-1] == newline
    assert cases["chatml", "short"]["reward"]["chosen_ids"][-1] == newline
    standard = cases["mistral", "standard"]
    assert standard["dpo"]["prompt_ids"][0] == 1 and standard["dpo"]["chosen_ids"][-1] == 2  # BOS, EOS, no [INST]
    merging = cases["mistral", "standard_merging"]
    full = merging["reward"]["chosen_ids"]
    assert full[:len(merging["dpo"]["prompt_ids"])] != merging["dpo"]["prompt_ids"], "the prompt must merge"
    cut = cases["mistral", "long_answers"]["dpo"]["chosen_row"]
    assert len(cut["input_ids"]) == golden["max_length"] and not cases["mistral", "long_answers"]["reward"]["kept"]
    assert not cases["mistral", "long_prompt"]["dpo"]["kept"]
