package io.mixtune.trainer.dpo;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.training.GradientCollector;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.lora.adapter.LoraLinear;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.lora.nf4.Nf4Loading;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.run.TrainingModel;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.LossScaler;
import io.mixtune.trainer.run.OptimizerStep;
import io.mixtune.trainer.run.StepContext;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * DPO against TRL 1.13 (interop/make_dpo_goldens.py; interop/GOLDENS.md, "DPO"): the losses and their gradients on
 * fixed log-probs, and one forward/backward of TRL's DPOTrainer on the tiny Mixtral of the SFT golden, whose reference
 * is the model with its adapter off.
 */
public class DpoGoldenTest {
    private static final double LOSS_RTOL = 1e-5;
    private static final double GRADIENT_RTOL = 1e-4; // of the tensor's max |value|, as SftGoldenTest
    private static final ObjectMapper JSON = new ObjectMapper();

    static Path golden(String name) {
        try {
            return Path.of(DpoGoldenTest.class.getResource("/golden/dpo/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    private static Recipe.Dpo dpo(String loss, double beta, double labelSmoothing, boolean referenceFree,
            double sftWeight) {
        return new Recipe.Dpo(beta, loss, labelSmoothing, referenceFree, sftWeight, List.of("1"), false);
    }

    @Test
    void lossesOnFixedLogProbsEqualTrlFormulas() throws IOException {
        JsonNode golden = JSON.readTree(golden("losses.json").toFile());
        JsonNode logps = golden.get("logps");
        List<String> report = new ArrayList<>();
        for (Map.Entry<String, JsonNode> entry : iterable(golden.get("cases"))) {
            String name = entry.getKey();
            JsonNode want = entry.getValue();
            Recipe.Dpo dpo = dpo(want.get("loss_type").asText(), want.get("beta").doubleValue(),
                    want.get("label_smoothing").doubleValue(), want.get("reference_free").booleanValue(), 0);
            try (NDManager manager = NDManager.newBaseManager()) {
                NDArray policyChosen = manager.create(floats(logps.get("policy_chosen")));
                NDArray policyRejected = manager.create(floats(logps.get("policy_rejected")));
                policyChosen.setRequiresGradient(true);
                policyRejected.setRequiresGradient(true);
                float[] referenceChosen = dpo.referenceFree() ? new float[4] : floats(logps.get("reference_chosen"));
                float[] referenceRejected = dpo.referenceFree() ? new float[4]
                        : floats(logps.get("reference_rejected"));
                float[] perPair;
                float loss;
                try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                    NDArray losses = DpoLoss.perPair(dpo, policyChosen, policyRejected, manager.create(referenceChosen),
                            manager.create(referenceRejected), manager.create(floats(logps.get("chosen_lengths"))),
                            manager.create(floats(logps.get("rejected_lengths"))));
                    NDArray mean = losses.mean();
                    perPair = losses.toFloatArray();
                    loss = mean.getFloat();
                    collector.backward(mean);
                }
                report.add(close(name + " loss", want.get("loss").doubleValue(), loss, LOSS_RTOL));
                for (int i = 0; i < perPair.length; i++) {
                    close(name + " pair " + i, want.get("per_pair_loss").get(i).doubleValue(), perPair[i], LOSS_RTOL);
                }
                try (NDArray chosenGradient = policyChosen.getGradient();
                        NDArray rejectedGradient = policyRejected.getGradient()) {
                    float[] chosen = chosenGradient.toFloatArray();
                    float[] rejected = rejectedGradient.toFloatArray();
                    for (int i = 0; i < chosen.length; i++) {
                        closeOrZero(name + " d/d chosen " + i, want.get("grad_policy_chosen").get(i).doubleValue(),
                                chosen[i]);
                        closeOrZero(name + " d/d rejected " + i, want.get("grad_policy_rejected").get(i).doubleValue(),
                                rejected[i]);
                    }
                }
                float[] policy = concat(floats(logps.get("policy_chosen")), floats(logps.get("policy_rejected")));
                DpoMetrics metrics = new DpoMetrics(dpo.beta());
                metrics.add(policy, concat(referenceChosen, referenceRejected), loss, 0, null);
                compareMetrics(name, want.get("metrics"), metrics.values(), report);
            }
        }
        report.forEach(System.out::println);
    }

    /**
     * TRL 1.13's other loss types and weighted combinations (MPO's sigmoid + bco_pair + sft among them), each golden
     * being TRL's own DPOTrainer._compute_loss on the fixed log-probs: the loss, d loss / d policy log-probs and the
     * logged rewards.
     */
    @Test
    void lossTypesOnFixedLogProbsEqualTrlDpoTrainer() throws IOException {
        trlDpoTrainerOnFixedLogProbs("loss_types.json");
    }

    /**
     * TRL 1.13's f_divergence_type (forward_kl, js_divergence, alpha_divergence with f_alpha_divergence_coef 0.5, 1, 3
     * and 20, whose exponent passes TRL's clamp at 80) over the losses built on the chosen - rejected difference, each
     * golden TRL's own DPOTrainer._compute_loss on the fixed log-probs.
     */
    @Test
    void fDivergencesOnFixedLogProbsEqualTrlDpoTrainer() throws IOException {
        trlDpoTrainerOnFixedLogProbs("f_divergence.json");
    }

    /** The loss, d loss / d policy log-probs and logged rewards of each case of a golden of TRL's _compute_loss. */
    private static void trlDpoTrainerOnFixedLogProbs(String file) throws IOException {
        JsonNode golden = JSON.readTree(golden(file).toFile());
        JsonNode logps = golden.get("logps");
        float[] chosenLengths = floats(logps.get("chosen_lengths"));
        int chosenTargets = 0;
        for (float length : chosenLengths) {
            chosenTargets += (int) length;
        }
        List<String> report = new ArrayList<>();
        for (Map.Entry<String, JsonNode> entry : iterable(golden.get("cases"))) {
            String name = entry.getKey();
            JsonNode want = entry.getValue();
            List<String> losses = new ArrayList<>();
            List<Double> weights = new ArrayList<>();
            double sftWeight = 0;
            for (int i = 0; i < want.get("loss_type").size(); i++) {
                String loss = want.get("loss_type").get(i).asText();
                double weight = want.get("loss_weights").get(i).doubleValue();
                if (loss.equals("sft")) { // TRL's sft loss type is dpo.sft_weight
                    sftWeight = weight;
                } else {
                    losses.add(loss);
                    weights.add(weight);
                }
            }
            Recipe.Dpo dpo = new Recipe.Dpo(want.get("beta").doubleValue(), losses, weights,
                    want.get("label_smoothing").doubleValue(), want.get("discopop_tau").doubleValue(),
                    want.path("f_divergence_type").asText(Recipe.Dpo.REVERSE_KL),
                    want.path("f_alpha_divergence_coef").asDouble(Recipe.Dpo.DEFAULT_F_ALPHA_DIVERGENCE_COEF), null,
                    false, false, sftWeight, List.of("1"), false, Recipe.Dpo.ORDER_FILE, null);
            // A float32 case holds the policy log-probs TRL read through its stand-in model's float32 logits.
            float[] chosenRead = floats(want.has("policy_chosen") ? want.get("policy_chosen")
                    : logps.get("policy_chosen"));
            float[] rejectedRead = floats(want.has("policy_rejected") ? want.get("policy_rejected")
                    : logps.get("policy_rejected"));
            try (NDManager manager = NDManager.newBaseManager()) {
                NDArray policyChosen = manager.create(chosenRead);
                NDArray policyRejected = manager.create(rejectedRead);
                policyChosen.setRequiresGradient(true);
                policyRejected.setRequiresGradient(true);
                float loss;
                try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                    DpoLoss.Objective objective = DpoLoss.objective(dpo, policyChosen, policyRejected,
                            manager.create(floats(logps.get("reference_chosen"))),
                            manager.create(floats(logps.get("reference_rejected"))), manager.create(chosenLengths),
                            manager.create(floats(logps.get("rejected_lengths"))), chosenTargets);
                    loss = objective.value().getFloat();
                    collector.backward(objective.value());
                }
                report.add(close(name + " loss", want.get("loss").doubleValue(), loss, LOSS_RTOL));
                try (NDArray chosenGradient = policyChosen.getGradient();
                        NDArray rejectedGradient = policyRejected.getGradient()) {
                    float[] actual = concat(chosenGradient.toFloatArray(), rejectedGradient.toFloatArray());
                    float[] expected = concat(floats(want.get("grad_policy_chosen")),
                            floats(want.get("grad_policy_rejected")));
                    // apo_down's d/d chosen is two float32 terms of about beta / 4 that cancel to about 1e-6: each
                    // component is held to 1e-5 of itself or of the largest component, whichever is larger.
                    double scale = 0;
                    for (float value : expected) {
                        scale = Math.max(scale, Math.abs(value));
                    }
                    for (int i = 0; i < actual.length; i++) {
                        assertEquals(expected[i], actual[i], LOSS_RTOL * Math.max(Math.abs(expected[i]), scale),
                                name + " d/d policy log-prob " + i + " (chosen, then rejected)");
                    }
                }
                DpoMetrics metrics = new DpoMetrics(dpo.beta());
                metrics.add(concat(chosenRead, rejectedRead),
                        concat(floats(logps.get("reference_chosen")), floats(logps.get("reference_rejected"))), loss,
                        0, null);
                compareMetrics(name, want.get("metrics"), metrics.values(), report);
            }
        }
        report.forEach(System.out::println);
    }

    @Test
    void preferenceBatchIsTrlCollatorLayout() throws IOException {
        JsonNode batchJson = JSON.readTree(golden("step/batch.json").toFile());
        PreferenceBatch batch = batch(batchJson);
        JsonNode collated = batchJson.get("collated");
        long[][] ids = longs(collated.get("input_ids"));
        long[][] attention = longs(collated.get("attention_mask"));
        long[][] completion = longs(collated.get("completion_mask"));
        for (int r = 0; r < ids.length; r++) {
            assertArrayEquals(ids[r], batch.rows().inputIds()[r], "input_ids row " + r);
            assertArrayEquals(attention[r], batch.rows().paddingMask()[r], "attention_mask row " + r);
            for (int t = 0; t < ids[r].length; t++) {
                assertEquals(completion[r][t] == 1, batch.rows().labels()[r][t] != TokenizedSample.IGNORE,
                        "completion_mask row " + r + " position " + t);
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"sigmoid", "ipo", "hinge", "sigmoid_sft"})
    void oneStepEqualsTrlDpoTrainer(String name) throws IOException {
        oneStepEqualsTrlDpoTrainer("step/expected.json", name);
    }

    /**
     * LD-DPO: TRL 1.13's DPOTrainer with ld_alpha 0.5 (sigmoid and its sft term, which reads every chosen token once)
     * and 0 (ipo), each pair's answers of different lengths: the tokens of the longer answer past the shorter's count
     * ld_alpha times in policy and reference log-probs, and the gradients follow.
     */
    @ParameterizedTest
    @ValueSource(strings = {"sigmoid_sft_ld_0.5", "ipo_ld_0"})
    void ldAlphaStepEqualsTrlDpoTrainer(String name) throws IOException {
        oneStepEqualsTrlDpoTrainer("step/ld_alpha.json", name);
    }

    /**
     * WPO: TRL 1.13's DPOTrainer with use_weighting (sigmoid; ipo with ld_alpha 0.5, whose weights read every token
     * once): each pair's loss times the policy's length-normalised probabilities of its two answers, without gradient.
     */
    @ParameterizedTest
    @ValueSource(strings = {"sigmoid_wpo", "ipo_wpo_ld_0.5"})
    void useWeightingStepEqualsTrlDpoTrainer(String name) throws IOException {
        oneStepEqualsTrlDpoTrainer("step/use_weighting.json", name);
    }

    private static void oneStepEqualsTrlDpoTrainer(String file, String name) throws IOException {
        JsonNode batchJson = JSON.readTree(golden("step/batch.json").toFile());
        JsonNode want = JSON.readTree(golden(file).toFile()).get(name);
        Double ldAlpha = want.has("ld_alpha") ? want.get("ld_alpha").doubleValue() : null;
        boolean useWeighting = want.path("use_weighting").asBoolean(false);
        PreferenceBatch batch = batch(batchJson);
        try (NDManager manager = NDManager.newBaseManager()) {
            LoraModel lora = goldenModel(batchJson, manager);
            CausalLm model = lora.model();
            List<String> report = new ArrayList<>();

            lora.setAdaptersEnabled(false);
            float[] reference = DpoStep.sequenceLogProbs(model, batch, ldAlpha, manager);
            lora.setAdaptersEnabled(true);
            for (int r = 0; r < reference.length; r++) {
                report.add(close(name + " reference logps row " + r, want.get("reference_logps").get(r).doubleValue(),
                        reference[r], LOSS_RTOL));
            }

            boolean sft = want.get("loss_type").size() > 1;
            Recipe.Dpo dpo = new Recipe.Dpo(batchJson.get("beta").doubleValue(),
                    List.of(want.get("loss_type").get(0).asText()), List.of(), 0, Recipe.Dpo.DEFAULT_DISCOPOP_TAU,
                    Recipe.Dpo.REVERSE_KL, Recipe.Dpo.DEFAULT_F_ALPHA_DIVERGENCE_COEF, ldAlpha, useWeighting, false,
                    sft ? batchJson.get("sft_weight").doubleValue() : 0, List.of("1"), false, Recipe.Dpo.ORDER_FILE,
                    null);
            DpoMetrics metrics = new DpoMetrics(dpo.beta());
            try (NDManager stepManager = manager.newSubManager();
                    GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                DpoStep.Terms terms = DpoStep.of(model, dpo, batch, reference, model.config().routerAuxLossCoef(),
                        stepManager);
                report.add(close(name + " loss", want.get("loss").doubleValue(), terms.objective().getFloat(),
                        LOSS_RTOL));
                report.add(close(name + " aux", want.get("aux_loss").doubleValue(), terms.loadBalancing(), LOSS_RTOL));
                report.add(close(name + " nll", want.get("nll").doubleValue(), terms.nll(), LOSS_RTOL));
                for (int r = 0; r < terms.policy().length; r++) {
                    close(name + " policy logps row " + r, want.get("policy_logps").get(r).doubleValue(),
                            terms.policy()[r], LOSS_RTOL);
                }
                metrics.add(terms, reference);
                collector.backward(terms.objective());
            }
            compareMetrics(name, want.get("metrics"), metrics.values(), report);
            try (SafetensorsReader grads = SafetensorsReader.open(golden("step").resolve(want.get("grads").asText()))) {
                report.add(compareGradients(name + " gradients", lora, grads));
            }
            report.forEach(System.out::println);
        }
    }

    /**
     * eval_loss on the tiny Mixtral as TRL's DPOTrainer.prediction_step computes it (step/eval.json): its _compute_loss
     * adds router_aux_loss_coef x the router loss whatever the mode, so evaluation holds the router term as training
     * does (as ORPO's, CPO's and KTO's evaluations do).
     */
    @Test
    void evalLossHoldsTheRouterTermAsTrlDpoTrainer(@TempDir Path dir) throws IOException {
        JsonNode batchJson = JSON.readTree(golden("step/batch.json").toFile());
        JsonNode want = JSON.readTree(golden("step/eval.json").toFile()).get("sigmoid");
        List<PreferenceSample> pairs = samples(batchJson);
        Recipe recipe = RecipeReader.read(Path.of("../recipes/quickstart-dpo.yaml"), List.of("dpo.beta="
                + batchJson.get("beta").doubleValue(), "dpo.stages=1", "train.micro_batch_size=" + pairs.size(),
                "output_dir=" + dir)).recipe();
        try (NDManager manager = NDManager.newBaseManager()) {
            LoraModel lora = goldenModel(batchJson, manager);
            TrainingModel model = new TrainingModel(manager, lora.model(), lora, golden("step"), DataType.FLOAT32);
            DpoObjective objective = new DpoObjective(recipe, model, 0, pairs, DpoObjective.inOrder(pairs,
                    pairs.size(), batchJson.get("pad_id").longValue()), new StageReference(recipe.dpo(), model, false,
                    null, null));
            Map<String, Number> metrics;
            try (LoraModel.Scope evaluating = lora.evaluating()) {
                metrics = objective.evaluate();
            }
            double expected = want.get("eval_loss").doubleValue();
            assertEquals(expected, metrics.get("eval_loss").doubleValue(), LOSS_RTOL * expected, "TRL's eval_loss: "
                    + "the DPO loss " + want.get("dpo_loss").doubleValue() + " + " + want.get("aux_coef").doubleValue()
                    + " x aux_loss " + want.get("aux_loss").doubleValue());
            // TRL logs the router loss it added as eval_aux_loss (_compute_loss's _metrics["eval"]["aux_loss"])
            double aux = want.get("aux_loss").doubleValue();
            assertTrue(metrics.containsKey("eval_aux_loss"), "TRL logs eval_aux_loss: " + metrics.keySet());
            assertEquals(aux, metrics.get("eval_aux_loss").doubleValue(), LOSS_RTOL * aux, "eval_aux_loss");
        }
    }

    /** The golden step's pairs as two micro-batches, 2 + 1, as the checkpointing tests split them. */
    private static List<PreferenceBatch> twoMicroBatches(JsonNode batchJson) {
        List<PreferenceSample> samples = samples(batchJson);
        long pad = batchJson.get("pad_id").longValue();
        return List.of(PreferenceBatch.of(samples.subList(0, 2), new int[] {0, 1}, pad),
                PreferenceBatch.of(samples.subList(2, 3), new int[] {2}, pad));
    }

    /**
     * One optimizer step over two micro-batches (the golden pairs split 2 + 1), sigmoid + SFT term + router loss, with
     * and without gradient checkpointing: the same loss, gradient norm and updated adapter. Also ipo with LD-DPO and
     * WPO's weights (no SFT term: TRL refuses it with WPO), whose checkpointed head reads the per-token statistics of the recomputed top layer.
     */
    @ParameterizedTest
    @CsvSource({"sigmoid, , false, 0.5", "ipo, 0.5, true, 0"})
    void gradientCheckpointingGivesThePlainStep(String loss, Double ldAlpha, boolean useWeighting, double sftWeight)
            throws IOException {
        JsonNode batchJson = JSON.readTree(golden("step/batch.json").toFile());
        List<PreferenceBatch> batches = twoMicroBatches(batchJson);
        Recipe.Dpo dpo = new Recipe.Dpo(batchJson.get("beta").doubleValue(), List.of(loss), List.of(), 0,
                Recipe.Dpo.DEFAULT_DISCOPOP_TAU, Recipe.Dpo.REVERSE_KL, Recipe.Dpo.DEFAULT_F_ALPHA_DIVERGENCE_COEF,
                ldAlpha, useWeighting, false, sftWeight, List.of("1"), false, Recipe.Dpo.ORDER_FILE, null);
        List<float[]> after = new ArrayList<>();
        double[][] measured = new double[2][];
        for (boolean checkpointing : new boolean[] {false, true}) {
            try (NDManager manager = NDManager.newBaseManager()) {
                LoraModel lora = goldenModel(batchJson, manager);
                CausalLm model = lora.model();
                List<NDArray> parameters = lora.parameters(TrainingModel.ADAPTER_NAME);
                AdamW optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0.01);
                OptimizerStep.Result<DpoStep.Measured> result = dpoStep(model, parameters, dpo, batches, batch -> {
                    lora.setAdaptersEnabled(false);
                    float[] reference = DpoStep.sequenceLogProbs(model, batch, dpo.ldAlpha(), manager);
                    lora.setAdaptersEnabled(true);
                    return reference;
                }, model.config().routerAuxLossCoef(), 1.0, optimizer, 1e-3, manager, checkpointing, 11,
                        LossScaler.off());
                Map<String, Double> logged = result.measured().dpoMetrics().values();
                measured[checkpointing ? 1 : 0] = new double[] {result.loss(), result.gradNorm(),
                        result.measured().loadBalancing(), result.measured().dpoMetrics().margin(),
                        logged.get("logits/chosen"), logged.get("logits/rejected"), logged.get("entropy")};
                if (!checkpointing) {
                    parameters.forEach(p -> after.add(p.toFloatArray()));
                } else {
                    for (int i = 0; i < parameters.size(); i++) {
                        assertArrayEquals(after.get(i), parameters.get(i).toFloatArray(), 1e-7f, "array " + i);
                    }
                }
            }
        }
        assertArrayEquals(measured[0], measured[1], 1e-6, "loss, grad norm, router loss, margin, logits/*, entropy");
        assertTrue(measured[0][2] > 0, "the tiny Mixtral's router loss is in the objective");
        System.out.printf(Locale.ROOT, "checkpointed DPO step (%s): loss %.6f, grad norm %.6f, as the plain step%n",
                dpo.loss(), measured[1][0], measured[1][1]);
    }

    /**
     * The same with the base in NF4, whose recomputed layers keep no dequantized weight for their backward
     * (RecomputedWeights): the step equals the plain one up to float rounding (float32: gradient norm within 1e-6,
     * adapter within 1e-7; float16: 5e-3 of the gradient norm, and AdamW's first step may flip where a gradient is
     * about 0).
     */
    @ParameterizedTest
    @CsvSource({"FLOAT32, 1e-6, 1e-7", "FLOAT16, 5e-3, 2e-3"})
    void nf4GradientCheckpointingGivesThePlainStep(DataType computeType, double gradNormRtol, double weightAtol)
            throws IOException {
        JsonNode batchJson = JSON.readTree(golden("step/batch.json").toFile());
        List<PreferenceBatch> batches = twoMicroBatches(batchJson);
        Recipe.Dpo dpo = dpo("sigmoid", batchJson.get("beta").doubleValue(), 0, false, 0.5);
        List<float[]> after = new ArrayList<>();
        double[][] measured = new double[2][];
        for (boolean checkpointing : new boolean[] {false, true}) {
            try (NDManager manager = NDManager.newBaseManager()) {
                Path stepDir = golden("step");
                CausalLm model = MistralCheckpoint.load(stepDir.resolve(batchJson.get("model").asText()).normalize(),
                        manager, Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION), computeType);
                LoraModel lora = new LoraModel(model);
                PeftAdapter.load(lora, stepDir.resolve(batchJson.get("adapter").asText()).normalize(),
                        TrainingModel.ADAPTER_NAME);
                lora.setTraining(true);
                List<NDArray> parameters = lora.parameters(TrainingModel.ADAPTER_NAME);
                AdamW optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0.01);
                OptimizerStep.Result<DpoStep.Measured> result = dpoStep(model, parameters, dpo, batches, batch -> {
                    lora.setAdaptersEnabled(false);
                    float[] reference = DpoStep.sequenceLogProbs(model, batch, manager);
                    lora.setAdaptersEnabled(true);
                    return reference;
                }, model.config().routerAuxLossCoef(), 1.0, optimizer, 1e-3, manager, checkpointing, 11,
                        LossScaler.off());
                measured[checkpointing ? 1 : 0] = new double[] {result.loss(), result.gradNorm()};
                if (!checkpointing) {
                    parameters.forEach(p -> after.add(p.toFloatArray()));
                } else {
                    for (int i = 0; i < parameters.size(); i++) {
                        assertArrayEquals(after.get(i), parameters.get(i).toFloatArray(), (float) weightAtol,
                                "array " + i);
                    }
                }
            }
        }
        assertEquals(measured[0][0], measured[1][0], 1e-6 * Math.abs(measured[0][0]), "loss");
        assertEquals(measured[0][1], measured[1][1], gradNormRtol * measured[0][1], "gradient norm");
        System.out.printf(Locale.ROOT, "checkpointed NF4 DPO step, %s: grad norm %.8f vs plain %.8f%n", computeType,
                measured[1][1], measured[0][1]);
    }

    /** The SFT golden's tiny Mixtral with its adapter, in training mode. */
    public static LoraModel goldenModel(JsonNode batchJson, NDManager manager) {
        Path stepDir = golden("step");
        CausalLm model = MistralCheckpoint.load(stepDir.resolve(batchJson.get("model").asText()).normalize(), manager,
                MistralCheckpoint.DENSE);
        LoraModel lora = new LoraModel(model);
        PeftAdapter.load(lora, stepDir.resolve(batchJson.get("adapter").asText()).normalize(), TrainingModel.ADAPTER_NAME);
        lora.setTraining(true);
        return lora;
    }

    static List<PreferenceSample> samples(JsonNode batchJson) {
        List<PreferenceSample> samples = new ArrayList<>();
        for (JsonNode pair : batchJson.get("pairs")) {
            samples.add(new PreferenceSample(longs1(pair.get("prompt_ids")), longs1(pair.get("chosen_ids")),
                    longs1(pair.get("rejected_ids")), null, "golden"));
        }
        return samples;
    }

    static PreferenceBatch batch(JsonNode batchJson) {
        List<PreferenceSample> samples = samples(batchJson);
        return PreferenceBatch.of(samples, new int[samples.size()], batchJson.get("pad_id").longValue());
    }

    private static void compareMetrics(String name, JsonNode want, Map<String, Double> actual, List<String> report) {
        for (Map.Entry<String, JsonNode> metric : iterable(want)) {
            double expected = metric.getValue().doubleValue();
            assertTrue(actual.containsKey(metric.getKey()), name + ": TRL logs " + metric.getKey() + ", mixtune not");
            double value = actual.get(metric.getKey());
            if (expected == 0) {
                assertEquals(0, value, 1e-7, name + " " + metric.getKey());
            } else {
                report.add(close(name + " " + metric.getKey(), expected, value, LOSS_RTOL));
            }
        }
    }

    /** Every LoRA gradient against TRL's, relative to the golden tensor's max |value|; the worst is reported. */
    public static String compareGradients(String what, LoraModel lora, SafetensorsReader golden) {
        double worst = 0;
        String worstKey = null;
        int compared = 0;
        for (Map.Entry<String, LoraLinear> entry : lora.layers().entrySet()) {
            LoraLinear.Adapter adapter = entry.getValue().adapter(TrainingModel.ADAPTER_NAME);
            for (String matrix : List.of("lora_A", "lora_B")) {
                String key = "base_model.model." + entry.getKey() + "." + matrix + ".weight";
                float[] actual;
                try (NDArray gradient = (matrix.equals("lora_A") ? adapter.a() : adapter.b()).getGradient()) {
                    actual = gradient.toFloatArray();
                }
                float[] expected = golden.readFloats(key);
                double scale = 0;
                double diff = 0;
                for (int i = 0; i < expected.length; i++) {
                    scale = Math.max(scale, Math.abs(expected[i]));
                    diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
                }
                if (diff / scale > worst) {
                    worst = diff / scale;
                    worstKey = key;
                }
                compared++;
            }
        }
        assertEquals(golden.names().size(), compared, what + ": arrays compared vs in the golden file");
        String line = String.format(Locale.ROOT, "%s: worst rel-to-max diff %.3g at %s (%d arrays)", what, worst,
                worstKey, compared);
        assertTrue(worst <= GRADIENT_RTOL, line);
        return line;
    }

    public static String close(String what, double expected, double actual, double rtol) {
        double relative = Math.abs(actual - expected) / Math.abs(expected);
        assertTrue(relative <= rtol, String.format(Locale.ROOT, "%s: expected %.9g, got %.9g (rel diff %.3g > %.1g)",
                what, expected, actual, relative, rtol));
        return String.format(Locale.ROOT, "%s: rel diff %.3g", what, relative);
    }

    /** Hinge has zero gradient on pairs past the margin: compare those absolutely. */
    public static void closeOrZero(String what, double expected, double actual) {
        if (expected == 0) {
            assertEquals(0, actual, 1e-9, what);
        } else {
            close(what, expected, actual, LOSS_RTOL);
        }
    }

    public static Iterable<Map.Entry<String, JsonNode>> iterable(JsonNode object) {
        return object::fields;
    }

    public static float[] floats(JsonNode values) {
        float[] out = new float[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = values.get(i).floatValue();
        }
        return out;
    }

    private static float[] concat(float[] a, float[] b) {
        float[] out = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }

    public static long[] longs1(JsonNode values) {
        long[] out = new long[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = values.get(i).longValue();
        }
        return out;
    }

    private static long[][] longs(JsonNode rows) {
        long[][] out = new long[rows.size()][];
        for (int r = 0; r < out.length; r++) {
            out[r] = longs1(rows.get(r));
        }
        return out;
    }

    /** One DPO optimizer step through the code `mixtune train` runs ({@link OptimizerStep} with {@link DpoStep}). */
    private static OptimizerStep.Result<DpoStep.Measured> dpoStep(CausalLm model, List<NDArray> parameters,
            Recipe.Dpo dpo, List<PreferenceBatch> batches, DpoStep.Reference reference, double auxCoefficient,
            double maxGradNorm, AdamW optimizer, double lr, NDManager manager, boolean checkpointing,
            long dropoutSeed, LossScaler scaler) {
        StepContext context = new StepContext(model, parameters, manager, optimizer, scaler, maxGradNorm,
                auxCoefficient, checkpointing, dropoutSeed);
        return OptimizerStep.run((microBatches, c) -> DpoStep.gradients(dpo, microBatches, reference, c), batches,
                context, lr);
    }
}
