"""The committed reward-model goldens (trainer/src/test/resources/golden/reward) are what make_reward_goldens.py
produces today.

Generating them also checks what they rest on (make_reward_goldens.py asserts each): PEFT loads the committed reward
adapter into a ForSequenceClassification model with its head, PEFT's own save_pretrained writes the head under the same
key, TRL's RewardTrainer loss equals the Bradley-Terry formula on the rewards, every weight has a gradient.
"""

import json

from safetensors.numpy import load_file

import make_reward_goldens as reward
from test_sft_goldens import assert_same_goldens


def test_committed_reward_golden_reproduces(tmp_path):
    reward.write_goldens(tmp_path / "reward")
    computed = {f"{case}/{name}" for case in reward.CASES
                for name in ("expected.json", *(f"grads_{v}.safetensors" for v in reward.VARIANTS))}
    assert_same_goldens(tmp_path / "reward", reward.REWARD_GOLDEN, computed)


def test_reward_golden_conventions():
    batch = json.loads((reward.REWARD_GOLDEN / "batch.json").read_text())
    for case in reward.CASES:
        expected = json.loads((reward.REWARD_GOLDEN / case / "expected.json").read_text())
        adapter = load_file(reward.REWARD_GOLDEN / case / "adapter" / "adapter_model.safetensors")
        for name, record in expected.items():
            assert set(record["metrics"]) == {"min_reward", "mean_reward", "max_reward", "accuracy", "margin"}
            assert 0 < record["metrics"]["accuracy"] < 1, "the batch should hold a pair the model gets wrong"
            grads = load_file(reward.REWARD_GOLDEN / case / record["grads"])
            assert grads.keys() == adapter.keys(), (case, name)
            # Each reward is read before the answer's closing EOS: the last id that is not the pad id (EOS).
            n = len(batch["pairs"])
            for row, position in enumerate(record["positions"]):
                pair = batch["pairs"][row % n]
                answer = pair["chosen_ids"] if row < n else pair["rejected_ids"]
                assert position == len(pair["prompt_ids"]) + len(answer) - 2


def test_a_mixtune_reward_model_scores_the_same_in_transformers_and_peft(tmp_path):
    """bin/mixtune trains a reward model for 2 steps and scores 12 pairs; transformers' MistralForSequenceClassification
    with PeftModel.from_pretrained on the adapter mixtune wrote gives the same rewards (1e-4) on the same ids, and so
    does AutoModelForSequenceClassification alone on the checkpoint `mixtune merge-adapter --dtype fp32` folds it into
    (the preset's base is bfloat16: kept in bf16, W + B A rounds, by up to 7e-4 in the rewards here)."""
    import subprocess

    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    root = reward.hf.repo_root()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join((root / "data/samples/preferences.jsonl").read_text().splitlines(True)[:12]))
    out, scores = tmp_path / "out", tmp_path / "scores.jsonl"
    mixtune = str(root / "bin" / "mixtune")
    subprocess.run([mixtune, "train", "--recipe", str(root / "recipes/quickstart-reward.yaml"),
                    "--set", f"data.files=[{pairs}]", "--set", "data.validation_ratio=0",
                    "--set", "data.max_seq_len=384",  # the 12 pairs whole: a longer one is dropped, as TRL drops it
                    "--set", "train.max_steps=2", "--set", f"output_dir={out}"], check=True, capture_output=True,
                   timeout=600)
    subprocess.run([mixtune, "reward", "--model", str(out / "base-model"), "--adapter", str(out / "adapter"), "--data",
                    str(pairs), "--max-seq-len", "384", "--with-ids", "--output", str(scores)], check=True,
                   capture_output=True, timeout=600)
    subprocess.run([mixtune, "merge-adapter", "--model", str(out / "base-model"), "--adapter", str(out / "adapter"),
                    "--out", str(tmp_path / "merged"), "--dtype", "fp32"], check=True, capture_output=True, timeout=600)
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and config["modules_to_save"] == ["score"]

    base = AutoModelForSequenceClassification.from_pretrained(out / "base-model", num_labels=1, dtype=torch.float32,
                                                              attn_implementation="eager")
    base.config.pad_token_id = reward.PAD
    model = PeftModel.from_pretrained(base, out / "adapter").eval()
    merged, info = AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "merged", dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), info
    worst = {"peft": 0.0, "merged": 0.0}
    with torch.no_grad():
        for line in scores.read_text().splitlines():
            record = json.loads(line)
            for side in ("chosen", "rejected"):
                ids = torch.tensor([record[f"{side}_ids"]])
                for name, m in (("peft", model), ("merged", merged.eval())):
                    reward_hf = float(m(input_ids=ids, use_cache=False).logits.reshape(()))
                    worst[name] = max(worst[name], abs(reward_hf - record[f"reward_{side}"]))
    print(f"max |reward difference| mixtune vs transformers: {worst}")
    assert max(worst.values()) <= 1e-4, worst
