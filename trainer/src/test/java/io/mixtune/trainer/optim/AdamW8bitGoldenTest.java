package io.mixtune.trainer.optim;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.safetensors.SafetensorsReader;
import java.net.URISyntaxException;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * mixtune's 8-bit AdamW against bitsandbytes' own AdamW(optim_bits=8), its triton kernels run on the CPU by triton's
 * interpreter (interop/make_adamw8bit_goldens.py): a 4196-element parameter with 8-bit blockwise moments (17 blocks,
 * the last partial) at lr x 16, a 512-element one with float32 moments at lr, weight decay, five steps; in the first
 * one's group a second parameter of 4096 elements (min_8bit_size: 8-bit moments) whose gradient is zero at step 1, as a
 * lora_A's while lora_B is zero, and in its first block at every step (absmax 0, requantized as 0 / 0).
 */
class AdamW8bitGoldenTest {
    /** big, small and zero, in the golden's order. */
    private static final long[] SIZES = {4196, 512, 4096};

    @Test
    void dynamicMapsAreBitsandbytes() throws Exception {
        try (SafetensorsReader golden = SafetensorsReader.open(golden())) {
            assertArrayEquals(golden.readFloats("qmap1"), AdamW8bit.SIGNED_MAP, 0f);
            assertArrayEquals(golden.readFloats("qmap2"), AdamW8bit.UNSIGNED_MAP, 0f);
        }
    }

    @Test
    void everyStepEqualsBitsandbytes() throws Exception {
        Path file = golden();
        try (SafetensorsReader golden = SafetensorsReader.open(file)) {
            double[] hyper = doubles(golden, "hyper");
            double ratio = hyper[0];
            AdamW8bit optimizer = new AdamW8bit(SIZES, hyper[1], hyper[2], hyper[3], hyper[4]);
            float[] big = golden.readFloats("big.initial");
            float[] small = golden.readFloats("small.initial");
            float[] zero = golden.readFloats("zero.initial");
            Path saved = Files.createTempFile("adamw8bit", ".safetensors");
            for (int step = 1; step <= (int) hyper[5]; step++) {
                double lr = doubles(golden, "lr." + step)[0];
                optimizer.update(0, big, golden.readFloats("big.grad." + step), 0, lr * ratio, step);
                optimizer.update(1, small, golden.readFloats("small.grad." + step), 0, lr, step);
                optimizer.update(2, zero, golden.readFloats("zero.grad." + step), 0, lr * ratio, step);
                for (String name : List.of("big", "zero")) {
                    AdamW8bit.Moments m = optimizer.moments(name.equals("big") ? 0 : 2);
                    String at = name + ", step " + step;
                    assertArrayEquals(bytes(golden, name + ".state1." + step), m.codes1, "state1 codes, " + at);
                    assertArrayEquals(bytes(golden, name + ".state2." + step), m.codes2, "state2 codes, " + at);
                    assertArrayEquals(golden.readFloats(name + ".absmax1." + step), m.absmax1, 0f, "absmax1, " + at);
                    assertArrayEquals(golden.readFloats(name + ".absmax2." + step), m.absmax2, 0f, "absmax2, " + at);
                }
                assertEquals(0f, optimizer.moments(2).absmax1[0], "zero's first block");
                assertArrayEquals(golden.readFloats("big." + step), big, 0f, "big, step " + step);
                assertArrayEquals(golden.readFloats("zero." + step), zero, 0f, "zero, step " + step);
                AdamW8bit.Moments s = optimizer.moments(1);
                assertArrayEquals(golden.readFloats("small.state1." + step), s.state1, 0f, "small m, step " + step);
                assertArrayEquals(golden.readFloats("small.state2." + step), s.state2, 0f, "small v, step " + step);
                assertArrayEquals(golden.readFloats("small." + step), small, 0f, "small, step " + step);
                if (step == 2) {
                    optimizer.save(saved);
                }
            }
            // The state a checkpoint saved after step 2 continues to the same end.
            AdamW8bit resumed = new AdamW8bit(SIZES, hyper[1], hyper[2], hyper[3], hyper[4]);
            resumed.restore(saved);
            float[] big2 = golden.readFloats("big.2");
            float[] small2 = golden.readFloats("small.2");
            float[] zero2 = golden.readFloats("zero.2");
            for (int step = 3; step <= (int) hyper[5]; step++) {
                double lr = doubles(golden, "lr." + step)[0];
                resumed.update(0, big2, golden.readFloats("big.grad." + step), 0, lr * ratio, step);
                resumed.update(1, small2, golden.readFloats("small.grad." + step), 0, lr, step);
                resumed.update(2, zero2, golden.readFloats("zero.grad." + step), 0, lr * ratio, step);
            }
            assertArrayEquals(big, big2, 0f);
            assertArrayEquals(small, small2, 0f);
            assertArrayEquals(zero, zero2, 0f);
            assertTrue(Files.deleteIfExists(saved));
        }
    }

    @Test
    void stateBytesAreOneBytePerMomentPlusAbsmax() {
        assertEquals(2 * 4196 + 2 * 4 * 17, AdamW8bit.stateBytes(4196));
        assertEquals(2 * 4 * 512, AdamW8bit.stateBytes(512));
    }

    private static Path golden() throws URISyntaxException {
        return Path.of(AdamW8bitGoldenTest.class.getResource("/golden/adamw8bit/adamw8bit.safetensors").toURI());
    }

    private static byte[] bytes(SafetensorsReader reader, String name) {
        byte[] out = new byte[Math.toIntExact(reader.info(name).byteLength())];
        reader.bytes(name).get(out);
        return out;
    }

    private static double[] doubles(SafetensorsReader reader, String name) {
        double[] out = new double[Math.toIntExact(reader.info(name).byteLength() / 8)];
        reader.bytes(name).order(ByteOrder.LITTLE_ENDIAN).asDoubleBuffer().get(out);
        return out;
    }
}
