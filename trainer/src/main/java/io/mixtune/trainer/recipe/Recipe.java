package io.mixtune.trainer.recipe;

import io.mixtune.data.dataset.DataConfig;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.LoraInit;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.trainer.optim.LearningRateSchedule;
import io.mixtune.trainer.optim.LoraPlus;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A training recipe: plain data, one record per YAML section, keys the snake_case of the component names. Defaults
 * live in {@code configs/recipe-defaults.yaml}, under every recipe, so a recipe names only what it changes.
 */
public record Recipe(Model model, Lora lora, DataConfig data, Train train, Averaging averaging, Dpo dpo,
        Kto kto, Orpo orpo, Cpo cpo, GrpoConfig grpo, RlooConfig rloo, Distillation distillation, Logging logging,
        Reward reward, Warm warm, String outputDir) {

    private static final String QUANTIZE_IS_NF4 = "model.quantize: nf4 is bitsandbytes' load_in_4bit with "
            + "bnb_4bit_quant_type nf4 and double quantization (blocksize 64), the only 4-bit setting";
    /** TRL's SFTConfig.padding_free: its SFTTrainer turns it on for bfd and bfd_split packing whatever the value. */
    private static final String PADDING_FREE = "packed rows are padding-free already: with data.packing (bfd, "
            + "bfd_split) each sample is a sequence of its own in a row (positions restart, attention stays inside it), "
            + "as TRL's padding-free collator makes them; unpacked batches are padded, which trains the same tokens "
            + "to the same loss: set data.packing: true for padding-free rows";
    private static final String OPTIM_IS_OPTIMIZER = "transformers' optim is train.optimizer: adamw_torch (torch's "
            + "AdamW, also for adamw_torch_fused and paged_adamw_32bit) or adamw_bnb_8bit, paged_adamw_8bit, adamw_8bit "
            + "(bitsandbytes' 8-bit AdamW)";
    /** train.optimizer's names: transformers' OptimizerNames of the two updates mixtune has. */
    public static final List<String> OPTIMIZERS = List.of("adamw_torch", "adamw_bnb_8bit", "paged_adamw_8bit",
            "adamw_8bit");

    private static final String ORPO_MAX_LENGTH = "TRL's max_length is data.max_seq_len: a longer pair keeps its "
            + "first max_seq_len tokens, the prompt whole and each answer's end cut, as DPO's";
    private static final String ORPO_DROPOUT = "TRL's disable_dropout (true) zeroes every dropout: set lora.dropout: 0";

    /**
     * Settings that PEFT, bitsandbytes and transformers users write, by the dotted key they would take here, and why
     * mixtune has none: such a key is refused with this, not as a mere unknown key.
     */
    static final Map<String, String> NOT_OFFERED = Map.ofEntries(
            Map.entry("lora.bias", "mixtune's adapters train no biases (PEFT's bias: none, its default; Mistral's "
                    + "linear layers have none)"),
            Map.entry("lora.modules_to_save", "mixtune trains the LoRA arrays only (and a reward model's score head)"),
            Map.entry("lora.fan_in_fan_out", "Mistral's weights are [out, in] (nn.Linear): PEFT's fan_in_fan_out is "
                    + "false for them"),
            Map.entry("data.completion_only_loss", "a prompt_completion record trains its completion only (TRL's "
                    + "default for prompt-completion data); data.loss_on: train_on_inputs trains the prompt too (TRL's "
                    + "completion_only_loss: false); a text trains every token"),
            Map.entry("data.padding_free", PADDING_FREE),
            Map.entry("train.padding_free", PADDING_FREE),
            Map.entry("model.bnb_4bit_quant_type", QUANTIZE_IS_NF4),
            Map.entry("model.bnb_4bit_use_double_quant", QUANTIZE_IS_NF4),
            Map.entry("model.load_in_4bit", QUANTIZE_IS_NF4),
            Map.entry("train.optim", OPTIM_IS_OPTIMIZER),
            Map.entry("train.min_lr_rate", "transformers' min_lr_rate of cosine_with_min_lr and "
                    + "cosine_warmup_with_min_lr is train.min_lr_ratio"),
            Map.entry("train.min_lr", "give the floor as train.min_lr_ratio: min_lr / lr (transformers divides min_lr "
                    + "by lr the same way)"),
            Map.entry("cpo.loss_type", "TRL's loss_type is cpo.loss (sigmoid, hinge, ipo or simpo), as dpo.loss"),
            Map.entry("cpo.alpha", "AlphaPO's reward shaping (TRL's CPOConfig alpha) is not offered: cpo trains on the "
                    + "log-probs themselves (alpha 0, TRL's default)"),
            Map.entry("orpo.max_length", ORPO_MAX_LENGTH),
            Map.entry("cpo.max_length", ORPO_MAX_LENGTH),
            Map.entry("orpo.disable_dropout", ORPO_DROPOUT),
            Map.entry("cpo.disable_dropout", ORPO_DROPOUT),
            Map.entry("train.lr_scheduler_kwargs", "transformers' lr_scheduler_kwargs are train keys of their own "
                    + "names (num_cycles, power, lr_end, timescale, num_stable_steps, num_decay_steps, warmup_type, "
                    + "decay_type, warmup_lr_rate; min_lr_rate is min_lr_ratio)"));

    public Recipe {
        if (outputDir == null || outputDir.isBlank()) {
            throw new IllegalArgumentException("output_dir: missing: where the adapter, checkpoints and metrics go");
        }
    }

    /** The settings a run that samples completions (grpo, rloo) samples and scores with: grpo's, or rloo's. */
    public GrpoConfig policyGradient() {
        return train.method().equals("rloo") ? rloo.sampling() : grpo;
    }

    /** The section {@link #policyGradient} comes from, as keys name it: grpo or rloo. */
    public String policyGradientSection() {
        return train.method().equals("rloo") ? "rloo" : "grpo";
    }

    /**
     * A file or directory the recipe reads.
     *
     * @param named as the recipe writes it
     * @param path where it is read from (a data file may be one bundled in the jar)
     * @param data a data file (training, validation or a DPO stage), whose content a resumed run checks unchanged
     */
    public record Input(String named, Path path, boolean data) {}

    /**
     * Every input the recipe names, by its key ({@code model.path}, {@code data.files[0]}, {@code dpo.stages[1]},
     * ...), in that order: the one list that the refusals to write over an input and the data hashes a run records
     * are made from.
     */
    public Map<String, Input> inputs() {
        Map<String, Input> inputs = new LinkedHashMap<>();
        if (model.path() != null) {
            inputs.put("model.path", new Input(model.path(), Path.of(model.path()), false));
        }
        if (model.adapter() != null) {
            inputs.put("model.adapter", new Input(model.adapter(), Path.of(model.adapter()), false));
        }
        if (distillation != null && distillation.teacherModelNameOrPath() != null) {
            inputs.put("distillation.teacher_model_name_or_path", new Input(distillation.teacherModelNameOrPath(),
                    Path.of(distillation.teacherModelNameOrPath()), false));
        }
        if (distillation != null && distillation.teacherAdapter() != null) {
            inputs.put("distillation.teacher_adapter", new Input(distillation.teacherAdapter(),
                    Path.of(distillation.teacherAdapter()), false));
        }
        putDataFiles(inputs, "data.files", data.files());
        putDataFiles(inputs, "data.validation_files", data.validationFiles());
        if (dpo != null) {
            putDataFiles(inputs, "dpo.stages", dpo.stageFiles());
            if (dpo.marginModel() != null) {
                inputs.put("dpo.margin_model", new Input(dpo.marginModel(), Path.of(dpo.marginModel()), false));
            }
        }
        return inputs;
    }

    private static void putDataFiles(Map<String, Input> inputs, String key, List<String> files) {
        for (int i = 0; i < files.size(); i++) {
            inputs.put(key + "[" + i + "]", new Input(files.get(i), DataConfig.file(files.get(i)), true));
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
            KeyChecks checks = new KeyChecks();
            if ((path == null) == (preset == null)) {
                checks.add("path: give exactly one of model.path (a checkpoint directory) and "
                        + "model.preset (one of configs/models/)");
            }
            checks.oneOf("quantize", quantize, "nf4", "none");
            checks.oneOf("compute_dtype", computeDtype, "auto", "fp32", "fp16");
            checks.oneOf("device", device, "auto", "cpu", "gpu");
            checks.throwIfAny();
        }
    }

    /**
     * The adapter, with PEFT's meanings (scale alpha / r, or alpha / sqrt(r) with rslora; useDora: PEFT's use_dora,
     * DoRA's magnitude per output row trained beside A and B; initLoraWeights: PEFT's init_lora_weights, how a fresh
     * adapter starts, {@link LoraInit}; loftqIter: LoftQConfig's loftq_iter, 1 only).
     */
    public record Lora(int r, double alpha, double dropout, List<String> targets, boolean rslora,
            Map<String, Integer> rankPattern, Map<String, Double> alphaPattern, boolean useDora,
            LoraInit initLoraWeights, Integer loftqIter) {
        public Lora {
            if (initLoraWeights == null) {
                initLoraWeights = LoraInit.PEFT_DEFAULT;
            }
            if (loftqIter == null) {
                loftqIter = 1;
            }
            if (loftqIter != 1) {
                throw new IllegalArgumentException("loftq_iter: " + loftqIter + ": mixtune runs LoftQ's one-shot "
                        + "(loftq_iter 1, PEFT's replace_lora_weights_loftq), whose base stays NF4(W); with more "
                        + "iterations PEFT's loftq_init makes the base NF4(W - B A), a changed base that would have to "
                        + "be shipped beside the adapter");
            }
            if (initLoraWeights.kind() == LoraInit.Kind.ORTHOGONAL && (r % 2 != 0
                    || rankPattern.values().stream().anyMatch(rank -> rank % 2 != 0))) {
                throw new IllegalArgumentException("init_lora_weights: orthogonal splits a random orthogonal r x r "
                        + "matrix's rows in two halves, so every rank must be even (PEFT refuses an odd one too): r "
                        + r + ", rank_pattern " + rankPattern);
            }
            if (initLoraWeights.loftq() && useDora) {
                throw new IllegalArgumentException("init_lora_weights: loftq with use_dora: PEFT's DoRA magnitude "
                        + "starts from ||W + scale B A||, not a LoftQ start mixtune has checked: drop one of them");
            }
            if (initLoraWeights.mutatesBase() && useDora) {
                throw new IllegalArgumentException("init_lora_weights: " + initLoraWeights + " with use_dora cannot "
                        + "be written as a plain LoRA adapter of the original base (PEFT's conversion drops DoRA's "
                        + "magnitude): drop one of them");
            }
            if (initLoraWeights.mutatesBase() && rslora && (!rankPattern.isEmpty() || !alphaPattern.isEmpty())) {
                throw new IllegalArgumentException("init_lora_weights: " + initLoraWeights + " with rslora and a "
                        + "rank_pattern or alpha_pattern cannot be converted to a plain LoRA adapter (PEFT's "
                        + "save_pretrained refuses it too): drop rslora or the patterns");
            }
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
            return new LoraConfig(r, alpha, dropout, targets, rslora, rankPattern, alphaPattern).withDora(useDora);
        }
    }

    /**
     * The optimisation. One optimizer step sees micro_batch_size x gradient_accumulation rows (packed) or samples.
     *
     * @param epochs passes over the training set; ignored when maxSteps is set
     * @param maxSteps optimizer steps to run, or null to run whole epochs
     * @param schedule transformers' lr_scheduler_type ({@link LearningRateSchedule.Kind}): constant (which warms up
     *     over warmupSteps first, transformers' constant_with_warmup), linear, cosine, cosine_with_restarts,
     *     polynomial, inverse_sqrt, cosine_warmup_with_min_lr or warmup_stable_decay
     * @param warmupRatio instead of warmupSteps, this fraction of the steps (of a DPO stage's) warms up, rounded up as
     *     transformers' get_warmup_steps; null: warmupSteps
     * @param minLrRatio the floor as a fraction of lr of cosine (transformers' cosine_with_min_lr with min_lr_rate,
     *     axolotl's cosine_min_lr_ratio), cosine_warmup_with_min_lr (min_lr_rate) and warmup_stable_decay
     *     (min_lr_ratio)
     * @param numCycles and the keys up to warmupLrRate: transformers' lr_scheduler_kwargs of the same names
     *     ({@link LearningRateSchedule.Kwargs}); null: the schedule's default
     * @param weightDecay AdamW's decoupled weight decay, on every adapter array (with LoRA+ too: PEFT's
     *     loraplus_weight_decay)
     * @param loraplusLrRatio LoRA+ (PEFT's create_loraplus_optimizer): lora_B trains at lr x this ratio; null: off
     * @param optimizer transformers' optim name: adamw_torch (torch.optim.AdamW) or adamw_bnb_8bit, paged_adamw_8bit,
     *     adamw_8bit (bitsandbytes' AdamW with 8-bit blockwise moments, {@link io.mixtune.trainer.optim.AdamW8bit})
     * @param loraplusLrEmbedding LoRA+'s rate of a LoRA embedding's arrays (none in a mixtune adapter today)
     * @param evalEvery steps between validation passes (0: only at the end)
     * @param saveEvery steps between checkpoints (0: only at the end)
     * @param keepLast checkpoints kept; older ones are deleted
     * @param gradientCheckpointing keep only each decoder layer's input in the forward pass and recompute the layer in
     *     backward (same gradients, activation memory layers x tokens x hidden)
     * @param routerAuxLoss add Mixtral's load-balancing loss times its coefficient (routerAuxLossCoef)
     * @param routerAuxLossCoef that coefficient (transformers' and TRL's router_aux_loss_coef); null: the model
     *     config's router_aux_loss_coef, which transformers' Trainer and axolotl use (TRL 1.13's trainers default
     *     theirs to 0.001 and write it into the config)
     * @param seed seeds the initialisation (LoRA A, a reward model's head) and the validation split, and what
     *     dataSeed does not take over
     * @param dataSeed seeds the order of the training samples and the LoRA dropout masks instead of seed (transformers'
     *     data_seed); null: seed. WARM's members share seed, so their start, and differ in this.
     * @param evalPrompts user messages answered (chat template, decoded as the base's generation_config.json says) at
     *     each evaluation into samples.jsonl
     * @param evalMaxNewTokens most tokens each of those answers gets
     * @param neftuneNoiseAlpha NEFTune (Jain et al. 2023) as transformers' Trainer applies it: uniform noise in (-m, m),
     *     m = alpha / sqrt(L x hidden), added to the input embeddings in SFT's training forward only; null: off
     */
    public record Train(String method, Integer epochs, Integer maxSteps, int microBatchSize, int gradientAccumulation,
            double lr, String schedule, int warmupSteps, Double warmupRatio, double minLrRatio, Double numCycles,
            Double power, Double lrEnd, Integer timescale, Integer numStableSteps, Integer numDecaySteps,
            String warmupType, String decayType, Double warmupLrRate, double weightDecay, Double loraplusLrRatio,
            double loraplusLrEmbedding, double maxGradNorm,
            double adamBeta1,
            double adamBeta2, double adamEps, String optimizer, long seed, Long dataSeed, boolean gradientCheckpointing,
            int evalEvery,
            int saveEvery, int keepLast, boolean routerAuxLoss, Double routerAuxLossCoef, int logEvery,
            List<String> evalPrompts,
            int evalMaxNewTokens, Double neftuneNoiseAlpha, boolean loadBestModelAtEnd, String metricForBestModel,
            Boolean greaterIsBetter, Integer earlyStoppingPatience, double earlyStoppingThreshold) {
        /** dpo, reward, orpo and cpo train on preference pairs (data.files hold pairs, never packed), sft on chats. */
        public boolean readsPreferencePairs() {
            return method.equals("dpo") || method.equals("reward") || trainsWithoutReference();
        }

        /** orpo and cpo: preference pairs without a reference model (ORPO, CPO, SimPO). */
        public boolean trainsWithoutReference() {
            return method.equals("orpo") || method.equals("cpo");
        }

        /** kto trains on unpaired examples ({prompt, completion, label}, or pairs unpaired), never packed. */
        public boolean readsLabeledExamples() {
            return method.equals("kto");
        }

        /**
         * grpo and rloo train on prompts ({prompt} records, other fields for the reward functions), sampling
         * completions.
         */
        public boolean readsPrompts() {
            return method.equals("grpo") || method.equals("rloo");
        }

        /** The warmup of a run (or a DPO stage) of {@code totalSteps}: warmup_steps, or warmup_ratio of them. */
        public int warmupStepsOf(long totalSteps) {
            return LearningRateSchedule.warmupSteps(warmupSteps, warmupRatio, totalSteps);
        }

        /**
         * bitsandbytes' 8-bit AdamW (adamw_bnb_8bit, its alias adamw_8bit, and paged_adamw_8bit, whose paging of the
         * state into host memory under GPU memory pressure changes no value) instead of torch's (adamw_torch).
         */
        public boolean eightBitMoments() {
            return !"adamw_torch".equals(optimizer);
        }

        /** Each adapter array's factor on the schedule's rate ({@link LoraPlus}); null with LoRA+ off. */
        public double[] lrFactors(List<String> parameterNames) {
            return LoraPlus.lrFactors(parameterNames, lr, loraplusLrRatio, loraplusLrEmbedding);
        }

        /** The schedule of a run (or a DPO stage) of {@code totalSteps}. */
        public LearningRateSchedule scheduleOf(long totalSteps) {
            return new LearningRateSchedule(LearningRateSchedule.Kind.named(schedule), lr, warmupStepsOf(totalSteps),
                    (int) totalSteps, scheduleKwargs());
        }

        /** transformers' lr_scheduler_kwargs of the schedule, as set under train. */
        public LearningRateSchedule.Kwargs scheduleKwargs() {
            return new LearningRateSchedule.Kwargs(minLrRatio, numCycles, power, lrEnd, timescale, numStableSteps,
                    numDecaySteps, warmupType, decayType, warmupLrRate);
        }

        /**
         * Whether the method's loss has Mixtral's router term: not distillation (TRL's DistillationTrainer's loss is
         * the divergence alone) nor reward (TRL's RewardTrainer takes the loss of transformers'
         * MixtralForSequenceClassification, a GenericForSequenceClassification that computes no load-balancing loss).
         */
        private static boolean addsRouterTerm(String method) {
            return !"distillation".equals(method) && !"reward".equals(method);
        }

        /**
         * The load-balancing loss's coefficient: router_aux_loss_coef, else the config's, for a Mixtral with
         * router_aux_loss on, else 0 (then no aux_loss is logged either, as TRL's SFTTrainer with a coefficient of 0).
         * 0 for distillation and reward, whose losses have no router term (addsRouterTerm).
         */
        public double routerAuxCoefficient(ModelConfig config) {
            if (!routerAuxLoss || !config.isMixtureOfExperts() || !addsRouterTerm(method)) {
                return 0;
            }
            return routerAuxLossCoef != null ? routerAuxLossCoef : config.routerAuxLossCoef();
        }

        /**
         * Whether evaluations are compared for the best checkpoint (transformers tracks best_metric and
         * best_model_checkpoint whenever metric_for_best_model is set, which load_best_model_at_end defaults to loss;
         * mixtune's early stopping defaults it too).
         */
        public boolean tracksBestModel() {
            return loadBestModelAtEnd || metricForBestModel != null || earlyStoppingPatience != null;
        }

        /** The evaluation metric compared, by its logged name: metric_for_best_model with eval_ put in front. */
        public String bestModelMetric() {
            String name = metricForBestModel == null ? "loss" : metricForBestModel;
            return name.startsWith("eval_") ? name : "eval_" + name;
        }

        /** greater_is_better, else as transformers' TrainingArguments.__post_init__: false for a name ending in loss. */
        public boolean bestModelGreaterIsBetter() {
            return greaterIsBetter != null ? greaterIsBetter
                    : !(metricForBestModel == null ? "loss" : metricForBestModel).endsWith("loss");
        }

        /** The seed of the data order and of the dropout masks: data_seed, else seed. */
        public long shuffleSeed() {
            return dataSeed != null ? dataSeed : seed;
        }

        public Train {
            KeyChecks checks = new KeyChecks();
            checks.oneOf("method", method, "sft", "dpo", "kto", "reward", "orpo", "cpo", "grpo", "rloo",
                    "distillation");
            if (maxSteps == null && (epochs == null || epochs <= 0)) {
                checks.add("epochs: must be a positive integer unless max_steps is set, got "
                        + epochs);
            }
            if (maxSteps != null && maxSteps <= 0) {
                checks.add("max_steps: must be a positive integer, got " + maxSteps);
            }
            checks.positive("micro_batch_size", microBatchSize);
            checks.positive("gradient_accumulation", gradientAccumulation);
            if (!(lr > 0 && lr < 1)) {
                checks.add("lr: must lie in (0, 1), got " + lr);
            }
            String transformersName = schedule == null ? null : switch (schedule) {
                case "constant_with_warmup" -> "mixtune's constant (which warms up over warmup_steps)";
                case "cosine_with_min_lr" -> "mixtune's cosine with min_lr_ratio";
                // ReduceLROnPlateau and GreedyLR keep state that evaluations change, which a checkpoint would have to
                // carry and a resumed run replay; mixtune's rate is a function of the step alone
                case "reduce_lr_on_plateau", "greedy" -> "not offered: it moves the rate on evaluation metrics, and "
                        + "mixtune's schedules are a function of the step alone (what a resumed run recomputes)";
                default -> null;
            };
            if (transformersName != null) {
                checks.add("schedule: transformers' " + schedule + " is " + transformersName);
            } else {
                checks.oneOf("schedule", schedule, LearningRateSchedule.Kind.names().toArray(String[]::new));
                if (schedule != null && LearningRateSchedule.Kind.names().contains(schedule)) {
                    // the parameters, not scheduleKwargs(): the fields are not assigned yet
                    new LearningRateSchedule.Kwargs(minLrRatio, numCycles, power, lrEnd, timescale, numStableSteps,
                            numDecaySteps, warmupType, decayType, warmupLrRate)
                            .problems(LearningRateSchedule.Kind.named(schedule), lr).forEach(checks::add);
                }
            }
            checks.nonNegative("warmup_steps", warmupSteps);
            if (warmupRatio != null && !(warmupRatio >= 0 && warmupRatio <= 1)) {
                checks.add("warmup_ratio: must lie in [0, 1] (the fraction of the steps that warm up), got "
                        + warmupRatio);
            }
            if (!(weightDecay >= 0)) {
                checks.add("weight_decay: must be >= 0, got " + weightDecay);
            }
            if (loraplusLrRatio != null && !(loraplusLrRatio > 0 && loraplusLrRatio < Double.POSITIVE_INFINITY)) {
                checks.add("loraplus_lr_ratio: must be > 0 (lora_B's lr / lora_A's, the paper suggests about 16) or "
                        + "null to turn LoRA+ off, got " + loraplusLrRatio);
            }
            if (!(loraplusLrEmbedding > 0 && loraplusLrEmbedding < 1)) {
                checks.add("loraplus_lr_embedding: must lie in (0, 1), got " + loraplusLrEmbedding);
            }
            if (!(maxGradNorm >= 0)) {
                checks.add("max_grad_norm: must be >= 0 (0 turns clipping off), got "
                        + maxGradNorm);
            }
            if (!(adamBeta1 >= 0 && adamBeta1 < 1)) {
                checks.add("adam_beta1: must lie in [0, 1), got " + adamBeta1);
            }
            if (!(adamBeta2 >= 0 && adamBeta2 < 1)) {
                checks.add("adam_beta2: must lie in [0, 1), got " + adamBeta2);
            }
            if (!(adamEps > 0)) {
                checks.add("adam_eps: must be > 0, got " + adamEps);
            }
            if (!OPTIMIZERS.contains(optimizer)) {
                checks.add("optimizer: must be one of " + String.join(", ", OPTIMIZERS) + " (adamw_torch for "
                        + "adamw_torch_fused and paged_adamw_32bit, the same update; other optimizers and 4-bit moments "
                        + "are not offered), got " + optimizer);
            }
            checks.nonNegative("eval_every", evalEvery);
            checks.nonNegative("save_every", saveEvery);
            checks.positive("keep_last", keepLast);
            if (routerAuxLossCoef != null && !(routerAuxLossCoef >= 0 && Double.isFinite(routerAuxLossCoef))) {
                checks.add("router_aux_loss_coef: must be a finite number >= 0 (the load-balancing loss's weight; null "
                        + "takes the model config's router_aux_loss_coef), got " + routerAuxLossCoef);
            }
            if (routerAuxLossCoef != null && !routerAuxLoss) {
                // a weight of a term that is off would be ignored without a word
                checks.add("router_aux_loss_coef: weighs the load-balancing loss, which train.router_aux_loss: false "
                        + "turns off: drop the coefficient, or set router_aux_loss: true");
            }
            if (routerAuxLossCoef != null && !addsRouterTerm(method)) {
                checks.add("router_aux_loss_coef: train.method " + method + " adds no load-balancing loss (TRL's "
                        + ("reward".equals(method) ? "RewardTrainer takes MixtralForSequenceClassification's loss"
                                : "DistillationTrainer's loss is the divergence alone") + "): drop it");
            }
            checks.positive("log_every", logEvery);
            evalPrompts = evalPrompts == null ? List.of() : List.copyOf(evalPrompts);
            for (int i = 0; i < evalPrompts.size(); i++) {
                if (evalPrompts.get(i).isBlank()) {
                    checks.add("eval_prompts: prompt " + (i + 1) + " is empty: expected a user's message");
                }
            }
            if ("reward".equals(method) && !evalPrompts.isEmpty()) {
                checks.add("eval_prompts: a reward model scores answers and generates none: remove train.eval_prompts "
                        + "for train.method reward");
            }
            checks.positive("eval_max_new_tokens", evalMaxNewTokens);
            if (neftuneNoiseAlpha != null && !(neftuneNoiseAlpha > 0 && Double.isFinite(neftuneNoiseAlpha))) {
                checks.add("neftune_noise_alpha: must be > 0 (null turns NEFTune off), got " + neftuneNoiseAlpha);
            }
            if (neftuneNoiseAlpha != null && !"sft".equals(method)) {
                // transformers' Trainer would hook the embeddings under TRL's DPOTrainer and RewardTrainer as well,
                // and with a PEFT model as its own reference, noise DPO's reference pass too (the hook sees training
                // mode); mixtune noises SFT only and refuses a key it would ignore
                checks.add("neftune_noise_alpha: NEFTune applies to train.method sft only: remove it for train.method "
                        + method);
            }
            if (metricForBestModel != null && metricForBestModel.isBlank()) {
                checks.add("metric_for_best_model: is empty: expected a logged evaluation metric (loss, "
                        + "rewards/accuracies, ...) or null for eval_loss");
            }
            if (earlyStoppingPatience != null && earlyStoppingPatience < 1) {
                checks.add("early_stopping_patience: must be >= 1 (evaluations without improvement before the run "
                        + "stops) or null to turn early stopping off, got " + earlyStoppingPatience);
            }
            if (!(earlyStoppingThreshold >= 0 && earlyStoppingThreshold < Double.POSITIVE_INFINITY)) {
                checks.add("early_stopping_threshold: must be >= 0 (how much the metric must improve), got "
                        + earlyStoppingThreshold);
            }
            if (earlyStoppingThreshold > 0 && earlyStoppingPatience == null) {
                checks.add("early_stopping_threshold: applies to early stopping, which is off: set "
                        + "early_stopping_patience or drop it");
            }
            if (greaterIsBetter != null && !loadBestModelAtEnd && metricForBestModel == null
                    && earlyStoppingPatience == null) {
                // as the threshold above: transformers compares nothing without metric_for_best_model, so the key
                // would be ignored without a word (tracksBestModel's rule, on the constructor's arguments)
                checks.add("greater_is_better: applies to metric_for_best_model, which is off: set "
                        + "metric_for_best_model, load_best_model_at_end or early_stopping_patience, or drop it");
            }
            checks.throwIfAny();
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
            KeyChecks checks = new KeyChecks();
            if (emaDecay != null && !(emaDecay >= 0 && emaDecay < 1)) {
                checks.add("ema_decay: must lie in [0, 1), got " + emaDecay);
            }
            if (!(emaWarmupGamma > 0)) {
                checks.add("ema_warmup_gamma: must be > 0, got " + emaWarmupGamma);
            }
            if (!(emaWarmupPower > 0)) {
                checks.add("ema_warmup_power: must be > 0, got " + emaWarmupPower);
            }
            if (emaUpdateAfterStep < 0) {
                checks.add("ema_update_after_step: must be >= 0, got " + emaUpdateAfterStep);
            }
            if (!(emaMinDecay >= 0 && emaMinDecay < 1)) {
                checks.add("ema_min_decay: must lie in [0, 1), got " + emaMinDecay);
            }
            if (swaStart != null && !(swaStart >= 0 && swaStart < 1 || swaStart >= 1 && swaStart == Math.rint(swaStart))) {
                checks.add("swa_start: expected a fraction of the run in [0, 1) or a whole step "
                        + "number >= 1, got " + swaStart);
            }
            checks.positive("swa_every", swaEvery);
            if (swaLr != null && !(swaLr > 0 && swaLr < 1)) {
                checks.add("swa_lr: must lie in (0, 1), got " + swaLr);
            }
            checks.nonNegative("swa_anneal_steps", swaAnnealSteps);
            checks.oneOf("swa_anneal", swaAnneal, "cos", "linear");
            checks.nonNegative("lawa_k", lawaK);
            checks.positive("lawa_every", lawaEvery);
            checks.throwIfAny();
        }

        /** Whether any average is kept (each is off until its first key is set). */
        public boolean keepsAny() {
            return emaDecay != null || swaStart != null || lawaK > 0;
        }
    }

    /**
     * Direct Preference Optimization (Rafailov et al. 2023) when train.method is dpo, with TRL's losses and metrics.
     * Log-probabilities are sums over the completion tokens; d = (policy chosen - policy rejected) - (reference chosen
     * - reference rejected).
     *
     * @param beta the strength of the pull towards the reference (IPO's tau)
     * @param loss TRL 1.13's loss_type, one name or a list whose losses add up with {@code lossWeights} (MPO-style):
     *     sigmoid, hinge, ipo, exo_pair, nca_pair, robust, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down,
     *     discopop or sigmoid_norm, each TRL's formula ({@link DpoLossType}); TRL's sft is {@code sftWeight}
     * @param lossWeights one weight per loss (TRL's loss_weights); empty: 1 each
     * @param labelSmoothing eps, read by robust (the assumed share of flipped labels), exo_pair (its target
     *     distribution [1 - eps, eps], which must be above 0), aot and aot_unpaired; TRL 1.13's other losses ignore it
     * @param discopopTau discopop's temperature (TRL's discopop_tau, default 0.05)
     * @param fDivergenceType TRL's f_divergence_type (f-DPO, Wang et al. 2023): the divergence from the reference
     *     that the losses built on the chosen-rejected difference regularise with, each side's log-ratio u replaced by
     *     f'(e^u): reverse_kl (u itself, standard DPO), forward_kl (1 - e^-u), js_divergence (log 2 + log sigmoid(u))
     *     or alpha_divergence ((e^((alpha - 1) u) - 1) / (alpha - 1))
     * @param fAlphaDivergenceCoef alpha_divergence's alpha (TRL's f_alpha_divergence_coef, default 0.5)
     * @param ldAlpha LD-DPO (Liu et al. 2024): the log-prob of each completion token past the shorter side's length
     *     counts ld_alpha times (TRL's ld_alpha, in [0, 1]); null: every token once
     * @param useWeighting WPO (Zhou et al. 2024, eq. 2): each pair's loss times the product of its two sides'
     *     exp(mean over the completion tokens of log p(token) - log sum_v p_v^2), the policy's, without gradient (TRL's
     *     use_weighting)
     * @param referenceFree no reference model: its log-probabilities are taken as 0
     * @param sftWeight weight of an added SFT term, the mean negative log-likelihood of the chosen completion tokens
     *     (TRL's loss_type [sigmoid, sft] with loss_weights [1, sft_weight]); 0 leaves it out
     * @param stages Stage-DPO: one number N (the training pairs split in N parts in file order), or one preference
     *     file per stage; stage k trains against the policy that stage k-1 ended with
     * @param precomputeReference compute the reference log-probabilities of a stage's pairs once, before its first
     *     step, instead of in every step
     * @param stageOrder how a number of stages splits the training pairs: file (in file order) or margin (largest
     *     margin first, from clear to subtle pairs as WizardLM-2 stages them; equal margins in file order)
     * @param marginModel for stage_order margin: a reward adapter on the base whose margins order the pairs (scored
     *     once, kept in output_dir); null takes each pair's score_chosen - score_rejected
     */
    public record Dpo(double beta, List<String> loss, List<Double> lossWeights, double labelSmoothing,
            double discopopTau, String fDivergenceType, double fAlphaDivergenceCoef, Double ldAlpha,
            boolean useWeighting, boolean referenceFree, double sftWeight, List<String> stages,
            boolean precomputeReference, String stageOrder, String marginModel) {
        public static final String ORDER_FILE = "file";
        public static final String ORDER_MARGIN = "margin";
        public static final double DEFAULT_DISCOPOP_TAU = 0.05;
        public static final String REVERSE_KL = "reverse_kl";
        public static final String FORWARD_KL = "forward_kl";
        public static final String JS_DIVERGENCE = "js_divergence";
        public static final String ALPHA_DIVERGENCE = "alpha_divergence";
        public static final double DEFAULT_F_ALPHA_DIVERGENCE_COEF = 0.5;

        /** One loss, stages in file order, as before stage_order existed. */
        public Dpo(double beta, String loss, double labelSmoothing, boolean referenceFree, double sftWeight,
                List<String> stages, boolean precomputeReference) {
            this(beta, List.of(loss), List.of(), labelSmoothing, DEFAULT_DISCOPOP_TAU, REVERSE_KL,
                    DEFAULT_F_ALPHA_DIVERGENCE_COEF, null, false, referenceFree, sftWeight, stages, precomputeReference,
                    ORDER_FILE, null);
        }

        public Dpo {
            KeyChecks checks = new KeyChecks();
            if (!(beta > 0)) {
                checks.add("beta: must be > 0, got " + beta);
            }
            loss = loss == null ? List.of() : List.copyOf(loss);
            lossWeights = lossWeights == null ? List.of() : List.copyOf(lossWeights);
            List<DpoLossType> types = new ArrayList<>();
            for (String name : loss) {
                DpoLossType type = DpoLossType.of(name);
                if (type != null) {
                    types.add(type);
                } else if ("sft".equals(name)) {
                    checks.add("loss: TRL's sft term is dpo.sft_weight here (its loss_weight), not a loss name");
                } else {
                    checks.add(oneOfMessage("loss", name, DpoLossType.trlNames().toArray(String[]::new)));
                }
            }
            if (loss.isEmpty()) {
                checks.add("loss: expected one of " + String.join(", ", DpoLossType.trlNames()) + " or a list of them");
            }
            if (!lossWeights.isEmpty() && lossWeights.size() != loss.size()) {
                checks.add("loss_weights: one weight per loss (TRL's loss_weights), got " + lossWeights.size()
                        + " for " + loss.size() + " losses " + loss);
            }
            if (lossWeights.stream().anyMatch(w -> !(w >= 0 && Double.isFinite(w)))) {
                checks.add("loss_weights: each must be a finite number >= 0, got " + lossWeights);
            }
            if (!(labelSmoothing >= 0 && labelSmoothing < 0.5)) {
                checks.add("label_smoothing: must lie in [0, 0.5), got " + labelSmoothing);
            }
            if (labelSmoothing > 0 && types.size() == loss.size()
                    && types.stream().noneMatch(DpoLossType::readsLabelSmoothing)) {
                checks.add("label_smoothing: only loss: robust, exo_pair, aot or aot_unpaired reads it (TRL 1.13's "
                        + String.join(", ", loss) + " ignores it; its label-smoothed sigmoid is robust), and loss is "
                        + String.join(", ", loss));
            }
            if (labelSmoothing == 0 && types.contains(DpoLossType.EXO_PAIR)) {
                checks.add("label_smoothing: loss exo_pair takes log(label_smoothing), so it must be above 0 (the EXO "
                        + "paper recommends 1e-3, as TRL says)");
            }
            if (!(discopopTau > 0 && Double.isFinite(discopopTau))) {
                checks.add("discopop_tau: must be > 0, got " + discopopTau);
            } else if (discopopTau != DEFAULT_DISCOPOP_TAU && types.size() == loss.size()
                    && !types.contains(DpoLossType.DISCOPOP)) {
                checks.add("discopop_tau: only loss discopop reads it, and loss is " + String.join(", ", loss));
            }
            fDivergenceType = fDivergenceType == null ? REVERSE_KL : fDivergenceType;
            checks.oneOf("f_divergence_type", fDivergenceType, REVERSE_KL, FORWARD_KL, JS_DIVERGENCE,
                    ALPHA_DIVERGENCE);
            List<String> unregularised = types.stream().filter(t -> !t.takesFDivergence()).map(DpoLossType::trlName)
                    .toList();
            if (!fDivergenceType.equals(REVERSE_KL) && !unregularised.isEmpty()) {
                checks.add("f_divergence_type: " + fDivergenceType + " applies to the losses built on the chosen - "
                        + "rejected difference (sigmoid, sigmoid_norm, hinge, ipo, exo_pair, robust, discopop), as "
                        + "TRL 1.13 refuses it for " + String.join(", ", unregularised) + ": use reverse_kl with them");
            }
            if (!Double.isFinite(fAlphaDivergenceCoef)) {
                checks.add("f_alpha_divergence_coef: must be a finite number, got " + fAlphaDivergenceCoef);
            } else if (fAlphaDivergenceCoef != DEFAULT_F_ALPHA_DIVERGENCE_COEF
                    && !fDivergenceType.equals(ALPHA_DIVERGENCE)) {
                checks.add("f_alpha_divergence_coef: only f_divergence_type alpha_divergence reads it, and "
                        + "f_divergence_type is " + fDivergenceType);
            }
            if (ldAlpha != null && !(ldAlpha >= 0 && ldAlpha <= 1)) {
                checks.add("ld_alpha: must lie in [0, 1] (1 weighs every token once, 0 drops the tokens past the "
                        + "shorter completion's length), got " + ldAlpha);
            }
            if (!(sftWeight >= 0)) {
                checks.add("sft_weight: must be >= 0, got " + sftWeight);
            }
            if (useWeighting && (types.contains(DpoLossType.AOT) || types.contains(DpoLossType.AOT_UNPAIRED))) {
                checks.add("use_weighting: WPO weighs each pair, and aot and aot_unpaired sort the pairs' log-ratios "
                        + "apart (TRL 1.13 refuses the two together)");
            }
            if (useWeighting && sftWeight > 0) {
                checks.add("use_weighting: TRL 1.13 cannot weigh its sft term per pair (its loss type sft fails with "
                        + "use_weighting), so sft_weight must be 0 with it");
            }
            stages = stages == null || stages.isEmpty() ? List.of("1") : List.copyOf(stages);
            if (stageCount(stages) == null && stages.stream().anyMatch(s -> s.matches("-?\\d+"))) {
                checks.add("stages: expected a positive number of stages or a list of "
                        + "preference files, got " + stages);
            }
            stageOrder = stageOrder == null ? ORDER_FILE : stageOrder;
            checks.oneOf("stage_order", stageOrder, ORDER_FILE, ORDER_MARGIN);
            if (stageOrder.equals(ORDER_MARGIN) && stageCount(stages) == null) {
                checks.add("stage_order: margin splits data.files into a number of stages by margin, but stages "
                        + "lists a file per stage " + stages + ": give stages a number, or stage_order: file");
            }
            if (marginModel != null && !stageOrder.equals(ORDER_MARGIN)) {
                checks.add("margin_model: orders the pairs for stage_order: margin, but stage_order is "
                        + stageOrder);
            }
            checks.throwIfAny();
        }

        /** The loss types, as the recipe names them. */
        public List<DpoLossType> lossTypes() {
            return loss.stream().map(DpoLossType::of).toList();
        }

        /** Each loss's weight (1 where loss_weights is empty). */
        public List<Double> weights() {
            return lossWeights.isEmpty() ? loss.stream().map(name -> 1.0).toList() : lossWeights;
        }

        /** The number of stages. */
        public int stageCount() {
            Integer count = stageCount(stages);
            return count != null ? count : stages.size();
        }

        /** The preference file of each stage, or an empty list when the stages split data.files. */
        public List<String> stageFiles() {
            return stageCount(stages) != null ? List.of() : stages;
        }

        private static Integer stageCount(List<String> stages) {
            if (stages.size() == 1 && stages.get(0).matches("\\d+")) {
                int count = Integer.parseInt(stages.get(0));
                return count >= 1 ? count : null;
            }
            return null;
        }
    }

    private static String oneOfMessage(String key, String value, String... allowed) {
        return key + ": expected one of " + String.join(", ", allowed) + ", got "
                + (value == null ? "nothing" : "\"" + value + "\"");
    }

    /**
     * A section's key problems, collected so that the reader reports them all rather than the first: each is a
     * "key: message" exception, the first thrown with the others suppressed in it.
     */
    private static final class KeyChecks {
        private IllegalArgumentException first;

        void add(String keyAndMessage) {
            IllegalArgumentException problem = new IllegalArgumentException(keyAndMessage);
            if (first == null) {
                first = problem;
            } else {
                first.addSuppressed(problem);
            }
        }

        void oneOf(String key, String value, String... allowed) {
            if (value == null || !List.of(allowed).contains(value)) {
                add(oneOfMessage(key, value, allowed));
            }
        }

        void positive(String key, int value) {
            if (value <= 0) {
                add(key + ": must be a positive integer, got " + value);
            }
        }

        void nonNegative(String key, int value) {
            if (value < 0) {
                add(key + ": must be >= 0, got " + value);
            }
        }

        void throwIfAny() {
            if (first != null) {
                throw first;
            }
        }
    }

    /**
     * Where metrics go besides metrics.jsonl.
     *
     * @param tensorboard TensorBoard event files under output_dir/runs/: every metric as a scalar, the recipe as text
     */
    public record Logging(boolean tensorboard) {}

    /**
     * KTO (train.method kto) as TRL 1.13's KTOTrainer trains it, on unpaired examples (prompt, completion, desirable or
     * not) against the reference (the base with the adapter off, or model.adapter frozen), with r the policy's
     * completion log-prob minus the reference's and z the batch's KL estimate (clamped at 0, without gradient): a
     * desirable example's loss is desirable_weight (1 - sigmoid(beta (r - z))), an undesirable one's
     * undesirable_weight (1 - sigmoid(beta (z - r))). apo_zero_unpaired (APO's unpaired zero-anchored loss) takes
     * z = 0 and estimates no KL.
     *
     * @param loss TRL's loss_type: kto or apo_zero_unpaired
     */
    public record Kto(double beta, String loss, double desirableWeight, double undesirableWeight) {
        public static final String KTO = "kto";
        public static final String APO_ZERO_UNPAIRED = "apo_zero_unpaired";

        public Kto {
            KeyChecks checks = new KeyChecks();
            if (!(beta > 0 && Double.isFinite(beta))) {
                checks.add("beta: must be a finite number > 0, got " + beta);
            }
            checks.oneOf("loss", loss, KTO, APO_ZERO_UNPAIRED);
            if (!(desirableWeight >= 0 && Double.isFinite(desirableWeight))) {
                checks.add("desirable_weight: must be a finite number >= 0, got " + desirableWeight);
            }
            if (!(undesirableWeight >= 0 && Double.isFinite(undesirableWeight))) {
                checks.add("undesirable_weight: must be a finite number >= 0, got " + undesirableWeight);
            }
            checks.throwIfAny();
        }

        /** Whether the loss reads the KL estimate (TRL's calculate_KL): every loss but apo_zero_unpaired. */
        public boolean estimatesKl() {
            return !loss.equals(APO_ZERO_UNPAIRED);
        }
    }

    /**
     * ORPO (Hong et al. 2024; train.method orpo) as TRL 1.13's experimental ORPOTrainer trains it, without a reference
     * model: the NLL of the chosen rows minus beta x the mean over pairs of log sigmoid(log odds ratio), the log-probs
     * of each answer averaged over its tokens (trl/experimental/orpo/orpo_trainer.py, odds_ratio_loss).
     *
     * @param beta TRL's beta, the paper's lambda: the weight of the odds-ratio term
     */
    public record Orpo(double beta) {
        public Orpo {
            if (!(beta > 0 && Double.isFinite(beta))) {
                throw new IllegalArgumentException("beta: must be a finite number > 0, got " + beta);
            }
        }
    }

    /**
     * CPO (Xu et al. 2024; train.method cpo) as TRL 1.13's experimental CPOTrainer trains it, without a reference
     * model: the mean over pairs of the loss on the chosen-rejected log-prob difference, plus cpo_alpha x the NLL of
     * the chosen answers' tokens (trl/experimental/cpo/cpo_trainer.py, cpo_loss and concatenated_forward). SimPO (Meng
     * et al. 2024) is loss simpo with cpo_alpha 0, as TRL documents it.
     *
     * @param loss TRL's loss_type: sigmoid, hinge (on summed log-probs), ipo or simpo (on per-token averages)
     * @param beta the temperature of sigmoid and simpo, hinge's scale, ipo's tau
     * @param labelSmoothing eps of sigmoid and simpo (conservative loss), in [0, 0.5)
     * @param simpoGamma SimPO's target reward margin gamma (TRL subtracts gamma / beta from the difference)
     * @param cpoAlpha weight of the NLL (behaviour cloning) term; 0 leaves it out
     */
    public record Cpo(String loss, double beta, double labelSmoothing, double simpoGamma, double cpoAlpha) {
        public static final String SIGMOID = "sigmoid";
        public static final String HINGE = "hinge";
        public static final String IPO = "ipo";
        public static final String SIMPO = "simpo";
        /** TRL's default simpo_gamma; another value is refused where the loss is not simpo (TRL ignores it). */
        public static final double DEFAULT_SIMPO_GAMMA = 0.5;

        public Cpo {
            KeyChecks checks = new KeyChecks();
            checks.oneOf("loss", loss, SIGMOID, HINGE, IPO, SIMPO);
            if (!(beta > 0 && Double.isFinite(beta))) {
                checks.add("beta: must be a finite number > 0, got " + beta);
            }
            if (!(labelSmoothing >= 0 && labelSmoothing < 0.5)) {
                checks.add("label_smoothing: must lie in [0, 0.5), got " + labelSmoothing);
            } else if (labelSmoothing > 0 && (HINGE.equals(loss) || IPO.equals(loss))) {
                checks.add("label_smoothing: " + loss + " does not read it (TRL ignores it with a warning): set 0, or "
                        + "use loss sigmoid or simpo");
            }
            if (!Double.isFinite(simpoGamma)) {
                checks.add("simpo_gamma: must be a finite number, got " + simpoGamma);
            } else if (simpoGamma != DEFAULT_SIMPO_GAMMA && !SIMPO.equals(loss)) {
                checks.add("simpo_gamma: only loss simpo reads it (TRL ignores it otherwise): drop it, or set loss: "
                        + "simpo");
            }
            if (!(cpoAlpha >= 0 && Double.isFinite(cpoAlpha))) {
                checks.add("cpo_alpha: must be a finite number >= 0, got " + cpoAlpha);
            }
            checks.throwIfAny();
        }

        /** ipo and simpo compare log-probs averaged over each answer's tokens, sigmoid and hinge their sums (TRL). */
        public boolean averagesLogProbs() {
            return IPO.equals(loss) || SIMPO.equals(loss);
        }
    }

    /**
     * A reward model (train.method reward) as TRL 1.13's RewardTrainer trains it: the base with LoRA and a scalar score
     * head, the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected) over the preference pairs DPO reads.
     *
     * @param centerRewardsCoefficient adds coefficient x mean((r_chosen + r_rejected)^2), which keeps rewards centred
     *     on 0 (Eisenstein et al. 2023); null leaves it out, as TRL's default
     * @param margin subtract each pair's margin (score_chosen - score_rejected) inside the sigmoid, as TRL does with a
     *     margin column (Llama 2's margin loss); every pair must then carry scores
     * @param labelNoise the share of training pairs whose chosen and rejected are swapped (round(share x pairs) of them,
     *     drawn from train.seed), the noisy preferences WARM is robust to; validation pairs are never swapped
     */
    public record Reward(Double centerRewardsCoefficient, boolean margin, double labelNoise) {
        public Reward {
            KeyChecks checks = new KeyChecks();
            if (centerRewardsCoefficient != null && !(centerRewardsCoefficient >= 0)) {
                checks.add("center_rewards_coefficient: must be >= 0 or null, got " + centerRewardsCoefficient);
            }
            if (!(labelNoise >= 0 && labelNoise <= 1)) {
                checks.add("label_noise: must lie in [0, 1] (the share of training pairs flipped), got " + labelNoise);
            }
            checks.throwIfAny();
        }
    }

    /**
     * WARM, weight averaged reward models (Ramé et al. 2024), when members is 2 or more (train.method reward): that
     * many reward models trained one after another from one shared start (the base or model.adapter, and the same LoRA
     * and head initialisation from train.seed), each a run of its own in output_dir/members/K/, then their weight
     * average (LoRA deltas exactly, the head linearly, as {@code mixtune merge --method warm}) in output_dir/adapter.
     *
     * @param members how many reward models; 0: off
     * @param vary what differs between members: per key a list of one value per member, or one for all; empty: the
     *     recipe's own value for every member
     */
    public record Warm(int members, Vary vary) {
        public Warm {
            if (members < 0 || members == 1) {
                throw new IllegalArgumentException("members: expected 0 (off) or 2 or more reward models to average, "
                        + "got " + members);
            }
            vary = vary != null ? vary : new Vary(List.of(), List.of(), List.of());
        }

        public boolean enabled() {
            return members > 0;
        }

        /**
         * @param seed each member's train.data_seed (the order of its pairs and its dropout masks)
         * @param learningRate each member's train.lr
         * @param loraDropout each member's lora.dropout
         */
        public record Vary(List<Long> seed, List<Double> learningRate, List<Double> loraDropout) {
            public Vary {
                seed = seed == null ? List.of() : List.copyOf(seed);
                learningRate = learningRate == null ? List.of() : List.copyOf(learningRate);
                loraDropout = loraDropout == null ? List.of() : List.copyOf(loraDropout);
                KeyChecks checks = new KeyChecks();
                if (!learningRate.stream().allMatch(lr -> lr > 0 && lr < 1)) {
                    checks.add("learning_rate: every value must lie in (0, 1), got " + learningRate);
                }
                if (!loraDropout.stream().allMatch(p -> p >= 0 && p < 1)) {
                    checks.add("lora_dropout: every value must lie in [0, 1), got " + loraDropout);
                }
                checks.throwIfAny();
            }

            /** Member k's value of a varied key: its own, the one for all, or null when the key is not varied. */
            public static <T> T of(List<T> values, int member) {
                return values.isEmpty() ? null : values.get(values.size() == 1 ? 0 : member);
            }
        }
    }
}
