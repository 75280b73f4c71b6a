package io.mixtune.trainer.optim;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * transformers 5.18's LambdaLR schedules (optimization.py, get_scheduler): the rate at optimizer step s (0-based) is lr
 * times the factor transformers' lambda gives s, computed in the same order so that the doubles are the same. Unless
 * the kind says otherwise the factor rises linearly from 0 over the warmup steps (the first step with warmup runs at
 * rate 0), then follows the kind. Every kind is a function of the step alone, so a resumed run recomputes it.
 *
 * @param kwargs transformers' lr_scheduler_kwargs of the kind, by mixtune's train keys
 */
public record LearningRateSchedule(Kind kind, double lr, int warmupSteps, int totalSteps, Kwargs kwargs) {

    /** The schedules, by transformers' lr_scheduler_type, with the lr_scheduler_kwargs each takes. */
    public enum Kind {
        /** get_constant_schedule_with_warmup (at warmup 0, get_constant_schedule's constant). */
        CONSTANT("constant"),
        /** get_linear_schedule_with_warmup: linearly to 0 at the last step. */
        LINEAR("linear"),
        /**
         * get_cosine_schedule_with_warmup: num_cycles waves of a cosine (0.5: half a wave, to 0); with min_lr_ratio,
         * get_cosine_with_min_lr_schedule_with_warmup's factor x (1 - ratio) + ratio (its min_lr_rate).
         */
        COSINE("cosine", "num_cycles", "min_lr_ratio"),
        /** get_cosine_with_hard_restarts_schedule_with_warmup: num_cycles (default 1) half cosines from lr to 0. */
        COSINE_WITH_RESTARTS("cosine_with_restarts", "num_cycles"),
        /** get_polynomial_decay_schedule_with_warmup: (lr - lr_end) x remaining^power + lr_end. */
        POLYNOMIAL("polynomial", "lr_end", "power"),
        /** get_inverse_sqrt_schedule: 1 / sqrt((s + timescale - warmup) / timescale), no end. */
        INVERSE_SQRT("inverse_sqrt", "timescale"),
        /**
         * get_cosine_with_min_lr_schedule_with_warmup_lr_rate: a warmup that starts at (1 / warmup) or warmup_lr_rate
         * and a cosine one step ahead of cosine's, ending at the floor min_lr_ratio (its min_lr_rate).
         */
        COSINE_WARMUP_WITH_MIN_LR("cosine_warmup_with_min_lr", "num_cycles", "min_lr_ratio", "warmup_lr_rate"),
        /**
         * get_wsd_schedule: warmup from min_lr_ratio (warmup_type), num_stable_steps at lr (default: what warmup and
         * decay leave), num_decay_steps down to min_lr_ratio (decay_type), then min_lr_ratio.
         */
        WARMUP_STABLE_DECAY("warmup_stable_decay", "num_decay_steps", "num_stable_steps", "warmup_type", "decay_type",
                "min_lr_ratio", "num_cycles");

        public final String transformersName;
        /** The train keys (transformers' kwarg names, min_lr_ratio for min_lr_rate) this kind reads. */
        public final List<String> keys;

        Kind(String transformersName, String... keys) {
            this.transformersName = transformersName;
            this.keys = List.of(keys);
        }

        public static List<String> names() {
            return Arrays.stream(values()).map(k -> k.transformersName).toList();
        }

        public static Kind named(String name) {
            for (Kind kind : values()) {
                if (kind.transformersName.equals(name)) {
                    return kind;
                }
            }
            throw new IllegalArgumentException("schedule: expected one of " + String.join(", ", names()) + ", got "
                    + name);
        }
    }

    /** How warmup_stable_decay warms up and decays (get_wsd_schedule's warmup_type, decay_type). */
    private static final List<String> WSD_SHAPES = List.of("linear", "cosine", "1-sqrt");

    /**
     * transformers' lr_scheduler_kwargs, each under its own name as a train key; null (0 for min_lr_ratio): the
     * kind's default.
     *
     * @param minLrRatio the floor as a fraction of lr: cosine_with_min_lr's and cosine_warmup_with_min_lr's
     *     min_lr_rate, warmup_stable_decay's min_lr_ratio
     * @param numCycles cosine waves (cosine and warmup_stable_decay 0.5, cosine_with_restarts 1)
     * @param power polynomial's exponent (1)
     * @param lrEnd polynomial's last rate (1e-7)
     * @param timescale inverse_sqrt's (the warmup steps, else 10000)
     * @param numStableSteps warmup_stable_decay's steps at lr (the steps warmup and decay leave)
     * @param numDecaySteps warmup_stable_decay's steps of decay (required)
     * @param warmupType warmup_stable_decay's warmup: linear, cosine or 1-sqrt (linear)
     * @param decayType warmup_stable_decay's decay: linear, cosine or 1-sqrt (cosine)
     * @param warmupLrRate cosine_warmup_with_min_lr's first warmup factor (1 / warmup steps)
     */
    public record Kwargs(double minLrRatio, Double numCycles, Double power, Double lrEnd, Integer timescale,
            Integer numStableSteps, Integer numDecaySteps, String warmupType, String decayType, Double warmupLrRate) {
        public static final Kwargs NONE = new Kwargs(0, null, null, null, null, null, null, null, null, null);

        /** The keys set (min_lr_ratio above 0), by name. */
        Map<String, Object> set() {
            Map<String, Object> set = new LinkedHashMap<>();
            putIfSet(set, "min_lr_ratio", minLrRatio == 0 ? null : minLrRatio);
            putIfSet(set, "num_cycles", numCycles);
            putIfSet(set, "power", power);
            putIfSet(set, "lr_end", lrEnd);
            putIfSet(set, "timescale", timescale);
            putIfSet(set, "num_stable_steps", numStableSteps);
            putIfSet(set, "num_decay_steps", numDecaySteps);
            putIfSet(set, "warmup_type", warmupType);
            putIfSet(set, "decay_type", decayType);
            putIfSet(set, "warmup_lr_rate", warmupLrRate);
            return set;
        }

        private static void putIfSet(Map<String, Object> set, String key, Object value) {
            if (value != null) {
                set.put(key, value);
            }
        }

        /**
         * What is wrong with these kwargs for {@code kind} at peak rate {@code lr}, each "key: why": a key the kind
         * does not read, a value out of its range, warmup_stable_decay without num_decay_steps.
         */
        public List<String> problems(Kind kind, double lr) {
            List<String> problems = new ArrayList<>();
            if (!(minLrRatio >= 0 && minLrRatio <= 1)) {
                problems.add("min_lr_ratio: must lie in [0, 1] (the floor as a fraction of lr), got " + minLrRatio);
            }
            set().forEach((key, value) -> {
                if (!kind.keys.contains(key)) {
                    String takenBy = Arrays.stream(Kind.values()).filter(k -> k.keys.contains(key))
                            .map(k -> k.transformersName).collect(Collectors.joining(", "));
                    problems.add(key + ": " + value + " is a setting of schedule " + takenBy + ", and schedule is "
                            + kind.transformersName + ", which takes " + (kind.keys.isEmpty() ? "none"
                            : String.join(", ", kind.keys))
                            + (key.equals("min_lr_ratio") && kind != Kind.COSINE
                            ? " (transformers' cosine_with_min_lr is schedule: cosine with min_lr_ratio)" : ""));
                }
            });
            if (numCycles != null && !(numCycles > 0 && numCycles < Double.POSITIVE_INFINITY)) {
                problems.add("num_cycles: must be > 0 (cosine waves: 0.5 falls once to the end), got " + numCycles);
            }
            if (power != null && !(power > 0 && power < Double.POSITIVE_INFINITY)) {
                problems.add("power: must be > 0 (the polynomial's exponent), got " + power);
            }
            if (lrEnd != null && !(lrEnd >= 0 && lrEnd < lr)) {
                // get_polynomial_decay_schedule_with_warmup: "lr_end must be smaller than initial lr"
                problems.add("lr_end: must lie in [0, lr) (the polynomial's last rate; lr is " + lr + "), got "
                        + lrEnd);
            }
            if (lrEnd == null && kind == Kind.POLYNOMIAL && !(POLYNOMIAL_LR_END < lr)) {
                problems.add("lr_end: must lie in [0, lr); the default 1e-7 does not, lr is " + lr);
            }
            if (timescale != null && timescale <= 0) {
                problems.add("timescale: must be a positive number of steps, got " + timescale);
            }
            if (numStableSteps != null && numStableSteps < 0) {
                problems.add("num_stable_steps: must be >= 0, got " + numStableSteps);
            }
            if (numDecaySteps != null && numDecaySteps < 0) {
                problems.add("num_decay_steps: must be >= 0, got " + numDecaySteps);
            }
            if (numDecaySteps == null && kind == Kind.WARMUP_STABLE_DECAY) {
                problems.add("num_decay_steps: missing: schedule warmup_stable_decay needs the steps of its decay "
                        + "(transformers' get_wsd_schedule requires it)");
            }
            if (warmupType != null && !WSD_SHAPES.contains(warmupType)) {
                problems.add("warmup_type: expected one of linear, cosine, 1-sqrt, got " + warmupType);
            }
            if (decayType != null && !WSD_SHAPES.contains(decayType)) {
                problems.add("decay_type: expected one of linear, cosine, 1-sqrt, got " + decayType);
            }
            if (warmupLrRate != null && !(warmupLrRate >= 0 && warmupLrRate <= 1)) {
                problems.add("warmup_lr_rate: must lie in [0, 1] (the first warmup step's fraction of lr), got "
                        + warmupLrRate);
            }
            return problems;
        }
    }

    /** get_polynomial_decay_schedule_with_warmup's default lr_end. */
    private static final double POLYNOMIAL_LR_END = 1e-7;

    public LearningRateSchedule {
        List<String> problems = kwargs.problems(kind, lr);
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException(problems.get(0));
        }
    }

    /** A schedule without kwargs, by transformers' name. */
    public LearningRateSchedule(String kind, double lr, int warmupSteps, int totalSteps) {
        this(Kind.named(kind), lr, warmupSteps, totalSteps, Kwargs.NONE);
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

    /**
     * lr times the factor, as LambdaLR multiplies (lr * step / warmup rounds differently: 3e-3 * 3 / 5 is
     * 0.0018000000000000002, transformers' 0.0018).
     */
    public double at(long step) {
        return lr * factor(step);
    }

    private double factor(long step) {
        return switch (kind) {
            case COSINE_WARMUP_WITH_MIN_LR -> cosineWarmupWithMinLr(step);
            case WARMUP_STABLE_DECAY -> warmupStableDecay(step);
            default -> step < warmupSteps ? (double) step / Math.max(1, warmupSteps) : afterWarmup(step);
        };
    }

    private double afterWarmup(long step) {
        double progress = (double) (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
        return switch (kind) {
            case CONSTANT -> 1.0;
            case LINEAR -> Math.max(0, (double) (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
            // transformers 5.18's cosine lambda is cosine_with_min_lr's: the floor r as factor (1 - r) + r, the same
            // bits as the plain cosine at r = 0; pi x 0.5 x 2 is pi exactly
            case COSINE -> Math.max(0, floored(0.5 * (1 + Math.cos(Math.PI * numCycles(0.5) * 2.0 * progress))));
            case COSINE_WITH_RESTARTS -> progress >= 1.0 ? 0.0
                    : Math.max(0, 0.5 * (1 + Math.cos(Math.PI * ((numCycles(1) * progress) % 1.0))));
            case POLYNOMIAL -> {
                // step > total (lr_end / lr) never comes: the steps are 0 .. total - 1
                double lrEnd = kwargs.lrEnd() == null ? POLYNOMIAL_LR_END : kwargs.lrEnd();
                double power = kwargs.power() == null ? 1.0 : kwargs.power();
                double remaining = 1 - (double) (step - warmupSteps) / (totalSteps - warmupSteps);
                // Python's ** is the C library's pow: glibc 2.36's and Java's Math.pow agree on all but one of the
                // goldens' 153 values (pow(0.913.., 0.5): glibc 0.502 ulp off, Java's the correctly rounded sqrt)
                yield ((lr - lrEnd) * Math.pow(remaining, power) + lrEnd) / lr;
            }
            case INVERSE_SQRT -> {
                // get_inverse_sqrt_schedule: timescale or num_warmup_steps or 10_000
                int timescale = kwargs.timescale() != null ? kwargs.timescale()
                        : warmupSteps > 0 ? warmupSteps : 10_000;
                long shift = timescale - warmupSteps;
                yield 1.0 / Math.sqrt((double) (step + shift) / timescale);
            }
            default -> throw new IllegalStateException(kind + " has its own warmup");
        };
    }

    /** get_cosine_with_min_lr_schedule_with_warmup_lr_rate's lambda, which counts the steps from 1. */
    private double cosineWarmupWithMinLr(long step) {
        if (step < warmupSteps) {
            Double start = kwargs.warmupLrRate();
            return start == null ? (step + 1.0) / Math.max(1.0, warmupSteps)
                    : start + (1.0 - start) * step / Math.max(1, warmupSteps - 1);
        }
        double progress = (step - warmupSteps + 1.0) / Math.max(1.0, totalSteps - warmupSteps);
        return Math.max(0, floored(0.5 * (1.0 + Math.cos(Math.PI * numCycles(0.5) * 2.0 * progress))));
    }

    /** get_wsd_schedule's lambda: warmup and decay both end at the floor min_lr_ratio. */
    private double warmupStableDecay(long step) {
        int decaySteps = kwargs.numDecaySteps();
        int stableSteps = kwargs.numStableSteps() != null ? kwargs.numStableSteps()
                : totalSteps - warmupSteps - decaySteps;
        if (step < warmupSteps) {
            double progress = (double) step / Math.max(1, warmupSteps);
            double factor = switch (shape(kwargs.warmupType(), "linear")) {
                case "linear" -> progress;
                case "cosine" -> 0.5 * (1.0 - Math.cos(Math.PI * progress));
                default -> 1.0 - Math.sqrt(1.0 - progress);
            };
            return Math.max(0.0, floored(factor));
        }
        if (step < (long) warmupSteps + stableSteps) {
            return 1.0;
        }
        if (step < (long) warmupSteps + stableSteps + decaySteps) {
            double progress = (double) (step - warmupSteps - stableSteps) / Math.max(1, decaySteps);
            double factor = switch (shape(kwargs.decayType(), "cosine")) {
                case "linear" -> 1.0 - progress;
                case "cosine" -> 0.5 * (1.0 + Math.cos(Math.PI * numCycles(0.5) * 2.0 * progress));
                default -> 1.0 - Math.sqrt(progress);
            };
            return Math.max(0.0, floored(factor));
        }
        return kwargs.minLrRatio();
    }

    private double floored(double factor) {
        return factor * (1.0 - kwargs.minLrRatio()) + kwargs.minLrRatio();
    }

    private double numCycles(double byDefault) {
        return kwargs.numCycles() == null ? byDefault : kwargs.numCycles();
    }

    private static String shape(String set, String byDefault) {
        return set == null ? byDefault : set;
    }
}
