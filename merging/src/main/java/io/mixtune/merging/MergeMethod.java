package io.mixtune.merging;

import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * The merge methods of {@code mixtune merge}, named as in mergekit where mergekit has them. Where the issue is silent,
 * mergekit's semantics hold: task vectors are taken relative to {@code base_model}; TIES normalises by the weights that
 * agree with the elected sign, task arithmetic and DARE do not; the weighted averages normalise their weights.
 */
public enum MergeMethod {
    /** Weighted mean of the models, weights normalised to sum 1 unless {@code normalize: false} (model soups). */
    LINEAR("linear", Family.AVERAGE),
    /** Uniform mean of checkpoints of one run, all of them or the latest {@code last} (SWA, offline). */
    SWA("swa", Family.AVERAGE),
    /** Uniform mean of the latest {@code last} checkpoints of one run (LaWA, Kaddour 2022). */
    LAWA("lawa", Family.AVERAGE),
    /** Exponential moving average over checkpoints ordered oldest first, with {@code decay}. */
    EMA("ema", Family.AVERAGE),
    /** Uniform mean of models fine-tuned from one initialisation (WARM, Ramé et al. 2024): configs must be equal. */
    WARM("warm", Family.AVERAGE),
    /** base + lambda * sum w_i (m_i - base) (Ilharco et al. 2023). */
    TASK_ARITHMETIC("task_arithmetic", Family.TASK_VECTORS),
    /** Trim each task vector to its largest-magnitude fraction {@code density}, elect signs, disjoint mean (Yadav et al. 2023). */
    TIES("ties", Family.TASK_VECTORS),
    /** Drop each task-vector entry with probability 1 - density, rescale to the L1 norm (mergekit), add (Yu et al. 2024). */
    DARE_LINEAR("dare_linear", Family.TASK_VECTORS),
    /** DARE's drop and rescale, then TIES's sign election and disjoint sum. */
    DARE_TIES("dare_ties", Family.TASK_VECTORS),
    /**
     * Drop each task vector's largest-magnitude fraction {@code gamma} and its smallest, keeping {@code density}, then
     * add (Model Breadcrumbs, Davari and Belilovsky 2024).
     */
    BREADCRUMBS("breadcrumbs", Family.TASK_VECTORS),
    /** Breadcrumbs' drop, then TIES's sign election and disjoint sum. */
    BREADCRUMBS_TIES("breadcrumbs_ties", Family.TASK_VECTORS),
    /**
     * Keep each task-vector entry with a probability ranked by its magnitude within its row, density -/+
     * {@code epsilon}, rescale, elect signs (DELLA, Deep et al. 2024).
     */
    DELLA("della", Family.TASK_VECTORS),
    /** DELLA's drop and rescale, then a plain sum. */
    DELLA_LINEAR("della_linear", Family.TASK_VECTORS),
    /** Spherical interpolation of two models, tensor by tensor, at {@code t} (0: the first model). */
    SLERP("slerp", Family.INTERPOLATION),
    /**
     * base + t (mean of the models - base), t = N cos / (1 + (N - 1) cos) from the mean pairwise cosine of the task
     * vectors, per tensor or per row with {@code filter_wise} (Model Stock, Jang et al. 2024).
     */
    MODEL_STOCK("model_stock", Family.STOCK),
    /**
     * One source per slice copied as it is, times {@code scale} where given: with {@code slices} that cut or stack
     * layer ranges, a frankenmerge (mergekit's passthrough).
     */
    PASSTHROUGH("passthrough", Family.PASSTHROUGH),
    /**
     * Spherical interpolation of two models (task vectors, with a base) at t = w_1 / (w_0 + w_1), over the whole tensor
     * ({@code nuslerp_flatten}, the default), each row, or each column ({@code nuslerp_row_wise}) (mergekit's nuslerp).
     */
    NUSLERP("nuslerp", Family.SPHERICAL),
    /**
     * The weighted barycentre of any number of models (task vectors, with a base) on the sphere: tangent space at the
     * weighted mean of the unit tensors, mapped back, scaled by the weighted mean norm (mergekit's multislerp).
     */
    MULTISLERP("multislerp", Family.SPHERICAL),
    /** base where the model is farther than t, else towards it: w = clamp(t / |m - base|, 0, 1) (mergekit's nearswap). */
    NEARSWAP("nearswap", Family.INTERPOLATION),
    /**
     * The Riemannian (Karcher) mean of the models' unit tensors, uniform weights, iterated up to {@code max_iter} times
     * to {@code tol}, times the mean norm; base_model is one more model (mergekit's karcher).
     */
    KARCHER("karcher", Family.INTERPOLATION),
    /**
     * Task vectors kept where their variance across the models is in the top {@code select_topk}, signs elected, each
     * model weighted by its mean squared task vector (SCE, Wan et al. 2024; mergekit's sce).
     */
    SCE("sce", Family.STOCK),
    /**
     * The model's entries where their importance |m - base| KL(softmax(m) || softmax(base)) reaches median + 1.5 IQR,
     * the base's elsewhere (mergekit's arcee_fusion).
     */
    ARCEE_FUSION("arcee_fusion", Family.STOCK),
    /**
     * Task-vector entries above {@code epsilon} in magnitude summed where one model has them, averaged where several do
     * (Reinforced Agent Merging; mergekit's ram).
     */
    RAM("ram", Family.STOCK),
    /**
     * ram with each model's unique entries scaled by 1 + r clamp(shared / unique, 0, alpha), its counts of shared and
     * unique entries in the tensor (mergekit's ramplus_tl).
     */
    RAMPLUS_TL("ramplus_tl", Family.STOCK);

    enum Family { AVERAGE, TASK_VECTORS, INTERPOLATION, PASSTHROUGH, STOCK, SPHERICAL }

    /**
     * How a task-vector method thins each task vector before adding it (mergekit's sparsify.py): the largest
     * magnitudes, a random draw, the middle magnitudes (breadcrumbs) or a draw ranked by magnitude (della).
     */
    enum Sparsification { NONE, MAGNITUDE, RANDOM, MAGNITUDE_OUTLIERS, MAGNITUDE_RANKED }

    private final String yamlName;
    private final Family family;

    MergeMethod(String yamlName, Family family) {
        this.yamlName = yamlName;
        this.family = family;
    }

    /** The name in a config file and on the command line: {@code ties}, {@code dare_linear}, ... */
    public String yamlName() {
        return yamlName;
    }

    Family family() {
        return family;
    }

    /** Task-vector methods need the model the task vectors are measured from. */
    public boolean needsBase() {
        return family == Family.TASK_VECTORS || family == Family.STOCK || this == NEARSWAP;
    }

    /**
     * Whether base_model, when given, stands apart from the models as what they are measured from (needed by the
     * task-vector methods, model_stock and nearswap; optional for nuslerp and multislerp, whose origin it becomes).
     */
    boolean takesBaseApart() {
        return needsBase() || family == Family.SPHERICAL;
    }

    Sparsification sparsification() {
        return switch (this) {
            case TIES -> Sparsification.MAGNITUDE;
            case DARE_LINEAR, DARE_TIES -> Sparsification.RANDOM;
            case BREADCRUMBS, BREADCRUMBS_TIES -> Sparsification.MAGNITUDE_OUTLIERS;
            case DELLA, DELLA_LINEAR -> Sparsification.MAGNITUDE_RANKED;
            default -> Sparsification.NONE;
        };
    }

    /** TIES's sign election: keep only the entries whose sign agrees with the sign of the summed mass. */
    boolean electsSign() {
        return this == TIES || this == DARE_TIES || this == BREADCRUMBS_TIES || this == DELLA;
    }

    /** mergekit's default for {@code rescale}: the random draws (dare_*, della*) rescale to the L1 norm. */
    boolean rescalesByDefault() {
        return sparsification() == Sparsification.RANDOM || sparsification() == Sparsification.MAGNITUDE_RANKED;
    }

    /** Whether the weights are given by the user (otherwise uniform, or the EMA's). */
    boolean takesWeights() {
        return this == LINEAR || family == Family.TASK_VECTORS || family == Family.SPHERICAL;
    }

    /** mergekit's default for {@code normalize}: linear, ties and della divide by the (agreeing) weights. */
    boolean normalizesByDefault() {
        return this == LINEAR || this == TIES || this == DELLA;
    }

    /** mergekit's merge methods that mixtune does not have (yet): named as such rather than as unknown. */
    static final Set<String> MERGEKIT_ONLY = Set.of();

    public static MergeMethod parse(String name) {
        String wanted = name.trim().toLowerCase(Locale.ROOT).replace('-', '_');
        for (MergeMethod method : values()) {
            if (method.yamlName.equals(wanted)) {
                return method;
            }
        }
        List<String> names = names();
        if (MERGEKIT_ONLY.contains(wanted)) {
            throw new IllegalArgumentException("merge method '" + name + "' is mergekit's but not supported yet by"
                    + " mixtune: expected one of " + String.join(", ", names));
        }
        throw new IllegalArgumentException("unknown merge method '" + name + "'" + NearestName.suggestion(name, names)
                + ": expected one of " + String.join(", ", names));
    }

    public static List<String> names() {
        return Arrays.stream(values()).map(MergeMethod::yamlName).toList();
    }
}
