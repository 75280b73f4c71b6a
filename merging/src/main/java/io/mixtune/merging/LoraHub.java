package io.mixtune.merging;

import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.model.checkpoint.PathOverlap;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.ToDoubleFunction;
import org.apache.commons.math3.exception.TooManyEvaluationsException;
import org.apache.commons.math3.optim.InitialGuess;
import org.apache.commons.math3.optim.MaxEval;
import org.apache.commons.math3.optim.SimpleBounds;
import org.apache.commons.math3.optim.nonlinear.scalar.GoalType;
import org.apache.commons.math3.optim.nonlinear.scalar.ObjectiveFunction;
import org.apache.commons.math3.optim.nonlinear.scalar.noderiv.CMAESOptimizer;
import org.apache.commons.math3.random.MersenneTwister;

/**
 * LoraHub (Huang et al. 2023, "LoraHub: Efficient Cross-Task Generalization via Dynamic LoRA Composition"): LoRA
 * adapters trained on other tasks are composed for a new task from a few of its examples, sum_i w_i delta_i, with the
 * weights found by a gradient-free search that minimises the examples' loss plus an L1 penalty,
 * loss(w) + 0.05 sum_i |w_i|, each w_i in [-1.5, 1.5], starting from 0 (the paper's settings; its code divides the
 * penalty by the number of adapters, its text does not: the text is followed here). The paper searches with
 * nevergrad's NGOpt; here CMA-ES (Hansen), from Apache Commons Math, seeded, so a search can be repeated.
 *
 * <p>The composition is exact (the ranks concatenated, {@link AdapterAverage}), where the paper's code sums A and B
 * separately. The loss comes from the caller (the merging module loads no model): it gets the composed adapter in
 * memory, so no file is written per evaluation.
 */
public final class LoraHub {
    /** The paper's L1 weight (its eq. 3). */
    public static final double L1_PENALTY = 0.05;
    /** The paper's bound on each weight. */
    public static final double WEIGHT_BOUND = 1.5;
    /** The paper's budget of loss evaluations for the search. */
    public static final int DEFAULT_BUDGET = 40;
    /** CMA-ES's initial step: a third of the half-range, so the first generation explores within the bounds. */
    private static final double INITIAL_SIGMA = 0.5;

    private LoraHub() {}

    /** @param budget loss evaluations the search may spend (besides one per input adapter alone) */
    public record Settings(int budget, long seed) {
        public Settings {
            if (budget < 1) {
                throw new IllegalArgumentException("budget must be at least 1 loss evaluation, got " + budget);
            }
        }
    }

    /** A composed adapter in memory, as the loss function receives it. */
    public record Candidate(LoraConfig config, Map<String, float[][]> factors) {}

    /**
     * What the search found.
     *
     * @param inputLosses each input adapter's loss alone (weight 1, the others 0)
     * @param weights the weights of the best point evaluated
     * @param loss the composed adapter's loss at those weights, without the penalty
     * @param evaluations loss evaluations spent in all, the inputs alone included
     */
    public record Result(List<Path> inputs, double[] inputLosses, double[] weights, double loss, int evaluations) {
        public double objective() {
            return LoraHub.objective(loss, weights);
        }

        /** The lines `mixtune merge --method lorahub` prints. */
        public List<String> lines(Path out) {
            List<String> lines = new ArrayList<>();
            for (int i = 0; i < inputs.size(); i++) {
                lines.add(String.format(Locale.ROOT, "input %s: loss %.6f", inputs.get(i), inputLosses[i]));
            }
            lines.add("weights " + String.join(",", Arrays.stream(weights)
                    .mapToObj(w -> String.format(Locale.ROOT, "%.6f", w)).toList()));
            lines.add(String.format(Locale.ROOT, "composed loss %.6f  objective %.6f (loss + %.2f sum|w|)  "
                    + "evaluations %d", loss, objective(), L1_PENALTY, evaluations));
            lines.add("wrote " + out);
            return lines;
        }
    }

    static double objective(double loss, double[] weights) {
        return loss + L1_PENALTY * Arrays.stream(weights).map(Math::abs).sum();
    }

    /**
     * Opens and checks the adapters (one model, the same modules), searches the weights, writes the composed adapter to
     * {@code out} (staged, renamed when complete).
     *
     * @param loss the loss of the base model with a candidate adapter on the few examples; an
     *     IllegalArgumentException from it on an input alone is reported as that input not fitting the model
     */
    public static Result compose(List<Path> adapters, Path out, boolean force, Settings settings,
            ToDoubleFunction<Candidate> loss) {
        if (adapters.isEmpty()) {
            throw new IllegalArgumentException("lorahub needs at least one input adapter");
        }
        for (Path adapter : adapters) {
            String problem = PathOverlap.problem("out", out, adapter);
            if (problem != null) {
                throw new IllegalArgumentException(problem);
            }
        }
        StagedOutput.requireWritable(out, force);
        try (AdapterAverage average = AdapterAverage.open(adapters, false)) {
            average.requireSameModules();
            int n = adapters.size();
            Search search = new Search(weights -> {
                AdapterAverage.Composed composed = average.compose(weights);
                return loss.applyAsDouble(new Candidate(composed.config(), composed.factors()));
            });
            double[] inputLosses = new double[n];
            for (int i = 0; i < n; i++) {
                double[] alone = new double[n];
                alone[i] = 1;
                try {
                    inputLosses[i] = search.evaluate(alone);
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException(adapters.get(i) + ": does not fit the base model: "
                            + e.getMessage(), e);
                }
            }
            search.run(n, settings);
            try (StagedOutput staged = StagedOutput.create(out, force)) {
                average.write(search.bestWeights, null, null, staged.dir());
                CompanionFiles.copyTokenizer(adapters, staged.dir());
                staged.commit();
            }
            return new Result(List.copyOf(adapters), inputLosses, search.bestWeights, search.bestLoss,
                    search.evaluations);
        }
    }

    /**
     * The weights in [-1.5, 1.5]^n minimising loss(w) + 0.05 sum |w_i| by CMA-ES from 0, within {@code budget} loss
     * evaluations; the best point ever evaluated wins (CMA-ES's own answer is the mean of its last generation).
     */
    static final class Search {
        private final ToDoubleFunction<double[]> loss;
        private double[] bestWeights;
        private double bestLoss = Double.NaN;
        private double bestObjective = Double.POSITIVE_INFINITY;
        private int evaluations;

        Search(ToDoubleFunction<double[]> loss) {
            this.loss = loss;
        }

        /** The loss at {@code weights}, remembered if its objective is the best so far. */
        double evaluate(double[] weights) {
            double value = loss.applyAsDouble(weights);
            evaluations++;
            double objective = objective(value, weights);
            if (bestWeights == null || objective < bestObjective) {
                bestWeights = weights.clone();
                bestLoss = value;
                bestObjective = objective;
            }
            return value;
        }

        void run(int n, Settings settings) {
            double[] lower = new double[n];
            double[] upper = new double[n];
            double[] sigma = new double[n];
            Arrays.fill(lower, -WEIGHT_BOUND);
            Arrays.fill(upper, WEIGHT_BOUND);
            Arrays.fill(sigma, INITIAL_SIGMA);
            // stopFitness 0 turns that stop off; active CMA; no diagonal-only phase; no feasibility resampling (the
            // bounds are repaired); no statistics; no convergence checker: the budget ends the search.
            CMAESOptimizer cmaes = new CMAESOptimizer(Integer.MAX_VALUE, 0, true, 0, 0,
                    new MersenneTwister(settings.seed()), false, null);
            try {
                cmaes.optimize(new MaxEval(settings.budget()), GoalType.MINIMIZE, new InitialGuess(new double[n]),
                        new SimpleBounds(lower, upper), new CMAESOptimizer.Sigma(sigma),
                        new CMAESOptimizer.PopulationSize(4 + (int) (3 * Math.log(n))),
                        new ObjectiveFunction(weights -> objective(evaluate(weights), weights)));
            } catch (TooManyEvaluationsException e) {
                // The budget is spent: the best point evaluated stands.
            }
        }

        double[] bestWeights() {
            return bestWeights.clone();
        }

        int evaluations() {
            return evaluations;
        }
    }
}
