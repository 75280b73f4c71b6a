"""SFT-step goldens for the Java trainer: trainer/src/test/resources/golden/sft/<case>/ (see interop/GOLDENS.md).

Run: interop/.venv/bin/python interop/make_sft_goldens.py [case ...]    cases: mixtral, mistral (default: both)

Per case: a tiny checkpoint, a random LoRA adapter in PEFT's format, two micro-batches of packed rows, and what
transformers + PEFT compute on them: one forward/backward (loss, its CE and aux parts, every LoRA gradient) and three
AdamW steps with gradient accumulation, clipping and a warmup schedule (losses, grad norms, lrs, final adapter); and
what TRL's SFTTrainer logs on the two micro-batches (entropy, mean_token_accuracy, aux_loss).
Deterministic: fixed seeds, float32, one torch thread.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch.func import functional_call
from transformers import get_linear_schedule_with_warmup

import hf_models as hf
import make_goldens as mg

SFT_GOLDEN = hf.repo_root() / "trainer" / "src" / "test" / "resources" / "golden" / "sft"

IGNORE = -100
BOS, EOS = 1, hf.EOS_ID
ROW_LENGTH = 24

R, ALPHA = 4, 8
SCALE = ALPHA / R
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MISTRAL_TARGETS = ATTENTION + ["gate_proj", "up_proj", "down_proj"]
MIXTRAL_TARGETS = ATTENTION + ["w1", "w2", "w3"]

STEPS = 3
WARMUP_STEPS, SCHEDULE_STEPS = 1, 4  # the linear schedule runs over 4 steps; we take 3 of them
LR, BETAS, EPS, WEIGHT_DECAY = 1e-2, (0.9, 0.999), 1e-8, 0.01
MAX_GRAD_NORM = 0.5


@dataclass(frozen=True)
class SftCase:
    spec: hf.CheckpointSpec
    adapter_seed: int
    token_seed: int
    targets: list[str]


# intermediate_size 96 (not TINY's 128) keeps both checkpoints together at 1.4 MB; 96 != 64 keeps every expert
# matrix non-square, so a transposed A or B cannot pass a shape check.
CASES = {
    "mixtral": SftCase(hf.CheckpointSpec(arch="mixtral", seed=6102, sliding_window=None, rope_theta=1e6,
                                         moe_layout="hub", router_aux_loss_coef=0.02, intermediate_size=96),
                       adapter_seed=611, token_seed=612, targets=MIXTRAL_TARGETS),
    "mistral": SftCase(hf.CheckpointSpec(arch="mistral", seed=6200, sliding_window=8, intermediate_size=96),
                       adapter_seed=621, token_seed=622, targets=MISTRAL_TARGETS),
}

# Micro-batch -> row -> sample -> turns (prompt tokens, answer tokens). A sample is BOS, then per turn its prompt
# (no labels) and its answer (labelled, the last answer token is EOS). None as the first turn's prompt marks a sample
# with neither BOS nor prompt: all answer, whose first label the packer still drops. Every row is exactly 24 tokens;
# the samples longer than 8 make Mistral's window of 8 bite inside a sample.
LAYOUT = [
    [  # micro-batch 0
        [[(4, 4), (2, 3)], [(3, 6)]],  # 14 + 10
        [[(2, 3)], [(None, 9)], [(3, 5)]],  # 6 + 9 + 9
    ],
    [  # micro-batch 1
        [[(5, 6), (4, 8)]],  # one sample fills the row: no restart
        [[(2, 2)], [(4, 7)], [(1, 2), (1, 2)]],  # 5 + 12 + 7
    ],
]


def make_batch(token_seed: int, vocab: int) -> list[dict[str, list[list[int]]]]:
    """Packed micro-batches as mixtune's SamplePacker lays them out: positions restart at 0 and the first token of each
    sample has label -100. Labels are not shifted (the label at t is the token at t); HF shifts them in the loss."""
    gen = torch.Generator().manual_seed(token_seed)
    draw = lambda n: torch.randint(3, vocab, (n,), generator=gen).tolist()  # noqa: E731  (no BOS/EOS/pad ids)
    batches = []
    for micro_batch in LAYOUT:
        fields = {"input_ids": [], "labels": [], "position_ids": [], "sample_ids": []}
        for row in micro_batch:
            ids, labels, positions, sample_ids = [], [], [], []
            for s, turns in enumerate(row):
                sample_ids_before = len(ids)
                sample, sample_labels = [], []
                if turns[0][0] is not None:
                    sample, sample_labels = [BOS], [IGNORE]
                for prompt, answer in turns:
                    prompt_ids = draw(prompt or 0)
                    answer_ids = draw(answer - 1) + [EOS]
                    sample += prompt_ids + answer_ids
                    sample_labels += [IGNORE] * len(prompt_ids) + answer_ids
                sample_labels[0] = IGNORE
                ids += sample
                labels += sample_labels
                positions += list(range(len(sample)))
                sample_ids += [s] * (len(ids) - sample_ids_before)
            assert len(ids) == ROW_LENGTH, f"row of {len(ids)} tokens"
            for key, value in zip(fields, (ids, labels, positions, sample_ids)):
                fields[key].append(value)
        fields["num_targets"] = sum(label != IGNORE for row in fields["labels"] for label in row)
        batches.append(fields)
    return batches


def tensors_of(mb: dict) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(mb[k]) for k in ("input_ids", "labels", "position_ids")}


# ---- model and adapter ---------------------------------------------------------------------------------------------


def build_model_dir(case: SftCase, out: Path) -> None:
    model = hf.build_model(case.spec)
    if case.spec.arch == "mixtral":
        # A plain HF training loop on this checkpoint then adds the aux loss too, as we do.
        model.config.output_router_logits = True
    hf.save_checkpoint(model, case.spec, out)


def build_adapter(case: SftCase, model_dir: Path, out: Path) -> None:
    """PEFT's own random init (init_lora_weights=False: A and B both drawn, so A gets gradients from step 0)."""
    torch.manual_seed(case.adapter_seed)
    base = hf.load_reference(model_dir)
    base.name_or_path = "../model"
    if case.spec.arch == "mistral":
        config = LoraConfig(r=R, lora_alpha=ALPHA, target_modules=case.targets, init_lora_weights=False,
                            task_type="CAUSAL_LM")
        mg.save_peft_adapter(get_peft_model(base, config), out)
        return
    # Mixtral: PEFT on transformers 5 draws expert LoRAs fused and would save them fused; the Java side reads and writes
    # the Hub per-expert layout, so cut PEFT's draw per expert as make_goldens.py does for peft-experts (router dropped).
    config = LoraConfig(r=R, lora_alpha=ALPHA, target_modules="all-linear", init_lora_weights=False,
                        task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        hf.quiet_fused_pattern_notice()
        drawn = get_peft_model(base, config)
    out.mkdir(parents=True)
    spec_config = base.config
    save_file(mg.split_fused_experts(drawn, spec_config.num_local_experts, spec_config.intermediate_size),
              out / "adapter_model.safetensors", metadata={"format": "pt"})
    LoraConfig(r=R, lora_alpha=ALPHA, target_modules=case.targets, init_lora_weights=False, task_type="CAUSAL_LM",
               base_model_name_or_path="../model", inference_mode=True).save_pretrained(out)
    mg.sort_target_modules(out)


class Trainable:
    """The checkpoint with the adapter loaded trainable by PEFT (train mode; every dropout is 0).

    On Mixtral PEFT turns the per-expert w1/w3 LoRAs into one rank-8 LoRA on the fused gate_up_proj whose B is
    block-diagonal (w1's ranks feed the gate rows, w3's the up rows). Its off-diagonal blocks are not part of the
    per-expert adapter, so their gradient is zeroed by a hook: they stay exactly 0 through AdamW (zero gradient, zero
    moments, decay of 0), and the step is the one on separate w1/w3 LoRAs.
    """

    def __init__(self, case: SftCase, case_dir: Path, dtype: torch.dtype = torch.float32):
        self.arch = case.spec.arch
        base = hf.load_reference(case_dir / "model").to(dtype)
        self.config = base.config
        with warnings.catch_warnings():
            hf.quiet_fused_pattern_notice()
            self.model = PeftModel.from_pretrained(base, case_dir / "adapter", is_trainable=True)
        self.model.train()
        self.params = [p for _, p in self.model.named_parameters() if p.requires_grad]
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        assert all(".lora_A." in n or ".lora_B." in n for n in names), names
        if self.arch == "mixtral":
            assert not any(".mlp.gate." in n for n in names), "the router must not be adapted"
            self._mask_gate_up_off_diagonal()

    def _mask_gate_up_off_diagonal(self):
        inter, experts = self.config.intermediate_size, self.config.num_local_experts
        self.off_diagonal = []
        for layer in self.model.base_model.model.model.layers:
            b = layer.mlp.experts.base_layer.lora_B["default"].weight  # [2I, 2r * E], column k * E + e
            rank = torch.arange(b.shape[1]) // experts
            keep = torch.ones_like(b, dtype=torch.bool)
            keep[:inter, rank >= R] = False
            keep[inter:, rank < R] = False
            assert torch.equal(b[~keep], torch.zeros_like(b[~keep])), "PEFT did not load B block-diagonal"
            b.register_hook(lambda g, keep=keep: g * keep)
            self.off_diagonal.append((b, ~keep))

    def check_block_diagonal(self):
        for b, off in getattr(self, "off_diagonal", []):
            assert torch.count_nonzero(b.detach()[off]) == 0, "an off-diagonal gate_up block moved"

    def adapter_tensors(self, of=lambda weight: weight) -> dict[str, torch.Tensor]:
        """`of` of every LoRA weight under its key in adapter_model.safetensors."""
        if self.arch == "mixtral":
            return mg.split_fused_experts(self.model, self.config.num_local_experts, self.config.intermediate_size,
                                          of=of)
        out = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                out[name.replace(".default.weight", ".weight")] = of(p).detach().clone()
        return dict(sorted(out.items()))

    def forward(self, mb: dict, labels: bool = False):
        t = tensors_of(mb)
        # No attention_mask and use_cache=False: transformers 5 then reads the packing from the position restarts and
        # builds a block-diagonal causal mask (checked in check_packed_attention).
        kwargs = dict(input_ids=t["input_ids"], position_ids=t["position_ids"], use_cache=False)
        if labels:
            kwargs["labels"] = t["labels"]
        if self.arch == "mixtral":
            kwargs["output_router_logits"] = True
        out = self.model(**kwargs)
        if self.arch == "mixtral":
            gaps.append(hf.min_router_gap({str(i): r.detach() for i, r in enumerate(out.router_logits)},
                                          self.config.num_experts_per_tok))
        return out

    def ce(self, out, mb: dict, num_items_in_batch=None) -> torch.Tensor:
        """HF's causal-LM loss: labels shifted by one, -100 ignored, mean over targets or sum / num_items_in_batch."""
        return self.model.loss_function(out.logits, tensors_of(mb)["labels"], self.config.vocab_size,
                                        num_items_in_batch=num_items_in_batch)


gaps: list[float] = []  # smallest k-th/(k+1)-th router logit gap of every Mixtral forward


# ---- the checks that make the goldens meaningful -------------------------------------------------------------------


@torch.no_grad()
def check_packed_attention(trainable: Trainable, batches: list[dict]) -> float:
    """Each packed row equals its samples run one by one, and with use_cache left at the config's True it does not."""
    worst = 0.0
    for mb in batches:
        t = tensors_of(mb)
        logits = trainable.forward(mb).logits
        for row in range(len(mb["input_ids"])):
            sample_ids = mb["sample_ids"][row]
            for s in sorted(set(sample_ids)):
                idx = [i for i, v in enumerate(sample_ids) if v == s]
                alone = trainable.model(input_ids=t["input_ids"][row, idx][None], use_cache=False).logits[0]
                worst = max(worst, float((alone - logits[row, idx]).abs().max()))
        leaky = trainable.model(input_ids=t["input_ids"], position_ids=t["position_ids"]).logits
        assert (leaky - logits).abs().max() > 1e-2, "use_cache=True should hide the packing from the mask builder"
    assert worst < 1e-4, f"packed rows differ from samples run alone by {worst}"
    return worst


def merged_weight_grads(trainable: Trainable, adapter: dict[str, torch.Tensor], mb: dict):
    """The same loss and LoRA gradients computed without PEFT: each adapted weight replaced by W + scale * B @ A
    (per expert for Mixtral), through torch.func.functional_call on the plain transformers model."""
    base = trainable.model.base_model.model
    leaves = {k: v.clone().requires_grad_(True) for k, v in adapter.items()}
    lora = lambda module: SCALE * leaves[f"base_model.model.{module}.lora_B.weight"] @ \
        leaves[f"base_model.model.{module}.lora_A.weight"]  # noqa: E731
    overrides = {}
    for i in range(trainable.config.num_hidden_layers):
        for proj in ATTENTION:
            name = f"model.layers.{i}.self_attn.{proj}"
            overrides[f"{name}.base_layer.weight"] = base.get_submodule(name).base_layer.weight + lora(name)
        if trainable.arch == "mistral":
            for proj in ["gate_proj", "up_proj", "down_proj"]:
                name = f"model.layers.{i}.mlp.{proj}"
                overrides[f"{name}.base_layer.weight"] = base.get_submodule(name).base_layer.weight + lora(name)
            continue
        experts = base.get_submodule(f"model.layers.{i}.mlp.experts")
        gate_up = experts.base_layer.base_layer.gate_up_proj  # PEFT wraps the experts twice (down_proj, gate_up_proj)
        down = experts.base_layer.base_layer.down_proj
        inter = trainable.config.intermediate_size
        hub = f"model.layers.{i}.block_sparse_moe.experts"
        overrides[f"model.layers.{i}.mlp.experts.base_layer.base_layer.gate_up_proj"] = torch.stack([
            torch.cat([gate_up[j, :inter] + lora(f"{hub}.{j}.w1"), gate_up[j, inter:] + lora(f"{hub}.{j}.w3")])
            for j in range(gate_up.shape[0])])
        overrides[f"model.layers.{i}.mlp.experts.base_layer.base_layer.down_proj"] = torch.stack([
            down[j] + lora(f"{hub}.{j}.w2") for j in range(down.shape[0])])
    t = tensors_of(mb)
    kwargs = dict(input_ids=t["input_ids"], position_ids=t["position_ids"], labels=t["labels"], use_cache=False)
    if trainable.arch == "mixtral":
        kwargs["output_router_logits"] = True
    with trainable.model.disable_adapter():  # the LoRA branches off: only the merged weights act
        out = functional_call(base, overrides, args=(), kwargs=kwargs, strict=False)
    grads = torch.autograd.grad(out.loss, list(leaves.values()))
    return out.loss.detach(), dict(zip(leaves, grads))


# ---- what the goldens record ---------------------------------------------------------------------------------------


def forward_backward(trainable: Trainable, mb: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """(a): HF's own loss on one micro-batch (mean CE over its targets + coef * aux) and the LoRA gradients of it."""
    trainable.model.zero_grad(set_to_none=True)
    out = trainable.forward(mb, labels=True)
    out.loss.backward()
    record = {"micro_batch": 0, "num_targets": mb["num_targets"], "loss": float(out.loss.detach()),
              "ce": float(trainable.ce(out, mb).detach())}
    if trainable.arch == "mixtral":
        record["aux"] = float(out.aux_loss.detach())
        record["aux_coef"] = trainable.config.router_aux_loss_coef
        assert math.isclose(record["loss"], record["ce"] + record["aux_coef"] * record["aux"], rel_tol=1e-6)
    else:
        assert record["loss"] == record["ce"]
    grads = trainable.adapter_tensors(of=lambda w: w.grad)
    trainable.model.zero_grad(set_to_none=True)
    return record, grads


def objective(trainable: Trainable, batches: list[dict], aux_coef: float, backward: bool) -> dict:
    """Step objective L = sum_mb CE_sum(mb) / N_total + aux_coef * mean_mb aux(mb), accumulated micro-batch by
    micro-batch. HF's Trainer passes num_items_in_batch = N_total, so its CE part is this one; its aux part is the SUM
    over micro-batches (each forward adds coef * aux to its loss and the G losses are summed), ours the mean. At G = 1
    they agree."""
    n_total = sum(mb["num_targets"] for mb in batches)
    parts = []
    for mb in batches:
        out = trainable.forward(mb)
        ce = trainable.ce(out, mb, num_items_in_batch=n_total)
        with torch.no_grad():
            ce_sum = trainable.ce(out, mb, num_items_in_batch=1)
        part = {"num_targets": mb["num_targets"], "ce_sum": float(ce_sum)}
        loss = ce
        if trainable.arch == "mixtral":
            part["aux"] = float(out.aux_loss.detach())
            loss = ce + aux_coef * out.aux_loss / len(batches)
        if backward:
            loss.backward()
        parts.append(part)
    record = {"ce": sum(p["ce_sum"] for p in parts) / n_total}
    if trainable.arch == "mixtral":
        record["aux"] = sum(p["aux"] for p in parts) / len(parts)
        record["loss"] = record["ce"] + aux_coef * record["aux"]
    else:
        record["loss"] = record["ce"]
    record["micro_batches"] = parts
    return record


def train(case: SftCase, case_dir: Path, batches: list[dict], aux_coef: float) -> tuple[dict, dict]:
    """(b): STEPS optimizer steps, each over every micro-batch; returns the record and the adapter afterwards."""
    trainable = Trainable(case, case_dir)
    optimizer = torch.optim.AdamW(trainable.params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY,
                                  foreach=False)
    schedule = get_linear_schedule_with_warmup(optimizer, WARMUP_STEPS, SCHEDULE_STEPS)
    steps = []
    for step in range(1, STEPS + 1):
        lr = optimizer.param_groups[0]["lr"]  # what optimizer.step() below applies
        optimizer.zero_grad(set_to_none=True)
        record = objective(trainable, batches, aux_coef, backward=True)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable.params, MAX_GRAD_NORM))
        # AdamW's first update is about lr * sign(g): an element whose clipped gradient is near 0 could flip sign
        # between implementations. This says how far from that the golden is.
        min_abs_grad = min(float(g.abs().min()) for g in trainable.adapter_tensors(of=lambda w: w.grad).values())
        optimizer.step()
        schedule.step()
        trainable.check_block_diagonal()
        steps.append({"step": step, "lr": lr, **{k: record[k] for k in ("loss", "ce", "aux") if k in record},
                      "grad_norm": grad_norm, "clipped": grad_norm > MAX_GRAD_NORM, "min_abs_grad": min_abs_grad,
                      "micro_batches": record["micro_batches"]})
    with torch.no_grad():
        after = objective(trainable, batches, aux_coef, backward=False)
    result = {"aux_coef": aux_coef, "num_targets_total": sum(mb["num_targets"] for mb in batches), "steps": steps,
              "loss_after": {k: after[k] for k in ("loss", "ce", "aux") if k in after}}
    return result, trainable.adapter_tensors()


def half_precision_step0(case: SftCase, out: Path, mb: dict, step0_fp32: dict,
                         grads_fp32: dict[str, torch.Tensor]) -> dict:
    """(c): step0 with the base model in float16 (what compute_dtype fp16 runs on a GPU): PEFT keeps the adapter in
    float32 (autocast_adapter_dtype), computes the LoRA branch in float32 and adds it to the base output in float32
    before rounding back; the loss upcasts the logits to float32. Also records how far float16 lands from float32, the
    scale a tolerance must be measured against."""
    trainable = Trainable(case, out, dtype=torch.float16)
    assert all(p.dtype == torch.float32 for p in trainable.params), "PEFT should keep the adapter in float32"
    record, grads = forward_backward(trainable, mb)
    save_file(grads, out / "grads_step0_fp16.safetensors", metadata={"format": "pt"})
    record["grads"] = "grads_step0_fp16.safetensors"
    record["loss_rel_diff_to_fp32"] = abs(record["loss"] - step0_fp32["loss"]) / abs(step0_fp32["loss"])
    record["grads_rel_diff_to_fp32"] = max(float((grads[k] - grads_fp32[k]).abs().max() / grads_fp32[k].abs().max())
                                           for k in grads)
    print(f"sft {name_of(case)} fp16: loss {record['loss']:.6f} (fp32 {step0_fp32['loss']:.6f}, rel diff "
          f"{record['loss_rel_diff_to_fp32']:.2g}); gradients differ from fp32 by {record['grads_rel_diff_to_fp32']:.2g}"
          " of their max")
    return record


def trl_sft_metrics(case: SftCase, case_dir: Path, batches: list[dict]) -> dict:
    """(d): what TRL's SFTTrainer (its default loss_type chunked_nll) logs besides the loss, at the adapter's initial
    weights: compute_loss on each micro-batch in training mode (num_items_in_batch = both micro-batches' targets) and
    in evaluation mode, each micro-batch flattened into one padding-free row as TRL's padding-free collator hands it
    (the same attention: samples restart their position ids). Per micro-batch TRL appends entropy (the mean over its
    target positions of -sum p log p), mean_token_accuracy (the share of targets that are their logits' argmax) and,
    with the router loss on, aux_loss; its log averages each list (every micro-batch counting the same) and sets
    num_tokens to the training tokens read so far (eval_num_tokens too)."""
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast
    from trl import SFTConfig, SFTTrainer

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(hf.repo_root() / "configs/tokenizer/mistral-v1/tokenizer.json"),
                                        bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    trainable = Trainable(case, case_dir)
    aux_coef = trainable.config.router_aux_loss_coef if trainable.arch == "mixtral" else 0.0
    with tempfile.TemporaryDirectory() as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = SFTConfig(output_dir=work, report_to=[], use_cpu=True, max_length=None, padding_free=True,
                         router_aux_loss_coef=aux_coef, dataloader_num_workers=0, disable_tqdm=True)
        trainer = SFTTrainer(model=trainable.model, args=args, train_dataset=Dataset.from_list([{"text": "a b"}]),
                             processing_class=tokenizer)
    assert args.loss_type == "chunked_nll", args.loss_type
    assert trainer.aux_loss_enabled == (trainable.arch == "mixtral")
    n_total = sum(mb["num_targets"] for mb in batches)
    record = {"loss_type": args.loss_type, "aux_coef": aux_coef, "num_items_in_batch": n_total}
    for mode in ("train", "eval"):
        trainable.model.train(mode == "train")
        losses = []
        for mb in batches:
            flat = {k: v.reshape(1, -1) for k, v in tensors_of(mb).items() if k in ("input_ids", "labels",
                                                                                    "position_ids")}
            with torch.no_grad():
                loss = trainer.compute_loss(trainable.model, flat,
                                            num_items_in_batch=n_total if mode == "train" else None)
            losses.append(float(loss))
        appended = trainer._metrics[mode]
        logged = {key: sum(values) / len(values) for key, values in appended.items()}  # SFTTrainer.log
        prefix = "eval_" if mode == "eval" else ""
        record[mode] = {"micro_batches": [{key: appended[key][i] for key in appended if key != "num_tokens"}
                                          for i in range(len(batches))],
                        "losses": losses,
                        "logged": {prefix + key: value for key, value in sorted(logged.items())}}
    print(f"sft {name_of(case)} TRL SFTTrainer metrics: {record['train']['logged']} {record['eval']['logged']}")
    return record


def name_of(case: SftCase) -> str:
    return next(n for n, c in CASES.items() if c is case)


def write_case(name: str, out_root: Path = SFT_GOLDEN) -> None:
    case = CASES[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gaps.clear()
    try:
        _write_case(name, case, out_root / name)
    finally:
        torch.set_num_threads(threads)


def _write_case(name: str, case: SftCase, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    build_model_dir(case, out / "model")
    build_adapter(case, out / "model", out / "adapter")
    batches = make_batch(case.token_seed, hf.TINY["vocab_size"])
    mg.write_json(out / "batch.json", {
        "row_length": ROW_LENGTH,
        "num_targets_total": sum(mb["num_targets"] for mb in batches),
        "micro_batches": batches,
    })

    trainable = Trainable(case, out)
    packed_diff = check_packed_attention(trainable, batches)
    step0, grads = forward_backward(trainable, batches[0])
    adapter = trainable.adapter_tensors()
    assert grads.keys() == adapter.keys() == load_file(out / "adapter" / "adapter_model.safetensors").keys()
    merged_loss, merged = merged_weight_grads(trainable, adapter, batches[0])
    assert math.isclose(float(merged_loss), step0["loss"], rel_tol=1e-5), (float(merged_loss), step0["loss"])
    worst = max(float((merged[k] - grads[k]).abs().max() / grads[k].abs().max()) for k in grads)
    assert worst < 1e-4, f"PEFT's LoRA gradients and the merged-weight ones differ by {worst} (relative)"
    zero = [k for k, g in grads.items() if not torch.any(g)]
    assert not zero, f"LoRA weights without gradient: {zero}"
    save_file(grads, out / "grads_step0.safetensors", metadata={"format": "pt"})

    expected = {
        "case": name,
        "model": "model",
        "adapter": "adapter",
        "batch": "batch.json",
        "lora": {"r": R, "alpha": ALPHA, "scale": SCALE, "use_rslora": False, "dropout": 0.0,
                 "target_modules": case.targets},
        "step0": {**step0, "grads": "grads_step0.safetensors"},
        "optimizer": {"name": "torch.optim.AdamW", "lr": LR, "betas": list(BETAS), "eps": EPS,
                      "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_GRAD_NORM,
                      "schedule": "get_linear_schedule_with_warmup", "num_warmup_steps": WARMUP_STEPS,
                      "num_training_steps": SCHEDULE_STEPS, "steps": STEPS},
    }
    runs = {"train": (case.spec.router_aux_loss_coef if case.spec.arch == "mixtral" else 0.0, "weights_after")}
    if case.spec.arch == "mixtral":
        runs["train_no_aux"] = (0.0, "weights_after_no_aux")
    for key, (aux_coef, weights_name) in runs.items():
        record, weights = train(case, out, batches, aux_coef)
        assert record["steps"][0]["clipped"], f"{name}: step 1 is not clipped at max_norm {MAX_GRAD_NORM}"
        assert weights.keys() == adapter.keys()
        save_file(weights, out / f"{weights_name}.safetensors", metadata={"format": "pt"})
        moved = max(float((weights[k] - adapter[k]).abs().max()) for k in adapter)
        expected[key] = {**record, "weights_after": f"{weights_name}.safetensors"}
        losses = ", ".join(f"{s['loss']:.4f}" for s in record["steps"])
        norms = ", ".join(f"{s['grad_norm']:.3f}" for s in record["steps"])
        print(f"sft {name} {key}: losses {losses} -> {record['loss_after']['loss']:.4f}; grad norms {norms}; "
              f"max |weight change| {moved:.4f}")
    expected["step0_fp16"] = half_precision_step0(case, out, batches[0], step0, grads)
    expected["trl_sft_metrics"] = trl_sft_metrics(case, out, batches)
    mg.write_json(out / "expected.json", expected)
    print(f"sft {name}: packed rows = samples alone within {packed_diff:.2g}; merged-weight grads within {worst:.2g}"
          + (f"; min router gap {min(gaps):.4f} over {len(gaps)} forwards" if gaps else ""))
    if gaps and min(gaps) < mg.MIN_GAP:
        raise SystemExit(f"sft {name}: top-2 experts nearly tied ({min(gaps)}) in some forward; change a seed")


def main(argv: list[str]) -> None:
    torch.use_deterministic_algorithms(True)
    unknown = [c for c in argv if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    for name in argv or list(CASES):
        write_case(name)


if __name__ == "__main__":
    main(sys.argv[1:])
