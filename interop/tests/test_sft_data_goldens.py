"""The committed SFT text and prompt-completion golden (data-pipeline/src/test/resources/golden/sft-data) is what
make_sft_data_goldens.py produces today from TRL's own SFTTrainer dataset preparation and padding-free collator."""

import json

import make_sft_data_goldens as sft


def test_committed_sft_data_golden_reproduces(tmp_path):
    fresh = tmp_path / "trl-prepared.json"
    sft.write_goldens(fresh)
    assert json.loads(fresh.read_text()) == json.loads(sft.OUT.read_text())


def test_sft_data_golden_covers_what_it_is_for():
    golden = json.loads(sft.OUT.read_text())
    cases = {(c["template"], c["name"]): c for c in golden["cases"]}
    max_length = golden["max_length"]
    text = cases["mistral", "text"]["unpacked"]
    assert text["input_ids"][0] == 1 and text["input_ids"][-1] == 2 and text["labels"] == text["input_ids"]
    assert cases["mistral", "text_with_eos"]["unpacked"]["input_ids"].count(2) == 1, "no second EOS"
    long_text = cases["mistral", "text_long"]["unpacked"]["input_ids"]
    assert len(long_text) == max_length and long_text[-1] != 2, "keep_start cuts the EOS off"
    merging = cases["mistral", "standard_merging"]["unpacked"]
    assert merging["labels"][3] == -100 and merging["labels"][4] != -100
    assert not cases["mistral", "standard_long_prompt"]["unpacked"]["kept"]
    assert cases["mistral", "standard_long_prompt"]["packed"]["kept"], "bfd keeps what it cannot train"
    for template in ("mistral", "chatml"):
        system = cases[template, "conversational_system"]
        assert system["unpacked"]["kept"] and -100 in system["unpacked"]["labels"]
        packed = system["packed"]
        assert packed["labels"][0] == -100 and packed["position_ids"] == list(range(len(packed["input_ids"])))
    assert cases["chatml", "conversational"]["unpacked"]["input_ids"][-1] == 13, "ChatML's closing newline trains"
    assert cases["chatml", "conversational"]["unpacked"]["labels"][-1] == 13
