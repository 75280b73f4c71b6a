"""`logging.tensorboard: true` read back by TensorBoard itself: every scalar of metrics.jsonl, once, at its step.

Contract: `mixtune train` with `logging.tensorboard=true` writes TensorBoard event files to `output_dir/runs/`; each
numeric field of each metrics.jsonl record but `step` is a scalar of the same name at that step (stored as float32,
as TensorBoard stores every scalar), and the resolved recipe.yaml is a text summary `recipe` at step 0. A run resumed
from an earlier checkpoint reads in TensorBoard as one uninterrupted run, as its metrics.jsonl does: the steps the
first run wrote after that checkpoint are replaced, not shown twice.
"""

import json
import subprocess
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import hf_models as hf

REPO = hf.repo_root()
MIXTUNE = REPO / "bin" / "mixtune"


def train(out: Path, *extra: str) -> None:
    cmd = [str(MIXTUNE), "train", "--recipe", "recipes/quickstart.yaml", "--set", "train.max_steps=4",
           "--set", "train.eval_every=2", "--set", "train.save_every=2", "--set", "train.log_every=1",
           "--set", "logging.tensorboard=true", "--set", f"output_dir={out}", *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def test_tensorboard_reads_the_scalars_of_metrics_jsonl_once_each_after_a_resume(tmp_path):
    out = tmp_path / "out"
    train(out)
    # Resume from the step-2 checkpoint: steps 3 and 4 are trained and written again, in a second event file.
    train(out, "--resume", str(out / "checkpoints" / "step-000002"))
    assert len(list((out / "runs").glob("events.out.tfevents.*"))) == 2

    expected = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                expected[(key, record["step"])] = np.float32(value)
    assert {step for _, step in expected} == {0, 1, 2, 3, 4}
    assert ("eval_loss", 0) in expected and ("lr", 1) in expected and ("loss", 4) in expected

    accumulator = EventAccumulator(str(out / "runs"), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    found = {}
    for tag in accumulator.Tags()["scalars"]:
        for event in accumulator.Scalars(tag):
            assert (tag, event.step) not in found, f"{tag} at step {event.step} shown twice"
            found[(tag, event.step)] = np.float32(event.value)
    assert found.keys() == expected.keys(), (sorted(found.keys() - expected.keys()),
                                             sorted(expected.keys() - found.keys()))
    for key, value in expected.items():
        assert found[key] == value, f"{key}: TensorBoard {found[key]!r}, metrics.jsonl {value!r}"

    [recipe] = accumulator.Tensors("recipe")
    assert recipe.step == 0
    metadata = accumulator.SummaryMetadata("recipe")
    assert metadata.plugin_data.plugin_name == "text"
    text = recipe.tensor_proto.string_val[0].decode()
    assert text == "```yaml\n" + (out / "recipe.yaml").read_text() + "```\n"
