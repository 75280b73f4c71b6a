package io.mixtune.lora.adapter;

import static io.mixtune.lora.adapter.LoraAdapterTest.assertArrayClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.lora.init.MutatedInit;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.ArrayTensors;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.io.TempDir;

/**
 * PiSSA and OLoRA start as PEFT 0.21 starts them (interop/make_lora_init_goldens.py: a tiny Mistral, r 4 with
 * rank_pattern and alpha_pattern on every decoder linear): the same A0 and B0 (PiSSA's up to the sign of each singular
 * triplet, which LAPACK and commons-math3 pick freely), the same residual base weights, logits equal to the base's at
 * the start; and once A and B have moved, the adapter mixtune writes is PEFT's converted rank-2r LoRA
 * (save_pretrained with path_initial_model_for_weight_conversion), which on the original base gives the trained
 * model's logits.
 *
 * <p>Tolerances, of max(1, the largest value): OLoRA's A0, B0 and every residual within 2e-5, float32 LAPACK against
 * Java's double Householder QR; PiSSA's A0 and B0 within 1e-4, since a singular vector computed in float32 is off by
 * about eps ||W|| / (s_r - s_r+1), and the smallest gap here is 0.8% of s_0 (measured: 2.1e-5); logits within 1e-4,
 * as every PEFT parity test.
 */
class LoraInitGoldenTest {
    private static final double LOGITS = 1e-4;
    private static final double FACTORS = 2e-5;
    private static final double SINGULAR_VECTORS = 1e-4;
    private static final List<String> TARGETS = List.of("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
            "down_proj");

    static LoraConfig config() {
        Map<String, Integer> ranks = new LinkedHashMap<>();
        ranks.put("k_proj", 2);
        Map<String, Double> alphas = new LinkedHashMap<>();
        alphas.put("o_proj", 4.0);
        return new LoraConfig(4, 8, 0, TARGETS, false, ranks, alphas);
    }

    @ParameterizedTest
    @ValueSource(strings = {"pissa", "olora"})
    void startAndConversionEqualPeft(String init, @TempDir Path dir) throws Exception {
        LoraConfig config = config();
        Map<String, float[][]> initial = new LinkedHashMap<>();
        Map<String, float[]> residuals = new LinkedHashMap<>();
        boolean pissa = init.equals("pissa");
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(golden("base"), manager, MutatedInit.factory(
                        (name, weight, shape, m) -> {
                            residuals.put(name, weight.clone());
                            return MistralCheckpoint.DENSE.create(name, weight, shape, m);
                        }, config, LoraInit.parse(init), 0, initial));
                SafetensorsReader expected = SafetensorsReader.open(golden(init + "/expected.safetensors"))) {
            assertEquals(14, initial.size());
            for (var entry : initial.entrySet()) {
                String module = entry.getKey();
                float[] a0 = expected.readFloats(module + ".A0");
                float[] b0 = expected.readFloats(module + ".B0");
                float[][] mine = pissa ? signedLike(entry.getValue(), a0, config.rankOf(module)) : entry.getValue();
                double tolerance = pissa ? SINGULAR_VECTORS : FACTORS;
                assertArrayClose(a0, mine[0], tolerance * Math.max(1, DoraGoldenTest.maxAbs(a0)), module + " A0");
                assertArrayClose(b0, mine[1], tolerance * Math.max(1, DoraGoldenTest.maxAbs(b0)), module + " B0");
                float[] residual = expected.readFloats(module + ".residual");
                assertArrayClose(residual, residuals.get(module), FACTORS * Math.max(1, DoraGoldenTest.maxAbs(residual)),
                        module + " residual");
            }
            LoraModel lora = new LoraModel(model);
            lora.addMutatedAdapter("default", config, initial);
            float[] start = DoraGoldenTest.logits(model, expected, manager);
            assertArrayClose(expected.readFloats("base.logits"), start, LOGITS, "start vs base");
            lora.layers().forEach((module, layer) -> {
                ArrayTensors.readInto(expected, module + ".A", layer.adapter("default").a());
                ArrayTensors.readInto(expected, module + ".B", layer.adapter("default").b());
            });
            assertArrayClose(expected.readFloats("trained.logits"), DoraGoldenTest.logits(model, expected, manager),
                    LOGITS, "trained");
            PeftAdapter.save(lora, "default", dir.resolve("converted"), "../../base");
        }
        checkConverted(init, dir.resolve("converted"), pissa);
    }

    @ParameterizedTest
    @ValueSource(strings = {"pissa", "pissa_niter_2", "olora"})
    void onMixtralExpertsTheWrittenAdapterIsTheTrainedModelOnTheOriginalBase(String init, @TempDir Path dir)
            throws Exception {
        // The tiny Mixtral of the PEFT goldens, experts, router and attention adapted (rank 4, w2 at rank 2, alpha
        // 8): at the start the model is the base; after A and B move, the written (converted, fused where PEFT on
        // transformers 5 fuses experts) adapter loaded on the untouched base gives the moved model's logits.
        Path base = PeftGoldenTest.golden("base");
        LoraConfig config = new LoraConfig(4, 8, 0, List.of("q_proj", "v_proj", "w1", "w2", "w3"), false,
                Map.of("w2", 2), Map.of());
        Map<String, float[][]> initial = new LinkedHashMap<>();
        long[] ids = {1, 5, 9, 30, 17, 42, 55, 3};
        float[] moved;
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(base, manager, MutatedInit.factory(MistralCheckpoint.DENSE,
                        config, LoraInit.parse(init), 11, initial));
                CausalLm original = MistralCheckpoint.load(base, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addMutatedAdapter("default", config, initial);
            assertEquals(2 * (2 + 3 * 4), initial.size());
            assertArrayClose(logits(original, ids, manager), logits(model, ids, manager), LOGITS, "start vs base");
            java.util.SplittableRandom random = new java.util.SplittableRandom(5);
            for (LoraLinear layer : lora.layers().values()) {
                for (NDArray array : List.of(layer.adapter("default").a(), layer.adapter("default").b())) {
                    float[] values = array.toFloatArray();
                    for (int i = 0; i < values.length; i++) {
                        values[i] += (float) (0.05 * random.nextGaussian());
                    }
                    io.mixtune.model.nn.InPlaceCopy.copy(array, values);
                }
            }
            moved = logits(model, ids, manager);
            assertTrue(LoraAdapterTest.maxDiff(logits(original, ids, manager), moved) > 1e-2, "the move changed nothing");
            PeftAdapter.save(lora, "default", dir.resolve("adapter"), base.toString());
        }
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(base, manager)) {
            PeftAdapter.load(new LoraModel(model), dir.resolve("adapter"), "default");
            assertArrayClose(moved, logits(model, ids, manager), LOGITS, "converted on the original base");
        }
    }

    private static float[] logits(CausalLm model, long[] ids, NDManager parent) {
        try (NDManager manager = parent.newSubManager()) {
            return model.forward(manager.create(ids).reshape(1, ids.length),
                    manager.arange(0, ids.length, 1, ai.djl.ndarray.types.DataType.INT64).reshape(1, ids.length), null)
                    .toFloatArray();
        }
    }

    @org.junit.jupiter.api.Test
    void gaussianDrawsAWithStdOneOverRAndLeavesBZero() throws Exception {
        // PEFT's reset_lora_parameters: nn.init.normal_(lora_A, std=1 / r), lora_B zero; the base stays as it is.
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(golden("base"), manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", LoraConfig.of(4, 8, TARGETS), LoraModel.Init.of(LoraInit.parse("gaussian")), 3);
            double sum = 0;
            double squares = 0;
            long count = 0;
            for (LoraLinear layer : lora.layers().values()) {
                for (float v : layer.adapter("default").a().toFloatArray()) {
                    sum += v;
                    squares += v * v;
                    count++;
                }
                for (float v : layer.adapter("default").b().toFloatArray()) {
                    assertEquals(0f, v);
                }
            }
            double std = Math.sqrt(squares / count - (sum / count) * (sum / count));
            assertEquals(0.25, std, 0.01, "std of A over " + count + " draws");
            assertTrue(lora.initialWeights("default").isEmpty());
        }
    }

    @org.junit.jupiter.api.Test
    void orthogonalStartsWithBTimesAZeroThoughNeitherIs() throws Exception {
        // PEFT's orthogonal_init: A and B from complementary rows of one random orthogonal matrix, so B A = 0.
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(golden("base"), manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", LoraConfig.of(4, 8, TARGETS), LoraModel.Init.of(LoraInit.parse("orthogonal")),
                    3);
            for (LoraLinear layer : lora.layers().values()) {
                float[] a = layer.adapter("default").a().toFloatArray();
                float[] b = layer.adapter("default").b().toFloatArray();
                int in = (int) layer.inFeatures();
                int out = (int) layer.outFeatures();
                assertTrue(DoraGoldenTest.maxAbs(a) > 0.05 && DoraGoldenTest.maxAbs(b) > 0.05);
                assertTrue(DoraGoldenTest.maxAbs(product(b, a, out, in)) < 1e-6);
            }
            LoraModel odd = new LoraModel(MistralCheckpoint.load(golden("base"), manager));
            IllegalArgumentException refused = org.junit.jupiter.api.Assertions.assertThrows(
                    IllegalArgumentException.class, () -> odd.addAdapter("default", LoraConfig.of(3, 8, TARGETS),
                            LoraModel.Init.ORTHOGONAL, 3));
            assertTrue(refused.getMessage().contains("needs an even rank, got 3"), refused.getMessage());
        }
    }

    /** Mine against PEFT's converted adapter: config, tensors (the B0 A0 half as a product), logits on the base. */
    private static void checkConverted(String init, Path converted, boolean pissa) throws Exception {
        ObjectMapper json = new ObjectMapper();
        JsonNode mine = json.readTree(converted.resolve(PeftAdapter.CONFIG_FILE).toFile());
        JsonNode peft = json.readTree(golden(init + "/converted/" + PeftAdapter.CONFIG_FILE).toFile());
        for (String field : List.of("r", "lora_alpha", "use_rslora", "init_lora_weights")) {
            assertEquals(peft.get(field).asDouble(), mine.get(field).asDouble(), field);
        }
        LoraConfig mineRead = PeftAdapter.readConfig(converted.resolve(PeftAdapter.CONFIG_FILE));
        LoraConfig peftRead = PeftAdapter.readConfig(golden(init + "/converted/" + PeftAdapter.CONFIG_FILE));
        for (String target : TARGETS) {
            String module = "model.layers.0.self_attn." + target;
            if (target.endsWith("_proj") && !List.of("q_proj", "k_proj", "v_proj", "o_proj").contains(target)) {
                module = "model.layers.0.mlp." + target;
            }
            assertEquals(peftRead.rankOf(module), mineRead.rankOf(module), module + " rank");
            assertEquals(peftRead.scaleOf(module), mineRead.scaleOf(module), 1e-12, module + " scale");
        }
        try (SafetensorsReader want = SafetensorsReader.open(golden(init + "/converted/" + PeftAdapter.WEIGHTS_FILE));
                SafetensorsReader got = SafetensorsReader.open(converted.resolve(PeftAdapter.WEIGHTS_FILE))) {
            assertEquals(new java.util.TreeSet<>(want.names()), new java.util.TreeSet<>(got.names()));
            for (String key : want.names()) {
                float[] w = want.readFloats(key);
                float[] g = got.readFloats(key);
                assertEquals(w.length, g.length, key);
                if (!pissa) {
                    assertArrayClose(w, g, FACTORS * Math.max(1, DoraGoldenTest.maxAbs(w)), key);
                }
            }
            if (pissa) {
                for (String key : want.names()) {
                    if (key.endsWith(".lora_A.weight")) {
                        String bKey = key.replace(".lora_A.", ".lora_B.");
                        int in = (int) want.info(key).shape()[1];
                        int out = (int) want.info(bKey).shape()[0];
                        float[] wantProduct = product(want.readFloats(bKey), want.readFloats(key), out, in);
                        assertArrayClose(wantProduct, product(got.readFloats(bKey), got.readFloats(key), out, in),
                                FACTORS * Math.max(1, DoraGoldenTest.maxAbs(wantProduct)), key + " B'A'");
                    }
                }
            }
        }
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(golden("base"), manager);
                SafetensorsReader expected = SafetensorsReader.open(golden(init + "/expected.safetensors"))) {
            LoraModel lora = new LoraModel(model);
            PeftAdapter.load(lora, converted, "default");
            assertArrayClose(expected.readFloats("converted.logits"), DoraGoldenTest.logits(model, expected, manager),
                    LOGITS, "converted on the original base");
        }
    }

    /** {A0, B0} with each triplet's sign flipped where PEFT's A0 row points the other way. */
    static float[][] signedLike(float[][] ab, float[] peftA, int r) {
        float[] a = ab[0].clone();
        float[] b = ab[1].clone();
        int in = a.length / r;
        int out = b.length / r;
        for (int j = 0; j < r; j++) {
            double dot = 0;
            for (int c = 0; c < in; c++) {
                dot += a[j * in + c] * peftA[j * in + c];
            }
            if (dot < 0) {
                for (int c = 0; c < in; c++) {
                    a[j * in + c] = -a[j * in + c];
                }
                for (int i = 0; i < out; i++) {
                    b[i * r + j] = -b[i * r + j];
                }
            }
        }
        return new float[][] {a, b};
    }

    static float[] product(float[] b, float[] a, int out, int in) {
        int r = a.length / in;
        float[] p = new float[out * in];
        for (int i = 0; i < out; i++) {
            for (int c = 0; c < in; c++) {
                double sum = 0;
                for (int k = 0; k < r; k++) {
                    sum += (double) b[i * r + k] * a[k * in + c];
                }
                p[i * in + c] = (float) sum;
            }
        }
        return p;
    }

    static Path golden(String name) {
        return PeftGoldenTest.golden("../lora-init/" + name);
    }
}
