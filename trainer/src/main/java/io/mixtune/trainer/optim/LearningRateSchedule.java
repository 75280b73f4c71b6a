package io.mixtune.trainer.optim;

/**
 * transformers' schedules (get_constant/linear/cosine_schedule_with_warmup): the rate at optimizer step s (0-based)
 * is lr times a factor that rises linearly from 0 over the warmup steps, then stays (constant), falls linearly to 0 at
 * the last step (linear), or follows half a cosine to 0 (cosine), or to lr x minLrRatio (transformers'
 * cosine_with_min_lr with min_lr_rate, axolotl's cosine_min_lr_ratio). As there, the first step with warmup runs at
 * rate 0.
 */
public record LearningRateSchedule(String kind, double lr, int warmupSteps, int totalSteps, double minLrRatio) {

    public LearningRateSchedule {
        if (!kind.equals("constant") && !kind.equals("linear") && !kind.equals("cosine")) {
            throw new IllegalArgumentException("schedule: expected constant, linear or cosine, got " + kind);
        }
        if (!(minLrRatio >= 0 && minLrRatio <= 1) || minLrRatio > 0 && !kind.equals("cosine")) {
            throw new IllegalArgumentException("min_lr_ratio: a cosine's floor in [0, 1], got " + minLrRatio + " for "
                    + kind);
        }
    }

    /** Cosine to 0 (no floor). */
    public LearningRateSchedule(String kind, double lr, int warmupSteps, int totalSteps) {
        this(kind, lr, warmupSteps, totalSteps, 0);
    }

    /**
     * The warmup of a run of {@code totalSteps}: {@code warmupSteps} when above 0, else {@code warmupRatio} of the
     * steps rounded up, as transformers' TrainingArguments.get_warmup_steps (math.ceil(total x ratio), in double);
     * none when neither is set.
     */
    public static int warmupSteps(int warmupSteps, Double warmupRatio, long totalSteps) {
        if (warmupSteps > 0 || warmupRatio == null) {
            return warmupSteps;
        }
        return (int) Math.ceil(totalSteps * warmupRatio);
    }

    public double at(long step) {
        if (step < warmupSteps) {
            // lr times the factor, as LambdaLR multiplies (lr * step / warmup rounds differently: 3e-3 * 3 / 5 is
            // 0.0018000000000000002, transformers' 0.0018)
            return lr * ((double) step / Math.max(1, warmupSteps));
        }
        double progress = (double) (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
        return switch (kind) {
            case "constant" -> lr;
            case "linear" -> lr * Math.max(0, (double) (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
            default -> {
                // cosine_with_min_lr's floor: factor (1 - r) + r, the same bits as the plain cosine at r = 0
                double factor = 0.5 * (1 + Math.cos(Math.PI * progress));
                yield lr * Math.max(0, factor * (1 - minLrRatio) + minLrRatio);
            }
        };
    }
}
