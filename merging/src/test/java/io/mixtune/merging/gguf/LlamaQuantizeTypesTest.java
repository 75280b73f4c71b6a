package io.mixtune.merging.gguf;

import static org.junit.jupiter.api.Assertions.assertEquals;

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

    @Test
    void typesEqualLlamaQuantizeDryRunOnRealModelShapes() throws Exception {
        JsonNode models = new ObjectMapper().readTree(Files.readString(GOLDEN)).path("models");
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
            for (Iterator<Map.Entry<String, JsonNode>> types = m.path("types").fields(); types.hasNext();) {
                Map.Entry<String, JsonNode> expected = types.next();
                Map<String, GgmlType> actual = LlamaQuantizeTypes.of(GgufFileType.parse(expected.getKey()),
                        new LinkedHashMap<>(shapes), f32Types, m.path("layers").asInt(), m.path("experts").asInt(),
                        m.path("heads").asInt(), m.path("kv_heads").asInt());
                assertEquals(List.of(expected.getValue().asText().split(" ")).toString(),
                        actual.values().stream().map(GgmlType::name).collect(Collectors.toList()).toString(),
                        model.getKey() + " " + expected.getKey());
                compared++;
            }
        }
        assertEquals(7 * 9, compared);
    }
}
