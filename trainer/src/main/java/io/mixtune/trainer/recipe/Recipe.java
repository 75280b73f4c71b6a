package io.mixtune.trainer.recipe;

import io.mixtune.data.dataset.DataConfig;
import io.mixtune.lora.adapter.LoraConfig;
import java.util.List;
import java.util.Map;

/**
 * A training recipe: plain data, one record per YAML section, keys the snake_case of the component names. Defaults
 * live in {@code configs/recipe-defaults.yaml}, under every recipe, so a recipe names only what it changes.
 */
public record Recipe(Model model, Lora lora, DataConfig data, Train train, Averaging averaging, String outputDir) {

    public Recipe {
        if (outputDir == null || outputDir.isBlank()) {
            throw new IllegalArgumentException("output_dir: missing: where the adapter, checkpoints and metrics go");
        }
    }

    /**
     * @param path a Hugging Face checkpoint directory (config.json + safetensors)
     * @param preset instead of a path, a preset of {@code configs/models/} with random weights (tiny ones only), written
     *     once to {@code output_dir/base-model}
     * @param quantize nf4 (QLoRA) or none
     * @param computeDtype auto (fp32 on CPU, fp16 on GPU), fp32 or fp16
     * @param device auto, cpu or gpu
     * @param adapter a PEFT adapter directory to start from instead of a fresh adapter, or null
     */
    public record Model(String path, String preset, String quantize, String computeDtype, String device,
            String adapter) {
        public Model {
            if ((path == null) == (preset == null)) {
                throw new IllegalArgumentException("path: give exactly one of model.path (a checkpoint directory) and "
                        + "model.preset (one of configs/models/)");
            }
            oneOf("quantize", quantize, "nf4", "none");
            oneOf("compute_dtype", computeDtype, "auto", "fp32", "fp16");
            oneOf("device", device, "auto", "cpu", "gpu");
        }
    }

    /** The adapter, with PEFT's meanings (scale alpha / r, or alpha / sqrt(r) with rslora). */
    public record Lora(int r, double alpha, double dropout, List<String> targets, boolean rslora,
            Map<String, Integer> rankPattern, Map<String, Double> alphaPattern) {
        public Lora {
            try {
                new LoraConfig(r, alpha, dropout, targets, rslora, rankPattern, alphaPattern);
            } catch (IllegalArgumentException e) {
                // LoraConfig words its errors for PEFT's names; point at the recipe key instead.
                String message = e.getMessage();
                String key = message.startsWith("lora r ") ? "r" : message.startsWith("lora alpha ") ? "alpha"
                        : message.startsWith("lora dropout ") ? "dropout" : message.startsWith("rank_pattern")
                        ? "rank_pattern" : "targets";
                throw new IllegalArgumentException(key + ": " + message);
            }
        }

        public LoraConfig toConfig() {
            return new LoraConfig(r, alpha, dropout, targets, rslora, rankPattern, alphaPattern);
        }
    }

    /**
     * The optimisation. One optimizer step sees micro_batch_size x gradient_accumulation rows (packed) or samples.
     *
     * @param epochs passes over the training set; ignored when maxSteps is set
     * @param maxSteps optimizer steps to run, or null to run whole epochs
     * @param schedule constant, linear or cosine (transformers' schedules, with linear warmup over warmupSteps)
     * @param evalEvery steps between validation passes (0: only at the end)
     * @param saveEvery steps between checkpoints (0: only at the end)
     * @param keepLast checkpoints kept; older ones are deleted
     * @param gradientCheckpointing keep only each decoder layer's input in the forward pass and recompute the layer in
     *     backward (same gradients, activation memory layers x tokens x hidden)
     * @param routerAuxLoss add Mixtral's load-balancing loss times the config's router_aux_loss_coef
     */
    public record Train(String method, Integer epochs, Integer maxSteps, int microBatchSize, int gradientAccumulation,
            double lr, String schedule, int warmupSteps, double weightDecay, double maxGradNorm, double adamBeta1,
            double adamBeta2, double adamEps, long seed, boolean gradientCheckpointing, int evalEvery, int saveEvery,
            int keepLast, boolean routerAuxLoss, int logEvery) {
        public Train {
            oneOf("method", method, "sft");
            if (maxSteps == null && (epochs == null || epochs <= 0)) {
                throw new IllegalArgumentException("epochs: must be a positive integer unless max_steps is set, got "
                        + epochs);
            }
            if (maxSteps != null && maxSteps <= 0) {
                throw new IllegalArgumentException("max_steps: must be a positive integer, got " + maxSteps);
            }
            positive("micro_batch_size", microBatchSize);
            positive("gradient_accumulation", gradientAccumulation);
            if (!(lr > 0 && lr < 1)) {
                throw new IllegalArgumentException("lr: must lie in (0, 1), got " + lr);
            }
            oneOf("schedule", schedule, "constant", "linear", "cosine");
            nonNegative("warmup_steps", warmupSteps);
            if (!(weightDecay >= 0)) {
                throw new IllegalArgumentException("weight_decay: must be >= 0, got " + weightDecay);
            }
            if (!(maxGradNorm >= 0)) {
                throw new IllegalArgumentException("max_grad_norm: must be >= 0 (0 turns clipping off), got "
                        + maxGradNorm);
            }
            if (!(adamBeta1 >= 0 && adamBeta1 < 1)) {
                throw new IllegalArgumentException("adam_beta1: must lie in [0, 1), got " + adamBeta1);
            }
            if (!(adamBeta2 >= 0 && adamBeta2 < 1)) {
                throw new IllegalArgumentException("adam_beta2: must lie in [0, 1), got " + adamBeta2);
            }
            if (!(adamEps > 0)) {
                throw new IllegalArgumentException("adam_eps: must be > 0, got " + adamEps);
            }
            nonNegative("eval_every", evalEvery);
            nonNegative("save_every", saveEvery);
            positive("keep_last", keepLast);
            positive("log_every", logEvery);
        }
    }

    /**
     * Weight averages kept beside training, each evaluated next to the raw weights and written as its own adapter
     * (adapter-ema, adapter-swa, adapter-lawa). Each is off until its first key is set.
     *
     * @param emaDecay EMA of the weights, ema = decay * ema + (1 - decay) * w after every step (timm's ModelEmaV3);
     *     null: off
     * @param emaWarmup warm the decay up as 1 - (1 + s / ema_warmup_gamma)^-ema_warmup_power, capped at ema_decay
     * @param swaStart SWA from this step (a whole number >= 1) or this fraction of the run (in [0, 1)); null: off
     * @param swaEvery steps between two SWA snapshots
     * @param swaLr the SWA learning rate (torch's SWALR: anneal to it over swa_anneal_steps from swa_start, then hold);
     *     null: the schedule's
     * @param lawaK LaWA: the uniform average of the latest k snapshots; 0: off
     * @param lawaEvery steps between two LaWA snapshots
     * @param lawaFeedBack copy the LaWA average into the trained weights at each snapshot (default: evaluation only)
     */
    public record Averaging(Double emaDecay, boolean emaWarmup, double emaWarmupGamma, double emaWarmupPower,
            long emaUpdateAfterStep, double emaMinDecay, Double swaStart, int swaEvery, Double swaLr,
            int swaAnnealSteps, String swaAnneal, int lawaK, int lawaEvery, boolean lawaFeedBack) {
        public Averaging {
            if (emaDecay != null && !(emaDecay >= 0 && emaDecay < 1)) {
                throw new IllegalArgumentException("ema_decay: must lie in [0, 1), got " + emaDecay);
            }
            if (!(emaWarmupGamma > 0)) {
                throw new IllegalArgumentException("ema_warmup_gamma: must be > 0, got " + emaWarmupGamma);
            }
            if (!(emaWarmupPower > 0)) {
                throw new IllegalArgumentException("ema_warmup_power: must be > 0, got " + emaWarmupPower);
            }
            if (emaUpdateAfterStep < 0) {
                throw new IllegalArgumentException("ema_update_after_step: must be >= 0, got " + emaUpdateAfterStep);
            }
            if (!(emaMinDecay >= 0 && emaMinDecay < 1)) {
                throw new IllegalArgumentException("ema_min_decay: must lie in [0, 1), got " + emaMinDecay);
            }
            if (swaStart != null && !(swaStart >= 0 && swaStart < 1 || swaStart >= 1 && swaStart == Math.rint(swaStart))) {
                throw new IllegalArgumentException("swa_start: expected a fraction of the run in [0, 1) or a whole step "
                        + "number >= 1, got " + swaStart);
            }
            positive("swa_every", swaEvery);
            if (swaLr != null && !(swaLr > 0 && swaLr < 1)) {
                throw new IllegalArgumentException("swa_lr: must lie in (0, 1), got " + swaLr);
            }
            nonNegative("swa_anneal_steps", swaAnnealSteps);
            oneOf("swa_anneal", swaAnneal, "cos", "linear");
            nonNegative("lawa_k", lawaK);
            positive("lawa_every", lawaEvery);
        }
    }

    static void oneOf(String key, String value, String... allowed) {
        if (value == null || !List.of(allowed).contains(value)) {
            throw new IllegalArgumentException(key + ": expected one of " + String.join(", ", allowed) + ", got "
                    + (value == null ? "nothing" : "\"" + value + "\""));
        }
    }

    private static void positive(String key, int value) {
        if (value <= 0) {
            throw new IllegalArgumentException(key + ": must be a positive integer, got " + value);
        }
    }

    private static void nonNegative(String key, int value) {
        if (value < 0) {
            throw new IllegalArgumentException(key + ": must be >= 0, got " + value);
        }
    }
}
