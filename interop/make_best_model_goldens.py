"""Golden for mixtune's best checkpoint and early stopping: trainer/src/test/resources/golden/best_model/cases.json.

Run: interop/.venv/bin/python interop/make_best_model_goldens.py [out.json]

Per case, transformers 5.18's own code on a made-up sequence of evaluation metrics (no model): a TrainingArguments of
the case (its __post_init__ decides greater_is_better and metric_for_best_model), a TrainerState, the
EarlyStoppingCallback's on_evaluate, then Trainer._determine_best_metric, in the order Trainer._maybe_log_save_evaluate
calls them (evaluate() runs the callbacks before the best is determined). Steps run 1..total; an evaluation comes at
every eval_steps and at the last step (DefaultFlowCallback), a save at every save_steps and at the last step; a save
makes checkpoint-N, sets best_model_checkpoint when the best step's folder exists (Trainer._save_checkpoint) and calls
trainer_utils.rotate_checkpoints on real folders; the loop stops after a step where should_training_stop is set; at
the end, save_total_limit 1 deletes all but the best (Trainer._inner_training_loop). Recorded: each evaluation's
patience counter, best_metric and best_global_step, the stop step, best_model_checkpoint's step and the checkpoints
left. The Java test (BestModelGoldenTest) runs mixtune's BestModel and checkpoint rotation on the same sequences.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from transformers import EarlyStoppingCallback, Trainer, TrainingArguments
from transformers.trainer_callback import TrainerControl, TrainerState
from transformers.trainer_utils import rotate_checkpoints

import hf_models as hf

OUT = hf.repo_root() / "trainer" / "src" / "test" / "resources" / "golden" / "best_model" / "cases.json"

# name, metric_for_best_model (None: not set), greater_is_better (None: by name), load_best_model_at_end,
# early_stopping_patience (None: no callback), early_stopping_threshold, eval_steps, save_steps, save_total_limit,
# total steps, the metric of each evaluation in order
CASES = [
    ("loss-falls-then-rises", None, None, True, 2, 0.0, 2, 2, 2, 20, [3.0, 2.5, 2.4, 2.6, 2.7, 2.2, 2.1, 2.0, 1.9, 1.8]),
    ("patience-1-first-worse", None, None, True, 1, 0.0, 1, 1, 3, 8, [1.0, 0.9, 0.95, 0.8, 0.7, 0.6, 0.5, 0.4]),
    ("threshold-small-gains-stop", "loss", None, True, 2, 0.05, 1, 2, 2, 12,
     [2.0, 1.9, 1.87, 1.85, 1.80, 1.79, 1.78, 1.77, 1.76, 1.75, 1.74, 1.73]),
    ("accuracy-greater", "rewards/accuracies", None, True, 3, 0.0, 2, 4, 1, 24,
     [0.5, 0.55, 0.55, 0.6, 0.58, 0.6, 0.59, 0.61, 0.62, 0.6, 0.6, 0.6]),
    ("eval-prefix-and-flip", "eval_loss", True, False, 2, 0.0, 3, 3, 2, 15, [1.0, 1.2, 1.1, 1.3, 1.25]),
    ("no-early-stopping-limit-1", "loss", None, True, None, 0.0, 2, 4, 1, 16, [5.0, 4.0, 4.5, 3.9, 4.1, 4.2, 4.3, 4.4]),
    ("best-off-save-steps", None, None, True, None, 0.0, 2, 4, 2, 12, [3.0, 2.0, 1.5, 1.7, 1.4, 1.6]),
    ("ties-do-not-improve", "loss", None, False, 2, 0.0, 1, 1, 2, 10, [1.0, 1.0, 0.9, 0.9, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]),
    ("end-off-cadence", None, None, True, 3, 0.0, 4, 4, 2, 18, [2.0, 1.9, 1.8, 1.7, 1.6]),
]


def run(case, root: Path) -> dict:
    name, metric, greater, load_best, patience, threshold, eval_steps, save_steps, limit, total, values = case
    args = TrainingArguments(output_dir=str(root), eval_strategy="steps", eval_steps=eval_steps,
                             save_strategy="steps", save_steps=save_steps, save_total_limit=limit,
                             load_best_model_at_end=load_best, metric_for_best_model=metric,
                             greater_is_better=greater, report_to=[], use_cpu=True)
    if args.metric_for_best_model is None:  # mixtune: early stopping alone compares eval_loss
        args.metric_for_best_model = "loss"
        args.greater_is_better = False
    state = TrainerState()
    control = TrainerControl()
    callback = EarlyStoppingCallback(patience, threshold) if patience is not None else None
    trainer = SimpleNamespace(args=args, state=state)
    key = args.metric_for_best_model if args.metric_for_best_model.startswith("eval_") \
        else "eval_" + args.metric_for_best_model
    evaluations = []
    stop = None
    it = iter(values)
    for step in range(1, total + 1):
        state.global_step = step
        if step % eval_steps == 0 or step == total:
            metrics = {key: next(it)}
            if callback is not None:
                callback.on_evaluate(args, state, control, metrics=metrics)
            Trainer._determine_best_metric(trainer, metrics, None)
            evaluations.append({"step": step, "value": metrics[key],
                                "counter": callback.early_stopping_patience_counter if callback else 0,
                                "best_metric": state.best_metric, "best_global_step": state.best_global_step})
        if step % save_steps == 0 or step == total:
            (root / f"checkpoint-{step}").mkdir()
            if state.best_global_step:
                best = root / f"checkpoint-{state.best_global_step}"
                if best.exists():
                    state.best_model_checkpoint = str(best)
            rotate_checkpoints(output_dir=str(root), save_total_limit=limit,
                               best_model_checkpoint=state.best_model_checkpoint, use_mtime=False)
        if control.should_training_stop:
            stop = step
            break
    if state.best_model_checkpoint is not None and limit == 1:
        for folder in root.glob("checkpoint-*"):
            if folder != Path(state.best_model_checkpoint):
                shutil.rmtree(folder)
    left = sorted(int(folder.name.split("-")[1]) for folder in root.glob("checkpoint-*"))
    best_checkpoint = int(Path(state.best_model_checkpoint).name.split("-")[1]) \
        if state.best_model_checkpoint else None
    return {"name": name, "metric_for_best_model": metric, "greater_is_better": greater,
            "resolved_greater_is_better": args.greater_is_better, "load_best_model_at_end": load_best,
            "early_stopping_patience": patience, "early_stopping_threshold": threshold, "eval_steps": eval_steps,
            "save_steps": save_steps, "save_total_limit": limit, "total_steps": total, "values": values,
            "evaluations": evaluations, "stop_step": stop, "best_model_checkpoint_step": best_checkpoint,
            "checkpoints_left": left}


def write(out: Path) -> list[dict]:
    cases = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            cases.append(run(case, Path(tmp)))
    for case in cases:
        for evaluation in case["evaluations"]:
            assert math.isfinite(evaluation["best_metric"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"transformers": __import__("transformers").__version__, "cases": cases}, indent=1)
                   + "\n")
    return cases


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    cases = write(out)
    print(f"wrote {out}: {len(cases)} cases, stops at {[c['stop_step'] for c in cases]}")


if __name__ == "__main__":
    main()
