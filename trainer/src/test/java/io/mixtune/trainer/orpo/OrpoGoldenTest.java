package io.mixtune.trainer.orpo;

import static io.mixtune.trainer.dpo.DpoGoldenTest.close;
import static io.mixtune.trainer.dpo.DpoGoldenTest.closeOrZero;
import static io.mixtune.trainer.dpo.DpoGoldenTest.floats;
import static io.mixtune.trainer.dpo.DpoGoldenTest.iterable;
import static io.mixtune.trainer.dpo.DpoGoldenTest.longs1;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.training.GradientCollector;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.dpo.DpoGoldenTest;
import io.mixtune.trainer.dpo.PreferenceBatch;
import io.mixtune.trainer.recipe.Recipe;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * ORPO, CPO and SimPO against TRL 1.13's experimental trainers (interop/make_orpo_goldens.py; interop/GOLDENS.md,
 * "ORPO, CPO and SimPO"): their own get_batch_loss_metrics on fixed log-probs (loss, its gradient with respect to the
 * chosen and rejected log-probs and the NLL, and every metric they log but logits/*), and one forward/backward of
 * their get_batch_loss_metrics on the tiny Mixtral of the SFT golden (loss, metrics, every LoRA gradient).
 */
class OrpoGoldenTest {
    private static final double LOSS_RTOL = 1e-5;
    private static final ObjectMapper JSON = new ObjectMapper();

    private static Path golden(String name) {
        try {
            return Path.of(OrpoGoldenTest.class.getResource("/golden/orpo/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The method a golden case's TRL config fields describe. */
    static OrpoLoss.Method method(JsonNode c) {
        if (c.get("method").asText().equals("orpo")) {
            return new OrpoLoss.Method(new Recipe.Orpo(c.get("beta").doubleValue()), null);
        }
        return new OrpoLoss.Method(null, new Recipe.Cpo(c.get("loss_type").asText(), c.get("beta").doubleValue(),
                c.path("label_smoothing").asDouble(0), c.path("simpo_gamma").asDouble(0.5),
                c.get("cpo_alpha").doubleValue()));
    }

    @Test
    void lossGradientAndMetricsOnFixedLogProbsEqualTrl() throws IOException {
        JsonNode cases = JSON.readTree(golden("losses.json").toFile());
        int compared = 0;
        for (Map.Entry<String, JsonNode> entry : iterable(cases)) {
            String name = entry.getKey();
            JsonNode c = entry.getValue();
            OrpoLoss.Method method = method(c);
            float[] chosen = floats(c.get("chosen"));
            float[] rejected = floats(c.get("rejected"));
            try (NDManager manager = NDManager.newBaseManager()) {
                NDArray chosenArray = manager.create(chosen);
                NDArray rejectedArray = manager.create(rejected);
                NDArray nll = manager.create(new float[] {(float) c.get("nll").doubleValue()});
                for (NDArray array : List.of(chosenArray, rejectedArray, nll)) {
                    array.setRequiresGradient(true);
                }
                OrpoLoss.Objective objective;
                try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                    objective = OrpoLoss.objective(method, chosenArray, rejectedArray, nll);
                    collector.backward(objective.value());
                }
                float loss = objective.value().getFloat();
                close(name + " loss", c.get("loss").doubleValue(), loss, LOSS_RTOL);
                compareGradient(name + " d loss / d chosen", c.get("grad_chosen"), chosenArray);
                compareGradient(name + " d loss / d rejected", c.get("grad_rejected"), rejectedArray);
                closeOrZero(name + " d loss / d nll", c.get("grad_nll").doubleValue(), nll.getGradient().getFloat());
                OrpoMetrics metrics = new OrpoMetrics(method.beta());
                metrics.add(chosen, rejected, c.get("nll").doubleValue(),
                        objective.logOdds() == null ? null : objective.logOdds().toFloatArray(),
                        objective.logSigmoidOdds() == null ? null : objective.logSigmoidOdds().toFloatArray(), null,
                        loss);
                Map<String, Double> values = metrics.values();
                assertEquals(keys(c.get("metrics")), new TreeSet<>(values.keySet()), name + ": TRL's names");
                for (Map.Entry<String, JsonNode> metric : iterable(c.get("metrics"))) {
                    closeOrZero(name + " " + metric.getKey(), metric.getValue().doubleValue(),
                            values.get(metric.getKey()));
                }
                assertEquals(loss, metrics.meanLoss(), 1e-6);
            }
            compared++;
        }
        assertEquals(8, compared);
    }

    @ParameterizedTest
    @ValueSource(strings = {"orpo", "cpo_sigmoid", "simpo"})
    void oneStepEqualsTrlTrainer(String name) throws IOException {
        JsonNode batchJson = JSON.readTree(golden("step/batch.json").toFile());
        JsonNode want = JSON.readTree(golden("step/expected.json").toFile()).get(name);
        OrpoLoss.Method method = method(want);
        List<PreferenceSample> samples = new ArrayList<>();
        for (JsonNode pair : batchJson.get("pairs")) {
            samples.add(new PreferenceSample(longs1(pair.get("prompt_ids")), longs1(pair.get("chosen_ids")),
                    longs1(pair.get("rejected_ids")), null, "golden"));
        }
        PreferenceBatch batch = OrpoStep.batchOf(method, samples, new int[] {0, 1, 2},
                batchJson.get("pad_id").longValue());
        try (NDManager manager = NDManager.newBaseManager()) {
            LoraModel lora = DpoGoldenTest.goldenModel(batchJson, manager);
            CausalLm model = lora.model();
            List<String> report = new ArrayList<>();
            OrpoMetrics metrics = new OrpoMetrics(method.beta());
            try (NDManager stepManager = manager.newSubManager();
                    GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                OrpoStep.Terms terms = OrpoStep.of(model, method, batch, want.get("aux_coef").doubleValue(),
                        stepManager);
                float loss = terms.objective().getFloat();
                report.add(close(name + " loss", want.get("loss").doubleValue(), loss, LOSS_RTOL));
                report.add(close(name + " aux_loss", want.get("aux_loss").doubleValue(), terms.loadBalancing(),
                        LOSS_RTOL));
                metrics.add(terms.chosen(), terms.rejected(), terms.nll(), terms.logOdds(), terms.logSigmoidOdds(),
                        terms.logits(), loss);
                collector.backward(terms.objective());
            }
            Map<String, Double> values = metrics.values();
            for (Map.Entry<String, JsonNode> metric : iterable(want.get("metrics"))) {
                assertTrue(values.containsKey(metric.getKey()), name + ": TRL logs " + metric.getKey());
                closeOrZero(name + " " + metric.getKey(), metric.getValue().doubleValue(), values.get(metric.getKey()));
            }
            try (SafetensorsReader grads = SafetensorsReader.open(golden("step").resolve(want.get("grads").asText()))) {
                report.add(DpoGoldenTest.compareGradients(name + " gradients", lora, grads));
            }
            report.forEach(System.out::println);
        }
    }

    private static void compareGradient(String what, JsonNode want, NDArray array) {
        float[] grad = array.getGradient().toFloatArray();
        for (int i = 0; i < grad.length; i++) {
            double expected = want.get(i).doubleValue();
            assertEquals(expected, grad[i], 1e-5 * Math.abs(expected) + 1e-9, what + " " + i);
        }
    }

    private static Set<String> keys(JsonNode object) {
        Set<String> keys = new TreeSet<>();
        object.fieldNames().forEachRemaining(keys::add);
        return keys;
    }
}
