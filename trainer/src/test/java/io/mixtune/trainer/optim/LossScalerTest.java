package io.mixtune.trainer.optim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** torch.amp.GradScaler's update rule with its defaults (init 2^16, growth 2, backoff 0.5, interval 2000). */
class LossScalerTest {
    @Test
    void halvesAndSkipsOnOverflowDoublesAfterTheGrowthInterval() {
        LossScaler scaler = LossScaler.dynamic();
        assertEquals(65536.0, scaler.scale());
        assertFalse(scaler.update(false));
        assertFalse(scaler.update(false));
        assertEquals(16384.0, scaler.scale());
        assertEquals(2, scaler.skippedSteps());
        assertEquals(2, scaler.skippedInARow());
        for (int i = 0; i < 1999; i++) {
            assertTrue(scaler.update(true));
        }
        assertEquals(16384.0, scaler.scale(), "1999 finite steps: not yet");
        assertEquals(0, scaler.skippedInARow());
        assertTrue(scaler.update(true));
        assertEquals(32768.0, scaler.scale(), "the 2000th finite step in a row doubles the scale");
        assertEquals(0, scaler.state().finiteStreak());
        for (int i = 0; i < 1000; i++) {
            scaler.update(true);
        }
        assertFalse(scaler.update(false));
        assertEquals(16384.0, scaler.scale(), "an overflow resets the streak");
        for (int i = 0; i < 1999; i++) {
            scaler.update(true);
        }
        assertEquals(16384.0, scaler.scale());
        assertEquals(3, scaler.skippedSteps());
    }

    @Test
    void offNeverScalesNorSkips() {
        LossScaler scaler = LossScaler.off();
        assertTrue(scaler.update(false));
        assertEquals(1.0, scaler.scale());
        assertEquals(0, scaler.skippedSteps());
    }

    @Test
    void restoresItsState() {
        LossScaler scaler = LossScaler.dynamic();
        scaler.update(false);
        scaler.update(true);
        LossScaler resumed = LossScaler.dynamic();
        resumed.restore(scaler.state());
        assertEquals(scaler.state(), resumed.state());
    }
}
