"""Reward-model goldens for the Java trainer: trainer/src/test/resources/golden/reward/ (see interop/GOLDENS.md,
"Reward models").

Run: interop/.venv/bin/python interop/make_reward_goldens.py

Per case (the tiny Mistral and Mixtral of the SFT goldens, golden/sft/<case>/model):
- adapter/: a reward model's PEFT adapter: the SFT golden's random LoRA plus a score head [1, hidden] drawn normal(0,
  HEAD_STD) (seeded), saved as PEFT 0.21 saves modules_to_save (base_model.model.score.weight, task_type SEQ_CLS,
  modules_to_save ["score"]). The script checks that PEFT loads it into MistralForSequenceClassification /
  MixtralForSequenceClassification (num_labels 1) with exactly that head, and that PEFT's own save_pretrained writes the
  head under the same key.
- expected.json: per variant, one forward/backward of TRL 1.13's own RewardTrainer.compute_loss on three preference
  pairs (DPO's step pairs, TRL's collator, pad = EOS as TRL takes it without a pad token): loss, the rewards of every
  row, TRL's logged metrics (min_reward, mean_reward, max_reward, accuracy, margin); grads_<variant>.safetensors: the
  gradient of every LoRA weight and of the head, under the adapter file's keys. Variants: plain Bradley-Terry, with a
  margin column, with center_rewards_coefficient. The script asserts TRL's loss equals the formula on its rewards.
Deterministic: fixed seeds, float32, one torch thread.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import hf_models as hf
import make_dpo_goldens as dpo
import make_goldens as mg
import make_sft_goldens as sft

REWARD_GOLDEN = hf.repo_root() / "trainer" / "src" / "test" / "resources" / "golden" / "reward"
CASES = ("mistral", "mixtral")
PAD = hf.EOS_ID
HEAD_SEED = 7104  # both cases then hold a pair the model gets wrong and one it gets right
HEAD_STD = 0.3  # larger than transformers' 0.02 so that LoRA gradients through the head are far from rounding
HEAD_KEY = "base_model.model.score.weight"
MARGINS = [0.5, -0.25, 1.0]
CENTER = 0.01
VARIANTS = {  # golden name -> (margins in the batch, center_rewards_coefficient)
    "plain": (False, None),
    "margin": (True, None),
    "center": (False, CENTER),
}


def write_adapter(case: str, out: Path) -> torch.Tensor:
    """The SFT golden's adapter with a seeded score head, as a PEFT reward adapter (task_type SEQ_CLS)."""
    source = sft.SFT_GOLDEN / case / "adapter"
    config = json.loads((source / "adapter_config.json").read_text())
    hidden = json.loads((sft.SFT_GOLDEN / case / "model" / "config.json").read_text())["hidden_size"]
    head = torch.randn(1, hidden, generator=torch.Generator().manual_seed(HEAD_SEED)) * HEAD_STD
    config.update(task_type="SEQ_CLS", modules_to_save=["score"])
    out.mkdir(parents=True)
    mg.write_json(out / "adapter_config.json", config)
    tensors = load_file(source / "adapter_model.safetensors")
    tensors[HEAD_KEY] = head.contiguous()
    save_file(dict(sorted(tensors.items())), out / "adapter_model.safetensors", metadata={"format": "pt"})
    return head


class RewardTrainable(sft.Trainable):
    """sft.Trainable on a ForSequenceClassification base, the reward adapter loaded trainable (head included)."""

    def __init__(self, case: str, case_dir: Path, adapter_dir: Path):
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification

        self.arch = sft.CASES[case].spec.arch
        base, info = AutoModelForSequenceClassification.from_pretrained(
            case_dir / "model", num_labels=1, dtype=torch.float32, attn_implementation="eager",
            output_loading_info=True)
        assert info["missing_keys"] == {"score.weight"} or set(info["missing_keys"]) == {"score.weight"}, info
        base.config.pad_token_id = PAD
        self.config = base.config
        with warnings.catch_warnings():
            hf.quiet_fused_pattern_notice()
            self.model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
        self.model.train()
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        assert all(".lora_A." in n or ".lora_B." in n or n == "base_model.model.score.modules_to_save.default.weight"
                   for n in names), names
        if self.arch == "mixtral":
            self._mask_gate_up_off_diagonal()

    def head(self) -> torch.Tensor:
        return self.model.base_model.model.score.modules_to_save["default"].weight

    def tensors(self, of) -> dict[str, torch.Tensor]:
        out = self.adapter_tensors(of=of)
        out = {k: v for k, v in out.items() if "score" not in k}
        out[HEAD_KEY] = of(self.head()).detach().clone()
        return dict(sorted(out.items()))


def trl_trainer(trainable: RewardTrainable, center, work: Path):
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast
    from trl import RewardConfig, RewardTrainer

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(hf.repo_root() / "configs/tokenizer/mistral-v1/tokenizer.json"),
                                        bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    args = RewardConfig(output_dir=str(work), per_device_train_batch_size=len(dpo.PAIRS), report_to=[], use_cpu=True,
                        max_length=None, center_rewards_coefficient=center, dataloader_num_workers=0)
    dataset = Dataset.from_list([{"chosen": "a b", "rejected": "a c"}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = RewardTrainer(model=trainable.model, args=args, train_dataset=dataset, processing_class=tokenizer)
    assert int(trainer.processing_class.pad_token_id) == PAD and trainable.model.config.pad_token_id == PAD
    trainable.model.train()
    return trainer


def examples(pairs, margins: bool) -> list[dict]:
    out = []
    for i, pair in enumerate(pairs):
        example = {"chosen_ids": pair["prompt_ids"] + pair["chosen_ids"],
                   "rejected_ids": pair["prompt_ids"] + pair["rejected_ids"]}
        if margins:
            example["margin"] = MARGINS[i]
        out.append(example)
    return out


def trl_step(case: str, variant: str, adapter_dir: Path, pairs, work: Path):
    with_margins, center = VARIANTS[variant]
    trainable = RewardTrainable(case, sft.SFT_GOLDEN / case, adapter_dir)
    trainer = trl_trainer(trainable, center, work)
    batch = trainer.data_collator(examples(pairs, with_margins))
    trainable.model.zero_grad(set_to_none=True)
    loss, outputs = trainer.compute_loss(trainable.model, dict(batch), return_outputs=True)
    loss.backward()
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}
    grads = trainable.tensors(of=lambda w: w.grad)
    zero = [k for k, g in grads.items() if not torch.any(g)]
    assert not zero, f"{case}/{variant}: weights without gradient: {zero}"

    rewards = outputs.logits.detach().reshape(-1).double()
    n = len(pairs)
    d = rewards[:n] - rewards[n:] - (torch.tensor(MARGINS, dtype=torch.float64) if with_margins else 0)
    formula = float(-F.logsigmoid(d).mean())
    if center is not None:
        formula += center * float(((rewards[:n] + rewards[n:]) ** 2).mean())
    assert math.isclose(formula, float(loss.detach()), rel_tol=1e-5), (case, variant, formula, float(loss))
    # The row whose state each reward reads: the last non-pad id (transformers' rule, pad = EOS).
    positions = [max(t for t, token in enumerate(row) if token != PAD) for row in batch["input_ids"].tolist()]
    record = {"center_rewards_coefficient": center, "margins": MARGINS if with_margins else None,
              "loss": float(loss.detach()), "rewards": outputs.logits.detach().reshape(-1).tolist(),
              "positions": positions, "metrics": trl_metrics, "grads": f"grads_{variant}.safetensors"}
    return record, grads, trainable


def check_peft_saves_the_same(trainable: RewardTrainable, adapter_dir: Path) -> None:
    """PEFT's own save_pretrained writes the head under our key, with task_type SEQ_CLS and score in modules_to_save."""
    with tempfile.TemporaryDirectory() as saved:
        trainable.model.save_pretrained(saved)
        ours, theirs = load_file(adapter_dir / "adapter_model.safetensors"), load_file(Path(saved) / "adapter_model.safetensors")
        assert torch.equal(theirs[HEAD_KEY], ours[HEAD_KEY])
        config = json.loads((Path(saved) / "adapter_config.json").read_text())
        assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"], config


def write_goldens(out: Path = REWARD_GOLDEN) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _write_goldens(out)
    finally:
        torch.set_num_threads(threads)


def _write_goldens(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    pairs = dpo.make_pairs(hf.TINY["vocab_size"])
    with tempfile.TemporaryDirectory() as work:
        for case in CASES:
            case_out = out / case
            head = write_adapter(case, case_out / "adapter")
            steps = {}
            for variant in VARIANTS:
                record, grads, trainable = trl_step(case, variant, case_out / "adapter", pairs, Path(work))
                assert torch.equal(trainable.head().detach(), head), "PEFT did not load the committed head"
                save_file(grads, case_out / record["grads"], metadata={"format": "pt"})
                steps[variant] = record
                m = record["metrics"]
                print(f"reward {case} {variant}: loss {record['loss']:.6f}, accuracy {m['accuracy']:.3f}, "
                      f"margin {m['margin']:.5f}")
            check_peft_saves_the_same(trainable, case_out / "adapter")
            mg.write_json(case_out / "expected.json", steps)
    mg.write_json(out / "batch.json", {"models": {c: f"../sft/{c}/model" for c in CASES}, "pad_id": PAD,
                                       "pairs": pairs})


def main(argv: list[str]) -> None:
    torch.use_deterministic_algorithms(True)
    if argv:
        raise SystemExit("make_reward_goldens.py takes no arguments")
    write_goldens()


if __name__ == "__main__":
    main(sys.argv[1:])
