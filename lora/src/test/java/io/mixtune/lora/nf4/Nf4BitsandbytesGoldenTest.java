package io.mixtune.lora.nf4;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.mixtune.model.safetensors.SafetensorsReader;
import java.net.URISyntaxException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;

/**
 * Byte-for-byte parity with bitsandbytes' quantize_4bit / dequantize_4bit (nf4, blocksize 64), on goldens that
 * bitsandbytes itself wrote (interop/make_nf4_goldens.py).
 */
class Nf4BitsandbytesGoldenTest {

    static SafetensorsReader golden() {
        try {
            return SafetensorsReader.open(Path.of(Nf4BitsandbytesGoldenTest.class
                    .getResource("/golden/nf4/expected.safetensors").toURI()));
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    @Test
    void codebooksAreBitsandbytesOwn() {
        try (SafetensorsReader golden = golden()) {
            assertArrayEquals(golden.readFloats("nf4_code"), Nf4Tensor.LEVELS);
            assertArrayEquals(golden.readFloats("dynamic_map"), DynamicMap.SIGNED);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"small", "tail", "large", "ties", "zeros", "outliers", "bf16_source"})
    void quantizedBytesAndDequantizedValuesMatchBitsandbytes(String name) {
        try (SafetensorsReader golden = golden()) {
            float[] input = golden.readFloats(name + ".input");
            long[] shape = golden.info(name + ".input").shape();

            Nf4Tensor plain = Nf4Tensor.quantize(input, shape, false);
            assertArrayEquals(bytes(golden, name + ".packed"), plain.packed(), name + ": packed codes");
            assertArrayEquals(golden.readFloats(name + ".absmax"), plain.blockAbsmax(), name + ": absmax");
            assertArrayEquals(golden.readFloats(name + ".dequantized_plain"), plain.dequantize(), name + ": dequantized");

            Nf4Tensor nested = Nf4Tensor.quantize(input, shape, true);
            assertEquals(golden.readFloats(name + ".offset")[0], nested.absmaxOffset(), name + ": offset");
            assertArrayEquals(bytes(golden, name + ".qabsmax"), nested.quantizedAbsmax(), name + ": quantized absmax");
            assertArrayEquals(golden.readFloats(name + ".absmax2"), nested.absmaxScales(), name + ": absmax scales");
            assertArrayEquals(golden.readFloats(name + ".dequantized"), nested.dequantize(),
                    name + ": dequantized with double quantization");
        }
    }

    private static byte[] bytes(SafetensorsReader reader, String name) {
        ByteBuffer buffer = reader.bytes(name);
        byte[] out = new byte[buffer.remaining()];
        buffer.get(out);
        return out;
    }
}
