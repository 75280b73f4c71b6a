"""mixtune's LoRA adapters and Hugging Face PEFT 0.21 (on transformers 5.18) read each other's files to the same model.

Export: an adapter from `mixtune init-adapter --init random` loads into PeftModel with every key placed, and PeftModel
gives mixtune's logits and greedy ids. Import: an adapter from PEFT's save_pretrained gives PEFT's numbers in
`mixtune generate --adapter`. Merge: `mixtune merge-adapter` writes a checkpoint that transformers loads cleanly into
the adapted model. Mixtral experts travel in the Hub per-expert layout (block_sparse_moe.experts.{j}.w1/w2/w3), which
PEFT converts to transformers 5's fused experts on load; mixtune reads PEFT's own fused save layout too.
"""

import json
import os
import re
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.numpy import load_file

import hf_models as hf
import make_goldens

MIXTUNE = hf.repo_root() / "bin" / "mixtune"
ATOL = 1e-4
# An adapter must move the logits by far more than the parity tolerance, or matching them would prove nothing.
MIN_EFFECT = 1e-3
# Smallest top-1/top-2 gap of a reference for its greedy ids to be a fair test (as in make_goldens.py).
MIN_GAP = make_goldens.MIN_GAP
PROMPT = hf.PROMPT_20
# mistral-fp32: GQA, sliding window 8 inside the 20-token prompt. mixtral-sharded: 4 experts top-2, Hub layout, shards.
CHECKPOINTS = {"mistral": "mistral-fp32", "mixtral": "mixtral-sharded"}
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def mixtune(*args, expect_rc: int = 0) -> subprocess.CompletedProcess:
    if not os.access(MIXTUNE, os.X_OK):
        pytest.fail(f"{MIXTUNE} does not exist or is not executable")
    cmd = [str(MIXTUNE), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == expect_rc, f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def mixtune_generate(model_dir: Path, adapter_dir: Path | None, dump: Path) -> tuple[np.ndarray, list[int]]:
    """Prompt logits [T, V] and the greedy continuation from `mixtune generate`."""
    adapter = [] if adapter_dir is None else ["--adapter", adapter_dir]
    proc = mixtune("generate", "--model", model_dir, *adapter, "--prompt-ids", ",".join(map(str, PROMPT)),
                   "--max-new-tokens", hf.MAX_NEW_TOKENS, "--greedy", "--output-ids", "--dump-logits", dump)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"mixtune printed nothing on stdout\n{proc.stderr}"
    return load_file(dump)["logits"], [int(tok) for tok in lines[-1].split(",")]


@dataclass
class Expected:
    """What a reference model (PEFT or transformers) does with PROMPT."""
    logits: np.ndarray
    new_ids: list[int]

    @staticmethod
    def of(model) -> "Expected":
        logits = hf.prompt_forward(model, PROMPT)["logits"].numpy()
        new_ids, gap = hf.greedy_recompute(model, PROMPT, hf.MAX_NEW_TOKENS)
        assert gap > MIN_GAP, f"reference argmax nearly tied ({gap:.3g}): the greedy comparison would be luck"
        return Expected(logits, new_ids)


def assert_matches(logits: np.ndarray, new_ids: list[int], expected: Expected, base_logits: np.ndarray, label: str):
    assert logits.dtype == expected.logits.dtype and logits.shape == expected.logits.shape
    effect = float(np.abs(expected.logits - base_logits).max())
    assert effect > MIN_EFFECT, f"{label}: the adapter moves the logits by only {effect:.3g}"
    diff = float(np.abs(logits - expected.logits).max())
    print(f"{label}: max |logit diff| {diff:.3g} (adapter effect {effect:.3g})")
    assert diff <= ATOL, f"{label}: max |logit diff| {diff:.3g} > {ATOL}"
    assert new_ids == expected.new_ids, f"{label}"


@dataclass
class MixtuneAdapter:
    model_dir: Path
    adapter_dir: Path
    logits: np.ndarray  # mixtune generate --adapter
    new_ids: list[int]


class Workspace:
    """Checkpoints and mixtune adapters built once per module: the JVM start makes every mixtune call cost seconds."""

    def __init__(self, root: Path):
        self.root = root
        self._bases: dict[str, Path] = {}
        self._adapters: dict[tuple, MixtuneAdapter] = {}

    def base(self, arch: str) -> Path:
        if arch not in self._bases:
            out = self.root / arch
            spec = hf.build_checkpoint(CHECKPOINTS[arch], out)
            assert spec.sliding_window is None or spec.sliding_window < len(PROMPT), "the window must bite"
            self._bases[arch] = out
        return self._bases[arch]

    def base_logits(self, arch: str) -> np.ndarray:
        return hf.prompt_forward(hf.load_reference(self.base(arch)), PROMPT)["logits"].numpy()

    def mixtune_adapter(self, arch: str, rslora: bool) -> MixtuneAdapter:
        key = (arch, rslora)
        if key not in self._adapters:
            name = f"{arch}-{'rslora' if rslora else 'lora'}"
            model_dir, adapter_dir = self.base(arch), self.root / name
            mixtune("init-adapter", "--model", model_dir, "--out", adapter_dir, "--r", 4, "--alpha", 8,
                    "--targets", "all-linear", "--init", "random", "--seed", 11 if rslora else 7,
                    *(["--rslora"] if rslora else []))
            logits, new_ids = mixtune_generate(model_dir, adapter_dir, self.root / f"{name}.safetensors")
            self._adapters[key] = MixtuneAdapter(model_dir, adapter_dir, logits, new_ids)
        return self._adapters[key]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("peft"))


def peft_model_for(model_dir: Path, seed: int, **lora) -> torch.nn.Module:
    """PEFT's own random LoRA (init_lora_weights=False draws B too, so the adapter is not a no-op)."""
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM", **lora)
    with warnings.catch_warnings():
        hf.quiet_fused_pattern_notice()
        return get_peft_model(hf.load_reference(model_dir), config).eval()


# ---- mixtune -> PEFT -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch,rslora", [("mistral", False), ("mistral", True), ("mixtral", False), ("mixtral", True)],
                         ids=["mistral", "mistral-rslora", "mixtral", "mixtral-rslora"])
def test_mixtune_adapter_in_peft(work, arch, rslora):
    # PEFT 0.21 would scale rsLoRA's fused gate_up_proj by 2*alpha/sqrt(2*r); mixtune writes a Mixtral rsLoRA adapter
    # as plain LoRA with alpha*sqrt(r), which every reader scales right.
    case = work.mixtune_adapter(arch, rslora)
    config = json.loads((case.adapter_dir / "adapter_config.json").read_text())
    written_as_alpha = rslora and arch == "mixtral"  # alpha / sqrt(r) = (alpha * sqrt(r)) / r
    expected_config = (4, 8 * 4 ** 0.5, False) if written_as_alpha else (4, 8, rslora)
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == expected_config
    linears = ["gate_proj", "up_proj", "down_proj"] if arch == "mistral" else ["w1", "w2", "w3"]
    assert sorted(config["target_modules"]) == sorted(ATTENTION + linears)

    base_logits = work.base_logits(arch)
    peft_model = hf.load_peft(hf.load_reference(case.model_dir), case.adapter_dir)
    assert_matches(case.logits, case.new_ids, Expected.of(peft_model), base_logits, f"export {arch} rslora={rslora}")


# ---- PEFT -> mixtune -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch,targets,selection", [
    pytest.param("mistral", ATTENTION + ["gate_proj", "up_proj", "down_proj"], {}, id="mistral-every-linear"),
    # PEFT resolves "all-linear" to the full path of every linear it wraps and saves that as target_modules
    # ("model.layers.0.self_attn.o_proj", ...), matched against module paths by equality or dotted suffix.
    pytest.param("mistral", "all-linear", {}, id="mistral-all-linear"),
    pytest.param("mixtral", ATTENTION, {}, id="mixtral-attention"),
    # A string target_modules is a regex that must match the whole module name (re.fullmatch).
    pytest.param("mistral", r"model\.layers\.\d+\.self_attn\.q_proj", {}, id="regex-q"),
    pytest.param("mistral", r".*\.(q_proj|v_proj)", {}, id="regex-qv"),
    pytest.param("mistral", ["q_proj", "v_proj"], {"layers_to_transform": [0]}, id="layers-to-transform"),
    pytest.param("mistral", ["q_proj", "v_proj"], {"layers_to_transform": [1], "layers_pattern": "layers"},
                 id="layers-pattern"),
    pytest.param("mistral", ["q_proj", "v_proj"], {"exclude_modules": ["model.layers.1.self_attn.v_proj"]},
                 id="exclude-modules"),
])
def test_peft_adapter_in_mixtune(work, tmp_path, arch, targets, selection):
    # Mixtral on attention here; the next test covers the experts, which PEFT on transformers 5 saves fused.
    model_dir = work.base(arch)
    peft_model = peft_model_for(model_dir, seed=2024, target_modules=targets, **selection)
    expected = Expected.of(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")

    logits, new_ids = mixtune_generate(model_dir, tmp_path / "adapter", tmp_path / "logits.safetensors")
    assert_matches(logits, new_ids, expected, work.base_logits(arch), f"import {arch} {targets}")


@pytest.mark.parametrize("rslora", [False, True], ids=["alpha-over-r", "rslora"])
def test_peft_fused_expert_adapter_in_mixtune(work, tmp_path, rslora):
    # PEFT on transformers 5 saves Mixtral expert LoRAs as target_parameters on the fused tensors (mlp.experts,
    # mlp.experts.base_layer, mlp.gate) with stacked factors; mixtune splits them per expert and must compute what
    # PEFT computes, rsLoRA's scale on the rank-2r gate_up_proj included.
    model_dir = work.base("mixtral")
    peft_model = peft_model_for(model_dir, seed=2025, target_modules="all-linear", use_rslora=rslora)
    expected = Expected.of(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any(".mlp.experts.base_layer.lora_A" in k for k in saved), "PEFT no longer saves fused experts?"

    logits, new_ids = mixtune_generate(model_dir, tmp_path / "adapter", tmp_path / "logits.safetensors")
    assert_matches(logits, new_ids, expected, work.base_logits("mixtral"), f"import fused rslora={rslora}")


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_peft_initialisers_that_change_the_base_are_refused(work, tmp_path, init):
    # PEFT re-runs PiSSA/OLoRA on load and changes the base weight with it: mixtune would compute something else.
    model_dir = work.base("mistral")
    torch.manual_seed(3)
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=init, target_modules=["q_proj", "v_proj"])
    get_peft_model(hf.load_reference(model_dir), config).save_pretrained(tmp_path / "adapter")
    proc = subprocess.run([str(MIXTUNE), "generate", "--model", str(model_dir), "--adapter", str(tmp_path / "adapter"),
                           "--prompt-ids", "1,2,3", "--max-new-tokens", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and f'init_lora_weights is "{init}"' in proc.stderr, proc.stderr
    assert "path_initial_model_for_weight_conversion" in proc.stderr, proc.stderr


# ---- mixtune recipes with rank/alpha patterns -> PEFT --------------------------------------------------------------


def train_tiny_mixtral(out: Path, lora: dict) -> Path:
    """Two SFT steps of a preset tiny Mixtral (its base-model/ has the tokenizer training needs); the adapter dir."""
    recipe = {
        "model": {"preset": "tiny-mixtral", "quantize": "none"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q_proj", "v_proj", "w1", "w2", "w3"], **lora},
        "data": {"files": [str(hf.repo_root() / "data" / "samples" / "chats.jsonl")], "template": "mistral",
                 "max_seq_len": 64},
        "train": {"max_steps": 2, "micro_batch_size": 2, "lr": 5.0e-2, "eval_every": 0, "save_every": 0},
        "output_dir": str(out),
    }
    (out.parent / f"{out.name}.yaml").write_text(json.dumps(recipe))  # JSON is YAML; dicts keep their order
    mixtune("train", "--recipe", out.parent / f"{out.name}.yaml")
    return out / "adapter"


@pytest.mark.parametrize("lora", [
    # the first pattern that matches wins, in the recipe's order, in PEFT too
    pytest.param({"alpha_pattern": {r"model\.layers\.0\.self_attn\.q_proj": 2, "q_proj": 32}}, id="pattern-order"),
    # rsLoRA with patterns: every alpha folded in (PEFT would scale the fused gate_up_proj by 2a/sqrt(2r))
    pytest.param({"rslora": True, "rank_pattern": {"v_proj": 8}, "alpha_pattern": {"q_proj": 8}}, id="rslora-patterns"),
    # patterns on experts: PEFT on transformers 5 looks them up under the fused gate_up_proj / down_proj names
    pytest.param({"rank_pattern": {"w1": 8, "w3": 8}, "alpha_pattern": {"w1": 16, "w3": 16, "w2": 32}},
                 id="expert-patterns"),
    pytest.param({"rslora": True, "rank_pattern": {"w1": 8, "w3": 8}, "alpha_pattern": {"w2": 32}},
                 id="rslora-expert-patterns"),
])
def test_mixtune_adapter_with_patterns_in_peft(tmp_path, lora):
    adapter_dir = train_tiny_mixtral(tmp_path / "run", lora)
    model_dir = tmp_path / "run" / "base-model"
    written = json.loads((adapter_dir / "adapter_config.json").read_text())
    for field in ("rank_pattern", "alpha_pattern"):
        keys = [k for k in written[field] if "mlp\\.experts" not in k]
        assert keys[:len(lora.get(field, {}))] == list(lora.get(field, {})), f"{field} keeps the recipe's order"
    logits = mixtune_generate_logits(model_dir, adapter_dir, tmp_path / "logits.safetensors")
    base = hf.load_reference(model_dir)
    base_logits = hf.prompt_forward(base, PROMPT)["logits"].numpy()
    expected = hf.prompt_forward(load_peft_with_patterns(base, adapter_dir), PROMPT)["logits"].numpy()
    effect = float(np.abs(expected - base_logits).max())
    assert effect > MIN_EFFECT, f"the adapter moves the logits by only {effect:.3g}"
    diff = float(np.abs(logits - expected).max())
    print(f"{lora}: max |logit diff| {diff:.3g} (adapter effect {effect:.3g})")
    assert diff <= ATOL, f"max |logit diff| {diff:.3g} > {ATOL}"


def load_peft_with_patterns(model, adapter_dir: Path):
    """hf.load_peft, but PEFT 0.21 on transformers 5 may warn that pattern keys "were ignored": it checks them against
    module names only, while the fused experts are parameters (it uses the gate_up_proj/down_proj keys all the same,
    as the logits show), and the w1/w2/w3 keys are for transformers 4 and mixtune. Every other warning still fails."""
    from peft import PeftModel
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(model, adapter_dir)
        probe = peft_model.load_adapter(adapter_dir, adapter_name="probe")
    peft_model.delete_adapter("probe")
    for w in caught:
        assert re.match(r"The following (rank|alpha)_pattern keys did not match any targeted module", str(w.message)), \
            f"{w.category.__name__}: {w.message}"
    assert not probe.missing_keys and not probe.unexpected_keys, (probe.missing_keys, probe.unexpected_keys)
    return peft_model.eval()


def mixtune_generate_logits(model_dir: Path, adapter_dir: Path, dump: Path) -> np.ndarray:
    mixtune("generate", "--model", model_dir, "--adapter", adapter_dir, "--prompt-ids", ",".join(map(str, PROMPT)),
            "--max-new-tokens", 1, "--greedy", "--dump-logits", dump)
    return load_file(dump)["logits"]


# ---- merge ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["mistral", "mixtral"])
def test_merged_checkpoint_in_transformers(work, tmp_path, arch):
    case = work.mixtune_adapter(arch, rslora=False)
    mixtune("merge-adapter", "--model", case.model_dir, "--adapter", case.adapter_dir, "--out", tmp_path / "merged",
            "--dtype", "fp32")
    assert {t.dtype for t in hf.read_tensors(tmp_path / "merged").values()} == {torch.float32}

    merged = hf.load_reference(tmp_path / "merged")  # raises on missing, unexpected or mismatched keys
    expected = Expected(case.logits, case.new_ids)
    got = Expected.of(merged)
    assert_matches(got.logits, got.new_ids, expected, work.base_logits(arch), f"merge {arch}")


# ---- committed goldens -------------------------------------------------------------------------------------------


def test_committed_peft_golden_reproduces(tmp_path):
    make_goldens.peft_section(tmp_path)
    assert_same_golden_folder(tmp_path, make_goldens.PEFT_GOLDEN)


def assert_same_golden_folder(fresh_root: Path, committed: Path) -> None:
    """The same files; expected.safetensors within hf.REGENERATED, every other file byte for byte."""
    files = sorted(p.relative_to(fresh_root) for p in fresh_root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    for rel in files:
        if rel.name == "expected.safetensors":  # computed numbers: float sums may round differently on another CPU
            fresh, old = load_file(fresh_root / rel), load_file(committed / rel)
            assert fresh.keys() == old.keys()
            for key in fresh:
                np.testing.assert_allclose(fresh[key], old[key], **hf.REGENERATED, err_msg=f"{rel}:{key}")
        elif rel.suffix == ".safetensors":
            fresh, old = load_file(fresh_root / rel), load_file(committed / rel)
            assert fresh.keys() == old.keys()
            assert all(np.array_equal(fresh[k], old[k]) for k in fresh), f"{rel} differs"
        else:
            assert (fresh_root / rel).read_text() == (committed / rel).read_text(), f"{rel} differs"
