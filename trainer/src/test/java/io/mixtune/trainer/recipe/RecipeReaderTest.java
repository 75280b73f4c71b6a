package io.mixtune.trainer.recipe;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.batch.PackingStrategy;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.trainer.optim.LearningRateSchedule;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Recipes: defaults, includes, --set, and an error naming file:line, key and expectation for each kind of mistake. */
class RecipeReaderTest {
    @TempDir
    Path dir;

    private Path write(String name, String yaml) throws IOException {
        Path file = dir.resolve(name);
        Files.writeString(file, yaml);
        return file;
    }

    private Path chats() throws IOException {
        return write("chats.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                + "{\"role\": \"assistant\", \"content\": \"hello\"}]}\n");
    }

    private String minimal() throws IOException {
        return "model:\n  preset: tiny-mistral\ndata:\n  files: [" + chats() + "]\noutput_dir: " + dir.resolve("out") + "\n";
    }

    private String error(Path recipe, String... sets) {
        return assertThrows(RecipeException.class, () -> RecipeReader.read(recipe, List.of(sets))).getMessage();
    }

    /** A recipe saved in Latin-1: the line of the first byte that is not UTF-8 (a decoder's exception before). */
    @Test
    void aRecipeThatIsNotUtf8IsNamedAtItsLine() throws IOException {
        Path recipe = dir.resolve("latin1.yaml");
        Files.write(recipe, (minimal() + "# caf\u00e9\n").getBytes(java.nio.charset.StandardCharsets.ISO_8859_1));
        assertEquals(recipe + ":6: not UTF-8 text: a recipe is a UTF-8 YAML file (was it saved in another encoding?)",
                error(recipe));
    }

    @Test
    void aShortRecipeGetsEveryDefault() throws IOException {
        Recipe recipe = RecipeReader.read(write("r.yaml", minimal()), List.of()).recipe();
        assertEquals("tiny-mistral", recipe.model().preset());
        assertEquals("nf4", recipe.model().quantize());
        assertEquals(16, recipe.lora().r());
        assertEquals(List.of("all-linear"), recipe.lora().targets());
        assertEquals(2048, recipe.data().maxSeqLen());
        assertEquals(2.0e-4, recipe.train().lr());
        assertEquals(1, recipe.train().epochs());
        // The resolved recipe reads back to the same recipe.
        Path resolved = write("resolved.yaml", RecipeReader.toYaml(recipe));
        assertEquals(recipe, RecipeReader.read(resolved, List.of()).recipe());
    }

    /** TRL 1.13's sigmoid loss ignores label_smoothing: mixtune refuses it there and points to robust, which reads it. */
    @Test
    void labelSmoothingTakesTheRobustLossAsTrlDoes() throws IOException {
        Path recipe = write("dpo.yaml", minimal() + "train:\n  method: dpo\n");
        String sigmoid = error(recipe, "dpo.label_smoothing=0.1");
        assertTrue(sigmoid.contains("label_smoothing") && sigmoid.contains("loss: robust"), sigmoid);
        String hinge = error(recipe, "dpo.loss=hinge", "dpo.label_smoothing=0.1");
        assertTrue(hinge.contains("label_smoothing") && hinge.contains("loss: robust"), hinge);
        Recipe robust = RecipeReader.read(recipe, List.of("dpo.loss=robust", "dpo.label_smoothing=0.1")).recipe();
        assertEquals(List.of("robust"), robust.dpo().loss());
        assertEquals(0.1, robust.dpo().labelSmoothing());
    }

    /**
     * TRL 1.13's loss types by TRL's names, one or a weighted list; each hyper-parameter refused, naming its key, where
     * no chosen loss reads it, and exo_pair without the label smoothing whose log it takes.
     */
    @Test
    void lossTypesAreTrlsAndTheirHyperParametersAreCheckedAgainstThem() throws IOException {
        Path recipe = write("dpo.yaml", minimal() + "train:\n  method: dpo\n");
        Path mpo = write("mpo.yaml", minimal() + "train:\n  method: dpo\ndpo:\n  loss: [sigmoid, bco_pair]\n"
                + "  loss_weights: [0.8, 0.2]\n  sft_weight: 1.0\n");
        Recipe.Dpo combined = RecipeReader.read(mpo, List.of()).recipe().dpo();
        assertEquals(List.of(DpoLossType.SIGMOID, DpoLossType.BCO_PAIR), combined.lossTypes());
        assertEquals(List.of(0.8, 0.2), combined.weights());
        assertEquals(List.of(1.0), RecipeReader.read(recipe, List.of()).recipe().dpo().weights());
        Recipe.Dpo exo = RecipeReader.read(recipe, List.of("dpo.loss=exo_pair", "dpo.label_smoothing=1e-3")).recipe()
                .dpo();
        assertEquals(List.of(DpoLossType.EXO_PAIR), exo.lossTypes());
        assertEquals(0.05, RecipeReader.read(recipe, List.of("dpo.loss=discopop")).recipe().dpo().discopopTau());
        RecipeReader.read(recipe, List.of("dpo.loss=aot_unpaired", "dpo.label_smoothing=0.1"));

        String ignored = error(recipe, "dpo.loss=nca_pair", "dpo.label_smoothing=0.1");
        assertTrue(ignored.contains("dpo.label_smoothing") && ignored.contains("nca_pair ignores it"), ignored);
        String exoWithout = error(recipe, "dpo.loss=exo_pair");
        assertTrue(exoWithout.contains("dpo.label_smoothing") && exoWithout.contains("above 0"), exoWithout);
        String tau = error(recipe, "dpo.discopop_tau=0.5");
        assertTrue(tau.contains("dpo.discopop_tau") && tau.contains("only loss discopop"), tau);
        String badTau = error(recipe, "dpo.loss=discopop", "dpo.discopop_tau=0");
        assertTrue(badTau.contains("dpo.discopop_tau") && badTau.contains("> 0"), badTau);
        String weights = error(mpo, "dpo.loss_weights=[1.0]");
        assertTrue(weights.contains("dpo.loss_weights") && weights.contains("one weight per loss"), weights);
        String sft = error(recipe, "dpo.loss=sft");
        assertTrue(sft.contains("dpo.loss") && sft.contains("dpo.sft_weight"), sft);
        String unknown = error(recipe, "dpo.loss=aot_pair");
        assertTrue(unknown.contains("dpo.loss") && unknown.contains("aot_unpaired"), unknown);
    }

    @Test
    void fDivergenceLdAlphaAndUseWeightingAreTrlsAndRefusedWhereTrlRefusesThem() throws IOException {
        Path recipe = write("dpo.yaml", minimal() + "train:\n  method: dpo\n");
        Recipe.Dpo defaults = RecipeReader.read(recipe, List.of()).recipe().dpo();
        assertEquals(Recipe.Dpo.REVERSE_KL, defaults.fDivergenceType());
        assertEquals(0.5, defaults.fAlphaDivergenceCoef());
        assertEquals(null, defaults.ldAlpha());
        Recipe.Dpo alpha = RecipeReader.read(recipe, List.of("dpo.loss=[sigmoid, ipo]",
                "dpo.f_divergence_type=alpha_divergence", "dpo.f_alpha_divergence_coef=3", "dpo.ld_alpha=0.5"))
                .recipe().dpo();
        assertEquals(Recipe.Dpo.ALPHA_DIVERGENCE, alpha.fDivergenceType());
        assertEquals(3.0, alpha.fAlphaDivergenceCoef());
        assertEquals(0.5, alpha.ldAlpha());
        RecipeReader.read(recipe, List.of("dpo.loss=exo_pair", "dpo.label_smoothing=1e-3",
                "dpo.f_divergence_type=js_divergence"));

        String unsupported = error(recipe, "dpo.loss=[sigmoid, bco_pair]", "dpo.f_divergence_type=forward_kl");
        assertTrue(unsupported.contains("dpo.f_divergence_type") && unsupported.contains("refuses it for bco_pair"),
                unsupported);
        String unknown = error(recipe, "dpo.f_divergence_type=kl");
        assertTrue(unknown.contains("dpo.f_divergence_type") && unknown.contains("alpha_divergence"), unknown);
        String coefWithout = error(recipe, "dpo.f_alpha_divergence_coef=2");
        assertTrue(coefWithout.contains("dpo.f_alpha_divergence_coef")
                && coefWithout.contains("only f_divergence_type alpha_divergence"), coefWithout);
        assertTrue(RecipeReader.read(recipe, List.of("dpo.use_weighting=true")).recipe().dpo().useWeighting());
        String sortedPairs = error(recipe, "dpo.loss=aot", "dpo.use_weighting=true");
        assertTrue(sortedPairs.contains("dpo.use_weighting") && sortedPairs.contains("aot"), sortedPairs);
        String sft = error(recipe, "dpo.sft_weight=0.5", "dpo.use_weighting=true");
        assertTrue(sft.contains("dpo.use_weighting") && sft.contains("sft_weight must be 0"), sft);
        String ld = error(recipe, "dpo.ld_alpha=1.5");
        assertTrue(ld.contains("dpo.ld_alpha") && ld.contains("[0, 1]"), ld);
    }

    @Test
    void outputDirDefaultsToOutSlashTheRecipesFileName() throws IOException {
        String withoutOutputDir = minimal().replace("output_dir: " + dir.resolve("out") + "\n", "");
        Recipe recipe = RecipeReader.read(write("my-run.v2.yaml", withoutOutputDir), List.of()).recipe();
        assertEquals("out/my-run.v2", recipe.outputDir());
        assertEquals("out/x", RecipeReader.read(write("r.yaml", withoutOutputDir), List.of("output_dir=out/x")).recipe()
                .outputDir(), "a --set still wins");
    }

    @Test
    void includesThenRecipeThenSetOverrides() throws IOException {
        write("base.yaml", "lora:\n  r: 8\n  alpha: 8\ntrain:\n  lr: 1.0e-3\n  epochs: 3\n");
        Path recipe = write("r.yaml", "include: base.yaml\n" + minimal() + "train:\n  lr: 5.0e-4\n");
        Recipe read = RecipeReader.read(recipe, List.of("train.epochs=2", "lora.targets=[q_proj, v_proj]",
                "train.lr=1e-5")).recipe();
        assertEquals(8, read.lora().r());
        assertEquals(1e-5, read.train().lr()); // YAML 1.1 reads 1e-5 as a string; a number is meant
        assertEquals(2, read.train().epochs());
        assertEquals(List.of("q_proj", "v_proj"), read.lora().targets());
        // A bundled config can be included by its path in the jar.
        Path bundled = write("b.yaml", "include: configs/recipe-defaults.yaml\n" + minimal());
        assertEquals(16, RecipeReader.read(bundled, List.of()).recipe().lora().r());
    }

    @Test
    void anUnknownKeyNamesItsLineAndTheNearestValidKey() throws IOException {
        Path recipe = write("r.yaml", minimal() + "train:\n  learning_rate: 1.0e-4\n  lr_schedule: cosine\n");
        String message = error(recipe);
        assertTrue(message.startsWith(recipe + ":7: train.learning_rate: unknown key"), message);
        String typo = error(write("t.yaml", minimal() + "train:\n  gradient_acumulation: 4\n"));
        assertTrue(typo.contains(":7: train.gradient_acumulation: unknown key (did you mean gradient_accumulation?)"),
                typo);
        String section = error(write("s.yaml", minimal() + "trian:\n  lr: 1.0e-4\n"));
        assertTrue(section.contains(":6: trian: unknown key (did you mean train?)"), section);
    }

    @Test
    void evalPromptsAreAListOfMessagesForAMethodThatGenerates() throws IOException {
        Recipe read = RecipeReader.read(write("ok.yaml", minimal() + "train:\n  eval_prompts: [Hi, \"Say \\\"no\\\"\"]\n"),
                List.of()).recipe();
        assertEquals(List.of("Hi", "Say \"no\""), read.train().evalPrompts());
        assertEquals(64, read.train().evalMaxNewTokens());
        assertEquals(List.of(), RecipeReader.read(write("none.yaml", minimal()), List.of()).recipe().train()
                .evalPrompts());
        String mapping = error(write("a.yaml", minimal() + "train:\n  eval_prompts:\n    - Hi\n    - {role: user}\n"));
        assertTrue(mapping.contains("a.yaml:9: train.eval_prompts[1]: expected a string, got a mapping"), mapping);
        String nested = error(write("b.yaml", minimal() + "train:\n  eval_prompts: {first: Hi}\n"));
        assertTrue(nested.contains("b.yaml:7: train.eval_prompts: expected a list, got a mapping"), nested);
        String empty = error(write("c.yaml", minimal() + "train:\n  eval_prompts: [Hi, \" \"]\n"));
        assertTrue(empty.contains("c.yaml:7: train.eval_prompts: prompt 2 is empty: expected a user's message"), empty);
        String tokens = error(write("d.yaml", minimal() + "train:\n  eval_max_new_tokens: 0\n"));
        assertTrue(tokens.contains("d.yaml:7: train.eval_max_new_tokens: must be a positive integer, got 0"), tokens);
        String reward = error(write("e.yaml", minimal() + "train:\n  method: reward\n  eval_prompts: [Hi]\n"));
        assertTrue(reward.contains("train.eval_prompts: a reward model scores answers and generates none: remove "
                + "train.eval_prompts for train.method reward"), reward);
    }

    /** NEFTune's alpha: null (the default) is off, a positive number is read, 0 refused, and so is any method but sft. */
    @Test
    void neftuneNoiseAlphaIsPositiveAndForSftOnly() throws IOException {
        assertEquals(null, RecipeReader.read(write("off.yaml", minimal()), List.of()).recipe().train()
                .neftuneNoiseAlpha());
        assertEquals(5.0, RecipeReader.read(write("on.yaml", minimal() + "train:\n  neftune_noise_alpha: 5\n"),
                List.of()).recipe().train().neftuneNoiseAlpha());
        String zero = error(write("z.yaml", minimal() + "train:\n  neftune_noise_alpha: 0\n"));
        assertTrue(zero.contains("z.yaml:7: train.neftune_noise_alpha: must be > 0 (null turns NEFTune off), got 0.0"),
                zero);
        for (String method : List.of("dpo", "reward")) {
            String refused = error(write(method + ".yaml", minimal() + "train:\n  method: " + method
                    + "\n  neftune_noise_alpha: 5\n"));
            assertTrue(refused.contains("train.neftune_noise_alpha: NEFTune applies to train.method sft only: remove it "
                    + "for train.method " + method), refused);
        }
    }

    /**
     * A train.metric_for_best_model that the method's evaluation does not log is refused before the run (transformers
     * raises its KeyError at the first evaluation), naming the line, the nearest name and those the method logs.
     */
    @Test
    void metricForBestModelIsOneThatTheMethodsEvaluationLogs() throws IOException {
        String validated = minimal().replace("]\n", "]\n  validation_ratio: 0.5\n");
        Path dpo = write("dpo.yaml", validated + "train:\n  method: dpo\n  metric_for_best_model: rewards/acuracies\n");
        String refused = error(dpo);
        assertTrue(refused.contains("dpo.yaml:9: train.metric_for_best_model: rewards/acuracies is not a metric that "
                + "train.method dpo's evaluation logs (did you mean rewards/accuracies?): expected one of [loss, "
                + "rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen, "
                + "logps/rejected, logits/chosen, logits/rejected, entropy, mean_token_accuracy, nll, aux_loss, "
                + "num_tokens] (eval_ may be put in front)"), refused);
        for (String sft : List.of("eval_perplexity", "mean_token_accuracy", "loss")) {
            RecipeReader.read(write("sft.yaml", validated + "train:\n  metric_for_best_model: " + sft + "\n"),
                    List.of());
        }
        Path ema = write("ema.yaml", validated + "train:\n  metric_for_best_model: eval_loss_ema\n");
        assertTrue(error(ema).contains("ema.yaml:8: train.metric_for_best_model: eval_loss_ema is not a metric"));
        RecipeReader.read(ema, List.of("averaging.ema_decay=0.9"));
        assertTrue(error(write("kto.yaml", validated + "train:\n  method: kto\n  micro_batch_size: 2\n"
                + "  metric_for_best_model: rewards/accuracies\n")).contains("train.metric_for_best_model: "
                + "rewards/accuracies is not a metric that train.method kto's evaluation logs"));
    }

    /**
     * router_aux_loss_coef 0 turns the router term off, and with it every aux_loss (SftObjective and DpoObjective log
     * eval_aux_loss only with a coefficient > 0): metric_for_best_model aux_loss is refused before the run then.
     */
    @Test
    void aRouterLossWeighedZeroIsNoMetricForBestModel() throws IOException {
        String validated = minimal().replace("tiny-mistral", "tiny-mixtral").replace("]\n",
                "]\n  validation_ratio: 0.5\n");
        RecipeReader.read(write("on.yaml", validated + "train:\n  metric_for_best_model: aux_loss\n"), List.of());
        String refused = error(write("zero.yaml", validated + "train:\n  router_aux_loss_coef: 0\n"
                + "  metric_for_best_model: aux_loss\n"));
        assertTrue(refused.contains("zero.yaml:9: train.metric_for_best_model: aux_loss is not a metric that "
                + "train.method sft's evaluation logs"), refused);
    }

    /**
     * A dense model's evaluation logs no aux_loss (it has no router), so metric_for_best_model aux_loss is refused before
     * the run, where transformers' Trainer raises its KeyError at the first evaluation.
     */
    @Test
    void aDenseModelHasNoRouterLossToCompare() throws IOException {
        String validated = minimal().replace("]\n", "]\n  validation_ratio: 0.5\n");
        String refused = error(write("dense.yaml", validated + "train:\n  metric_for_best_model: aux_loss\n"));
        assertTrue(refused.contains("dense.yaml:8: train.metric_for_best_model: aux_loss is a Mixtral router's "
                + "load-balancing loss, and preset tiny-mistral is a dense model without one"), refused);
    }

    /**
     * loss_swa and loss_lawa exist from the first step their average holds a snapshot: a first evaluation before it
     * is refused before the run (transformers' KeyError would stop the run there), naming both steps; where the
     * run's length decides (a fractional swa_start, no max_steps), validate passes and the loop refuses before step 1.
     */
    @Test
    void anAverageThatHoldsNothingAtTheFirstEvaluationIsNoMetricForBestModel() throws IOException {
        String validated = minimal().replace("]\n", "]\n  validation_ratio: 0.5\n");
        String swa = error(write("swa.yaml", validated + "train:\n  eval_every: 2\n  metric_for_best_model: loss_swa\n"
                + "averaging:\n  swa_start: 5\n"));
        assertTrue(swa.contains("swa.yaml:9: train.metric_for_best_model: eval_loss_swa is the loss of the SWA "
                + "average, which holds nothing before step 5 (averaging.swa_start 5), and the first evaluation comes "
                + "after step 2 (train.eval_every 2)"), swa);
        String lawa = error(write("lawa.yaml", validated + "train:\n  max_steps: 6\n  metric_for_best_model: "
                + "eval_loss_lawa\naveraging:\n  lawa_k: 2\n  lawa_every: 10\n"));
        assertTrue(lawa.contains("lawa.yaml:9: train.metric_for_best_model: eval_loss_lawa is the loss of the LaWA "
                + "average, which holds nothing before step 10 (averaging.lawa_every 10), and the first evaluation "
                + "comes after step 6 (train.max_steps 6)"), lawa);
        RecipeReader.read(write("held.yaml", validated + "train:\n  eval_every: 5\n  metric_for_best_model: "
                + "loss_swa\naveraging:\n  swa_start: 5\n"), List.of());
        RecipeReader.read(write("fraction.yaml", validated + "train:\n  eval_every: 2\n  metric_for_best_model: "
                + "loss_swa\naveraging:\n  swa_start: 0.5\n"), List.of());
        String known = error(write("known.yaml", validated + "train:\n  eval_every: 2\n  max_steps: 10\n"
                + "  metric_for_best_model: loss_swa\naveraging:\n  swa_start: 0.5\n"));
        assertTrue(known.contains("holds nothing before step 5 (averaging.swa_start 0.5 of 10 steps)"), known);
    }

    /**
     * train.router_aux_loss_coef: a finite number >= 0 (0 turns the term off, as TRL's router_aux_loss_coef 0);
     * refused with the router loss off and for distillation, which would ignore it; said on a dense model.
     */
    @Test
    void routerAuxLossCoefIsANonNegativeNumberForTheRouterLoss() throws IOException {
        String mixtral = minimal().replace("tiny-mistral", "tiny-mixtral");
        assertEquals(null, RecipeReader.read(write("unset.yaml", mixtral), List.of()).recipe().train()
                .routerAuxLossCoef());
        RecipeReader.Loaded set = RecipeReader.read(write("set.yaml", mixtral + "train:\n  router_aux_loss_coef: "
                + "0.001\n"), List.of());
        assertEquals(0.001, set.recipe().train().routerAuxLossCoef());
        assertEquals(List.of(), set.warnings());
        for (String bad : List.of("-0.1", "1.0e999")) { // the second overflows to infinity
            String refused = error(write("bad.yaml", mixtral + "train:\n  router_aux_loss_coef: " + bad + "\n"));
            assertTrue(refused.contains("bad.yaml:7: train.router_aux_loss_coef: must be a finite number >= 0 (the "
                    + "load-balancing loss's weight; null takes the model config's router_aux_loss_coef), got "),
                    refused);
        }
        String off = error(write("off.yaml", mixtral + "train:\n  router_aux_loss: false\n  router_aux_loss_coef: "
                + "0.01\n"));
        assertTrue(off.contains("off.yaml:8: train.router_aux_loss_coef: weighs the load-balancing loss, which "
                + "train.router_aux_loss: false turns off"), off);
        String distillation = error(write("d.yaml", mixtral + "train:\n  method: distillation\n"
                + "  router_aux_loss_coef: 0.01\ndistillation:\n  teacher_preset: tiny-mixtral\n"));
        assertTrue(distillation.contains("d.yaml:8: train.router_aux_loss_coef: train.method distillation adds no "
                + "load-balancing loss"), distillation);
        String reward = error(write("r.yaml", mixtral + "train:\n  method: reward\n  router_aux_loss_coef: 0.01\n"));
        assertTrue(reward.contains("r.yaml:8: train.router_aux_loss_coef: train.method reward adds no load-balancing "
                + "loss (TRL's RewardTrainer"), reward);
        Path dense = write("dense.yaml", minimal() + "train:\n  router_aux_loss_coef: 0.01\n");
        assertEquals(List.of(dense + ":7: train.router_aux_loss_coef: weighs a Mixtral's load-balancing loss, and "
                + "preset tiny-mistral is a dense model without one: the coefficient is unused"),
                RecipeReader.read(dense, List.of()).warnings());
    }

    /** SFT's dataset types and their text field are refused by name for methods that read pairs or KTO examples. */
    @Test
    void sftDatasetTypesAreRefusedForPairAndKtoMethods() throws IOException {
        for (String method : List.of("dpo", "reward", "kto")) {
            String refused = error(write(method + ".yaml", minimal() + "train:\n  method: " + method
                    + "\n  micro_batch_size: 2\n"), "data.format=text", "data.dataset_text_field=body");
            assertTrue(refused.contains("data.format: text is one of SFT's dataset types, but train.method " + method
                    + " reads "), refused);
            assertTrue(refused.contains("data.dataset_text_field: names the field of SFT's text records, but "
                    + "train.method " + method), refused);
        }
    }

    /**
     * train.optimizer: adamw_torch by default, transformers' three names of bitsandbytes' 8-bit AdamW read as such, any
     * other name refused at its line with the names offered.
     */
    @Test
    void optimizerIsOneOfTransformersNamesAndAnotherNamedAtItsLine() throws IOException {
        Recipe.Train torch = RecipeReader.read(write("torch.yaml", minimal()), List.of()).recipe().train();
        assertEquals("adamw_torch", torch.optimizer());
        assertFalse(torch.eightBitMoments());
        for (String name : List.of("adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit")) {
            assertTrue(RecipeReader.read(write(name + ".yaml", minimal() + "train:\n  optimizer: " + name + "\n"),
                    List.of()).recipe().train().eightBitMoments(), name);
        }
        String lion = error(write("l.yaml", minimal() + "train:\n  optimizer: lion_8bit\n"));
        assertTrue(lion.contains("l.yaml:7: train.optimizer: must be one of adamw_torch, adamw_bnb_8bit, "
                + "paged_adamw_8bit, adamw_8bit"), lion);
        assertTrue(lion.contains("got lion_8bit"), lion);
    }

    /** LoRA+ is off by default; its ratio and embedding rate are read, and out-of-range values named at their line. */
    @Test
    void loraPlusKeysAreReadAndOutOfRangeOnesNamed() throws IOException {
        Recipe.Train off = RecipeReader.read(write("off.yaml", minimal()), List.of()).recipe().train();
        assertEquals(null, off.loraplusLrRatio());
        assertEquals(null, off.lrFactors(List.of("m.lora_A", "m.lora_B")));
        Recipe.Train on = RecipeReader.read(write("on.yaml", minimal() + "train:\n  lr: 1.0e-4\n"
                + "  loraplus_lr_ratio: 16\n"), List.of()).recipe().train();
        assertEquals(1e-6, on.loraplusLrEmbedding());
        assertArrayEquals(new double[] {1, 16}, on.lrFactors(List.of("m.lora_A", "m.lora_B")));
        String ratio = error(write("r.yaml", minimal() + "train:\n  loraplus_lr_ratio: 0\n"));
        assertTrue(ratio.contains("r.yaml:7: train.loraplus_lr_ratio: must be > 0 (lora_B's lr / lora_A's, the paper"
                + " suggests about 16) or null to turn LoRA+ off, got 0.0"), ratio);
        String embedding = error(write("e.yaml", minimal() + "train:\n  loraplus_lr_ratio: 16\n"
                + "  loraplus_lr_embedding: -1.0e-6\n"));
        assertTrue(embedding.contains("e.yaml:8: train.loraplus_lr_embedding: must lie in (0, 1), got -1.0E-6"),
                embedding);
    }

    @Test
    void aWrongTypeOrRangeNamesTheLineAndWhatWasExpected() throws IOException {
        String type = error(write("a.yaml", minimal() + "train:\n  micro_batch_size: four\n"));
        assertTrue(type.contains("a.yaml:7: train.micro_batch_size: expected an integer, got \"four\""), type);
        String range = error(write("b.yaml", minimal() + "train:\n  lr: 2.0\n"));
        assertTrue(range.contains("b.yaml:7: train.lr: must lie in (0, 1), got 2.0"), range);
        String choice = error(write("c.yaml", minimal() + "train:\n  schedule: exponential\n"));
        assertTrue(choice.contains("c.yaml:7: train.schedule: expected one of constant, linear, cosine, "
                + "cosine_with_restarts, polynomial, inverse_sqrt, cosine_warmup_with_min_lr, warmup_stable_decay, got "
                + "\"exponential\""), choice);
        String target = error(write("d.yaml", minimal() + "lora:\n  targets: [q_proj, qkv]\n"));
        assertTrue(target.contains("d.yaml:7: lora.targets: unknown lora target \"qkv\""), target);
        String data = error(write("e.yaml", minimal().replace("data:\n", "data:\n  max_seq_len: 1\n")));
        assertTrue(data.contains("e.yaml:4: data.max_seq_len: must be at least 2, got 1"), data);
        String set = error(write("f.yaml", minimal()), "train.epochs=zero");
        assertTrue(set.contains("--set train.epochs=zero: train.epochs: expected an integer"), set);
    }

    @Test
    void aMissingFileIsNamedWithTheLineThatNamesIt() throws IOException {
        Path recipe = write("r.yaml", "model:\n  preset: tiny-mistral\ndata:\n  files:\n    - " + chats() + "\n"
                + "    - missing.jsonl\noutput_dir: out\n");
        String message = error(recipe);
        assertTrue(message.contains("r.yaml:6: data.files[1]: no such file missing.jsonl"), message);
        String model = error(write("m.yaml", minimal().replace("preset: tiny-mistral", "path: /nowhere")));
        assertTrue(model.contains("m.yaml:2: model.path: no Hugging Face checkpoint at /nowhere"), model);
        String both = error(write("b.yaml", minimal().replace("preset: tiny-mistral",
                "preset: tiny-mistral\n  path: " + dir)));
        assertTrue(both.contains("model.path: give exactly one of model.path"), both);
    }

    @Test
    void pathAndPresetAreOneChoiceAcrossLayers() throws IOException {
        String unknown = error(write("u.yaml", minimal().replace("tiny-mistral", "tiny-mistrel")));
        assertTrue(unknown.contains("u.yaml:2: model.preset: no preset named \"tiny-mistrel\" (did you mean "
                + "tiny-mistral?)"), unknown);
        // A recipe naming a path over an included preset, and a --set of the preset over that path.
        Path model = Files.createDirectories(dir.resolve("model"));
        Files.writeString(model.resolve("config.json"), ModelPreset.load("tiny-mistral").toJson("float32").toString());
        write("base.yaml", minimal());
        Path onPath = write("p.yaml", "include: base.yaml\nmodel:\n  path: " + model + "\n");
        Recipe read = RecipeReader.read(onPath, List.of()).recipe();
        assertEquals(model.toString(), read.model().path());
        assertEquals(null, read.model().preset());
        Recipe back = RecipeReader.read(onPath, List.of("model.preset=tiny-mixtral")).recipe();
        assertEquals("tiny-mixtral", back.model().preset());
        assertEquals(null, back.model().path());
    }

    @Test
    void badYamlAndMissingIncludesAreNamed() throws IOException {
        String yaml = error(write("y.yaml", "model:\n  preset: [unclosed\n"));
        assertTrue(yaml.contains("y.yaml:") && yaml.contains("not valid YAML"), yaml);
        String include = error(write("i.yaml", "include: nothere.yaml\n" + minimal()));
        assertTrue(include.contains("i.yaml:1: include: no file"), include);
        String twice = error(write("d.yaml", minimal() + "output_dir: x\n"));
        assertTrue(twice.contains("d.yaml:6: key output_dir is given twice"), twice);
    }

    private List<String> problems(Path recipe, String... sets) {
        return assertThrows(RecipeException.class, () -> RecipeReader.read(recipe, List.of(sets))).problems();
    }

    @Test
    void everyProblemIsReportedAtOnceEachAtItsLineInLineOrder() throws IOException {
        Path recipe = write("r.yaml", """
                model:
                  preset: tiny-mistrel
                data:
                  files: [missing.jsonl]
                train:
                  lr: 2.0
                  micro_batch_size: 0
                  bogus: 1
                output_dir: out
                """);
        List<String> problems = problems(recipe);
        assertEquals(5, problems.size(), problems.toString());
        assertTrue(problems.get(0).startsWith(recipe + ":2: model.preset: no preset named \"tiny-mistrel\""), problems.get(0));
        assertTrue(problems.get(1).startsWith(recipe + ":4: data.files[0]: no such file missing.jsonl"), problems.get(1));
        assertEquals(recipe + ":6: train.lr: must lie in (0, 1), got 2.0", problems.get(2));
        assertEquals(recipe + ":7: train.micro_batch_size: must be a positive integer, got 0", problems.get(3));
        assertTrue(problems.get(4).startsWith(recipe + ":8: train.bogus: unknown key"), problems.get(4));
    }

    /** A key the user never wrote is reported where the user's recipe is, with its default: nobody edits the jar's. */
    @Test
    void aProblemWithADefaultIsReportedInTheUsersRecipeNotInTheDefaults() throws IOException {
        Path noData = write("n.yaml", "model:\n  preset: tiny-mistral\noutput_dir: out\n");
        assertEquals(List.of(noData + ": data.files (not set; the default is []): at least one training file is "
                + "needed"), problems(noData));
        Path custom = write("c.yaml", minimal().replace("data:\n", "data:\n  template: custom\n"));
        assertEquals(List.of(custom + ":3: data.custom_template (not set; the default is null): template is custom but "
                + "no custom_template is given"), problems(custom));
        Path neither = write("p.yaml", "model:\n  quantize: none\ndata:\n  files: [" + chats() + "]\noutput_dir: o\n");
        List<String> both = problems(neither);
        assertEquals(1, both.size(), both.toString());
        assertTrue(both.get(0).startsWith(neither + ":1: model.path (not set; the default is null): give exactly one of "
                + "model.path"), both.get(0));
        for (String problem : both) {
            assertTrue(!problem.contains(RecipeReader.DEFAULTS), problem);
        }
    }

    @Test
    void keysThatContradictEachOtherAreNamedBothWithTheirLines() throws IOException {
        Path split = write("v.yaml", minimal().replace("data:\n", "data:\n  validation_files: [" + chats()
                + "]\n  validation_ratio: 0.1\n"));
        assertEquals(List.of(split + ":5: data.validation_ratio 0.1 goes with data.validation_files [\"" + chats()
                + "\"] (set at " + split + ":4): the validation set is either its own files or a share held out of the "
                + "training samples; drop one of the two"), problems(split));

        Path warmup = write("w.yaml", minimal() + "train:\n  warmup_steps: 10\n");
        // A file as output_dir: validate says so too, not only train (RunSafetyTest).
        Path aFile = write("not-a-dir", "notes");
        Path onAFile = write("o.yaml", minimal());
        assertEquals(List.of("--set output_dir=" + aFile + ": output_dir: " + aFile + " is a file; expected a "
                + "directory for the run's adapter, checkpoints and metrics (it is created if missing)"),
                problems(onAFile, "output_dir=" + aFile));

        // A warmup longer than the run is said, not refused: a one-step smoke test of a recipe is a common thing to do.
        assertEquals(List.of(warmup + ":7: train.warmup_steps 10 exceeds train.max_steps 5 (set at --set "
                + "train.max_steps=5): the learning rate will still be warming up when the run ends; lower "
                + "warmup_steps for a full run"), RecipeReader.read(warmup, List.of("train.max_steps=5")).warnings());
        assertEquals(List.of(), RecipeReader.read(warmup, List.of("train.max_steps=10")).warnings());

        // tiny-mistral: hidden 64, 4 heads x 16, 2 key-value heads (k_proj and v_proj are [32, 64]), MLP 192.
        Path rank = write("r.yaml", minimal() + "lora:\n  r: 48\n");
        List<String> tooHigh = problems(rank);
        assertEquals(1, tooHigh.size(), tooHigh.toString());
        assertTrue(tooHigh.get(0).startsWith(rank + ":7: lora.r: rank 48 exceeds the smaller dimension of k_proj [32, "
                + "64], v_proj [32, 64] in preset tiny-mistral"), tooHigh.get(0));
        assertTrue(tooHigh.get(0).endsWith("use at most 32 (or lower those layers in rank_pattern)"), tooHigh.get(0));
        Path pattern = write("q.yaml", minimal() + "lora:\n  r: 8\n  rank_pattern: {v_proj: 40}\n");
        List<String> patterned = problems(pattern);
        assertEquals(1, patterned.size(), patterned.toString());
        assertTrue(patterned.get(0).startsWith(pattern + ":8: lora.rank_pattern.v_proj: rank 40 exceeds the smaller "
                + "dimension of v_proj [32, 64]"), patterned.get(0));
        RecipeReader.read(write("ok.yaml", minimal() + "lora:\n  r: 32\n  rank_pattern: {q_proj: 64}\n"), List.of());

        Path positions = write("l.yaml", minimal().replace("data:\n", "data:\n  max_seq_len: 8192\n"));
        assertEquals(List.of(positions + ":4: data.max_seq_len: 8192 exceeds max_position_embeddings 4096 of preset "
                + "tiny-mistral: the model has no position beyond it"), problems(positions));
    }

    /**
     * warmup_ratio as transformers reads a fraction of warmup (TrainingArguments.get_warmup_steps): ceil(total x ratio)
     * of each run's (or DPO stage's) steps; set beside warmup_steps it is refused, naming both.
     */
    @Test
    void warmupRatioIsAFractionOfTheStepsRoundedUpAndExcludesWarmupSteps() throws IOException {
        Path ratio = write("wr.yaml", minimal() + "train:\n  warmup_ratio: 0.07\n");
        Recipe.Train train = RecipeReader.read(ratio, List.of()).recipe().train();
        assertEquals(0.07, train.warmupRatio());
        assertEquals(8, train.warmupStepsOf(100), "0.07 x 100 is 7.000000000000001 in double: transformers makes 8");
        assertEquals(3, train.warmupStepsOf(37), "ceil(2.59)");
        assertEquals(0, train.warmupStepsOf(0));
        assertEquals(5, RecipeReader.read(write("ws.yaml", minimal() + "train:\n  warmup_steps: 5\n"), List.of())
                .recipe().train().warmupStepsOf(100));
        assertEquals(List.of(ratio + ":7: train.warmup_ratio 0.07 goes with train.warmup_steps 3 (set at --set "
                + "train.warmup_steps=3): both set the warmup: keep one (warmup_steps: 0, or warmup_ratio: null)"),
                problems(ratio, "train.warmup_steps=3"));
        assertEquals(List.of("--set train.warmup_ratio=1.5: train.warmup_ratio: must lie in [0, 1] (the fraction of the steps that warm "
                + "up), got 1.5"), problems(ratio, "train.warmup_ratio=1.5"));
    }

    /**
     * min_lr_ratio is the floor of a cosine (transformers' cosine_with_min_lr, min_lr_rate); transformers' schedule
     * names that are a mixtune schedule with a key are refused with that schedule and key.
     */
    @Test
    void minLrRatioIsACosinesFloorAndTransformersNamesPointToMixtunes() throws IOException {
        Path floor = write("mf.yaml", minimal() + "train:\n  schedule: cosine\n  min_lr_ratio: 0.1\n");
        assertEquals(0.1, RecipeReader.read(floor, List.of()).recipe().train().minLrRatio());
        String linear = String.join("\n", problems(floor, "train.schedule=linear"));
        assertTrue(linear.contains("train.min_lr_ratio: 0.1 is a setting of schedule cosine, cosine_warmup_with_min_lr,"
                + " warmup_stable_decay, and schedule is linear, which takes none (transformers' cosine_with_min_lr is"
                + " schedule: cosine with min_lr_ratio)"), linear);
        assertEquals(List.of("--set train.schedule=cosine_with_min_lr: train.schedule: transformers' cosine_with_min_lr is"
                + " mixtune's cosine with min_lr_ratio"), problems(floor, "train.schedule=cosine_with_min_lr"));
        assertEquals(List.of("--set train.schedule=constant_with_warmup: train.schedule: transformers'"
                + " constant_with_warmup is mixtune's constant (which warms up over warmup_steps)"),
                problems(floor, "train.schedule=constant_with_warmup", "train.min_lr_ratio=0"));
    }

    /**
     * transformers' other LambdaLR schedules take their lr_scheduler_kwargs as train keys of the same names; a key the
     * schedule does not read, a value out of range, a missing required one and transformers' names for another key are
     * refused naming the key and what is expected; the schedules that move on evaluation metrics are refused as such.
     */
    @Test
    void transformersSchedulesTakeTheirKwargsAsTrainKeys() throws IOException {
        Path wsd = write("wsd.yaml", minimal() + "train:\n  schedule: warmup_stable_decay\n  num_decay_steps: 4\n"
                + "  decay_type: 1-sqrt\n  min_lr_ratio: 0.1\n");
        Recipe.Train train = RecipeReader.read(wsd, List.of()).recipe().train();
        assertEquals(new LearningRateSchedule.Kwargs(0.1, null, null, null, null, null, 4, null, "1-sqrt", null),
                train.scheduleKwargs());
        LearningRateSchedule schedule = train.scheduleOf(10);
        assertEquals(LearningRateSchedule.Kind.WARMUP_STABLE_DECAY, schedule.kind());
        assertEquals(2.0e-4, schedule.at(5)); // stable: 10 - 0 warmup - 4 decay steps at lr
        assertEquals(2.0e-4 * ((1.0 - Math.sqrt(0.5)) * 0.9 + 0.1), schedule.at(8));
        assertEquals(List.of("--set train.power=2: train.power: 2.0 is a setting of schedule polynomial, and schedule"
                + " is warmup_stable_decay, which takes num_decay_steps, num_stable_steps, warmup_type, decay_type,"
                + " min_lr_ratio, num_cycles"), problems(wsd, "train.power=2"));
        assertEquals(List.of("--set train.decay_type=exp: train.decay_type: expected one of linear, cosine, 1-sqrt,"
                + " got exp"), problems(wsd, "train.decay_type=exp"));
        String missing = String.join("\n", problems(wsd, "train.num_decay_steps=null"));
        assertTrue(missing.contains("train.num_decay_steps: missing: schedule warmup_stable_decay needs the steps of"
                + " its decay"), missing);
        assertEquals(List.of("--set train.lr_end=0.5: train.lr_end: must lie in [0, lr) (the polynomial's last rate;"
                + " lr is 2.0E-4), got 0.5"), problems(wsd, "train.schedule=polynomial", "train.lr_end=0.5",
                "train.num_decay_steps=null", "train.decay_type=null", "train.min_lr_ratio=0"));
        String plateau = String.join("\n", problems(wsd, "train.schedule=reduce_lr_on_plateau"));
        assertTrue(plateau.contains("train.schedule: transformers' reduce_lr_on_plateau is not offered: it moves the"
                + " rate on evaluation metrics, and mixtune's schedules are a function of the step alone"), plateau);
        String rate = String.join("\n", problems(wsd, "train.min_lr_rate=0.1"));
        assertTrue(rate.contains("train.min_lr_rate: not offered: transformers' min_lr_rate of cosine_with_min_lr and"
                + " cosine_warmup_with_min_lr is train.min_lr_ratio"), rate);
    }

    /** DoRA is PEFT's use_dora: taken on Mistral, refused on the Mixtral experts as PEFT 0.21 refuses it there. */
    @Test
    void useDoraIsPeftsAndRefusedOnMixtralExperts() throws IOException {
        Recipe recipe = RecipeReader.read(write("dora.yaml", minimal() + "lora:\n  use_dora: true\n"), List.of())
                .recipe();
        assertTrue(recipe.lora().toConfig().useDora());
        assertEquals(false, RecipeReader.read(write("plain.yaml", minimal()), List.of()).recipe().lora().toConfig()
                .useDora());
        Path mixtral = write("mixtral.yaml", minimal().replace("tiny-mistral", "tiny-mixtral")
                + "lora:\n  use_dora: true\n");
        List<String> problems = problems(mixtral);
        assertEquals(1, problems.size(), problems.toString());
        assertTrue(problems.get(0).contains("lora.use_dora: DoRA (use_dora) cannot go on model.layers.0.block_sparse_moe"
                + ".experts.0.w1: PEFT 0.21 holds the Mixtral experts as fused parameters, whose lora.ParamWrapper does"
                + " not work with use_dora=True"), problems.get(0));
        RecipeReader.read(write("attention.yaml", minimal().replace("tiny-mistral", "tiny-mixtral")
                + "lora:\n  use_dora: true\n  targets: [q_proj, v_proj]\n"), List.of());
    }

    /**
     * Keys PEFT, bitsandbytes and transformers users write that mixtune does not offer are refused saying so (and what
     * mixtune does instead), not only as unknown keys.
     */
    @Test
    void settingsOfTheReferenceToolsThatMixtuneLacksAreNamedAsSuch() throws IOException {
        Path recipe = write("peft.yaml", minimal() + "lora:\n  fan_in_fan_out: true\n  bias: all\ntrain:\n"
                + "  optim: paged_adamw_8bit\n");
        List<String> problems = problems(recipe, "model.bnb_4bit_quant_type=fp4");
        assertEquals(4, problems.size(), problems.toString());
        assertEquals(recipe + ":7: lora.fan_in_fan_out: not offered: Mistral's weights are [out, in] (nn.Linear): PEFT's"
                + " fan_in_fan_out is false for them", problems.get(0));
        assertTrue(problems.get(1).startsWith(recipe + ":8: lora.bias: not offered: mixtune's adapters train no biases"),
                problems.get(1));
        assertEquals(recipe + ":10: train.optim: not offered: transformers' optim is train.optimizer: adamw_torch"
                + " (torch's AdamW, also for adamw_torch_fused and paged_adamw_32bit) or adamw_bnb_8bit, paged_adamw_8bit,"
                + " adamw_8bit (bitsandbytes' 8-bit AdamW)", problems.get(2));
        assertEquals("--set model.bnb_4bit_quant_type=fp4: model.bnb_4bit_quant_type: not offered: model.quantize: nf4 is"
                + " bitsandbytes' load_in_4bit with bnb_4bit_quant_type nf4 and double quantization (blocksize 64),"
                + " the only 4-bit setting", problems.get(3));
    }

    /** TRL's data keys for text and prompt-completion data: the text field is taken, the others named. */
    @Test
    void trlsTextFieldIsTakenItsLossAndPackingKeysAreNamed() throws IOException {
        Path recipe = write("trl.yaml", minimal());
        assertEquals("body", RecipeReader.read(recipe, List.of("data.dataset_text_field=body", "data.format=text"))
                .recipe().data().datasetTextField());
        assertEquals("text", RecipeReader.read(recipe, List.of()).recipe().data().datasetTextField());
        String blank = String.join("\n", problems(recipe, "data.dataset_text_field="));
        assertTrue(blank.contains("data.dataset_text_field: expected the name of the field that holds a text record's"
                + " text"), blank);
        String format = String.join("\n", problems(recipe, "data.format=completion"));
        assertTrue(format.contains("data.format: expected auto or one of messages, ultrachat, sharegpt, firefly, alpaca,"
                + " text, prompt_completion, got \"completion\""), format);
        String loss = String.join("\n", problems(recipe, "data.completion_only_loss=false"));
        assertTrue(loss.contains("data.completion_only_loss: not offered: a prompt_completion record trains its"
                + " completion only") && loss.contains("data.loss_on: train_on_inputs"), loss);
    }

    /**
     * TRL's packing_strategy by its name and values: bfd by default, bfd_split and wrapped taken for sft with packing;
     * another value, a strategy without packing and one for a method that never packs are named at their line.
     */
    @Test
    void trlsPackingStrategyIsTakenAndCheckedAtItsLine() throws IOException {
        Path recipe = write("pack.yaml", minimal() + "train:\n  method: sft\n");
        assertEquals("bfd", RecipeReader.read(recipe, List.of()).recipe().data().packingStrategy());
        DataConfig split = RecipeReader.read(recipe, List.of("data.packing_strategy=bfd_split")).recipe().data();
        assertEquals(PackingStrategy.BFD_SPLIT, split.packer());
        assertEquals(Integer.MAX_VALUE, split.sampleLength(), "samples kept whole, as TRL truncates none to pack");
        assertEquals(2048, RecipeReader.read(recipe, List.of()).recipe().data().sampleLength());
        Path wrapped = write("wrapped.yaml", "model:\n  preset: tiny-mistral\ndata:\n  files: [" + chats()
                + "]\n  packing_strategy: wraped\noutput_dir: " + dir.resolve("out") + "\n");
        assertEquals(List.of(wrapped + ":5: data.packing_strategy: expected one of bfd, bfd_split, wrapped, got "
                + "\"wraped\" (TRL's packing_strategy)"), problems(wrapped));
        String unpacked = String.join("\n", problems(recipe, "data.packing=false", "data.packing_strategy=wrapped"));
        assertTrue(unpacked.contains("data.packing_strategy: wrapped packs, but packing is false"), unpacked);
        String dpo = String.join("\n", problems(recipe, "train.method=dpo", "data.packing_strategy=bfd_split"));
        assertTrue(dpo.contains("data.packing_strategy: bfd_split packs SFT data, but train.method dpo never packs"),
                dpo);
    }

    /**
     * data.packing_fit: best_fit (TRL's bfd) by default, first_fit (mixtune's bfd before 2026-12-08) packs bfd first
     * fit; another value, or first_fit with a strategy that packs as TRL or without packing, is named at its line.
     */
    @Test
    void packingFitIsTakenAndCheckedAtItsLine() throws IOException {
        Path recipe = write("fit.yaml", minimal() + "train:\n  method: sft\n");
        assertEquals(PackingStrategy.BFD, RecipeReader.read(recipe, List.of()).recipe().data().packer());
        assertEquals(PackingStrategy.BFD_FIRST_FIT, RecipeReader.read(recipe, List.of("data.packing_fit=first_fit"))
                .recipe().data().packer());
        String other = String.join("\n", problems(recipe, "data.packing_fit=worst_fit"));
        assertTrue(other.contains("data.packing_fit: expected best_fit (TRL's bfd) or first_fit (mixtune's bfd before "
                + "2026-12-08), got \"worst_fit\""), other);
        String split = String.join("\n", problems(recipe, "data.packing_fit=first_fit",
                "data.packing_strategy=bfd_split"));
        assertTrue(split.contains("data.packing_fit: first_fit bins packing_strategy bfd's rows as mixtune did before "
                + "2026-12-08, but packing_strategy is bfd_split, which packs as TRL: drop packing_fit"), split);
        String unpacked = String.join("\n", problems(recipe, "data.packing=false", "data.packing_fit=first_fit"));
        assertTrue(unpacked.contains("but packing is false: drop packing_fit"), unpacked);
        // as packing_strategy bfd_split: a method that never packs would take first_fit silently
        String dpo = String.join("\n", problems(recipe, "train.method=dpo", "data.packing_fit=first_fit"));
        assertTrue(dpo.contains("data.packing_fit: first_fit bins SFT's packed rows, but train.method dpo never "
                + "packs: drop it"), dpo);
    }

    /**
     * TRL's old name bfd-requeue (SFTConfig.__post_init__ renames it to bfd_split with a FutureWarning) is named as
     * such, and SFTConfig's padding_free is refused by name with what mixtune does instead.
     */
    @Test
    void trlsOldStrategyNameAndPaddingFreeAreNamed() throws IOException {
        Path recipe = write("pack.yaml", minimal());
        String requeue = String.join("\n", problems(recipe, "data.packing_strategy=bfd-requeue"));
        assertTrue(requeue.contains("data.packing_strategy: bfd-requeue is TRL's old name of bfd_split (renamed in "
                + "TRL 1.13, which still reads it with a warning): write bfd_split"), requeue);
        for (String key : List.of("data.padding_free", "train.padding_free")) {
            String free = String.join("\n", problems(recipe, key + "=true"));
            assertTrue(free.contains(key + ": not offered: packed rows are padding-free already"), free);
        }
    }

    /** PEFT takes the first pattern key that matches, in the file's order: the recipe's order must reach it. */
    @Test
    void patternsKeepTheRecipesOrder() throws IOException {
        StringBuilder keys = new StringBuilder();
        List<String> order = new java.util.ArrayList<>();
        for (int i = 0; i < 20; i++) {
            order.add("k" + (19 - i) + "_proj");
            keys.append(i == 0 ? "" : ", ").append(order.get(i)).append(": ").append(i + 1);
        }
        Path recipe = write("p.yaml", minimal() + "lora:\n  targets: [q_proj]\n  alpha_pattern: {" + keys + "}\n"
                + "  rank_pattern: {" + keys + "}\n");
        io.mixtune.lora.adapter.LoraConfig config = RecipeReader.read(recipe, List.of()).recipe().lora().toConfig();
        assertEquals(order, List.copyOf(config.alphaPattern().keySet()));
        assertEquals(order, List.copyOf(config.rankPattern().keySet()));
    }

    /** Expert patterns that PEFT on transformers 5 cannot load (its fused experts hold one rank and alpha per layer). */
    @Test
    void expertPatternsPeftCannotLoadAreRefusedBeforeTraining() throws IOException {
        String mixtral = minimal().replace("tiny-mistral", "tiny-mixtral");
        Path w1Only = write("e.yaml", mixtral + "lora:\n  targets: [w1, w2, w3]\n  alpha_pattern: {w1: 32}\n");
        List<String> refused = problems(w1Only);
        assertEquals(1, refused.size(), refused.toString());
        assertTrue(refused.get(0).startsWith(w1Only + ":8: lora.alpha_pattern: ") && refused.get(0).contains(
                "PEFT 0.21 on transformers 5 fuses a Mixtral layer's experts"), refused.get(0));
        RecipeReader.read(write("ok.yaml", mixtral + "lora:\n  targets: [w1, w2, w3]\n  alpha_pattern: {w1: 16, w3: 16}\n"),
                List.of());
    }

    @Test
    void aDirectoryWhereAFileIsExpectedIsCalledOne() throws IOException {
        Path folder = Files.createDirectories(dir.resolve("chats"));
        Path data = write("d.yaml", minimal().replace("files: [", "files: [" + folder + ", "));
        assertEquals(List.of(data + ":4: data.files[0]: " + folder + " is a directory, expected a data file (JSONL or "
                + "JSON, plain or gzip)"), problems(data));
        assertEquals(folder + ": is a directory, expected a recipe file (YAML)",
                assertThrows(RecipeException.class, () -> RecipeReader.read(folder, List.of())).getMessage());
        Path file = chats();
        Path model = write("m.yaml", minimal().replace("preset: tiny-mistral", "path: " + file));
        assertEquals(List.of(model + ":2: model.path: " + file + " is a file, expected a Hugging Face checkpoint "
                + "directory (config.json + safetensors)"), problems(model));
        Path adapter = write("a.yaml", minimal().replace("preset: tiny-mistral", "preset: tiny-mistral\n  adapter: "
                + file));
        assertEquals(List.of(adapter + ":3: model.adapter: " + file + " is a file, expected a PEFT adapter directory "
                + "(adapter_config.json + adapter_model.safetensors)"), problems(adapter));
    }
}
