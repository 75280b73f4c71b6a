package io.mixtune.merging.gguf;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K bytes equal libggml-base's ggml_quantize_chunk without
 * an imatrix (the quantize_row_*_ref functions llama-quantize runs) on fixed float32 rows: random ones, zeros,
 * constants, negative- and positive-only rows, spikes, a 1e-8..1e8 range, values under GROUP_MAX_EPS, exact levels and
 * halves, zero groups and fp16-subnormal scales (gguf/kquants.json, from interop/make_gguf_kquant_goldens.py).
 */
class GgmlKQuantsTest {
    private static final Path GOLDEN = Path.of("src/test/resources/gguf/kquants.json");
    private static final List<GgmlType> TYPES = List.of(GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1,
            GgmlType.Q8_0, GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K);

    @Test
    void quantizedBytesEqualGgmls() throws Exception {
        assertEquals(13 * TYPES.size(), GgufQuantsTest.compareEveryCase(GOLDEN, TYPES));
    }

    @Test
    void nearestIntRoundsHalvesToEvenAsTheMagicNumberAdd() {
        assertEquals(List.of(0, 2, 2, -2, 1, -1, 3), List.of(GgmlKQuants.nearestInt(0.5f), GgmlKQuants.nearestInt(1.5f),
                GgmlKQuants.nearestInt(2.5f), GgmlKQuants.nearestInt(-2.5f), GgmlKQuants.nearestInt(0.50000006f),
                GgmlKQuants.nearestInt(-0.7f), GgmlKQuants.nearestInt(3.2f)));
    }

    @Test
    void useMoreBitsPicksTheFirstAndLastEighthAndEveryThirdLayer() {
        // Mistral-7B's 32 layers: 0-3, 28-31 and 6, 9, ..., 27
        StringBuilder picked = new StringBuilder();
        for (int layer = 0; layer < 32; layer++) {
            picked.append(LlamaQuantizeTypes.useMoreBits(layer, 32) ? 'x' : '.');
        }
        assertEquals("xxxx..x..x..x..x..x..x..x..xxxx", picked.substring(0, 31));
    }
}
