"""SFT training throughput of TRL's SFTTrainer + PEFT LoRA on a tiny checkpoint: the figure mixtune's Java trainer is put
beside.

    interop/.venv/bin/python bench/sft_trl.py --model DIR [--model DIR ...] --data data/samples/chats.jsonl --steps 20

DIR is an HF checkpoint with its tokenizer, e.g. `bin/mixtune init-model --preset tiny-mixtral --out DIR --dtype fp32`.
What runs: float32 on CPU with torch using every core; LoRA r 16, alpha 16, dropout 0 on every linear layer (q/k/v/o
and the MLP: gate/up/down_proj, or every expert's w1/w2/w3 on Mixtral; neither the router nor lm_head); the chats
(messages format) in the Mistral v1 instruct format; TRL's best-fit-decreasing packing into rows of at most
--max-seq-len tokens, padding-free (one row per step, position ids restart per sample, so that transformers 5 builds a
block-diagonal mask and no attention crosses samples); loss on assistant tokens only (TRL's assistant_only_loss through
{% generation %} markers in the template); TRL's default loss (chunked_nll: lm_head only on target positions); Mixtral
with output_router_logits, so the aux loss (coef from config.json) is in the loss as in mixtune's trainer. --warmup steps
run first untimed, then --steps timed steps (forward, backward, clipping, AdamW).

FLOPs per step (printed as GFLOP/s), the formula to use for the Java trainer as well. T = row tokens, T_tgt = target
tokens (labels != -100), per token the active linear layers are attention q/k/v/o plus the MLP (Mixtral: top-k of the
experts' w1/w2/w3), N_lin = their weight count, N_lora = sum over the same active adapted layers of r * (in + out):
    forward   2 N_lin T + 2 H V T_tgt + A + 2 N_lora T
    backward  2 N_lin T + 2 H V T_tgt + 2 A + 4 N_lora T
    A = 4 * layers * heads * head_dim * sum over queries of the keys they attend (within the sample, causal, window)
The base is frozen, so its backward is the input gradient only (one matmul per linear, the same FLOPs as forward) and
not 2x forward as in full fine-tuning; LoRA gets input and weight gradients (2x its forward); attention scores and
values need gradients for both operands (2x). lm_head counts only the target positions (what chunked_nll computes and
what a trainer should compute); TRL's chunked_nll recomputes those logits in backward (checkpointing), which is not
counted. Not counted either: embeddings, norms, softmax, RoPE, routing, the optimizer, and the input gradients of
layer 0 that autograd skips. Total per step: 4 N_lin T + 4 H V T_tgt + 3 A + 6 N_lora T.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent

# Mistral/Mixtral instruct v0.1 as mixtune's MistralTemplate writes it (<s> [INST] u1 [/INST] a1</s> [INST] u2 ...;
# a system prompt goes before the first user text, then a blank line), with {% generation %} around what trains:
# each answer and its </s>. TRL ships no Mistral training template, so without markers assistant_only_loss fails.
MISTRAL_V1_TRAINING = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system = messages[0]['content'] %}{%- set turns = messages[1:] %}"
    "{%- else %}{%- set system = '' %}{%- set turns = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in turns %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system != '' %}{{- ' [INST] ' + system + '\n\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
    "{%- else %}{% generation %}{{- ' ' + message['content'] + eos_token }}{% endgeneration %}{%- endif %}"
    "{%- endfor %}"
)


def matmul_peak(n: int = 1024, repeats: int = 20) -> tuple[float, float]:
    """fp32 GFLOP/s of an n x n @ n x n matmul with every thread: (best, median) over `repeats` after 3 warm-ups."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        torch.mm(a, b)
        if i >= 3:
            times.append(time.perf_counter() - start)
    flop = 2 * n**3
    return flop / min(times) / 1e9, flop / statistics.median(times) / 1e9


def lora_targets(config) -> list[str]:
    attention = ["q_proj", "k_proj", "v_proj", "o_proj"]
    # Mixtral: PEFT maps w1/w2/w3 onto transformers 5's fused experts (target_parameters); the router is left alone.
    return attention + (["w1", "w2", "w3"] if config.model_type == "mixtral" else ["gate_proj", "up_proj", "down_proj"])


def per_token_counts(config, r: int) -> tuple[int, int]:
    """(N_lin, N_lora): weights of the linear layers one token goes through, and r * (in + out) summed over them."""
    h, inter = config.hidden_size, config.intermediate_size
    q_out = config.num_attention_heads * config.head_dim
    kv_out = config.num_key_value_heads * config.head_dim
    attention = [(h, q_out), (h, kv_out), (h, kv_out), (q_out, h)]
    mlp = [(h, inter), (h, inter), (inter, h)]
    active = getattr(config, "num_experts_per_tok", 1) if config.model_type == "mixtral" else 1
    layers = attention + mlp * active
    n_lin = config.num_hidden_layers * sum(i * o for i, o in layers)
    n_lora = config.num_hidden_layers * sum(r * (i + o) for i, o in layers)
    return n_lin, n_lora


def attended_keys(length: int, window: int | None) -> int:
    """Keys summed over the queries of one sample: causal, and at most `window` of them (transformers: q - k < window)."""
    if window is None or window >= length:
        return length * (length + 1) // 2
    return window * (window + 1) // 2 + (length - window) * window


def step_flops(config, r: int, sample_lengths: list[int], targets: int) -> float:
    n_lin, n_lora = per_token_counts(config, r)
    tokens = sum(sample_lengths)
    window = getattr(config, "sliding_window", None)
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * sum(
        attended_keys(n, window) for n in sample_lengths)
    head = config.hidden_size * config.vocab_size
    return 4 * n_lin * tokens + 4 * head * targets + 3 * attention + 6 * n_lora * tokens


def sample_lengths_of(position_ids: torch.Tensor) -> list[int]:
    """Lengths of the samples packed in a padding-free row, from where its positions restart at 0."""
    starts = (position_ids.flatten() == 0).nonzero().flatten().tolist() + [position_ids.numel()]
    return [b - a for a, b in zip(starts, starts[1:])]


def run(model_dir: Path, args, peak: float) -> str:
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tokenizer_dir = model_dir if (model_dir / "tokenizer.json").exists() else REPO / "configs/tokenizer/mistral-v1"
    # Not AutoTokenizer: it imports mistral_common, whose pydantic_extra_types dependency is on none of our indexes.
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    tokenizer.chat_template = MISTRAL_V1_TRAINING
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=args.attn)
    config = model.config
    if config.model_type == "mixtral":
        config.output_router_logits = True
    lora = LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=lora_targets(config),
                      task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's notice that its own fused-expert patterns matched no module
        model = get_peft_model(model, lora)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable) and not any(".mlp.gate." in n for n in trainable)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    data = load_dataset("json", data_files=str(args.data), split="train").select_columns(["messages"])
    sft_args = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="sft-trl-"), max_length=args.max_seq_len, packing=True,
        packing_strategy="bfd", assistant_only_loss=True, per_device_train_batch_size=1, gradient_accumulation_steps=1,
        max_steps=args.warmup + args.steps, learning_rate=1e-4, lr_scheduler_type="constant", weight_decay=0.0,
        max_grad_norm=1.0, use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0, save_strategy="no",
        logging_strategy="no", report_to=[], disable_tqdm=True, seed=0, loss_type=args.loss_type)

    batches: list[dict] = []

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.starts, self.seconds, self.cpu_starts, self.cpu_seconds = [], [], [], []

        def on_step_begin(self, *_, **__):
            self.starts.append(time.perf_counter())
            self.cpu_starts.append(time.process_time())

        def on_step_end(self, *_, **__):
            self.seconds.append(time.perf_counter() - self.starts[-1])
            self.cpu_seconds.append(time.process_time() - self.cpu_starts[-1])

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, *rest, **kwargs):
            assert "attention_mask" not in inputs and inputs["input_ids"].shape[0] == 1, "not a padding-free row"
            batches.append({"tokens": inputs["input_ids"].numel(),
                            "targets": int((inputs["labels"] != -100).sum()),
                            "samples": sample_lengths_of(inputs["position_ids"])})
            return super().training_step(model, inputs, *rest, **kwargs)

    timer = StepTimer()
    trainer = CountingTrainer(model=model, args=sft_args, train_dataset=data, processing_class=tokenizer,
                              callbacks=[timer])
    rows = trainer.train_dataset
    row_tokens = [len(x) for x in rows["input_ids"]]
    row_targets = [sum(label != -100 for label in labels) for labels in rows["labels"]]
    print(f"{model_dir.name} data, TRL's bfd packing: {len(row_tokens)} rows from {len(data)} chats, mean "
          f"{statistics.mean(row_tokens):.1f} tokens and {statistics.mean(row_targets):.1f} targets per row, packing "
          f"efficiency {100 * sum(row_tokens) / (len(row_tokens) * args.max_seq_len):.1f}%", flush=True)
    trainer.train()

    timed = slice(args.warmup, args.warmup + args.steps)
    seconds, counted, cpu_seconds = timer.seconds[timed], batches[timed], timer.cpu_seconds[timed]
    assert len(seconds) == len(counted) == args.steps, (len(seconds), len(counted))
    total = sum(seconds)
    tokens = sum(b["tokens"] for b in counted)
    targets = sum(b["targets"] for b in counted)
    samples = sum(len(b["samples"]) for b in counted)
    flops = sum(step_flops(config, args.r, b["samples"], b["targets"]) for b in counted)
    median = statistics.median(seconds)
    per_step = [b["tokens"] / t for b, t in zip(counted, seconds)]
    name = model_dir.name
    return (f"sft-trl {name}: {args.steps} steps after {args.warmup} warm-up, 1 packed row/step "
            f"({tokens / args.steps:.0f} tokens, {targets / args.steps:.0f} targets, {samples / args.steps:.1f} samples "
            f"per row on average; {len(row_tokens)} rows from {len(data)} chats), LoRA r {args.r} "
            f"({n_trainable:,} trainable), {torch.get_num_threads()} threads, attn {args.attn}, {args.loss_type}: "
            f"median step {median * 1e3:.1f} ms (best {min(seconds) * 1e3:.1f}), "
            f"{tokens / total:.0f} tokens/s, {targets / total:.0f} target tokens/s (fastest step "
            f"{max(per_step):.0f} tokens/s), "
            f"{flops / args.steps / 1e9:.3f} GFLOP/step, {flops / total / 1e9:.2f} GFLOP/s "
            f"({100 * flops / total / 1e9 / peak:.0f}% of the {peak:.0f} GFLOP/s matmul peak), "
            f"load average {os.getloadavg()[0]:.1f}\n"
            f"sft-trl {name}: tokens/s per step: median {statistics.median(per_step):.0f}, fastest {max(per_step):.0f}; "
            f"process CPU time per 1000 tokens: median "
            f"{statistics.median(c / b['tokens'] for b, c in zip(counted, cpu_seconds)) * 1e6:.1f} ms "
            f"({statistics.median(cpu_seconds) * 1e3:.1f} ms per step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", required=True, help="HF checkpoint dir (repeatable)")
    parser.add_argument("--data", type=Path, default=REPO / "data/samples/chats.jsonl")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=16)
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--loss-type", default="chunked_nll", choices=["chunked_nll", "nll"],
                        help="TRL's loss; nll computes logits at every position (the FLOP count stays targets-only)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: every core)")
    parser.add_argument("--peak", type=float, help="fp32 matmul peak in GFLOP/s measured already (bench/sft.sh "
                        "measures it once for both trainers); default: measure it here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in ("transformers", "trl", "peft", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if args.peak is None:
        best, median = matmul_peak()
        print(f"fp32 matmul 1024x1024 @ 1024x1024, {torch.get_num_threads()} threads: best {best:.1f} GFLOP/s, "
              f"median {median:.1f} GFLOP/s", flush=True)
    else:
        best = args.peak
    lines = [run(model_dir, args, best) for model_dir in args.model]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
