package io.mixtune.trainer.optim;

/**
 * transformers' schedules (get_constant/linear/cosine_schedule_with_warmup): the rate at optimizer step s (0-based)
 * is lr times a factor that rises linearly from 0 over the warmup steps, then stays (constant), falls linearly to 0 at
 * the last step (linear), or follows half a cosine to 0 (cosine). As there, the first step with warmup runs at rate 0.
 */
public record LearningRateSchedule(String kind, double lr, int warmupSteps, int totalSteps) {

    public LearningRateSchedule {
        if (!kind.equals("constant") && !kind.equals("linear") && !kind.equals("cosine")) {
            throw new IllegalArgumentException("schedule: expected constant, linear or cosine, got " + kind);
        }
    }

    public double at(long step) {
        if (step < warmupSteps) {
            return lr * step / Math.max(1, warmupSteps);
        }
        double progress = (double) (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
        return switch (kind) {
            case "constant" -> lr;
            case "linear" -> lr * Math.max(0, (double) (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
            default -> lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
        };
    }
}
