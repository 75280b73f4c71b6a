"""Regenerates merging/src/test/resources/golden/ (see interop/GOLDENS.md, section "Merging"): small random checkpoints and
PEFT adapters, and what every merge method must make of them, computed here in numpy from the published formulas.

Run: interop/.venv/bin/python interop/make_merge_goldens.py [out_dir]   (default: the committed golden directory)
Deterministic: every array comes from numpy's default_rng with a fixed seed; DARE's drop masks from SplitMix64 as
documented in io.mixtune.merging.DareMask, re-implemented below.

The references follow the papers (and mergekit where they are silent, or where mixtune adopts its choice: DARE's and
TIES's rescale to the task vector's L1 norm), written independently of the Java code:
task vectors are fp32 differences m_i - base (the dtype checkpoints are computed in), everything after that in float64,
rounded to float32 once at the end. Expected tensors are stored as float32 before any rounding to the output dtype.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "merging" / "src" / "test" / "resources" / "golden"

HIDDEN, INTER, VOCAB = 8, 16, 12
SHAPES = {
    "model.embed_tokens.weight": (VOCAB, HIDDEN),
    "model.layers.0.self_attn.q_proj.weight": (HIDDEN, HIDDEN),
    "model.layers.0.mlp.down_proj.weight": (HIDDEN, INTER),
    "model.layers.0.mlp.up_proj.weight": (INTER, HIDDEN),
    "model.norm.weight": (HIDDEN,),
    "lm_head.weight": (VOCAB, HIDDEN),
}
# A non-float tensor that merging must carry over unchanged (every input has the same bytes).
POSITION_IDS = "model.position_ids"
CONFIG = {
    "architectures": ["MistralForCausalLM"],
    "model_type": "mistral",
    "hidden_size": HIDDEN,
    "intermediate_size": INTER,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 4,
    "vocab_size": VOCAB,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}
TOKENIZER = {"version": "1.0", "model": {"type": "WordLevel", "vocab": {f"t{i}": i for i in range(VOCAB)}}}

ADAPTER_MODULES = {  # module -> (out, in)
    "model.layers.0.self_attn.q_proj": (HIDDEN, HIDDEN),
    "model.layers.0.mlp.down_proj": (HIDDEN, INTER),
}
# name -> (r, alpha, use_rslora, modules): ranks and scales differ, a2 adapts q_proj only.
ADAPTERS = {
    "a0": (2, 4.0, False, ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"]),
    "a1": (3, 6.0, True, ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"]),
    "a2": (4, 4.0, False, ["model.layers.0.self_attn.q_proj"]),
}

F32, BF16 = "float32", "bfloat16"


# ---- DARE's generator: SplitMix64, exactly as io.mixtune.merging.DareMask documents it --------------------------------

M64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def mix64(z: int) -> int:
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def fnv1a64(text: str) -> int:
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def dare_uniforms(seed: int, model_index: int, name: str, n: int) -> np.ndarray:
    stream = mix64(mix64(mix64(seed) ^ fnv1a64(name)) + model_index)
    z = np.uint64(stream) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GOLDEN_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


# ---- the reference formulas ------------------------------------------------------------------------------------------


def linear(models: list[np.ndarray], weights: list[float], normalize: bool = True) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    c = w / w.sum() if normalize else w
    out = np.zeros(models[0].shape, dtype=np.float64)
    for ci, m in zip(c, models):
        out += ci * m.astype(np.float64)
    return out


def ema(checkpoints: list[np.ndarray], decay: float) -> np.ndarray:
    """ema = decay * ema + (1 - decay) * x_i, started at the oldest checkpoint."""
    out = checkpoints[0].astype(np.float64)
    for x in checkpoints[1:]:
        out = decay * out + (1 - decay) * x.astype(np.float64)
    return out


def magnitude_trim(delta: np.ndarray, density: float) -> np.ndarray:
    """TIES's trim: keep the int(density * n) largest |d|, ties to the lower index (a stable descending sort)."""
    if density >= 1:
        return delta
    flat = delta.ravel()
    keep = np.argsort(-np.abs(flat), kind="stable")[: int(density * flat.size)]
    out = np.zeros_like(flat)
    out[keep] = flat[keep]
    return out.reshape(delta.shape)


def l1_rescaled(delta: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """mergekit's rescale (sparsify.py, rescaled_masked_tensor with RescaleNorm.l1): the kept entries times
    sum|d| / sum|kept|, left as they are when either sum is below 1e-7."""
    before, after = np.abs(delta.astype(np.float64)).sum(), np.abs(kept.astype(np.float64)).sum()
    if before < 1e-7 or after < 1e-7:
        return kept
    return (kept.astype(np.float64) * (before / after)).astype(np.float32)


def dare_drop(delta: np.ndarray, density: float, rescale: bool, seed: int, model_index: int, name: str) -> np.ndarray:
    if density >= 1:
        return delta
    keep = dare_uniforms(seed, model_index, name, delta.size).reshape(delta.shape) < density
    kept = np.where(keep, delta, np.float32(0)).astype(np.float32)
    return l1_rescaled(delta, kept) if rescale else kept


def magnitude_outliers(delta: np.ndarray, density: float, gamma: float) -> np.ndarray:
    """Breadcrumbs' trim (mergekit's sparsify.magnitude_outliers): in ascending magnitude (a stable sort), drop the
    int(gamma n) largest and the n - int(density n) - int(gamma n) smallest. mergekit's slice [n_bot:-n_top] keeps
    nothing when int(gamma n) is 0; mixtune keeps what the formula says, and so does this."""
    if density >= 1:
        return delta
    flat = delta.ravel()
    n = flat.size
    top = int(gamma * n)
    bottom = n - int(density * n) - top
    if bottom < 0:
        top, bottom = top + bottom, 0
    keep = np.argsort(np.abs(flat), kind="stable")[bottom: n - top]
    out = np.zeros_like(flat)
    out[keep] = flat[keep]
    return out.reshape(delta.shape)


def della_drop(delta: np.ndarray, density: float, epsilon: float, seed: int, model_index: int, name: str) -> np.ndarray:
    """DELLA's MagPrune (mergekit's sparsify.della_magprune): per row (a 1-d tensor is one row), entry of ascending
    magnitude rank r (stable) kept with probability density - epsilon + 2 epsilon r / (L - 1); the draws are DARE's
    SplitMix64 uniforms where mergekit calls torch.bernoulli."""
    if density >= 1:
        return delta
    rows = delta.reshape(1, -1) if delta.ndim < 2 else delta.reshape(-1, delta.shape[-1])
    length = rows.shape[1]
    ranks = np.argsort(np.argsort(np.abs(rows), axis=1, kind="stable"), axis=1, kind="stable")
    normalized = ranks / (length - 1) if length > 1 else np.zeros(rows.shape)
    probabilities = (density - epsilon) + normalized * 2 * epsilon
    keep = dare_uniforms(seed, model_index, name, delta.size).reshape(rows.shape) < probabilities
    return np.where(keep, rows, np.float32(0)).astype(np.float32).reshape(delta.shape)


def model_stock(base: np.ndarray, models: list[np.ndarray], filter_wise: bool) -> np.ndarray:
    """Model Stock (mergekit's model_stock.py): t = N cos / (1 + (N - 1) cos) from the mean pairwise cosine of the
    float32 task vectors (per row with filter_wise), out = t mean(models) + (1 - t) base."""
    w0 = base.astype(np.float32)
    shape = (-1, w0.shape[-1]) if filter_wise and w0.ndim >= 2 else (1, -1)
    offsets = [(m.astype(np.float32) - w0).reshape(shape).astype(np.float64) for m in models]
    cosines = []
    for i in range(len(offsets)):
        for j in range(i + 1, len(offsets)):
            a, b = offsets[i], offsets[j]
            norms = np.sqrt((a * a).sum(-1)) * np.sqrt((b * b).sum(-1))
            cosines.append(np.clip((a * b).sum(-1) / np.maximum(norms, 1e-6), -1, 1))
    cos = np.mean(cosines, axis=0)[:, None]
    n = len(models)
    t = n * cos / (1 + (n - 1) * cos)
    mean = sum(m.astype(np.float64) for m in models).reshape(shape) / n
    return (t * mean + (1 - t) * w0.reshape(shape).astype(np.float64)).reshape(base.shape)


def nearswap(base: np.ndarray, model: np.ndarray, t: float) -> np.ndarray:
    """mergekit merge_methods/nearswap.py."""
    a, b = base.astype(np.float64), model.astype(np.float64)
    weight = np.clip(t / np.maximum(np.abs(a - b), 1e-6), 0, 1)
    return weight * b + (1 - weight) * a


def nuslerp(t: float, v0: np.ndarray, v1: np.ndarray, dim: int = -1, eps: float = 1e-8,
            flatten: bool = False) -> np.ndarray:
    """mergekit merge_methods/nuslerp.py nuslerp(), in float64."""
    out_shape = v0.shape

    def normalize(x, eps=1e-7):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)

    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = np.swapaxes(v0, dim, -1), np.swapaxes(v1, dim, -1)
    cos_theta = np.sum(normalize(v0) * normalize(v1), axis=-1, keepdims=True)
    theta = np.arccos(np.clip(cos_theta, -1, 1))
    sin_theta = np.sin(theta)
    colinear = np.abs(sin_theta) < eps
    with np.errstate(divide="ignore", invalid="ignore"):
        res = (np.sin((1 - t) * theta) * v0 + np.sin(t * theta) * v1) / sin_theta
    res = np.where(colinear, (1 - t) * v0 + t * v1, res)
    if dim != -1 and not flatten:
        res = np.swapaxes(res, dim, -1)
    return res.reshape(out_shape)


def nuslerp_merge(base, models, weights, row_wise: bool, flatten: bool) -> np.ndarray:
    """mergekit NuSlerpTask.execute: t = w_1 / (w_0 + w_1), task vectors (float32 differences) with a base."""
    t = 0.5 if abs(sum(weights)) < 1e-6 else weights[1] / sum(weights)
    dim = 0 if row_wise else -1
    if base is None:
        return nuslerp(t, models[0].astype(np.float64), models[1].astype(np.float64), dim=dim, flatten=flatten)
    d0, d1 = ((m - base).astype(np.float64) for m in models)
    return base.astype(np.float64) + nuslerp(t, d0, d1, dim=dim, flatten=flatten)


def multislerp(tensors, weight, base_tensor=None, normalize_weights=True, eps=1e-8) -> np.ndarray:
    """mergekit merge_methods/multislerp.py, in float64 (task vectors as float32 differences)."""
    if len(tensors) == 1:
        return tensors[0].astype(np.float64)
    stacked = np.stack(tensors, axis=0)
    if base_tensor is not None:
        stacked = stacked - base_tensor
    stacked = stacked.astype(np.float64)
    flat = stacked.reshape(stacked.shape[0], -1)
    weights = np.asarray(weight, dtype=np.float64)
    if normalize_weights:
        weights = weights / weights.sum()
    norms = np.linalg.norm(flat, axis=-1, keepdims=True)
    unit = flat / (norms + eps)
    mean = (unit * weights.reshape(-1, 1)).sum(0)
    mean_norm = np.linalg.norm(mean)
    assert mean_norm >= eps
    mean = mean / mean_norm
    dots = (unit * mean).sum(-1, keepdims=True)
    tangent_result = ((unit - dots * mean) * weights.reshape(-1, 1)).sum(0)
    tangent_norm = np.linalg.norm(tangent_result) + eps
    result = mean * np.cos(tangent_norm) + tangent_result * (np.sin(tangent_norm) / tangent_norm)
    result = (result * (norms.squeeze(-1) * weights).sum()).reshape(stacked.shape[1:])
    return result + base_tensor.astype(np.float64) if base_tensor is not None else result


def karcher(tensors, alphas, max_iter=10, tol=1e-5) -> np.ndarray:
    """mergekit merge_methods/karcher.py karcher_merge_tensors(), in float64."""
    tensors = [t.astype(np.float64) for t in tensors]
    if len(tensors) == 1:
        return tensors[0]
    norms, units = [], []
    for t in tensors:
        n = np.linalg.norm(t)
        norms.append(float(n))
        units.append(np.zeros_like(t) if n == 0.0 else t / n)
    valid = [i for i, n in enumerate(norms) if n > tol]
    if not valid:
        return np.zeros_like(tensors[0])
    alpha_sum = sum(alphas[i] for i in valid)
    normalized = [alphas[i] / alpha_sum for i in valid]
    valid_units = [units[i] for i in valid]
    u = np.zeros_like(valid_units[0])
    for a, ui in zip(normalized, valid_units):
        u += a * ui
    norm_u = np.linalg.norm(u)
    u = valid_units[0].copy() if norm_u < tol else u / norm_u
    for _ in range(max_iter):
        T = np.zeros_like(u)
        for a, ui in zip(normalized, valid_units):
            dot = np.clip(np.dot(u.ravel(), ui.ravel()), -1.0, 1.0)
            theta = np.arccos(dot)
            if theta < tol:
                continue
            T += a * (theta / np.sin(theta)) * (ui - dot * u)
        norm_T = np.linalg.norm(T)
        if norm_T < tol:
            break
        u = np.cos(norm_T) * u + np.sin(norm_T) * (T / norm_T)
        u_norm = np.linalg.norm(u)
        if u_norm > tol:
            u = u / u_norm
    return sum(a * n for a, n in zip(alphas, norms)) * u


def sce(base: np.ndarray, models: list[np.ndarray], select_topk: float) -> np.ndarray:
    """mergekit merge_methods/sce.py sce_merge() with generalized_task_arithmetic's get_mask(method="sum"), float64
    after float32 task vectors; topk ties to the lower index."""
    tvs = np.stack([m - base for m in models], axis=0).astype(np.float64)
    if select_topk < 1:
        if select_topk <= 0:
            mask = np.zeros(tvs.shape[1:])
        else:
            var = np.var(tvs, axis=0)
            k = int(np.count_nonzero(var) * select_topk)
            mask = np.zeros(var.size)
            if k > 0:
                mask[np.argsort(-np.abs(var).ravel(), kind="stable")[:k]] = 1
            mask = mask.reshape(var.shape)
        tvs = tvs * mask[None]
    majority = (tvs.sum(axis=0) >= 0) * 2 - 1
    erase = (np.sign(tvs) == majority).astype(np.float64)
    weights = np.mean(tvs ** 2, axis=tuple(range(1, tvs.ndim)))
    weights = np.ones_like(weights) / len(weights) if abs(weights.sum()) < 1e-6 else weights / weights.sum()
    erased = weights.reshape((-1,) + (1,) * (tvs.ndim - 1)) * erase
    return base.astype(np.float64) + (tvs * erased).sum(axis=0) / np.maximum(erased.sum(axis=0), 1e-6)


def arcee_fusion(base: np.ndarray, model: np.ndarray) -> np.ndarray:
    """mergekit merge_methods/arcee_fusion.py, float64, every entry in the quantiles (mergekit samples past 1e6)."""
    a, b = base.astype(np.float64), model.astype(np.float64)

    def softmax(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    p, q = softmax(b) + 1e-8, softmax(a) + 1e-8
    importance = np.abs(b - a) * np.sum(p * np.log(p / q), axis=-1, keepdims=True)
    ordered = np.sort(importance.ravel())

    def quantile(x):
        return ordered[int(x * (ordered.size - 1))]

    threshold = quantile(0.5) + 1.5 * (quantile(0.75) - quantile(0.25))
    return a + (model - base).astype(np.float64) * (importance >= threshold)


def ram(base: np.ndarray, models: list[np.ndarray], epsilon: float, plus: bool, r: float = 0.1,
        alpha: float = 0.2) -> np.ndarray:
    """mergekit merge_methods/ram.py ram_merge() and ramplus_tl_merge(), float64 after float32 task vectors."""
    tv = np.stack([m - base for m in models], axis=0).astype(np.float64).reshape(len(models), -1)
    nonzero = np.abs(tv) > epsilon
    counts = nonzero.sum(axis=0, keepdims=True)
    overlap, unique = counts > 1, counts == 1
    scale = np.ones((len(models), 1))
    if plus:
        rho = (nonzero & overlap).sum(axis=1) / np.maximum((nonzero & unique).sum(axis=1), epsilon)
        scale = (1 + r * np.clip(rho, 0, alpha))[:, None]
    tv_z = tv * nonzero
    merged = (tv_z * unique * scale + tv_z * overlap / np.maximum(counts, 1)).sum(axis=0)
    return base.astype(np.float64) + merged.reshape(base.shape)


def task_vectors_merge(method: str, name: str, base: np.ndarray, models: list[np.ndarray], weights: list[float],
                       densities: list[float], normalize: bool, lam: float, seed: int, rescale: bool | None = None,
                       gammas=None, epsilons=None):
    if rescale is None:  # mergekit's defaults: dare_* and della* rescale, ties and breadcrumbs* do not
        rescale = method.startswith("dare") or method.startswith("della")
    deltas = []
    for i, m in enumerate(models):
        d = (m.astype(np.float32) - base.astype(np.float32)).astype(np.float32)
        if method == "ties":
            trimmed = magnitude_trim(d, densities[i])
            d = l1_rescaled(d, trimmed) if rescale and densities[i] < 1 else trimmed
        elif method.startswith("dare"):
            d = dare_drop(d, densities[i], rescale, seed, i, name)
        elif method.startswith("breadcrumbs"):
            trimmed = magnitude_outliers(d, densities[i], gammas[i])
            d = l1_rescaled(d, trimmed) if rescale and densities[i] < 1 else trimmed
        elif method.startswith("della"):
            kept = della_drop(d, densities[i], epsilons[i], seed, i, name)
            d = l1_rescaled(d, kept) if rescale and densities[i] < 1 else kept
        deltas.append(d)
    e = [w * d.astype(np.float64) for w, d in zip(weights, deltas)]
    w = np.asarray(weights, dtype=np.float64)
    if method in ("ties", "dare_ties", "breadcrumbs_ties", "della"):
        mass = np.zeros(base.shape)
        for ei in e:
            mass += ei
        elected = np.where(mass >= 0, 1.0, -1.0)
        mixed = np.zeros(base.shape)
        divisor = np.zeros(base.shape)
        for wi, ei in zip(w, e):
            agree = np.sign(ei) == elected
            mixed += np.where(agree, ei, 0.0)
            divisor += np.where(agree, wi, 0.0)
        divisor[divisor == 0] = 1
    else:
        mixed = np.zeros(base.shape)
        for ei in e:
            mixed += ei
        divisor = w.sum() if abs(w.sum()) >= 1e-8 else 1.0
    if normalize:
        mixed = mixed / divisor
    return base.astype(np.float64) + lam * mixed


def slerp(t: float, v0: np.ndarray, v1: np.ndarray, threshold: float = 0.9995, eps: float = 1e-8) -> np.ndarray:
    """Shoemake's slerp on the flattened tensors; lerp where they are nearly colinear (mergekit's rule)."""
    a = v0.astype(np.float64).ravel()
    b = v1.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    dot = float(np.sum((a / na if na > eps else a) * (b / nb if nb > eps else b)))
    if abs(dot) > threshold:
        out = (1 - t) * a + t * b
    else:
        theta = np.arccos(dot)
        out = np.sin((1 - t) * theta) / np.sin(theta) * a + np.sin(t * theta) / np.sin(theta) * b
    return out.reshape(v0.shape)


# ---- mergekit's slices, planned as its MergePlanner (plan.py) plans them -----------------------------------------------
# Four-layer Mixtral-shaped models: a layer's tensors include its router and both experts' weights.

LAYERS, EXPERTS = 4, 2
LAYER_SHAPES = {
    "input_layernorm.weight": (HIDDEN,),
    "self_attn.q_proj.weight": (HIDDEN, HIDDEN),
    "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
    "block_sparse_moe.gate.weight": (EXPERTS, HIDDEN),
    **{f"block_sparse_moe.experts.{e}.w{k}.weight": (INTER, HIDDEN) if k == 1 else (HIDDEN, INTER)
       for e in range(EXPERTS) for k in (1, 2)},
}
LAYERED_SHAPES = {
    "model.embed_tokens.weight": (VOCAB, HIDDEN),
    **{f"model.layers.{i}.{n}": shape for i in range(LAYERS) for n, shape in LAYER_SHAPES.items()},
    "model.norm.weight": (HIDDEN,),
    "lm_head.weight": (VOCAB, HIDDEN),
}
LAYERED_CONFIG = dict(CONFIG, architectures=["MixtralForCausalLM"], model_type="mixtral", num_hidden_layers=LAYERS,
                      num_local_experts=EXPERTS, num_experts_per_tok=1)


def setting(value, name: str, t: float):
    """mergekit's evaluate_setting: a number; a gradient interpolated at t; filtered values, first match (or None)."""
    if value is None or isinstance(value, (int, float)):
        return value
    if all(isinstance(v, (int, float)) for v in value):
        if len(value) == 1:
            return value[0]
        scaled = t * (len(value) - 1)
        i = min(int(np.floor(scaled)), len(value) - 2)
        return (1 - (scaled - i)) * value[i] + (scaled - i) * value[i + 1]
    for entry in value:
        if entry.get("filter") in (None, "*") or entry["filter"] in name:
            return setting(entry["value"], name, t)
    return None


def parameter(config: dict, out_slice: dict, key: str, name: str, t: float, source=None, default=None):
    """ConfigReader.parameter: the source's value, then the slice's, then the method-wide one."""
    for level in ([source.get("parameters", {})] if source else []) + [out_slice.get("parameters", {}),
                                                                       config.get("parameters", {})]:
        value = setting(level.get(key), name, t)
        if value is not None:
            return value
    return default


def as_slices(config: dict) -> dict:
    """mergekit's normalize_config: models become one slice over every layer, the base added as a source if absent."""
    if "slices" in config:
        return config
    sources = [dict(m, layer_range=[0, LAYERS]) for m in config["models"]]
    if "base_model" in config and all(m["model"] != config["base_model"] for m in config["models"]):
        sources.append({"model": config["base_model"], "layer_range": [0, LAYERS]})
    return {**{k: v for k, v in config.items() if k != "models"}, "slices": [{"sources": sources}]}


def plan_slices(config: dict, models: dict[str, dict]) -> dict[str, np.ndarray]:
    """Every output tensor of a slices config: the embeddings from the first slice's sources, the layers renumbered in
    order (layer k of a slice from layer first + k of each source, at t = k / (n - 1)), the rest from the last slice's
    sources; each merged by the method with the parameters ConfigReader gives it."""
    slices = config["slices"]
    out, layer = {}, 0

    def merged(out_slice, out_name, input_names, t):
        sources = out_slice["sources"]
        method = config["merge_method"]
        tensors = [models[s["model"]][n] for s, n in zip(sources, input_names)]
        if method == "passthrough":
            assert len(sources) == 1
            return tensors[0].astype(np.float64) * parameter(config, out_slice, "scale", out_name, t, sources[0], 1.0)
        base_at = next((i for i, s in enumerate(sources) if s["model"] == config.get("base_model")), None)
        others = [i for i in range(len(sources)) if i != base_at]
        base = None if base_at is None else tensors[base_at]
        if method == "karcher":
            return karcher(tensors, [1.0 / len(tensors)] * len(tensors),
                           parameter(config, out_slice, "max_iter", out_name, t, None, 10),
                           parameter(config, out_slice, "tol", out_name, t, None, 1e-5))
        if method == "sce":
            return sce(base, [tensors[i] for i in others],
                       parameter(config, out_slice, "select_topk", out_name, t, None, 1.0))
        if method in ("ram", "ramplus_tl"):
            return ram(base, [tensors[i] for i in others],
                       parameter(config, out_slice, "epsilon", out_name, t, None, 1e-5), method == "ramplus_tl",
                       parameter(config, out_slice, "r", out_name, t, None, 0.1),
                       parameter(config, out_slice, "alpha", out_name, t, None, 0.2))
        if method == "arcee_fusion":
            return arcee_fusion(base, tensors[others[0]])
        if method == "nearswap":
            return nearswap(base, tensors[others[0]], parameter(config, out_slice, "t", out_name, t))
        if method in ("nuslerp", "multislerp"):
            weights = [parameter(config, out_slice, "weight", out_name, t, sources[i]) for i in others]
            if method == "nuslerp":
                return nuslerp_merge(base, [tensors[i] for i in others], weights,
                                     parameter(config, out_slice, "nuslerp_row_wise", out_name, t, None, False),
                                     parameter(config, out_slice, "nuslerp_flatten", out_name, t, None, True))
            return multislerp([tensors[i] for i in others], weights, base,
                              parameter(config, out_slice, "normalize_weights", out_name, t, None, True))
        if method == "linear":
            return linear(tensors, [parameter(config, out_slice, "weight", out_name, t, s) for s in sources],
                          parameter(config, out_slice, "normalize", out_name, t, None, True))
        base_at = next(i for i, s in enumerate(sources) if s["model"] == config["base_model"])
        others = [i for i in range(len(sources)) if i != base_at]
        if method == "model_stock":
            return model_stock(tensors[base_at], [tensors[i] for i in others],
                               parameter(config, out_slice, "filter_wise", out_name, t, None, False))

        def each(key, default=None):
            return [parameter(config, out_slice, key, out_name, t, sources[i], default) for i in others]

        normalize = parameter(config, out_slice, "normalize", out_name, t, None, method in ("ties", "della"))
        return task_vectors_merge(method, out_name, tensors[base_at], [tensors[i] for i in others], each("weight"),
                                  each("density", 1.0), normalize,
                                  parameter(config, out_slice, "lambda", out_name, t, None, 1.0), config.get("seed", 0),
                                  parameter(config, out_slice, "rescale", out_name, t), each("gamma", 0.01),
                                  each("epsilon", 0.15))

    first, last = slices[0], slices[-1]
    out["model.embed_tokens.weight"] = merged(first, "model.embed_tokens.weight", ["model.embed_tokens.weight"] * len(
        first["sources"]), 0)
    for out_slice in slices:
        sources = out_slice["sources"]
        n = sources[0]["layer_range"][1] - sources[0]["layer_range"][0]
        for k in range(n):
            t = k / (n - 1) if n > 1 else 1
            for suffix in LAYER_SHAPES:
                out_name = f"model.layers.{layer}.{suffix}"
                names = [f"model.layers.{s['layer_range'][0] + k}.{suffix}" for s in sources]
                out[out_name] = merged(out_slice, out_name, names, t)
            layer += 1
    for name in ("model.norm.weight", "lm_head.weight"):
        out[name] = merged(last, name, [name] * len(last["sources"]), 0)
    return out


# ---- inputs ------------------------------------------------------------------------------------------------------------


def write_checkpoint(out: Path, tensors: dict[str, np.ndarray], dtype: str, shards: int = 1, config=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch_dtype = torch.bfloat16 if dtype == BF16 else torch.float32
    t = {k: torch.from_numpy(np.ascontiguousarray(v)).to(torch_dtype) for k, v in tensors.items()}
    t[POSITION_IDS] = torch.arange(6, dtype=torch.int64)
    meta = {"format": "pt"}
    if shards == 1:
        save_file(t, out / "model.safetensors", metadata=meta)
    else:
        names = sorted(t)
        split = len(names) // 2
        weight_map, total = {}, 0
        for n, part in enumerate([names[:split], names[split:]], start=1):
            fname = f"model-{n:05d}-of-00002.safetensors"
            save_file({k: t[k] for k in part}, out / fname, metadata=meta)
            for k in part:
                weight_map[k] = fname
                total += t[k].numel() * t[k].element_size()
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config = dict(CONFIG if config is None else config, torch_dtype=dtype)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "tokenizer.json").write_text(json.dumps(TOKENIZER) + "\n")


def random_models(seed: int, count: int, dtype: str, shapes=None) -> tuple[dict, list[dict]]:
    """A base and `count` fine-tunes of it: base + a task vector of std 0.05 (norms stay near 1)."""
    rng = np.random.default_rng(seed)
    base = {}
    for name, shape in (SHAPES if shapes is None else shapes).items():
        base[name] = (1 + 0.1 * rng.standard_normal(shape) if name.endswith("norm.weight")
                      else 0.2 * rng.standard_normal(shape)).astype(np.float32)
    models = [{n: (v + 0.05 * rng.standard_normal(v.shape)).astype(np.float32) for n, v in base.items()}
              for _ in range(count)]
    if dtype == BF16:
        def round_bf16(tensors):
            return {n: torch.from_numpy(v).to(torch.bfloat16).to(torch.float32).numpy() for n, v in tensors.items()}
        base, models = round_bf16(base), [round_bf16(m) for m in models]
    return base, models


def slerp_pair(seed: int) -> tuple[dict, dict]:
    """Tensor pairs at chosen cosines: each side of the 0.9995 colinearity threshold, wide, opposite and zero."""
    rng = np.random.default_rng(seed)
    a, b = {}, {}

    def at_cosine(name, cos, n=48):
        x = rng.standard_normal(n)
        y = rng.standard_normal(n)
        y -= x * (x @ y) / (x @ x)
        x /= np.linalg.norm(x)
        y /= np.linalg.norm(y)
        a[name] = (0.7 * x).astype(np.float32).reshape(6, 8)
        b[name] = (1.3 * (cos * x + np.sqrt(1 - cos * cos) * y)).astype(np.float32).reshape(6, 8)

    at_cosine("colinear.weight", 0.99990)
    at_cosine("near.weight", 0.99800)
    at_cosine("wide.weight", 0.3)
    at_cosine("opposite.weight", -0.99995)
    a["zero.weight"] = np.zeros((4, 4), dtype=np.float32)
    b["zero.weight"] = rng.standard_normal((4, 4)).astype(np.float32)
    return a, b


def write_adapter(out: Path, r: int, alpha: float, rslora: bool, modules: list[str], rng) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    factors = {}
    for module in modules:
        o, i = ADAPTER_MODULES[module]
        a = (0.3 * rng.standard_normal((r, i))).astype(np.float32)
        b = (0.3 * rng.standard_normal((o, r))).astype(np.float32)
        tensors[f"base_model.model.{module}.lora_A.weight"] = torch.from_numpy(a)
        tensors[f"base_model.model.{module}.lora_B.weight"] = torch.from_numpy(b)
        factors[module] = (a, b)
    save_file(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "../checkpoints/base",
        "r": r, "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": sorted({m.split(".")[-1] for m in modules}),
        "bias": "none", "use_rslora": rslora, "use_dora": False, "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {},
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    scale = alpha / (np.sqrt(r) if rslora else r)
    return {m: scale * b.astype(np.float64) @ a.astype(np.float64) for m, (a, b) in factors.items()}


def truncated(delta: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    u, s, vt = np.linalg.svd(delta, full_matrices=False)
    error = float(np.sqrt((s[k:] ** 2).sum() / (s ** 2).sum()))
    return (u[:, :k] * s[:k]) @ vt[:k], error


# ---- cases -------------------------------------------------------------------------------------------------------------


def case(name, method, models, expected, **options):
    return {"name": name, "method": method, "models": models, **options, "expected": f"expected/{name}.safetensors"}, expected


def make(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    base, ms = random_models(1234, 3, F32)
    write_checkpoint(out / "checkpoints" / "base", base, F32)
    for i, m in enumerate(ms):
        write_checkpoint(out / "checkpoints" / f"m{i}", m, F32, shards=2 if i == 2 else 1)
    bbase, bms = random_models(99, 2, BF16)
    write_checkpoint(out / "bf16" / "base", bbase, BF16)
    for i, m in enumerate(bms):
        write_checkpoint(out / "bf16" / f"m{i}", m, BF16)
    sa, sb = slerp_pair(7)
    for label, tensors in (("a", sa), ("b", sb)):
        write_checkpoint(out / "slerp" / label, tensors, F32)

    names = list(SHAPES)
    M = [f"checkpoints/m{i}" for i in range(3)]
    B = "checkpoints/base"

    def per_tensor(fn):
        return {n: fn(n) for n in names}

    cases = [
        case("linear", "linear", M, per_tensor(lambda n: linear([m[n] for m in ms], [1, 2, 0.5])), weights=[1, 2, 0.5]),
        case("linear-unnormalized", "linear", M, per_tensor(lambda n: linear([m[n] for m in ms], [0.6, 0.3, 0.3], False)),
             weights=[0.6, 0.3, 0.3], normalize=False),
        case("swa", "swa", M, per_tensor(lambda n: linear([m[n] for m in ms], [1, 1, 1]))),
        case("lawa-last2", "lawa", M, per_tensor(lambda n: linear([m[n] for m in ms[1:]], [1, 1])), last=2),
        case("ema", "ema", M, per_tensor(lambda n: ema([m[n] for m in ms], 0.8)), decay=0.8),
        case("warm", "warm", M, per_tensor(lambda n: linear([m[n] for m in ms], [1, 1, 1]))),
        case("task_arithmetic", "task_arithmetic", M, per_tensor(lambda n: task_vectors_merge(
            "task_arithmetic", n, base[n], [m[n] for m in ms], [1, 0.5, 0.7], [1, 1, 1], False, 0.8, 0)),
             base=B, weights=[1, 0.5, 0.7], **{"lambda": 0.8}),
        case("ties", "ties", M, per_tensor(lambda n: task_vectors_merge(
            "ties", n, base[n], [m[n] for m in ms], [1, 0.8, 0.6], [0.6, 0.4, 0.5], True, 1.0, 0)),
             base=B, weights=[1, 0.8, 0.6], densities=[0.6, 0.4, 0.5]),
        case("ties-unnormalized", "ties", M, per_tensor(lambda n: task_vectors_merge(
            "ties", n, base[n], [m[n] for m in ms], [0.5, 0.5, 0.5], [0.3] * 3, False, 1.0, 0)),
             base=B, weights=[0.5, 0.5, 0.5], density=0.3, normalize=False),
        case("ties-rescale", "ties", M, per_tensor(lambda n: task_vectors_merge(
            "ties", n, base[n], [m[n] for m in ms], [1, 0.8, 0.6], [0.6, 0.4, 0.5], True, 1.0, 0, rescale=True)),
             base=B, weights=[1, 0.8, 0.6], densities=[0.6, 0.4, 0.5], rescale=True),
        case("dare_linear", "dare_linear", M, per_tensor(lambda n: task_vectors_merge(
            "dare_linear", n, base[n], [m[n] for m in ms], [1, 1, 1], [0.6] * 3, False, 1.0, 7)),
             base=B, density=0.6, seed=7),
        case("dare_ties", "dare_ties", M, per_tensor(lambda n: task_vectors_merge(
            "dare_ties", n, base[n], [m[n] for m in ms], [0.9, 0.6, 0.3], [0.5] * 3, False, 1.0, 11)),
             base=B, weights=[0.9, 0.6, 0.3], density=0.5, seed=11),
        case("dare_linear-norescale", "dare_linear", M, per_tensor(lambda n: task_vectors_merge(
            "dare_linear", n, base[n], [m[n] for m in ms], [1, 1, 1], [0.4] * 3, False, 1.0, -3, rescale=False)),
             base=B, density=0.4, seed=-3, rescale=False),
        case("linear-to-bf16", "linear", M, per_tensor(lambda n: linear([m[n] for m in ms], [1, 1, 1])), dtype=BF16),
        case("bf16-linear", "linear", ["bf16/m0", "bf16/m1"],
             per_tensor(lambda n: linear([m[n] for m in bms], [3, 1])), weights=[3, 1]),
        case("bf16-ties", "ties", ["bf16/m0", "bf16/m1"], per_tensor(lambda n: task_vectors_merge(
            "ties", n, bbase[n], [m[n] for m in bms], [1, 1], [0.4, 0.4], True, 1.0, 0)),
             base="bf16/base", density=0.4),
        case("slerp", "slerp", ["slerp/a", "slerp/b"], {n: slerp(0.3, sa[n], sb[n]) for n in sa}, t=0.3),
        case("slerp-base", "slerp", ["slerp/a", "slerp/b"], {n: slerp(0.7, sa[n], sb[n]) for n in sa},
             base="slerp/a", t=0.7),
    ]

    rng = np.random.default_rng(4321)
    deltas = {}
    for label, (r, alpha, rslora, modules) in ADAPTERS.items():
        deltas[label] = write_adapter(out / "adapters" / label, r, alpha, rslora, modules, rng)
    A = [f"adapters/{label}" for label in ADAPTERS]

    def adapter_sum(coefficients):
        return {m: sum(c * deltas[label].get(m, 0.0) for c, label in zip(coefficients, ADAPTERS))
                for m in sorted(ADAPTER_MODULES)}

    w = np.array([1.0, 2.0, 1.0])
    linear_sum = adapter_sum(w / w.sum())
    cases += [
        case("adapters-linear", "linear", A, linear_sum, weights=[1, 2, 1]),
        case("adapters-ema", "ema", A, {m: ema([deltas[label].get(m, np.zeros(ADAPTER_MODULES[m])) for label in ADAPTERS],
                                               0.5) for m in sorted(ADAPTER_MODULES)}, decay=0.5),
        case("adapters-task_arithmetic", "task_arithmetic", A, adapter_sum([1.5, -0.75, 1.5]),
             weights=[1, -0.5, 1], **{"lambda": 1.5}),
    ]
    compressed, errors = {}, []
    for module, delta in linear_sum.items():
        compressed[module], error = truncated(delta, 3)
        errors.append(error)
    compressed["errors"] = np.array(errors)
    cases.append(case("adapters-linear-rank3", "linear", A, compressed, weights=[1, 2, 1], rank=3))

    (out / "expected").mkdir()
    listing = []
    for spec, expected in cases:
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).astype(np.float32))
                   for k, v in expected.items()}
        save_file(tensors, out / spec["expected"], metadata={"format": "pt"})
        listing.append(spec)
    (out / "cases.json").write_text(json.dumps(listing, indent=1) + "\n")
    (out / "averaging.json").write_text(json.dumps(averaging_golden(), indent=1) + "\n")
    check_margins(out, base, ms, bbase, bms, sa, sb)
    write_mergekit_cases(out)


def write_mergekit_cases(out: Path) -> None:
    """mergekit_cases.json: mergekit configs (model paths relative to the golden directory) beside what numpy makes of
    them, every output tensor; the cases of mergekit's forms and methods that cases.json's flat form cannot say."""
    lbase, lms = random_models(2024, 2, F32, LAYERED_SHAPES)
    models = {"layered/base": lbase, "layered/m0": lms[0], "layered/m1": lms[1]}
    for path, tensors in models.items():
        write_checkpoint(out / path, tensors, F32, config=LAYERED_CONFIG)
    cases = [
        ("passthrough-frankenmerge", {
            "slices": [{"sources": [{"model": "layered/m0", "layer_range": [0, 3]}]},
                       {"sources": [{"model": "layered/m1", "layer_range": [1, 4], "parameters": {"scale": [
                           {"filter": "o_proj", "value": [0.5, 0.0]}, {"filter": "w2", "value": 0.25},
                           {"value": 1.0}]}}]}],
            "merge_method": "passthrough", "dtype": "float32"}),
        ("ties-slices", {
            "slices": [{"sources": [{"model": "layered/base", "layer_range": [0, 2]},
                                    {"model": "layered/m0", "layer_range": [0, 2], "parameters": {"weight": 0.7}},
                                    {"model": "layered/m1", "layer_range": [2, 4]}]},
                       {"sources": [{"model": "layered/base", "layer_range": [2, 4]},
                                    {"model": "layered/m0", "layer_range": [1, 3]},
                                    {"model": "layered/m1", "layer_range": [0, 2], "parameters": {"weight": 0.4}}],
                        "parameters": {"density": [0.3, 0.8], "weight": [{"filter": "experts", "value": 0.9}]}}],
            "merge_method": "ties", "base_model": "layered/base",
            "parameters": {"density": 0.5, "weight": 0.6, "normalize": True}}),
    ]
    two = [{"model": "layered/m0"}, {"model": "layered/m1"}]
    cases += [
        ("model_stock", {"merge_method": "model_stock", "base_model": "layered/base", "models": two}),
        ("model_stock-filter_wise", {"merge_method": "model_stock", "base_model": "layered/base", "models": two,
                                     "parameters": {"filter_wise": True}}),
        ("breadcrumbs", {"merge_method": "breadcrumbs", "base_model": "layered/base", "models": [
            {"model": "layered/m0", "parameters": {"weight": 1.0, "density": 0.6, "gamma": 0.05}},
            {"model": "layered/m1", "parameters": {"weight": 0.5}}], "parameters": {"density": 0.7, "gamma": 0.1}}),
        ("breadcrumbs_ties", {"merge_method": "breadcrumbs_ties", "base_model": "layered/base", "models": [
            {"model": "layered/m0", "parameters": {"weight": 1.0}}, {"model": "layered/m1", "parameters": {"weight": 0.8}}],
            "parameters": {"density": 0.5, "gamma": 0.02}}),
        ("della", {"merge_method": "della", "base_model": "layered/base", "models": [
            {"model": "layered/m0", "parameters": {"weight": 1.0}}, {"model": "layered/m1", "parameters": {"weight": 0.7}}],
            "parameters": {"density": 0.6, "epsilon": 0.2}, "seed": 5}),
        ("della_linear", {"merge_method": "della_linear", "base_model": "layered/base", "models": [
            {"model": "layered/m0", "parameters": {"weight": 0.6, "epsilon": 0.05}},
            {"model": "layered/m1", "parameters": {"weight": 0.6}}],
            "parameters": {"density": [0.4, 0.7], "epsilon": 0.15, "lambda": 0.9}, "seed": 3}),
        ("nearswap", {"merge_method": "nearswap", "base_model": "layered/base", "models": [{"model": "layered/m0"}],
                      "parameters": {"t": [0.02, 0.08]}}),
        ("nuslerp", {"merge_method": "nuslerp", "models": [
            {"model": "layered/m0", "parameters": {"weight": 0.7}}, {"model": "layered/m1", "parameters": {"weight": 0.3}}]}),
        ("nuslerp-base-rows", {"merge_method": "nuslerp", "base_model": "layered/base", "models": [
            {"model": "layered/m0", "parameters": {"weight": 1.0}}, {"model": "layered/m1", "parameters": {"weight": 2.0}}],
            "parameters": {"nuslerp_flatten": False}}),
        ("nuslerp-base-columns", {"merge_method": "nuslerp", "base_model": "layered/base", "models": [
            {"model": "layered/m0", "parameters": {"weight": [0.2, 0.8]}}, {"model": "layered/m1", "parameters": {"weight": 0.5}}],
            "parameters": {"nuslerp_flatten": False, "nuslerp_row_wise": True}}),
        ("multislerp", {"merge_method": "multislerp", "models": [
            {"model": "layered/m0", "parameters": {"weight": 0.6}}, {"model": "layered/m1", "parameters": {"weight": 0.4}},
            {"model": "layered/base", "parameters": {"weight": 0.5}}]}),
        ("multislerp-base", {"merge_method": "multislerp", "base_model": "layered/base", "models": [
            {"model": "layered/m0", "parameters": {"weight": 1.0}}, {"model": "layered/m1", "parameters": {"weight": 3.0}}],
            "parameters": {"normalize_weights": False}}),
        ("karcher", {"merge_method": "karcher", "base_model": "layered/base", "models": two}),
        ("karcher-iterations", {"merge_method": "karcher", "models": two, "parameters": {"max_iter": 3, "tol": 1e-9}}),
        ("sce", {"merge_method": "sce", "base_model": "layered/base", "models": two}),
        ("sce-topk", {"merge_method": "sce", "base_model": "layered/base", "models": two,
                      "parameters": {"select_topk": [0.3, 0.9]}}),
        ("arcee_fusion", {"merge_method": "arcee_fusion", "base_model": "layered/base", "models": [{"model": "layered/m1"}]}),
        ("ram", {"merge_method": "ram", "base_model": "layered/base", "models": two, "parameters": {"epsilon": 0.04}}),
        ("ramplus_tl", {"merge_method": "ramplus_tl", "base_model": "layered/base", "models": two,
                        "parameters": {"epsilon": [0.03, 0.07], "r": 0.5, "alpha": 0.9}}),
        # mergekit computes in dtype and writes out_dtype (plan.py SaveTensor); config.json says out_dtype.
        ("linear-out_dtype", {"merge_method": "linear", "models": [
            {"model": "layered/m0", "parameters": {"weight": 0.3}}, {"model": "layered/m1", "parameters": {"weight": 0.7}}],
            "dtype": "float32", "out_dtype": "bfloat16"}),
    ]
    listing = []
    for name, config in cases:
        expected = plan_slices(as_slices(config), models)
        layers = sum(s["sources"][0]["layer_range"][1] - s["sources"][0]["layer_range"][0]
                     for s in as_slices(config)["slices"])
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).astype(np.float32))
                   for k, v in expected.items()}
        if config.get("out_dtype") == BF16:
            tensors = {k: v.to(torch.bfloat16).to(torch.float32) for k, v in tensors.items()}
        save_file(tensors, out / "expected" / f"{name}.safetensors", metadata={"format": "pt"})
        listing.append({"name": name, "config": config, "num_hidden_layers": layers,
                        "expected": f"expected/{name}.safetensors"})
    (out / "mergekit_cases.json").write_text(json.dumps(listing, indent=1) + "\n")


def averaging_golden() -> dict:
    """torch.optim.swa_utils itself, for the in-training averagers: SWA (AveragedModel's default average), EMA
    (AveragedModel with get_ema_multi_avg_fn) over five snapshots, and SWALR's learning rates."""
    from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn

    rng = np.random.default_rng(77)
    snapshots = [rng.standard_normal(6).astype(np.float32) for _ in range(5)]
    model = torch.nn.Linear(3, 2, bias=False)
    swa = AveragedModel(model)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.75))
    swa_after, ema_after = [], []
    with torch.no_grad():
        for snapshot in snapshots:
            model.weight.copy_(torch.from_numpy(snapshot).reshape(2, 3))
            swa.update_parameters(model)
            ema.update_parameters(model)
            swa_after.append(swa.module.weight.detach().reshape(-1).tolist())
            ema_after.append(ema.module.weight.detach().reshape(-1).tolist())
    schedules = []
    for strategy, anneal in (("cos", 4), ("linear", 4), ("cos", 0)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = SWALR(optimizer, swa_lr=0.01, anneal_epochs=anneal, anneal_strategy=strategy)
        lrs = [optimizer.param_groups[0]["lr"]]
        for _ in range(7):
            optimizer.step()
            scheduler.step()
            lrs.append(optimizer.param_groups[0]["lr"])
        schedules.append({"strategy": strategy, "anneal_steps": anneal, "lr": 0.1, "swa_lr": 0.01, "lrs": lrs})
    return {"snapshots": [s.tolist() for s in snapshots], "swa": swa_after, "ema_decay": 0.75, "ema": ema_after,
            "swalr": schedules}


def check_margins(out, base, ms, bbase, bms, sa, sb) -> None:
    """Goldens that a 1-ulp difference could flip would test luck: sign elections and the slerp branch must be clear."""
    for n in SHAPES:
        for b, models, w in ((base, ms, [1, 0.8, 0.6]), (bbase, bms, [1, 1])):
            mass = sum(wi * (m[n] - b[n]).astype(np.float64) for wi, m in zip(w, models))
            near = np.abs(mass)[mass != 0]
            assert near.size == 0 or near.min() > 1e-6, f"{n}: a summed task vector is {near.min():.2g} from 0"
    for n in sa:
        a, b = sa[n].astype(np.float64).ravel(), sb[n].astype(np.float64).ravel()
        if np.linalg.norm(a) > 0:
            cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            assert abs(abs(cos) - 0.9995) > 5e-5, f"{n}: cosine {cos} too close to the colinearity threshold"
    print(f"wrote {out}")


if __name__ == "__main__":
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN)
