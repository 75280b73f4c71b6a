package io.mixtune.merging.averaging;

import java.util.Locale;

/**
 * The SWA learning-rate phase of torch.optim.swa_utils.SWALR: from the learning rate in effect when SWA starts, anneal
 * to {@code swaLr} over {@code annealSteps} scheduler steps, then hold it. SWALR writes this recursively from the
 * previous step's rate; with a rate that nothing else changes, that is exactly
 * {@code lr(k) = swaLr * a(t) + lr * (1 - a(t))} with {@code t = min(1, k / annealSteps)} and
 * {@code a(t) = (1 - cos(pi t)) / 2} (cos) or {@code a(t) = t} (linear); with {@code annealSteps = 0} it is swaLr at once.
 *
 * @param lr the learning rate when SWA starts
 * @param swaLr the learning rate held during SWA
 */
public record SwaLearningRate(double lr, double swaLr, long annealSteps, Anneal anneal) {

    public enum Anneal {
        COS, LINEAR;

        /** "cos" or "linear", as SWALR's anneal_strategy. */
        public static Anneal parse(String name) {
            return switch (name.toLowerCase(Locale.ROOT)) {
                case "cos" -> COS;
                case "linear" -> LINEAR;
                default -> throw new IllegalArgumentException("swa anneal_strategy must be cos or linear, got '" + name + "'");
            };
        }

        double apply(double t) {
            return this == COS ? (1 - Math.cos(Math.PI * t)) / 2 : t;
        }
    }

    public SwaLearningRate {
        if (!(lr >= 0) || !(swaLr >= 0)) {
            throw new IllegalArgumentException("learning rates must be >= 0, got lr " + lr + " and swa_lr " + swaLr);
        }
        if (annealSteps < 0) {
            throw new IllegalArgumentException("swa anneal_steps must be >= 0, got " + annealSteps);
        }
        if (anneal == null) {
            throw new IllegalArgumentException("swa anneal_strategy is missing: cos or linear");
        }
    }

    /** The learning rate after {@code stepsIntoSwa} scheduler steps of the SWA phase (0: when it starts). */
    public double at(long stepsIntoSwa) {
        if (annealSteps == 0) {
            return swaLr;
        }
        double t = Math.max(0, Math.min(1, (double) stepsIntoSwa / annealSteps));
        double a = anneal.apply(t);
        return swaLr * a + lr * (1 - a);
    }
}
