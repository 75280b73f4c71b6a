package io.mixtune.trainer.optim;

/**
 * Dynamic loss scaling for float16 compute, as torch.amp.GradScaler with its defaults: the loss is multiplied by the
 * scale before backward, so that gradients too small for float16 survive its activations; they are divided by it
 * again before clipping and the update. A step whose gradients hold an inf or a NaN is skipped (no update, and, as
 * HF's Trainer does, no scheduler step) and the scale halved; after {@link #GROWTH_INTERVAL} finite steps in a row it
 * doubles. In float32 the scaler is off: scale 1, and a non-finite step is the caller's to stop on.
 */
public final class LossScaler {
    public static final double INITIAL_SCALE = 65536.0;
    public static final double GROWTH_FACTOR = 2.0;
    public static final double BACKOFF_FACTOR = 0.5;
    public static final int GROWTH_INTERVAL = 2000;
    /** float16: this many overflowing steps in a row (the scale down by 2^20) means the run diverged, not the scale. */
    public static final int MAX_SKIPPED_IN_A_ROW = 20;

    /**
     * What a checkpoint keeps of the scaler.
     *
     * @param scale the current loss scale
     * @param finiteStreak finite steps since the scale last changed (GradScaler's growth tracker)
     * @param skippedSteps steps skipped for non-finite gradients so far: the schedule runs on steps minus these
     * @param skippedInARow the latest skips in a row, for the caller to give up on a run that never recovers
     */
    public record State(double scale, int finiteStreak, long skippedSteps, int skippedInARow) {
        public static final State OFF = new State(1.0, 0, 0, 0);
    }

    private final boolean enabled;
    private State state;

    private LossScaler(boolean enabled, State state) {
        this.enabled = enabled;
        this.state = state;
    }

    /** float16: dynamic scaling from {@link #INITIAL_SCALE}. */
    public static LossScaler dynamic() {
        return new LossScaler(true, new State(INITIAL_SCALE, 0, 0, 0));
    }

    /** float32: scale 1, never skips. */
    public static LossScaler off() {
        return new LossScaler(false, State.OFF);
    }

    public boolean enabled() {
        return enabled;
    }

    public double scale() {
        return state.scale();
    }

    public long skippedSteps() {
        return state.skippedSteps();
    }

    public int skippedInARow() {
        return state.skippedInARow();
    }

    /**
     * After a non-finite step: whether the run should stop. Always in float32; in float16 once
     * {@link #MAX_SKIPPED_IN_A_ROW} steps in a row were skipped, since halving the scale no longer helps.
     */
    public boolean gaveUp() {
        return !enabled || state.skippedInARow() >= MAX_SKIPPED_IN_A_ROW;
    }

    public State state() {
        return state;
    }

    public void restore(State saved) {
        if (enabled) {
            state = saved;
        }
    }

    /**
     * Records whether a step's unscaled gradients were all finite and moves the scale; returns whether the step's
     * update is to be applied (always true when off).
     */
    public boolean update(boolean gradientsFinite) {
        if (!enabled) {
            return true;
        }
        if (!gradientsFinite) {
            state = new State(state.scale() * BACKOFF_FACTOR, 0, state.skippedSteps() + 1, state.skippedInARow() + 1);
            return false;
        }
        int streak = state.finiteStreak() + 1;
        double scale = state.scale();
        if (streak == GROWTH_INTERVAL) {
            scale *= GROWTH_FACTOR;
            streak = 0;
        }
        state = new State(scale, streak, state.skippedSteps(), 0);
        return true;
    }
}
