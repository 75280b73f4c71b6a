package io.mixtune.model.generate;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.DType;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Generation with a KV cache must give exactly the tokens of recomputing the whole sequence at every step. */
class CachedGenerationTest {

    static ModelConfig config(String type, Integer window) {
        boolean moe = type.equals("mixtral");
        return new ModelConfig(moe ? ModelConfig.ModelType.MIXTRAL : ModelConfig.ModelType.MISTRAL,
                32, 48, 2, 4, 2, 8, 97, 1e-5, 10000.0, window, 256, false,
                moe ? 4 : 0, moe ? 2 : 0, moe ? 0.02 : 0.0, 1, 96);
    }

    @ParameterizedTest(name = "{0} window {1}")
    @CsvSource({"mistral, 8", "mistral, ", "mixtral, 8", "mixtral, "})
    void cachedEqualsRecomputed(String type, Integer window, @TempDir Path dir) {
        RandomCheckpoint.write(config(type, window), dir, 7, DType.F32, RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES, 0.5);
        long[] prompt = new long[21]; // longer than the window: chunked prefill and a wrapped rolling buffer
        for (int i = 0; i < prompt.length; i++) {
            prompt[i] = (i * 37 + 5) % 97;
        }
        int newTokens = 24;
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager)) {
            List<float[]> promptLogits = new ArrayList<>();
            List<Integer> cached = new Generator(model).generate(prompt, newTokens, TokenSampler.greedy(), promptLogits);

            List<Long> sequence = new ArrayList<>();
            for (long id : prompt) {
                sequence.add(id);
            }
            List<Integer> recomputed = new ArrayList<>();
            float[][] fullPromptLogits = null;
            while (recomputed.size() < cached.size()) {
                float[][] rows = forwardAll(model, manager, sequence);
                if (fullPromptLogits == null) {
                    fullPromptLogits = rows;
                }
                int next = TokenSampler.argmax(rows[rows.length - 1]);
                recomputed.add(next);
                sequence.add((long) next);
            }
            // Long enough to cycle the rolling buffer several times, even where the model emits EOS (96) early.
            assertTrue(cached.size() >= 16, "stopped early at EOS: " + cached);
            assertTrue(cached.stream().distinct().count() > 3, "degenerate output: " + cached);
            assertEquals(recomputed, cached);
            assertEquals(prompt.length, promptLogits.size());
            double maxDiff = 0;
            for (int t = 0; t < prompt.length; t++) {
                for (int v = 0; v < 97; v++) {
                    maxDiff = Math.max(maxDiff, Math.abs(promptLogits.get(t)[v] - fullPromptLogits[t][v]));
                }
            }
            assertTrue(maxDiff < 1e-5, "chunked prefill logits differ from the full forward by " + maxDiff);
        }
    }

    /**
     * A group decoded as one batch (GRPO's completions of a prompt) gives each row the tokens its own sampler draws
     * decoding the prompt alone, each row stopping at its own EOS, through chunked prefill and a wrapped window.
     */
    @ParameterizedTest(name = "{0} window {1}")
    @CsvSource({"mistral, 8", "mistral, ", "mixtral, 8"})
    void aGroupDecodedAsOneBatchEqualsEachRowDecodedAlone(String type, Integer window, @TempDir Path dir) {
        RandomCheckpoint.write(config(type, window), dir, 7, DType.F32, RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES, 0.5);
        long[] prompt = new long[11];
        for (int i = 0; i < prompt.length; i++) {
            prompt[i] = (i * 37 + 5) % 97;
        }
        TokenSampler.Settings sampling = TokenSampler.Settings.DEFAULTS.withTemperature(1.5).withTopK(0);
        sampling = new TokenSampler.Settings(true, sampling.temperature(), 0, 1.0, 0.0, 1.0);
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager)) {
            // six EOS ids of the 97, so that rows end at their own EOS within 20 tokens (the config's one id gives
            // each draw a ~1% chance: the test's name claimed the stop but nothing checked one happened)
            List<Integer> eos = List.of(2, 3, 5, 7, 11, 13);
            Generator generator = new Generator(model, eos);
            List<TokenSampler> samplers = new ArrayList<>();
            for (int r = 0; r < 5; r++) {
                samplers.add(new TokenSampler(sampling, 100 + r));
            }
            List<List<Integer>> group = generator.generateGroup(prompt, 20, samplers);
            for (int r = 0; r < 5; r++) {
                List<Integer> alone = generator.generate(prompt, 20, new TokenSampler(sampling, 100 + r), null);
                assertEquals(alone, group.get(r), "row " + r);
            }
            assertTrue(group.stream().distinct().count() > 1, "the rows drew the same tokens: " + group);
            assertTrue(group.stream().anyMatch(row -> row.size() < 20 && eos.contains(row.get(row.size() - 1))),
                    "no row ended at its own EOS: " + group);
            assertTrue(group.stream().map(List::size).distinct().count() > 1, "the rows ended together: " + group);
        }
    }

    private static float[][] forwardAll(CausalLm model, NDManager parent, List<Long> sequence) {
        try (NDManager step = parent.newSubManager()) {
            long[] ids = sequence.stream().mapToLong(Long::longValue).toArray();
            long[] positions = new long[ids.length];
            for (int i = 0; i < ids.length; i++) {
                positions[i] = i;
            }
            NDArray logits = model.forward(step.create(ids).reshape(1, ids.length),
                    step.create(positions).reshape(1, ids.length), null).get(new NDIndex("0"));
            int vocab = (int) logits.getShape().get(1);
            float[] flat = logits.toFloatArray();
            float[][] rows = new float[ids.length][];
            for (int t = 0; t < ids.length; t++) {
                rows[t] = java.util.Arrays.copyOfRange(flat, t * vocab, (t + 1) * vocab);
            }
            return rows;
        }
    }
}
