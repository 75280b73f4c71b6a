package io.mixtune.model.safetensors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Arrays written from their memory and read back into it hold the same values, and leave no array behind. */
class ArrayTensorsTest {

    @Test
    void arraysRoundTripThroughAFileWithoutLeavingCopiesInTheirManager(@TempDir Path dir) {
        try (NDManager manager = NDManager.newBaseManager()) {
            NDArray contiguous = manager.arange(0f, 12f).reshape(3, 4);
            // A transposed view is not contiguous: its bytes are not the row-major order of its shape.
            NDArray transposed = manager.arange(0f, 6f).reshape(2, 3).transpose();
            NDArray half = manager.arange(0f, 4f).toType(ai.djl.ndarray.types.DataType.FLOAT16, false);
            int before = manager.getManagedArrays().size();
            Path file = dir.resolve("t.safetensors");
            List<TensorSpec> specs = List.of(new TensorSpec("contiguous", DType.F32, new long[] {3, 4}),
                    new TensorSpec("transposed", DType.F32, new long[] {3, 2}),
                    new TensorSpec("half", DType.F32, new long[] {4}));
            try (ArrayTensors tensors = new ArrayTensors(Map.of("contiguous", contiguous, "transposed", transposed,
                    "half", half))) {
                SafetensorsWriter.writeFile(file, specs, tensors);
            }
            assertEquals(before, manager.getManagedArrays().size(), "arrays left in the arrays' manager");

            try (SafetensorsReader reader = SafetensorsReader.open(file)) {
                assertArrayEquals(contiguous.toFloatArray(), reader.readFloats("contiguous"));
                assertArrayEquals(new float[] {0, 3, 1, 4, 2, 5}, reader.readFloats("transposed"));
                assertArrayEquals(new float[] {0, 1, 2, 3}, reader.readFloats("half"));
                NDArray restored = manager.zeros(new Shape(3, 2));
                ArrayTensors.readInto(reader, "transposed", restored);
                assertArrayEquals(new float[] {0, 3, 1, 4, 2, 5}, restored.toFloatArray());
            }
        }
    }
}
