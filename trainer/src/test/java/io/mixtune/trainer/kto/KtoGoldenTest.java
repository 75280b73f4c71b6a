package io.mixtune.trainer.kto;

import static io.mixtune.trainer.dpo.DpoGoldenTest.close;
import static io.mixtune.trainer.dpo.DpoGoldenTest.closeOrZero;
import static io.mixtune.trainer.dpo.DpoGoldenTest.floats;
import static io.mixtune.trainer.dpo.DpoGoldenTest.iterable;
import static io.mixtune.trainer.dpo.DpoGoldenTest.longs1;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.training.GradientCollector;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.preference.LabeledSample;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.dpo.DpoGoldenTest;
import io.mixtune.trainer.dpo.DpoStep;
import io.mixtune.trainer.dpo.PreferenceBatch;
import io.mixtune.trainer.recipe.Recipe;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * KTO against TRL 1.13 (interop/make_kto_goldens.py; interop/GOLDENS.md, "KTO"): TRL's own KTOTrainer._compute_loss on
 * fixed log-probs (loss, its gradient, the KL estimate and the logged rewards/logps), and one forward/backward of
 * KTOTrainer on the tiny Mixtral of the SFT golden, whose reference is the model with its adapter off.
 */
class KtoGoldenTest {
    private static final double LOSS_RTOL = 1e-5;
    private static final ObjectMapper JSON = new ObjectMapper();

    private static Path golden(String name) {
        try {
            return Path.of(KtoGoldenTest.class.getResource("/golden/kto/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    private static Recipe.Kto kto(JsonNode c) {
        return new Recipe.Kto(c.get("beta").doubleValue(), c.get("loss_type").asText(),
                c.get("desirable_weight").doubleValue(), c.get("undesirable_weight").doubleValue());
    }

    @Test
    void lossKlAndMetricsOnFixedLogProbsEqualTrlKtoTrainer() throws IOException {
        JsonNode cases = JSON.readTree(golden("losses.json").toFile());
        int compared = 0;
        for (Map.Entry<String, JsonNode> entry : iterable(cases)) {
            String name = entry.getKey();
            JsonNode c = entry.getValue();
            Recipe.Kto kto = kto(c);
            boolean[] labels = booleans(c.get("labels"));
            float[] policy = floats(c.get("policy"));
            float[] reference = floats(c.get("reference"));
            float kl = KtoLoss.klEstimate(c.get("policy_kl").isNull() ? null : floats(c.get("policy_kl")),
                    c.get("reference_kl").isNull() ? null : floats(c.get("reference_kl")));
            try (NDManager manager = NDManager.newBaseManager()) {
                NDArray policyArray = manager.create(policy);
                policyArray.setRequiresGradient(true);
                float loss;
                try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                    KtoLoss.Objective objective = KtoLoss.objective(kto, policyArray, manager.create(reference),
                            labels, kl, manager);
                    loss = objective.value().getFloat();
                    collector.backward(objective.value());
                }
                close(name + " loss", c.get("loss").doubleValue(), loss, LOSS_RTOL);
                float[] grad = policyArray.getGradient().toFloatArray();
                for (int i = 0; i < grad.length; i++) {
                    double want = c.get("grad").get(i).doubleValue();
                    assertEquals(want, grad[i], 1e-5 * Math.abs(want) + 1e-9, name + " d loss / d policy " + i);
                }
                KtoMetrics metrics = new KtoMetrics(kto.beta());
                metrics.add(labels, policy, reference, kl, loss, null, null);
                Map<String, Double> values = metrics.values();
                assertEquals(keys(c.get("metrics")), new ArrayList<>(values.keySet()), name + ": TRL's names");
                for (Map.Entry<String, JsonNode> metric : iterable(c.get("metrics"))) {
                    closeOrZero(name + " " + metric.getKey(), metric.getValue().doubleValue(),
                            values.get(metric.getKey()));
                }
            }
            compared++;
        }
        assertEquals(7, compared);
    }

    @Test
    void klRowsAreTrlsRotationAndCollatorLayout() throws IOException {
        JsonNode batchJson = JSON.readTree(golden("step/batch.json").toFile());
        List<LabeledSample> samples = samples(batchJson);
        long[][] kl = LabeledSample.klCompletions(samples, samples.size());
        for (int i = 0; i < samples.size(); i++) {
            assertArrayEquals(longs1(batchJson.get("examples").get(i).get("KL_completion_ids")), kl[i], "example " + i);
        }
        KtoBatch batch = KtoBatch.of(samples, kl, new int[] {0, 1, 2, 3}, 1 << 20, batchJson.get("pad_id").longValue());
        JsonNode collated = batchJson.get("collated");
        for (int r = 0; r < samples.size(); r++) {
            assertArrayEquals(longs1(collated.get("input_ids").get(r)), batch.rows().inputIds()[r], "row " + r);
            assertArrayEquals(longs1(collated.get("attention_mask").get(r)), batch.rows().paddingMask()[r]);
            assertArrayEquals(longs1(collated.get("KL_input_ids").get(r)), batch.klRows().inputIds()[r], "KL " + r);
            assertEquals(collated.get("label").get(r).asBoolean(), batch.labels()[r]);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"kto", "kto_weights", "apo_zero_unpaired"})
    void oneStepEqualsTrlKtoTrainer(String name) throws IOException {
        JsonNode batchJson = JSON.readTree(golden("step/batch.json").toFile());
        JsonNode want = JSON.readTree(golden("step/expected.json").toFile()).get(name);
        Recipe.Kto kto = kto(want);
        List<LabeledSample> samples = samples(batchJson);
        KtoBatch batch = KtoBatch.of(samples, kto.estimatesKl() ? LabeledSample.klCompletions(samples, 4) : null,
                new int[] {0, 1, 2, 3}, 1 << 20, batchJson.get("pad_id").longValue());
        try (NDManager manager = NDManager.newBaseManager()) {
            LoraModel lora = DpoGoldenTest.goldenModel(batchJson, manager);
            CausalLm model = lora.model();
            lora.setAdaptersEnabled(false);
            float[] reference = DpoStep.sequenceLogProbs(model, batch.rows(), manager);
            float[] referenceKl = batch.klRows() == null ? null : DpoStep.sequenceLogProbs(model, batch.klRows(),
                    manager);
            lora.setAdaptersEnabled(true);
            float[] policyKl = batch.klRows() == null ? null : DpoStep.sequenceLogProbs(model, batch.klRows(),
                    manager);
            KtoStep.Against against = new KtoStep.Against(reference, KtoLoss.klEstimate(policyKl, referenceKl));
            List<String> report = new ArrayList<>();
            KtoMetrics metrics = new KtoMetrics(kto.beta());
            try (NDManager stepManager = manager.newSubManager();
                    GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                KtoStep.Terms terms = KtoStep.of(model, kto, batch, against, model.config().routerAuxLossCoef(),
                        stepManager);
                report.add(close(name + " loss", want.get("loss").doubleValue(), terms.objective().getFloat(),
                        LOSS_RTOL));
                report.add(close(name + " aux_loss", want.get("metrics").get("aux_loss").doubleValue(),
                        terms.loadBalancing(), LOSS_RTOL));
                metrics.add(batch.labels(), terms.policy(), reference, against.kl(), terms.objective().getFloat(),
                        terms.statistics(), PreferenceBatch.targetsPerRow(batch.rows()));
                collector.backward(terms.objective());
            }
            Map<String, Double> values = metrics.values();
            for (Map.Entry<String, JsonNode> metric : iterable(want.get("metrics"))) {
                if (metric.getKey().equals("aux_loss")) {
                    continue;
                }
                assertTrue(values.containsKey(metric.getKey()), name + ": TRL logs " + metric.getKey());
                closeOrZero(name + " " + metric.getKey(), metric.getValue().doubleValue(), values.get(metric.getKey()));
            }
            try (SafetensorsReader grads = SafetensorsReader.open(golden("step").resolve(want.get("grads").asText()))) {
                report.add(DpoGoldenTest.compareGradients(name + " gradients", lora, grads));
            }
            report.forEach(System.out::println);
        }
    }

    @Test
    void klEstimateClampsAtZeroAndIsZeroWithoutKlRows() {
        assertEquals(0f, KtoLoss.klEstimate(new float[] {-3, -1}, new float[] {-2, 0}));
        assertEquals(1f, KtoLoss.klEstimate(new float[] {-1, -1}, new float[] {-2, -2}));
        assertEquals(0f, KtoLoss.klEstimate(null, null));
        assertFalse(new Recipe.Kto(0.1, "apo_zero_unpaired", 1, 1).estimatesKl());
    }

    private static List<LabeledSample> samples(JsonNode batchJson) {
        List<LabeledSample> samples = new ArrayList<>();
        for (JsonNode e : batchJson.get("examples")) {
            samples.add(new LabeledSample(longs1(e.get("prompt_ids")), longs1(e.get("completion_ids")),
                    e.get("label").asBoolean(), "golden", false));
        }
        return samples;
    }

    private static List<String> keys(JsonNode object) {
        List<String> keys = new ArrayList<>();
        object.fieldNames().forEachRemaining(keys::add);
        return keys;
    }

    private static boolean[] booleans(JsonNode values) {
        boolean[] out = new boolean[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = values.get(i).asBoolean();
        }
        return out;
    }
}
