package io.mixtune.merging;

import com.fasterxml.jackson.annotation.JsonCreator;
import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonProperty;
import io.mixtune.model.checkpoint.PathOverlap;
import io.mixtune.model.safetensors.DType;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Objects;

/**
 * What {@code mixtune merge} does, as a mergekit-style YAML file says it (one key per component; the command-line
 * options {@code --method --inputs --weights --base --density --t ...} fill the same record):
 * <pre>
 *   merge_method: ties              # linear swa lawa ema warm task_arithmetic ties dare_linear dare_ties slerp
 *   base_model: base/               # task vectors are measured from it (task_arithmetic, ties, dare_*); slerp: x0
 *   models:
 *     - model: math/
 *       parameters: {weight: 1.0, density: 0.5}
 *     - model: code/                # parameters default to the method-wide ones below
 *   parameters: {normalize: true, lambda: 1.0, density: 0.7, weight: 1.0, t: 0.5, decay: 0.9, rescale: true}
 *   last: 5                         # swa, lawa, ema: the latest 5 checkpoints (of a run directory, or of models)
 *   rank: 16                        # PEFT adapters: re-compress the concatenated ranks to 16 by SVD
 *   seed: 0                         # dare_*: seeds the drop masks
 *   dtype: bfloat16                 # default: the base's (or first model's) dtype
 *   tokenizer_source: base          # or one of the models: whose tokenizer files the merge carries
 *   out: merged/                    # or on the command line: mixtune merge merge.yaml merged/
 * </pre>
 * weight, density, lambda and t may also be mergekit's gradients ({@code [0, 0.5, 1]}, spread over the layers) or
 * filtered lists ({@code [{filter: mlp, value: 0.5}, {value: 0}]}): see {@link ParameterSetting}. mergekit's
 * {@code slices} form is read as the {@code models} form when there is one slice whose sources all span the same
 * layers, recorded in {@code layer_range}, which must be every layer of the models.
 * Paths are taken relative to the working directory, as mergekit takes them. Everything that can be checked without
 * opening a model is checked here, with the YAML key in the message.
 */
@JsonInclude(JsonInclude.Include.NON_NULL)
public record MergeConfig(
        @JsonProperty("merge_method") MergeMethod method,
        @JsonProperty("base_model") Path baseModel,
        @JsonProperty("models") List<Model> models,
        @JsonProperty("parameters") Parameters parameters,
        @JsonProperty("last") Integer last,
        @JsonProperty("rank") Integer rank,
        @JsonProperty("seed") Long seed,
        @JsonProperty("dtype") DType dtype,
        @JsonProperty("tokenizer_source") Path tokenizerSource,
        @JsonProperty("layer_range") List<Integer> layerRange,
        @JsonProperty("out") Path out) {

    /** One input: a model directory, a PEFT adapter directory, or (swa, lawa, ema) a training run directory. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record Model(@JsonProperty("model") Path model, @JsonProperty("parameters") ModelParameters parameters) {
        public Model {
            if (model == null) {
                throw new IllegalArgumentException("model is missing: each entry of models names a directory");
            }
            parameters = parameters == null ? new ModelParameters((ParameterSetting) null, null) : parameters;
        }

        public static Model of(Path model) {
            return new Model(model, null);
        }
    }

    /** A model's own weight and density; null takes the method-wide value from {@link Parameters}. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record ModelParameters(@JsonProperty("weight") ParameterSetting weight,
            @JsonProperty("density") ParameterSetting density) {
        @JsonCreator
        public ModelParameters {
            requireDensity(density);
            requireFinite("weight", weight);
        }

        /** One number each, as the command line gives them. */
        public ModelParameters(Double weight, Double density) {
            this(ParameterSetting.of(weight), ParameterSetting.of(density));
        }
    }

    /**
     * Method-wide parameters, mergekit's names. {@code int8_mask} is accepted for mergekit's files and changes nothing:
     * masks here are booleans, computed entry by entry.
     *
     * @param normalize divide by the sum of the weights (linear, ties: yes; task_arithmetic, dare_*: no)
     * @param lambda scales the merged task vector
     * @param rescale ties, dare_*: scale the kept entries of each task vector so that its L1 norm is unchanged (default:
     *     yes for dare_*, no for ties, as in mergekit)
     */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record Parameters(
            @JsonProperty("weight") ParameterSetting weight,
            @JsonProperty("density") ParameterSetting density,
            @JsonProperty("normalize") Boolean normalize,
            @JsonProperty("lambda") ParameterSetting lambda,
            @JsonProperty("t") ParameterSetting t,
            @JsonProperty("decay") Double decay,
            @JsonProperty("rescale") Boolean rescale,
            @JsonProperty("int8_mask") Boolean int8Mask) {
        @JsonCreator
        public Parameters {
            requireFinite("weight", weight);
            requireDensity(density);
            requireFinite("lambda", lambda);
            if (t != null && !t.all(v -> v >= 0 && v <= 1)) {
                throw new IllegalArgumentException("t must lie in [0, 1] (0: the first model, 1: the second), got "
                        + t.yamlValue());
            }
            if (decay != null && !(decay >= 0 && decay < 1)) {
                throw new IllegalArgumentException("decay must lie in [0, 1), got " + decay);
            }
        }

        /** One number each, as the command line gives them. */
        public Parameters(Double weight, Double density, Boolean normalize, Double lambda, Double t, Double decay,
                Boolean rescale, Boolean int8Mask) {
            this(ParameterSetting.of(weight), ParameterSetting.of(density), normalize, ParameterSetting.of(lambda),
                    ParameterSetting.of(t), decay, rescale, int8Mask);
        }

        public static Parameters none() {
            return new Parameters((ParameterSetting) null, null, null, null, null, null, null, null);
        }
    }

    /** A merge of whole models, as the command line gives it: no tokenizer_source, no layer_range. */
    public MergeConfig(MergeMethod method, Path baseModel, List<Model> models, Parameters parameters, Integer last,
            Integer rank, Long seed, DType dtype, Path out) {
        this(method, baseModel, models, parameters, last, rank, seed, dtype, null, null, out);
    }

    @JsonCreator
    public MergeConfig {
        if (method == null) {
            throw new IllegalArgumentException("merge_method is missing: one of " + String.join(", ", MergeMethod.names()));
        }
        if (models == null || models.isEmpty()) {
            throw new IllegalArgumentException("models is empty: name the models to merge");
        }
        models = List.copyOf(models);
        parameters = parameters == null ? Parameters.none() : parameters;
        if (out == null) {
            throw new IllegalArgumentException("out is missing: the directory to write the merged model to (in the"
                    + " file, or on the command line after it as mergekit-yaml takes it: mixtune merge merge.yaml OUT)");
        }
        if (dtype != null && !dtype.isFloat32Convertible()) {
            throw new IllegalArgumentException("dtype must be bfloat16, float16 or float32, got " + dtype);
        }
        if (rank != null && rank <= 0) {
            throw new IllegalArgumentException("rank must be a positive integer, got " + rank);
        }
        requireFitsMethod(method, baseModel, models, parameters, last);
        requireApart(out, baseModel, models);
        if (tokenizerSource != null && !tokenizerSource.toString().equals(TOKENIZER_FROM_BASE)
                && models.stream().noneMatch(m -> samePath(m.model(), tokenizerSource))
                && (baseModel == null || !samePath(baseModel, tokenizerSource))) {
            throw new IllegalArgumentException("tokenizer_source must be base or one of the models, got '"
                    + tokenizerSource + "'" + (tokenizerSource.toString().equals("union")
                    ? ": union (a vocabulary joined from every model's) is not supported yet: mixtune merges models"
                    + " that share one tokenizer" : ""));
        }
        if (tokenizerSource != null && tokenizerSource.toString().equals(TOKENIZER_FROM_BASE) && baseModel == null) {
            throw new IllegalArgumentException("tokenizer_source is base but there is no base_model");
        }
        if (layerRange != null && (layerRange.size() != 2 || layerRange.get(0) != 0 || layerRange.get(1) <= 0)) {
            throw new IllegalArgumentException("layer_range must be [0, number of layers], got " + layerRange);
        }
        layerRange = layerRange == null ? null : List.copyOf(layerRange);
    }

    /** mergekit's tokenizer_source naming the base model rather than a path. */
    public static final String TOKENIZER_FROM_BASE = "base";

    /** The input whose tokenizer files the merge carries: tokenizer_source, else the base, else the first model. */
    Path tokenizerInput() {
        if (tokenizerSource == null) {
            return baseModel != null ? baseModel : models.get(0).model();
        }
        return tokenizerSource.toString().equals(TOKENIZER_FROM_BASE) ? baseModel : tokenizerSource;
    }

    /** Whether some parameter differs between tensors (a gradient or a filtered list), as opposed to one number. */
    public boolean variesByTensor() {
        List<ParameterSetting> settings = new ArrayList<>(java.util.Arrays.asList(parameters.weight(),
                parameters.density(), parameters.lambda(), parameters.t()));
        for (Model model : models) {
            settings.add(model.parameters().weight());
            settings.add(model.parameters().density());
        }
        return settings.stream().anyMatch(s -> s != null && !s.isConstant());
    }

    /**
     * out must not be, hold or lie inside an input: replacing it (--force) would delete that input, writing into it
     * would change one. A training run given as an input holds the checkpoints it stands for, so they are covered.
     */
    private static void requireApart(Path out, Path baseModel, List<Model> models) {
        List<Path> inputs = new ArrayList<>(models.stream().map(Model::model).toList());
        if (baseModel != null) {
            inputs.add(baseModel);
        }
        for (Path input : inputs) {
            String problem = PathOverlap.problem("out", out, input);
            if (problem != null) {
                throw new IllegalArgumentException(problem);
            }
        }
    }

    /** Settings that would be silently ignored are refused: a density given to linear is a mistake to point out. */
    private static void requireFitsMethod(MergeMethod method, Path baseModel, List<Model> models, Parameters parameters,
            Integer last) {
        String name = method.yamlName();
        boolean baseAmongModels = baseModel != null && models.stream().anyMatch(m -> samePath(m.model(), baseModel));
        if (!method.needsBase() && method != MergeMethod.SLERP && baseModel != null
                && !(method == MergeMethod.LINEAR && baseAmongModels)) {
            throw new IllegalArgumentException(name + " takes no base_model (only task_arithmetic, ties, dare_linear,"
                    + " dare_ties and slerp do" + (method == MergeMethod.LINEAR ? "; linear takes one only when it is"
                    + " one of its models, averaged with them and giving the config and tokenizer" : "") + ")");
        }
        boolean weighted = parameters.weight() != null || models.stream().anyMatch(m -> m.parameters().weight() != null);
        if (weighted && !method.takesWeights()) {
            throw new IllegalArgumentException(name + " takes no weights: "
                    + (method == MergeMethod.EMA ? "the decay sets them" : "it averages uniformly"));
        }
        boolean dense = parameters.density() != null || models.stream().anyMatch(m -> m.parameters().density() != null);
        if (dense && method.sparsification() == MergeMethod.Sparsification.NONE) {
            throw new IllegalArgumentException(name + " takes no density (only ties, dare_linear and dare_ties do)");
        }
        if ((parameters.t() != null) != (method == MergeMethod.SLERP)) {
            throw new IllegalArgumentException(method == MergeMethod.SLERP
                    ? "slerp needs t in [0, 1]: 0 gives the first model, 1 the second"
                    : name + " takes no t (only slerp does)");
        }
        if ((parameters.decay() != null) != (method == MergeMethod.EMA)) {
            throw new IllegalArgumentException(method == MergeMethod.EMA
                    ? "ema needs decay in [0, 1): ema = decay * ema + (1 - decay) * checkpoint, oldest first"
                    : name + " takes no decay (only ema does)");
        }
        if (parameters.normalize() != null && !method.takesWeights()) {
            throw new IllegalArgumentException(name + " takes no normalize: its weights always sum to 1");
        }
        if (parameters.lambda() != null && !method.needsBase()) {
            throw new IllegalArgumentException(name + " takes no lambda (only the task-vector methods do)");
        }
        if (parameters.rescale() != null && method.sparsification() == MergeMethod.Sparsification.NONE) {
            throw new IllegalArgumentException(name + " takes no rescale (only ties, dare_linear and dare_ties do)");
        }
        boolean ordered = method == MergeMethod.SWA || method == MergeMethod.LAWA || method == MergeMethod.EMA;
        if (last != null && !ordered) {
            throw new IllegalArgumentException(name + " takes no last (only swa, lawa and ema average the latest"
                    + " checkpoints)");
        }
        if (last != null && last <= 0) {
            throw new IllegalArgumentException("last must be a positive number of checkpoints, got " + last);
        }
        if (method == MergeMethod.LAWA && last == null) {
            throw new IllegalArgumentException("lawa averages the latest k checkpoints: give last (k)");
        }
        if (method == MergeMethod.SLERP) {
            boolean baseApart = baseModel != null && models.stream().noneMatch(m -> samePath(m.model(), baseModel));
            int ends = models.size() + (baseApart ? 1 : 0);
            if (ends != 2) {
                throw new IllegalArgumentException("slerp interpolates exactly two models (base_model, if given, is"
                        + " the first), got " + ends);
            }
        }
    }

    static boolean samePath(Path a, Path b) {
        return a.toAbsolutePath().normalize().equals(b.toAbsolutePath().normalize());
    }

    private static void requireDensity(ParameterSetting density) {
        if (density != null && !density.all(d -> d > 0 && d <= 1)) {
            throw new IllegalArgumentException("density must lie in (0, 1] (the fraction of each task vector kept),"
                    + " got " + density.yamlValue());
        }
    }

    private static void requireFinite(String key, ParameterSetting value) {
        if (value != null && !value.all(Double::isFinite)) {
            throw new IllegalArgumentException(key + " must be a finite number, got " + value.yamlValue());
        }
    }

    /**
     * The weight of model i for a tensor at layer position t: its own, else the method-wide one, else 1 (mergekit's
     * order; a filtered list that matches nothing passes on to the next).
     */
    double weightOf(int i, String tensorName, double t) {
        return firstNonNull(value(models.get(i).parameters().weight(), tensorName, t),
                value(parameters.weight(), tensorName, t), 1.0);
    }

    /** The density of model i: its own, else the method-wide one, else 1 (keep everything), as in mergekit. */
    double densityOf(int i, String tensorName, double t) {
        return firstNonNull(value(models.get(i).parameters().density(), tensorName, t),
                value(parameters.density(), tensorName, t), 1.0);
    }

    boolean normalize() {
        return parameters.normalize() == null ? method.normalizesByDefault() : parameters.normalize();
    }

    double lambda(String tensorName, double t) {
        return firstNonNull(value(parameters.lambda(), tensorName, t), null, 1.0);
    }

    /** slerp's t for a tensor; a filtered t that matches no tensor name is an error, as in mergekit. */
    double t(String tensorName, double position) {
        Double t = value(parameters.t(), tensorName, position);
        if (t == null) {
            throw new IllegalArgumentException("t has no value for tensor '" + tensorName + "': no filter matches it;"
                    + " end the list with a value without filter");
        }
        return t;
    }

    private static Double value(ParameterSetting setting, String tensorName, double t) {
        return setting == null ? null : setting.at(tensorName, t);
    }

    /** mergekit's default: dare_* rescale, ties does not. */
    boolean rescale() {
        return parameters.rescale() == null ? method.sparsification() == MergeMethod.Sparsification.RANDOM
                : parameters.rescale();
    }

    long seedOrDefault() {
        return seed == null ? 0L : seed;
    }

    /** The same merge of other inputs (run directories expanded, the latest {@code last} kept). */
    MergeConfig withModels(List<Model> resolved) {
        return new MergeConfig(method, baseModel, resolved, parameters, last == null ? null : resolved.size(), rank, seed,
                dtype, tokenizerSource, layerRange, out);
    }

    /** Weights as the command line gives them, one per input in order. */
    public static List<Model> models(List<Path> inputs, List<Double> weights) {
        if (weights != null && weights.size() != inputs.size()) {
            throw new IllegalArgumentException("weights has " + weights.size() + " values for " + inputs.size()
                    + " models: give one weight per model, in the same order");
        }
        List<Model> models = new ArrayList<>();
        for (int i = 0; i < inputs.size(); i++) {
            models.add(new Model(inputs.get(i), new ModelParameters(
                    weights == null ? null : ParameterSetting.of(weights.get(i)), null)));
        }
        return models;
    }

    /** bf16/bfloat16, fp16/float16, fp32/float32, or the safetensors names BF16/F16/F32. */
    public static DType parseDtype(String name) {
        return switch (name.trim().toLowerCase(Locale.ROOT)) {
            case "bf16", "bfloat16" -> DType.BF16;
            case "fp16", "f16", "float16", "half" -> DType.F16;
            case "fp32", "f32", "float32", "float" -> DType.F32;
            default -> throw new IllegalArgumentException("dtype must be bfloat16, float16 or float32, got '" + name + "'");
        };
    }

    private static double firstNonNull(Double a, Double b, double fallback) {
        return Objects.requireNonNullElse(a, Objects.requireNonNullElse(b, fallback));
    }
}
