package io.mixtune.merging.gguf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;

/**
 * The per-tensor types of each k-quant mix equal llama-quantize's (no imatrix) on real-size shapes the tiny goldens
 * never reach: Mistral-7B, Mixtral-8x7B and 8x22B, Mistral-Nemo-12B, Llama-2-70B (LLM_TYPE_70B), a tied 3B with rows
 * that are not whole super-blocks, a 4-expert GQA-2 MoE (gguf/llama-quantize-types.json, from {@code llama-quantize
 * --dry-run} by interop/make_llama_quantize_types_golden.py).
 */
class LlamaQuantizeTypesTest {
    private static final Path GOLDEN = Path.of("src/test/resources/gguf/llama-quantize-types.json");

    private static final Path OPTIONS_GOLDEN = Path.of("src/test/resources/gguf/llama-quantize-options.json");

    @Test
    void typesEqualLlamaQuantizeDryRunOnRealModelShapes() throws Exception {
        assertEquals(7 * 9, compareEveryModel(GOLDEN));
    }

    /**
     * --tensor-type patterns find the names llama-quantize's std::regex (libstdc++'s ECMAScript) finds, where Java's
     * own reading differs: a POSIX class (Java read {@code [[:digit:]]} as the characters ":digt", so llama-quantize
     * gave blk.0.attn_v Q8_0 and export-gguf Q6_K; measured with llama-quantize on wide-mistral), an escaped letter
     * ECMAScript does not define (the letter), {@code &} in a class (a literal); expected values from std::regex_search
     * compiled with g++ 13. What the grammars read differently without a translation is refused.
     */
    @Test
    void tensorTypePatternsFindWhatLlamaQuantizesStdRegexFinds() {
        assertTrue(tensorType("blk\\.[[:digit:]]\\.attn_v=q8_0").matches("blk.0.attn_v.weight"));
        assertFalse(tensorType("blk\\.[[:digit:]]\\.attn_v=q8_0").matches("blk.t.attn_v.weight"));
        assertTrue(tensorType("attn_[^[:digit:]]\\b=q8_0").matches("blk.0.attn_q.weight"));
        assertTrue(tensorType("[^[:alpha:][:punct:]]=q8_0").matches("blk.0.attn_v.weight"));
        assertTrue(tensorType("weig\\ht=q8_0").matches("blk.0.attn_v.weight"));
        assertTrue(tensorType("attn_[&&v]=q8_0").matches("blk.0.attn_v.weight"));
        assertTrue(tensorType("blk\\.[\\d]\\.=q8_0").matches("blk.0.attn_v.weight"));
        assertTrue(tensorType("BLK\\.\\D=q8_0").matches("blk.0.attn_v.weight")); // lower-cased to blk\\.\\d
        for (String refused : List.of("attn_v++=q8_0", "(?i)attn=q8_0", "(?<=a)ttn=q8_0", "attn[]=q8_0",
                "[[.a.]]=q8_0", "[[:word:]]=q8_0", "attn\\=q8_0")) {
            assertThrows(IllegalArgumentException.class, () -> tensorType(refused), refused);
        }
    }

    @Test
    void anUnknownTypeIsNamedAsTheAssignmentWasWritten() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> tensorType("attn_v=q4_k_m"));
        assertTrue(e.getMessage().startsWith("--tensor-type attn_v=q4_k_m is not a ggml type"), e.getMessage());
    }

    private static LlamaQuantizeTypes.TensorType tensorType(String assignment) {
        return LlamaQuantizeTypes.TensorType.parse(assignment);
    }

    /**
     * q4_1, q5_0, q5_1, and llama-quantize's --pure, --output-tensor-type, --token-embedding-type and
     * --leave-output-tensor on the same shapes (gguf/llama-quantize-options.json). Where the golden leaves a variant
     * out for a model (a type without a fallback on rows that are not whole blocks of it: the tied 3B's rows of 3200
     * under --pure q4_k_m), llama-quantize's real run fails, and the types are refused.
     */
    @Test
    void optionsEqualLlamaQuantizeDryRunOnRealModelShapes() throws Exception {
        assertEquals(6 * 11 + 7, compareEveryModel(OPTIONS_GOLDEN));
    }

    /**
     * iq4_nl, iq4_xs and q2_k_s, q5_0 / iq4 / q2_k_s with an importance matrix (has_imatrix changes their ffn_down
     * rules), and --tensor-type overrides (the first match wins, no rule's counter moves, not under --pure, after
     * --output-tensor-type) on the same shapes (gguf/llama-quantize-imatrix-types.json,
     * interop/make_gguf_imatrix_goldens.py).
     */
    @Test
    void imatrixTypesAndOverridesEqualLlamaQuantizeDryRunOnRealModelShapes() throws Exception {
        assertEquals(7 * 11 - 1, compareEveryModel(Path.of("src/test/resources/gguf/llama-quantize-imatrix-types.json")));
    }

    /** @return the (model, variant) pairs compared; variants some model lacks must be refused for it */
    private static int compareEveryModel(Path golden) throws Exception {
        JsonNode models = new ObjectMapper().readTree(Files.readString(golden)).path("models");
        java.util.Set<String> variants = new java.util.LinkedHashSet<>();
        models.forEach(m -> m.path("types").fieldNames().forEachRemaining(variants::add));
        int compared = 0;
        for (Iterator<Map.Entry<String, JsonNode>> it = models.fields(); it.hasNext();) {
            Map.Entry<String, JsonNode> model = it.next();
            JsonNode m = model.getValue();
            Map<String, long[]> shapes = new TreeMap<>(LlamaQuantizeTypes.ORDER);
            for (JsonNode tensor : m.path("tensors")) {
                long[] shape = new long[tensor.get(1).size()];
                for (int i = 0; i < shape.length; i++) {
                    shape[i] = tensor.get(1).get(i).asLong();
                }
                shapes.put(tensor.get(0).asText(), shape);
            }
            List<String> goldenOrder = new ArrayList<>();
            m.path("tensors").forEach(t -> goldenOrder.add(t.get(0).asText()));
            assertEquals(goldenOrder, new ArrayList<>(shapes.keySet()), model.getKey() + ": llama-quantize's order");
            Map<String, GgmlType> f32Types = new LinkedHashMap<>();
            shapes.keySet().forEach(name -> f32Types.put(name, GgmlType.F32));
            for (String variant : variants) {
                JsonNode expected = m.path("types").path(variant);
                List<String> words = List.of(variant.split(" "));
                java.util.function.Supplier<Map<String, GgmlType>> types = () -> LlamaQuantizeTypes.of(
                        GgufFileType.parse(words.get(0)), new LinkedHashMap<>(shapes), f32Types,
                        m.path("layers").asInt(), m.path("experts").asInt(), m.path("heads").asInt(),
                        m.path("kv_heads").asInt(), options(words.subList(1, words.size())));
                if (expected.isMissingNode()) {
                    org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, types::get,
                            model.getKey() + " " + variant);
                    continue;
                }
                assertEquals(List.of(expected.asText().split(" ")).toString(),
                        types.get().values().stream().map(GgmlType::name).collect(Collectors.toList()).toString(),
                        model.getKey() + " " + variant);
                compared++;
            }
        }
        return compared;
    }

    /** llama-quantize's options as the golden writes them ("--pure --output-tensor-type q6_K ..."). */
    private static LlamaQuantizeTypes.Options options(List<String> words) {
        boolean pure = false;
        boolean leaveOutput = false;
        GgmlType output = null;
        GgmlType tokenEmbedding = null;
        boolean imatrix = false;
        List<LlamaQuantizeTypes.TensorType> tensorTypes = new ArrayList<>();
        for (int i = 0; i < words.size(); i++) {
            switch (words.get(i)) {
                case "--imatrix" -> imatrix = !words.get(++i).isEmpty();
                case "--tensor-type" -> {
                    String[] assignment = words.get(++i).split("=");
                    tensorTypes.add(new LlamaQuantizeTypes.TensorType(assignment[0],
                            GgmlType.parse("--tensor-type", assignment[1])));
                }
                case "--pure" -> pure = true;
                case "--leave-output-tensor" -> leaveOutput = true;
                case "--output-tensor-type" -> output = GgmlType.parse(words.get(i), words.get(++i));
                case "--token-embedding-type" -> tokenEmbedding = GgmlType.parse(words.get(i), words.get(++i));
                default -> throw new IllegalArgumentException(words.get(i));
            }
        }
        return new LlamaQuantizeTypes.Options(pure, output, tokenEmbedding, leaveOutput).with(imatrix, tensorTypes);
    }
}
