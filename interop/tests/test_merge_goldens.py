"""`mixtune merge` against numpy and PEFT.

- The committed merging goldens are what make_merge_goldens.py produces today (numpy's formulas, torch's swa_utils).
- The real command line, given each golden case as a mergekit-style YAML file (and some as flags), writes what numpy
  computed: every method, TIES and DARE with their seeds, SLERP on both sides of the colinearity threshold, bf16 and
  sharded inputs, adapters summed exactly and cut by SVD.
- PEFT loads the averaged adapter, and PeftModel.from_pretrained gives the logits of the weighted average of the models
  each adapter merges into (merge_and_unload), within 1e-5; the SVD error mixtune reports is numpy's.
"""

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

import hf_models as hf
import make_merge_goldens as goldens
from test_peft_interop import mixtune

GOLDEN = goldens.GOLDEN
CASES = json.loads((GOLDEN / "cases.json").read_text())


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_files(fresh_root: Path, committed_root: Path) -> None:
    """A regenerated golden directory holds the committed one's files, byte for byte."""
    fresh, committed = files_under(fresh_root), files_under(committed_root)
    assert fresh.keys() == committed.keys()
    changed = [name for name in fresh if fresh[name] != committed[name]]
    assert not changed, f"regenerated files differ from the committed ones: {changed}"


def test_committed_goldens_reproduce(tmp_path):
    goldens.make(tmp_path / "golden")
    assert_same_files(tmp_path / "golden", GOLDEN)


def merge_yaml(case: dict, out: Path) -> dict:
    """The golden case as a mergekit-style config, paths absolute."""
    models = []
    for i, model in enumerate(case["models"]):
        parameters = {}
        if "weights" in case:
            parameters["weight"] = case["weights"][i]
        if "densities" in case:
            parameters["density"] = case["densities"][i]
        models.append({"model": str(GOLDEN / model), **({"parameters": parameters} if parameters else {})})
    config = {"merge_method": case["method"], "models": models, "out": str(out)}
    if "base" in case:
        config["base_model"] = str(GOLDEN / case["base"])
    parameters = {key: case[key] for key in ("density", "normalize", "lambda", "t", "decay", "rescale") if key in case}
    if parameters:
        config["parameters"] = parameters
    for key in ("last", "rank", "seed", "dtype"):
        if key in case:
            config[key] = case[key]
    return config


def read_output(out: Path) -> dict[str, torch.Tensor]:
    if (out / "adapter_model.safetensors").exists():
        return load_file(out / "adapter_model.safetensors")
    return hf.read_tensors(out)


def dense_deltas(adapter_dir: Path) -> dict[str, np.ndarray]:
    """scale * B A per module, with PEFT's scale (rank_pattern / alpha_pattern matched as PEFT matches them)."""
    from peft.utils.other import get_pattern_key

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    deltas = {}
    for key in tensors:
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[len("base_model.model."): -len(".lora_A.weight")]
        r = config["rank_pattern"].get(get_pattern_key(config["rank_pattern"].keys(), module), config["r"])
        alpha = config["alpha_pattern"].get(get_pattern_key(config["alpha_pattern"].keys(), module), config["lora_alpha"])
        scale = alpha / (np.sqrt(r) if config["use_rslora"] else r)
        a = tensors[key].double().numpy()
        b = tensors[key.replace("lora_A", "lora_B")].double().numpy()
        assert a.shape[0] == r and b.shape[1] == r, f"{module}: A {a.shape} and B {b.shape} but rank {r} in the config"
        deltas[module] = scale * b @ a
    return deltas


def assert_case_output(case: dict, out: Path) -> None:
    expected = load_file(GOLDEN / case["expected"])
    if case["models"][0].startswith("adapters/"):
        merged = dense_deltas(out)
        for module, delta in merged.items():
            np.testing.assert_allclose(delta, expected[module].double().numpy(), atol=1e-5, err_msg=module)
        return
    merged = read_output(out)
    for name, value in expected.items():
        dtype = merged[name].dtype
        tolerance = 2.0**-7 if dtype == torch.bfloat16 else 1e-6
        reference = value.double()
        diff = (merged[name].double() - reference).abs()
        assert (diff <= tolerance * reference.abs() + 1e-7).all(), f"{case['name']}: {name} off by {diff.max():.3g}"


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_cli_config_matches_numpy(case, tmp_path):
    config = tmp_path / "merge.yaml"
    config.write_text(yaml.safe_dump(merge_yaml(case, tmp_path / "out")))
    proc = mixtune("merge", "--config", config)
    assert proc.stdout.startswith("merged "), proc.stdout
    assert_case_output(case, tmp_path / "out")
    if "rank" in case:
        errors = load_file(GOLDEN / case["expected"])["errors"].double().numpy()
        match = re.search(r"relative Frobenius error max ([0-9.e+-]+), mean ([0-9.e+-]+)", proc.stdout)
        assert match, proc.stdout
        # printed with 4 significant digits
        np.testing.assert_allclose([float(match.group(1)), float(match.group(2))], [errors.max(), errors.mean()],
                                   rtol=1e-3)


MERGEKIT_CASES = json.loads((GOLDEN / "mergekit_cases.json").read_text())
# Through the CLI here: the cases whose config form is their own (stacked slices, slices of a task-vector method,
# out_dtype). MergeGoldenTest#mergekitConfigEqualsNumpy compares every case's merge with these numpy goldens in one
# JVM; a process per method here would add half a minute to the suite for the same comparison.
CLI_CASES = [c for c in MERGEKIT_CASES if "slices" in c["config"] or "out_dtype" in c["config"]]


def absolute_models(config: dict) -> dict:
    """The mergekit config with every model path under the golden directory."""
    config = json.loads(json.dumps(config))
    if "base_model" in config:
        config["base_model"] = str(GOLDEN / config["base_model"])
    for entry in config.get("slices", []) + config.get("models", []):
        for source in entry.get("sources", [entry]):
            source["model"] = str(GOLDEN / source["model"])
    return config


@pytest.mark.parametrize("case", CLI_CASES, ids=[c["name"] for c in CLI_CASES])
def test_mergekit_config_file_matches_numpy(case, tmp_path):
    """mergekit's own forms, run as mergekit-yaml takes them: `mixtune merge CONFIG.yml OUT`."""
    config = tmp_path / "mergekit.yml"
    config.write_text(yaml.safe_dump(absolute_models(case["config"]), sort_keys=False))
    proc = mixtune("merge", config, tmp_path / "out")
    assert proc.stdout.startswith("merged "), proc.stdout
    merged = hf.read_tensors(tmp_path / "out")
    expected = load_file(GOLDEN / case["expected"])
    assert set(expected) == {n for n, t in merged.items() if t.is_floating_point()}
    out_dtype = case["config"].get("out_dtype")
    # bf16 output: numpy's float64 rounded twice (to float32, to bf16) may land one unit in the last place away.
    relative = 2.0 ** -7 if out_dtype == "bfloat16" else 1e-6
    for name, value in expected.items():
        diff = (merged[name].double() - value.double()).abs()
        assert (diff <= relative * value.double().abs() + 1e-7).all(), f"{case['name']}: {name} off by {diff.max():.3g}"
        if out_dtype:
            assert merged[name].dtype == getattr(torch, out_dtype), name
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["num_hidden_layers"] == case["num_hidden_layers"]
    if out_dtype:
        assert written["torch_dtype"] == out_dtype


def test_chat_template_is_what_mergekit_saves(tmp_path):
    """chat_template as mergekit's merge.py _set_chat_template sets it on the donor's tokenizer and transformers'
    save_pretrained writes it: the given Jinja, or with auto the template most inputs have, stripped."""
    import transformers
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers

    vocab = Tokenizer(tok_models.WordLevel({"<s>": 0, "</s>": 1, "a": 2, "<unk>": 3}, unk_token="<unk>"))
    vocab.pre_tokenizer = pre_tokenizers.Whitespace()
    inputs = []
    for name, template in [("m0", "{{ messages }} A"), ("m1", "\n{{ messages }} B  "), ("base", "{{ messages }} B")]:
        model = tmp_path / name
        shutil.copytree(GOLDEN / "layered" / name, model)
        (model / "tokenizer.json").unlink()
        tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=vocab, bos_token="<s>", eos_token="</s>")
        tokenizer.chat_template = template
        tokenizer.save_pretrained(model)
        inputs.append(model)
    jinja = "{% for m in messages %}{{ m['content'] }}{% endfor %}\n"
    for chosen, expected in [(jinja, jinja), ("auto", "{{ messages }} B")]:
        config = tmp_path / "merge.yml"
        config.write_text(yaml.safe_dump({"merge_method": "task_arithmetic", "base_model": str(inputs[2]),
                                          "models": [{"model": str(m)} for m in inputs[:2]],
                                          "chat_template": chosen}))
        out = tmp_path / f"out-{chosen != 'auto'}"
        assert mixtune("merge", config, out).stdout.startswith("merged ")
        donor = transformers.PreTrainedTokenizerFast.from_pretrained(inputs[2])  # what AutoTokenizer gives a
        # tokenizer.json model (AutoTokenizer itself wants mistral_common for model_type mistral)
        donor.chat_template = expected
        donor.save_pretrained(tmp_path / "reference")
        assert (out / "chat_template.jinja").read_text() == (tmp_path / "reference" / "chat_template.jinja").read_text()
        assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())
        assert transformers.PreTrainedTokenizerFast.from_pretrained(out).chat_template == expected


@pytest.mark.parametrize("name", ["ties-unnormalized", "dare_ties", "slerp-base", "lawa-last2"])
def test_cli_flags_match_numpy(name, tmp_path):
    case = next(c for c in CASES if c["name"] == name)
    args = ["merge", "--method", case["method"], "--inputs", ",".join(str(GOLDEN / m) for m in case["models"]),
            "--out", tmp_path / "out"]
    if "base" in case:
        args += ["--base", GOLDEN / case["base"]]
    if "weights" in case:
        args += ["--weights", ",".join(map(str, case["weights"]))]
    for key in ("density", "t", "seed", "decay", "lambda", "last"):
        if key in case:
            args += [f"--{key}", case[key]]
    if "normalize" in case:
        args += ["--normalize", str(case["normalize"]).lower()]
    mixtune(*args)
    assert_case_output(case, tmp_path / "out")


def test_bad_inputs_fail_before_writing(tmp_path):
    other = tmp_path / "other"
    shutil.copytree(GOLDEN / "checkpoints" / "m1", other)
    (other / "tokenizer.json").write_text("{}\n")
    out = tmp_path / "out"
    proc = mixtune("merge", "--method", "linear", "--inputs", f"{GOLDEN / 'checkpoints' / 'm0'},{other}", "--out", out,
                   expect_rc=2)  # the user's to fix: refused before anything is written
    assert f"{other / 'tokenizer.json'}: id 0 is absent but 't0'" in proc.stderr, proc.stderr
    assert "different tokenizers" in proc.stderr, proc.stderr
    assert not out.exists() and not list(tmp_path.glob("out.tmp-*"))
    proc = mixtune("merge", "--method", "dare_ties", "--base", GOLDEN / "checkpoints" / "base", "--inputs",
                   GOLDEN / "checkpoints" / "m0", "--density", "0", "--out", out, expect_rc=2)
    assert "density must lie in (0, 1]" in proc.stderr


# ---- PEFT ------------------------------------------------------------------------------------------------------------

# Different ranks, scales (one rsLoRA) and targets: the summed ranks differ by module, so rank_pattern is exercised.
PEFT_ADAPTERS = [
    dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]),
    dict(r=2, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "o_proj", "gate_proj", "down_proj"]),
    dict(r=3, lora_alpha=6, target_modules=["v_proj", "up_proj"]),
]
WEIGHTS = [1.0, 2.0, 1.0]


@pytest.fixture(scope="module")
def peft_work(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge-peft")
    base = root / "base"
    hf.build_checkpoint("mistral-fp32", base)
    adapters = []
    for i, lora in enumerate(PEFT_ADAPTERS):
        torch.manual_seed(100 + i)
        config = LoraConfig(init_lora_weights=False, task_type="CAUSAL_LM", **lora)
        model = get_peft_model(hf.load_reference(base), config)
        model.save_pretrained(root / f"adapter-{i}")
        adapters.append(root / f"adapter-{i}")
    return root, base, adapters


def weighted_merged_model(base: Path, adapters: list[Path], weights: list[float]) -> torch.nn.Module:
    """The reference: each adapter merged into the base by PEFT, the state dicts averaged with the weights."""
    total = sum(weights)
    state = None
    for adapter, weight in zip(adapters, weights):
        merged = hf.load_peft(hf.load_reference(base), adapter).merge_and_unload().state_dict()
        if state is None:
            state = {k: v.double() * (weight / total) for k, v in merged.items()}
        else:
            for k, v in merged.items():
                state[k] += v.double() * (weight / total)
    model = hf.load_reference(base)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def test_peft_loads_the_averaged_adapter_as_the_average_of_merged_models(peft_work):
    root, base, adapters = peft_work
    averaged = root / "averaged"
    mixtune("merge", "--method", "linear", "--inputs", ",".join(map(str, adapters)), "--weights",
            ",".join(map(str, WEIGHTS)), "--out", averaged)
    config = json.loads((averaged / "adapter_config.json").read_text())
    assert config["rank_pattern"], "the summed ranks differ by module here"
    with torch.no_grad():
        via_adapter = hf.prompt_forward(hf.load_peft(hf.load_reference(base), averaged), hf.PROMPT_20)["logits"]
        via_models = hf.prompt_forward(weighted_merged_model(base, adapters, WEIGHTS), hf.PROMPT_20)["logits"]
        base_logits = hf.prompt_forward(hf.load_reference(base), hf.PROMPT_20)["logits"]
    effect = float((via_models - base_logits).abs().max())
    diff = float((via_adapter - via_models).abs().max())
    print(f"averaged adapter vs averaged merged models: max |logit diff| {diff:.3g} (adapter effect {effect:.3g})")
    assert effect > 1e-2
    assert diff <= 1e-5


def test_svd_recompression_reports_numpys_error_and_peft_loads_it(peft_work):
    root, base, adapters = peft_work
    out = root / "rank3"
    proc = mixtune("merge", "--method", "linear", "--inputs", ",".join(map(str, adapters)), "--weights",
                   ",".join(map(str, WEIGHTS)), "--rank", "3", "--out", out)
    exact = {}
    for adapter, weight in zip(adapters, WEIGHTS):
        for module, delta in dense_deltas(adapter).items():
            exact[module] = exact.get(module, 0) + delta * weight / sum(WEIGHTS)
    errors, cut = [], dense_deltas(out)
    for module, delta in exact.items():
        u, s, vt = np.linalg.svd(delta, full_matrices=False)
        if np.linalg.matrix_rank(delta) <= 3 and (s[3:] ** 2).sum() < 1e-20:
            np.testing.assert_allclose(cut[module], delta, atol=1e-5, err_msg=module)
            continue
        best = (u[:, :3] * s[:3]) @ vt[:3]
        np.testing.assert_allclose(cut[module], best, atol=1e-5, err_msg=module)
        errors.append(np.sqrt((s[3:] ** 2).sum() / (s ** 2).sum()))
    match = re.search(r"svd re-compression of (\d+) of (\d+) modules: relative Frobenius error max ([0-9.e+-]+), "
                      r"mean ([0-9.e+-]+)", proc.stdout)
    assert match, proc.stdout
    assert int(match.group(1)) == len(errors)
    np.testing.assert_allclose([float(match.group(3)), float(match.group(4))], [max(errors), np.mean(errors)], rtol=1e-3)
    with warnings.catch_warnings():
        hf.load_peft(hf.load_reference(base), out)


def peft_weighted_adapter_deltas(base: Path, adapters: list[Path], weights: list[float], **combination) -> dict:
    """PEFT's own add_weighted_adapter over the adapters, as scale * B A per module that the new adapter adapts."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    model = PeftModel.from_pretrained(hf.load_reference(base), adapters[0], adapter_name="a0")
    for i, adapter in enumerate(adapters[1:], start=1):
        model.load_adapter(adapter, adapter_name=f"a{i}")
    names = [f"a{i}" for i in range(len(adapters))]
    model.add_weighted_adapter(names, weights, "combined", **combination)
    deltas = {}
    for name, module in model.base_model.model.named_modules():
        if isinstance(module, LoraLayer) and "combined" in module.lora_A and any(n in module.lora_A for n in names):
            a = module.lora_A["combined"].weight.detach().double().numpy()
            b = module.lora_B["combined"].weight.detach().double().numpy()
            deltas[name] = module.scaling["combined"] * b @ a
    return deltas


def test_task_arithmetic_on_adapters_is_peft_add_weighted_adapter_cat_and_svd(peft_work):
    """PEFT's add_weighted_adapter sums without normalising: its "cat" (ranks concatenated, exact) is mixtune's
    task_arithmetic on adapters (linear --normalize false), and its "svd" with svd_rank R is that sum cut to rank R by
    --rank R (the same product up to the SVD's rounding). Different ranks, an rsLoRA adapter and different targets."""
    root, base, adapters = peft_work
    weights = ",".join(map(str, WEIGHTS))
    exact, cut = root / "peft-cat", root / "peft-svd"
    mixtune("merge", "--method", "task_arithmetic", "--inputs", ",".join(map(str, adapters)), "--weights", weights,
            "--out", exact)
    mixtune("merge", "--method", "linear", "--normalize", "false", "--inputs", ",".join(map(str, adapters)),
            "--weights", weights, "--rank", "3", "--out", cut)
    for out, combination, tolerance in ((exact, dict(combination_type="cat"), 1e-6),
                                        (cut, dict(combination_type="svd", svd_rank=3), 1e-5)):
        peft = peft_weighted_adapter_deltas(base, adapters, WEIGHTS, **combination)
        ours = dense_deltas(out)
        assert sorted(ours) == sorted(peft), combination
        for module, delta in peft.items():
            largest = float(np.abs(delta).max())
            diff = float(np.abs(ours[module] - delta).max())
            assert largest > 1e-3 and diff <= tolerance * largest, f"{combination} {module}: {diff:.3g} of {largest:.3g}"
        print(f"{combination['combination_type']}: {len(peft)} modules equal PEFT's within {tolerance} relative")
