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


def test_committed_sft_packing_golden_reproduces(tmp_path):
    fresh = tmp_path / "trl-packed.json"
    sft.write_packed_goldens(fresh)
    assert json.loads(fresh.read_text()) == json.loads(sft.PACKED_OUT.read_text())


def test_sft_packing_golden_covers_what_it_is_for():
    golden = json.loads(sft.PACKED_OUT.read_text())
    length = golden["max_length"]
    cases = {(c["template"], c["name"], c["strategy"]): c for c in golden["cases"]}
    split = cases["mistral", "texts", "bfd_split"]["rows"]
    # the long text is split: a piece without BOS that starts a sequence, its first token unlabeled
    assert any(row["seq_lengths"][0] == length and row["input_ids"][0] != 1 for row in split)
    assert all(row["labels"][0] == -100 for row in split)
    assert any(len(row["seq_lengths"]) > 1 for row in split), "a row holds several sequences"
    wrapped = cases["mistral", "texts", "wrapped"]["rows"]
    assert all(row["position_ids"] == list(range(len(row["input_ids"]))) for row in wrapped)
    assert all("seq_lengths" not in row for row in wrapped)
    inner_bos = [row for row in wrapped if 1 in row["input_ids"][1:]]
    assert inner_bos and all(row["labels"][row["input_ids"].index(1, 1)] == 1 for row in inner_bos), \
        "a text starting inside a wrapped row keeps its label"
    assert wrapped[0]["labels"][0] != -100, "the collator masks nothing at a wrapped row's start"
    # completion-only loss survives the split: pieces of the long prompt train nothing
    standard = cases["mistral", "standard", "bfd_split"]["rows"]
    assert any(all(label == -100 for label in row["labels"]) for row in standard)
    # datasets.map packs batches of 1,000 examples apart: a short wrapped row before the last batch's rows
    many = cases["mistral", "many", "wrapped"]["row_lengths"]
    assert many.count(length) == len(many) - 2 and many[-1] < length and many[-2] < length


def test_committed_bfd_golden_reproduces(tmp_path):
    fresh = tmp_path / "trl-bfd.json"
    sft.write_bfd_goldens(fresh)
    assert json.loads(fresh.read_text()) == json.loads(sft.BFD_OUT.read_text())


def first_fit(lengths: list[int], length: int) -> list[list[int]]:
    """mixtune's bfd before 2026-12-08: longest first (ties in order), each into the first row with room."""
    rows, free = [], []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r in range(len(rows)) if free[r] >= lengths[i]), None)
        if row is None:
            rows.append([])
            free.append(length)
            row = len(rows) - 1
        rows[row].append(i)
        free[row] -= lengths[i]
    return rows


def test_bfd_golden_covers_what_it_is_for():
    cases = {c["name"]: c for c in json.loads(sft.BFD_OUT.read_text())["cases"]}
    best = {name: [row["samples"] for row in c["rows"]] for name, c in cases.items()}
    assert best["smallest"] == [[3], [1, 2, 0]] and first_fit([1, 5, 4, 7], 10) == [[3, 0], [1, 2]]
    assert best["random"] != first_fit(cases["random"]["lengths"], 64), "first fit packs otherwise"
    overlong = cases["overlong"]
    assert any(n > overlong["max_length"] for n in overlong["lengths"])
    assert all(sum(row["seq_lengths"]) <= overlong["max_length"] for row in overlong["rows"]), "truncated"
    for c in cases.values():
        assert sorted(i for row in c["rows"] for i in row["samples"]) == [i for i, n in enumerate(c["lengths"]) if n]
    assert 0 in cases["empty"]["lengths"], "empty samples have no row"
    # datasets.map's batches: no row holds samples of both sides of sample 1,000
    assert all(max(row["samples"]) < 1000 or min(row["samples"]) >= 1000 for row in cases["many"]["rows"])
