package io.mixtune.model.nn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.GradientCollector;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * InPlaceCopy writes the exact bits into a leaf that requires a gradient and leaves it one; and, unlike DJL's
 * NDArray.set(float[]), libtorch prints nothing to the process's stderr (checked in a fresh JVM, since the warning is
 * printed once per process by native code that no Java stream captures).
 */
class InPlaceCopyTest {
    private static final float[] VALUES = {0f, -0f, 1.5f, Float.NaN, Float.NEGATIVE_INFINITY, 1e-45f};

    @Test
    void writesTheExactBitsIntoALeafThatStillGetsItsGradient() {
        try (NDManager manager = NDManager.newBaseManager()) {
            NDArray leaf = manager.zeros(new Shape(2, 3));
            leaf.setRequiresGradient(true);
            InPlaceCopy.copy(leaf, VALUES);
            float[] written = leaf.toFloatArray();
            for (int i = 0; i < VALUES.length; i++) {
                assertEquals(Float.floatToRawIntBits(VALUES[i]), Float.floatToRawIntBits(written[i]), "value " + i);
            }
            assertEquals(new Shape(2, 3), leaf.getShape());
            assertTrue(leaf.hasGradient());
            InPlaceCopy.copy(leaf, new float[] {1, 2, 3, 4, 5, 6});
            try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                collector.backward(leaf.mul(leaf).sum());
            }
            float[] gradient = leaf.getGradient().toFloatArray();
            for (int i = 0; i < 6; i++) {
                assertEquals(2f * (i + 1), gradient[i], "d(x^2)/dx = 2x: the copy left the leaf a leaf");
            }
        }
    }

    /** Runs {@link Probe} with {@code way} in a new JVM and returns its stderr. */
    private static String stderrOf(String way) throws IOException, InterruptedException {
        Path java = Path.of(System.getProperty("java.home"), "bin", "java");
        Process process = new ProcessBuilder(java.toString(), "-Dai.djl.offline=true", "-cp",
                System.getProperty("java.class.path"), Probe.class.getName(), way).redirectOutput(
                ProcessBuilder.Redirect.DISCARD).start();
        String err = new String(process.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(process.waitFor(120, TimeUnit.SECONDS));
        assertEquals(0, process.exitValue(), err);
        return err;
    }

    @Test
    void libtorchPrintsNoDeprecationWarning() throws IOException, InterruptedException {
        assertTrue(stderrOf("djl-set").contains("AutoNonVariableTypeMode is deprecated"),
                "the probe sees the warning DJL's set prints, so its absence below means something");
        String err = stderrOf("in-place-copy");
        assertFalse(err.contains("AutoNonVariableTypeMode") || err.contains("] Warning:"), err);
    }

    /** Writes into an array one way and exits. */
    public static final class Probe {
        public static void main(String[] args) {
            try (NDManager manager = NDManager.newBaseManager()) {
                NDArray array = manager.zeros(new Shape(3));
                float[] values = {1, 2, 3};
                if (args[0].equals("djl-set")) {
                    array.set(values);
                } else {
                    InPlaceCopy.copy(array, values);
                }
                if (!List.of(1f, 2f, 3f).equals(List.of(array.toFloatArray()[0], array.toFloatArray()[1],
                        array.toFloatArray()[2]))) {
                    System.exit(3);
                }
            }
        }
    }
}
