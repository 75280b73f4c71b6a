package io.mixtune.merging.gguf;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Q4_0, Q4_1, Q5_0, Q5_1, Q2_K ... Q6_K, IQ4_NL and IQ4_XS with an importance matrix, and IQ4_NL and IQ4_XS without
 * one, equal libggml-base's ggml_quantize_chunk (what llama-quantize --imatrix runs) byte for byte on kquants.json's
 * rows cut into rows of 512 (two rows: Q4_0 ... Q5_1's sigma2 is per row) or one row, with random column weights
 * over e^-3..e^3 and a row of weights with zeros (gguf/kquants-imatrix.json, interop/make_gguf_imatrix_goldens.py);
 * encoded on one thread and on three, whose runs cut rows apart.
 */
class GgmlWeightedQuantsTest {
    private static final Path GOLDEN = Path.of("src/test/resources/gguf/kquants-imatrix.json");
    private static final List<GgmlType> TYPES = List.of(GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1,
            GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K, GgmlType.IQ4_NL,
            GgmlType.IQ4_XS);

    @Test
    void weightedBytesEqualGgmls() throws Exception {
        int compared = 0;
        try (GgufEncoder one = new GgufEncoder(1); GgufEncoder three = new GgufEncoder(3)) {
            for (JsonNode entry : new ObjectMapper().readTree(Files.readString(GOLDEN)).path("cases")) {
                float[] values = floats(entry.path("values"));
                float[] imatrix = floats(entry.path("imatrix"));
                int columns = entry.path("n_per_row").asInt();
                for (GgmlType type : TYPES) {
                    for (boolean weighted : new boolean[] {true, false}) {
                        String key = type.name() + (weighted ? "" : "/none");
                        if (!entry.has(key)) {
                            continue;
                        }
                        for (GgufEncoder encoder : List.of(one, three)) {
                            ByteBuffer out = ByteBuffer.allocate((int) type.bytes(values.length))
                                    .order(ByteOrder.LITTLE_ENDIAN);
                            if (weighted) {
                                encoder.encode(values, 0, values.length, type, out, new GgmlWeightedQuants.Layout(0,
                                        columns, values.length, imatrix));
                            } else {
                                encoder.encode(values, 0, values.length, type, out);
                            }
                            assertEquals(entry.path(key).asText(), HexFormat.of().formatHex(out.array()),
                                    entry.path("name").asText() + " " + key + " on " + encoder.threads() + " threads");
                            compared++;
                        }
                    }
                }
            }
        }
        assertEquals(13 * (TYPES.size() + 2) * 2, compared);
    }

    private static float[] floats(JsonNode array) {
        float[] values = new float[array.size()];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) array.get(i).asDouble();
        }
        return values;
    }
}
