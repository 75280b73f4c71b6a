package io.mixtune.merging.gguf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
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
 * F16, Q8_0 and Q4_0 bytes equal the gguf package's gguf.quants.quantize (0.19.0) on fixed float32 arrays: random
 * blocks over twenty orders of magnitude, zeros, Q8_0's halves (roundf rounds them away from zero), Q4_0's ties of
 * magnitude and exact levels, fp16's subnormals, ties and overflow (gguf/quants.json, from
 * interop/make_gguf_goldens.py; beside golden/, which make_merge_goldens.py owns whole).
 */
class GgufQuantsTest {
    private static final Path GOLDEN = Path.of("src/test/resources/gguf/quants.json");

    @Test
    void quantizedBytesEqualTheGgufPackages() throws Exception {
        assertEquals(18, compareEveryCase(GOLDEN, List.of(GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0)));
    }

    /**
     * Encodes each case's {@code values} of a quants golden as each type and compares the bytes with the case's hex.
     *
     * @return the encodings compared
     */
    static int compareEveryCase(Path goldenFile, List<GgmlType> types) throws Exception {
        JsonNode golden = new ObjectMapper().readTree(Files.readString(goldenFile));
        int checked = 0;
        for (JsonNode entry : golden.path("cases")) {
            float[] values = new float[entry.path("values").size()];
            for (int i = 0; i < values.length; i++) {
                values[i] = (float) entry.path("values").get(i).asDouble();
            }
            for (GgmlType type : types) {
                ByteBuffer out = ByteBuffer.allocate((int) type.bytes(values.length)).order(ByteOrder.LITTLE_ENDIAN);
                GgufQuants.encode(values, 0, values.length, type, out);
                assertEquals(entry.path(type.name()).asText(), HexFormat.of().formatHex(out.array()),
                        entry.path("name").asText() + " as " + type);
                checked++;
            }
        }
        return checked;
    }

    @Test
    void roundingIsHalfAwayFromZeroAsCsRoundf() {
        assertArrayEquals(new int[] {1, -1, 2, -2, 3, 0, 0}, new int[] {GgufQuants.roundHalfAway(0.5f),
                GgufQuants.roundHalfAway(-0.5f), GgufQuants.roundHalfAway(1.5f), GgufQuants.roundHalfAway(-1.5f),
                GgufQuants.roundHalfAway(2.5f), GgufQuants.roundHalfAway(0.49999997f), GgufQuants.roundHalfAway(0f)});
    }
}
