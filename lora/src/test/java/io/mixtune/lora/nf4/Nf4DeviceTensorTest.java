package io.mixtune.lora.nf4;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import ai.djl.ndarray.BaseNDManager;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The libtorch dequantizer, through Nf4Linear.dequantizedWeight as the forward pass calls it, equals the Java one bit
 * for bit (every element compared), on odd counts, partial blocks of 64 and of 256, with and without double
 * quantization, and equals bitsandbytes' own dequantize_4bit on its goldens.
 */
class Nf4DeviceTensorTest {

    @Test
    void equalsTheJavaDequantizerBitForBit() {
        long[][] shapes = {{1, 1}, {1, 3}, {7, 10}, {2, 64}, {33, 65}, {300, 70}, {129, 257}, {64, 1024}};
        try (NDManager manager = NDManager.newBaseManager()) {
            Nf4DeviceTensor.Codebooks codebooks = new Nf4DeviceTensor.Codebooks(manager);
            Random random = new Random(3);
            for (long[] shape : shapes) {
                float[] values = new float[Math.toIntExact(shape[0] * shape[1])];
                for (int i = 0; i < values.length; i++) {
                    // spread over decades so the absmax codes use the dynamic map's whole range
                    values[i] = (float) (random.nextGaussian() * Math.pow(10, random.nextInt(5) - 3));
                }
                for (boolean doubleQuantize : new boolean[] {true, false}) {
                    Nf4Tensor weight = Nf4Tensor.quantize(values, shape, doubleQuantize);
                    String what = shape[0] + "x" + shape[1] + (doubleQuantize ? " double quantized" : "");
                    NDArray dense = new Nf4Linear(Nf4DeviceTensor.upload(weight, codebooks, manager))
                            .dequantizedWeight(manager, DataType.FLOAT32);
                    assertArrayEquals(shape, dense.getShape().getShape(), what);
                    assertBitsEqual(weight.dequantize(), dense.toFloatArray(), what);
                    assertBitsEqual(new Nf4Linear(weight).dequantizedWeight(manager, DataType.FLOAT32).toFloatArray(),
                            dense.toFloatArray(), what + " (Java path)");
                    NDArray half = new Nf4Linear(Nf4DeviceTensor.upload(weight, codebooks, manager))
                            .dequantizedWeight(manager, DataType.FLOAT16);
                    assertEquals(DataType.FLOAT16, half.getDataType());
                    assertBitsEqual(new Nf4Linear(weight).dequantizedWeight(manager, DataType.FLOAT16)
                            .toType(DataType.FLOAT32, false).toFloatArray(), half.toType(DataType.FLOAT32, false)
                            .toFloatArray(), what + " in fp16");
                }
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"small", "tail", "large", "ties", "zeros", "outliers", "bf16_source"})
    void equalsBitsandbytesDequantize4bit(String name) {
        try (SafetensorsReader golden = Nf4BitsandbytesGoldenTest.golden(); NDManager manager = NDManager.newBaseManager()) {
            float[] input = golden.readFloats(name + ".input");
            long[] shape = golden.info(name + ".input").shape();
            long[] asMatrix = shape.length == 2 ? shape : new long[] {1, input.length};
            Nf4DeviceTensor.Codebooks codebooks = new Nf4DeviceTensor.Codebooks(manager);
            for (boolean doubleQuantize : new boolean[] {true, false}) {
                Nf4Tensor weight = Nf4Tensor.quantize(input, asMatrix, doubleQuantize);
                float[] dense = Nf4DeviceTensor.upload(weight, codebooks, manager).dequantize(manager, DataType.FLOAT32)
                        .toFloatArray();
                assertBitsEqual(golden.readFloats(name + (doubleQuantize ? ".dequantized" : ".dequantized_plain")), dense,
                        name + (doubleQuantize ? " double quantized" : ""));
            }
        }
    }

    /** The dequantized weight lives on the caller's manager; nothing is left on the load manager per call. */
    @Test
    void dequantizingLeavesNothingBehindOnTheLoadManager() {
        try (NDManager load = NDManager.newBaseManager()) {
            Nf4DeviceTensor weight = Nf4DeviceTensor.upload(Nf4Tensor.quantize(new float[70 * 33], new long[] {70, 33},
                    true), new Nf4DeviceTensor.Codebooks(load), load);
            int before = ((BaseNDManager) load).getManagedArrays().size();
            try (NDManager step = load.newSubManager()) {
                for (int i = 0; i < 3; i++) {
                    weight.dequantize(step, DataType.FLOAT32);
                }
                assertEquals(3, ((BaseNDManager) step).getManagedArrays().size());
            }
            assertEquals(before, ((BaseNDManager) load).getManagedArrays().size());
        }
    }

    private static void assertBitsEqual(float[] expected, float[] actual, String what) {
        assertEquals(expected.length, actual.length, what + ": length");
        for (int i = 0; i < expected.length; i++) {
            if (Float.floatToRawIntBits(expected[i]) != Float.floatToRawIntBits(actual[i])) {
                throw new AssertionError(what + ": element " + i + " is " + actual[i] + ", expected " + expected[i]);
            }
        }
    }
}
