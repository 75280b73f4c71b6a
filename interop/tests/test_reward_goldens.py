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
